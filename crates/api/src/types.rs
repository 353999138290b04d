//! The `LiveClass` resource (`liveclass.dev/v1alpha1`) as cluster admins write it.
//!
//! These types are the contract with `kubectl apply`: the CRD's schema, descriptions, defaults
//! and CEL rules are all generated from them (`LiveClass::crd()`). Everything here stays loose
//! enough to deserialize whatever the API server accepted (times, zones and cron patterns are
//! strings); [`crate::validate`] turns a spec into the typed form the planner needs.
//!
//! Unsigned numbers say `format: int32`/`int64` in the schema: the API server knows those and
//! warns about schemars' own `uint32`, and every range here fits the signed type.

use k8s_openapi::{
    api::core::v1::ResourceRequirements,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;

/// A live class: when it happens, how many students are expected, and the socket servers and
/// Redis that must be Ready for them before the bell rings.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "liveclass.dev",
    version = "v1alpha1",
    kind = "LiveClass",
    plural = "liveclasses",
    shortname = "lc",
    namespaced,
    status = "LiveClassStatus",
    doc = "A live class: when it happens, how many students are expected, and the socket servers and Redis sized for them ahead of the start.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Where the class is in its schedule"}"#,
    printcolumn = r#"{"name":"Start","type":"date","jsonPath":".status.occurrenceStart","description":"Start of the current or next occurrence"}"#,
    printcolumn = r#"{"name":"Expected","type":"integer","jsonPath":".spec.expectedAttendance","description":"Students expected"}"#,
    printcolumn = r#"{"name":"Planned","type":"integer","jsonPath":".status.plannedReplicas","description":"Socket server replicas the plan asks for"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.readyReplicas","description":"Socket server replicas Ready"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","description":"Whether the class has the capacity and Redis its plan asks for"}"#,
    printcolumn = r#"{"name":"Connected","type":"integer","jsonPath":".status.connectedStudents","description":"Students connected now"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new(NAME_RULE).message(NAME_MESSAGE),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(AUTOSCALING_CPU_RULE).message(AUTOSCALING_CPU_MESSAGE))]
pub struct LiveClassSpec {
    /// When the class happens: a one-off `start`, or a recurring `cron` in a `timeZone`.
    pub schedule: Schedule,

    /// How many students are expected to connect. Capacity is planned for this many times
    /// `socket.headroom`; more students than this raise capacity during the class.
    #[schemars(range(min = 1, max = 1_000_000), extend("format" = "int32"))]
    pub expected_attendance: u32,

    /// How long before the start the capacity must already be Ready (e.g. `10m`).
    #[serde(default = "default_warmup")]
    pub warmup: GoDuration,

    /// How long after the end the capacity is held before it is drained in steps (e.g. `15m`).
    #[serde(default = "default_cooldown")]
    pub cooldown: GoDuration,

    /// The socket servers that hold the students' connections.
    pub socket: SocketSpec,

    /// The Redis that carries presence, history and broadcasts for the class.
    #[serde(default)]
    pub redis: RedisSpec,

    /// When set, the operator also creates a HorizontalPodAutoscaler for the socket servers and
    /// moves its `minReplicas` to the plan instead of setting the Deployment's replicas. It
    /// scales on CPU, so `socket.resources.requests.cpu` is required with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// How long a class that has ended for good (a one-off class after its drain, or a
    /// recurring one whose pattern never fires again) keeps its idle socket servers and Redis
    /// before they are released (deleted). Counted from the end plus the cool-down.
    #[serde(default = "default_ended_ttl")]
    pub ended_ttl: GoDuration,
}

/// The CEL rule on the whole object that keeps `metadata.name` usable in the names of the
/// objects a class owns (`<name>-socket-headless` is a Service, a DNS label of at most 63).
pub const NAME_RULE: &str =
    "self.metadata.name.size() <= 47 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";
/// The message of [`NAME_RULE`].
pub const NAME_MESSAGE: &str = "metadata.name must be at most 47 characters, start with a \
    lowercase letter, end with a letter or digit and hold only lowercase letters, digits and '-' \
    (it names the class's Services and pods, such as <name>-socket-headless)";

