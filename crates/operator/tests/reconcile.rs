//! The operator against a real control plane (kube-apiserver, controller-manager, scheduler,
//! KWOK playing the kubelet): the operator runs in-process, one (or two) per test, each test in
//! its own namespace. Every wait polls a condition with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        coordination::v1::Lease,
        core::v1::{ConfigMap, Service},
        events::v1::Event,
        policy::v1::PodDisruptionBudget,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::events::{Recorder, Reporter},
};
use liveclass_api::{LiveClass, Phase};
use liveclass_operator::{Config, Operator, controller, metrics::Metrics};
use liveclass_testkit::{LocalCluster, RedisServer, cluster::TestNamespace, wait};
use serde_json::json;
use tokio::sync::OnceCell;

static CRD: OnceCell<()> = OnceCell::const_new();

/// The shared cluster with pods, with the LiveClass CRD installed and Established.
async fn cluster() -> &'static LocalCluster {
    let cluster = LocalCluster::shared_with_pods().await.unwrap();
    CRD.get_or_init(|| async {
        let client = cluster.client().await.unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client);
        let crd = LiveClass::crd();
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("liveclass-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        wait::until(
            "the CRD to be Established",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let crd = crds.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await
        .unwrap();
    })
    .await;
    init_tracing();
    cluster
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.trunc_subsecs(0)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A LiveClass named `name` with a one-off start; `extra` is merged into `spec`.
fn live_class(name: &str, start: DateTime<Utc>, extra: serde_json::Value) -> LiveClass {
    let mut spec = json!({
        "schedule": { "start": rfc3339(start), "duration": "1h" },
        "expectedAttendance": 200,
        "warmup": "15s",
        "cooldown": "5s",
        "socket": {
            "image": "liveclass-socket:test",
            "connectionsPerPod": 100,
            "headroom": 1.0,
            "minReplicas": 1,
            "maxReplicas": 20,
            "podStartup": "5s",
            "drainWindow": "1s",
            "scaleDown": { "stepPercent": 50, "interval": "3s" },
        },
    });
    merge(&mut spec, extra);
    serde_json::from_value(json!({
        "apiVersion": "liveclass.dev/v1alpha1",
        "kind": "LiveClass",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap()
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

async fn create(ns: &TestNamespace, lc: &LiveClass) -> LiveClass {
    ns.api::<LiveClass>()
        .create(&PostParams::default(), lc)
        .await
        .unwrap()
}

async fn start_operator(ns: &TestNamespace, tweak: impl FnOnce(&mut Config)) -> Operator {
    let mut config = Config::for_namespace(ns.name());
    tweak(&mut config);
    Operator::start(config, ns.client()).await.unwrap()
}

/// Waits until the Deployment `name` exists and `check` holds for it.
async fn deployment_where(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Deployment) -> bool,
) -> Deployment {
    let api = ns.api::<Deployment>();
    wait::until(what, timeout, Duration::from_millis(100), || {
        let api = api.clone();
        let found = async move { api.get_opt(name).await.ok().flatten() };
        let check = &check;
        async move { found.await.filter(|d| check(d)) }
    })
    .await
    .unwrap()
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.replicas
}

fn ready(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

async fn status_where(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&LiveClass) -> bool,
) -> LiveClass {
    let api = ns.api::<LiveClass>();
    wait::until(what, timeout, Duration::from_millis(100), || {
        let api = api.clone();
        let check = &check;
        async move { api.get(name).await.ok().filter(|lc| check(lc)) }
    })
    .await
    .unwrap()
}

fn phase(lc: &LiveClass) -> Option<Phase> {
    lc.status.as_ref().and_then(|s| s.phase)
}

/// The scenario of issue 5: a class starting 40 s from now with a 15 s warm-up. Replicas follow
/// the plan, pods are Ready before `start - warmup`, phases move on time and after the end
/// plus cool-down the Deployment scales down in steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_is_scaled_up_ahead_held_on_time_and_drained_in_steps() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-schedule").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;

    let start = (Utc::now() + TimeDelta::seconds(40)).trunc_subsecs(0);
    // 400 students at 100 a pod: 4 replicas; 5 s pod start-up, 15 s warm-up, 10 s class.
    let lc = live_class(
        "bell",
        start,
        json!({ "expectedAttendance": 400, "schedule": { "duration": "10s" } }),
    );
    create(&ns, &lc).await;
    let scale_up_at = start - TimeDelta::seconds(20);
    let ready_by = start - TimeDelta::seconds(15);
    let end = start + TimeDelta::seconds(10);
    let drain_from = end + TimeDelta::seconds(5);

    // Between classes: the minimum, phase Scheduled.
    deployment_where(
        &ns,
        "bell-socket",
        "the idle Deployment",
        Duration::from_secs(20),
        |d| replicas(d) == Some(1),
    )
    .await;
    status_where(
        &ns,
        "bell",
        "phase Scheduled",
        Duration::from_secs(10),
        |lc| phase(lc) == Some(Phase::Scheduled),
    )
    .await;

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
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    eprintln!(
        "4 pods Ready {} ms before start - warmup; replicas {replica_steps:?}",
        (ready_by - ready_at).num_milliseconds()
    );
    assert_eq!(
        replica_steps,
        vec![1, 4, 2, 1],
        "replicas should go up to the plan, then down in steps of 50%"
    );
    operator.stop().await.unwrap();
}

/// Changing the attendance changes replicas; a deleted Deployment comes back; students
/// connected beyond the plan raise it (reactive floor, from a real Redis); deleting the
/// LiveClass removes everything it owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_the_spec_drift_is_undone_attendance_raises_and_delete_cleans_up() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-follow").await.unwrap();
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let operator = start_operator(&ns, move |c| {
        c.redis_override = Some(url);
        c.attendance_interval = Duration::from_secs(1);
    })
    .await;
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
    ns.api::<LiveClass>()
        .patch(
            "maths",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "expectedAttendance": 500 } })),
        )
        .await
        .unwrap();
    deployment_where(
        &ns,
        "maths-socket",
        "5 replicas",
        Duration::from_secs(10),
        |d| replicas(d) == Some(5),
    )
    .await;

    // Drift: the Deployment is deleted and comes back.
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

    // Reactive floor: 730 students connected (the socket servers' who-is-where hash) need 8 pods.
    let mut args = vec!["HSET".to_owned(), "lc:{maths}:where".to_owned()];
    for i in 0..730 {
        args.push(format!("student-{i}"));
        args.push("pod-a#1".to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    redis.command(&args).unwrap();
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
                        .get_opt("maths-socket")
                        .await
                        .ok()?
                        .is_none()
                    && Api::<Service>::namespaced(client.clone(), ns)
                        .get_opt("maths-socket-headless")
                        .await
                        .ok()?
                        .is_none()
                    && Api::<ConfigMap>::namespaced(client.clone(), ns)
                        .get_opt("maths-socket")
                        .await
                        .ok()?
                        .is_none()
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
                    && Api::<Service>::namespaced(client.clone(), ns)
                        .get_opt("maths-redis")
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
        "ConfigMap",
        &ns.api::<ConfigMap>().get(&socket).await.unwrap().metadata,
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

/// Once a class is reconciled and its pods are Ready, reconciling again changes nothing on the
/// server: every resourceVersion stays (generation and the operator's own managed fields, for
/// objects whose status Kubernetes keeps writing), and no status or Event is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_with_nothing_changed_writes_nothing() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-noop").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;
    let lc = live_class("quiet", Utc::now() + TimeDelta::days(2), json!({}));
    create(&ns, &lc).await;
    status_where(&ns, "quiet", "Ready", Duration::from_secs(30), |lc| {
        lc.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    operator.stop().await.unwrap();

    let before = resource_versions(&ns, "quiet").await;
    let metrics = Arc::new(Metrics::default());
    let recorder = Recorder::new(
        ns.client(),
        Reporter {
            controller: "liveclass-operator".into(),
            instance: None,
        },
    );
    let ctx = Arc::new(controller::Context::new(
        ns.client(),
        recorder,
        metrics.clone(),
        Config::for_namespace(ns.name()),
    ));
    for _ in 0..2 {
        let lc = ns.api::<LiveClass>().get("quiet").await.unwrap();
        controller::reconcile(Arc::new(lc), ctx.clone())
            .await
            .unwrap();
    }
    let after = resource_versions(&ns, "quiet").await;
    assert_eq!(
        before, after,
        "a reconcile with nothing changed wrote something"
    );
    assert_eq!(metrics.writes(), 0);
    assert_eq!(metrics.reconciles_with("applied"), 2);
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
        lc.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "UnknownTimeZone")
        })
    })
    .await;
    let condition = &lc.status.unwrap().conditions[0];
    assert!(
        condition.message.contains("Mars/Olympus_Mons"),
        "{}",
        condition.message
    );

    let events: Api<Event> = ns.api();
    wait::until(
        "the Warning Event",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("UnknownTimeZone"))
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    // An observation window (not synchronisation): a hot loop would reconcile hundreds of
    // times in it; the operator reconciles the object once, plus once for its own status write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconciles = operator.metrics.reconciles_with("invalid");
    assert!(
        reconciles <= 3,
        "{reconciles} reconciles of an invalid object"
    );
    let list = events.list(&ListParams::default()).await.unwrap();
    let warnings: Vec<_> = list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("UnknownTimeZone"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
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

/// Two operators: only the Lease holder reconciles; killing it hands over within the lease
/// duration, and the new leader carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_a_killed_leader_hands_over() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-lease").await.unwrap();
    let lease_duration = Duration::from_secs(4);
    let elect = |id: &'static str| {
        move |c: &mut Config| {
            c.leader_elect = true;
            c.identity = Some(id.to_owned());
            c.lease_duration = lease_duration;
            c.lease_renew = Duration::from_secs(1);
        }
    };
    let a = start_operator(&ns, elect("operator-a")).await;
    let leases: Api<Lease> = ns.api();
    let holder = |leases: Api<Lease>| async move {
        leases
            .get_opt("liveclass-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    wait::until(
        "a to lead",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let leases = leases.clone();
            async move { (holder(leases).await.as_deref() == Some("operator-a")).then_some(()) }
        },
    )
    .await
    .unwrap();
    let b = start_operator(&ns, elect("operator-b")).await;

    create(
        &ns,
        &live_class("chem", Utc::now() - TimeDelta::seconds(5), json!({})),
    )
    .await;
    deployment_where(
        &ns,
        "chem-socket",
        "2 replicas",
        Duration::from_secs(20),
        |d| replicas(d) == Some(2),
    )
    .await;
    let a_metrics = a.metrics.clone();
    wait::until(
        "a's reconcile to finish",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let m = a_metrics.clone();
            async move { (m.reconciles() > 0).then_some(()) }
        },
    )
    .await
    .unwrap();
    assert_eq!(b.metrics.reconciles(), 0, "the standby reconciled");
    assert!(!b.metrics.leading());

    // Kill the leader without releasing the Lease; b takes over within the lease time.
    let killed = Instant::now();
    a.kill();
    wait::until(
        "b to lead",
        lease_duration * 3,
        Duration::from_millis(50),
        || {
            let leases = leases.clone();
            async move { (holder(leases).await.as_deref() == Some("operator-b")).then_some(()) }
        },
    )
    .await
    .unwrap();
    let handover = killed.elapsed();
    assert!(
        handover <= lease_duration + Duration::from_secs(2),
        "handover took {handover:?}"
    );
    eprintln!("leader handover after kill: {handover:?}");

    ns.api::<LiveClass>()
        .patch(
            "chem",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "expectedAttendance": 300 } })),
        )
        .await
        .unwrap();
    deployment_where(
        &ns,
        "chem-socket",
        "3 replicas from b",
        Duration::from_secs(10),
        |d| replicas(d) == Some(3),
    )
    .await;
    assert!(b.metrics.reconciles() > 0 || b.metrics.leading());
    b.stop().await.unwrap();
    // A clean stop releases the Lease.
    assert_eq!(holder(leases.clone()).await, None);
}

