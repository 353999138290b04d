//! Bad input gets its defined answer, and other clients do not notice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use liveclass_protocol::{Claims, Role};
use liveclass_testkit::client::ClientError;
use liveclass_testkit::token::{claims, now};
use liveclass_testkit::{TestClient, TokenMinter};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn refused(result: Result<TestClient, ClientError>) -> (u16, serde_json::Value) {
    match result {
        Err(ClientError::Refused { status, body }) => {
            (status, serde_json::from_str(&body).unwrap_or_default())
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_handshakes_are_refused_before_the_upgrade() {
    let redis = redis();
    let server = builder(&redis, "pod-a")
        .args(["--allowed-origin", "https://school.example"])
        .start()
        .unwrap();
    ready(&server).await;
    let url = server.ws_url();

    let (status, body) = refused(TestClient::connect_url(&url, None).await);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_token"))
    );

    let expired = minter().mint(&Claims {
        exp: now() - 60,
        ..claims("u", "c", Role::Student)
    });
    let (status, body) = refused(TestClient::connect(&url, &expired, None).await);
    assert_eq!((status, body["error"].as_str()), (401, Some("expired")));

    let forged = TokenMinter::new("someone-elses-secret-0123456789-abcdef").student("u", "c");
    let (status, body) = refused(TestClient::connect(&url, &forged, None).await);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("bad_signature"))
    );

    // alg:none — an unsigned token claiming to be anyone.
    use base64::Engine;
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#.into()),
        b64(format!(
            r#"{{"sub":"u","class":"c","role":"teacher","exp":{}}}"#,
            now() + 60
        ))
    );
    let (status, body) = refused(TestClient::connect(&url, &none, None).await);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("bad_algorithm"))
    );

    // Not a WebSocket at all: a JSON answer too, not a bare text line.
    let (status, text) = liveclass_testkit::http::http_get(server.addr(), "/ws?token=x").unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("not_websocket"))
    );

    let (status, body) = refused(TestClient::connect(&url, "garbage", None).await);
    assert_eq!((status, body["error"].as_str()), (401, Some("malformed")));

    let good = minter().student("u", "c");
    let (status, body) = refused(
        TestClient::connect_with_origin(&url, &good, None, Some("https://evil.example")).await,
    );
    assert_eq!((status, body["error"].as_str()), (403, Some("origin")));
    TestClient::connect_with_origin(&url, &good, None, Some("https://school.example"))
        .await
        .unwrap();

    let (status, body) = refused(TestClient::connect(&url, &good, Some("yesterday")).await);
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_since")));

    assert_eq!(
        metric(
            &server,
            "liveclass_handshake_rejections_total{reason=\"expired\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn frame_errors_get_an_error_frame_and_the_connection_stays() {
    let redis = redis();
    let server = server(&redis, "pod-a");
    ready(&server).await;
    let mut client = student(&server, "s1", "c").await;
    let mut bystander = student(&server, "s2", "c").await;

    client.send(Message::text("{not json")).await.unwrap();
    assert_eq!(
        client.recv_type("error", T).await.unwrap()["code"],
        "malformed"
    );
    client
        .send_json(&json!({"t":"shout","text":"hi"}))
        .await
        .unwrap();
    assert_eq!(
        client.recv_type("error", T).await.unwrap()["code"],
        "unknown_type"
    );
    client
        .send_json(&json!({"t":"comment","text":""}))
        .await
        .unwrap();
    assert_eq!(
        client.recv_type("error", T).await.unwrap()["code"],
        "invalid"
    );
    client.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        client.recv_type("error", T).await.unwrap()["code"],
        "binary_unsupported"
    );
    client
        .send_json(&json!({"t":"dm","to":"s2","text":"psst"}))
        .await
        .unwrap();
    assert_eq!(
        client.recv_type("error", T).await.unwrap()["code"],
        "forbidden"
    );
    nothing_of(&mut bystander, "dm", Duration::from_millis(200)).await;

    client.send_json(&json!({"t":"ping"})).await.unwrap();
    client.recv_type("pong", T).await.unwrap();
    client.send_json(&comment("still here")).await.unwrap();
    assert_eq!(
        bystander.recv_type("comment", T).await.unwrap()["text"],
        "still here"
    );
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let redis = redis();
    let server = server(&redis, "pod-a");
    ready(&server).await;
    let mut big = student(&server, "big", "c").await;
    let mut bystander = student(&server, "s2", "c").await;
    let mut other = student(&server, "s3", "c").await;

    big.send(Message::text("x".repeat(17 * 1024)))
        .await
        .unwrap();
    let close = big.recv_close(T).await.unwrap();
    assert_eq!(close.map(|c| c.0), Some(1009));

    bystander.send_json(&comment("unaffected")).await.unwrap();
    assert_eq!(
        other.recv_type("comment", T).await.unwrap()["text"],
        "unaffected"
    );
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_closed() {
    let redis = redis();
    let server = builder(&redis, "pod-a")
        .args(["--rate", "5", "--burst", "10"])
        .start()
        .unwrap();
    ready(&server).await;
    let mut flooder = student(&server, "flood", "c").await;
    let mut listener = student(&server, "l", "c").await;

    for n in 0..30 {
        flooder.send_json(&comment(&format!("f{n}"))).await.unwrap();
    }
    assert_eq!(
        flooder.recv_type("error", T).await.unwrap()["code"],
        "rate_limited"
    );
    // The burst (10) plus what the rate refilled while sending got through; the rest did not.
    let mut delivered = 0;
    while let Ok(frame) = listener
        .recv_type("comment", Duration::from_millis(500))
        .await
    {
        assert!(frame["text"].as_str().unwrap().starts_with('f'));
        delivered += 1;
    }
    assert!(
        (10..=13).contains(&delivered),
        "{delivered} comments got through the limit"
    );

    // Keeping it up far past the limit (10 x burst dropped in a row) ends the connection.
    for _ in 0..200 {
        if flooder.send_json(&json!({"t":"ping"})).await.is_err() {
            break;
        }
    }
    assert_eq!(
        flooder.recv_close(T).await.unwrap().map(|c| c.0),
        Some(1008)
    );
    let mut fresh = student(&server, "s9", "c").await;
    listener.send_json(&comment("fine")).await.unwrap();
    assert_eq!(fresh.recv_type("comment", T).await.unwrap()["text"], "fine");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_slow() {
    let redis = redis();
    let server = builder(&redis, "pod-a")
        .args([
            "--send-queue",
            "16",
            "--rate",
            "100000",
            "--burst",
            "100000",
            "--user-rate",
            "100000",
            "--user-burst",
            "100000",
            "--write-timeout",
            "2s",
        ])
        .start()
        .unwrap();
    ready(&server).await;
    let slow = student(&server, "slow", "c").await.into_inner(); // never read again
    let mut speaker = student(&server, "speaker", "c").await;
    let mut keen = student(&server, "keen", "c").await;

    // ~1.9 KB comments until the slow client's socket buffers and its queue of 16 are full.
    let text = "y".repeat(1900);
    let started = Instant::now();
    let mut sent = 0;
    while metric(&server, "liveclass_closes_total{reason=\"slow_consumer\"}").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "slow client never closed after {sent} comments"
        );
        // Eight at a time, half the queue: the keen reader (and the speaker's own echo) keep
        // up with everything by construction. 200 at a time, read only afterwards, could fill
        // the keen reader's queue too while its socket buffers were still small (CI, once).
        for _ in 0..8 {
            speaker.send_json(&comment(&text)).await.unwrap();
        }
        sent += 8;
        comments(&mut keen, 8).await;
        comments(&mut speaker, 8).await;
    }
    // Its task ends once the close frame is written or the write deadline passes (its socket
    // is full, so the deadline).
    liveclass_testkit::wait::until(
        "the slow connection gone",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { (metric(&server, "liveclass_connections ")? <= 2.0).then_some(()) },
    )
    .await
    .unwrap();
    drop(slow);
    speaker.send_json(&comment("after")).await.unwrap();
    assert_eq!(keen.recv_type("comment", T).await.unwrap()["text"], "after");
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_closed_at_the_timeout() {
    let redis = redis();
    let server = builder(&redis, "pod-a")
        .args(["--handshake-timeout", "1s"])
        .start()
        .unwrap();
    ready(&server).await;
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /ws?token=x HTTP/1.1\r\nHost: a\r\n")
        .unwrap(); // and never the blank line
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    // hyper answers 408 or just closes; either way the connection ends at about the timeout.
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "unexpected answer {answer:?}"
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

/// What a client that never answers saw: the pings, then the close code, and when.
struct Silence {
    pings: usize,
    close: Option<u16>,
    after: Duration,
}

/// A WebSocket client that reads every frame and answers none, not even pings (tungstenite
/// answers a ping by itself whenever it reads, so a "mute" tungstenite client must stop
/// reading, and then the server's close races its reset). Raw frames: the server's are
/// unmasked.
async fn silent_client(addr: std::net::SocketAddr, token: &str, limit: Duration) -> Silence {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "handshake: {head}");
    let started = Instant::now();
    let read = async {
        let mut pings = 0;
        loop {
            let [first, second] = [stream.read_u8().await?, stream.read_u8().await?];
            let len = match second & 0x7f {
                126 => u64::from(stream.read_u16().await?),
                127 => stream.read_u64().await?,
                n => u64::from(n),
            };
            let mut payload = vec![0; usize::try_from(len).unwrap()];
            stream.read_exact(&mut payload).await?;
            match first & 0x0f {
                0x9 => pings += 1,
                0x8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok::<_, std::io::Error>((pings, code));
                }
                _ => {}
            }
        }
    };
    let (pings, close) = tokio::time::timeout(limit, read)
        .await
        .expect("closed within the limit")
        .unwrap();
    Silence {
        pings,
        close,
        after: started.elapsed(),
    }
}

#[tokio::test]
async fn idle_clients_are_pinged_and_dead_ones_closed() {
    let redis = redis();
    let server = builder(&redis, "pod-a")
        .args(["--idle-timeout", "1500ms"])
        .start()
        .unwrap();
    ready(&server).await;
    // tungstenite answers pings while the client reads: this one stays.
    let mut alive = student(&server, "alive", "c").await;
    let keeps_reading = tokio::spawn(async move {
        nothing_of(&mut alive, "never", Duration::from_secs(4)).await;
        alive.send_json(&json!({"t":"ping"})).await.unwrap();
        alive.recv_type("pong", T).await.unwrap();
    });
    // A client that reads but never answers: pinged every third of the timeout, then closed
    // with 4000 once nothing was heard for the timeout.
    let mute = silent_client(server.addr(), &minter().student("mute", "c"), T).await;
    assert_eq!(mute.close, Some(4000));
    assert!(
        mute.pings >= 2,
        "pinged {} times before the close",
        mute.pings
    );
    assert!(
        mute.after >= Duration::from_millis(1500),
        "closed after {:?}, before the idle timeout",
        mute.after
    );
    keeps_reading.await.unwrap();
}
