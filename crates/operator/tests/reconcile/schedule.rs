//! The schedule and the basics: on time, following the spec and the students, undoing drift,
//! cleaning up, writing nothing when nothing changed, refusing what it cannot plan, serving
//! its probes and metrics.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams},
};
use liveclass_api::{LiveClass, Phase, condition as cond};
use liveclass_operator::metrics::Verb;
use liveclass_testkit::{RedisServer, cluster::TestNamespace, wait};
use serde_json::json;

use crate::common::*;

/// A class starting 40 s from now with a 15 s warm-up. Replicas follow the plan, pods are
/// Ready before `start - warmup` (status says by how much), phases move on time, and after
/// the end plus cool-down the Deployment scales down in steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_is_scaled_up_ahead_held_on_time_and_drained_in_steps() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-schedule").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;

    let start = (Utc::now() + TimeDelta::seconds(40)).trunc_subsecs(0);
    // 400 students at 100 a pod: 4 replicas; 5 s pod start-up, 15 s warm-up, 10 s class. The
    // planner's own timing: without learning, which on a loaded machine (a KWOK pod pending for
    // 10 s) would rightly start earlier (tests/reconcile/startup.rs shows that).
    let lc = live_class(
        "bell",
        start,
        json!({
            "expectedAttendance": 400,
            "schedule": { "duration": "10s" },
            "socket": { "learnPodStartup": false },
        }),
    );
    create(&ns, &lc).await;
    let scale_up_at = start - TimeDelta::seconds(20);
    let ready_by = start - TimeDelta::seconds(15);
    let end = start + TimeDelta::seconds(10);
    let drain_from = end + TimeDelta::seconds(5);

    // Between classes: the minimum, phase Scheduled, the milestones in status.plan.
    deployment_where(
        &ns,
        "bell-socket",
        "the idle Deployment",
        Duration::from_secs(20),
        |d| replicas(d) == Some(1),
    )
    .await;
    let scheduled = status_where(
        &ns,
        "bell",
        "phase Scheduled",
        Duration::from_secs(10),
        |lc| phase(lc) == Some(Phase::Scheduled),
    )
    .await;
    let plan = scheduled.status.unwrap().plan.unwrap();
    assert_eq!(
        plan.ready_by_time.map(|t| t.0.as_second()),
        Some(ready_by.timestamp())
    );
    assert_eq!(plan.class_replicas, Some(4));

    // Follow phases and replicas until the class has ended, sampling every 100 ms.
    let api = ns.api::<LiveClass>();
    let deployments = ns.api::<Deployment>();
    let mut phase_seen: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut replica_steps: Vec<i32> = Vec::new();
    let mut all_ready_at: Option<DateTime<Utc>> = None;
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        assert!(
            Instant::now() < deadline,
            "the class did not end in time: {phase_seen:?} {replica_steps:?}"
        );
        let now = Utc::now();
        let lc = api.get("bell").await.unwrap();
        let d = deployments.get("bell-socket").await.unwrap();
        if let Some(p) = phase(&lc) {
            phase_seen.entry(p.to_string()).or_insert(now);
        }
        if let Some(r) = replicas(&d)
            && replica_steps.last() != Some(&r)
        {
            replica_steps.push(r);
        }
        if all_ready_at.is_none() && ready(&d) >= 4 {
            all_ready_at = Some(now);
        }
        if phase(&lc) == Some(Phase::Ended) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }

    let on_time = |name: &str, planned: DateTime<Utc>| {
        let seen = phase_seen[name];
        let late = (seen - planned).num_milliseconds();
        eprintln!("{name}: seen {late} ms after the planned {planned} (100 ms sampling)");
        assert!(
            (-500..=2_000).contains(&late),
            "{name} at {seen}, planned {planned} ({late} ms late)"
        );
    };
    on_time("WarmingUp", scale_up_at);
    on_time("Live", start);
    on_time("CoolingDown", end);
    assert!(phase_seen["Ended"] >= drain_from, "{phase_seen:?}");
    let ready_at = all_ready_at.expect("pods never became Ready");
    assert!(
        ready_at <= ready_by,
        "4 pods Ready at {ready_at}, needed by {ready_by}"
    );
    let lead = api
        .get("bell")
        .await
        .unwrap()
        .status
        .unwrap()
        .ready_lead_seconds
        .unwrap();
    eprintln!(
        "4 pods Ready {} ms before start - warmup (status: {lead} s before the start); replicas {replica_steps:?}",
        (ready_by - ready_at).num_milliseconds()
    );
    assert!(
        lead >= 15,
        "status says Ready only {lead} s before the start"
    );
    assert_eq!(
        replica_steps,
        vec![1, 4, 2, 1],
        "replicas should go up to the plan, then down in steps of 50%"
    );
    let events = ns
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        !events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Late")),
        "a class Ready in time was reported Late"
    );
    operator.stop().await.unwrap();
}

