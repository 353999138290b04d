//! `liveclass-cluster`: runs the same local control plane as the tests' `LocalCluster` in the
//! foreground until SIGTERM or Ctrl-C, keeping its files in a state folder. `scripts/cluster`
//! starts it in the background for people (the demo, operator development), so the flags of
//! every component are written once, in `liveclass_testkit::cluster`. With `--real-node`, a
//! kubelet with containerd, kube-proxy and CoreDNS runs beside the fake nodes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use liveclass_testkit::cluster::{ClusterOptions, LocalCluster, RealNodeOptions};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(
    about = "A local Kubernetes control plane (etcd, kube-apiserver, controller manager, scheduler, KWOK), optionally with a real node"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the cluster and keep it running until SIGTERM or SIGINT.
    Run {
        /// Folder for the kubeconfig, certificates, logs, pid files and etcd data (wiped first).
        #[arg(long, env = "LIVECLASS_CLUSTER_DIR")]
        state_dir: PathBuf,
        /// Number of fake (KWOK) nodes.
        #[arg(long, env = "LIVECLASS_CLUSTER_NODES", default_value_t = 3)]
        nodes: usize,
        /// Only etcd and kube-apiserver: no controller manager, scheduler or nodes.
        #[arg(long, conflicts_with = "real_node")]
        api_only: bool,
        /// Also a real node (kubelet, containerd, runc, CNI bridge, kube-proxy, CoreDNS) that runs
        /// pods tolerating its taint for real; needs root.
        #[arg(long, env = "LIVECLASS_CLUSTER_REAL_NODE")]
        real_node: bool,
        /// Folder of image archives (`scripts/images save DIR`) to load into the real node's
        /// containerd; one of them must be the pause image.
        #[arg(long, env = "LIVECLASS_IMAGES_DIR", requires = "real_node")]
        images: Option<PathBuf>,
        /// Seconds each component may take to become ready.
        #[arg(long, default_value_t = 180)]
        startup_timeout: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cmd::Run {
        state_dir,
        nodes,
        api_only,
        real_node,
        images,
        startup_timeout,
    } = Cli::parse().command;
    let mut options = if api_only {
        ClusterOptions::api_only()
    } else {
        ClusterOptions::with_pods(nodes)
    };
    if real_node {
        let mut node = RealNodeOptions::default();
        if let Some(dir) = &images {
            node = match node.images_in(dir) {
                Ok(node) => node,
                Err(e) => {
                    eprintln!("liveclass-cluster: {e}");
                    return ExitCode::FAILURE;
                }
            };
        }
        options = options.real_node(node);
    }
    options.startup_timeout = Duration::from_secs(startup_timeout);
    options = options.state_dir(&state_dir);

    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("liveclass-cluster: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };

    if let Err(e) = std::fs::create_dir_all(&state_dir).and_then(|()| {
        std::fs::write(
            state_dir.join("liveclass-cluster.pid"),
            format!("{}\n", std::process::id()),
        )
    }) {
        eprintln!("liveclass-cluster: writing to {}: {e}", state_dir.display());
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    eprintln!("liveclass-cluster: starting in {}", state_dir.display());
    let cluster = tokio::select! {
        cluster = LocalCluster::start(options) => cluster,
        _ = term.recv() => return ExitCode::FAILURE,
        _ = int.recv() => return ExitCode::FAILURE,
    };
    let cluster = match cluster {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("liveclass-cluster: failed to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ready = state_dir.join("ready");
    if let Err(e) = std::fs::write(&ready, format!("{}\n", cluster.server_url())) {
        eprintln!("liveclass-cluster: writing {}: {e}", ready.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "liveclass-cluster: ready in {:.1}s at {} ({} fake nodes{}); kubeconfig {}",
        started.elapsed().as_secs_f64(),
        cluster.server_url(),
        cluster.nodes().len(),
        cluster
            .real_node()
            .map(|n| format!(", real node {} with {} images", n.name(), n.images().len()))
            .unwrap_or_default(),
        cluster.kubeconfig_path().display()
    );

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("liveclass-cluster: stopping");
    let _ = std::fs::remove_file(&ready);
    cluster.shutdown();
    eprintln!("liveclass-cluster: stopped");
    ExitCode::SUCCESS
}
