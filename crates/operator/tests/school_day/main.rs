//! `bench/school-day` (ignored; the script runs it in a release build): a school's day in
//! compressed time on the local control plane. Six KWOK nodes whose pods turn Ready 5–20 s
//! after scheduling, two of them slow (30–60 s), as image pulls and start-ups vary. The nodes
//! have a real node's size (32 CPUs, 128 GiB, 110 pods) and the socket pods their requests, so
//! the scheduler spreads pods over them as it would on a real cluster: on the testkit's default
//! nodes, which it cannot tell apart, every pod went to the first node (see
//! [`NodeCapacity`]) and the slow nodes got pods only once it was full. The bench records where
//! the socket pods landed (`socket_pods_per_node`). The same
//! timetable (see [`timetable`]) in two namespaces, one with `learnPodStartup` on and one with
//! it off, each reconciled by its own operator, so both meet the same nodes at the same times.
//! The morning (the first four minutes) has no class: the idle pods of half the classes start
//! then, which is what the learning operator learns from, as it would from earlier days.
//!
//! Everything judged is watched by the bench itself (the Deployments' ready replicas, the
//! classes' status), not taken from the operator's own claims; see [`measure`]. Writes
//! `BENCH_OUT` (JSON, per class and per namespace) and `BENCH_CHART` (SVG, see [`chart`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chart;
mod measure;
mod timetable;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt as _;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use liveclass_api::{LiveClass, time::from_k8s};
use liveclass_operator::{Config, Operator};
use liveclass_testkit::{
    LocalCluster, RedisServer,
    cluster::{ClusterOptions, NodeCapacity},
};
use measure::{DeploySample, Milestones, StatusSample};
use serde_json::{Value, json};
use timetable::{Entry, Twist};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the bench saw of one class in one namespace.
#[derive(Default)]
struct Watched {
    deploys: Vec<DeploySample>,
    statuses: Vec<StatusSample>,
    /// Every plan the status gave before its Ready-by instant, with when it was seen.
    milestones: Vec<(DateTime<Utc>, Milestones)>,
    /// The last start-up estimate the status showed.
    pod_startup: Option<liveclass_api::types::PodStartupStatus>,
}

impl Watched {
    /// The plan for the occurrence starting at `start`, as it stood at its Ready-by instant.
    fn plan_for(&self, start: DateTime<Utc>) -> Option<Milestones> {
        self.milestones
            .iter()
            .rev()
            .find(|(_, m)| m.start == start)
            .map(|(_, m)| *m)
    }
}

type Seen = Arc<Mutex<BTreeMap<(String, String), Watched>>>;
/// Per namespace, the node each socket pod (by uid) was scheduled to.
type Placed = Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>>;

/// The fake nodes the slow start-ups are on.
const SLOW_NODES: std::ops::Range<usize> = 4..6;

/// Records the node of every socket pod scheduled in `ns`.
fn watch_placement(client: &Client, ns: &str, placed: &Placed) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let config = watcher::Config::default().labels("app.kubernetes.io/name=liveclass-socket");
    let (placed, ns) = (placed.clone(), ns.to_owned());
    tokio::spawn(
        watcher(pods, config)
            .default_backoff()
            .applied_objects()
            .for_each(move |pod| {
                if let Ok(pod) = pod
                    && let (Some(uid), Some(node)) = (
                        pod.metadata.uid.clone(),
                        pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                    )
                {
                    placed
                        .lock()
                        .unwrap()
                        .entry(ns.clone())
                        .or_default()
                        .insert(uid, node);
                }
                async {}
            }),
    )
}

