//! State shared by the connection tasks of one process: counters, histograms, event times and,
//! per class, the comment slots that loss accounting is computed from.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use crate::LoadError;
use crate::config::Config;
use crate::endpoint::{Endpoint, Tls, tls_connector};

/// Slot states of a comment this process schedules.
pub(crate) mod slot {
    /// Not scheduled (yet), or skipped: nobody could send it.
    pub const EMPTY: u8 = 0;
    /// Handed to a member, not written yet.
    pub const QUEUED: u8 = 1;
    /// Written to a socket; the sender has not seen its own echo yet.
    pub const SENT: u8 = 2;
    /// The sender received its own echo: the server accepted the comment.
    pub const ECHOED: u8 = 3;
    /// The server refused it with an `error` frame carrying its `ref`, with a code the scenario
    /// asked for: void.
    pub const REFUSED_EXPECTED: u8 = 4;
    /// Refused with a code the scenario did not ask for: a failure.
    pub const REFUSED: u8 = 5;
}

/// One comment a part of the run may send into a class: `(part, seq)` names it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// When it was meant to be sent (monotonic µs, carried in `ref`); 0 = not known here.
    pub intended_us: AtomicU64,
    /// When it was first written (monotonic µs); 0 = not known here.
    pub send_us: AtomicU64,
    /// Receivers of this process that were members when it was sent and got it (first copy).
    pub got_expected: AtomicU32,
    /// Receivers that joined after it was sent and got it anyway.
    pub got_extra: AtomicU32,
    /// For comments this process schedules: one of the [`slot`] states.
    pub state: AtomicU8,
}

/// One class as seen by this process.
#[derive(Debug)]
pub(crate) struct ClassState {
    pub name: String,
    /// `slots[part][seq]`.
    pub slots: Box<[Box<[Slot]>]>,
    /// Comments this process scheduled into the class (the next sequence number).
    pub scheduled: AtomicU32,
    /// First `hello` time of each local member of the class (monotonic µs); 0 = never.
    pub joins: Box<[AtomicU64]>,
    /// Whether each local member can send right now (connected, caught up): the comment
    /// scheduler picks among them.
    pub ready: Box<[AtomicBool]>,
}

impl ClassState {
    pub fn slot(&self, part: u32, seq: u32) -> Option<&Slot> {
        self.slots
            .get(part as usize)
            .and_then(|p| p.get(seq as usize))
    }
}

/// Counters of one process; relaxed atomics, read for progress and the report.
#[derive(Debug, Default)]
pub struct Counters {
    pub attempts: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub first_connected: AtomicU64,
    pub live: AtomicU64,
    pub reconnects: AtomicU64,
    pub reconnect_frames: AtomicU64,
    pub recovered_false: AtomicU64,
    pub gap_frames: AtomicU64,
    pub gave_up: AtomicU64,
    pub never_connected: AtomicU64,
    /// Connections whose recovery (catching up to `hello`'s position, resending what had no
    /// echo) has not finished.
    pub recovering: AtomicU64,
    pub comments_sent: AtomicU64,
    pub comments_resent: AtomicU64,
    pub received: AtomicU64,
    /// First copies received with a receive time inside the sending window.
    pub received_in_window: AtomicU64,
    pub duplicated: AtomicU64,
    pub out_of_order: AtomicU64,
    pub foreign: AtomicU64,
    pub unparsed: AtomicU64,
    pub reactions_frames: AtomicU64,
    /// Members that have received at least one message id (so can reconnect with `since`).
    pub with_since: AtomicU64,
    /// Members connected when sending started.
    pub connected_at_start: AtomicU64,
}

/// Earliest and latest instants of connection events (monotonic µs; 0 = none), for how long an
/// outage lasted.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    pub first_hello_us: AtomicU64,
    pub last_first_hello_us: AtomicU64,
    pub first_drop_us: AtomicU64,
    pub last_drop_us: AtomicU64,
    pub last_rehello_us: AtomicU64,
    pub last_recovered_us: AtomicU64,
    pub first_reconnect_frame_us: AtomicU64,
}

/// Stores `v` into `a` when it is smaller than what `a` holds (0 = nothing yet).
pub(crate) fn store_min(a: &AtomicU64, v: u64) {
    let _ = a.fetch_update(Relaxed, Relaxed, |old| (old == 0 || v < old).then_some(v));
}

