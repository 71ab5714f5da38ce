//! Discovers shards, starts one worker per shard in lineage order, supervises them, and runs
//! shutdown.
//!
//! - Lineage (I2): a shard starts only when its parent is ended (durably checkpointed) or gone
//!   from the stream without an unfinished checkpoint.
//! - Positions (I4): from [`position`](crate::position); the first start bookmarks `LATEST`
//!   durably before any worker reads.
//! - Supervision (I8): a failed worker restarts from its checkpoint after a jittered backoff;
//!   after `max_failures` in the window the shard is quarantined and reported.
//! - Validation (I10): stored checkpoints must name shards of this stream and sequence numbers
//!   inside their shard's range.

mod bootstrap;
mod discovery;
mod leases;
mod shards;
mod supervision;
mod watchdog;

use shards::{Entry, Run};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::rt::Instant;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::checkpointer::{Checkpointer, CheckpointerArgs, CheckpointerMsg, LeaseBackend};
use super::worker::WorkerMsg;
use super::{ExitSlot, Outcome, Shared};
use crate::checkpoint::{CheckpointStore, StreamCheckpoints, StreamKey};
use crate::error::{CheckpointError, Error, RuntimeError};
use crate::events::ConsumerEvent;
use crate::record::system_time_to_millis;

pub(crate) struct Coordinator;

pub(crate) struct CoordinatorArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) key: StreamKey,
    pub(crate) stored: Option<StreamCheckpoints>,
    pub(crate) outcome: Outcome,
    /// Answered once the first discovery established every shard's position.
    pub(crate) ready: Option<tokio::sync::oneshot::Sender<()>>,
}

pub(crate) enum CoordinatorMsg {
    Discover,
    /// Look up the children of an ended shard at once (ShardFilter CHILD_SHARDS).
    ChildrenOf(String),
    Restart(String),
    Shutdown(RpcReplyPort<()>),
    /// Look for stalled shards, stuck handlers and missing children.
    Watchdog,
    /// Lease mode: take, steal and balance leases.
    Balance,
    /// Lease mode: the checkpointer lost this shard's lease.
    LeaseLost(String),
    /// Lease mode: a shard asked for by `to` was drained, checkpointed and released.
    HandedOver {
        shard_id: String,
        to: String,
    },
}

/// A running shard worker.
struct Running {
    shard_id: String,
    worker: ActorRef<WorkerMsg>,
    exit: ExitSlot,
}

pub(crate) struct CoordinatorState {
    shared: Arc<Shared>,
    store: Arc<dyn CheckpointStore>,
    key: StreamKey,
    outcome: Outcome,
    checkpointer: Option<ActorRef<CheckpointerMsg>>,
    /// Checkpoints as loaded, for validation and lineage of shards no longer listed.
    stored: Option<StreamCheckpoints>,
    started_at_ms: u64,
    shards: BTreeMap<String, Entry>,
    workers: HashMap<ActorId, Running>,
    /// The very first start on this stream: the shards listed then are read from where the
    /// start position says, whatever happened to their parents.
    initial_shards: Option<HashSet<String>>,
    /// Parents named by a listed shard but unknown here, already reported as vanished.
    vanished_reported: HashSet<String>,
    /// `LATEST` iterators obtained at the first start, for the shards' first workers.
    fresh_latest: HashMap<String, (String, Instant)>,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
    validated: bool,
    last_describe: Option<Instant>,
    discover_retry: crate::backoff::Backoff,
    discover_timer: Option<JoinHandle<Result<(), ractor::MessagingErr<CoordinatorMsg>>>>,
    stream_disabled: bool,
    stopping: bool,
    /// Lease mode: leases this worker asked their owners to hand over, and when (wall-clock
    /// Unix ms): stolen only once `lease.handoff_timeout` passed without a handoff.
    handoffs_asked: HashMap<String, u64>,
}

impl CoordinatorState {
    fn checkpointer(&self) -> Result<&ActorRef<CheckpointerMsg>, Error> {
        self.checkpointer
            .as_ref()
            .ok_or_else(|| RuntimeError::new("the checkpointer is not running").into())
    }

    /// Stop the consumer because of `error` (drain first, then stop).
    fn fail(&mut self, myself: &ActorRef<CoordinatorMsg>, error: Error) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if outcome.is_none() {
            tracing::error!(%error, "consumer stopping");
            *outcome = Some(error);
        }
        drop(outcome);
        // Runs after the current message: drains workers and writes the final checkpoint.
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let _ = myself.cast(CoordinatorMsg::Shutdown(tx.into()));
    }

    fn record_error(&self, error: Error) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if outcome.is_none() {
            *outcome = Some(error);
        }
    }
}

