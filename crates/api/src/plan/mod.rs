//! The capacity planner: `(spec, now, observed) -> Plan`, a pure function the operator applies.
//!
//! For each occurrence starting at `S`, with `lead = warmup + podStartup`:
//!
//! ```text
//!  S - lead        S - warmup          S             S + duration     + cooldown
//!  |-- WarmingUp: pods starting --|-- Ready ---|-- Live --|-- CoolingDown: held --|-- drain --> Scheduled/Ended
//! ```
//!
//! * From `S - lead` until `S + duration + cooldown` the plan holds the class's replicas
//!   (`ceil(expected * headroom / connectionsPerPod)`, clamped), raised by a reactive floor when
//!   more students are connected than that serves. Scaling up at `S - lead` rather than at
//!   `S - warmup` is what makes the pods Ready by `S - warmup`.
//! * After that it drains: every `scaleDown.interval` it lowers the replicas the operator last
//!   applied by at most one step (`stepPercent` of them, rounded up, at least one pod), so at
//!   most that share of the remaining students reconnect at once, in waves. The step is gated on `Observed::last_scale_down`,
//!   which the operator keeps in status from [`SocketPlan::last_scale_down`].
//! * `next_transition` is the next instant the plan changes on its own: strictly after `now`,
//!   and never after the next phase boundary, so the operator can requeue exactly then.
//!
//! For a recurring class the occurrence in play is the latest one whose scale-up has begun
//! (start at or before `now + lead`); while it has not yet reached `end + cooldown` it is the
//! active one, so a class that started less than `duration + cooldown` ago is still on.

pub mod capacity;
pub mod redis;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::{types::Phase, validate::ValidSpec};

pub use redis::{RedisMemory, RedisPlan, RedisShape};

/// What the operator saw just before planning. Every field is optional: a missing one means
/// "not known", never "zero".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    /// Replicas the operator last applied: the socket Deployment's `spec.replicas`, or the HPA's
    /// `minReplicas` when autoscaling. A drain steps down from this.
    pub current_replicas: Option<u32>,
    /// Students connected to the class now (from its Redis). Raises the plan during a class.
    pub connected_students: Option<u64>,
    /// `status.lastScaleDownTime`: when a drain step last lowered the replicas.
    pub last_scale_down: Option<DateTime<Utc>>,
}

/// What the operator should make true now, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub phase: Phase,
    /// The occurrence the phase refers to: the current one, or else the next (or, once a
    /// one-off class has ended, the last).
    pub occurrence: Option<Occurrence>,
    pub socket: SocketPlan,
    pub redis: RedisPlan,
    /// The HorizontalPodAutoscaler to keep, when the spec asks for one.
    pub autoscaling: Option<HpaPlan>,
    /// The next instant the plan changes by itself; `None` once nothing is left to happen.
    pub next_transition: Option<DateTime<Utc>>,
    /// Whether connected students can change the plan now (a class is warming up, live or
    /// cooling down), so the operator should keep reading the connected count.
    pub watch_attendance: bool,
}

/// The instants of one occurrence of the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    /// When scale-up begins: `start - warmup - podStartup`.
    pub scale_up_at: DateTime<Utc>,
    /// When capacity must be Ready: `start - warmup`.
    pub ready_by: DateTime<Utc>,
    pub start: DateTime<Utc>,
    /// `start + duration`.
    pub end: DateTime<Utc>,
    /// When the drain begins: `end + cooldown`.
    pub drain_from: DateTime<Utc>,
}

/// The socket servers the plan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketPlan {
    /// Replicas to run now.
    pub replicas: u32,
    /// Replicas the class holds from scale-up to the drain: the expected attendance with
    /// headroom, clamped to [minReplicas, maxReplicas].
    pub class_replicas: u32,
    /// The same need before the clamp; above `class_replicas` means maxReplicas caps the class.
    pub needed_replicas: u64,
    /// Replicas the reactive floor asks for from the connected students, when it applies.
    pub reactive_floor: Option<u32>,
    /// What `status.lastScaleDownTime` should say after this plan is applied.
    pub last_scale_down: Option<DateTime<Utc>>,
}

/// The HorizontalPodAutoscaler for the socket servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HpaPlan {
    /// The plan's replicas (at least 1, as an HPA requires).
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub target_cpu_utilization: u32,
}

impl Plan {
    /// How long until `next_transition`, for a requeue.
    pub fn requeue_after(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        self.next_transition.and_then(|t| (t - now).to_std().ok())
    }
}

