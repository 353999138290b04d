//! End to end, with the real parts: one `redis-server`, three `liveclass-socket` processes and
//! Caddy (the repository's Caddyfile) in front, driven by the load generator in-process.
//!
//! 1. A class of 300 students (in two classes, with a teacher each) through Caddy: every comment
//!    reaches every member exactly once, in order, and Caddy spreads the sockets over all three.
//! 2. The same class again, and one server is SIGKILLed mid-class: its students reconnect through
//!    Caddy to the two others and, with `since`, recover everything they missed: nothing lost.
//! 3. A class split over two load-generator parts, straight to the two surviving servers: the
//!    merged report accounts every comment of one part delivered to members of the other.
//!
//! Needs `redis-server` (Debian package), the `liveclass-socket` binary next to this test binary
//! (`cargo test --workspace` builds it; or set `LIVECLASS_SOCKET_BIN`) and Caddy
//! (`scripts/caddy-binary` builds it once; or set `LIVECLASS_CADDY`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use liveclass_load::{Config, LoadTest, Report};
use liveclass_testkit::caddy::Caddy;
use liveclass_testkit::wait::until;
use liveclass_testkit::{RedisServer, SocketServer, SocketServerBuilder};

const SECRET: &str = "e2e-load-generator-secret-0123456789";
const STUDENTS: u32 = 300;

fn stack() -> (RedisServer, Vec<SocketServer>, Caddy) {
    let redis = RedisServer::start().expect("redis-server");
    let servers: Vec<SocketServer> = (0..3)
        .map(|i| {
            SocketServerBuilder::new(redis.url(), format!("e2e-socket-{i}"), SECRET)
                .start()
                .expect("socket server")
        })
        .collect();
    let addrs: Vec<_> = servers.iter().map(SocketServer::addr).collect();
    let caddy = Caddy::start(&addrs).expect("caddy");
    (redis, servers, caddy)
}

fn class_config(url: String, run_id: &str, duration: Duration) -> Config {
    let mut config = Config::new(vec![url], SECRET);
    config.run_id = run_id.into();
    config.students = STUDENTS;
    config.classes = 2;
    config.teachers = 1;
    config.arrival = liveclass_load::Arrival::Ramp(600.0);
    config.comment_rate = 4.0;
    config.duration = duration;
    config.drain = Duration::from_secs(20);
    config.connect_timeout = Duration::from_secs(5);
    config
}

