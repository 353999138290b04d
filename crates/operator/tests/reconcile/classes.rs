//! Classes as a school writes them: every shipped example becomes Ready, a class without a
//! token Secret gets one, same-named classes in two namespaces on one External Redis stay
//! apart, classes on one Redis share one connection to it, and a class that has ended for good
//! is released after its TTL.

use std::{path::Path, time::Duration};

use chrono::{TimeDelta, Utc};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::api::{ListParams, PostParams};
use liveclass_api::{LiveClass, condition as cond};
use liveclass_testkit::{RedisServer, cluster::TestNamespace, wait};
use serde_json::json;

use crate::common::*;

async fn secret(ns: &TestNamespace, name: &str, data: serde_json::Value) {
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": name },
                "stringData": data,
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

/// Every file in `manifests/examples/` reaches `Ready=True` (the one that brings its own token
/// key gets the Secret its comment says to create); a class without `tokenSecretRef` gets the
/// documented answer: a generated `<name>-token` Secret with a 64-character `hs256-key`, named
/// in `status.tokenSecretRef`, owned by the class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_becomes_ready() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-examples").await.unwrap();
    secret(
        &ns,
        "physics-101-token",
        json!({ "hs256-key": "x".repeat(64) }),
    )
    .await;
    let operator = start_operator(&ns, |_| {}).await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/examples");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut lc: LiveClass =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        lc.metadata.namespace = None;
        names.push(lc.metadata.name.clone().unwrap());
        create(&ns, &lc).await;
    }
    assert!(names.len() >= 3, "{names:?}");
    for name in &names {
        let lc = status_where(&ns, name, "Ready=True", Duration::from_secs(120), |lc| {
            is_true(lc, cond::READY)
        })
        .await;
        let s = lc.status.unwrap();
        eprintln!(
            "{name}: {:?}, {} ({:?} of {:?} pods)",
            s.phase,
            condition_message(&s.conditions, cond::READY),
            s.ready_replicas,
            s.planned_replicas
        );
    }
    // The documented answer for a class without a token Secret.
    let weekly = ns.api::<LiveClass>().get("weekly-maths").await.unwrap();
    let token = weekly.status.unwrap().token_secret_ref.unwrap();
    assert_eq!(
        (token.name.as_str(), token.key.as_str()),
        ("weekly-maths-token", "hs256-key")
    );
    let generated = ns.api::<Secret>().get("weekly-maths-token").await.unwrap();
    let key = generated.data.as_ref().unwrap()["hs256-key"].0.clone();
    assert_eq!(key.len(), 64);
    assert!(
        key.iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    );
    assert_eq!(
        generated.metadata.owner_references.unwrap()[0].name,
        "weekly-maths"
    );
    let physics = ns.api::<LiveClass>().get("physics-101").await.unwrap();
    assert_eq!(
        physics.status.unwrap().token_secret_ref.unwrap().name,
        "physics-101-token"
    );
    assert!(
        ns.api::<Secret>()
            .get_opt("physics-101-token-token")
            .await
            .unwrap()
            .is_none()
    );
    operator.stop().await.unwrap();
}

fn condition_message(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

/// Two classes named `physics-101` in two namespaces, both on one External Redis: their pods
/// run as different classes (`<namespace>/<name>`), and each class's attendance is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_named_classes_in_two_namespaces_on_one_redis_stay_apart() {
    let cluster = cluster().await;
    let redis = RedisServer::start().unwrap();
    let a = cluster.namespace("lc-school-a").await.unwrap();
    let b = cluster.namespace("lc-school-b").await.unwrap();
    let mut operators = Vec::new();
    for ns in [&a, &b] {
        secret(ns, "redis", json!({ "url": redis.url() })).await;
        // Reading the External Redis's Secret is what the chart's readExternalRedisSecrets
        // allows; no override: the URL comes from each namespace's Secret.
        operators.push(
            start_operator(ns, |c| {
                c.read_external_redis_secrets = true;
                c.attendance_interval = Duration::from_secs(1);
            })
            .await,
        );
        create(
            ns,
            &live_class(
                "physics-101",
                Utc::now() - TimeDelta::seconds(30),
                json!({ "redis": {
                    "mode": "External",
                    "external": { "secretRef": { "name": "redis", "key": "url" } },
                } }),
            ),
        )
        .await;
    }
    connect_students(&redis, &class_id(&a, "physics-101"), 300);
    connect_students(&redis, &class_id(&b, "physics-101"), 50);
    for (ns, want, pods) in [(&a, 300, 3), (&b, 50, 2)] {
        status_where(
            ns,
            "physics-101",
            &format!("{want} connected"),
            Duration::from_secs(20),
            |lc| lc.status.as_ref().and_then(|s| s.connected_students) == Some(want),
        )
        .await;
        let d = deployment_where(
            ns,
            "physics-101-socket",
            &format!("{pods} replicas"),
            Duration::from_secs(10),
            |d| replicas(d) == Some(pods),
        )
        .await;
        let container = &d.spec.template.spec.unwrap().containers[0];
        let class = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "LIVECLASS_CLASS")
            .and_then(|e| e.value.clone());
        assert_eq!(class, Some(class_id(ns, "physics-101")));
        assert!(
            ns.api::<StatefulSet>()
                .get_opt("physics-101-redis")
                .await
                .unwrap()
                .is_none(),
            "an External class runs no Redis"
        );
    }
    for operator in operators {
        operator.stop().await.unwrap();
    }
}