/// Changing the attendance changes replicas; a deleted Deployment comes back; students
/// connected beyond the plan raise it (reactive floor, from a real Redis, keyed by
/// `<namespace>/<name>`); the token Secret is generated; deleting the LiveClass removes
/// everything it owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_the_spec_drift_is_undone_attendance_raises_and_delete_cleans_up() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-follow").await.unwrap();
    let redis = RedisServer::start().unwrap();
    let operator = start_operator_with(&ns, &redis).await;
    // A class that is on now: 200 students at 100 a pod.
    let lc = live_class("maths", Utc::now() - TimeDelta::seconds(5), json!({}));
    create(&ns, &lc).await;
    let first = deployment_where(
        &ns,
        "maths-socket",
        "2 replicas",
        Duration::from_secs(20),
        |d| replicas(d) == Some(2),
    )
    .await;
    status_where(
        &ns,
        "maths",
        "phase Live, 0 connected",
        Duration::from_secs(10),
        |lc| {
            phase(lc) == Some(Phase::Live)
                && lc.status.as_ref().and_then(|s| s.connected_students) == Some(0)
        },
    )
    .await;

    // More students expected: more replicas.
    patch_spec(&ns, "maths", json!({ "expectedAttendance": 500 })).await;
    deployment_where(
        &ns,
        "maths-socket",
        "5 replicas",
        Duration::from_secs(10),
        |d| replicas(d) == Some(5),
    )
    .await;

    // Drift: the Deployment is deleted and comes back; scaled by hand, it is put back.
    ns.api::<Deployment>()
        .delete("maths-socket", &DeleteParams::default())
        .await
        .unwrap();
    let first_uid = first.metadata.uid.clone();
    deployment_where(
        &ns,
        "maths-socket",
        "the Deployment recreated",
        Duration::from_secs(15),
        |d| d.metadata.uid != first_uid && replicas(d) == Some(5),
    )
    .await;
    ns.api::<Deployment>()
        .patch(
            "maths-socket",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "spec": { "replicas": 1 } })),
        )
        .await
        .unwrap();
    deployment_where(
        &ns,
        "maths-socket",
        "5 replicas again after a hand scale",
        Duration::from_secs(10),
        |d| replicas(d) == Some(5),
    )
    .await;

    // Reactive floor: 730 students connected (the socket servers' who-is-where hash, under the
    // class id <namespace>/<name>) need 8 pods.
    connect_students(&redis, &class_id(&ns, "maths"), 730);
    deployment_where(
        &ns,
        "maths-socket",
        "8 replicas from the floor",
        Duration::from_secs(10),
        |d| replicas(d) == Some(8),
    )
    .await;
    status_where(
        &ns,
        "maths",
        "730 connected",
        Duration::from_secs(10),
        |lc| lc.status.as_ref().and_then(|s| s.connected_students) == Some(730),
    )
    .await;

    // No tokenSecretRef: a generated Secret, named in status, mounted by the pods.
    let lc = ns.api::<LiveClass>().get("maths").await.unwrap();
    let token = lc.status.unwrap().token_secret_ref.unwrap();
    assert_eq!(
        (token.name.as_str(), token.key.as_str()),
        ("maths-token", "hs256-key")
    );
    let secret = ns.api::<Secret>().get("maths-token").await.unwrap();
    let key = &secret.data.unwrap()["hs256-key"].0;
    assert!(key.len() >= 32, "a {}-byte key", key.len());

    // Deleting the LiveClass removes every owned object (garbage collection).
    operator.stop().await.unwrap();
    ns.api::<LiveClass>()
        .delete("maths", &DeleteParams::foreground())
        .await
        .unwrap();
    let client = ns.client();
    let name = ns.name().to_owned();
    wait::until(
        "every owned object gone",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let client = client.clone();
            let name = name.clone();
            async move {
                let ns = name.as_str();
                let gone = Api::<Deployment>::namespaced(client.clone(), ns)
                    .get_opt("maths-socket")
                    .await
                    .ok()?
                    .is_none()
                    && Api::<Service>::namespaced(client.clone(), ns)
                        .list(&ListParams::default())
                        .await
                        .ok()?
                        .items
                        .is_empty()
                    && Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
                        .get_opt("maths-socket")
                        .await
                        .ok()?
                        .is_none()
                    && Api::<StatefulSet>::namespaced(client.clone(), ns)
                        .get_opt("maths-redis")
                        .await
                        .ok()?
                        .is_none()
                    && Api::<Secret>::namespaced(client.clone(), ns)
                        .get_opt("maths-token")
                        .await
                        .ok()?
                        .is_none()
                    && Api::<LiveClass>::namespaced(client.clone(), ns)
                        .get_opt("maths")
                        .await
                        .ok()?
                        .is_none();
                gone.then_some(())
            }
        },
    )
    .await
    .unwrap();
}

