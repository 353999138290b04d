//! The planner's promises, checked over generated classes, instants and observations:
//! replicas within [min, max]; monotone in expected attendance; capacity for the expected
//! attendance from scale-up to the end of the class; the next transition strictly in the future
//! and never past a change of phase; a drain never faster than its step allows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeDelta, Utc};
use liveclass_api::{
    Observed, PeakAttendance, Phase, plan,
    plan::capacity,
    schedule::Schedule,
    types::RedisMode,
    validate::{AutoscalingParams, RedisParams, SocketParams, ValidSpec},
};
use proptest::prelude::*;

/// 2026-01-01T00:00:00Z; classes and instants are generated within a year or so of it.
const BASE: i64 = 1_767_225_600;
const YEAR: i64 = 366 * 24 * 3600;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(BASE + seconds, 0).unwrap()
}

fn schedule() -> impl Strategy<Value = Schedule> {
    let once = (0..YEAR).prop_map(|s| Schedule::Once(at(s)));
    // Zones with and without daylight saving, and wall-clock times inside the hours the
    // clocks skip or repeat (02:30 in Berlin, 01:30 in New York).
    let recurring = prop::sample::select(vec![
        ("0 14 * * MON", "Asia/Dhaka"),
        ("0 8 * * MON-FRI", "Asia/Dhaka"),
        ("0 14 * * SUN", "Europe/Berlin"),
        ("30 2 * * *", "Europe/Berlin"),
        ("0 18 * * TUE,THU", "America/New_York"),
        ("30 1 * * *", "America/New_York"),
        ("0 0 1 * *", "UTC"),
        ("@weekly", "Europe/Berlin"),
    ])
    .prop_map(|(pattern, zone)| Schedule::recurring(pattern, zone).unwrap());
    prop_oneof![once, recurring]
}

prop_compose! {
    fn minutes(lo: i64, hi: i64)(m in lo..=hi) -> TimeDelta { TimeDelta::minutes(m) }
}

prop_compose! {
    fn socket()(
        connections_per_pod in 1u32..=5_000,
        headroom_permille in 1_000u32..=3_000,
        min_replicas in 0u32..=5,
        extra in 0u32..=300,
        idle_choice in prop::option::of(0u32..=8),
        pod_startup in (1i64..=600).prop_map(TimeDelta::seconds),
        drain_window in (1i64..=60).prop_map(TimeDelta::seconds),
        step_percent in 1u32..=50,
        step_interval in (60i64..=300).prop_map(TimeDelta::seconds),
    ) -> SocketParams {
        SocketParams {
            connections_per_pod,
            headroom_permille,
            min_replicas,
            max_replicas: (min_replicas + extra).max(1),
            idle_replicas: idle_choice.unwrap_or(min_replicas).min((min_replicas + extra).max(1)),
            pod_startup,
            drain_window,
            step_percent,
            step_interval,
        }
    }
}

prop_compose! {
    // warmup + duration + cooldown stays under 8h, so even a daily class on a 23-hour
    // DST day does not overlap itself (the case `validate` refuses).
    fn spec()(
        schedule in schedule(),
        duration in minutes(1, 240),
        warmup in minutes(1, 120),
        cooldown in minutes(1, 120),
        expected_attendance in 1u32..=200_000,
        socket in socket(),
        autoscaling in any::<bool>(),
        ended_ttl in minutes(1, 24 * 60),
    ) -> ValidSpec {
        ValidSpec {
            schedule,
            duration,
            expected_attendance,
            warmup,
            cooldown,
            socket,
            redis: RedisParams { mode: RedisMode::Auto, history_length: 1_000, replicated_threshold: 20_000 },
            autoscaling: autoscaling.then_some(AutoscalingParams { target_cpu_utilization: 70 }),
            ended_ttl,
        }
    }
}

prop_compose! {
    fn observed()(
        current in prop::option::of(0u32..=1_000),
        connected in prop::option::of(0u64..=2_000_000),
        last_ago in prop::option::of(-5i64..=3_600),
        peak in prop::option::of(0u64..=2_000_000),
    ) -> Observation {
        Observation { current, connected, last_ago, peak }
    }
}

