//! Capacity never drops during a class: a Redis outage keeps what the floor raised, students
//! still connected after the class keep what they need and the drain then removes the
//! emptiest pods first, turning autoscaling on hands the replicas over without a dip, and a
//! class the operator cannot serve fully (capped, or refused by the API server) says so.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::ResourceQuota,
};
use kube::api::PostParams;
use liveclass_api::{Phase, condition as cond};
use liveclass_testkit::{RedisServer, wait};
use serde_json::json;

use crate::common::*;

/// Samples the Deployment every 50 ms in the background and keeps the least `spec.replicas`
/// and Ready replicas seen, and when `spec.replicas` was first seen to differ from the first
/// sample.
struct Sampler {
    least_replicas: Arc<AtomicI32>,
    least_ready: Arc<AtomicI32>,
    first_change: Arc<Mutex<Option<DateTime<Utc>>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Sampler {
    fn start(ns: &liveclass_testkit::cluster::TestNamespace, name: &str) -> Self {
        let api = ns.api::<Deployment>();
        let name = name.to_owned();
        let least_replicas = Arc::new(AtomicI32::new(i32::MAX));
        let least_ready = Arc::new(AtomicI32::new(i32::MAX));
        let first_change = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, q, c, s) = (
            least_replicas.clone(),
            least_ready.clone(),
            first_change.clone(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            let mut samples = 0;
            let mut first = None;
            // Bounded: a sampler nobody stops ends after ten minutes.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(d) = api.get(&name).await {
                    // Taken when the answer is in: the change happened at or before it.
                    let seen = Utc::now();
                    let n = replicas(&d).unwrap_or(0);
                    r.fetch_min(n, Ordering::Relaxed);
                    q.fetch_min(ready(&d), Ordering::Relaxed);
                    match first {
                        None => first = Some(n),
                        Some(f) if f != n => {
                            let mut c = c.lock().unwrap();
                            c.get_or_insert(seen);
                        }
                        Some(_) => {}
                    }
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            samples
        });
        Self {
            least_replicas,
            least_ready,
            first_change,
            stop,
            task,
        }
    }

    /// When `spec.replicas` was first seen changed, if it has been: it changed at or before.
    fn first_change(&self) -> Option<DateTime<Utc>> {
        *self.first_change.lock().unwrap()
    }

    /// Stops; (least replicas, least Ready, samples).
    async fn finish(self) -> (i32, i32, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.task.await.unwrap();
        (
            self.least_replicas.load(Ordering::Relaxed),
            self.least_ready.load(Ordering::Relaxed),
            samples,
        )
    }
}

/// The floor raised a live class from 4 to 8 pods; then its Redis is unreachable for 10 s
/// (killed, and back empty): the Deployment stays at 8 throughout, and the class says it cannot
/// see its attendance while that lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_mid_class_keeps_the_capacity_the_floor_raised() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-blip").await.unwrap();
    let mut redis = RedisServer::start().unwrap();
    let operator = start_operator_with(&ns, &redis).await;
    let lc = live_class(
        "blip",
        Utc::now() - TimeDelta::seconds(30),
        json!({ "expectedAttendance": 400 }),
    );
    create(&ns, &lc).await;
    deployment_where(
        &ns,
        "blip-socket",
        "4 Ready",
        Duration::from_secs(30),
        |d| replicas(d) == Some(4) && ready(d) == 4,
    )
    .await;
    connect_students(&redis, &class_id(&ns, "blip"), 730);
    deployment_where(
        &ns,
        "blip-socket",
        "8 Ready from the floor",
        Duration::from_secs(20),
        |d| replicas(d) == Some(8) && ready(d) == 8,
    )
    .await;

    let sampler = Sampler::start(&ns, "blip-socket");
    redis.stop();
    let down = Instant::now();
    let lc = status_where(
        &ns,
        "blip",
        "AttendanceObserved=False",
        Duration::from_secs(10),
        |lc| condition(lc, cond::ATTENDANCE_OBSERVED).is_some_and(|c| c.status == "False"),
    )
    .await;
    eprintln!(
        "attendance unavailable: {}",
        condition(&lc, cond::ATTENDANCE_OBSERVED).unwrap().message
    );
    // The outage lasts 10 s (what is measured, not synchronisation).
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    redis.restart().unwrap();
    // Back, but empty: nobody connected any more. The peak of this class still holds.
    status_where(
        &ns,
        "blip",
        "attendance read again",
        Duration::from_secs(15),
        |lc| {
            is_true(lc, cond::ATTENDANCE_OBSERVED)
                && lc.status.as_ref().and_then(|s| s.connected_students) == Some(0)
        },
    )
    .await;
    let (least, least_ready, samples) = sampler.finish().await;
    eprintln!(
        "during and after the outage: least replicas {least}, least Ready {least_ready} ({samples} samples)"
    );
    assert!(samples > 50, "only {samples} samples");
    assert_eq!(least, 8, "the Deployment fell below 8 replicas");
    assert_eq!(least_ready, 8, "fewer than 8 pods Ready");
    let status = ns
        .api::<liveclass_api::LiveClass>()
        .get("blip")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.peak_connected_students, Some(730));
    assert_eq!(status.planned_replicas, Some(8));
    events_with(&ns, "blip", "AttendanceUnavailable").await;
    operator.stop().await.unwrap();
}

