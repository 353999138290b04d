//! The reconcile pipeline for one LiveClass, and what happens when it fails.
//!
//! read → validate (pure) → plan (pure) → build the desired objects (pure) → server-side apply
//! → status (only when it changed) → Events at phase transitions → requeue at the plan's next
//! transition. An invalid spec is not an error: it becomes `Ready=False`, one Warning Event and
//! no requeue until the object changes.

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{apps::v1::StatefulSet, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Service},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
    },
};
use liveclass_api::{
    LiveClass, LiveClassStatus, Observed, Phase, plan, validate, validate::describe,
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::Instrument as _;

use crate::{
    Config, MANAGER,
    attendance::Attendance,
    error::Error,
    metrics::Metrics,
    resources::{self, Desired, Names},
    status::{self, Observation},
};

/// Added to a requeue at a transition instant, so the reconcile lands just after it.
const TRANSITION_MARGIN: Duration = Duration::from_millis(100);
/// The shortest requeue, so a transition that is due now cannot spin.
const MIN_REQUEUE: Duration = Duration::from_millis(500);
/// First retry after a failed reconcile; doubles per consecutive failure of the same object.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub attendance: Attendance,
    pub config: Config,
    /// Consecutive failures per object, for the exponential back-off.
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, recorder: Recorder, metrics: Arc<Metrics>, config: Config) -> Self {
        let attendance = Attendance::new(
            client.clone(),
            config.redis_override.clone(),
            config.redis_timeout,
        );
        Self {
            client,
            recorder,
            metrics,
            attendance,
            config,
            failures: Mutex::default(),
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
        ctx.metrics.forget(&key(lc));
        return Ok((Action::await_change(), "deleted"));
    }
    let now = Utc::now();
    let old = lc.status.clone().unwrap_or_default();
    let generation = lc.metadata.generation;

    // Validate: a refused spec is reported, not retried.
    let spec = match validate(&lc.spec) {
        Ok(spec) => spec,
        Err(errors) => {
            refuse(lc, ctx, &old, &errors, &namespace, &name).await?;
            ctx.metrics.set_phase(key(lc), None);
            return Ok((Action::await_change(), "invalid"));
        }
    };

    // Plan, with the connected count when it can matter.
    let mut observed = Observed {
        current_replicas: old.planned_replicas,
        connected_students: None,
        last_scale_down: status::last_scale_down(&old),
    };
    let mut plan = plan(&spec, now, &observed);
    if plan.watch_attendance {
        observed.connected_students = ctx.attendance.connected(lc, &name, &namespace).await;
        if observed.connected_students.is_some() {
            plan = liveclass_api::plan(&spec, now, &observed);
        }
    }
    tracing::Span::current().record("phase", plan.phase.as_str());

    // Build and apply.
    let desired = resources::build(lc, &spec, &plan)?;
    let first_of_generation = old.observed_generation != generation;
    let seen = apply_all(ctx, &namespace, &name, &desired, first_of_generation).await?;
    let seen = Observation {
        connected_students: observed.connected_students,
        ..seen
    };

    // Status, only when something in it changed.
    let new = status::valid(&old, &plan, &seen, generation, now);
    if new != old {
        patch_status(ctx, &namespace, &name, &new).await?;
    }

    // Events.
    if old.phase != Some(plan.phase) {
        let note = match plan.occurrence {
            Some(o) => format!(
                "{} → {}: {} socket server replicas; class starts {}",
                old.phase.map_or("none", Phase::as_str),
                plan.phase,
                plan.socket.replicas,
                o.start.to_rfc3339()
            ),
            None => format!("{} socket server replicas", plan.socket.replicas),
        };
        publish(
            ctx,
            lc,
            EventType::Normal,
            status::transition_reason(plan.phase),
            note,
        )
        .await;
    } else if let Some(before) = old.planned_replicas
        && before != plan.socket.replicas
    {
        let reason = if plan.socket.replicas > before {
            "ScalingUp"
        } else {
            "ScalingDown"
        };
        let note = format!(
            "socket server replicas {before} → {}{}",
            plan.socket.replicas,
            match plan.socket.reactive_floor {
                Some(floor)
                    if floor == plan.socket.replicas && floor > plan.socket.class_replicas =>
                    " (more students connected than planned)",
                _ => "",
            }
        );
        publish(ctx, lc, EventType::Normal, reason, note).await;
    }
    ctx.metrics.set_phase(key(lc), Some(plan.phase));

    // Requeue at the next transition; more often while attendance can raise the plan.
    let mut after = plan
        .requeue_after(Utc::now())
        .map_or(ctx.config.max_requeue, |d| d + TRANSITION_MARGIN);
    if plan.watch_attendance {
        after = after.min(ctx.config.attendance_interval);
    }
    let after = after.clamp(MIN_REQUEUE, ctx.config.max_requeue.max(MIN_REQUEUE));
    tracing::debug!(phase = %plan.phase, replicas = plan.socket.replicas, requeue_in = ?after, "reconciled");
    Ok((Action::requeue(after), "applied"))
}