/// Autoscaling on CPU needs a CPU request: the HPA's utilisation is a share of it.
pub const AUTOSCALING_CPU_RULE: &str = "!has(self.autoscaling) || (has(self.socket.resources) \
    && has(self.socket.resources.requests) && 'cpu' in self.socket.resources.requests)";
/// The message of [`AUTOSCALING_CPU_RULE`].
pub const AUTOSCALING_CPU_MESSAGE: &str = "autoscaling scales on CPU utilisation, a share of \
    the CPU the pods request: set socket.resources.requests.cpu, or remove autoscaling";

fn default_ended_ttl() -> GoDuration {
    GoDuration::from("1h")
}

/// An RFC 3339 time with a zone, as `schedule.start` takes it.
const START_PATTERN: &str =
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$";

fn default_warmup() -> GoDuration {
    GoDuration::from("10m")
}

fn default_cooldown() -> GoDuration {
    GoDuration::from("15m")
}

/// When a class happens. Set exactly one of `start` (a one-off class) or `cron` with
/// `timeZone` (a recurring class).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.start) != has(self.cron)")
        .message("set exactly one of start (a one-off class) or cron with timeZone (a recurring class)"),
    validation = Rule::new("!has(self.cron) || has(self.timeZone)")
        .message("timeZone is required with cron: set an IANA zone such as Europe/Berlin"),
    validation = Rule::new("!has(self.timeZone) || has(self.cron)")
        .message("timeZone only applies to cron: a one-off start carries its own UTC offset"),
)]
pub struct Schedule {
    /// Start of a one-off class, as an RFC 3339 time with a zone, e.g. `2026-12-01T14:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // No `format: date-time`: CEL would then see a timestamp and could not tell whether a zone
    // was given, and the API server's date-time format accepts times without one.
    #[schemars(length(max = 64))]
    #[x_kube(
        validation = Rule::new(format!("self.matches('{START_PATTERN}')"))
            .message("start must be an RFC 3339 time with a zone, like 2026-12-01T14:00:00Z or 2026-12-01T20:00:00+06:00"),
        validation = Rule::new(format!("!self.matches('{START_PATTERN}') || timestamp(self) > timestamp('1970-01-01T00:00:00Z')"))
            .message("start must be a real date and time after 1970"),
    )]
    pub start: Option<String>,

    /// Start times of a recurring class, as a five-field cron pattern (minute hour day-of-month
    /// month day-of-week) read in `timeZone`, e.g. `0 14 * * MON`; `@weekly`, `@daily` also work.
    /// Across daylight-saving changes a time skipped by the clock starts right after the gap, and
    /// a time the clock passes twice starts once, the first time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new(
        "self.matches('^ *(@(yearly|annually|monthly|weekly|daily|hourly)|[^ ]+( +[^ ]+){4}) *$')"
    ).message("cron must have five fields (minute hour day-of-month month day-of-week), like '0 14 * * MON', or be @weekly, @daily..."))]
    pub cron: Option<String>,

    /// IANA time zone that `cron` is read in, e.g. `Europe/Berlin`, `Asia/Dhaka`,
    /// `America/New_York`. Required with `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')")
        .message("timeZone must be an IANA zone name such as Europe/Berlin, Asia/Dhaka or UTC"))]
    pub time_zone: Option<String>,

    /// How long each class lasts (e.g. `90m`, `1h30m`).
    pub duration: GoDuration,
}

/// The socket servers: how many connections each holds and how far the plan may scale them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas")
        .message("minReplicas must not be greater than maxReplicas"),
    validation = Rule::new("!has(self.idleReplicas) || self.idleReplicas <= self.maxReplicas")
        .message("idleReplicas must not be greater than maxReplicas"),
)]
pub struct SocketSpec {
    /// Container image of the socket server (`liveclass-socket`).
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Connections one socket server pod is sized to hold.
    #[serde(default = "default_connections_per_pod")]
    #[schemars(range(min = 1, max = 1_000_000), extend("format" = "int32"))]
    pub connections_per_pod: u32,

    /// Spare capacity on top of the expected attendance: replicas =
    /// ceil(expectedAttendance * headroom / connectionsPerPod), clamped to [minReplicas, maxReplicas].
    #[serde(default = "default_headroom")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub headroom: f64,

