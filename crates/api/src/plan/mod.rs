//! The capacity planner: `(spec, now, observed) -> Plan`, a pure function the operator applies.
//!
//! For each occurrence starting at `S`, with `lead = warmup + podStartup`:
//!
//! ```text
//!  S - lead        S - warmup          S             S + duration     + cooldown
//!  |-- WarmingUp: pods starting --|-- Ready ---|-- Live --|-- CoolingDown: held --|-- drain --> Scheduled/Ended
//! ```
//!
//! * **The active window**, from `S - lead` until `S + duration + cooldown`: the plan holds the
//!   class's replicas (`ceil(expected * headroom / connectionsPerPod)`, clamped), raised by a
//!   reactive floor sized for the most students connected at once during this occurrence (its
//!   peak, so students who leave and come back find their capacity still there). Scaling up at
//!   `S - lead` rather than at `S - warmup` is what makes the pods Ready by `S - warmup`. Within
//!   the window replicas fall only when the plan itself falls (a smaller spec), and then in the
//!   drain's steps; an observation that failed is the operator's to replace by the last one it
//!   had, never a reason to scale down.
//! * **The drain**, after the window: every `scaleDown.interval` the replicas running come down
//!   by at most one step (`stepPercent` of them, rounded up, at least one pod), so at most that
//!   share of the remaining students reconnect at once, in waves, but never below what the
//!   students still connected need (a class that overruns keeps its capacity until they leave).
//!   The step is gated on `Observed::last_scale_down`, which the operator keeps in status from
//!   [`SocketPlan::last_scale_down`]. A class whose occurrence moved away while it ran (a
//!   postponed one-off class) drains the same way.
//! * **Between occurrences** the class idles at `idleReplicas` (Redis is not run while no socket
//!   server is); a class that has ended for good is released `endedTtl` after its end plus
//!   cool-down, once nobody is connected.
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
    /// Students connected to the class: the latest reading, or the last one the operator had
    /// when the latest failed.
    pub connected_students: Option<u64>,
    /// The most students connected at once during an occurrence (`status.peakConnectedStudents`);
    /// used only when it belongs to the occurrence in play.
    pub peak: Option<PeakAttendance>,
    /// `status.lastScaleDownTime`: when a drain step last lowered the replicas.
    pub last_scale_down: Option<DateTime<Utc>>,
}

/// The most students connected at once during the occurrence that starts at `occurrence_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeakAttendance {
    pub occurrence_start: DateTime<Utc>,
    pub students: u64,
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
    /// The HorizontalPodAutoscaler to keep, when the spec asks for one and pods are planned.
    pub autoscaling: Option<HpaPlan>,
    /// The next instant the plan changes by itself; `None` once nothing is left to happen.
    pub next_transition: Option<DateTime<Utc>>,
    /// Whether connected students can change the plan now (the active window, a drain, or
    /// anyone still connected), so the operator should keep reading the connected count.
    pub watch_attendance: bool,
    /// The class has ended for good and its `endedTtl` has passed: nothing is to be kept.
    pub released: bool,
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
    /// Replicas to run now (0 once released).
    pub replicas: u32,
    /// Replicas the class holds from scale-up to the drain: the expected attendance with
    /// headroom, clamped to [minReplicas, maxReplicas].
    pub class_replicas: u32,
    /// Replicas between occurrences.
    pub idle_replicas: u32,
    /// What the expected students, or the connected ones when more, need before the clamp;
    /// above `maxReplicas` means the class is capped.
    pub needed_replicas: u64,
    /// Replicas the reactive floor asks for from the connected students, when it applies.
    pub reactive_floor: Option<u32>,
    /// The peak attendance of the occurrence in play, this observation included, for status.
    pub peak_connected: Option<u64>,
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
    /// The drain's pace, so the HPA never removes pods faster than the plan would.
    pub scale_down_percent: u32,
    pub scale_down_period_seconds: u32,
}

