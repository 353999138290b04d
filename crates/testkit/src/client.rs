//! A WebSocket client for tests: connect with a token, send frames, read them with a deadline.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::IpAddr;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a test client could not connect or read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("handshake refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection closed: {0:?}")]
    Closed(Option<(u16, String)>),
    #[error("not JSON: {0}")]
    NotJson(String),
}

/// What the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Frame(Value),
    Close(Option<(u16, String)>),
}

/// One client connection.
#[derive(Debug)]
pub struct TestClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// Everything a test may vary about a connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub token: String,
    pub since: Option<String>,
    pub epoch: Option<String>,
    pub origin: Option<String>,
    /// Source address to connect from (another loopback address, 127.0.0.2 and up, acts as
    /// another client machine).
    pub source: Option<IpAddr>,
}

impl ConnectOptions {
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            ..Self::default()
        }
    }
}

impl TestClient {
    /// Connects to `ws_url` (`ws://host:port/ws`) with `token` and an optional `since`.
    pub async fn connect(
        ws_url: &str,
        token: &str,
        since: Option<&str>,
    ) -> Result<Self, ClientError> {
        let mut options = ConnectOptions::token(token);
        options.since = since.map(str::to_owned);
        Self::connect_with(ws_url, &options).await
    }

    /// Like [`connect`](Self::connect), sending an `Origin` header.
    pub async fn connect_with_origin(
        ws_url: &str,
        token: &str,
        since: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Self, ClientError> {
        let mut options = ConnectOptions::token(token);
        options.since = since.map(str::to_owned);
        options.origin = origin.map(str::to_owned);
        Self::connect_with(ws_url, &options).await
    }

    /// Connects with every option a test may set.
    pub async fn connect_with(ws_url: &str, options: &ConnectOptions) -> Result<Self, ClientError> {
        let mut pairs = vec![("token", options.token.clone())];
        if let Some(since) = &options.since {
            pairs.push(("since", since.clone()));
        }
        if let Some(epoch) = &options.epoch {
            pairs.push(("epoch", epoch.clone()));
        }
        let query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        Self::connect_url_from(
            &format!("{ws_url}?{query}"),
            options.origin.as_deref(),
            options.source,
        )
        .await
    }

    /// Connects to a full URL as given (for malformed-query tests).
    pub async fn connect_url(url: &str, origin: Option<&str>) -> Result<Self, ClientError> {
        Self::connect_url_from(url, origin, None).await
    }

    async fn connect_url_from(
        url: &str,
        origin: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<Self, ClientError> {
        let mut request = url.into_client_request()?;
        if let Some(origin) = origin {
            let value = HeaderValue::from_str(origin)
                .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
            request.headers_mut().insert("origin", value);
        }
        let connected = match source {
            None => tokio_tungstenite::connect_async(request).await,
            Some(source) => {
                let uri = request.uri();
                let host = uri.host().unwrap_or("127.0.0.1").to_string();
                let port = uri.port_u16().unwrap_or(80);
                let target: std::net::SocketAddr = format!("{host}:{port}")
                    .parse()
                    .map_err(|e| std::io::Error::other(format!("{host}:{port}: {e}")))
                    .map_err(tungstenite::Error::Io)?;
                let socket = if target.is_ipv4() {
                    TcpSocket::new_v4()
                } else {
                    TcpSocket::new_v6()
                }
                .map_err(tungstenite::Error::Io)?;
                socket
                    .bind(std::net::SocketAddr::new(source, 0))
                    .map_err(tungstenite::Error::Io)?;
                let stream = socket
                    .connect(target)
                    .await
                    .map_err(tungstenite::Error::Io)?;
                tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await
            }
        };
        match connected {
            Ok((ws, _)) => Ok(Self { ws }),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(ClientError::Refused { status, body })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) -> Result<(), ClientError> {
        self.send(Message::text(value.to_string())).await
    }

    /// Sends any message.
    pub async fn send(&mut self, message: Message) -> Result<(), ClientError> {
        self.ws.send(message).await.map_err(Into::into)
    }

    /// The next text frame as JSON, or the close. Pings are answered by tungstenite on the way.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Received, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout(timeout))?;
            match next {
                None => return Ok(Received::Close(None)),
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => {
                    return Ok(Received::Close(None));
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(text))) => {
                    let value = serde_json::from_str(&text)
                        .map_err(|_| ClientError::NotJson(text.to_string()))?;
                    return Ok(Received::Frame(value));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Ok(Received::Close(frame.map(close_parts)));
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next frame whose `t` is `kind`, skipping others (presence updates, pongs, ...).
    pub async fn recv_type(&mut self, kind: &str, timeout: Duration) -> Result<Value, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await.map_err(|e| match e {
                ClientError::Timeout(_) => ClientError::Timeout(timeout),
                other => other,
            })? {
                Received::Frame(frame) if frame["t"] == kind => return Ok(frame),
                Received::Frame(_) => {}
                Received::Close(close) => return Err(ClientError::Closed(close)),
            }
        }
    }

    /// Waits for the server to close the connection; returns the close code and reason.
    pub async fn recv_close(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(u16, String)>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Ok(Received::Close(close)) => return Ok(close),
                Ok(Received::Frame(_)) => {}
                Err(ClientError::Ws(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The underlying stream, for tests that need to stop reading (slow-consumer tests).
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }
}

fn close_parts(frame: CloseFrame) -> (u16, String) {
    (u16::from(frame.code), frame.reason.to_string())
}

/// Percent-encodes a query value (tokens are URL-safe already; ids may hold `/`).
fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
