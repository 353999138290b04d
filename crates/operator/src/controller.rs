//! The reconcile of one LiveClass, as orchestration only: observe (watch caches, attendance) →
//! decide (pure, [`crate::decide`]) → apply ([`crate::apply`]) → status and Events → requeue.
//! What happens when it fails is here too: the error shows in status as `Applied=False` with a
//! Warning Event, and the class is retried with a per-object back-off.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Client, ResourceExt,
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use liveclass_api::{LiveClass, condition};
use tracing::Instrument as _;

use crate::{
    Config,
    apply::Applier,
    attendance::{self, Attendance},
    decide::{self, Note, NoteType, decide},
    error::Error,
    metrics::Metrics,
    observe::{self, Stores},
    resources::{self, CLASS_LABEL},
    sentinel,
    startup::{self, Estimate, Estimator},
    status,
};

/// First retry after a failed reconcile; doubles per consecutive failure of the same object.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub attendance: Arc<Attendance>,
    pub applier: Applier,
    pub stores: Stores,
    pub config: Config,
    /// Consecutive failures per object, for the exponential back-off.
    failures: Mutex<HashMap<String, u32>>,
    /// The status last written per object, until the watch cache has caught up with it.
    written: Mutex<HashMap<String, status::Written>>,
    /// How long socket pods took to start, per class and namespace.
    startup: Mutex<Estimator>,
    /// Asks for a reconcile of the classes whose plan a new start-up estimate changes.
    replan: Replan,
}

/// The classes the controller knows, and the way to ask it to reconcile one of them.
#[derive(Clone)]
pub struct Replan {
    pub classes: Store<LiveClass>,
    pub trigger: tokio::sync::mpsc::UnboundedSender<ObjectRef<LiveClass>>,
}

