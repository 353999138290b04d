//! `bench/redis-failover` (ignored; the script runs it `BENCH_REPEAT` times): a class of
//! `BENCH_STUDENTS` (2,000) on two socket servers that find their primary through three
//! Sentinels with the operator's timings (the primary is down after 5 s without answers);
//! comments at `BENCH_RATE` a second (10), each from the next of the students in a fixed
//! shuffled order, for `BENCH_SECONDS` (40); the primary is killed with SIGKILL
//! `BENCH_KILL_AT` seconds in (8). Each student behaves as the client library does: a comment
//! answered `unavailable` is sent again with the same `ref` half a second later.
//!
//! Measured, from the kill: until all three Sentinels name the new primary; until the first
//! comment written after the kill reaches a student, and until every student has had one;
//! and what was lost — comments the new primary holds that a student did not get (target 0),
//! deliveries twice (target 0), comments never confirmed to their sender (target 0), and
//! comments confirmed by the old primary that the new one does not hold (asynchronous
//! replication; the students' `gap` frames are counted next to them). Writes `BENCH_OUT`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use liveclass_testkit::client::ConnectOptions;
use liveclass_testkit::{SocketServer, TestClient};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{T, minter};
use crate::tier::{Tier, Timings, stream_ids};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>;

const CLASS: &str = "failover";
/// How long a student waits before sending a comment again after `unavailable`.
const RESEND_AFTER: Duration = Duration::from_millis(500);
/// Loopback addresses the students connect from (127.0.0.2 and up): a class's students come
/// from many addresses, and each stays within the servers' default per-address handshake
/// budget.
const SOURCES: usize = 40;

fn env_or<V: std::str::FromStr>(name: &str, default: V) -> V {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one student saw.
#[derive(Default)]
struct Inbox {
    /// Comment ids in arrival order, with when.
    delivered: Vec<(String, Instant)>,
    gaps: u64,
    /// This student's own comments echoed back: ref -> id.
    confirmed: HashMap<String, String>,
    unavailable: u64,
    /// Other `error` frames, by code.
    errors: BTreeMap<String, u64>,
    closed: bool,
}

struct Student {
    inbox: Arc<Mutex<Inbox>>,
    sink: Sink,
}

fn text(comment: usize) -> String {
    format!("f{comment}")
}

async fn send(sink: &Sink, comment: &str) {
    let frame = json!({ "t": "comment", "text": comment, "ref": comment }).to_string();
    let _ = sink.lock().await.send(Message::text(frame)).await;
}

/// Reads a student's frames until the connection ends or `stop` is set; sends a comment
/// refused with `unavailable` again after [`RESEND_AFTER`].
async fn read(
    user: String,
    mut frames: SplitStream<Ws>,
    sink: Sink,
    inbox: Arc<Mutex<Inbox>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let next = match tokio::time::timeout(Duration::from_millis(250), frames.next()).await {
            Err(_) => continue,
            Ok(next) => next,
        };
        let frame: Value = match next {
            Some(Ok(Message::Text(t))) => serde_json::from_str(&t).unwrap_or_default(),
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                inbox.lock().unwrap().closed = true;
                return;
            }
            Some(Ok(_)) => continue,
        };
        let now = Instant::now();
        let mut inbox = inbox.lock().unwrap();
        match frame["t"].as_str() {
            Some("comment") => {
                let id = frame["id"].as_str().unwrap_or_default().to_owned();
                if frame["from"] == user.as_str()
                    && let Some(r) = frame["ref"].as_str()
                {
                    inbox.confirmed.insert(r.to_owned(), id.clone());
                }
                inbox.delivered.push((id, now));
            }
            Some("gap") => inbox.gaps += 1,
            Some("error") if frame["code"] == "unavailable" => {
                inbox.unavailable += 1;
                if let Some(r) = frame["ref"].as_str() {
                    let (sink, r) = (sink.clone(), r.to_owned());
                    tokio::spawn(async move {
                        tokio::time::sleep(RESEND_AFTER).await;
                        send(&sink, &r).await;
                    });
                }
            }
            Some("error") => {
                let code = frame["code"].as_str().unwrap_or("?").to_owned();
                *inbox.errors.entry(code).or_default() += 1;
            }
            _ => {}
        }
    }
}

