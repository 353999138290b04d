//! What the day is judged by, from what was watched (pure, so it is tested without a cluster):
//! per class, whether the planned capacity was Ready by `start - warmup` and how far ahead of
//! the start it was, pod-seconds above a perfect oracle, the largest single scale-down step
//! against the configured one.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The socket Deployment of a class as watched: from `t` on, `replicas` asked, `ready` Ready.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeploySample {
    pub t: DateTime<Utc>,
    pub replicas: u32,
    pub ready: u32,
}

/// The class's status as watched: from `t` on, the operator planned `planned` and the students
/// (expected or connected) needed `needed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatusSample {
    pub t: DateTime<Utc>,
    pub planned: u32,
    pub needed: u32,
}

/// One occurrence's milestones, as the class's status gave them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Milestones {
    pub scale_up: DateTime<Utc>,
    pub ready_by: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub drain_from: DateTime<Utc>,
    /// The replicas planned for the class at `ready_by`.
    pub class_replicas: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassResult {
    pub on_time: bool,
    /// Seconds before the start the planned capacity was Ready (and stayed so until
    /// `start - warmup`); negative: after the start.
    pub lead_seconds: Option<f64>,
    /// Seconds after `start - warmup` the capacity was Ready, when it was late.
    pub late_seconds: Option<f64>,
    /// Pod-seconds Ready above the oracle: the need from `start - warmup` to the drain, idle
    /// replicas outside it, every pod Ready at once.
    pub over_provisioned_pod_seconds: f64,
    /// Pod-seconds Ready below the oracle's need inside the window.
    pub under_provisioned_pod_seconds: f64,
    /// The largest single drop of the Deployment's replicas, and the most its step allowed.
    pub largest_scale_down: u32,
    pub step_violations: u32,
}