impl Plan {
    /// How long until `next_transition` for a requeue; zero when it has already passed (a
    /// reconcile that outlasted it), `None` when nothing is left to happen.
    pub fn requeue_after(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        self.next_transition
            .map(|t| (t - now).to_std().unwrap_or(std::time::Duration::ZERO))
    }
}

impl Occurrence {
    pub fn new(start: DateTime<Utc>, spec: &ValidSpec) -> Self {
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

/// A drain step at `now` from `current` towards `target`, gated on the last step.
struct Step {
    replicas: u32,
    /// When this step happened, if it lowered the replicas now.
    stepped_at: Option<DateTime<Utc>>,
    /// When the next step is due, if there is one.
    next: Option<DateTime<Utc>>,
}

fn step_down(
    spec: &ValidSpec,
    now: DateTime<Utc>,
    current: u32,
    target: u32,
    last: Option<DateTime<Utc>>,
) -> Step {
    let interval = spec.socket.step_interval;
    match last.map(|last| add(last, interval)) {
        Some(due) if now < due => Step {
            replicas: current,
            stepped_at: None,
            next: Some(due),
        },
        _ => {
            let step = capacity::drain_step(current, &spec.socket);
            let lowered = current.saturating_sub(step).max(target);
            // Rounded up to a whole second, the precision status keeps, so the stored time
            // never lets the next step come early.
            let stepped_at = ceil_second(now);
            Step {
                replicas: lowered,
                stepped_at: Some(stepped_at),
                next: (lowered > target).then(|| add(stepped_at, interval)),
            }
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
    let class_need = capacity::needed_replicas(u64::from(spec.expected_attendance), socket);
    let class_replicas = capacity::clamp(class_need, socket);
    let idle = socket.idle_replicas;
    let max = socket.max_replicas.max(socket.min_replicas).max(idle);
    let next_scale_up = spec
        .schedule
        .next_after(add(now, lead))
        .map(|s| Occurrence::new(s, spec));
    let latest = spec
        .schedule
        .latest_at_or_before(add(now, lead))
        .map(|s| Occurrence::new(s, spec));
    let earliest = |boundary: DateTime<Utc>| match next_scale_up {
        Some(next) => boundary.min(next.scale_up_at),
        None => boundary,
    };

    // What runs now, never counting more than maxReplicas: replicas scaled by hand above it
    // are not the plan's to drain slowly.
    let current = observed.current_replicas.map(|c| c.min(max));
    let connected = observed.connected_students;
    let mut socket_plan = SocketPlan {
        replicas: idle,
        class_replicas,
        idle_replicas: idle,
        needed_replicas: class_need,
        reactive_floor: None,
        peak_connected: None,
        last_scale_down: observed.last_scale_down,
    };
    let mut released = false;

    let active = latest.filter(|occ| now < occ.drain_from);
    let (phase, occurrence, next_transition) = if let Some(occ) = active {
        let peak = observed
            .peak
            .filter(|p| p.occurrence_start == occ.start)
            .map(|p| p.students)
            .max(connected);
        let floor = peak.map(|n| capacity::clamp(capacity::needed_replicas(n, socket), socket));
        socket_plan.peak_connected = peak;
        socket_plan.reactive_floor = floor;
        socket_plan.needed_replicas =
            class_need.max(peak.map_or(0, |n| capacity::needed_replicas(n, socket)));
        // Never fewer than between classes, however the two are configured.
        let target = class_replicas.max(floor.unwrap_or(0)).max(idle);
        let (phase, boundary) = if now < occ.start {
            (Phase::WarmingUp, occ.start)
        } else if now < occ.end {
            (Phase::Live, occ.end)
        } else {
            (Phase::CoolingDown, occ.drain_from)
        };
        let mut next = boundary;
        match current {
            // The plan itself fell (a smaller spec): down in the drain's steps.
            Some(c) if c > target => {
                let step = step_down(spec, now, c, target, observed.last_scale_down);
                socket_plan.replicas = step.replicas;
                if step.stepped_at.is_some() {
                    socket_plan.last_scale_down = step.stepped_at;
                }
                if let Some(due) = step.next {
                    next = next.min(due);
                }
            }
            _ => socket_plan.replicas = target,
        }
        (phase, Some(occ), Some(earliest(next)))
    } else {
        // After the window: only the students still connected hold capacity up.
        let overrun = connected.map(|n| {
            let need = capacity::needed_replicas(n, socket);
            socket_plan.needed_replicas = class_need.max(need);
            u32::try_from(need.min(u64::from(max))).unwrap_or(max)
        });
        socket_plan.reactive_floor = overrun.filter(|&f| f > idle);
        let target = idle.max(overrun.unwrap_or(0));
        let shown = latest.or(next_scale_up);
        match current {
            Some(c) if c > target => {
                let step = step_down(spec, now, c, target, observed.last_scale_down);
                socket_plan.replicas = step.replicas;
                if step.stepped_at.is_some() {
                    socket_plan.last_scale_down = step.stepped_at;
                }
                match step.next {
                    Some(due) => (Phase::CoolingDown, shown, Some(earliest(due))),
                    None if target > idle => (
                        Phase::CoolingDown,
                        shown,
                        next_scale_up.map(|n| n.scale_up_at),
                    ),
                    None => idle_phase(spec, now, next_scale_up, latest, connected, &mut released),
                }
            }
            _ => {
                socket_plan.replicas = target;
                if target > idle {
                    (
                        Phase::CoolingDown,
                        shown,
                        next_scale_up.map(|n| n.scale_up_at),
                    )
                } else {
                    idle_phase(spec, now, next_scale_up, latest, connected, &mut released)
                }
            }
        }
    };
    if released {
        socket_plan.replicas = 0;
    }
    // While a drain is under way the replicas planned are above idle.
    let watch_attendance =
        active.is_some() || socket_plan.replicas > idle || connected.unwrap_or(0) > 0;
    let autoscaling = spec
        .autoscaling
        .as_ref()
        .filter(|_| socket_plan.replicas > 0 && !released)
        .map(|a| HpaPlan {
            min_replicas: socket_plan.replicas.max(1),
            max_replicas: socket.max_replicas.max(socket_plan.replicas).max(1),
            target_cpu_utilization: a.target_cpu_utilization,
            scale_down_percent: socket.step_percent,
            scale_down_period_seconds: u32::try_from(socket.step_interval.num_seconds())
                .unwrap_or(u32::MAX)
                .max(1),
        });
    let mut redis = redis::plan(
        &spec.redis,
        socket,
        spec.expected_attendance,
        class_replicas,
    );
    redis.running = socket_plan.replicas > 0 && !released;
    Plan {
        phase,
        occurrence,
        socket: socket_plan,
        redis,
        autoscaling,
        next_transition,
        watch_attendance,
        released,
    }
}

/// Between classes: `Scheduled` until the next scale-up, or `Ended` if none is left, and
/// released `endedTtl` after the last drain began, unless someone is still connected.
fn idle_phase(
    spec: &ValidSpec,
    now: DateTime<Utc>,
    next: Option<Occurrence>,
    last: Option<Occurrence>,
    connected: Option<u64>,
    released: &mut bool,
) -> (Phase, Option<Occurrence>, Option<DateTime<Utc>>) {
    match next {
        Some(next) => (Phase::Scheduled, Some(next), Some(next.scale_up_at)),
        None if connected.unwrap_or(0) > 0 => (Phase::Ended, last, None),
        None => {
            let release_at = last.map(|o| add(o.drain_from, spec.ended_ttl));
            match release_at {
                Some(at) if now < at => (Phase::Ended, last, Some(at)),
                _ => {
                    *released = true;
                    (Phase::Ended, last, None)
                }
            }
        }
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
