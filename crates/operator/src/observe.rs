//! What a reconcile sees of a class: its owned objects and socket pods, read from the watch
//! caches (reflector stores) rather than the API server, and its attendance as last read.
//!
//! The result, [`World`], is plain data: [`crate::decide`] takes it and never looks further.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{Pod, Service},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use liveclass_api::{LiveClass, time::from_k8s};

use crate::{
    MANAGER,
    attendance::AttendanceView,
    resources::{CLASS_LABEL, Kind, Names, Owned, POD_DELETION_COST},
};

/// The watch caches of everything a class can own, and of the socket pods.
#[derive(Clone)]
pub struct Stores {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub statefulsets: Store<StatefulSet>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub network_policies: Store<NetworkPolicy>,
    pub pods: Store<Pod>,
    /// Set once every cache has listed: the one waiter on the caches' readiness.
    pub listed: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("deployments", &self.deployments.len())
            .field("pods", &self.pods.len())
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// Resolves once every cache holds its first complete list, so a reconcile never mistakes
    /// "not listed yet" for "absent".
    ///
    /// Many reconciles wait here at once when the operator starts with classes to do, and a
    /// store's `wait_until_ready` wakes only the last of several tasks waiting on it (its
    /// one-shot channel keeps one waker), which left all the others waiting forever: 31 of the
    /// first 32 classes never reconciled. So exactly one task waits on the stores, inside a
    /// `OnceCell` whose other callers are woken properly.
    pub async fn ready(&self) {
        self.listed
            .get_or_init(|| async {
                let _ = futures_util::future::join(
                    futures_util::future::join3(
                        self.deployments.wait_until_ready(),
                        self.services.wait_until_ready(),
                        self.pdbs.wait_until_ready(),
                    ),
                    futures_util::future::join4(
                        self.statefulsets.wait_until_ready(),
                        self.hpas.wait_until_ready(),
                        self.network_policies.wait_until_ready(),
                        self.pods.wait_until_ready(),
                    ),
                )
                .await;
            })
            .await;
    }
}

/// The socket Deployment as the decide step needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeploymentView {
    /// `spec.replicas`.
    pub replicas: Option<u32>,
    /// `status.readyReplicas`.
    pub ready: u32,
    /// The Deployment controller has seen the latest spec (`observedGeneration`).
    pub up_to_date: bool,
    /// The operator's server-side apply owns `spec.replicas` (it set them last).
    pub replicas_ours: bool,
}

/// The Redis StatefulSet as the decide step needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedisView {
    pub replicas: u32,
    pub ready: u32,
}

/// One socket pod of the class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    /// From creation to its Ready condition turning true, once it is Ready.
    pub started_in: Option<std::time::Duration>,
    /// Its `controller.kubernetes.io/pod-deletion-cost`, if set.
    pub deletion_cost: Option<i32>,
    /// Being deleted already.
    pub terminating: bool,
}

/// An owned object that exists, with what tells its versions apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub owned: Owned,
    pub uid: String,
    /// `metadata.generation` where the kind keeps one (it moves on spec changes only), else
    /// `metadata.resourceVersion` as a number.
    pub version: u64,
}

/// Everything a reconcile sees of one class.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct World {
    pub deployment: Option<DeploymentView>,
    /// The HPA's `minReplicas`, when it exists.
    pub hpa_min_replicas: Option<u32>,
    pub redis: Option<RedisView>,
    /// The Sentinels' StatefulSet (Replicated).
    pub sentinel: Option<RedisView>,
    /// The node the Sentinels name as primary, when they were asked and answered.
    pub redis_primary: Option<String>,
    /// The owned objects that exist and are this class's (owner uid, label).
    pub existing: Vec<Existing>,
    pub pods: Vec<PodView>,
    pub attendance: AttendanceView,
    /// How long the class's pods were seen to take to start (see [`crate::startup`]).
    pub pod_startup: Option<crate::startup::Estimate>,
}

impl World {
    pub fn exists(&self, owned: &Owned) -> bool {
        self.existing.iter().any(|e| &e.owned == owned)
    }
}

/// The version of an object: see [`Existing::version`].
pub fn version(meta: &kube::api::ObjectMeta) -> u64 {
    match meta.generation {
        Some(g) if g > 0 => u64::try_from(g).unwrap_or(0),
        _ => meta
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0),
    }
}

fn ours<K: Resource>(obj: &K, uid: &str) -> bool {
    let meta = obj.meta();
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true));
    let labelled = meta.labels.as_ref().is_some_and(|l| {
        l.get("app.kubernetes.io/managed-by").map(String::as_str) == Some(MANAGER)
    });
    owned && labelled
}

fn get<K>(store: &Store<K>, name: &str, namespace: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// Whether the operator's own apply (not a subresource) owns `spec.replicas`.
fn replicas_ours(d: &Deployment) -> bool {
    d.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.subresource.is_none()
            && m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .and_then(|s| s.get("f:replicas"))
                .is_some()
    })
}

fn int(n: Option<i32>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok())
}

/// What the stores say about `lc`'s objects, with the attendance view given.
/// A class's socket server pod (not its Redis).
pub fn is_socket_pod(p: &Pod) -> bool {
    p.labels().get("app.kubernetes.io/name").map(String::as_str) == Some("liveclass-socket")
}

/// From the pod's creation to its Ready condition turning true, if it is Ready.
pub fn started_in(p: &Pod) -> Option<std::time::Duration> {
    let (created, ready) = created_and_ready(p)?;
    (ready - created).to_std().ok()
}