async fn resource_versions(ns: &TestNamespace, class: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // Kubernetes' own controllers keep writing the status of Deployments, StatefulSets and
    // PDBs, which moves their resourceVersion; for those, what the operator could change is the
    // generation (spec) and its own managed-fields entry. Everything else: the resourceVersion.
    let rv = |kind: &str, meta: &kube::api::ObjectMeta| {
        let ours = meta
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.manager.as_deref() == Some("liveclass-operator"))
            .map(|m| format!("{:?} {:?}", m.subresource, m.time))
            .collect::<Vec<_>>()
            .join(", ");
        let version = if ["Deployment", "StatefulSet", "PDB"].contains(&kind) {
            format!("generation {:?}", meta.generation)
        } else {
            format!("resourceVersion {:?}", meta.resource_version)
        };
        (kind.to_owned(), format!("{version}; ours: {ours}"))
    };
    let lc = ns.api::<LiveClass>().get(class).await.unwrap();
    out.extend([rv("LiveClass", &lc.metadata)]);
    let socket = format!("{class}-socket");
    out.extend([rv(
        "Deployment",
        &ns.api::<Deployment>().get(&socket).await.unwrap().metadata,
    )]);
    out.extend([rv(
        "Service",
        &ns.api::<Service>().get(&socket).await.unwrap().metadata,
    )]);
    out.extend([rv(
        "HeadlessService",
        &ns.api::<Service>()
            .get(&format!("{class}-socket-headless"))
            .await
            .unwrap()
            .metadata,
    )]);
    out.extend([rv(
        "PDB",
        &ns.api::<PodDisruptionBudget>()
            .get(&socket)
            .await
            .unwrap()
            .metadata,
    )]);
    let redis = format!("{class}-redis");
    out.extend([rv(
        "StatefulSet",
        &ns.api::<StatefulSet>().get(&redis).await.unwrap().metadata,
    )]);
    out.extend([rv(
        "RedisService",
        &ns.api::<Service>().get(&redis).await.unwrap().metadata,
    )]);
    out
}

/// Once a class is reconciled and its pods are Ready, a new operator (nothing in its memory)
/// changes nothing on the server: every resourceVersion stays (generation and the operator's
/// own managed fields, for objects whose status Kubernetes keeps writing), no status or Event
/// is written; and while the class is live and its attendance read every second, reconciles
/// go on without a single request to the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_with_nothing_changed_writes_nothing() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-noop").await.unwrap();
    let redis = RedisServer::start().unwrap();
    let operator = start_operator_with(&ns, &redis).await;
    ns.api::<Secret>()
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": "quiet-token" },
                "stringData": { "hs256-key": "k".repeat(48) },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let lc = live_class(
        "quiet",
        Utc::now() - TimeDelta::seconds(30),
        json!({ "socket": { "tokenSecretRef": { "name": "quiet-token", "key": "hs256-key" } } }),
    );
    create(&ns, &lc).await;
    connect_students(&redis, &class_id(&ns, "quiet"), 120);
    status_where(
        &ns,
        "quiet",
        "Ready with 120 connected",
        Duration::from_secs(30),
        |lc| {
            is_true(lc, cond::READY)
                && lc.status.as_ref().and_then(|s| s.connected_students) == Some(120)
        },
    )
    .await;
    operator.stop().await.unwrap();

    let before = resource_versions(&ns, "quiet").await;
    let fresh = start_operator_with(&ns, &redis).await;
    let metrics = fresh.metrics.clone();
    wait::until(
        "the new operator's first reconciles",
        Duration::from_secs(20),
        POLL,
        || {
            let m = metrics.clone();
            async move { (m.reconciles_with("applied") >= 3).then_some(()) }
        },
    )
    .await
    .unwrap();
    let after = resource_versions(&ns, "quiet").await;
    assert_eq!(
        before, after,
        "a reconcile with nothing changed wrote something"
    );
    assert_eq!(metrics.requests_of(Verb::ApplyStatus), 0);
    assert_eq!(metrics.requests_of(Verb::Event), 0);
    // Steady state: reconciles every attendance interval, no request at all.
    let requests = metrics.requests();
    let reconciles = metrics.reconciles();
    let window = Instant::now();
    wait::until(
        "three more reconciles",
        Duration::from_secs(20),
        POLL,
        || {
            let m = metrics.clone();
            async move { (m.reconciles() >= reconciles + 3).then_some(()) }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        metrics.requests(),
        requests,
        "requests at steady state over {:?}",
        window.elapsed()
    );
    fresh.stop().await.unwrap();
}