/// 300 students are still connected when the class's cool-down is over: the drain goes no
/// lower than the 3 pods they need, removing the pods with the fewest connections first; once
/// they leave, it drains the rest in steps.
///
/// The class is live (600 expected: 6 pods) for as long as its pods take to come up and the
/// students to arrive on this machine; only then is it cut short, to end within two seconds
/// and then cool down for 5, so the drain begins at an instant the test knows ahead and every
/// precondition holds before it, however slow the machine. Instants are whole seconds, as the
/// schedule keeps them: the start as created is truncated to the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrunning_class_keeps_what_its_students_need_then_drains_the_emptiest_first() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-overrun").await.unwrap();
    let redis = RedisServer::start().unwrap();
    let operator = start_operator_with(&ns, &redis).await;
    let start = (Utc::now() - TimeDelta::seconds(10)).trunc_subsecs(0);
    let lc = live_class("late", start, json!({ "expectedAttendance": 600 }));
    create(&ns, &lc).await;
    deployment_where(
        &ns,
        "late-socket",
        "6 Ready",
        Duration::from_secs(60),
        |d| replicas(d) == Some(6) && ready(d) == 6,
    )
    .await;
    let id = class_id(&ns, "late");
    let pods = socket_pods(&ns, "late").await;
    assert_eq!(pods.len(), 6);
    let counts = [5, 90, 10, 80, 0, 115];
    let per_pod: Vec<(String, u64)> = pods.iter().cloned().zip(counts).collect();
    report_pods(&redis, &id, &per_pod);
    connect_students(&redis, &id, 300);
    let mut busiest: Vec<_> = per_pod.clone();
    busiest.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let busiest: BTreeSet<String> = busiest.iter().take(3).map(|(p, _)| p.clone()).collect();
    status_where(
        &ns,
        "late",
        "the operator to see 300 students",
        Duration::from_secs(15),
        |lc| lc.status.as_ref().and_then(|s| s.connected_students) == Some(300),
    )
    .await;

    let sampler = Sampler::start(&ns, "late-socket");
    let end = Utc::now().trunc_subsecs(0) + TimeDelta::seconds(2);
    let drain_from = end + TimeDelta::seconds(5);
    let duration = format!("{}s", (end - start).num_seconds());
    patch_spec(&ns, "late", json!({ "schedule": { "duration": duration } })).await;
    status_where(
        &ns,
        "late",
        "the class cut short",
        Duration::from_secs(15),
        |lc| {
            lc.status
                .as_ref()
                .and_then(|s| s.plan.as_ref()?.drain_time.as_ref())
                .and_then(liveclass_api::time::from_k8s)
                == Some(drain_from)
        },
    )
    .await;
    deployment_where(
        &ns,
        "late-socket",
        "the first drain step, to the 3 pods 300 students need",
        Duration::from_secs(30),
        |d| replicas(d) == Some(3),
    )
    .await;
    // The sampler polls on its own: it may see the step a moment after the wait above did.
    let changed = wait::until(
        "the sampler to see the drain step",
        Duration::from_secs(10),
        POLL,
        || async { sampler.first_change() },
    )
    .await
    .unwrap();
    eprintln!(
        "drain seen {} ms after end plus cool-down",
        (changed - drain_from).num_milliseconds()
    );
    assert!(
        changed >= drain_from,
        "drained at or before {changed}, before the end plus cool-down {drain_from}"
    );
    wait::until("3 socket pods left", Duration::from_secs(20), POLL, || {
        let ns = &ns;
        async move { (socket_pods(ns, "late").await.len() == 3).then_some(()) }
    })
    .await
    .unwrap();
    let left: BTreeSet<String> = socket_pods(&ns, "late").await.into_iter().collect();
    assert_eq!(left, busiest, "the drain removed busy pods: {per_pod:?}");
    // Held while they stay: an observation window of more than two drain intervals.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (least, _, _) = sampler.finish().await;
    assert_eq!(least, 3, "drained below what 300 students need");
    let lc = status_where(&ns, "late", "overrun", Duration::from_secs(5), |lc| {
        phase(lc) == Some(Phase::CoolingDown)
    })
    .await;
    assert_eq!(lc.status.unwrap().connected_students, Some(300));

    // They leave: the rest drains, 3 → 1 (a 50% step of 3 is 2 pods).
    connect_students(&redis, &id, 0);
    report_pods(
        &redis,
        &id,
        &left.iter().map(|p| (p.clone(), 0)).collect::<Vec<_>>(),
    );
    deployment_where(&ns, "late-socket", "idle", Duration::from_secs(20), |d| {
        replicas(d) == Some(1)
    })
    .await;
    status_where(&ns, "late", "Ended", Duration::from_secs(10), |lc| {
        phase(lc) == Some(Phase::Ended)
    })
    .await;
    operator.stop().await.unwrap();
}

