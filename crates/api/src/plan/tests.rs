//! Table tests of the planner for the ordinary cases; the promises that must hold everywhere
//! are property tests in `tests/planner_properties.rs`.

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::{
    schedule::Schedule,
    types::RedisMode,
    validate::{AutoscalingParams, RedisParams, SocketParams},
};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// 8,000 students at 2,000 per pod and headroom 1.25: 5 pods. Starts 14:00Z for 90 minutes,
/// warm-up 10m, pod start-up 2m, cool-down 15m:
/// scale-up 13:48, ready by 13:50, live 14:00-15:30, held until 15:45, then drained.
fn spec(schedule: Schedule) -> ValidSpec {
    ValidSpec {
        schedule,
        duration: TimeDelta::minutes(90),
        expected_attendance: 8_000,
        warmup: TimeDelta::minutes(10),
        cooldown: TimeDelta::minutes(15),
        socket: SocketParams {
            connections_per_pod: 2_000,
            headroom_permille: 1_250,
            min_replicas: 1,
            max_replicas: 200,
            idle_replicas: 1,
            pod_startup: TimeDelta::minutes(2),
            drain_window: TimeDelta::seconds(30),
            step_percent: 25,
            step_interval: TimeDelta::minutes(1),
        },
        redis: RedisParams {
            mode: RedisMode::Standalone,
            history_length: 1_000,
            replicated_threshold: 20_000,
        },
        autoscaling: None,
        ended_ttl: TimeDelta::hours(1),
    }
}

fn one_off() -> ValidSpec {
    spec(Schedule::Once(utc("2026-12-01T14:00:00Z")))
}

fn observed(current: Option<u32>, connected: Option<u64>, last: Option<&str>) -> Observed {
    Observed {
        current_replicas: current,
        connected_students: connected,
        peak: None,
        last_scale_down: last.map(utc),
    }
}

/// The peak of the 14:00Z occurrence.
fn peak(students: u64) -> Option<PeakAttendance> {
    Some(PeakAttendance {
        occurrence_start: utc("2026-12-01T14:00:00Z"),
        students,
    })
}

