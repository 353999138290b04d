//! The real Caddy in front of socket servers, on a free loopback port, killed on drop.
//!
//! It runs the repository's own `Caddyfile` (so tests exercise the file the demo and the
//! benchmarks use), with its environment placeholders pointed at the test's servers: the listen
//! port, the upstreams and the admin port are free loopback ports chosen here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::http::http_get;
use crate::process::{ManagedChild, ProcessError, cached_binary, free_port, start_on_free_port};

/// The repository root (the folder holding `Caddyfile` and `scripts/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the `caddy` binary is: `LIVECLASS_CADDY`, else what `scripts/caddy-binary --print-path`
/// prints (it builds the pinned Caddy once, into a cache outside the repo, if it is missing).
pub fn caddy_binary() -> Result<PathBuf, ProcessError> {
    cached_binary("caddy", "LIVECLASS_CADDY", "caddy-binary")
}

/// How to start Caddy.
#[derive(Debug, Clone)]
pub struct CaddyBuilder {
    upstreams: Vec<SocketAddr>,
    caddyfile: PathBuf,
    binary: Option<PathBuf>,
    env: Vec<(String, String)>,
    timeout: Duration,
    tls: Option<crate::tls::LocalCertificate>,
}

impl CaddyBuilder {
    pub fn new(upstreams: &[SocketAddr]) -> Self {
        Self {
            upstreams: upstreams.to_vec(),
            caddyfile: repo_root().join("Caddyfile"),
            binary: None,
            env: Vec::new(),
            timeout: Duration::from_secs(20),
            tls: None,
        }
    }

    /// Uses another Caddyfile (same placeholders) instead of the repository's.
    pub fn caddyfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.caddyfile = path.into();
        self
    }

    /// Uses this binary instead of [`caddy_binary`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Sets an environment variable for Caddy (e.g. `LIVECLASS_STREAM_BUFFER`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Serves HTTPS (`wss://`) instead of plain HTTP, with this certificate: the Caddyfile's
    /// `LIVECLASS_TLS=on`, as a school's gateway would with its own.
    pub fn tls(mut self, certificate: crate::tls::LocalCertificate) -> Self {
        self.tls = Some(certificate);
        self
    }

    /// Starts Caddy and waits until a request through it reaches a socket server (with TLS:
    /// until it listens; the handshake is the test's to make).
    pub fn start(self) -> Result<Caddy, ProcessError> {
        let binary = match &self.binary {
            Some(path) => path.clone(),
            None => caddy_binary()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("liveclass-caddy-")
            .tempdir()?;
        let upstreams = self
            .upstreams
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let log = dir.path().join("caddy.log");
        let (child, port, admin) = start_on_free_port(
            "caddy",
            &log,
            self.timeout,
            |port| {
                let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                let mut command = Command::new(&binary);
                command
                    .arg("run")
                    .arg("--config")
                    .arg(&self.caddyfile)
                    .arg("--adapter")
                    .arg("caddyfile")
                    .env("LIVECLASS_BIND", "127.0.0.1")
                    .env("LIVECLASS_PORT", port.to_string())
                    .env("LIVECLASS_UPSTREAMS", &upstreams)
                    .env("LIVECLASS_CADDY_ADMIN", admin.to_string())
                    // Caddy keeps autosaved config and data under these; keep them in the temp dir.
                    .env("HOME", dir.path())
                    .env("XDG_CONFIG_HOME", dir.path().join("config"))
                    .env("XDG_DATA_HOME", dir.path().join("data"))
                    .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                if let Some(tls) = &self.tls {
                    command
                        .env("LIVECLASS_TLS", "on")
                        .env("LIVECLASS_TLS_CERT", &tls.cert)
                        .env("LIVECLASS_TLS_KEY", &tls.key);
                }
                Ok((command, admin))
            },
            // Ready when a request through Caddy reaches a socket server: the gateway serves
            // /ws only, and a plain GET of it gets the server's own answer (a refused
            // handshake), where Caddy alone would answer 502/503.
            |port| {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                if self.tls.is_some() {
                    return std::net::TcpStream::connect(addr).is_ok();
                }
                matches!(
                    http_get(addr, "/ws"),
                    Ok((status, body)) if (400..500).contains(&status) && body.contains("\"error\"")
                )
            },
        )?;
        Ok(Caddy {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin,
            tls: self.tls.is_some(),
            child,
            _dir: dir,
        })
    }
}

/// A running Caddy; SIGKILLed on drop.
#[derive(Debug)]
pub struct Caddy {
    addr: SocketAddr,
    admin: SocketAddr,
    tls: bool,
    child: ManagedChild,
    _dir: tempfile::TempDir,
}

impl Caddy {
    /// Starts Caddy with the repository's Caddyfile in front of `upstreams`.
    pub fn start(upstreams: &[SocketAddr]) -> Result<Self, ProcessError> {
        CaddyBuilder::new(upstreams).start()
    }

    pub fn builder(upstreams: &[SocketAddr]) -> CaddyBuilder {
        CaddyBuilder::new(upstreams)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:<port>/ws`, or with TLS `wss://localhost:<port>/ws` (the name the
    /// certificate is for).
    pub fn ws_url(&self) -> String {
        if self.tls {
            format!("wss://localhost:{}/ws", self.addr.port())
        } else {
            format!("ws://{}/ws", self.addr)
        }
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Caddy's view of its upstreams (admin API `/reverse_proxy/upstreams`): address, requests in
    /// flight (open WebSockets count) and recent failures.
    pub fn upstreams(&self) -> std::io::Result<Vec<UpstreamStatus>> {
        let (status, body) = http_get(self.admin, "/reverse_proxy/upstreams")?;
        if status != 200 {
            return Err(std::io::Error::other(format!(
                "admin API answered {status}: {body}"
            )));
        }
        serde_json::from_str(&body).map_err(std::io::Error::other)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.child.log_tail(lines)
    }

    /// Kills Caddy at once.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

/// One upstream as Caddy's admin API reports it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct UpstreamStatus {
    pub address: String,
    #[serde(default)]
    pub num_requests: i64,
    #[serde(default)]
    pub fails: i64,
}
