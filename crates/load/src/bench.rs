//! Benchmark results: the file a `bench/*.sh` run leaves in `bench/results/` ([`BenchResult`],
//! assembled by `liveclass-load record` from what the script measured), and
//! `bench/RESULTS.md`, rendered from those files only ([`render`]) so the two cannot disagree.
//!
//! A result file records one run of one scenario variant: the exact command, the commit and
//! whether the tree was dirty, the versions of Caddy, Redis and rustc, the machine and its load,
//! wall time per step, the CPU of every process over the sending window, the calibration figure
//! measured in the same run ([`crate::calibrate`]) and the load generator's full report.
//! [`render`] groups the runs of each variant and gives the median and the spread of each
//! figure, absolutely and as a ratio to the calibration.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::LoadError;
use crate::calibrate::Calibration;
use crate::report::{Report, bucket_quantiles};

/// The version of the result format; files of another version are refused by [`render`].
pub const SCHEMA: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    pub schema: u32,
    pub scenario: String,
    /// The scenario's parameters as one name, e.g. `8000-students/10-per-s`: runs with the
    /// same variant are repetitions of one figure.
    pub variant: String,
    pub params: BTreeMap<String, Value>,
    pub recorded_at: String,
    pub git: GitInfo,
    pub versions: BTreeMap<String, String>,
    pub machine: MachineInfo,
    pub loadavg_1m_before: Option<f64>,
    pub command: String,
    pub nice: i32,
    /// Wall time of each step of the script, s.
    pub steps_s: BTreeMap<String, f64>,
    pub processes: Vec<ProcessFigure>,
    /// Scenario-specific figures measured by the script (e.g. `caddy_kib_per_connection`).
    pub figures: BTreeMap<String, f64>,
    pub calibration: Option<Calibration>,
    /// The raw histograms, as an HdrHistogram interval log next to this file.
    pub hdr_log: Option<String>,
    pub load: Option<Report>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GitInfo {
    pub commit: String,
    /// Tracked files differed from the commit when the run was made.
    pub dirty: bool,
    pub dirty_paths: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cores: usize,
    pub memory_kib: u64,
    pub cpu: String,
    pub kernel: String,
    pub open_files_hard_limit: u64,
}

/// One process of the stack (or the load generator), as the script measured it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessFigure {
    pub name: String,
    /// CPU seconds inside the sending window (or the scenario's measuring window).
    pub cpu_s_window: f64,
    /// CPU seconds over the whole run.
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub max_rss_kib: u64,
}

/// Flags of `liveclass-load record`.
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    #[arg(long)]
    pub scenario: String,
    #[arg(long)]
    pub variant: String,
    /// A parameter of the run, `name=value` (repeat).
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// The exact command that was run.
    #[arg(long)]
    pub command: String,
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub nice: i32,
    /// Wall time of a step, `name=seconds` (repeat).
    #[arg(long = "step")]
    pub steps: Vec<String>,
    /// A process, `name=cpu_s_window,cpu_s,rss_kib,max_rss_kib` (repeat).
    #[arg(long = "process")]
    pub processes: Vec<String>,
    /// A figure the script measured, `name=number` (repeat).
    #[arg(long = "figure")]
    pub figures: Vec<String>,
    /// A version string, `name=text` (repeat): caddy, redis, rustc, ...
    #[arg(long = "version-of")]
    pub versions: Vec<String>,
    #[arg(long)]
    pub loadavg_before: Option<f64>,
    /// The calibration's JSON (`liveclass-load calibrate --json`).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// The load generator's JSON report.
    #[arg(long)]
    pub load: Option<PathBuf>,
    /// The HdrHistogram interval log written next to the result (its file name is recorded).
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// The repository, for the commit and whether the tree is dirty.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Where to write the result.
    #[arg(long)]
    pub out: PathBuf,
}

fn split_pair<'a>(flag: &str, text: &'a str) -> Result<(&'a str, &'a str), LoadError> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| LoadError::Config(format!("--{flag} {text:?}: expected name=value")))
}

fn number(flag: &str, text: &str) -> Result<f64, LoadError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| LoadError::Config(format!("--{flag}: {text:?} is not a number")))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let file_error = |message: String| LoadError::File {
        path: path.display().to_string(),
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| file_error(format!("not the expected JSON: {e}")))
}