#[test]
fn one_off_class_through_its_day() {
    let spec = one_off();
    // (now, observed, phase, replicas, next transition)
    let cases: [(&str, Observed, Phase, u32, Option<&str>); 13] = [
        (
            "2026-11-30T09:00:00Z",
            observed(None, None, None),
            Phase::Scheduled,
            1,
            Some("2026-12-01T13:48:00Z"),
        ),
        (
            "2026-12-01T13:47:59Z",
            observed(Some(1), None, None),
            Phase::Scheduled,
            1,
            Some("2026-12-01T13:48:00Z"),
        ),
        (
            "2026-12-01T13:48:00Z",
            observed(Some(1), None, None),
            Phase::WarmingUp,
            5,
            Some("2026-12-01T14:00:00Z"),
        ),
        (
            "2026-12-01T13:55:00Z",
            observed(Some(5), Some(40), None),
            Phase::WarmingUp,
            5,
            Some("2026-12-01T14:00:00Z"),
        ),
        (
            "2026-12-01T14:00:00Z",
            observed(Some(5), Some(7_000), None),
            Phase::Live,
            5,
            Some("2026-12-01T15:30:00Z"),
        ),
        // More students than expected: the reactive floor, ceil(12,000 * 1.25 / 2,000) = 8.
        (
            "2026-12-01T14:30:00Z",
            observed(Some(5), Some(12_000), None),
            Phase::Live,
            8,
            Some("2026-12-01T15:30:00Z"),
        ),
        // Fewer students now, but the capacity raised for the peak is held until the drain.
        (
            "2026-12-01T15:30:00Z",
            Observed {
                peak: peak(12_000),
                ..observed(Some(8), Some(9_000), None)
            },
            Phase::CoolingDown,
            8,
            Some("2026-12-01T15:45:00Z"),
        ),
        (
            "2026-12-01T15:44:59Z",
            observed(Some(5), Some(100), None),
            Phase::CoolingDown,
            5,
            Some("2026-12-01T15:45:00Z"),
        ),
        // Drain: a step is ceil(25% of what runs), one step a minute: 5 -> 3 -> 2 -> 1.
        (
            "2026-12-01T15:45:00Z",
            observed(Some(5), None, None),
            Phase::CoolingDown,
            3,
            Some("2026-12-01T15:46:00Z"),
        ),
        (
            "2026-12-01T15:45:30Z",
            observed(Some(3), None, Some("2026-12-01T15:45:00Z")),
            Phase::CoolingDown,
            3,
            Some("2026-12-01T15:46:00Z"),
        ),
        (
            "2026-12-01T15:46:00Z",
            observed(Some(3), None, Some("2026-12-01T15:45:00Z")),
            Phase::CoolingDown,
            2,
            Some("2026-12-01T15:47:00Z"),
        ),
        // Ended: idle capacity kept for endedTtl (1h after the drain began), then released.
        (
            "2026-12-01T15:47:00Z",
            observed(Some(2), None, Some("2026-12-01T15:46:00Z")),
            Phase::Ended,
            1,
            Some("2026-12-01T16:45:00Z"),
        ),
        (
            "2026-12-02T09:00:00Z",
            observed(Some(1), None, Some("2026-12-01T15:46:00Z")),
            Phase::Ended,
            0,
            None,
        ),
    ];
    for (now, observed, phase, replicas, next) in cases {
        let plan = plan(&spec, utc(now), &observed);
        assert_eq!(
            (plan.phase, plan.socket.replicas, plan.next_transition),
            (phase, replicas, next.map(utc)),
            "at {now} with {observed:?}"
        );
        assert_eq!(plan.socket.class_replicas, 5);
        assert_eq!(
            plan.occurrence.map(|o| o.start),
            Some(utc("2026-12-01T14:00:00Z"))
        );
    }
}

#[test]
fn occurrence_instants() {
    let plan = plan(
        &one_off(),
        utc("2026-12-01T12:00:00Z"),
        &Observed::default(),
    );
    assert_eq!(
        plan.occurrence,
        Some(Occurrence {
            scale_up_at: utc("2026-12-01T13:48:00Z"),
            ready_by: utc("2026-12-01T13:50:00Z"),
            start: utc("2026-12-01T14:00:00Z"),
            end: utc("2026-12-01T15:30:00Z"),
            drain_from: utc("2026-12-01T15:45:00Z"),
        })
    );
}

#[test]
fn a_drain_step_records_when_it_happened_rounded_up_to_a_second() {
    let now = utc("2026-12-01T15:45:00.300Z");
    let plan = plan(&one_off(), now, &observed(Some(5), None, None));
    assert_eq!(plan.socket.replicas, 3);
    assert_eq!(
        plan.socket.last_scale_down,
        Some(utc("2026-12-01T15:45:01Z"))
    );
    assert_eq!(plan.next_transition, Some(utc("2026-12-01T15:46:01Z")));
    // Holding between steps keeps the recorded time as it was.
    let hold = super::plan(
        &one_off(),
        utc("2026-12-01T15:45:30Z"),
        &observed(Some(3), None, Some("2026-12-01T15:45:01Z")),
    );
    assert_eq!(
        hold.socket.last_scale_down,
        Some(utc("2026-12-01T15:45:01Z"))
    );
}

