//! The scripts a Replicated class's Redis pods start with, run for real: three Redis nodes and
//! three Sentinels from Debian's redis-server, each on its own loopback address (as each pod
//! has its own IP) with the ports the pods use. They find each other with no one in charge;
//! the primary is SIGKILLed and restarted at once — faster than the Sentinels notice, the case
//! that loses a class's state when a restarted primary comes back empty and its replicas copy
//! it — and it waits for the failover, rejoins as a replica, and nothing written before is lost.
//! Without the class's password a node answers only what the probes and the operator's
//! attendance reads ask.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use liveclass_operator::resources::{MASTER_NAME, NODE_SCRIPT, USER_NAME, sentinel_script};

const PASSWORD: &str = "class-password-0123456789abcdef";
use liveclass_testkit::process::ManagedChild;

/// A loopback block of its own per run: 127.<77>.<random>.<n>.
fn block() -> String {
    format!("127.77.{}", fastrand::u8(1..250))
}

struct Layout {
    nodes: Vec<String>,
    sentinels: Vec<String>,
    password_file: std::path::PathBuf,
}

impl Layout {
    fn env(&self, command: &mut Command, me: &str) {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("{s}:26379"))
            .collect();
        command
            .env("SELF", me)
            .env("MASTER", MASTER_NAME)
            .env("FIRST", &self.nodes[0])
            .env("SENTINELS", sentinels.join(" "))
            .env("NODES", self.nodes.join(" "))
            .env("USER_NAME", USER_NAME)
            .env("PASSWORD_FILE", &self.password_file);
    }

    fn node(&self, i: usize, dir: &Path) -> ManagedChild {
        let own = dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&own).unwrap();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(NODE_SCRIPT)
            .arg("redis-node")
            .args(["--bind", &self.nodes[i]])
            .env("DATA_DIR", &own);
        self.env(&mut command, &self.nodes[i]);
        ManagedChild::spawn(&format!("node {i}"), command, &own.join("log")).unwrap()
    }

    fn sentinel(&self, i: usize, dir: &Path) -> ManagedChild {
        let own = dir.join(format!("sentinel-{i}"));
        std::fs::create_dir_all(&own).unwrap();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(sentinel_script())
            .env("SENTINEL_DIR", &own)
            .env("BIND", &self.sentinels[i]);
        self.env(&mut command, &self.sentinels[i]);
        ManagedChild::spawn(&format!("sentinel {i}"), command, &own.join("log")).unwrap()
    }
}

/// One command to `host:port` (as the class's user on a Redis node); `None` while it does not
/// answer.
fn ask(host: &str, port: u16, args: &[&str]) -> Option<redis::Value> {
    let url = if port == 6379 {
        format!("redis://{USER_NAME}:{PASSWORD}@{host}:{port}")
    } else {
        format!("redis://{host}:{port}")
    };
    send(&url, args).ok()
}