    /// The least replicas the plan asks for from scale-up until the drain, and between classes
    /// too unless `idleReplicas` says otherwise. 0 is allowed.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(max = 10_000), extend("format" = "int32"))]
    pub min_replicas: u32,

    /// Replicas kept between classes (default: `minReplicas`). 0 stops every socket server
    /// between occurrences and releases the class's Redis too, since nothing then uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10_000), extend("format" = "int32"))]
    pub idle_replicas: Option<u32>,

    /// The most replicas the plan ever asks for, even if more students arrive.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 10_000), extend("format" = "int32"))]
    pub max_replicas: u32,

    /// How long a new socket server pod takes from creation to Ready (scheduling, image pull,
    /// start-up). The plan scales up this much before `start - warmup`.
    #[serde(default = "default_pod_startup")]
    pub pod_startup: GoDuration,

    /// Let the operator scale up earlier when this class's pods (or, until it has seen three
    /// of them, its namespace's socket pods) took longer than `podStartup` to become Ready: the
    /// lead is then their observed 95th percentile, never less than `podStartup`. What was
    /// observed is in `status.podStartup` either way, with a `SlowPodStartup` Warning Event
    /// when `podStartup` is shorter than it.
    #[serde(default = "default_true")]
    pub learn_pod_startup: bool,

    /// How long a stopping pod spends handing its students to other pods (its graceful
    /// shutdown window); the operator sets the pods' termination grace period from it.
    #[serde(default = "default_drain_window")]
    pub drain_window: GoDuration,

    /// How the plan drains capacity after a class.
    #[serde(default)]
    pub scale_down: ScaleDownSpec,

    /// CPU and memory for each socket server pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The Secret key holding the HS256 key the school's backend signs students' tokens with
    /// (at least 32 bytes). Without it, the operator creates a Secret `<name>-token` with a
    /// random 64-character key under `hs256-key` and reports it in `status.tokenSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<TokenSecretRef>,
}

fn default_connections_per_pod() -> u32 {
    2000
}

fn default_headroom() -> f64 {
    1.25
}

fn default_min_replicas() -> u32 {
    1
}

fn default_max_replicas() -> u32 {
    100
}

fn default_true() -> bool {
    true
}

fn default_pod_startup() -> GoDuration {
    GoDuration::from("2m")
}

fn default_drain_window() -> GoDuration {
    GoDuration::from("30s")
}

/// After `end + cooldown`, replicas come down by at most `stepPercent` of those running every
/// `interval`, so drained students reconnect in waves rather than all at once.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDownSpec {
    /// Largest drop per step, in percent of the replicas running (rounded up, at least one pod).
    #[serde(default = "default_step_percent")]
    #[schemars(range(min = 1, max = 50), extend("format" = "int32"))]
    pub step_percent: u32,

    /// Time between two steps; at least the socket's `drainWindow`, so one step has drained
    /// before the next begins.
    #[serde(default = "default_step_interval")]
    pub interval: GoDuration,
}

impl Default for ScaleDownSpec {
    fn default() -> Self {
        Self {
            step_percent: default_step_percent(),
            interval: default_step_interval(),
        }
    }
}

fn default_step_percent() -> u32 {
    25
}

fn default_step_interval() -> GoDuration {
    GoDuration::from("1m")
}

/// Where the token signing key is: a key in a Secret in the LiveClass's namespace, and
/// optionally a second key holding the previous signing key while tokens signed with it are
/// still out (key rotation). The socket servers re-read both when the Secret changes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the current signing key.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Key holding the previous signing key, still accepted during a rotation; the key may be
    /// absent from the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub previous_key: Option<String>,
}

/// A key in a Secret in the LiveClass's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// How the class gets its Redis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.mode != 'External' || has(self.external)")
        .message("redis.external.secretRef is required when redis.mode is External"),
    validation = Rule::new("self.mode == 'External' || !has(self.external)")
        .message("redis.external only applies when redis.mode is External"),
)]
pub struct RedisSpec {
    /// `Standalone`: one Redis pod run by the operator. `Replicated`: a primary, replicas and
    /// Sentinel. `Auto`: Standalone below `replicatedThreshold` expected students, Replicated at
    /// or above. `External`: a Redis you run, reached through `external.secretRef`.
    #[serde(default)]
    pub mode: RedisMode,