impl std::fmt::Debug for Replan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replan")
            .field("classes", &self.classes.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        applier: Applier,
        stores: Stores,
        metrics: Arc<Metrics>,
        config: Config,
        replan: Replan,
    ) -> Self {
        let attendance = Arc::new(Attendance::new(
            client.clone(),
            metrics.clone(),
            attendance::Settings {
                override_url: config.redis_override.clone(),
                timeout: config.redis_timeout,
                interval: config.attendance_interval,
                read_secrets: config.read_external_redis_secrets,
            },
        ));
        Self {
            client,
            metrics,
            attendance,
            applier,
            stores,
            config,
            failures: Mutex::default(),
            written: Mutex::default(),
            startup: Mutex::default(),
            replan,
        }
    }

    /// Forgets a deleted class everywhere it is remembered.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.metrics.forget(namespace, name);
        self.applier.forget(namespace, name);
        self.attendance
            .forget(&liveclass_api::class_id(namespace, name));
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&format!("{namespace}/{name}"));
        }
        if let Ok(mut written) = self.written.lock() {
            written.remove(&format!("{namespace}/{name}"));
        }
        if let Ok(mut startup) = self.startup.lock() {
            startup.forget(namespace, name);
        }
    }

    /// A socket pod as the pod watch shows it: once Ready, its start-up is counted. When the
    /// namespace's figures move, the classes of the namespace whose lead they change are
    /// reconciled now, not at their next transition (which may be their old scale-up instant,
    /// too late to start earlier).
    pub fn pod_seen(&self, pod: &Pod) {
        if !observe::is_socket_pod(pod) {
            return;
        }
        let (Some(namespace), Some(class), Some(created)) = (
            pod.namespace(),
            pod.labels().get(CLASS_LABEL).cloned(),
            pod.creation_timestamp()
                .as_ref()
                .and_then(liveclass_api::time::from_k8s),
        ) else {
            return;
        };
        let Ok(mut startup) = self.startup.lock() else {
            return;
        };
        let uid = pod.uid().unwrap_or_default();
        let asked = startup.last_asked(&namespace, &class);
        let Some((_, ready)) = observe::created_and_ready(pod) else {
            // Still starting: a floor under the namespace's lead until it is Ready.
            if pod.metadata.deletion_timestamp.is_none() {
                startup.starting(&namespace, &class, &uid, startup::began(asked, created));
            }
            return;
        };
        let Some(took) = startup::start_up(asked, created, ready) else {
            return;
        };
        let now = Utc::now();
        let before = startup.namespace(&namespace, now);
        if !startup.record(&namespace, &class, &uid, took) {
            return;
        }
        let after = startup.namespace(&namespace, now);
        drop(startup);
        tracing::debug!(%class, ?took, "pod start-up measured");
        if before != after {
            self.replan_namespace(&namespace, before.as_ref(), after.as_ref());
        }
    }

    /// The operator raised the class's socket replicas at `at`.
    fn asked_for_pods(&self, namespace: &str, name: &str, at: DateTime<Utc>) {
        if let Ok(mut startup) = self.startup.lock() {
            startup.asked(namespace, name, at);
        }
    }

    /// A socket pod that is gone.
    pub fn pod_gone(&self, pod: &Pod) {
        if let (Some(namespace), Some(class), Ok(mut startup)) = (
            pod.namespace(),
            pod.labels().get(CLASS_LABEL),
            self.startup.lock(),
        ) {
            startup.pod_gone(&namespace, class, &pod.uid().unwrap_or_default());
        }
    }

    /// What is known of how long the class's pods take to start.
    fn pod_startup(&self, namespace: &str, name: &str) -> Option<Estimate> {
        self.startup
            .lock()
            .ok()?
            .estimate(namespace, name, Utc::now())
    }

    /// Re-plans the classes of each namespace whose floor (the oldest pod still starting) moved
    /// a class's lead since the last look; called every [`startup::FLOOR_STEP`].
    pub fn follow_starting_pods(&self, last: &mut HashMap<String, Option<Estimate>>) {
        let now = Utc::now();
        let moved: Vec<(String, Option<Estimate>, Option<Estimate>)> = {
            let Ok(startup) = self.startup.lock() else {
                return;
            };
            let mut namespaces = startup.namespaces_starting();
            namespaces.extend(last.keys().cloned());
            namespaces
                .into_iter()
                .filter_map(|ns| {
                    let after = startup.namespace(&ns, now);
                    let before = last.get(&ns).cloned().flatten();
                    (before != after).then_some((ns, before, after))
                })
                .collect()
        };
        for (ns, before, after) in moved {
            self.replan_namespace(&ns, before.as_ref(), after.as_ref());
            if after.as_ref().is_some_and(|e| !e.floor.is_zero()) {
                last.insert(ns, after);
            } else {
                last.remove(&ns);
            }
        }
    }

    fn replan_namespace(
        &self,
        namespace: &str,
        before: Option<&Estimate>,
        after: Option<&Estimate>,
    ) {
        for lc in self.replan.classes.state() {
            // Every class of the namespace, the pod's own too: nothing else reconciles it now.
            if lc.namespace().as_deref() != Some(namespace) {
                continue;
            }
            let socket = &lc.spec.socket;
            let Some(spec) = socket
                .pod_startup
                .parse()
                .ok()
                .and_then(|d| d.to_std().ok())
            else {
                continue;
            };
            let pods = lc
                .status
                .as_ref()
                .and_then(|s| s.plan.as_ref())
                .and_then(|p| p.class_replicas)
                .unwrap_or(1);
            let lead = |e: Option<&Estimate>| startup::lead(spec, e, true, pods);
            if socket.learn_pod_startup && lead(before) != lead(after) {
                tracing::debug!(class = %lc.name_any(), from = ?lead(before), to = ?lead(after), "the namespace's start-up estimate moved the lead: re-planning");
                let _ = self.replan.trigger.send(ObjectRef::from_obj(lc.as_ref()));
            }
        }
    }

    /// The class as last written by this operator, if the watch cache is behind it.
    fn caught_up(&self, lc: &LiveClass) -> Option<LiveClass> {
        let mut written = self.written.lock().ok()?;
        let fresher = status::caught_up(lc, written.get(&key(lc)));
        if fresher.is_none() {
            // The cache has it (or it is another object now): nothing left to remember.
            written.remove(&key(lc));
        }
        fresher
    }

    /// Remembers the status just written, until the watch cache shows it.
    fn wrote(&self, lc: &LiveClass, written: Option<status::Written>) {
        if let Ok(mut remembered) = self.written.lock() {
            match written {
                Some(w) => remembered.insert(key(lc), w),
                None => remembered.remove(&key(lc)),
            };
        }
    }
}

fn key(lc: &LiveClass) -> String {
    format!("{}/{}", lc.namespace().unwrap_or_default(), lc.name_any())
}

/// Reconciles one LiveClass (the controller's reconciler; also callable directly in tests).
pub async fn reconcile(lc: Arc<LiveClass>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        class = %key(&lc),
        generation = lc.metadata.generation,
        phase = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = reconcile_inner(&lc, &ctx).instrument(span).await;
    let outcome = match &result {
        Ok((_, outcome)) => *outcome,
        Err(_) => "error",
    };
    ctx.metrics.reconciled(outcome, started.elapsed());
    if result.is_ok()
        && let Ok(mut failures) = ctx.failures.lock()
    {
        failures.remove(&key(&lc));
    }
    result.map(|(action, _)| action)
}

