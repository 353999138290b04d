//! The real Toxiproxy (Shopify's fault-injection TCP proxy) on loopback, killed on drop: put
//! between a socket server and Redis, it makes the link half-open (data stops, nothing closes),
//! slow, or reset — the failures a real network has and a clean `kill` of Redis does not.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::http::{http_get, http_request};
use crate::process::{ManagedChild, ProcessError, cached_binary, free_port, start_on_free_port};

/// Where `toxiproxy-server` is: `LIVECLASS_TOXIPROXY`, else what
/// `scripts/toxiproxy-binary --print-path` prints (built once into the cache).
pub fn toxiproxy_binary() -> Result<PathBuf, ProcessError> {
    cached_binary("toxiproxy", "LIVECLASS_TOXIPROXY", "toxiproxy-binary")
}

/// A running `toxiproxy-server`.
#[derive(Debug)]
pub struct Toxiproxy {
    api: SocketAddr,
    _child: ManagedChild,
    _dir: tempfile::TempDir,
}

/// One proxied link, `listen` → `upstream`.
#[derive(Debug, Clone)]
pub struct Proxy {
    api: SocketAddr,
    name: String,
    listen: SocketAddr,
}

/// Why a Toxiproxy call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToxiproxyError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("toxiproxy API: {0}")]
    Io(#[from] std::io::Error),
    #[error("toxiproxy API {what} answered {status}: {body}")]
    Api {
        what: String,
        status: u16,
        body: String,
    },
}

impl Toxiproxy {
    pub fn start() -> Result<Self, ToxiproxyError> {
        let binary = toxiproxy_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("liveclass-toxiproxy-")
            .tempdir()
            .map_err(ProcessError::from)?;
        let log = dir.path().join("toxiproxy.log");
        let (child, port, ()) = start_on_free_port(
            "toxiproxy-server",
            &log,
            Duration::from_secs(10),
            |port| {
                let mut command = Command::new(&binary);
                command
                    .arg("-host")
                    .arg("127.0.0.1")
                    .arg("-port")
                    .arg(port.to_string());
                Ok((command, ()))
            },
            |port| {
                matches!(
                    http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/version"),
                    Ok((200, _))
                )
            },
        )?;
        Ok(Self {
            api: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
            _dir: dir,
        })
    }

    /// A new proxy on a free loopback port in front of `upstream`.
    pub fn proxy(&self, name: &str, upstream: SocketAddr) -> Result<Proxy, ToxiproxyError> {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port().map_err(ProcessError::from)?));
        let body = json!({"name": name, "listen": listen.to_string(), "upstream": upstream.to_string(), "enabled": true});
        call(self.api, "POST", "/proxies", Some(body), "create proxy")?;
        Ok(Proxy {
            api: self.api,
            name: name.to_string(),
            listen,
        })
    }
}

fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    what: &str,
) -> Result<String, ToxiproxyError> {
    let body = body.map(|b| b.to_string());
    let (status, answer) = http_request(api, method, path, &[], body.as_deref())?;
    if !(200..300).contains(&status) {
        return Err(ToxiproxyError::Api {
            what: what.to_string(),
            status,
            body: answer,
        });
    }
    Ok(answer)
}

impl Proxy {
    /// Where clients connect.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// `redis://<listen>` for a Redis behind this proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.listen)
    }

    fn add_toxic(&self, name: &str, body: serde_json::Value) -> Result<(), ToxiproxyError> {
        let mut body = body;
        body["name"] = json!(name);
        call(
            self.api,
            "POST",
            &format!("/proxies/{}/toxics", self.name),
            Some(body),
            &format!("add toxic {name}"),
        )
        .map(drop)
    }

    fn remove_toxic(&self, name: &str) -> Result<(), ToxiproxyError> {
        call(
            self.api,
            "DELETE",
            &format!("/proxies/{}/toxics/{name}", self.name),
            None,
            &format!("remove toxic {name}"),
        )
        .map(drop)
    }

    /// Stops all data both ways without closing anything: a half-open link, as when the
    /// machine at the other end dies without a FIN.
    pub fn halt(&self) -> Result<(), ToxiproxyError> {
        for stream in ["upstream", "downstream"] {
            self.add_toxic(
                &format!("halt-{stream}"),
                json!({"type": "timeout", "stream": stream, "toxicity": 1.0, "attributes": {"timeout": 0}}),
            )?;
        }
        Ok(())
    }

    /// Lets data through again after [`halt`](Self::halt).
    pub fn heal(&self) -> Result<(), ToxiproxyError> {
        for stream in ["upstream", "downstream"] {
            self.remove_toxic(&format!("halt-{stream}"))?;
        }
        Ok(())
    }

    /// Adds `ms` of latency to every answer from upstream.
    pub fn add_latency(&self, ms: u64) -> Result<(), ToxiproxyError> {
        self.add_toxic(
            "latency",
            json!({"type": "latency", "stream": "downstream", "toxicity": 1.0, "attributes": {"latency": ms, "jitter": 0}}),
        )
    }

    pub fn remove_latency(&self) -> Result<(), ToxiproxyError> {
        self.remove_toxic("latency")
    }

    /// Resets every connection (TCP RST) as data arrives, until [`allow_connections`] is
    /// called: a peer that restarted, or a middlebox that dropped its state.
    ///
    /// [`allow_connections`]: Self::allow_connections
    pub fn reset_connections(&self) -> Result<(), ToxiproxyError> {
        self.add_toxic(
            "reset",
            json!({"type": "reset_peer", "stream": "upstream", "toxicity": 1.0, "attributes": {"timeout": 0}}),
        )
    }

    pub fn allow_connections(&self) -> Result<(), ToxiproxyError> {
        self.remove_toxic("reset")
    }
}
