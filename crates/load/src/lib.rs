//! `liveclass-load`: reproduces a live class of N students against liveclass socket servers and
//! reports what was delivered, lost, duplicated or reordered, and how fast.
//!
//! The binary is a thin shell over this library so tests can drive a run in-process
//! ([`LoadTest`]). The design, in short (`crates/load/README.md` has the long form):
//!
//! - **One task per member.** Each member (student or teacher) connects with a token minted like
//!   the school backend would (HS256; `sub`, `class`, `role`, `exp`, `name`), reads every frame,
//!   sends the comments the class's scheduler hands it, and reconnects — with `since` = the
//!   largest message id it has seen — after a `reconnect` frame or a dropped connection.
//! - **Comments carry their identity.** `ref` is `<run>.<part>.<seq>.<send µs>`: the part of a
//!   split run that sent it, a per-(part, class) sequence number and the wall-clock send time.
//!   Latency is receive time − send time on the same machine's clock, whichever process
//!   receives it; only `t`, `id` and `ref` of a frame are parsed.
//! - **Expected = member before send.** A member expects every comment sent after its first
//!   `hello`, for the rest of the run, even across reconnects (with `since` it must recover what
//!   it missed). A comment is void (expected by nobody) only when its sender's connection dropped
//!   before the sender saw its own echo *and* nobody received it: the server may never have had it.
//! - **Ledgers make a split run exact.** Each process records its members' first-`hello` times,
//!   the comments it sent, and per comment how many of its members got it. `account` joins the
//!   ledgers of all parts ([`Report::merge`]), so a comment sent by process A and lost on its way
//!   to a member in process B is counted.

pub mod config;
mod conn;
pub mod ledger;
mod progress;
pub mod report;
mod run;
mod state;
pub mod token;

pub use config::{Config, RunArgs, parse_duration};
pub use report::Report;
pub use run::{LiveStats, LoadTest, Snapshot, ensure_fd_budget, unix_ms};
pub use state::now_us;

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
