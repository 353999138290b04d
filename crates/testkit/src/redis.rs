//! A real `redis-server` on a free loopback port, in a temporary folder, stopped on drop.

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
}

impl RedisServer {
    /// Starts `redis-server` (Debian's package; `LIVECLASS_REDIS_SERVER` overrides the path).
    pub fn start() -> Result<Self, ProcessError> {
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
        let mut server = Self {
            port: 0,
            dir,
            binary,
            child: None,
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
            .arg(self.dir.path());
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
