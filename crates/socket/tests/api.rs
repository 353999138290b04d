//! The school's server API on the admin port: publish into a class, remove a user (and keep
//! them out), presence, history; refused without the key, and absent from the students' port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use liveclass_testkit::client::ClientError;
use liveclass_testkit::http::http_request;
use liveclass_testkit::{SocketServer, TestClient};
use serde_json::{Value, json};

const KEY: &str = "school-backend-api-key-0123456789abcdef";
const CLASS: &str = "school/maths";

fn api_server(redis: &liveclass_testkit::RedisServer, pod: &str) -> SocketServer {
    builder(redis, pod)
        .file_arg("--api-key-file", "api-key", format!("{KEY}\n"))
        .arg("--max-token-lifetime")
        .arg("1h")
        .start()
        .unwrap()
}

fn call(server: &SocketServer, method: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    let (status, text) = http_request(
        server.admin_addr(),
        "POST",
        &format!("/api/{method}"),
        &headers,
        Some(&body.to_string()),
    )
    .unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {status} {text}"));
    (status, value)
}

#[tokio::test]
async fn the_school_posts_into_a_class_on_every_server_once() {
    let redis = redis();
    let (a, b) = (api_server(&redis, "pod-a"), api_server(&redis, "pod-b"));
    ready(&a).await;
    ready(&b).await;
    let mut on_a = student(&a, "s1", CLASS).await;
    let mut on_b = student(&b, "s2", CLASS).await;

    let body = json!({"class": CLASS, "text": "class starts in 5 minutes", "name": "Office", "ref": "bell-1"});
    let (status, first) = call(&a, "publish", Some(KEY), &body);
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["duplicate"], false);
    // A retry with the same ref stores nothing new.
    let (status, again) = call(&b, "publish", Some(KEY), &body);
    assert_eq!(status, 200);
    assert_eq!(again, json!({"id": first["id"], "duplicate": true}));

    for client in [&mut on_a, &mut on_b] {
        let got = client.recv_type("comment", T).await.unwrap();
        assert_eq!(got["id"], first["id"]);
        assert_eq!(got["from"], "#school");
        assert_eq!(got["name"], "Office");
        assert_eq!(got["text"], "class starts in 5 minutes");
        nothing_of(client, "comment", Duration::from_millis(500)).await;
    }

    // History holds it exactly as students saw it; `since` it, nothing.
    let (status, history) = call(&a, "history", Some(KEY), &json!({"class": CLASS}));
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["comments"].as_array().unwrap().len(), 1);
    assert_eq!(history["comments"][0]["id"], first["id"]);
    assert_eq!(history["last_id"], first["id"]);
    assert!(history["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    let (_, after) = call(
        &a,
        "history",
        Some(KEY),
        &json!({"class": CLASS, "since": first["id"]}),
    );
    assert_eq!(after["comments"], json!([]));
}

