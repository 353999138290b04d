//! Leader election through a `coordination.k8s.io/v1` Lease (kube-rs 5 has no elector), so of
//! several operator replicas exactly one reconciles, and the loop that runs the controller only
//! while holding it.
//!
//! No wall clock is compared across nodes. As in client-go, a standby watches the Lease's
//! record for change: it takes the Lease once it has seen the same record (resourceVersion)
//! for the lease duration on its own monotonic clock, or when it is free. The holder renews
//! every renew interval with a resourceVersion-guarded replace, each call bounded by the time
//! left before its renew deadline (two thirds of the duration, on its own monotonic clock); a
//! holder that has not renewed by then stops leading by itself, before anyone may take over.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The shortest time a Lease call is given, however close the renew deadline is.
const MIN_CALL: Duration = Duration::from_millis(200);

/// Why a Lease call failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the Lease call did not answer within {0:?}")]
    Timeout(Duration),
}

/// One replica's view of the Lease.
#[derive(Debug)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The record (resourceVersion) last seen, and when this replica first saw it.
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

    /// Takes or renews the Lease within `timeout`; `Ok(true)` while this replica holds it.
    pub async fn try_acquire_or_renew(&mut self, timeout: Duration) -> Result<bool, LeaseError> {
        tokio::time::timeout(timeout, self.acquire_or_renew())
            .await
            .map_err(|_| LeaseError::Timeout(timeout))?
            .map_err(LeaseError::Kube)
    }

    async fn acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
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
                Ok(written) => {
                    self.saw(written.metadata.resource_version);
                    Ok(true)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        self.saw(lease.metadata.resource_version.clone());
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() && !self.expired(&spec) {
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
                self.observed = written
                    .metadata
                    .resource_version
                    .map(|rv| (rv, Instant::now()));
                Ok(true)
            }
            // Someone else wrote it first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Notes the record seen; the clock restarts only when it changed.
    fn saw(&mut self, resource_version: Option<String>) {
        let rv = resource_version.unwrap_or_default();
        if self.observed.as_ref().map(|(seen, _)| seen) != Some(&rv) {
            self.observed = Some((rv, Instant::now()));
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

    /// Whether the holder has stopped renewing: its record unchanged for the lease duration as
    /// measured here. The `renewTime` it writes is its own clock's and is never compared.
    fn expired(&self, spec: &LeaseSpec) -> bool {
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.duration, Duration::from_secs);
        self.observed
            .as_ref()
            .is_some_and(|(_, seen)| seen.elapsed() >= duration)
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

/// How the election runs.
#[derive(Debug, Clone)]
pub struct Election {
    pub lease: LeaseSettings,
    pub identity: String,
}

/// Where the Lease is and how long it lasts.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub duration: Duration,
    pub renew: Duration,
}

/// Resolves once shutdown is asked for (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Waits for the Lease, runs `control()` while holding it, stops it as soon as the Lease is
/// lost or cannot be renewed in time, and stands by again; until `shutdown`.
pub async fn lead<F, Fut>(
    client: Client,
    election: Election,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
    control: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let settings = &election.lease;
    let mut lease = LeaseLock::new(
        client,
        &settings.namespace,
        &settings.name,
        &election.identity,
        settings.duration,
    );
    let renew_deadline = settings.duration.mul_f64(2.0 / 3.0);
    loop {
        // Standby until the Lease is ours.
        loop {
            match lease
                .try_acquire_or_renew(settings.renew.max(MIN_CALL))
                .await
            {
                Ok(true) => break,
                Ok(false) => ready.store(true, Ordering::Relaxed),
                Err(error) => tracing::warn!(%error, "reading the leader Lease failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(settings.renew) => {}
                () = stopped(&mut shutdown) => return,
            }
        }
        ready.store(true, Ordering::Relaxed);
        tracing::info!(identity = %election.identity, "leading: the controller starts");
        metrics.set_leader(true);
        // Its own task, so a slow renewal never stalls reconciles.
        let mut controller = tokio::spawn(control());
        let mut renewed = Instant::now();
        let stop = loop {
            tokio::select! {
                _ = &mut controller => break false,
                () = stopped(&mut shutdown) => break true,
                () = tokio::time::sleep(settings.renew) => {
                    let left = renew_deadline.saturating_sub(renewed.elapsed()).max(MIN_CALL);
                    match lease.try_acquire_or_renew(left).await {
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
        // Stop reconciling before anything else: another replica may lead soon.
        controller.abort();
        let _ = controller.await;
        metrics.set_leader(false);
        if stop {
            lease.release().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// An API server that accepts the connection and never answers (a hung apiserver, a
    /// half-open link): the renewal call gives up at its bound instead of waiting forever,
    /// so the holder can step down before its renew deadline passes.
    #[tokio::test]
    async fn a_lease_call_that_gets_no_answer_gives_up_at_its_bound() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            // Accepts and keeps every connection open, reading nothing, answering nothing.
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let mut lock = LeaseLock::new(client, "default", "lc", "me", Duration::from_secs(15));
        let bound = Duration::from_millis(300);
        let started = Instant::now();
        let result = lock.try_acquire_or_renew(bound).await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(LeaseError::Timeout(t)) if t == bound),
            "{result:?}"
        );
        assert!(took >= bound && took < bound * 5, "gave up after {took:?}");
        hold.abort();
    }
}
