//! The operator's own Prometheus metrics: reconciles and their duration, errors by reason,
//! classes by phase, and whether this replica leads.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use liveclass_api::Phase;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Every metric the operator exports, in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    errors: Family<ReasonLabels, Counter>,
    phases: Family<PhaseLabels, Gauge>,
    leader: Gauge,
    /// Phase of each class this replica last reconciled, for the gauge.
    class_phases: Mutex<HashMap<String, &'static str>>,
    /// Status patches and Events written, for tests and benchmarks.
    writes: AtomicU64,
    requests: Counter,
    total: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("liveclass_operator");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.002, 2.0, 14));
        let errors = Family::<ReasonLabels, Counter>::default();
        let phases = Family::<PhaseLabels, Gauge>::default();
        let leader = Gauge::default();
        let requests = Counter::default();
        registry.register(
            "api_requests",
            "Requests to the Kubernetes API made by reconciles (applies, deletes, status, Events)",
            requests.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles of LiveClasses, by outcome (applied, invalid, error)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by reason",
            errors.clone(),
        );
        registry.register(
            "classes",
            "LiveClasses this replica reconciled, by phase (Invalid for refused specs)",
            phases.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without election)",
            leader.clone(),
        );
        // Every outcome shows from the start, at 0.
        for outcome in ["applied", "invalid", "error"] {
            let _ = reconciles.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        Self {
            registry,
            reconciles,
            duration,
            errors,
            phases,
            leader,
            class_phases: Mutex::default(),
            writes: AtomicU64::new(0),
            requests,
            total: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one finished reconcile.
    pub fn reconciled(&self, outcome: &str, took: Duration) {
        self.reconciles
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed reconcile by its reason.
    pub fn failed(&self, reason: &str) {
        self.errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records the phase a class is in (`None` for an invalid class).
    pub fn set_phase(&self, key: String, phase: Option<Phase>) {
        let label = phase.map_or("Invalid", Phase::as_str);
        let Ok(mut phases) = self.class_phases.lock() else {
            return;
        };
        let previous = phases.insert(key, label);
        if previous == Some(label) {
            return;
        }
        if let Some(p) = previous {
            self.gauge(p).dec();
        }
        self.gauge(label).inc();
    }

    /// Forgets a deleted class.
    pub fn forget(&self, key: &str) {
        if let Ok(mut phases) = self.class_phases.lock()
            && let Some(p) = phases.remove(key)
        {
            self.gauge(p).dec();
        }
    }

    fn gauge(&self, phase: &str) -> Gauge {
        self.phases
            .get_or_create(&PhaseLabels {
                phase: phase.to_owned(),
            })
            .clone()
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn leading(&self) -> bool {
        self.leader.get() == 1
    }

    /// Counts one write to the API server.
    pub fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request to the API server made by a reconcile.
    pub fn requested(&self) {
        self.requests.inc();
    }

    /// Requests made by reconciles so far.
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    /// Writes made so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Reconciles finished so far (any outcome).
    pub fn reconciles(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Reconciles with this outcome so far.
    pub fn reconciles_with(&self, outcome: &str) -> u64 {
        self.reconciles
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .get()
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
