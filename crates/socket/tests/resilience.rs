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

/// Waits (4 s at most) for the client's `reconnect` and the server's 1001 after it; returns
/// when the `reconnect` came, since `started`.
async fn told_to_reconnect(mut client: TestClient, started: Instant) -> Duration {
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
        .map(|client| tokio::spawn(told_to_reconnect(client, started)))
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

/// A gateway pod that is going away hands its students over: on the operator's hand-over
/// the server closes the connections whose TCP peer is that pod one at a time over the window,
/// each told to `reconnect` first; students who came another way are not touched.
#[tokio::test]
async fn a_gateway_handover_moves_its_students_one_by_one_and_no_one_else() {
    use liveclass_protocol::bus::{HANDOVER_CHANNEL, Handover};
    use liveclass_testkit::caddy::Caddy;
    use liveclass_testkit::client::ConnectOptions;

    let redis = redis();
    let server = server(&redis, "pod-a");
    ready(&server).await;
    let gateway = Caddy::start(&[server.addr()]).unwrap();
    // Through the gateway, the server's TCP peer is 127.0.0.1 (Caddy's dial); around it, from
    // other addresses.
    let mut via = Vec::new();
    for i in 0..10 {
        let token = minter().student(&format!("g{i}"), "c");
        let mut client = TestClient::connect(&gateway.ws_url(), &token, None)
            .await
            .unwrap();
        client.recv_type("hello", T).await.unwrap();
        via.push(client);
    }
    let around_from = |last: u8| ConnectOptions {
        source: Some(std::net::IpAddr::from([127, 0, 0, last])),
        ..ConnectOptions::token(String::new())
    };
    let mut around = Vec::new();
    for i in 0..3 {
        let mut options = around_from(2);
        options.token = minter().student(&format!("d{i}"), "c");
        let mut client = TestClient::connect_with(&server.ws_url(), &options)
            .await
            .unwrap();
        client.recv_type("hello", T).await.unwrap();
        around.push(client);
    }
    let mut options = around_from(3);
    options.token = minter().teacher("t", "c");
    let mut teacher = TestClient::connect_with(&server.ws_url(), &options)
        .await
        .unwrap();
    teacher.recv_type("hello", T).await.unwrap();

    let handover = Handover {
        gateway: std::net::IpAddr::from([127, 0, 0, 1]),
        within_ms: 2000,
    };
    let started = Instant::now();
    let subscribers = redis
        .command(&["PUBLISH", HANDOVER_CHANNEL, &handover.to_text()])
        .unwrap();
    assert_eq!(
        subscribers.trim(),
        ":1",
        "the server is subscribed to the class"
    );
    let readers: Vec<_> = via
        .into_iter()
        .map(|client| tokio::spawn(told_to_reconnect(client, started)))
        .collect();
    let mut moments = Vec::new();
    for reader in readers {
        moments.push(reader.await.unwrap());
    }
    moments.sort_unstable();
    // Ten over 2 s: one every 200 ms, never all at once.
    let spread = moments[9] - moments[0];
    assert!(
        spread >= Duration::from_millis(1500) && moments[9] < Duration::from_millis(2600),
        "handed over at {moments:?}"
    );
    for pair in moments.windows(3) {
        assert!(
            pair[2] - pair[0] >= Duration::from_millis(250),
            "three within 250 ms: {moments:?}"
        );
    }
    // Those who came another way are still in the class and hear the teacher.
    teacher
        .send_json(&json!({"t":"comment","text":"still here?","ref":"r1"}))
        .await
        .unwrap();
    for client in &mut around {
        let comment = client.recv_type("comment", T).await.unwrap();
        assert_eq!(comment["text"], "still here?");
    }
    // The same message again (the operator restarted) finds nobody left to move.
    redis
        .command(&["PUBLISH", HANDOVER_CHANNEL, &handover.to_text()])
        .unwrap();
    for client in &mut around {
        match client.recv(Duration::from_millis(500)).await {
            Err(ClientError::Timeout(_)) => {}
            Ok(Received::Frame(frame)) => assert_ne!(frame["t"], "reconnect"),
            other => panic!("a student around the gateway got {other:?}"),
        }
    }
}

/// A Redis closed with a password (as the operator closes a class's): a server given the wrong
/// one keeps running, answers not-ready and says why in its log, rather than crash-looping;
/// once the mounted file holds the right password (a Secret fixed or rotated), it is re-read
/// on the next reconnection and the server turns ready without a restart.
#[tokio::test]
async fn a_wrong_redis_password_is_not_ready_with_a_clear_log_line_and_the_right_one_is_read_again()
{
    let redis =
        liveclass_testkit::RedisServer::start_with_user("liveclass", "the-right-one").unwrap();
    let mut server = liveclass_testkit::SocketServerBuilder::new(
        format!("redis://liveclass@127.0.0.1:{}", redis.port()),
        "pod-a",
        SECRET,
    )
    .file_arg("--redis-password-file", "redis-password", "a-wrong-one")
    .start()
    .unwrap();
    // Not ready for as long as the password is wrong, and still running.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, _) = server.get("/readyz").unwrap();
        assert_eq!(status, 503, "ready with a wrong Redis password");
        assert!(server.is_running(), "{}", server.log_tail(20));
    }
    let log = server.log_tail(50);
    assert!(
        log.contains("WRONGPASS") || log.to_lowercase().contains("password"),
        "the log does not say the password is wrong:\n{log}"
    );
    // And Redis refuses a client without it.
    let anonymous = redis.command(&["HLEN", "lc:{c}:where"]).unwrap();
    assert!(anonymous.starts_with("-NOPERM"), "{anonymous}");

    std::fs::write(server.file("redis-password"), "the-right-one").unwrap();
    ready(&server).await;
    assert!(server.is_running());
    let mut s = student(&server, "s1", "c").await;
    s.send_json(&comment("in")).await.unwrap();
    assert_eq!(comments(&mut s, 1).await[0]["text"], "in");
}
