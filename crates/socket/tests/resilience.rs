//! Redis going away and coming back, and SIGTERM draining.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use liveclass_testkit::TestClient;
use liveclass_testkit::client::{ClientError, Received};
use serde_json::json;

#[tokio::test]
async fn redis_restarting_mid_class_is_survived() {
    let mut redis = redis();
    let (a, b) = (server(&redis, "pod-a"), server(&redis, "pod-b"));
    ready(&a).await;
    ready(&b).await;
    let mut on_a = student(&a, "s1", "c").await;
    let mut on_b = teacher(&b, "t1", "c").await;
    on_a.send_json(&comment("before")).await.unwrap();
    assert_eq!(
        on_b.recv_type("comment", T).await.unwrap()["text"],
        "before"
    );

    redis.stop();
    liveclass_testkit::wait::until(
        "both servers not ready",
        Duration::from_secs(5),
        Duration::from_millis(25),
        || async {
            (matches!(a.get("/readyz"), Ok((503, _))) && matches!(b.get("/readyz"), Ok((503, _))))
                .then_some(())
        },
    )
    .await
    .unwrap();
    // New students are sent elsewhere; connected ones stay and are told why nothing goes out.
    match TestClient::connect(&a.ws_url(), &minter().student("new", "c"), None).await {
        Err(ClientError::Refused { status: 503, .. }) => {}
        other => panic!("expected 503 while redis is down, got {other:?}"),
    }
    on_a.send_json(&comment("during")).await.unwrap();
    assert_eq!(
        on_a.recv_type("error", T).await.unwrap()["code"],
        "unavailable"
    );

    redis.restart().unwrap();
    ready(&a).await;
    ready(&b).await;
    // Both servers resubscribed: delivery resumes across them, and sessions are known again.
    on_a.send_json(&comment("after")).await.unwrap();
    assert_eq!(
        on_b.recv_type("comment", Duration::from_secs(10))
            .await
            .unwrap()["text"],
        "after"
    );
    assert_eq!(on_a.recv_type("comment", T).await.unwrap()["text"], "after");
    on_b.send_json(&json!({"t":"dm","to":"s1","text":"welcome back"}))
        .await
        .unwrap();
    // Ready means its connections are known again: a direct message finds them at once.
    assert_eq!(
        on_a.recv_type("dm", T).await.unwrap()["text"],
        "welcome back"
    );
    assert!(
        a.metrics()
            .unwrap()
            .contains("liveclass_redis_errors_total")
    );
}

#[tokio::test]
async fn sigterm_drains_clients_and_exits_within_the_window() {
    let redis = redis();
    let mut server = server(&redis, "pod-a"); // drain window 3 s
    ready(&server).await;
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push(student(&server, &format!("s{i}"), "c").await);
    }
    let started = Instant::now();
    server.terminate().unwrap();
    liveclass_testkit::wait::until(
        "readyz 503",
        Duration::from_millis(500),
        Duration::from_millis(5),
        || async { matches!(server.get("/readyz"), Ok((503, _))).then_some(()) },
    )
    .await
    .unwrap();

    // Read every client at once, so each arrival time is its own.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let reconnect = client
                    .recv_type("reconnect", Duration::from_secs(4))
                    .await
                    .unwrap();
                let at = started.elapsed();
                assert!(reconnect["after_ms"].as_u64().unwrap() <= 1000);
                match client.recv(Duration::from_secs(2)).await.unwrap() {
                    Received::Close(Some((1001, reason))) => assert_eq!(reason, "draining"),
                    other => panic!("expected close 1001 after reconnect, got {other:?}"),
                }
                at
            })
        })
        .collect();
    let mut delays = Vec::new();
    for reader in readers {
        delays.push(reader.await.unwrap());
    }
    let status = server.wait_exit(Duration::from_secs(4)).unwrap();
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(3),
        "exited after {took:?}, window is 3 s"
    );
    // Spread over the window, not all at once.
    let spread = delays
        .iter()
        .max()
        .unwrap()
        .saturating_sub(*delays.iter().min().unwrap());
    assert!(
        spread > Duration::from_millis(300),
        "reconnects spread over only {spread:?}"
    );
}
