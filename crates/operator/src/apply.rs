//! The apply step: makes a [`Decision`] true on the API server, in the order that keeps
//! capacity up — the token Secret and Redis first, the HPA before the Deployment it takes over,
//! pods' deletion costs before the replicas come down, and only then the objects the plan no
//! longer asks for are deleted.
//!
//! Every object is server-side applied under the field manager [`MANAGER`], forced. An object
//! whose desired content is what this operator last applied, and that nobody changed since (its
//! generation, or resourceVersion for kinds without one, is no newer than what the apply
//! returned), is not sent again: at steady state a reconcile makes no request at all.

use std::{
    collections::{HashMap, HashSet},
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{Deployment, StatefulSet},
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{Pod, Secret, Service},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::reflector::ObjectRef,
};
use liveclass_api::{LiveClass, LiveClassStatus};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    MANAGER,
    decide::{Decision, Note},
    error::Error,
    events::Publisher,
    metrics::{Metrics, Verb},
    observe::{Stores, World, version},
    resources::{self, GENERATED_BYTES, Kind, Owned, POD_DELETION_COST},
};

/// The field manager that holds `spec.replicas` of a Deployment between the operator letting
/// go of them and the HPA taking them (the handover Kubernetes documents for server-side
/// apply), so the field is never left unowned and reset to 1.
pub const HANDOVER_MANAGER: &str = "liveclass-operator-handover";
/// How long the apply waits for the pod cache to show the deletion costs it set, before it
/// lowers the replicas (the ReplicaSet controller reads the same kind of cache).
const COSTS_SEEN_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    namespace: String,
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Applied {
    hash: u64,
    version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AppliedEntry {
    applied: Applied,
    uid: String,
}

/// Applies decisions; remembers what it applied, and which token Secrets exist.
pub struct Applier {
    client: Client,
    events: Arc<Publisher>,
    metrics: Arc<Metrics>,
    applied: Mutex<HashMap<Key, AppliedEntry>>,
    tokens: Mutex<HashSet<(String, String, String)>>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").finish_non_exhaustive()
    }
}

