//! The Redis a class runs on when the operator runs it, in the plan's shape:
//!
//! - `Standalone`: a one-pod StatefulSet and its Service, started by the same script as a
//!   Replicated node with no Sentinels to ask.
//! - `Replicated`: the layout of Bitnami's replication + Sentinel chart, with the Sentinels in
//!   their own StatefulSet as in spotahome's RedisFailover. A StatefulSet of `1 + replicas`
//!   Redis nodes, a headless Service giving each a DNS name, and three Sentinels. A node that
//!   starts asks the Sentinels for the current primary and replicates from it; only when no
//!   Sentinel knows one (the very first start) is node 0 the primary. A node the Sentinels still
//!   name as primary while it restarts (it died faster than they noticed) waits for them to
//!   promote a replica instead of coming back as an empty primary that its replicas would copy.
//!
//! Readiness is asked of Redis itself, never of a TCP port: a node is Ready as a primary or as
//! a replica whose link to its primary is up; a Sentinel is Ready when `SENTINEL CKQUORUM` says
//! a quorum of Sentinels can authorise a failover. `maxmemory` and the pods' memory come from
//! the plan, `maxclients` and the pub/sub output-buffer limit from the class's socket pods; a
//! PodDisruptionBudget and `safe-to-evict: "false"` keep voluntary evictions away from a live
//! class. Everything is scaled to zero while no socket server runs.
//!
//! Closed to others twice: a NetworkPolicy admits only the class's own pods and the operator,
//! and an ACL (Redis 7.0 or later: it uses selectors) gives the class's user, with the
//! generated password, everything, and anyone else only the probes' `PING`/`INFO`/`ROLE` and
//! the two attendance reads the operator makes, so the operator needs no Secret.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
            ExecAction, KeyToPath, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, SecretVolumeSource, SecurityContext, Service, ServicePort,
            ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
        },
        networking::v1::{
            NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
            NetworkPolicySpec,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use liveclass_api::{
    LiveClass, Phase, Plan, ValidSpec,
    plan::{
        RedisShape,
        redis::{
            PER_SOCKET_POD_BYTES, SENTINEL_DOWN_AFTER_MS, SENTINEL_FAILOVER_TIMEOUT_MS,
            SENTINEL_QUORUM,
        },
    },
};

use super::{Meta, Names};

pub const REDIS_PORT: u16 = 6379;
pub const SENTINEL_PORT: u16 = 26379;
/// The name the Sentinels monitor a class's primary under (one set of Sentinels per class).
pub const MASTER_NAME: &str = "liveclass";
const COMPONENT: &str = "redis";
const SENTINEL_COMPONENT: &str = "sentinel";
/// The Redis user the class's own clients log in as.
pub const USER_NAME: &str = "liveclass";
/// The key of the generated `<class>-redis-auth` Secret holding the password.
pub const PASSWORD_KEY: &str = "password";
/// Where the password file is mounted in the Redis, Sentinel and socket pods.
pub const PASSWORD_DIR: &str = "/var/run/liveclass/redis-auth";
/// Keeps the cluster autoscaler from evicting a pod to shrink the cluster.
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// Everything the operator runs for a class's Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisObjects {
    /// The Redis nodes (one, or a primary and its replicas).
    pub statefulset: StatefulSet,
    /// `<class>-redis`: every Ready node. The Standalone socket pods and the operator's
    /// attendance reads (which a replica answers as well) go through it.
    pub service: Service,
    pub pdb: PodDisruptionBudget,
    /// Who may reach the nodes and the Sentinels at all.
    pub network_policy: NetworkPolicy,
    /// Replicated only: the nodes' own DNS names, and the Sentinels.
    pub replicated: Option<ReplicatedObjects>,
}

/// The parts only the Replicated shape has.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicatedObjects {
    /// Headless, publishing not-yet-Ready nodes too: a starting node must reach the others.
    pub nodes: Service,
    pub sentinels: StatefulSet,
    /// Headless as well: each Sentinel is asked by name.
    pub sentinel_service: Service,
    pub sentinel_pdb: PodDisruptionBudget,
}