impl Actor for Coordinator {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: CoordinatorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let started_at_ms = args
            .stored
            .as_ref()
            .map(|s| s.started_at_ms)
            .unwrap_or_else(|| system_time_to_millis(args.shared.api.wall_clock()));
        Ok(CoordinatorState {
            discover_retry: crate::backoff::Backoff::for_config(&args.shared.config),
            shared: args.shared,
            store: args.store,
            key: args.key,
            outcome: args.outcome,
            checkpointer: None,
            stored: args.stored,
            started_at_ms,
            shards: BTreeMap::new(),
            workers: HashMap::new(),
            initial_shards: None,
            vanished_reported: HashSet::new(),
            fresh_latest: HashMap::new(),
            ready: args.ready,
            validated: false,
            last_describe: None,
            discover_timer: None,
            stream_disabled: false,
            stopping: false,
            handoffs_asked: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let current = state
            .stored
            .as_ref()
            .map(|s| s.shards.clone())
            .unwrap_or_default();
        let (checkpointer, _) = Actor::spawn_linked(
            None,
            Checkpointer,
            CheckpointerArgs {
                shared: state.shared.clone(),
                leases: state
                    .shared
                    .leases
                    .as_ref()
                    .map(|(store, owner)| LeaseBackend {
                        store: store.clone(),
                        owner: owner.clone(),
                        held: BTreeMap::new(),
                    }),
                coordinator: Some(myself.clone()),
                store: state.store.clone(),
                key: state.key.clone(),
                started_at_ms: state.started_at_ms,
                current,
            },
            myself.get_cell(),
        )
        .await
        .map_err(|e| RuntimeError::new("the checkpointer did not start").with_source(e))?;
        state.checkpointer = Some(checkpointer);
        let _ = myself.cast(CoordinatorMsg::Discover);
        myself.send_after(state.shared.config.watchdog_interval, || {
            CoordinatorMsg::Watchdog
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CoordinatorMsg::Discover => {
                if !state.stopping {
                    state.discover(&myself).await?;
                }
            }
            CoordinatorMsg::ChildrenOf(parent) => {
                if !state.stopping {
                    state.children_of(&myself, parent).await?;
                    state.check_complete(&myself);
                }
            }
            CoordinatorMsg::Restart(shard_id) => {
                // Due: a restart backoff ran out, or a stolen lease's previous term ended.
                if let Some(e) = state.shards.get_mut(&shard_id) {
                    if e.run == Run::Backoff {
                        e.run = Run::Pending;
                    }
                }
                state.start_ready(&myself).await?;
            }
            CoordinatorMsg::Balance => {
                if !state.stopping {
                    state.balance(&myself).await?;
                    myself.send_after(state.shared.config.lease.renew_interval, || {
                        CoordinatorMsg::Balance
                    });
                }
            }
            CoordinatorMsg::LeaseLost(shard_id) => state.lease_lost(&shard_id),
            CoordinatorMsg::HandedOver { shard_id, to } => state.handed_over(&shard_id, to),
            CoordinatorMsg::Watchdog => {
                if !state.stopping {
                    state.watchdog();
                    myself.send_after(state.shared.config.watchdog_interval, || {
                        CoordinatorMsg::Watchdog
                    });
                }
            }
            CoordinatorMsg::Shutdown(reply) => {
                if !state.stopping {
                    state.shutdown(&myself).await;
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Whoever waits for the board to move (a caught-up question) learns it never will.
        state.shared.board.update_meta(|m| m.closed = true);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            SupervisionEvent::ActorFailed(cell, e) => (cell, Some(e)),
            SupervisionEvent::ActorTerminated(cell, ..) => (cell, None),
            _ => return Ok(()),
        };
        let panic = failure.as_ref().map(|e| e.to_string());
        if let Some(running) = state.workers.remove(&cell.get_id()) {
            let exit = running
                .exit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            state.worker_exited(&myself, &running.shard_id, exit, panic)?;
            // A shard whose previous worker was still stopping may start now.
            return state.start_ready(&myself).await;
        }
        if state
            .checkpointer
            .as_ref()
            .is_some_and(|c| c.get_id() == cell.get_id())
        {
            // Without a checkpointer nothing can be recorded: stop rather than run unrecorded.
            state.checkpointer = None;
            // A store that failed for good stops the checkpointer with its typed error.
            let error: Error = match failure.map(|e| e.downcast::<CheckpointError>()) {
                Some(Ok(e)) => Error::Checkpoint(*e),
                Some(Err(other)) => RuntimeError::new("the checkpointer failed")
                    .with_source(other)
                    .into(),
                None => RuntimeError::new("the checkpointer stopped").into(),
            };
            let text = error.to_string();
            state.record_error(error);
            state.stopping = true;
            state
                .shared
                .emit(ConsumerEvent::Stopped { error: Some(text) });
            myself.stop(Some("checkpointer failed".into()));
        }
        Ok(())
    }
}