/// Records every change of the socket Deployments and the classes in `ns`.
fn watch(client: &Client, ns: &str, seen: &Seen) -> Vec<tokio::task::JoinHandle<()>> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let classes: Api<LiveClass> = Api::namespaced(client.clone(), ns);
    let (d_seen, c_seen) = (seen.clone(), seen.clone());
    let (d_ns, c_ns) = (ns.to_owned(), ns.to_owned());
    let deploys = watcher(deployments, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .for_each(move |d| {
            if let Ok(d) = d
                && let Some(class) = d.name_any().strip_suffix("-socket")
            {
                let sample = DeploySample {
                    t: Utc::now(),
                    replicas: d.spec.replicas.unwrap_or(0) as u32,
                    ready: d
                        .status
                        .as_ref()
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0) as u32,
                };
                let mut seen = d_seen.lock().unwrap();
                let w = seen.entry((d_ns.clone(), class.to_owned())).or_default();
                if w.deploys
                    .last()
                    .is_none_or(|l| (l.replicas, l.ready) != (sample.replicas, sample.ready))
                {
                    w.deploys.push(sample);
                }
            }
            async {}
        });
    let statuses = watcher(classes, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .for_each(move |lc| {
            if let Ok(lc) = lc
                && let Some(status) = lc.status.clone()
            {
                let now = Utc::now();
                let sample = StatusSample {
                    t: now,
                    planned: status.planned_replicas.unwrap_or(0),
                    needed: status.needed_replicas.unwrap_or(0) as u32,
                };
                let plan = status.plan.as_ref();
                let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                    t.and_then(from_k8s)
                };
                let milestones = plan.and_then(|p| {
                    Some(Milestones {
                        scale_up: time(p.scale_up_time.as_ref())?,
                        ready_by: time(p.ready_by_time.as_ref())?,
                        start: time(p.start_time.as_ref())?,
                        drain_from: time(p.drain_time.as_ref())?,
                        class_replicas: p.class_replicas?,
                    })
                });
                let mut seen = c_seen.lock().unwrap();
                let w = seen.entry((c_ns.clone(), lc.name_any())).or_default();
                if w.statuses
                    .last()
                    .is_none_or(|l| (l.planned, l.needed) != (sample.planned, sample.needed))
                {
                    w.statuses.push(sample);
                }
                // The plan as it stood at Ready-by is what capacity is judged against.
                if let Some(m) = milestones
                    && now <= m.ready_by + TimeDelta::seconds(1)
                    && w.milestones.last().is_none_or(|(_, l)| *l != m)
                {
                    w.milestones.push((now, m));
                }
                if status.pod_startup.is_some() {
                    w.pod_startup = status.pod_startup.clone();
                }
            }
            async {}
        });
    vec![tokio::spawn(deploys), tokio::spawn(statuses)]
}

