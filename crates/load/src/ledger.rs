//! Loss accounting that works the same for one process and for a run split over several.
//!
//! Every process writes a [`Ledger`]: per class, the first-`hello` time of each of its members,
//! the comments it sent (part, sequence number, intended and actual send time, what the server
//! said) and, for every comment its members received, how many got it. [`account`] joins the
//! ledgers of all parts: a comment is *expected* by every member whose first `hello` came before
//! the comment was first written, wherever that member lives, and *lost* for each such member
//! that never got it. Only a comment the server refused with an `error` frame carrying its `ref`
//! is expected by nobody: *void* when the scenario asked for that refusal, *refused* (a failure)
//! otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;

use serde::{Deserialize, Serialize};

use crate::state::{Shared, slot};

/// What one process knows about the run; enough to compute loss over all processes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ledger {
    pub run_id: String,
    pub split: u32,
    pub part: u32,
    pub classes: Vec<ClassLedger>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassLedger {
    pub class: String,
    /// First `hello` time (monotonic µs) of each member of this process that connected.
    pub joins_us: Vec<u64>,
    /// Comments this process wrote into the class.
    pub sent: Vec<Sent>,
    /// Comments (of any part) that members of this process received.
    pub seen: Vec<Seen>,
}

/// What became of a comment, as far as its sender knows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Written and echoed back to its sender: the server accepted it.
    Echoed,
    /// Written, but its sender never saw the echo (nor a refusal). Still expected by everyone.
    Unconfirmed,
    /// Refused with a code the scenario asked for: expected by nobody.
    Void,
    /// Refused with a code the scenario did not ask for: expected by nobody, and a failure.
    Refused,
}

