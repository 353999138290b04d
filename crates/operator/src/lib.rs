//! `liveclass-operator` as a library: the reconcile pipeline, the objects it owns, leader
//! election and the operator's own probes and metrics, so tests can run the operator in-process
//! (two of them, stop one) against a real control plane.
//!
//! Per LiveClass (see [`controller`]): [`observe`] (the owned objects from watch caches, the
//! attendance the socket servers report in the class's Redis) → [`decide`] (pure: validate,
//! plan with `liveclass-api`, build the desired objects with [`resources`], status, Events) →
//! [`apply`] (server-side apply under the field manager [`MANAGER`], only what changed; delete
//! what the plan no longer asks for; status on the status subresource only when it changed) →
//! requeue at the plan's next transition.
//!
//! A class's id (the socket servers' `--class`, the students' token `class` claim, the Redis
//! hash tag) is `<namespace>/<name>`: see [`liveclass_api::class_id`].

pub mod apply;
pub mod attendance;
pub mod config;
pub mod controller;
pub mod decide;
pub mod error;
pub mod events;
pub mod gateway;
pub mod handover;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod preview;
pub mod resources;
pub mod run;
pub mod sentinel;
pub mod startup;
pub mod status;

pub use config::Config;
pub use error::Error;
pub use run::{Operator, run};

/// The field manager of every server-side apply the operator makes.
pub const MANAGER: &str = "liveclass-operator";
