//! `liveclass-api`: the `LiveClass` resource, its validation and the capacity planner.
//!
//! Pure: no I/O and no clock. The operator reads a `LiveClass`, calls [`validate`], then
//! [`plan`] with the current time and what it observed, and applies the [`Plan`].

pub mod duration;
pub mod plan;
pub mod schedule;
pub mod time;
pub mod timeline;
pub mod types;
pub mod validate;

pub use duration::GoDuration;
pub use plan::{Observed, PeakAttendance, Plan, plan};
pub use timeline::{Timeline, timeline};
pub use types::{LiveClass, LiveClassSpec, LiveClassStatus, Phase, class_id, condition};
pub use validate::{ValidSpec, ValidationError, validate, validate_class};

/// The CRD generated from the types, as YAML with a header saying where it comes from.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt as _;
    let body = serde_yaml::to_string(&LiveClass::crd())?;
    Ok(format!(
        "# Generated from crates/api by `liveclass-operator crd`; do not edit.\n\
         # Regenerate with scripts/gen-crd.\n{body}"
    ))
}
