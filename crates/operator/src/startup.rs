//! How long socket pods really take from creation to Ready, learned from the pods the operator
//! watches. A class's `podStartup` is a guess written once; nodes that pull slowly, a busy
//! scheduler or a cold image make it wrong, and then capacity arrives after the bell.
//!
//! Every socket pod is counted once, when the pod watch first shows it Ready (not when its
//! class happens to be reconciled: the slowest pod of a scale-up is the one a reconcile would
//! most often miss). The newest [`KEPT`] start-ups are kept per class and per namespace, and a
//! class plans with the longer of its own and its namespace's: how long a pod takes is mostly
//! the node's and the image's, and which nodes a class's next pods land on is the scheduler's
//! choice, so a class whose few pods happened to land on fast nodes still plans for the slow
//! ones its namespace has seen, and a class with a slower image of its own plans for that.
//!
//! A scale-up is Ready when its *last* pod is, so the lead for `k` new pods is not the pods'
//! 95th percentile but the 95th percentile of the slowest of `k`: with independent start-ups,
//! the `0.95^(1/k)` quantile of the samples ([`Estimate::lead_for`]).
//!
//! Pure: [`Estimator`] holds samples; which pods to count and when is the caller's.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

/// Start-ups kept per class and per namespace (the newest).
pub const KEPT: usize = 50;
/// Start-ups a scope needs before its figures are believed.
pub const MIN_SAMPLES: usize = 3;
/// A pod that took longer than this was not starting up (it was unready for some other reason,
/// or the operator saw an old pod's later readiness); it is not a sample.
pub const LONGEST: Duration = Duration::from_secs(30 * 60);

/// Whose pods an estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Class,
    Namespace,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Class => "Class",
            Scope::Namespace => "Namespace",
        }
    }
}

/// The observed start-up times of a class's pods (of its own, or its namespace's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// The samples, shortest first.
    sorted: Vec<Duration>,
    pub scope: Scope,
}

impl Estimate {
    /// An estimate from these start-ups (tests and the planner's callers).
    pub fn from_samples(mut samples: Vec<Duration>, scope: Scope) -> Self {
        samples.sort_unstable();
        Self {
            sorted: samples,
            scope,
        }
    }

    pub fn samples(&self) -> usize {
        self.sorted.len()
    }

    /// The `q` quantile (nearest rank), rounded up to a whole second.
    fn quantile(&self, q: f64) -> Duration {
        let n = self.sorted.len();
        let rank = ((n as f64) * q).ceil().clamp(1.0, n.max(1) as f64) as usize;
        let d = self.sorted.get(rank - 1).copied().unwrap_or_default();
        Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }

    /// One pod's 95th percentile.
    pub fn p95(&self) -> Duration {
        self.quantile(0.95)
    }

    /// The 95th percentile of the time until all of `pods` new pods are Ready.
    pub fn lead_for(&self, pods: u32) -> Duration {
        self.quantile(0.95_f64.powf(1.0 / f64::from(pods.max(1))))
    }
}

#[derive(Debug, Default)]
struct Samples(VecDeque<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        if self.0.len() == KEPT {
            self.0.pop_front();
        }
        self.0.push_back(d);
    }

    fn estimate(&self, scope: Scope) -> Option<Estimate> {
        (self.0.len() >= MIN_SAMPLES)
            .then(|| Estimate::from_samples(self.0.iter().copied().collect(), scope))
    }
}

#[derive(Debug, Default)]
struct Class {
    samples: Samples,
    /// The class's pods that exist and were counted (so each is counted once).
    counted: HashSet<String>,
}

/// Start-up samples per class and per namespace; each pod counted once.
#[derive(Debug, Default)]
pub struct Estimator {
    classes: HashMap<(String, String), Class>,
    namespaces: HashMap<String, Samples>,
}

