//! The LiveClass's status, computed as a pure function of the old status, the plan and what was
//! observed, so an unchanged world gives an identical status and no write.
//!
//! A condition keeps its `lastTransitionTime` unless its `status` changes; everything else is a
//! function of the plan and the observation. Messages carry no changing figures beyond the
//! ones status already holds, so they do not turn every reconcile into a write.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use liveclass_api::{
    LiveClass, LiveClassStatus, Phase, Plan, condition,
    plan::RedisShape,
    time::{from_k8s, to_k8s},
    types::{PlanStatus, SecretKeyRef},
};

use crate::{attendance::AttendanceView, observe::World};

/// The reason `CapacityReady` carries while capacity is not Ready past `start - warmup`.
pub const LATE: &str = "Late";

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
        _ => whole_second(now),
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

fn whole_second(t: DateTime<Utc>) -> Time {
    let t = DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
    to_k8s(t).unwrap_or_else(|| Time(Default::default()))
}

/// A condition from `conditions`, by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Everything the status of a valid class is made of.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub old: &'a LiveClassStatus,
    pub plan: &'a Plan,
    pub world: &'a World,
    pub max_replicas: u32,
    pub expected: u32,
    /// Whether the plan's objects are being applied now (not released).
    pub token: Option<SecretKeyRef>,
    pub generation: Option<i64>,
    pub now: DateTime<Utc>,
}