/// The commit of `repo` and whether its tracked files differ from it.
pub fn git_info(repo: &Path) -> GitInfo {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).map_or_else(|| "unknown".into(), |s| s.trim().into());
    let status = git(&["status", "--porcelain", "--untracked-files=no"]).unwrap_or_default();
    let dirty_paths: Vec<String> = status
        .lines()
        .filter_map(|l| l.get(3..))
        .map(str::to_string)
        .collect();
    GitInfo {
        commit,
        dirty: !dirty_paths.is_empty(),
        dirty_paths: dirty_paths.into_iter().take(50).collect(),
    }
}

/// Cores, memory, CPU model, kernel and the open-file hard limit of this machine.
pub fn machine_info() -> MachineInfo {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let cpuinfo = read("/proc/cpuinfo");
    MachineInfo {
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        memory_kib: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0),
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(String::new, |(_, v)| v.trim().to_string()),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        open_files_hard_limit: rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(_, h)| h),
    }
}

/// Assembles a result file from what a benchmark script measured.
pub fn record(args: &RecordArgs) -> Result<BenchResult, LoadError> {
    let mut params = BTreeMap::new();
    for p in &args.params {
        let (k, v) = split_pair("param", p)?;
        let value = v
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(v.to_string()), Value::Number);
        params.insert(k.to_string(), value);
    }
    let mut steps_s = BTreeMap::new();
    for s in &args.steps {
        let (k, v) = split_pair("step", s)?;
        steps_s.insert(k.to_string(), number("step", v)?);
    }
    let mut figures = BTreeMap::new();
    for f in &args.figures {
        let (k, v) = split_pair("figure", f)?;
        figures.insert(k.to_string(), number("figure", v)?);
    }
    let mut versions = BTreeMap::new();
    for v in &args.versions {
        let (k, text) = split_pair("version-of", v)?;
        versions.insert(k.to_string(), text.trim().to_string());
    }
    let mut processes = Vec::new();
    for p in &args.processes {
        let (name, values) = split_pair("process", p)?;
        let v: Vec<&str> = values.split(',').collect();
        let [window, total, rss, hwm] = v.as_slice() else {
            return Err(LoadError::Config(format!(
                "--process {p:?}: expected name=cpu_s_window,cpu_s,rss_kib,max_rss_kib"
            )));
        };
        processes.push(ProcessFigure {
            name: name.to_string(),
            cpu_s_window: number("process", window)?,
            cpu_s: number("process", total)?,
            rss_kib: number("process", rss)? as u64,
            max_rss_kib: number("process", hwm)? as u64,
        });
    }
    Ok(BenchResult {
        schema: SCHEMA,
        scenario: args.scenario.clone(),
        variant: args.variant.clone(),
        params,
        recorded_at: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        git: git_info(&args.repo),
        versions,
        machine: machine_info(),
        loadavg_1m_before: args.loadavg_before,
        command: args.command.clone(),
        nice: args.nice,
        steps_s,
        processes,
        figures,
        calibration: args.calibration.as_deref().map(read_json).transpose()?,
        hdr_log: args
            .hdr_log
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().to_string()),
        load: args.load.as_deref().map(read_json).transpose()?,
    })
}

/// A file in the results folder: a benchmark result, or a figure file another tool wrote in its
/// own flat format (e.g. `bench/operator-1000.sh`), shown as it is.
#[derive(Debug, Clone)]
pub enum ResultFile {
    Bench(Box<BenchResult>),
    /// A result of the load generator before issue #15 (`git` a short commit string, no
    /// `schema`): its latency is from the actual send, its `clean` ignored void and skipped
    /// comments, its deliveries per second were derived. Shown apart, with those caveats.
    Previous(serde_json::Map<String, Value>),
    Other(serde_json::Map<String, Value>),
}

/// Scenarios the previous load generator recorded.
const PREVIOUS_SCENARIOS: &[&str] = &["class-8k", "fanout-max", "idle-memory"];

