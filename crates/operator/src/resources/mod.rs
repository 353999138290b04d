//! The objects a LiveClass owns, built as pure functions of the LiveClass, its validated spec
//! and the plan, so what the operator applies is unit-tested without a cluster.
//!
//! Every object carries the LiveClass as its controlling owner (garbage collection removes them
//! with it, and the controller's `owns` watches put back any drift) and the same labels.

mod redis;
mod socket;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, Service},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Resource, ResourceExt};
use liveclass_api::{LiveClass, Plan, ValidSpec};
use serde::de::DeserializeOwned;

use crate::error::Error;

pub use redis::{REDIS_PORT, redis_url};
pub use socket::SOCKET_PORT;

/// Everything a LiveClass should own right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub headless_service: Service,
    pub pdb: PodDisruptionBudget,
    /// The Redis the operator runs; `None` with an External Redis.
    pub redis: Option<(StatefulSet, Service)>,
    /// The HPA, when the spec asks for autoscaling.
    pub hpa: Option<HorizontalPodAutoscaler>,
}

/// Names of the owned objects, derived from the LiveClass's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The socket Deployment, its ClusterIP Service, PDB, ConfigMap and HPA.
    pub socket: String,
    /// The headless Service for discovering socket pods.
    pub headless: String,
    /// The Redis StatefulSet and Service.
    pub redis: String,
}

impl Names {
    pub fn of(class: &str) -> Self {
        Self {
            socket: format!("{class}-socket"),
            headless: format!("{class}-socket-headless"),
            redis: format!("{class}-redis"),
        }
    }
}

/// What every builder needs: who owns the objects and how they are labelled.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub class: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub names: Names,
}

impl Meta {
    fn new(lc: &LiveClass) -> Result<Self, Error> {
        let owner = lc
            .controller_owner_ref(&())
            .ok_or(Error::MissingField("metadata.uid"))?;
        let namespace = lc
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let class = lc.name_any();
        Ok(Self {
            names: Names::of(&class),
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
        labels.insert("liveclass.dev/class".to_owned(), self.class.clone());
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

    /// `metadata` of an owned object, as JSON.
    pub fn metadata(&self, name: &str, component: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(component),
            "ownerReferences": [self.owner],
        })
    }
}

/// Builds everything `lc` should own under `plan`.
pub fn build(lc: &LiveClass, spec: &ValidSpec, plan: &Plan) -> Result<Desired, Error> {
    let meta = Meta::new(lc)?;
    let config_map = socket::config_map(&meta, lc, spec, plan)?;
    let deployment = socket::deployment(&meta, lc, spec, plan, &config_map)?;
    let redis = match redis::statefulset(&meta, lc, plan)? {
        Some(sts) => Some((sts, redis::service(&meta)?)),
        None => None,
    };
    Ok(Desired {
        deployment,
        service: socket::service(&meta)?,
        headless_service: socket::headless_service(&meta)?,
        pdb: socket::pdb(&meta)?,
        hpa: socket::hpa(&meta, plan)?,
        redis,
        config_map,
    })
}

/// `value` as the typed object `K` (the builders write JSON, which reads like the YAML an admin
/// knows; this checks it against the type).
pub(crate) fn typed<K: DeserializeOwned>(
    what: &'static str,
    value: serde_json::Value,
) -> Result<K, Error> {
    serde_json::from_value(value).map_err(|source| Error::Serialize { what, source })
}

/// A stable 64-bit FNV-1a hash, for the pod template's config annotation (`std`'s hasher is
/// not stable across Rust releases, which would roll every pod on an operator upgrade).
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