impl Occurrence {
    fn new(start: DateTime<Utc>, spec: &ValidSpec) -> Self {
        let ready_by = sub(start, spec.warmup);
        let end = add(start, spec.duration);
        Occurrence {
            scale_up_at: sub(ready_by, spec.socket.pod_startup),
            ready_by,
            start,
            end,
            drain_from: add(end, spec.cooldown),
        }
    }
}

/// Plans the class at `now`.
pub fn plan(spec: &ValidSpec, now: DateTime<Utc>, observed: &Observed) -> Plan {
    let socket = &spec.socket;
    let lead = spec
        .warmup
        .checked_add(&socket.pod_startup)
        .unwrap_or(TimeDelta::MAX);
    let needed_replicas = capacity::needed_replicas(u64::from(spec.expected_attendance), socket);
    let class_replicas = capacity::clamp(needed_replicas, socket);
    let idle = socket.min_replicas;
    let next_scale_up = spec
        .schedule
        .next_after(add(now, lead))
        .map(|s| Occurrence::new(s, spec));
    let latest = spec
        .schedule
        .latest_at_or_before(add(now, lead))
        .map(|s| Occurrence::new(s, spec));

    let mut socket_plan = SocketPlan {
        replicas: idle,
        class_replicas,
        needed_replicas,
        reactive_floor: None,
        last_scale_down: observed.last_scale_down,
    };
    let earliest = |boundary: DateTime<Utc>| {
        Some(match next_scale_up {
            Some(next) => boundary.min(next.scale_up_at),
            None => boundary,
        })
    };

    // What runs now, never counting more than maxReplicas: replicas scaled by hand above it
    // are not the plan's to drain slowly.
    let current = observed
        .current_replicas
        .map(|c| c.min(socket.max_replicas.max(idle)));
    let active = latest.is_some_and(|occ| now < occ.drain_from);
    let (phase, occurrence, next_transition) = match (latest, current) {
        (Some(occ), _) if active => {
            let floor = observed
                .connected_students
                .map(|n| capacity::clamp(capacity::needed_replicas(n, socket), socket));
            socket_plan.reactive_floor = floor;
            socket_plan.replicas = class_replicas.max(floor.unwrap_or(0));
            let (phase, boundary) = if now < occ.start {
                (Phase::WarmingUp, occ.start)
            } else if now < occ.end {
                (Phase::Live, occ.end)
            } else {
                (Phase::CoolingDown, occ.drain_from)
            };
            (phase, Some(occ), earliest(boundary))
        }
        (Some(occ), Some(current)) if current > idle => {
            let due = observed
                .last_scale_down
                .map(|last| add(last, socket.step_interval));
            match due {
                Some(due) if now < due => {
                    socket_plan.replicas = current;
                    (Phase::CoolingDown, Some(occ), earliest(due))
                }
                _ => {
                    let step = capacity::drain_step(current, socket);
                    let lowered = current.saturating_sub(step).max(idle);
                    socket_plan.replicas = lowered;
                    // Rounded up to a whole second, the precision status keeps, so the stored
                    // time never lets the next step come early.
                    let stepped_at = ceil_second(now);
                    socket_plan.last_scale_down = Some(stepped_at);
                    if lowered > idle {
                        let next_step = add(stepped_at, socket.step_interval);
                        (Phase::CoolingDown, Some(occ), earliest(next_step))
                    } else {
                        idle_phase(next_scale_up, Some(occ))
                    }
                }
            }
        }
        (latest, _) => idle_phase(next_scale_up, latest),
    };

    let autoscaling = spec.autoscaling.as_ref().map(|a| HpaPlan {
        min_replicas: socket_plan.replicas.max(1),
        max_replicas: socket.max_replicas.max(socket_plan.replicas).max(1),
        target_cpu_utilization: a.target_cpu_utilization,
    });
    Plan {
        phase,
        occurrence,
        socket: socket_plan,
        redis: redis::plan(
            &spec.redis,
            socket,
            spec.expected_attendance,
            class_replicas,
        ),
        autoscaling,
        next_transition,
        watch_attendance: active,
    }
}

/// Between classes: `Scheduled` until the next scale-up, or `Ended` if none is left.
fn idle_phase(
    next: Option<Occurrence>,
    last: Option<Occurrence>,
) -> (Phase, Option<Occurrence>, Option<DateTime<Utc>>) {
    match next {
        Some(next) => (Phase::Scheduled, Some(next), Some(next.scale_up_at)),
        None => (Phase::Ended, last, None),
    }
}

// Times here are at most years apart from real dates and durations at most a day, far from
// chrono's limits; saturating keeps a corrupt input from panicking all the same.
fn add(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    match t.duration_trunc(TimeDelta::seconds(1)) {
        Ok(floor) if floor < t => add(floor, TimeDelta::seconds(1)),
        _ => t,
    }
}

fn sub(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests;
