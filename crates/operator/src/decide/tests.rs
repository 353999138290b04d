//! The decide step without a cluster: a LiveClass, a hand-made [`World`] and an instant in,
//! everything the reconcile would do out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use liveclass_api::{LiveClass, condition, time::to_k8s};

use super::*;
use crate::{
    attendance::{AttendanceError, AttendanceView, Reading},
    observe::{DeploymentView, Existing, PodView, RedisView, World},
    resources::Kind,
};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Starts 14:00Z for 90 minutes; 100 per pod at headroom 1: 400 students = 4 pods. Scale-up
/// 13:48, Ready by 13:50, drain from 15:45, a step of 25% a minute.
fn class(extra: serde_json::Value) -> LiveClass {
    let mut value = serde_json::json!({
        "apiVersion": "liveclass.dev/v1alpha1",
        "kind": "LiveClass",
        "metadata": { "name": "physics-101", "namespace": "school", "uid": "u-1", "generation": 1 },
        "spec": {
            "schedule": { "start": "2026-12-01T14:00:00Z", "duration": "90m" },
            "expectedAttendance": 400,
            "socket": {
                "image": "liveclass-socket:test",
                "connectionsPerPod": 100,
                "headroom": 1.0,
                "maxReplicas": 20,
            },
        },
    });
    merge(&mut value, extra);
    serde_json::from_value(value).unwrap()
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn running(replicas: u32) -> World {
    World {
        deployment: Some(DeploymentView {
            replicas: Some(replicas),
            ready: replicas,
            up_to_date: true,
            replicas_ours: true,
        }),
        redis: Some(RedisView {
            replicas: 1,
            ready: 1,
        }),
        ..World::default()
    }
}

fn reading(connected: u64, per_pod: &[(&str, u64)]) -> AttendanceView {
    AttendanceView {
        last: Some(Reading {
            connected,
            per_pod: per_pod
                .iter()
                .map(|(p, n)| ((*p).to_owned(), *n))
                .collect::<BTreeMap<_, _>>(),
        }),
        error: None,
    }
}

/// Decides, then decides again with the status written back: what a second reconcile of an
/// unchanged world would do.
fn settle(lc: &mut LiveClass, world: &World, now: DateTime<Utc>) -> Decision {
    let first = decide(lc, world, now).unwrap();
    lc.status = Some(first.status.clone());
    first
}

fn cond<'a>(
    d: &'a Decision,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    find(&d.status.conditions, type_).unwrap()
}

fn reasons(d: &Decision) -> Vec<&str> {
    d.events.iter().map(|e| e.reason.as_str()).collect()
}

#[test]
fn a_new_class_gets_its_objects_a_status_and_one_event_and_then_nothing_changes() {
    let mut lc = class(serde_json::json!({}));
    let now = utc("2026-11-30T10:00:00Z");
    let d = settle(&mut lc, &World::default(), now);
    let desired = d.desired.clone().unwrap();
    assert_eq!(desired.owned().len(), 8);
    assert_eq!(d.generate_token.as_deref(), Some("physics-101-token"));
    assert_eq!(
        d.status.token_secret_ref.as_ref().map(|r| r.key.as_str()),
        Some("hs256-key")
    );
    assert_eq!(d.status.phase, Some(Phase::Scheduled));
    assert_eq!(reasons(&d), ["Scheduled"]);
    let plan = d.status.plan.clone().unwrap();
    assert_eq!(plan.scale_up_time, to_k8s(utc("2026-12-01T13:48:00Z")));
    assert_eq!(plan.class_replicas, Some(4));
    assert_eq!(d.next_transition, Some(utc("2026-12-01T13:48:00Z")));
    assert!(!d.watch_attendance);

    // The objects exist and are Ready: a second look changes nothing and says nothing.
    let world = running(1);
    let again = settle(&mut lc, &world, now);
    let third = decide(&lc, &world, now + TimeDelta::seconds(30)).unwrap();
    assert_eq!(third.status, again.status);
    assert!(third.events.is_empty(), "{:?}", third.events);
    assert_eq!(cond(&third, condition::READY).status, "True");
}

