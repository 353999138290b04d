//! The split-process path of the benchmarks, as they run it: `bench/lib/stack.sh`'s
//! `lc_run_load` starts the load generator binary as two parts in the background (one run id,
//! one start instant), tracks them, waits and merges their reports; and when the script is
//! stopped mid-run, its cleanup stops the parts too.
//!
//! Needs `redis-server`, the `liveclass-socket` binary next to this test binary (or
//! `LIVECLASS_SOCKET_BIN`) and bash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use liveclass_load::Report;
use liveclass_testkit::wait::until_blocking;
use liveclass_testkit::{RedisServer, SocketServer, SocketServerBuilder};

const SECRET: &str = "split-path-load-generator-secret-0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts `lc_run_load` with two parts in a bash script; returns the child and its stderr lines.
fn start_script(
    dir: &Path,
    urls: &str,
    duration: &str,
    out: &Path,
) -> (Child, mpsc::Receiver<String>) {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let script = format!(
        r#"set -euo pipefail
source "{repo}/bench/lib/stack.sh"
trap lc_stop_all EXIT
trap 'exit 130' INT TERM
LC_LOAD_BIN="{bin}"
LC_SECRET_FILE="{secret}"
LC_LOAD_MEMBERS=302 LC_LOAD_PARTS=2 LC_START_DELAY_MS=4000
lc_run_load "{out}" --url "{urls}" --students 300 --classes 2 --teachers 1 --ramp 600 \
  --comment-rate 4 --duration {duration} --drain 20s --no-progress
"#,
        repo = repo().display(),
        bin = env!("CARGO_BIN_EXE_liveclass-load"),
        secret = secret.display(),
        out = out.display(),
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("script: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The pids `lc_run_load` says it started, once both parts are up.
fn part_pids(lines: &mpsc::Receiver<String>) -> Vec<i32> {
    let mut pids = Vec::new();
    until_blocking(
        "both load-generator parts to start",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            while let Ok(line) = lines.try_recv() {
                if let Some(pid) = line.split("load generator pid ").nth(1) {
                    pids.push(pid.trim().parse::<i32>().unwrap());
                }
            }
            (pids.len() == 2).then_some(())
        },
    )
    .unwrap();
    pids
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for this purpose: its parent has not reaped it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn stack() -> (RedisServer, Vec<SocketServer>) {
    let redis = RedisServer::start().expect("redis-server");
    let servers = (0..2)
        .map(|i| {
            SocketServerBuilder::new(redis.url(), format!("split-socket-{i}"), SECRET)
                .start()
                .expect("socket server")
        })
        .collect();
    (redis, servers)
}

#[test]
fn the_scripts_split_run_merges_one_account_and_stops_its_parts_on_cleanup() {
    let (_redis, servers) = stack();
    let urls = servers
        .iter()
        .map(SocketServer::ws_url)
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().unwrap();

    // 1. A whole split run: two parts, one run id, one merged report, nothing left running.
    let out = dir.path().join("report.json");
    let (mut child, lines) = start_script(dir.path(), &urls, "4s", &out);
    let pids = part_pids(&lines);
    let status = child.wait().unwrap();
    assert!(status.success(), "lc_run_load failed: {status}");
    let report: Report = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    println!("{report}");
    assert!(!report.partial);
    assert_eq!(report.parts, vec![0, 1]);
    assert_eq!(report.processes.len(), 2, "one process per part");
    assert_eq!(report.connections.connected, 302);
    assert!(report.comments.accepted >= 10);
    assert_eq!(report.comments.accepted, report.comments.scheduled);
    assert_eq!(report.deliveries.received, report.deliveries.expected);
    assert_eq!(report.deliveries.unknown, 0, "both parts' ledgers merged");
    assert!(report.ok, "{:?}", report.failures);
    assert!(dir.path().join("report.hlog").is_file(), "histograms saved");
    for pid in pids {
        assert!(!alive(pid), "part {pid} still running");
    }

    // 2. The script is stopped mid-run: its EXIT trap stops both parts.
    let out = dir.path().join("stopped.json");
    let (mut child, lines) = start_script(dir.path(), &urls, "60s", &out);
    let pids = part_pids(&lines);
    assert!(pids.iter().all(|&p| alive(p)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    until_blocking(
        "the parts to be stopped",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || pids.iter().all(|&p| !alive(p)).then_some(()),
    )
    .unwrap();
}
