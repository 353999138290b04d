//! The HTTP faces of the server. The students' listener serves the WebSocket handshake (every
//! check before the upgrade) and the probes, nothing else; the admin listener serves the probes,
//! `/metrics` and the school's server API, and stays off the balancer. One accept loop serves
//! both, bounding how long a client may take to send its request headers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use liveclass_protocol::{HandshakeParams, Refusal};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::address::{IpNet, client_address};
use crate::admission::AddressLimiter;
use crate::api::ApiKeys;
use crate::auth::TokenVerifier;
use crate::connection::{self, Resume};
use crate::metrics::ReasonLabel;
use crate::state::ServerState;
use crate::store::Admission;

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct AppState {
    pub server: Arc<ServerState>,
    pub verifier: Arc<TokenVerifier>,
    pub origins: OriginPolicy,
    pub trusted_proxies: Vec<IpNet>,
    pub addresses: AddressLimiter,
    pub registry: Registry,
    /// The server API's keys (none: the API is off).
    pub api_keys: Arc<ApiKeys>,
    /// The one class this server serves, if it serves one.
    pub class: Option<String>,
    /// How long the API's `disconnect` keeps a user out by default: the longest a token lives.
    pub keep_out: Duration,
}

/// Which browser Origins may open a socket.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<String>,
}

impl OriginPolicy {
    pub fn new(origins: &[String]) -> Self {
        let allowed: Vec<String> = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        Self {
            any: allowed.iter().any(|o| o == "*"),
            allowed,
        }
    }

    /// Requests without an Origin come from non-browser clients, which CORS-style checks do
    /// not protect against anyway; browsers always send one.
    pub fn allows(&self, origin: Option<&[u8]>) -> bool {
        match origin {
            None => true,
            Some(origin) => {
                // A browser's Origin is ASCII; anything else is not on any list.
                let Ok(origin) = std::str::from_utf8(origin) else {
                    return false;
                };
                self.any
                    || self
                        .allowed
                        .iter()
                        .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
            }
        }
    }
}

/// The students' listener: `/ws` and the probes.
pub fn student_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws", get(ws_handshake))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// The admin listener: the probes, `/metrics` and the school's server API.
pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::api::router())
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"error":"not_found","message":"no such endpoint"}"#,
    )
        .into_response()
}

/// The TCP peer of a request, put there by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

fn refuse(state: &AppState, refusal: Refusal) -> Response {
    state
        .server
        .metrics
        .handshake_rejections
        .get_or_create(&ReasonLabel {
            reason: refusal.reason(),
        })
        .inc();
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        refusal.body(),
    )
        .into_response();
    if refusal.retryable() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

async fn ws_handshake(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let params = match HandshakeParams::parse(query.as_deref()) {
        Ok(params) => params,
        Err(refusal) => return refuse(&state, refusal),
    };
    // Checked after the query (so a client's bad `since` is named first) but before any cost.
    let Ok(upgrade) = upgrade else {
        return refuse(&state, Refusal::NotWebSocket);
    };
    let origin = headers.get(header::ORIGIN).map(|o| o.as_bytes());
    if !state.origins.allows(origin) {
        return refuse(&state, Refusal::Origin);
    }
    let address: IpAddr = client_address(peer.ip(), &headers, &state.trusted_proxies);
    if !state.addresses.allow(address, std::time::Instant::now()) {
        return refuse(&state, Refusal::TooManyFromAddress);
    }
    let identity = match state
        .verifier
        .verify(params.token.as_deref().unwrap_or_default())
    {
        Ok(identity) => identity,
        Err(refusal) => return refuse(&state, refusal),
    };
    let server = state.server.clone();
    if let Some(why) = server.health.not_ready_reason() {
        tracing::debug!(why, "refusing a handshake: not ready");
        return refuse(&state, Refusal::NotReady);
    }
    let Some(seat) = server.take_seat() else {
        return refuse(&state, Refusal::Full);
    };
    let limits = &server.limits;
    match server
        .store
        .admit(
            &identity.class,
            &identity.user,
            limits.handshake_window,
            limits.user_handshakes,
        )
        .await
    {
        Ok(Admission::Admitted) => {}
        Ok(Admission::Kicked) => return refuse(&state, Refusal::Kicked),
        Ok(Admission::TooMany) => return refuse(&state, Refusal::TooManyForUser),
        Err(e) => {
            server.metrics.redis_error(e.op);
            return refuse(&state, Refusal::NotReady);
        }
    }
    let resume = Resume {
        since: params.since,
        epoch: params.epoch,
    };
    let tasks = server.tasks.clone();
    upgrade
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        // tungstenite allocates its read buffer up front (128 KiB by default); client frames
        // are small (a larger one grows the buffer as it is read), and idle connections are
        // most connections.
        .read_buffer_size(256)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            // A task of its own, tracked so the drain can wait for every connection's end.
            // Awaited in axum's upgrade task instead, it would keep that task's own state (the
            // upgrade's settings and this closure) for the connection's whole life.
            tasks.spawn(connection::serve(
                server,
                identity,
                crate::address::canonical(peer.ip()),
                resume,
                seat,
                sink,
                stream,
            ));
            std::future::ready(())
        })
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.server.health.not_ready_reason() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Accepts connections until `stop`, serving each with HTTP/1.1 and upgrades. A client whose
/// request headers have not arrived within `handshake_timeout` is disconnected.
pub async fn accept_loop(
    listener: TcpListener,
    app: Router,
    handshake_timeout: Duration,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            app.clone().oneshot(request)
        });
        let service = TowerToHyperService::new(service);
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(handshake_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_policy() {
        let policy = OriginPolicy::new(&["https://school.example/".into()]);
        assert!(policy.allows(None));
        assert!(policy.allows(Some(b"https://school.example")));
        assert!(!policy.allows(Some(b"https://evil.example")));
        assert!(!policy.allows(Some(b"https://school.example\xff")));
        assert!(OriginPolicy::new(&["*".into()]).allows(Some(b"https://any.example")));
        assert!(!OriginPolicy::new(&[]).allows(Some(b"https://school.example")));
    }
}
