//! The committed CRD, applied to a real kube-apiserver (the local control plane, API only):
//! every example in `manifests/examples` is accepted and reads back as a valid `LiveClass`, and
//! every object in `manifests/examples/invalid` is refused with the message its `# expect:`
//! line names — the promise that `kubectl apply` of a bad object fails before the operator
//! ever sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
};
use liveclass_api::{LiveClass, LiveClassStatus, Phase, time::to_k8s, validate};
use liveclass_testkit::LocalCluster;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text = fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Applies `manifests/crd.yaml` as committed and waits until the API server serves it.
async fn install_crd(cluster: &LocalCluster) {
    let crd: CustomResourceDefinition = read_yaml(&repo().join("manifests/crd.yaml"));
    cluster
        .install_crd(&crd)
        .await
        .expect("the API server accepts the CRD and serves it");
}

fn dynamic_api(client: Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &ApiResource::erase::<LiveClass>(&()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_applies_and_reads_back_valid() {
    let cluster = LocalCluster::shared_api_only().await.unwrap();
    install_crd(cluster).await;
    let ns = cluster.namespace("crd-examples").await.unwrap();
    let raw = dynamic_api(ns.client(), ns.name());
    let typed: Api<LiveClass> = ns.api();

    let files = yaml_files(&repo().join("manifests/examples"));
    assert!(files.len() >= 2);
    for path in files {
        let object: DynamicObject = read_yaml(&path);
        let name = object.metadata.name.clone().unwrap();
        if let Err(e) = raw.create(&PostParams::default(), &object).await {
            panic!("{}: refused: {e}", path.display());
        }
        // Read back through the typed API: it deserializes, and the operator's checks agree.
        let class = typed.get(&name).await.unwrap();
        if let Err(errors) = validate(&class.spec) {
            panic!(
                "{}: {}",
                path.display(),
                liveclass_api::validate::describe(&errors)
            );
        }
    }

    // The server filled in the schema's defaults for what the weekly class leaves out.
    let weekly = typed.get("weekly-maths").await.unwrap();
    assert_eq!(weekly.spec.socket.headroom, 1.25);
    assert_eq!(weekly.spec.socket.pod_startup.as_str(), "2m");
    assert_eq!(weekly.spec.redis.history_length, 1000);
    assert_eq!(weekly.spec.socket.scale_down.step_percent, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_example_is_refused_with_its_message() {
    let cluster = LocalCluster::shared_api_only().await.unwrap();
    install_crd(cluster).await;
    let ns = cluster.namespace("crd-invalid").await.unwrap();
    let raw = dynamic_api(ns.client(), ns.name());

    let files = yaml_files(&repo().join("manifests/examples/invalid"));
    assert!(files.len() >= 10);
    let mut wrong = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()))
            .trim()
            .to_owned();
        let object: DynamicObject = serde_yaml::from_str(&text).unwrap();
        match raw.create(&PostParams::default(), &object).await {
            Ok(_) => wrong.push(format!("{}: accepted", path.display())),
            Err(kube::Error::Api(status)) if status.code == 422 => {
                if !status.message.contains(&expect) {
                    wrong.push(format!(
                        "{}: expected {expect:?} in {:?}",
                        path.display(),
                        status.message
                    ));
                }
            }
            Err(e) => wrong.push(format!("{}: unexpected error {e}", path.display())),
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_the_operator_writes_is_accepted() {
    let cluster = LocalCluster::shared_api_only().await.unwrap();
    install_crd(cluster).await;
    let ns = cluster.namespace("crd-status").await.unwrap();
    let raw = dynamic_api(ns.client(), ns.name());
    let typed: Api<LiveClass> = ns.api();
    let object: DynamicObject = read_yaml(&repo().join("manifests/examples/physics-101.yaml"));
    raw.create(&PostParams::default(), &object).await.unwrap();

    // Whole seconds, as status keeps them.
    let at = |text: &str| {
        to_k8s(
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc),
        )
        .unwrap()
    };
    let condition = |type_: &str| Condition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: "AsPlanned".to_owned(),
        message: "5 of 5 replicas Ready".to_owned(),
        last_transition_time: at("2026-12-01T13:49:00Z"),
        observed_generation: Some(1),
    };
    let status = LiveClassStatus {
        phase: Some(Phase::WarmingUp),
        occurrence_start: Some(at("2026-12-01T14:00:00Z")),
        planned_replicas: Some(5),
        ready_replicas: Some(5),
        connected_students: Some(0),
        next_transition: Some(at("2026-12-01T14:00:00Z")),
        last_scale_down_time: None,
        conditions: vec![
            condition("Ready"),
            condition("CapacityReady"),
            condition("RedisReady"),
        ],
        observed_generation: Some(1),
        ..LiveClassStatus::default()
    };
    let patch = serde_json::json!({
        "apiVersion": "liveclass.dev/v1alpha1",
        "kind": "LiveClass",
        "status": status,
    });
    typed
        .patch_status(
            "physics-101",
            &PatchParams::apply("liveclass-operator").force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    let back = typed.get_status("physics-101").await.unwrap();
    assert_eq!(back.status, Some(status));
}
