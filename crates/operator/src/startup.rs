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
//! A start-up is counted from when the operator asked for the pod — the instant it raised the
//! class's replicas — not from the pod's creation: what the plan must lead by is the whole way
//! from that decision to Ready, and on a busy control plane the Deployment and ReplicaSet
//! controllers take seconds to create the pods (the school day measured 8 s between a raise
//! and its last pod's creation). A pod created long after the last raise (a replacement) is
//! counted from its creation ([`start_up`]).
//!
//! Pods still starting count too, as what they are: censored samples, known only to take at
//! least their age so far. The first pods of a day that land on a slow node are Ready a minute
//! after the fast ones; until then the finished samples say "fast", and a class planned in that
//! minute would lead by too little. So the lead is never shorter than the age of the oldest pod
//! of the namespace still starting ([`Estimate::floor`], rounded down to [`FLOOR_STEP`]; a pod
//! starting for longer than [`STUCK`] is stuck, not slow, and is left out), and the operator
//! re-plans the namespace's classes as that floor rises.
//!
//! Pure: [`Estimator`] holds samples; which pods to count and when is the caller's.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use chrono::{DateTime, Utc};

/// Start-ups kept per class and per namespace (the newest).
pub const KEPT: usize = 50;
/// Start-ups a scope needs before its figures are believed.
pub const MIN_SAMPLES: usize = 3;
/// A pod that took longer than this was not starting up (it was unready for some other reason,
/// or the operator saw an old pod's later readiness); it is not a sample.
pub const LONGEST: Duration = Duration::from_secs(30 * 60);

/// A pod starting for longer than this is stuck (an image that cannot be pulled, no room on
/// any node), not slow: it sets no floor.
pub const STUCK: Duration = Duration::from_secs(300);
/// The floor rises in steps of this much, so re-plans follow it every few seconds, not every
/// second.
pub const FLOOR_STEP: Duration = Duration::from_secs(5);

/// A pod created this long after the class's replicas were last raised was not created for
/// that raise (a replacement, a pod the HPA added): it is counted from its creation.
pub const ASKED_WITHIN: Duration = Duration::from_secs(120);

/// When a pod's start-up began: at `asked` (when the operator last raised its class's
/// replicas) if the pod was created for that raise, else at its creation. API timestamps are
/// whole seconds, so a pod created in the second of the raise counts as after it.
pub fn began(asked: Option<DateTime<Utc>>, created: DateTime<Utc>) -> DateTime<Utc> {
    let second = chrono::TimeDelta::seconds(1);
    match asked {
        Some(asked)
            if created + second > asked
                && (created - asked).to_std().unwrap_or_default() <= ASKED_WITHIN =>
        {
            asked.min(created + second)
        }
        _ => created,
    }
}

/// How long a pod took to become Ready, from when its start-up [`began`].
pub fn start_up(
    asked: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    ready: DateTime<Utc>,
) -> Option<Duration> {
    (ready - began(asked, created)).to_std().ok()
}

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
    /// How long the oldest pod of the namespace still starting has been at it (rounded down to
    /// [`FLOOR_STEP`]): no lead is shorter.
    pub floor: Duration,
}

impl Estimate {
    /// An estimate from these start-ups (tests and the planner's callers).
    pub fn from_samples(mut samples: Vec<Duration>, scope: Scope) -> Self {
        samples.sort_unstable();
        Self {
            sorted: samples,
            scope,
            floor: Duration::ZERO,
        }
    }