impl Fate {
    fn accepted(self) -> bool {
        matches!(self, Fate::Echoed | Fate::Unconfirmed)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Sent {
    pub seq: u32,
    pub intended_us: u64,
    /// First written (monotonic µs).
    pub send_us: u64,
    pub fate: Fate,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Seen {
    pub part: u32,
    pub seq: u32,
    pub send_us: u64,
    /// Members that were connected before it was sent and received it (first copy).
    pub expected: u32,
    /// Members that joined after it was sent and received it anyway.
    pub extra: u32,
}

/// The outcome of joining ledgers.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Accounting {
    /// Comments the servers accepted (written and not refused).
    pub comments_accepted: u64,
    /// Of those, the ones whose sender never saw its echo.
    pub comments_unconfirmed: u64,
    /// Refused with a code the scenario asked for.
    pub comments_void: u64,
    /// Refused with a code the scenario did not ask for.
    pub comments_refused: u64,
    /// Accepted comments that at least one expecting member did not get.
    pub comments_with_loss: u64,
    /// Member × comment pairs that had to be delivered.
    pub expected: u64,
    /// Of those, delivered.
    pub received: u64,
    /// Of those, never delivered.
    pub lost: u64,
    /// Deliveries to members that joined after the comment was sent (not required, not wrong).
    pub extra: u64,
    /// Comments received that no ledger says were sent (a part's ledger missing from a merge).
    pub unknown: u64,
}

impl Ledger {
    /// Snapshot of what this process knows now; also returns how many comments this process
    /// handed to a member that never wrote them.
    pub(crate) fn from_shared(shared: &Shared) -> (Self, u64) {
        let config = &shared.config;
        let mut unsent = 0;
        let classes = shared
            .classes
            .iter()
            .map(|class| {
                let mut joins_us: Vec<u64> = class
                    .joins
                    .iter()
                    .map(|j| j.load(Relaxed))
                    .filter(|&j| j != 0)
                    .collect();
                joins_us.sort_unstable();
                let mut sent = Vec::new();
                if let Some(own) = class.slots.get(config.part as usize) {
                    let scheduled = (class.scheduled.load(Relaxed) as usize).min(own.len());
                    for (seq, s) in own.iter().enumerate().take(scheduled) {
                        let fate = match s.state.load(Relaxed) {
                            slot::QUEUED => {
                                unsent += 1;
                                continue;
                            }
                            slot::SENT => Fate::Unconfirmed,
                            slot::ECHOED => Fate::Echoed,
                            slot::REFUSED_EXPECTED => Fate::Void,
                            slot::REFUSED => Fate::Refused,
                            _ => continue,
                        };
                        sent.push(Sent {
                            seq: seq as u32,
                            intended_us: s.intended_us.load(Relaxed),
                            send_us: s.send_us.load(Relaxed),
                            fate,
                        });
                    }
                }
                let mut seen = Vec::new();
                for (part, slots) in class.slots.iter().enumerate() {
                    for (seq, s) in slots.iter().enumerate() {
                        let (expected, extra) =
                            (s.got_expected.load(Relaxed), s.got_extra.load(Relaxed));
                        if expected + extra > 0 {
                            seen.push(Seen {
                                part: part as u32,
                                seq: seq as u32,
                                send_us: s.send_us.load(Relaxed),
                                expected,
                                extra,
                            });
                        }
                    }
                }
                ClassLedger {
                    class: class.name.clone(),
                    joins_us,
                    sent,
                    seen,
                }
            })
            .collect();
        (
            Self {
                run_id: config.run_id.clone(),
                split: config.split,
                part: config.part,
                classes,
            },
            unsent,
        )
    }
}

#[derive(Default)]
struct ClassAgg<'a> {
    /// `(part, seq)` → `(send_us, fate)`.
    sent: HashMap<(u32, u32), (u64, Fate)>,
    /// `(part, seq)` → `(send_us, expected, extra)` summed over processes.
    seen: HashMap<(u32, u32), (u64, u64, u64)>,
    joins: Vec<&'a [u64]>,
}

/// Joins ledgers. With `local_view`, a comment seen but not in any `sent` list counts as sent
/// (a single part of a split run cannot know the others' sends; its figures are provisional).
pub fn account(ledgers: &[&Ledger], local_view: bool) -> Accounting {
    let mut classes: BTreeMap<&str, ClassAgg<'_>> = BTreeMap::new();
    for ledger in ledgers {
        for class in &ledger.classes {
            let agg = classes.entry(class.class.as_str()).or_default();
            agg.joins.push(&class.joins_us);
            for s in &class.sent {
                agg.sent.insert((ledger.part, s.seq), (s.send_us, s.fate));
            }
            for s in &class.seen {
                let entry = agg.seen.entry((s.part, s.seq)).or_insert((s.send_us, 0, 0));
                entry.1 += u64::from(s.expected);
                entry.2 += u64::from(s.extra);
            }
        }
    }
    let mut out = Accounting::default();
    for agg in classes.values_mut() {
        if local_view {
            for (&key, &(send_us, _, _)) in &agg.seen {
                agg.sent.entry(key).or_insert((send_us, Fate::Echoed));
            }
        }
        for (key, &(_, _, got_extra)) in &agg.seen {
            out.extra += got_extra;
            if !agg.sent.contains_key(key) {
                out.unknown += 1;
            }
        }
        for (key, &(send_us, fate)) in &agg.sent {
            let (got_expected, got_extra) = agg.seen.get(key).map_or((0, 0), |&(_, e, x)| (e, x));
            match fate {
                Fate::Void => out.comments_void += 1,
                Fate::Refused => out.comments_refused += 1,
                Fate::Unconfirmed => out.comments_unconfirmed += 1,
                Fate::Echoed => {}
            }
            if !fate.accepted() {
                // Whoever got a refused comment anyway got it as an extra.
                out.extra += got_expected;
                continue;
            }
            out.comments_accepted += 1;
            let expected: u64 = agg
                .joins
                .iter()
                .map(|joins| joins.partition_point(|&j| j < send_us) as u64)
                .sum();
            out.expected += expected;
            out.received += got_expected.min(expected);
            if got_expected < expected {
                out.lost += expected - got_expected;
                out.comments_with_loss += 1;
            }
            let _ = got_extra;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(part: u32, joins: Vec<u64>, sent: Vec<Sent>, seen: Vec<Seen>) -> Ledger {
        Ledger {
            run_id: "r".into(),
            split: 2,
            part,
            classes: vec![ClassLedger {
                class: "c".into(),
                joins_us: joins,
                sent,
                seen,
            }],
        }
    }

    fn sent(seq: u32, send_us: u64, fate: Fate) -> Sent {
        Sent {
            seq,
            intended_us: send_us,
            send_us,
            fate,
        }
    }

    fn seen(part: u32, seq: u32, send_us: u64, expected: u32, extra: u32) -> Seen {
        Seen {
            part,
            seq,
            send_us,
            expected,
            extra,
        }
    }

    #[test]
    fn a_comment_from_one_part_is_expected_by_members_of_the_other() {
        // Part 0 has members joined at 10 and 20 and sends at 15 and 30; part 1 has one member
        // joined at 12 that got only the first comment.
        let a = ledger(
            0,
            vec![10, 20],
            vec![sent(0, 15, Fate::Echoed), sent(1, 30, Fate::Echoed)],
            vec![seen(0, 0, 15, 1, 1), seen(0, 1, 30, 2, 0)],
        );
        let b = ledger(1, vec![12], vec![], vec![seen(0, 0, 15, 1, 0)]);
        let acc = account(&[&a, &b], false);
        assert_eq!(acc.comments_accepted, 2);
        assert_eq!(acc.expected, 2 + 3);
        assert_eq!(acc.received, 2 + 2);
        assert_eq!(acc.lost, 1);
        assert_eq!(acc.comments_with_loss, 1);
        assert_eq!(acc.extra, 1);
        assert_eq!(acc.unknown, 0);
    }

    #[test]
    fn a_comment_nobody_got_is_lost_whatever_happened_to_its_sender() {
        let a = ledger(
            0,
            vec![10],
            vec![sent(0, 15, Fate::Unconfirmed), sent(1, 16, Fate::Echoed)],
            vec![seen(0, 1, 16, 1, 0)],
        );
        let acc = account(&[&a], false);
        assert_eq!(acc.comments_accepted, 2);
        assert_eq!(acc.comments_unconfirmed, 1);
        assert_eq!(acc.comments_void, 0);
        assert_eq!((acc.expected, acc.lost), (2, 1));
    }

    #[test]
    fn only_a_refusal_takes_a_comment_out_of_the_expected() {
        let a = ledger(
            0,
            vec![10, 11],
            vec![
                sent(0, 15, Fate::Void),
                sent(1, 16, Fate::Refused),
                sent(2, 17, Fate::Echoed),
            ],
            vec![seen(0, 2, 17, 2, 0)],
        );
        let acc = account(&[&a], false);
        assert_eq!(
            (
                acc.comments_void,
                acc.comments_refused,
                acc.comments_accepted
            ),
            (1, 1, 1)
        );
        assert_eq!((acc.expected, acc.received, acc.lost), (2, 2, 0));
    }

    #[test]
    fn receipts_without_a_sender_ledger_are_unknown_unless_local_view() {
        let b = ledger(1, vec![12], vec![], vec![seen(0, 0, 15, 1, 0)]);
        let merged = account(&[&b], false);
        assert_eq!((merged.unknown, merged.expected), (1, 0));
        let local = account(&[&b], true);
        assert_eq!(
            (local.unknown, local.expected, local.received, local.lost),
            (0, 1, 1, 0)
        );
    }
}
