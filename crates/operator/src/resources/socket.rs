//! The socket servers' objects: Deployment, ClusterIP and headless Services, PDB and the
//! optional HPA. The pod spec follows the socket server's interface (`crates/socket`, and the
//! team contract): `--class <namespace>/<name>`, students' port `ws` (8080: `/ws`, `/healthz`,
//! `/readyz`), admin port `admin` (9090: `/metrics` and the probes), token key files that are
//! re-read when the Secret changes.

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        autoscaling::v2::{
            CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules,
            HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec,
            MetricSpec, MetricTarget, ResourceMetricSource,
        },
        core::v1::{
            Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
            Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource,
            SecurityContext, Service, ServicePort, ServiceSpec, SleepAction,
            TopologySpreadConstraint, Volume, VolumeMount,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use liveclass_api::{LiveClass, Plan, ValidSpec, plan::RedisShape};

use super::{Meta, TokenSource, redis};

/// The students' port: `/ws`, `/healthz`, `/readyz`.
pub const WS_PORT: u16 = 8080;
/// The admin port: `/metrics`, `/healthz`, `/readyz`.
pub const ADMIN_PORT: u16 = 9090;
/// The annotation the ReplicaSet controller removes the cheapest pods by when scaling down.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Where the current token signing key is mounted (file `key`).
const TOKEN_DIR: &str = "/var/run/liveclass/token";
/// Where the previous token signing key is mounted (file `key`, absent when there is none).
const PREVIOUS_TOKEN_DIR: &str = "/var/run/liveclass/token-previous";
/// How long a stopping pod waits before SIGTERM, so balancers drop it from their endpoints
/// before it starts handing students over.
const PRE_STOP_SECONDS: i64 = 5;
/// Slack after the drain window before the kubelet kills a stopping pod.
const GRACE_SLACK_SECONDS: i64 = 10;
/// Readiness: probed every 2 s, out after 3 failures in a row, so a Redis blip of a few seconds
/// (during which `/readyz` answers 503) does not take every pod out of the endpoints at once.
const READINESS_PERIOD_SECONDS: i32 = 2;
const READINESS_FAILURES: i32 = 3;
const COMPONENT: &str = "socket";
/// Whose `X-Forwarded-For` the socket servers believe for a student's address: the private
/// ranges pod networks use, where the gateway runs. Students reach the pods only through the
/// gateway (the Services are ClusterIP), so without this every student of the class would share
/// the gateway's address, and so one per-address handshake budget, and an arrival storm would
/// be refused with 429. The gateway (Caddy) replaces an `X-Forwarded-For` it gets from outside.
pub const TRUSTED_PROXIES: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7";

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn probe(path: &str, port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Probe::default()
    }
}

fn selector(meta: &Meta) -> LabelSelector {
    LabelSelector {
        match_labels: Some(meta.selector(COMPONENT)),
        match_expressions: None,
    }
}

fn secret_volume(name: &str, secret: &str, key: &str, optional: bool) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: "key".to_owned(),
                mode: None,
                user: None,
            }]),
            optional: optional.then_some(true),
            default_mode: None,
            default_user: None,
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

