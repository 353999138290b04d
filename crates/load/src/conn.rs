//! One task per member: connect (with `since` after the first time), read every frame, send the
//! comments the scheduler asks for, and reconnect when told to or when the connection drops.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::state::{SLOT_DROPPED, SLOT_ECHOED, SLOT_SENT, Shared, now_us};

type Ws = WebSocketStream<TcpStream>;

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
    pub source: Option<Ipv4Addr>,
    pub token: String,
    pub user: String,
}

/// The fields of a server frame this client looks at; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    t: &'a str,
    #[serde(borrow, default)]
    id: Option<&'a str>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<&'a str>,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default)]
    after_ms: Option<u64>,
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

/// Why a connection attempt failed, as the report counts it.
type Failure = String;

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

fn ws_config() -> WebSocketConfig {
    // Small buffers: a comment frame is ~200 bytes and a client may hold 19,000 sockets. The read
    // buffer grows on demand for a larger frame; frames over 64 KiB are not expected here.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// TCP connect (from `source`, if set), upgrade, and read `hello`. Returns `recovered`.
async fn connect_once(ctx: &MemberCtx, since: Option<(u64, u64)>) -> Result<(Ws, bool), Failure> {
    let endpoint = ctx
        .shared
        .endpoints
        .get(ctx.endpoint)
        .ok_or_else(|| "no_endpoint".to_string())?;
    let socket = TcpSocket::new_v4().map_err(|e| io_reason(&e))?;
    if let Some(ip) = ctx.source {
        socket
            .bind(SocketAddr::from((ip, 0)))
            .map_err(|e| io_reason(&e))?;
    }
    let stream = socket
        .connect(endpoint.addr)
        .await
        .map_err(|e| io_reason(&e))?;
    let _ = stream.set_nodelay(true);
    let mut uri = String::with_capacity(endpoint.base.len() + ctx.token.len() + 48);
    uri.push_str(&endpoint.base);
    uri.push(if endpoint.base.contains('?') {
        '&'
    } else {
        '?'
    });
    uri.push_str("token=");
    uri.push_str(&ctx.token);
    if let Some((ms, seq)) = since {
        let _ = write!(uri, "&since={ms}-{seq}");
    }
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(uri, stream, Some(ws_config()))
            .await
            .map_err(|e| ws_reason(&e))?;
    // The first frame is `hello`; control frames may come first in principle.
    for _ in 0..8 {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return match serde_json::from_str::<Frame<'_>>(text.as_str()) {
                    Ok(frame) if frame.t == "hello" => Ok((ws, frame.recovered.unwrap_or(true))),
                    _ => Err("no_hello".into()),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map_or_else(
                    || "close".to_string(),
                    |f| format!("close_{}", u16::from(f.code)),
                ));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ws_reason(&e)),
            None => return Err("eof".into()),
        }
    }
    Err("no_hello".into())
}

/// How a session ended.
enum Outcome {
    Stop,
    /// The server asked us to reconnect at this instant.
    Reconnect(Instant),
    Dropped(String),
}

/// What one member has received, kept across its reconnects.
struct Receiver {
    /// Bit `part * cap + seq`: comment `(part, seq)` of this run received.
    seen: Vec<u64>,
    /// Largest message id received, for `since`.
    last_id: Option<(u64, u64)>,
    join_us: u64,
    /// Comments this member sent whose echo has not come back yet.
    pending: Vec<u32>,
}

impl Receiver {
    fn new(bits: usize) -> Self {
        Self {
            seen: vec![0; bits.div_ceil(64)],
            last_id: None,
            join_us: 0,
            pending: Vec::new(),
        }
    }

