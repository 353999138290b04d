//! One task per member: connect (with `since` and `epoch` after the first time), read every
//! frame, send the comments the scheduler hands it, and reconnect when told to or when the
//! connection drops — then catch up and resend what the server never confirmed, as a real
//! client following the protocol does (the server drops a resend it already stored, by `ref`).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use liveclass_protocol::server::{Hello as HelloFrame, comment_id};
use liveclass_protocol::{ClientFrame, CloseReason, HandshakeParams, MessageId, ServerFrame};

use crate::clock::mono_us;
use crate::endpoint::{Stream, connect_tcp};
use crate::state::{Shared, slot, store_min};

type Ws = WebSocketStream<Stream>;

/// At most this many connections per member over a run (a bound, not a policy).
const MAX_SESSIONS: u32 = 10_000;

/// What a member task needs.
#[derive(Debug)]
pub(crate) struct MemberCtx {
    pub shared: Arc<Shared>,
    pub class: usize,
    /// Index of the member among the local members of its class.
    pub slot: usize,
    pub endpoint: usize,
    pub source: Option<IpAddr>,
    pub token: String,
    pub user: String,
    pub student: bool,
    /// When the arrival plan has this member connect (monotonic µs).
    pub arrive_us: u64,
}

/// A comment the scheduler hands a member to send: its sequence number in the class.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Command(pub u32);

/// A message id: the protocol's `<ms>-<seq>`.
type Id = MessageId;

/// The one field of a comment frame this client needs besides its id, read without copying:
/// comments are the frames a load test receives by the million. Every other frame, and a comment
/// the fast path does not recognise, is parsed as the protocol's [`ServerFrame`].
#[derive(Deserialize)]
struct CommentRef<'a> {
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Cow<'a, str>>,
}

/// What `hello` said.
struct Hello {
    recovered: bool,
    /// Newest message id of the class when the connection started.
    last_id: Id,
    epoch: String,
}

impl Hello {
    fn of(h: HelloFrame<'_>) -> Self {
        Self {
            recovered: h.recovered,
            last_id: h.last_id,
            epoch: h.epoch.into_owned(),
        }
    }
}

/// `close_<code>_<reason>` for the protocol's close codes, `close_<code>` for others.
fn close_reason(code: u16) -> String {
    match CloseReason::from_code(code) {
        Some(reason) => format!("close_{code}_{}", reason.as_str()),
        None => format!("close_{code}"),
    }
}

/// Why a connection attempt failed, as the report counts it, with the full message.
struct Failure {
    reason: String,
    message: String,
}

impl Failure {
    fn new(reason: impl Into<String>, message: impl ToString) -> Self {
        Self {
            reason: reason.into(),
            message: message.to_string(),
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "io_refused".into(),
        ConnectionReset => "io_reset".into(),
        ConnectionAborted => "io_aborted".into(),
        BrokenPipe => "io_broken_pipe".into(),
        AddrInUse | AddrNotAvailable => "io_no_ports".into(),
        TimedOut => "timeout".into(),
        UnexpectedEof => "eof".into(),
        _ => match e.raw_os_error() {
            Some(24) => "io_too_many_files".into(),
            _ => "io_other".into(),
        },
    }
}

fn ws_reason(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(response) => format!("http_{}", response.status().as_u16()),
        tungstenite::Error::Io(io) => io_reason(io),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "eof".into(),
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => "reset_without_close".into(),
        tungstenite::Error::Protocol(_) => "protocol".into(),
        _ => "handshake".into(),
    }
}

fn ws_failure(e: &tungstenite::Error) -> Failure {
    let message = match e {
        tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            format!("HTTP {}: {}", response.status(), body.trim())
        }
        other => other.to_string(),
    };
    Failure::new(ws_reason(e), message)
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: a comment frame is ~200 bytes and a client may hold 19,000 sockets. The read
    // buffer grows on demand for a larger frame; frames over 64 KiB are not expected here.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Resolve, TCP connect (from `source`, if set), TLS for `wss://`, upgrade, and read `hello`.