/// A stable 64-bit FNV-1a hash of the object as sent (`std`'s hasher is not stable across
/// Rust releases, and this one needs to be stable only within a process, but is cheap).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Applier {
    pub fn new(client: Client, events: Arc<Publisher>, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            events,
            metrics,
            applied: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    /// Forgets a deleted class.
    pub fn forget(&self, namespace: &str, name: &str) {
        let names = resources::Names::of(name);
        if let Ok(mut applied) = self.applied.lock() {
            applied.retain(|k, _| {
                k.namespace != namespace || !names.all_owned().iter().any(|o| o.name == k.name)
            });
        }
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|(ns, n, _)| ns != namespace || *n != names.token);
        }
    }

    /// Applies everything `decision` asks for, in order.
    pub async fn apply(
        &self,
        lc: &LiveClass,
        decision: &Decision,
        world: &World,
        stores: &Stores,
    ) -> Result<(), Error> {
        let namespace = lc
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        if let Some(name) = &decision.generate_token {
            self.ensure_generated(lc, &namespace, name, resources::generated_token_secret)
                .await?;
        }
        // Before the Redis pods, which mount it (a pod whose Secret is missing waits for it).
        if let Some(name) = &decision.generate_redis_password {
            self.ensure_generated(lc, &namespace, name, resources::generated_redis_secret)
                .await?;
        }
        let Some(desired) = &decision.desired else {
            return Ok(());
        };
        if let Some(r) = &desired.redis {
            // The Services first: a starting node or Sentinel looks the others up by name.
            if let Some(x) = &r.replicated {
                self.apply_one(&namespace, &x.nodes, Kind::Service, world)
                    .await?;
                self.apply_one(&namespace, &x.sentinel_service, Kind::Service, world)
                    .await?;
            }
            self.apply_one(&namespace, &r.service, Kind::Service, world)
                .await?;
            self.apply_one(&namespace, &r.statefulset, Kind::StatefulSet, world)
                .await?;
            self.apply_one(&namespace, &r.pdb, Kind::PodDisruptionBudget, world)
                .await?;
            self.apply_one(&namespace, &r.network_policy, Kind::NetworkPolicy, world)
                .await?;
            if let Some(x) = &r.replicated {
                self.apply_one(&namespace, &x.sentinels, Kind::StatefulSet, world)
                    .await?;
                self.apply_one(
                    &namespace,
                    &x.sentinel_pdb,
                    Kind::PodDisruptionBudget,
                    world,
                )
                .await?;
            }
        }
        // The HPA first: it must exist before the Deployment lets go of its replicas.
        if let Some(hpa) = &desired.hpa {
            self.apply_one(&namespace, hpa, Kind::HorizontalPodAutoscaler, world)
                .await?;
        }
        if !decision.deletion_costs.is_empty() {
            self.set_deletion_costs(&namespace, &decision.deletion_costs, stores)
                .await?;
        }
        if let (Some(replicas), Some(d)) = (decision.handover_replicas, &desired.deployment) {
            self.hand_over(&namespace, d, replicas).await?;
        }
        if let Some(d) = &desired.deployment {
            self.apply_one(&namespace, d, Kind::Deployment, world)
                .await?;
        }
        for svc in [&desired.service, &desired.headless_service]
            .into_iter()
            .flatten()
        {
            self.apply_one(&namespace, svc, Kind::Service, world)
                .await?;
        }
        if let Some(pdb) = &desired.pdb {
            self.apply_one(&namespace, pdb, Kind::PodDisruptionBudget, world)
                .await?;
        }
        for orphan in &decision.orphans {
            self.delete(&namespace, orphan).await?;
        }
        Ok(())
    }

    /// Server-side apply of `obj` under [`MANAGER`], forced, unless it is what was last applied
    /// and unchanged since.
    async fn apply_one<K>(
        &self,
        namespace: &str,
        obj: &K,
        kind: Kind,
        world: &World,
    ) -> Result<(), Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let key = Key {
            kind,
            namespace: namespace.to_owned(),
            name: name.clone(),
        };
        let body = serde_json::to_vec(obj).unwrap_or_default();
        let hash = fnv1a(&body);
        let owned = Owned {
            kind,
            name: name.clone(),
        };
        let existing = world.existing.iter().find(|e| e.owned == owned);
        let last = self.applied.lock().ok().and_then(|a| a.get(&key).cloned());
        if let (Some(e), Some(last)) = (existing, &last)
            && last.applied.hash == hash
            && last.uid == e.uid
            && e.version <= last.applied.version
        {
            return Ok(());
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        self.metrics.requested(Verb::Apply);
        let written = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(Error::kube("applying", kind.as_str(), &name))?;
        if let Ok(mut applied) = self.applied.lock() {
            applied.insert(
                key,
                AppliedEntry {
                    applied: Applied {
                        hash,
                        version: version(written.meta()),
                    },
                    uid: written.meta().uid.clone().unwrap_or_default(),
                },
            );
        }
        Ok(())
    }

    /// Creates a generated Secret (the token's, the Redis password's) once: a 409 means it
    /// exists (the operator never reads Secrets, so it never looks at or rewrites a key).
    async fn ensure_generated(
        &self,
        lc: &LiveClass,
        namespace: &str,
        name: &str,
        build: fn(&LiveClass, &str, String) -> Result<Secret, Error>,
    ) -> Result<(), Error> {
        let uid = lc.uid().unwrap_or_default();
        let key = (namespace.to_owned(), name.to_owned(), uid);
        if self.tokens.lock().is_ok_and(|t| t.contains(&key)) {
            return Ok(());
        }
        let secret = build(lc, name, random_key()?)?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        self.metrics.requested(Verb::Create);
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => tracing::info!(secret = name, "generated a Secret for the class"),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(Error::kube("creating", "Secret", name)(error)),
        }
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(key);
        }
        Ok(())
    }

    /// Sets each pod's deletion cost, then waits (briefly) until the pod cache shows them.
    async fn set_deletion_costs(
        &self,
        namespace: &str,
        costs: &[(String, i32)],
        stores: &Stores,
    ) -> Result<(), Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        for (pod, cost) in costs {
            let patch = serde_json::json!({
                "metadata": { "annotations": { POD_DELETION_COST: cost.to_string() } }
            });
            self.metrics.requested(Verb::PatchPod);
            match pods
                .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                // Gone already: nothing to rank.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(Error::kube("annotating", "Pod", pod)(error)),
            }
        }
        let deadline = Instant::now() + COSTS_SEEN_WITHIN;
        while Instant::now() < deadline {
            let seen = costs.iter().all(|(pod, cost)| {
                stores
                    .pods
                    .get(&ObjectRef::new(pod).within(namespace))
                    .is_none_or(|p| {
                        p.annotations().get(POD_DELETION_COST) == Some(&cost.to_string())
                    })
            });
            if seen {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Gives `spec.replicas` of the Deployment to [`HANDOVER_MANAGER`] at their current value,
    /// so the operator's next apply (without replicas) leaves them where they are for the HPA.
    /// A conflict means another manager (the HPA) already owns them: nothing to hand over.
    async fn hand_over(&self, namespace: &str, d: &Deployment, replicas: i32) -> Result<(), Error> {
        let name = d.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": name },
            "spec": { "replicas": replicas },
        });
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        self.metrics.requested(Verb::Apply);
        match api
            .patch(
                &name,
                &PatchParams::apply(HANDOVER_MANAGER),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(
                    deployment = name,
                    replicas,
                    "handed the replicas over to the HPA"
                );
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(Error::kube("handing over", "Deployment", &name)(error)),
        }
    }

    async fn delete(&self, namespace: &str, orphan: &Owned) -> Result<(), Error> {
        let name = orphan.name.as_str();
        self.metrics.requested(Verb::Delete);
        let params = DeleteParams::background();
        let result = match orphan.kind {
            Kind::Deployment => delete::<Deployment>(&self.client, namespace, name, &params).await,
            Kind::Service => delete::<Service>(&self.client, namespace, name, &params).await,
            Kind::PodDisruptionBudget => {
                delete::<PodDisruptionBudget>(&self.client, namespace, name, &params).await
            }
            Kind::StatefulSet => {
                delete::<StatefulSet>(&self.client, namespace, name, &params).await
            }
            Kind::HorizontalPodAutoscaler => {
                delete::<HorizontalPodAutoscaler>(&self.client, namespace, name, &params).await
            }
            Kind::NetworkPolicy => {
                delete::<NetworkPolicy>(&self.client, namespace, name, &params).await
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(
                    kind = orphan.kind.as_str(),
                    name,
                    "deleted an object the plan no longer asks for"
                );
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(Error::kube("deleting", orphan.kind.as_str(), name)(error)),
        }
    }

    /// Server-side apply of the status subresource, with only the fields the operator owns.
    pub async fn write_status(
        &self,
        lc: &LiveClass,
        status: &LiveClassStatus,
    ) -> Result<Option<crate::status::Written>, Error> {
        let namespace = lc
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let name = lc.name_any();
        let api: Api<LiveClass> = Api::namespaced(self.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": LiveClass::api_version(&()),
            "kind": LiveClass::kind(&()),
            "status": status,
        });
        self.metrics.requested(Verb::ApplyStatus);
        let written = api
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::kube("writing the status of", "LiveClass", &name))?;
        Ok(crate::status::Written::of(&written))
    }

    /// Publishes Events about `lc`; a failure is logged, never fails the reconcile.
    pub async fn publish(&self, lc: &LiveClass, notes: &[Note]) {
        for note in notes {
            self.metrics.requested(Verb::Event);
            if let Err(error) = self.events.publish(note, &lc.object_ref(&())).await {
                tracing::warn!(%error, reason = %note.reason, "publishing an Event failed");
            }
        }
    }
}

async fn delete<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    params: &DeleteParams,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .delete(name, params)
        .await
        .map(|_| ())
}

/// A new signing key: [`GENERATED_BYTES`] bytes from the operating system's CSPRNG, as
/// base64url text (64 characters), so the key file holds printable text the school's backend
/// can use as it is.
fn random_key() -> Result<String, Error> {
    let mut bytes = [0u8; GENERATED_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| Error::Randomness(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