impl Estimator {
    /// Counts pod `uid` of class `name`, Ready `took` after its creation, unless it was counted
    /// before or took longer than [`LONGEST`]. Returns whether it was counted.
    pub fn record(&mut self, namespace: &str, name: &str, uid: &str, took: Duration) -> bool {
        let class = self
            .classes
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default();
        if took > LONGEST || !class.counted.insert(uid.to_owned()) {
            return false;
        }
        class.samples.push(took);
        self.namespaces
            .entry(namespace.to_owned())
            .or_default()
            .push(took);
        true
    }

    /// Forgets that pod `uid` was counted (it is gone; uids never come back).
    pub fn pod_gone(&mut self, namespace: &str, name: &str, uid: &str) {
        if let Some(class) = self
            .classes
            .get_mut(&(namespace.to_owned(), name.to_owned()))
        {
            class.counted.remove(uid);
        }
    }

    /// The class's own or its namespace's, whichever plans for the longer start-up (each once
    /// it has [`MIN_SAMPLES`]).
    pub fn estimate(&self, namespace: &str, name: &str) -> Option<Estimate> {
        let own = self
            .classes
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|c| c.samples.estimate(Scope::Class));
        let ns = self.namespace(namespace);
        match (own, ns) {
            (Some(own), Some(ns)) if ns.p95() > own.p95() => Some(ns),
            (Some(own), _) => Some(own),
            (None, ns) => ns,
        }
    }

    /// The namespace's figures alone (what a class without enough of its own uses).
    pub fn namespace(&self, namespace: &str) -> Option<Estimate> {
        self.namespaces.get(namespace)?.estimate(Scope::Namespace)
    }

    /// Forgets a deleted class's own samples (its namespace keeps them).
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.classes
            .remove(&(namespace.to_owned(), name.to_owned()));
    }
}

