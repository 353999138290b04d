//! How long socket pods really take from creation to Ready, learned from the pods the operator
//! watches. A class's `podStartup` is a guess written once; nodes that pull slowly, a busy
//! scheduler or a cold image make it wrong, and then capacity arrives after the bell. The
//! estimate here is the 95th percentile of the last [`KEPT`] start-ups, the longer of the class's
//! own pods' and its namespace's socket pods': how long a pod takes is mostly the node's and the
//! image's, and which node a class's next pods land on is the scheduler's choice, so a class
//! whose few pods all happened to land on fast nodes still plans for the slow ones its
//! namespace has seen, and a class with a slower image of its own plans for that.
//!
//! Pure: [`Estimator`] holds samples; which pods to sample and when is the caller's.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

/// Start-ups kept per class and per namespace (the newest).
pub const KEPT: usize = 50;
/// Start-ups a scope needs before its percentile is believed.
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

/// The observed start-up time of a class's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// The 95th percentile (nearest rank) of the samples, rounded up to a whole second.
    pub p95: Duration,
    pub samples: usize,
    pub scope: Scope,
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

    fn p95(&self) -> Option<Duration> {
        if self.0.len() < MIN_SAMPLES {
            return None;
        }
        let mut sorted: Vec<Duration> = self.0.iter().copied().collect();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample with at least 95% of the samples at or below it.
        let rank = (sorted.len() * 95).div_ceil(100);
        let p = sorted[rank.saturating_sub(1)];
        Some(Duration::from_secs(
            p.as_secs() + u64::from(p.subsec_nanos() > 0),
        ))
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
    /// Takes in the class's pods as they are now, `(uid, time from creation to Ready)` with
    /// `None` for a pod not Ready yet: each Ready pod not counted before is a sample, unless it
    /// took longer than [`LONGEST`]. Returns how many were added.
    pub fn observe<'a>(
        &mut self,
        namespace: &str,
        name: &str,
        pods: impl IntoIterator<Item = (&'a str, Option<Duration>)>,
    ) -> usize {
        let class = self
            .classes
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default();
        let mut counted = HashSet::new();
        let mut added = 0;
        for (uid, took) in pods {
            let Some(took) = took else { continue };
            if !class.counted.contains(uid) && took <= LONGEST {
                class.samples.push(took);
                self.namespaces
                    .entry(namespace.to_owned())
                    .or_default()
                    .push(took);
                added += 1;
            }
            counted.insert(uid.to_owned());
        }
        // A pod that is gone never comes back (uids are unique): only the present are kept.
        class.counted = counted;
        added
    }

    /// The longer of the class's own and its namespace's percentile, each once it has
    /// [`MIN_SAMPLES`].
    pub fn estimate(&self, namespace: &str, name: &str) -> Option<Estimate> {
        let own = self
            .classes
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|c| {
                Some(Estimate {
                    p95: c.samples.p95()?,
                    samples: c.samples.0.len(),
                    scope: Scope::Class,
                })
            });
        let ns = self.namespaces.get(namespace).and_then(|s| {
            Some(Estimate {
                p95: s.p95()?,
                samples: s.0.len(),
                scope: Scope::Namespace,
            })
        });
        match (own, ns) {
            (Some(own), Some(ns)) if ns.p95 > own.p95 => Some(ns),
            (Some(own), _) => Some(own),
            (None, ns) => ns,
        }
    }

    /// The namespace's percentile alone (what classes without samples of their own use).
    pub fn namespace_p95(&self, namespace: &str) -> Option<Duration> {
        self.namespaces.get(namespace)?.p95()
    }

    /// Forgets a deleted class's own samples (its namespace keeps them).
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.classes
            .remove(&(namespace.to_owned(), name.to_owned()));
    }
}

/// The lead the plan uses for pods to start: the spec's `podStartup`, or the observed p95 when
/// learning is on and pods were seen to take longer (never shorter than the spec).
pub fn lead(spec: Duration, estimate: Option<Estimate>, learn: bool) -> Duration {
    match estimate {
        Some(e) if learn && e.p95 > spec => e.p95,
        _ => spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// One more Ready pod `uid` of `class`, as a reconcile would see it among others gone.
    fn add(e: &mut Estimator, ns: &str, class: &str, uid: &str, took: Duration) -> usize {
        e.observe(ns, class, [(uid, Some(took))])
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
            (est.p95, est.samples, est.scope),
            (secs(19), 20, Scope::Class)
        );
        // A fraction of a second rounds up: the plan never under-leads.
        let mut e = Estimator::default();
        for (i, ms) in [4_100, 4_200, 4_300].into_iter().enumerate() {
            add(&mut e, "ns", "a", &i.to_string(), Duration::from_millis(ms));
        }
        assert_eq!(e.estimate("ns", "a").unwrap().p95, secs(5));
    }

    #[test]
    fn one_slow_pod_in_twenty_sets_the_p95_only_when_there_are_two() {
        let mut e = Estimator::default();
        for i in 0..19 {
            add(&mut e, "ns", "a", &format!("fast{i}"), secs(5));
        }
        add(&mut e, "ns", "a", "slow0", secs(60));
        assert_eq!(e.estimate("ns", "a").unwrap().p95, secs(5));
        add(&mut e, "ns", "a", "slow1", secs(60));
        assert_eq!(e.estimate("ns", "a").unwrap().p95, secs(60));
    }

    #[test]
    fn a_pod_counts_once_and_an_implausible_time_not_at_all() {
        let mut e = Estimator::default();
        let pods = |extra: Option<&'static str>| {
            let mut v = vec![("p", Some(secs(10))), ("starting", None)];
            v.extend(extra.map(|uid| (uid, Some(secs(10)))));
            v
        };
        assert_eq!(e.observe("ns", "a", pods(None)), 1);
        assert_eq!(
            e.observe("ns", "a", pods(None)),
            0,
            "seen again, not counted again"
        );
        assert_eq!(e.observe("ns", "a", pods(Some("q"))), 1);
        assert_eq!(e.observe("ns", "a", [("old", Some(secs(3 * 3600)))]), 0);
        add(&mut e, "ns", "a", "r", secs(10));
        assert_eq!(e.estimate("ns", "a").unwrap().samples, 3);
    }

    #[test]
    fn a_class_plans_for_the_slow_nodes_its_namespace_has_seen() {
        let mut e = Estimator::default();
        for i in 0..5 {
            add(&mut e, "school", "old", &format!("o{i}"), secs(40));
        }
        let est = e.estimate("school", "new").unwrap();
        assert_eq!((est.p95, est.scope), (secs(40), Scope::Namespace));
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
        assert_eq!((est.p95, est.scope), (secs(40), Scope::Namespace));
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
        assert_eq!((est.p95, est.scope), (secs(90), Scope::Class));
        assert_eq!(e.estimate("school", "other").unwrap().p95, secs(10));
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
        assert_eq!((est.p95, est.samples), (secs(6), KEPT));
    }

    #[test]
    fn the_lead_is_raised_by_learning_never_lowered() {
        let slow = Some(Estimate {
            p95: secs(45),
            samples: 10,
            scope: Scope::Class,
        });
        let fast = Some(Estimate {
            p95: secs(3),
            samples: 10,
            scope: Scope::Class,
        });
        assert_eq!(lead(secs(20), slow, true), secs(45));
        assert_eq!(lead(secs(20), slow, false), secs(20));
        assert_eq!(lead(secs(20), fast, true), secs(20));
        assert_eq!(lead(secs(20), None, true), secs(20));
    }
}