pub(crate) fn deployment(
    meta: &Meta,
    lc: &LiveClass,
    spec: &ValidSpec,
    plan: &Plan,
    token: &TokenSource,
) -> Deployment {
    let socket = &lc.spec.socket;
    let drain = spec.socket.drain_window.num_seconds().max(1);
    let mut env = vec![
        env("LIVECLASS_CLASS", meta.class_id.clone()),
        env("LIVECLASS_LISTEN", format!("0.0.0.0:{WS_PORT}")),
        env("LIVECLASS_ADMIN_LISTEN", format!("0.0.0.0:{ADMIN_PORT}")),
        EnvVar {
            name: "LIVECLASS_POD_ID".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        env("LIVECLASS_DRAIN_WINDOW", format!("{drain}s")),
        env(
            "LIVECLASS_HISTORY",
            lc.spec.redis.history_length.to_string(),
        ),
        env("LIVECLASS_TOKEN_SECRET_FILE", format!("{TOKEN_DIR}/key")),
        env("LIVECLASS_TRUSTED_PROXIES", TRUSTED_PROXIES),
    ];
    match &lc.spec.redis.external {
        Some(external) => env.push(EnvVar {
            name: "LIVECLASS_REDIS_URL".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: external.secret_ref.name.clone(),
                    key: external.secret_ref.key.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        }),
        None => {
            env.push(env_redis(meta));
            // Replicated: every (re)connection asks the Sentinels for the primary, so a
            // failover is followed without a restart.
            if let RedisShape::Replicated { sentinels, .. } = plan.redis.shape {
                env.push(self::env(
                    "LIVECLASS_REDIS_SENTINELS",
                    redis::sentinel_addrs(meta, sentinels).join(","),
                ));
                env.push(self::env("LIVECLASS_REDIS_MASTER_NAME", redis::MASTER_NAME));
            }
        }
    }
    let current = token.current();
    let mut volumes = vec![secret_volume("token", &current.name, &current.key, false)];
    let mut mounts = vec![mount("token", TOKEN_DIR)];
    if let Some(previous) = token.previous_key() {
        env.push(self::env(
            "LIVECLASS_TOKEN_PREVIOUS_SECRET_FILE",
            format!("{PREVIOUS_TOKEN_DIR}/key"),
        ));
        // Optional: between rotations the Secret has no previous key, and the file is absent.
        volumes.push(secret_volume(
            "token-previous",
            &current.name,
            previous,
            true,
        ));
        mounts.push(mount("token-previous", PREVIOUS_TOKEN_DIR));
    }
    // An External Redis: its password Secret and its Sentinels, when the spec names them.
    if let Some(external) = &lc.spec.redis.external {
        if let Some(password) = &external.password_secret_ref {
            env.push(self::env(
                "LIVECLASS_REDIS_PASSWORD_FILE",
                format!("{}/key", redis::PASSWORD_DIR),
            ));
            volumes.push(secret_volume(
                "redis-auth",
                &password.name,
                &password.key,
                false,
            ));
            mounts.push(mount("redis-auth", redis::PASSWORD_DIR));
        }
        if !external.sentinels.is_empty() {
            env.push(self::env(
                "LIVECLASS_REDIS_SENTINELS",
                external.sentinels.join(","),
            ));
            env.push(self::env(
                "LIVECLASS_REDIS_MASTER_NAME",
                external.master_name.clone(),
            ));
        }
    }
    // The Redis the operator runs wants the class's password, read from its file on every
    // (re)connection.
    if lc.spec.redis.external.is_none() && plan.redis.shape != RedisShape::External {
        env.push(self::env(
            "LIVECLASS_REDIS_PASSWORD_FILE",
            format!("{}/key", redis::PASSWORD_DIR),
        ));
        volumes.push(secret_volume(
            "redis-auth",
            &meta.names.redis_auth,
            redis::PASSWORD_KEY,
            false,
        ));
        mounts.push(mount("redis-auth", redis::PASSWORD_DIR));
    }
    let container = Container {
        name: "socket".to_owned(),
        image: Some(socket.image.clone()),
        ports: Some(vec![
            ContainerPort {
                name: Some("ws".to_owned()),
                container_port: i32::from(WS_PORT),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".to_owned()),
                container_port: i32::from(ADMIN_PORT),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(env),
        // Readiness on the students' port (what the balancer sends them to), liveness on the
        // admin port.
        readiness_probe: Some(probe(
            "/readyz",
            "ws",
            READINESS_PERIOD_SECONDS,
            READINESS_FAILURES,
        )),
        liveness_probe: Some(probe("/healthz", "admin", 10, 3)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: socket.resources.clone(),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        termination_grace_period_seconds: Some(PRE_STOP_SECONDS + drain + GRACE_SLACK_SECONDS),
        // The socket server never calls the Kubernetes API, and a namespace with many classes
        // would otherwise hand every pod a variable per Service.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(selector(meta)),
            ..TopologySpreadConstraint::default()
        }]),
        ..PodSpec::default()
    };
    Deployment {
        metadata: meta.metadata(&meta.names.socket, COMPONENT),
        spec: DeploymentSpec {
            // With an HPA the replicas are its to set; the plan moves its minReplicas instead.
            replicas: plan
                .autoscaling
                .is_none()
                .then(|| i32::try_from(plan.socket.replicas).unwrap_or(i32::MAX)),
            selector: selector(meta),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".to_owned())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    labels: Some(meta.labels(COMPONENT)),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

fn env_redis(meta: &Meta) -> EnvVar {
    env("LIVECLASS_REDIS_URL", redis::in_cluster_url(meta))
}

fn ws_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The ClusterIP Service students' connections can go through.
pub(crate) fn service(meta: &Meta) -> Service {
    Service {
        metadata: meta.metadata(&meta.names.socket, COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(meta.selector(COMPONENT)),
            ports: Some(vec![ws_port("ws", WS_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The headless Service through which a balancer discovers the Ready socket pods (and a
/// Prometheus their admin port).
pub(crate) fn headless_service(meta: &Meta) -> Service {
    Service {
        metadata: meta.metadata(&meta.names.headless, COMPONENT),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(meta.selector(COMPONENT)),
            ports: Some(vec![ws_port("ws", WS_PORT), ws_port("admin", ADMIN_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// At most one socket pod evicted at a time (node drains), so its students are drained, not
/// dropped all together.
pub(crate) fn pdb(meta: &Meta) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta.metadata(&meta.names.socket, COMPONENT),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(meta)),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The HPA whose `minReplicas` follows the plan, when the spec asks for autoscaling; it never
/// removes pods faster than the plan's drain would.
pub(crate) fn hpa(meta: &Meta, plan: &Plan) -> Option<HorizontalPodAutoscaler> {
    let hpa = plan.autoscaling?;
    let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    Some(HorizontalPodAutoscaler {
        metadata: meta.metadata(&meta.names.socket, COMPONENT),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: meta.names.socket.clone(),
            },
            min_replicas: Some(int(hpa.min_replicas)),
            max_replicas: int(hpa.max_replicas),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(int(hpa.target_cpu_utilization)),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    policies: Some(vec![HPAScalingPolicy {
                        type_: "Percent".to_owned(),
                        value: int(hpa.scale_down_percent),
                        // The API's limits: a policy period of at most 30 minutes, a
                        // stabilization window of at most an hour.
                        period_seconds: int(hpa.scale_down_period_seconds.min(1800)),
                    }]),
                    stabilization_window_seconds: Some(int(hpa
                        .scale_down_period_seconds
                        .min(3600))),
                    ..HPAScalingRules::default()
                }),
                scale_up: None,
            }),
        },
        status: None,
    })
}
