//! How this server reaches Redis: the address, the password (re-read from its file on every
//! reconnect, so a rotated Secret needs no restart), and TCP settings that notice a dead peer.
//!
//! A half-open connection — the node died without a FIN — delivers nothing and never errors.
//! Keep-alive probes and `TCP_USER_TIMEOUT` make the kernel give up on such a link; the bus's
//! PINGs and the heartbeat catch a link whose peer still ACKs but no longer answers (a proxy
//! in between, a Redis stuck in a script).

use std::path::PathBuf;
use std::time::Duration;

use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{ConnectionInfo, IntoConnectionInfo};

/// Why Redis could not be addressed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("--redis-url is not a Redis URL: {0}")]
    Url(redis::RedisError),
    #[error("cannot read the Redis password file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Where Redis is and how to log in.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    info: ConnectionInfo,
    password_file: Option<PathBuf>,
}

impl RedisTarget {
    pub fn new(url: &str, password_file: Option<PathBuf>) -> Result<Self, LinkError> {
        let info = url.into_connection_info().map_err(LinkError::Url)?;
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(5))
            .with_interval(Duration::from_secs(2))
            .with_retries(3);
        let tcp = TcpSettings::default()
            .set_nodelay(true)
            .set_keepalive(keepalive)
            .set_user_timeout(Duration::from_secs(10));
        let target = Self {
            info: info.set_tcp_settings(tcp),
            password_file,
        };
        // Fail at start-up on a password file that cannot be read, not on the first reconnect.
        target.client()?;
        Ok(target)
    }

    /// A client for the current address and password.
    pub fn client(&self) -> Result<redis::Client, LinkError> {
        let mut info = self.info.clone();
        if let Some(path) = &self.password_file {
            let password =
                std::fs::read_to_string(path).map_err(|source| LinkError::PasswordFile {
                    path: path.clone(),
                    source,
                })?;
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.trim_end_matches(['\n', '\r']));
            info = info.set_redis_settings(settings);
        }
        Ok(redis::Client::open(info)?)
    }

    /// `host:port`, for logs.
    pub fn address(&self) -> String {
        self.info.addr().to_string()
    }
}
