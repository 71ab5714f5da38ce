//! Where each shard starts reading: pure rules, no I/O (invariant I4).
//!
//! - A shard with a checkpoint resumes `AFTER_SEQUENCE_NUMBER` of it.
//! - The user's start position applies only to shards open when the consumer first started on
//!   this stream. At that first start [`initial_checkpoints`] turns a `LATEST` start into a
//!   durable bookmark (the wall-clock time), so that a later restart or an expired iterator
//!   re-reads from `TRIM_HORIZON` and skips only records older than the bookmark — never from
//!   `LATEST` again, which would lose what was written while the consumer was down.
//! - A shard without checkpoint that was not open at first start (a child, a late shard) reads
//!   from `TRIM_HORIZON`: every one of its records comes after the consumer started.

use std::time::{Duration, SystemTime};

use crate::checkpoint::ShardCheckpoint;
use crate::record::millis_to_system_time;
use crate::source::{IteratorPosition, Shard};

/// Where a consumer starts on shards that were open when it first ran on a stream.
///
/// Only the very first start on a stream (no checkpoints stored for it yet) uses this; every
/// later start resumes from checkpoints, and new shards always start at their beginning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartPosition {
    /// Every retained record (up to 24 hours back). The safe default.
    #[default]
    TrimHorizon,
    /// Only changes made after the consumer first starts.
    Latest,
}

/// How a shard worker opens its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardPlan {
    /// The iterator position for the first GetShardIterator.
    pub(crate) position: IteratorPosition,
    /// Records created before this instant are skipped (acknowledged without delivery): they
    /// predate a `LATEST` bookmark.
    pub(crate) skip_before: Option<SystemTime>,
    /// The shard is read from `TRIM_HORIZON` although its first records may already have been
    /// trimmed (its lineage was broken): the first page reports a
    /// [`TrimmedStart`](crate::events::GapKind::TrimmedStart) gap. Set by the coordinator.
    pub(crate) start_may_be_trimmed: bool,
}

impl ShardPlan {
    /// Where to re-open the shard when nothing was read yet and the first iterator is gone
    /// (expired, or the worker restarted). `LATEST` becomes `TRIM_HORIZON` + `skip_before`.
    pub(crate) fn reopen_position(&self) -> IteratorPosition {
        match &self.position {
            IteratorPosition::Latest => IteratorPosition::TrimHorizon,
            other => other.clone(),
        }
    }
}

/// What to do with a shard, given its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShardStart {
    /// Read it.
    Read(ShardPlan),
    /// It is finished: nothing to read, its children may start.
    Done,
}

/// The plan for one shard after the first start has been bookmarked.
///
/// `fresh_latest` is true only for the first worker of a shard whose `LATEST` bookmark this
/// process has just written: only then may the `LATEST` iterator itself be used. `margin` widens
/// the bookmark to cover creation-time truncation and clock skew (duplicates, never loss).
pub(crate) fn plan_shard(
    checkpoint: Option<&ShardCheckpoint>,
    fresh_latest: bool,
    margin: Duration,
) -> ShardStart {
    match checkpoint {
        Some(ShardCheckpoint::Processed { sequence_number }) => ShardStart::Read(ShardPlan {
            position: IteratorPosition::AfterSequenceNumber(sequence_number.clone()),
            skip_before: None,
            start_may_be_trimmed: false,
        }),
        Some(ShardCheckpoint::Ended) => ShardStart::Done,
        Some(ShardCheckpoint::Latest { since_ms }) => {
            let since = millis_to_system_time(*since_ms);
            let skip_before = since.checked_sub(margin).unwrap_or(since);
            ShardStart::Read(ShardPlan {
                position: if fresh_latest {
                    IteratorPosition::Latest
                } else {
                    IteratorPosition::TrimHorizon
                },
                skip_before: Some(skip_before),
                start_may_be_trimmed: false,
            })
        }
        Some(ShardCheckpoint::Discovered {
            from: Some(sequence_number),
            ..
        }) => ShardStart::Read(ShardPlan {
            position: IteratorPosition::AtSequenceNumber(sequence_number.clone()),
            skip_before: None,
            start_may_be_trimmed: false,
        }),
        None | Some(ShardCheckpoint::Discovered { from: None, .. }) => {
            ShardStart::Read(ShardPlan {
                position: IteratorPosition::TrimHorizon,
                skip_before: None,
                start_may_be_trimmed: false,
            })
        }
    }
}

