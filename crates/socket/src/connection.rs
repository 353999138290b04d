//! One client connection: join the class, recover what it missed, then a single `select!`
//! loop that writes what the hub queues for it, reads what it sends, pings it, and closes it
//! with a documented code when it must.
//!
//! Generic over the WebSocket's `Sink` and `Stream` halves, so the loop does not care whether
//! it talks to axum's socket or to channels.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::{Identity, Role};
use crate::bus::{Health, PodMessage, member_value};
use crate::config::Limits;
use crate::hub::{CloseSignal, ConnId, Hub, Outbound};
use crate::metrics::{Metrics, ReasonLabel, TypeLabel};
use crate::protocol::{
    ClientFrame, CloseReason, FrameError, MessageId, ServerFrame, VERSION, comment_frame_tail,
    error_frame, now_ms,
};
use crate::ratelimit::TokenBucket;
use crate::store::Store;

/// Frames written per flush at most, so one busy client cannot starve its own reads.
const MAX_BATCH: usize = 512;

/// Everything a connection needs from its server.
#[derive(Debug)]
pub struct ServerState {
    pub pod: String,
    pub hub: Arc<Hub>,
    pub store: Store,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Cancelled when the server starts draining.
    pub drain: CancellationToken,
    pub next_conn: AtomicU64,
    /// Entries in Redis to remove that could not be removed when their connection closed
    /// (Redis was away); the liveness loop retries them.
    pub pending_releases: std::sync::Mutex<Vec<(String, String, String)>>,
}

/// Runs one connection to its end.
pub async fn serve<S, R>(
    state: Arc<ServerState>,
    identity: Identity,
    since: Option<MessageId>,
    sink: S,
    stream: R,
) where
    S: Sink<Message, Error = axum::Error> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("conn", conn, user = %identity.user, class = %identity.class);
    let mut connection = Connection {
        conn,
        member: member_value(&state.pod, conn),
        bucket: TokenBucket::new(
            state.limits.rate,
            state.limits.burst,
            std::time::Instant::now(),
        ),
        dropped_in_row: 0,
        last_rate_error: None,
        identity,
        state,
        sink,
        stream,
    };
    connection.run(since).instrument(span).await;
}

struct Connection<S, R> {
    state: Arc<ServerState>,
    identity: Identity,
    conn: ConnId,
    member: String,
    sink: S,
    stream: R,
    bucket: TokenBucket,
    dropped_in_row: u32,
    last_rate_error: Option<Instant>,
}

/// How the loop ended.
enum End {
    /// The server closes with this reason.
    Close(CloseReason),
    /// The client went away or the socket failed: nothing more to send.
    Gone,
}

