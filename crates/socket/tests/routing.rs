//! Messages cross servers through Redis: broadcast, direct messages, presence, recovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use liveclass_testkit::TestClient;
use serde_json::{Value, json};

#[tokio::test]
async fn comments_reach_every_member_on_both_servers_exactly_once_in_order() {
    let redis = redis();
    let (a, b) = (server(&redis, "pod-a"), server(&redis, "pod-b"));
    ready(&a).await;
    ready(&b).await;
    let mut members = Vec::new();
    for i in 0..6 {
        let at = if i % 2 == 0 { &a } else { &b };
        members.push(student(at, &format!("s{i}"), "physics").await);
    }
    // Someone in another class must hear nothing.
    let mut outsider = student(&a, "o1", "chemistry").await;

    // Two senders on different servers, interleaved.
    for n in 0..20 {
        let sender = if n % 2 == 0 { 0 } else { 1 };
        members[sender]
            .send_json(&json!({"t":"comment","text":format!("m{n}"),"ref":format!("r{n}")}))
            .await
            .unwrap();
    }
    for member in &mut members {
        let got = comments(member, 20).await;
        let mut per_sender: HashMap<String, Vec<u32>> = HashMap::new();
        let mut ids = Vec::new();
        for c in &got {
            let n: u32 = c["text"].as_str().unwrap()[1..].parse().unwrap();
            per_sender
                .entry(c["from"].as_str().unwrap().to_string())
                .or_default()
                .push(n);
            ids.push(c["id"].as_str().unwrap().to_string());
            assert_eq!(c["ref"], format!("r{n}"));
            assert!(c["ts"].as_u64().unwrap() > 0);
        }
        assert_eq!(
            per_sender["s0"],
            (0..20).step_by(2).collect::<Vec<_>>(),
            "s0's comments in order, once each"
        );
        assert_eq!(
            per_sender["s1"],
            (1..20).step_by(2).collect::<Vec<_>>(),
            "s1's comments in order, once each"
        );
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(unique.len(), 20, "no duplicate ids");
        nothing_of(member, "comment", Duration::from_millis(300)).await;
    }
    nothing_of(&mut outsider, "comment", Duration::from_millis(200)).await;
    // One subscription per class per server, however many members.
    assert_eq!(
        redis
            .command(&["PUBSUB", "NUMSUB", "lc:{physics}:bcast"])
            .unwrap()
            .matches(":2")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_direct_message_reaches_only_its_recipient_on_the_other_server() {
    let redis = redis();
    let (a, b) = (server(&redis, "pod-a"), server(&redis, "pod-b"));
    ready(&a).await;
    ready(&b).await;
    let mut teacher = teacher(&a, "t1", "math").await;
    let mut target = student(&b, "s1", "math").await;
    let mut bystander_b = student(&b, "s2", "math").await;
    let mut bystander_a = student(&a, "s3", "math").await;

    teacher
        .send_json(&json!({"t":"dm","to":"s1","text":"see me after class"}))
        .await
        .unwrap();
    let dm = target.recv_type("dm", T).await.unwrap();
    assert_eq!(dm["from"], "t1");
    assert_eq!(dm["text"], "see me after class");
    nothing_of(&mut bystander_b, "dm", Duration::from_millis(300)).await;
    nothing_of(&mut bystander_a, "dm", Duration::from_millis(100)).await;

    teacher
        .send_json(&json!({"t":"dm","to":"nobody","text":"hello?"}))
        .await
        .unwrap();
    let error = teacher.recv_type("error", T).await.unwrap();
    assert_eq!(error["code"], "recipient_offline");
}

#[tokio::test]
async fn presence_is_counted_across_servers_and_after_a_crash() {
    let redis = redis();
    let a = server(&redis, "pod-a");
    let mut b = server(&redis, "pod-b");
    ready(&a).await;
    ready(&b).await;
    let mut watcher = student(&a, "w", "bio").await;
    let _a2 = student(&a, "a2", "bio").await;
    let _b1 = student(&b, "b1", "bio").await;
    let _b2 = student(&b, "b2", "bio").await;
    wait_presence(&mut watcher, 4, Duration::from_secs(5)).await;

    // pod-b dies without cleaning up; survivors remove its sessions within the heartbeat TTL
    // (2 s here) plus one heartbeat period.
    b.kill();
    let started = std::time::Instant::now();
    wait_presence(&mut watcher, 2, Duration::from_secs(6)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "presence corrected after {took:?}"
    );
    assert_eq!(
        redis.command(&["HLEN", "lc:{bio}:where"]).unwrap().trim(),
        ":2"
    );
}

#[tokio::test]
async fn reconnecting_with_since_recovers_exactly_what_was_missed() {
    let redis = redis();
    let a = server(&redis, "pod-a");
    ready(&a).await;
    let mut speaker = student(&a, "speaker", "art").await;
    let mut listener = student(&a, "listener", "art").await;
    for n in 0..3 {
        speaker
            .send_json(&comment(&format!("before{n}")))
            .await
            .unwrap();
    }
    let seen = comments(&mut listener, 3).await;
    let last = seen[2]["id"].as_str().unwrap().to_string();
    listener.close().await;

    for n in 0..5 {
        speaker
            .send_json(&comment(&format!("missed{n}")))
            .await
            .unwrap();
    }
    comments(&mut speaker, 8).await; // all eight are through Redis

    let token = minter().student("listener", "art");
    let mut back = TestClient::connect(&a.ws_url(), &token, Some(&last))
        .await
        .unwrap();
    let hello = back.recv_type("hello", T).await.unwrap();
    assert_eq!(hello["recovered"], true);
    let recovered = comments(&mut back, 5).await;
    let texts: Vec<_> = recovered
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts,
        ["missed0", "missed1", "missed2", "missed3", "missed4"]
    );
    speaker.send_json(&comment("live")).await.unwrap();
    assert_eq!(back.recv_type("comment", T).await.unwrap()["text"], "live");
    nothing_of(&mut back, "comment", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_since_older_than_the_history_gives_recovered_false() {
    let redis = redis();
    let a = builder(&redis, "pod-a")
        .args(["--history", "5", "--rate", "10000", "--burst", "1000"])
        .args(["--user-rate", "10000", "--user-burst", "1000"])
        .start()
        .unwrap();
    ready(&a).await;
    let mut speaker = student(&a, "speaker", "music").await;
    // Redis trims `MAXLEN ~` in whole blocks of 100 entries, so write well past one block.
    for n in 0..250 {
        speaker.send_json(&comment(&format!("n{n}"))).await.unwrap();
    }
    let all = comments(&mut speaker, 250).await;
    let first = all[0]["id"].as_str().unwrap();
    let len: usize = redis
        .command(&["XLEN", "lc:{music}:history"])
        .unwrap()
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(len < 250, "history was trimmed to {len}");

    let token = minter().student("late", "music");
    let mut late = TestClient::connect(&a.ws_url(), &token, Some(first))
        .await
        .unwrap();
    let hello = late.recv_type("hello", T).await.unwrap();
    assert_eq!(hello["recovered"], false);
    // Nothing is replayed (the client reloads from the school's backend); hello says where the
    // class stands, and live comments follow from there.
    assert_eq!(hello["last_id"], all[249]["id"]);
    nothing_of(&mut late, "comment", Duration::from_millis(300)).await;
    speaker.send_json(&comment("live")).await.unwrap();
    assert_eq!(late.recv_type("comment", T).await.unwrap()["text"], "live");
}

/// One handshake replays at most `--max-recovery` comments: past that, `recovered:false` and
/// nothing replayed, so a `since` at the start of a long history costs Redis and the server a
/// bounded amount of work.
#[tokio::test]
async fn recovery_is_bounded_by_max_recovery() {
    let redis = redis();
    let a = builder(&redis, "pod-a")
        .args(["--max-recovery", "5", "--rate", "1000", "--burst", "1000"])
        .args(["--user-rate", "1000", "--user-burst", "1000"])
        .start()
        .unwrap();
    ready(&a).await;
    let mut speaker = student(&a, "speaker", "c").await;
    for n in 0..8 {
        speaker.send_json(&comment(&format!("n{n}"))).await.unwrap();
    }
    let all = comments(&mut speaker, 8).await;
    let resume = |since: &Value| {
        let token = minter().student("late", "c");
        let url = a.ws_url();
        let since = since.as_str().unwrap().to_string();
        async move {
            let mut client = TestClient::connect(&url, &token, Some(&since))
                .await
                .unwrap();
            let hello = client.recv_type("hello", T).await.unwrap();
            (client, hello)
        }
    };
    // Seven missed: more than five.
    let (mut late, hello) = resume(&all[0]["id"]).await;
    assert_eq!(hello["recovered"], false);
    nothing_of(&mut late, "comment", Duration::from_millis(300)).await;
    drop(late);
    // Four missed: replayed exactly.
    let (mut late, hello) = resume(&all[3]["id"]).await;
    assert_eq!(hello["recovered"], true);
    let texts: Vec<Value> = comments(&mut late, 4)
        .await
        .into_iter()
        .map(|c| c["text"].clone())
        .collect();
    assert_eq!(texts, ["n4", "n5", "n6", "n7"]);
}