async fn connect_once(
    ctx: &MemberCtx,
    since: Option<Id>,
    epoch: Option<&str>,
) -> Result<(Ws, Hello), Failure> {
    let shared = &*ctx.shared;
    let endpoint = shared
        .endpoints
        .get(ctx.endpoint)
        .ok_or_else(|| Failure::new("no_endpoint", "no endpoint"))?;
    let addrs = endpoint
        .resolve()
        .await
        .map_err(|e| Failure::new("dns", format!("cannot resolve {}: {e}", endpoint.host)))?;
    let tcp = connect_tcp(&addrs, fastrand::usize(..addrs.len()), ctx.source)
        .await
        .map_err(|e| Failure::new(io_reason(&e), e))?;
    let stream = match (&endpoint.tls_name, &shared.tls) {
        (Some(name), Some(tls)) => {
            Stream::Tls(Box::new(tls.0.connect(name.clone(), tcp).await.map_err(
                |e| Failure::new("tls", format!("TLS with {}: {e}", endpoint.host)),
            )?))
        }
        _ => Stream::Plain(tcp),
    };
    // The handshake query as the protocol defines it; `epoch` only goes with `since`.
    let params = HandshakeParams {
        token: Some(ctx.token.clone()),
        since,
        epoch: since.and(epoch.map(str::to_owned)),
    };
    let uri = format!(
        "{}{}{}",
        endpoint.base,
        if endpoint.base.contains('?') {
            '&'
        } else {
            '?'
        },
        params.to_query()
    );
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(uri, stream, Some(ws_config()))
            .await
            .map_err(|e| ws_failure(&e))?;
    // The first frame is `hello`; control frames may come first in principle.
    for _ in 0..8 {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return match ServerFrame::parse(text.as_str()) {
                    Ok(ServerFrame::Hello(h)) if h.v == liveclass_protocol::VERSION => {
                        Ok((ws, Hello::of(h)))
                    }
                    Ok(ServerFrame::Hello(h)) => Err(Failure::new(
                        "protocol_version",
                        format!(
                            "the server speaks protocol version {}; this load generator speaks {}",
                            h.v,
                            liveclass_protocol::VERSION
                        ),
                    )),
                    _ => Err(Failure::new(
                        "no_hello",
                        format!("the first frame was not hello: {}", text.as_str()),
                    )),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(match frame {
                    Some(f) => Failure::new(close_reason(u16::from(f.code)), f.reason),
                    None => Failure::new("close", "closed before hello"),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ws_failure(&e)),
            None => return Err(Failure::new("eof", "closed before hello")),
        }
    }
    Err(Failure::new("no_hello", "no hello within 8 frames"))
}

/// How a session ended.
enum Outcome {
    Stop,
    /// The server asked us to reconnect at this instant.
    Reconnect(Instant),
    Dropped(String),
}

/// What one member has received and still owes, kept across its reconnects.
struct Receiver {
    /// Bit `part * cap + seq`: comment `(part, seq)` of this run received.
    seen: Vec<u64>,
    /// Largest message id received, for `since`.
    last_id: Option<Id>,
    /// The class's epoch from `hello` (or a `gap`), sent back with `since`.
    epoch: Option<String>,
    join_us: u64,
    /// Comments this member wrote whose echo (or refusal) has not come back yet.
    pending: Vec<u32>,
    /// After a reconnect: caught up once a message id at least this large arrives.
    catch_up: Option<Id>,
    /// When the last connection ended (monotonic µs; 0 = not reconnecting).
    ended_us: u64,
}

impl Receiver {
    fn new(bits: usize) -> Self {
        Self {
            seen: vec![0; bits.div_ceil(64)],
            last_id: None,
            epoch: None,
            join_us: 0,
            pending: Vec::new(),
            catch_up: None,
            ended_us: 0,
        }
    }

    /// Returns `Some(delay)` when the server asks for a reconnect.
    fn on_text(&mut self, ctx: &MemberCtx, text: &str) -> Option<Duration> {
        let shared = &*ctx.shared;
        // The fast path: a comment in the exact shape the server's store publishes.
        if let Some(id) = comment_id(text) {
            match serde_json::from_str::<CommentRef<'_>>(text) {
                Ok(c) => self.on_comment(ctx, Some(id), c.reference.as_deref()),
                Err(_) => {
                    shared.counters.unparsed.fetch_add(1, Relaxed);
                }
            }
            return None;
        }
        let frame = match ServerFrame::parse(text) {
            Ok(frame) => frame,
            Err(_) => {
                shared.counters.unparsed.fetch_add(1, Relaxed);
                return None;
            }
        };
        match frame {
            ServerFrame::Comment(c) => self.on_comment(ctx, Some(c.id), c.reference.as_deref()),
            ServerFrame::Reactions { .. } => {
                shared.counters.reactions_frames.fetch_add(1, Relaxed);
            }
            ServerFrame::Reconnect { after_ms } => {
                let now = mono_us();
                shared.counters.reconnect_frames.fetch_add(1, Relaxed);
                shared.events.add("reconnect_frame", now);
                store_min(&shared.marks.first_reconnect_frame_us, now);
                return Some(Duration::from_millis(after_ms.min(120_000)));
            }
            ServerFrame::Error {
                code, reference, ..
            } => {
                shared.error_frames.add(&code);
                if let Some(reference) = reference.as_deref() {
                    self.on_refusal(ctx, reference, &code);
                }
            }
            ServerFrame::Gap { epoch, last_id, .. } => {
                shared.counters.gap_frames.fetch_add(1, Relaxed);
                self.epoch = Some(epoch.into_owned());
                self.last_id = Some(last_id);
            }
            ServerFrame::Hello(_) => {
                // Only ever the first frame of a connection: not the protocol.
                shared.counters.unparsed.fetch_add(1, Relaxed);
            }
            ServerFrame::Dm(_) | ServerFrame::Presence { .. } | ServerFrame::Pong => {}
        }
        None
    }

    fn on_refusal(&mut self, ctx: &MemberCtx, reference: &str, code: &str) {
        let shared = &*ctx.shared;
        let Some(r) = parse_ref(reference, &shared.config.run_id) else {
            return;
        };
        if r.part != shared.config.part {
            return;
        }
        let Some(pos) = self.pending.iter().position(|&s| s == r.seq) else {
            return;
        };
        self.pending.swap_remove(pos);
        shared.refused.add(code);
        let state = if shared.config.refusal_expected(code) {
            slot::REFUSED_EXPECTED
        } else {
            slot::REFUSED
        };
        if let Some(s) = shared
            .classes
            .get(ctx.class)
            .and_then(|c| c.slot(r.part, r.seq))
        {
            s.state.store(state, Relaxed);
        }
    }

    fn on_comment(&mut self, ctx: &MemberCtx, id: Option<Id>, reference: Option<&str>) {
        let shared = &*ctx.shared;
        let now = mono_us();
        shared.counters.received.fetch_add(1, Relaxed);
        if self.last_id.is_none() && id.is_some() {
            // From now on this member can reconnect with `since`.
            shared.counters.with_since.fetch_add(1, Relaxed);
        }
        let caught_up = match (self.catch_up, id) {
            (Some(target), Some(id)) => id >= target,
            _ => false,
        };
        self.count_comment(ctx, now, id, reference);
        if caught_up {
            self.catch_up = None;
            self.recovery_done(ctx, now);
        }
    }

    fn count_comment(
        &mut self,
        ctx: &MemberCtx,
        now: u64,
        id: Option<Id>,
        reference: Option<&str>,
    ) {
        let shared = &*ctx.shared;
        let Some(r) = reference.and_then(|r| parse_ref(r, &shared.config.run_id)) else {
            // Not one of this run's comments; it still moves `since` forward.
            if let Some(id) = id {
                self.last_id = self.last_id.max(Some(id));
            }
            shared.counters.foreign.fetch_add(1, Relaxed);
            return;
        };
        let Some(class) = shared.classes.get(ctx.class) else {
            return;
        };
        let (Some(slot), true) = (class.slot(r.part, r.seq), r.part < shared.config.split) else {
            shared.counters.foreign.fetch_add(1, Relaxed);
            return;
        };
        let bit = r.part as usize * shared.cap as usize + r.seq as usize;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        let Some(w) = self.seen.get_mut(word) else {
            return;
        };
        if *w & mask != 0 {
            shared.counters.duplicated.fetch_add(1, Relaxed);
            return;
        }
        *w |= mask;
        if let Some(id) = id {
            if Some(id) <= self.last_id {
                shared.counters.out_of_order.fetch_add(1, Relaxed);
            } else {
                self.last_id = Some(id);
            }
        }
        let send_us = r.intended_us.saturating_add(r.late_us);
        if slot.intended_us.load(Relaxed) == 0 {
            slot.intended_us.store(r.intended_us, Relaxed);
            slot.send_us.store(send_us, Relaxed);
        }
        if send_us > self.join_us {
            slot.got_expected.fetch_add(1, Relaxed);
        } else {
            slot.got_extra.fetch_add(1, Relaxed);
        }
        if shared.in_window(now) {
            shared.counters.received_in_window.fetch_add(1, Relaxed);
        }
        shared
            .hist
            .latency
            .record(now.saturating_sub(r.intended_us));
        shared.hist.latency_send.record(now.saturating_sub(send_us));
        if r.part == shared.config.part
            && let Some(pos) = self.pending.iter().position(|&s| s == r.seq)
        {
            self.pending.swap_remove(pos);
            let _ = slot
                .state
                .compare_exchange(slot::SENT, slot::ECHOED, Relaxed, Relaxed);
        }
    }

    /// Caught up after a reconnect: the member is whole again and may send.
    fn recovery_done(&mut self, ctx: &MemberCtx, now: u64) {
        let shared = &*ctx.shared;
        shared.counters.recovering.fetch_sub(1, Relaxed);
        shared
            .hist
            .recovery
            .record(now.saturating_sub(self.ended_us));
        shared.events.add("recovered", now);
        shared.marks.last_recovered_us.fetch_max(now, Relaxed);
        self.ended_us = 0;
    }

    /// Writes comment `seq` (again, with the same `ref`, when `resend`).
    async fn write_comment(
        &mut self,
        ctx: &MemberCtx,
        ws: &mut Ws,
        seq: u32,
        resend: bool,
    ) -> Result<(), tungstenite::Error> {
        let shared = &*ctx.shared;
        let part = shared.config.part;
        let Some(s) = shared
            .classes
            .get(ctx.class)
            .and_then(|c| c.slot(part, seq))
        else {
            return Ok(());
        };
        let intended_us = s.intended_us.load(Relaxed);
        if !resend {
            let now = mono_us();
            s.send_us.store(now, Relaxed);
            s.state.store(slot::SENT, Relaxed);
            shared.hist.lateness.record(now.saturating_sub(intended_us));
            shared.counters.comments_sent.fetch_add(1, Relaxed);
            self.pending.push(seq);
        } else {
            shared.counters.comments_resent.fetch_add(1, Relaxed);
        }
        let late_us = s.send_us.load(Relaxed).saturating_sub(intended_us);
        let phrase = PHRASES[seq as usize % PHRASES.len()];
        let frame = ClientFrame::Comment {
            text: format!("{phrase} ({} #{seq})", ctx.user),
            reference: Some(format!(
                "{}.{part}.{seq}.{intended_us}.{late_us}",
                shared.config.run_id
            )),
        };
        ws.send(Message::text(frame.to_text())).await
    }

    /// Resends every comment written on an earlier connection that got neither an echo nor a
    /// refusal: the server may never have had it.
    async fn resend_pending(
        &mut self,
        ctx: &MemberCtx,
        ws: &mut Ws,
    ) -> Result<(), tungstenite::Error> {
        let pending = self.pending.clone();
        for seq in pending {
            self.write_comment(ctx, ws, seq, true).await?;
        }
        Ok(())
    }
}

