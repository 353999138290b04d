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
    build(lc, &spec, &plan, &token_source(lc)).unwrap()
}

fn env<'a>(d: &'a Desired, name: &str) -> &'a k8s_openapi::api::core::v1::EnvVar {
    let pod = &d.deployment.as_ref().unwrap().spec;
    let container = &pod.template.spec.as_ref().unwrap().containers[0];
    container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn live_class_gets_planned_replicas_probes_ports_and_owner() {
    let lc = class(serde_json::json!({}));
    let d = desired(&lc, "2026-12-01T14:10:00Z");
    let deployment = d.deployment.clone().unwrap();
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
    let ports: Vec<_> = container
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(ports, [("ws".to_owned(), 8080), ("admin".to_owned(), 9090)]);
    let readiness = container.readiness_probe.as_ref().unwrap();
    assert_eq!(
        readiness.http_get.as_ref().unwrap().path.as_deref(),
        Some("/readyz")
    );
    // Out of the endpoints only after 3 failed probes 2 s apart: a Redis blip is ridden out.
    assert_eq!(
        (readiness.period_seconds, readiness.failure_threshold),
        (Some(2), Some(3))
    );
    // drain 30s + preStop 5s + slack 10s
    assert_eq!(pod.termination_grace_period_seconds, Some(45));
    assert_eq!(pod.enable_service_links, Some(false));
    assert_eq!(
        env(&d, "LIVECLASS_POD_ID")
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    assert_eq!(
        env(&d, "LIVECLASS_CLASS").value.as_deref(),
        Some("school/physics-101")
    );
    assert_eq!(
        env(&d, "LIVECLASS_ADMIN_LISTEN").value.as_deref(),
        Some("0.0.0.0:9090")
    );
    assert_eq!(
        env(&d, "LIVECLASS_REDIS_URL").value.as_deref(),
        Some("redis://liveclass@physics-101-redis:6379")
    );
    assert_eq!(
        env(&d, "LIVECLASS_DRAIN_WINDOW").value.as_deref(),
        Some("30s")
    );
    assert_eq!(
        env(&d, "LIVECLASS_REDIS_PASSWORD_FILE").value.as_deref(),
        Some("/var/run/liveclass/redis-auth/key")
    );
    let volumes = pod.volumes.unwrap();
    let auth = volumes.iter().find(|v| v.name == "redis-auth").unwrap();
    assert_eq!(
        auth.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("physics-101-redis-auth")
    );
    assert_eq!(
        volumes[0].secret.as_ref().unwrap().secret_name.as_deref(),
        Some("tokens")
    );
    assert!(pod.topology_spread_constraints.is_some());
    let redis = d.redis.clone().unwrap();
    assert_eq!(redis.statefulset.spec.replicas, Some(1));
    assert_eq!(
        redis.service.metadata.name.as_deref(),
        Some("physics-101-redis")
    );
    assert!(redis.replicated.is_none());
    let headless = d.headless_service.clone().unwrap().spec.unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert!(d.hpa.is_none());
    assert_eq!(d.owned().len(), 8);
}

/// Whether `ip` is inside `net` (`addr/len`), for IPv4 and IPv6 alike.
fn in_net(net: &str, ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let (addr, len) = net.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 4),
        IpAddr::V6(v6) => (u128::from(v6), 6),
    };
    let (net_bits, net_family) = bits(addr.parse().unwrap());
    let (ip_bits, ip_family) = bits(ip);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    net_family == ip_family && net_bits & mask == ip_bits & mask
}

#[test]
fn socket_pods_believe_the_gateway_for_the_students_address() {
    let d = desired(&class(serde_json::json!({})), "2026-12-01T14:10:00Z");
    let nets = env(&d, "LIVECLASS_TRUSTED_PROXIES").value.clone().unwrap();
    let trusted = |ip: &str| nets.split(',').any(|n| in_net(n, ip.parse().unwrap()));
    // The local cluster's pod network (10.245.0.0/16) and those of common CNIs.
    for gateway in [
        "10.245.0.7",
        "172.17.0.3",
        "192.168.1.9",
        "100.64.3.2",
        "fd00::1",
    ] {
        assert!(trusted(gateway), "{gateway} not trusted in {nets}");
    }
    for student in ["203.0.113.5", "8.8.8.8", "2001:db8::1", "172.32.0.1"] {
        assert!(!trusted(student), "{student} trusted in {nets}");
    }
}