/// Backs off per object: 5 s, 10 s, 20 s ... up to 5 min.
pub fn error_policy(lc: Arc<LiveClass>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.metric_label());
    let failures = ctx.failures.lock().map_or(1, |mut f| {
        let n = f.entry(key(&lc)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    });
    let delay = FIRST_RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_RETRY);
    tracing::warn!(class = %key(&lc), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_inner(lc: &LiveClass, ctx: &Context) -> Result<(Action, &'static str), Error> {
    let namespace = lc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = lc.name_any();
    if lc.metadata.deletion_timestamp.is_some() {
        ctx.forget(&namespace, &name);
        return Ok((Action::await_change(), "deleted"));
    }
    ctx.stores.ready().await;
    let class_id = liveclass_api::class_id(&namespace, &name);
    // Decide from the status this operator wrote last, not an older one the cache still has.
    let fresher = ctx.caught_up(lc);
    let lc = fresher.as_ref().unwrap_or(lc);

    // Observe and decide; read attendance only when the plan can use it, then decide again.
    let now = Utc::now();
    let cached = ctx.attendance.cached(&class_id).await;
    let mut world = observe::world(&ctx.stores, lc, cached);
    world.pod_startup = ctx.pod_startup(&namespace, &name);
    if world.sentinel.is_some_and(|s| s.ready > 0) {
        let urls =
            resources::sentinel_urls(&name, &namespace, liveclass_api::plan::redis::SENTINELS);
        world.redis_primary = sentinel::primary(&urls, resources::MASTER_NAME).await;
    }
    let mut decision = decide(lc, &world, now)?;
    if decision.watch_attendance
        && let Some(source) = &decision.redis_source
    {
        let view = ctx.attendance.observe(&class_id, source).await;
        if view != world.attendance {
            world.attendance = view;
            decision = decide(lc, &world, now)?;
        }
    }
    if let Some(phase) = decision.phase {
        tracing::Span::current().record("phase", phase.as_str());
    }

    // Apply; a failure is shown on the class before it is retried.
    let old = lc.status.clone().unwrap_or_default();
    if let Err(error) = ctx.applier.apply(lc, &decision, &world, &ctx.stores).await {
        let message = error.to_string();
        let already_reported = status::find(&old.conditions, condition::APPLIED)
            .is_some_and(|c| c.status == "False" && c.message == message);
        let failed = status::apply_failed(
            &old,
            &decision.status,
            error.reason(),
            message.clone(),
            Utc::now(),
        );
        if failed != old {
            match ctx.applier.write_status(lc, &failed).await {
                Ok(written) => ctx.wrote(lc, written),
                Err(status_error) => tracing::warn!(
                    error = %status_error,
                    "could not report the failed apply in status"
                ),
            }
        }
        if !already_reported {
            let note = Note {
                type_: NoteType::Warning,
                reason: "ApplyFailed".to_owned(),
                message,
            };
            ctx.applier.publish(lc, &[note]).await;
        }
        return Err(error);
    }
    // A raise of the socket replicas: the pods it brings are counted from now (`startup`).
    let asked = decision
        .desired
        .as_ref()
        .and_then(|d| d.deployment.as_ref())
        .and_then(|d| d.spec.replicas);
    let had = world.deployment.as_ref().and_then(|d| d.replicas);
    if asked.is_some_and(|asked| u32::try_from(asked).unwrap_or(0) > had.unwrap_or(0)) {
        ctx.asked_for_pods(&namespace, &name, now);
    }
    if decision.status != old {
        let written = ctx.applier.write_status(lc, &decision.status).await?;
        ctx.wrote(lc, written);
    }
    ctx.applier.publish(lc, &decision.events).await;

    // Metrics.
    ctx.metrics.set_phase(key(lc), decision.phase);
    ctx.metrics.set_class(&namespace, &name, decision.figures);
    if let Some(lead) = decision.capacity_lead {
        ctx.metrics.capacity_ready(lead);
    }
    if decision.late {
        ctx.metrics.late();
    }

    if decision.outcome == "invalid" {
        return Ok((Action::await_change(), decision.outcome));
    }
    // Requeue at the next transition, measured after the apply: if it passed meanwhile, now.
    let after = decide::requeue_after(
        decision.next_transition,
        decision.watch_attendance,
        Utc::now(),
        ctx.config.attendance_interval,
        ctx.config.max_requeue,
    );
    tracing::debug!(requeue_in = ?after, "reconciled");
    Ok((Action::requeue(after), decision.outcome))
}