/// An External Redis behind Sentinel, with its password in a Secret of its own: the socket pods
/// get the password as a file and the Sentinels, and the operator reads attendance from the
/// primary the Sentinel names (the URL's own host does not exist), logging in with that password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_redis_behind_sentinel_with_a_password_secret_is_read_and_handed_to_the_pods() {
    use liveclass_testkit::RedisSentinel;
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-external-sentinel").await.unwrap();
    let redis = RedisServer::start().unwrap();
    let sentinel = RedisSentinel::start(
        "school",
        &redis,
        1,
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .unwrap();
    connect_students(&redis, &class_id(&ns, "physics-101"), 120);
    redis
        .command(&["CONFIG", "SET", "requirepass", "pw-0123456789"])
        .unwrap();
    secret(
        &ns,
        "redis",
        json!({ "url": "redis://nowhere.invalid:1/0", "password": "pw-0123456789" }),
    )
    .await;
    let operator = start_operator(&ns, |c| {
        c.read_external_redis_secrets = true;
        c.attendance_interval = Duration::from_secs(1);
    })
    .await;
    create(
        &ns,
        &live_class(
            "physics-101",
            Utc::now() - TimeDelta::seconds(30),
            json!({ "redis": {
                "mode": "External",
                "external": {
                    "secretRef": { "name": "redis", "key": "url" },
                    "passwordSecretRef": { "name": "redis", "key": "password" },
                    "sentinels": [sentinel.host_port()],
                    "masterName": "school",
                },
            } }),
        ),
    )
    .await;
    status_where(
        &ns,
        "physics-101",
        "120 connected, read through the Sentinel with the password",
        Duration::from_secs(20),
        |lc| lc.status.as_ref().and_then(|s| s.connected_students) == Some(120),
    )
    .await;
    let d = deployment_where(
        &ns,
        "physics-101-socket",
        "the socket Deployment",
        Duration::from_secs(10),
        |_| true,
    )
    .await;
    let pod = d.spec.template.spec.unwrap();
    let env = |name: &str| {
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(env("LIVECLASS_REDIS_SENTINELS"), Some(sentinel.host_port()));
    assert_eq!(
        env("LIVECLASS_REDIS_MASTER_NAME").as_deref(),
        Some("school")
    );
    assert_eq!(
        env("LIVECLASS_REDIS_PASSWORD_FILE").as_deref(),
        Some("/var/run/liveclass/redis-auth/key")
    );
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "redis-auth")
        .and_then(|v| v.secret.clone())
        .unwrap();
    assert_eq!(volume.secret_name.as_deref(), Some("redis"));
    assert_eq!(volume.items.unwrap()[0].key, "password");
    operator.stop().await.unwrap();
}

/// Connections the Redis has open, but the one asking.
fn redis_clients(redis: &RedisServer) -> usize {
    redis
        .command(&["CLIENT", "LIST"])
        .unwrap()
        .lines()
        .filter(|l| l.contains(" addr=") && !l.contains("cmd=client|list"))
        .count()
}