/// An object the schema accepts but the operator cannot plan (an unknown time zone) gets
/// `Ready=False` with the message, one Warning Event, and is not retried in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_class_gets_a_false_condition_one_event_and_no_retry_storm() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-invalid").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;
    let mut lc = live_class("mars", Utc::now(), json!({}));
    lc.spec.schedule.start = None;
    lc.spec.schedule.cron = Some("0 14 * * MON".into());
    lc.spec.schedule.time_zone = Some("Mars/Olympus_Mons".into());
    create(&ns, &lc).await;
    let lc = status_where(&ns, "mars", "Ready=False", Duration::from_secs(20), |lc| {
        condition(lc, cond::READY)
            .is_some_and(|c| c.status == "False" && c.reason == "UnknownTimeZone")
    })
    .await;
    let condition = condition(&lc, cond::READY).unwrap();
    assert!(
        condition.message.contains("Mars/Olympus_Mons"),
        "{}",
        condition.message
    );
    events_with(&ns, "mars", "UnknownTimeZone").await;
    // An observation window (not synchronisation): a hot loop would reconcile hundreds of
    // times in it; the operator reconciles the object once (its own status write is not a
    // reason to look again).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconciles = operator.metrics.reconciles_with("invalid");
    assert!(
        reconciles <= 2,
        "{reconciles} reconciles of an invalid object"
    );
    assert_eq!(events_with(&ns, "mars", "UnknownTimeZone").await.len(), 1);
    assert!(
        ns.api::<Deployment>()
            .get_opt("mars-socket")
            .await
            .unwrap()
            .is_none(),
        "an invalid class must not get capacity"
    );
    operator.stop().await.unwrap();
}

/// The operator's own endpoints answer: liveness, readiness and Prometheus metrics, with the
/// per-class series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_are_served() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-probes").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;
    create(
        &ns,
        &live_class("bio", Utc::now() + TimeDelta::days(1), json!({})),
    )
    .await;
    status_where(&ns, "bio", "a status", Duration::from_secs(20), |lc| {
        phase(lc).is_some()
    })
    .await;
    let metrics = operator.metrics.clone();
    wait::until(
        "a finished reconcile",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let m = metrics.clone();
            async move { (m.reconciles() > 0).then_some(()) }
        },
    )
    .await
    .unwrap();
    let get = |path: &'static str| {
        let addr = operator.addr;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut body = String::new();
            stream.read_to_string(&mut body).await.unwrap();
            body
        }
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics").await;
    let planned = format!(
        "liveclass_operator_class_planned_replicas{{namespace=\"{}\",name=\"bio\"}} 1",
        ns.name()
    );
    for name in [
        "liveclass_operator_reconciles_total",
        "liveclass_operator_reconcile_duration_seconds",
        "liveclass_operator_classes{phase=\"Scheduled\"} 1",
        "liveclass_operator_leader 1",
        "liveclass_operator_api_requests_total{verb=\"apply\"}",
        "liveclass_operator_capacity_ready_lead_seconds_bucket",
        "liveclass_operator_late_classes_total 0",
        planned.as_str(),
    ] {
        assert!(metrics.contains(name), "{name} missing in\n{metrics}");
    }
    operator.stop().await.unwrap();
}

