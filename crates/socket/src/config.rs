//! The server's configuration: command-line flags with environment fallbacks, so the same
//! binary runs from a shell, a test and a Kubernetes pod spec.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::address::IpNet;

/// liveclass socket server: holds students' WebSocket connections and routes every message
/// through Redis, so any server can reach any student.
#[derive(Debug, Clone, Parser)]
#[command(name = "liveclass-socket", version, about, long_about = None)]
pub struct Args {
    /// Address students connect to: serves `/ws` (and the probes) only.
    #[arg(long, env = "LIVECLASS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address for operators: `/metrics`, the probes and the school's server API. Keep it off
    /// the balancer.
    #[arg(long, env = "LIVECLASS_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Redis holding the shared state (redis://[:password@]host:port[/db]).
    #[arg(
        long,
        env = "LIVECLASS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Redis Sentinels that know the current primary (`host:port`, comma-separated). With them
    /// the host and port of --redis-url are not used: every (re)connection asks a Sentinel for
    /// the primary of --redis-master-name, and a failover is followed without a restart.
    #[arg(long, env = "LIVECLASS_REDIS_SENTINELS", value_delimiter = ',')]
    pub redis_sentinels: Vec<String>,

    /// The name the Sentinels monitor the primary under.
    #[arg(long, env = "LIVECLASS_REDIS_MASTER_NAME", default_value = "liveclass")]
    pub redis_master_name: String,

    /// File holding the Redis password (a mounted Secret); overrides a password in the URL and
    /// is re-read on every reconnect.
    #[arg(long, env = "LIVECLASS_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// How long any one Redis call may take before it counts as failed.
    #[arg(long, env = "LIVECLASS_REDIS_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// How often the pub/sub connection is PINGed; a PING unanswered within --redis-timeout
    /// means the link is dead (a half-open TCP connection delivers nothing and never errors).
    #[arg(long, env = "LIVECLASS_PUBSUB_PING", default_value = "1s", value_parser = parse_duration)]
    pub pubsub_ping: Duration,

    /// This server's id in Redis routing; must be unique among running servers. Defaults to the
    /// host name (the pod name in Kubernetes).
    #[arg(long, env = "LIVECLASS_POD_ID")]
    pub pod_id: Option<String>,

    /// Accept only tokens for this class (`<namespace>/<name>`); others get 403 `wrong_class`.
    /// Unset, any class is served.
    #[arg(long, env = "LIVECLASS_CLASS")]
    pub class: Option<String>,

