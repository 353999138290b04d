//! A Replicated Redis on the local control plane: the objects it gets, and `RedisReady` that
//! follows its Sentinels. KWOK marks every pod Ready; a Sentinel pod made unready (as its
//! readiness check, `SENTINEL CKQUORUM`, would on a real node) takes the condition down.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Secret, Service},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
};
use kube::api::{Patch, PatchParams};
use liveclass_api::condition as cond;
use liveclass_testkit::wait;
use serde_json::json;

use crate::common::*;

fn redis_ready_message(lc: &liveclass_api::LiveClass) -> String {
    condition(lc, cond::REDIS_READY)
        .map(|c| format!("{} {}: {}", c.status, c.reason, c.message))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_class_gets_its_tier_and_is_redis_ready_only_with_every_sentinel() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-replicated").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;
    let start = Utc::now() + TimeDelta::minutes(30);
    create(
        &ns,
        &live_class("exam", start, json!({ "redis": { "mode": "Replicated" } })),
    )
    .await;

    // Ready as KWOK's pods are: three nodes, three Sentinels.
    let lc = status_where(
        &ns,
        "exam",
        "RedisReady=True",
        Duration::from_secs(90),
        |lc| is_true(lc, cond::REDIS_READY),
    )
    .await;
    eprintln!("{}", redis_ready_message(&lc));

    // The tier: a StatefulSet of three nodes and one of three Sentinels, a PDB each, the
    // headless Services that name them, the NetworkPolicy and the generated password.
    let sets = ns.api::<StatefulSet>();
    let nodes = sets.get("exam-redis").await.unwrap();
    let sentinels = sets.get("exam-sentinel").await.unwrap();
    assert_eq!(nodes.spec.replicas, Some(3));
    assert_eq!(sentinels.spec.replicas, Some(3));
    let pdbs = ns.api::<PodDisruptionBudget>();
    for name in ["exam-redis", "exam-sentinel"] {
        let pdb = pdbs.get(name).await.unwrap();
        assert_eq!(
            pdb.spec.unwrap().max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
            "{name}"
        );
    }
    for name in ["exam-redis", "exam-redis-nodes", "exam-sentinel"] {
        ns.api::<Service>().get(name).await.unwrap();
    }
    let policy = ns.api::<NetworkPolicy>().get("exam-redis").await.unwrap();
    assert!(
        policy.spec.unwrap().ingress.is_some_and(|i| !i.is_empty()),
        "the policy admits someone"
    );
    let auth = ns.api::<Secret>().get("exam-redis-auth").await.unwrap();
    assert!(auth.data.unwrap().contains_key("password"));

    // One Sentinel not Ready: two of three still make a quorum for a failover, but the shape
    // asked for is not running, so RedisReady is False and says how many are.
    let pods = ns.api::<Pod>();
    pods.patch_status(
        "exam-sentinel-1",
        &PatchParams::default(),
        &Patch::Strategic(json!({
            "status": { "conditions": [ { "type": "Ready", "status": "False" } ] }
        })),
    )
    .await
    .unwrap();
    let lc = status_where(
        &ns,
        "exam",
        "RedisReady=False with a Sentinel down",
        Duration::from_secs(60),
        |lc| condition(lc, cond::REDIS_READY).is_some_and(|c| c.status == "False"),
    )
    .await;
    let message = redis_ready_message(&lc);
    assert!(message.contains("2 of 3 Sentinels"), "{message}");
    // It stays False while the Sentinel is down (the operator does not take KWOK's word over
    // the pod's own readiness).
    let held = wait::until(
        "RedisReady to turn True again with a Sentinel down",
        Duration::from_secs(10),
        Duration::from_millis(500),
        || {
            let api = ns.api::<liveclass_api::LiveClass>();
            async move {
                api.get("exam")
                    .await
                    .ok()
                    .filter(|lc| is_true(lc, cond::REDIS_READY))
            }
        },
    )
    .await;
    assert!(held.is_err(), "RedisReady went True with a Sentinel down");
    operator.stop().await.unwrap();
}