fn is_previous(map: &serde_json::Map<String, Value>) -> bool {
    map.get("git").is_some_and(Value::is_string)
        && map
            .get("scenario")
            .and_then(Value::as_str)
            .is_some_and(|s| PREVIOUS_SCENARIOS.contains(&s))
}

/// Every result file under `dir`, sorted by path (relative to `dir`).
pub fn read_results(dir: &Path) -> Result<Vec<(PathBuf, ResultFile)>, LoadError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| LoadError::File {
            path: d.display().to_string(),
            message: format!("cannot list: {e}"),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let value: Value = read_json(&path)?;
        let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
        let file = match value {
            Value::Object(map)
                if map.get("schema").and_then(Value::as_u64) == Some(u64::from(SCHEMA)) =>
            {
                let result: BenchResult =
                    serde_json::from_value(Value::Object(map)).map_err(|e| LoadError::File {
                        path: path.display().to_string(),
                        message: format!("not a result file of schema {SCHEMA}: {e}"),
                    })?;
                ResultFile::Bench(Box::new(result))
            }
            Value::Object(map) if map.contains_key("schema") => {
                return Err(LoadError::File {
                    path: path.display().to_string(),
                    message: format!("result schema {:?} is not {SCHEMA}", map.get("schema")),
                });
            }
            Value::Object(map) if is_previous(&map) => ResultFile::Previous(map),
            Value::Object(map) => ResultFile::Other(map),
            _ => {
                return Err(LoadError::File {
                    path: path.display().to_string(),
                    message: "not a JSON object".into(),
                });
            }
        };
        out.push((rel, file));
    }
    Ok(out)
}