    /// Where an `External` Redis is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRedis>,

    /// Messages kept per class so a reconnecting student can catch up (the stream's cap).
    #[serde(default = "default_history_length")]
    #[schemars(range(max = 1_000_000), extend("format" = "int32"))]
    pub history_length: u32,

    /// With mode `Auto`: expected attendance from which the Redis is Replicated.
    #[serde(default = "default_replicated_threshold")]
    #[schemars(range(min = 1, max = 1_000_000), extend("format" = "int32"))]
    pub replicated_threshold: u32,

    /// Container image of the Redis the operator runs (not used with `External`).
    #[serde(default = "default_redis_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            mode: RedisMode::default(),
            external: None,
            history_length: default_history_length(),
            replicated_threshold: default_replicated_threshold(),
            image: default_redis_image(),
        }
    }
}

fn default_history_length() -> u32 {
    1000
}

fn default_replicated_threshold() -> u32 {
    20_000
}

fn default_redis_image() -> String {
    "redis:7.4-alpine".to_owned()
}

/// How the class gets its Redis.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RedisMode {
    #[default]
    Standalone,
    Replicated,
    Auto,
    External,
}

/// A Redis run outside the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRedis {
    /// Secret key holding the Redis URL, e.g. `redis://:password@redis.example:6379/0`.
    pub secret_ref: SecretKeyRef,

    /// Secret key holding the Redis password, mounted as a file into the socket pods. It
    /// overrides a password in the URL and is re-read on every reconnection, so rotating it
    /// restarts no pod. The URL's user name, if any, is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,

    /// Sentinels that know the current primary, as `host:port`. With them the URL's host and
    /// port are not used: every connection of the socket servers (and the operator's
    /// attendance reads) asks a Sentinel for the primary of `masterName`, so a failover is
    /// followed without a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 9),
        inner(regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?:[0-9]{1,5}$"))
    )]
    pub sentinels: Vec<String>,

    /// The name the Sentinels monitor the primary under.
    #[serde(default = "default_master_name")]
    #[schemars(length(min = 1, max = 128))]
    pub master_name: String,
}

fn default_master_name() -> String {
    "liveclass".to_owned()
}

/// A HorizontalPodAutoscaler for the socket servers, whose `minReplicas` follows the plan.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Average CPU utilisation, in percent of the pods' CPU request, the HPA aims for.
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 1, max = 100), extend("format" = "int32"))]
    pub target_cpu_utilization: u32,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            target_cpu_utilization: default_target_cpu(),
        }
    }
}

fn default_target_cpu() -> u32 {
    70
}

/// Where a class is in its schedule.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Waiting for the next occurrence; capacity at `minReplicas`.
    Scheduled,
    /// Capacity for the expected attendance is being brought up ahead of the start.
    WarmingUp,
    /// The class is on.
    Live,
    /// The class is over: capacity held through the cool-down, then drained in steps.
    CoolingDown,
    /// A one-off class that is over and drained (or a recurring one that never fires again).
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Scheduled => "Scheduled",
            Phase::WarmingUp => "WarmingUp",
            Phase::Live => "Live",
            Phase::CoolingDown => "CoolingDown",
            Phase::Ended => "Ended",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Condition types the operator reports in `status.conditions`.
pub mod condition {
    /// The spec is valid, and capacity and Redis are what the plan asks for.
    pub const READY: &str = "Ready";
    /// The socket server replicas the plan asks for are Ready (reason `Late` once they were not
    /// Ready by `start - warmup`).
    pub const CAPACITY_READY: &str = "CapacityReady";
    /// The class's Redis is reachable and sized as planned.
    pub const REDIS_READY: &str = "RedisReady";
    /// `maxReplicas` keeps the class below the replicas its students need.
    pub const CAPACITY_CAPPED: &str = "CapacityCapped";
    /// The operator's last apply of the class's objects succeeded.
    pub const APPLIED: &str = "Applied";
    /// The connected count could be read from the class's Redis (when it is being read).
    pub const ATTENDANCE_OBSERVED: &str = "AttendanceObserved";
}