fn explain(report: &Report) -> String {
    format!(
        "{report}\n{}",
        serde_json::to_string_pretty(&report.connections).unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_through_caddy_gets_every_comment_once_and_survives_a_killed_server() {
    let (_redis, mut servers, caddy) = stack();
    let members = u64::from(STUDENTS) + 2;

    // 1. A clean class.
    let test = LoadTest::new(class_config(
        caddy.ws_url(),
        "e2eclean",
        Duration::from_secs(4),
    ))
    .unwrap();
    let stats = test.stats();
    let run = tokio::spawn(test.run());
    until(
        "everyone connected",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let connected = stats.snapshot().connected;
            async move { (connected == members).then_some(()) }
        },
    )
    .await
    // What the members were doing, so a failure here says why (it failed once in CI).
    .unwrap_or_else(|e| panic!("{e}: {:?}", stats.snapshot()));
    let per_server: Vec<i64> = caddy
        .upstreams()
        .unwrap()
        .iter()
        .map(|u| u.num_requests)
        .collect();
    let report = run.await.unwrap().unwrap();
    println!("{report}");
    assert_eq!(
        report.connections.connected,
        members,
        "{}",
        explain(&report)
    );
    // Loss is loss: everything scheduled was written and accepted, nothing skipped, refused,
    // void or answered with an error frame.
    assert!(report.comments.scheduled >= 30, "{}", explain(&report));
    assert_eq!(
        report.comments.sent,
        report.comments.scheduled,
        "{}",
        explain(&report)
    );
    assert_eq!(
        report.comments.accepted,
        report.comments.sent,
        "{}",
        explain(&report)
    );
    assert_eq!(report.comments.void, 0, "{}", explain(&report));
    assert!(report.comments.skipped.is_empty(), "{}", explain(&report));
    assert!(
        report.comments.error_frames.is_empty(),
        "{}",
        explain(&report)
    );
    assert!(report.failures.is_empty(), "{}", explain(&report));
    // Figures measured, not derived: latency from the intended send time is never below the
    // latency from the actual send; the in-window rate comes from receive counts.
    assert_eq!(
        report.latency_ms.count,
        report.deliveries.received + report.deliveries.extra
    );
    assert!(
        report.latency_ms.p50 >= report.latency_from_send_ms.p50,
        "{}",
        explain(&report)
    );
    assert!(
        report.deliveries.in_window.received > 0,
        "{}",
        explain(&report)
    );
    assert!(
        report.deliveries.in_window.received
            <= report.deliveries.received + report.deliveries.extra
    );
    assert!(
        report.deliveries.in_window.per_second > 0.0,
        "{}",
        explain(&report)
    );
    assert!(!report.histograms.latency_us.is_empty());
    assert!(report.steps_s.contains_key("sending") && report.steps_s.contains_key("settling"));
    assert!(
        report.machine.loadavg_1m.samples > 0,
        "load average sampled during the run"
    );
    assert!(
        report.deliveries.expected >= report.comments.accepted * 100,
        "{}",
        explain(&report)
    );
    assert_eq!(
        report.deliveries.received,
        report.deliveries.expected,
        "{}",
        explain(&report)
    );
    assert_eq!(report.deliveries.lost, 0, "{}", explain(&report));
    assert_eq!(report.deliveries.duplicated, 0, "{}", explain(&report));
    assert_eq!(report.deliveries.out_of_order, 0, "{}", explain(&report));
    assert_eq!(report.connections.reconnects, 0, "{}", explain(&report));
    assert!(report.ok, "{}", explain(&report));
    assert_eq!(per_server.len(), 3);
    for n in &per_server {
        // least_conn spreads 302 sockets over three servers: none is left empty.
        assert!(*n >= 50, "Caddy's sockets per server: {per_server:?}");
    }

    // 2. One server is killed mid-class.
    let test = LoadTest::new(class_config(
        caddy.ws_url(),
        "e2ekill",
        Duration::from_secs(8),
    ))
    .unwrap();
    let stats = test.stats();
    let run = tokio::spawn(test.run());
    // Kill once everyone is connected and holds a message id, so every reconnect can use `since`.
    until(
        "everyone connected with a message id",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let s = stats.snapshot();
            async move { (s.connected == members && s.with_since == members).then_some(()) }
        },
    )
    .await
    .unwrap();
    let victim = servers[0].addr().to_string();
    let victim_load = caddy
        .upstreams()
        .unwrap()
        .iter()
        .find(|u| u.address == victim)
        .map(|u| u.num_requests)
        .unwrap_or(0);
    servers[0].kill();
    let report = run.await.unwrap().unwrap();
    println!("{report}");
    assert!(victim_load > 0);
    assert!(
        report.connections.reconnects >= victim_load as u64 / 2,
        "students of the killed server ({victim_load}) reconnect: {}",
        explain(&report)
    );
    assert_eq!(
        report.connections.connected,
        members,
        "{}",
        explain(&report)
    );
    assert_eq!(report.connections.gave_up, 0, "{}", explain(&report));
    assert_eq!(
        report.connections.recovered_false,
        0,
        "{}",
        explain(&report)
    );
    assert_eq!(
        report.deliveries.lost,
        0,
        "with `since` nothing is lost: {}",
        explain(&report)
    );
    assert_eq!(
        report.deliveries.received,
        report.deliveries.expected,
        "{}",
        explain(&report)
    );
    assert_eq!(report.deliveries.duplicated, 0, "{}", explain(&report));
    assert_eq!(report.deliveries.out_of_order, 0, "{}", explain(&report));
    assert_eq!(
        report.connections.recovering_at_end,
        0,
        "{}",
        explain(&report)
    );
    assert!(
        report.connections.outage.all_recovered_s > 0.0,
        "{}",
        explain(&report)
    );
    assert!(report.comments.skipped.is_empty(), "{}", explain(&report));
    assert_eq!(report.comments.void, 0, "{}", explain(&report));
    assert!(report.ok, "{}", explain(&report));

    // 3. A split run: two parts in this process, one schedule, merged.
    let urls: Vec<String> = servers[1..].iter().map(SocketServer::ws_url).collect();
    let start_at = liveclass_load::unix_ms() + 3000;
    let parts: Vec<_> = (0..2)
        .map(|part| {
            let mut config = class_config(urls[0].clone(), "e2esplit", Duration::from_secs(4));
            config.urls = urls.clone();
            config.split = 2;
            config.part = part;
            config.start_at_ms = Some(start_at);
            tokio::spawn(LoadTest::new(config).unwrap().run())
        })
        .collect();
    let mut reports = Vec::new();
    for part in parts {
        reports.push(part.await.unwrap().unwrap());
    }
    assert!(reports.iter().all(|r| r.partial && r.ledger.is_some()));
    assert!(
        Report::merge(vec![reports[0].clone()]).is_err(),
        "a merge without part 1 is refused"
    );
    let merged = Report::merge(reports).unwrap();
    println!("{merged}");
    assert!(!merged.partial);
    assert_eq!(
        merged.connections.connected,
        members,
        "{}",
        explain(&merged)
    );
    assert!(merged.comments.accepted >= 10, "{}", explain(&merged));
    assert_eq!(
        merged.comments.accepted,
        merged.comments.scheduled,
        "{}",
        explain(&merged)
    );
    assert!(
        merged.deliveries.expected >= merged.comments.accepted * 100,
        "{}",
        explain(&merged)
    );
    assert_eq!(
        merged.deliveries.received,
        merged.deliveries.expected,
        "{}",
        explain(&merged)
    );
    assert_eq!(merged.deliveries.unknown, 0, "{}", explain(&merged));
    assert!(merged.ok, "{}", explain(&merged));
}