/// The URL the socket pods use: the Service's name, resolved in the pods' own namespace.
pub(crate) fn in_cluster_url(meta: &Meta) -> String {
    format!("redis://{USER_NAME}@{}:{REDIS_PORT}", meta.names.redis)
}

/// The URL the operator itself uses to reach a class's operator-run Redis, by cluster DNS.
pub fn redis_url(class: &str, namespace: &str) -> String {
    format!(
        "redis://{}.{namespace}.svc:{REDIS_PORT}",
        Names::of(class).redis
    )
}

/// The Sentinels of a Replicated class as the socket pods (in its namespace) address them.
pub(crate) fn sentinel_addrs(meta: &Meta, sentinels: u32) -> Vec<String> {
    (0..sentinels)
        .map(|i| {
            format!(
                "{}-{i}.{}:{SENTINEL_PORT}",
                meta.names.sentinel, meta.names.sentinel
            )
        })
        .collect()
}

/// The Sentinels of a Replicated class as the operator addresses them, from any namespace.
pub fn sentinel_urls(class: &str, namespace: &str, sentinels: u32) -> Vec<String> {
    let names = Names::of(class);
    (0..sentinels)
        .map(|i| {
            format!(
                "redis://{}-{i}.{}.{namespace}.svc:{SENTINEL_PORT}",
                names.sentinel, names.sentinel
            )
        })
        .collect()
}

/// Starts a Redis node: primary or replica of whom the Sentinels name (see the module docs).
/// `$FIRST`, `$SELF`, `$SENTINELS` and `$MASTER` come from the environment, the server's own
/// arguments after the script's name; `$DATA_DIR` (default `/data`) lets it run outside a pod.
pub const NODE_SCRIPT: &str = r#"set -eu
ask() {
  for s in $SENTINELS; do
    a=$(timeout 2 redis-cli -h "${s%:*}" -p "${s##*:}" --raw SENTINEL get-master-addr-by-name "$MASTER" 2>/dev/null | head -n 1) || true
    if [ -n "$a" ]; then echo "$a"; return; fi
  done
}
primary=$(ask)
waited=0
while [ "$primary" = "$SELF" ] && [ "$waited" -lt 30 ]; do
  echo "the Sentinels still name this node, restarted, as the primary: waiting for a failover"
  sleep 2; waited=$((waited + 2)); primary=$(ask)
done
[ -n "$primary" ] || primary="$FIRST"
data=${DATA_DIR:-/data}
# Who may do what: the class's own clients (socket servers, replicas, Sentinels) log in as
# `liveclass` with the class's password; anyone else who can reach the node may only PING and
# ask INFO and ROLE (the probes), read the two attendance figures the operator reads, and
# publish a gateway hand-over (at worst, students reconnect).
pw=$(cat "$PASSWORD_FILE")
umask 077
cat > "$data/auth.conf" <<EOF
user default on nopass resetchannels -@all +ping +info +role (+hlen ~lc:*:where) (+hgetall ~lc:*:pods) (+publish &lc:handover)
user $USER_NAME on >$pw ~* &* +@all
masteruser $USER_NAME
masterauth $pw
EOF
set -- redis-server "$data/auth.conf" --port 6379 --save "" --appendonly no --maxmemory-policy noeviction \
  --dir "$data" --protected-mode no --replica-announce-ip "$SELF" --replica-announce-port 6379 "$@"
if [ "$primary" != "$SELF" ]; then
  echo "replica of $primary"
  set -- "$@" --replicaof "$primary" 6379
else
  echo "primary"
fi
exec "$@"
"#;

/// Ready as a primary, or as a replica whose link to its primary is up.
const NODE_READY: &str = r#"r=$(timeout 2 redis-cli -p 6379 INFO replication) || exit 1
case "$r" in *role:master*|*master_link_status:up*) exit 0 ;; esac
exit 1
"#;

