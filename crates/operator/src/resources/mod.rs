//! The objects a LiveClass owns, built as typed `k8s-openapi` structs by pure functions of the
//! LiveClass, its validated spec and the plan, so what the operator applies is unit-tested
//! without a cluster and a misspelt field does not compile.
//!
//! Every object carries the LiveClass as its controlling owner (garbage collection removes them
//! with it, and the owned-object watches put back any drift) and the same labels; [`Owned`]
//! names every kind and name a class can own, which is what lets the apply step delete the
//! ones the plan no longer asks for.

mod redis;
mod socket;
mod token;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Service,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Resource, ResourceExt};
use liveclass_api::{LiveClass, Plan, ValidSpec, types::SecretKeyRef};

use crate::error::Error;

pub use redis::{
    MASTER_NAME, NODE_SCRIPT, PASSWORD_DIR, PASSWORD_KEY, REDIS_PORT, RedisObjects,
    ReplicatedObjects, SAFE_TO_EVICT, SENTINEL_PORT, USER_NAME, redis_url, sentinel_script,
    sentinel_urls,
};
pub use socket::{ADMIN_PORT, POD_DELETION_COST, WS_PORT};
pub use token::{GENERATED_BYTES, GENERATED_KEY, GENERATED_PREVIOUS_KEY, TokenSource};

/// The label every owned object carries, so the owned-object watches see only ours.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=liveclass-operator";
/// The label naming the class (its `metadata.name`) on every owned object and socket pod.
pub const CLASS_LABEL: &str = "liveclass.dev/class";

/// Everything a LiveClass should own right now. A released class owns nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    pub deployment: Option<Deployment>,
    pub service: Option<Service>,
    pub headless_service: Option<Service>,
    pub pdb: Option<PodDisruptionBudget>,
    /// The Redis the operator runs; `None` with an External Redis.
    pub redis: Option<RedisObjects>,
    /// The HPA, when the spec asks for autoscaling and pods are planned.
    pub hpa: Option<HorizontalPodAutoscaler>,
}

/// The kinds of object a class owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Deployment,
    Service,
    PodDisruptionBudget,
    StatefulSet,
    HorizontalPodAutoscaler,
    NetworkPolicy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
            Kind::StatefulSet => "StatefulSet",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }
}

/// One owned object, by kind and name (in the class's namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owned {
    pub kind: Kind,
    pub name: String,
}

impl Owned {
    fn new(kind: Kind, name: &str) -> Self {
        Self {
            kind,
            name: name.to_owned(),
        }
    }
}

impl Desired {
    /// Every object in it, by kind and name.
    pub fn owned(&self) -> Vec<Owned> {
        let name = |m: &ObjectMeta| m.name.clone().unwrap_or_default();
        let mut out = Vec::new();
        if let Some(d) = &self.deployment {
            out.push(Owned::new(Kind::Deployment, &name(&d.metadata)));
        }
        for s in [&self.service, &self.headless_service]
            .into_iter()
            .flatten()
        {
            out.push(Owned::new(Kind::Service, &name(&s.metadata)));
        }
        if let Some(p) = &self.pdb {
            out.push(Owned::new(Kind::PodDisruptionBudget, &name(&p.metadata)));
        }
        if let Some(r) = &self.redis {
            out.push(Owned::new(
                Kind::StatefulSet,
                &name(&r.statefulset.metadata),
            ));
            out.push(Owned::new(Kind::Service, &name(&r.service.metadata)));
            out.push(Owned::new(
                Kind::PodDisruptionBudget,
                &name(&r.pdb.metadata),
            ));
            out.push(Owned::new(
                Kind::NetworkPolicy,
                &name(&r.network_policy.metadata),
            ));
            if let Some(x) = &r.replicated {
                out.push(Owned::new(Kind::Service, &name(&x.nodes.metadata)));
                out.push(Owned::new(Kind::StatefulSet, &name(&x.sentinels.metadata)));
                out.push(Owned::new(
                    Kind::Service,
                    &name(&x.sentinel_service.metadata),
                ));
                out.push(Owned::new(
                    Kind::PodDisruptionBudget,
                    &name(&x.sentinel_pdb.metadata),
                ));
            }
        }
        if let Some(h) = &self.hpa {
            out.push(Owned::new(
                Kind::HorizontalPodAutoscaler,
                &name(&h.metadata),
            ));
        }
        out
    }
}

/// Names of the owned objects, derived from the LiveClass's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The socket Deployment, its ClusterIP Service, PDB and HPA.
    pub socket: String,
    /// The headless Service for discovering socket pods.
    pub headless: String,
    /// The Redis StatefulSet, its Service and PDB.
    pub redis: String,
    /// Replicated: the headless Service naming each Redis node.
    pub redis_nodes: String,
    /// Replicated: the Sentinels' StatefulSet, headless Service and PDB.
    pub sentinel: String,
    /// The Secret holding the password of the Redis the operator runs.
    pub redis_auth: String,
    /// The token Secret the operator generates when the spec names none.
    pub token: String,
}

