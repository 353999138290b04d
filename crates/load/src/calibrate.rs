//! The calibration figure: a minimal raw TCP fan-out, written for the purpose and measured in the
//! same run as each benchmark, so every benchmark figure can also be read as a ratio to what this
//! machine, at that moment, does with no WebSocket, JSON, Redis or proxy at all.
//!
//! One thread plays the server: it accepts `receivers` loopback connections, gives each a writer
//! task with a bounded queue (as the socket server does) and broadcasts fixed-size messages on a
//! schedule. Another thread plays the clients: it reads every socket and records each message's
//! latency from its intended send time. Two modes run one after the other on the same sockets:
//!
//! - `per_message`: the writer makes one `write` per message (one segment per delivery);
//! - `coalesced`: the writer drains everything queued and makes one `write` for all of it.
//!
//! Each mode reports deliveries expected, received and lost (a full queue drops, as a slow
//! consumer would be dropped), latency percentiles from the intended time, and the CPU time of
//! the sending thread per delivery — the machine's cost of a delivery at its cheapest.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until};

use crate::LoadError;
use crate::clock::{mono_us, thread_cpu_us, unix_ms};
use crate::config::parse_duration;
use crate::report::{Percentiles, dump};
use crate::sampler::loadavg_1m;
use crate::state::new_histogram;

/// Flags of `liveclass-load calibrate`.
#[derive(Debug, Clone, Args)]
pub struct CalibrateArgs {
    /// Receiving sockets (every message goes to each of them).
    #[arg(long, default_value_t = 4000)]
    pub receivers: u32,
    /// Broadcasts per second in the one-write-per-message mode (deliveries/s = this × receivers).
    #[arg(long, default_value_t = 35.0)]
    pub per_message_rate: f64,
    /// Broadcasts per second in the coalesced mode.
    #[arg(long, default_value_t = 250.0)]
    pub coalesced_rate: f64,
    /// How long each mode sends.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bytes per message (a comment frame is about 200).
    #[arg(long, default_value_t = 200)]
    pub message_bytes: usize,
    /// Per-connection send queue, in messages (the socket server's default is 1024).
    #[arg(long, default_value_t = 1024)]
    pub queue: usize,
    /// Spread the receivers' source addresses over 127.0.0.1..=127.0.0.N.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_ips: u8,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// What one calibration run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    pub tool: String,
    pub receivers: u32,
    pub message_bytes: usize,
    pub duration_s: f64,
    pub started_unix_ms: u64,
    pub loadavg_1m_before: Option<f64>,
    pub per_message: ModeResult,
    pub coalesced: ModeResult,
}

/// One mode's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModeResult {
    pub broadcasts_per_s: f64,
    pub offered_deliveries_per_s: f64,
    pub expected: u64,
    pub received: u64,
    /// Dropped at a full queue, or never read.
    pub lost: u64,
    /// Deliveries read inside the sending window, per second.
    pub in_window_per_s: f64,
    /// `write` calls the sender made.
    pub writes: u64,
    pub latency_ms: Percentiles,
    pub sender_cpu_s: f64,
    pub receiver_cpu_s: f64,
    /// Sender CPU per delivery, µs: the machine's cheapest cost of one delivery.
    pub sender_cpu_us_per_delivery: f64,
    pub latency_us: Vec<[u64; 2]>,
}

const MODES: [&str; 2] = ["per_message", "coalesced"];
/// Header of a message: intended send time (µs, monotonic), mode.
const HEADER: usize = 9;

/// State both threads see.
#[derive(Debug)]
struct Common {
    /// The mode writers use now (index into MODES).
    mode: AtomicU8,
    received: [AtomicU64; 2],
    in_window: [AtomicU64; 2],
    /// End of the current mode's sending window (monotonic µs).
    window_end_us: AtomicU64,
    overflow: [AtomicU64; 2],
    writes: [AtomicU64; 2],
    latency: [Mutex<Histogram<u64>>; 2],
    /// Thread CPU (µs) of the receiver at each phase change.
    receiver_cpu: Mutex<Vec<u64>>,
}