#[test]
fn a_drain_starts_from_what_the_floor_raised_and_removes_a_quarter_a_minute() {
    // The floor took the class to 40 pods: 40 -> 30 -> 22 -> 16 -> 12 -> 9 -> 6 -> 4 -> 3 -> 2 -> 1.
    let spec = one_off();
    let mut current = 40;
    let mut last = None;
    let mut now = utc("2026-12-01T15:45:00Z");
    let mut seen = vec![current];
    while current > 1 {
        let p = plan(
            &spec,
            now,
            &Observed {
                current_replicas: Some(current),
                connected_students: None,
                peak: None,
                last_scale_down: last,
            },
        );
        current = p.socket.replicas;
        last = p.socket.last_scale_down;
        seen.push(current);
        now = p.next_transition.unwrap_or(now + TimeDelta::minutes(1));
    }
    assert_eq!(seen, [40, 30, 22, 16, 12, 9, 6, 4, 3, 2, 1]);
    assert_eq!(
        last,
        Some(utc("2026-12-01T15:54:00Z")),
        "ten steps, a minute apart"
    );
}

#[test]
fn replicas_scaled_by_hand_when_min_equals_max_are_not_drained() {
    // Found by the properties: with min = max there is nothing to drain, so the plan goes
    // idle at once rather than "holding" a drain it would then abandon.
    let mut spec = one_off();
    spec.socket.min_replicas = 1;
    spec.socket.max_replicas = 1;
    let p = plan(
        &spec,
        utc("2026-12-01T16:00:00Z"),
        &observed(Some(5), None, Some("2026-12-01T16:00:00Z")),
    );
    assert_eq!(
        (p.phase, p.socket.replicas, p.next_transition),
        (Phase::Ended, 1, Some(utc("2026-12-01T16:45:00Z")))
    );
}

#[test]
fn replicas_scaled_by_hand_above_max_are_brought_back_under_it() {
    let p = plan(
        &one_off(),
        utc("2026-12-01T16:00:00Z"),
        &observed(Some(500), None, Some("2026-12-01T15:59:30Z")),
    );
    assert_eq!((p.phase, p.socket.replicas), (Phase::CoolingDown, 200));
}

#[test]
fn max_replicas_caps_the_class_and_says_so() {
    let mut spec = one_off();
    spec.expected_attendance = 50_000;
    spec.socket.max_replicas = 20;
    let plan = plan(&spec, utc("2026-12-01T14:00:00Z"), &Observed::default());
    assert_eq!(plan.socket.replicas, 20);
    assert_eq!(plan.socket.class_replicas, 20);
    assert_eq!(plan.socket.needed_replicas, 32);
}

#[test]
fn autoscaling_moves_the_hpa_minimum_to_the_plan() {
    let mut spec = one_off();
    spec.socket.min_replicas = 0;
    spec.socket.idle_replicas = 0;
    spec.autoscaling = Some(AutoscalingParams {
        target_cpu_utilization: 70,
    });
    let live = plan(&spec, utc("2026-12-01T14:00:00Z"), &Observed::default());
    assert_eq!(
        live.autoscaling,
        Some(HpaPlan {
            min_replicas: 5,
            max_replicas: 200,
            target_cpu_utilization: 70,
            scale_down_percent: 25,
            scale_down_period_seconds: 60,
        })
    );
    let idle = plan(&spec, utc("2026-12-01T09:00:00Z"), &Observed::default());
    assert_eq!(idle.socket.replicas, 0);
    assert_eq!(
        idle.autoscaling, None,
        "no HPA while no pod is planned: its minimum is at least 1"
    );
    assert!(!idle.redis.running, "nothing uses Redis between classes");
}

#[test]
fn attendance_is_watched_only_around_a_class() {
    let spec = one_off();
    let at = |now: &str| plan(&spec, utc(now), &observed(Some(5), None, None)).watch_attendance;
    let before = plan(
        &spec,
        utc("2026-12-01T13:00:00Z"),
        &observed(Some(1), None, None),
    );
    assert!(!before.watch_attendance);
    assert!(at("2026-12-01T13:50:00Z"));
    assert!(at("2026-12-01T14:30:00Z"));
    assert!(at("2026-12-01T15:40:00Z"));
    assert!(at("2026-12-01T15:45:00Z"), "while draining");
    let idle = plan(
        &spec,
        utc("2026-12-01T16:00:00Z"),
        &observed(Some(1), Some(0), None),
    );
    assert!(!idle.watch_attendance);
    let someone = plan(
        &spec,
        utc("2026-12-01T16:00:00Z"),
        &observed(Some(1), Some(3), None),
    );
    assert!(someone.watch_attendance, "while anyone is connected");
}