/// Starts a Sentinel monitoring the primary the other Sentinels name, or else the node that
/// answers `ROLE` as a master, or else node 0. `$SENTINEL_DIR` and `$BIND` let the script run
/// outside a pod (tests: several Sentinels on one machine).
const SENTINEL_SCRIPT: &str = r#"set -eu
dir=${SENTINEL_DIR:-/sentinel}
primary=""
for s in $SENTINELS; do
  [ "${s%:*}" = "$SELF" ] && continue
  primary=$(timeout 2 redis-cli -h "${s%:*}" -p "${s##*:}" --raw SENTINEL get-master-addr-by-name "$MASTER" 2>/dev/null | head -n 1) || true
  [ -n "$primary" ] && break
done
waited=0
while [ -z "$primary" ] && [ "$waited" -lt 120 ]; do
  for n in $NODES; do
    if [ "$(timeout 2 redis-cli -h "$n" -p 6379 --raw ROLE 2>/dev/null | head -n 1)" = master ]; then primary=$n; break; fi
  done
  [ -n "$primary" ] && break
  sleep 1; waited=$((waited + 1))
done
[ -n "$primary" ] || primary="$FIRST"
echo "monitoring $primary"
umask 077
cat > "$dir/sentinel.conf" <<EOF
port 26379
${BIND:+bind $BIND}
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SELF
sentinel announce-port 26379
sentinel monitor $MASTER $primary 6379 $QUORUM
sentinel down-after-milliseconds $MASTER $DOWN_AFTER_MS
sentinel failover-timeout $MASTER $FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $MASTER 1
sentinel auth-user $MASTER $USER_NAME
sentinel auth-pass $MASTER $(cat "$PASSWORD_FILE")
EOF
exec redis-server "$dir/sentinel.conf" --sentinel
"#;

/// The Sentinel's start-up script with this operator's quorum and timings.
pub fn sentinel_script() -> String {
    SENTINEL_SCRIPT
        .replace("$QUORUM", &SENTINEL_QUORUM.to_string())
        .replace("$DOWN_AFTER_MS", &SENTINEL_DOWN_AFTER_MS.to_string())
        .replace(
            "$FAILOVER_TIMEOUT_MS",
            &SENTINEL_FAILOVER_TIMEOUT_MS.to_string(),
        )
}

/// Ready when a quorum of Sentinels can authorise a failover.
const SENTINEL_READY: &str =
    r#"timeout 2 redis-cli -p 26379 SENTINEL ckquorum "$MASTER" | grep -q '^OK'"#;

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn pod_name_env() -> EnvVar {
    EnvVar {
        name: "POD_NAME".to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn exec_probe(script: &str, period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

fn security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(999),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn selector(meta: &Meta, component: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(meta.selector(component)),
        match_expressions: None,
    }
}

/// Spread over nodes: losing one node must not take the primary and its replicas, or a
/// majority of the Sentinels, at once.
fn spread(meta: &Meta, component: &str) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(selector(meta, component)),
        ..TopologySpreadConstraint::default()
    }]
}

fn pod_template(meta: &Meta, component: &str, pod: PodSpec) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(meta.labels(component)),
            // Always, not only while a class is on: a change of the template would restart
            // Redis, and between classes it holds no pods (or the next class's warm state).
            annotations: Some(BTreeMap::from([(
                SAFE_TO_EVICT.to_owned(),
                "false".to_owned(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(pod),
    }
}

fn statefulset(
    meta: &Meta,
    name: &str,
    component: &str,
    service: &str,
    replicas: u32,
    pod: PodSpec,
) -> StatefulSet {
    StatefulSet {
        metadata: meta.metadata(name, component),
        spec: StatefulSetSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            service_name: Some(service.to_owned()),
            // Every node starts at once: a node finds its primary by asking, not by order.
            pod_management_policy: Some("Parallel".to_owned()),
            selector: selector(meta, component),
            template: pod_template(meta, component, pod),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

/// The server's own arguments: memory and clients from the plan and the class's pods.
fn server_args(spec: &ValidSpec, plan: &Plan) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(memory) = plan.redis.memory {
        args.extend(["--maxmemory".to_owned(), memory.max_memory_arg()]);
    }
    // Each socket pod holds a command and a pub/sub connection (a few while one reconnects);
    // the rest is the operator, the replicas, the Sentinels and someone debugging.
    let maxclients = 64 + 8 * u64::from(spec.socket.max_replicas);
    args.extend(["--maxclients".to_owned(), maxclients.to_string()]);
    // A socket pod's subscription may fall as far behind as the memory planned for it; past
    // that it is cut, and the pod catches up from the stream as after any outage.
    let mb = PER_SOCKET_POD_BYTES / (1024 * 1024);
    args.extend([
        "--client-output-buffer-limit".to_owned(),
        format!("pubsub {}mb {mb}mb 30", 2 * mb),
    ]);
    args
}

fn resources(plan: &Plan) -> Option<ResourceRequirements> {
    let memory = plan.redis.memory?;
    let quantity = Quantity(memory.request_quantity());
    Some(ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("memory".to_owned(), quantity.clone()),
            ("cpu".to_owned(), Quantity("100m".to_owned())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), quantity)])),
        ..ResourceRequirements::default()
    })
}