#[test]
fn a_failed_reading_mid_class_keeps_the_capacity_the_floor_raised() {
    let mut lc = class(serde_json::json!({}));
    // Live, 730 students connected: the floor raises 4 to 8.
    let mut world = running(4);
    world.attendance = reading(730, &[]);
    let d = settle(&mut lc, &world, utc("2026-12-01T14:20:00Z"));
    assert_eq!(d.status.planned_replicas, Some(8));
    assert_eq!(d.status.peak_connected_students, Some(730));
    // Created mid-class with 4 of the 8 pods it needs: late, and it says so.
    assert_eq!(reasons(&d), ["Live", LATE]);

    // Redis goes away: the reading fails (this operator restarted meanwhile, too: no last
    // reading in memory, only what status says). Still 8, and it says why it cannot see.
    let mut world = running(8);
    world.attendance = AttendanceView {
        last: None,
        error: Some(AttendanceError::Timeout(std::time::Duration::from_millis(
            500,
        ))),
    };
    let d = settle(&mut lc, &world, utc("2026-12-01T14:20:10Z"));
    assert_eq!(d.status.planned_replicas, Some(8));
    let deployment = d.desired.clone().unwrap().deployment.unwrap();
    assert_eq!(deployment.spec.replicas, Some(8));
    let seen = cond(&d, condition::ATTENDANCE_OBSERVED);
    assert_eq!(
        (seen.status.as_str(), seen.reason.as_str()),
        ("False", "RedisTimeout")
    );
    assert_eq!(reasons(&d), ["AttendanceUnavailable"]);
    // Students leave: the peak still holds the capacity until the drain.
    world.attendance = reading(10, &[]);
    let d = settle(&mut lc, &world, utc("2026-12-01T15:40:00Z"));
    assert_eq!(d.status.planned_replicas, Some(8));
}

#[test]
fn a_drain_step_first_ranks_the_pods_by_their_connections() {
    let mut lc = class(serde_json::json!({}));
    let mut world = running(4);
    world.pods = ["a", "b", "c", "d"]
        .iter()
        .map(|name| PodView {
            name: format!("physics-101-socket-x-{name}"),
            uid: format!("uid-{name}"),
            started_in: None,
            deletion_cost: None,
            terminating: false,
        })
        .collect();
    world.pods[3].deletion_cost = Some(3);
    world.attendance = reading(
        6,
        &[
            ("physics-101-socket-x-a", 0),
            ("physics-101-socket-x-b", 5),
            ("physics-101-socket-x-d", 3),
        ],
    );
    let d = decide(&lc, &world, utc("2026-12-01T15:45:00Z")).unwrap();
    assert_eq!(d.status.planned_replicas, Some(3));
    assert_eq!(
        d.deletion_costs,
        [
            ("physics-101-socket-x-a".to_owned(), 0),
            ("physics-101-socket-x-b".to_owned(), 5),
            // Not reporting: no connection there.
            ("physics-101-socket-x-c".to_owned(), 0),
        ]
    );
    // No scale-down, no ranking.
    lc.status = None;
    let d = decide(&lc, &running(4), utc("2026-12-01T14:20:00Z")).unwrap();
    assert!(d.deletion_costs.is_empty());
}

#[test]
fn enabling_autoscaling_creates_the_hpa_and_hands_the_replicas_over() {
    let lc = class(serde_json::json!({ "spec": {
        "autoscaling": { "targetCpuUtilization": 60 },
        "socket": { "resources": { "requests": { "cpu": "500m" } } },
    } }));
    let d = decide(&lc, &running(6), utc("2026-12-01T14:20:00Z")).unwrap();
    let desired = d.desired.unwrap();
    assert!(desired.hpa.is_some());
    assert_eq!(desired.deployment.unwrap().spec.replicas, None);
    assert_eq!(d.handover_replicas, Some(6));
    // Once the HPA owns them, nothing to hand over.
    let mut world = running(6);
    world.deployment = world.deployment.map(|d| DeploymentView {
        replicas_ours: false,
        ..d
    });
    world.hpa_min_replicas = Some(4);
    let d = decide(&lc, &world, utc("2026-12-01T14:21:00Z")).unwrap();
    assert_eq!(d.handover_replicas, None);
}

