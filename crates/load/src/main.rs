//! `liveclass-load`: a live class of N students against liveclass socket servers.
//!
//! ```text
//! liveclass-load --url ws://127.0.0.1:8080/ws --students 8000 --comment-rate 10 --duration 60s \
//!                --secret-file secret --json report.json
//! liveclass-load merge part0.json part1.json --json report.json
//! liveclass-load calibrate --json calibration.json
//! liveclass-load results bench/results > bench/RESULTS.md
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use liveclass_load::bench::{RecordArgs, record, render};
use liveclass_load::calibrate::CalibrateArgs;
use liveclass_load::{LoadTest, Report, RunArgs, hdrlog};

#[derive(Debug, Parser)]
#[command(
    name = "liveclass-load",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Merge the --json reports of every part of a split run into one report (loss accounted
    /// across processes).
    Merge {
        /// The parts' reports.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Write the merged report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write the merged histograms as an HdrHistogram interval log.
        #[arg(long)]
        hdr_log: Option<PathBuf>,
        /// Exit 0 even when the run was not clean.
        #[arg(long)]
        allow_loss: bool,
    },
    /// Measure this machine's raw TCP fan-out (one write per message, then one coalesced write
    /// per drain): the calibration figure benchmarks are compared with.
    Calibrate(CalibrateArgs),
    /// Assemble a benchmark result file from what a bench/*.sh script measured.
    Record(Box<RecordArgs>),
    /// Render bench/RESULTS.md from the result files.
    Results {
        /// The folder of result files.
        #[arg(default_value = "bench/results")]
        dir: PathBuf,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Do not write: exit 1 when this file differs from what would be rendered.
        #[arg(long, conflicts_with = "out")]
        check: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("liveclass-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Merge {
            reports,
            json,
            hdr_log,
            allow_loss,
        }) => {
            let parts = reports
                .iter()
                .map(|p| read_report(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let merged = Report::merge(parts)?;
            finish(&merged, json.as_deref(), hdr_log.as_deref(), allow_loss)
        }
        Some(Command::Calibrate(args)) => {
            let calibration = liveclass_load::calibrate::run(&args)?;
            let text = serde_json::to_string_pretty(&calibration)?;
            if let Some(path) = &args.json {
                std::fs::write(path, text + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            for (mode, m) in [
                ("one write per message", &calibration.per_message),
                ("one write per drain", &calibration.coalesced),
            ] {
                println!(
                    "raw fan-out, {mode}: {} receivers, {:.0} deliveries/s offered, {:.0}/s measured, lost {}, latency {}, sender {:.3} µs CPU per delivery, {} writes",
                    calibration.receivers,
                    m.offered_deliveries_per_s,
                    m.in_window_per_s,
                    m.lost,
                    m.latency_ms,
                    m.sender_cpu_us_per_delivery,
                    m.writes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Record(args)) => {
            let result = record(&args)?;
            let text = serde_json::to_string_pretty(&result)?;
            std::fs::write(&args.out, text + "\n")
                .with_context(|| format!("cannot write {}", args.out.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Results { dir, out, check }) => {
            let text = render(&dir)?;
            match (out, check) {
                (_, Some(path)) => {
                    let current = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    if current == text {
                        Ok(ExitCode::SUCCESS)
                    } else {
                        eprintln!(
                            "liveclass-load: {} is not what the results in {} render to: run bench/render-results",
                            path.display(),
                            dir.display()
                        );
                        Ok(ExitCode::from(1))
                    }
                }
                (Some(path), None) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    Ok(ExitCode::SUCCESS)
                }
                (None, None) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        None => {
            let json = cli.run.json.clone();
            let hdr_log = cli.run.hdr_log.clone();
            let allow_loss = cli.run.allow_loss;
            let config = cli.run.into_config()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(async move {
                let test = LoadTest::new(config)?;
                let stats = test.stats();
                tokio::spawn(async move {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        eprintln!("liveclass-load: interrupted; closing and reporting");
                        stats.interrupt();
                    }
                });
                #[cfg(unix)]
                {
                    let stats = test.stats();
                    tokio::spawn(async move {
                        use tokio::signal::unix::{SignalKind, signal};
                        if let Ok(mut term) = signal(SignalKind::terminate())
                            && term.recv().await.is_some()
                        {
                            eprintln!("liveclass-load: terminated; closing and reporting");
                            stats.interrupt();
                        }
                    });
                }
                anyhow::Ok(test.run().await?)
            })?;
            // Dropping the runtime would wait for blocked tasks; there are none left, but do not
            // let a stray one hold the report back.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            finish(&report, json.as_deref(), hdr_log.as_deref(), allow_loss)
        }
    }
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a liveclass-load report", path.display()))
}

fn finish(
    report: &Report,
    json: Option<&Path>,
    hdr_log: Option<&Path>,
    allow_loss: bool,
) -> anyhow::Result<ExitCode> {
    println!("{report}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = hdr_log {
        hdrlog::write(report, path)?;
    }
    // A part of a split run cannot judge loss alone: the merge does.
    Ok(if report.ok || allow_loss || report.partial {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
