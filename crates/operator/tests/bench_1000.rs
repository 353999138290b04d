//! Benchmark (ignored by default; run by `bench/operator-1000.sh`): 1,000 LiveClasses in a local
//! API-only control plane, reconciled by the `liveclass-operator` binary as its own process.
//! Records the time until all are reconciled, the operator's RSS and the API requests per
//! reconcile to `bench/results/operator-1000.json`. Figures are recorded, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use liveclass_api::LiveClass;
use liveclass_testkit::{LocalCluster, cluster::ClusterOptions, wait};
use serde_json::json;

fn classes() -> usize {
    std::env::var("BENCH_CLASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn scrape(port: u16, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/operator-1000.sh"]
async fn thousand_classes() {
    let n = classes();
    let cluster = LocalCluster::start(ClusterOptions::api_only())
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = LiveClass::crd();
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("bench").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let ns = cluster.namespace("bench").await.unwrap();
    let api: Api<LiveClass> = ns.api();
    wait::until(
        "the CRD to serve",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let api = api.clone();
            async move {
                api.list(&ListParams::default().limit(1))
                    .await
                    .ok()
                    .map(|_| ())
            }
        },
    )
    .await
    .unwrap();
    let created = Instant::now();
    for i in 0..n {
        let lc: LiveClass = serde_json::from_value(json!({
            "apiVersion": "liveclass.dev/v1alpha1",
            "kind": "LiveClass",
            "metadata": { "name": format!("class-{i:04}") },
            "spec": {
                "schedule": { "start": "2027-03-01T14:00:00Z", "duration": "90m" },
                "expectedAttendance": 100 + i,
                "socket": { "image": "liveclass-socket:bench" },
            },
        }))
        .unwrap();
        api.create(&PostParams::default(), &lc).await.unwrap();
    }
    let create_secs = created.elapsed().as_secs_f64();

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_liveclass-operator"))
        .args(["run", "--leader-elect", "false", "--namespace", ns.name()])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = operator.id();
    let mut peak_during = 0;
    let all = wait::until(
        "every class reconciled",
        Duration::from_secs(600),
        Duration::from_millis(250),
        || {
            let api = api.clone();
            peak_during = peak_during.max(rss_kib(pid, "VmRSS:").unwrap_or(0));
            async move {
                let list = api.list(&ListParams::default()).await.ok()?;
                let done = list
                    .items
                    .iter()
                    .filter(|lc| {
                        lc.status
                            .as_ref()
                            .and_then(|s| s.observed_generation)
                            .is_some()
                    })
                    .count();
                (done == n).then(|| started.elapsed())
            }
        },
    )
    .await
    .unwrap();
    let reconciles = scrape(port, "liveclass_operator_reconciles_total")
        .await
        .unwrap_or(0.0);
    let requests = scrape(port, "liveclass_operator_api_requests_total")
        .await
        .unwrap_or(0.0);
    let rss_after = rss_kib(pid, "VmRSS:").unwrap_or(0);
    let hwm = rss_kib(pid, "VmHWM:").unwrap_or(0);
    let _ = operator.kill();
    let _ = operator.wait();

    let result = json!({
        "scenario": "operator-1000",
        "classes": n,
        "cluster": "local API-only control plane (etcd + kube-apiserver on loopback), no pods",
        "build": "debug build of liveclass-operator (dependencies at opt-level 2)",
        "create_seconds": create_secs,
        "all_reconciled_seconds": all.as_secs_f64(),
        "reconciles": reconciles,
        "api_requests_by_reconciles": requests,
        "api_requests_per_reconcile": if reconciles > 0.0 { requests / reconciles } else { 0.0 },
        "operator_rss_kib_after": rss_after,
        "operator_rss_kib_peak": hwm.max(peak_during),
        "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "recorded_at": chrono::Utc::now().to_rfc3339(),
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench/results/operator-1000.json");
    std::fs::write(&out, serde_json::to_string_pretty(&result).unwrap() + "\n").unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&result).unwrap());
}
