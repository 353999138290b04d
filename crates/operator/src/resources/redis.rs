//! The Redis a class runs on when the operator runs it (`Standalone`): a one-pod StatefulSet
//! and its Service, with `maxmemory` and the pod's memory from the plan. The `Replicated` shape
//! (primary, replicas, Sentinel) is not built yet: it runs the same single primary for now.

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use liveclass_api::{LiveClass, Plan, plan::RedisShape};
use serde_json::json;

use super::{Meta, Names, typed};
use crate::error::Error;

pub const REDIS_PORT: u16 = 6379;
const COMPONENT: &str = "redis";

/// The URL the socket pods use: the Service's name, resolved in the pods' own namespace.
pub(crate) fn in_cluster_url(meta: &Meta) -> String {
    format!("redis://{}:{REDIS_PORT}", meta.names.redis)
}

/// The URL the operator itself uses to reach a class's operator-run Redis, by cluster DNS.
pub fn redis_url(class: &str, namespace: &str) -> String {
    format!(
        "redis://{}.{namespace}.svc:{REDIS_PORT}",
        Names::of(class).redis
    )
}

pub(crate) fn statefulset(
    meta: &Meta,
    lc: &LiveClass,
    plan: &Plan,
) -> Result<Option<StatefulSet>, Error> {
    if plan.redis.shape == RedisShape::External {
        return Ok(None);
    }
    let mut args = vec![
        "redis-server".to_owned(),
        "--port".to_owned(),
        REDIS_PORT.to_string(),
        // The class's state is transient: no snapshots, no AOF, and a full Redis refuses writes
        // rather than silently evicting who-is-where.
        "--save".to_owned(),
        String::new(),
        "--appendonly".to_owned(),
        "no".to_owned(),
        "--maxmemory-policy".to_owned(),
        "noeviction".to_owned(),
    ];
    let mut container = json!({
        "name": "redis",
        "image": lc.spec.redis.image,
        "ports": [{ "name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP" }],
        "readinessProbe": { "tcpSocket": { "port": "redis" }, "periodSeconds": 2 },
        "livenessProbe": { "tcpSocket": { "port": "redis" }, "periodSeconds": 10 },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 999,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
        },
    });
    if let Some(memory) = plan.redis.memory {
        args.push("--maxmemory".to_owned());
        args.push(memory.max_memory_arg());
        let quantity = memory.request_quantity();
        container["resources"] = json!({
            "requests": { "memory": quantity },
            "limits": { "memory": quantity },
        });
    }
    container["args"] = json!(args);
    typed(
        "StatefulSet",
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta.metadata(&meta.names.redis, COMPONENT),
            "spec": {
                "replicas": 1,
                "serviceName": meta.names.redis,
                "selector": { "matchLabels": meta.selector(COMPONENT) },
                "template": {
                    "metadata": { "labels": meta.labels(COMPONENT) },
                    "spec": {
                        "containers": [container],
                    },
                },
            },
        }),
    )
    .map(Some)
}

pub(crate) fn service(meta: &Meta) -> Result<Service, Error> {
    typed(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta.metadata(&meta.names.redis, COMPONENT),
            "spec": {
                "type": "ClusterIP",
                "selector": meta.selector(COMPONENT),
                "ports": [{ "name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP" }],
            },
        }),
    )
}