/// Runs both modes and returns their figures.
pub fn run(args: &CalibrateArgs) -> Result<Calibration, LoadError> {
    let bad = |m: String| Err(LoadError::Config(m));
    if args.receivers == 0 {
        return bad("--receivers must be at least 1".into());
    }
    if args.message_bytes < HEADER + 1 || args.message_bytes > 65_536 {
        return bad(format!("--message-bytes must be {}..65536", HEADER + 1));
    }
    for rate in [args.per_message_rate, args.coalesced_rate] {
        if !(rate.is_finite() && rate > 0.0) {
            return bad("the rates must be positive".into());
        }
    }
    crate::ensure_fd_budget(u64::from(args.receivers) * 2)?;
    let common = Arc::new(Common {
        mode: AtomicU8::new(0),
        received: Default::default(),
        in_window: Default::default(),
        window_end_us: AtomicU64::new(u64::MAX),
        overflow: Default::default(),
        writes: Default::default(),
        latency: [Mutex::new(new_histogram()?), Mutex::new(new_histogram()?)],
        receiver_cpu: Mutex::new(Vec::new()),
    });
    let loadavg_1m_before = loadavg_1m();
    let started_unix_ms = unix_ms();
    let (phase_tx, phase_rx) = watch::channel(0u8);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    let (conn_tx, conn_rx) = std::sync::mpsc::channel::<Result<(), String>>();

    let sender = {
        let common = Arc::clone(&common);
        let args = args.clone();
        std::thread::Builder::new()
            .name("calib-send".into())
            .spawn(move || sender_thread(&args, &common, addr_tx, conn_rx, phase_tx))
            .map_err(|e| LoadError::Config(format!("cannot start a thread: {e}")))?
    };
    let addr = match addr_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(addr)) => addr,
        Ok(Err(e)) => return bad(format!("calibration sender: {e}")),
        Err(_) => return bad("calibration sender did not start".into()),
    };
    let receiver = {
        let common = Arc::clone(&common);
        let args = args.clone();
        std::thread::Builder::new()
            .name("calib-recv".into())
            .spawn(move || receiver_thread(&args, &common, addr, conn_tx, phase_rx))
            .map_err(|e| LoadError::Config(format!("cannot start a thread: {e}")))?
    };
    let sent = sender
        .join()
        .map_err(|_| LoadError::Config("the calibration sender panicked".into()))?
        .map_err(|e| LoadError::Config(format!("calibration sender: {e}")))?;
    receiver
        .join()
        .map_err(|_| LoadError::Config("the calibration receiver panicked".into()))?
        .map_err(|e| LoadError::Config(format!("calibration receiver: {e}")))?;

    let receiver_cpu = common
        .receiver_cpu
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let mut results = Vec::new();
    for (i, phase) in sent.iter().enumerate() {
        let expected = phase.messages * u64::from(args.receivers);
        let received = common.received[i].load(Relaxed);
        let latency = common.latency[i]
            .lock()
            .map(|h| h.clone())
            .map_err(|_| LoadError::Config("histogram lock".into()))?;
        let recv_cpu = match (receiver_cpu.get(i), receiver_cpu.get(i + 1)) {
            (Some(a), Some(b)) => b.saturating_sub(*a) as f64 / 1e6,
            _ => 0.0,
        };
        results.push(ModeResult {
            broadcasts_per_s: phase.rate,
            offered_deliveries_per_s: phase.rate * f64::from(args.receivers),
            expected,
            received,
            lost: expected.saturating_sub(received),
            in_window_per_s: (common.in_window[i].load(Relaxed) as f64
                / args.duration.as_secs_f64())
            .round(),
            writes: common.writes[i].load(Relaxed),
            latency_ms: Percentiles::of_us(&latency),
            sender_cpu_s: phase.cpu_us as f64 / 1e6,
            receiver_cpu_s: recv_cpu,
            sender_cpu_us_per_delivery: if received > 0 {
                (phase.cpu_us as f64 / received as f64 * 1000.0).round() / 1000.0
            } else {
                0.0
            },
            latency_us: dump(&latency),
        });
    }
    let mut results = results.into_iter();
    Ok(Calibration {
        tool: format!("liveclass-load {} calibrate", env!("CARGO_PKG_VERSION")),
        receivers: args.receivers,
        message_bytes: args.message_bytes,
        duration_s: args.duration.as_secs_f64(),
        started_unix_ms,
        loadavg_1m_before,
        per_message: results.next().unwrap_or_default(),
        coalesced: results.next().unwrap_or_default(),
    })
}

