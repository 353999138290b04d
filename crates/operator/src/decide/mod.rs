//! The decide step: a pure function from a LiveClass, what was observed of it and the time to
//! everything the reconcile should do — the objects to apply and to delete, the pods' deletion
//! costs before a scale-down, the HPA handover, the status, the Events and when to look again.
//! No I/O and no clock: everything here is unit-tested without a cluster.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use liveclass_api::{
    LiveClass, LiveClassStatus, Phase, Plan,
    plan::{Observed, PeakAttendance, RedisShape},
    time::from_k8s,
    types::PodStartupStatus,
    types::RedisMode,
    validate::{ValidationError, describe, validate_class},
};

use crate::{
    attendance::RedisSource,
    error::Error,
    metrics::ClassFigures,
    observe::World,
    resources::{self, Desired, Owned, redis_url},
    startup,
    status::{self, LATE, find},
};

/// Added to a requeue at a transition instant, so the reconcile lands just after it.
pub const TRANSITION_MARGIN: Duration = Duration::from_millis(100);

/// The kind of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoteType {
    Normal,
    Warning,
}

/// An Event to publish about the class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Note {
    pub type_: NoteType,
    pub reason: String,
    pub message: String,
}

impl Note {
    fn normal(reason: &str, message: String) -> Self {
        Self {
            type_: NoteType::Normal,
            reason: reason.to_owned(),
            message,
        }
    }

    fn warning(reason: &str, message: String) -> Self {
        Self {
            type_: NoteType::Warning,
            reason: reason.to_owned(),
            message,
        }
    }
}

/// Everything one reconcile should do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The objects to apply; `None` for a refused spec (what runs is left alone).
    pub desired: Option<Desired>,
    /// Owned objects that exist but are no longer asked for: deleted after the applies.
    pub orphans: Vec<Owned>,
    /// `(pod, cost)`: deletion costs to set before the replicas come down, so the ReplicaSet
    /// removes the pods holding the fewest connections first.
    pub deletion_costs: Vec<(String, i32)>,
    /// With a new HPA: the replicas to hand over to it (see `apply`), so turning autoscaling
    /// on never drops the Deployment to its default of one.
    pub handover_replicas: Option<i32>,
    /// The name of the token Secret to create if it does not exist yet.
    pub generate_token: Option<String>,
    /// The name of the Redis password Secret to create if it does not exist yet.
    pub generate_redis_password: Option<String>,
    pub status: LiveClassStatus,
    pub events: Vec<Note>,
    /// When the plan next changes by itself.
    pub next_transition: Option<DateTime<Utc>>,
    /// Whether the class's attendance should be read (and then the class decided again).
    pub watch_attendance: bool,
    /// Where the class's attendance is.
    pub redis_source: Option<RedisSource>,
    pub phase: Option<Phase>,
    pub figures: ClassFigures,
    /// Seconds before the start the capacity became Ready, when it just did.
    pub capacity_lead: Option<i64>,
    /// The capacity just turned out late.
    pub late: bool,
    /// `invalid` for a refused spec, else `applied`.
    pub outcome: &'static str,
}

/// How long to wait before the next reconcile: the next transition (zero if it passed during
/// this reconcile, plus a margin), at most the attendance interval while attendance is read,
/// at most `max_requeue`.
pub fn requeue_after(
    next_transition: Option<DateTime<Utc>>,
    watch_attendance: bool,
    now: DateTime<Utc>,
    attendance_interval: Duration,
    max_requeue: Duration,
) -> Duration {
    let mut after = next_transition.map_or(max_requeue, |t| {
        (t - now).to_std().unwrap_or(Duration::ZERO) + TRANSITION_MARGIN
    });
    if watch_attendance {
        after = after.min(attendance_interval);
    }
    after.min(max_requeue)
}

