//! The shard table: one entry per shard, mirrored on the status board; merging listings,
//! lineage (I2) and what a shard's start may have lost (I5).

use std::collections::{HashSet, VecDeque};

use crate::rt::Instant;

use crate::checkpoint::ShardCheckpoint;
use crate::events::{ConsumerEvent, Gap, GapAction, GapKind, LostRange};
use crate::lease::guard::LeaseGuard;
use crate::record::system_time_to_millis;
use crate::source::Shard;
use crate::status::ShardState;

use super::CoordinatorState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Run {
    /// Waiting for its parent, or for the first discovery.
    Pending,
    Running,
    /// Failed; restarts after a backoff.
    Backoff,
    Ended,
    Quarantined,
    /// Stopped by a gap.
    Stopped,
    /// Lease mode: another worker holds (or may take) its lease.
    Unowned,
    /// Lease mode: being handed over to the worker that asked for it (drain, checkpoint,
    /// release); never restarted here meanwhile.
    HandingOff,
}

pub(super) struct Entry {
    pub(super) shard: Shard,
    pub(super) run: Run,
    pub(super) failures: VecDeque<Instant>,
    pub(super) listed: bool,
    /// Workers started for this shard in this consumer (the next one's incarnation is one more).
    pub(super) starts: u64,
    /// It ended because of a gap (it vanished, or nothing of it could be read): its children's
    /// first records may be lost too.
    pub(super) lossy_end: bool,
    /// Lease mode: the validity of the lease this worker holds on it.
    pub(super) lease: Option<LeaseGuard>,
    /// Lease mode: a lease stolen from a live owner is read only once the owner's term ran
    /// out (wall-clock Unix ms, as listed): by then the owner starts no more handler calls.
    pub(super) not_before_ms: Option<u64>,
}

impl CoordinatorState {
    /// Mirror a shard's run state on the status board.
    pub(super) fn show(&self, shard_id: &str, state: ShardState, error: Option<&str>) {
        let parent = self
            .shards
            .get(shard_id)
            .and_then(|e| e.shard.parent_shard_id.clone());
        self.shared.board.update(shard_id, parent.as_ref(), |e| {
            e.state = state;
            if let Some(err) = error {
                e.last_error = Some(err.to_owned());
            }
            if state != ShardState::Reading && state != ShardState::CaughtUp {
                // What the next worker reads is read again: no earlier empty poll counts.
                e.empty_poll_started = None;
            }
            if state == ShardState::Ended {
                e.ended_at = Some(Instant::now());
                e.unacked_pages.clear();
                e.calls.clear();
            }
        });
    }

    /// Record shards from a DescribeStream result; returns the ids seen for the first time.
    pub(super) fn merge(&mut self, listed: Vec<Shard>, full_listing: bool) -> Vec<String> {
        let mut new = Vec::new();
        let mut seen = HashSet::new();
        for shard in listed {
            seen.insert(shard.shard_id.clone());
            match self.shards.get_mut(&shard.shard_id) {
                Some(e) => {
                    // A stale listing may show a closed shard as open: never forget an end.
                    if shard.ending_sequence_number.is_some()
                        || e.shard.ending_sequence_number.is_none()
                    {
                        e.shard = shard;
                    }
                    e.listed = true;
                }
                None => {
                    let stored_end = matches!(
                        self.stored
                            .as_ref()
                            .and_then(|s| s.shards.get(&shard.shard_id)),
                        Some(ShardCheckpoint::Ended)
                    );
                    new.push(shard.shard_id.clone());
                    let state = if stored_end {
                        ShardState::Ended
                    } else {
                        ShardState::WaitingOnParent
                    };
                    self.shared.board.update(
                        &shard.shard_id,
                        shard.parent_shard_id.as_ref(),
                        |e| e.state = state,
                    );
                    self.shards.insert(
                        shard.shard_id.clone(),
                        Entry {
                            shard,
                            run: if stored_end {
                                Run::Ended
                            } else if self.shared.leases.is_some() {
                                // Read only once this worker holds its lease.
                                Run::Unowned
                            } else {
                                Run::Pending
                            },
                            failures: VecDeque::new(),
                            listed: true,
                            starts: 0,
                            lossy_end: false,
                            lease: None,
                            not_before_ms: None,
                        },
                    );
                }
            }
        }
        if full_listing {
            // Ended shards that left the listing were trimmed away: forget them.
            let gone: Vec<String> = self
                .shards
                .iter()
                .filter(|(id, e)| !seen.contains(*id) && e.run == Run::Ended)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &gone {
                self.shards.remove(id);
                self.shared.board.remove(id);
            }
            if !gone.is_empty() {
                self.shared
                    .emit(ConsumerEvent::ShardsRemoved { shard_ids: gone });
            }
            for (id, e) in self.shards.iter_mut() {
                if !seen.contains(id) {
                    e.listed = false;
                }
            }
        }
        if !new.is_empty() {
            self.shared.emit(ConsumerEvent::ShardsDiscovered {
                shard_ids: new.clone(),
            });
        }
        new
    }

