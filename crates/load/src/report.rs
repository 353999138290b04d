//! The final report: built from one process's state, or merged from the JSON reports of the
//! parts of a split run. `--json` writes exactly this structure, raw histograms included, and
//! [`Report::failures`] says every reason the run was not clean (`ok` is that list being empty).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::LoadError;
use crate::config::{Arrival, Shape};
use crate::ledger::{Accounting, Ledger, account};
use crate::sampler::{CpuShare, MachineLoad, Sample, Summary};
use crate::state::{EVENT_BUCKET_MS, Shared, new_histogram};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    /// True for one part of a split run: loss figures only cover what this part could see;
    /// `liveclass-load merge` gives the real ones.
    pub partial: bool,
    /// The parts this report covers.
    pub parts: Vec<u32>,
    pub run: RunInfo,
    pub connections: Connections,
    pub comments: Comments,
    pub deliveries: Deliveries,
    /// Delivery latency from the comment's intended send time (the schedule's instant): what a
    /// student waits, with the sender's lateness included.
    pub latency_ms: Percentiles,
    /// Delivery latency from the moment the comment was first written.
    pub latency_from_send_ms: Percentiles,
    /// How late senders wrote their comments after the intended instant.
    pub sender_lateness_ms: Percentiles,
    /// Every member connected, every comment reached every member exactly once and in order,
    /// nothing skipped or refused unasked, fast enough: `failures` is empty.
    pub ok: bool,
    /// Why the run is not ok, one line per reason.
    pub failures: Vec<String>,
    pub interrupted: bool,
    /// Wall time of each step (prepare, connecting, waiting, sending, settling, closing), s.
    pub steps_s: BTreeMap<String, f64>,
    /// Load average and CPU of the machine while this ran.
    pub machine: MachineLoad,
    /// CPU and memory of each load-generator process of the run (one per part).
    pub processes: Vec<ProcessUsage>,
    /// The run second by second (counts summed over parts).
    pub timeline: Vec<Sample>,
    /// Connection events (`hello`, `drop`, `reconnect_frame`, `rehello`, `recovered`) as
    /// `[monotonic ms, count]` per 10 ms.
    pub events: BTreeMap<String, Vec<[u64; 2]>>,
    /// Raw histograms as `[value_us, count]` pairs (mergeable, and what percentiles are
    /// recomputed from); `--hdr-log` writes the same as an HdrHistogram interval log.
    pub histograms: Histograms,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Ledger>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub urls: Vec<String>,
    pub students: u32,
    pub classes: u32,
    pub class_ids: Vec<String>,
    pub teachers_per_class: u32,
    pub members: u64,
    pub arrival: ArrivalInfo,
    pub comment_rate_per_class: f64,
    pub duration_s: f64,
    pub send_from_start: bool,
    pub split: u32,
    pub source_ips: u8,
    pub started_unix_ms: u64,
    /// The same instant on the monotonic clock every figure is measured with.
    pub started_mono_us: u64,
    /// The sending window on the monotonic clock (µs).
    pub window_start_mono_us: u64,
    pub window_end_mono_us: u64,
    pub max_p99_ms: Option<f64>,
    pub max_failed_attempts: Option<u64>,
    pub expect_refusal: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArrivalInfo {
    /// `ramp` (a constant rate) or `within` (everyone within a window).
    pub kind: String,
    #[serde(default)]
    pub per_s: Option<f64>,
    #[serde(default)]
    pub within_s: Option<f64>,
    #[serde(default)]
    pub shape: Option<Shape>,
}

