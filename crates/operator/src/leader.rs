//! Leader election through a `coordination.k8s.io/v1` Lease (kube-rs 5 has no elector), so of
//! several operator replicas exactly one reconciles.
//!
//! The holder renews every `renew` interval with a resourceVersion-guarded replace; a standby
//! takes the Lease once it has seen it unchanged for the lease duration (measured on its own
//! clock, as client-go does, so clock skew between nodes does not matter) or when it is free.
//! A holder that cannot renew for two thirds of the duration stops leading on its own, before
//! anyone else may take over.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Client, api::PostParams};

/// One replica's view of the Lease.
#[derive(Debug)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The resourceVersion last seen, and when this replica first saw it.
    observed: Option<(String, Instant)>,
}

impl LeaseLock {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes or renews the Lease; `Ok(true)` while this replica holds it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let resource_version = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().map(|(rv, _)| rv) != Some(&resource_version) {
            self.observed = Some((resource_version.clone(), Instant::now()));
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() && !self.expired(&spec, now) {
            return Ok(false);
        }
        let mut updated = lease;
        let mut new_spec = self.spec(mine.then_some(&spec), now);
        if !mine {
            new_spec.lease_transitions =
                Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        updated.spec = Some(new_spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &updated)
            .await
        {
            Ok(written) => {
                if let Some(rv) = written.metadata.resource_version {
                    self.observed = Some((rv, Instant::now()));
                }
                Ok(true)
            }
            // Someone else wrote it first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up (on a clean shutdown), so a standby takes over at once.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        if let Err(error) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, "releasing the leader Lease failed; it will expire");
        }
    }

    /// Whether the holder has stopped renewing: unchanged for the lease duration as seen here,
    /// or its renew time (the holder's clock) older than the duration.
    fn expired(&self, spec: &LeaseSpec, now: Timestamp) -> bool {
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.duration, Duration::from_secs);
        let unchanged = self
            .observed
            .as_ref()
            .is_some_and(|(_, seen)| seen.elapsed() >= duration);
        let stale = spec.renew_time.as_ref().is_some_and(|t| {
            SignedDuration::try_from(duration)
                .ok()
                .and_then(|d| t.0.checked_add(d).ok())
                .is_some_and(|until| until < now)
        });
        unchanged || stale
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let seconds = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        match previous {
            // Renewing: keep acquire time and transitions.
            Some(previous) => LeaseSpec {
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(seconds),
                ..previous.clone()
            },
            None => LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            },
        }
    }
}
