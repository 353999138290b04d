//! The timeline a class will get — scale-up, Ready-by, live, cool-down, each drain step and
//! its replicas, the Redis — for `liveclass-operator plan` and `status.plan`.
//!
//! Nothing here decides anything: the drain is found by running [`crate::plan`] forward from
//! the end of the cool-down with no students connected, so what the preview says is what the
//! planner does.

use chrono::{DateTime, TimeDelta, Utc};

use crate::{
    plan::{HpaPlan, Observed, Occurrence, RedisPlan, plan},
    types::Phase,
    validate::ValidSpec,
};

/// Drain steps simulated at most per occurrence (a drain from 10,000 replicas at 1% per step
/// takes about 900).
const MAX_STEPS: usize = 2_000;

/// The occurrences of a class from some instant on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub occurrences: Vec<OccurrenceTimeline>,
}

/// One occurrence and what the plan does for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccurrenceTimeline {
    pub occurrence: Occurrence,
    /// Replicas from scale-up until the drain, with no more students than expected.
    pub class_replicas: u32,
    /// Replicas once drained.
    pub idle_replicas: u32,
    /// Replicas the expected students need before `maxReplicas`; above `class_replicas` means
    /// the class is capped.
    pub needed_replicas: u64,
    pub redis: RedisPlan,
    pub autoscaling: Option<HpaPlan>,
    /// Each drain step: when, and the replicas after it.
    pub drain: Vec<(DateTime<Utc>, u32)>,
    /// Where the drain ends: `Scheduled` (the next occurrence follows) or `Ended`.
    pub after: Phase,
    /// When an `Ended` class releases its idle capacity (`endedTtl`).
    pub released_at: Option<DateTime<Utc>>,
}

/// Up to `count` occurrences: the one in play at `at` (if any), then the next ones.
pub fn timeline(spec: &ValidSpec, at: DateTime<Utc>, count: usize) -> Timeline {
    let mut occurrences = Vec::new();
    let lead = spec.warmup + spec.socket.pod_startup;
    // The occurrence in play: the latest whose scale-up has begun, while its drain is ahead or
    // under way; then the next ones.
    if let Some(start) = spec.schedule.latest_at_or_before(at + lead) {
        let latest = one(spec, start, spec.schedule.next_after(start));
        let over = latest
            .drain
            .last()
            .map_or(latest.occurrence.drain_from, |(t, _)| *t);
        if over > at && count > 0 {
            occurrences.push(latest);
        }
    }
    let mut cursor = spec.schedule.next_after(at + lead);
    while let Some(start) = cursor {
        if occurrences.len() >= count {
            break;
        }
        let next_start = spec.schedule.next_after(start);
        occurrences.push(one(spec, start, next_start));
        cursor = next_start;
    }
    Timeline { occurrences }
}

fn one(
    spec: &ValidSpec,
    start: DateTime<Utc>,
    next_start: Option<DateTime<Utc>>,
) -> OccurrenceTimeline {
    let occurrence = Occurrence::new(start, spec);
    let up = plan(
        spec,
        occurrence.scale_up_at,
        &Observed {
            current_replicas: Some(spec.socket.idle_replicas),
            ..Observed::default()
        },
    );
    let next_scale_up = next_start.map(|s| Occurrence::new(s, spec).scale_up_at);
    let mut drain = Vec::new();
    let mut current = up.socket.replicas;
    let mut last = None;
    let mut now = occurrence.drain_from;
    let mut after = Phase::Scheduled;
    let mut released_at = None;
    for _ in 0..MAX_STEPS {
        if next_scale_up.is_some_and(|n| now >= n) {
            break;
        }
        let p = plan(
            spec,
            now,
            &Observed {
                current_replicas: Some(current),
                connected_students: None,
                peak: None,
                last_scale_down: last,
            },
        );
        if p.socket.replicas < current {
            drain.push((now, p.socket.replicas));
        }
        current = p.socket.replicas;
        last = p.socket.last_scale_down;
        if p.phase != Phase::CoolingDown {
            after = p.phase;
            if p.phase == Phase::Ended {
                released_at = p.next_transition;
            }
            break;
        }
        match p.next_transition {
            Some(t) if t > now => now = t,
            _ => break,
        }
    }
    OccurrenceTimeline {
        occurrence,
        class_replicas: up.socket.class_replicas,
        idle_replicas: spec.socket.idle_replicas,
        needed_replicas: up.socket.needed_replicas,
        redis: up.redis,
        autoscaling: up.autoscaling,
        drain,
        after,
        released_at,
    }
}

impl OccurrenceTimeline {
    /// How long the drain takes, from the end of the cool-down to the last step.
    pub fn drain_length(&self) -> TimeDelta {
        self.drain
            .last()
            .map_or(TimeDelta::zero(), |(t, _)| *t - self.occurrence.drain_from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{schedule::Schedule, types::LiveClassSpec, validate::validate};

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn spec(yaml: &str) -> ValidSpec {
        let spec: LiveClassSpec = serde_yaml::from_str(yaml).unwrap();
        validate(&spec).unwrap()
    }

    #[test]
    fn a_one_off_class_scales_up_drains_in_steps_and_ends() {
        let s = spec(
            "schedule: { start: 2026-12-01T14:00:00Z, duration: 90m }\n\
             expectedAttendance: 8000\n\
             socket: { image: x }\n",
        );
        let t = timeline(&s, utc("2026-11-01T00:00:00Z"), 5);
        assert_eq!(t.occurrences.len(), 1);
        let o = &t.occurrences[0];
        assert_eq!(o.occurrence.scale_up_at, utc("2026-12-01T13:48:00Z"));
        assert_eq!(o.class_replicas, 5);
        assert_eq!(
            o.drain,
            [
                (utc("2026-12-01T15:45:00Z"), 3),
                (utc("2026-12-01T15:46:00Z"), 2),
                (utc("2026-12-01T15:47:00Z"), 1),
            ]
        );
        assert_eq!(o.after, Phase::Ended);
        assert_eq!(o.released_at, Some(utc("2026-12-01T16:45:00Z")));
        // Asked during the drain, the occurrence in play is still this one.
        let during = timeline(&s, utc("2026-12-01T15:46:30Z"), 5);
        assert_eq!(during.occurrences[0].occurrence, o.occurrence);
        assert!(
            timeline(&s, utc("2026-12-01T15:46:00Z") + TimeDelta::days(1), 5)
                .occurrences
                .is_empty()
        );
    }

    #[test]
    fn a_weekly_class_follows_the_clock_change() {
        let s = spec(
            "schedule: { cron: '0 14 * * SUN', timeZone: Europe/Berlin, duration: 1h }\n\
             expectedAttendance: 3000\n\
             socket: { image: x, connectionsPerPod: 1500 }\n",
        );
        let t = timeline(&s, utc("2026-03-21T00:00:00Z"), 2);
        let starts: Vec<_> = t.occurrences.iter().map(|o| o.occurrence.start).collect();
        assert_eq!(
            starts,
            [utc("2026-03-22T13:00:00Z"), utc("2026-03-29T12:00:00Z")]
        );
        assert!(matches!(s.schedule, Schedule::Recurring(_)));
        assert!(t.occurrences.iter().all(|o| o.after == Phase::Scheduled));
    }
}