/// What the sender did in one mode.
struct Sent {
    rate: f64,
    messages: u64,
    cpu_us: u64,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn sender_thread(
    args: &CalibrateArgs,
    common: &Arc<Common>,
    addr_tx: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
    conn_rx: std::sync::mpsc::Receiver<Result<(), String>>,
    phase_tx: watch::Sender<u8>,
) -> Result<Vec<Sent>, String> {
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await {
            Ok(l) => l,
            Err(e) => {
                let _ = addr_tx.send(Err(e.to_string()));
                return Err(e.to_string());
            }
        };
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let _ = addr_tx.send(Ok(addr));
        let mut queues = Vec::with_capacity(args.receivers as usize);
        let accept_deadline = Instant::now() + Duration::from_secs(60);
        while queues.len() < args.receivers as usize {
            let (stream, _) = tokio::select! {
                r = listener.accept() => r.map_err(|e| format!("accept: {e}"))?,
                _ = sleep_until(accept_deadline) => return Err("receivers did not connect within 60 s".into()),
            };
            let _ = stream.set_nodelay(true);
            let (tx, rx) = mpsc::channel::<Arc<[u8]>>(args.queue);
            tokio::spawn(writer(stream, rx, Arc::clone(common)));
            queues.push(tx);
        }
        // Every receiver connected (their side says so too).
        let report_deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match conn_rx.try_recv() {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(e),
                Err(_) if Instant::now() >= report_deadline => {
                    return Err("receivers did not report".into());
                }
                Err(_) => sleep(Duration::from_millis(10)).await,
            }
        }
        let mut out = Vec::new();
        for (mode, rate) in [args.per_message_rate, args.coalesced_rate].into_iter().enumerate() {
            common.mode.store(mode as u8, Relaxed);
            let _ = phase_tx.send(mode as u8 + 1);
            let count = (args.duration.as_secs_f64() * rate).ceil() as u64;
            let cpu_before = thread_cpu_us();
            let start = Instant::now();
            let start_mono = mono_us();
            common
                .window_end_us
                .store(start_mono + args.duration.as_micros() as u64, Relaxed);
            for i in 0..count {
                let offset = Duration::from_secs_f64(i as f64 / rate);
                sleep_until(start + offset).await;
                let mut msg = vec![0u8; args.message_bytes];
                msg[..8].copy_from_slice(&(start_mono + offset.as_micros() as u64).to_le_bytes());
                msg[8] = mode as u8;
                let msg: Arc<[u8]> = msg.into();
                for q in &queues {
                    if q.try_send(Arc::clone(&msg)).is_err() {
                        common.overflow[mode].fetch_add(1, Relaxed);
                    }
                }
            }
            // Let the queues drain (bounded), so the next mode starts clean.
            let expected = count * u64::from(args.receivers) - common.overflow[mode].load(Relaxed);
            let settle = Instant::now() + Duration::from_secs(10);
            while common.received[mode].load(Relaxed) < expected && Instant::now() < settle {
                sleep(Duration::from_millis(20)).await;
            }
            out.push(Sent {
                rate,
                messages: count,
                cpu_us: thread_cpu_us().saturating_sub(cpu_before),
            });
        }
        let _ = phase_tx.send(MODES.len() as u8 + 1);
        drop(queues);
        Ok(out)
    })
}

