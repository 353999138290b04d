//! The server's configuration: command-line flags with environment fallbacks, so the same
//! binary runs from a shell, a test and a Kubernetes pod spec.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// liveclass socket server: holds students' WebSocket connections and routes every message
/// through Redis, so any server can reach any student.
#[derive(Debug, Clone, Parser)]
#[command(name = "liveclass-socket", version, about, long_about = None)]
pub struct Args {
    /// Address to listen on for WebSocket connections, probes and metrics.
    #[arg(long, env = "LIVECLASS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Redis holding the shared state (redis://[:password@]host:port[/db]).
    #[arg(
        long,
        env = "LIVECLASS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// This server's id in Redis routing; must be unique among running servers. Defaults to the
    /// host name (the pod name in Kubernetes).
    #[arg(long, env = "LIVECLASS_POD_ID")]
    pub pod_id: Option<String>,

    /// Secret the school's backend signs tokens with (HS256). Prefer --token-secret-file.
    #[arg(
        long,
        env = "LIVECLASS_TOKEN_SECRET",
        hide_env_values = true,
        conflicts_with = "token_secret_file"
    )]
    pub token_secret: Option<String>,

    /// File holding the token secret (a mounted Kubernetes Secret); trailing newlines are ignored.
    #[arg(long, env = "LIVECLASS_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,

    /// Browser Origins allowed to connect (repeat or comma-separate); `*` allows any. Requests
    /// without an Origin header (non-browser clients) are always allowed.
    #[arg(
        long = "allowed-origin",
        env = "LIVECLASS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Largest client frame accepted, in bytes; a larger one closes the connection with 1009.
    #[arg(long, env = "LIVECLASS_MAX_FRAME_BYTES", default_value_t = 16 * 1024)]
    pub max_frame_bytes: usize,

    /// Sustained client frames per second allowed per connection.
    #[arg(long, env = "LIVECLASS_RATE", default_value_t = 5.0)]
    pub rate: f64,

    /// Client frames allowed in a burst above the sustained rate.
    #[arg(long, env = "LIVECLASS_BURST", default_value_t = 20)]
    pub burst: u32,

    /// Frames queued for one client before it is closed as a slow consumer (4001).
    #[arg(long, env = "LIVECLASS_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,

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

/// Limits applied to every connection, derived from [`Args`].
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub rate: f64,
    pub burst: u32,
    pub send_queue: usize,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub drain_window: Duration,
}

impl Args {
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            rate: self.rate,
            burst: self.burst,
            send_queue: self.send_queue,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            drain_window: self.drain_window,
        }
    }

    /// The secret from the flag, the environment or the file, whichever was given.
    pub fn token_secret(&self) -> Result<Vec<u8>, ConfigError> {
        let secret = match (&self.token_secret, &self.token_secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::SecretFile {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            (None, None) => return Err(ConfigError::NoSecret),
        };
        if secret.len() < 16 {
            return Err(ConfigError::ShortSecret(secret.len()));
        }
        Ok(secret.into_bytes())
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
        if id.is_empty()
            || id.len() > 128
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::BadPodId(id));
        }
        Ok(id)
    }

    /// Checks combinations clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err(ConfigError::Invalid(
                "--rate must be a positive number".into(),
            ));
        }
        if self.burst == 0 || self.send_queue == 0 || self.max_frame_bytes < 256 {
            return Err(ConfigError::Invalid(
                "--burst and --send-queue must be at least 1, --max-frame-bytes at least 256"
                    .into(),
            ));
        }
        if self.idle_timeout < Duration::from_secs(1) || self.heartbeat_ttl < Duration::from_secs(1)
        {
            return Err(ConfigError::Invalid(
                "--idle-timeout and --heartbeat-ttl must be at least 1s".into(),
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
    #[error("the token secret is {0} bytes; use at least 16 (32 random bytes is the HS256 norm)")]
    ShortSecret(usize),
    #[error("cannot read the token secret file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the host name for the pod id (set --pod-id): {0}")]
    Hostname(std::io::Error),
    #[error("pod id `{0}` must be 1-128 characters of letters, digits, `-`, `_` or `.`")]
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
        let args =
            Args::try_parse_from(["liveclass-socket", "--token-secret", "0123456789abcdef0123"])
                .unwrap();
        assert_eq!(args.max_frame_bytes, 16 * 1024);
        assert!(args.validate().is_ok());
        assert_eq!(args.token_secret().unwrap(), b"0123456789abcdef0123");
    }
}
