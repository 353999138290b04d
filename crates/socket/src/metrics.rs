//! Prometheus metrics of one server, served as text on `/metrics`.

use liveclass_protocol::server::GapReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub endpoint: &'static str,
    pub code: &'static str,
}

/// Every metric the server exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: Gauge,
    pub class_connections: Family<ClassLabel, Gauge>,
    pub frames_received: Family<TypeLabel, Counter>,
    pub messages_published: Family<TypeLabel, Counter>,
    pub deliveries: Counter,
    pub drops: Family<ReasonLabel, Counter>,
    pub closes: Family<ReasonLabel, Counter>,
    pub handshake_rejections: Family<ReasonLabel, Counter>,
    pub redis_errors: Family<OpLabel, Counter>,
    pub redis_up: Gauge,
    pub recoveries: Family<ReasonLabel, Counter>,
    pub gaps: Family<ReasonLabel, Counter>,
    pub dead_pod_sessions_removed: Counter,
    pub reregistrations: Counter,
    pub reactions_dropped: Counter,
    pub api_requests: Family<ApiLabel, Counter>,
}

impl Metrics {
    /// Registers every metric under the `liveclass` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("liveclass");
        r.register(
            "connections",
            "Open WebSocket connections",
            self.connections.clone(),
        );
        r.register(
            "class_connections",
            "Open WebSocket connections per class (while the class has members here; classes past \
             --max-class-metrics are summed under class=\"_other\")",
            self.class_connections.clone(),
        );
        r.register(
            "frames_received",
            "Client frames received, by type",
            self.frames_received.clone(),
        );
        r.register(
            "messages_published",
            "Messages this server published to Redis, by type",
            self.messages_published.clone(),
        );
        r.register(
            "deliveries",
            "Frames queued to local clients from Redis fan-out",
            self.deliveries.clone(),
        );
        r.register("drops", "Frames dropped, by reason", self.drops.clone());
        r.register(
            "closes",
            "Connections closed by the server, by reason",
            self.closes.clone(),
        );
        r.register(
            "handshake_rejections",
            "Refused WebSocket handshakes, by reason",
            self.handshake_rejections.clone(),
        );
        r.register(
            "redis_errors",
            "Failed Redis operations, by operation",
            self.redis_errors.clone(),
        );
        r.register(
            "redis_up",
            "1 while the pub/sub connection to Redis is up",
            self.redis_up.clone(),
        );
        r.register(
            "recoveries",
            "Reconnects with `since`, by outcome",
            self.recoveries.clone(),
        );
        r.register(
            "gaps",
            "Gap frames sent to a class's members after an outage, by reason",
            self.gaps.clone(),
        );
        r.register(
            "reregistrations",
            "Times this server found Redis had forgotten it (reaped while alive, or Redis lost \
             its data) and recorded its connections again",
            self.reregistrations.clone(),
        );
        r.register(
            "reactions_dropped",
            "Reactions not counted because their tick already held the most distinct emoji",
            self.reactions_dropped.clone(),
        );
        r.register(
            "api_requests",
            "Calls of the school's server API, by endpoint and outcome (ok or the error code)",
            self.api_requests.clone(),
        );
        r.register(
            "dead_pod_sessions_removed",
            "Sessions of crashed servers removed by this server",
            self.dead_pod_sessions_removed.clone(),
        );
    }

    pub fn dropped(&self, reason: &'static str) {
        self.drops.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn close(&self, reason: &'static str) {
        self.closes.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn gap(&self, reason: GapReason) {
        let reason = match reason {
            GapReason::HistoryLost => "history_lost",
            GapReason::Trimmed => "trimmed",
        };
        self.gaps.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn redis_error(&self, op: &'static str) {
        self.redis_errors.get_or_create(&OpLabel { op }).inc();
    }
}
