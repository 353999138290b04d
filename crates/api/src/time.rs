//! Conversions between the planner's `chrono` instants and the `Time` that Kubernetes objects
//! (status fields, conditions) carry, which `k8s-openapi` builds on `jiff`. On the wire a
//! `Time` has whole seconds only, which is why the planner rounds what it asks the operator to
//! store (`lastScaleDownTime`) to a whole second.

use chrono::{DateTime, Utc};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

/// `t` as a Kubernetes `Time`, or `None` outside the range both libraries share (years 1-9999).
pub fn to_k8s(t: DateTime<Utc>) -> Option<Time> {
    let nanos = i32::try_from(t.timestamp_subsec_nanos()).ok()?;
    Timestamp::new(t.timestamp(), nanos).ok().map(Time)
}

/// A Kubernetes `Time` as a `chrono` instant.
pub fn from_k8s(t: &Time) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(t.0.subsec_nanosecond()).ok()?;
    DateTime::from_timestamp(t.0.as_second(), nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_whole_seconds_and_the_wire_drops_fractions() {
        let t = DateTime::parse_from_rfc3339("2026-10-25T00:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let k = to_k8s(t).unwrap();
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            "\"2026-10-25T00:30:00Z\""
        );
        assert_eq!(from_k8s(&k), Some(t));
        let fraction = to_k8s(t + chrono::TimeDelta::milliseconds(250)).unwrap();
        assert_eq!(
            serde_json::to_string(&fraction).unwrap(),
            "\"2026-10-25T00:30:00Z\""
        );
    }
}