#[test]
fn without_a_token_secret_the_generated_one_is_mounted_with_its_previous_key() {
    let mut lc = class(serde_json::json!({}));
    lc.spec.socket.token_secret_ref = None;
    let d = desired(&lc, "2026-12-01T14:10:00Z");
    let pod = d.deployment.unwrap().spec.template.spec.unwrap();
    let volumes = pod.volumes.unwrap();
    let current = volumes[0].secret.as_ref().unwrap();
    assert_eq!(current.secret_name.as_deref(), Some("physics-101-token"));
    assert_eq!(current.items.as_ref().unwrap()[0].key, GENERATED_KEY);
    let previous = volumes[1].secret.as_ref().unwrap();
    assert_eq!(
        previous.items.as_ref().unwrap()[0].key,
        GENERATED_PREVIOUS_KEY
    );
    assert_eq!(previous.optional, Some(true), "absent between rotations");
    let env = pod.containers[0].env.clone().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "LIVECLASS_TOKEN_PREVIOUS_SECRET_FILE")
    );
    let secret = generated_token_secret(&lc, "physics-101-token", "k".repeat(64)).unwrap();
    assert_eq!(secret.data.unwrap()[GENERATED_KEY].0.len(), 64);
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].name,
        "physics-101"
    );
}

#[test]
fn between_classes_replicas_are_idle_and_redis_stops_when_no_pod_runs() {
    let lc = class(serde_json::json!({}));
    let d = desired(&lc, "2026-11-30T10:00:00Z");
    assert_eq!(d.deployment.unwrap().spec.replicas, Some(1));
    let lc = class(serde_json::json!({ "spec": { "socket": { "idleReplicas": 0 } } }));
    let d = desired(&lc, "2026-11-30T10:00:00Z");
    assert_eq!(d.deployment.unwrap().spec.replicas, Some(0));
    assert_eq!(d.redis.unwrap().statefulset.spec.replicas, Some(0));
}

#[test]
fn an_ended_class_past_its_ttl_owns_nothing() {
    let lc = class(serde_json::json!({}));
    let d = desired(&lc, "2026-12-03T10:00:00Z");
    assert_eq!(d, Desired::default());
    assert!(d.owned().is_empty());
}