const PHRASES: &[&str] = &[
    "Could you repeat the last step?",
    "Is this on the exam?",
    "Thank you, that makes sense now",
    "Which chapter is this in?",
    "Can you zoom in on the board please",
    "Why is the second term negative?",
    "Great example!",
    "What does the arrow mean here?",
];

/// What a comment's `ref` says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ref {
    pub part: u32,
    pub seq: u32,
    /// When the comment was meant to be sent (monotonic µs).
    pub intended_us: u64,
    /// How much later it was first written.
    pub late_us: u64,
}

/// `"<run>.<part>.<seq>.<intended µs>.<late µs>"` of this run.
pub(crate) fn parse_ref(reference: &str, run_id: &str) -> Option<Ref> {
    let rest = reference.strip_prefix(run_id)?.strip_prefix('.')?;
    let mut fields = rest.splitn(4, '.');
    Some(Ref {
        part: fields.next()?.parse().ok()?,
        seq: fields.next()?.parse().ok()?,
        intended_us: fields.next()?.parse().ok()?,
        late_us: fields.next()?.parse().ok()?,
    })
}

/// Resolves when the run says stop (or its controller is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Sleeps until `deadline` unless the run stops first; `false` when it stopped.
async fn pause(stop: &mut watch::Receiver<bool>, deadline: Instant) -> bool {
    tokio::select! {
        _ = stopped(stop) => false,
        _ = sleep_until(deadline) => true,
    }
}