/// Decides what to do for `lc`, seeing `world`, at `now`.
pub fn decide(lc: &LiveClass, world: &World, now: DateTime<Utc>) -> Result<Decision, Error> {
    let old = lc.status.clone().unwrap_or_default();
    let generation = lc.metadata.generation;
    let mut spec = match validate_class(lc) {
        Ok(spec) => spec,
        Err(errors) => return Ok(refuse(&old, &errors, generation, now)),
    };
    let namespace = lc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = lc.name_any();

    // What runs: the HPA's minimum while there is one (the operator's lever then), else the
    // Deployment's replicas.
    let deployment = world.deployment;
    let current = match (spec.autoscaling.is_some(), world.hpa_min_replicas) {
        (true, Some(min)) => Some(min),
        _ => deployment.and_then(|d| d.replicas),
    };
    // No socket server, no student connected; otherwise the latest reading, or the last one
    // known when reading failed.
    let stopped = deployment.is_some_and(|d| d.replicas == Some(0) && d.ready == 0);
    let connected = if stopped {
        Some(0)
    } else {
        world
            .attendance
            .last
            .as_ref()
            .map(|r| r.connected)
            .or(old.connected_students)
    };
    let peak = old
        .occurrence_start
        .as_ref()
        .and_then(from_k8s)
        .zip(old.peak_connected_students)
        .map(|(occurrence_start, students)| PeakAttendance {
            occurrence_start,
            students,
        });
    let observed = Observed {
        current_replicas: current,
        connected_students: connected,
        peak,
        last_scale_down: status::last_scale_down(&old),
    };
    // The lead for pods to start: the spec's, or longer if the slowest of the class's pods is
    // expected to take longer (see `startup`); how many pods that is comes from the plan.
    let spec_lead = spec.socket.pod_startup.to_std().unwrap_or_default();
    let learn = lc.spec.socket.learn_pod_startup;
    let pods = liveclass_api::plan(&spec, now, &observed)
        .socket
        .class_replicas;
    let mut lead = startup::lead(spec_lead, world.pod_startup.as_ref(), learn, pods);
    // Once an occurrence's scale-up has begun, a smaller estimate must not move it later: the
    // class would fall back to Scheduled and lose the pods it is warming up.
    if matches!(
        old.phase,
        Some(Phase::WarmingUp | Phase::Live | Phase::CoolingDown)
    ) && let Some(before) = old.pod_startup.as_ref()
    {
        lead = lead.max(Duration::from_secs(
            u64::try_from(before.lead_seconds).unwrap_or(0),
        ));
    }
    if let Ok(lead) = TimeDelta::from_std(lead) {
        spec.socket.pod_startup = lead;
    }
    let plan = liveclass_api::plan(&spec, now, &observed);

    let token = resources::token_source(lc);
    let mut desired = resources::build(lc, &spec, &plan, &token)?;
    // A Deployment created for an HPA starts at the plan's replicas rather than the default of
    // one; the next reconcile hands them over to the HPA.
    if deployment.is_none()
        && plan.autoscaling.is_some()
        && let Some(d) = desired.deployment.as_mut()
    {
        d.spec.replicas = i32::try_from(plan.socket.replicas).ok();
    }
    let wanted = desired.owned();
    let orphans = world
        .existing
        .iter()
        .map(|e| e.owned.clone())
        .filter(|o| !wanted.contains(o))
        .collect();

    let deletion_costs = match (current, &world.attendance.last) {
        (Some(c), Some(reading)) if plan.socket.replicas < c => world
            .pods
            .iter()
            .filter(|p| !p.terminating)
            .filter_map(|p| {
                let count = reading.per_pod.get(&p.name).copied().unwrap_or(0);
                let cost = i32::try_from(count).unwrap_or(i32::MAX);
                (p.deletion_cost != Some(cost)).then(|| (p.name.clone(), cost))
            })
            .collect(),
        _ => Vec::new(),
    };
    let handover_replicas = match (plan.autoscaling, deployment) {
        (Some(_), Some(d)) if d.replicas_ours => d.replicas.and_then(|r| i32::try_from(r).ok()),
        _ => None,
    };

    let mut status = status::valid(&status::Inputs {
        old: &old,
        plan: &plan,
        world,
        max_replicas: spec.socket.max_replicas,
        expected: spec.expected_attendance,
        token: Some(token.current()),
        generation,
        now,
    });
    status.pod_startup = world.pod_startup.as_ref().map(|e| PodStartupStatus {
        observed_p95_seconds: whole_seconds(e.p95()),
        samples: u32::try_from(e.samples()).unwrap_or(u32::MAX),
        scope: e.scope.as_str().to_owned(),
        lead_seconds: whole_seconds(lead),
    });
    // The primary the Sentinels named; kept from the last answer while they do not answer.
    // A Redis stopped between classes starts afresh, so its next primary is no failover.
    if matches!(plan.redis.shape, RedisShape::Replicated { .. }) && plan.redis.running {
        status.redis_primary = world
            .redis_primary
            .clone()
            .or_else(|| old.redis_primary.clone());
    }
    let mut events = notes(&old, &status, &plan);
    if let (Some(before), Some(after)) = (&old.redis_primary, &status.redis_primary)
        && before != after
    {
        events.push(Note::warning(
            "RedisFailover",
            format!("the Sentinels promoted {after}; the primary was {before}"),
        ));
    }
    events.extend(slow_startup(
        &old,
        world.pod_startup.as_ref(),
        spec_lead,
        lead,
        learn,
    ));
    let just_ready = status.capacity_ready_time.is_some()
        && (old.capacity_ready_time.is_none() || old.occurrence_start != status.occurrence_start);
    let was_late = find(&old.conditions, liveclass_api::condition::CAPACITY_READY)
        .is_some_and(|c| c.reason == LATE)
        && old.occurrence_start == status.occurrence_start;
    let now_late = find(&status.conditions, liveclass_api::condition::CAPACITY_READY)
        .is_some_and(|c| c.reason == LATE);

    let redis_source = Some(match (&lc.spec.redis.mode, &lc.spec.redis.external) {
        (RedisMode::External, Some(external)) => RedisSource::External {
            namespace: namespace.clone(),
            secret: external.secret_ref.clone(),
            password: external.password_secret_ref.clone(),
            sentinels: external.sentinels.clone(),
            master: external.master_name.clone(),
        },
        _ => RedisSource::Operated(redis_url(&name, &namespace)),
    });
    Ok(Decision {
        generate_token: token
            .generated()
            .filter(|_| !plan.released)
            .map(str::to_owned),
        generate_redis_password: desired
            .redis
            .is_some()
            .then(|| resources::Names::of(&name).redis_auth),
        desired: Some(desired),
        orphans,
        deletion_costs,
        handover_replicas,
        figures: ClassFigures {
            planned: plan.socket.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            needed: plan.socket.needed_replicas,
            connected,
        },
        capacity_lead: status.ready_lead_seconds.filter(|_| just_ready),
        late: now_late && !was_late,
        status,
        events,
        next_transition: plan.next_transition,
        watch_attendance: plan.watch_attendance,
        redis_source,
        phase: Some(plan.phase),
        outcome: "applied",
    })
}

