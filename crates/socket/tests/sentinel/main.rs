//! Redis that loses its primary, with real processes: three `redis-server` (a primary and two
//! replicas) and three Sentinels from Debian's package; two socket servers that find the
//! primary through the Sentinels (`--redis-sentinels`), students on both. The primary is
//! killed with SIGKILL while comments flow: the Sentinels promote a replica, both servers
//! follow without restarting, comments resume, and every student has every comment the new
//! primary's stream holds, once and in order; then the old primary comes back, rejoins as a
//! replica, and nothing is delivered twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod failover_bench;
mod tier;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use liveclass_testkit::TestClient;
use liveclass_testkit::client::Received;
use liveclass_testkit::wait::until_blocking;
use serde_json::json;
use tier::{Tier, Timings, stream_ids};

const CLASS: &str = "c";

/// What one student received: comment ids in arrival order with when, and gap frames.
#[derive(Default)]
struct Inbox {
    ids: Vec<(String, Instant)>,
    gaps: usize,
}

/// Reads a student's frames into its inbox until `stop` is set.
fn listen(
    mut client: TestClient,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Arc<Mutex<Inbox>>, tokio::task::JoinHandle<()>) {
    let inbox: Arc<Mutex<Inbox>> = Arc::default();
    let mine = inbox.clone();
    let task = tokio::spawn(async move {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match client.recv(Duration::from_millis(200)).await {
                Ok(Received::Frame(f)) if f["t"] == "comment" => {
                    let id = f["id"].as_str().unwrap_or_default().to_owned();
                    mine.lock().unwrap().ids.push((id, Instant::now()));
                }
                Ok(Received::Frame(f)) if f["t"] == "gap" => mine.lock().unwrap().gaps += 1,
                Ok(Received::Frame(_))
                | Err(liveclass_testkit::client::ClientError::Timeout(_)) => {}
                Ok(Received::Close(close)) => panic!("a student was closed: {close:?}"),
                Err(e) => panic!("a student's connection failed: {e}"),
            }
        }
    });
    (inbox, task)
}