impl Names {
    pub fn of(class: &str) -> Self {
        Self {
            socket: format!("{class}-socket"),
            headless: format!("{class}-socket-headless"),
            redis: format!("{class}-redis"),
            redis_nodes: format!("{class}-redis-nodes"),
            sentinel: format!("{class}-sentinel"),
            redis_auth: format!("{class}-redis-auth"),
            token: format!("{class}-token"),
        }
    }

    /// Every object a class of this name can own, whatever its spec: what the apply step looks
    /// for when it deletes the ones the plan no longer asks for.
    pub fn all_owned(&self) -> [Owned; 13] {
        [
            Owned::new(Kind::Deployment, &self.socket),
            Owned::new(Kind::Service, &self.socket),
            Owned::new(Kind::Service, &self.headless),
            Owned::new(Kind::PodDisruptionBudget, &self.socket),
            Owned::new(Kind::HorizontalPodAutoscaler, &self.socket),
            Owned::new(Kind::StatefulSet, &self.redis),
            Owned::new(Kind::Service, &self.redis),
            Owned::new(Kind::PodDisruptionBudget, &self.redis),
            Owned::new(Kind::NetworkPolicy, &self.redis),
            Owned::new(Kind::Service, &self.redis_nodes),
            Owned::new(Kind::StatefulSet, &self.sentinel),
            Owned::new(Kind::Service, &self.sentinel),
            Owned::new(Kind::PodDisruptionBudget, &self.sentinel),
        ]
    }
}

/// What every builder needs: who owns the objects and how they are labelled.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub class: String,
    pub class_id: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub names: Names,
}

impl Meta {
    pub(crate) fn new(lc: &LiveClass) -> Result<Self, Error> {
        let owner = lc
            .controller_owner_ref(&())
            .ok_or(Error::MissingField("metadata.uid"))?;
        let namespace = lc
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let class = lc.name_any();
        Ok(Self {
            names: Names::of(&class),
            class_id: liveclass_api::class_id(&namespace, &class),
            class,
            namespace,
            owner,
        })
    }

    /// Labels every owned object carries; `component` is `socket` or `redis`.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector(component);
        labels.insert(
            "app.kubernetes.io/managed-by".to_owned(),
            crate::MANAGER.to_owned(),
        );
        labels.insert(CLASS_LABEL.to_owned(), self.class.clone());
        labels
    }

    /// The labels that select a component's pods (never change: a selector is immutable).
    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_owned(),
                format!("liveclass-{component}"),
            ),
            ("app.kubernetes.io/instance".to_owned(), self.class.clone()),
        ])
    }

    /// `metadata` of an owned object.
    pub fn metadata(&self, name: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Builds everything `lc` should own under `plan`, with the socket servers verifying tokens
/// against `token`.
pub fn build(
    lc: &LiveClass,
    spec: &ValidSpec,
    plan: &Plan,
    token: &TokenSource,
) -> Result<Desired, Error> {
    if plan.released {
        return Ok(Desired::default());
    }
    let meta = Meta::new(lc)?;
    Ok(Desired {
        deployment: Some(socket::deployment(&meta, lc, spec, plan, token)),
        service: Some(socket::service(&meta)),
        headless_service: Some(socket::headless_service(&meta)),
        pdb: Some(socket::pdb(&meta)),
        hpa: socket::hpa(&meta, plan),
        redis: redis::objects(&meta, lc, spec, plan),
    })
}

/// The Secret `name` the operator generates for `lc`, holding the random `key`.
pub fn generated_token_secret(
    lc: &LiveClass,
    name: &str,
    key: String,
) -> Result<k8s_openapi::api::core::v1::Secret, Error> {
    Ok(token::generated_secret(&Meta::new(lc)?, name, key))
}

/// The Secret `name` holding the password of the Redis the operator runs for `lc`.
pub fn generated_redis_secret(
    lc: &LiveClass,
    name: &str,
    password: String,
) -> Result<k8s_openapi::api::core::v1::Secret, Error> {
    Ok(token::generated_redis_secret(
        &Meta::new(lc)?,
        name,
        password,
    ))
}

/// The token Secret key the socket servers of `lc` verify with: the spec's, or the generated one.
pub fn token_source(lc: &LiveClass) -> TokenSource {
    match &lc.spec.socket.token_secret_ref {
        Some(r) => TokenSource::Given {
            current: SecretKeyRef {
                name: r.name.clone(),
                key: r.key.clone(),
            },
            previous_key: r.previous_key.clone(),
        },
        None => TokenSource::Generated {
            name: Names::of(&lc.name_any()).token,
        },
    }
}

#[cfg(test)]
mod tests;