    /// Secret the school's backend signs tokens with (HS256), at least 32 bytes. Prefer
    /// --token-secret-file.
    #[arg(
        long,
        env = "LIVECLASS_TOKEN_SECRET",
        hide_env_values = true,
        conflicts_with = "token_secret_file"
    )]
    pub token_secret: Option<String>,

    /// File holding the token secret (a mounted Kubernetes Secret); trailing newlines are
    /// ignored. Re-read when it changes, so a rotated Secret reaches a running server.
    #[arg(long, env = "LIVECLASS_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,

    /// File holding the previous token secret, still accepted during a rotation. May be absent.
    #[arg(long, env = "LIVECLASS_TOKEN_PREVIOUS_SECRET_FILE")]
    pub token_previous_secret_file: Option<PathBuf>,

    /// Require this `aud` claim in tokens.
    #[arg(long, env = "LIVECLASS_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,

    /// Require this `iss` claim in tokens.
    #[arg(long, env = "LIVECLASS_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,

    /// Refuse tokens that live longer than this (from `iat`, or from now when there is none).
    #[arg(long, env = "LIVECLASS_MAX_TOKEN_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    pub max_token_lifetime: Duration,

    /// File holding the key of the school's server API (`/api/*` on the admin listener), at
    /// least 32 bytes; re-read when it changes. Unset, the API answers 403 to everything.
    #[arg(long, env = "LIVECLASS_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// File holding the previous API key, still accepted during a rotation. May be absent.
    #[arg(
        long,
        env = "LIVECLASS_API_PREVIOUS_KEY_FILE",
        requires = "api_key_file"
    )]
    pub api_previous_key_file: Option<PathBuf>,

    /// Browser Origins allowed to connect (repeat or comma-separate); `*` allows any. Requests
    /// without an Origin header (non-browser clients) are always allowed.
    #[arg(
        long = "allowed-origin",
        env = "LIVECLASS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Proxies (IPs or CIDRs) whose X-Forwarded-For is believed for the client's address: the
    /// gateway. Unset, the TCP peer is the client.
    #[arg(
        long = "trusted-proxy",
        env = "LIVECLASS_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// Largest client frame accepted, in bytes; a larger one closes the connection with 1009.
    #[arg(long, env = "LIVECLASS_MAX_FRAME_BYTES", default_value_t = 16 * 1024)]
    pub max_frame_bytes: usize,

    /// Sustained client frames per second per connection (text and binary alike).
    #[arg(long, env = "LIVECLASS_RATE", default_value_t = 5.0)]
    pub rate: f64,

    /// Client frames allowed in a burst above the sustained rate, per connection.
    #[arg(long, env = "LIVECLASS_BURST", default_value_t = 20)]
    pub burst: u32,

    /// Comments and direct messages per second per user in a class, shared by all of the
    /// user's connections on all servers (kept in Redis).
    #[arg(long, env = "LIVECLASS_USER_RATE", default_value_t = 2.0)]
    pub user_rate: f64,

    /// Burst of the per-user budget.
    #[arg(long, env = "LIVECLASS_USER_BURST", default_value_t = 10)]
    pub user_burst: u32,

    /// Slow mode: comments per second for a whole class (all students together); teachers are
    /// exempt. 0 turns it off.
    #[arg(long, env = "LIVECLASS_CLASS_COMMENT_RATE", default_value_t = 0.0)]
    pub class_comment_rate: f64,

    /// Burst of slow mode.
    #[arg(long, env = "LIVECLASS_CLASS_COMMENT_BURST", default_value_t = 20)]
    pub class_comment_burst: u32,

    /// Handshakes per user per class allowed in --handshake-window (counted in Redis, so
    /// reconnecting to another server does not reset it).
    #[arg(long, env = "LIVECLASS_USER_HANDSHAKES", default_value_t = 20)]
    pub user_handshakes: u32,

    /// The window of --user-handshakes.
    #[arg(long, env = "LIVECLASS_HANDSHAKE_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub handshake_window: Duration,

    /// Handshakes per second from one source address on this server. Students behind one
    /// school NAT share an address: size it for the largest class behind one.
    #[arg(long, env = "LIVECLASS_ADDRESS_HANDSHAKE_RATE", default_value_t = 50.0)]
    pub address_handshake_rate: f64,

    /// Burst of --address-handshake-rate.
    #[arg(long, env = "LIVECLASS_ADDRESS_HANDSHAKE_BURST", default_value_t = 200)]
    pub address_handshake_burst: u32,

    /// Open connections this server takes; beyond it handshakes get 503 `full` before the
    /// upgrade, so the balancer tries another server.
    #[arg(long, env = "LIVECLASS_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Connections one user may hold in one class (tabs, devices); beyond it the oldest is
    /// closed with 4002.
    #[arg(long, env = "LIVECLASS_MAX_CONNECTIONS_PER_USER", default_value_t = 3)]
    pub max_connections_per_user: u32,

    /// A comment resent with the same `ref` within this window is stored once.
    #[arg(long, env = "LIVECLASS_DEDUPE_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub dedupe_window: Duration,

    /// Reactions are counted per class over this tick and sent as one `reactions` frame.
    #[arg(long, env = "LIVECLASS_REACTION_TICK", default_value = "250ms", value_parser = parse_duration)]
    pub reaction_tick: Duration,

    /// Frames queued for one client before it is closed as a slow consumer (4001).
    #[arg(long, env = "LIVECLASS_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,

    /// A write to a client blocked longer than this closes it as a slow consumer (4001).
    #[arg(long, env = "LIVECLASS_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Close a connection that sends nothing (not even a pong) for this long; the server pings
    /// every third of it. Accepts `60s`, `2m`, `500ms`.
    #[arg(long, env = "LIVECLASS_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Close an HTTP connection whose request headers have not arrived within this time.
    #[arg(long, env = "LIVECLASS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// On SIGTERM, spread clients' reconnects over this window and exit before it ends. Keep it
    /// below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "LIVECLASS_DRAIN_WINDOW", default_value = "20s", value_parser = parse_duration)]
    pub drain_window: Duration,

    /// How long this server's heartbeat lives in Redis; survivors clean up a server whose
    /// heartbeat has expired, so presence is right within about this long after a crash.
    #[arg(long, env = "LIVECLASS_HEARTBEAT_TTL", default_value = "6s", value_parser = parse_duration)]
    pub heartbeat_ttl: Duration,

    /// Comments kept per class for reconnecting clients (approximate: Redis trims in blocks).
    #[arg(long, env = "LIVECLASS_HISTORY", default_value_t = 10_000)]
    pub history: usize,

    /// Most messages one reconnect (`since`) replays; a client further behind gets
    /// `recovered:false` and nothing replayed.
    #[arg(long, env = "LIVECLASS_MAX_RECOVERY", default_value_t = 1000)]
    pub max_recovery: usize,

    /// Most classes with their own series in per-class metrics; the rest are summed under
    /// `class="_other"`.
    #[arg(long, env = "LIVECLASS_MAX_CLASS_METRICS", default_value_t = 100)]
    pub max_class_metrics: usize,

    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `liveclass_socket=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

/// Parses `250ms`, `10s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 500ms, 10s, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A rate with a burst, checked in Redis or locally.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    /// Milliseconds between two events at the sustained rate; 0 when the rate is off.
    pub fn interval_ms(self) -> f64 {
        if self.per_second > 0.0 {
            1000.0 / self.per_second
        } else {
            0.0
        }
    }
}

