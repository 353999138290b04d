//! `liveclass-operator plan -f class.yaml [--at <time>]`: the timeline a class will get —
//! scale-up, Ready-by, live, end, each drain step with its replicas, release, the Redis — from
//! the same planner the operator runs, without a cluster.

use std::{io::Read as _, path::PathBuf};

use chrono::{DateTime, Utc};
use liveclass_api::{
    LiveClass, Phase,
    plan::RedisShape,
    schedule::Schedule,
    timeline::{OccurrenceTimeline, timeline},
    validate::{describe, validate_class},
};
use serde::Serialize;

/// Arguments of `liveclass-operator plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// The LiveClass to preview, as YAML or JSON (`-` for standard input).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,

    /// Preview from this instant (RFC 3339, e.g. 2026-03-20T00:00:00Z; default: now).
    #[arg(long)]
    pub at: Option<String>,

    /// How many occurrences to show (a one-off class has one).
    #[arg(long, default_value_t = 3)]
    pub occurrences: usize,

    /// `text` for people, `json` for scripts.
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// Why there is no preview.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a LiveClass: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("{path}: the operator would refuse this LiveClass: {problems}")]
    Invalid { path: String, problems: String },
    #[error("--at {0:?} is not an RFC 3339 time with a zone, like 2026-03-20T00:00:00Z")]
    BadTime(String),
}

