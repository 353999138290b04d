//! What the cluster tests share: the cluster with the CRD, LiveClasses to create, the operator
//! to start, waits on objects, and the socket pods' Redis keys.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use liveclass_api::{LiveClass, Phase};
use liveclass_operator::{Config, Operator};
use liveclass_testkit::{LocalCluster, RedisServer, cluster::TestNamespace, wait};
use serde_json::json;
use tokio::sync::OnceCell;

static CRD: OnceCell<()> = OnceCell::const_new();

pub const POLL: Duration = Duration::from_millis(100);

/// The shared cluster with pods, with the LiveClass CRD installed and Established.
pub async fn cluster() -> &'static LocalCluster {
    let cluster = LocalCluster::shared_with_pods().await.unwrap();
    CRD.get_or_init(|| install_crd(cluster)).await;
    init_tracing();
    cluster
}

/// Applies the LiveClass CRD to `cluster` and waits until it is Established.
pub async fn install_crd(cluster: &LocalCluster) {
    cluster.install_crd(&LiveClass::crd()).await.unwrap();
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

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.trunc_subsecs(0)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A LiveClass named `name` with a one-off start (1 h long, 100 students a pod, headroom 1,
/// a 15 s warm-up, 5 s cool-down, 50% drain steps every 3 s); `extra` is merged into `spec`.
pub fn live_class(name: &str, start: DateTime<Utc>, extra: serde_json::Value) -> LiveClass {
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

pub fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

pub async fn create(ns: &TestNamespace, lc: &LiveClass) -> LiveClass {
    ns.api::<LiveClass>()
        .create(&PostParams::default(), lc)
        .await
        .unwrap()
}

/// Merges `patch` into the class's spec.
pub async fn patch_spec(ns: &TestNamespace, name: &str, patch: serde_json::Value) {
    ns.api::<LiveClass>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": patch })),
        )
        .await
        .unwrap();
}

pub async fn start_operator(ns: &TestNamespace, tweak: impl FnOnce(&mut Config)) -> Operator {
    let mut config = Config::for_namespace(ns.name());
    tweak(&mut config);
    Operator::start(config, ns.client()).await.unwrap()
}

/// An operator reading attendance from `redis` every second.
pub async fn start_operator_with(ns: &TestNamespace, redis: &RedisServer) -> Operator {
    let url = redis.url();
    start_operator(ns, move |c| {
        c.redis_override = Some(url);
        c.attendance_interval = Duration::from_secs(1);
    })
    .await
}

/// Waits until the Deployment `name` exists and `check` holds for it.
pub async fn deployment_where(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Deployment) -> bool,
) -> Deployment {
    let api = ns.api::<Deployment>();
    wait::until(what, timeout, POLL, || {
        let api = api.clone();
        let found = async move { api.get_opt(name).await.ok().flatten() };
        let check = &check;
        async move { found.await.filter(|d| check(d)) }
    })
    .await
    .unwrap()
}

pub fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.replicas
}

pub fn ready(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

pub async fn status_where(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&LiveClass) -> bool,
) -> LiveClass {
    let api = ns.api::<LiveClass>();
    let found = wait::until(what, timeout, POLL, || {
        let api = api.clone();
        let check = &check;
        async move { api.get(name).await.ok().filter(|lc| check(lc)) }
    })
    .await;
    match found {
        Ok(lc) => lc,
        Err(error) => match api.get(name).await {
            Ok(lc) => panic!(
                "{name}: {error}; at resourceVersion {:?} its status: {:#?}",
                lc.metadata.resource_version, lc.status
            ),
            Err(get) => panic!("{name}: {error}; and reading it failed: {get}"),
        },
    }
}

pub fn phase(lc: &LiveClass) -> Option<Phase> {
    lc.status.as_ref().and_then(|s| s.phase)
}

pub fn condition<'a>(lc: &'a LiveClass, type_: &str) -> Option<&'a Condition> {
    lc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn is_true(lc: &LiveClass, type_: &str) -> bool {
    condition(lc, type_).is_some_and(|c| c.status == "True")
}

/// Waits for an Event with `reason` about the object `name`, and returns every such Event.
pub async fn events_with(ns: &TestNamespace, name: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = ns.api();
    wait::until(
        &format!("a {reason} Event about {name}"),
        Duration::from_secs(15),
        POLL,
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                let found: Vec<_> = list
                    .items
                    .into_iter()
                    .filter(|e| {
                        e.reason.as_deref() == Some(reason)
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    })
                    .collect();
                (!found.is_empty()).then_some(found)
            }
        },
    )
    .await
    .unwrap()
}

/// The class's socket pods that are not being deleted, by name.
pub async fn socket_pods(ns: &TestNamespace, class: &str) -> Vec<String> {
    let pods: Api<Pod> = ns.api();
    let list = pods
        .list(&ListParams::default().labels(&format!(
            "liveclass.dev/class={class},app.kubernetes.io/name=liveclass-socket"
        )))
        .await
        .unwrap();
    let mut names: Vec<_> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    names.sort();
    names
}

/// The class id the socket pods of `class` in `ns` run with.
pub fn class_id(ns: &TestNamespace, class: &str) -> String {
    format!("{}/{class}", ns.name())
}

/// Writes `n` connected users into the class's who-is-where hash, as socket pods would.
pub fn connect_students(redis: &RedisServer, class_id: &str, n: usize) {
    let key = format!("lc:{{{class_id}}}:where");
    redis.command(&["DEL", &key]).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut args = vec!["HSET".to_owned(), key.clone()];
        for i in chunk {
            args.push(format!("student-{i}"));
            args.push("pod-a#1".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        redis.command(&args).unwrap();
    }
}

/// Writes each pod's open connections into the class's per-pod hash, as socket pods would.
pub fn report_pods(redis: &RedisServer, class_id: &str, counts: &[(String, u64)]) {
    let key = format!("lc:{{{class_id}}}:pods");
    redis.command(&["DEL", &key]).unwrap();
    let mut args = vec!["HSET".to_owned(), key];
    for (pod, n) in counts {
        args.push(pod.clone());
        args.push(n.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    redis.command(&args).unwrap();
}