/// Limits applied to every connection, derived from [`Args`].
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub connection_rate: Rate,
    pub user_publish: Rate,
    pub class_comments: Rate,
    pub user_handshakes: u32,
    pub handshake_window: Duration,
    pub address_handshakes: Rate,
    pub max_connections: usize,
    pub max_connections_per_user: u32,
    pub dedupe_window: Duration,
    pub reaction_tick: Duration,
    pub send_queue: usize,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub drain_window: Duration,
    pub max_recovery: usize,
}

impl Args {
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            connection_rate: Rate {
                per_second: self.rate,
                burst: self.burst,
            },
            user_publish: Rate {
                per_second: self.user_rate,
                burst: self.user_burst,
            },
            class_comments: Rate {
                per_second: self.class_comment_rate,
                burst: self.class_comment_burst,
            },
            user_handshakes: self.user_handshakes,
            handshake_window: self.handshake_window,
            address_handshakes: Rate {
                per_second: self.address_handshake_rate,
                burst: self.address_handshake_burst,
            },
            max_connections: self.max_connections,
            max_connections_per_user: self.max_connections_per_user,
            dedupe_window: self.dedupe_window,
            reaction_tick: self.reaction_tick,
            send_queue: self.send_queue,
            write_timeout: self.write_timeout,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            drain_window: self.drain_window,
            max_recovery: self.max_recovery,
        }
    }

    /// The pod id, defaulting to the host name.
    pub fn pod_id(&self) -> Result<String, ConfigError> {
        let id = match &self.pod_id {
            Some(id) => id.clone(),
            None => hostname::get()
                .map_err(ConfigError::Hostname)?
                .to_string_lossy()
                .into_owned(),
        };
        if !liveclass_protocol::valid_user_id(&id) || id.contains(['{', '}', '#']) {
            return Err(ConfigError::BadPodId(id));
        }
        Ok(id)
    }

    /// Checks combinations clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |value: f64| value > 0.0 && value.is_finite();
        if !positive(self.rate)
            || !positive(self.user_rate)
            || !positive(self.address_handshake_rate)
        {
            return Err(ConfigError::Invalid(
                "--rate, --user-rate and --address-handshake-rate must be positive numbers".into(),
            ));
        }
        if !(self.class_comment_rate >= 0.0 && self.class_comment_rate.is_finite()) {
            return Err(ConfigError::Invalid(
                "--class-comment-rate must be 0 (off) or a positive number".into(),
            ));
        }
        if [
            self.burst,
            self.user_burst,
            self.class_comment_burst,
            self.address_handshake_burst,
            self.user_handshakes,
            self.max_connections_per_user,
        ]
        .contains(&0)
            || self.send_queue == 0
            || self.max_connections == 0
            || self.max_recovery == 0
            || self.max_frame_bytes < 256
        {
            return Err(ConfigError::Invalid(
                "bursts, --user-handshakes, --max-connections(-per-user), --send-queue and \
                 --max-recovery must be at least 1, --max-frame-bytes at least 256"
                    .into(),
            ));
        }
        let at_least = |value: Duration, min_ms: u64| value >= Duration::from_millis(min_ms);
        if !at_least(self.idle_timeout, 1000)
            || !at_least(self.heartbeat_ttl, 1000)
            || !at_least(self.redis_timeout, 50)
            || !at_least(self.pubsub_ping, 50)
            || !at_least(self.write_timeout, 50)
            || !at_least(self.reaction_tick, 10)
            || !at_least(self.handshake_window, 1000)
        {
            return Err(ConfigError::Invalid(
                "--idle-timeout, --heartbeat-ttl and --handshake-window must be at least 1s; \
                 --redis-timeout, --pubsub-ping and --write-timeout at least 50ms; \
                 --reaction-tick at least 10ms"
                    .into(),
            ));
        }
        if let Some(class) = &self.class
            && !liveclass_protocol::valid_class_id(class)
        {
            return Err(ConfigError::Invalid(format!(
                "--class `{class}` is not a class id (`<namespace>/<name>`)"
            )));
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(ConfigError::Invalid(
                "--listen and --admin-listen must differ: the admin port stays off the balancer"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A configuration the server cannot start with; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no token secret: set --token-secret-file (or LIVECLASS_TOKEN_SECRET)")]
    NoSecret,
    #[error(
        "{what} is {len} bytes; it needs at least 32 (HS256, RFC 7518 §3.2): \
         generate one with `openssl rand -base64 32`"
    )]
    ShortSecret { what: String, len: usize },
    #[error("cannot read {what}: {source}")]
    SecretFile {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot read the host name for the pod id (set --pod-id): {0}")]
    Hostname(std::io::Error),
    #[error("pod id `{0}` must be 1-128 characters of letters, digits, `-`, `_`, `.`, `:` or `@`")]
    BadPodId(String),
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn cli_parses_with_defaults() {
        let args = Args::try_parse_from([
            "liveclass-socket",
            "--token-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .unwrap();
        assert_eq!(args.max_frame_bytes, 16 * 1024);
        assert!(args.validate().is_ok());
    }

    #[test]
    fn refuses_a_bad_class_and_one_port_for_both_listeners() {
        let args = Args::try_parse_from(["liveclass-socket", "--class", "a{b}"]).unwrap();
        assert!(args.validate().is_err());
        let args = Args::try_parse_from([
            "liveclass-socket",
            "--listen",
            "127.0.0.1:8080",
            "--admin-listen",
            "127.0.0.1:8080",
        ])
        .unwrap();
        assert!(args.validate().is_err());
    }
}