/// The operator's own endpoints answer: liveness, readiness and Prometheus metrics.
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
    let get = |path: &str| {
        let url = format!("http://{}{path}", operator.addr);
        async move {
            let mut stream = tokio::net::TcpStream::connect(
                url.trim_start_matches("http://").split('/').next().unwrap(),
            )
            .await
            .unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let path = format!(
                "/{}",
                url.trim_start_matches("http://").split_once('/').unwrap().1
            );
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
    for name in [
        "liveclass_operator_reconciles_total",
        "liveclass_operator_reconcile_duration_seconds",
        "liveclass_operator_classes{phase=\"Scheduled\"} 1",
        "liveclass_operator_leader 1",
    ] {
        assert!(metrics.contains(name), "{name} missing in\n{metrics}");
    }
    operator.stop().await.unwrap();
}

/// With `autoscaling`, the operator creates the HPA with `minReplicas` from the plan and leaves
/// the Deployment's replicas to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_autoscaling_the_hpa_minimum_follows_the_plan() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-hpa").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;
    let lc = live_class(
        "art",
        Utc::now() - TimeDelta::seconds(5),
        json!({ "autoscaling": { "targetCpuUtilization": 60 } }),
    );
    create(&ns, &lc).await;
    let hpas: Api<HorizontalPodAutoscaler> = ns.api();
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
        "the HPA at 2",
        Duration::from_secs(20),
        Duration::from_millis(100),
        min_replicas(2),
    )
    .await
    .unwrap();
    assert_eq!(hpa.spec.scale_target_ref.name, "art-socket");
    let d = ns.api::<Deployment>().get("art-socket").await.unwrap();
    let managed = d.metadata.managed_fields.unwrap_or_default();
    let ours = managed
        .iter()
        .find(|m| m.manager.as_deref() == Some("liveclass-operator"))
        .and_then(|m| m.fields_v1.as_ref())
        .map(|f| f.0.to_string())
        .unwrap_or_default();
    assert!(
        !ours.contains("f:replicas"),
        "the operator owns replicas: {ours}"
    );
    ns.api::<LiveClass>()
        .patch(
            "art",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "expectedAttendance": 400 } })),
        )
        .await
        .unwrap();
    wait::until(
        "the HPA at 4",
        Duration::from_secs(10),
        Duration::from_millis(100),
        min_replicas(4),
    )
    .await
    .unwrap();
    operator.stop().await.unwrap();
}
