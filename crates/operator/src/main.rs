//! `liveclass-operator`: the controller that turns each LiveClass into socket servers and a
//! Redis, sized and scaled ahead of the class's schedule.

use std::io::Write as _;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "liveclass-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the LiveClass CustomResourceDefinition, generated from the Rust types, as YAML.
    Crd,
    /// Run the operator: reconcile LiveClasses in the cluster of the current kubeconfig or
    /// service account.
    Run(Box<liveclass_operator::Config>),
    /// Print the timeline a LiveClass will get (scale-up, Ready-by, live, drain steps with
    /// replicas, Redis) from the operator's own planner, without a cluster.
    Plan(liveclass_operator::preview::PlanArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            let yaml = liveclass_api::crd_yaml()?;
            std::io::stdout().lock().write_all(yaml.as_bytes())?;
        }
        Command::Run(config) => run(*config)?,
        Command::Plan(args) => {
            let text = liveclass_operator::preview::preview(&args, chrono::Utc::now())?;
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

fn run(config: liveclass_operator::Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = kube::Client::try_default().await?;
        liveclass_operator::run(config, client, shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