impl ArrivalInfo {
    fn of(a: &Arrival) -> Self {
        match *a {
            Arrival::Ramp(per_s) => Self {
                kind: "ramp".into(),
                per_s: Some(per_s),
                within_s: None,
                shape: None,
            },
            Arrival::Within(window, shape) => Self {
                kind: "within".into(),
                per_s: None,
                within_s: Some(window.as_secs_f64()),
                shape: Some(shape),
            },
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Connections {
    /// Members held by the process(es) of this report.
    pub members: u64,
    /// Members that received `hello` at least once.
    pub connected: u64,
    /// Members connected when sending started.
    pub connected_at_start: u64,
    /// Members that gave up before their first `hello`.
    pub never_connected: u64,
    /// Members that connected, lost the connection and gave up reconnecting.
    pub gave_up: u64,
    pub attempts: u64,
    /// Attempts that failed (and were retried, or not).
    pub failed_attempts: u64,
    /// Failed attempts by reason: `http_<status>`, `io_refused`, `tls`, `dns`, `timeout`, …
    pub failed: BTreeMap<String, u64>,
    /// The first full message of each reason.
    pub failure_examples: BTreeMap<String, String>,
    /// Seconds from the start of connecting to the last member's first `hello`.
    pub all_connected_s: f64,
    /// One successful attempt: TCP, TLS, upgrade and `hello`.
    pub connect_ms: Percentiles,
    /// From a member's planned arrival to its first `hello`, retries included.
    pub join_ms: Percentiles,
    /// Successful reconnections (after a drop or a `reconnect` frame).
    pub reconnects: u64,
    pub reconnect_frames: u64,
    /// Reconnections whose `hello` said `recovered:false`.
    pub recovered_false: u64,
    /// `gap` frames: the server says a member's view has a hole.
    pub gap_frames: u64,
    /// From a connection's end to the next `hello`.
    pub reconnect_ms: Percentiles,
    /// From a connection's end to having caught up with `since` and resent what had no echo.
    pub recovery_ms: Percentiles,
    /// Ends of established connections by reason: `close_<code>_<reason>` (e.g.
    /// `close_1001_draining`), `reconnect_frame`, `io_reset`, …
    pub disconnects: BTreeMap<String, u64>,
    pub outage: Outage,
    /// Members still catching up when the run ended.
    pub recovering_at_end: u64,
}

/// When connections were lost and when everyone was back (monotonic µs; 0 = never).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Outage {
    pub first_hello_us: u64,
    pub last_first_hello_us: u64,
    pub first_drop_us: u64,
    pub last_drop_us: u64,
    pub first_reconnect_frame_us: u64,
    pub last_rehello_us: u64,
    pub last_recovered_us: u64,
    /// From the first drop to the last member's new `hello`, s.
    pub all_back_s: f64,
    /// From the first drop to the last member having caught up, s.
    pub all_recovered_s: f64,
}

impl Outage {
    fn finish(&mut self) {
        let span = |end: u64| {
            if self.first_drop_us == 0 || end < self.first_drop_us {
                0.0
            } else {
                round3((end - self.first_drop_us) as f64 / 1e6)
            }
        };
        self.all_back_s = span(self.last_rehello_us);
        self.all_recovered_s = span(self.last_recovered_us);
    }

    fn merge(&mut self, o: &Outage) {
        let min = |a: u64, b: u64| match (a, b) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        self.first_hello_us = min(self.first_hello_us, o.first_hello_us);
        self.first_drop_us = min(self.first_drop_us, o.first_drop_us);
        self.first_reconnect_frame_us =
            min(self.first_reconnect_frame_us, o.first_reconnect_frame_us);
        self.last_first_hello_us = self.last_first_hello_us.max(o.last_first_hello_us);
        self.last_drop_us = self.last_drop_us.max(o.last_drop_us);
        self.last_rehello_us = self.last_rehello_us.max(o.last_rehello_us);
        self.last_recovered_us = self.last_recovered_us.max(o.last_recovered_us);
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Comments {
    /// Comment slots the schedule reached (each should have been sent).
    pub scheduled: u64,
    /// Comments written (first writes).
    pub sent: u64,
    /// Writes of a comment again, with the same `ref`, after a reconnect (no echo had come).
    pub resent: u64,
    /// Written and not refused: every member connected before the write must get it.
    pub accepted: u64,
    /// Accepted, but the sender never saw its echo.
    pub unconfirmed: u64,
    /// Refused with a code the scenario asked for (`--expect-refusal`): expected by nobody.
    pub void: u64,
    /// Refused with a code the scenario did not ask for.
    pub refused_unexpected: u64,
    /// Refusals (an `error` frame carrying the comment's `ref`) by code.
    pub refused: BTreeMap<String, u64>,
    /// Scheduled but never written, by reason: `no_student_ready` (nobody could send it),
    /// `unsent` (handed to a member that never got to write it).
    pub skipped: BTreeMap<String, u64>,
    /// `error` frames received, by code.
    pub error_frames: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Deliveries {
    /// Member × comment pairs that had to arrive: every member connected (first `hello`) before
    /// the comment was written, including members that reconnect later (they catch up).
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    /// Copies of a comment a member already had.
    pub duplicated: u64,
    /// Comments whose message id was not larger than one the member had already received.
    pub out_of_order: u64,
    /// Deliveries not required (the member joined after the write, or the comment was
    /// refused) but received.
    pub extra: u64,
    /// Comment frames that were not this run's (another run's, or without a `ref`).
    pub foreign: u64,
    /// Received comments no part's ledger says were sent (a merge missing a part).
    pub unknown: u64,
    /// Accepted comments that some expecting member did not get.
    pub comments_with_loss: u64,
    /// Frames that were not frames of the protocol (not JSON, an unknown `t`, a second `hello`).
    pub unparsed: u64,
    /// Comment frames received in all, duplicates included.
    pub frames: u64,
    /// `reactions` frames received.
    pub reactions_frames: u64,
    /// First copies received inside the sending window, measured from receive counts.
    pub in_window: InWindow,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct InWindow {
    pub received: u64,
    pub seconds: f64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: (h.mean()).round() / 1000.0,
        }
    }
}

/// What a load-generator process used, from `/proc/self` at the end of its run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessUsage {
    pub part: u32,
    pub pid: u32,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// Peak resident memory (VmHWM), KiB.
    pub max_rss_kib: u64,
}

impl ProcessUsage {
    /// Reads this process's usage; zeros where `/proc` is not there.
    pub fn current(part: u32) -> Self {
        // Linux reports utime and stime in USER_HZ ticks, which is 100 a second.
        const TICKS: f64 = 100.0;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which is in parentheses and may hold spaces).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / TICKS
        };
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let max_rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        // utime and stime are fields 14 and 15 of the line: 11 and 12 counted after the name.
        Self {
            part,
            pid: std::process::id(),
            cpu_user_s: ticks(11),
            cpu_system_s: ticks(12),
            max_rss_kib,
        }
    }
}

/// The raw histograms of a report, as `[value_us, count]` pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Histograms {
    pub latency_us: Vec<[u64; 2]>,
    pub latency_from_send_us: Vec<[u64; 2]>,
    pub sender_lateness_us: Vec<[u64; 2]>,
    pub connect_us: Vec<[u64; 2]>,
    pub join_us: Vec<[u64; 2]>,
    pub reconnect_us: Vec<[u64; 2]>,
    pub recovery_us: Vec<[u64; 2]>,
}