/// While a class is on (or warming up for one), no voluntary eviction of a Standalone Redis:
/// it would lose every student's state. Between classes a node drain may move it.
fn pdb(meta: &Meta, name: &str, component: &str, max_unavailable: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta.metadata(name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(selector(meta, component)),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

fn class_is_on(plan: &Plan) -> bool {
    matches!(
        plan.phase,
        Phase::WarmingUp | Phase::Live | Phase::CoolingDown
    )
}

fn headless(meta: &Meta, name: &str, component: &str, port_name: &str, port: u16) -> Service {
    Service {
        metadata: meta.metadata(name, component),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(meta.selector(component)),
            ports: Some(vec![service_port(port_name, port)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

pub(crate) fn objects(
    meta: &Meta,
    lc: &LiveClass,
    spec: &ValidSpec,
    plan: &Plan,
) -> Option<RedisObjects> {
    match plan.redis.shape {
        RedisShape::External => None,
        RedisShape::Standalone => Some(RedisObjects {
            statefulset: standalone(meta, lc, spec, plan),
            service: service(meta),
            pdb: pdb(
                meta,
                &meta.names.redis,
                COMPONENT,
                i32::from(!class_is_on(plan)),
            ),
            network_policy: network_policy(meta),
            replicated: None,
        }),
        RedisShape::Replicated {
            replicas,
            sentinels,
        } => Some(replicated(meta, lc, spec, plan, replicas, sentinels)),
    }
}

fn standalone(meta: &Meta, lc: &LiveClass, spec: &ValidSpec, plan: &Plan) -> StatefulSet {
    // The same script with no Sentinels to ask: the one node is the primary.
    let me = format!(
        "{}-0.{}.{}.svc",
        meta.names.redis, meta.names.redis, meta.namespace
    );
    let env = vec![
        env("SELF", me.clone()),
        env("FIRST", me),
        env("MASTER", MASTER_NAME),
        env("SENTINELS", ""),
        env("NODES", ""),
    ];
    let mut sts = statefulset(
        meta,
        &meta.names.redis,
        COMPONENT,
        &meta.names.redis,
        u32::from(plan.redis.running),
        PodSpec {
            containers: vec![node_container(lc, spec, plan, env)],
            volumes: Some(vec![empty_dir("data"), password_volume(meta)]),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            ..PodSpec::default()
        },
    );
    // One pod has no start order, and the policy of an existing StatefulSet cannot change:
    // left as the Standalone Redis of earlier versions has it, so an upgrade applies cleanly.
    sts.spec.pod_management_policy = None;
    sts
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// The class's Redis password, as a file (never in the pod spec or on a command line).
fn password_volume(meta: &Meta) -> Volume {
    Volume {
        name: "redis-auth".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(meta.names.redis_auth.clone()),
            items: Some(vec![KeyToPath {
                key: PASSWORD_KEY.to_owned(),
                path: "password".to_owned(),
                mode: None,
                user: None,
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mounts(scratch: (&str, &str)) -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: scratch.0.to_owned(),
            mount_path: scratch.1.to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "redis-auth".to_owned(),
            mount_path: PASSWORD_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ]
}

fn auth_env() -> [EnvVar; 2] {
    [
        env("USER_NAME", USER_NAME),
        env("PASSWORD_FILE", format!("{PASSWORD_DIR}/password")),
    ]
}

/// A Redis node started by [`NODE_SCRIPT`] with `env` saying who it is and whom to ask.
fn node_container(
    lc: &LiveClass,
    spec: &ValidSpec,
    plan: &Plan,
    mut env: Vec<EnvVar>,
) -> Container {
    let mut command = vec!["sh".to_owned(), "-c".to_owned(), NODE_SCRIPT.to_owned()];
    command.push("redis-node".to_owned());
    command.extend(server_args(spec, plan));
    env.extend(auth_env());
    Container {
        name: "redis".to_owned(),
        image: Some(lc.spec.redis.image.clone()),
        command: Some(command),
        ports: Some(vec![port("redis", REDIS_PORT)]),
        env: Some(env),
        readiness_probe: Some(exec_probe(NODE_READY, 2, 2)),
        // A node waits up to 30 s for a failover before it starts listening; a replica's
        // first full sync may take longer than that, and only readiness waits for it.
        startup_probe: Some(exec_probe(
            "timeout 2 redis-cli -p 6379 PING | grep -q PONG",
            2,
            30,
        )),
        liveness_probe: Some(exec_probe(
            "timeout 2 redis-cli -p 6379 PING | grep -q PONG",
            10,
            3,
        )),
        resources: resources(plan),
        // A replica receives its first copy as a file (the root file system is read-only).
        volume_mounts: Some(mounts(("data", "/data"))),
        security_context: Some(security_context()),
        ..Container::default()
    }
}

fn replicated(
    meta: &Meta,
    lc: &LiveClass,
    spec: &ValidSpec,
    plan: &Plan,
    replicas: u32,
    sentinels: u32,
) -> RedisObjects {
    let names = &meta.names;
    let ns = &meta.namespace;
    // Names as the nodes announce themselves and the Sentinels report them: resolvable from
    // any namespace (the operator's too).
    let node = |i: u32| format!("{}-{i}.{}.{ns}.svc", names.redis, names.redis_nodes);
    let sentinel = |i: u32| format!("{}-{i}.{}.{ns}.svc", names.sentinel, names.sentinel);
    let nodes: Vec<String> = (0..=replicas).map(node).collect();
    let sentinel_list: Vec<String> = (0..sentinels)
        .map(|i| format!("{}:{SENTINEL_PORT}", sentinel(i)))
        .collect();
    let running = plan.redis.running;
    let common_env = |self_domain: String| {
        vec![
            pod_name_env(),
            EnvVar {
                name: "SELF".to_owned(),
                value: Some(format!("$(POD_NAME).{self_domain}")),
                value_from: None,
            },
            env("MASTER", MASTER_NAME),
            env("FIRST", node(0)),
            env("SENTINELS", sentinel_list.join(" ")),
            env("NODES", nodes.join(" ")),
        ]
    };
    let sh = |script: &str| vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];

    let node_container = node_container(
        lc,
        spec,
        plan,
        common_env(format!("{}.{ns}.svc", names.redis_nodes)),
    );
    let sentinel_container = Container {
        name: "sentinel".to_owned(),
        image: Some(lc.spec.redis.image.clone()),
        command: Some(sh(&sentinel_script())),
        ports: Some(vec![port("sentinel", SENTINEL_PORT)]),
        env: Some(
            common_env(format!("{}.{ns}.svc", names.sentinel))
                .into_iter()
                .chain(auth_env())
                .collect(),
        ),
        readiness_probe: Some(exec_probe(SENTINEL_READY, 2, 2)),
        startup_probe: Some(exec_probe(
            "timeout 2 redis-cli -p 26379 PING | grep -q PONG",
            2,
            90,
        )),
        liveness_probe: Some(exec_probe(
            "timeout 2 redis-cli -p 26379 PING | grep -q PONG",
            10,
            3,
        )),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("memory".to_owned(), Quantity("32Mi".to_owned())),
                ("cpu".to_owned(), Quantity("20m".to_owned())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("64Mi".to_owned()),
            )])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(mounts(("sentinel", "/sentinel"))),
        security_context: Some(security_context()),
        ..Container::default()
    };
    let pod = |container: Container, component: &str, volumes: Option<Vec<Volume>>| PodSpec {
        containers: vec![container],
        volumes,
        topology_spread_constraints: Some(spread(meta, component)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    };
    RedisObjects {
        statefulset: statefulset(
            meta,
            &names.redis,
            COMPONENT,
            &names.redis_nodes,
            if running { replicas + 1 } else { 0 },
            pod(
                node_container,
                COMPONENT,
                Some(vec![empty_dir("data"), password_volume(meta)]),
            ),
        ),
        service: service(meta),
        pdb: pdb(meta, &names.redis, COMPONENT, 1),
        network_policy: network_policy(meta),
        replicated: Some(ReplicatedObjects {
            nodes: headless(meta, &names.redis_nodes, COMPONENT, "redis", REDIS_PORT),
            sentinels: statefulset(
                meta,
                &names.sentinel,
                SENTINEL_COMPONENT,
                &names.sentinel,
                if running { sentinels } else { 0 },
                pod(
                    sentinel_container,
                    SENTINEL_COMPONENT,
                    // The Sentinel rewrites its configuration as it learns: a writable file.
                    Some(vec![empty_dir("sentinel"), password_volume(meta)]),
                ),
            ),
            sentinel_service: headless(
                meta,
                &names.sentinel,
                SENTINEL_COMPONENT,
                "sentinel",
                SENTINEL_PORT,
            ),
            sentinel_pdb: pdb(meta, &names.sentinel, SENTINEL_COMPONENT, 1),
        }),
    }
}

/// The class's Redis nodes and Sentinels accept connections only from the class's own socket
/// pods, nodes and Sentinels, and from the operator (attendance and the primary's name), in
/// whatever namespace the chart put it. Kubelet probes are `exec`, so they need no rule. Where
/// the cluster's network plugin enforces NetworkPolicy, the password is then the second wall.
fn network_policy(meta: &Meta) -> NetworkPolicy {
    let ours = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "app.kubernetes.io/instance".to_owned(),
            meta.class.clone(),
        )])),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app.kubernetes.io/name".to_owned(),
            operator: "In".to_owned(),
            values: Some(vec![
                "liveclass-redis".to_owned(),
                "liveclass-sentinel".to_owned(),
            ]),
        }]),
    };
    let class_pods = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "app.kubernetes.io/instance".to_owned(),
            meta.class.clone(),
        )])),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app.kubernetes.io/name".to_owned(),
            operator: "In".to_owned(),
            values: Some(vec![
                "liveclass-socket".to_owned(),
                "liveclass-redis".to_owned(),
                "liveclass-sentinel".to_owned(),
            ]),
        }]),
    };
    let operator = LabelSelector {
        match_labels: Some(BTreeMap::from([
            (
                "app.kubernetes.io/part-of".to_owned(),
                "liveclass".to_owned(),
            ),
            (
                "app.kubernetes.io/component".to_owned(),
                "operator".to_owned(),
            ),
        ])),
        match_expressions: None,
    };
    let ports = [REDIS_PORT, SENTINEL_PORT]
        .map(|p| NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(p))),
            protocol: Some("TCP".to_owned()),
            end_port: None,
        })
        .to_vec();
    NetworkPolicy {
        metadata: meta.metadata(&meta.names.redis, COMPONENT),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(ours),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![
                    NetworkPolicyPeer {
                        pod_selector: Some(class_pods),
                        ..NetworkPolicyPeer::default()
                    },
                    NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector::default()),
                        pod_selector: Some(operator),
                        ..NetworkPolicyPeer::default()
                    },
                ]),
                ports: Some(ports),
            }]),
            egress: None,
        }),
    }
}

pub(crate) fn service(meta: &Meta) -> Service {
    Service {
        metadata: meta.metadata(&meta.names.redis, COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(meta.selector(COMPONENT)),
            ports: Some(vec![service_port("redis", REDIS_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
