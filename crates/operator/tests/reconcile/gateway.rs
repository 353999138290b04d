//! The gateway, sized with the classes: raised with a class's socket pods ahead of its start,
//! lowered one pod at a time once the class is gone; a pod that goes hands its students over.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use liveclass_api::{LiveClass, Phase};
use liveclass_protocol::bus::{HANDOVER_CHANNEL, Handover};
use liveclass_testkit::{RedisServer, cluster::TestNamespace, wait};
use serde_json::json;

use crate::common::*;

/// A stand-in for the chart's gateway Deployment `gw`, of one pod (KWOK runs it).
async fn create_gateway(ns: &TestNamespace) {
    let gateway: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "gw" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "gw" } },
            "template": {
                "metadata": { "labels": { "app": "gw" } },
                "spec": { "containers": [{ "name": "caddy", "image": "caddy:test" }] },
            },
        },
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &gateway)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_follows_the_classes_planned_capacity() {
    let cluster = cluster().await;
    let ns = cluster.namespace("gateway-size").await.unwrap();
    create_gateway(&ns).await;
    let target = (ns.name().to_owned(), "gw".to_owned());
    let _operator = start_operator(&ns, move |c| {
        c.gateway_deployment = Some(target);
        c.gateway_connections_per_pod = 250;
        c.gateway_min_replicas = 1;
        c.gateway_max_replicas = 6;
        c.gateway_scale_down_after = Duration::from_secs(2);
    })
    .await;

    // A class for 1,000 students, 100 a socket pod, starting in 40 s: its capacity is raised
    // at start - warmup - podStartup, and the gateway with it, before the bell.
    let start = Utc::now() + chrono::TimeDelta::seconds(40);
    create(
        &ns,
        &live_class("big", start, json!({ "expectedAttendance": 1000 })),
    )
    .await;
    let warming = status_where(
        &ns,
        "big",
        "big warming up",
        Duration::from_secs(60),
        |lc| {
            lc.status
                .as_ref()
                .is_some_and(|s| s.phase == Some(Phase::WarmingUp) && s.planned_replicas > Some(1))
        },
    )
    .await;
    let planned = warming.status.unwrap().planned_replicas.unwrap();
    let want = (planned * 100).div_ceil(250).clamp(1, 6);
    assert!(want > 1, "the class should need more than one gateway pod");
    deployment_where(
        &ns,
        "gw",
        &format!("the gateway raised to {want} pods for {planned} socket pods"),
        Duration::from_secs(30),
        |d| replicas(d) == Some(i32::try_from(want).unwrap()),
    )
    .await;
    assert!(Utc::now() < start, "the gateway was raised after the start");

    // The class deleted: back down to the fewest, one pod at a time, never a jump.
    ns.api::<LiveClass>()
        .delete("big", &DeleteParams::default())
        .await
        .unwrap();
    let api = ns.api::<Deployment>();
    let mut seen = vec![want];
    let deadline = Instant::now() + Duration::from_secs(20 * u64::from(want));
    while seen.last() != Some(&1) {
        assert!(
            Instant::now() < deadline,
            "the gateway went {seen:?} and no further"
        );
        let now = api.get("gw").await.unwrap().spec.replicas.unwrap();
        let now = u32::try_from(now).unwrap();
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!("{planned} socket pods planned: the gateway raised to {want}, then {seen:?}");
    let steps: Vec<u32> = (1..=want).rev().collect();
    assert_eq!(seen, steps, "the gateway's replicas on the way down");
}

/// A gateway pod that terminates is handed over: the operator publishes a hand-over naming
/// the pod's address on every Redis it reads attendance from, at once (the pod's preStop
/// waits out the window). What the socket servers do with it is shown in
/// `crates/socket/tests/resilience.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_gateway_pod_is_handed_over_on_the_redis_of_a_live_class() {
    let cluster = cluster().await;
    let ns = cluster.namespace("gateway-handover").await.unwrap();
    create_gateway(&ns).await;
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let target = (ns.name().to_owned(), "gw".to_owned());
    let _operator = start_operator(&ns, move |c| {
        c.redis_override = Some(url);
        c.attendance_interval = Duration::from_secs(1);
        c.gateway_deployment = Some(target);
        c.gateway_sizing = false;
        c.gateway_handover_window = Duration::from_secs(3);
    })
    .await;
    // A class in session: the operator reads its attendance, so it reaches its Redis.
    let start = Utc::now() - chrono::TimeDelta::seconds(30);
    create(&ns, &live_class("now", start, json!({}))).await;
    status_where(
        &ns,
        "now",
        "attendance read",
        Duration::from_secs(60),
        |lc| {
            lc.status
                .as_ref()
                .is_some_and(|s| s.connected_students.is_some())
        },
    )
    .await;
    let mut pubsub = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(HANDOVER_CHANNEL).await.unwrap();

    let pods = ns.api::<Pod>();
    let selected = ListParams::default().labels("app=gw");
    let (name, address) = wait::until(
        "the gateway pod has an address",
        Duration::from_secs(30),
        POLL,
        || {
            let pods = pods.clone();
            let selected = selected.clone();
            async move {
                let pod = pods.list(&selected).await.ok()?.items.into_iter().next()?;
                let ip: IpAddr = pod.status?.pod_ip?.parse().ok()?;
                Some((pod.metadata.name?, ip))
            }
        },
    )
    .await
    .unwrap();
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(15), pubsub.on_message().next())
        .await
        .expect("no hand-over published within 15 s of the delete")
        .unwrap();
    let message: Handover =
        serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(
        message,
        Handover {
            gateway: address,
            within_ms: 3000
        }
    );
}