async fn join(
    server: &SocketServer,
    i: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Student, tokio::task::JoinHandle<()>) {
    let user = format!("student-{i:05}");
    let options = ConnectOptions {
        source: Some(std::net::IpAddr::from([127, 0, 0, 2 + (i % SOURCES) as u8])),
        ..ConnectOptions::token(minter().student(&user, CLASS))
    };
    let mut client = TestClient::connect_with(&server.ws_url(), &options)
        .await
        .unwrap();
    client.recv_type("hello", T).await.unwrap();
    let (sink, frames) = client.into_inner().split();
    let sink: Sink = Arc::new(tokio::sync::Mutex::new(sink));
    let inbox: Arc<Mutex<Inbox>> = Arc::default();
    let task = tokio::spawn(read(user, frames, sink.clone(), inbox.clone(), stop));
    (Student { inbox, sink }, task)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/redis-failover"]
async fn redis_failover() {
    let students: usize = env_or("BENCH_STUDENTS", 2000);
    let rate: f64 = env_or("BENCH_RATE", 10.0);
    let seconds: f64 = env_or("BENCH_SECONDS", 40.0);
    let kill_at: f64 = env_or("BENCH_KILL_AT", 8.0);
    let out: String = env_or("BENCH_OUT", "/tmp/redis-failover.json".to_owned());
    let wall = Instant::now();

    let timings = Timings::production();
    let mut tier = Tier::start(timings);
    // The production defaults, all of them.
    let servers = [
        tier.server_with("pod-a", &[]),
        tier.server_with("pod-b", &[]),
    ];
    for s in &servers {
        crate::common::ready(s).await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let joined: Vec<(Student, tokio::task::JoinHandle<()>)> =
        futures_util::stream::iter(0..students)
            .map(|i| join(&servers[i % servers.len()], i, stop.clone()))
            .buffered(32)
            .collect()
            .await;
    let (members, readers): (Vec<Student>, Vec<_>) = joined.into_iter().unzip();
    eprintln!(
        "redis-failover: {students} students joined in {:?}",
        wall.elapsed()
    );

    // The killer: SIGKILL at `kill_at`, then the moment the Sentinels agree on another node.
    let comments = (rate * seconds) as usize;
    let t0 = Instant::now() + Duration::from_millis(500);
    let kill_instant = t0 + Duration::from_secs_f64(kill_at);
    let killer = tokio::task::spawn_blocking(move || {
        std::thread::sleep(kill_instant.saturating_duration_since(Instant::now()));
        let old_port = tier.nodes[0].port();
        let mut old = tier.nodes.remove(0);
        old.stop(); // SIGKILL
        let killed = Instant::now();
        let deadline = killed + Duration::from_secs(60);
        let mut agreed = None;
        while agreed.is_none() && Instant::now() < deadline {
            agreed = tier.agreed_port(old_port).map(|p| (p, Instant::now()));
            std::thread::sleep(Duration::from_millis(50));
        }
        (tier, old, killed, agreed)
    });

    // The comments, each at its intended instant, from students in a fixed shuffled order.
    let mut scheduled = Vec::with_capacity(comments);
    for k in 0..comments {
        let at = t0 + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let from = &members[(k * 7919) % members.len()];
        send(&from.sink, &text(k)).await;
        scheduled.push((at, (k * 7919) % members.len()));
    }
    let (tier, old, killed, agreed) = killer.await.unwrap();
    let (new_port, agreed_at) = agreed.expect("the Sentinels named no new primary within 60 s");
    let new_primary = tier.nodes.iter().find(|n| n.port() == new_port).unwrap();
    // Settle: resends, and catch-ups after the servers' pub/sub came back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }

    let held: Vec<String> = stream_ids(new_primary, CLASS);
    let held_set: HashSet<&str> = held.iter().map(String::as_str).collect();
    // Which comment each id is, from what its sender was told.
    let mut id_of: HashMap<usize, String> = HashMap::new();
    let mut confirmed_not_held = 0;
    let mut unconfirmed = 0;
    for (k, (_, from)) in scheduled.iter().enumerate() {
        let inbox = members[*from].inbox.lock().unwrap();
        match inbox.confirmed.get(&text(k)) {
            Some(id) => {
                if !held_set.contains(id.as_str()) {
                    confirmed_not_held += 1;
                }
                id_of.insert(k, id.clone());
            }
            None => unconfirmed += 1,
        }
    }
    let after_kill: HashSet<&str> = scheduled
        .iter()
        .enumerate()
        .filter(|(_, (at, _))| *at > killed)
        .filter_map(|(k, _)| id_of.get(&k).map(String::as_str))
        .collect();
    let (mut lost, mut duplicates, mut out_of_order, mut gaps, mut closed) = (0, 0, 0, 0, 0);
    let (mut unavailable, mut errors) = (0, BTreeMap::<String, u64>::new());
    let mut first_after: Option<Instant> = None;
    let mut last_first_after: Option<Instant> = None;
    let mut never_resumed = 0;
    for m in &members {
        let inbox = m.inbox.lock().unwrap();
        let ids: Vec<&str> = inbox.delivered.iter().map(|(id, _)| id.as_str()).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        duplicates += ids.len() - unique.len();
        lost += held.iter().filter(|h| !unique.contains(h.as_str())).count();
        let kept: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| held_set.contains(id))
            .collect();
        let mut seen = HashSet::new();
        let kept_once: Vec<&str> = kept.into_iter().filter(|id| seen.insert(*id)).collect();
        let in_held: Vec<&str> = held
            .iter()
            .map(String::as_str)
            .filter(|h| unique.contains(h))
            .collect();
        out_of_order += usize::from(kept_once != in_held);
        gaps += inbox.gaps;
        closed += usize::from(inbox.closed);
        unavailable += inbox.unavailable;
        for (code, n) in &inbox.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
        match inbox
            .delivered
            .iter()
            .find(|(id, _)| after_kill.contains(id.as_str()))
        {
            Some((_, at)) => {
                first_after = Some(first_after.map_or(*at, |f| f.min(*at)));
                last_first_after = Some(last_first_after.map_or(*at, |f| f.max(*at)));
            }
            None => never_resumed += 1,
        }
    }
    let since_kill = |t: Option<Instant>| t.map(|t| secs(t.saturating_duration_since(killed)));
    let result = json!({
        "scenario": "redis-failover",
        "setup": format!(
            "three redis-server (a primary, two replicas) and three redis-sentinel (quorum {}, down after {} ms, failover timeout {} ms) from Debian's package; two liveclass-socket with --redis-sentinels and every other setting the production default; students from {SOURCES} loopback addresses",
            liveclass_api::plan::redis::SENTINEL_QUORUM,
            timings.down_after.as_millis(),
            timings.failover_timeout.as_millis(),
        ),
        "students": students,
        "servers": servers.len(),
        "comment_rate_per_s": rate,
        "comments_seconds": seconds,
        "kill_at_s": kill_at,
        "comments_scheduled": scheduled.len(),
        "sentinels_agreed_s": secs(agreed_at.saturating_duration_since(killed)),
        "first_delivery_after_kill_s": since_kill(first_after),
        "all_students_resumed_s": since_kill(last_first_after),
        "students_never_resumed": never_resumed,
        "held_by_new_primary": held.len(),
        "lost_deliveries": lost,
        "duplicate_deliveries": duplicates,
        "students_out_of_order": out_of_order,
        "comments_unconfirmed": unconfirmed,
        "comments_confirmed_not_held": confirmed_not_held,
        "gap_frames": gaps,
        "unavailable_answers": unavailable,
        "other_errors": errors,
        "students_closed": closed,
        "wall_seconds": secs(wall.elapsed()),
    });
    let text = serde_json::to_string_pretty(&result).unwrap() + "\n";
    std::fs::write(&out, &text).unwrap();
    eprintln!("{text}");
    assert_eq!(
        closed, 0,
        "students were closed: the servers did not ride the failover"
    );
    drop(old);
    drop(members);
}
