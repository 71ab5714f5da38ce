//! Holds the consumer's positions in memory and writes them to the [`CheckpointStore`].
//!
//! Acknowledged positions are coalesced and written every `checkpoint_interval`; shard ends
//! and first-start bookmarks are written at once and answered only when durable, because a
//! child shard may start (I2) or a `LATEST` reader may open (I4) only after that.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::Shared;
use crate::checkpoint::{CheckpointStore, ShardCheckpoint, StreamKey};
use crate::config::backoff;
use crate::error::CheckpointError;
use crate::record::SequenceNumber;

pub(crate) struct Checkpointer;

pub(crate) struct CheckpointerArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) key: StreamKey,
    pub(crate) started_at_ms: u64,
    pub(crate) current: BTreeMap<String, ShardCheckpoint>,
}

pub(crate) enum CheckpointerMsg {
    /// The handler acknowledged every record of `shard_id` up to `sequence_number`.
    Processed {
        shard_id: String,
        sequence_number: SequenceNumber,
    },
    /// Record these at once; answer when durable.
    Save {
        updates: Vec<(String, ShardCheckpoint)>,
        reply: RpcReplyPort<Result<(), CheckpointError>>,
    },
    /// The latest known checkpoint of a shard (acknowledged, maybe not yet written).
    Get {
        shard_id: String,
        reply: RpcReplyPort<Option<ShardCheckpoint>>,
    },
    /// Write what is pending; answer when durable if asked.
    Flush(Option<RpcReplyPort<Result<(), CheckpointError>>>),
}

pub(crate) struct CheckpointerState {
    shared: Arc<Shared>,
    store: Arc<dyn CheckpointStore>,
    key: StreamKey,
    started_at_ms: u64,
    current: BTreeMap<String, ShardCheckpoint>,
    dirty: BTreeMap<String, ShardCheckpoint>,
    flush_scheduled: bool,
    failed_writes: u32,
}

impl CheckpointerState {
    fn record(&mut self, shard_id: String, checkpoint: ShardCheckpoint) {
        self.current.insert(shard_id.clone(), checkpoint.clone());
        self.dirty.insert(shard_id, checkpoint);
    }

    /// Write everything dirty. A failed write keeps it dirty for the next attempt.
    async fn flush(&mut self) -> Result<(), CheckpointError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let updates: Vec<_> = self
            .dirty
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let span = tracing::debug_span!("checkpoint", stream = %self.key.stream_arn, shards = updates.len());
        let started = tokio::time::Instant::now();
        let result = tracing::Instrument::instrument(
            self.store
                .save(&self.key, self.started_at_ms, updates.clone()),
            span,
        )
        .await;
        self.shared
            .metrics
            .checkpoint_duration
            .record(started.elapsed().as_secs_f64(), &[]);
        match result {
            Ok(()) => {
                // Only drop entries that did not change while the write was in flight.
                for (shard, cp) in updates {
                    if self.dirty.get(&shard) == Some(&cp) {
                        self.dirty.remove(&shard);
                    }
                }
                self.failed_writes = 0;
                Ok(())
            }
            Err(e) => {
                self.failed_writes += 1;
                Err(e)
            }
        }
    }
}

impl Actor for Checkpointer {
    type Msg = CheckpointerMsg;
    type State = CheckpointerState;
    type Arguments = CheckpointerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: CheckpointerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(CheckpointerState {
            shared: args.shared,
            store: args.store,
            key: args.key,
            started_at_ms: args.started_at_ms,
            current: args.current,
            dirty: BTreeMap::new(),
            flush_scheduled: false,
            failed_writes: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CheckpointerMsg::Processed {
                shard_id,
                sequence_number,
            } => {
                // Never move backwards (a restarted worker re-acknowledges from its checkpoint)
                // and never reopen an ended shard.
                let newer = match state.current.get(&shard_id) {
                    Some(ShardCheckpoint::Ended) => false,
                    Some(ShardCheckpoint::Processed { sequence_number: s }) => &sequence_number > s,
                    _ => true,
                };
                if newer {
                    state.record(shard_id, ShardCheckpoint::Processed { sequence_number });
                    if !state.flush_scheduled {
                        state.flush_scheduled = true;
                        myself.send_after(state.shared.config.checkpoint_interval, || {
                            CheckpointerMsg::Flush(None)
                        });
                    }
                }
            }
            CheckpointerMsg::Save { updates, reply } => {
                for (shard, cp) in updates {
                    state.record(shard, cp);
                }
                let r = state.flush().await;
                let fatal = r
                    .as_ref()
                    .err()
                    .filter(|e| !e.is_retryable())
                    .map(|e| e.to_string());
                let _ = reply.send(r);
                if let Some(e) = fatal {
                    return Err(e.into());
                }
            }
            CheckpointerMsg::Get { shard_id, reply } => {
                let _ = reply.send(state.current.get(&shard_id).cloned());
            }
            CheckpointerMsg::Flush(reply) => {
                state.flush_scheduled = false;
                let r = state.flush().await;
                if let Err(e) = &r {
                    if !e.is_retryable() {
                        let msg = e.to_string();
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                        return Err(msg.into());
                    }
                    tracing::warn!(error = %e, attempts = state.failed_writes, "checkpoint write failed; retrying");
                    if !state.flush_scheduled {
                        state.flush_scheduled = true;
                        let cfg = &state.shared.config;
                        let wait = backoff(
                            cfg.retry_backoff,
                            cfg.max_retry_backoff,
                            state.failed_writes,
                        );
                        myself.send_after(wait, || CheckpointerMsg::Flush(None));
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
        }
        Ok(())
    }
}
