//! Shared set-up for the socket server's tests: a real Redis and real server processes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use liveclass_testkit::{RedisServer, SocketServer, SocketServerBuilder, TestClient, TokenMinter};
use serde_json::{Value, json};

pub const SECRET: &str = "integration-test-secret-0123456789";
pub const T: Duration = Duration::from_secs(5);

pub fn minter() -> TokenMinter {
    TokenMinter::new(SECRET)
}

pub fn redis() -> RedisServer {
    RedisServer::start().expect("start redis-server")
}

/// A server with test-friendly timings (short heartbeat and drain window).
pub fn server(redis: &RedisServer, pod: &str) -> SocketServer {
    builder(redis, pod).start().expect("start liveclass-socket")
}

pub fn builder(redis: &RedisServer, pod: &str) -> SocketServerBuilder {
    SocketServerBuilder::new(redis.url(), pod, SECRET)
        .arg("--heartbeat-ttl")
        .arg("2s")
        .arg("--drain-window")
        .arg("3s")
}

/// Waits until the server reports ready (Redis reachable).
pub async fn ready(server: &SocketServer) {
    liveclass_testkit::wait::until(
        "server ready",
        Duration::from_secs(10),
        Duration::from_millis(25),
        || async { matches!(server.get("/readyz"), Ok((200, _))).then_some(()) },
    )
    .await
    .unwrap();
}

/// Connects a student and reads `hello`.
pub async fn student(server: &SocketServer, user: &str, class: &str) -> TestClient {
    let mut client = TestClient::connect(&server.ws_url(), &minter().student(user, class), None)
        .await
        .unwrap();
    let hello = client.recv_type("hello", T).await.unwrap();
    assert_eq!(hello["user"], user);
    client
}

pub async fn teacher(server: &SocketServer, user: &str, class: &str) -> TestClient {
    let mut client = TestClient::connect(&server.ws_url(), &minter().teacher(user, class), None)
        .await
        .unwrap();
    client.recv_type("hello", T).await.unwrap();
    client
}

pub fn comment(text: &str) -> Value {
    json!({"t":"comment","text":text})
}

/// Reads comments until `n` have arrived; returns their texts.
pub async fn comments(client: &mut TestClient, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(client.recv_type("comment", T).await.unwrap());
    }
    out
}

/// Asserts nothing of type `kind` arrives within `wait`.
pub async fn nothing_of(client: &mut TestClient, kind: &str, wait: Duration) {
    match client.recv_type(kind, wait).await {
        Err(liveclass_testkit::client::ClientError::Timeout(_)) => {}
        other => panic!("expected no {kind}, got {other:?}"),
    }
}

/// The value of a metric line (first sample whose line starts with `prefix`).
pub fn metric(server: &SocketServer, prefix: &str) -> Option<f64> {
    server.metric(prefix)
}

/// Reads frames until one of type `kind` arrives whose `field` equals `value`.
pub async fn until_frame(
    client: &mut TestClient,
    kind: &str,
    field: &str,
    value: Value,
    within: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = client
            .recv_type(kind, left)
            .await
            .unwrap_or_else(|e| panic!("no {kind} with {field} = {value}: {e}"));
        if frame[field] == value {
            return frame;
        }
    }
}

/// Waits until the presence count a client sees is `count`.
pub async fn wait_presence(client: &mut TestClient, count: u64, within: Duration) {
    until_frame(client, "presence", "count", json!(count), within).await;
}
