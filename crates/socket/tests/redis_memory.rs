//! What a student and a kept comment really cost in Redis, against what the planner sizes a
//! class's Redis with (`liveclass_api::plan::redis`: `maxmemory` = base + bytes per student +
//! bytes per history entry + bytes per socket pod). Students connect to real socket servers,
//! then some write one 200-character comment each; Redis's own `used_memory` before and after.
//! The planner's figures must cover the measured ones, or a full class would meet a Redis that
//! refuses writes (`noeviction`). The test does it with 400 students on one server; the
//! benchmark (`bench/redis-memory`) with a class of 8,000 on two, into `BENCH_OUT`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use liveclass_api::plan::redis::{PER_HISTORY_ENTRY_BYTES, PER_STUDENT_BYTES};
use liveclass_testkit::{RedisServer, SocketServer, TestClient, client::ConnectOptions};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const CLASS: &str = "school/physics";
/// What the test's servers are told: every student comes from loopback here. The handshake
/// window stays the production one (10 s), so what a student costs at arrival includes its
/// handshake counter for as long as it really lives.
const SERVER_ARGS: [&str; 4] = [
    "--address-handshake-rate",
    "10000",
    "--address-handshake-burst",
    "10000",
];
/// Longer than the handshake window and a comment budget's life: what is left after it is
/// what a student keeps.
const SETTLE: Duration = Duration::from_secs(13);

fn used_memory(redis: &RedisServer) -> u64 {
    let info = redis.command(&["INFO", "memory"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

fn count(redis: &RedisServer, command: &str, key: &str) -> u64 {
    let reply = redis.command(&[command, key]).unwrap();
    reply.trim().trim_start_matches(':').parse().unwrap_or(0)
}

/// What one student and one kept comment cost, in bytes of Redis's `used_memory`.
#[derive(Debug)]
struct Costs {
    /// Per student at arrival (with its handshake counter), when it peaks.
    per_student_arriving: f64,
    /// Per student once the handshake counters expired.
    per_student_settled: f64,
    per_entry: f64,
    connect_seconds: f64,
}

/// `students` on `servers` servers (every frame they are sent read and dropped), then
/// `comments` of them comment once, `pace` apart.
async fn measure(students: usize, servers: usize, comments: usize, pace: Duration) -> Costs {
    let redis = redis();
    let servers: Vec<SocketServer> = (0..servers)
        .map(|i| {
            builder(&redis, &format!("pod-{i}"))
                .args(SERVER_ARGS)
                .start()
                .unwrap()
        })
        .collect();
    for s in &servers {
        ready(s).await;
    }
    let before = used_memory(&redis);

    let started = Instant::now();
    let sinks: Vec<_> = futures_util::stream::iter(0..students)
        .map(|i| {
            let server = &servers[i % servers.len()];
            async move {
                let options = ConnectOptions {
                    // One loopback address per 200 students.
                    source: Some(std::net::IpAddr::from([127, 0, 0, 2 + (i / 200) as u8])),
                    ..ConnectOptions::token(minter().student(&format!("student-{i:05}"), CLASS))
                };
                let mut client = TestClient::connect_with(&server.ws_url(), &options)
                    .await
                    .unwrap();
                client.recv_type("hello", T).await.unwrap();
                let (sink, mut frames) = client.into_inner().split();
                tokio::spawn(async move { while frames.next().await.is_some() {} });
                sink
            }
        })
        .buffered(32)
        .collect()
        .await;
    let connect_seconds = started.elapsed().as_secs_f64();
    let where_key = format!("lc:{{{CLASS}}}:where");
    liveclass_testkit::wait::until(
        "every student in the class's routing hash",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { (count(&redis, "HLEN", &where_key) == students as u64).then_some(()) },
    )
    .await
    .unwrap();
    let connected = used_memory(&redis);
    // Once the handshake counters have expired: what a student keeps.
    tokio::time::sleep(SETTLE).await;
    let settled = used_memory(&redis);

    // 200 characters of text, as a lively class writes them.
    let text = "a".repeat(200);
    let mut sinks = sinks;
    for sink in sinks.iter_mut().take(comments) {
        let frame = json!({ "t": "comment", "text": text }).to_string();
        sink.send(Message::text(frame)).await.unwrap();
        tokio::time::sleep(pace).await;
    }
    let history_key = format!("lc:{{{CLASS}}}:history");
    liveclass_testkit::wait::until(
        "every comment kept in the class's stream",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { (count(&redis, "XLEN", &history_key) == comments as u64).then_some(()) },
    )
    .await
    .unwrap();
    // Once the commenters' budgets have expired too: what the kept comments cost.
    tokio::time::sleep(SETTLE).await;
    let commented = used_memory(&redis);
    assert_eq!(
        count(&redis, "HLEN", &where_key),
        students as u64,
        "students left during the measurement"
    );
    drop(sinks);
    let per_student = |after: u64| after.saturating_sub(before) as f64 / students as f64;
    Costs {
        per_student_arriving: per_student(connected),
        per_student_settled: per_student(settled),
        per_entry: commented.saturating_sub(settled) as f64 / comments as f64,
        connect_seconds,
    }
}

fn check(costs: &Costs) {
    let Costs {
        per_student_arriving,
        per_entry,
        ..
    } = costs;
    assert!(
        *per_student_arriving <= PER_STUDENT_BYTES as f64,
        "a student costs {per_student_arriving:.0} B in Redis, the planner sizes {PER_STUDENT_BYTES}"
    );
    assert!(
        *per_entry <= PER_HISTORY_ENTRY_BYTES as f64,
        "a kept comment costs {per_entry:.0} B in Redis, the planner sizes {PER_HISTORY_ENTRY_BYTES}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_and_a_kept_comment_cost_less_in_redis_than_the_planner_sizes_for() {
    let costs = measure(400, 1, 400, Duration::ZERO).await;
    eprintln!("Redis used_memory with 400 students: {costs:?}");
    check(&costs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/redis-memory"]
async fn redis_memory() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let students = env("BENCH_STUDENTS", 8000);
    let comments = env("BENCH_COMMENTS", 1000);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "/tmp/redis-memory.json".into());
    // 100 comments a second, each to every student: the class's delivery load stays what a
    // busy class has.
    let costs = measure(students, 2, comments, Duration::from_millis(10)).await;
    let result = json!({
        "scenario": "redis-memory",
        "setup": "one redis-server from Debian's package; two liveclass-socket with production defaults but the per-address handshake budget (every student from loopback); 200-character comments, 100 a second; each figure read after the counters it should not include expired",
        "students": students,
        "comments": comments,
        "per_student_arriving_bytes": costs.per_student_arriving.round(),
        "per_student_settled_bytes": costs.per_student_settled.round(),
        "per_history_entry_bytes": costs.per_entry.round(),
        "planned_per_student_bytes": PER_STUDENT_BYTES,
        "planned_per_history_entry_bytes": PER_HISTORY_ENTRY_BYTES,
        "connect_seconds": (costs.connect_seconds * 10.0).round() / 10.0,
    });
    let text = serde_json::to_string_pretty(&result).unwrap() + "\n";
    std::fs::write(&out, &text).unwrap();
    eprintln!("{text}");
    check(&costs);
}