/// Turning autoscaling on for a live class of 6 pods: the HPA is created first and the
/// replicas handed over to it, so the Deployment never shows fewer than 6 (Ready) pods; the
/// HPA's minimum then follows the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_autoscaling_on_a_live_class_never_drops_a_pod() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-hpa").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;
    let lc = live_class(
        "art",
        Utc::now() - TimeDelta::seconds(30),
        json!({
            "expectedAttendance": 600,
            "socket": { "resources": { "requests": { "cpu": "100m", "memory": "64Mi" } } },
        }),
    );
    create(&ns, &lc).await;
    deployment_where(&ns, "art-socket", "6 Ready", Duration::from_secs(30), |d| {
        replicas(d) == Some(6) && ready(d) == 6
    })
    .await;

    let sampler = Sampler::start(&ns, "art-socket");
    patch_spec(
        &ns,
        "art",
        json!({ "autoscaling": { "targetCpuUtilization": 60 } }),
    )
    .await;
    let hpas = ns.api::<HorizontalPodAutoscaler>();
    let min_replicas = |want: i32| {
        let hpas = hpas.clone();
        move || {
            let hpas = hpas.clone();
            async move {
                let hpa = hpas.get_opt("art-socket").await.ok()??;
                (hpa.spec.min_replicas == Some(want)).then_some(hpa)
            }
        }
    };
    let hpa = wait::until(
        "the HPA at 6",
        Duration::from_secs(20),
        POLL,
        min_replicas(6),
    )
    .await
    .unwrap();
    assert_eq!(hpa.spec.scale_target_ref.name, "art-socket");
    let owners = |d: &Deployment| {
        d.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| {
                m.fields_v1
                    .as_ref()
                    .and_then(|f| f.0.get("f:spec"))
                    .and_then(|s| s.get("f:replicas"))
                    .is_some()
            })
            .filter_map(|m| m.manager.clone())
            .collect::<Vec<_>>()
    };
    let d = deployment_where(
        &ns,
        "art-socket",
        "the operator to let go of replicas",
        Duration::from_secs(10),
        |d| !owners(d).iter().any(|m| m == "liveclass-operator"),
    )
    .await;
    eprintln!("replicas owned by {:?}", owners(&d));
    assert!(
        owners(&d)
            .iter()
            .any(|m| m == "liveclass-operator-handover"),
        "{:?}",
        owners(&d)
    );
    // Past the moment the operator's apply without replicas landed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (least, least_ready, samples) = sampler.finish().await;
    eprintln!(
        "while handing over: least replicas {least}, least Ready {least_ready} ({samples} samples)"
    );
    assert_eq!((least, least_ready), (6, 6));

    // The HPA's minimum follows the plan, and the HPA controller brings the pods up to it.
    patch_spec(&ns, "art", json!({ "expectedAttendance": 800 })).await;
    wait::until(
        "the HPA at 8",
        Duration::from_secs(10),
        POLL,
        min_replicas(8),
    )
    .await
    .unwrap();
    deployment_where(
        &ns,
        "art-socket",
        "8 replicas from the HPA",
        Duration::from_secs(40),
        |d| replicas(d) == Some(8),
    )
    .await;
    operator.stop().await.unwrap();
}

