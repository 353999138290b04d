//! The Redis tier of the Sentinel test and benchmark: three `redis-server` (a primary and two
//! replicas in sync with it) and three Sentinels (quorum 2) from Debian's package, and socket
//! servers that find the primary through them.

use std::time::Duration;

use liveclass_testkit::wait::until_blocking;
use liveclass_testkit::{RedisSentinel, RedisServer, SocketServer, SocketServerBuilder};

use crate::common::SECRET;

pub const MASTER: &str = "liveclass";

/// How fast the Sentinels act.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// The primary is down after this long without answers.
    pub down_after: Duration,
    /// How long one failover may take before another Sentinel tries.
    pub failover_timeout: Duration,
}

impl Timings {
    /// A second to call the primary down: the test's subject is what follows the failover.
    pub const TEST: Self = Self {
        down_after: Duration::from_secs(1),
        failover_timeout: Duration::from_secs(3),
    };

    /// What the operator gives a class's Sentinels.
    pub fn production() -> Self {
        use liveclass_api::plan::redis::{SENTINEL_DOWN_AFTER_MS, SENTINEL_FAILOVER_TIMEOUT_MS};
        Self {
            down_after: Duration::from_millis(SENTINEL_DOWN_AFTER_MS.into()),
            failover_timeout: Duration::from_millis(SENTINEL_FAILOVER_TIMEOUT_MS.into()),
        }
    }
}

pub struct Tier {
    pub nodes: Vec<RedisServer>,
    pub sentinels: Vec<RedisSentinel>,
}

impl Tier {
    pub fn start(timings: Timings) -> Self {
        let primary = RedisServer::start().unwrap();
        let replicas: Vec<_> = (0..2)
            .map(|_| RedisServer::start_replica_of(&primary).unwrap())
            .collect();
        for r in &replicas {
            until_blocking(
                "a replica in sync",
                Duration::from_secs(10),
                Duration::from_millis(50),
                || r.in_sync().then_some(()),
            )
            .unwrap();
        }
        let sentinels = (0..3)
            .map(|_| {
                RedisSentinel::start(
                    MASTER,
                    &primary,
                    liveclass_api::plan::redis::SENTINEL_QUORUM,
                    timings.down_after,
                    timings.failover_timeout,
                )
                .unwrap()
            })
            .collect();
        let mut nodes = vec![primary];
        nodes.extend(replicas);
        Self { nodes, sentinels }
    }

    pub fn sentinel_list(&self) -> String {
        self.sentinels
            .iter()
            .map(RedisSentinel::host_port)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// What each Sentinel logged of the failover, for a test's output.
    pub fn events(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("sentinel :{}\n  {}", s.port(), s.events().join("\n  ")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The port of the node every Sentinel names as the primary, when they agree on one that
    /// is not `not`.
    pub fn agreed_port(&self, not: u16) -> Option<u16> {
        let named: Vec<_> = self.sentinels.iter().map(|s| s.primary(MASTER)).collect();
        let first = named.first()?.clone()?;
        let port: u16 = first.rsplit(':').next()?.parse().ok()?;
        (port != not && named.iter().all(|n| n.as_deref() == Some(first.as_str()))).then_some(port)
    }

    /// The node every Sentinel names as the primary, once they agree on one that is not `not`.
    pub fn agreed_primary(&self, not: u16, within: Duration) -> &RedisServer {
        let port = until_blocking(
            "the Sentinels to agree on a new primary",
            within,
            Duration::from_millis(50),
            || self.agreed_port(not),
        )
        .unwrap();
        self.nodes.iter().find(|n| n.port() == port).unwrap()
    }

    /// A socket server that finds the primary through the Sentinels, with the production
    /// defaults but for `args`.
    pub fn server_with(&self, pod: &str, args: &[&str]) -> SocketServer {
        SocketServerBuilder::new(self.nodes[0].url(), pod, SECRET)
            .args([
                "--redis-sentinels",
                &self.sentinel_list(),
                "--redis-master-name",
                MASTER,
            ])
            .args(args.iter().copied())
            .start()
            .unwrap()
    }

    /// A socket server with the test's short timings and generous comment limits.
    pub fn server(&self, pod: &str) -> SocketServer {
        self.server_with(
            pod,
            &[
                "--heartbeat-ttl",
                "3s",
                "--redis-timeout",
                "1s",
                "--pubsub-ping",
                "500ms",
                "--drain-window",
                "2s",
                "--user-rate",
                "1000",
                "--user-burst",
                "1000",
                "--rate",
                "1000",
                "--burst",
                "1000",
            ],
        )
    }
}

/// The ids of `class`'s history on `node`, in order.
pub fn stream_ids(node: &RedisServer, class: &str) -> Vec<String> {
    let client = redis::Client::open(node.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("lc:{{{class}}}:history"))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    entries.ids.into_iter().map(|e| e.id).collect()
}