/// What the operator observed and decided, written by the operator only.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LiveClassStatus {
    /// Where the class is in its schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Start of the occurrence the phase refers to (the current one, or else the next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence_start: Option<Time>,

    /// Socket server replicas the plan asks for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub planned_replicas: Option<u32>,

    /// Socket server replicas the expected (or connected, when more) students need, before
    /// `maxReplicas` caps them; above `plannedReplicas` means the class is capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub needed_replicas: Option<u64>,

    /// Socket server replicas Ready now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub ready_replicas: Option<u32>,

    /// Students connected to the class at the last reading (read at most once per the
    /// operator's attendance interval; kept when a reading fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub connected_students: Option<u64>,

    /// Most students connected at once during the occurrence in `occurrenceStart`; the
    /// capacity the class was raised to for them is held until its drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub peak_connected_students: Option<u64>,

    /// When the capacity for the occurrence in `occurrenceStart` was first Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_ready_time: Option<Time>,

    /// Seconds between `capacityReadyTime` and the start: how far ahead of the bell the
    /// capacity was Ready (negative: after the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub ready_lead_seconds: Option<i64>,

    /// The milestones of the occurrence in `occurrenceStart`, as `liveclass-operator plan`
    /// prints them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanStatus>,

    /// How long the class's socket pods were observed to take from creation to Ready, and the
    /// lead the plan scales up with because of it (`spec.socket.learnPodStartup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_startup: Option<PodStartupStatus>,

    /// With a Replicated Redis: the node its Sentinels name as the primary (as last asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_primary: Option<String>,

    /// The Secret key the socket servers verify students' tokens with (the spec's, or the one
    /// the operator generated); the school's backend signs tokens with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,

    /// Next instant at which the plan changes; the operator reconciles again then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<Time>,

    /// When a drain step last lowered the replicas; the next step waits `scaleDown.interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down_time: Option<Time>,

    /// `Ready`, `CapacityReady`, `RedisReady`, `CapacityCapped`, `Applied` and
    /// `AttendanceObserved`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Observed start-up time of a class's socket pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodStartupStatus {
    /// 95th percentile of the observed times from pod creation to Ready, in whole seconds
    /// (rounded up).
    #[schemars(extend("format" = "int64"))]
    pub observed_p95_seconds: i64,
    /// How many pods the percentile is taken over (the newest 50 at most).
    #[schemars(extend("format" = "int32"))]
    pub samples: u32,
    /// Whose pods: `Class` (this class's own), or `Namespace` (its namespace's socket pods, while
    /// the class has fewer than three of its own).
    pub scope: String,
    /// The lead the plan scales up with before `start - warmup`: `spec.socket.podStartup`, or
    /// the observed percentile when it is longer and learning is on.
    #[schemars(extend("format" = "int64"))]
    pub lead_seconds: i64,
}

/// The milestones of one occurrence and what is planned for it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// When the socket servers start scaling up: `start - warmup - podStartup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_time: Option<Time>,
    /// When the capacity must be Ready: `start - warmup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_by_time: Option<Time>,
    /// The start of the occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// The end of the occurrence: `start + duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// When the drain may begin: `end + cooldown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_time: Option<Time>,
    /// Socket server replicas held from scale-up to the drain for the expected attendance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub class_replicas: Option<u32>,
    /// Replicas kept between occurrences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub idle_replicas: Option<u32>,
    /// The Redis planned: `Standalone`, `Replicated` or `External`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// The planned Redis `maxmemory` (e.g. `64mb`), for a Redis the operator runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_max_memory: Option<String>,
}

impl LiveClass {
    /// The class id the socket servers and students' tokens carry (`class` claim) and the Redis
    /// keys are tagged with: `<namespace>/<name>`, so same-named classes in two namespaces
    /// never share state, even on one Redis.
    pub fn class_id(&self) -> Option<String> {
        Some(class_id(
            self.metadata.namespace.as_deref()?,
            self.metadata.name.as_deref()?,
        ))
    }
}

/// `<namespace>/<name>`: see [`LiveClass::class_id`].
pub fn class_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}
