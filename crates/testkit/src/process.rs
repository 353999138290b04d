//! A child process that is killed when its handle drops, plus free-port selection.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Errors starting or controlling a test process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{what} is not installed: {hint}")]
    Missing { what: String, hint: String },
    #[error("could not start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not become ready: {reason}\n--- last lines of {log} ---\n{tail}")]
    NotReady {
        what: String,
        reason: String,
        log: String,
        tail: String,
    },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A running child whose stdout and stderr go to a log file. Killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct ManagedChild {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ManagedChild {
    /// Spawns `command` with its output appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self, ProcessError> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command.spawn().map_err(|source| ProcessError::Spawn {
            what: name.to_string(),
            source,
        })?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Whether the process is still running (not exited, not reaped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends a signal without waiting.
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other(format!("{} already stopped", self.name)))?;
        let pid = i32::try_from(pid).map_err(std::io::Error::other)?;
        kill(Pid::from_raw(pid), signal).map_err(std::io::Error::from)
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self.child.take() {
            Some(mut child) => child.wait(),
            None => Err(std::io::Error::other(format!(
                "{} already reaped",
                self.name
            ))),
        }
    }

    /// Kills the process at once (SIGKILL, no clean-up on its side) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a server on a free loopback port and waits until `ready(port)` holds. The port is
/// probed free and then handed to the child, so another process can take it in between; when
/// the child exits saying so, it is tried again on another port (three attempts in all).
/// `command(port)` builds the command line; its extra value (another port, say) is returned
/// with the child.
pub fn start_on_free_port<T>(
    name: &str,
    log: &Path,
    timeout: std::time::Duration,
    mut command: impl FnMut(u16) -> Result<(Command, T), ProcessError>,
    mut ready: impl FnMut(u16) -> bool,
) -> Result<(ManagedChild, u16, T), ProcessError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let port = free_port()?;
        let (command, extra) = command(port)?;
        let mut child = ManagedChild::spawn(name, command, log)?;
        let started = crate::wait::until_blocking(
            &format!("{name} to become ready"),
            timeout,
            std::time::Duration::from_millis(20),
            || {
                if !child.is_running() {
                    return Some(false);
                }
                ready(port).then_some(true)
            },
        );
        let reason = match started {
            Ok(true) => return Ok((child, port, extra)),
            Ok(false)
                if attempts < 3
                    && child
                        .log_tail(10)
                        .to_ascii_lowercase()
                        .contains("address already in use") =>
            {
                continue;
            }
            Ok(false) => "it exited".to_string(),
            Err(reason) => reason,
        };
        return Err(ProcessError::NotReady {
            what: name.into(),
            reason,
            log: log.display().to_string(),
            tail: child.log_tail(30),
        });
    }
}

/// The last `lines` lines of a file, or a note that it cannot be read. A stack backtrace (what
/// `anyhow` and a panic print when `RUST_BACKTRACE` is set, as in CI) is left out: it would push
/// the error itself out of the tail.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => tail_without_backtraces(&text, lines),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn tail_without_backtraces(text: &str, lines: usize) -> String {
    let mut kept = Vec::new();
    let mut in_backtrace = false;
    for line in text.lines() {
        if line.trim_start().eq_ignore_ascii_case("stack backtrace:") {
            in_backtrace = true;
            kept.push("(stack backtrace left out)");
            continue;
        }
        // Frames are indented ("  12: ...", "      at ..."); the first unindented line ends them.
        if in_backtrace && (line.starts_with(' ') || line.is_empty() || line.starts_with("note:")) {
            continue;
        }
        in_backtrace = false;
        kept.push(line);
    }
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// A loopback port that was free a moment ago. The kernel hands out ephemeral ports in sequence,
/// so a port just released is not handed out again soon; callers still retry on a bind race.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether something accepts TCP connections at `addr`.
pub fn accepts(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_ok()
}

/// A binary the project builds once into its cache: the path in `env`, else what
/// `scripts/<script> --print-path` prints (the script builds it if it is missing).
pub fn cached_binary(what: &str, env: &str, script: &str) -> Result<PathBuf, ProcessError> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(script);
    let output = Command::new("bash")
        .arg(&script)
        .arg("--print-path")
        .output()
        .map_err(|e| ProcessError::Missing {
            what: what.into(),
            hint: format!(
                "cannot run {}: {e}; set {env} to a {what} binary",
                script.display()
            ),
        })?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || path.is_empty() {
        return Err(ProcessError::Missing {
            what: what.into(),
            hint: format!(
                "{} failed ({}): {}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        });
    }
    Ok(PathBuf::from(path))
}

/// Finds an executable on `PATH` or in the usual system folders.
pub fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
                .into_iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::tail_without_backtraces;

    #[test]
    fn the_error_stays_in_the_tail_when_a_backtrace_follows_it() {
        let mut log = String::from(
            "starting\nError: binding 127.0.0.1:80: Address already in use\n\nStack backtrace:\n",
        );
        for i in 0..40 {
            log.push_str(&format!("  {i}: frame\n             at src/x.rs:{i}\n"));
        }
        let tail = tail_without_backtraces(&log, 3);
        assert!(tail.contains("Address already in use"), "{tail}");
        assert!(tail.ends_with("(stack backtrace left out)"), "{tail}");
        assert!(!tail.contains("frame"), "{tail}");
    }

    #[test]
    fn lines_after_a_backtrace_are_kept() {
        let log = "thread 'main' panicked at x.rs:1:1:\nboom\nstack backtrace:\n   0: a\nnote: omitted\nlater line\n";
        assert_eq!(
            tail_without_backtraces(log, 10),
            "thread 'main' panicked at x.rs:1:1:\nboom\n(stack backtrace left out)\nlater line"
        );
    }
}
