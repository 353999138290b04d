//! Faults between a server and Redis, made with real tools: Toxiproxy for a half-open link,
//! latency and resets; SIGSTOP for a server that stalls past its heartbeat; a Redis that
//! restarts empty. After each, every member has every comment the class's stream holds, once
//! and in order, or is told plainly that it cannot (`recovered:false`, a `gap` frame).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use liveclass_testkit::client::{ClientError, Received};
use liveclass_testkit::{ConnectOptions, SocketServer, TestClient, Toxiproxy};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Waits until `/readyz` of `server` answers `status`; returns how long that took.
async fn readyz_becomes(server: &SocketServer, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    liveclass_testkit::wait::until(
        &format!("readyz {status}"),
        within,
        Duration::from_millis(20),
        || async { matches!(server.get("/readyz"), Ok((s, _)) if s == status).then_some(()) },
    )
    .await
    .unwrap();
    started.elapsed()
}

/// Reads every comment until `n` have arrived; their texts, in order.
async fn texts(client: &mut TestClient, n: usize, within: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = client
            .recv_type("comment", left)
            .await
            .unwrap_or_else(|e| panic!("after {} of {n} comments: {e}", out.len()));
        out.push(frame["text"].as_str().unwrap().to_string());
    }
    out
}

fn expected(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The tests' speakers say more than a student's budget (2 comments/s, burst 10) and a
/// connection's frame rate (5/s, burst 20) allow.
const SPEAKER_BUDGET: [&str; 8] = [
    "--user-rate",
    "1000",
    "--user-burst",
    "1000",
    "--rate",
    "1000",
    "--burst",
    "1000",
];

/// One server behind a proxy to Redis, one direct; a student on each plus a speaker on the
/// direct one. Returns (redis, proxy, behind, direct, toxiproxy).
struct Split {
    _redis: liveclass_testkit::RedisServer,
    _toxiproxy: Toxiproxy,
    proxy: liveclass_testkit::toxiproxy::Proxy,
    behind: SocketServer,
    direct: SocketServer,
}

fn split() -> Split {
    let redis = redis();
    let toxiproxy = Toxiproxy::start().unwrap();
    let proxy = toxiproxy.proxy("redis", redis.addr()).unwrap();
    let behind =
        liveclass_testkit::SocketServerBuilder::new(proxy.redis_url(), "pod-behind", SECRET)
            .args(["--heartbeat-ttl", "2s", "--drain-window", "3s"])
            .args(["--pubsub-ping", "500ms", "--redis-timeout", "1s"])
            .args(SPEAKER_BUDGET)
            .start()
            .unwrap();
    let direct = builder(&redis, "pod-direct")
        .args(SPEAKER_BUDGET)
        .start()
        .unwrap();
    Split {
        _redis: redis,
        _toxiproxy: toxiproxy,
        proxy,
        behind,
        direct,
    }
}

/// Sends `n` comments `<prefix><i>` from `speaker`, each accepted (read back), so they are in
/// the stream before the next step.
async fn say(speaker: &mut TestClient, prefix: &str, n: usize) {
    for i in 0..n {
        speaker
            .send_json(
                &json!({"t":"comment","text":format!("{prefix}{i}"),"ref":format!("{prefix}{i}")}),
            )
            .await
            .unwrap();
    }
    assert_eq!(texts(speaker, n, T).await, expected(prefix, n));
}

#[tokio::test]
async fn a_half_open_redis_link_is_noticed_and_nothing_is_missed_after_it_heals() {
    let s = split();
    ready(&s.behind).await;
    ready(&s.direct).await;
    let mut cut_off = student(&s.behind, "cut-off", "c").await;
    let mut speaker = student(&s.direct, "speaker", "c").await;
    say(&mut speaker, "before", 3).await;
    assert_eq!(texts(&mut cut_off, 3, T).await, expected("before", 3));

    // Data stops both ways; no FIN, no RST. Only the PINGs can tell.
    s.proxy.halt().unwrap();
    let noticed = readyz_becomes(&s.behind, 503, Duration::from_secs(6)).await;
    assert!(
        noticed < Duration::from_secs(4),
        "half-open link noticed after {noticed:?}"
    );
    // Comments go on on the healthy server while the other is cut off.
    say(&mut speaker, "during", 20).await;

    s.proxy.heal().unwrap();
    readyz_becomes(&s.behind, 200, Duration::from_secs(15)).await;
    // Caught up from the stream: all of them, once, in order, then live ones.
    assert_eq!(
        texts(&mut cut_off, 20, Duration::from_secs(10)).await,
        expected("during", 20)
    );
    say(&mut speaker, "after", 3).await;
    assert_eq!(texts(&mut cut_off, 3, T).await, expected("after", 3));
    nothing_of(&mut cut_off, "comment", Duration::from_millis(300)).await;
    assert!(
        metric(
            &s.behind,
            "liveclass_redis_errors_total{op=\"pubsub_ping\"}"
        )
        .is_some()
    );
}

#[tokio::test]
async fn latency_slows_delivery_but_loses_nothing() {
    let s = split();
    ready(&s.behind).await;
    ready(&s.direct).await;
    let mut slowed = student(&s.behind, "slowed", "c").await;
    let mut speaker = student(&s.direct, "speaker", "c").await;
    // Under the 1 s timeout: the server stays ready, every message arrives late.
    s.proxy.add_latency(300).unwrap();
    say(&mut speaker, "slow", 10).await;
    assert_eq!(
        texts(&mut slowed, 10, Duration::from_secs(10)).await,
        expected("slow", 10)
    );
    assert!(matches!(s.behind.get("/readyz"), Ok((200, _))));
    s.proxy.remove_latency().unwrap();
    // Its own comments go through the slow link too.
    slowed
        .send_json(&json!({"t":"comment","text":"from-slowed"}))
        .await
        .unwrap();
    assert_eq!(
        texts(&mut speaker, 1, Duration::from_secs(5)).await,
        ["from-slowed"]
    );
}

#[tokio::test]
async fn reset_connections_are_reconnected_and_caught_up() {
    let s = split();
    ready(&s.behind).await;
    ready(&s.direct).await;
    let mut reset = student(&s.behind, "reset", "c").await;
    let mut speaker = student(&s.direct, "speaker", "c").await;
    s.proxy.reset_connections().unwrap();
    readyz_becomes(&s.behind, 503, Duration::from_secs(6)).await;
    say(&mut speaker, "while-reset", 10).await;
    s.proxy.allow_connections().unwrap();
    readyz_becomes(&s.behind, 200, Duration::from_secs(15)).await;
    assert_eq!(
        texts(&mut reset, 10, Duration::from_secs(10)).await,
        expected("while-reset", 10)
    );
    nothing_of(&mut reset, "comment", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_stalled_server_reaped_by_survivors_comes_back_whole() {
    let redis = redis();
    let survivor = server(&redis, "pod-a");
    let stalled = server(&redis, "pod-b"); // heartbeat TTL 2 s
    ready(&survivor).await;
    ready(&stalled).await;
    let mut teacher = teacher(&survivor, "t1", "c").await;
    let _on_a = student(&survivor, "s-a", "c").await;
    let mut on_b = student(&stalled, "s-b", "c").await;
    wait_presence(&mut teacher, 3, Duration::from_secs(5)).await;

    // Stalled past its TTL: the survivor reaps it although it is alive.
    stalled.signal(Signal::SIGSTOP).unwrap();
    wait_presence(&mut teacher, 2, Duration::from_secs(8)).await;
    assert_eq!(
        redis
            .command(&["HEXISTS", "lc:{c}:where", "s-b"])
            .unwrap()
            .trim(),
        ":0"
    );

    stalled.signal(Signal::SIGCONT).unwrap();
    let resumed = Instant::now();
    // Its first heartbeat finds it was reaped and records its connections again.
    wait_presence(&mut teacher, 3, Duration::from_secs(5)).await;
    assert!(
        resumed.elapsed() < Duration::from_secs(3),
        "presence right again after {:?}",
        resumed.elapsed()
    );
    assert_eq!(
        metric(&stalled, "liveclass_reregistrations_total"),
        Some(1.0)
    );
    teacher
        .send_json(&json!({"t":"dm","to":"s-b","text":"still there?"}))
        .await
        .unwrap();
    assert_eq!(
        on_b.recv_type("dm", T).await.unwrap()["text"],
        "still there?"
    );
    // And its class list is back, so a crash now is cleaned up too.
    assert_eq!(
        redis
            .command(&["SISMEMBER", "lc:pod:{pod-b}:classes", "c"])
            .unwrap()
            .trim(),
        ":1"
    );
}

async fn hello_of(client: &mut TestClient) -> Value {
    client.recv_type("hello", T).await.unwrap()
}

#[tokio::test]
async fn hello_carries_the_position_so_a_client_that_received_nothing_can_recover() {
    let redis = redis();
    let a = server(&redis, "pod-a");
    ready(&a).await;
    let mut speaker = student(&a, "speaker", "c").await;
    say(&mut speaker, "old", 2).await;

    let token = minter().student("quiet", "c");
    let mut quiet = TestClient::connect(&a.ws_url(), &token, None)
        .await
        .unwrap();
    let hello = hello_of(&mut quiet).await;
    assert_eq!(hello["v"], 2);
    let (epoch, last) = (hello["epoch"].clone(), hello["last_id"].clone());
    assert!(epoch.as_str().is_some_and(|e| !e.is_empty()));
    quiet.close().await; // received nothing but hello

    say(&mut speaker, "missed", 3).await;
    let mut options = ConnectOptions::token(&token);
    options.since = last.as_str().map(str::to_owned);
    options.epoch = epoch.as_str().map(str::to_owned);
    let mut back = TestClient::connect_with(&a.ws_url(), &options)
        .await
        .unwrap();
    assert_eq!(hello_of(&mut back).await["recovered"], true);
    assert_eq!(texts(&mut back, 3, T).await, expected("missed", 3));
}

#[tokio::test]
async fn after_redis_restarts_empty_old_positions_are_not_recoverable_and_members_are_told() {
    let mut redis = redis();
    let a = server(&redis, "pod-a");
    ready(&a).await;
    let mut speaker = student(&a, "speaker", "c").await;
    let mut member = student(&a, "member", "c").await;
    say(&mut speaker, "old", 2).await;
    let seen = texts(&mut member, 2, T).await;
    assert_eq!(seen, expected("old", 2));
    let token = minter().student("away", "c");
    let mut away = TestClient::connect(&a.ws_url(), &token, None)
        .await
        .unwrap();
    let hello = hello_of(&mut away).await;
    away.close().await;

    redis.restart().unwrap(); // empty: the history and its epoch are gone
    ready(&a).await;
    // The connected member is told its view has a hole, with the new epoch.
    let gap = member
        .recv_type("gap", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(gap["reason"], "history_lost");
    assert_ne!(gap["epoch"], hello["epoch"]);

    // A client resuming from the lost epoch is told plainly.
    let mut options = ConnectOptions::token(&token);
    options.since = hello["last_id"].as_str().map(str::to_owned);
    options.epoch = hello["epoch"].as_str().map(str::to_owned);
    let mut back = TestClient::connect_with(&a.ws_url(), &options)
        .await
        .unwrap();
    let hello_again = hello_of(&mut back).await;
    assert_eq!(hello_again["recovered"], false);
    assert_eq!(hello_again["epoch"], gap["epoch"]);
    // Even without the epoch, a `since` newer than anything held is not vouched for.
    let mut options = ConnectOptions::token(&token);
    options.since = hello["last_id"].as_str().map(str::to_owned);
    let mut no_epoch = TestClient::connect_with(&a.ws_url(), &options)
        .await
        .unwrap();
    assert_eq!(hello_of(&mut no_epoch).await["recovered"], false);
    // Live messages go on for everyone.
    speaker
        .send_json(&json!({"t":"comment","text":"new"}))
        .await
        .unwrap();
    assert_eq!(texts(&mut member, 1, T).await, ["new"]);
    assert_eq!(texts(&mut back, 1, T).await, ["new"]);
}

/// What a failover to a replica that lagged does to a class's stream, made by hand on one
/// Redis: the newest comments were delivered, then the stream no longer holds them (same epoch,
/// nothing trimmed or deleted), then the server's link drops. The server vouches for the newest
/// id it delivered, so the loss is recorded: its member misses nothing and gets nothing twice;
/// a client resuming from before the lost comments is told `recovered:false`, one resuming from
/// the newest is caught up; a client's own `since` that the stream lacks records nothing.
#[tokio::test]
async fn comments_a_failover_lost_after_delivering_them_make_recovery_from_before_them_incomplete()
{
    let redis = redis();
    let a = server(&redis, "pod-a");
    ready(&a).await;
    let mut speaker = student(&a, "speaker", "c").await;
    let mut member = student(&a, "member", "c").await;
    let token = minter().student("away", "c");
    let mut away = TestClient::connect(&a.ws_url(), &token, None)
        .await
        .unwrap();
    let epoch = hello_of(&mut away).await["epoch"].clone();
    away.close().await;
    say(&mut speaker, "k", 5).await;
    let ids: Vec<String> = comments(&mut member, 5)
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();

    // The replica had the first two; it is now the primary.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let history = "lc:{c}:history";
    let held: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(history)
        .arg("-")
        .arg(&ids[1])
        .query(&mut conn)
        .unwrap();
    let mut rollback = redis::pipe();
    rollback.atomic().del(history).ignore();
    for entry in &held.ids {
        let tail: String = entry.get("f").unwrap();
        rollback
            .cmd("XADD")
            .arg(history)
            .arg(&entry.id)
            .arg("f")
            .arg(tail)
            .ignore();
    }
    let () = rollback.query(&mut conn).unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut conn)
        .unwrap();

    // The member gets what follows, once, with no gap: it saw everything up to the newest.
    // Sent until stored, as a client does: `unavailable` while the server reconnects.
    let deadline = Instant::now() + Duration::from_secs(10);
    'stored: loop {
        assert!(Instant::now() < deadline, "`after` never stored");
        speaker
            .send_json(&json!({"t":"comment","text":"after","ref":"after"}))
            .await
            .unwrap();
        loop {
            let Received::Frame(frame) = speaker.recv(T).await.unwrap() else {
                panic!("the speaker was closed")
            };
            match frame["t"].as_str() {
                Some("comment") if frame["text"] == "after" => break 'stored,
                Some("error") if frame["code"] == "unavailable" => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'stored;
                }
                _ => {}
            }
        }
    }
    let next = loop {
        let Received::Frame(frame) = member.recv(Duration::from_secs(10)).await.unwrap() else {
            panic!("the member was closed")
        };
        if frame["t"] != "presence" {
            break frame;
        }
    };
    assert_eq!(next["t"], "comment", "no gap frame: {next}");
    assert_eq!(next["text"], "after");
    nothing_of(&mut member, "comment", Duration::from_millis(300)).await;

    let resume = |since: &str| {
        let mut options = ConnectOptions::token(&token);
        options.since = Some(since.to_owned());
        options.epoch = epoch.as_str().map(str::to_owned);
        let url = a.ws_url();
        async move { TestClient::connect_with(&url, &options).await.unwrap() }
    };
    // A client's `since` from nowhere is refused and proves nothing.
    let mut bogus = resume("99999999999999-0").await;
    assert_eq!(hello_of(&mut bogus).await["recovered"], false);
    for (since, recovered) in [
        (&ids[0], false),
        (&ids[1], false),
        (&ids[3], false),
        (&ids[4], true),
    ] {
        let mut back = resume(since).await;
        assert_eq!(
            hello_of(&mut back).await["recovered"],
            recovered,
            "resuming from comment {} of 5",
            ids.iter().position(|i| i == since).unwrap()
        );
        if recovered {
            assert_eq!(texts(&mut back, 1, T).await, ["after"]);
        }
    }
}

/// A server restarted under the same id (a container the kubelet restarts, a StatefulSet pod)
/// while Redis is out of reach still removes what its earlier run left there once Redis
/// answers: the students of the killed run no longer count as attending, and the class can be
/// drained. Until then the new run is not ready, so nothing of its own is removed with it.
#[tokio::test]
async fn a_server_restarted_while_redis_is_away_removes_what_its_earlier_run_left() {
    let redis = redis();
    let toxiproxy = Toxiproxy::start().unwrap();
    let proxy = toxiproxy.proxy("redis", redis.addr()).unwrap();
    let start = || {
        liveclass_testkit::SocketServerBuilder::new(proxy.redis_url(), "pod-x", SECRET)
            .args(["--heartbeat-ttl", "2s", "--redis-timeout", "1s"])
            .start()
            .unwrap()
    };
    let attending = || {
        redis
            .command(&["HLEN", "lc:{c}:where"])
            .unwrap()
            .trim()
            .to_owned()
    };
    let mut first = start();
    ready(&first).await;
    let mut students = Vec::new();
    for user in ["u1", "u2", "u3"] {
        students.push(student(&first, user, "c").await);
    }
    assert_eq!(attending(), ":3");
    first.kill();
    drop(students);

    proxy.reset_connections().unwrap();
    let second = start();
    readyz_becomes(&second, 503, T).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // past its first tries
    assert_eq!(
        attending(),
        ":3",
        "nothing could be removed while Redis was away"
    );
    proxy.allow_connections().unwrap();
    readyz_becomes(&second, 200, Duration::from_secs(15)).await;
    assert_eq!(attending(), ":0", "the killed run's students still attend");
    let mut back = student(&second, "u1", "c").await;
    wait_presence(&mut back, 1, T).await;
    assert_eq!(attending(), ":1");
}

#[tokio::test]
async fn an_outage_longer_than_the_history_sends_a_gap_not_silence() {
    let redis = redis();
    let toxiproxy = Toxiproxy::start().unwrap();
    let proxy = toxiproxy.proxy("redis", redis.addr()).unwrap();
    let behind =
        liveclass_testkit::SocketServerBuilder::new(proxy.redis_url(), "pod-behind", SECRET)
            .args([
                "--heartbeat-ttl",
                "2s",
                "--pubsub-ping",
                "500ms",
                "--redis-timeout",
                "1s",
            ])
            .args(["--max-recovery", "5"])
            .start()
            .unwrap();
    let direct = builder(&redis, "pod-direct")
        .args(["--user-rate", "1000", "--user-burst", "1000"])
        .start()
        .unwrap();
    ready(&behind).await;
    ready(&direct).await;
    let mut cut_off = student(&behind, "cut-off", "c").await;
    let mut speaker = student(&direct, "speaker", "c").await;
    proxy.halt().unwrap();
    readyz_becomes(&behind, 503, Duration::from_secs(6)).await;
    say(&mut speaker, "lost", 10).await; // more than the 5 one catch-up may replay
    proxy.heal().unwrap();
    readyz_becomes(&behind, 200, Duration::from_secs(15)).await;
    let gap = cut_off
        .recv_type("gap", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(gap["reason"], "trimmed");
    say(&mut speaker, "next", 1).await;
    assert_eq!(texts(&mut cut_off, 1, T).await, ["next0"]);
    match cut_off
        .recv_type("comment", Duration::from_millis(300))
        .await
    {
        Err(ClientError::Timeout(_)) => {}
        other => panic!("expected nothing more, got {other:?}"),
    }
}
