//! The socket servers' objects: Deployment, ClusterIP and headless Services, PDB, ConfigMap and
//! the optional HPA. Flags and probes follow `crates/socket` (`config.rs`, `/readyz`, `/healthz`).

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Service},
    policy::v1::PodDisruptionBudget,
};
use liveclass_api::{LiveClass, Plan, ValidSpec, plan::RedisShape};
use serde_json::json;

use super::{Meta, fnv1a, redis, typed};
use crate::error::Error;

/// The port the socket server listens on for WebSockets, probes and metrics.
pub const SOCKET_PORT: u16 = 8080;
/// Where the token Secret is mounted.
const TOKEN_DIR: &str = "/var/run/liveclass/token";
/// How long a stopping pod waits before SIGTERM, so balancers drop it from their endpoints
/// before it starts handing students over.
const PRE_STOP_SECONDS: i64 = 5;
/// Slack after the drain window before the kubelet kills a stopping pod.
const GRACE_SLACK_SECONDS: i64 = 10;
const COMPONENT: &str = "socket";

pub(crate) fn config_map(
    meta: &Meta,
    lc: &LiveClass,
    spec: &ValidSpec,
    plan: &Plan,
) -> Result<ConfigMap, Error> {
    let mut data = serde_json::Map::new();
    data.insert(
        "LIVECLASS_LISTEN".into(),
        format!("0.0.0.0:{SOCKET_PORT}").into(),
    );
    data.insert(
        "LIVECLASS_DRAIN_WINDOW".into(),
        format!("{}s", spec.socket.drain_window.num_seconds().max(1)).into(),
    );
    data.insert(
        "LIVECLASS_HISTORY".into(),
        lc.spec.redis.history_length.to_string().into(),
    );
    if plan.redis.shape != RedisShape::External {
        data.insert(
            "LIVECLASS_REDIS_URL".into(),
            redis::in_cluster_url(meta).into(),
        );
    }
    if lc.spec.socket.token_secret_ref.is_some() {
        data.insert(
            "LIVECLASS_TOKEN_SECRET_FILE".into(),
            format!("{TOKEN_DIR}/token").into(),
        );
    }
    typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta.metadata(&meta.names.socket, COMPONENT),
            "data": data,
        }),
    )
}

pub(crate) fn deployment(
    meta: &Meta,
    lc: &LiveClass,
    spec: &ValidSpec,
    plan: &Plan,
    config: &ConfigMap,
) -> Result<Deployment, Error> {
    let socket = &lc.spec.socket;
    let selector = meta.selector(COMPONENT);
    // Pods roll when their configuration changes.
    let config_hash = config.data.as_ref().map_or(0, |data| {
        fnv1a(
            data.iter()
                .flat_map(|(k, v)| k.bytes().chain([0]).chain(v.bytes()).chain([0])),
        )
    });
    let mut env = vec![json!({
        "name": "LIVECLASS_POD_ID",
        "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } },
    })];
    if let Some(external) = &lc.spec.redis.external {
        env.push(json!({
            "name": "LIVECLASS_REDIS_URL",
            "valueFrom": { "secretKeyRef": {
                "name": external.secret_ref.name, "key": external.secret_ref.key,
            } },
        }));
    }
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if let Some(secret) = &socket.token_secret_ref {
        volumes.push(json!({
            "name": "token",
            "secret": {
                "secretName": secret.name,
                "items": [{ "key": secret.key, "path": "token" }],
            },
        }));
        mounts.push(json!({ "name": "token", "mountPath": TOKEN_DIR, "readOnly": true }));
    }
    let drain = spec.socket.drain_window.num_seconds().max(1);
    let mut container = json!({
        "name": "socket",
        "image": socket.image,
        "ports": [{ "name": "http", "containerPort": SOCKET_PORT, "protocol": "TCP" }],
        "envFrom": [{ "configMapRef": { "name": meta.names.socket } }],
        "env": env,
        "readinessProbe": {
            "httpGet": { "path": "/readyz", "port": "http" },
            "periodSeconds": 2,
            "failureThreshold": 1,
        },
        "livenessProbe": {
            "httpGet": { "path": "/healthz", "port": "http" },
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "lifecycle": { "preStop": { "sleep": { "seconds": PRE_STOP_SECONDS } } },
        "securityContext": {
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
        },
    });
    if !mounts.is_empty() {
        container["volumeMounts"] = json!(mounts);
    }
    if let Some(resources) = &socket.resources {
        container["resources"] = json!(resources);
    }
    let mut spec_json = json!({
        "selector": { "matchLabels": selector },
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": { "maxUnavailable": 0, "maxSurge": "25%" },
        },
        "template": {
            "metadata": {
                "labels": meta.labels(COMPONENT),
                "annotations": { "liveclass.dev/config-hash": format!("{config_hash:016x}") },
            },
            "spec": {
                "terminationGracePeriodSeconds": PRE_STOP_SECONDS + drain + GRACE_SLACK_SECONDS,
                "topologySpreadConstraints": [{
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": { "matchLabels": selector },
                }],
                "containers": [container],
            },
        },
    });
    if !volumes.is_empty() {
        spec_json["template"]["spec"]["volumes"] = json!(volumes);
    }
    // With an HPA the replicas are its to set; the plan moves its minReplicas instead.
    if plan.autoscaling.is_none() {
        spec_json["replicas"] = json!(plan.socket.replicas);
    }
    typed(
        "Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta.metadata(&meta.names.socket, COMPONENT),
            "spec": spec_json,
        }),
    )
}

/// The ClusterIP Service the balancer connects through.
pub(crate) fn service(meta: &Meta) -> Result<Service, Error> {
    typed(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta.metadata(&meta.names.socket, COMPONENT),
            "spec": {
                "type": "ClusterIP",
                "selector": meta.selector(COMPONENT),
                "ports": [{ "name": "http", "port": SOCKET_PORT, "targetPort": "http", "protocol": "TCP" }],
            },
        }),
    )
}

/// The headless Service through which a balancer discovers the Ready socket pods.
pub(crate) fn headless_service(meta: &Meta) -> Result<Service, Error> {
    typed(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta.metadata(&meta.names.headless, COMPONENT),
            "spec": {
                "clusterIP": "None",
                "selector": meta.selector(COMPONENT),
                "ports": [{ "name": "http", "port": SOCKET_PORT, "targetPort": "http", "protocol": "TCP" }],
            },
        }),
    )
}

/// At most one socket pod evicted at a time (node drains), so its students are drained, not
/// dropped all together.
pub(crate) fn pdb(meta: &Meta) -> Result<PodDisruptionBudget, Error> {
    typed(
        "PodDisruptionBudget",
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta.metadata(&meta.names.socket, COMPONENT),
            "spec": {
                "maxUnavailable": 1,
                "selector": { "matchLabels": meta.selector(COMPONENT) },
            },
        }),
    )
}

/// The HPA whose `minReplicas` follows the plan, when the spec asks for autoscaling.
pub(crate) fn hpa(meta: &Meta, plan: &Plan) -> Result<Option<HorizontalPodAutoscaler>, Error> {
    let Some(hpa) = plan.autoscaling else {
        return Ok(None);
    };
    typed(
        "HorizontalPodAutoscaler",
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta.metadata(&meta.names.socket, COMPONENT),
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": meta.names.socket },
                "minReplicas": hpa.min_replicas,
                "maxReplicas": hpa.max_replicas,
                "metrics": [{
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": { "type": "Utilization", "averageUtilization": hpa.target_cpu_utilization },
                    },
                }],
            },
        }),
    )
    .map(Some)
}
