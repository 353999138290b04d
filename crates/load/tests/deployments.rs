//! The load generator against a deployment the way a school runs one, with the real parts:
//!
//! 1. `wss://` through the repository's Caddyfile serving HTTPS (`LIVECLASS_TLS=on`) with a
//!    certificate made here by a CA of its own, trusted through `--ca-file`, the host name `localhost` resolved per connection, the school's class id and
//!    its own extra claims in every token: every comment reaches everyone.
//! 2. Tokens the school minted itself, read from a file (one JWT a line).
//!
//! Needs `redis-server`, the `liveclass-socket` binary next to this test binary (or
//! `LIVECLASS_SOCKET_BIN`) and Caddy (`scripts/caddy-binary`, or `LIVECLASS_CADDY`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use liveclass_load::endpoint::tls_connector;
use liveclass_load::token::{Claims, Minter, Role};
use liveclass_load::{Config, LoadTest, Report, Shape};
use liveclass_protocol::claims::Audience;
use liveclass_testkit::caddy::Caddy;
use liveclass_testkit::tls::local_certificate;
use liveclass_testkit::wait::until;
use liveclass_testkit::{RedisServer, SocketServer, SocketServerBuilder};

const SECRET: &str = "deployment-load-generator-secret-0123456789";

fn explain(report: &Report) -> String {
    format!(
        "{report}\n{}",
        serde_json::to_string_pretty(&report.connections).unwrap_or_default()
    )
}

fn servers(redis: &RedisServer, n: usize, args: &[&str]) -> Vec<SocketServer> {
    (0..n)
        .map(|i| {
            SocketServerBuilder::new(redis.url(), format!("deploy-socket-{i}"), SECRET)
                .args(args.iter().copied())
                .start()
                .expect("socket server")
        })
        .collect()
}

/// The repository's Caddyfile serving HTTPS (`LIVECLASS_TLS=on`) for `localhost` in front of
/// `servers`, with a certificate made here; returns it, its port and the CA to trust.
async fn tls_caddy(servers: &[SocketServer], dir: &Path) -> (Caddy, u16, std::path::PathBuf) {
    let certificate = local_certificate(dir, &["localhost", "127.0.0.1"]).unwrap();
    let root = certificate.ca.clone();
    let addrs: Vec<_> = servers.iter().map(SocketServer::addr).collect();
    let caddy = Caddy::builder(&addrs)
        .tls(certificate)
        .start()
        .expect("caddy");
    let tls_port = caddy.addr().port();
    until(
        "Caddy to serve TLS for localhost",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let root = root.clone();
            async move {
                let tls = tls_connector(Some(&root)).ok()?;
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
                    .await
                    .ok()?;
                let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
                tls.0.connect(name, tcp).await.ok().map(|_| ())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", caddy.log_tail(30)));
    (caddy, tls_port, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_school_deployment_over_wss_with_its_own_claims_and_tokens() {
    let redis = RedisServer::start().expect("redis-server");
    // The servers check the school's issuer and audience, so the claims must really be there.
    let servers = servers(
        &redis,
        2,
        &[
            "--token-issuer",
            "https://school.example",
            "--token-audience",
            "liveclass",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (_caddy, tls_port, root) = tls_caddy(&servers, dir.path()).await;

    // 1. wss:// with a CA file, a host name, a namespaced class and the school's claims.
    let mut config = Config::new(vec![format!("wss://localhost:{tls_port}/ws")], SECRET);
    config.ca_file = Some(root.clone());
    config.run_id = "e2etls".into();
    config.class_ids = vec!["school/physics-101".into()];
    config.students = 60;
    config.teachers = 1;
    config.arrival = liveclass_load::Arrival::Within(Duration::from_secs(1), Shape::Random);
    config.comment_rate = 3.0;
    config.duration = Duration::from_secs(3);
    config.drain = Duration::from_secs(15);
    config.token_claims = liveclass_load::token::parse_extra_claims(
        r#"{"iss":"https://school.example","aud":"liveclass","tenant":"north"}"#,
    )
    .unwrap();
    config.max_failed_attempts = Some(0);
    let report = LoadTest::new(config).unwrap().run().await.unwrap();
    println!("{report}");
    assert_eq!(report.connections.connected, 61, "{}", explain(&report));
    assert_eq!(
        report.connections.failed_attempts,
        0,
        "{}",
        explain(&report)
    );
    assert_eq!(report.run.class_ids, vec!["school/physics-101".to_string()]);
    assert!(report.comments.accepted >= 6, "{}", explain(&report));
    assert_eq!(report.deliveries.received, report.deliveries.expected);
    assert!(report.ok, "{}", explain(&report));

    // The same URL without the CA: a clear TLS failure, not a hang.
    let mut config = Config::new(vec![format!("wss://localhost:{tls_port}/ws")], SECRET);
    config.students = 1;
    config.teachers = 0;
    config.comment_rate = 0.0;
    config.duration = Duration::from_millis(100);
    config.max_retries = 0;
    config.connect_timeout = Duration::from_secs(5);
    config.ca_file = None;
    match LoadTest::new(config) {
        Ok(test) => {
            let report = test.run().await.unwrap();
            assert_eq!(
                report.connections.never_connected,
                1,
                "{}",
                explain(&report)
            );
            assert!(
                report.connections.failed.contains_key("tls"),
                "{}",
                explain(&report)
            );
            assert!(!report.ok);
        }
        // A machine without readable platform roots says so before connecting.
        Err(e) => assert!(e.to_string().contains("--ca-file"), "{e}"),
    }

    // 2. Tokens the school minted, one a line; who and which class come from their claims.
    let minter = Minter::new(SECRET.as_bytes(), Default::default());
    let exp = liveclass_load::unix_ms() / 1000 + 600;
    let mut lines = String::from("# minted by the school's backend\n");
    for i in 0..20 {
        let role = if i == 0 { Role::Teacher } else { Role::Student };
        let token = minter
            .mint(&Claims {
                sub: format!("school-user-{i}"),
                class: "school/chemistry-7".into(),
                role,
                exp,
                iat: None,
                name: None,
                aud: Some(Audience::One("liveclass".into())),
                iss: Some("https://school.example".into()),
            })
            .unwrap();
        lines.push_str(&token);
        lines.push('\n');
    }
    let tokens_file = dir.path().join("tokens.txt");
    std::fs::write(&tokens_file, lines).unwrap();
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: liveclass_load::RunArgs,
    }
    let args = <Cli as clap::Parser>::parse_from([
        "liveclass-load",
        "--url",
        &servers[0].ws_url(),
        "--tokens-file",
        &tokens_file.display().to_string(),
        "--comment-rate",
        "2",
        "--duration",
        "2s",
        "--no-progress",
    ])
    .run;
    let config = args.into_config().unwrap();
    assert_eq!((config.students, config.classes), (19, 1));
    let report = LoadTest::new(config).unwrap().run().await.unwrap();
    println!("{report}");
    assert_eq!(report.connections.connected, 20, "{}", explain(&report));
    assert_eq!(report.run.class_ids, vec!["school/chemistry-7".to_string()]);
    assert!(report.ok, "{}", explain(&report));
}