#[test]
fn objects_the_plan_no_longer_asks_for_are_orphans() {
    let lc = class(serde_json::json!({ "spec": { "redis": {
        "mode": "External", "external": { "secretRef": { "name": "r", "key": "url" } },
    } } }));
    let mut world = running(4);
    for (kind, name) in [
        (Kind::HorizontalPodAutoscaler, "physics-101-socket"),
        (Kind::StatefulSet, "physics-101-redis"),
        (Kind::Deployment, "physics-101-socket"),
    ] {
        world.existing.push(Existing {
            owned: Owned {
                kind,
                name: name.to_owned(),
            },
            uid: "x".into(),
            version: 1,
        });
    }
    let d = decide(&lc, &world, utc("2026-12-01T14:20:00Z")).unwrap();
    let orphans: Vec<_> = d.orphans.iter().map(|o| o.kind).collect();
    assert_eq!(orphans, [Kind::HorizontalPodAutoscaler, Kind::StatefulSet]);
    // Released (drained to idle, the TTL past): everything goes.
    let lc = class(serde_json::json!({}));
    world.deployment = running(1).deployment;
    let d = decide(&lc, &world, utc("2026-12-03T00:00:00Z")).unwrap();
    assert_eq!(d.orphans.len(), 3);
    assert_eq!(d.generate_token, None);
    assert_eq!(cond(&d, condition::READY).reason, "Released");
}

#[test]
fn a_capped_class_says_so_once() {
    let mut lc = class(serde_json::json!({ "spec": { "socket": { "maxReplicas": 3 } } }));
    let d = settle(&mut lc, &running(3), utc("2026-12-01T14:20:00Z"));
    assert_eq!(d.status.needed_replicas, Some(4));
    assert_eq!(d.status.planned_replicas, Some(3));
    let capped = cond(&d, condition::CAPACITY_CAPPED);
    assert_eq!(capped.status, "True");
    assert!(
        capped.message.contains("maxReplicas is 3"),
        "{}",
        capped.message
    );
    assert!(reasons(&d).contains(&"CapacityCapped"));
    let d = decide(&lc, &running(3), utc("2026-12-01T14:21:00Z")).unwrap();
    assert!(!reasons(&d).contains(&"CapacityCapped"));
}

#[test]
fn capacity_not_ready_by_start_minus_warmup_is_late_and_the_lead_is_recorded() {
    let mut lc = class(serde_json::json!({}));
    let mut world = running(1);
    settle(&mut lc, &world, utc("2026-12-01T13:48:00Z"));
    // 13:50 is the Ready-by instant; two of four pods are Ready.
    world.deployment = Some(DeploymentView {
        replicas: Some(4),
        ready: 2,
        up_to_date: true,
        replicas_ours: true,
    });
    let d = settle(&mut lc, &world, utc("2026-12-01T13:50:00Z"));
    assert_eq!(cond(&d, condition::CAPACITY_READY).reason, LATE);
    assert!(d.late);
    assert_eq!(reasons(&d), [LATE]);
    let d = settle(&mut lc, &world, utc("2026-12-01T13:51:00Z"));
    assert!(!d.late && d.events.is_empty(), "{:?}", d.events);
    // Ready at 13:52: 8 minutes ahead of the start.
    let d = settle(&mut lc, &running(4), utc("2026-12-01T13:52:00Z"));
    assert_eq!(d.status.ready_lead_seconds, Some(480));
    assert_eq!(d.capacity_lead, Some(480));
    let d = settle(&mut lc, &running(4), utc("2026-12-01T13:53:00Z"));
    assert_eq!(d.capacity_lead, None, "recorded once");
    assert_eq!(d.status.ready_lead_seconds, Some(480));
}

#[test]
fn a_refused_class_touches_nothing_and_warns_once() {
    let mut lc = class(serde_json::json!({ "metadata": { "name": "101-physics" } }));
    let d = settle(&mut lc, &running(4), utc("2026-12-01T14:20:00Z"));
    assert_eq!(d.desired, None);
    assert!(d.orphans.is_empty());
    assert_eq!(d.outcome, "invalid");
    assert_eq!(reasons(&d), ["InvalidName"]);
    let again = decide(&lc, &running(4), utc("2026-12-01T14:21:00Z")).unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.status, d.status);
}