    /// Whether a shard's parent allows it to start (I2).
    pub(super) fn parent_done(&self, shard: &Shard) -> bool {
        // With leases, lineage is checked against the lease table when a lease is taken
        // (another worker may have ended the parent).
        if self.shared.leases.is_some() {
            return true;
        }
        let Some(parent) = &shard.parent_shard_id else {
            return true;
        };
        match self.shards.get(parent) {
            Some(e) => e.run == Run::Ended,
            // Not listed and never seen: trimmed away long ago, unless we hold an unfinished
            // checkpoint for it (then validation reports the vanished shard, and the child waits).
            None => !matches!(
                self.stored.as_ref().and_then(|s| s.shards.get(parent)),
                Some(cp) if cp.is_unfinished()
            ),
        }
    }

    /// Whether a shard read from its start without a checkpoint of its own may have lost its
    /// first records before this consumer got to it (I5): its parent ended with a gap here, or
    /// its parent is gone from the listing — closed more than the retention ago, so the shard
    /// itself is older than that. Shards listed at the very first start are exempt: reading
    /// them from where the start position says is what was asked for.
    pub(super) fn start_may_be_trimmed(&self, shard: &Shard) -> bool {
        let lossy_parent = |p: &String| self.shards.get(p).is_some_and(|e| e.lossy_end);
        if self.shared.leases.is_some() {
            // Which shards were listed at the application's first start is not recorded in the
            // lease table: only a parent that ended with a gap here counts.
            return shard.parent_shard_id.as_ref().is_some_and(lossy_parent);
        }
        if self
            .initial_shards
            .as_ref()
            .is_some_and(|initial| initial.contains(&shard.shard_id))
        {
            return false;
        }
        let Some(parent) = &shard.parent_shard_id else {
            return false;
        };
        match self.shards.get(parent) {
            Some(e) => e.lossy_end,
            None => true,
        }
    }

    /// A shard listed before and never read, listed longer ago than the stream keeps records:
    /// whatever was written to it early may have been trimmed while the consumer was away.
    pub(super) fn listed_too_long_ago(&self, checkpoint: Option<&ShardCheckpoint>) -> bool {
        let Some(ShardCheckpoint::Discovered {
            from: None,
            since_ms,
        }) = checkpoint
        else {
            return false;
        };
        let cfg = &self.shared.config;
        let now = system_time_to_millis(self.shared.api.wall_clock());
        let limit = cfg.retention.saturating_sub(cfg.latest_bookmark_margin);
        now.saturating_sub(*since_ms) >= limit.as_millis() as u64
    }

    /// A listed shard names a parent this consumer never knew and the stream no longer lists,
    /// although the consumer has been reading the stream: the parent vanished unread (I5).
    /// Returns the gap when the policy says stop.
    pub(super) fn report_unknown_parent(&mut self, shard: &Shard) -> Option<Gap> {
        let parent = shard.parent_shard_id.as_ref()?;
        if self.shared.leases.is_some() {
            return None;
        }
        let known = self.shards.contains_key(parent)
            || self
                .stored
                .as_ref()
                .is_some_and(|s| s.shards.contains_key(parent));
        let initial = self
            .initial_shards
            .as_ref()
            .is_some_and(|i| i.contains(&shard.shard_id));
        if known || initial || !self.vanished_reported.insert(parent.clone()) {
            return None;
        }
        let gap = self
            .shared
            .report_gap(parent, GapKind::VanishedShard, LostRange::default());
        (gap.action == GapAction::Stopped).then_some(gap)
    }
}
