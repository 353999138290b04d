//! A real `redis-server` on a free loopback port, in a temporary folder, stopped on drop; as a
//! replica of another, or as a Sentinel (`redis-server --sentinel`, the same Debian binary).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{ManagedChild, ProcessError, find_executable, free_port};
use crate::wait::until_blocking;

/// A `redis-server` process owned by a test. Persistence is off: a restart starts empty, like a
/// Redis pod that lost its node.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
    child: Option<ManagedChild>,
    /// Arguments after the defaults (`--replicaof …`, `--sentinel`).
    extra: Vec<String>,
    /// A config file in `dir`, the first argument when there is one (a Sentinel's).
    config: Option<PathBuf>,
}

impl RedisServer {
    /// Starts `redis-server` (Debian's package; `LIVECLASS_REDIS_SERVER` overrides the path).
    pub fn start() -> Result<Self, ProcessError> {
        Self::start_with(None, Vec::new())
    }

    /// Starts a replica of `primary` (it syncs in the background; see [`Self::in_sync`]).
    pub fn start_replica_of(primary: &RedisServer) -> Result<Self, ProcessError> {
        Self::start_with(
            None,
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port.to_string(),
            ],
        )
    }

    /// Starts a Redis closed as the operator closes a class's: `user` with `password` may do
    /// everything, the default user (no password) only `PING`.
    pub fn start_with_user(user: &str, password: &str) -> Result<Self, ProcessError> {
        Self::start_with(
            Some(format!(
                "user default on nopass resetchannels -@all +ping\n\
                 user {user} on >{password} ~* &* +@all\n"
            )),
            Vec::new(),
        )
    }

    fn start_with(config: Option<String>, extra: Vec<String>) -> Result<Self, ProcessError> {
        let binary = std::env::var_os("LIVECLASS_REDIS_SERVER")
            .map(PathBuf::from)
            .or_else(|| find_executable("redis-server"))
            .ok_or_else(|| ProcessError::Missing {
                what: "redis-server".into(),
                hint: "run `apt-get install -y redis-server` (make test does this for you)".into(),
            })?;
        let dir = tempfile::Builder::new()
            .prefix("liveclass-redis-")
            .tempdir()?;
        let config = match config {
            Some(text) => {
                let path = dir.path().join("redis.conf");
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let mut server = Self {
            port: 0,
            dir,
            binary,
            child: None,
            extra,
            config,
        };
        let mut attempts = 0;
        loop {
            server.port = free_port()?;
            attempts += 1;
            match server.launch() {
                Ok(()) => return Ok(server),
                // Another process may have taken the port between our probe and Redis's bind.
                Err(e) if attempts >= 5 => return Err(e),
                Err(_) => {}
            }
        }
    }

    fn launch(&mut self) -> Result<(), ProcessError> {
        let mut command = Command::new(&self.binary);
        command.args(&self.config);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra);
        let log = self.dir.path().join("redis.log");
        let mut child = ManagedChild::spawn("redis-server", command, &log)?;
        let addr = self.addr();
        let ready = until_blocking(
            "redis-server to answer PING",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                if !child.is_running() {
                    return Some(false);
                }
                ping(addr).then_some(true)
            },
        );
        match ready {
            Ok(true) => {
                self.child = Some(child);
                Ok(())
            }
            Ok(false) => Err(ProcessError::NotReady {
                what: "redis-server".into(),
                reason: "it exited".into(),
                log: log.display().to_string(),
                tail: child.log_tail(20),
            }),
            Err(reason) => Err(ProcessError::NotReady {
                what: "redis-server".into(),
                reason,
                log: log.display().to_string(),
                tail: child.log_tail(20),
            }),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server at once (SIGKILL), like a crash; the port stays reserved for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) -> Result<(), ProcessError> {
        self.stop();
        self.launch()
    }

    /// Starts the server again on the same port, empty and as a primary (a node that comes
    /// back after a crash, before anything tells it what it is now).
    pub fn restart_as_primary(&mut self) -> Result<(), ProcessError> {
        self.stop();
        self.extra.clear();
        self.launch()
    }

    /// What the server has logged so far (a Sentinel logs each step of a failover).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// `role` from `INFO replication` (`master` or `slave`).
    pub fn role(&self) -> Option<String> {
        self.info_field("replication", "role")
    }

    /// A replica whose link to its primary is up.
    pub fn in_sync(&self) -> bool {
        self.info_field("replication", "master_link_status")
            .is_some_and(|s| s == "up")
    }

    fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let reply = self.command(&["INFO", section]).ok()?;
        reply.lines().find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')
                .map(|v| v.trim().to_owned())
        })
    }

    /// Runs a command through `redis-cli`-free RESP over a plain socket and returns the raw reply.
    /// Enough for test assertions on simple replies (`HLEN`, `EXISTS`, ...).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(self.addr())?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{}\r\n", arg.len(), arg));
        }
        stream.write_all(request.as_bytes())?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// A Redis Sentinel watching one primary under a name, with test-friendly timings: the primary
/// is down after `down_after` without answers, and a failover may take `failover_timeout`.
#[derive(Debug)]
pub struct RedisSentinel {
    server: RedisServer,
}

impl RedisSentinel {
    pub fn start(
        name: &str,
        primary: &RedisServer,
        quorum: u32,
        down_after: Duration,
        failover_timeout: Duration,
    ) -> Result<Self, ProcessError> {
        // Sentinel rewrites its config file as it learns the replicas and other Sentinels.
        let server = RedisServer::start_with(
            Some(format!(
                "sentinel monitor {name} 127.0.0.1 {port} {quorum}\n\
                 sentinel down-after-milliseconds {name} {down}\n\
                 sentinel failover-timeout {name} {failover}\n\
                 sentinel parallel-syncs {name} 1\n",
                port = primary.port,
                down = down_after.as_millis(),
                failover = failover_timeout.as_millis(),
            )),
            vec!["--sentinel".into()],
        )?;
        Ok(Self { server })
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The events this Sentinel logged (`+sdown`, `+switch-master`, `-failover-abort-…`),
    /// one per line with its time.
    pub fn events(&self) -> Vec<String> {
        self.server
            .log()
            .lines()
            .filter(|l| l.contains(" # +") || l.contains(" # -") || l.contains(" * +"))
            .map(str::to_owned)
            .collect()
    }

    /// `127.0.0.1:<port>`, as `--redis-sentinels` takes it.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    /// The primary this Sentinel names for `name`, as `host:port`.
    pub fn primary(&self, name: &str) -> Option<String> {
        let reply = self
            .server
            .command(&["SENTINEL", "get-master-addr-by-name", name])
            .ok()?;
        // *2 $9 127.0.0.1 $5 port
        let parts: Vec<&str> = reply.split("\r\n").filter(|l| !l.is_empty()).collect();
        match parts.as_slice() {
            [_, _, host, _, port, ..] => Some(format!("{host}:{port}")),
            _ => None,
        }
    }
}
