//! One client connection: join the class, recover what it missed, then a single `select!`
//! loop that writes what the hub queues for it, reads what it sends, pings it, and closes it
//! with a documented code when it must.
//!
//! Generic over the WebSocket's `Sink` and `Stream` halves, so the loop does not care whether
//! it talks to axum's socket or to channels (the unit tests below drive it with channels).
//! Every write has a deadline: a client that stops reading is closed as slow, never allowed to
//! hold its task (or its memory) forever.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::future::OptionFuture;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use liveclass_protocol::server::{Hello, comment_frame_tail};
use liveclass_protocol::{
    ClientFrame, CloseReason, FrameError, MessageId, Role, ServerFrame, VERSION, now_ms,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::auth::Identity;
use crate::bus::{PodMessage, member_value};
use crate::hub::{CloseSignal, ConnId, Outbound};
use crate::metrics::{ReasonLabel, TypeLabel};
use crate::outbox;
use crate::ratelimit::TokenBucket;
use crate::state::{PendingRelease, Seat, ServerState};
use crate::store::{Published, SinceFrom};

/// Frames written per flush at most, so one busy client cannot starve its own reads.
const MAX_BATCH: usize = 512;

/// How long a joining connection waits for its class's channel to be subscribed.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// Where a reconnecting client says it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    pub since: Option<MessageId>,
    pub epoch: Option<String>,
}

/// Runs one connection to its end. `seat` holds its place under the server's connection cap.
///
/// Not an `async fn`: one would keep its arguments beside the [`Connection`] built from them
/// for the connection's whole life, and every idle connection pays for that future's size.
pub fn serve<S, R>(
    state: Arc<ServerState>,
    identity: Identity,
    peer: IpAddr,
    resume: Resume,
    seat: Seat,
    sink: S,
    stream: R,
) -> impl Future<Output = ()>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("conn", conn, user = %identity.user, class = %identity.class);
    let rate = state.limits.connection_rate;
    let connection = Connection {
        conn,
        member: member_value(&state.pod, conn),
        bucket: TokenBucket::new(rate.per_second, rate.burst, std::time::Instant::now()),
        dropped_in_row: 0,
        last_rate_error: None,
        identity,
        peer,
        state,
        sink,
        stream,
        _seat: seat,
    };
    connection.run(resume).instrument(span)
}

struct Connection<S, R> {
    state: Arc<ServerState>,
    identity: Identity,
    /// The TCP peer: the gateway pod the student came through (a hand-over names it).
    peer: IpAddr,
    conn: ConnId,
    member: String,
    sink: S,
    stream: R,
    bucket: TokenBucket,
    dropped_in_row: u32,
    last_rate_error: Option<Instant>,
    _seat: Seat,
}

/// How the loop ended.
enum End {
    /// The server closes with this reason.
    Close(CloseReason),
    /// The client went away or the socket failed: nothing more to send.
    Gone,
}

/// A write that failed or passed its deadline.
enum WriteError {
    Failed,
    TimedOut,
}

impl From<WriteError> for End {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Failed => End::Gone,
            WriteError::TimedOut => End::Close(CloseReason::SlowConsumer),
        }
    }
}