#[tokio::test]
async fn presence_lists_who_is_there_across_servers() {
    let redis = redis();
    let (a, b) = (api_server(&redis, "pod-a"), api_server(&redis, "pod-b"));
    ready(&a).await;
    ready(&b).await;
    let _c: Vec<TestClient> = vec![
        student(&a, "s1", CLASS).await,
        student(&b, "s2", CLASS).await,
        student(&b, "s3", CLASS).await,
        student(&a, "other", "school/art").await,
    ];
    let (status, presence) = call(&b, "presence", Some(KEY), &json!({"class": CLASS}));
    assert_eq!(status, 200, "{presence}");
    assert_eq!(presence, json!({"count": 3, "users": ["s1", "s2", "s3"]}));
    let (_, limited) = call(
        &b,
        "presence",
        Some(KEY),
        &json!({"class": CLASS, "limit": 1}),
    );
    assert_eq!(limited["count"], 3);
    assert_eq!(limited["users"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_removed_user_is_closed_everywhere_and_kept_out() {
    let redis = redis();
    let (a, b) = (api_server(&redis, "pod-a"), api_server(&redis, "pod-b"));
    ready(&a).await;
    ready(&b).await;
    let mut tab1 = student(&a, "troll", CLASS).await;
    let mut tab2 = student(&b, "troll", CLASS).await;
    let mut bystander = student(&a, "s1", CLASS).await;

    let (status, answer) = call(
        &b,
        "disconnect",
        Some(KEY),
        &json!({"class": CLASS, "user": "troll"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"servers": 2, "keep_out_s": 3600}));
    for tab in [&mut tab1, &mut tab2] {
        let close = tab.recv_close(T).await.unwrap();
        assert_eq!(close.map(|c| c.0), Some(4004), "closed as kicked");
    }
    // Kept out: a new handshake with a valid token is refused before the upgrade.
    match TestClient::connect(&a.ws_url(), &minter().student("troll", CLASS), None).await {
        Err(ClientError::Refused { status, body }) => {
            assert_eq!(status, 403);
            assert!(body.contains("kicked"), "{body}");
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    // Others are untouched.
    bystander.send_json(&json!({"t":"ping"})).await.unwrap();
    bystander.recv_type("pong", T).await.unwrap();

    // keep_out_s 0: closed, but free to come back.
    let _back = student(&a, "s2", CLASS).await;
    let (_, answer) = call(
        &a,
        "disconnect",
        Some(KEY),
        &json!({"class": CLASS, "user": "s2", "keep_out_s": 0}),
    );
    assert_eq!(answer["servers"], 1);
    student(&b, "s2", CLASS).await;
}

#[tokio::test]
async fn bad_calls_get_a_json_error_that_says_what_to_fix() {
    let redis = redis();
    let a = api_server(&redis, "pod-a");
    let plain = server(&redis, "pod-b");
    ready(&a).await;
    let publish = json!({"class": CLASS, "text": "hi"});

    let (status, e) = call(&a, "publish", None, &publish);
    assert_eq!((status, e["error"].as_str()), (401, Some("unauthorized")));
    let (status, e) = call(
        &a,
        "publish",
        Some("wrong-key-wrong-key-wrong-key-wrong"),
        &publish,
    );
    assert_eq!((status, e["error"].as_str()), (401, Some("unauthorized")));
    let (status, e) = call(&plain, "publish", Some(KEY), &publish);
    assert_eq!((status, e["error"].as_str()), (403, Some("api_disabled")));

    let cases = [
        (
            "publish",
            json!({"class": "no spaces", "text": "hi"}),
            "class",
        ),
        ("publish", json!({"class": CLASS, "text": ""}), "text"),
        (
            "publish",
            json!({"class": CLASS, "text": "x".repeat(2001)}),
            "text",
        ),
        ("publish", json!({"class": CLASS}), "text"),
        (
            "publish",
            json!({"class": CLASS, "text": "hi", "color": "red"}),
            "color",
        ),
        ("disconnect", json!({"class": CLASS, "user": "a b"}), "user"),
        (
            "history",
            json!({"class": CLASS, "since": "yesterday"}),
            "since",
        ),
    ];
    for (method, body, names) in cases {
        let (status, e) = call(&a, method, Some(KEY), &body);
        assert_eq!(status, 400, "{method} {body}: {e}");
        assert_eq!(e["error"], "bad_request");
        assert!(
            e["message"].as_str().unwrap().contains(names),
            "{method} {body}: the message names `{names}`: {e}"
        );
    }
    // Not JSON at all.
    let (status, text) = http_request(
        a.admin_addr(),
        "POST",
        "/api/publish",
        &[
            ("Authorization", &format!("Bearer {KEY}")),
            ("Content-Type", "application/json"),
        ],
        Some("{not json"),
    )
    .unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("bad_request"));

    // The API is not on the students' port.
    let (status, text) = http_request(
        a.addr(),
        "POST",
        "/api/publish",
        &[("Authorization", &format!("Bearer {KEY}"))],
        Some(&publish.to_string()),
    )
    .unwrap();
    assert_eq!(status, 404, "{text}");
    let stored = a
        .metric("liveclass_api_requests_total{endpoint=\"publish\",code=\"bad_request\"}")
        .unwrap();
    assert!(stored >= 6.0, "{stored}");
}