/// A random delay in `[low, high)`.
fn jitter(low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_millis() as u64;
    low + Duration::from_millis(if span == 0 { 0 } else { fastrand::u64(..span) })
}

/// The life of one member until the run stops.
pub(crate) async fn member(
    ctx: MemberCtx,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    let shared = Arc::clone(&ctx.shared);
    let config = &shared.config;
    let Some(class) = shared.classes.get(ctx.class) else {
        return;
    };
    let mut rx = Receiver::new(config.split as usize * shared.cap as usize);
    let mut failures_in_row = 0u32;
    let mut connected_once = false;
    for _ in 0..MAX_SESSIONS {
        if *stop.borrow() {
            break;
        }
        shared.counters.attempts.fetch_add(1, Relaxed);
        let started = Instant::now();
        let since = if connected_once { rx.last_id } else { None };
        let attempt = tokio::select! {
            result = timeout(config.connect_timeout, connect_once(&ctx, since, rx.epoch.as_deref())) => result,
            _ = stopped(&mut stop) => break,
        };
        let (mut ws, hello) = match attempt {
            Ok(Ok(pair)) => pair,
            failed => {
                let failure = match failed {
                    Ok(Err(failure)) => failure,
                    _ => Failure::new("timeout", "no hello within --connect-timeout"),
                };
                shared.counters.failed_attempts.fetch_add(1, Relaxed);
                shared.failures.add(&failure.reason);
                shared
                    .failure_examples
                    .first(&failure.reason, &failure.message);
                failures_in_row += 1;
                if failures_in_row > config.max_retries {
                    if connected_once {
                        shared.counters.gave_up.fetch_add(1, Relaxed);
                        // It will not recover: do not keep the run settling for it.
                        shared.counters.recovering.fetch_sub(1, Relaxed);
                    } else {
                        shared.counters.never_connected.fetch_add(1, Relaxed);
                    }
                    break;
                }
                let base = Duration::from_millis(100 << failures_in_row.min(5));
                if !pause(&mut stop, Instant::now() + jitter(base, base * 3)).await {
                    break;
                }
                continue;
            }
        };
        let now = mono_us();
        failures_in_row = 0;
        shared
            .hist
            .connect
            .record(started.elapsed().as_micros() as u64);
        rx.epoch = Some(hello.epoch);
        if !hello.recovered {
            shared.counters.recovered_false.fetch_add(1, Relaxed);
        }
        if connected_once {
            shared.counters.reconnects.fetch_add(1, Relaxed);
            shared.events.add("rehello", now);
            shared.marks.last_rehello_us.fetch_max(now, Relaxed);
            shared
                .hist
                .reconnect
                .record(now.saturating_sub(rx.ended_us));
            // Caught up once the newest message of the class at `hello` has arrived; at once
            // when there is nothing to recover (or the server says it cannot).
            rx.catch_up = match since {
                Some(since) if hello.recovered && hello.last_id > since => Some(hello.last_id),
                _ => None,
            };
            if rx.catch_up.is_none() {
                rx.recovery_done(&ctx, now);
            }
        } else {
            connected_once = true;
            rx.join_us = now;
            if let Some(join) = class.joins.get(ctx.slot) {
                join.store(now, Relaxed);
            }
            shared.counters.first_connected.fetch_add(1, Relaxed);
            store_min(&shared.marks.first_hello_us, now);
            shared.marks.last_first_hello_us.fetch_max(now, Relaxed);
            shared.events.add("hello", now);
            shared.hist.join.record(now.saturating_sub(ctx.arrive_us));
        }
        shared.counters.live.fetch_add(1, Relaxed);
        let outcome = session(&ctx, &mut ws, &mut rx, &mut commands, &mut stop).await;
        if let Some(flag) = class.ready.get(ctx.slot) {
            flag.store(false, Relaxed);
        }
        shared.counters.live.fetch_sub(1, Relaxed);
        if !matches!(outcome, Outcome::Stop) {
            let now = mono_us();
            if rx.catch_up.take().is_some() {
                // Ended again before catching up: still one recovery, from the first end.
                shared.counters.recovering.fetch_sub(1, Relaxed);
            } else {
                rx.ended_us = now;
            }
            shared.counters.recovering.fetch_add(1, Relaxed);
            store_min(&shared.marks.first_drop_us, now);
            shared.marks.last_drop_us.fetch_max(now, Relaxed);
            shared.events.add("drop", now);
        }
        match outcome {
            Outcome::Stop => {
                let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
                break;
            }
            Outcome::Reconnect(at) => {
                shared.disconnects.add("reconnect_frame");
                drop(ws);
                if !pause(&mut stop, at).await {
                    break;
                }
            }
            Outcome::Dropped(reason) => {
                shared.disconnects.add(&reason);
                drop(ws);
                let delay = jitter(Duration::from_millis(50), Duration::from_millis(500));
                if !pause(&mut stop, Instant::now() + delay).await {
                    break;
                }
            }
        }
    }
}

