//! The operator's own Prometheus metrics: reconciles and their duration, errors by reason,
//! requests to the API server by verb, classes by phase and, per class, the replicas planned,
//! Ready and needed and the students connected; how far ahead of the start capacity was Ready
//! (and how often it was late); whether this replica leads.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    namespace: String,
    name: String,
}

/// A request the operator makes to the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Server-side apply of an owned object.
    Apply,
    /// Server-side apply of a LiveClass's status.
    ApplyStatus,
    /// Creating a generated token Secret.
    Create,
    /// Deleting an owned object the plan no longer asks for.
    Delete,
    /// Setting a pod's deletion cost before a scale-down.
    PatchPod,
    /// Publishing an Event.
    Event,
    /// Reading an External Redis's Secret (the only read a reconcile makes; the rest come from
    /// watches).
    Get,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Apply => "apply",
            Verb::ApplyStatus => "apply_status",
            Verb::Create => "create",
            Verb::Delete => "delete",
            Verb::PatchPod => "patch_pod",
            Verb::Event => "event",
            Verb::Get => "get",
        }
    }

    const ALL: [Verb; 7] = [
        Verb::Apply,
        Verb::ApplyStatus,
        Verb::Create,
        Verb::Delete,
        Verb::PatchPod,
        Verb::Event,
        Verb::Get,
    ];
}

/// What one reconcile saw and asked for, for the per-class gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassFigures {
    pub planned: u32,
    pub ready: u32,
    pub needed: u64,
    pub connected: Option<u64>,
}

/// Every metric the operator exports, in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    errors: Family<ReasonLabels, Counter>,
    attendance_errors: Family<ReasonLabels, Counter>,
    requests: Family<VerbLabels, Counter>,
    phases: Family<PhaseLabels, Gauge>,
    planned: Family<ClassLabels, Gauge>,
    ready: Family<ClassLabels, Gauge>,
    needed: Family<ClassLabels, Gauge>,
    connected: Family<ClassLabels, Gauge>,
    lead: Histogram,
    late: Counter,
    leader: Gauge,
    /// Phase of each class this replica last reconciled, for the gauge.
    class_phases: Mutex<HashMap<String, &'static str>>,
    total: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("liveclass_operator");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.002, 2.0, 14));
        let errors = Family::<ReasonLabels, Counter>::default();
        let attendance_errors = Family::<ReasonLabels, Counter>::default();
        let requests = Family::<VerbLabels, Counter>::default();
        let phases = Family::<PhaseLabels, Gauge>::default();
        let planned = Family::<ClassLabels, Gauge>::default();
        let ready = Family::<ClassLabels, Gauge>::default();
        let needed = Family::<ClassLabels, Gauge>::default();
        let connected = Family::<ClassLabels, Gauge>::default();
        // Seconds Ready before the start: negative is after it; the planned lead is
        // warmup (10 minutes by default).
        let lead = Histogram::new([
            -600.0, -60.0, 0.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
        ]);
        let late = Counter::default();
        let leader = Gauge::default();
        registry.register(
            "api_requests",
            "Requests to the Kubernetes API made by reconciles, by verb (apply, apply_status, \
             create, delete, patch_pod, event, get); all but get are writes",
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
            "attendance_read_errors",
            "Failed reads of a class's attendance from its Redis, by reason",
            attendance_errors.clone(),
        );
        registry.register(
            "classes",
            "LiveClasses this replica reconciled, by phase (Invalid for refused specs)",
            phases.clone(),
        );
        registry.register(
            "class_planned_replicas",
            "Socket server replicas the plan asks for, per class",
            planned.clone(),
        );
        registry.register(
            "class_ready_replicas",
            "Socket server replicas Ready, per class",
            ready.clone(),
        );
        registry.register(
            "class_needed_replicas",
            "Socket server replicas the class's students need before maxReplicas, per class",
            needed.clone(),
        );
        registry.register(
            "class_connected_students",
            "Students connected at the last reading, per class",
            connected.clone(),
        );
        registry.register(
            "capacity_ready_lead_seconds",
            "How long before the start the planned capacity of an occurrence was Ready",
            lead.clone(),
        );
        registry.register(
            "late_classes",
            "Occurrences whose capacity was not Ready by start - warmup",
            late.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without election)",
            leader.clone(),
        );
        // Every outcome and verb shows from the start, at 0.
        for outcome in ["applied", "invalid", "error"] {
            let _ = reconciles.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        for verb in Verb::ALL {
            let _ = requests.get_or_create(&VerbLabels {
                verb: verb.as_str().to_owned(),
            });
        }
        Self {
            registry,
            reconciles,
            duration,
            errors,
            attendance_errors,
            requests,
            phases,
            planned,
            ready,
            needed,
            connected,
            lead,
            late,
            leader,
            class_phases: Mutex::default(),
            total: AtomicU64::new(0),
        }
    }
}

fn class_labels(namespace: &str, name: &str) -> ClassLabels {
    ClassLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
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

    /// Counts one failed attendance read by its reason.
    pub fn attendance_failed(&self, reason: &str) {
        self.attendance_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one request to the API server.
    pub fn requested(&self, verb: Verb) {
        self.requests
            .get_or_create(&VerbLabels {
                verb: verb.as_str().to_owned(),
            })
            .inc();
    }

    /// Requests of one verb so far.
    pub fn requests_of(&self, verb: Verb) -> u64 {
        self.requests
            .get_or_create(&VerbLabels {
                verb: verb.as_str().to_owned(),
            })
            .get()
    }

    /// Requests made by reconciles so far.
    pub fn requests(&self) -> u64 {
        Verb::ALL.iter().map(|v| self.requests_of(*v)).sum()
    }

    /// Writes (every request but reads) made so far.
    pub fn writes(&self) -> u64 {
        self.requests() - self.requests_of(Verb::Get)
    }

    /// Records what the last reconcile of a class saw and planned.
    pub fn set_class(&self, namespace: &str, name: &str, figures: ClassFigures) {
        let labels = class_labels(namespace, name);
        self.planned
            .get_or_create(&labels)
            .set(i64::from(figures.planned));
        self.ready
            .get_or_create(&labels)
            .set(i64::from(figures.ready));
        self.needed
            .get_or_create(&labels)
            .set(i64::try_from(figures.needed).unwrap_or(i64::MAX));
        match figures.connected {
            Some(n) => {
                self.connected
                    .get_or_create(&labels)
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            None => {
                self.connected.remove(&labels);
            }
        }
    }

    /// Records how far ahead of its start an occurrence's capacity was Ready.
    pub fn capacity_ready(&self, lead_seconds: i64) {
        #[allow(clippy::cast_precision_loss)]
        self.lead.observe(lead_seconds as f64);
    }

    /// Counts an occurrence whose capacity was late.
    pub fn late(&self) {
        self.late.inc();
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

    /// Forgets a deleted class: its phase and its per-class series.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut phases) = self.class_phases.lock()
            && let Some(p) = phases.remove(&format!("{namespace}/{name}"))
        {
            self.gauge(p).dec();
        }
        let labels = class_labels(namespace, name);
        for family in [&self.planned, &self.ready, &self.needed, &self.connected] {
            family.remove(&labels);
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
