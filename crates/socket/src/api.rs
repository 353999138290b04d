//! The school's server API, on the admin listener (never the students' port): its backend
//! posts into a class, removes a user from it, asks who is there and reads what was said.
//! Centrifugo's server API is the model: `POST /api/<method>` with a JSON body, a key in the
//! `Authorization` header, and a JSON answer or a JSON error with a stable `error` code.

use std::sync::{Arc, RwLock};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use liveclass_protocol::client::{MAX_REF_CHARS, MAX_TEXT_CHARS};
use liveclass_protocol::server::{SCHOOL_SENDER, comment_frame_tail};
use liveclass_protocol::{MessageId, now_ms, valid_class_id, valid_user_id};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Rotate, Secrets};
use crate::bus::PodMessage;
use crate::config::Rate;
use crate::http::AppState;
use crate::metrics::ApiLabel;
use crate::store::{Published, StoreError};

/// Largest request body the API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most users one presence answer lists, and most comments one history answer holds, unless
/// the request asks for fewer.
pub const MAX_LIST: usize = 10_000;
const DEFAULT_HISTORY: usize = 100;

/// The keys a request may carry: the current one and, during a rotation, the previous.
/// `None` when the server was started without `--api-key-file`: the API is off.
#[derive(Default)]
pub struct ApiKeys {
    keys: RwLock<Option<Secrets>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").finish_non_exhaustive()
    }
}

impl ApiKeys {
    pub fn new(keys: Option<Secrets>) -> Self {
        Self {
            keys: RwLock::new(keys),
        }
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(keys) = keys.as_ref() else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "api_disabled",
                "the server API is off: start the server with --api-key-file",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(given) = given else {
            return Err(ApiError::unauthorized(
                "send the API key as `Authorization: Bearer <key>`",
            ));
        };
        let matches = |key: &[u8]| constant_time_eq(given.as_bytes(), key);
        if matches(&keys.current) || keys.previous.as_deref().is_some_and(matches) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("the API key is not valid"))
        }
    }
}

impl Rotate for ApiKeys {
    fn rotate(&self, secrets: Secrets) -> bool {
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keys.as_ref() == Some(&secrets) {
            return false;
        }
        *keys = Some(secrets);
        true
    }
}

/// Compares without stopping at the first difference, so the time taken says nothing about
/// how much of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The API's routes, merged into the admin router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/disconnect", post(disconnect))
        .route("/api/presence", post(presence))
        .route("/api/history", post(history))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// A refused API call: its status, a stable code and what to do about it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("redis did not answer; retry (with the same `ref` for publish): {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Runs one API call: the key, the body, the class, then `call`; counts the outcome.