fn secs(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// The value of a step function of samples at `t` (the last sample at or before it).
fn at<T: Copy>(samples: &[(DateTime<Utc>, T)], t: DateTime<Utc>, before: T) -> T {
    samples
        .iter()
        .take_while(|(at, _)| *at <= t)
        .last()
        .map_or(before, |(_, v)| *v)
}

/// Judges one class between `from` and `to`.
pub fn judge(
    m: &Milestones,
    deploys: &[DeploySample],
    statuses: &[StatusSample],
    idle: u32,
    step_percent: u32,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ClassResult {
    let ready: Vec<(DateTime<Utc>, u32)> = deploys.iter().map(|d| (d.t, d.ready)).collect();
    let needed: Vec<(DateTime<Utc>, u32)> = statuses.iter().map(|s| (s.t, s.needed)).collect();
    let enough = |r: u32| r >= m.class_replicas;

    // Ready at `ready_by`: since when without a gap. Else the first time after it.
    let ready_at = if enough(at(&ready, m.ready_by, 0)) {
        let mut since = m.ready_by;
        for (t, r) in ready.iter().rev().filter(|(t, _)| *t <= m.ready_by) {
            if !enough(*r) {
                break;
            }
            since = *t;
        }
        Some(since)
    } else {
        ready
            .iter()
            .find(|(t, r)| *t > m.ready_by && enough(*r))
            .map(|(t, _)| *t)
    };
    let on_time = ready_at.is_some_and(|t| t <= m.ready_by);

    // Integrate both step functions over [from, to] at every change of either.
    let mut edges: Vec<DateTime<Utc>> = ready
        .iter()
        .map(|(t, _)| *t)
        .chain(needed.iter().map(|(t, _)| *t))
        .chain([m.ready_by, m.drain_from, from, to])
        .filter(|t| *t >= from && *t <= to)
        .collect();
    edges.sort();
    edges.dedup();
    let (mut over, mut under) = (0.0, 0.0);
    for pair in edges.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let in_window = a >= m.ready_by && a < m.drain_from;
        let oracle = if in_window {
            at(&needed, a, m.class_replicas)
        } else {
            idle
        };
        let have = at(&ready, a, 0);
        let dt = secs(a, b);
        over += f64::from(have.saturating_sub(oracle)) * dt;
        if in_window {
            under += f64::from(oracle.saturating_sub(have)) * dt;
        }
    }

    let (mut largest, mut violations) = (0, 0);
    for pair in deploys.windows(2) {
        let (before, after) = (pair[0].replicas, pair[1].replicas);
        if after < before {
            let drop = before - after;
            let allowed = (before * step_percent).div_ceil(100).max(1);
            largest = largest.max(drop);
            violations += u32::from(drop > allowed);
        }
    }
    ClassResult {
        on_time,
        lead_seconds: ready_at.map(|t| secs(t, m.start)),
        late_seconds: ready_at.filter(|_| !on_time).map(|t| secs(m.ready_by, t)),
        over_provisioned_pod_seconds: over,
        under_provisioned_pod_seconds: under,
        largest_scale_down: largest,
        step_violations: violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn d(s: i64, replicas: u32, ready: u32) -> DeploySample {
        DeploySample {
            t: t(s),
            replicas,
            ready,
        }
    }

    /// Scale-up at 40, Ready by 100, start 160, drain from 300; 4 pods planned and needed.
    fn m() -> Milestones {
        Milestones {
            scale_up: t(40),
            ready_by: t(100),
            start: t(160),
            drain_from: t(300),
            class_replicas: 4,
        }
    }

    fn need(n: u32) -> Vec<StatusSample> {
        vec![StatusSample {
            t: t(0),
            planned: n,
            needed: n,
        }]
    }

    #[test]
    fn ready_ahead_is_on_time_with_its_lead_and_the_early_pods_are_over_the_oracle() {
        let deploys = [
            d(0, 1, 1),
            d(40, 4, 1),
            d(90, 4, 4),
            d(300, 2, 2),
            d(310, 1, 1),
        ];
        let r = judge(&m(), &deploys, &need(4), 1, 50, t(0), t(400));
        assert!(r.on_time);
        assert_eq!(r.lead_seconds, Some(70.0));
        assert_eq!(r.late_seconds, None);
        // 3 pods above idle for 10 s before Ready-by; after the drain 1 above for 10 s.
        assert_eq!(r.over_provisioned_pod_seconds, 30.0 + 10.0);
        assert_eq!(r.under_provisioned_pod_seconds, 0.0);
        assert_eq!((r.largest_scale_down, r.step_violations), (2, 0));
    }

    #[test]
    fn ready_after_ready_by_is_late_and_short_inside_the_window() {
        let deploys = [d(0, 0, 0), d(60, 4, 0), d(100, 4, 2), d(125, 4, 4)];
        let r = judge(&m(), &deploys, &need(4), 0, 50, t(0), t(200));
        assert!(!r.on_time);
        assert_eq!(r.late_seconds, Some(25.0));
        assert_eq!(r.lead_seconds, Some(35.0));
        assert_eq!(r.under_provisioned_pod_seconds, 2.0 * 25.0);
    }

    #[test]
    fn a_gap_before_ready_by_counts_from_when_it_was_ready_again() {
        let deploys = [d(0, 4, 4), d(50, 4, 3), d(80, 4, 4)];
        let r = judge(&m(), &deploys, &need(4), 4, 50, t(0), t(200));
        assert!(r.on_time);
        assert_eq!(r.lead_seconds, Some(80.0));
    }

    #[test]
    fn a_drop_larger_than_the_step_is_a_violation() {
        let deploys = [d(0, 10, 10), d(300, 5, 5), d(310, 1, 1), d(320, 0, 0)];
        let r = judge(&m(), &deploys, &need(4), 0, 50, t(0), t(400));
        // 10 → 5 is 50%, the largest drop; 5 → 1 is 4 > ceil(2.5) = 3; 1 → 0 is one pod.
        assert_eq!((r.largest_scale_down, r.step_violations), (5, 1));
    }
}
