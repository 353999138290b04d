//! The local control plane, for real: upstream etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and KWOK processes (built by `scripts/k8s-binaries`), no mocks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, ResourceExt};
use liveclass_testkit::LocalCluster;
use liveclass_testkit::cluster::ClusterOptions;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `check` until it returns `Some`, panicking with `what` and the last observation after
/// `timeout`.
async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn pod_running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .as_ref()
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until exactly `want` pods match `selector`, all Running and Ready on fake nodes.
async fn wait_for_ready_pods(pods: &Api<Pod>, selector: &str, want: usize, nodes: &[String]) {
    let what = format!("{want} Running+Ready pods matching {selector}");
    wait_until(&what, TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| e.to_string())?;
        let summary: Vec<String> = list
            .items
            .iter()
            .map(|p| {
                format!(
                    "{} phase={:?} node={:?} ready={} deleting={}",
                    p.name_any(),
                    p.status.as_ref().and_then(|s| s.phase.clone()),
                    p.spec.as_ref().and_then(|s| s.node_name.clone()),
                    pod_running_and_ready(p),
                    p.metadata.deletion_timestamp.is_some()
                )
            })
            .collect();
        let good = list.items.iter().filter(|p| {
            pod_running_and_ready(p)
                && p.metadata.deletion_timestamp.is_none()
                && p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some_and(|n| nodes.contains(n))
        });
        if list.items.len() == want && good.count() == want {
            Ok(())
        } else {
            Err(format!("{summary:?}"))
        }
    })
    .await;
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                // Never pulled: KWOK plays the kubelet and only writes pod status.
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] },
            },
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_becomes_ready_pods_scales_and_is_garbage_collected() {
    let cluster = LocalCluster::shared_with_pods().await.unwrap();
    assert_eq!(cluster.nodes().len(), 3);
    let ns = cluster.namespace("deploy").await.unwrap();
    let deployments: Api<Deployment> = ns.api();
    let replicasets: Api<ReplicaSet> = ns.api();
    let pods: Api<Pod> = ns.api();

    deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .unwrap();
    wait_for_ready_pods(&pods, "app=web", 3, cluster.nodes()).await;
    wait_until(
        "the Deployment to report 3 ready replicas",
        TIMEOUT,
        || async {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            if ready == 3 {
                Ok(())
            } else {
                Err(format!("readyReplicas={ready}"))
            }
        },
    )
    .await;

    for replicas in [5, 1] {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        wait_for_ready_pods(
            &pods,
            "app=web",
            usize::try_from(replicas).unwrap(),
            cluster.nodes(),
        )
        .await;
    }

    let owned = replicasets
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert!(!owned.items.is_empty());
    assert!(owned.items.iter().all(|rs| {
        rs.owner_references()
            .iter()
            .any(|o| o.kind == "Deployment" && o.name == "web")
    }));

    deployments
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    wait_until(
        "the garbage collector to remove the ReplicaSets and pods",
        TIMEOUT,
        || async {
            let rs = replicasets
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            let ps = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            if rs.items.is_empty() && ps.items.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} ReplicaSets, {} pods left",
                    rs.items.len(),
                    ps.items.len()
                ))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resource_definition_becomes_served() {
    let cluster = LocalCluster::shared_with_pods().await.unwrap();
    let client = cluster.client().await.unwrap();
    let group = format!("t{:06x}.liveclass.dev", fastrand::u32(..0x100_0000));
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("widgets.{group}") },
        "spec": {
            "group": group,
            "names": { "kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "properties": { "size": { "type": "integer", "minimum": 1 } },
                        "required": ["size"],
                    }},
                }},
            }],
        },
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let name = crd.name_any();
    wait_until("the CRD to be Established", TIMEOUT, || async {
        let crd = crds.get(&name).await.map_err(|e| e.to_string())?;
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            Ok(())
        } else {
            Err(format!("{conditions:?}"))
        }
    })
    .await;

    let ns = cluster.namespace("crd").await.unwrap();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, ns.name(), &resource);
    let mut widget = DynamicObject::new("first", &resource);
    widget.data = serde_json::json!({ "spec": { "size": 3 } });
    // Creating may race the discovery of the new kind for a moment after Established.
    wait_until("a Widget to be created", TIMEOUT, || async {
        widgets
            .create(&PostParams::default(), &widget)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let listed = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        vec!["first".to_string()]
    );
    assert_eq!(listed.items[0].data["spec"]["size"], 3);

    // The schema is enforced by the API server.
    let mut bad = DynamicObject::new("bad", &resource);
    bad.data = serde_json::json!({ "spec": { "size": 0 } });
    let err = widgets
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("size"), "{err}");

    crds.delete(&name, &DeleteParams::default()).await.unwrap();
}

