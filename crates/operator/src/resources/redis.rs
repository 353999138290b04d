//! The Redis a class runs on when the operator runs it: a one-pod StatefulSet and its Service,
//! with `maxmemory` and the pod's memory from the plan, scaled to zero while no socket server
//! runs. The `Replicated` shape (primary, replicas, Sentinel) is not built yet: it runs the same
//! single primary for now.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, SecurityContext, Service, ServicePort, ServiceSpec,
            TCPSocketAction,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use liveclass_api::{LiveClass, Plan, plan::RedisShape};

use super::{Meta, Names};

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

fn tcp_probe(period: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("redis".to_owned()),
            host: None,
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

pub(crate) fn statefulset(meta: &Meta, lc: &LiveClass, plan: &Plan) -> Option<StatefulSet> {
    if plan.redis.shape == RedisShape::External {
        return None;
    }
    let mut args: Vec<String> = [
        "redis-server",
        "--port",
        &REDIS_PORT.to_string(),
        // The class's state is transient: no snapshots, no AOF, and a full Redis refuses writes
        // rather than silently evicting who-is-where.
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory-policy",
        "noeviction",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut resources = None;
    if let Some(memory) = plan.redis.memory {
        args.push("--maxmemory".to_owned());
        args.push(memory.max_memory_arg());
        let quantity = BTreeMap::from([("memory".to_owned(), Quantity(memory.request_quantity()))]);
        resources = Some(ResourceRequirements {
            requests: Some(quantity.clone()),
            limits: Some(quantity),
            ..ResourceRequirements::default()
        });
    }
    let container = Container {
        name: "redis".to_owned(),
        image: Some(lc.spec.redis.image.clone()),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("redis".to_owned()),
            container_port: i32::from(REDIS_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(tcp_probe(2)),
        liveness_probe: Some(tcp_probe(10)),
        resources,
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(999),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Some(StatefulSet {
        metadata: meta.metadata(&meta.names.redis, COMPONENT),
        spec: StatefulSetSpec {
            replicas: Some(i32::from(plan.redis.running)),
            service_name: Some(meta.names.redis.clone()),
            selector: LabelSelector {
                match_labels: Some(meta.selector(COMPONENT)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(meta.labels(COMPONENT)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        },
        status: None,
    })
}

pub(crate) fn service(meta: &Meta) -> Service {
    Service {
        metadata: meta.metadata(&meta.names.redis, COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(meta.selector(COMPONENT)),
            ports: Some(vec![ServicePort {
                name: Some("redis".to_owned()),
                port: i32::from(REDIS_PORT),
                target_port: Some(IntOrString::String("redis".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