/// One connection's writer: one write per message, or one per drain of the queue.
async fn writer(
    mut stream: tokio::net::TcpStream,
    mut rx: mpsc::Receiver<Arc<[u8]>>,
    common: Arc<Common>,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        let mode = common.mode.load(Relaxed) as usize;
        let result = if mode == 0 {
            stream.write_all(&first).await
        } else {
            batch.clear();
            batch.extend_from_slice(&first);
            while let Ok(more) = rx.try_recv() {
                batch.extend_from_slice(&more);
            }
            stream.write_all(&batch).await
        };
        if result.is_err() {
            return;
        }
        if let Some(w) = common.writes.get(mode) {
            w.fetch_add(1, Relaxed);
        }
    }
}

fn receiver_thread(
    args: &CalibrateArgs,
    common: &Arc<Common>,
    addr: SocketAddr,
    conn_tx: std::sync::mpsc::Sender<Result<(), String>>,
    mut phase_rx: watch::Receiver<u8>,
) -> Result<(), String> {
    let rt = runtime()?;
    rt.block_on(async move {
        let mut tasks = Vec::with_capacity(args.receivers as usize);
        for i in 0..args.receivers {
            let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
            if args.source_ips > 1 {
                let ip = Ipv4Addr::new(127, 0, 0, 1 + (i % u32::from(args.source_ips)) as u8);
                socket
                    .bind(SocketAddr::new(IpAddr::V4(ip), 0))
                    .map_err(|e| format!("bind {ip}: {e}"))?;
            }
            let stream = match socket.connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = conn_tx.send(Err(format!("connect: {e}")));
                    return Err(format!("connect: {e}"));
                }
            };
            let _ = stream.set_nodelay(true);
            tasks.push(tokio::spawn(reader(
                stream,
                args.message_bytes,
                Arc::clone(common),
            )));
        }
        let _ = conn_tx.send(Ok(()));
        // Record this thread's CPU at every phase change (the runtime runs on this thread only).
        let common2 = Arc::clone(common);
        let cpu = tokio::spawn(async move {
            loop {
                if phase_rx.changed().await.is_err() {
                    return;
                }
                let phase = *phase_rx.borrow_and_update();
                if let Ok(mut v) = common2.receiver_cpu.lock() {
                    v.push(thread_cpu_us());
                }
                if usize::from(phase) > MODES.len() {
                    return;
                }
            }
        });
        for t in tasks {
            let _ = t.await;
        }
        let _ = cpu.await;
        Ok(())
    })
}

/// Reads one socket until the sender closes it, recording each message's latency.
async fn reader(mut stream: tokio::net::TcpStream, size: usize, common: Arc<Common>) {
    let mut buf = vec![0u8; 4096.max(size * 2)];
    let mut have = 0usize;
    loop {
        let n = match stream.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have += n;
        let now = mono_us();
        let in_window = now <= common.window_end_us.load(Relaxed);
        let mut at = 0;
        let mut counts = [0u64; 2];
        while have - at >= size {
            let msg = &buf[at..at + size];
            let mut t = [0u8; 8];
            t.copy_from_slice(&msg[..8]);
            let intended = u64::from_le_bytes(t);
            let mode = usize::from(msg[8]).min(1);
            if let Ok(mut h) = common.latency[mode].lock() {
                h.saturating_record(now.saturating_sub(intended).max(1));
            }
            counts[mode] += 1;
            at += size;
        }
        buf.copy_within(at..have, 0);
        have -= at;
        for (mode, n) in counts.into_iter().enumerate() {
            if n > 0 {
                common.received[mode].fetch_add(n, Relaxed);
                if in_window {
                    common.in_window[mode].fetch_add(n, Relaxed);
                }
            }
        }
    }
}