#[test]
fn a_transition_that_passed_during_the_reconcile_is_requeued_at_once() {
    let interval = std::time::Duration::from_secs(10);
    let max = std::time::Duration::from_secs(300);
    let t = utc("2026-12-01T14:00:00Z");
    let late = requeue_after(Some(t), false, t + TimeDelta::seconds(2), interval, max);
    assert_eq!(late, TRANSITION_MARGIN);
    let ahead = requeue_after(Some(t), false, t - TimeDelta::seconds(60), interval, max);
    assert_eq!(
        ahead,
        std::time::Duration::from_secs(60) + TRANSITION_MARGIN
    );
    let watching = requeue_after(Some(t), true, t - TimeDelta::seconds(60), interval, max);
    assert_eq!(watching, interval);
    assert_eq!(requeue_after(None, false, t, interval, max), max);
}

/// A reconcile can run right after a drain step (the Deployment it lowered triggers one) and
/// see the class in a watch cache that has not caught up with the status just written. Decided
/// from that older status the drain would take its next step at once; decided from the status
/// written, as the reconcile does (`status::caught_up`), it waits for the step interval.
#[test]
fn right_after_a_drain_step_a_cache_behind_the_status_written_takes_no_second_step() {
    let mut lc = class(serde_json::json!({}));
    lc.metadata.resource_version = Some("100".into());
    let at = utc("2026-12-01T15:45:00Z");
    let step = decide(&lc, &running(4), at).unwrap();
    assert_eq!(step.status.planned_replicas, Some(3));
    // The API server's answer to the status write.
    let mut answer = lc.clone();
    answer.status = Some(step.status.clone());
    answer.metadata.resource_version = Some("102".into());
    let written = status::Written::of(&answer).unwrap();

    // 50 ms later the lowered Deployment triggers a reconcile; the cache still has the class
    // as it was before the status write.
    let mut cached = lc.clone();
    cached.metadata.resource_version = Some("101".into());
    let soon = at + TimeDelta::milliseconds(50);
    let hasty = decide(&cached, &running(3), soon).unwrap();
    assert_eq!(
        hasty.status.planned_replicas,
        Some(2),
        "from the older status, the next step comes at once"
    );
    let fresher = status::caught_up(&cached, Some(&written)).unwrap();
    let d = decide(&fresher, &running(3), soon).unwrap();
    assert_eq!(d.status.planned_replicas, Some(3));
    assert_eq!(
        d.status.last_scale_down_time,
        step.status.last_scale_down_time
    );
    assert_eq!(d.next_transition, Some(utc("2026-12-01T15:46:00Z")));

    // Once the cache has the write (or anything newer), the cache is used; and a class
    // deleted and created again under the same name is another object.
    cached.metadata.resource_version = Some("102".into());
    assert!(status::caught_up(&cached, Some(&written)).is_none());
    let mut other = lc.clone();
    other.metadata.uid = Some("u-2".into());
    assert!(status::caught_up(&other, Some(&written)).is_none());
    assert!(status::caught_up(&lc, None).is_none());
}

fn pods_took(samples: Vec<u64>) -> World {
    World {
        pod_startup: Some(crate::startup::Estimate::from_samples(
            samples
                .into_iter()
                .map(std::time::Duration::from_secs)
                .collect(),
            crate::startup::Scope::Namespace,
        )),
        ..World::default()
    }
}

fn slow_pods(secs: u64) -> World {
    pods_took(vec![secs; 12])
}

/// `podStartup` is 2 minutes (scale-up 13:48 for Ready by 13:50); pods were seen to take 5.
#[test]
fn pods_seen_starting_slower_than_pod_startup_move_the_scale_up_earlier_and_warn_once() {
    let mut lc = class(serde_json::json!({}));
    let world = slow_pods(300);
    let d = settle(&mut lc, &world, utc("2026-12-01T12:00:00Z"));
    let plan = d.status.plan.clone().unwrap();
    // 300 s seen, 360 s with the margin learned leads get.
    assert_eq!(plan.scale_up_time, to_k8s(utc("2026-12-01T13:44:00Z")));
    assert_eq!(plan.ready_by_time, to_k8s(utc("2026-12-01T13:50:00Z")));
    assert_eq!(
        d.status.pod_startup,
        Some(PodStartupStatus {
            observed_p95_seconds: 300,
            samples: 12,
            scope: "Namespace".to_owned(),
            lead_seconds: 360,
        })
    );
    let warning = d
        .events
        .iter()
        .find(|e| e.reason == "SlowPodStartup")
        .unwrap();
    assert_eq!(warning.type_, NoteType::Warning);
    assert!(
        warning.message.contains("scaling up 240s earlier"),
        "{}",
        warning.message
    );
    // 13:44 is now a transition: the class scales up then, not at 13:48.
    assert_eq!(d.next_transition, Some(utc("2026-12-01T13:44:00Z")));
    let d = settle(&mut lc, &world, utc("2026-12-01T12:01:00Z"));
    assert!(d.events.is_empty(), "warned once: {:?}", d.events);
    let d = settle(&mut lc, &world, utc("2026-12-01T13:44:00Z"));
    assert_eq!(d.status.planned_replicas, Some(4));
}

