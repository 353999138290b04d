//! A user's connections (tabs, devices), retries that are safe, tokens and their secrets, the
//! admin port, and a drain that leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use liveclass_testkit::client::{ClientError, Received};
use liveclass_testkit::{TestClient, TokenMinter};
use serde_json::{Value, json};

#[tokio::test]
async fn two_tabs_of_one_user_both_get_comments_and_direct_messages() {
    let redis = redis();
    let (a, b) = (server(&redis, "pod-a"), server(&redis, "pod-b"));
    ready(&a).await;
    ready(&b).await;
    let mut laptop = student(&a, "u1", "c").await;
    let mut phone = student(&b, "u1", "c").await;
    let mut teacher = teacher(&a, "t1", "c").await;
    // Presence counts users: the teacher and u1.
    wait_presence(&mut teacher, 2, Duration::from_secs(5)).await;

    teacher.send_json(&comment("for all")).await.unwrap();
    teacher
        .send_json(&json!({"t":"dm","to":"u1","text":"for you"}))
        .await
        .unwrap();
    for tab in [&mut laptop, &mut phone] {
        assert_eq!(
            tab.recv_type("comment", T).await.unwrap()["text"],
            "for all"
        );
        assert_eq!(tab.recv_type("dm", T).await.unwrap()["text"], "for you");
    }
}