/// Reports a spec the operator refuses: `Ready=False` with the message, and one Warning Event
/// per distinct refusal (not one per reconcile).
async fn refuse(
    lc: &LiveClass,
    ctx: &Context,
    old: &LiveClassStatus,
    errors: &[liveclass_api::ValidationError],
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let reason = errors.first().map_or("InvalidSpec", |e| e.reason());
    let message = describe(errors);
    let new = status::invalid(
        old,
        reason,
        message.clone(),
        lc.metadata.generation,
        Utc::now(),
    );
    if new == *old {
        return Ok(());
    }
    let already_reported = old.conditions.iter().any(|c| {
        c.type_ == liveclass_api::condition::READY
            && c.status == "False"
            && c.reason == reason
            && c.message == message
    });
    patch_status(ctx, namespace, name, &new).await?;
    if !already_reported {
        tracing::warn!(%reason, %message, "refusing an invalid LiveClass");
        publish(ctx, lc, EventType::Warning, reason, message).await;
    }
    Ok(())
}

/// Applies every desired object and reads readiness from what the server returns. With a new
/// generation, also deletes objects the spec no longer asks for (Redis after a switch to
/// External, the HPA after autoscaling is removed).
async fn apply_all(
    ctx: &Context,
    namespace: &str,
    class: &str,
    desired: &Desired,
    first_of_generation: bool,
) -> Result<Observation, Error> {
    let client = &ctx.client;
    apply(ctx, client, namespace, &desired.config_map).await?;
    let deployment = apply(ctx, client, namespace, &desired.deployment).await?;
    apply(ctx, client, namespace, &desired.service).await?;
    apply(ctx, client, namespace, &desired.headless_service).await?;
    apply(ctx, client, namespace, &desired.pdb).await?;
    let names = Names::of(class);
    let redis_ready = match &desired.redis {
        Some((sts, svc)) => {
            let sts = apply(ctx, client, namespace, sts).await?;
            apply(ctx, client, namespace, svc).await?;
            Some(
                sts.status
                    .and_then(|s| s.ready_replicas)
                    .is_some_and(|r| r >= 1),
            )
        }
        None => {
            if first_of_generation {
                delete::<StatefulSet>(ctx, namespace, &names.redis).await?;
                delete::<Service>(ctx, namespace, &names.redis).await?;
            }
            None
        }
    };
    match &desired.hpa {
        Some(hpa) => {
            apply(ctx, client, namespace, hpa).await?;
        }
        None if first_of_generation => {
            delete::<HorizontalPodAutoscaler>(ctx, namespace, &names.socket).await?;
        }
        None => {}
    }
    let ready_replicas = deployment
        .status
        .and_then(|s| s.ready_replicas)
        .and_then(|r| u32::try_from(r).ok());
    Ok(Observation {
        ready_replicas,
        redis_ready,
        connected_students: None,
    })
}

/// Server-side apply of `obj` under [`MANAGER`], forcing ownership of the fields it sets.
/// Content identical to what is stored is a no-op on the server (no new resourceVersion).
async fn apply<K>(ctx: &Context, client: &Client, namespace: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    ctx.metrics.requested();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

async fn delete<K>(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    ctx.metrics.requested();
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Server-side apply of the status subresource, with only the fields the operator owns.
async fn patch_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &LiveClassStatus,
) -> Result<(), Error> {
    let api: Api<LiveClass> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": LiveClass::api_version(&()),
        "kind": LiveClass::kind(&()),
        "status": status,
    });
    ctx.metrics.requested();
    ctx.metrics.wrote();
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Publishes an Event about `lc`; a failure is logged, never fails the reconcile.
async fn publish(ctx: &Context, lc: &LiveClass, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    ctx.metrics.requested();
    ctx.metrics.wrote();
    if let Err(error) = ctx.recorder.publish(&event, &lc.object_ref(&())).await {
        tracing::warn!(%error, %reason, "publishing an Event failed");
    }
}