fn weekly(pattern: &str, zone: &str) -> ValidSpec {
    spec(Schedule::recurring(pattern, zone).unwrap())
}

#[test]
fn berlin_weekly_class_on_the_day_clocks_go_forward() {
    // Sunday 14:00 in Berlin; on 2026-03-29 that is 12:00Z (CEST), the week before 13:00Z (CET).
    let spec = weekly("0 14 * * SUN", "Europe/Berlin");
    let p = plan(
        &spec,
        utc("2026-03-29T11:00:00Z"),
        &observed(Some(1), None, None),
    );
    assert_eq!(p.phase, Phase::Scheduled);
    assert_eq!(p.next_transition, Some(utc("2026-03-29T11:48:00Z")));
    let p = plan(
        &spec,
        utc("2026-03-29T11:48:00Z"),
        &observed(Some(1), None, None),
    );
    assert_eq!((p.phase, p.socket.replicas), (Phase::WarmingUp, 5));
    let p = plan(
        &spec,
        utc("2026-03-29T12:00:00Z"),
        &observed(Some(5), None, None),
    );
    assert_eq!(
        (p.phase, p.next_transition),
        (Phase::Live, Some(utc("2026-03-29T13:30:00Z")))
    );
    // Drained and idle: the next class is 2026-04-05 14:00 CEST = 12:00Z.
    let p = plan(
        &spec,
        utc("2026-03-29T15:00:00Z"),
        &observed(Some(1), None, None),
    );
    assert_eq!(p.phase, Phase::Scheduled);
    assert_eq!(
        p.occurrence.map(|o| o.start),
        Some(utc("2026-04-05T12:00:00Z"))
    );
    assert_eq!(p.next_transition, Some(utc("2026-04-05T11:48:00Z")));
}

#[test]
fn berlin_weekly_class_on_the_day_clocks_go_back() {
    // On 2026-10-25 Sunday 14:00 in Berlin is 13:00Z (CET).
    let spec = weekly("0 14 * * SUN", "Europe/Berlin");
    let p = plan(
        &spec,
        utc("2026-10-25T12:47:59Z"),
        &observed(Some(1), None, None),
    );
    assert_eq!(
        (p.phase, p.next_transition),
        (Phase::Scheduled, Some(utc("2026-10-25T12:48:00Z")))
    );
    let p = plan(
        &spec,
        utc("2026-10-25T13:00:00Z"),
        &observed(Some(5), None, None),
    );
    assert_eq!(
        (p.phase, p.next_transition),
        (Phase::Live, Some(utc("2026-10-25T14:30:00Z")))
    );
}

#[test]
fn a_class_that_started_less_than_duration_plus_cooldown_ago_is_still_the_active_one() {
    let spec = weekly("0 9 * * MON", "America/New_York");
    // Monday 2026-11-02 09:00 EST = 14:00Z; ends 15:30Z; held until 15:45Z.
    let p = plan(
        &spec,
        utc("2026-11-02T15:44:00Z"),
        &observed(Some(5), Some(30), None),
    );
    assert_eq!(p.phase, Phase::CoolingDown);
    assert_eq!(
        p.occurrence.map(|o| o.start),
        Some(utc("2026-11-02T14:00:00Z"))
    );
    assert_eq!(p.socket.replicas, 5);
    // The week before was EDT: 09:00 = 13:00Z.
    let p = plan(
        &spec,
        utc("2026-10-26T13:30:00Z"),
        &observed(Some(5), None, None),
    );
    assert_eq!(p.phase, Phase::Live);
    assert_eq!(
        p.occurrence.map(|o| o.start),
        Some(utc("2026-10-26T13:00:00Z"))
    );
}