#[tokio::test]
async fn beyond_the_limit_the_oldest_connection_is_replaced_and_only_it() {
    let redis = redis();
    let a = builder(&redis, "pod-a")
        .args(["--max-connections-per-user", "2"])
        .start()
        .unwrap();
    let b = builder(&redis, "pod-b")
        .args(["--max-connections-per-user", "2"])
        .start()
        .unwrap();
    ready(&a).await;
    ready(&b).await;
    let mut first = student(&a, "u1", "c").await;
    let mut second = student(&b, "u1", "c").await;
    let mut third = student(&a, "u1", "c").await;
    assert_eq!(
        first.recv_close(T).await.unwrap(),
        Some((4002, "replaced".into()))
    );
    let mut speaker = student(&b, "speaker", "c").await;
    speaker.send_json(&comment("hi")).await.unwrap();
    for tab in [&mut second, &mut third] {
        assert_eq!(tab.recv_type("comment", T).await.unwrap()["text"], "hi");
    }
    // The kick named the oldest connection: the two that stay do not kick each other.
    nothing_of(&mut second, "never", Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_comment_retried_with_the_same_ref_is_stored_once() {
    let redis = redis();
    let a = server(&redis, "pod-a");
    ready(&a).await;
    let mut sender = student(&a, "u1", "c").await;
    let mut listener = student(&a, "u2", "c").await;
    for _ in 0..3 {
        sender
            .send_json(&json!({"t":"comment","text":"once","ref":"c-1"}))
            .await
            .unwrap();
    }
    sender
        .send_json(&json!({"t":"comment","text":"other","ref":"c-2"}))
        .await
        .unwrap();
    let got = comments(&mut listener, 2).await;
    assert_eq!(got[0]["text"], "once");
    assert_eq!(got[1]["text"], "other");
    nothing_of(&mut listener, "comment", Duration::from_millis(300)).await;
    assert_eq!(
        redis.command(&["XLEN", "lc:{c}:history"]).unwrap().trim(),
        ":2"
    );
    // The sender got its comment live once, and each retry answered with the stored one.
    let mine = comments(&mut sender, 4).await;
    let ids: Vec<&Value> = mine.iter().map(|c| &c["id"]).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    assert_eq!(mine[3]["text"], "other");
    nothing_of(&mut sender, "comment", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn tokens_are_checked_for_class_audience_and_lifetime() {
    let redis = redis();
    let a = builder(&redis, "pod-a")
        .args(["--class", "school/physics", "--token-audience", "liveclass"])
        .args(["--max-token-lifetime", "2h"])
        .start()
        .unwrap();
    ready(&a).await;
    let refused = |result: Result<TestClient, ClientError>| match result {
        Err(ClientError::Refused { status, body }) => (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let base = |class: &str| {
        let mut claims =
            liveclass_testkit::token::claims("u1", class, liveclass_protocol::Role::Student);
        claims.aud = Some(liveclass_protocol::claims::Audience::One(
            "liveclass".into(),
        ));
        claims
    };
    let good = minter().mint(&base("school/physics"));
    let mut client = TestClient::connect(&a.ws_url(), &good, None).await.unwrap();
    assert_eq!(
        client.recv_type("hello", T).await.unwrap()["class"],
        "school/physics"
    );

    let other_class = minter().mint(&base("school/chemistry"));
    assert_eq!(
        refused(TestClient::connect(&a.ws_url(), &other_class, None).await),
        (403, "wrong_class".into())
    );
    let mut no_aud = base("school/physics");
    no_aud.aud = None;
    assert_eq!(
        refused(TestClient::connect(&a.ws_url(), &minter().mint(&no_aud), None).await),
        (401, "bad_audience".into())
    );
    let mut forever = base("school/physics");
    forever.exp += 24 * 3600;
    assert_eq!(
        refused(TestClient::connect(&a.ws_url(), &minter().mint(&forever), None).await),
        (401, "lifetime_too_long".into())
    );
}

#[tokio::test]
async fn a_rotated_secret_reaches_the_running_server() {
    let redis = redis();
    let dir = tempfile::tempdir().unwrap();
    let previous = dir.path().join("previous");
    let a = builder(&redis, "pod-a")
        .arg("--token-previous-secret-file")
        .arg(previous.display().to_string())
        .start()
        .unwrap();
    ready(&a).await;
    const NEW: &str = "the-new-secret-after-rotation-0123456789";
    let old_token = minter().student("old", "c");
    let new_token = TokenMinter::new(NEW).student("new", "c");
    assert!(matches!(
        TestClient::connect(&a.ws_url(), &new_token, None).await,
        Err(ClientError::Refused { status: 401, .. })
    ));
    // Rotation as a Secret update does it: the new secret current, the old one previous.
    std::fs::write(&previous, SECRET).unwrap();
    std::fs::write(a.secret_file(), NEW).unwrap();
    liveclass_testkit::wait::until(
        "the new secret to be accepted",
        Duration::from_secs(6),
        Duration::from_millis(100),
        || async {
            TestClient::connect(&a.ws_url(), &new_token, None)
                .await
                .ok()
        },
    )
    .await
    .unwrap();
    TestClient::connect(&a.ws_url(), &old_token, None)
        .await
        .unwrap();
    // Rotation finished: the old secret is no longer accepted.
    std::fs::write(&previous, "").unwrap();
    liveclass_testkit::wait::until(
        "the old secret to be refused",
        Duration::from_secs(6),
        Duration::from_millis(100),
        || async {
            matches!(
                TestClient::connect(&a.ws_url(), &old_token, None).await,
                Err(ClientError::Refused { status: 401, .. })
            )
            .then_some(())
        },
    )
    .await
    .unwrap();
    // A bad secret written by mistake keeps the good one in use.
    std::fs::write(a.secret_file(), "short").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // two polls of the file, not a wait on the server
    TestClient::connect(&a.ws_url(), &new_token, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn metrics_are_on_the_admin_port_only() {
    let redis = redis();
    let a = server(&redis, "pod-a");
    ready(&a).await;
    let (status, body) = a.get("/metrics").unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("not_found"));
    let (status, body) = a.admin_get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("liveclass_connections"));
    assert!(matches!(a.admin_get("/readyz"), Ok((200, _))));
}

#[tokio::test]
async fn a_drain_closes_every_connection_with_a_close_frame_and_leaves_no_trace() {
    let redis = redis();
    let mut a = server(&redis, "pod-a"); // drain window 3 s
    let b = server(&redis, "pod-b");
    ready(&a).await;
    ready(&b).await;
    let _elsewhere = student(&b, "other", "c").await;
    let mut stubborn = Vec::new();
    for i in 0..5 {
        stubborn.push(student(&a, &format!("s{i}"), "c").await);
    }
    a.terminate().unwrap();
    // These clients ignore `reconnect`: the server still closes each of them with 1001.
    for mut client in stubborn {
        let mut closed = None;
        while closed.is_none() {
            match client.recv(Duration::from_secs(4)).await.unwrap() {
                Received::Close(close) => closed = Some(close),
                Received::Frame(_) => {}
            }
        }
        assert_eq!(closed.unwrap().map(|c| c.0), Some(1001));
    }
    assert!(a.wait_exit(Duration::from_secs(4)).unwrap().success());
    let where_ = redis.command(&["HKEYS", "lc:{c}:where"]).unwrap();
    assert!(
        where_.contains("other") && !where_.contains("s0"),
        "{where_}"
    );
    assert!(
        !redis
            .command(&["ZRANGE", "lc:pods", "0", "-1"])
            .unwrap()
            .contains("pod-a")
    );
    assert_eq!(
        redis
            .command(&["EXISTS", "lc:pod:{pod-a}:alive"])
            .unwrap()
            .trim(),
        ":0"
    );
    assert_eq!(
        redis
            .command(&["HEXISTS", "lc:{c}:pods", "pod-a"])
            .unwrap()
            .trim(),
        ":0"
    );
}
