//! Which leases a worker should take this round: a pure function of the lease table as listed,
//! what the worker holds, and the time — the KCL's lease-taker step, planned apart from doing it
//! so it can be checked without a clock or a table.
//!
//! A worker aims at its fair share, `⌈active leases / workers⌉` (capped by
//! `max_leases_per_worker`), where the workers are those holding a live lease plus itself. It
//! takes free leases first, then expired ones (the longest expired first), and only those whose
//! parents have ended; below its share it then steals, gradually (`max_steals_per_round`), from
//! the busiest workers above their share. Before all that, it adopts leases the table gives it
//! that it does not hold yet (handed over to it by their previous owner, on its request). It
//! never plans to take a lease it holds or a shard it may not take now (a shard whose previous
//! worker here is still stopping).

use std::collections::{HashMap, HashSet};

use super::Lease;
use crate::checkpoint::ShardCheckpoint;

/// A lease to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Take {
    /// The lease as listed (its counter is the condition of the take).
    pub(crate) lease: Lease,
    /// The worker it is taken from while live (a steal); `None` for a free or expired lease.
    pub(crate) stolen_from: Option<String>,
}

/// The limits that shape a plan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_leases_per_worker: usize,
    pub(crate) max_steals_per_round: usize,
}

fn ended(l: &Lease) -> bool {
    matches!(l.checkpoint, Some(ShardCheckpoint::Ended))
}