/// When the pod was created and when its Ready condition last turned true, once it is Ready.
pub fn created_and_ready(p: &Pod) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let created = p.metadata.creation_timestamp.as_ref()?;
    let ready = p
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some((
        from_k8s(created)?,
        from_k8s(ready.last_transition_time.as_ref()?)?,
    ))
}

pub fn world(stores: &Stores, lc: &LiveClass, attendance: AttendanceView) -> World {
    let Some(namespace) = lc.namespace() else {
        return World::default();
    };
    let name = lc.name_any();
    let uid = lc.uid().unwrap_or_default();
    let names = Names::of(&name);
    let mut existing = Vec::new();
    let mut note = |owned: Owned, meta: &kube::api::ObjectMeta| {
        existing.push(Existing {
            owned,
            uid: meta.uid.clone().unwrap_or_default(),
            version: version(meta),
        });
    };
    let mut deployment = None;
    let mut hpa_min_replicas = None;
    let mut redis = None;
    let mut sentinel = None;
    for owned in names.all_owned() {
        let found = match owned.kind {
            Kind::Deployment => get(&stores.deployments, &owned.name, &namespace)
                .filter(|d| ours(d.as_ref(), &uid))
                .map(|d| {
                    deployment = Some(DeploymentView {
                        replicas: int(d.spec.replicas),
                        ready: int(d.status.as_ref().and_then(|s| s.ready_replicas)).unwrap_or(0),
                        up_to_date: d.status.as_ref().and_then(|s| s.observed_generation)
                            >= d.metadata.generation,
                        replicas_ours: replicas_ours(&d),
                    });
                    d.metadata.clone()
                }),
            Kind::Service => get(&stores.services, &owned.name, &namespace)
                .filter(|s| ours(s.as_ref(), &uid))
                .map(|s| s.metadata.clone()),
            Kind::PodDisruptionBudget => get(&stores.pdbs, &owned.name, &namespace)
                .filter(|p| ours(p.as_ref(), &uid))
                .map(|p| p.metadata.clone()),
            Kind::StatefulSet => get(&stores.statefulsets, &owned.name, &namespace)
                .filter(|s| ours(s.as_ref(), &uid))
                .map(|s| {
                    let view = Some(RedisView {
                        replicas: int(s.spec.replicas).unwrap_or(1),
                        ready: int(s.status.as_ref().and_then(|s| s.ready_replicas)).unwrap_or(0),
                    });
                    if owned.name == names.sentinel {
                        sentinel = view;
                    } else {
                        redis = view;
                    }
                    s.metadata.clone()
                }),
            Kind::NetworkPolicy => get(&stores.network_policies, &owned.name, &namespace)
                .filter(|n| ours(n.as_ref(), &uid))
                .map(|n| n.metadata.clone()),
            Kind::HorizontalPodAutoscaler => get(&stores.hpas, &owned.name, &namespace)
                .filter(|h| ours(h.as_ref(), &uid))
                .map(|h| {
                    hpa_min_replicas = int(h.spec.min_replicas);
                    h.metadata.clone()
                }),
        };
        if let Some(meta) = found {
            note(owned, &meta);
        }
    }
    let pods = stores
        .pods
        .state()
        .iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace.as_str())
                && p.labels().get(CLASS_LABEL) == Some(&name)
                && is_socket_pod(p)
        })
        .map(|p| PodView {
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            started_in: started_in(p),
            deletion_cost: p
                .annotations()
                .get(POD_DELETION_COST)
                .and_then(|c| c.parse().ok()),
            terminating: p.metadata.deletion_timestamp.is_some(),
        })
        .collect();
    World {
        deployment,
        hpa_min_replicas,
        redis,
        sentinel,
        redis_primary: None,
        existing,
        pods,
        attendance,
        pod_startup: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use kube::runtime::{reflector, watcher};

    use super::*;

    /// 32 reconciles wait for the caches at once, as when the operator starts with classes to
    /// do; the caches list; every one of them goes on (with a plain `wait_until_ready` per
    /// reconcile only the last to wait was woken, and the rest waited forever).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_reconcile_waiting_for_the_caches_goes_on_once_they_have_listed() {
        let (deployments, mut d) = reflector::store::<Deployment>();
        let (services, mut s) = reflector::store::<Service>();
        let (pdbs, mut b) = reflector::store::<PodDisruptionBudget>();
        let (statefulsets, mut t) = reflector::store::<StatefulSet>();
        let (hpas, mut h) = reflector::store::<HorizontalPodAutoscaler>();
        let (network_policies, mut n) = reflector::store::<NetworkPolicy>();
        let (pods, mut p) = reflector::store::<Pod>();
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
        let waiting: Vec<_> = (0..32)
            .map(|_| {
                let stores = stores.clone();
                tokio::spawn(async move { stores.ready().await })
            })
            .collect();
        // Let every one of them wait first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        d.apply_watcher_event(&watcher::Event::InitDone);
        s.apply_watcher_event(&watcher::Event::InitDone);
        b.apply_watcher_event(&watcher::Event::InitDone);
        t.apply_watcher_event(&watcher::Event::InitDone);
        h.apply_watcher_event(&watcher::Event::InitDone);
        n.apply_watcher_event(&watcher::Event::InitDone);
        p.apply_watcher_event(&watcher::Event::InitDone);
        let mut done = 0;
        for task in waiting {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_ok()
            {
                done += 1;
            }
        }
        assert_eq!(
            done, 32,
            "reconciles left waiting for caches that had listed"
        );
    }
}