/// The checkpoints written at the very first start on a stream, before any worker runs.
///
/// `TRIM_HORIZON` needs none (a missing checkpoint already means "from the beginning").
/// `LATEST` bookmarks every open shard at `now` and marks closed shards ended: nothing written
/// after `now` can land in a closed shard.
pub(crate) fn initial_checkpoints(
    shards: &[Shard],
    start: StartPosition,
    now_ms: u64,
) -> Vec<(String, ShardCheckpoint)> {
    match start {
        StartPosition::TrimHorizon => Vec::new(),
        StartPosition::Latest => shards
            .iter()
            .map(|s| {
                let cp = if s.is_closed() {
                    ShardCheckpoint::Ended
                } else {
                    ShardCheckpoint::Latest { since_ms: now_ms }
                };
                (s.shard_id.clone(), cp)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SequenceNumber;
    use proptest::prelude::*;

    fn shard(id: usize, closed: bool) -> Shard {
        Shard {
            shard_id: format!("shardId-{id:020}"),
            parent_shard_id: None,
            starting_sequence_number: Some(format!("{:021}", 100 + id).parse().expect("seq")),
            ending_sequence_number: closed
                .then(|| format!("{:021}", 10_000 + id).parse().expect("seq")),
        }
    }

    fn seq(n: u64) -> SequenceNumber {
        format!("{n:021}").parse().expect("seq")
    }

    const MARGIN: Duration = Duration::from_secs(120);

    #[test]
    fn checkpoint_resumes_after_it() {
        let cp = ShardCheckpoint::Processed {
            sequence_number: seq(7),
        };
        assert_eq!(
            plan_shard(Some(&cp), true, MARGIN),
            ShardStart::Read(ShardPlan {
                position: IteratorPosition::AfterSequenceNumber(seq(7)),
                skip_before: None,
                start_may_be_trimmed: false
            })
        );
    }

    #[test]
    fn latest_is_used_only_fresh_and_reopens_at_trim_horizon() {
        let cp = ShardCheckpoint::Latest {
            since_ms: 1_000_000,
        };
        let ShardStart::Read(fresh) = plan_shard(Some(&cp), true, MARGIN) else {
            panic!("fresh latest must read")
        };
        assert_eq!(fresh.position, IteratorPosition::Latest);
        assert_eq!(fresh.reopen_position(), IteratorPosition::TrimHorizon);
        let ShardStart::Read(stale) = plan_shard(Some(&cp), false, MARGIN) else {
            panic!("restarted latest must read")
        };
        assert_eq!(stale.position, IteratorPosition::TrimHorizon);
        assert_eq!(
            stale.skip_before,
            Some(millis_to_system_time(1_000_000 - 120_000))
        );
    }

    #[test]
    fn missing_checkpoint_reads_from_the_beginning() {
        assert_eq!(
            plan_shard(None, false, MARGIN),
            ShardStart::Read(ShardPlan {
                position: IteratorPosition::TrimHorizon,
                skip_before: None,
                start_may_be_trimmed: false
            })
        );
    }

    proptest! {
        /// I4: LATEST is used only for shards open at first start, and only by the first,
        /// fresh worker; anything re-planned never starts at LATEST.
        #[test]
        fn latest_only_for_shards_open_at_first_start(
            closed in proptest::collection::vec(any::<bool>(), 0..50),
            latest in any::<bool>(),
            now in 1_000_000u64..2_000_000_000_000,
        ) {
            let shards: Vec<Shard> = closed.iter().enumerate().map(|(i, c)| shard(i, *c)).collect();
            let start = if latest { StartPosition::Latest } else { StartPosition::TrimHorizon };
            let initial = initial_checkpoints(&shards, start, now);
            for s in &shards {
                let cp = initial.iter().find(|(id, _)| id == &s.shard_id).map(|(_, c)| c);
                for fresh in [true, false] {
                    match plan_shard(cp, fresh, MARGIN) {
                        ShardStart::Read(plan) => {
                            if plan.position == IteratorPosition::Latest {
                                prop_assert!(latest && fresh && !s.is_closed());
                            }
                            prop_assert_ne!(plan.reopen_position(), IteratorPosition::Latest);
                            if !latest {
                                prop_assert_eq!(plan.position, IteratorPosition::TrimHorizon);
                                prop_assert_eq!(plan.skip_before, None);
                            }
                        }
                        ShardStart::Done => prop_assert!(latest && s.is_closed()),
                    }
                }
            }
            // A shard that appears later has no initial checkpoint: it reads from its start.
            prop_assert_eq!(
                plan_shard(None, false, MARGIN),
                ShardStart::Read(ShardPlan { position: IteratorPosition::TrimHorizon, skip_before: None, start_may_be_trimmed: false })
            );
        }

        /// A processed checkpoint always resumes right after itself, whatever else holds.
        #[test]
        fn processed_resumes_after(n in 0u64..u64::MAX / 2, fresh in any::<bool>()) {
            let cp = ShardCheckpoint::Processed { sequence_number: seq(n) };
            prop_assert_eq!(
                plan_shard(Some(&cp), fresh, MARGIN),
                ShardStart::Read(ShardPlan {
                    position: IteratorPosition::AfterSequenceNumber(seq(n)),
                    skip_before: None, start_may_be_trimmed: false
                })
            );
        }
    }
}
