//! `liveclass-load`: reproduces a live class of N students against liveclass socket servers and
//! reports what was delivered, lost, duplicated or reordered, and how fast — measured so that
//! the figures cannot flatter the server.
//!
//! The binary is a thin shell over this library so tests can drive a run in-process
//! ([`LoadTest`]). The design, in short (`crates/load/README.md` has the long form):
//!
//! - **One task per member.** Each member (student or teacher) connects with a token minted like
//!   the school backend would (or read from a file the school minted), reads every frame, sends
//!   the comments the class's scheduler hands it, and reconnects — with `since` and `epoch` —
//!   after a `reconnect` frame or a dropped connection; once caught up it resends, with the same
//!   `ref`, whatever the server never confirmed.
//! - **An open schedule.** Comment `i` of a class is due at `start + i / rate`, whether or not
//!   the system keeps up; its latency is measured from that instant (and, separately, from when
//!   it was actually written), so a sender that falls behind cannot hide the delay.
//! - **Comments carry their identity.** `ref` is `<run>.<part>.<seq>.<intended µs>.<late µs>`
//!   on the machine's monotonic clock, which every process of a split run shares.
//! - **Loss is loss.** A member expects every comment first written after its first `hello`,
//!   for the rest of the run, across reconnects. Only a comment the server refused with an
//!   `error` frame carrying its `ref` is expected by nobody (void when the scenario asked for
//!   that refusal with `--expect-refusal`, a failure otherwise). A comment the schedule could
//!   not hand to anyone is *skipped*, and fails the run.
//! - **Ledgers make a split run exact.** Each process records its members' first-`hello` times,
//!   the comments it sent, and per comment how many of its members got it; [`Report::merge`]
//!   joins the ledgers of all parts.

pub mod bench;
pub mod calibrate;
pub mod clock;
pub mod config;
mod conn;
pub mod endpoint;
pub mod hdrlog;
pub mod ledger;
mod progress;
pub mod report;
mod run;
pub mod sampler;
mod state;
pub mod token;

pub use clock::{mono_us, unix_ms};
pub use config::{Arrival, Config, RunArgs, Shape, parse_duration};
pub use report::Report;
pub use run::{LiveStats, LoadTest, Snapshot, ensure_fd_budget};

/// Why a run could not start or a merge could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Config(String),
    #[error(
        "this process would hold {members} connections and needs about {need} file descriptors, but it may open only {limit} (the hard limit): split the run, e.g. --split 2 --part 0 and --split 2 --part 1, and merge the two --json reports with `liveclass-load merge`"
    )]
    FdLimit { members: u64, need: u64, limit: u64 },
    #[error("cannot merge the reports: {0}")]
    Merge(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
}