/// The status of a class whose spec is valid, after applying its plan.
pub fn valid(i: &Inputs<'_>) -> LiveClassStatus {
    let (old, plan, now, generation) = (i.old, i.plan, i.now, i.generation);
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        condition(&old.conditions, type_, ok, reason, message, generation, now)
    };
    let planned = plan.socket.replicas;
    let deployment = i.world.deployment.unwrap_or_default();
    let ready = deployment.ready;
    let capacity_ready = plan.released
        || (i.world.deployment.is_some() && deployment.up_to_date && ready >= planned);

    // The occurrence this status speaks of, and what is remembered of it.
    let occurrence_start = plan.occurrence.and_then(|o| to_k8s(o.start));
    let same_occurrence = occurrence_start.is_some() && occurrence_start == old.occurrence_start;
    let in_window = plan
        .occurrence
        .is_some_and(|o| now >= o.scale_up_at && now < o.drain_from)
        && matches!(
            plan.phase,
            Phase::WarmingUp | Phase::Live | Phase::CoolingDown
        );
    let mut capacity_ready_time = if same_occurrence {
        old.capacity_ready_time.clone()
    } else {
        None
    };
    if capacity_ready_time.is_none()
        && in_window
        && capacity_ready
        && matches!(plan.phase, Phase::WarmingUp | Phase::Live)
    {
        capacity_ready_time = Some(whole_second(now));
    }
    let ready_lead_seconds = match (&capacity_ready_time, plan.occurrence) {
        (Some(t), Some(o)) => from_k8s(t).map(|t| (o.start - t).num_seconds()),
        _ => None,
    };
    let late = capacity_ready_time.is_none()
        && matches!(plan.phase, Phase::WarmingUp | Phase::Live)
        && plan.occurrence.is_some_and(|o| now >= o.ready_by);

    let capacity = if capacity_ready {
        cond(
            condition::CAPACITY_READY,
            true,
            "ReplicasReady",
            format!("{ready} of {planned} socket server replicas are Ready"),
        )
    } else if late {
        let by = plan
            .occurrence
            .map(|o| o.ready_by.to_rfc3339())
            .unwrap_or_default();
        cond(
            condition::CAPACITY_READY,
            false,
            LATE,
            format!(
                "{ready} of {planned} socket server replicas are Ready; all were needed by {by} (start - warmup)"
            ),
        )
    } else {
        cond(
            condition::CAPACITY_READY,
            false,
            "ReplicasStarting",
            format!("{ready} of {planned} socket server replicas are Ready"),
        )
    };

    let (redis_ok, redis_reason, redis_message) = match (plan.redis.shape, i.world.redis) {
        _ if plan.released => (
            true,
            "Released",
            "the class has ended and its Redis is released".to_owned(),
        ),
        (RedisShape::External, _) => (
            true,
            "External",
            "the class uses a Redis run outside the operator".to_owned(),
        ),
        _ if !plan.redis.running => (
            true,
            "NotNeeded",
            "no socket server runs, so the class's Redis is stopped until the next scale-up"
                .to_owned(),
        ),
        (RedisShape::Standalone, Some(r)) if r.ready >= 1 => (
            true,
            "RedisRunning",
            "the class's Redis is Ready".to_owned(),
        ),
        (RedisShape::Standalone, _) => (
            false,
            "RedisStarting",
            "the class's Redis is not Ready yet".to_owned(),
        ),
        // A node is Ready only as the primary or as a replica linked to it, a Sentinel only
        // when a quorum of Sentinels is reachable (their readiness checks ask Redis itself).
        (
            RedisShape::Replicated {
                replicas,
                sentinels,
            },
            _,
        ) => {
            let nodes = i.world.redis.map_or(0, |r| r.ready);
            let watching = i.world.sentinel.map_or(0, |r| r.ready);
            let message = format!(
                "{nodes} of {} Redis nodes (a primary and its replicas, in sync) and {watching} of {sentinels} Sentinels (with a quorum) are Ready",
                replicas + 1
            );
            if nodes > replicas && watching >= sentinels {
                (true, "ReplicatedRunning", message)
            } else {
                (false, "ReplicatedStarting", message)
            }
        }
    };
    let redis = cond(
        condition::REDIS_READY,
        redis_ok,
        redis_reason,
        redis_message,
    );

    let capped = plan.socket.needed_replicas > u64::from(i.max_replicas);
    let capped_condition = if capped {
        let students = match plan.socket.peak_connected {
            Some(peak) if plan.socket.needed_replicas > plan.socket.class_replicas.into() => {
                format!("{peak} connected students")
            }
            _ => format!("{} expected students", i.expected),
        };
        cond(
            condition::CAPACITY_CAPPED,
            true,
            "MaxReplicas",
            format!(
                "{students} need {} socket server replicas, but spec.socket.maxReplicas is {}",
                plan.socket.needed_replicas, i.max_replicas
            ),
        )
    } else {
        cond(
            condition::CAPACITY_CAPPED,
            false,
            "WithinMaxReplicas",
            format!(
                "{} socket server replicas are needed, within spec.socket.maxReplicas ({})",
                plan.socket.needed_replicas, i.max_replicas
            ),
        )
    };

    let applied = cond(
        condition::APPLIED,
        true,
        "Applied",
        "every object the plan asks for is applied".to_owned(),
    );

    let attendance = attendance_condition(old, plan, &i.world.attendance, generation, now);

    let all = capacity_ready && redis_ok;
    let ready_condition = if plan.released {
        cond(
            condition::READY,
            true,
            "Released",
            "the class has ended; its socket servers and Redis are released".to_owned(),
        )
    } else if all {
        cond(
            condition::READY,
            true,
            "Ready",
            format!("{} with {planned} socket server replicas", plan.phase),
        )
    } else {
        cond(
            condition::READY,
            false,
            "NotReady",
            "waiting for socket servers or Redis to become Ready".to_owned(),
        )
    };

    let connected = i
        .world
        .attendance
        .last
        .as_ref()
        .map(|r| r.connected)
        .or(old.connected_students);
    LiveClassStatus {
        phase: Some(plan.phase),
        occurrence_start,
        planned_replicas: Some(planned),
        needed_replicas: Some(plan.socket.needed_replicas),
        ready_replicas: Some(ready),
        connected_students: connected,
        peak_connected_students: plan.socket.peak_connected,
        capacity_ready_time,
        ready_lead_seconds,
        plan: plan.occurrence.map(|o| PlanStatus {
            scale_up_time: to_k8s(o.scale_up_at),
            ready_by_time: to_k8s(o.ready_by),
            start_time: to_k8s(o.start),
            end_time: to_k8s(o.end),
            drain_time: to_k8s(o.drain_from),
            class_replicas: Some(plan.socket.class_replicas),
            idle_replicas: Some(plan.socket.idle_replicas),
            redis: Some(shape_name(plan.redis.shape).to_owned()),
            redis_max_memory: plan.redis.memory.map(|m| m.max_memory_arg()),
        }),
        // Set by the decide step, which holds the start-up estimate and the Sentinels' answer.
        pod_startup: None,
        redis_primary: None,
        token_secret_ref: i.token.clone(),
        next_transition: plan.next_transition.and_then(to_k8s),
        last_scale_down_time: plan.socket.last_scale_down.and_then(to_k8s),
        conditions: vec![
            ready_condition,
            capacity,
            redis,
            capped_condition,
            applied,
            attendance,
        ],
        observed_generation: generation,
    }
}

