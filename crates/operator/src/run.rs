//! Running the operator: the probe and metrics server, leader election, and the kube-rs
//! `Controller` on LiveClasses that owns the socket and Redis objects. [`Operator`] runs it in
//! the background (tests run two and stop or kill one); [`run`] is what `main` calls.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures_util::StreamExt as _;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        Controller,
        events::{Recorder, Reporter},
        watcher,
    },
};
use liveclass_api::LiveClass;
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    Config, MANAGER,
    controller::{Context, error_policy, reconcile},
    leader::LeaseLock,
    metrics::Metrics,
};

/// The label every owned object carries, so the owned-object watches see only ours.
const OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by=liveclass-operator";

/// Errors that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("binding the metrics address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the operator task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running operator.
#[derive(Debug)]
pub struct Operator {
    /// Its metrics (tests read reconcile and write counts here).
    pub metrics: Arc<Metrics>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub addr: SocketAddr,
    /// Its identity in the Lease.
    pub identity: String,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    server: JoinHandle<()>,
}

impl Operator {
    /// Starts the probe server and the (elected) controller in the background.
    pub async fn start(config: Config, client: Client) -> Result<Self, RunError> {
        let metrics = Arc::new(Metrics::default());
        let ready = Arc::new(AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind(config.metrics_addr)
            .await
            .map_err(|source| RunError::Bind {
                addr: config.metrics_addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| RunError::Bind {
            addr: config.metrics_addr,
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let app = Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state((metrics.clone(), ready.clone()));
        let mut server_shutdown = shutdown_rx.clone();
        let server = tokio::spawn(async move {
            let stop = async move { stopped(&mut server_shutdown).await };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(%error, "the metrics server failed");
            }
        });
        let identity = config.identity();
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(identity.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let ctx = Arc::new(Context::new(client, recorder, metrics.clone(), config));
        let task = tokio::spawn(elect_and_control(ctx, identity.clone(), ready, shutdown_rx));
        Ok(Self {
            metrics,
            addr,
            identity,
            shutdown,
            task,
            server,
        })
    }

    /// Stops cleanly: the controller stops and the Lease is released for a standby.
    pub async fn stop(self) -> Result<(), RunError> {
        let _ = self.shutdown.send(true);
        let result = self.task.await;
        let _ = self.server.await;
        Ok(result?)
    }

    /// Stops at once without releasing the Lease, as a crashed process would.
    pub fn kill(self) {
        self.task.abort();
        self.server.abort();
    }
}

/// Runs the operator until `shutdown` resolves.
pub async fn run(
    config: Config,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let operator = Operator::start(config, client).await?;
    tracing::info!(addr = %operator.addr, identity = %operator.identity, "liveclass-operator started");
    shutdown.await;
    tracing::info!("shutting down");
    operator.stop().await
}

async fn metrics_handler(State((metrics, _)): State<(Arc<Metrics>, Arc<AtomicBool>)>) -> String {
    metrics.encode()
}

async fn readyz(State((_, ready)): State<(Arc<Metrics>, Arc<AtomicBool>)>) -> StatusCode {
    if ready.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Without election: control until shutdown. With it: wait for the Lease, control while
/// holding it, stop controlling as soon as it is lost, and try again.
async fn elect_and_control(
    ctx: Arc<Context>,
    identity: String,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = ctx.config.clone();
    if !config.leader_elect {
        ready.store(true, Ordering::Relaxed);
        ctx.metrics.set_leader(true);
        tokio::select! {
            () = control(ctx.clone()) => {}
            () = stopped(&mut shutdown) => {}
        }
        ctx.metrics.set_leader(false);
        return;
    }
    let mut lease = LeaseLock::new(
        ctx.client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        &identity,
        config.lease_duration,
    );
    // A holder that could not renew for this long steps down before anyone may take over.
    let renew_deadline = config.lease_duration.mul_f64(2.0 / 3.0);
    loop {
        // Standby until the Lease is ours.
        loop {
            match lease.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => ready.store(true, Ordering::Relaxed),
                Err(error) => tracing::warn!(%error, "reading the leader Lease failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(config.lease_renew) => {}
                () = stopped(&mut shutdown) => return,
            }
        }
        ready.store(true, Ordering::Relaxed);
        tracing::info!(%identity, "leading: the controller starts");
        ctx.metrics.set_leader(true);
        let controller = control(ctx.clone());
        tokio::pin!(controller);
        let mut renewed = Instant::now();
        let stop = loop {
            tokio::select! {
                () = &mut controller => break false,
                () = stopped(&mut shutdown) => break true,
                () = tokio::time::sleep(config.lease_renew) => {
                    match lease.try_acquire_or_renew().await {
                        Ok(true) => renewed = Instant::now(),
                        Ok(false) => {
                            tracing::warn!("the leader Lease was taken over; stepping down");
                            break false;
                        }
                        Err(error) if renewed.elapsed() >= renew_deadline => {
                            tracing::warn!(%error, "could not renew the leader Lease in time; stepping down");
                            break false;
                        }
                        Err(error) => tracing::warn!(%error, "renewing the leader Lease failed; retrying"),
                    }
                }
            }
        };
        ctx.metrics.set_leader(false);
        if stop {
            lease.release().await;
            return;
        }
        // Let the controller's reconciles (dropped with it) finish being cancelled, then stand by.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves once shutdown is asked for (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + DeserializeOwned,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The controller on LiveClasses, owning the objects it creates; returns if its streams end.
async fn control(ctx: Arc<Context>) {
    let client = &ctx.client;
    let ns = ctx.config.namespace.as_deref();
    let owned = watcher::Config::default()
        .labels(OWNED_SELECTOR)
        .any_semantic();
    Controller::new(
        api::<LiveClass>(client, ns),
        watcher::Config::default().any_semantic(),
    )
    .owns(api::<Deployment>(client, ns), owned.clone())
    .owns(api::<Service>(client, ns), owned.clone())
    .owns(api::<ConfigMap>(client, ns), owned.clone())
    .owns(api::<PodDisruptionBudget>(client, ns), owned.clone())
    .owns(api::<StatefulSet>(client, ns), owned.clone())
    .owns(api::<HorizontalPodAutoscaler>(client, ns), owned)
    .run(reconcile, error_policy, ctx.clone())
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::debug!(%error, "controller event");
        }
    })
    .await;
}
