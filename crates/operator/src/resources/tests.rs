#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use liveclass_api::{LiveClass, Observed, plan, validate};

use super::*;

fn class(extra: serde_json::Value) -> LiveClass {
    let mut value = serde_json::json!({
        "apiVersion": "liveclass.dev/v1alpha1",
        "kind": "LiveClass",
        "metadata": { "name": "physics-101", "namespace": "school", "uid": "u-1", "generation": 1 },
        "spec": {
            "schedule": { "start": "2026-12-01T14:00:00Z", "duration": "90m" },
            "expectedAttendance": 8000,
            "socket": {
                "image": "liveclass-socket:test",
                "tokenSecretRef": { "name": "tokens", "key": "hs256" },
            },
        },
    });
    merge(&mut value, extra);
    serde_json::from_value(value).unwrap()
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

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn desired(lc: &LiveClass, now: &str) -> Desired {
    let spec = validate(&lc.spec).unwrap();
    let plan = plan(&spec, at(now), &Observed::default());
    build(lc, &spec, &plan).unwrap()
}

#[test]
fn live_class_gets_planned_replicas_probes_and_owner() {
    let lc = class(serde_json::json!({}));
    let d = desired(&lc, "2026-12-01T14:10:00Z");
    let deployment = d.deployment;
    assert_eq!(
        deployment.metadata.name.as_deref(),
        Some("physics-101-socket")
    );
    let spec = deployment.spec;
    // 8000 * 1.25 / 2000 = 5
    assert_eq!(spec.replicas, Some(5));
    let owner = &deployment.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.kind, "LiveClass");
    assert_eq!(owner.controller, Some(true));
    let pod = spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let readiness = container.readiness_probe.as_ref().unwrap();
    assert_eq!(
        readiness.http_get.as_ref().unwrap().path.as_deref(),
        Some("/readyz")
    );
    // drain 30s + preStop 5s + slack 10s
    assert_eq!(pod.termination_grace_period_seconds, Some(45));
    let env = container.env.as_ref().unwrap();
    assert!(env.iter().any(|e| {
        e.name == "LIVECLASS_POD_ID"
            && e.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path
                == "metadata.name"
    }));
    assert_eq!(
        pod.volumes.unwrap()[0]
            .secret
            .as_ref()
            .unwrap()
            .secret_name
            .as_deref(),
        Some("tokens")
    );
    assert!(pod.topology_spread_constraints.is_some());
    let config = d.config_map.data.unwrap();
    assert_eq!(
        config["LIVECLASS_REDIS_URL"],
        "redis://physics-101-redis:6379"
    );
    assert_eq!(config["LIVECLASS_DRAIN_WINDOW"], "30s");
    let (sts, svc) = d.redis.unwrap();
    assert_eq!(sts.spec.replicas, Some(1));
    assert_eq!(svc.metadata.name.as_deref(), Some("physics-101-redis"));
    assert_eq!(
        d.headless_service.spec.unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    assert!(d.hpa.is_none());
}

#[test]
fn between_classes_replicas_are_the_minimum() {
    let lc = class(serde_json::json!({}));
    let d = desired(&lc, "2026-11-30T10:00:00Z");
    assert_eq!(d.deployment.spec.replicas, Some(1));
}

#[test]
fn external_redis_builds_no_redis_and_takes_the_url_from_the_secret() {
    let lc = class(serde_json::json!({
        "spec": { "redis": { "mode": "External", "external": { "secretRef": { "name": "r", "key": "url" } } } }
    }));
    let d = desired(&lc, "2026-12-01T14:10:00Z");
    assert!(d.redis.is_none());
    assert!(
        !d.config_map
            .data
            .unwrap()
            .contains_key("LIVECLASS_REDIS_URL")
    );
    let pod = d.deployment.spec.template.spec.unwrap();
    let env = pod.containers[0].env.as_ref().unwrap();
    let url = env
        .iter()
        .find(|e| e.name == "LIVECLASS_REDIS_URL")
        .unwrap();
    assert_eq!(
        url.value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name,
        "r"
    );
}

#[test]
fn with_autoscaling_the_hpa_gets_the_plan_and_the_deployment_no_replicas() {
    let lc =
        class(serde_json::json!({ "spec": { "autoscaling": { "targetCpuUtilization": 60 } } }));
    let d = desired(&lc, "2026-12-01T14:10:00Z");
    assert_eq!(d.deployment.spec.replicas, None);
    let hpa = d.hpa.unwrap().spec;
    assert_eq!(hpa.min_replicas, Some(5));
    assert_eq!(hpa.scale_target_ref.name, "physics-101-socket");
}

#[test]
fn a_config_change_rolls_the_pods_and_the_same_input_gives_the_same_objects() {
    let a = desired(&class(serde_json::json!({})), "2026-12-01T14:10:00Z");
    let b = desired(&class(serde_json::json!({})), "2026-12-01T14:10:00Z");
    assert_eq!(a, b);
    let c = desired(
        &class(serde_json::json!({ "spec": { "socket": { "drainWindow": "40s" } } })),
        "2026-12-01T14:10:00Z",
    );
    let hash = |d: &Desired| {
        d.deployment
            .spec
            .clone()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()["liveclass.dev/config-hash"]
            .clone()
    };
    assert_ne!(hash(&a), hash(&c));
}

#[test]
fn an_object_without_uid_cannot_be_owned() {
    let mut lc = class(serde_json::json!({}));
    lc.metadata.uid = None;
    let spec = validate(&lc.spec).unwrap();
    let plan = plan(&spec, at("2026-12-01T14:10:00Z"), &Observed::default());
    assert!(matches!(
        build(&lc, &spec, &plan),
        Err(Error::MissingField(_))
    ));
}