/// A class whose maxReplicas is below its need says `CapacityCapped` (and an Event); a class
/// whose Deployment the API server refuses (a quota) says `Applied=False` (and an Event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_class_and_a_failing_apply_are_shown_in_status() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-capped").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;
    let lc = live_class(
        "big",
        Utc::now() - TimeDelta::seconds(30),
        json!({ "expectedAttendance": 400, "socket": { "maxReplicas": 2 } }),
    );
    create(&ns, &lc).await;
    let lc = status_where(
        &ns,
        "big",
        "CapacityCapped",
        Duration::from_secs(20),
        |lc| is_true(lc, cond::CAPACITY_CAPPED),
    )
    .await;
    let status = lc.status.clone().unwrap();
    assert_eq!(
        (status.planned_replicas, status.needed_replicas),
        (Some(2), Some(4))
    );
    eprintln!("{}", condition(&lc, cond::CAPACITY_CAPPED).unwrap().message);
    let events = events_with(&ns, "big", "CapacityCapped").await;
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    operator.stop().await.unwrap();

    let ns = cluster.namespace("lc-quota").await.unwrap();
    let quotas = ns.api::<ResourceQuota>();
    quotas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": { "name": "no-deployments" },
                "spec": { "hard": { "count/deployments.apps": "0" } },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // The quota is enforced once the quota controller has computed its usage.
    wait::until("the quota in force", Duration::from_secs(20), POLL, || {
        let quotas = quotas.clone();
        async move {
            let q = quotas.get("no-deployments").await.ok()?;
            q.status?
                .hard?
                .contains_key("count/deployments.apps")
                .then_some(())
        }
    })
    .await
    .unwrap();
    let operator = start_operator(&ns, |_| {}).await;
    create(&ns, &live_class("refused", Utc::now(), json!({}))).await;
    let lc = status_where(
        &ns,
        "refused",
        "Applied=False",
        Duration::from_secs(20),
        |lc| condition(lc, cond::APPLIED).is_some_and(|c| c.status == "False"),
    )
    .await;
    let applied = condition(&lc, cond::APPLIED).unwrap();
    eprintln!("{}: {}", applied.reason, applied.message);
    assert_eq!(applied.reason, "Forbidden");
    assert!(
        applied.message.contains("refused-socket"),
        "{}",
        applied.message
    );
    assert_eq!(condition(&lc, cond::READY).unwrap().reason, "ApplyFailed");
    let events = events_with(&ns, "refused", "ApplyFailed").await;
    assert_eq!(events.len(), 1, "one Event per distinct failure");
    operator.stop().await.unwrap();
}