#[test]
fn without_learning_the_plan_keeps_pod_startup_and_the_warning_says_what_to_change() {
    let mut lc = class(serde_json::json!({ "spec": { "socket": { "learnPodStartup": false } } }));
    let d = settle(&mut lc, &slow_pods(300), utc("2026-12-01T12:00:00Z"));
    let plan = d.status.plan.clone().unwrap();
    assert_eq!(plan.scale_up_time, to_k8s(utc("2026-12-01T13:48:00Z")));
    assert_eq!(d.status.pod_startup.as_ref().unwrap().lead_seconds, 120);
    let warning = d
        .events
        .iter()
        .find(|e| e.reason == "SlowPodStartup")
        .unwrap();
    assert!(
        warning
            .message
            .contains("raise spec.socket.podStartup to at least 300s"),
        "{}",
        warning.message
    );
}

#[test]
fn pods_faster_than_pod_startup_change_nothing_and_say_nothing() {
    let mut lc = class(serde_json::json!({}));
    let d = settle(&mut lc, &slow_pods(20), utc("2026-12-01T12:00:00Z"));
    let plan = d.status.plan.clone().unwrap();
    assert_eq!(plan.scale_up_time, to_k8s(utc("2026-12-01T13:48:00Z")));
    assert_eq!(d.status.pod_startup.as_ref().unwrap().lead_seconds, 120);
    assert!(!reasons(&d).contains(&"SlowPodStartup"));
}

/// Four pods: the scale-up waits for the slowest of them, so one pod's 95th percentile is not
/// the lead. 45 of 50 pods took 60 s, 5 took 250–290 s: one pod's p95 is 250 s, the slowest of
/// four (the 0.987 quantile) 290 s, and the lead that with the margin, 348 s.
#[test]
fn the_lead_is_for_the_slowest_of_the_class_pods_not_one_pod() {
    let mut lc = class(serde_json::json!({}));
    let mut samples = vec![60; 45];
    samples.extend([250, 260, 270, 280, 290]);
    let d = settle(&mut lc, &pods_took(samples), utc("2026-12-01T12:00:00Z"));
    let startup = d.status.pod_startup.clone().unwrap();
    assert_eq!(
        (startup.observed_p95_seconds, startup.lead_seconds),
        (270, 348)
    );
    let plan = d.status.plan.clone().unwrap();
    assert_eq!(
        plan.scale_up_time,
        to_k8s(utc("2026-12-01T13:50:00Z") - TimeDelta::seconds(348))
    );
}

/// Warming up on a lead of 360 s, the estimate falls to 130 s: the scale-up stays where it
/// was, so the class does not fall back to Scheduled and drop the pods it is starting.
#[test]
fn a_smaller_estimate_during_the_warm_up_does_not_undo_the_scale_up() {
    let mut lc = class(serde_json::json!({}));
    let d = settle(&mut lc, &slow_pods(300), utc("2026-12-01T13:46:00Z"));
    assert_eq!(d.phase, Some(Phase::WarmingUp));
    assert_eq!(d.status.planned_replicas, Some(4));
    let d = settle(&mut lc, &slow_pods(130), utc("2026-12-01T13:46:30Z"));
    assert_eq!(d.phase, Some(Phase::WarmingUp), "{:?}", d.status.plan);
    assert_eq!(d.status.planned_replicas, Some(4));
    assert_eq!(d.status.pod_startup.as_ref().unwrap().lead_seconds, 360);
}

fn replicated_world(nodes_ready: u32, sentinels_ready: u32, primary: Option<&str>) -> World {
    World {
        redis: Some(RedisView {
            replicas: 3,
            ready: nodes_ready,
        }),
        sentinel: Some(RedisView {
            replicas: 3,
            ready: sentinels_ready,
        }),
        redis_primary: primary.map(str::to_owned),
        ..running(1)
    }
}

