//! liveclass-socket: the WebSocket server that holds students' connections and routes every
//! message through Redis, so that any server can reach any student.
//!
//! The pieces, each in its own module: [`auth`] checks tokens, [`protocol`] is the wire format,
//! [`hub`] is the local registry and fan-out, [`bus`] the pub/sub connection, [`store`] every
//! other Redis call, [`connection`] one client's loop, [`liveness`] the heartbeat, crash
//! clean-up and presence, [`http`] the handshake and probes.

pub mod auth;
pub mod bus;
pub mod config;
pub mod connection;
pub mod http;
pub mod hub;
pub mod liveness;
pub mod metrics;
pub mod protocol;
pub mod ratelimit;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Health};
use crate::config::{Args, ConfigError};
use crate::connection::ServerState;
use crate::http::{AppState, OriginPolicy};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Store;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--redis-url is not a Redis URL: {0}")]
    RedisUrl(redis::RedisError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the server until `shutdown` resolves, then drains: readiness turns 503 at once,
/// clients are told to reconnect at moments spread over the drain window and closed, and
/// this returns before the window ends.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    args.validate()?;
    let secret = args.token_secret()?;
    let pod = args.pod_id()?;
    let limits = args.limits();
    let client = redis::Client::open(args.redis_url.as_str()).map_err(ServerError::RedisUrl)?;

    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let store = Store::new(client.clone(), args.history)?;
    let (bus_tx, bus_rx) = tokio::sync::mpsc::unbounded_channel();
    let hub = Arc::new(Hub::new(bus_tx, metrics.clone()));
    let health = Arc::new(Health::default());
    let state = Arc::new(ServerState {
        pod: pod.clone(),
        hub: hub.clone(),
        store: store.clone(),
        limits: limits.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        drain: CancellationToken::new(),
        next_conn: AtomicU64::new(1),
        pending_releases: std::sync::Mutex::new(Vec::new()),
    });

    // A server restarted under the same id (a StatefulSet pod, a test) inherits nothing.
    match tokio::time::timeout(Duration::from_secs(2), store.forget_pod(&pod)).await {
        Ok(Ok(stale)) if stale > 0 => tracing::info!(
            stale,
            "removed sessions left by an earlier run of this server"
        ),
        _ => {}
    }

    let background = CancellationToken::new();
    let bus = Bus {
        client,
        pod: pod.clone(),
        hub,
        store,
        health: health.clone(),
        metrics: metrics.clone(),
    };
    tokio::spawn(bus.run(bus_rx, background.clone()));
    tokio::spawn(liveness::heartbeat_loop(
        state.clone(),
        args.heartbeat_ttl,
        background.clone(),
    ));
    tokio::spawn(liveness::presence_loop(state.clone(), background.clone()));

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: args.listen,
            source,
        })?;
    tracing::info!(addr = %args.listen, %pod, "listening");
    let app_state = Arc::new(AppState {
        server: state.clone(),
        verifier: auth::TokenVerifier::new(&secret),
        origins: OriginPolicy::new(&args.allowed_origins),
        registry,
    });
    let stop_accepting = CancellationToken::new();
    let accept = tokio::spawn(http::accept_loop(
        listener,
        http::router(app_state),
        limits.handshake_timeout,
        stop_accepting.clone(),
    ));

    shutdown.await;
    let open = metrics.connections.get();
    tracing::info!(open, window = ?limits.drain_window, "draining");
    health.draining.store(true, Ordering::Release);
    state.drain.cancel();
    // Clients are told to leave within 70% of the window; give their closes until 90%.
    let deadline = tokio::time::Instant::now() + limits.drain_window.mul_f64(0.9);
    while metrics.connections.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(left = metrics.connections.get(), "drained");
    stop_accepting.cancel();
    background.cancel();
    let _ = accept.await;
    Ok(())
}