impl<S, R> Connection<S, R>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    /// Not an `async fn`: one moves its arguments into locals and keeps the space they came
    /// in as well, so the connection's state would be in its future twice for its whole life.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the Connection twice"
    )]
    fn run(mut self, resume: Resume) -> impl Future<Output = ()> {
        async move {
            let (tx, rx) = outbox::outbox(self.state.limits.send_queue);
            let close = Arc::new(CloseSignal::default());
            let subscribed = self.state.hub.join(
                &self.identity.class,
                &self.identity.user,
                self.conn,
                self.peer,
                tx,
                close.clone(),
            );
            let _leave = LeaveGuard {
                state: self.state.clone(),
                identity: self.identity.clone(),
                conn: self.conn,
                member: self.member.clone(),
            };
            // A connection replaced (or closed by the drain) while it is still recovering stops
            // at once instead of finishing a replay nobody will read.
            // The start (recovery) and the close are boxed: a future is as large as its largest
            // state for the whole connection, and an idle connection is most of its life in the
            // main loop.
            let started = tokio::select! {
                started = Box::pin(self.start(subscribed, resume)) => started,
                reason = close.raised() => Err(End::Close(reason)),
            };
            let end = match started {
                Ok(skip_until) => self.main_loop(rx, &close, skip_until).await,
                Err(end) => end,
            };
            if let End::Close(reason) = end {
                Box::pin(self.close(reason)).await;
            }
        }
    }

    /// Waits for the class's subscription, records the session, sends `hello` and what the
    /// client missed. Returns the newest id already sent.
    async fn start(
        &mut self,
        mut subscribed: watch::Receiver<bool>,
        resume: Resume,
    ) -> Result<Option<MessageId>, End> {
        let ready = tokio::time::timeout(SUBSCRIBE_WAIT, subscribed.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok());
        if !ready {
            tracing::warn!("class subscription not confirmed in time");
            return Err(End::Close(CloseReason::Unavailable));
        }
        let state = self.state.clone();
        let Identity { class, user, .. } = &self.identity;
        let limits = &state.limits;
        let unavailable = |e: crate::store::StoreError| {
            state.metrics.redis_error(e.op);
            End::Close(CloseReason::Unavailable)
        };
        state
            .store
            .claim(class, user, &self.member, limits.max_connections_per_user)
            .await
            .map_err(unavailable)?;
        let (recovered, epoch, last_id, frames, skip_until) = match resume.since {
            None => {
                let position = state.store.position(class).await.map_err(unavailable)?;
                (true, position.epoch, position.last_id, Vec::new(), None)
            }
            Some(since) => {
                let recovery = state
                    .store
                    .recover(
                        class,
                        since,
                        resume.epoch.as_deref(),
                        limits.max_recovery,
                        SinceFrom::Client,
                    )
                    .await
                    .map_err(unavailable)?;
                let outcome = if recovery.complete {
                    "complete"
                } else {
                    "incomplete"
                };
                state
                    .metrics
                    .recoveries
                    .get_or_create(&ReasonLabel { reason: outcome })
                    .inc();
                let newest = recovery.frames.last().map_or(since, |(id, _)| *id);
                let skip = recovery.complete.then_some(newest);
                (
                    recovery.complete,
                    recovery.epoch,
                    recovery.last_id,
                    recovery.frames,
                    skip,
                )
            }
        };
        let hello = ServerFrame::Hello(Hello {
            v: VERSION,
            server: state.pod.as_str().into(),
            class: class.as_str().into(),
            user: user.as_str().into(),
            role: self.identity.role.as_str().into(),
            recovered,
            epoch: epoch.into(),
            last_id,
        });
        let presence = state
            .hub
            .last_presence(class)
            .map(|count| ServerFrame::Presence { count }.to_text());
        let sink = &mut self.sink;
        let written = tokio::time::timeout(limits.write_timeout, async {
            sink.feed(Message::Text(hello.to_text().into())).await?;
            for (_, frame) in frames {
                sink.feed(Message::Text(Utf8Bytes::from(frame))).await?;
            }
            if let Some(presence) = presence {
                sink.feed(Message::Text(presence.into())).await?;
            }
            sink.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(skip_until),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(CloseReason::SlowConsumer)),
        }
    }

    /// Tells the client to reconnect (after a short random delay of its own, so those told
    /// together do not arrive together), then ends with `draining`.
    async fn send_reconnect(&mut self) -> End {
        let after_ms = fastrand::u64(0..=1000);
        let frame = ServerFrame::Reconnect { after_ms }.to_text();
        if let Err(e) = Box::pin(self.send(Message::Text(frame.into()))).await {
            return e.into();
        }
        End::Close(CloseReason::Draining)
    }

    async fn main_loop(
        &mut self,
        mut rx: outbox::Receiver<Outbound>,
        close: &CloseSignal,
        skip_until: Option<MessageId>,
    ) -> End {
        // The server's state by pointer, not its limits by value: this future's size is paid
        // by every idle connection.
        let state = self.state.clone();
        let limits = &state.limits;
        let drain = &state.drain;
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
        // Made only when the drain starts (a timer inline would cost every connection its size).
        let mut reconnect_at: OptionFuture<Pin<Box<tokio::time::Sleep>>> = None.into();
        let mut draining = false;
        // Created once, not per iteration: registering a waiter on the server-wide drain token
        // takes its lock, and this loop turns once per frame on every connection.
        let drain_started = drain.cancelled();
        tokio::pin!(drain_started);
        let close_raised = close.raised();
        tokio::pin!(close_raised);

        // Not `biased`: under a send queue that never empties, reads, pings and the idle check
        // still get their turn.
        loop {
            tokio::select! {
                reason = &mut close_raised => {
                    // Closed to move elsewhere (the end of this server's drain, or the hand-over
                    // of a gateway pod that is going away): told first, so it comes back with
                    // `since` and misses nothing.
                    if reason == CloseReason::Draining {
                        return Box::pin(self.send_reconnect()).await;
                    }
                    return End::Close(reason);
                }
                () = &mut expiry => return End::Close(CloseReason::TokenExpired),
                () = &mut drain_started, if !draining => {
                    draining = true;
                    let window = limits.drain_window.mul_f64(0.7);
                    let at = Duration::from_millis(fastrand::u64(0..=u64::try_from(window.as_millis()).unwrap_or(0)));
                    reconnect_at = Some(Box::pin(tokio::time::sleep(at))).into();
                }
                Some(()) = &mut reconnect_at, if draining => return Box::pin(self.send_reconnect()).await,
                outbound = rx.recv() => {
                    // The hub holds the sender for as long as the member is joined.
                    let Some(outbound) = outbound else { return End::Close(CloseReason::Internal) };
                    tokio::select! {
                        // Boxed: while it writes, this state is larger than the idle loop's,
                        // and every idle connection would be sized for it.
                        written = Box::pin(self.write_batch(outbound, &mut rx, skip_until)) => {
                            if let Err(e) = written {
                                return e.into();
                            }
                        }
                        reason = &mut close_raised => return End::Close(reason),
                    }
                }
                incoming = self.stream.next() => {
                    let message = match incoming {
                        None => return End::Gone,
                        Some(Err(e)) => return if is_too_large(e) { End::Close(CloseReason::FrameTooLarge) } else { End::Gone },
                        Some(Ok(message)) => message,
                    };
                    last_heard = Instant::now();
                    // Boxed, for the same reason: a frame's handling awaits Redis, and only while
                    // a frame is being handled is that state needed.
                    let end = match message {
                        Message::Text(text) => Box::pin(self.on_frame(Some(&text))).await,
                        Message::Binary(_) => Box::pin(self.on_frame(None)).await,
                        Message::Close(_) => return End::Gone,
                        Message::Ping(_) | Message::Pong(_) => None,
                    };
                    if let Some(end) = end {
                        return end;
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > limits.idle_timeout {
                        return End::Close(CloseReason::Idle);
                    }
                    // Boxed: a ping every third of the idle timeout need not size every
                    // connection's future for its write deadline.
                    if let Err(e) = Box::pin(self.send(Message::Ping(Default::default()))).await {
                        return e.into();
                    }
                }
            }
        }
    }

    /// One message, with the write deadline.
    async fn send(&mut self, message: Message) -> Result<(), WriteError> {
        match tokio::time::timeout(self.state.limits.write_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteError::Failed),
            Err(_) => Err(WriteError::TimedOut),
        }
    }

    /// Writes `first` and whatever else is queued, then flushes once: under load, frames
    /// coalesce into few writes instead of one system call each. One deadline for the lot.
    async fn write_batch(
        &mut self,
        first: Outbound,
        rx: &mut outbox::Receiver<Outbound>,
        skip_until: Option<MessageId>,
    ) -> Result<(), WriteError> {
        let sink = &mut self.sink;
        let written = tokio::time::timeout(self.state.limits.write_timeout, async {
            let mut next = Some(first);
            let mut written = 0;
            while let Some(outbound) = next.take() {
                let skip = outbound
                    .comment_id()
                    .is_some_and(|id| skip_until.is_some_and(|until| id <= until));
                let text = (!skip).then(|| outbound.text());
                if let Some(text) = text {
                    sink.feed(Message::Text(text)).await?;
                    written += 1;
                }
                if written < MAX_BATCH {
                    next = rx.try_recv();
                }
            }
            sink.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteError::Failed),
            Err(_) => Err(WriteError::TimedOut),
        }
    }

    /// Handles one client frame (`None`: a binary one); `Some` ends the connection. Every
    /// frame, text or binary, counts against the connection's rate.
    async fn on_frame(&mut self, text: Option<&str>) -> Option<End> {
        let metrics = self.state.metrics.clone();
        if !self.bucket.try_take(std::time::Instant::now()) {
            metrics.dropped("rate_limited");
            self.dropped_in_row += 1;
            if self.dropped_in_row > self.state.limits.connection_rate.burst.saturating_mul(10) {
                return Some(End::Close(CloseReason::Flood));
            }
            let due = self
                .last_rate_error
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
            if !due {
                return None;
            }
            self.last_rate_error = Some(Instant::now());
            return self.refuse(&FrameError::RateLimited, None).await;
        }
        self.dropped_in_row = 0;
        let Some(text) = text else {
            metrics
                .frames_received
                .get_or_create(&TypeLabel { r#type: "binary" })
                .inc();
            return self.refuse(&FrameError::BinaryUnsupported, None).await;
        };
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(e) => {
                metrics
                    .frames_received
                    .get_or_create(&TypeLabel { r#type: "invalid" })
                    .inc();
                return self.refuse(&e, None).await;
            }
        };
        metrics
            .frames_received
            .get_or_create(&TypeLabel {
                r#type: frame.kind(),
            })
            .inc();
        let reference = match &frame {
            ClientFrame::Comment { reference, .. } => reference.clone(),
            _ => None,
        };
        match self.act(frame).await {
            Ok(None) => None,
            Ok(Some(reply)) => self
                .send(Message::Text(reply.into()))
                .await
                .err()
                .map(End::from),
            Err(e) => self.refuse(&e, reference.as_deref()).await,
        }
    }

    async fn refuse(&mut self, error: &FrameError, reference: Option<&str>) -> Option<End> {
        self.state.metrics.dropped(error.code());
        let frame = ServerFrame::Error {
            code: error.code().into(),
            message: error.to_string().into(),
            reference: reference.map(Into::into),
        };
        self.send(Message::Text(frame.to_text().into()))
            .await
            .err()
            .map(End::from)
    }

    /// Carries out a valid client frame; returns a frame to send back to this client, if any.
    async fn act(&mut self, frame: ClientFrame) -> Result<Option<String>, FrameError> {
        let state = self.state.clone();
        let Identity {
            class,
            user,
            name,
            role,
            ..
        } = &self.identity;
        if !matches!(frame, ClientFrame::Ping | ClientFrame::React { .. })
            && !state.health.redis_up()
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
                let published = state
                    .store
                    .publish_comment(
                        class,
                        user,
                        reference.as_deref(),
                        &tail,
                        &state.limits,
                        *role == Role::Student,
                    )
                    .await
                    .map_err(unavailable)?;
                let (label, duplicate) = match published {
                    Published::Stored(_) => ("comment", None),
                    Published::Duplicate(id) => ("comment_duplicate", Some(id)),
                    Published::RateLimited(_) => return Err(FrameError::RateLimited),
                    Published::SlowMode(_) => return Err(FrameError::SlowMode),
                };
                state
                    .metrics
                    .messages_published
                    .get_or_create(&TypeLabel { r#type: label })
                    .inc();
                // A retry of a stored comment gets the stored one back, to its sender only, so
                // the sender can confirm it (clients drop it by id if they already had it).
                match duplicate {
                    Some(id) => state.store.comment(class, id).await.map_err(unavailable),
                    None => Ok(None),
                }
            }
            ClientFrame::React { emoji } => {
                if !state.hub.add_reaction(class, &emoji) {
                    state.metrics.reactions_dropped.inc();
                }
                Ok(None)
            }
            ClientFrame::Dm { to, text } => {
                if *role != Role::Teacher {
                    return Err(FrameError::Forbidden);
                }
                let frame = ServerFrame::Dm(liveclass_protocol::server::Dm {
                    from: user.as_str().into(),
                    name: name.as_deref().map(Into::into),
                    text: text.as_str().into(),
                    ts: now_ms(),
                })
                .to_text();
                let message = serde_json::to_string(&PodMessage::Dm {
                    class: class.clone(),
                    user: to.clone(),
                    frame,
                })
                .unwrap_or_default();
                let reached = state
                    .store
                    .send_direct(class, user, &to, &message, state.limits.user_publish)
                    .await
                    .map_err(unavailable)?;
                match reached {
                    None => Err(FrameError::RateLimited),
                    Some(0) => Err(FrameError::RecipientOffline),
                    Some(_) => {
                        state
                            .metrics
                            .messages_published
                            .get_or_create(&TypeLabel { r#type: "dm" })
                            .inc();
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Sends the close frame, then waits briefly for the client's own close, so that unread
    /// client data does not turn our close into a reset that loses the close frame. A client
    /// that cannot take the close frame in time is dropped.
    async fn close(&mut self, reason: CloseReason) {
        self.state.metrics.close(reason.as_str());
        tracing::debug!(reason = reason.as_str(), "closing");
        let frame = CloseFrame {
            code: reason.code(),
            reason: Utf8Bytes::from_static(reason.as_str()),
        };
        let deadline = self.state.limits.write_timeout.min(Duration::from_secs(2));
        let sent = tokio::time::timeout(deadline, self.sink.send(Message::Close(Some(frame))))
            .await
            .is_ok_and(|r| r.is_ok());
        if !sent {
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
        let release = PendingRelease {
            class: self.identity.class.clone(),
            user: self.identity.user.clone(),
            member: self.member.clone(),
        };
        // Tracked, so a drain waits for it before the server removes its own traces.
        self.state.tasks.spawn(async move {
            if let Err(e) = state
                .store
                .release(&release.class, &release.user, &release.member)
                .await
            {
                state.metrics.redis_error(e.op);
                state.defer_release(release);
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
    Duration::from_millis(exp.saturating_mul(1000).saturating_sub(now_ms()))
}
