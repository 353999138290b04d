//! How the operator runs: flags with environment fallbacks (`liveclass-operator run --help`),
//! also built directly by tests that run the operator in-process.

use std::{net::SocketAddr, time::Duration};

/// Settings of `liveclass-operator run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the operator's own `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "LIVECLASS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Watch LiveClasses in this namespace only (default: all namespaces).
    #[arg(long, env = "LIVECLASS_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Elect a leader through a Lease, so only one of several replicas reconciles.
    #[arg(long, env = "LIVECLASS_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(
        long,
        env = "LIVECLASS_LEASE_NAME",
        default_value = "liveclass-operator"
    )]
    pub lease_name: String,

    /// Namespace of the Lease (the operator's own namespace, from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// This replica's identity in the Lease (the pod name, from the downward API; default: the
    /// host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long a Lease holder that stops renewing keeps the lead (`15s`).
    #[arg(long, env = "LIVECLASS_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How often the holder renews the Lease and a standby replica tries to take it (`5s`).
    #[arg(long, env = "LIVECLASS_LEASE_RENEW", default_value = "5s", value_parser = parse_duration)]
    pub lease_renew: Duration,

    /// For development and tests only: read every class's connected count from this Redis
    /// (`redis://127.0.0.1:6379`) instead of the class's own Redis, which is only reachable
    /// through cluster DNS from inside the cluster.
    #[arg(long, env = "LIVECLASS_REDIS_OVERRIDE")]
    pub redis_override: Option<String>,

    /// Whether the operator may read (get, never list) the Secret an External-Redis class names,
    /// to reach that Redis for the class's attendance. Off: such classes run on their schedule
    /// alone (the chart's `rbac.readExternalRedisSecrets` grants the permission and sets this).
    #[arg(long, env = "LIVECLASS_READ_EXTERNAL_REDIS_SECRETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub read_external_redis_secrets: bool,

    /// How long reading a class's connected count from Redis may take before it counts as
    /// failed (the last reading is kept).
    #[arg(long, env = "LIVECLASS_REDIS_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// How often a class's connected count is read while it can change the plan (from
    /// scale-up until the class has drained and nobody is connected); `connectedStudents` is
    /// written at most this often.
    #[arg(long, env = "LIVECLASS_ATTENDANCE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub attendance_interval: Duration,

    /// Reconciles of different LiveClasses run at once at most this many.
    #[arg(long, env = "LIVECLASS_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// Longest wait between two reconciles of one LiveClass.
    #[arg(long, env = "LIVECLASS_MAX_REQUEUE", default_value = "5m", value_parser = parse_duration)]
    pub max_requeue: Duration,

    /// The gateway Deployment, `<namespace>/<name>` (the chart's Caddy): sized with the
    /// classes (unless `--gateway-sizing false`), and each of its pods that terminates handed
    /// over gently. Unset: the operator leaves the gateway alone.
    #[arg(long, env = "LIVECLASS_GATEWAY_DEPLOYMENT", value_parser = parse_gateway_target)]
    pub gateway_deployment: Option<(String, String)>,

    /// Students one gateway pod carries (Caddy holds about 95 KiB a proxied socket).
    #[arg(long, env = "LIVECLASS_GATEWAY_CONNECTIONS_PER_POD", default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_connections_per_pod: u32,

    /// The fewest gateway pods, whatever the classes.
    #[arg(long, env = "LIVECLASS_GATEWAY_MIN_REPLICAS", default_value_t = 2)]
    pub gateway_min_replicas: u32,

    /// The most gateway pods.
    #[arg(long, env = "LIVECLASS_GATEWAY_MAX_REPLICAS", default_value_t = 10)]
    pub gateway_max_replicas: u32,

    /// How long the need must stay lower before one gateway pod is taken away.
    #[arg(long, env = "LIVECLASS_GATEWAY_SCALE_DOWN_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub gateway_scale_down_after: Duration,

    /// Whether the operator sets the gateway's replicas (off: a fixed size, or another scaler).
    #[arg(long, env = "LIVECLASS_GATEWAY_SIZING", default_value_t = true, action = clap::ArgAction::Set)]
    pub gateway_sizing: bool,

    /// The window over which the students of a terminating gateway pod are moved to the
    /// others; the gateway's preStop must outlast it. `0s`: no hand-over.
    #[arg(long, env = "LIVECLASS_GATEWAY_HANDOVER_WINDOW", default_value = "20s", value_parser = parse_duration)]
    pub gateway_handover_window: Duration,
}

impl Config {
    /// Defaults for tests and embedding: metrics on an ephemeral loopback port, no leader
    /// election, one namespace.
    pub fn for_namespace(namespace: &str) -> Self {
        Self {
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            namespace: Some(namespace.to_owned()),
            leader_elect: false,
            lease_name: "liveclass-operator".to_owned(),
            lease_namespace: namespace.to_owned(),
            identity: None,
            lease_duration: Duration::from_secs(15),
            lease_renew: Duration::from_secs(5),
            redis_override: None,
            read_external_redis_secrets: false,
            redis_timeout: Duration::from_millis(500),
            attendance_interval: Duration::from_secs(10),
            concurrency: 32,
            max_requeue: Duration::from_secs(300),
            gateway_deployment: None,
            gateway_connections_per_pod: 4000,
            gateway_min_replicas: 2,
            gateway_max_replicas: 10,
            gateway_scale_down_after: Duration::from_secs(300),
            gateway_sizing: true,
            gateway_handover_window: Duration::from_secs(20),
        }
    }

    /// What the gateway's sizing and hand-over need, when a gateway is named.
    pub fn gateway(&self) -> Option<crate::gateway::GatewaySettings> {
        let (namespace, name) = self.gateway_deployment.clone()?;
        Some(crate::gateway::GatewaySettings {
            namespace,
            name,
            connections_per_pod: self.gateway_connections_per_pod,
            min_replicas: self.gateway_min_replicas,
            max_replicas: self.gateway_max_replicas,
            scale_down_after: self.gateway_scale_down_after,
            sizing: self.gateway_sizing,
            handover_window: self.gateway_handover_window,
        })
    }

    /// The identity in the Lease: the configured one, or the host name, or a fixed fallback.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "liveclass-operator".to_owned())
        })
    }
}

fn parse_gateway_target(s: &str) -> Result<(String, String), String> {
    crate::gateway::GatewaySettings::parse_target(s)
}

/// Parses `250ms`, `10s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s, 2m or 1h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} has an unknown unit; use ms, s, m or h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("s").is_err());
    }
}