/// Latency and time histograms of one process.
#[derive(Debug)]
pub(crate) struct Histograms {
    /// Delivery latency from the comment's intended send time.
    pub latency: Sharded,
    /// Delivery latency from the time the comment was first written.
    pub latency_send: Sharded,
    /// How late senders wrote their comments (write time − intended time).
    pub lateness: Sharded,
    /// One successful attempt: TCP, TLS, upgrade and `hello`.
    pub connect: Sharded,
    /// From a member's planned arrival to its first `hello` (retries included).
    pub join: Sharded,
    /// From a connection's end (drop or `reconnect` frame) to the next `hello`.
    pub reconnect: Sharded,
    /// From a connection's end to having caught up and resent what had no echo.
    pub recovery: Sharded,
}

impl Histograms {
    fn new() -> Result<Self, LoadError> {
        Ok(Self {
            latency: Sharded::new()?,
            latency_send: Sharded::new()?,
            lateness: Sharded::new()?,
            connect: Sharded::new()?,
            join: Sharded::new()?,
            reconnect: Sharded::new()?,
            recovery: Sharded::new()?,
        })
    }
}

/// Connection events by kind, counted per 10 ms of the monotonic clock (mergeable over the
/// processes of a split run, which share that clock).
#[derive(Debug, Default)]
pub(crate) struct Events(Mutex<BTreeMap<&'static str, BTreeMap<u64, u64>>>);

/// Width of an event bucket, ms.
pub const EVENT_BUCKET_MS: u64 = 10;

impl Events {
    pub fn add(&self, kind: &'static str, at_us: u64) {
        if let Ok(mut map) = self.0.lock() {
            *map.entry(kind)
                .or_default()
                .entry(at_us / 1000 / EVENT_BUCKET_MS * EVENT_BUCKET_MS)
                .or_insert(0) += 1;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, Vec<[u64; 2]>> {
        self.0
            .lock()
            .map(|map| {
                map.iter()
                    .map(|(k, v)| (k.to_string(), v.iter().map(|(&t, &n)| [t, n]).collect()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Everything the tasks of one process share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub endpoints: Vec<Endpoint>,
    pub tls: Option<Tls>,
    pub classes: Vec<ClassState>,
    pub cap: u32,
    pub counters: Counters,
    pub marks: Marks,
    pub hist: Histograms,
    pub events: Events,
    /// Failed connection attempts by reason (`http_503`, `io_refused`, `timeout`, …).
    pub failures: Tally,
    /// The first full message of each failure reason (what to fix, for a real deployment).
    pub failure_examples: Examples,
    /// Ends of established connections by reason (`close_1001_draining`, `io_reset`, `eof`, …).
    pub disconnects: Tally,
    /// `error` frames by code.
    pub error_frames: Tally,
    /// Comments refused (an `error` frame with their `ref`), by code.
    pub refused: Tally,
    /// Scheduled comments that were never written, by reason.
    pub skipped: Tally,
    /// The sending window (monotonic µs); `window_end_us` is `u64::MAX` while sending.
    pub window_start_us: AtomicU64,
    pub window_end_us: AtomicU64,
    /// Set when the first member of the run is ready to send (`--send-from-start` waits on it).
    pub first_ready: Notify,
    pub interrupted: AtomicBool,
}

impl Shared {
    pub fn new(config: Config) -> Result<Self, LoadError> {
        let endpoints = config
            .urls
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = if endpoints.iter().any(|e| e.tls_name.is_some()) {
            Some(tls_connector(config.ca_file.as_deref())?)
        } else {
            None
        };
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
                scheduled: AtomicU32::new(0),
                joins: (0..members).map(|_| AtomicU64::new(0)).collect(),
                ready: (0..members).map(|_| AtomicBool::new(false)).collect(),
            })
            .collect();
        Ok(Self {
            endpoints,
            tls,
            classes,
            cap,
            counters: Counters::default(),
            marks: Marks::default(),
            hist: Histograms::new()?,
            events: Events::default(),
            failures: Tally::default(),
            failure_examples: Examples::default(),
            disconnects: Tally::default(),
            error_frames: Tally::default(),
            refused: Tally::default(),
            skipped: Tally::default(),
            window_start_us: AtomicU64::new(u64::MAX),
            window_end_us: AtomicU64::new(u64::MAX),
            first_ready: Notify::new(),
            interrupted: AtomicBool::new(false),
            config,
        })
    }

    /// Whether `at_us` is inside the sending window.
    pub fn in_window(&self, at_us: u64) -> bool {
        at_us >= self.window_start_us.load(Relaxed) && at_us <= self.window_end_us.load(Relaxed)
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

/// The first message seen for each reason.
#[derive(Debug, Default)]
pub(crate) struct Examples(Mutex<BTreeMap<String, String>>);

impl Examples {
    pub fn first(&self, reason: &str, message: &str) {
        if let Ok(mut map) = self.0.lock()
            && !map.contains_key(reason)
        {
            let message: String = message.chars().take(300).collect();
            map.insert(reason.to_string(), message);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, String> {
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
