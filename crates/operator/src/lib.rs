//! `liveclass-operator` as a library: the reconcile pipeline, the objects it owns, leader
//! election and the operator's own probes and metrics, so tests can run the operator in-process
//! (two of them, stop one) against a real control plane.
//!
//! Pipeline per LiveClass (see [`controller`]): read → validate (pure, `liveclass-api`) → plan
//! (pure, the api's planner) → build the desired objects (pure, [`resources`]) → server-side
//! apply under the field manager [`MANAGER`] → status (server-side apply on the status
//! subresource, skipped when nothing changed) → requeue at the plan's next transition.
//!
//! The class id the socket servers' tokens carry (`class` claim) is the LiveClass's
//! `metadata.name`; the reactive floor reads `HLEN lc:{<name>}:where` from the class's Redis.

pub mod attendance;
pub mod config;
pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod resources;
pub mod run;
pub mod status;

pub use config::Config;
pub use error::Error;
pub use run::{Operator, run};

/// The field manager of every server-side apply the operator makes.
pub const MANAGER: &str = "liveclass-operator";