/// Issue 11, item 1, measured: a Live class whose students keep arriving (a new count at every
/// attendance read) costs at most one API write per attendance interval — its status, with the
/// connected count — and one reconcile per interval: the operator's own status writes never
/// trigger another reconcile. Counted twice: by the operator's request counter, and on the API
/// server as the LiveClass's resourceVersion changes seen by a watch. docs/operator.md states
/// the bound (`60 / --attendance-interval` writes a minute: 6 at the default 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_class_writes_at_most_once_per_attendance_interval() {
    use futures_util::StreamExt as _;
    use kube::runtime::watcher;

    let cluster = cluster().await;
    let ns = cluster.namespace("lc-steady").await.unwrap();
    let redis = RedisServer::start().unwrap();
    let operator = start_operator_with(&ns, &redis).await;
    let interval = Duration::from_secs(1);
    let id = class_id(&ns, "busy");
    connect_students(&redis, &id, 50);
    create(
        &ns,
        &live_class("busy", Utc::now() - TimeDelta::seconds(30), json!({})),
    )
    .await;
    status_where(
        &ns,
        "busy",
        "Ready with 50 connected",
        Duration::from_secs(30),
        |lc| {
            is_true(lc, cond::READY)
                && lc.status.as_ref().and_then(|s| s.connected_students) == Some(50)
        },
    )
    .await;
    // Settled: two reconciles in a row that wrote nothing.
    let metrics = operator.metrics.clone();
    wait::until(
        "two reconciles without a write",
        Duration::from_secs(20),
        POLL,
        || {
            let m = metrics.clone();
            async move {
                let (w, r) = (m.writes(), m.reconciles());
                tokio::time::sleep(Duration::from_millis(2_200)).await;
                (m.writes() == w && m.reconciles() >= r + 2).then_some(())
            }
        },
    )
    .await
    .unwrap();

    // The API server's count: every change of the LiveClass (status included) is a new
    // resourceVersion, one watch event.
    let api = ns.api::<LiveClass>();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = seen.clone();
    let mut changes = watcher(api, watcher::Config::default().fields("metadata.name=busy")).boxed();
    let watch = tokio::spawn(async move {
        while let Some(event) = changes.next().await {
            if let Ok(watcher::Event::Apply(_)) = event {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    // Let the watch's initial list land before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = seen.load(std::sync::atomic::Ordering::Relaxed);

    let other_writes =
        |m: &liveclass_operator::metrics::Metrics| m.writes() - m.requests_of(Verb::ApplyStatus);
    let (writes, reconciles, others) = (
        metrics.writes(),
        metrics.reconciles(),
        other_writes(&metrics),
    );
    let window = Instant::now();
    let span = Duration::from_secs(15);
    // A new student every 250 ms: every read (each second) sees a new count; 50 → 110 stays
    // within the class's 2 planned pods, so only the count changes.
    let mut n = 50;
    while window.elapsed() < span {
        n += 1;
        redis
            .command(&[
                "HSET",
                &format!("lc:{{{id}}}:where"),
                &format!("late-{n}"),
                "pod-a#1",
            ])
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = window.elapsed();
    let writes = metrics.writes() - writes;
    let reconciles = metrics.reconciles() - reconciles;
    // A status write in flight at the end lands within a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let changed = seen.load(std::sync::atomic::Ordering::Relaxed) - base;
    watch.abort();
    let per_minute = |n: u64| n as f64 * 60.0 / elapsed.as_secs_f64();
    eprintln!(
        "over {elapsed:?} at a {interval:?} interval: {writes} writes ({:.1}/min), \
         {reconciles} reconciles ({:.1}/min), {changed} LiveClass changes on the server",
        per_minute(writes),
        per_minute(reconciles),
    );
    // At most one read, so one status write, per interval (plus one straddling each edge).
    let bound = elapsed.as_secs_f64() / interval.as_secs_f64() + 1.0;
    assert!(
        writes as f64 <= bound,
        "{writes} writes in {elapsed:?}, bound {bound:.0}"
    );
    assert!(
        changed as f64 <= bound + 1.0,
        "{changed} changes on the server in {elapsed:?}, bound {bound:.0}"
    );
    assert!(
        reconciles as f64 <= bound + 1.0,
        "{reconciles} reconciles in {elapsed:?}: a reconcile storm"
    );
    assert_eq!(
        other_writes(&metrics),
        others,
        "writes other than status at steady state"
    );
    // And the writes that were made kept status current: the count moved several times.
    assert!(
        writes >= 3,
        "only {writes} status writes while students arrived"
    );
    status_where(
        &ns,
        "busy",
        "the latest count",
        Duration::from_secs(5),
        |lc| lc.status.as_ref().and_then(|s| s.connected_students) == Some(n),
    )
    .await;
    operator.stop().await.unwrap();
}