async fn handle<Req, Resp, F>(
    endpoint: &'static str,
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Json<Req>, JsonRejection>,
    call: impl FnOnce(Req) -> F,
) -> Response
where
    Req: ClassRequest,
    Resp: Serialize,
    F: Future<Output = Result<Resp, ApiError>>,
{
    let outcome = async {
        app.api_keys.check(headers)?;
        let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
        check_class(app, request.class())?;
        call(request).await
    }
    .await;
    let code = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    app.server
        .metrics
        .api_requests
        .get_or_create(&ApiLabel { endpoint, code })
        .inc();
    match outcome {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

trait ClassRequest {
    fn class(&self) -> &str;
}

fn check_class(app: &AppState, class: &str) -> Result<(), ApiError> {
    if !valid_class_id(class) {
        return Err(ApiError::bad_request(format!(
            "`class` {class:?} is not a class id (`<namespace>/<name>`, letters, digits and _.:@-)"
        )));
    }
    if let Some(only) = &app.class
        && only != class
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_class",
            format!("this server serves the class {only:?} only"),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    class: String,
    text: String,
    /// Shown as the sender's name; the sender is always `#school`.
    #[serde(default)]
    name: Option<String>,
    /// Makes a retry safe: a `ref` already stored is not stored again.
    #[serde(default, rename = "ref")]
    reference: Option<String>,
}

impl ClassRequest for PublishRequest {
    fn class(&self) -> &str {
        &self.class
    }
}

#[derive(Debug, Serialize)]
struct PublishAnswer {
    id: MessageId,
    duplicate: bool,
}

async fn publish(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> Response {
    let app = &app;
    handle("publish", app, &headers, body, |req| async move {
        if req.text.trim().is_empty() || req.text.chars().count() > MAX_TEXT_CHARS {
            return Err(ApiError::bad_request(format!(
                "`text` must have 1 to {MAX_TEXT_CHARS} characters"
            )));
        }
        if req
            .reference
            .as_deref()
            .is_some_and(|r| r.is_empty() || r.chars().count() > MAX_REF_CHARS)
        {
            return Err(ApiError::bad_request(format!(
                "`ref` must have 1 to {MAX_REF_CHARS} characters"
            )));
        }
        let tail = comment_frame_tail(
            SCHOOL_SENDER,
            req.name.as_deref(),
            &req.text,
            now_ms(),
            req.reference.as_deref(),
        );
        // The school is not a student: no per-user budget, no slow mode.
        let mut limits = app.server.limits.clone();
        limits.user_publish = Rate {
            per_second: 0.0,
            burst: 1,
        };
        let published = app
            .server
            .store
            .publish_comment(
                &req.class,
                SCHOOL_SENDER,
                req.reference.as_deref(),
                &tail,
                &limits,
                false,
            )
            .await?;
        match published {
            Published::Stored(id) => Ok(PublishAnswer {
                id,
                duplicate: false,
            }),
            Published::Duplicate(id) => Ok(PublishAnswer {
                id,
                duplicate: true,
            }),
            Published::RateLimited(_) | Published::SlowMode(_) => {
                Err(ApiError::bad_request("unexpected limit on an API publish"))
            }
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    class: String,
    user: String,
    /// How long the user's handshakes to this class are refused (`kicked`), in seconds.
    /// Default: --max-token-lifetime, so every token they hold now has expired by then. 0:
    /// closed, but free to come back.
    #[serde(default)]
    keep_out_s: Option<u64>,
}

impl ClassRequest for DisconnectRequest {
    fn class(&self) -> &str {
        &self.class
    }
}

#[derive(Debug, Serialize)]
struct DisconnectAnswer {
    /// Servers that held a connection of the user and were told to close it.
    servers: u64,
    keep_out_s: u64,
}

async fn disconnect(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<DisconnectRequest>, JsonRejection>,
) -> Response {
    let app = &app;
    handle("disconnect", app, &headers, body, |req| async move {
        if !valid_user_id(&req.user) {
            return Err(ApiError::bad_request(format!(
                "`user` {:?} is not a user id (letters, digits and _.:@-, up to 128)",
                req.user
            )));
        }
        let keep_out_s = req.keep_out_s.unwrap_or(app.keep_out.as_secs());
        let message = serde_json::to_string(&PodMessage::Disconnect {
            class: req.class.clone(),
            user: req.user.clone(),
        })
        .unwrap_or_default();
        let servers = app
            .server
            .store
            .disconnect(
                &req.class,
                &req.user,
                keep_out_s.saturating_mul(1000),
                &message,
            )
            .await?;
        Ok(DisconnectAnswer {
            servers,
            keep_out_s,
        })
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceRequest {
    class: String,
    /// Most user ids to list (default and most: 10,000); `count` is always the whole class.
    #[serde(default)]
    limit: Option<usize>,
}

impl ClassRequest for PresenceRequest {
    fn class(&self) -> &str {
        &self.class
    }
}

#[derive(Debug, Serialize)]
struct PresenceAnswer {
    count: u64,
    users: Vec<String>,
}

async fn presence(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<PresenceRequest>, JsonRejection>,
) -> Response {
    let app = &app;
    handle("presence", app, &headers, body, |req| async move {
        let most = req.limit.unwrap_or(MAX_LIST).min(MAX_LIST);
        let (count, mut users) = app.server.store.presence_users(&req.class, most).await?;
        users.sort();
        Ok(PresenceAnswer { count, users })
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryRequest {
    class: String,
    /// Comments after this id; without it, the newest ones.
    #[serde(default)]
    since: Option<String>,
    /// Most comments (default 100, most 10,000).
    #[serde(default)]
    limit: Option<usize>,
}

impl ClassRequest for HistoryRequest {
    fn class(&self) -> &str {
        &self.class
    }
}

#[derive(Debug, Serialize)]
struct HistoryAnswer {
    epoch: String,
    last_id: MessageId,
    /// Comment frames exactly as students received them, oldest first.
    comments: Vec<Value>,
}

async fn history(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<HistoryRequest>, JsonRejection>,
) -> Response {
    let app = &app;
    handle("history", app, &headers, body, |req| async move {
        let since = match req.since.as_deref() {
            None => None,
            Some(since) => Some(since.parse::<MessageId>().map_err(|_| {
                ApiError::bad_request(format!(
                    "`since` {since:?} is not a message id (`<ms>-<seq>`)"
                ))
            })?),
        };
        let most = req.limit.unwrap_or(DEFAULT_HISTORY).clamp(1, MAX_LIST);
        let store = &app.server.store;
        let position = store.position(&req.class).await?;
        let comments = store
            .history(&req.class, since, most)
            .await?
            .into_iter()
            .filter_map(|(_, frame)| serde_json::from_str(&frame).ok())
            .collect();
        Ok(HistoryAnswer {
            epoch: position.epoch,
            last_id: position.last_id,
            comments,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn the_key_is_checked_against_current_and_previous() {
        let keys = ApiKeys::new(Some(Secrets {
            current: b"k".repeat(32),
            previous: Some(b"p".repeat(32)),
        }));
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            h
        };
        let k = String::from_utf8(b"k".repeat(32)).unwrap();
        let p = String::from_utf8(b"p".repeat(32)).unwrap();
        assert!(keys.check(&with(&format!("Bearer {k}"))).is_ok());
        assert!(keys.check(&with(&format!("Bearer {p}"))).is_ok());
        assert_eq!(
            keys.check(&with("Bearer nope")).unwrap_err().code,
            "unauthorized"
        );
        assert_eq!(
            keys.check(&HeaderMap::new()).unwrap_err().code,
            "unauthorized"
        );
        assert_eq!(
            ApiKeys::new(None)
                .check(&with(&format!("Bearer {k}")))
                .unwrap_err()
                .code,
            "api_disabled"
        );
    }
}