async fn session(
    ctx: &MemberCtx,
    ws: &mut Ws,
    rx: &mut Receiver,
    commands: &mut mpsc::Receiver<Command>,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let shared = &*ctx.shared;
    let ready_flag = shared
        .classes
        .get(ctx.class)
        .and_then(|c| c.ready.get(ctx.slot));
    let mut reconnect_at: Option<Instant> = None;
    let mut ready = false;
    loop {
        // Whole again (caught up after a reconnect): resend what the server never confirmed,
        // then take comments to send.
        if !ready && rx.catch_up.is_none() && reconnect_at.is_none() {
            ready = true;
            if let Err(e) = rx.resend_pending(ctx, ws).await {
                return Outcome::Dropped(ws_reason(&e));
            }
            if ctx.student
                && let Some(flag) = ready_flag
            {
                flag.store(true, Relaxed);
                shared.first_ready.notify_one();
            }
        }
        let wake = reconnect_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        // Commands before frames: a sender that is busy reading must not write late.
        tokio::select! {
            biased;
            _ = stopped(stop) => return Outcome::Stop,
            Some(Command(seq)) = commands.recv(), if ready && reconnect_at.is_none() => {
                if let Err(e) = rx.write_comment(ctx, ws, seq, false).await {
                    return Outcome::Dropped(ws_reason(&e));
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Some(after) = rx.on_text(ctx, text.as_str()) {
                        reconnect_at = Some(Instant::now() + after);
                        if let Some(flag) = ready_flag {
                            flag.store(false, Relaxed);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return match reconnect_at {
                        Some(at) => Outcome::Reconnect(at),
                        None => Outcome::Dropped(
                            frame.map_or_else(|| "close".to_string(), |f| close_reason(u16::from(f.code))),
                        ),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return match reconnect_at {
                        Some(at) => Outcome::Reconnect(at),
                        None => Outcome::Dropped(ws_reason(&e)),
                    };
                }
                None => {
                    return match reconnect_at {
                        Some(at) => Outcome::Reconnect(at),
                        None => Outcome::Dropped("eof".into()),
                    };
                }
            },
            _ = sleep_until(wake), if reconnect_at.is_some() => return Outcome::Reconnect(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_and_ids() {
        assert_eq!(
            parse_ref("abc.1.42.1700000000.250", "abc"),
            Some(Ref {
                part: 1,
                seq: 42,
                intended_us: 1_700_000_000,
                late_us: 250
            })
        );
        assert_eq!(parse_ref("abcd.1.42.17.0", "abc"), None);
        assert_eq!(parse_ref("other.1.42.17.0", "abc"), None);
        assert_eq!(parse_ref("abc.1.x.17.0", "abc"), None);
        assert_eq!(parse_ref("abc.1.42.17", "abc"), None);
    }

    /// The fast path reads the same id and `ref` the protocol's own parser does, from the frame
    /// exactly as the server's store builds it.
    #[test]
    fn the_fast_comment_path_agrees_with_the_protocol() {
        use liveclass_protocol::server::{comment_frame, comment_frame_tail};
        let id = MessageId {
            ms: 1_764_300_000_000,
            seq: 3,
        };
        let tail = comment_frame_tail(
            "s1",
            Some("Student \"1\""),
            "Is this on the exam? (s1 #3)",
            1_764_300_000_000,
            Some("abc.0.3.17.0"),
        );
        let frame = comment_frame(id, &tail);
        assert_eq!(comment_id(&frame), Some(id));
        let fast: CommentRef<'_> = serde_json::from_str(&frame).unwrap();
        let Ok(ServerFrame::Comment(full)) = ServerFrame::parse(&frame) else {
            panic!("not a comment: {frame}");
        };
        assert_eq!(full.id, id);
        assert_eq!(fast.reference.as_deref(), full.reference.as_deref());
        assert_eq!(
            parse_ref(fast.reference.as_deref().unwrap(), "abc").map(|r| r.seq),
            Some(3)
        );
    }

    #[test]
    fn the_comment_frame_is_the_protocols() {
        let frame = ClientFrame::Comment {
            text: "Great example! (s1 #0)".into(),
            reference: Some("abc.0.0.17.0".into()),
        };
        assert_eq!(ClientFrame::parse(&frame.to_text()), Ok(frame));
        assert_eq!(close_reason(1001), "close_1001_draining");
        assert_eq!(close_reason(4001), "close_4001_slow_consumer");
        assert_eq!(close_reason(1006), "close_1006");
    }

    #[test]
    fn the_longest_ref_fits_the_protocols_64_characters() {
        let reference = format!(
            "{}.{}.{}.{}.{}",
            "r".repeat(16),
            999,
            u32::MAX,
            10_000_000_000_000u64, // 115 days of uptime in µs
            3_600_000_000u64
        );
        assert!(reference.len() <= 64, "{} > 64", reference.len());
    }
}
