//! Running the operator: the probe and metrics server, leader election, and the kube-rs
//! `Controller` on LiveClasses with the watch caches of the objects they own. [`Operator`] runs
//! it in the background (tests run two and stop or kill one); [`run`] is what `main` calls.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{Pod, PodStatus, Service},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller, PredicateConfig, WatchStreamExt, controller, predicates,
        reflector::{self, Store},
        watcher,
    },
};
use liveclass_api::LiveClass;
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    Config, MANAGER,
    apply::Applier,
    controller::{Context, Replan, error_policy, reconcile},
    events::Publisher,
    gateway, handover,
    leader::{self, Election, LeaseSettings, stopped},
    metrics::Metrics,
    observe::Stores,
    resources::MANAGED_BY_SELECTOR,
};

/// What every run of the controller (one per term as leader) starts from.
struct Shared {
    client: Client,
    events: Arc<Publisher>,
    metrics: Arc<Metrics>,
    config: Config,
}

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
        let events = Arc::new(Publisher::new(client.clone(), MANAGER, &identity));
        let shared = Arc::new(Shared {
            client,
            events,
            metrics: metrics.clone(),
            config,
        });
        let task = tokio::spawn(elect_and_control(
            shared,
            identity.clone(),
            ready,
            shutdown_rx,
        ));
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

/// Without election: control until shutdown. With it: control while holding the Lease.
async fn elect_and_control(
    shared: Arc<Shared>,
    identity: String,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = shared.config.clone();
    if !config.leader_elect {
        ready.store(true, Ordering::Relaxed);
        shared.metrics.set_leader(true);
        tokio::select! {
            () = control(shared.clone()) => {}
            () = stopped(&mut shutdown) => {}
        }
        shared.metrics.set_leader(false);
        return;
    }
    let election = Election {
        lease: LeaseSettings {
            namespace: config.lease_namespace.clone(),
            name: config.lease_name.clone(),
            duration: config.lease_duration,
            renew: config.lease_renew,
        },
        identity,
    };
    let metrics = shared.metrics.clone();
    let client = shared.client.clone();
    leader::lead(client, election, metrics, ready, shutdown, move || {
        control(shared.clone())
    })
    .await;
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

/// Keeps of an object only what the reconcile reads, so the caches of 1,000 classes stay small.
fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Only what says which object it is and whose: name, uid, versions, the owner and the
/// managed-by label (see `observe::ours`).
fn identity_only<K: Resource>(obj: &mut K) {
    slim(obj);
    let meta = obj.meta_mut();
    meta.annotations = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == "app.kubernetes.io/managed-by");
    }
}

/// A Deployment slimmed, keeping whether the operator's own apply owns `spec.replicas`.
fn slim_deployment(d: &mut Deployment) {
    let ours = d.metadata.managed_fields.take().map(|fields| {
        fields
            .into_iter()
            .filter(|m| {
                m.manager.as_deref() == Some(MANAGER)
                    && m.subresource.is_none()
                    && m.fields_v1
                        .as_ref()
                        .and_then(|f| f.0.get("f:spec"))
                        .and_then(|s| s.get("f:replicas"))
                        .is_some()
            })
            .map(|m| ManagedFieldsEntry {
                fields_v1: Some(FieldsV1(
                    serde_json::json!({ "f:spec": { "f:replicas": {} } }),
                )),
                ..m
            })
            .collect::<Vec<_>>()
    });
    slim(d);
    d.metadata.managed_fields = ours;
    d.spec.template.spec = None;
}

/// A watch of the operator's own objects of kind `K`, cached in a store.
fn owned<K>(
    client: &Client,
    namespace: Option<&str>,
    modify: impl FnMut(&mut K) + Send + 'static,
) -> (
    Store<K>,
    impl futures_util::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(MANAGED_BY_SELECTOR)
        .any_semantic();
    let stream = watcher(api::<K>(client, namespace), config)
        .default_backoff()
        .modify(modify)
        .reflect(writer)
        .applied_objects();
    (reader, stream)
}