#[derive(Debug, Clone, Copy)]
struct Observation {
    current: Option<u32>,
    connected: Option<u64>,
    last_ago: Option<i64>,
    /// A peak for whichever occurrence is in play at `now`.
    peak: Option<u64>,
}

fn observation(spec: &ValidSpec, now: DateTime<Utc>, o: Observation) -> Observed {
    let lead = spec.warmup + spec.socket.pod_startup;
    let in_play = spec.schedule.latest_at_or_before(now + lead);
    Observed {
        current_replicas: o.current,
        connected_students: o.connected,
        peak: in_play
            .zip(o.peak)
            .map(|(occurrence_start, students)| PeakAttendance {
                occurrence_start,
                students,
            }),
        last_scale_down: o.last_ago.map(|ago| now - TimeDelta::seconds(ago)),
    }
}

/// Start of the first occurrence at or after `from` (a recurring class always has one here).
fn first_start(spec: &ValidSpec, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match spec.schedule {
        Schedule::Once(start) => Some(start),
        Schedule::Recurring(_) => spec.schedule.next_after(from),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn replicas_stay_within_min_and_max(
        spec in spec(),
        now in (0..YEAR).prop_map(at),
        o in observed(),
    ) {
        let p = plan(&spec, now, &observation(&spec, now, o));
        let least = if matches!(p.phase, Phase::WarmingUp | Phase::Live) {
            spec.socket.min_replicas.max(spec.socket.idle_replicas)
        } else if p.released {
            0
        } else {
            spec.socket.idle_replicas
        };
        prop_assert!(p.socket.replicas >= least, "{p:?}");
        prop_assert!(p.socket.replicas <= spec.socket.max_replicas, "{p:?}");
        if let Some(hpa) = p.autoscaling {
            prop_assert!(hpa.min_replicas >= 1 && hpa.min_replicas <= hpa.max_replicas);
        }
    }

    #[test]
    fn more_expected_students_never_mean_fewer_replicas(
        spec in spec(),
        more in 0u32..=100_000,
        now in (0..YEAR).prop_map(at),
        o in observed(),
    ) {
        let observed = observation(&spec, now, o);
        let fewer = plan(&spec, now, &observed);
        let mut bigger = spec.clone();
        bigger.expected_attendance += more;
        let bigger = plan(&bigger, now, &observed);
        prop_assert!(bigger.socket.class_replicas >= fewer.socket.class_replicas);
        prop_assert!(bigger.socket.replicas >= fewer.socket.replicas, "{fewer:?} vs {bigger:?}");
        let memory = |p: &liveclass_api::Plan| p.redis.memory.map_or(0, |m| m.max_memory_bytes);
        prop_assert!(memory(&bigger) >= memory(&fewer));
    }

    #[test]
    fn capacity_is_there_from_scale_up_until_the_end(
        spec in spec(),
        from in (0..YEAR).prop_map(at),
        fraction in 0.0f64..1.0,
        o in observed(),
    ) {
        let start = first_start(&spec, from).unwrap();
        let scale_up = start - spec.warmup - spec.socket.pod_startup;
        let end = start + spec.duration;
        // A point in [start - warmup - podStartup, end): pods asked for then are Ready by
        // start - warmup, and are still asked for until the class ends.
        let window = (end - scale_up).num_milliseconds();
        let now = scale_up + TimeDelta::milliseconds((window as f64 * fraction) as i64);
        let p = plan(&spec, now, &observation(&spec, now, o));
        let needed = capacity::needed_replicas(u64::from(spec.expected_attendance), &spec.socket);
        let want = capacity::clamp(needed, &spec.socket);
        prop_assert!(p.socket.replicas >= want, "at {now}: {p:?}");
        prop_assert!(matches!(p.phase, Phase::WarmingUp | Phase::Live), "at {now}: {p:?}");
        // Capacity in students, within the clamp: replicas * per pod >= expected * headroom.
        let capacity = u64::from(p.socket.replicas) * u64::from(spec.socket.connections_per_pod);
        let asked = capacity::students_with_headroom(u64::from(spec.expected_attendance), &spec.socket);
        prop_assert!(capacity >= asked || p.socket.replicas == spec.socket.max_replicas);
    }

    #[test]
    fn next_transition_is_ahead_and_no_later_than_the_next_change(
        spec in spec(),
        now in (0..YEAR).prop_map(at),
        o in observed(),
        samples in prop::collection::vec(0.0f64..1.0, 4),
    ) {
        let observed = observation(&spec, now, o);
        let p = plan(&spec, now, &observed);
        // The world once the operator has applied `p`.
        let applied = Observed {
            current_replicas: Some(p.socket.replicas),
            connected_students: observed.connected_students,
            peak: p.occurrence.zip(p.socket.peak_connected).map(|(occ, students)| PeakAttendance {
                occurrence_start: occ.start,
                students,
            }),
            last_scale_down: p.socket.last_scale_down,
        };
        let says = |q: &liveclass_api::Plan| {
            (q.phase, q.socket.replicas, q.occurrence.map(|o| o.start), q.watch_attendance, q.released)
        };
        match p.next_transition {
            None => {
                // Nothing is left to happen: what is applied now stays.
                prop_assert!(matches!(p.phase, Phase::Ended | Phase::CoolingDown), "{p:?}");
                for later in [now + TimeDelta::days(1), now + TimeDelta::days(400)] {
                    prop_assert_eq!(says(&plan(&spec, later, &applied)), says(&p));
                }
            }
            Some(next) => {
                prop_assert!(next > now, "{next} is not after {now}");
                // Nothing the plan says changes before `next`, whether or not it was applied...
                let span = (next - now).num_milliseconds();
                let last_moment = next - TimeDelta::milliseconds(1);
                let points: Vec<_> = samples
                    .iter()
                    .map(|f| now + TimeDelta::milliseconds((span as f64 * f) as i64))
                    .chain([last_moment])
                    .collect();
                for t in points {
                    for seen in [&observed, &applied] {
                        let q = plan(&spec, t, seen);
                        prop_assert_eq!(says(&q), says(&p), "at {} (now {}, next {}, {:?})", t, now, next, seen);
                    }
                }
                // ...and something changes at `next`, so it is no later than the change, unless
                // `next` is a phase boundary whose change is held back (students still
                // connected, a drain step not yet due): a look that finds nothing to do.
                let q = plan(&spec, next, &applied);
                if says(&q) == says(&p) {
                    let boundary = p.occurrence.is_some_and(|o| {
                        [o.scale_up_at, o.start, o.end, o.drain_from].contains(&next)
                    });
                    prop_assert!(boundary, "nothing changes at {} (now {})", next, now);
                }
            }
        }
    }

    #[test]
    fn a_drain_never_drops_faster_than_its_step(
        spec in spec(),
        from in (0..YEAR).prop_map(at),
        start_extra in 0u32..=300,
        gaps in prop::collection::vec(1i64..=400, 1..60),
        on_time in prop::collection::vec(any::<bool>(), 60),
    ) {
        // An operator that reconciles at odd moments, sometimes exactly at the next transition,
        // applying every plan and keeping lastScaleDownTime as the plan says.
        let start = first_start(&spec, from).unwrap();
        let drain_from = start + spec.duration + spec.cooldown;
        let mut now = drain_from;
        let mut current = (capacity::clamp(
            capacity::needed_replicas(u64::from(spec.expected_attendance), &spec.socket),
            &spec.socket,
        ) + start_extra)
            .min(spec.socket.max_replicas);
        let mut last: Option<DateTime<Utc>> = None;
        let mut last_drop: Option<DateTime<Utc>> = None;
        for (i, gap) in gaps.iter().enumerate() {
            let p = plan(&spec, now, &Observed { current_replicas: Some(current), connected_students: None, peak: None, last_scale_down: last });
            if p.phase == Phase::WarmingUp || p.released {
                break; // the next class took over, or endedTtl is over: nothing is kept
            }
            if p.socket.replicas < current {
                let step = capacity::drain_step(current, &spec.socket);
                prop_assert!(current - p.socket.replicas <= step, "{current} -> {} at {now}", p.socket.replicas);
                if let Some(prev) = last_drop {
                    prop_assert!(now - prev >= spec.socket.step_interval, "drops at {prev} and {now}");
                }
                last_drop = Some(now);
            }
            current = p.socket.replicas;
            last = p.socket.last_scale_down;
            now = match (on_time[i], p.next_transition) {
                (true, Some(next)) => next,
                _ => now + TimeDelta::seconds(*gap),
            };
        }
    }
}