async fn run(program: &Path, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut command = tokio::process::Command::new(program);
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::time::timeout(TIMEOUT, command.output())
        .await
        .expect("command timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{stdout}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn write_chart(dir: &Path) -> PathBuf {
    let chart = dir.join("tiny");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\nappVersion: \"1\"\n",
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), "replicas: 2\ngreeting: hello\n").unwrap();
    std::fs::write(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/deployment.yaml"),
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-tiny
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: { app: {{ .Release.Name }}-tiny }
  template:
    metadata:
      labels: { app: {{ .Release.Name }}-tiny }
    spec:
      containers:
        - name: tiny
          image: registry.invalid/tiny:1
"#,
    )
    .unwrap();
    chart
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_helm_from_the_cache_talk_to_the_cluster() {
    let cluster = LocalCluster::shared_with_pods().await.unwrap();
    let kubectl = cluster.binary("kubectl").unwrap();
    let helm = cluster.binary("helm").unwrap();
    let kubeconfig = cluster.kubeconfig_path();
    let ns = cluster.namespace("tools").await.unwrap();
    let k = ["--kubeconfig", kubeconfig.to_str().unwrap()];

    let version = run(&kubectl, &[&k[..], &["version"]].concat(), &[]).await;
    assert!(version.contains("Server Version"), "{version}");
    let nodes = run(
        &kubectl,
        &[&k[..], &["get", "nodes", "-o", "name"]].concat(),
        &[],
    )
    .await;
    let mut names: Vec<&str> = nodes.lines().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        vec!["node/kwok-node-0", "node/kwok-node-1", "node/kwok-node-2"]
    );

    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-kubectl\ndata:\n  a: b\n",
    )
    .unwrap();
    run(
        &kubectl,
        &[
            &k[..],
            &["apply", "-n", ns.name(), "-f", manifest.to_str().unwrap()],
        ]
        .concat(),
        &[],
    )
    .await;
    let configmaps: Api<ConfigMap> = ns.api();
    let cm = configmaps.get("from-kubectl").await.unwrap();
    assert_eq!(
        cm.data.unwrap_or_default(),
        BTreeMap::from([("a".to_string(), "b".to_string())])
    );

    // Helm keeps its state in the test's temporary folder, not the user's home.
    let chart = write_chart(tmp.path());
    let helm_home = tmp.path().join("helm");
    let env = [
        ("HELM_CACHE_HOME", helm_home.join("cache")),
        ("HELM_CONFIG_HOME", helm_home.join("config")),
        ("HELM_DATA_HOME", helm_home.join("data")),
    ];
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let helm_version = run(&helm, &["version", "--short"], &env).await;
    assert!(helm_version.starts_with("v3."), "{helm_version}");
    let installed = run(
        &helm,
        &[
            &k[..],
            &[
                "install",
                "demo",
                chart.to_str().unwrap(),
                "-n",
                ns.name(),
                "--wait",
                "--timeout",
                "120s",
            ],
        ]
        .concat(),
        &env,
    )
    .await;
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    let listed = run(
        &helm,
        &[&k[..], &["list", "-n", ns.name(), "-o", "json"]].concat(),
        &env,
    )
    .await;
    let releases: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(releases[0]["name"], "demo");
    assert_eq!(releases[0]["status"], "deployed");

    // --wait returned, so the chart's Deployment has its pods Running and Ready.
    let pods: Api<Pod> = ns.api();
    wait_for_ready_pods(&pods, "app=demo-tiny", 2, cluster.nodes()).await;
    let settings = configmaps.get("demo-settings").await.unwrap();
    assert_eq!(
        settings
            .data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("hello")
    );
}

fn process_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) is not running; /proc/<pid>/stat's state field says so.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_only_cluster_tears_down_without_leaving_processes() {
    let cluster = LocalCluster::start(ClusterOptions::api_only())
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(cluster.client().await.unwrap());
    assert!(namespaces.get_opt("kube-system").await.unwrap().is_some());
    assert!(cluster.nodes().is_empty());

    let pids = cluster.server_pids();
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["etcd", "kube-apiserver"]);
    assert!(pids.iter().all(|(_, pid)| process_alive(*pid)));
    let dir = cluster.dir().to_path_buf();

    drop(cluster);
    let left: Vec<_> = pids.iter().filter(|(_, pid)| process_alive(*pid)).collect();
    assert!(left.is_empty(), "still running after drop: {left:?}");
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_exit_when_their_owner_is_killed() {
    // The owner is the `liveclass-cluster` binary (what `scripts/cluster` runs); SIGKILL gives it
    // no chance to clean up, so only the lifeline pipes can stop its servers.
    let state = tempfile::tempdir().unwrap();
    let mut owner = tokio::process::Command::new(env!("CARGO_BIN_EXE_liveclass-cluster"))
        .args(["run", "--api-only", "--state-dir"])
        .arg(state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(state.path().join("owner.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = state.path().join("ready");
    wait_until(
        "liveclass-cluster to be ready",
        Duration::from_secs(180),
        || {
            let exited = owner.try_wait().unwrap();
            let ready = ready.exists();
            async move {
                assert!(
                    exited.is_none(),
                    "liveclass-cluster exited early ({exited:?})"
                );
                if ready {
                    Ok(())
                } else {
                    Err("no ready file".to_string())
                }
            }
        },
    )
    .await;

    let mut pids = Vec::new();
    for name in ["etcd", "kube-apiserver"] {
        let pid: u32 = std::fs::read_to_string(state.path().join(format!("pids/{name}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(process_alive(pid), "{name} ({pid}) is not running");
        pids.push((name, pid));
    }

    owner.kill().await.unwrap();
    wait_until(
        "etcd and kube-apiserver to exit after their owner was killed",
        Duration::from_secs(30),
        || async {
            let left: Vec<_> = pids.iter().filter(|(_, pid)| process_alive(*pid)).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
}