/// The preview of `args.file`, as `args.output` asks, at `now` unless `--at` says otherwise.
pub fn preview(args: &PlanArgs, now: DateTime<Utc>) -> Result<String, PreviewError> {
    let path = args.file.display().to_string();
    let text = if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| PreviewError::Read {
                path: path.clone(),
                source,
            })?;
        text
    } else {
        std::fs::read_to_string(&args.file).map_err(|source| PreviewError::Read {
            path: path.clone(),
            source,
        })?
    };
    let lc: LiveClass = serde_yaml::from_str(&text).map_err(|source| PreviewError::Parse {
        path: path.clone(),
        source,
    })?;
    let spec = validate_class(&lc).map_err(|errors| PreviewError::Invalid {
        path: path.clone(),
        problems: describe(&errors),
    })?;
    let at = match &args.at {
        Some(at) => DateTime::parse_from_rfc3339(at)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| PreviewError::BadTime(at.clone()))?,
        None => now,
    };
    let t = timeline(&spec, at, args.occurrences);
    let zone = match &spec.schedule {
        Schedule::Recurring(r) => Some(r.zone()),
        Schedule::Once(_) => None,
    };
    if args.output == "json" {
        let out = Json {
            class: liveclass_api::class_id(
                lc.metadata.namespace.as_deref().unwrap_or("default"),
                lc.metadata.name.as_deref().unwrap_or_default(),
            ),
            at,
            occurrences: t.occurrences.iter().map(JsonOccurrence::from).collect(),
        };
        return Ok(serde_json::to_string_pretty(&out).unwrap_or_default() + "\n");
    }
    let mut out = String::new();
    let name = lc.metadata.name.as_deref().unwrap_or_default();
    let schedule = match (&lc.spec.schedule.start, &lc.spec.schedule.cron, zone) {
        (Some(start), _, _) => format!("once, at {start}"),
        (_, Some(cron), Some(zone)) => format!("\"{cron}\" in {zone}"),
        _ => String::new(),
    };
    out.push_str(&format!(
        "LiveClass {name}: {} students expected, {schedule}, {} long\n",
        lc.spec.expected_attendance, lc.spec.schedule.duration
    ));
    if t.occurrences.is_empty() {
        out.push_str(&format!("No occurrence after {}.\n", at.to_rfc3339()));
    }
    let local = |t: DateTime<Utc>| match zone {
        Some(zone) => format!(
            "  ({})",
            t.with_timezone(&zone).format("%a %Y-%m-%d %H:%M %Z")
        ),
        None => String::new(),
    };
    for (i, o) in t.occurrences.iter().enumerate() {
        let occ = o.occurrence;
        out.push_str(&format!(
            "\nOccurrence {}: starts {}{}\n",
            i + 1,
            stamp(occ.start),
            local(occ.start)
        ));
        let line = |at: DateTime<Utc>, what: &str, detail: String| {
            format!("  {}  {what:<10} {detail}\n", stamp(at))
        };
        out.push_str(&line(
            occ.scale_up_at,
            "scale up",
            format!(
                "{} → {} socket servers (podStartup before Ready-by)",
                o.idle_replicas, o.class_replicas
            ),
        ));
        out.push_str(&line(
            occ.ready_by,
            "ready by",
            format!(
                "{} socket servers Ready (warmup before the start)",
                o.class_replicas
            ),
        ));
        out.push_str(&line(occ.start, "live", local(occ.start).trim().to_owned()));
        out.push_str(&line(
            occ.end,
            "end",
            "capacity held through the cool-down".to_owned(),
        ));
        let mut before = o.class_replicas;
        for (n, (at, replicas)) in o.drain.iter().enumerate() {
            let last = n + 1 == o.drain.len();
            let after = if last {
                format!("  ({})", o.after)
            } else {
                String::new()
            };
            out.push_str(&line(*at, "drain", format!("{before} → {replicas}{after}")));
            before = *replicas;
        }
        if o.drain.is_empty() {
            out.push_str(&line(occ.drain_from, "drained", format!("({})", o.after)));
        }
        if let Some(at) = o.released_at {
            out.push_str(&line(
                at,
                "released",
                "socket servers and Redis deleted (endedTtl)".to_owned(),
            ));
        }
        out.push_str(&format!("  Redis: {}\n", redis_text(o)));
        if let Some(hpa) = o.autoscaling {
            out.push_str(&format!(
                "  Autoscaling: an HPA from {} to {} replicas at {}% CPU\n",
                hpa.min_replicas, hpa.max_replicas, hpa.target_cpu_utilization
            ));
        }
        if o.needed_replicas > u64::from(o.class_replicas) {
            out.push_str(&format!(
                "  Capped: the expected students need {} replicas, maxReplicas allows {}\n",
                o.needed_replicas, o.class_replicas
            ));
        }
    }
    Ok(out)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn redis_text(o: &OccurrenceTimeline) -> String {
    let shape = match o.redis.shape {
        RedisShape::Standalone => "Standalone".to_owned(),
        RedisShape::Replicated {
            replicas,
            sentinels,
        } => {
            format!("Replicated ({replicas} replicas, {sentinels} Sentinels)")
        }
        RedisShape::External => "External (run outside the operator)".to_owned(),
    };
    match o.redis.memory {
        Some(m) => format!(
            "{shape}, maxmemory {}, pod memory {}",
            m.max_memory_arg(),
            m.request_quantity()
        ),
        None => shape,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Json {
    class: String,
    at: DateTime<Utc>,
    occurrences: Vec<JsonOccurrence>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonOccurrence {
    scale_up_at: DateTime<Utc>,
    ready_by: DateTime<Utc>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    drain_from: DateTime<Utc>,
    class_replicas: u32,
    idle_replicas: u32,
    needed_replicas: u64,
    drain: Vec<JsonStep>,
    after: Phase,
    released_at: Option<DateTime<Utc>>,
    redis: String,
    redis_max_memory: Option<String>,
}

#[derive(Serialize)]
struct JsonStep {
    at: DateTime<Utc>,
    replicas: u32,
}

impl From<&OccurrenceTimeline> for JsonOccurrence {
    fn from(o: &OccurrenceTimeline) -> Self {
        let occ = o.occurrence;
        Self {
            scale_up_at: occ.scale_up_at,
            ready_by: occ.ready_by,
            start: occ.start,
            end: occ.end,
            drain_from: occ.drain_from,
            class_replicas: o.class_replicas,
            idle_replicas: o.idle_replicas,
            needed_replicas: o.needed_replicas,
            drain: o
                .drain
                .iter()
                .map(|(at, replicas)| JsonStep {
                    at: *at,
                    replicas: *replicas,
                })
                .collect(),
            after: o.after,
            released_at: o.released_at,
            redis: match o.redis.shape {
                RedisShape::Standalone => "Standalone",
                RedisShape::Replicated { .. } => "Replicated",
                RedisShape::External => "External",
            }
            .to_owned(),
            redis_max_memory: o.redis.memory.map(|m| m.max_memory_arg()),
        }
    }
}
