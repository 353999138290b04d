//! The LiveClass's status, computed as a pure function of the old status and what the
//! reconcile decided, so an unchanged world gives an identical status and no write.
//!
//! A condition keeps its `lastTransitionTime` unless its `status` changes; everything else in
//! the status is a function of the plan and the observed objects, never of the clock.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use liveclass_api::{
    LiveClassStatus, Phase, Plan, condition,
    time::{from_k8s, to_k8s},
};

/// What the reconcile saw after applying the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observation {
    /// Ready socket pods (the Deployment's `status.readyReplicas`).
    pub ready_replicas: Option<u32>,
    /// Ready Redis pods, `None` with an External Redis.
    pub redis_ready: Option<bool>,
    /// Students connected now, when it was read.
    pub connected_students: Option<u64>,
}

/// A condition of `type_`; its `lastTransitionTime` is the old one's unless `status` changed.
pub fn condition(
    old: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let previous = old.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => to_k8s(now.with_nanosecond_zero()).unwrap_or_else(|| Time(Default::default())),
    };
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

trait NanosZero {
    fn with_nanosecond_zero(self) -> Self;
}

impl NanosZero for DateTime<Utc> {
    fn with_nanosecond_zero(self) -> Self {
        DateTime::from_timestamp(self.timestamp(), 0).unwrap_or(self)
    }
}

/// The status of a class whose spec is valid, after applying `plan`.
pub fn valid(
    old: &LiveClassStatus,
    plan: &Plan,
    seen: &Observation,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> LiveClassStatus {
    let planned = plan.socket.replicas;
    let ready = seen.ready_replicas.unwrap_or(0);
    let capacity_ready = ready >= planned;
    let capacity = condition(
        &old.conditions,
        condition::CAPACITY_READY,
        capacity_ready,
        if capacity_ready {
            "ReplicasReady"
        } else {
            "ReplicasStarting"
        },
        format!("{ready} of {planned} socket server replicas are Ready"),
        generation,
        now,
    );
    let (redis_ok, redis_reason, redis_message) = match seen.redis_ready {
        None => (
            true,
            "External",
            "the class uses a Redis run outside the operator".to_owned(),
        ),
        Some(true) => (
            true,
            "RedisRunning",
            "the class's Redis is Ready".to_owned(),
        ),
        Some(false) => (
            false,
            "RedisStarting",
            "the class's Redis is not Ready yet".to_owned(),
        ),
    };
    let redis = condition(
        &old.conditions,
        condition::REDIS_READY,
        redis_ok,
        redis_reason,
        redis_message,
        generation,
        now,
    );
    let all = capacity_ready && redis_ok;
    let ready_condition = condition(
        &old.conditions,
        condition::READY,
        all,
        if all { "Ready" } else { "NotReady" },
        if all {
            format!("{} with {planned} socket server replicas", plan.phase)
        } else {
            "waiting for socket servers or Redis to become Ready".to_owned()
        },
        generation,
        now,
    );
    LiveClassStatus {
        phase: Some(plan.phase),
        occurrence_start: plan.occurrence.and_then(|o| to_k8s(o.start)),
        planned_replicas: Some(planned),
        ready_replicas: Some(ready),
        connected_students: seen.connected_students,
        next_transition: plan.next_transition.and_then(to_k8s),
        last_scale_down_time: plan.socket.last_scale_down.and_then(to_k8s),
        conditions: vec![ready_condition, capacity, redis],
        observed_generation: generation,
    }
}

/// The status of a class whose spec the operator refuses: `Ready=False` with every problem,
/// and the rest of the old status kept.
pub fn invalid(
    old: &LiveClassStatus,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> LiveClassStatus {
    let mut conditions: Vec<Condition> = old
        .conditions
        .iter()
        .filter(|c| c.type_ != condition::READY)
        .cloned()
        .collect();
    conditions.insert(
        0,
        condition(
            &old.conditions,
            condition::READY,
            false,
            reason,
            message,
            generation,
            now,
        ),
    );
    LiveClassStatus {
        conditions,
        observed_generation: generation,
        ..old.clone()
    }
}

/// The instant of a status time, for the planner.
pub fn last_scale_down(old: &LiveClassStatus) -> Option<DateTime<Utc>> {
    old.last_scale_down_time.as_ref().and_then(from_k8s)
}

/// The phase an Event announces on entering `phase`.
pub fn transition_reason(phase: Phase) -> &'static str {
    match phase {
        Phase::Scheduled => "Scheduled",
        Phase::WarmingUp => "ScalingUp",
        Phase::Live => "Live",
        Phase::CoolingDown => "CoolingDown",
        Phase::Ended => "Ended",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap_or_default();
        let t1 = DateTime::from_timestamp(2_000, 0).unwrap_or_default();
        let first = condition(&[], "Ready", true, "Ready", "m".into(), Some(1), t0);
        let same = condition(
            std::slice::from_ref(&first),
            "Ready",
            true,
            "Ready",
            "m2".into(),
            Some(2),
            t1,
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        let flipped = condition(
            std::slice::from_ref(&first),
            "Ready",
            false,
            "No",
            "m".into(),
            Some(2),
            t1,
        );
        assert_ne!(flipped.last_transition_time, first.last_transition_time);
    }
}
