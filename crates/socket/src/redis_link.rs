//! How this server reaches Redis: the address, the password (re-read from its file on every
//! reconnect, so a rotated Secret needs no restart), and TCP settings that notice a dead peer.
//!
//! With Sentinels the address is not configured but asked for: [`RedisTarget::resolve`] asks
//! each Sentinel in turn for the current primary and checks with `ROLE` that the node it names
//! is one, before every (re)connection. A failover then looks to this server like a link that
//! failed (the old primary is gone, or answers `READONLY` as a replica): the connections are
//! rebuilt to the new primary, the pub/sub subscribes again and each room catches up from the
//! stream, as after any outage.
//!
//! A half-open connection — the node died without a FIN — delivers nothing and never errors.
//! Keep-alive probes and `TCP_USER_TIMEOUT` make the kernel give up on such a link; the bus's
//! PINGs and the heartbeat catch a link whose peer still ACKs but no longer answers (a proxy
//! in between, a Redis stuck in a script).

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

/// How long one Sentinel or `ROLE` question may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

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
    #[error("no Sentinel named a primary for {master} that answers as one ({tried})")]
    NoPrimary { master: String, tried: String },
}

/// The Sentinels to ask, and the name they know the primary by.
#[derive(Debug, Clone)]
pub struct Sentinels {
    /// `host:port` of each.
    pub addrs: Vec<String>,
    pub master: String,
}

/// Where Redis is and how to log in.
#[derive(Debug)]
pub struct RedisTarget {
    /// The primary's address as last resolved (or as configured, without Sentinels).
    info: RwLock<ConnectionInfo>,
    password_file: Option<PathBuf>,
    sentinels: Option<Sentinels>,
}

impl RedisTarget {
    pub fn new(
        url: &str,
        password_file: Option<PathBuf>,
        sentinels: Option<Sentinels>,
    ) -> Result<Self, LinkError> {
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
            info: RwLock::new(info.set_tcp_settings(tcp)),
            password_file,
            sentinels,
        };
        // Fail at start-up on a password file that cannot be read, not on the first reconnect.
        target.client()?;
        Ok(target)
    }

    fn info(&self) -> ConnectionInfo {
        self.info
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the primary is found through Sentinels.
    pub fn has_sentinels(&self) -> bool {
        self.sentinels.is_some()
    }

    /// With Sentinels, asks them for the current primary and remembers it; without, does
    /// nothing. Call before building connections after a failure.
    pub async fn resolve(&self) -> Result<(), LinkError> {
        let Some(sentinels) = &self.sentinels else {
            return Ok(());
        };
        let mut tried = Vec::new();
        for addr in &sentinels.addrs {
            match self.ask(addr, &sentinels.master).await {
                Ok(primary) => {
                    let mut info = self
                        .info
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if info.addr() != &primary {
                        tracing::info!(sentinel = %addr, primary = %primary, "redis primary resolved");
                    }
                    *info = info.clone().set_addr(primary);
                    return Ok(());
                }
                Err(e) => tried.push(format!("{addr}: {e}")),
            }
        }
        Err(LinkError::NoPrimary {
            master: sentinels.master.clone(),
            tried: tried.join("; "),
        })
    }

    /// The primary `sentinel` names, if it answers `ROLE` as a primary.
    async fn ask(&self, sentinel: &str, master: &str) -> Result<ConnectionAddr, String> {
        let within = |what: &'static str| move |_| format!("{what} took over {ASK_TIMEOUT:?}");
        let client =
            redis::Client::open(format!("redis://{sentinel}")).map_err(|e| e.to_string())?;
        let mut conn = tokio::time::timeout(ASK_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(within("connecting"))?
            .map_err(|e| e.to_string())?;
        let named: Option<(String, u16)> = tokio::time::timeout(
            ASK_TIMEOUT,
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master)
                .query_async(&mut conn),
        )
        .await
        .map_err(within("SENTINEL get-master-addr-by-name"))?
        .map_err(|e| e.to_string())?;
        let (host, port) = named.ok_or_else(|| format!("does not know {master}"))?;
        let primary = ConnectionAddr::Tcp(host, port);
        // A Sentinel that has not seen the failover yet names the old primary: ask the node.
        let candidate = self.client_at(primary.clone()).map_err(|e| e.to_string())?;
        let mut node =
            tokio::time::timeout(ASK_TIMEOUT, candidate.get_multiplexed_async_connection())
                .await
                .map_err(within("connecting to the named primary"))?
                .map_err(|e| format!("the named primary {primary}: {e}"))?;
        let role: Vec<redis::Value> =
            tokio::time::timeout(ASK_TIMEOUT, redis::cmd("ROLE").query_async(&mut node))
                .await
                .map_err(within("ROLE"))?
                .map_err(|e| e.to_string())?;
        match role.first() {
            Some(redis::Value::BulkString(r)) if r.as_slice() == b"master" => Ok(primary),
            _ => Err(format!("{primary} does not answer ROLE as a primary")),
        }
    }

    /// A client for the current address and password.
    pub fn client(&self) -> Result<redis::Client, LinkError> {
        self.client_at(self.info().addr().clone())
    }

    fn client_at(&self, addr: ConnectionAddr) -> Result<redis::Client, LinkError> {
        let mut info = self.info().set_addr(addr);
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
        self.info().addr().to_string()
    }
}