/// Connects `n` students to the class in its Redis, as its socket pods would report them.
fn connect(redis: &RedisServer, class_id: &str, n: u64) {
    let key = format!("lc:{{{class_id}}}:where");
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut args = vec!["HSET".to_owned(), key.clone()];
        for u in chunk {
            args.push(format!("student-{u}"));
            args.push("pod".to_owned());
        }
        redis
            .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap();
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/school-day"]
async fn school_day() {
    let n: usize = env_or("BENCH_CLASSES", 40);
    let seed: u64 = env_or("BENCH_SEED", 1);
    let first: i64 = env_or("BENCH_FIRST_START_SECONDS", 240);
    let spread: i64 = env_or("BENCH_SPREAD_SECONDS", 240);
    let out: String = env_or("BENCH_OUT", "/tmp/school-day.json".to_owned());
    let chart_path: String = env_or("BENCH_CHART", "/tmp/school-day.svg".to_owned());
    let wall = Instant::now();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();

    let cluster = LocalCluster::start(
        ClusterOptions::with_pods(6)
            .node_capacity(NodeCapacity {
                cpu: "32".to_owned(),
                memory: "128Gi".to_owned(),
                pods: 110,
            })
            .pod_start_delay(0..4, Duration::from_secs(5), Duration::from_secs(20))
            .pod_start_delay(SLOW_NODES, Duration::from_secs(30), Duration::from_secs(60)),
    )
    .await
    .unwrap();
    cluster.install_crd(&LiveClass::crd()).await.unwrap();
    let client = cluster.client().await.unwrap();
    let redis = RedisServer::start().unwrap();
    let namespaces = [
        (cluster.namespace("school-learning").await.unwrap(), true),
        (cluster.namespace("school-fixed").await.unwrap(), false),
    ];
    let seen: Seen = Arc::default();
    let placed: Placed = Arc::default();
    let mut watchers = Vec::new();
    let mut operators = Vec::new();
    for (ns, _) in &namespaces {
        watchers.extend(watch(&client, ns.name(), &seen));
        watchers.push(watch_placement(&client, ns.name(), &placed));
        let mut config = Config::for_namespace(ns.name());
        config.redis_override = Some(redis.url());
        operators.push(Operator::start(config, ns.client()).await.unwrap());
    }

    // The day: both namespaces get the same classes at the same instants.
    let day_start = Utc::now();
    let day = timetable::day(day_start, n, seed, first, spread);
    for (ns, learn) in &namespaces {
        let api: Api<LiveClass> = ns.api();
        for entry in &day {
            let lc: LiveClass =
                serde_json::from_value(timetable::live_class(entry, *learn)).unwrap();
            api.create(&PostParams::default(), &lc).await.unwrap();
        }
    }
    let created_secs = (Utc::now() - day_start).num_milliseconds() as f64 / 1000.0;

    // Its twists, at their times, then wait for the last drain to finish.
    let mut twists: Vec<(DateTime<Utc>, &Entry, Twist)> = day
        .iter()
        .filter_map(|e| {
            let twist = e.twist?;
            let at = match twist {
                Twist::Raised(_) => {
                    e.start - TimeDelta::seconds(e.warmup_secs) + TimeDelta::seconds(5)
                }
                Twist::MoreThanExpected(_) => e.start + TimeDelta::seconds(20),
            };
            Some((at, e, twist))
        })
        .collect();
    twists.sort_by_key(|(at, _, _)| *at);
    for (at, entry, twist) in &twists {
        if let Ok(wait) = (*at - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
        for (ns, _) in &namespaces {
            match twist {
                Twist::Raised(to) => {
                    ns.api::<LiveClass>()
                        .patch(
                            &entry.name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({ "spec": { "expectedAttendance": to } })),
                        )
                        .await
                        .unwrap();
                }
                Twist::MoreThanExpected(students) => {
                    connect(&redis, &format!("{}/{}", ns.name(), entry.name), *students);
                }
            }
        }
    }
    // The last drain: 20 s cool-down, then steps of 50% every 10 s from at most 20 pods.
    let last_end = day
        .iter()
        .map(|e| e.start + TimeDelta::seconds(e.duration_secs))
        .max()
        .unwrap();
    let day_end = last_end + TimeDelta::seconds(20 + 60);
    if let Ok(wait) = (day_end - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let ended = Utc::now();

    // Judge.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut per_namespace = Vec::new();
    let mut classes = Vec::new();
    let mut rows = Vec::new();
    for ((ns, learn), operator) in namespaces.iter().zip(&operators) {
        let mut on_time = 0;
        let mut late = Vec::new();
        let mut leads = Vec::new();
        let (mut over, mut under) = (0.0, 0.0);
        let (mut largest, mut violations) = (0, 0);
        for entry in &day {
            let w = seen.get(&(ns.name().to_owned(), entry.name.clone()));
            let Some(w) = w else { continue };
            let Some(m) = w.plan_for(entry.start) else {
                classes.push(
                    json!({ "namespace": ns.name(), "class": entry.name, "error": "no plan seen" }),
                );
                continue;
            };
            let r = measure::judge(
                &m,
                &w.deploys,
                &w.statuses,
                entry.idle_replicas,
                timetable::STEP_PERCENT,
                day_start,
                ended,
            );
            on_time += usize::from(r.on_time);
            if !r.on_time {
                late.push(entry.name.clone());
            }
            leads.extend(r.lead_seconds);
            over += r.over_provisioned_pod_seconds;
            under += r.under_provisioned_pod_seconds;
            largest = largest.max(r.largest_scale_down);
            violations += r.step_violations;
            let secs = |t: DateTime<Utc>| (t - day_start).num_milliseconds() as f64 / 1000.0;
            let mut class = json!({
                "namespace": ns.name(),
                "learn_pod_startup": learn,
                "class": entry.name,
                "schedule": entry.zone.map_or_else(|| json!("one-off"), |z| json!({ "cron": timetable::cron_at(entry.start, z), "timeZone": z })),
                "expected_attendance": entry.expected,
                "idle_replicas": entry.idle_replicas,
                "warmup_seconds": entry.warmup_secs,
                "duration_seconds": entry.duration_secs,
                "twist": entry.twist.map(|t| format!("{t:?}")),
                "scale_up_s": secs(m.scale_up),
                "ready_by_s": secs(m.ready_by),
                "start_s": secs(m.start),
                "drain_from_s": secs(m.drain_from),
                "class_replicas": m.class_replicas,
                "plans_seen": w.milestones.len(),
                "pod_startup_status": w.pod_startup,
            });
            // Where a late class's time went: the raise the bench saw against the planned
            // instant, and from that raise to the planned capacity Ready.
            let raised = w
                .deploys
                .iter()
                .find(|d| {
                    d.replicas >= m.class_replicas && d.t >= m.scale_up - TimeDelta::seconds(120)
                })
                .map(|d| d.t);
            let ready = w
                .deploys
                .iter()
                .find(|d| raised.is_some_and(|r| d.t >= r) && d.ready >= m.class_replicas)
                .map(|d| d.t);
            class["planned_lead_seconds"] =
                json!((m.ready_by - m.scale_up).num_milliseconds() as f64 / 1000.0);
            class["raised_s"] = json!(raised.map(secs));
            class["raised_after_scale_up_seconds"] =
                json!(raised.map(|r| (r - m.scale_up).num_milliseconds() as f64 / 1000.0));
            class["raise_to_ready_seconds"] = json!(
                raised
                    .zip(ready)
                    .map(|(r, t)| (t - r).num_milliseconds() as f64 / 1000.0)
            );
            let result = serde_json::to_value(&r).unwrap();
            merge(&mut class, result);
            // The raised class: its raised capacity is judged against the start.
            if let Some(Twist::Raised(to)) = entry.twist {
                let need = to
                    .saturating_mul(6)
                    .div_ceil(5 * timetable::CONNECTIONS_PER_POD);
                let at = w
                    .deploys
                    .iter()
                    .find(|d| d.ready >= need)
                    .map(|d| secs(d.t));
                class["raised_to"] = json!(to);
                class["raised_replicas"] = json!(need);
                class["raised_ready_s"] = json!(at);
                class["raised_ready_before_start"] = json!(at.is_some_and(|a| a <= secs(m.start)));
            }
            if let Some(Twist::MoreThanExpected(students)) = entry.twist {
                let need = (students as u32)
                    .saturating_mul(6)
                    .div_ceil(5 * timetable::CONNECTIONS_PER_POD);
                let surge = secs(entry.start) + 20.0;
                let at = w
                    .deploys
                    .iter()
                    .find(|d| d.ready >= need)
                    .map(|d| secs(d.t));
                class["surge_students"] = json!(students);
                class["surge_replicas"] = json!(need);
                class["surge_ready_after_s"] = json!(at.map(|a| a - surge));
            }
            classes.push(class);
        }
        let judged = day.len();
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for node in placed
            .lock()
            .unwrap()
            .get(ns.name())
            .into_iter()
            .flat_map(BTreeMap::values)
        {
            *per_node.entry(node.clone()).or_default() += 1;
        }
        let placed_total: usize = per_node.values().sum();
        let on_slow: usize = SLOW_NODES
            .map(|i| {
                per_node
                    .get(&format!("kwok-node-{i}"))
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        per_namespace.push(json!({
            "socket_pods_per_node": per_node,
            "socket_pods_on_slow_nodes_percent": 100.0 * on_slow as f64 / placed_total.max(1) as f64,
            "namespace": ns.name(),
            "learn_pod_startup": learn,
            "classes": judged,
            "on_time": on_time,
            "on_time_percent": 100.0 * on_time as f64 / judged.max(1) as f64,
            "late_classes": late,
            "lead_seconds_median": median(leads.clone()),
            "lead_seconds_min": leads.iter().copied().reduce(f64::min),
            "over_provisioned_pod_seconds": over,
            "under_provisioned_pod_seconds": under,
            "largest_scale_down": largest,
            "step_violations": violations,
            "reconciles": operator.metrics.reconciles(),
            "api_writes": operator.metrics.writes(),
            "reconciles_per_class": operator.metrics.reconciles() as f64 / judged.max(1) as f64,
            "api_writes_per_class": operator.metrics.writes() as f64 / judged.max(1) as f64,
        }));
    }
    // The chart: per class, learning on at the left, off at the right.
    let empty = Watched::default();
    let get = |ns: &str, class: &str| {
        seen.get(&(ns.to_owned(), class.to_owned()))
            .unwrap_or(&empty)
    };
    for entry in &day {
        let panel = |i: usize| {
            let (ns, learn) = &namespaces[i];
            let w = get(ns.name(), &entry.name);
            chart::Panel {
                title: format!(
                    "{} · {} expected · learning {}",
                    entry.name,
                    entry.expected,
                    if *learn { "on" } else { "off" }
                ),
                milestones: w.plan_for(entry.start),
                deploys: &w.deploys,
                statuses: &w.statuses,
            }
        };
        rows.push([panel(0), panel(1)]);
    }
    let caption = format!(
        "school-day: {} classes · needed (grey), planned (blue), Ready (green) replicas; start − warmup (orange), start (red); seconds since the day began",
        day.len()
    );
    chart::draw(
        std::path::Path::new(&chart_path),
        day_start,
        ended,
        &caption,
        &rows,
    )
    .unwrap();
    drop(rows);

    // The figures the runs are summarised by, flat: `<learning|fixed>_<figure>`.
    let mut figures = serde_json::Map::new();
    for ns in &per_namespace {
        let prefix = if ns["learn_pod_startup"] == json!(true) {
            "learning"
        } else {
            "fixed"
        };
        for figure in [
            "on_time_percent",
            "socket_pods_on_slow_nodes_percent",
            "lead_seconds_median",
            "lead_seconds_min",
            "over_provisioned_pod_seconds",
            "under_provisioned_pod_seconds",
            "largest_scale_down",
            "step_violations",
            "api_writes_per_class",
            "reconciles_per_class",
        ] {
            figures.insert(format!("{prefix}_{figure}"), ns[figure].clone());
        }
    }
    let mut result = json!({
        "scenario": "school-day",
        "cluster": format!(
            "local control plane, 6 KWOK nodes of 32 CPUs, 128 GiB and 110 pods: pods Ready 5–20 s after scheduling on 4, 30–60 s on 2; socket pods request {} CPU and {}",
            timetable::SOCKET_CPU_REQUEST,
            timetable::SOCKET_MEMORY_REQUEST
        ),
        "timetable": {
            "classes_per_namespace": day.len(),
            "seed": seed,
            "first_start_seconds": first,
            "spread_seconds": spread,
            "pod_startup": timetable::POD_STARTUP,
            "connections_per_pod": timetable::CONNECTIONS_PER_POD,
            "headroom": timetable::HEADROOM,
            "scale_down": { "step_percent": timetable::STEP_PERCENT, "interval_seconds": 10 },
            "zones": timetable::ZONES,
        },
        "created_seconds": created_secs,
        "day_seconds": (ended - day_start).num_milliseconds() as f64 / 1000.0,
        "wall_seconds": wall.elapsed().as_secs_f64(),
        "namespaces": per_namespace,
        "classes": classes,
        "chart": chart_path,
        "recorded_at": Utc::now().to_rfc3339(),
    });
    merge(&mut result, Value::Object(figures));
    let text = serde_json::to_string_pretty(&result).unwrap() + "\n";
    std::fs::write(&out, &text).unwrap();
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&result["namespaces"]).unwrap()
    );
    for w in watchers {
        w.abort();
    }
    for operator in operators {
        operator.stop().await.unwrap();
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}