fn whole_seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A Warning when pods were seen to take longer to start than `spec.socket.podStartup`, once
/// per time it becomes true (not on every reconcile while it stays true).
fn slow_startup(
    old: &LiveClassStatus,
    estimate: Option<&startup::Estimate>,
    spec_lead: Duration,
    lead: Duration,
    learn: bool,
) -> Option<Note> {
    let e = estimate.filter(|e| e.p95() > spec_lead)?;
    let spec_secs = whole_seconds(spec_lead);
    let reported = old
        .pod_startup
        .as_ref()
        .is_some_and(|p| p.observed_p95_seconds > spec_secs);
    if reported {
        return None;
    }
    let whose = match e.scope {
        startup::Scope::Class => "this class's",
        startup::Scope::Namespace => "this namespace's socket",
    };
    let observed = whole_seconds(e.p95());
    let what = if learn {
        format!(
            "scaling up {}s earlier (a lead of {}s for the slowest of the class's pods), so \
             capacity is Ready by start - warmup",
            whole_seconds(lead) - spec_secs,
            whole_seconds(lead)
        )
    } else {
        format!(
            "capacity may be Ready after start - warmup; raise spec.socket.podStartup to at \
             least {observed}s, or set spec.socket.learnPodStartup: true"
        )
    };
    Some(Note::warning(
        "SlowPodStartup",
        format!(
            "{whose} pods took up to {observed}s from creation to Ready (95th percentile of \
             {}), longer than spec.socket.podStartup ({spec_secs}s): {what}",
            e.samples()
        ),
    ))
}