/// The lead the plan uses for `pods` new pods to start: the spec's `podStartup`, or what the
/// estimate says the slowest of them will take when learning is on and that is longer (never
/// shorter than the spec).
pub fn lead(spec: Duration, estimate: Option<&Estimate>, learn: bool, pods: u32) -> Duration {
    match estimate {
        Some(e) if learn => e.lead_for(pods).max(spec),
        _ => spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn add(e: &mut Estimator, ns: &str, class: &str, uid: &str, took: Duration) -> bool {
        e.record(ns, class, uid, took)
    }

    #[test]
    fn too_few_samples_give_no_estimate() {
        let mut e = Estimator::default();
        add(&mut e, "ns", "a", "p1", secs(10));
        add(&mut e, "ns", "a", "p2", secs(12));
        assert_eq!(e.estimate("ns", "a"), None);
    }

    #[test]
    fn the_95th_percentile_is_the_nearest_rank_rounded_up() {
        let mut e = Estimator::default();
        // 1..=20 s: rank ceil(20 * 0.95) = 19, the 19 s sample.
        for s in 1..=20 {
            add(&mut e, "ns", "a", &format!("p{s}"), secs(s));
        }
        let est = e.estimate("ns", "a").unwrap();
        assert_eq!(
            (est.p95(), est.samples(), est.scope),
            (secs(19), 20, Scope::Class)
        );
        // A fraction of a second rounds up: the plan never under-leads.
        let mut e = Estimator::default();
        for (i, ms) in [4_100, 4_200, 4_300].into_iter().enumerate() {
            add(&mut e, "ns", "a", &i.to_string(), Duration::from_millis(ms));
        }
        assert_eq!(e.estimate("ns", "a").unwrap().p95(), secs(5));
    }

    #[test]
    fn the_lead_for_several_pods_is_the_slowest_of_them() {
        // 40 pods at 10 s, 10 at 50..=59 s (a slow node's).
        let mut samples: Vec<Duration> = (0..40).map(|_| secs(10)).collect();
        samples.extend((50..60).map(secs));
        let est = Estimate::from_samples(samples, Scope::Namespace);
        // One pod: rank ceil(47.5) = 48 of 50.
        assert_eq!(est.lead_for(1), secs(57));
        assert_eq!(est.p95(), secs(57));
        // Six pods: 0.95^(1/6) = 0.9915, rank 50: the slowest seen.
        assert_eq!(est.lead_for(6), secs(59));
    }

    #[test]
    fn one_slow_pod_in_twenty_sets_the_p95_only_when_there_are_two() {
        let mut e = Estimator::default();
        for i in 0..19 {
            add(&mut e, "ns", "a", &format!("fast{i}"), secs(5));
        }
        add(&mut e, "ns", "a", "slow0", secs(60));
        assert_eq!(e.estimate("ns", "a").unwrap().p95(), secs(5));
        add(&mut e, "ns", "a", "slow1", secs(60));
        assert_eq!(e.estimate("ns", "a").unwrap().p95(), secs(60));
    }

    #[test]
    fn a_pod_counts_once_and_an_implausible_time_not_at_all() {
        let mut e = Estimator::default();
        assert!(add(&mut e, "ns", "a", "p", secs(10)));
        assert!(
            !add(&mut e, "ns", "a", "p", secs(10)),
            "seen again, not counted again"
        );
        assert!(!add(&mut e, "ns", "a", "old", secs(3 * 3600)));
        e.pod_gone("ns", "a", "p");
        add(&mut e, "ns", "a", "q", secs(10));
        add(&mut e, "ns", "a", "r", secs(10));
        assert_eq!(e.estimate("ns", "a").unwrap().samples(), 3);
    }

    #[test]
    fn a_class_plans_for_the_slow_nodes_its_namespace_has_seen() {
        let mut e = Estimator::default();
        for i in 0..5 {
            add(&mut e, "school", "old", &format!("o{i}"), secs(40));
        }
        let est = e.estimate("school", "new").unwrap();
        assert_eq!((est.p95(), est.scope), (secs(40), Scope::Namespace));
        assert_eq!(
            e.estimate("elsewhere", "new"),
            None,
            "namespaces do not mix"
        );
        // Its own three pods landed on fast nodes: the namespace's slow ones still count.
        for i in 0..3 {
            add(&mut e, "school", "new", &format!("n{i}"), secs(8));
        }
        let est = e.estimate("school", "new").unwrap();
        assert_eq!((est.p95(), est.scope), (secs(40), Scope::Namespace));
    }

    #[test]
    fn a_class_slower_than_its_namespace_plans_for_itself() {
        let mut e = Estimator::default();
        for i in 0..3 {
            add(&mut e, "school", "big-image", &format!("b{i}"), secs(90));
        }
        // A hundred fast pods of other classes since: the namespace's window holds only them.
        for i in 0..100 {
            add(&mut e, "school", "other", &format!("o{i}"), secs(10));
        }
        let est = e.estimate("school", "big-image").unwrap();
        assert_eq!((est.p95(), est.scope), (secs(90), Scope::Class));
        assert_eq!(e.estimate("school", "other").unwrap().p95(), secs(10));
    }

    #[test]
    fn only_the_newest_samples_are_kept() {
        let mut e = Estimator::default();
        for i in 0..KEPT {
            add(&mut e, "ns", "a", &format!("slow{i}"), secs(60));
        }
        for i in 0..KEPT {
            add(&mut e, "ns", "a", &format!("fast{i}"), secs(6));
        }
        let est = e.estimate("ns", "a").unwrap();
        assert_eq!((est.p95(), est.samples()), (secs(6), KEPT));
    }

    #[test]
    fn the_lead_is_raised_by_learning_never_lowered() {
        let slow = Estimate::from_samples(vec![secs(45); 10], Scope::Class);
        let fast = Estimate::from_samples(vec![secs(3); 10], Scope::Class);
        assert_eq!(lead(secs(20), Some(&slow), true, 4), secs(45));
        assert_eq!(lead(secs(20), Some(&slow), false, 4), secs(20));
        assert_eq!(lead(secs(20), Some(&fast), true, 4), secs(20));
        assert_eq!(lead(secs(20), None, true, 4), secs(20));
    }
}