#[test]
fn external_redis_builds_no_redis_and_takes_the_url_from_the_secret() {
    let lc = class(serde_json::json!({
        "spec": { "redis": { "mode": "External", "external": { "secretRef": { "name": "r", "key": "url" } } } }
    }));
    let d = desired(&lc, "2026-12-01T14:10:00Z");
    assert!(d.redis.is_none());
    let url = env(&d, "LIVECLASS_REDIS_URL");
    assert_eq!(url.value, None);
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
fn with_autoscaling_the_hpa_gets_the_plan_the_drain_pace_and_the_deployment_no_replicas() {
    let lc = class(serde_json::json!({ "spec": {
        "autoscaling": { "targetCpuUtilization": 60 },
        "socket": { "resources": { "requests": { "cpu": "500m" } } },
    } }));
    let d = desired(&lc, "2026-12-01T14:10:00Z");
    assert_eq!(d.deployment.unwrap().spec.replicas, None);
    let hpa = d.hpa.unwrap().spec;
    assert_eq!(hpa.min_replicas, Some(5));
    assert_eq!(hpa.scale_target_ref.name, "physics-101-socket");
    let policy = &hpa.behavior.unwrap().scale_down.unwrap().policies.unwrap()[0];
    assert_eq!(
        (policy.type_.as_str(), policy.value, policy.period_seconds),
        ("Percent", 25, 60)
    );
}

#[test]
fn the_same_input_gives_the_same_objects_and_a_config_change_changes_the_template() {
    let a = desired(&class(serde_json::json!({})), "2026-12-01T14:10:00Z");
    let b = desired(&class(serde_json::json!({})), "2026-12-01T14:10:00Z");
    assert_eq!(a, b);
    let c = desired(
        &class(serde_json::json!({ "spec": { "socket": { "drainWindow": "40s" } } })),
        "2026-12-01T14:10:00Z",
    );
    let template = |d: &Desired| d.deployment.clone().unwrap().spec.template;
    assert_ne!(template(&a), template(&c));
}

#[test]
fn an_object_without_uid_cannot_be_owned() {
    let mut lc = class(serde_json::json!({}));
    lc.metadata.uid = None;
    let spec = validate(&lc.spec).unwrap();
    let plan = plan(&spec, at("2026-12-01T14:10:00Z"), &Observed::default());
    assert!(matches!(
        build(&lc, &spec, &plan, &token_source(&lc)),
        Err(Error::MissingField(_))
    ));
}

fn container(
    sts: &k8s_openapi::api::apps::v1::StatefulSet,
) -> &k8s_openapi::api::core::v1::Container {
    &sts.spec.template.spec.as_ref().unwrap().containers[0]
}

fn env_value(c: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn replicated_redis_is_a_primary_two_replicas_and_three_sentinels_the_socket_pods_ask() {
    let lc = class(serde_json::json!({ "spec": { "redis": { "mode": "Replicated" } } }));
    let d = desired(&lc, "2026-12-01T14:10:00Z");
    let redis = d.redis.clone().unwrap();
    let x = redis.replicated.clone().unwrap();

    // Three nodes started together, each finding its primary by asking the Sentinels.
    assert_eq!(redis.statefulset.spec.replicas, Some(3));
    assert_eq!(
        redis.statefulset.spec.pod_management_policy.as_deref(),
        Some("Parallel")
    );
    assert_eq!(
        redis.statefulset.spec.service_name.as_deref(),
        Some("physics-101-redis-nodes")
    );
    let node = container(&redis.statefulset);
    let command = node.command.clone().unwrap();
    assert_eq!(command[..2], ["sh".to_owned(), "-c".to_owned()]);
    assert_eq!(command[2], NODE_SCRIPT);
    assert!(command.windows(2).any(|w| w[0] == "--maxmemory"));
    assert_eq!(
        env_value(node, "SELF").as_deref(),
        Some("$(POD_NAME).physics-101-redis-nodes.school.svc")
    );
    assert_eq!(
        env_value(node, "FIRST").as_deref(),
        Some("physics-101-redis-0.physics-101-redis-nodes.school.svc")
    );
    assert_eq!(env_value(node, "SENTINELS").unwrap().split(' ').count(), 3);
    // Readiness asks Redis (primary, or replica with its link up), not a TCP port.
    let ready = node.readiness_probe.as_ref().unwrap();
    assert!(ready.tcp_socket.is_none());
    assert!(
        ready.exec.as_ref().unwrap().command.as_ref().unwrap()[2].contains("master_link_status:up")
    );

    // Headless, publishing pods before they are Ready: a starting node must find the others.
    for svc in [&x.nodes, &x.sentinel_service] {
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
    }
    assert_eq!(x.sentinels.spec.replicas, Some(3));
    let sentinel = container(&x.sentinels);
    assert_eq!(sentinel.command.as_ref().unwrap()[2], sentinel_script());
    assert!(sentinel_script().contains("sentinel monitor $MASTER $primary 6379 2"));
    assert!(
        sentinel
            .readiness_probe
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .command
            .as_ref()
            .unwrap()[2]
            .contains("ckquorum")
    );

    // Spread over nodes, never evicted by the autoscaler, one pod at a time by a drain.
    for sts in [&redis.statefulset, &x.sentinels] {
        let template = &sts.spec.template;
        assert_eq!(
            template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[SAFE_TO_EVICT],
            "false"
        );
        assert!(
            template
                .spec
                .as_ref()
                .unwrap()
                .topology_spread_constraints
                .is_some()
        );
    }
    for pdb in [&redis.pdb, &x.sentinel_pdb] {
        assert_eq!(
            pdb.spec.as_ref().unwrap().max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
    }

    // The socket pods follow the primary through the Sentinels.
    assert_eq!(
        env(&d, "LIVECLASS_REDIS_SENTINELS").value.as_deref(),
        Some(
            "physics-101-sentinel-0.physics-101-sentinel:26379,\
             physics-101-sentinel-1.physics-101-sentinel:26379,\
             physics-101-sentinel-2.physics-101-sentinel:26379"
        )
    );
    assert_eq!(
        env(&d, "LIVECLASS_REDIS_MASTER_NAME").value.as_deref(),
        Some(MASTER_NAME)
    );
    // Only the class's own pods and the operator may connect, on the two Redis ports.
    let policy = redis.network_policy.spec.clone().unwrap();
    let pods = policy.pod_selector.unwrap();
    assert_eq!(
        pods.match_labels.unwrap()["app.kubernetes.io/instance"],
        "physics-101"
    );
    assert_eq!(
        pods.match_expressions.unwrap()[0].values.clone().unwrap(),
        ["liveclass-redis", "liveclass-sentinel"]
    );
    let rule = &policy.ingress.unwrap()[0];
    let from = rule.from.clone().unwrap();
    assert_eq!(from.len(), 2);
    assert!(
        from[0].namespace_selector.is_none(),
        "the class's pods: its namespace only"
    );
    assert_eq!(
        from[0]
            .pod_selector
            .clone()
            .unwrap()
            .match_expressions
            .unwrap()[0]
            .values
            .clone()
            .unwrap(),
        ["liveclass-socket", "liveclass-redis", "liveclass-sentinel"]
    );
    assert_eq!(
        from[1].pod_selector.clone().unwrap().match_labels.unwrap()["app.kubernetes.io/component"],
        "operator"
    );
    let ports: Vec<_> = rule
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| p.port.unwrap())
        .collect();
    assert_eq!(
        ports,
        [6379, 26379].map(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int)
    );
    // The socket objects (4), the Redis (4) and the Replicated parts (4).
    assert_eq!(d.owned().len(), 12);
    let all = Names::of("physics-101").all_owned();
    assert!(
        d.owned().iter().all(|o| all.contains(o)),
        "every object is one the apply step can delete"
    );
}

#[test]
fn redis_is_sized_to_the_class_and_a_standalone_one_is_not_evicted_while_the_class_is_on() {
    let max_unavailable = |d: &Desired| {
        d.redis
            .as_ref()
            .unwrap()
            .pdb
            .spec
            .as_ref()
            .unwrap()
            .max_unavailable
            .clone()
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let lc = class(serde_json::json!({ "spec": { "socket": { "maxReplicas": 10 } } }));
    // Live: no voluntary eviction; days before: a drain may move it.
    let live = desired(&lc, "2026-12-01T14:10:00Z");
    assert_eq!(max_unavailable(&live), Some(IntOrString::Int(0)));
    let before = desired(&lc, "2026-11-30T10:00:00Z");
    assert_eq!(max_unavailable(&before), Some(IntOrString::Int(1)));

    // The same start-up script as a Replicated node, with no Sentinels to ask.
    let node = container(&live.redis.as_ref().unwrap().statefulset);
    assert_eq!(node.command.as_ref().unwrap()[2], NODE_SCRIPT);
    assert_eq!(env_value(node, "SENTINELS").as_deref(), Some(""));
    assert_eq!(
        env_value(node, "PASSWORD_FILE").as_deref(),
        Some("/var/run/liveclass/redis-auth/password")
    );
    let args = node.command.clone().unwrap();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
    };
    assert_eq!(after("--maxclients").as_deref(), Some("144"));
    assert_eq!(
        after("--client-output-buffer-limit").as_deref(),
        Some("pubsub 8mb 4mb 30")
    );
    let resources = container(&live.redis.as_ref().unwrap().statefulset)
        .resources
        .clone()
        .unwrap();
    assert!(resources.requests.unwrap().contains_key("cpu"));
    assert!(live.redis.as_ref().unwrap().replicated.is_none());
}
