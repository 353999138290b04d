//! What a student and a kept comment really cost in Redis, against what the planner sizes a
//! class's Redis with (`liveclass_api::plan::redis`: `maxmemory` = base + bytes per student +
//! bytes per history entry + bytes per socket pod). 400 students connect to one real socket
//! server, then each writes one 200-character comment; Redis's own `used_memory` before and
//! after. The planner's figures must cover the measured ones, or a full class would meet a
//! Redis that refuses writes (`noeviction`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use liveclass_api::plan::redis::{PER_HISTORY_ENTRY_BYTES, PER_STUDENT_BYTES};
use liveclass_testkit::RedisServer;

const CLASS: &str = "school/physics";
const STUDENTS: usize = 400;

fn used_memory(redis: &RedisServer) -> u64 {
    let info = redis.command(&["INFO", "memory"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

fn hlen(redis: &RedisServer, key: &str) -> u64 {
    let reply = redis.command(&["HLEN", key]).unwrap();
    reply.trim().trim_start_matches(':').parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_and_a_kept_comment_cost_less_in_redis_than_the_planner_sizes_for() {
    let redis = redis();
    // One address for all 400 (loopback): its handshake budget is a test setting here.
    let server = builder(&redis, "pod-a")
        .args(["--address-handshake-rate", "1000"])
        .args(["--address-handshake-burst", "1000"])
        .args(["--handshake-window", "2s"])
        .start()
        .unwrap();
    ready(&server).await;
    let before = used_memory(&redis);

    let mut students = Vec::with_capacity(STUDENTS);
    for i in 0..STUDENTS {
        students.push(student(&server, &format!("student-{i:04}"), CLASS).await);
    }
    let where_key = format!("lc:{{{CLASS}}}:where");
    liveclass_testkit::wait::until(
        "every student in the class's routing hash",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { (hlen(&redis, &where_key) == STUDENTS as u64).then_some(()) },
    )
    .await
    .unwrap();
    let connected = used_memory(&redis);
    let per_student = (connected.saturating_sub(before)) as f64 / STUDENTS as f64;
    // At arrival, which is when it peaks: with each student's handshake counter, which expires
    // after the handshake window (set short here to see what stays).

    // One comment each: 200 characters of text, as a lively class writes them.
    let text = "a".repeat(200);
    for s in &mut students {
        s.send_json(&comment(&text)).await.unwrap();
    }
    let history_key = format!("lc:{{{CLASS}}}:history");
    liveclass_testkit::wait::until(
        "every comment kept in the class's stream",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let reply = redis.command(&["XLEN", &history_key]).ok()?;
            (reply.trim().trim_start_matches(':') == STUDENTS.to_string()).then_some(())
        },
    )
    .await
    .unwrap();
    let commented = used_memory(&redis);
    let per_entry = (commented.saturating_sub(connected)) as f64 / STUDENTS as f64;
    // Once the handshake counters and the comment budgets have expired: what a student keeps.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let settled = used_memory(&redis);
    let kept = (settled.saturating_sub(before)) as f64 - per_entry * STUDENTS as f64;
    let per_student_kept = kept / STUDENTS as f64;

    eprintln!(
        "Redis used_memory: {per_student:.0} B per student arriving, {per_student_kept:.0} B per \
         student settled (planned {PER_STUDENT_BYTES}), {per_entry:.0} B per kept 200-character \
         comment (planned {PER_HISTORY_ENTRY_BYTES})"
    );
    assert!(
        per_student <= PER_STUDENT_BYTES as f64,
        "a student costs {per_student:.0} B in Redis, the planner sizes {PER_STUDENT_BYTES}"
    );
    assert!(
        per_entry <= PER_HISTORY_ENTRY_BYTES as f64,
        "a kept comment costs {per_entry:.0} B in Redis, the planner sizes {PER_HISTORY_ENTRY_BYTES}"
    );
}
