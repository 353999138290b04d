//! `liveclass-load`: a live class of N students against liveclass socket servers.
//!
//! ```text
//! liveclass-load --url ws://127.0.0.1:8080/ws --students 8000 --comment-rate 10 --duration 60s \
//!                --secret-file secret --json report.json
//! liveclass-load merge part0.json part1.json --json report.json
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use liveclass_load::{LoadTest, Report, RunArgs};

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
        /// Exit 0 even when deliveries were lost, duplicated or out of order.
        #[arg(long)]
        allow_loss: bool,
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
            allow_loss,
        }) => {
            let parts = reports
                .iter()
                .map(|p| read_report(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let merged = Report::merge(parts)?;
            finish(&merged, json.as_deref(), allow_loss)
        }
        None => {
            let json = cli.run.json.clone();
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
                        eprintln!("liveclass-load: interrupted; stopping and reporting");
                        stats.interrupt();
                    }
                });
                anyhow::Ok(test.run().await?)
            })?;
            // Dropping the runtime would wait for blocked tasks; there are none left, but do not
            // let a stray one hold the report back.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            finish(&report, json.as_deref(), allow_loss)
        }
    }
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a liveclass-load report", path.display()))
}

fn finish(report: &Report, json: Option<&Path>, allow_loss: bool) -> anyhow::Result<ExitCode> {
    println!("{report}");
    if let Some(path) = json {
        // The raw histograms are for merging the parts of a split run; a whole report leaves
        // them out.
        let mut out = report.clone();
        if !out.partial {
            out.histograms = Default::default();
        }
        let text = serde_json::to_string_pretty(&out)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // A part of a split run cannot judge loss alone: the merge does.
    Ok(if report.ok || allow_loss || report.partial {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