impl Histograms {
    /// Each histogram with its name (the tag in an interval log).
    pub fn named(&self) -> [(&'static str, &Vec<[u64; 2]>); 7] {
        [
            ("latency_us", &self.latency_us),
            ("latency_from_send_us", &self.latency_from_send_us),
            ("sender_lateness_us", &self.sender_lateness_us),
            ("connect_us", &self.connect_us),
            ("join_us", &self.join_us),
            ("reconnect_us", &self.reconnect_us),
            ("recovery_us", &self.recovery_us),
        ]
    }
}

pub fn dump(h: &Histogram<u64>) -> Vec<[u64; 2]> {
    h.iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

pub fn load(pairs: &[[u64; 2]]) -> Result<Histogram<u64>, LoadError> {
    let mut h = new_histogram()?;
    for &[value, count] in pairs {
        h.saturating_record_n(value.clamp(1, crate::state::HIST_MAX_US), count);
    }
    Ok(h)
}

fn add_maps(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

fn add_buckets(into: &mut BTreeMap<String, Vec<[u64; 2]>>, from: &BTreeMap<String, Vec<[u64; 2]>>) {
    for (kind, buckets) in from {
        let mut all: BTreeMap<u64, u64> = into
            .remove(kind)
            .unwrap_or_default()
            .into_iter()
            .map(|[t, n]| (t, n))
            .collect();
        for &[t, n] in buckets {
            *all.entry(t).or_insert(0) += n;
        }
        into.insert(kind.clone(), all.into_iter().map(|(t, n)| [t, n]).collect());
    }
}

/// What the controller measured, for [`Report::build`].
#[derive(Debug)]
pub(crate) struct RunFacts {
    pub started_unix_ms: u64,
    pub started_mono_us: u64,
    pub window_start_us: u64,
    pub window_end_us: u64,
    pub steps_s: BTreeMap<String, f64>,
    pub loadavg: Vec<f64>,
    pub cpu_in_window: CpuShare,
    pub timeline: Vec<Sample>,
}

impl Report {
    pub(crate) fn build(shared: &Shared, facts: RunFacts) -> Result<Self, LoadError> {
        let config = &shared.config;
        let c = &shared.counters;
        let m = &shared.marks;
        let (ledger, unsent) = Ledger::from_shared(shared);
        let partial = config.split > 1;
        let acc = account(&[&ledger], partial);
        let h = &shared.hist;
        let (latency, latency_send, lateness) = (
            h.latency.merged()?,
            h.latency_send.merged()?,
            h.lateness.merged()?,
        );
        let (connect, join, reconnect, recovery) = (
            h.connect.merged()?,
            h.join.merged()?,
            h.reconnect.merged()?,
            h.recovery.merged()?,
        );
        let members = config.local_members().len() as u64;
        let mut skipped = shared.skipped.snapshot();
        if unsent > 0 {
            skipped.insert("unsent".into(), unsent);
        }
        let window_s = facts.window_end_us.saturating_sub(facts.window_start_us) as f64 / 1e6;
        let in_window = c.received_in_window.load(Relaxed);
        let mut outage = Outage {
            first_hello_us: m.first_hello_us.load(Relaxed),
            last_first_hello_us: m.last_first_hello_us.load(Relaxed),
            first_drop_us: m.first_drop_us.load(Relaxed),
            last_drop_us: m.last_drop_us.load(Relaxed),
            first_reconnect_frame_us: m.first_reconnect_frame_us.load(Relaxed),
            last_rehello_us: m.last_rehello_us.load(Relaxed),
            last_recovered_us: m.last_recovered_us.load(Relaxed),
            ..Outage::default()
        };
        outage.finish();
        let mut report = Self {
            tool: "liveclass-load".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            partial,
            parts: vec![config.part],
            run: RunInfo {
                run_id: config.run_id.clone(),
                urls: config.urls.clone(),
                students: config.students,
                classes: config.classes,
                class_ids: (0..config.classes).map(|i| config.class_id(i)).collect(),
                teachers_per_class: config.teachers,
                members: config.total_members(),
                arrival: ArrivalInfo::of(&config.arrival),
                comment_rate_per_class: config.comment_rate,
                duration_s: config.duration.as_secs_f64(),
                send_from_start: config.send_from_start,
                split: config.split,
                source_ips: config.source_ips,
                started_unix_ms: facts.started_unix_ms,
                started_mono_us: facts.started_mono_us,
                window_start_mono_us: facts.window_start_us,
                window_end_mono_us: facts.window_end_us,
                max_p99_ms: config.max_p99.map(|d| d.as_secs_f64() * 1000.0),
                max_failed_attempts: config.max_failed_attempts,
                expect_refusal: config.expect_refusal.clone(),
            },
            connections: Connections {
                members,
                connected: c.first_connected.load(Relaxed),
                connected_at_start: c.connected_at_start.load(Relaxed),
                never_connected: members.saturating_sub(c.first_connected.load(Relaxed)),
                gave_up: c.gave_up.load(Relaxed),
                attempts: c.attempts.load(Relaxed),
                failed_attempts: c.failed_attempts.load(Relaxed),
                failed: shared.failures.snapshot(),
                failure_examples: shared.failure_examples.snapshot(),
                all_connected_s: 0.0,
                connect_ms: Percentiles::of_us(&connect),
                join_ms: Percentiles::of_us(&join),
                reconnects: c.reconnects.load(Relaxed),
                reconnect_frames: c.reconnect_frames.load(Relaxed),
                recovered_false: c.recovered_false.load(Relaxed),
                gap_frames: c.gap_frames.load(Relaxed),
                reconnect_ms: Percentiles::of_us(&reconnect),
                recovery_ms: Percentiles::of_us(&recovery),
                disconnects: shared.disconnects.snapshot(),
                outage,
                recovering_at_end: c.recovering.load(Relaxed),
            },
            comments: Comments {
                scheduled: shared
                    .classes
                    .iter()
                    .map(|cl| u64::from(cl.scheduled.load(Relaxed)))
                    .sum(),
                sent: c.comments_sent.load(Relaxed),
                resent: c.comments_resent.load(Relaxed),
                refused: shared.refused.snapshot(),
                skipped,
                error_frames: shared.error_frames.snapshot(),
                ..Comments::default()
            },
            deliveries: Deliveries {
                duplicated: c.duplicated.load(Relaxed),
                out_of_order: c.out_of_order.load(Relaxed),
                foreign: c.foreign.load(Relaxed),
                unparsed: c.unparsed.load(Relaxed),
                frames: c.received.load(Relaxed),
                reactions_frames: c.reactions_frames.load(Relaxed),
                in_window: InWindow {
                    received: in_window,
                    seconds: round3(window_s),
                    per_second: if window_s > 0.0 {
                        (in_window as f64 / window_s).round()
                    } else {
                        0.0
                    },
                },
                ..Deliveries::default()
            },
            latency_ms: Percentiles::of_us(&latency),
            latency_from_send_ms: Percentiles::of_us(&latency_send),
            sender_lateness_ms: Percentiles::of_us(&lateness),
            ok: false,
            failures: Vec::new(),
            interrupted: shared.interrupted.load(Relaxed),
            steps_s: facts.steps_s,
            machine: MachineLoad {
                loadavg_1m: Summary::of(&facts.loadavg),
                cpu_in_window: facts.cpu_in_window,
            },
            processes: vec![ProcessUsage::current(config.part)],
            timeline: facts.timeline,
            events: shared.events.snapshot(),
            histograms: Histograms {
                latency_us: dump(&latency),
                latency_from_send_us: dump(&latency_send),
                sender_lateness_us: dump(&lateness),
                connect_us: dump(&connect),
                join_us: dump(&join),
                reconnect_us: dump(&reconnect),
                recovery_us: dump(&recovery),
            },
            ledger: partial.then_some(ledger),
        };
        report.apply(acc);
        Ok(report)
    }

    fn apply(&mut self, acc: Accounting) {
        let cm = &mut self.comments;
        cm.accepted = acc.comments_accepted;
        cm.unconfirmed = acc.comments_unconfirmed;
        cm.void = acc.comments_void;
        cm.refused_unexpected = acc.comments_refused;
        let d = &mut self.deliveries;
        d.expected = acc.expected;
        d.received = acc.received;
        d.lost = acc.lost;
        d.extra = acc.extra;
        d.unknown = acc.unknown;
        d.comments_with_loss = acc.comments_with_loss;
        let cn = &mut self.connections;
        cn.all_connected_s = if cn.outage.last_first_hello_us > self.run.started_mono_us {
            round3((cn.outage.last_first_hello_us - self.run.started_mono_us) as f64 / 1e6)
        } else {
            0.0
        };
        self.failures = self.failures();
        self.ok = self.failures.is_empty();
    }

    /// Every reason this run is not clean.
    pub fn failures(&self) -> Vec<String> {
        let (r, c, m, d) = (
            &self.run,
            &self.connections,
            &self.comments,
            &self.deliveries,
        );
        let mut out = Vec::new();
        let mut check = |bad: bool, why: String| {
            if bad {
                out.push(why);
            }
        };
        check(self.interrupted, "the run was interrupted".into());
        check(
            c.never_connected > 0,
            format!(
                "{} of {} members never connected",
                c.never_connected, c.members
            ),
        );
        check(
            !r.send_from_start && c.connected_at_start < c.connected,
            format!(
                "{} members were not connected yet when sending started",
                c.connected - c.connected_at_start
            ),
        );
        check(
            c.gave_up > 0,
            format!("{} members gave up reconnecting", c.gave_up),
        );
        check(
            c.recovering_at_end > 0 && !self.partial,
            format!(
                "{} members had not caught up by the end",
                c.recovering_at_end
            ),
        );
        if let Some(max) = r.max_failed_attempts {
            check(
                c.failed_attempts > max,
                format!(
                    "{} connection attempts failed (at most {max} allowed): {}",
                    c.failed_attempts,
                    tally(&c.failed)
                ),
            );
        }
        check(
            c.recovered_false > 0,
            format!(
                "{} reconnections could not recover (recovered:false)",
                c.recovered_false
            ),
        );
        check(c.gap_frames > 0, format!("{} gap frames", c.gap_frames));
        let skipped: u64 = m.skipped.values().sum();
        check(
            skipped > 0,
            format!(
                "{skipped} scheduled comments were never sent: {}",
                tally(&m.skipped)
            ),
        );
        check(
            r.comment_rate_per_class > 0.0 && r.students > 0 && m.sent == 0 && !self.partial,
            "no comment was sent".into(),
        );
        check(
            m.refused_unexpected > 0,
            format!(
                "{} comments refused with codes the scenario did not ask for: {}",
                m.refused_unexpected,
                tally(&m.refused)
            ),
        );
        let unexpected_errors: BTreeMap<String, u64> = m
            .error_frames
            .iter()
            .filter(|(code, _)| !r.expect_refusal.contains(code))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        check(
            !unexpected_errors.is_empty(),
            format!("error frames: {}", tally(&unexpected_errors)),
        );
        check(d.lost > 0, format!("{} deliveries lost", d.lost));
        check(
            d.duplicated > 0,
            format!("{} deliveries duplicated", d.duplicated),
        );
        check(
            d.out_of_order > 0,
            format!("{} deliveries out of order", d.out_of_order),
        );
        check(
            d.unknown > 0,
            format!("{} comments received that no part sent", d.unknown),
        );
        check(
            d.unparsed > 0,
            format!("{} frames were not protocol frames", d.unparsed),
        );
        if let Some(max) = r.max_p99_ms {
            check(
                self.latency_ms.p99 > max,
                format!(
                    "p99 latency {} ms from the intended send time is over {max} ms",
                    self.latency_ms.p99
                ),
            );
        }
        out
    }

    /// Merges the reports of all parts of a split run (each written with `--json`).
    pub fn merge(parts: Vec<Report>) -> Result<Report, LoadError> {
        let bad = |m: String| Err(LoadError::Merge(m));
        let Some(first) = parts.first() else {
            return bad("no reports to merge".into());
        };
        let (run_id, split) = (first.run.run_id.clone(), first.run.split);
        let mut covered = vec![false; split as usize];
        for p in &parts {
            if p.run.run_id != run_id || p.run.split != split {
                return bad(format!(
                    "reports of different runs: {}/{} and {}/{}",
                    run_id, split, p.run.run_id, p.run.split
                ));
            }
            if p.ledger.is_none() {
                return bad(format!(
                    "the report of part(s) {:?} has no ledger (was it a --split run?)",
                    p.parts
                ));
            }
            for &part in &p.parts {
                match covered.get_mut(part as usize) {
                    Some(seen) if !*seen => *seen = true,
                    Some(_) => return bad(format!("part {part} is in two reports")),
                    None => return bad(format!("part {part} is not in 0..{split}")),
                }
            }
        }
        if let Some(missing) = covered.iter().position(|c| !c) {
            return bad(format!("part {missing} of {split} is missing"));
        }
        let ledgers: Vec<&Ledger> = parts.iter().filter_map(|p| p.ledger.as_ref()).collect();
        let acc = account(&ledgers, false);
        let mut out = first.clone();
        out.partial = false;
        out.parts = (0..split).collect();
        out.ledger = None;
        out.connections = Connections::default();
        out.comments = Comments::default();
        out.deliveries = Deliveries::default();
        out.interrupted = false;
        out.processes.clear();
        out.timeline.clear();
        out.events.clear();
        out.steps_s.clear();
        out.run.started_unix_ms = u64::MAX;
        out.run.started_mono_us = u64::MAX;
        let mut timeline: BTreeMap<u64, Sample> = BTreeMap::new();
        let mut loadavg_means = Vec::new();
        let mut loadavg = first.machine.loadavg_1m;
        let mut in_window_rate = 0.0;
        let mut hists: Vec<Histogram<u64>> = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            out.run.started_unix_ms = out.run.started_unix_ms.min(p.run.started_unix_ms);
            out.run.started_mono_us = out.run.started_mono_us.min(p.run.started_mono_us);
            out.run.window_start_mono_us =
                out.run.window_start_mono_us.min(p.run.window_start_mono_us);
            out.run.window_end_mono_us = out.run.window_end_mono_us.max(p.run.window_end_mono_us);
            let (c, pc) = (&mut out.connections, &p.connections);
            c.members += pc.members;
            c.connected += pc.connected;
            c.connected_at_start += pc.connected_at_start;
            c.never_connected += pc.never_connected;
            c.gave_up += pc.gave_up;
            c.attempts += pc.attempts;
            c.failed_attempts += pc.failed_attempts;
            c.reconnects += pc.reconnects;
            c.reconnect_frames += pc.reconnect_frames;
            c.recovered_false += pc.recovered_false;
            c.gap_frames += pc.gap_frames;
            c.recovering_at_end += pc.recovering_at_end;
            add_maps(&mut c.failed, &pc.failed);
            add_maps(&mut c.disconnects, &pc.disconnects);
            for (k, v) in &pc.failure_examples {
                c.failure_examples
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
            c.outage.merge(&pc.outage);
            let (cm, pm) = (&mut out.comments, &p.comments);
            cm.scheduled += pm.scheduled;
            cm.sent += pm.sent;
            cm.resent += pm.resent;
            add_maps(&mut cm.refused, &pm.refused);
            add_maps(&mut cm.skipped, &pm.skipped);
            add_maps(&mut cm.error_frames, &pm.error_frames);
            let (d, pd) = (&mut out.deliveries, &p.deliveries);
            d.duplicated += pd.duplicated;
            d.out_of_order += pd.out_of_order;
            d.foreign += pd.foreign;
            d.unparsed += pd.unparsed;
            d.frames += pd.frames;
            d.reactions_frames += pd.reactions_frames;
            d.in_window.received += pd.in_window.received;
            d.in_window.seconds = d.in_window.seconds.max(pd.in_window.seconds);
            if pd.in_window.seconds > 0.0 {
                in_window_rate += pd.in_window.received as f64 / pd.in_window.seconds;
            }
            out.interrupted |= p.interrupted;
            out.processes.extend(p.processes.iter().cloned());
            for (step, s) in &p.steps_s {
                let e = out.steps_s.entry(step.clone()).or_insert(0.0);
                *e = e.max(*s);
            }
            for s in &p.timeline {
                let e = timeline.entry(s.t_s).or_insert(Sample {
                    t_s: s.t_s,
                    connected: 0,
                    live: 0,
                    sent: 0,
                    received: 0,
                    reconnects: 0,
                });
                e.connected += s.connected;
                e.live += s.live;
                e.sent += s.sent;
                e.received += s.received;
                e.reconnects += s.reconnects;
            }
            add_buckets(&mut out.events, &p.events);
            let l = &p.machine.loadavg_1m;
            if l.samples > 0 {
                loadavg_means.push(l.mean);
                loadavg.min = loadavg.min.min(l.min);
                loadavg.max = loadavg.max.max(l.max);
            }
            for (j, (_, pairs)) in p.histograms.named().into_iter().enumerate() {
                let h = load(pairs)?;
                if i == 0 {
                    hists.push(h);
                } else if let Some(into) = hists.get_mut(j) {
                    into.add(&h)
                        .map_err(|e| LoadError::Merge(format!("histogram: {e}")))?;
                }
            }
        }
        out.deliveries.in_window.per_second = in_window_rate.round();
        out.timeline = timeline.into_values().collect();
        loadavg.mean = if loadavg_means.is_empty() {
            0.0
        } else {
            (loadavg_means.iter().sum::<f64>() / loadavg_means.len() as f64 * 100.0).round() / 100.0
        };
        out.machine.loadavg_1m = loadavg;
        out.connections.outage.finish();
        let get = |j: usize| hists.get(j).map(Percentiles::of_us).unwrap_or_default();
        out.latency_ms = get(0);
        out.latency_from_send_ms = get(1);
        out.sender_lateness_ms = get(2);
        out.connections.connect_ms = get(3);
        out.connections.join_ms = get(4);
        out.connections.reconnect_ms = get(5);
        out.connections.recovery_ms = get(6);
        let pairs = |j: usize| hists.get(j).map(dump).unwrap_or_default();
        out.histograms = Histograms {
            latency_us: pairs(0),
            latency_from_send_us: pairs(1),
            sender_lateness_us: pairs(2),
            connect_us: pairs(3),
            join_us: pairs(4),
            reconnect_us: pairs(5),
            recovery_us: pairs(6),
        };
        out.apply(acc);
        Ok(out)
    }

    /// Event counts of `kind` relative to the first event of `from_kind`, as
    /// `(ms after it, count)`: e.g. reconnections after the first `reconnect` frame.
    pub fn events_after(&self, kind: &str, from_kind: &str) -> Vec<(u64, u64)> {
        let Some(origin) = self
            .events
            .get(from_kind)
            .and_then(|b| b.first())
            .map(|b| b[0])
        else {
            return Vec::new();
        };
        self.events
            .get(kind)
            .map(|b| {
                b.iter()
                    .filter(|[t, _]| *t >= origin)
                    .map(|[t, n]| (t - origin, *n))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Quantiles of event times given as `(ms, count)` buckets of [`EVENT_BUCKET_MS`].
pub fn bucket_quantiles(buckets: &[(u64, u64)], quantiles: &[f64]) -> Vec<f64> {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    quantiles
        .iter()
        .map(|q| {
            if total == 0 {
                return 0.0;
            }
            let target = (q * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for &(t, n) in buckets {
                seen += n;
                if seen >= target {
                    return (t + EVENT_BUCKET_MS) as f64 / 1000.0;
                }
            }
            buckets
                .last()
                .map_or(0.0, |b| (b.0 + EVENT_BUCKET_MS) as f64 / 1000.0)
        })
        .collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn tally(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {} ms (n={})",
            self.p50, self.p90, self.p99, self.p99_9, self.max, self.count
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, c, m, d) = (
            &self.run,
            &self.connections,
            &self.comments,
            &self.deliveries,
        );
        let title = if self.partial {
            format!(
                "liveclass-load report — part {:?} of {} (partial: merge the parts)",
                self.parts, r.split
            )
        } else {
            "liveclass-load report".to_string()
        };
        writeln!(f, "{title}")?;
        writeln!(
            f,
            "  run          {} · {} students in {} class(es) + {} teacher(s) each · {} comments/s per class for {}s",
            r.run_id,
            r.students,
            r.classes,
            r.teachers_per_class,
            r.comment_rate_per_class,
            r.duration_s
        )?;
        writeln!(
            f,
            "  connected    {} of {} ({} at the start of sending), all within {:.2}s · never connected {} · gave up {}",
            c.connected,
            c.members,
            c.connected_at_start,
            c.all_connected_s,
            c.never_connected,
            c.gave_up
        )?;
        writeln!(
            f,
            "  attempts     {} · failed {}: {}",
            c.attempts,
            c.failed_attempts,
            tally(&c.failed)
        )?;
        for (reason, message) in &c.failure_examples {
            writeln!(f, "               {reason}: {message}")?;
        }
        writeln!(f, "  connect time {}", c.connect_ms)?;
        writeln!(f, "  join time    {} (from the planned arrival)", c.join_ms)?;
        writeln!(
            f,
            "  reconnects   {} (reconnect frames {}, recovered:false {}, gaps {}) · disconnects: {}",
            c.reconnects,
            c.reconnect_frames,
            c.recovered_false,
            c.gap_frames,
            tally(&c.disconnects)
        )?;
        if c.reconnects > 0 {
            writeln!(f, "  back in      {}", c.reconnect_ms)?;
            writeln!(f, "  caught up in {}", c.recovery_ms)?;
            writeln!(
                f,
                "  outage       everyone back {:.3}s and caught up {:.3}s after the first drop",
                c.outage.all_back_s, c.outage.all_recovered_s
            )?;
        }
        writeln!(
            f,
            "  comments     scheduled {} · sent {} · resent {} · accepted {} · void {} · refused {} · skipped {}",
            m.scheduled,
            m.sent,
            m.resent,
            m.accepted,
            m.void,
            m.refused_unexpected,
            m.skipped.values().sum::<u64>()
        )?;
        writeln!(f, "               error frames: {}", tally(&m.error_frames))?;
        writeln!(
            f,
            "  deliveries   expected {} · received {} · lost {} · duplicated {} · out of order {}",
            d.expected, d.received, d.lost, d.duplicated, d.out_of_order
        )?;
        writeln!(
            f,
            "               extra {} · foreign {} · unknown {} · {:.0}/s measured in the {:.1}s sending window",
            d.extra, d.foreign, d.unknown, d.in_window.per_second, d.in_window.seconds
        )?;
        writeln!(
            f,
            "  latency      {} (from the intended send time)",
            self.latency_ms
        )?;
        writeln!(
            f,
            "               {} (from the actual send)",
            self.latency_from_send_ms
        )?;
        writeln!(f, "  senders late {}", self.sender_lateness_ms)?;
        let l = &self.machine.loadavg_1m;
        writeln!(
            f,
            "  machine      load average {:.2}–{:.2} (mean {:.2}) · CPU in window: user {:.0}% system {:.0}% softirq {:.0}% idle {:.0}%",
            l.min,
            l.max,
            l.mean,
            self.machine.cpu_in_window.user * 100.0,
            self.machine.cpu_in_window.system * 100.0,
            self.machine.cpu_in_window.softirq * 100.0,
            self.machine.cpu_in_window.idle * 100.0
        )?;
        let verdict = match (self.ok, self.partial) {
            (true, true) => "OK so far (partial)".to_string(),
            (true, false) if m.accepted == 0 => {
                "OK: every member connected (no comments were sent)".to_string()
            }
            (true, false) => "OK: every member got every comment exactly once, in order".into(),
            (false, _) => format!("NOT OK: {}", self.failures.join("; ")),
        };
        write!(f, "  result       {verdict}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_event_buckets() {
        let buckets = [(0, 1), (100, 2), (2000, 1)];
        let q = bucket_quantiles(&buckets, &[0.25, 0.5, 1.0]);
        assert_eq!(q, vec![0.01, 0.11, 2.01]);
        assert_eq!(bucket_quantiles(&[], &[0.5]), vec![0.0]);
    }
}
