//! State shared by the connection tasks of one process: counters, histograms and, per class, the
//! comment slots that loss accounting is computed from.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::LoadError;
use crate::config::Config;

/// Slot state: never sent by this process.
pub(crate) const SLOT_EMPTY: u8 = 0;
/// Written to the socket; the sender has not seen its own echo yet.
pub(crate) const SLOT_SENT: u8 = 1;
/// The sender received its own echo: the server accepted the comment.
pub(crate) const SLOT_ECHOED: u8 = 2;
/// The sender's connection dropped before the echo came: the server may never have had it.
pub(crate) const SLOT_DROPPED: u8 = 3;

/// Wall-clock microseconds since the Unix epoch. Every process of a run is on one machine, so a
/// send time written by one process and a receive time read by another share this clock.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One comment a part of the run may send into a class: `(part, seq)` names it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// When it was sent (from the sender's clock, carried in `ref`); 0 = not known here.
    pub send_us: AtomicU64,
    /// Receivers of this process that were members when it was sent and got it (first copy).
    pub got_expected: AtomicU32,
    /// Receivers that joined after it was sent and got it anyway (e.g. a subscription race won).
    pub got_extra: AtomicU32,
    /// For comments this process sent: one of the `SLOT_*` states.
    pub state: AtomicU8,
}

/// One class as seen by this process.
#[derive(Debug)]
pub(crate) struct ClassState {
    pub name: String,
    /// `slots[part][seq]`.
    pub slots: Box<[Box<[Slot]>]>,
    /// Next sequence number for comments this process sends into the class.
    pub next_seq: AtomicU32,
    /// First `hello` time of each local member of the class (µs); 0 = never connected.
    pub joins: Box<[AtomicU64]>,
    /// Whether each local member is connected right now (the comment scheduler picks among them).
    pub connected: Box<[AtomicBool]>,
}

impl ClassState {
    pub fn slot(&self, part: u32, seq: u32) -> Option<&Slot> {
        self.slots
            .get(part as usize)
            .and_then(|p| p.get(seq as usize))
    }
}

/// A server to connect to.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub addr: SocketAddr,
    /// `ws://host:port/path`, to which `?token=…` is appended.
    pub base: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, LoadError> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| {
            LoadError::Config(format!("--url {url:?}: only ws:// URLs are supported"))
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/ws"),
        };
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| {
                LoadError::Config(format!("--url {url:?}: cannot resolve {authority:?}: {e}"))
            })?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| {
                LoadError::Config(format!("--url {url:?}: {authority:?} has no IPv4 address"))
            })?;
        Ok(Self {
            addr,
            base: format!("ws://{authority}{path}"),
        })
    }
}

/// Counters of one process; relaxed atomics, read for progress and the report.
#[derive(Debug, Default)]
pub struct Counters {
    pub attempts: AtomicU64,
    pub first_connected: AtomicU64,
    pub last_first_connect_us: AtomicU64,
    pub live: AtomicU64,
    pub reconnects: AtomicU64,
    pub reconnect_frames: AtomicU64,
    pub recovered_false: AtomicU64,
    pub gave_up: AtomicU64,
    pub never_connected: AtomicU64,
    pub comments_sent: AtomicU64,
    pub comments_skipped: AtomicU64,
    pub received: AtomicU64,
    pub duplicated: AtomicU64,
    pub out_of_order: AtomicU64,
    pub foreign: AtomicU64,
    pub unparsed: AtomicU64,
    /// Members that have received at least one message id (so can reconnect with `since`).
    pub with_since: AtomicU64,
}

/// Everything the tasks of one process share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub endpoints: Vec<Endpoint>,
    pub classes: Vec<ClassState>,
    pub cap: u32,
    pub counters: Counters,
    pub latency_us: Sharded,
    pub connect_us: Sharded,
    /// Failed connection attempts by reason (`http_503`, `io_refused`, `timeout`, …).
    pub failures: Tally,
    /// Ends of established connections by reason (`close_1001`, `io_reset`, `eof`, …).
    pub disconnects: Tally,
    /// `error` frames by code.
    pub error_frames: Tally,
    pub interrupted: AtomicBool,
}

impl Shared {
    pub fn new(config: Config) -> Result<Self, LoadError> {
        let endpoints = config
            .urls
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let cap = config.comments_cap();
        let mut per_class = vec![0usize; config.classes as usize];
        for m in config.local_members() {
            if let Some(n) = per_class.get_mut(m.class as usize) {
                *n += 1;
            }
        }
        let classes = per_class
            .iter()
            .enumerate()
            .map(|(i, &members)| ClassState {
                name: config.class_id(i as u32),
                slots: (0..config.split)
                    .map(|_| (0..cap).map(|_| Slot::default()).collect::<Box<[Slot]>>())
                    .collect(),
                next_seq: AtomicU32::new(0),
                joins: (0..members).map(|_| AtomicU64::new(0)).collect(),
                connected: (0..members).map(|_| AtomicBool::new(false)).collect(),
            })
            .collect();
        Ok(Self {
            endpoints,
            classes,
            cap,
            counters: Counters::default(),
            latency_us: Sharded::new()?,
            connect_us: Sharded::new()?,
            failures: Tally::default(),
            disconnects: Tally::default(),
            error_frames: Tally::default(),
            interrupted: AtomicBool::new(false),
            config,
        })
    }
}

/// Counts by reason; for rare events (failures, closes), so a mutex is fine.
#[derive(Debug, Default)]
pub(crate) struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    pub fn add(&self, reason: &str) {
        if let Ok(mut map) = self.0.lock() {
            match map.get_mut(reason) {
                Some(n) => *n += 1,
                None => {
                    map.insert(reason.to_string(), 1);
                }
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Highest value a histogram holds: one hour in microseconds. Larger values are clamped.
pub(crate) const HIST_MAX_US: u64 = 3_600_000_000;

pub(crate) fn new_histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3)
        .map_err(|e| LoadError::Config(format!("histogram: {e}")))
}

const SHARDS: usize = 8;
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD: Cell<usize> = Cell::new(NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS);
}

/// A histogram split in shards by thread, so the runtime's workers rarely wait on each other.
#[derive(Debug)]
pub(crate) struct Sharded {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Sharded {
    fn new() -> Result<Self, LoadError> {
        Ok(Self {
            shards: (0..SHARDS)
                .map(|_| new_histogram().map(Mutex::new))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn record(&self, value: u64) {
        let i = SHARD.with(Cell::get);
        if let Some(Ok(mut h)) = self.shards.get(i).map(|m| m.lock()) {
            h.saturating_record(value.clamp(1, HIST_MAX_US));
        }
    }

    pub fn merged(&self) -> Result<Histogram<u64>, LoadError> {
        let mut all = new_histogram()?;
        for shard in &self.shards {
            if let Ok(h) = shard.lock() {
                all.add(&*h)
                    .map_err(|e| LoadError::Config(format!("histogram: {e}")))?;
            }
        }
        Ok(all)
    }
}