/// A spec the operator refuses: `Ready=False` with every problem, one Warning Event per
/// distinct refusal (not one per reconcile), and nothing applied or deleted.
fn refuse(
    old: &LiveClassStatus,
    errors: &[ValidationError],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Decision {
    let reason = errors.first().map_or("InvalidSpec", |e| e.reason());
    let message = describe(errors);
    let already_reported = find(&old.conditions, liveclass_api::condition::READY)
        .is_some_and(|c| c.status == "False" && c.reason == reason && c.message == message);
    let status = status::invalid(old, reason, message.clone(), generation, now);
    Decision {
        desired: None,
        orphans: Vec::new(),
        deletion_costs: Vec::new(),
        handover_replicas: None,
        generate_token: None,
        generate_redis_password: None,
        status,
        events: if already_reported {
            Vec::new()
        } else {
            vec![Note::warning(reason, message)]
        },
        next_transition: None,
        watch_attendance: false,
        redis_source: None,
        phase: None,
        figures: ClassFigures::default(),
        capacity_lead: None,
        late: false,
        outcome: "invalid",
    }
}

/// The reason of the Event announcing `phase`.
pub fn transition_reason(phase: Phase) -> &'static str {
    match phase {
        Phase::Scheduled => "Scheduled",
        Phase::WarmingUp => "WarmingUp",
        Phase::Live => "Live",
        Phase::CoolingDown => "CoolingDown",
        Phase::Ended => "Ended",
    }
}

/// The Events a change from `old` to `new` status deserves: a phase change, replicas changed
/// within a phase, and Warnings when the class becomes capped, late or blind to attendance.
fn notes(old: &LiveClassStatus, new: &LiveClassStatus, plan: &Plan) -> Vec<Note> {
    use liveclass_api::condition::{ATTENDANCE_OBSERVED, CAPACITY_CAPPED, CAPACITY_READY, READY};
    let mut notes = Vec::new();
    let replicas = plan.socket.replicas;
    if old.phase != Some(plan.phase) {
        let message = match plan.occurrence {
            Some(o) => format!(
                "{} → {}: {replicas} socket server replicas; class starts {}",
                old.phase.map_or("none", Phase::as_str),
                plan.phase,
                o.start.to_rfc3339()
            ),
            None => format!("{replicas} socket server replicas"),
        };
        notes.push(Note::normal(transition_reason(plan.phase), message));
    } else if let Some(before) = old.planned_replicas
        && before != replicas
    {
        let reason = if replicas > before {
            "ScalingUp"
        } else {
            "ScalingDown"
        };
        let why = match plan.socket.reactive_floor {
            Some(floor) if floor == replicas && floor > plan.socket.class_replicas => {
                " (more students connected than planned)"
            }
            _ => "",
        };
        notes.push(Note::normal(
            reason,
            format!("socket server replicas {before} → {replicas}{why}"),
        ));
    }
    let became = |type_: &str, test: &dyn Fn(&Condition) -> bool| {
        let now = find(&new.conditions, type_).filter(|c| test(c));
        let before = find(&old.conditions, type_).is_some_and(test);
        now.filter(|_| !before).cloned()
    };
    if let Some(c) = became(CAPACITY_CAPPED, &|c| c.status == "True") {
        notes.push(Note::warning("CapacityCapped", c.message));
    }
    let same_occurrence = old.occurrence_start == new.occurrence_start;
    if let Some(c) = find(&new.conditions, CAPACITY_READY).filter(|c| c.reason == LATE) {
        let was = same_occurrence
            && find(&old.conditions, CAPACITY_READY).is_some_and(|o| o.reason == LATE);
        if !was {
            notes.push(Note::warning(LATE, c.message.clone()));
        }
    }
    if let Some(c) = became(ATTENDANCE_OBSERVED, &|c| c.status == "False") {
        notes.push(Note::warning("AttendanceUnavailable", c.message));
    }
    if let Some(c) = became(READY, &|c| c.reason == "Released") {
        notes.push(Note::normal("Released", c.message));
    }
    notes
}

#[cfg(test)]
mod tests;