    /// Returns `Some(delay)` when the server asks for a reconnect.
    fn on_text(&mut self, ctx: &MemberCtx, text: &str) -> Option<Duration> {
        let shared = &*ctx.shared;
        let frame = match serde_json::from_str::<Frame<'_>>(text) {
            Ok(frame) => frame,
            Err(_) => {
                shared.counters.unparsed.fetch_add(1, Relaxed);
                return None;
            }
        };
        match frame.t {
            "comment" => self.on_comment(ctx, frame.id, frame.reference),
            "reconnect" => {
                shared.counters.reconnect_frames.fetch_add(1, Relaxed);
                return Some(Duration::from_millis(
                    frame.after_ms.unwrap_or(0).min(60_000),
                ));
            }
            "error" => shared.error_frames.add(frame.code.unwrap_or("unknown")),
            _ => {}
        }
        None
    }

    fn on_comment(&mut self, ctx: &MemberCtx, id: Option<&str>, reference: Option<&str>) {
        let shared = &*ctx.shared;
        let now = now_us();
        shared.counters.received.fetch_add(1, Relaxed);
        let id = id.and_then(parse_id);
        if self.last_id.is_none() && id.is_some() {
            // From now on this member can reconnect with `since`.
            shared.counters.with_since.fetch_add(1, Relaxed);
        }
        let Some((part, seq, send_us)) =
            reference.and_then(|r| parse_ref(r, &shared.config.run_id))
        else {
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
        let (Some(slot), true) = (class.slot(part, seq), part < shared.config.split) else {
            shared.counters.foreign.fetch_add(1, Relaxed);
            return;
        };
        let bit = part as usize * shared.cap as usize + seq as usize;
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
        if slot.send_us.load(Relaxed) == 0 {
            slot.send_us.store(send_us, Relaxed);
        }
        if send_us > self.join_us {
            slot.got_expected.fetch_add(1, Relaxed);
        } else {
            slot.got_extra.fetch_add(1, Relaxed);
        }
        shared.latency_us.record(now.saturating_sub(send_us));
        if part == shared.config.part
            && let Some(pos) = self.pending.iter().position(|&s| s == seq)
        {
            self.pending.swap_remove(pos);
            slot.state.store(SLOT_ECHOED, Relaxed);
        }
    }

    async fn send_comment(
        &mut self,
        ctx: &MemberCtx,
        ws: &mut Ws,
    ) -> Result<(), tungstenite::Error> {
        let shared = &*ctx.shared;
        let Some(class) = shared.classes.get(ctx.class) else {
            return Ok(());
        };
        let seq = class.next_seq.fetch_add(1, Relaxed);
        let Some(slot) = class.slot(shared.config.part, seq) else {
            shared.counters.comments_skipped.fetch_add(1, Relaxed);
            return Ok(());
        };
        let send_us = now_us();
        slot.send_us.store(send_us, Relaxed);
        slot.state.store(SLOT_SENT, Relaxed);
        self.pending.push(seq);
        let text = PHRASES[seq as usize % PHRASES.len()];
        let frame = format!(
            r#"{{"t":"comment","text":"{text} ({user} #{seq})","ref":"{run}.{part}.{seq}.{send_us}"}}"#,
            user = ctx.user,
            run = shared.config.run_id,
            part = shared.config.part,
        );
        ws.send(Message::text(frame)).await?;
        shared.counters.comments_sent.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The connection is gone: comments without an echo may never have reached the server.
    fn mark_pending_dropped(&self, ctx: &MemberCtx) {
        let shared = &*ctx.shared;
        let Some(class) = shared.classes.get(ctx.class) else {
            return;
        };
        for &seq in &self.pending {
            if let Some(slot) = class.slot(shared.config.part, seq) {
                let _ = slot
                    .state
                    .compare_exchange(SLOT_SENT, SLOT_DROPPED, Relaxed, Relaxed);
            }
        }
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

/// `"<ms>-<seq>"` → `(ms, seq)`.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// `"<run>.<part>.<seq>.<send µs>"` of this run → `(part, seq, send_us)`.
pub(crate) fn parse_ref(reference: &str, run_id: &str) -> Option<(u32, u32, u64)> {
    let rest = reference.strip_prefix(run_id)?.strip_prefix('.')?;
    let mut fields = rest.splitn(3, '.');
    let part = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let send_us = fields.next()?.parse().ok()?;
    Some((part, seq, send_us))
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
    mut commands: mpsc::Receiver<()>,
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
        let attempt = tokio::select! {
            result = timeout(config.connect_timeout, connect_once(&ctx, rx.last_id)) => result,
            _ = stopped(&mut stop) => break,
        };
        let (mut ws, recovered) = match attempt {
            Ok(Ok(pair)) => pair,
            failed => {
                let reason = match failed {
                    Ok(Err(reason)) => reason,
                    _ => "timeout".to_string(),
                };
                shared.failures.add(&reason);
                failures_in_row += 1;
                if failures_in_row > config.max_retries {
                    let counter = if connected_once {
                        &shared.counters.gave_up
                    } else {
                        &shared.counters.never_connected
                    };
                    counter.fetch_add(1, Relaxed);
                    break;
                }
                let base = Duration::from_millis(100 << failures_in_row.min(5));
                if !pause(&mut stop, Instant::now() + jitter(base, base * 3)).await {
                    break;
                }
                continue;
            }
        };
        failures_in_row = 0;
        shared
            .connect_us
            .record(started.elapsed().as_micros() as u64);
        if connected_once {
            shared.counters.reconnects.fetch_add(1, Relaxed);
        } else {
            connected_once = true;
            rx.join_us = now_us();
            if let Some(join) = class.joins.get(ctx.slot) {
                join.store(rx.join_us, Relaxed);
            }
            shared.counters.first_connected.fetch_add(1, Relaxed);
            shared
                .counters
                .last_first_connect_us
                .fetch_max(rx.join_us, Relaxed);
        }
        if !recovered {
            shared.counters.recovered_false.fetch_add(1, Relaxed);
        }
        let flag = class.connected.get(ctx.slot);
        if let Some(flag) = flag {
            flag.store(true, Relaxed);
        }
        shared.counters.live.fetch_add(1, Relaxed);
        let outcome = session(&ctx, &mut ws, &mut rx, &mut commands, &mut stop).await;
        if let Some(flag) = flag {
            flag.store(false, Relaxed);
        }
        shared.counters.live.fetch_sub(1, Relaxed);
        rx.mark_pending_dropped(&ctx);
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
    commands: &mut mpsc::Receiver<()>,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let mut reconnect_at: Option<Instant> = None;
    loop {
        let wake = reconnect_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = stopped(stop) => return Outcome::Stop,
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Some(after) = rx.on_text(ctx, text.as_str()) {
                        reconnect_at = Some(Instant::now() + after);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return match reconnect_at {
                        Some(at) => Outcome::Reconnect(at),
                        None => Outcome::Dropped(
                            frame.map_or_else(|| "close".to_string(), |f| format!("close_{}", u16::from(f.code))),
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
            Some(()) = commands.recv(), if reconnect_at.is_none() => {
                if let Err(e) = rx.send_comment(ctx, ws).await {
                    return Outcome::Dropped(ws_reason(&e));
                }
            }
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
            parse_ref("abc.1.42.1700000000000000", "abc"),
            Some((1, 42, 1_700_000_000_000_000))
        );
        assert_eq!(parse_ref("abcd.1.42.17", "abc"), None);
        assert_eq!(parse_ref("other.1.42.17", "abc"), None);
        assert_eq!(parse_ref("abc.1.x.17", "abc"), None);
        assert_eq!(parse_id("1764300000000-3"), Some((1_764_300_000_000, 3)));
        assert_eq!(parse_id("nope"), None);
        assert!(parse_id("1764300000000-2") < parse_id("1764300000001-0"));
    }
}