    /// The same, with pods still starting for at least `floor`.
    pub fn with_floor(mut self, floor: Duration) -> Self {
        self.floor = floor;
        self
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

    /// The 95th percentile of the time until all of `pods` new pods are Ready, and never less
    /// than the floor.
    pub fn lead_for(&self, pods: u32) -> Duration {
        self.quantile(0.95_f64.powf(1.0 / f64::from(pods.max(1))))
            .max(self.floor)
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
    /// When the operator last raised the class's replicas.
    asked: Option<DateTime<Utc>>,
}

/// A pod not Ready yet: its namespace, and when its start-up began.
#[derive(Debug)]
struct Starting {
    namespace: String,
    since: DateTime<Utc>,
}

/// Start-up samples per class and per namespace; each pod counted once.
#[derive(Debug, Default)]
pub struct Estimator {
    classes: HashMap<(String, String), Class>,
    namespaces: HashMap<String, Samples>,
    /// Pods not Ready yet, by uid.
    starting: HashMap<String, Starting>,
}

impl Estimator {
    /// Counts pod `uid` of class `name`, Ready `took` after its creation, unless it was counted
    /// before or took longer than [`LONGEST`]. Returns whether it was counted.
    pub fn record(&mut self, namespace: &str, name: &str, uid: &str, took: Duration) -> bool {
        let class = self
            .classes
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default();
        self.starting.remove(uid);
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

    /// Notes that the operator raised the class's replicas at `at`: the pods created for it are
    /// counted from then.
    pub fn asked(&mut self, namespace: &str, name: &str, at: DateTime<Utc>) {
        self.classes
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default()
            .asked = Some(at);
    }

    /// When the operator last raised the class's replicas.
    pub fn last_asked(&self, namespace: &str, name: &str) -> Option<DateTime<Utc>> {
        self.classes
            .get(&(namespace.to_owned(), name.to_owned()))?
            .asked
    }

    /// Notes pod `uid` of class `name`, not Ready yet, starting since `since` (where its
    /// start-up [`began`]). A pod that was Ready before and is not now (its server lost Redis)
    /// is not starting: it is ignored.
    pub fn starting(&mut self, namespace: &str, name: &str, uid: &str, since: DateTime<Utc>) {
        if self
            .classes
            .get(&(namespace.to_owned(), name.to_owned()))
            .is_some_and(|c| c.counted.contains(uid))
        {
            return;
        }
        self.starting.insert(
            uid.to_owned(),
            Starting {
                namespace: namespace.to_owned(),
                since,
            },
        );
    }

    /// How long the oldest pod of `namespace` still starting (and not stuck) has been at it at
    /// `now`, rounded down to [`FLOOR_STEP`]; zero when none is.
    pub fn floor(&self, namespace: &str, now: DateTime<Utc>) -> Duration {
        let oldest = self
            .starting
            .values()
            .filter(|s| s.namespace == namespace)
            .filter_map(|s| (now - s.since).to_std().ok())
            .filter(|age| *age <= STUCK)
            .max()
            .unwrap_or_default();
        // Down, not up: a floor says "at least", and must not lead a class by more than any
        // pod has yet taken.
        let step = FLOOR_STEP.as_secs().max(1);
        Duration::from_secs(oldest.as_secs() / step * step)
    }

    /// The namespaces with a pod still starting.
    pub fn namespaces_starting(&self) -> HashSet<String> {
        self.starting
            .values()
            .map(|s| s.namespace.clone())
            .collect()
    }

    /// Forgets that pod `uid` was counted (it is gone; uids never come back).
    pub fn pod_gone(&mut self, namespace: &str, name: &str, uid: &str) {
        self.starting.remove(uid);
        if let Some(class) = self
            .classes
            .get_mut(&(namespace.to_owned(), name.to_owned()))
        {
            class.counted.remove(uid);
        }
    }

    /// The class's own or its namespace's, whichever plans for the longer start-up (each once
    /// it has [`MIN_SAMPLES`]), never below the namespace's floor at `now`.
    pub fn estimate(&self, namespace: &str, name: &str, now: DateTime<Utc>) -> Option<Estimate> {
        let own = self
            .classes
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|c| c.samples.estimate(Scope::Class));
        let ns = self.namespace(namespace, now);
        let floor = self.floor(namespace, now);
        match (own, ns) {
            (Some(own), Some(ns)) if ns.p95() > own.p95() => Some(ns),
            (Some(own), _) => Some(own.with_floor(floor)),
            (None, ns) => ns,
        }
    }

    /// The namespace's figures alone (what a class without enough of its own uses), with its
    /// floor at `now`: a floor alone, before any pod finished, is an estimate too.
    pub fn namespace(&self, namespace: &str, now: DateTime<Utc>) -> Option<Estimate> {
        let floor = self.floor(namespace, now);
        match self
            .namespaces
            .get(namespace)
            .and_then(|s| s.estimate(Scope::Namespace))
        {
            Some(e) => Some(e.with_floor(floor)),
            None if !floor.is_zero() => {
                Some(Estimate::from_samples(Vec::new(), Scope::Namespace).with_floor(floor))
            }
            None => None,
        }
    }

    /// Forgets a deleted class's own samples (its namespace keeps them).
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.classes
            .remove(&(namespace.to_owned(), name.to_owned()));
    }
}

/// What a learned lead adds to what the samples say, in percent of it (at least
/// [`MARGIN_MIN`]). Start-ups are learned from below: the slowest of `k` new pods is, for the
/// `k` of a real class, beyond what fifty samples resolve (their slowest is the estimate), a
/// namespace's slowest pod is slower than the slowest it has seen until it has seen it, and a
/// pod still starting is known only to take at least its age. In the school day, classes
/// planned on the bare figure were Ready 2–8 s after `start - warmup` with leads of 47–59 s.
pub const MARGIN_PERCENT: u64 = 20;
/// The least a learned lead adds.
pub const MARGIN_MIN: Duration = Duration::from_secs(5);

/// `figure` with the margin on top, in whole seconds (up).
pub fn with_margin(figure: Duration) -> Duration {
    let margin = (figure * MARGIN_PERCENT as u32 / 100).max(MARGIN_MIN);
    let total = figure + margin;
    Duration::from_secs(total.as_secs() + u64::from(total.subsec_nanos() > 0))
}

/// The lead the plan uses for `pods` new pods to start: the spec's `podStartup`, or, when
/// learning is on and it is longer, what the estimate says the slowest of them will take with
/// the [`MARGIN_PERCENT`] on top (never shorter than the spec).
pub fn lead(spec: Duration, estimate: Option<&Estimate>, learn: bool, pods: u32) -> Duration {
    match estimate {
        Some(e) if learn => with_margin(e.lead_for(pods)).max(spec),
        _ => spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn at(s: i64) -> DateTime<Utc> {
        t0() + chrono::TimeDelta::seconds(s)
    }

    fn add(e: &mut Estimator, ns: &str, class: &str, uid: &str, took: Duration) -> bool {
        e.record(ns, class, uid, took)
    }

    #[test]
    fn too_few_samples_give_no_estimate() {
        let mut e = Estimator::default();
        add(&mut e, "ns", "a", "p1", secs(10));
        add(&mut e, "ns", "a", "p2", secs(12));
        assert_eq!(e.estimate("ns", "a", t0()), None);
    }

    #[test]
    fn the_95th_percentile_is_the_nearest_rank_rounded_up() {
        let mut e = Estimator::default();
        // 1..=20 s: rank ceil(20 * 0.95) = 19, the 19 s sample.
        for s in 1..=20 {
            add(&mut e, "ns", "a", &format!("p{s}"), secs(s));
        }
        let est = e.estimate("ns", "a", t0()).unwrap();
        assert_eq!(
            (est.p95(), est.samples(), est.scope),
            (secs(19), 20, Scope::Class)
        );
        // A fraction of a second rounds up: the plan never under-leads.
        let mut e = Estimator::default();
        for (i, ms) in [4_100, 4_200, 4_300].into_iter().enumerate() {
            add(&mut e, "ns", "a", &i.to_string(), Duration::from_millis(ms));
        }
        assert_eq!(e.estimate("ns", "a", t0()).unwrap().p95(), secs(5));
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
        assert_eq!(e.estimate("ns", "a", t0()).unwrap().p95(), secs(5));
        add(&mut e, "ns", "a", "slow1", secs(60));
        assert_eq!(e.estimate("ns", "a", t0()).unwrap().p95(), secs(60));
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
        assert_eq!(e.estimate("ns", "a", t0()).unwrap().samples(), 3);
    }

    #[test]
    fn a_class_plans_for_the_slow_nodes_its_namespace_has_seen() {
        let mut e = Estimator::default();
        for i in 0..5 {
            add(&mut e, "school", "old", &format!("o{i}"), secs(40));
        }
        let est = e.estimate("school", "new", t0()).unwrap();
        assert_eq!((est.p95(), est.scope), (secs(40), Scope::Namespace));
        assert_eq!(
            e.estimate("elsewhere", "new", t0()),
            None,
            "namespaces do not mix"
        );
        // Its own three pods landed on fast nodes: the namespace's slow ones still count.
        for i in 0..3 {
            add(&mut e, "school", "new", &format!("n{i}"), secs(8));
        }
        let est = e.estimate("school", "new", t0()).unwrap();
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
        let est = e.estimate("school", "big-image", t0()).unwrap();
        assert_eq!((est.p95(), est.scope), (secs(90), Scope::Class));
        assert_eq!(e.estimate("school", "other", t0()).unwrap().p95(), secs(10));
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
        let est = e.estimate("ns", "a", t0()).unwrap();
        assert_eq!((est.p95(), est.samples()), (secs(6), KEPT));
    }

    #[test]
    fn a_start_up_counts_from_the_raise_that_asked_for_the_pod() {
        let raised = at(0) + chrono::TimeDelta::milliseconds(400);
        // Created 8 s after the raise (the controllers were busy), Ready 50 s after creation:
        // the plan had to lead by 57.6 s, not 50.
        assert_eq!(
            start_up(Some(raised), at(8), at(58)),
            Some(Duration::from_millis(57_600))
        );
        // Created in the raise's own second (the API's timestamps are whole seconds).
        assert_eq!(
            start_up(Some(raised), at(0), at(20)),
            Some(Duration::from_millis(19_600))
        );
        // A replacement long after the raise, or a pod from before it: from its creation.
        assert_eq!(start_up(Some(raised), at(600), at(630)), Some(secs(30)));
        assert_eq!(start_up(Some(raised), at(-30), at(10)), Some(secs(40)));
        assert_eq!(start_up(None, at(5), at(15)), Some(secs(10)));
        let mut e = Estimator::default();
        assert_eq!(e.last_asked("ns", "a"), None);
        e.asked("ns", "a", raised);
        assert_eq!(e.last_asked("ns", "a"), Some(raised));
    }

    #[test]
    fn a_pod_still_starting_is_a_floor_under_the_lead() {
        let mut e = Estimator::default();
        // The morning's first pods all landed on fast nodes: 10 s.
        for i in 0..10 {
            add(&mut e, "school", "early", &format!("f{i}"), secs(10));
        }
        let fast = e.namespace("school", at(0)).unwrap();
        assert_eq!((fast.lead_for(4), fast.floor), (secs(10), secs(0)));
        // A scale-up's pod on a slow node, not Ready 32 s on: whoever plans now leads by 30 s
        // (at least its age, in steps of 5), before any slow pod has finished.
        e.starting("school", "late", "slow", at(0));
        assert_eq!(
            e.floor("school", at(4)),
            secs(0),
            "a few seconds is no evidence"
        );
        let now = e.namespace("school", at(32)).unwrap();
        assert_eq!((now.floor, now.lead_for(4)), (secs(30), secs(30)));
        assert_eq!(
            e.estimate("school", "other", at(32)).unwrap().lead_for(1),
            secs(30)
        );
        assert_eq!(
            e.namespaces_starting(),
            HashSet::from(["school".to_owned()])
        );
        // Other namespaces are not affected; a stuck pod sets no floor.
        assert_eq!(e.floor("elsewhere", at(32)), secs(0));
        assert_eq!(e.floor("school", at(400)), secs(0));
        // Once Ready it is a sample like any other, and no longer a floor.
        add(&mut e, "school", "late", "slow", secs(55));
        assert_eq!(e.floor("school", at(60)), secs(0));
        assert!(e.namespaces_starting().is_empty());
        // Ready once, unready later (its server lost Redis): not starting again.
        e.starting("school", "late", "slow", at(50));
        assert_eq!(e.floor("school", at(90)), secs(0));
        // A floor alone, before any pod of the namespace finished, is an estimate.
        let mut e = Estimator::default();
        e.starting("new-school", "c", "p", at(0));
        assert_eq!(e.namespace("new-school", at(2)), None);
        assert_eq!(
            e.namespace("new-school", at(41)).unwrap().lead_for(3),
            secs(40)
        );
        e.pod_gone("new-school", "c", "p");
        assert_eq!(e.namespace("new-school", at(41)), None);
    }

    #[test]
    fn the_lead_is_raised_by_learning_never_lowered() {
        let slow = Estimate::from_samples(vec![secs(45); 10], Scope::Class);
        let fast = Estimate::from_samples(vec![secs(3); 10], Scope::Class);
        // 45 s learned, with 20% on top.
        assert_eq!(lead(secs(20), Some(&slow), true, 4), secs(54));
        assert_eq!(lead(secs(20), Some(&slow), false, 4), secs(20));
        assert_eq!(lead(secs(20), Some(&fast), true, 4), secs(20));
        assert_eq!(lead(secs(20), None, true, 4), secs(20));
    }

    #[test]
    fn a_learned_lead_gets_a_fifth_more_and_at_least_five_seconds() {
        assert_eq!(with_margin(secs(300)), secs(360));
        assert_eq!(with_margin(secs(50)), secs(60));
        assert_eq!(with_margin(secs(10)), secs(15));
        assert_eq!(with_margin(Duration::from_millis(41_100)), secs(50));
    }
}