#[test]
fn dhaka_class_every_weekday_morning() {
    // 08:00 in Dhaka (UTC+6) is 02:00Z, every weekday, all year.
    let spec = weekly("0 8 * * MON-FRI", "Asia/Dhaka");
    let p = plan(
        &spec,
        utc("2026-07-03T12:00:00Z"),
        &observed(Some(1), None, None),
    ); // Friday
    assert_eq!(p.phase, Phase::Scheduled);
    assert_eq!(
        p.occurrence.map(|o| o.start),
        Some(utc("2026-07-06T02:00:00Z"))
    ); // Monday
    assert_eq!(p.next_transition, Some(utc("2026-07-06T01:48:00Z")));
}

#[test]
fn a_drain_gives_way_to_the_next_class_scale_up() {
    // A daily class whose next scale-up comes while the last one is still draining.
    let mut spec = weekly("0 14 * * *", "UTC");
    spec.cooldown = TimeDelta::hours(22) + TimeDelta::minutes(15);
    // Held until 14:00 + 1:30 + 22:15 = 13:45 next day, past the next scale-up at 13:48? No:
    // 13:45 < 13:48, so there are 3 minutes of drain before the next class begins scaling up.
    let p = plan(
        &spec,
        utc("2026-05-02T13:47:30Z"),
        &observed(Some(5), None, Some("2026-05-02T13:47:00Z")),
    );
    assert_eq!(p.phase, Phase::CoolingDown);
    assert_eq!(p.next_transition, Some(utc("2026-05-02T13:48:00Z")));
    let p = plan(
        &spec,
        utc("2026-05-02T13:48:00Z"),
        &observed(Some(3), None, Some("2026-05-02T13:47:00Z")),
    );
    assert_eq!((p.phase, p.socket.replicas), (Phase::WarmingUp, 5));
}

#[test]
fn a_recurring_class_that_never_fires_again_ends() {
    // Only 29 February, 2028 and on: in between, Scheduled four years ahead.
    let spec = weekly("0 14 29 2 *", "UTC");
    let p = plan(&spec, utc("2026-12-01T00:00:00Z"), &Observed::default());
    assert_eq!(p.phase, Phase::Scheduled);
    assert_eq!(
        p.occurrence.map(|o| o.start),
        Some(utc("2028-02-29T14:00:00Z"))
    );
}

#[test]
fn redis_plan_comes_with_every_plan() {
    let p = plan(
        &one_off(),
        utc("2026-12-01T09:00:00Z"),
        &Observed::default(),
    );
    assert_eq!(p.redis.shape, RedisShape::Standalone);
    assert_eq!(
        p.redis.memory.map(|m| m.max_memory_arg()),
        Some("64mb".to_owned())
    );
}

#[test]
fn a_failed_reading_keeps_the_capacity_the_peak_raised() {
    // The floor raised the class to 8 for 12,000 students; the next reading fails (the operator
    // passes the last one it had, or none at all): still 8, live or cooling down.
    let spec = one_off();
    for now in ["2026-12-01T14:40:00Z", "2026-12-01T15:40:00Z"] {
        for connected in [None, Some(12_000), Some(100)] {
            let p = plan(
                &spec,
                utc(now),
                &Observed {
                    peak: peak(12_000),
                    ..observed(Some(8), connected, None)
                },
            );
            assert_eq!(p.socket.replicas, 8, "at {now} with {connected:?}");
            assert_eq!(p.socket.peak_connected, Some(12_000));
        }
    }
    // A peak from another occurrence does not count.
    let p = plan(
        &spec,
        utc("2026-12-01T14:40:00Z"),
        &Observed {
            peak: Some(PeakAttendance {
                occurrence_start: utc("2026-11-24T14:00:00Z"),
                students: 12_000,
            }),
            ..observed(Some(5), Some(100), None)
        },
    );
    assert_eq!(p.socket.replicas, 5);
}

