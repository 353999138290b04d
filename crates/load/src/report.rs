//! The final report: built from one process's state, or merged from the JSON reports of the
//! parts of a split run. `--json` writes exactly this structure.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::LoadError;
use crate::ledger::{Accounting, Ledger, account};
use crate::state::{Shared, new_histogram};

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
    /// Delivery latency: receive time minus send time, both on this machine's clock.
    pub latency_ms: Percentiles,
    /// Whether every member connected and every comment reached every member exactly once, in
    /// order.
    pub ok: bool,
    pub interrupted: bool,
    /// CPU and memory of each load-generator process of the run (one per part).
    pub processes: Vec<ProcessUsage>,
    /// Raw histograms as `[value_us, count]` pairs, so reports can be merged (only in the
    /// reports of the parts of a split run, unless asked for).
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
    pub teachers_per_class: u32,
    pub members: u64,
    pub ramp_per_s: f64,
    pub comment_rate_per_class: f64,
    pub duration_s: f64,
    pub split: u32,
    pub source_ips: u8,
    pub started_unix_ms: u64,
    /// With `--max-p99`: the run is only ok when the p99 delivery latency is at most this.
    #[serde(default)]
    pub max_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connections {
    /// Members held by the process(es) of this report.
    pub members: u64,
    /// Members that received `hello` at least once.
    pub connected: u64,
    /// Members that gave up before their first `hello`.
    pub never_connected: u64,
    /// Members that connected, lost the connection and gave up reconnecting.
    pub gave_up: u64,
    pub attempts: u64,
    /// Failed attempts by reason: `http_<status>`, `io_refused`, `io_reset`, `timeout`, …
    pub failed: BTreeMap<String, u64>,
    /// Seconds from the first connection attempt to the last member's first `hello`.
    pub ramp_s: f64,
    /// Time of one attempt that succeeded: TCP connect, upgrade and `hello`.
    pub connect_ms: Percentiles,
    /// Successful reconnections (after a drop or a `reconnect` frame).
    pub reconnects: u64,
    pub reconnect_frames: u64,
    /// Reconnections whose `hello` said `recovered:false` (history trimmed).
    pub recovered_false: u64,
    /// Ends of established connections by reason: `close_<code>`, `reconnect_frame`, `io_reset`, …
    pub disconnects: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comments {
    /// Comment frames written.
    pub sent: u64,
    /// Accepted by the servers (sent and not void).
    pub accepted: u64,
    /// Sender dropped before its echo and nobody received it: not counted in deliveries.
    pub void: u64,
    /// Scheduled but not sent (no connected student to send it, or over the run's slots).
    pub skipped: u64,
    /// `error` frames received, by code (e.g. `rate_limited`).
    pub error_frames: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deliveries {
    /// Member × comment pairs that had to arrive: every member connected (first `hello`) before
    /// the comment was sent, including members that reconnect later (they recover with `since`).
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    /// Copies of a comment a member already had.
    pub duplicated: u64,
    /// Comments whose message id was not larger than one the member had already received.
    pub out_of_order: u64,
    /// Deliveries not required (the member joined after the send) but received.
    pub extra: u64,
    /// Comment frames that were not this run's (another run's, or without a `ref`).
    pub foreign: u64,
    /// Received comments no part's ledger says were sent (a merge missing a part).
    pub unknown: u64,
    /// Accepted comments that some expecting member did not get.
    pub comments_with_loss: u64,
    /// Frames that were not JSON.
    pub unparsed: u64,
    /// Comment frames received in all, duplicates included.
    pub frames: u64,
    /// Seconds of sending.
    pub run_s: f64,
    /// (received + extra) / run_s.
    pub per_second: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    fn of_us(h: &Histogram<u64>) -> Self {
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Histograms {
    pub latency_us: Vec<[u64; 2]>,
    pub connect_us: Vec<[u64; 2]>,
}

fn dump(h: &Histogram<u64>) -> Vec<[u64; 2]> {
    h.iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

fn load(pairs: &[[u64; 2]], into: &mut Histogram<u64>) {
    for &[value, count] in pairs {
        into.saturating_record_n(value.clamp(1, crate::state::HIST_MAX_US), count);
    }
}

fn add_maps(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

impl Report {
    pub(crate) fn build(
        shared: &Shared,
        started_unix_ms: u64,
        ramp_s: f64,
        run_s: f64,
    ) -> Result<Self, LoadError> {
        let config = &shared.config;
        let c = &shared.counters;
        let ledger = Ledger::from_shared(shared);
        let partial = config.split > 1;
        let acc = account(&[&ledger], partial);
        let latency = shared.latency_us.merged()?;
        let connect = shared.connect_us.merged()?;
        let members = config.local_members().len() as u64;
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
                teachers_per_class: config.teachers,
                members: config.total_members(),
                ramp_per_s: config.ramp,
                comment_rate_per_class: config.comment_rate,
                duration_s: config.duration.as_secs_f64(),
                split: config.split,
                source_ips: config.source_ips,
                started_unix_ms,
                max_p99_ms: config.max_p99.map(|d| d.as_secs_f64() * 1000.0),
            },
            connections: Connections {
                members,
                connected: c.first_connected.load(Relaxed),
                never_connected: members.saturating_sub(c.first_connected.load(Relaxed)),
                gave_up: c.gave_up.load(Relaxed),
                attempts: c.attempts.load(Relaxed),
                failed: shared.failures.snapshot(),
                ramp_s: round3(ramp_s),
                connect_ms: Percentiles::of_us(&connect),
                reconnects: c.reconnects.load(Relaxed),
                reconnect_frames: c.reconnect_frames.load(Relaxed),
                recovered_false: c.recovered_false.load(Relaxed),
                disconnects: shared.disconnects.snapshot(),
            },
            comments: Comments {
                sent: c.comments_sent.load(Relaxed),
                accepted: 0,
                void: 0,
                skipped: c.comments_skipped.load(Relaxed),
                error_frames: shared.error_frames.snapshot(),
            },
            deliveries: Deliveries {
                expected: 0,
                received: 0,
                lost: 0,
                duplicated: c.duplicated.load(Relaxed),
                out_of_order: c.out_of_order.load(Relaxed),
                extra: 0,
                foreign: c.foreign.load(Relaxed),
                unknown: 0,
                comments_with_loss: 0,
                unparsed: c.unparsed.load(Relaxed),
                frames: c.received.load(Relaxed),
                run_s: round3(run_s),
                per_second: 0.0,
            },
            latency_ms: Percentiles::of_us(&latency),
            ok: false,
            interrupted: shared.interrupted.load(Relaxed),
            processes: vec![ProcessUsage::current(config.part)],
            histograms: Histograms {
                latency_us: dump(&latency),
                connect_us: dump(&connect),
            },
            ledger: partial.then_some(ledger),
        };
        report.apply(acc);
        Ok(report)
    }

    fn apply(&mut self, acc: Accounting) {
        self.comments.accepted = acc.comments_accepted;
        self.comments.void = acc.comments_void;
        let d = &mut self.deliveries;
        d.expected = acc.expected;
        d.received = acc.received;
        d.lost = acc.lost;
        d.extra = acc.extra;
        d.unknown = acc.unknown;
        d.comments_with_loss = acc.comments_with_loss;
        d.per_second = if d.run_s > 0.0 {
            ((d.received + d.extra) as f64 / d.run_s).round()
        } else {
            0.0
        };
        self.ok = d.lost == 0
            && d.duplicated == 0
            && d.out_of_order == 0
            && d.unknown == 0
            && self.connections.never_connected == 0
            && self.connections.gave_up == 0
            && !self.interrupted
            && self
                .run
                .max_p99_ms
                .is_none_or(|max| self.latency_ms.p99 <= max);
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
        let mut latency = new_histogram()?;
        let mut connect = new_histogram()?;
        let mut out = first.clone();
        out.partial = false;
        out.parts = (0..split).collect();
        out.ledger = None;
        out.run.started_unix_ms = parts
            .iter()
            .map(|p| p.run.started_unix_ms)
            .min()
            .unwrap_or(0);
        let (cn, cm, dl) = (&mut out.connections, &mut out.comments, &mut out.deliveries);
        *cn = Connections {
            failed: BTreeMap::new(),
            disconnects: BTreeMap::new(),
            ..zero_connections()
        };
        cm.sent = 0;
        cm.skipped = 0;
        cm.error_frames.clear();
        dl.duplicated = 0;
        dl.out_of_order = 0;
        dl.foreign = 0;
        dl.unparsed = 0;
        dl.frames = 0;
        dl.run_s = 0.0;
        out.interrupted = false;
        for p in &parts {
            let (c, pc) = (&mut out.connections, &p.connections);
            c.members += pc.members;
            c.connected += pc.connected;
            c.never_connected += pc.never_connected;
            c.gave_up += pc.gave_up;
            c.attempts += pc.attempts;
            c.reconnects += pc.reconnects;
            c.reconnect_frames += pc.reconnect_frames;
            c.recovered_false += pc.recovered_false;
            c.ramp_s = c.ramp_s.max(pc.ramp_s);
            add_maps(&mut c.failed, &pc.failed);
            add_maps(&mut c.disconnects, &pc.disconnects);
            out.comments.sent += p.comments.sent;
            out.comments.skipped += p.comments.skipped;
            add_maps(&mut out.comments.error_frames, &p.comments.error_frames);
            let (d, pd) = (&mut out.deliveries, &p.deliveries);
            d.duplicated += pd.duplicated;
            d.out_of_order += pd.out_of_order;
            d.foreign += pd.foreign;
            d.unparsed += pd.unparsed;
            d.frames += pd.frames;
            d.run_s = d.run_s.max(pd.run_s);
            out.interrupted |= p.interrupted;
            if !std::ptr::eq(p, first) {
                out.processes.extend(p.processes.iter().cloned());
            }
            load(&p.histograms.latency_us, &mut latency);
            load(&p.histograms.connect_us, &mut connect);
        }
        out.latency_ms = Percentiles::of_us(&latency);
        out.connections.connect_ms = Percentiles::of_us(&connect);
        out.histograms = Histograms {
            latency_us: dump(&latency),
            connect_us: dump(&connect),
        };
        out.apply(acc);
        Ok(out)
    }
}

fn zero_connections() -> Connections {
    Connections {
        members: 0,
        connected: 0,
        never_connected: 0,
        gave_up: 0,
        attempts: 0,
        failed: BTreeMap::new(),
        ramp_s: 0.0,
        connect_ms: Percentiles::default(),
        reconnects: 0,
        reconnect_frames: 0,
        recovered_false: 0,
        disconnects: BTreeMap::new(),
    }
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
            "  connected    {} of {} in {:.2}s · never connected {} · gave up {} · attempts {}",
            c.connected, c.members, c.ramp_s, c.never_connected, c.gave_up, c.attempts
        )?;
        writeln!(f, "  failed       {}", tally(&c.failed))?;
        writeln!(f, "  connect time {}", c.connect_ms)?;
        writeln!(
            f,
            "  reconnects   {} (reconnect frames {}, recovered:false {}) · disconnects: {}",
            c.reconnects,
            c.reconnect_frames,
            c.recovered_false,
            tally(&c.disconnects)
        )?;
        writeln!(
            f,
            "  comments     sent {} · accepted {} · void {} · skipped {} · error frames: {}",
            m.sent,
            m.accepted,
            m.void,
            m.skipped,
            tally(&m.error_frames)
        )?;
        writeln!(
            f,
            "  deliveries   expected {} · received {} · lost {} · duplicated {} · out of order {}",
            d.expected, d.received, d.lost, d.duplicated, d.out_of_order
        )?;
        writeln!(
            f,
            "               extra {} · foreign {} · unknown {} · {:.0}/s over {:.1}s",
            d.extra, d.foreign, d.unknown, d.per_second, d.run_s
        )?;
        writeln!(f, "  latency      {}", self.latency_ms)?;
        if let Some(max) = r.max_p99_ms {
            let verdict = if self.latency_ms.p99 <= max {
                "met"
            } else {
                "MISSED"
            };
            writeln!(f, "  p99 target   ≤ {max} ms: {verdict}")?;
        }
        let verdict = match (self.ok, self.partial, self.interrupted) {
            (_, _, true) => "INTERRUPTED",
            (true, true, _) => "OK so far (partial)",
            (true, false, _) if m.accepted == 0 => {
                "OK: every member connected (no comments were sent)"
            }
            (true, false, _) => "OK: every member got every comment exactly once, in order",
            (false, _, _) => "NOT OK",
        };
        write!(f, "  result       {verdict}")
    }
}