impl<S, R> Connection<S, R>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    async fn run(&mut self, since: Option<MessageId>) {
        let (tx, rx) = mpsc::channel(self.state.limits.send_queue);
        let close = Arc::new(CloseSignal::default());
        let joined = self.state.hub.join(
            &self.identity.class,
            &self.identity.user,
            self.conn,
            tx,
            close.clone(),
        );
        let _leave = LeaveGuard {
            state: self.state.clone(),
            identity: self.identity.clone(),
            conn: self.conn,
            member: self.member.clone(),
        };
        let end = match self.start(joined.subscribed, since).await {
            Ok(skip_until) => self.main_loop(rx, &close, skip_until).await,
            Err(end) => end,
        };
        if let End::Close(reason) = end {
            self.close(reason).await;
        }
    }

    /// Waits for the class's subscription, records the session, sends `hello` and what the
    /// client missed. Returns the newest id already sent.
    async fn start(
        &mut self,
        mut subscribed: watch::Receiver<bool>,
        since: Option<MessageId>,
    ) -> Result<Option<MessageId>, End> {
        let ready = tokio::time::timeout(Duration::from_secs(5), subscribed.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok());
        if !ready {
            tracing::warn!("class subscription not confirmed in time");
            return Err(End::Close(CloseReason::Unavailable));
        }
        let Identity { class, user, .. } = &self.identity;
        let kick = serde_json::to_string(&PodMessage::Kick {
            class: class.clone(),
            user: user.clone(),
        })
        .unwrap_or_default();
        if let Err(e) = self
            .state
            .store
            .claim(class, user, &self.member, &self.state.pod, &kick)
            .await
        {
            self.state.metrics.redis_error(e.op);
            return Err(End::Close(CloseReason::Unavailable));
        }
        let (recovered, frames, skip_until) = match since {
            None => (true, Vec::new(), None),
            Some(since) => match self.state.store.history_since(class, since).await {
                Ok(history) => {
                    let newest = history.frames.last().map(|(id, _)| *id).unwrap_or(since);
                    let outcome = if history.complete {
                        "complete"
                    } else {
                        "trimmed"
                    };
                    self.state
                        .metrics
                        .recoveries
                        .get_or_create(&ReasonLabel { reason: outcome })
                        .inc();
                    (history.complete, history.frames, Some(newest))
                }
                Err(e) => {
                    self.state.metrics.redis_error(e.op);
                    return Err(End::Close(CloseReason::Unavailable));
                }
            },
        };
        let hello = ServerFrame::Hello {
            v: VERSION,
            server: &self.state.pod,
            class,
            user,
            role: self.identity.role.as_str(),
            recovered,
        };
        let sent = async {
            self.sink.feed(Message::Text(hello.to_text())).await?;
            for (_, frame) in frames {
                self.sink
                    .feed(Message::Text(Utf8Bytes::from(frame)))
                    .await?;
            }
            self.sink.flush().await
        };
        match sent.await {
            Ok(()) => Ok(skip_until),
            Err(_) => Err(End::Gone),
        }
    }

    async fn main_loop(
        &mut self,
        mut rx: mpsc::Receiver<Outbound>,
        close: &CloseSignal,
        skip_until: Option<MessageId>,
    ) -> End {
        let limits = self.state.limits.clone();
        let drain = self.state.drain.clone();
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval_at(
            Instant::now() + limits.idle_timeout / 3,
            limits.idle_timeout / 3,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expiry = tokio::time::sleep(until_unix(self.identity.exp));
        tokio::pin!(expiry);
        // Armed when draining starts: each client is told to reconnect at its own moment in
        // the drain window, so the others' servers see a trickle, not a storm.
        let reconnect_at = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
        tokio::pin!(reconnect_at);
        let mut draining = false;
        // Created once, not per iteration: registering a waiter on the server-wide drain token
        // takes its lock, and this loop turns once per frame on every connection.
        let drain_started = drain.cancelled();
        tokio::pin!(drain_started);
        let close_raised = close.raised();
        tokio::pin!(close_raised);

        loop {
            tokio::select! {
                biased;
                reason = &mut close_raised => return End::Close(reason),
                () = &mut expiry => return End::Close(CloseReason::TokenExpired),
                () = &mut drain_started, if !draining => {
                    draining = true;
                    let window = limits.drain_window.mul_f64(0.7);
                    let at = Duration::from_millis(fastrand::u64(0..=u64::try_from(window.as_millis()).unwrap_or(0)));
                    reconnect_at.as_mut().reset(Instant::now() + at);
                }
                () = &mut reconnect_at, if draining => {
                    let after_ms = fastrand::u64(0..=1000);
                    let frame = ServerFrame::Reconnect { after_ms }.to_text();
                    if self.sink.send(Message::Text(frame)).await.is_err() {
                        return End::Gone;
                    }
                    return End::Close(CloseReason::Draining);
                }
                outbound = rx.recv() => {
                    let Some(outbound) = outbound else { return End::Close(CloseReason::Internal) };
                    // A client that stopped reading blocks this write once its TCP buffers are
                    // full; the hub's close signal must still end it. Its socket cannot take a
                    // close frame then, so the connection is dropped.
                    tokio::select! {
                        written = self.write_batch(outbound, &mut rx, skip_until) => {
                            if written.is_err() {
                                return End::Gone;
                            }
                        }
                        reason = &mut close_raised => {
                            self.state.metrics.close(reason.as_str());
                            return End::Gone;
                        }
                    }
                }
                incoming = self.stream.next() => {
                    match incoming {
                        None => return End::Gone,
                        Some(Err(e)) => return if is_too_large(e) { End::Close(CloseReason::FrameTooLarge) } else { End::Gone },
                        Some(Ok(message)) => {
                            last_heard = Instant::now();
                            match message {
                                Message::Text(text) => {
                                    if let Some(end) = self.on_text(&text).await {
                                        return end;
                                    }
                                }
                                Message::Binary(_) => {
                                    if self.reply(error_frame(&FrameError::BinaryUnsupported)).await.is_err() {
                                        return End::Gone;
                                    }
                                }
                                Message::Close(_) => return End::Gone,
                                Message::Ping(_) | Message::Pong(_) => {}
                            }
                        }
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > limits.idle_timeout {
                        return End::Close(CloseReason::Idle);
                    }
                    if self.sink.send(Message::Ping(Default::default())).await.is_err() {
                        return End::Gone;
                    }
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued, then flushes once: under load, frames
    /// coalesce into few writes instead of one system call each.
    async fn write_batch(
        &mut self,
        first: Outbound,
        rx: &mut mpsc::Receiver<Outbound>,
        skip_until: Option<MessageId>,
    ) -> Result<(), axum::Error> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(outbound) = next.take() {
            let text = match outbound {
                Outbound::Comment(id, _) if skip_until.is_some_and(|skip| id <= skip) => None,
                Outbound::Comment(_, text) | Outbound::Frame(text) => Some(text),
            };
            if let Some(text) = text {
                self.sink.feed(Message::Text(text)).await?;
                written += 1;
            }
            if written < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        self.sink.flush().await
    }

    async fn reply(&mut self, frame: Utf8Bytes) -> Result<(), axum::Error> {
        self.sink.send(Message::Text(frame)).await
    }

    /// Handles one text frame; `Some` ends the connection.
    async fn on_text(&mut self, text: &str) -> Option<End> {
        let metrics = self.state.metrics.clone();
        if !self.bucket.try_take(std::time::Instant::now()) {
            metrics.dropped("rate_limited");
            self.dropped_in_row += 1;
            if self.dropped_in_row > self.state.limits.burst.saturating_mul(10) {
                return Some(End::Close(CloseReason::Flood));
            }
            let due = self
                .last_rate_error
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
            if due {
                self.last_rate_error = Some(Instant::now());
                return self
                    .reply(error_frame(&FrameError::RateLimited))
                    .await
                    .err()
                    .map(|_| End::Gone);
            }
            return None;
        }
        self.dropped_in_row = 0;
        let outcome = match ClientFrame::parse(text) {
            Ok(frame) => {
                metrics
                    .frames_received
                    .get_or_create(&TypeLabel {
                        r#type: frame.kind(),
                    })
                    .inc();
                self.act(frame).await
            }
            Err(e) => {
                metrics
                    .frames_received
                    .get_or_create(&TypeLabel { r#type: "invalid" })
                    .inc();
                Err(e)
            }
        };
        let reply = match outcome {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(e) => {
                metrics.dropped(e.code());
                error_frame(&e)
            }
        };
        self.reply(reply).await.err().map(|_| End::Gone)
    }

    /// Carries out a valid client frame; returns a frame to send back to this client, if any.
    async fn act(&mut self, frame: ClientFrame) -> Result<Option<Utf8Bytes>, FrameError> {
        let state = self.state.clone();
        let Identity {
            class,
            user,
            name,
            role,
            ..
        } = &self.identity;
        if matches!(
            frame,
            ClientFrame::Comment { .. } | ClientFrame::React { .. } | ClientFrame::Dm { .. }
        ) && !state.health.redis_up()
        {
            return Err(FrameError::Unavailable);
        }
        let unavailable = |e: crate::store::StoreError| {
            state.metrics.redis_error(e.op);
            FrameError::Unavailable
        };
        match frame {
            ClientFrame::Ping => Ok(Some(ServerFrame::Pong.to_text())),
            ClientFrame::Comment { text, reference } => {
                let tail = comment_frame_tail(
                    user,
                    name.as_deref(),
                    &text,
                    now_ms(),
                    reference.as_deref(),
                );
                state
                    .store
                    .publish_comment(class, &tail)
                    .await
                    .map_err(unavailable)?;
                state
                    .metrics
                    .messages_published
                    .get_or_create(&TypeLabel { r#type: "comment" })
                    .inc();
                Ok(None)
            }
            ClientFrame::React { emoji } => {
                let frame = ServerFrame::React {
                    from: user,
                    emoji: &emoji,
                    ts: now_ms(),
                };
                state
                    .store
                    .publish_ephemeral(class, &frame.to_text())
                    .await
                    .map_err(unavailable)?;
                state
                    .metrics
                    .messages_published
                    .get_or_create(&TypeLabel { r#type: "react" })
                    .inc();
                Ok(None)
            }
            ClientFrame::Dm { to, text } => {
                if *role != Role::Teacher {
                    return Err(FrameError::Forbidden);
                }
                let frame = ServerFrame::Dm {
                    from: user,
                    name: name.as_deref(),
                    text: &text,
                    ts: now_ms(),
                }
                .to_text();
                let message = serde_json::to_string(&PodMessage::Dm {
                    at: "@AT@".into(),
                    class: class.clone(),
                    frame: frame.to_string(),
                })
                .unwrap_or_default();
                let sent = state
                    .store
                    .send_direct(class, &to, &message)
                    .await
                    .map_err(unavailable)?;
                if !sent {
                    return Err(FrameError::RecipientOffline);
                }
                state
                    .metrics
                    .messages_published
                    .get_or_create(&TypeLabel { r#type: "dm" })
                    .inc();
                Ok(None)
            }
        }
    }

    /// Sends the close frame, then waits briefly for the client's own close, so that unread
    /// client data does not turn our close into a reset that loses the close frame.
    async fn close(&mut self, reason: CloseReason) {
        self.state.metrics.close(reason.as_str());
        tracing::debug!(reason = reason.as_str(), "closing");
        let frame = CloseFrame {
            code: reason.code(),
            reason: Utf8Bytes::from_static(reason.as_str()),
        };
        if self.sink.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(message)) = self.stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Leaves the hub and releases the Redis entry when the connection ends, however it ends.
struct LeaveGuard {
    state: Arc<ServerState>,
    identity: Identity,
    conn: ConnId,
    member: String,
}

impl Drop for LeaveGuard {
    fn drop(&mut self) {
        let state = self.state.clone();
        state.hub.leave(&self.identity.class, self.conn);
        let (class, user, member) = (
            self.identity.class.clone(),
            self.identity.user.clone(),
            self.member.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = state.store.release(&class, &user, &member).await {
                state.metrics.redis_error(e.op);
                let mut pending = state
                    .pending_releases
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                pending.push((class, user, member));
            }
        });
    }
}

/// An oversized frame arrives as a tungstenite capacity error inside axum's error.
fn is_too_large(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// Time left until a Unix timestamp (seconds), zero if past.
fn until_unix(exp: u64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(exp).saturating_sub(now)
}
