//! The real `liveclass-socket` binary as a child process on a free loopback port.
//!
//! Tests run the binary rather than the library in-process because what they check — a pod
//! killed without clean-up, SIGTERM draining, the command-line flags — is about the process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::http::http_get;
use crate::process::{ManagedChild, ProcessError, start_on_free_port};
use crate::wait::until_blocking;

/// Where the `liveclass-socket` binary is: `LIVECLASS_SOCKET_BIN`, or next to the running test
/// binary's target folder (`target/<profile>/liveclass-socket`), where `cargo test` builds it.
pub fn socket_binary() -> Result<PathBuf, ProcessError> {
    if let Some(path) = std::env::var_os("LIVECLASS_SOCKET_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test-binary>
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("liveclass-socket"))
        .filter(|path| path.is_file());
    candidate.ok_or_else(|| ProcessError::Missing {
        what: "liveclass-socket".into(),
        hint: "build it with `cargo build -p liveclass-socket` or set LIVECLASS_SOCKET_BIN".into(),
    })
}

/// How to start a socket server.
#[derive(Debug, Clone)]
pub struct SocketServerBuilder {
    binary: Option<PathBuf>,
    redis_url: String,
    pod_id: String,
    secret: String,
    args: Vec<String>,
    files: Vec<(String, String, Vec<u8>)>,
}

impl SocketServerBuilder {
    pub fn new(
        redis_url: impl Into<String>,
        pod_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            binary: None,
            redis_url: redis_url.into(),
            pod_id: pod_id.into(),
            secret: secret.into(),
            args: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Uses this binary instead of [`socket_binary`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Adds a command-line argument (for limits: `--max-frame-bytes`, `--rate`, ...).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds several arguments.
    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Passes `flag <file>`, where the file holds `contents` and lives in this server's own
    /// directory: tests running in parallel never share (or half-write) each other's files.
    pub fn file_arg(
        mut self,
        flag: impl Into<String>,
        name: impl Into<String>,
        contents: impl Into<Vec<u8>>,
    ) -> Self {
        self.files.push((flag.into(), name.into(), contents.into()));
        self
    }

    /// Starts the server and waits until `/healthz` answers 200.
    pub fn start(self) -> Result<SocketServer, ProcessError> {
        let binary = match &self.binary {
            Some(path) => path.clone(),
            None => socket_binary()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("liveclass-socket-")
            .tempdir()?;
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, &self.secret)?;
        let mut file_args = Vec::new();
        for (flag, name, contents) in &self.files {
            let path = dir.path().join(name);
            std::fs::write(&path, contents)?;
            file_args.push(flag.clone());
            file_args.push(path.display().to_string());
        }
        let log = dir.path().join("socket.log");
        let (child, port, admin_port) = start_on_free_port(
            "liveclass-socket",
            &log,
            Duration::from_secs(15),
            |port| {
                let admin_port = crate::process::free_port()?;
                let mut command = Command::new(&binary);
                command
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--admin-listen")
                    .arg(format!("127.0.0.1:{admin_port}"))
                    .arg("--redis-url")
                    .arg(&self.redis_url)
                    .arg("--pod-id")
                    .arg(&self.pod_id)
                    .arg("--token-secret-file")
                    .arg(&secret_file)
                    .args(&file_args)
                    .args(&self.args)
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                    );
                Ok((command, admin_port))
            },
            |port| matches!(http_get(loopback(port), "/healthz"), Ok((200, _))),
        )?;
        Ok(SocketServer {
            addr: loopback(port),
            admin_addr: loopback(admin_port),
            secret_file,
            pod_id: self.pod_id,
            child,
            _dir: dir,
        })
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A running `liveclass-socket` process; SIGKILLed on drop.
#[derive(Debug)]
pub struct SocketServer {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    secret_file: PathBuf,
    pod_id: String,
    child: ManagedChild,
    _dir: tempfile::TempDir,
}

impl SocketServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pod_id(&self) -> &str {
        &self.pod_id
    }

    /// `ws://127.0.0.1:<port>/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The admin listener (`/metrics`, probes, the server API).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// A plain HTTP GET against the students' listener: `(status, body)`.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.addr, path)
    }

    /// A plain HTTP GET against the admin listener: `(status, body)`.
    pub fn admin_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.admin_addr, path)
    }

    /// Where the file given to [`SocketServerBuilder::file_arg`] as `name` is (tests rewrite
    /// it to see the server re-read it).
    pub fn file(&self, name: &str) -> PathBuf {
        self.secret_file.with_file_name(name)
    }

    /// The file the server reads its token secret from (rewrite it to rotate the secret).
    pub fn secret_file(&self) -> &std::path::Path {
        &self.secret_file
    }

    /// Sends a signal (SIGSTOP/SIGCONT to stall and resume the server).
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        self.child.signal(signal)
    }

    /// The server's `/metrics` text.
    pub fn metrics(&self) -> std::io::Result<String> {
        self.admin_get("/metrics").map(|(_, body)| body)
    }

    /// The value of the first sample whose line starts with `prefix`.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let body = self.metrics().ok()?;
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Sends SIGTERM: the server starts draining.
    pub fn terminate(&self) -> std::io::Result<()> {
        self.child.signal(Signal::SIGTERM)
    }

    /// Kills the server at once (SIGKILL): it gets no chance to clean up its Redis state.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        until_blocking(
            "liveclass-socket to exit",
            timeout,
            Duration::from_millis(20),
            || (!self.child.is_running()).then_some(()),
        )?;
        self.child.wait().map_err(|e| e.to_string())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.child.log_tail(lines)
    }
}
