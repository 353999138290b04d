//! liveclass-socket: the WebSocket server that holds students' connections and routes every
//! message through Redis, so that any server can reach any student.
//!
//! The pieces, each in its own module: [`config`] the flags, [`auth`] tokens and their secrets,
//! [`admission`] and [`address`] the checks before an upgrade, [`http`] the two listeners,
//! [`api`] the school's server API on the admin one,
//! [`connection`] one client's loop, [`hub`] the local rooms and fan-out, [`bus`] the pub/sub
//! link, [`store`] every other Redis call, [`redis_link`] how Redis is reached, [`heartbeat`],
//! [`presence`] and [`reactions`] the background loops, [`state`] what they share. The wire
//! format itself is `liveclass-protocol`.

pub mod address;
pub mod admission;
pub mod api;
pub mod auth;
pub mod bus;
pub mod config;
pub mod connection;
pub mod handover;
pub mod heartbeat;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod ratelimit;
pub mod reactions;
pub mod redis_link;
pub mod state;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use liveclass_protocol::CloseReason;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::AddressLimiter;
use crate::api::ApiKeys;
use crate::auth::{SecretSource, TokenPolicy, TokenVerifier};
use crate::bus::Bus;
use crate::config::{Args, ConfigError};
use crate::http::{AppState, OriginPolicy};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::redis_link::{LinkError, RedisTarget, Sentinels};
use crate::state::{Health, ServerState};
use crate::store::Store;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Redis(#[from] LinkError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// How often the token secret files are read for changes.
const SECRET_POLL: Duration = Duration::from_secs(2);

/// Runs the server until `shutdown` resolves, then drains: readiness turns 503 at once,
/// clients are told to reconnect at moments spread over the drain window, those still there
/// near its end are closed with a close frame, the server removes its own entries from Redis,
/// and this returns before the window ends.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    args.validate()?;
    let secrets = SecretSource::from_args(&args);
    let verifier = Arc::new(TokenVerifier::new(
        secrets.load()?,
        TokenPolicy::from_args(&args),
    ));
    let api_secrets = SecretSource::api_keys(&args);
    let api_keys = Arc::new(ApiKeys::new(
        api_secrets.as_ref().map(SecretSource::load).transpose()?,
    ));
    let pod = args.pod_id()?;
    let limits = args.limits();
    let sentinels = (!args.redis_sentinels.is_empty()).then(|| Sentinels {
        addrs: args.redis_sentinels.clone(),
        master: args.redis_master_name.clone(),
    });
    let target = Arc::new(RedisTarget::new(
        &args.redis_url,
        args.redis_password_file.clone(),
        sentinels,
    )?);

    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let store = Store::new(target, args.redis_timeout, args.history)?;
    let (bus_tx, bus_rx) = tokio::sync::mpsc::unbounded_channel();
    let hub = Arc::new(Hub::new(bus_tx, metrics.clone(), args.max_class_metrics));
    let state = Arc::new(ServerState {
        pod: pod.clone(),
        hub,
        store: store.clone(),
        limits: limits.clone(),
        metrics: metrics.clone(),
        health: Arc::new(Health::default()),
        drain: CancellationToken::new(),
        tasks: TaskTracker::new(),
        next_conn: AtomicU64::new(1),
        seats: AtomicUsize::new(0),
        pending_releases: std::sync::Mutex::new(Vec::new()),
        handovers: handover::Handovers::default(),
    });

    let background = CancellationToken::new();
    let bus = Bus {
        state: state.clone(),
        ping_every: args.pubsub_ping,
        timeout: args.redis_timeout,
    };
    tokio::spawn(bus.run(bus_rx, background.clone()));
    tokio::spawn(heartbeat::heartbeat_loop(
        state.clone(),
        args.heartbeat_ttl,
        background.clone(),
    ));
    tokio::spawn(presence::presence_loop(state.clone(), background.clone()));
    tokio::spawn(reactions::reaction_loop(
        state.clone(),
        limits.reaction_tick,
        background.clone(),
    ));
    tokio::spawn(auth::watch_secrets(
        verifier.clone(),
        secrets,
        SECRET_POLL,
        background.clone(),
    ));
    if let Some(source) = api_secrets {
        tokio::spawn(auth::watch_secrets(
            api_keys.clone(),
            source,
            SECRET_POLL,
            background.clone(),
        ));
    }

    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen { addr, source })
    };
    let listener = bind(args.listen).await?;
    let admin_listener = bind(args.admin_listen).await?;
    tracing::info!(addr = %args.listen, admin = %args.admin_listen, %pod, "listening");
    let app_state = Arc::new(AppState {
        server: state.clone(),
        verifier,
        origins: OriginPolicy::new(&args.allowed_origins),
        trusted_proxies: args.trusted_proxies.clone(),
        addresses: AddressLimiter::new(limits.address_handshakes),
        registry,
        api_keys,
        class: args.class.clone(),
        keep_out: args.max_token_lifetime,
    });
    let stop_accepting = CancellationToken::new();
    let accept = tokio::spawn(http::accept_loop(
        listener,
        http::student_router(app_state.clone()),
        limits.handshake_timeout,
        stop_accepting.clone(),
    ));
    let admin = tokio::spawn(http::accept_loop(
        admin_listener,
        http::admin_router(app_state),
        limits.handshake_timeout,
        stop_accepting.clone(),
    ));

    shutdown.await;
    drain(&state, limits.drain_window).await;
    stop_accepting.cancel();
    background.cancel();
    let _ = accept.await;
    let _ = admin.await;
    Ok(())
}

/// The drain: not ready at once; clients told to leave within 70% of the window; at 85% the
/// rest closed with 1001; their clean-up awaited until 95%; then this server's own entries
/// removed from Redis.
async fn drain(state: &Arc<ServerState>, window: Duration) {
    let started = Instant::now();
    let open = state.metrics.connections.get();
    tracing::info!(open, ?window, "draining");
    state.health.draining.store(true, Ordering::Release);
    state.drain.cancel();
    let close_at = started + window.mul_f64(0.85);
    while state.metrics.connections.get() > 0 && Instant::now() < close_at {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = state.metrics.connections.get();
    if left > 0 {
        tracing::info!(left, "closing the connections still open");
        state.hub.close_all(CloseReason::Draining);
    }
    state.tasks.close();
    let _ = tokio::time::timeout_at(started + window.mul_f64(0.95), state.tasks.wait()).await;
    match tokio::time::timeout(Duration::from_secs(1), state.store.leave(&state.pod)).await {
        Ok(Ok(removed)) => tracing::info!(
            removed,
            "drained; this server's entries are removed from redis"
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "drained, but cannot remove this server's entries; survivors will")
        }
        Err(_) => {
            tracing::warn!("drained, but redis did not answer the clean-up in time; survivors will")
        }
    }
}