fn shape_name(shape: RedisShape) -> &'static str {
    match shape {
        RedisShape::Standalone => "Standalone",
        RedisShape::Replicated { .. } => "Replicated",
        RedisShape::External => "External",
    }
}

fn attendance_condition(
    old: &LiveClassStatus,
    plan: &Plan,
    view: &AttendanceView,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let cond = |ok: bool, reason: &str, message: String| {
        condition(
            &old.conditions,
            condition::ATTENDANCE_OBSERVED,
            ok,
            reason,
            message,
            generation,
            now,
        )
    };
    if !plan.watch_attendance {
        return cond(
            true,
            "NotNeeded",
            "attendance is read from scale-up until the class has drained and nobody is connected"
                .to_owned(),
        );
    }
    match (&view.error, &view.last) {
        (Some(error), Some(_)) => cond(
            false,
            error.reason(),
            format!("{error}; the plan holds capacity on the last reading"),
        ),
        (Some(error), None) => cond(
            false,
            error.reason(),
            format!("{error}; no reading yet, the plan follows the schedule"),
        ),
        (None, Some(_)) => cond(true, "Read", "read from the class's Redis".to_owned()),
        (None, None) => cond(true, "Pending", "not read yet".to_owned()),
    }
}

/// The status of a class whose spec the operator refuses: `Ready=False` with every problem,
/// and the rest of the old status kept (what runs keeps running).
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

/// `status` after an apply failed with `reason` and `message`: `Applied=False` and
/// `Ready=False` saying so, the rest as decided.
pub fn apply_failed(
    old: &LiveClassStatus,
    status: &LiveClassStatus,
    reason: &str,
    message: String,
    now: DateTime<Utc>,
) -> LiveClassStatus {
    let generation = status.observed_generation;
    let mut new = status.clone();
    for c in &mut new.conditions {
        if c.type_ == condition::APPLIED {
            *c = condition(
                &old.conditions,
                condition::APPLIED,
                false,
                reason,
                message.clone(),
                generation,
                now,
            );
        } else if c.type_ == condition::READY {
            *c = condition(
                &old.conditions,
                condition::READY,
                false,
                "ApplyFailed",
                format!("applying the class's objects failed: {message}"),
                generation,
                now,
            );
        }
    }
    new
}

/// The instant of a status time, for the planner.
/// The status this operator last wrote for a class, and the object's resourceVersion after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub uid: Option<String>,
    pub resource_version: u64,
    pub status: LiveClassStatus,
}

impl Written {
    /// What a status write returned, when it says which version it made.
    pub fn of(written: &LiveClass) -> Option<Self> {
        Some(Self {
            uid: written.metadata.uid.clone(),
            resource_version: written.metadata.resource_version.as_deref()?.parse().ok()?,
            status: written.status.clone()?,
        })
    }
}

/// The class to decide from: `lc` from the watch cache, unless the cache has not caught up
/// with the status this operator wrote last (the same object at an older resourceVersion);
/// then a copy with that status. A reconcile can run right after a write (an owned object it
/// changed triggers one), and deciding from the status before it would forget, say, the drain
/// step just taken (`lastScaleDownTime`) and take the next one at once.
pub fn caught_up(lc: &LiveClass, written: Option<&Written>) -> Option<LiveClass> {
    let written = written?;
    let seen: u64 = lc.metadata.resource_version.as_deref()?.parse().ok()?;
    (lc.metadata.uid == written.uid && seen < written.resource_version).then(|| {
        let mut fresher = lc.clone();
        fresher.status = Some(written.status.clone());
        fresher
    })
}

pub fn last_scale_down(old: &LiveClassStatus) -> Option<DateTime<Utc>> {
    old.last_scale_down_time.as_ref().and_then(from_k8s)
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