fn send(url: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_connection_with_timeout(Duration::from_millis(500))?;
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut c)
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        redis::Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn primary_named_by(sentinel: &str) -> Option<String> {
    let v = ask(
        sentinel,
        26379,
        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
    )?;
    text(&v)
        .split(' ')
        .next()
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

fn replication(node: &str) -> String {
    ask(node, 6379, &["INFO", "replication"])
        .map(|v| text(&v))
        .unwrap_or_default()
}

/// Polls `f` every 200 ms until it returns `Some`, at most `timeout`.
fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn a_restarted_primary_waits_for_the_failover_and_rejoins_as_a_replica_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = block();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let layout = Layout {
        nodes: (1..=3).map(|n| format!("{base}.{n}")).collect(),
        sentinels: (11..=13).map(|n| format!("{base}.{n}")).collect(),
        password_file,
    };
    let mut nodes: Vec<ManagedChild> = (0..3).map(|i| layout.node(i, dir.path())).collect();
    let _sentinels: Vec<ManagedChild> = (0..3).map(|i| layout.sentinel(i, dir.path())).collect();

    // Nobody knew a primary: node 0 is it, both others replicate, every Sentinel agrees and
    // they have a quorum.
    let first = layout.nodes[0].clone();
    until(
        "a primary with two replicas in sync",
        Duration::from_secs(60),
        || (replication(&first).matches("state=online").count() == 2).then_some(()),
    );
    for s in &layout.sentinels {
        until(
            &format!("Sentinel {s} naming node 0 with a quorum"),
            Duration::from_secs(60),
            || {
                let quorum = ask(s, 26379, &["SENTINEL", "ckquorum", MASTER_NAME])?;
                (primary_named_by(s).as_deref() == Some(first.as_str())
                    && text(&quorum).starts_with("OK"))
                .then_some(())
            },
        );
    }

    // Closed to anyone without the class's password, except what the probes, the operator's
    // attendance reads and its gateway hand-overs need.
    let anonymous = format!("redis://{first}:6379");
    let refused = send(&anonymous, &["SET", "lc:{school/maths}:note", "x"]).unwrap_err();
    assert!(
        refused.to_string().to_lowercase().contains("noperm"),
        "{refused}"
    );
    let refused = send(&anonymous, &["HGETALL", "lc:{school/maths}:where"]).unwrap_err();
    assert!(
        refused.to_string().to_lowercase().contains("noperm"),
        "presence is not readable: {refused}"
    );
    let refused = send(&anonymous, &["PUBLISH", "lc:{school/maths}:bcast", "x"]).unwrap_err();
    assert!(
        refused.to_string().to_lowercase().contains("noperm"),
        "a comment cannot be injected: {refused}"
    );
    for allowed in [
        vec!["HLEN", "lc:{school/maths}:where"],
        vec!["HGETALL", "lc:{school/maths}:pods"],
        vec!["INFO", "replication"],
        vec!["ROLE"],
        vec!["PUBLISH", "lc:handover", "{}"],
    ] {
        send(&anonymous, &allowed).unwrap_or_else(|e| panic!("{allowed:?}: {e}"));
    }
    let wrong = send(
        &format!("redis://{USER_NAME}:wrong@{first}:6379"),
        &["PING"],
    );
    assert!(wrong.is_err(), "a wrong password is refused");

    // What a class had written before the crash, on every node.
    ask(
        &first,
        6379,
        &["SET", "lc:{school/maths}:note", "before the crash"],
    )
    .unwrap();
    let acked = ask(&first, 6379, &["WAIT", "2", "2000"]).unwrap();
    assert_eq!(text(&acked), "2", "both replicas acknowledged the write");

    // The primary dies and is back at once, before the Sentinels notice.
    let killed = Instant::now();
    nodes[0].kill();
    nodes[0] = layout.node(0, dir.path());

    let promoted = until(
        "the Sentinels to promote a replica",
        Duration::from_secs(45),
        || primary_named_by(&layout.sentinels[0]).filter(|p| *p != first),
    );
    eprintln!(
        "failover {:.1}s after the kill: {promoted} is the primary",
        killed.elapsed().as_secs_f64()
    );
    assert!(
        layout.nodes[1..].contains(&promoted),
        "{promoted} is one of the replicas"
    );
    assert!(
        log(dir.path(), "node-0/log").contains("waiting for a failover"),
        "the restarted primary waited instead of coming back as an empty primary:\n{}",
        log(dir.path(), "node-0/log")
    );

    // The old primary rejoins as a replica of the new one; the note survived everywhere.
    until(
        "the old primary to replicate from the new one",
        Duration::from_secs(45),
        || {
            let info = replication(&first);
            (info.contains("role:slave")
                && info.contains(&format!("master_host:{promoted}"))
                && info.contains("master_link_status:up"))
            .then_some(())
        },
    );
    for node in &layout.nodes {
        let v = ask(node, 6379, &["GET", "lc:{school/maths}:note"]).unwrap();
        assert_eq!(text(&v), "before the crash", "on {node}");
    }
    let info = replication(&promoted);
    assert!(
        info.contains("role:master") && info.contains("connected_slaves:2"),
        "{info}"
    );
}
