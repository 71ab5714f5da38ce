//! The first discovery: the first start's bookmarks, or validation of stored checkpoints (I10).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::rt::Instant;
use ractor::{ActorProcessingErr, ActorRef};

use crate::actors::call;
use crate::actors::checkpointer::CheckpointerMsg;
use crate::backoff::{Backoff, TRANSIENT_ATTEMPTS};
use crate::checkpoint::{ShardCheckpoint, StreamCheckpoints};
use crate::error::{CheckpointError, CheckpointErrorKind, Error, RuntimeError};
use crate::events::{GapAction, GapKind, LostRange};
use crate::position::initial_checkpoints;
use crate::record::system_time_to_millis;
use crate::source::Shard;

use super::Run;
use super::{CoordinatorMsg, CoordinatorState};

/// `LATEST` iterators asked for at once at a first start with `StartPosition::Latest`.
const FIRST_ITERATORS_AT_ONCE: usize = 32;

impl CoordinatorState {
    /// Validate stored checkpoints against the listing (I10). Returns an error to stop with.
    pub(super) async fn validate(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
    ) -> Result<Option<Error>, ActorProcessingErr> {
        let Some(stored) = self.stored.clone() else {
            return Ok(None);
        };
        let mut vanished = Vec::new();
        for (shard_id, cp) in &stored.shards {
            match (self.shards.get(shard_id), cp) {
                (Some(e), ShardCheckpoint::Processed { sequence_number })
                    if !e.shard.contains(sequence_number) =>
                {
                    return Ok(Some(Error::Checkpoint(CheckpointError::new(
                        CheckpointErrorKind::Mismatch,
                        format!(
                            "checkpoint for shard {shard_id} names sequence number {sequence_number}, outside the shard's range ({:?} to {:?}): the checkpoint does not belong to stream {}",
                            e.shard.starting_sequence_number.as_ref().map(|s| s.as_str()),
                            e.shard.ending_sequence_number.as_ref().map(|s| s.as_str()),
                            self.shared.stream_arn
                        ),
                    ))));
                }
                (None, cp) if cp.is_unfinished() => {
                    vanished.push((shard_id.clone(), cp.sequence_number().cloned()));
                }
                _ => {}
            }
        }
        for (shard_id, after) in vanished {
            let lost = LostRange {
                after,
                before: None,
            };
            let gap = self
                .shared
                .report_gap(&shard_id, GapKind::VanishedShard, lost);
            if gap.action == GapAction::Stopped {
                return Ok(Some(Error::Gap(Box::new(gap))));
            }
            // Continue: consider it ended so its children can go on.
            let checkpointer = self.checkpointer()?.clone();
            let updates = vec![(shard_id.clone(), ShardCheckpoint::Ended)];
            let saved = call(
                &checkpointer,
                |reply| CheckpointerMsg::Save { updates, reply },
                Duration::from_secs(60),
            )
            .await;
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Ok(Some(Error::Checkpoint(e))),
                Err(e) => {
                    let e = RuntimeError::new("the checkpointer did not answer").with_source(e);
                    return Ok(Some(e.into()));
                }
            }
            if let Some(s) = self.stored.as_mut() {
                s.shards.insert(shard_id, ShardCheckpoint::Ended);
            }
        }
        let _ = myself;
        Ok(None)
    }

    /// The very first start on this stream: bookmark positions durably before anything reads.
    ///
    /// For `LATEST` the iterators are obtained here, before `spawn()` returns, and the bookmark
    /// is dated after them: every record written once `spawn()` returned is delivered.
    pub(super) async fn bootstrap(&mut self) -> Result<(), Error> {
        let shards: Vec<Shard> = self.shards.values().map(|e| e.shard.clone()).collect();
        if self.shared.config.start_position == crate::StartPosition::Latest {
            use futures_util::StreamExt;
            let this = &*self;
            // Concurrently, a bounded number at a time: one at a time, 10,000 shards took
            // minutes to start. Boxed: the futures must be `Send` for the actor.
            let calls: Vec<crate::source::BoxFuture<'_, _>> = shards
                .iter()
                .filter(|s| !s.is_closed())
                .map(|shard| {
                    let shard_id = shard.shard_id.clone();
                    Box::pin(async move {
                        let it = this.latest_iterator(&shard_id).await;
                        (shard_id, it, Instant::now())
                    }) as crate::source::BoxFuture<'_, _>
                })
                .collect();
            let fetched: Vec<_> = futures_util::stream::iter(calls)
                .buffer_unordered(FIRST_ITERATORS_AT_ONCE)
                .collect()
                .await;
            for (shard_id, it, issued) in fetched {
                self.fresh_latest.insert(shard_id, (it?, issued));
            }
        }
        self.initial_shards = Some(shards.iter().map(|s| s.shard_id.clone()).collect());
        let since = system_time_to_millis(self.shared.api.wall_clock());
        let initial = initial_checkpoints(&shards, self.shared.config.start_position, since);
        for (id, cp) in &initial {
            if *cp == ShardCheckpoint::Ended {
                if let Some(e) = self.shards.get_mut(id) {
                    e.run = Run::Ended;
                }
            }
        }
        let checkpointer = self.checkpointer()?.clone();
        call(
            &checkpointer,
            |reply| CheckpointerMsg::Save {
                updates: initial,
                reply,
            },
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| {
            RuntimeError::new("the checkpointer did not record the first start").with_source(e)
        })??;
        self.stored = Some(StreamCheckpoints {
            started_at_ms: self.started_at_ms,
            shards: BTreeMap::new(),
        });
        Ok(())
    }

    /// A `LATEST` iterator, retrying transient errors (the first start cannot go on without it).
    pub(super) async fn latest_iterator(&self, shard_id: &str) -> Result<String, Error> {
        let mut retry = Backoff::for_config(&self.shared.config).limited(TRANSIENT_ATTEMPTS);
        loop {
            let result = self
                .shared
                .api
                .get_shard_iterator(
                    self.shared.stream_arn.clone(),
                    shard_id.to_owned(),
                    crate::source::IteratorPosition::Latest,
                )
                .await;
            let e = match result {
                Ok(it) => return Ok(it),
                Err(e) => e,
            };
            match retry.next_wait().filter(|_| e.is_retryable()) {
                Some(wait) => {
                    self.shared
                        .metrics
                        .source_error("GetShardIterator", e.kind());
                    crate::rt::sleep(wait).await;
                }
                None => return Err(Error::Source(e)),
            }
        }
    }
}