#[test]
fn a_smaller_plan_mid_class_comes_down_in_the_drain_steps() {
    let mut spec = one_off();
    spec.expected_attendance = 4_000; // 3 pods
    let p = plan(
        &spec,
        utc("2026-12-01T14:40:00Z"),
        &observed(Some(8), Some(100), None),
    );
    assert_eq!((p.phase, p.socket.replicas), (Phase::Live, 6));
    assert_eq!(p.socket.last_scale_down, Some(utc("2026-12-01T14:40:00Z")));
    assert_eq!(p.next_transition, Some(utc("2026-12-01T14:41:00Z")));
    let p = plan(
        &spec,
        utc("2026-12-01T14:40:30Z"),
        &observed(Some(6), Some(100), Some("2026-12-01T14:40:00Z")),
    );
    assert_eq!(p.socket.replicas, 6, "one step per interval");
}

#[test]
fn an_overrunning_class_keeps_what_its_students_need_until_they_leave() {
    let spec = one_off();
    // 15:45 is the end plus cool-down; 2,000 students still connected need 2 pods.
    let mut current = 8;
    let mut last = None;
    let mut now = utc("2026-12-01T15:45:00Z");
    let mut seen = vec![];
    for _ in 0..10 {
        let p = plan(
            &spec,
            now,
            &observed(
                Some(current),
                Some(2_000),
                last.map(|l: DateTime<Utc>| l.to_rfc3339()).as_deref(),
            ),
        );
        assert!(p.watch_attendance);
        assert_eq!(p.phase, Phase::CoolingDown);
        current = p.socket.replicas;
        last = p.socket.last_scale_down;
        seen.push(current);
        now += TimeDelta::minutes(1);
    }
    assert_eq!(seen, [6, 4, 3, 2, 2, 2, 2, 2, 2, 2]);
    // They leave: the drain finishes.
    let p = plan(&spec, now, &observed(Some(2), Some(0), None));
    assert_eq!((p.phase, p.socket.replicas), (Phase::Ended, 1));
    // Nobody can be released while connected.
    let late = utc("2026-12-02T12:00:00Z");
    let p = plan(&spec, late, &observed(Some(1), Some(1), None));
    assert!(!p.released);
    let p = plan(&spec, late, &observed(Some(1), Some(0), None));
    assert!(p.released);
    assert!(!p.redis.running);
}

#[test]
fn a_live_class_that_is_postponed_drains_in_steps() {
    let mut spec = one_off();
    spec.schedule = Schedule::Once(utc("2026-12-08T14:00:00Z"));
    let p = plan(
        &spec,
        utc("2026-12-01T14:30:00Z"),
        &observed(Some(8), Some(0), None),
    );
    assert_eq!((p.phase, p.socket.replicas), (Phase::CoolingDown, 6));
    assert_eq!(
        p.occurrence.map(|o| o.start),
        Some(utc("2026-12-08T14:00:00Z"))
    );
    assert_eq!(p.next_transition, Some(utc("2026-12-01T14:31:00Z")));
}

#[test]
fn idle_replicas_zero_stops_pods_and_redis_between_classes() {
    let mut spec = weekly("0 14 * * MON", "UTC");
    spec.socket.idle_replicas = 0;
    let p = plan(
        &spec,
        utc("2026-12-02T10:00:00Z"),
        &observed(Some(0), None, None),
    );
    assert_eq!((p.phase, p.socket.replicas), (Phase::Scheduled, 0));
    assert!(!p.redis.running);
    assert!(!p.watch_attendance);
    let p = plan(
        &spec,
        utc("2026-12-07T13:48:00Z"),
        &observed(Some(0), None, None),
    );
    assert_eq!((p.phase, p.socket.replicas), (Phase::WarmingUp, 5));
    assert!(p.redis.running);
}