/// Three classes whose attendance is in one Redis are read through one connection, and it is
/// closed once the last of them is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classes_on_one_redis_share_one_connection_until_the_last_is_deleted() {
    let cluster = cluster().await;
    let redis = RedisServer::start().unwrap();
    let ns = cluster.namespace("lc-shared-redis").await.unwrap();
    let operator = start_operator_with(&ns, &redis).await;
    let names = ["art-1", "art-2", "art-3"];
    for (i, name) in names.iter().enumerate() {
        create(
            &ns,
            &live_class(name, Utc::now() - TimeDelta::seconds(30), json!({})),
        )
        .await;
        connect_students(&redis, &class_id(&ns, name), 10 * (i + 1));
    }
    for (i, name) in names.iter().enumerate() {
        let want = 10 * (i as u64 + 1);
        status_where(
            &ns,
            name,
            &format!("{want} connected"),
            Duration::from_secs(20),
            |lc| lc.status.as_ref().and_then(|s| s.connected_students) == Some(want),
        )
        .await;
    }
    assert_eq!(redis_clients(&redis), 1, "one connection for three classes");
    let api = ns.api::<LiveClass>();
    for name in &names[..2] {
        api.delete(name, &Default::default()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        redis_clients(&redis),
        1,
        "the last class still reads through it"
    );
    api.delete(names[2], &Default::default()).await.unwrap();
    wait::until(
        "the connection closed after the last class went",
        Duration::from_secs(20),
        POLL,
        || async { (redis_clients(&redis) == 0).then_some(()) },
    )
    .await
    .unwrap();
    operator.stop().await.unwrap();
}

/// Without the permission to read Secrets, an External class runs on its schedule and says
/// why it cannot see its attendance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_class_without_secret_access_says_why_it_sees_no_attendance() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-blind").await.unwrap();
    let operator = start_operator(&ns, |c| c.attendance_interval = Duration::from_secs(1)).await;
    create(
        &ns,
        &live_class(
            "blind",
            Utc::now() - TimeDelta::seconds(30),
            json!({ "redis": {
                "mode": "External",
                "external": { "secretRef": { "name": "redis", "key": "url" } },
            } }),
        ),
    )
    .await;
    let lc = status_where(
        &ns,
        "blind",
        "AttendanceObserved=False",
        Duration::from_secs(20),
        |lc| condition(lc, cond::ATTENDANCE_OBSERVED).is_some_and(|c| c.status == "False"),
    )
    .await;
    let c = condition(&lc, cond::ATTENDANCE_OBSERVED).unwrap();
    assert_eq!(c.reason, "SecretNotReadable");
    assert!(
        c.message.contains("readExternalRedisSecrets"),
        "{}",
        c.message
    );
    deployment_where(
        &ns,
        "blind-socket",
        "the schedule's 2",
        Duration::from_secs(10),
        |d| replicas(d) == Some(2),
    )
    .await;
    operator.stop().await.unwrap();
}

/// A one-off class that has ended keeps its idle capacity for `endedTtl`, then releases
/// everything it owns (the token Secret stays with the class) and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_class_is_released_after_its_ttl() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-ended").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;
    let lc = live_class(
        "done",
        Utc::now() - TimeDelta::minutes(3),
        json!({ "schedule": { "duration": "30s" }, "endedTtl": "1h" }),
    );
    create(&ns, &lc).await;
    status_where(
        &ns,
        "done",
        "Ended and Ready",
        Duration::from_secs(20),
        |lc| phase(lc) == Some(liveclass_api::Phase::Ended) && is_true(lc, cond::READY),
    )
    .await;
    deployment_where(&ns, "done-socket", "idle", Duration::from_secs(10), |d| {
        replicas(d) == Some(1)
    })
    .await;
    patch_spec(&ns, "done", json!({ "endedTtl": "5s" })).await;
    let lc = status_where(&ns, "done", "Released", Duration::from_secs(20), |lc| {
        condition(lc, cond::READY).is_some_and(|c| c.reason == "Released")
    })
    .await;
    assert!(is_true(&lc, cond::READY));
    wait::until("every workload gone", Duration::from_secs(20), POLL, || {
        let ns = &ns;
        async move {
            let none = ns
                .api::<Deployment>()
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
                && ns
                    .api::<StatefulSet>()
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                && ns
                    .api::<Service>()
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                && ns
                    .api::<PodDisruptionBudget>()
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty();
            none.then_some(())
        }
    })
    .await
    .unwrap();
    assert!(
        ns.api::<Secret>()
            .get_opt("done-token")
            .await
            .unwrap()
            .is_some()
    );
    events_with(&ns, "done", "Released").await;
    operator.stop().await.unwrap();
}