/// A figure of one run, by name; `None` where the run does not have it.
pub fn figure(r: &BenchResult, name: &str) -> Option<f64> {
    let load = r.load.as_ref();
    let calib = r.calibration.as_ref();
    let cpu = |prefix: &str| -> Option<f64> {
        let v: Vec<f64> = r
            .processes
            .iter()
            .filter(|p| p.name.starts_with(prefix))
            .map(|p| p.cpu_s_window)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    let in_window = || {
        load.map(|l| l.deliveries.in_window.received as f64)
            .filter(|n| *n > 0.0)
    };
    let per_delivery = |prefix: &str| Some(cpu(prefix)? / in_window()? * 1e6);
    let per_s = |cpu: &str, window: &str| {
        let w = r.figures.get(window).copied().filter(|w| *w > 0.0)?;
        Some(r.figures.get(cpu).copied()? / w)
    };
    let drain_spread = |q: f64| {
        let l = load?;
        let b = l.events_after("rehello", "reconnect_frame");
        (!b.is_empty()).then(|| bucket_quantiles(&b, &[q])[0])
    };
    let v = match name {
        "runs" => Some(1.0),
        "clean" => load.map(|l| f64::from(u8::from(l.ok))),
        "lost" => load.map(|l| l.deliveries.lost as f64),
        "duplicated" => load.map(|l| l.deliveries.duplicated as f64),
        "skipped" => load.map(|l| l.comments.skipped.values().sum::<u64>() as f64),
        "p50_ms" => load.map(|l| l.latency_ms.p50),
        "p99_ms" => load.map(|l| l.latency_ms.p99),
        "p99_send_ms" => load.map(|l| l.latency_from_send_ms.p99),
        "late_p99_ms" => load.map(|l| l.sender_lateness_ms.p99),
        "deliveries_per_s" => load.map(|l| l.deliveries.in_window.per_second),
        "loadavg" => load.map(|l| l.machine.loadavg_1m.mean),
        "connected" => load.map(|l| l.connections.connected as f64),
        "members" => load.map(|l| l.connections.members as f64),
        "failed_attempts" => load.map(|l| l.connections.failed_attempts as f64),
        "all_connected_s" => load.map(|l| l.connections.all_connected_s),
        "connect_p50_ms" => load.map(|l| l.connections.connect_ms.p50),
        "connect_p99_ms" => load.map(|l| l.connections.connect_ms.p99),
        "join_p99_ms" => load.map(|l| l.connections.join_ms.p99),
        "reconnects" => load.map(|l| l.connections.reconnects as f64),
        "all_back_s" => load.map(|l| l.connections.outage.all_back_s),
        "all_recovered_s" => load.map(|l| l.connections.outage.all_recovered_s),
        "reconnect_p99_ms" => load.map(|l| l.connections.reconnect_ms.p99),
        "drain_p10_s" => drain_spread(0.1),
        "drain_p50_s" => drain_spread(0.5),
        "drain_p90_s" => drain_spread(0.9),
        "drain_max_s" => drain_spread(1.0),
        "raw_p99_ms" => calib.map(|c| c.per_message.latency_ms.p99),
        "raw_coalesced_p99_ms" => calib.map(|c| c.coalesced.latency_ms.p99),
        "raw_us_per_delivery" => calib.map(|c| c.per_message.sender_cpu_us_per_delivery),
        "p99_vs_raw" => Some(figure(r, "p99_ms")? / figure(r, "raw_p99_ms")?.max(0.001)),
        "servers_us_per_delivery" => per_delivery("socket-"),
        "caddy_us_per_delivery" => per_delivery("caddy"),
        "load_us_per_delivery" => per_delivery("load"),
        "servers_vs_raw" => Some(
            figure(r, "servers_us_per_delivery")? / figure(r, "raw_us_per_delivery")?.max(1e-6),
        ),
        "survivors_cores" => per_s("survivors_cpu_s_storm", "storm_window_s"),
        "survivors_cores_before" => per_s("survivors_cpu_s_before", "before_window_s"),
        "redis_cores" => per_s("redis_cpu_s_storm", "storm_window_s"),
        "redis_cores_before" => per_s("redis_cpu_s_before", "before_window_s"),
        other => r.figures.get(other).copied(),
    };
    v.filter(|x| x.is_finite())
}

/// A column of a scenario's table: a figure ([`figure`]), or with `param` a parameter of the
/// runs shown as text (e.g. the gateway's stream buffer).
struct Column {
    title: &'static str,
    figure: &'static str,
    digits: usize,
    param: bool,
}

const fn col(title: &'static str, figure: &'static str, digits: usize) -> Column {
    Column {
        title,
        figure,
        digits,
        param: false,
    }
}

/// A column showing the parameter `name` of the runs as text.
const fn param_col(title: &'static str, name: &'static str) -> Column {
    Column {
        title,
        figure: name,
        digits: 0,
        param: true,
    }
}

/// How each scenario is shown: what it is, its target, and its columns.
fn layout(scenario: &str) -> (&'static str, &'static str, Vec<Column>) {
    let latency = || {
        vec![
            col("p50 ms", "p50_ms", 0),
            col("p99 ms", "p99_ms", 0),
            col("p99 from send ms", "p99_send_ms", 0),
            col("senders late p99 ms", "late_p99_ms", 0),
        ]
    };
    let calibration = || {
        vec![
            col("raw fan-out p99 ms", "raw_p99_ms", 0),
            col("p99 ÷ raw", "p99_vs_raw", 1),
        ]
    };
    match scenario {
        "class-8k" => (
            "students through Caddy to three socket servers and one Redis, one class, every comment to everyone",
            "10 comments/s clean (0 lost, p99 ≤ 250 ms from the intended send time), then 20/s",
            [
                vec![
                    col("runs", "runs", 0),
                    col("clean", "clean", 0),
                    col("lost", "lost", 0),
                    col("deliveries/s", "deliveries_per_s", 0),
                ],
                latency(),
                calibration(),
                vec![
                    col("servers µs/delivery", "servers_us_per_delivery", 2),
                    col("Caddy µs/delivery", "caddy_us_per_delivery", 2),
                    col("servers ÷ raw", "servers_vs_raw", 1),
                    col("Caddy KiB/connection", "caddy_kib_per_connection", 1),
                    col(
                        "servers KiB/connection",
                        "socket_servers_kib_per_connection",
                        1,
                    ),
                    param_col("Caddy stream buffer", "caddy_stream_buffer_size"),
                    col("load avg", "loadavg", 1),
                ],
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        "fanout-max" => (
            "students connected directly to one socket server, one class",
            "≥ 1,000,000 deliveries/s with p99 ≤ 100 ms and 0 lost",
            [
                vec![
                    col("runs", "runs", 0),
                    col("clean", "clean", 0),
                    col("lost", "lost", 0),
                    col("deliveries/s", "deliveries_per_s", 0),
                ],
                latency(),
                calibration(),
                vec![
                    col("server µs/delivery", "servers_us_per_delivery", 2),
                    col("raw µs/delivery", "raw_us_per_delivery", 2),
                    col("server ÷ raw", "servers_vs_raw", 1),
                    col("load avg", "loadavg", 1),
                ],
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        "idle-memory" => (
            "idle connections on one socket server",
            "≤ 4 KiB per connection at 19,000 connections",
            vec![
                col("runs", "runs", 0),
                col("connected", "connected", 0),
                col("KiB/connection", "server_kib_per_connection", 2),
                col("load avg", "loadavg", 1),
            ],
        ),
        "arrival-storm" => (
            "students arrive through Caddy at three servers within a window and comment at once",
            "all connected within 12 s of the first arrival, 0 failed handshakes, 0 lost",
            [
                vec![
                    col("runs", "runs", 0),
                    col("clean", "clean", 0),
                    col("connected", "connected", 0),
                    col("failed handshakes", "failed_attempts", 0),
                    col("all connected s", "all_connected_s", 2),
                    col("connect p50 ms", "connect_p50_ms", 0),
                    col("connect p99 ms", "connect_p99_ms", 0),
                    col("join p99 ms", "join_p99_ms", 0),
                    col("lost", "lost", 0),
                ],
                latency(),
                calibration(),
                vec![col("load avg", "loadavg", 1)],
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        "server-lost" => (
            "one of three servers (a third of the class) is SIGKILLed while comments flow",
            "every student back and recovered within 10 s, 0 lost, 0 duplicated",
            [
                vec![
                    col("runs", "runs", 0),
                    col("clean", "clean", 0),
                    col("students on it", "victim_connections", 0),
                    col("reconnects", "reconnects", 0),
                    col("all back s", "all_back_s", 2),
                    col("all recovered s", "all_recovered_s", 2),
                    col("lost", "lost", 0),
                    col("duplicated", "duplicated", 0),
                    col("survivors cores before", "survivors_cores_before", 2),
                    col("survivors cores after", "survivors_cores", 2),
                    col("Redis cores before", "redis_cores_before", 2),
                    col("Redis cores after", "redis_cores", 2),
                ],
                latency(),
                calibration(),
                vec![col("load avg", "loadavg", 1)],
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        "drain" => (
            "one of three servers is sent SIGTERM and drains its students over its drain window",
            "reconnects spread over the drain window, 0 lost",
            [
                vec![
                    col("runs", "runs", 0),
                    col("clean", "clean", 0),
                    col("students on it", "victim_connections", 0),
                    col("drain window s", "drain_window_s", 0),
                    col("reconnected p10 s", "drain_p10_s", 2),
                    col("p50 s", "drain_p50_s", 2),
                    col("p90 s", "drain_p90_s", 2),
                    col("last s", "drain_max_s", 2),
                    col("lost", "lost", 0),
                    col("duplicated", "duplicated", 0),
                ],
                latency(),
                calibration(),
                vec![col("load avg", "loadavg", 1)],
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        _ => (
            "",
            "",
            vec![
                col("runs", "runs", 0),
                col("clean", "clean", 0),
                col("lost", "lost", 0),
                col("p99 ms", "p99_ms", 0),
                col("load avg", "loadavg", 1),
            ],
        ),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn fmt_num(v: f64, digits: usize) -> String {
    if digits == 0 {
        let rounded = v.round() as i64;
        let s = rounded.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        if rounded < 0 { format!("-{out}") } else { out }
    } else {
        format!("{v:.digits$}")
    }
}

/// `median [min–max]` of a column over runs; `runs` and `clean` are counts instead, and a
/// parameter is its distinct values (`—` for runs that did not record it).
fn cell(runs: &[&BenchResult], c: &Column) -> String {
    if c.param {
        let mut shown: Vec<String> = Vec::new();
        for r in runs {
            let v = match r.params.get(c.figure) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => "—".into(),
            };
            if !shown.contains(&v) {
                shown.push(v);
            }
        }
        return shown.join(", ");
    }
    let mut values: Vec<f64> = runs.iter().filter_map(|r| figure(r, c.figure)).collect();
    match c.figure {
        "runs" => return runs.len().to_string(),
        "clean" => {
            return format!(
                "{}/{}",
                values.iter().filter(|v| **v > 0.5).count(),
                runs.len()
            );
        }
        _ => {}
    }
    if values.is_empty() {
        return "—".into();
    }
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let m = median(&mut values);
    if values.len() == 1 || fmt_num(lo, c.digits) == fmt_num(hi, c.digits) {
        fmt_num(m, c.digits)
    } else {
        format!(
            "{} [{}–{}]",
            fmt_num(m, c.digits),
            fmt_num(lo, c.digits),
            fmt_num(hi, c.digits)
        )
    }
}

/// The runs of each variant of one scenario.
type Variants<'a> = BTreeMap<&'a str, Vec<(&'a Path, &'a BenchResult)>>;

/// `bench/RESULTS.md` from the result files in `dir`.
pub fn render(dir: &Path) -> Result<String, LoadError> {
    let files = read_results(dir)?;
    let mut by_scenario: BTreeMap<&str, Variants<'_>> = BTreeMap::new();
    let mut others = Vec::new();
    let mut previous = Vec::new();
    for (path, file) in &files {
        let r = match file {
            ResultFile::Bench(r) => r.as_ref(),
            ResultFile::Previous(map) => {
                previous.push((path, map));
                continue;
            }
            ResultFile::Other(map) => {
                others.push((path, map));
                continue;
            }
        };
        by_scenario
            .entry(r.scenario.as_str())
            .or_default()
            .entry(r.variant.as_str())
            .or_default()
            .push((path.as_path(), r));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmark results\n\n\
         Generated by `bench/render-results` from the result files in `bench/results/` — do not \
         edit: a test (`results_md_is_rendered_from_the_result_files`) fails when this file and \
         the results disagree. Each row is one variant of a scenario; a figure is the median over \
         its runs with the spread `[min–max]`. Latency is measured from each comment's intended \
         send time. *Raw fan-out* is the calibration measured in the same run (a minimal TCP \
         fan-out, one write per message to 4,000 sockets at 140,000 deliveries/s; \
         `liveclass-load calibrate`), so `÷ raw` columns compare a figure with what this machine \
         did at that moment. CPU µs per delivery count the processes' CPU inside the sending \
         window over the deliveries received in it. How each figure is measured: \
         [README.md](README.md)."
    );
    if by_scenario.is_empty() {
        let _ = writeln!(
            out,
            "\nNo results of this load generator recorded yet: run a `bench/*.sh` scenario."
        );
    }
    for (scenario, variants) in &by_scenario {
        let (what, target, columns) = layout(scenario);
        let _ = writeln!(out, "\n## {scenario}\n");
        if !what.is_empty() {
            let _ = writeln!(out, "{what}. Target: {target}.\n");
        }
        let _ = write!(out, "| variant |");
        for c in &columns {
            let _ = write!(out, " {} |", c.title);
        }
        let _ = write!(out, "\n|---|");
        for _ in &columns {
            let _ = write!(out, "---:|");
        }
        let _ = writeln!(out);
        for (variant, runs) in variants {
            let rs: Vec<&BenchResult> = runs.iter().map(|(_, r)| *r).collect();
            let _ = write!(out, "| {variant} |");
            for c in &columns {
                let _ = write!(out, " {} |", cell(&rs, c));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "\nRuns:\n");
        for (variant, runs) in variants {
            for (path, r) in runs {
                let load = r.load.as_ref();
                let verdict = match load {
                    Some(l) if l.ok => "clean".to_string(),
                    Some(l) => format!("not clean: {}", l.failures.join("; ")),
                    None => "no load report".into(),
                };
                let commit: String = r.git.commit.chars().take(10).collect();
                let _ = writeln!(
                    out,
                    "- `{}` ({variant}): {} at {}{}, load average {} before, {} during; {verdict}",
                    path.display(),
                    r.recorded_at,
                    commit,
                    if r.git.dirty { " (dirty tree)" } else { "" },
                    r.loadavg_1m_before
                        .map_or_else(|| "?".into(), |l| format!("{l:.2}")),
                    load.map_or_else(
                        || "?".into(),
                        |l| format!("{:.2}", l.machine.loadavg_1m.mean)
                    ),
                );
            }
        }
    }
    if !previous.is_empty() {
        render_previous(&mut out, &previous);
    }
    for (path, map) in others {
        // Tools name their benchmark `scenario` or `benchmark`.
        let name = ["scenario", "benchmark"]
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str))
            .unwrap_or("other");
        let _ = writeln!(
            out,
            "\n## {name}\n\n`{}`, in the format of the tool that wrote it:\n",
            path.display()
        );
        for (k, v) in map {
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            if k != "scenario" && k != "benchmark" {
                let _ = writeln!(out, "- {k}: {shown}");
            }
        }
    }
    Ok(out)
}

/// A number at a JSON pointer of a previous result, formatted; `?` where it is missing.
fn previous_cell(map: &serde_json::Map<String, Value>, pointer: &str, digits: usize) -> String {
    let value = Value::Object(map.clone());
    match value.pointer(pointer) {
        Some(Value::Number(n)) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |v| fmt_num(v, digits)),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "?".into(),
    }
}

/// The results of the load generator before issue #15, in one table, with what they do not
/// measure said plainly: they are kept as the record of what was measured then, not as figures
/// to compare with the ones above.
fn render_previous(out: &mut String, files: &[(&PathBuf, &serde_json::Map<String, Value>)]) {
    let _ = writeln!(
        out,
        "\n## Recorded with the previous load generator\n\n\
         These files predate issue #15 and are kept as the record of what was measured then; \
         they are **not** comparable with the figures above and no target is judged on them. \
         That generator measured latency from when a comment was actually written (a sender that \
         fell behind hid its lateness), scored a comment nobody received as *void* and left void \
         and skipped comments out of `clean`, derived deliveries per second as rate × students \
         (settling included), saved no raw histograms, named the commit without a dirty flag \
         (runs stamped `fef3f27` predate the load generator itself), read the load average only \
         at the end, and measured no calibration. Each was one run, not three.\n"
    );
    let _ = writeln!(
        out,
        "| file | recorded | commit | comments/s | clean | lost | p99 ms (from send) | deliveries/s (derived) | connect p99 ms | load average at end |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---|---:|---:|---:|---:|---|");
    let mut summaries = Vec::new();
    for (path, map) in files {
        if map.contains_key("runs") {
            summaries.push((path, map));
            continue;
        }
        let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or("?");
        let rate = if map.contains_key("comment_rate") {
            previous_cell(map, "/comment_rate", 0)
        } else {
            "—".into()
        };
        let clean = match (map.get("clean"), map.get("load_exit_status")) {
            (Some(Value::Bool(b)), _) => b.to_string(),
            (None, Some(Value::Number(n))) => format!("exit {n}"),
            _ => "?".into(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {rate} | {clean} | {} | {} | {} | {} | {} |",
            path.display(),
            text("recorded_at"),
            text("git"),
            previous_cell(map, "/load/deliveries/lost", 0),
            previous_cell(map, "/load/latency_ms/p99", 1),
            previous_cell(map, "/load/deliveries/per_second", 0),
            previous_cell(map, "/load/connections/connect_ms/p99", 1),
            previous_cell(map, "/machine/loadavg_at_end", 0),
        );
    }
    for (path, map) in summaries {
        let _ = writeln!(
            out,
            "\n`{}` ({} at {}): highest clean comment rate {} with p99 under {}, i.e. {} deliveries/s as rate × students (derived, not measured); runs: {}.",
            path.display(),
            map.get("scenario").and_then(Value::as_str).unwrap_or("?"),
            map.get("git").and_then(Value::as_str).unwrap_or("?"),
            previous_cell(map, "/highest_clean_comment_rate", 0),
            previous_cell(map, "/p99_target_ms", 0),
            previous_cell(map, "/highest_clean_deliveries_per_s", 0),
            map.get("runs")
                .and_then(Value::as_array)
                .map(|runs| runs
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
        );
    }
    let idle: Vec<_> = files
        .iter()
        .filter(|(_, m)| m.get("scenario").and_then(Value::as_str) == Some("idle-memory"))
        .collect();
    for (path, map) in idle {
        let _ = writeln!(
            out,
            "\n`{}`: {} connections held, {} KiB per connection on the server (RSS connected − before, over connections).",
            path.display(),
            previous_cell(map, "/connections", 0),
            previous_cell(map, "/server_kib_per_connection", 2),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_the_previous_generator_are_shown_apart_with_their_caveats() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("class-8k-10.json"),
            r#"{"scenario":"class-8k","recorded_at":"2026-11-28T01:55:16Z","git":"e78d435",
               "machine":{"loadavg_at_end":"5.46 2.86 4.11"},"comment_rate":10,"clean":false,
               "load":{"deliveries":{"lost":0,"per_second":80007.0},
                       "latency_ms":{"p99":380.415},"connections":{"connect_ms":{"p99":41.279}}}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("class-8k.json"),
            r#"{"scenario":"class-8k","git":"fef3f27","p99_target_ms":"250ms",
               "highest_clean_comment_rate":5,"highest_clean_deliveries_per_s":40005,
               "runs":["class-8k-10.json"]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("operator-1000.json"),
            r#"{"scenario":"operator-1000","seconds":1.5}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("recovery-memory-1.json"),
            r#"{"benchmark":"recovery-memory","kib":12}"#,
        )
        .unwrap();
        let text = render(dir.path()).unwrap();
        assert!(
            text.contains("## Recorded with the previous load generator"),
            "{text}"
        );
        assert!(text.contains("| `class-8k-10.json` | 2026-11-28T01:55:16Z | e78d435 | 10 | false | 0 | 380.4 | 80,007 | 41.3 | 5.46 2.86 4.11 |"), "{text}");
        assert!(text.contains("highest clean comment rate 5"), "{text}");
        assert!(text.contains("## operator-1000"), "{text}");
        assert!(text.contains("## recovery-memory\n"), "{text}");
        assert!(
            text.contains("- kib: 12") && !text.contains("- benchmark:"),
            "{text}"
        );
        assert!(
            text.contains("No results of this load generator recorded yet"),
            "{text}"
        );
    }

    fn run_with(params: &[(&str, Value)], figures: &[(&str, f64)]) -> BenchResult {
        BenchResult {
            schema: SCHEMA,
            scenario: "class-8k".into(),
            variant: "8000-students/10-per-s".into(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
            recorded_at: String::new(),
            git: GitInfo::default(),
            versions: BTreeMap::new(),
            machine: MachineInfo::default(),
            loadavg_1m_before: None,
            command: String::new(),
            nice: 0,
            steps_s: BTreeMap::new(),
            processes: Vec::new(),
            figures: figures
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            calibration: None,
            hdr_log: None,
            load: None,
        }
    }

    #[test]
    fn a_parameter_column_shows_the_distinct_values_of_the_runs() {
        let buffer = param_col("Caddy stream buffer", "caddy_stream_buffer_size");
        let kib = col("Caddy KiB/connection", "caddy_kib_per_connection", 1);
        let a = run_with(
            &[("caddy_stream_buffer_size", Value::String("8KiB".into()))],
            &[("caddy_kib_per_connection", 30.0)],
        );
        let b = run_with(
            &[("caddy_stream_buffer_size", Value::String("8KiB".into()))],
            &[("caddy_kib_per_connection", 34.0)],
        );
        let old = run_with(&[], &[("caddy_kib_per_connection", 31.0)]);
        assert_eq!(cell(&[&a, &b], &buffer), "8KiB");
        assert_eq!(cell(&[&a, &old, &b], &buffer), "8KiB, —");
        assert_eq!(cell(&[&a, &old, &b], &kib), "31.0 [30.0–34.0]");
    }

    #[test]
    fn cells_give_the_median_and_the_spread() {
        assert_eq!(fmt_num(1234567.4, 0), "1,234,567");
        assert_eq!(fmt_num(-1234.0, 0), "-1,234");
        assert_eq!(fmt_num(2.345, 2), "2.35");
        let mut v = [3.0, 1.0, 2.0];
        assert_eq!(median(&mut v), 2.0);
        let mut v = [4.0, 1.0, 2.0, 3.0];
        assert_eq!(median(&mut v), 2.5);
    }
}