/// The leases `me` should take, given the listed `leases`, the shards it `held`, the time
/// `now_ms` (wall-clock Unix milliseconds, as the table's expiry times), and which shards it may
/// take now.
pub(crate) fn plan(
    leases: &[Lease],
    held: &HashSet<String>,
    me: &str,
    now_ms: u64,
    limits: Limits,
    takeable: impl Fn(&str) -> bool,
) -> Vec<Take> {
    let by_id: HashMap<&str, &Lease> = leases.iter().map(|l| (l.shard_id.as_str(), l)).collect();
    let active: Vec<&Lease> = leases.iter().filter(|l| !ended(l)).collect();
    let live = |l: &Lease| l.owner.is_some() && l.expires_at_ms > now_ms;
    let mut load: HashMap<&str, usize> = HashMap::new();
    for l in active.iter().filter(|l| live(l)) {
        if let Some(o) = &l.owner {
            *load.entry(o.as_str()).or_default() += 1;
        }
    }
    // What this worker holds, as it knows it (the table may still list a lease it just lost).
    let mine = held
        .iter()
        .filter(|s| by_id.get(s.as_str()).is_some_and(|l| !ended(l)))
        .count();
    load.insert(me, mine);
    let workers = load.len().max(1);
    let target = active
        .len()
        .div_ceil(workers)
        .min(limits.max_leases_per_worker);
    if mine >= target {
        return Vec::new();
    }
    let parents_done = |l: &Lease| {
        l.parent_shard_ids
            .iter()
            .all(|p| by_id.get(p.as_str()).is_none_or(|pl| ended(pl)))
    };
    let may_take = |l: &Lease| !held.contains(&l.shard_id) && takeable(&l.shard_id);
    let handed_to_me = |l: &Lease| live(l) && l.owner.as_deref() == Some(me);
    let mut candidates: Vec<&Lease> = active
        .iter()
        .copied()
        .filter(|l| (!live(l) || handed_to_me(l)) && parents_done(l) && may_take(l))
        .collect();
    // Handed over to this worker first, then free leases, then the longest expired.
    candidates.sort_by_key(|l| (!handed_to_me(l), l.owner.is_some(), l.expires_at_ms));
    let mut wanted = target - mine;
    let mut takes: Vec<Take> = candidates
        .into_iter()
        .take(wanted)
        .map(|l| Take {
            lease: l.clone(),
            stolen_from: None,
        })
        .collect();
    wanted -= takes.len();
    if wanted == 0 {
        return takes;
    }
    // Steal, gradually, from the busiest workers above the fair share.
    let mut owners: Vec<(&str, usize)> = load
        .iter()
        .filter(|(o, n)| **o != me && **n > target)
        .map(|(o, n)| (*o, *n))
        .collect();
    owners.sort_by_key(|(o, n)| (std::cmp::Reverse(*n), *o));
    let max_steals = limits.max_steals_per_round.min(wanted);
    for (owner, _) in owners {
        if takes.iter().filter(|t| t.stolen_from.is_some()).count() >= max_steals {
            break;
        }
        if let Some(l) = active
            .iter()
            .find(|l| l.owner.as_deref() == Some(owner) && live(l) && may_take(l))
        {
            takes.push(Take {
                lease: (*l).clone(),
                stolen_from: Some(owner.to_owned()),
            });
        }
    }
    takes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_000_000;

    fn lease(
        i: usize,
        owner: Option<usize>,
        expires: u64,
        ended: bool,
        parent: Option<usize>,
    ) -> Lease {
        Lease {
            shard_id: format!("s{i:03}"),
            parent_shard_ids: parent.map(|p| format!("s{p:03}")).into_iter().collect(),
            owner: owner.map(|o| format!("w{o}")),
            counter: i as u64,
            expires_at_ms: expires,
            checkpoint: ended.then_some(ShardCheckpoint::Ended),
            handoff_to: None,
        }
    }

    fn arb_table() -> impl Strategy<Value = Vec<Lease>> {
        proptest::collection::vec(
            (
                proptest::option::of(0usize..5),
                prop_oneof![Just(0u64), NOW - 10..NOW + 10_000],
                proptest::bool::weighted(0.2),
                proptest::option::weighted(0.3, 0usize..40),
            ),
            0..40,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (owner, expires, ended, parent))| {
                    lease(i, owner, expires, ended, parent.filter(|p| *p < i))
                })
                .collect()
        })
    }

    proptest! {
        /// The plan takes only what it may: never a lease it holds, never an ended one, never a
        /// shard it may not take now, never one whose parents are unfinished (unless stolen,
        /// when the owner already read past them), never a live lease except as a steal from a
        /// worker above its share, at most `max_steals_per_round` steals, and never beyond the
        /// fair share.
        #[test]
        fn takes_only_what_it_may(
            table in arb_table(),
            held_mask in proptest::collection::vec(any::<bool>(), 40),
            blocked_mask in proptest::collection::vec(proptest::bool::weighted(0.1), 40),
            max_leases in 1usize..20,
            max_steals in 0usize..3,
        ) {
            let me = "w0";
            let held: HashSet<String> = table
                .iter()
                .enumerate()
                .filter(|(i, l)| held_mask[*i] && l.owner.as_deref() == Some(me))
                .map(|(_, l)| l.shard_id.clone())
                .collect();
            let blocked: HashSet<String> = table
                .iter()
                .enumerate()
                .filter(|(i, _)| blocked_mask[*i])
                .map(|(_, l)| l.shard_id.clone())
                .collect();
            let limits = Limits { max_leases_per_worker: max_leases, max_steals_per_round: max_steals };
            let takes = plan(&table, &held, me, NOW, limits, |s| !blocked.contains(s));
            let by_id: HashMap<&str, &Lease> = table.iter().map(|l| (l.shard_id.as_str(), l)).collect();
            let live = |l: &Lease| l.owner.is_some() && l.expires_at_ms > NOW;
            let mut seen = HashSet::new();
            for t in &takes {
                let l = &t.lease;
                prop_assert!(seen.insert(l.shard_id.clone()), "taken twice: {}", l.shard_id);
                prop_assert!(!held.contains(&l.shard_id));
                prop_assert!(!ended(l));
                prop_assert!(!blocked.contains(&l.shard_id));
                match &t.stolen_from {
                    None => {
                        // Live only when the table already gives it to this worker (a handoff).
                        prop_assert!(
                            !live(l) || l.owner.as_deref() == Some(me),
                            "a live lease of another worker taken as free: {l:?}"
                        );
                        prop_assert!(l.parent_shard_ids.iter().all(|p| by_id.get(p.as_str()).is_none_or(|pl| ended(pl))));
                    }
                    Some(owner) => {
                        prop_assert!(live(l));
                        prop_assert_eq!(l.owner.as_deref(), Some(owner.as_str()));
                        prop_assert_ne!(owner.as_str(), me);
                    }
                }
            }
            prop_assert!(takes.iter().filter(|t| t.stolen_from.is_some()).count() <= max_steals);
            let active = table.iter().filter(|l| !ended(l)).count();
            let mut workers: HashSet<&str> = table
                .iter()
                .filter(|l| !ended(l) && live(l))
                .filter_map(|l| l.owner.as_deref())
                .collect();
            workers.insert(me);
            let target = active.div_ceil(workers.len()).min(max_leases);
            let mine = held.iter().filter(|s| by_id.get(s.as_str()).is_some_and(|l| !ended(l))).count();
            prop_assert!(mine + takes.len() <= target.max(mine));
        }
    }

    #[test]
    fn free_before_expired_and_steals_from_the_busiest() {
        let table = vec![
            lease(0, Some(1), NOW - 5, false, None), // expired
            lease(1, None, 0, false, None),          // free
            lease(2, Some(2), NOW + 5, false, None), // live, w2
            lease(3, Some(2), NOW + 5, false, None), // live, w2
            lease(4, Some(2), NOW + 5, false, None), // live, w2
            lease(5, Some(3), NOW + 5, false, None), // live, w3
        ];
        let limits = Limits {
            max_leases_per_worker: usize::MAX,
            max_steals_per_round: 1,
        };
        let takes = plan(&table, &HashSet::new(), "w0", NOW, limits, |_| true);
        let ids: Vec<(&str, Option<&str>)> = takes
            .iter()
            .map(|t| (t.lease.shard_id.as_str(), t.stolen_from.as_deref()))
            .collect();
        // Three workers with live leases and w0: a share of 2. Free first, then expired.
        assert_eq!(ids, vec![("s001", None), ("s000", None)]);
        let limits = Limits {
            max_leases_per_worker: 3,
            max_steals_per_round: 1,
        };
        let held: HashSet<String> = ["s001".to_owned()].into();
        let table: Vec<Lease> = table
            .into_iter()
            .map(|mut l| {
                if l.shard_id == "s001" || l.shard_id == "s000" {
                    l.owner = Some("w0".into());
                    l.expires_at_ms = NOW + 5;
                }
                l
            })
            .collect();
        let takes = plan(&table, &held, "w0", NOW, limits, |_| true);
        // w0 holds one; s000 is listed as its but not held (handed over to it): adopted first,
        // which makes its share of 2.
        assert_eq!(takes.len(), 1);
        assert_eq!(takes[0].lease.shard_id, "s000");
        assert_eq!(takes[0].stolen_from, None);
        // Not adopted when its worker here is still stopping: then w2 (3 live) is robbed, once.
        let takes = plan(&table, &held, "w0", NOW, limits, |s| s != "s000");
        assert_eq!(takes.len(), 1);
        assert_eq!(takes[0].stolen_from.as_deref(), Some("w2"));
    }
}