/// The controller on LiveClasses, owning the objects it creates; returns if its streams end.
async fn control(shared: Arc<Shared>) {
    let client = &shared.client;
    let config = shared.config.clone();
    let ns = config.namespace.as_deref();
    let (deployments, deployment_events) = owned::<Deployment>(client, ns, slim_deployment);
    // Of Services, PDBs and NetworkPolicies only the metadata is read (which exist, whose, at
    // which generation): their specs would be a tenth of the operator's heap at 1,000 classes.
    let (services, service_events) = owned::<Service>(client, ns, |s| {
        identity_only(s);
        s.spec = None;
        s.status = None;
    });
    let (pdbs, pdb_events) = owned::<PodDisruptionBudget>(client, ns, |p| {
        identity_only(p);
        p.spec = None;
        p.status = None;
    });
    let (statefulsets, statefulset_events) = owned::<StatefulSet>(client, ns, |s| {
        slim(s);
        s.spec.template.spec = None;
    });
    let (hpas, hpa_events) = owned::<HorizontalPodAutoscaler>(client, ns, slim);
    let (network_policies, network_policy_events) = owned::<NetworkPolicy>(client, ns, |n| {
        identity_only(n);
        n.spec = None;
    });
    // Socket pods: for their deletion costs and their start-up times; not a trigger (the
    // Deployment's status is). Their raw events go to the start-up estimator below.
    let (pods, pod_writer) = reflector::store();
    let pod_events = watcher(
        api::<Pod>(client, ns),
        watcher::Config::default()
            .labels(MANAGED_BY_SELECTOR)
            .any_semantic(),
    )
    .default_backoff()
    .modify(|p: &mut Pod| {
        slim(p);
        p.spec = None;
        // The Ready condition only: when it turned true is the pod's start-up time.
        p.status = p.status.take().map(|s| PodStatus {
            conditions: s
                .conditions
                .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect()),
            ..PodStatus::default()
        });
    })
    .reflect(pod_writer);
    let stores = Stores {
        deployments,
        services,
        pdbs,
        statefulsets,
        hpas,
        network_policies,
        pods,
        listed: Arc::default(),
    };
    let applier = Applier::new(
        client.clone(),
        shared.events.clone(),
        shared.metrics.clone(),
    );
    // LiveClasses: reconciled on spec changes (generation), never on the operator's own status
    // writes, and when a new start-up estimate changes their plan; a deleted one is forgotten.
    let (classes, writer) = reflector::store();
    let (trigger, replans) = tokio::sync::mpsc::unbounded_channel();
    let replans =
        futures_util::stream::unfold(
            replans,
            |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
        );
    let ctx = Arc::new(Context::new(
        client.clone(),
        applier,
        stores,
        shared.metrics.clone(),
        config.clone(),
        Replan {
            classes: classes.clone(),
            trigger,
        },
    ));
    let forget = ctx.clone();
    let class_events = watcher(
        api::<LiveClass>(client, ns),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(slim)
    .reflect(writer)
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(lc)) = event {
            forget.forget(&lc.namespace().unwrap_or_default(), &lc.name_any());
        }
    })
    .applied_objects()
    .predicate_filter(predicates::generation, PredicateConfig::default());

    let gateway_classes = classes.clone();
    let controller = Controller::for_stream(class_events, classes)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(pdb_events)
        .owns_stream(statefulset_events)
        .owns_stream(hpa_events)
        .owns_stream(network_policy_events)
        .reconcile_on(replans)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        });
    // Pods still starting raise their namespace's lead as they age (`startup`): the classes it
    // moves are re-planned every step of that floor.
    let starting = ctx.clone();
    let follow_starting = async move {
        let mut last = std::collections::HashMap::new();
        let mut ticks = tokio::time::interval(crate::startup::FLOOR_STEP);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            starting.follow_starting_pods(&mut last);
        }
    };
    let startup = ctx.clone();
    let pods_cache = pod_events.for_each(move |event| {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                startup.pod_seen(&pod);
            }
            Ok(watcher::Event::Delete(pod)) => startup.pod_gone(&pod),
            _ => {}
        }
        async {}
    });
    // The gateway (when one is named) follows the classes' planned capacity, and its pods
    // that go hand their students over.
    let attendance = ctx.attendance.clone();
    let gateway = async {
        let Some(settings) = config.gateway() else {
            return std::future::pending().await;
        };
        let sizing = async {
            if settings.sizing {
                gateway::run(client.clone(), gateway_classes, settings.clone()).await;
            }
        };
        let handover = async {
            if !settings.handover_window.is_zero() {
                handover::run(client.clone(), settings.clone(), attendance).await;
            }
        };
        futures_util::join!(sizing, handover);
        std::future::pending().await
    };
    tokio::select! {
        () = controller => {}
        () = pods_cache => {}
        () = gateway => {}
        () = follow_starting => {}
    }
}
