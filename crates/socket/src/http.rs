//! The HTTP face of the server: the WebSocket handshake (every check before the upgrade),
//! the probes and `/metrics`, and the accept loop that bounds how long a client may take to
//! send its request headers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenVerifier;
use crate::connection::{self, ServerState};
use crate::metrics::ReasonLabel;
use crate::protocol::MessageId;

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct AppState {
    pub server: Arc<ServerState>,
    pub verifier: TokenVerifier,
    pub origins: OriginPolicy,
    pub registry: Registry,
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
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(origin) => {
                self.any
                    || self
                        .allowed
                        .iter()
                        .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
            }
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws", get(ws_handshake))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct WsParams {
    token: Option<String>,
    since: Option<String>,
}

fn refuse(state: &AppState, status: StatusCode, reason: &'static str, message: String) -> Response {
    state
        .server
        .metrics
        .handshake_rejections
        .get_or_create(&ReasonLabel { reason })
        .inc();
    let body = serde_json::json!({ "error": reason, "message": message });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn ws_handshake(
    State(state): State<Arc<AppState>>,
    Query(params): Query<WsParams>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !state.origins.allows(origin) {
        return refuse(
            &state,
            StatusCode::FORBIDDEN,
            "origin",
            format!("origin {origin:?} is not allowed to connect"),
        );
    }
    let identity = match state
        .verifier
        .verify(params.token.as_deref().unwrap_or_default())
    {
        Ok(identity) => identity,
        Err(e) => return refuse(&state, StatusCode::UNAUTHORIZED, e.reason(), e.to_string()),
    };
    let since = match params.since.as_deref().map(str::parse::<MessageId>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(())) => {
            return refuse(
                &state,
                StatusCode::BAD_REQUEST,
                "bad_since",
                "since must be a message id like 1764300000000-0".into(),
            );
        }
    };
    if let Some(why) = state.server.health.not_ready_reason() {
        return refuse(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("this server is not taking clients ({why}); try another"),
        );
    }
    let limits = &state.server.limits;
    let server = state.server.clone();
    upgrade
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        // tungstenite allocates its read buffer up front (128 KiB by default); client frames
        // are small, and idle connections are most connections.
        .read_buffer_size(1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            connection::serve(server, identity, since, sink, stream)
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
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
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
        assert!(policy.allows(Some("https://school.example")));
        assert!(!policy.allows(Some("https://evil.example")));
        assert!(OriginPolicy::new(&["*".into()]).allows(Some("https://any.example")));
        assert!(!OriginPolicy::new(&[]).allows(Some("https://school.example")));
    }
}