/// Sends `n` comments, one every `every`; returns when each was sent.
async fn speak(speaker: &mut TestClient, prefix: &str, n: usize, every: Duration) -> Vec<Instant> {
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let text = format!("{prefix}{i}");
        speaker
            .send_json(&json!({ "t": "comment", "text": text, "ref": text }))
            .await
            .unwrap();
        sent.push(Instant::now());
        tokio::time::sleep(every).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_followed_and_every_student_has_what_the_new_primary_holds() {
    let mut tier = Tier::start(Timings::TEST);
    let a = tier.server("pod-a");
    let b = tier.server("pod-b");
    ready(&a).await;
    ready(&b).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut inboxes = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let server = if i % 2 == 0 { &a } else { &b };
        let (inbox, task) = listen(student(server, &format!("s{i}"), CLASS).await, stop.clone());
        inboxes.push(inbox);
        tasks.push(task);
    }
    let mut speaker = student(&a, "speaker", CLASS).await;

    // Comments flow; the primary dies two seconds in; comments go on for twelve seconds.
    let old_port = tier.nodes[0].port();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut primary = tier.nodes.remove(0);
        primary.stop(); // SIGKILL
        (Instant::now(), primary, tier)
    });
    let sent = speak(&mut speaker, "k", 280, Duration::from_millis(50)).await;
    let (killed_at, old_primary, tier) = killer.await.unwrap();
    let new_primary = tier.agreed_primary(old_port, Duration::from_secs(15));
    assert_eq!(new_primary.role().as_deref(), Some("master"));

    // Both servers follow without restarting, and are ready on the new primary.
    ready(&a).await;
    ready(&b).await;
    // Settle: catch-ups after the pub/sub came back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = stream_ids(new_primary, CLASS);
    eprintln!("what the Sentinels did:\n{}", tier.events());
    let first_after = sent.iter().position(|t| *t > killed_at).unwrap();
    let mut first_delivery_after_kill: Option<Instant> = None;
    let mut delivered_not_held = 0;
    let mut gaps = 0;
    for inbox in &inboxes {
        let inbox = inbox.lock().unwrap();
        let ids: Vec<&str> = inbox.ids.iter().map(|(id, _)| id.as_str()).collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "a comment was delivered twice");
        // Everything the new primary holds, in its order; anything else was delivered live
        // by the old primary before replication reached the replica.
        let kept: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| held.iter().any(|h| h == id))
            .collect();
        assert_eq!(
            kept,
            held.iter().map(String::as_str).collect::<Vec<_>>(),
            "a student misses what the new primary holds, or has it out of order"
        );
        // Delivered by the old primary before replication reached the new one: the server
        // that delivered them records the loss (below), its members miss nothing.
        delivered_not_held = delivered_not_held.max(ids.len() - kept.len());
        gaps += inbox.gaps;
        let after = inbox
            .ids
            .iter()
            .map(|(_, at)| *at)
            .find(|at| *at > killed_at);
        first_delivery_after_kill = match (first_delivery_after_kill, after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let resumed = first_delivery_after_kill.unwrap().duration_since(killed_at);
    eprintln!(
        "failover: {} comments held by the new primary of {} sent ({} sent after the kill); first comment delivered {:?} after the kill",
        held.len(),
        sent.len(),
        sent.len() - first_after,
        resumed
    );
    // Resumed: more comments held than were sent before the kill, by at least half of those
    // sent after it (the failover takes a few of the twelve seconds; a fixed count of 200 was
    // 1 too many on a loaded CI machine, where the outage ran longer).
    let after_kill = sent.len() - first_after;
    assert!(
        held.len() >= first_after + after_kill / 2,
        "comments did not resume: {} held, {first_after} sent before the kill, {after_kill} after",
        held.len()
    );
    assert!(resumed < Duration::from_secs(15), "{resumed:?}");

    // Never silent: a student resuming from before comments the new primary lost is told
    // `recovered:false`; with nothing lost, it gets everything held after its position.
    let epoch = new_primary
        .command(&["GET", &format!("lc:{{{CLASS}}}:epoch")])
        .unwrap();
    let epoch = epoch.lines().nth(1).unwrap().to_owned();
    let mut options =
        liveclass_testkit::ConnectOptions::token(common::minter().student("returning", CLASS));
    options.since = Some(held[0].clone());
    options.epoch = Some(epoch);
    let mut returning = TestClient::connect_with(&b.ws_url(), &options)
        .await
        .unwrap();
    let hello = returning
        .recv_type("hello", Duration::from_secs(5))
        .await
        .unwrap();
    eprintln!("{delivered_not_held} comments delivered that the new primary does not hold");
    // A server whose members saw less of the lost tail than another's may be told of the loss.
    assert!(
        gaps == 0 || delivered_not_held > 0,
        "{gaps} gap frames, though nothing held was missed"
    );
    assert_eq!(
        hello["recovered"],
        delivered_not_held == 0,
        "{delivered_not_held} comments delivered that the new primary does not hold"
    );
    if delivered_not_held == 0 {
        let mut replayed = Vec::new();
        while replayed.len() < held.len() - 1 {
            let frame = returning
                .recv_type("comment", Duration::from_secs(5))
                .await
                .unwrap();
            replayed.push(frame["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            replayed,
            held[1..],
            "the replay is what the new primary holds"
        );
    }
    drop(returning);

    // Presence: 16 students and the speaker, as the new primary knows them, within the TTL.
    until_blocking(
        "presence on the new primary",
        Duration::from_secs(6),
        Duration::from_millis(100),
        || {
            let reply = new_primary
                .command(&["HLEN", &format!("lc:{{{CLASS}}}:where")])
                .ok()?;
            (reply.trim() == ":17").then_some(())
        },
    )
    .unwrap();

    // The old primary comes back empty; the Sentinels make it a replica of the new one.
    let mut old_primary = old_primary;
    old_primary.restart_as_primary().unwrap();
    until_blocking(
        "the old primary to rejoin as a replica",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (old_primary.role().as_deref() == Some("slave") && old_primary.in_sync()).then_some(()),
    )
    .unwrap();
    let before: Vec<usize> = inboxes
        .iter()
        .map(|i| i.lock().unwrap().ids.len())
        .collect();
    speak(&mut speaker, "after", 20, Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    for (inbox, before) in inboxes.iter().zip(before) {
        let inbox = inbox.lock().unwrap();
        let ids: Vec<&str> = inbox.ids.iter().map(|(id, _)| id.as_str()).collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ids.len(),
            "a comment was delivered twice after the old primary came back"
        );
        assert_eq!(
            ids.len() - before,
            20,
            "every comment after the return, once"
        );
    }
    drop(old_primary);
}