#[test]
fn a_replicated_redis_is_ready_only_with_every_node_in_sync_and_a_sentinel_quorum() {
    let mut lc = class(serde_json::json!({ "spec": { "redis": { "mode": "Replicated" } } }));
    let now = utc("2026-11-30T10:00:00Z");
    let redis_ready = |d: &Decision| {
        cond(d, liveclass_api::condition::REDIS_READY)
            .status
            .clone()
    };

    // A replica still syncing, or a Sentinel short of a quorum: not Ready, and it says which.
    let d = settle(&mut lc, &replicated_world(2, 3, None), now);
    assert_eq!(redis_ready(&d), "False");
    assert!(
        cond(&d, liveclass_api::condition::REDIS_READY)
            .message
            .contains("2 of 3 Redis nodes"),
        "{:?}",
        cond(&d, liveclass_api::condition::REDIS_READY)
    );
    let d = settle(&mut lc, &replicated_world(3, 2, None), now);
    assert_eq!(redis_ready(&d), "False");

    let d = settle(
        &mut lc,
        &replicated_world(3, 3, Some("physics-101-redis-0.x")),
        now,
    );
    assert_eq!(redis_ready(&d), "True");
    assert_eq!(
        d.status.redis_primary.as_deref(),
        Some("physics-101-redis-0.x")
    );
    assert!(!reasons(&d).contains(&"RedisFailover"));
}

#[test]
fn a_failover_is_an_event_and_a_sentinel_that_does_not_answer_keeps_the_known_primary() {
    let mut lc = class(serde_json::json!({ "spec": { "redis": { "mode": "Replicated" } } }));
    let now = utc("2026-11-30T10:00:00Z");
    settle(&mut lc, &replicated_world(3, 3, Some("node-0")), now);

    // Unanswered: the primary last named stays, and nothing is reported.
    let d = settle(&mut lc, &replicated_world(3, 3, None), now);
    assert_eq!(d.status.redis_primary.as_deref(), Some("node-0"));
    assert!(!reasons(&d).contains(&"RedisFailover"));

    let d = settle(&mut lc, &replicated_world(2, 3, Some("node-2")), now);
    assert_eq!(d.status.redis_primary.as_deref(), Some("node-2"));
    let failover = d
        .events
        .iter()
        .find(|e| e.reason == "RedisFailover")
        .unwrap();
    assert_eq!(failover.type_, NoteType::Warning);
    assert!(failover.message.contains("node-2") && failover.message.contains("node-0"));
    // Once: the next reconcile of the same primary says nothing.
    let d = settle(&mut lc, &replicated_world(3, 3, Some("node-2")), now);
    assert!(!reasons(&d).contains(&"RedisFailover"));
}

#[test]
fn a_replicated_redis_stopped_between_classes_forgets_its_primary() {
    let mut lc = class(serde_json::json!({
        "spec": { "redis": { "mode": "Replicated" }, "socket": { "idleReplicas": 0 } }
    }));
    // Days before the class: no socket server, no Redis, no primary to report.
    let before = utc("2026-11-30T10:00:00Z");
    lc.status = Some(LiveClassStatus {
        redis_primary: Some("node-2".into()),
        ..LiveClassStatus::default()
    });
    let d = settle(&mut lc, &World::default(), before);
    assert_eq!(d.status.redis_primary, None);
    // Started afresh for the class: node 0 is the primary, and that is no failover.
    let live = utc("2026-12-01T14:10:00Z");
    let d = settle(&mut lc, &replicated_world(3, 3, Some("node-0")), live);
    assert_eq!(d.status.redis_primary.as_deref(), Some("node-0"));
    assert!(!reasons(&d).contains(&"RedisFailover"));
}

#[test]
fn an_operated_redis_gets_a_generated_password_and_an_external_one_does_not() {
    let mut lc = class(serde_json::json!({}));
    let now = utc("2026-11-30T10:00:00Z");
    let d = settle(&mut lc, &World::default(), now);
    assert_eq!(
        d.generate_redis_password.as_deref(),
        Some("physics-101-redis-auth")
    );
    let mut lc = class(serde_json::json!({
        "spec": { "redis": { "mode": "External", "external": { "secretRef": { "name": "r", "key": "url" } } } }
    }));
    let d = settle(&mut lc, &World::default(), now);
    assert_eq!(d.generate_redis_password, None);
}
