//! The delivery stage of one shard: filters pages, batches records, routes them by item key to
//! `key_parallelism` lanes (each a task with its own handler instance, handling one batch at a
//! time), and acknowledges pages to the shard worker through a contiguous watermark.
//!
//! A lane finishes its records in order, and every record of one item goes to the same lane, so
//! each item's changes are handled in order. The checkpoint only moves to a position below which
//! every record is finished (I3), however the lanes interleave.

use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot};

use super::worker::WorkerMsg;
use super::Shared;
use crate::delivery::engine::{Fatal, Lane};
use crate::delivery::failure::{HandlerFailure, Hook};
use crate::delivery::watermark::{RecordId, Watermark};
use crate::handler::ShardInfo;
use crate::record::{SequenceNumber, StreamRecord};

pub(crate) struct HandlerActor;

pub(crate) struct HandlerArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) shard: Arc<ShardInfo>,
    pub(crate) worker: ActorRef<WorkerMsg>,
    /// Lease mode: no handler call starts while the lease may have expired.
    pub(crate) lease: Option<crate::lease::guard::LeaseGuard>,
}

pub(crate) enum HandlerMsg {
    Start(RpcReplyPort<Result<(), HandlerFailure>>),
    /// One GetRecords page (records may be empty when all were skipped), ending at `through`.
    Deliver {
        records: Vec<StreamRecord>,
        through: SequenceNumber,
    },
    /// A lane finished these records; `fatal` when it cannot go on.
    LaneDone {
        finished: Vec<RecordId>,
        fatal: Option<Fatal>,
    },
    /// The batching window of generation `n` expired.
    FlushWindow(u64),
    End(RpcReplyPort<Result<(), HandlerFailure>>),
    Shutdown(RpcReplyPort<()>),
    /// The lease is gone: skip queued work, let a running call finish, call `on_lease_lost`.
    LeaseLost(RpcReplyPort<()>),
}

enum LaneMsg {
    Work {
        ids: Vec<RecordId>,
        records: Vec<StreamRecord>,
    },
    End(oneshot::Sender<Result<(), HandlerFailure>>),
    Shutdown(oneshot::Sender<()>),
    LeaseLost(oneshot::Sender<()>),
}

/// Aborts the lane tasks when the stage goes away — also when it is killed (a crash or a
/// worker restart), so no handler call outlives its shard worker.
struct LaneTasks(Vec<crate::rt::JoinHandle<()>>);

impl Drop for LaneTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

pub(crate) struct HandlerState {
    shared: Arc<Shared>,
    shard: Arc<ShardInfo>,
    worker: ActorRef<WorkerMsg>,
    lanes: Vec<mpsc::UnboundedSender<LaneMsg>>,
    _tasks: LaneTasks,
    watermark: Watermark,
    buffers: Vec<Vec<(RecordId, StreamRecord)>>,
    window_generation: u64,
    window_armed: bool,
    failed: bool,
    abandoned: Arc<std::sync::atomic::AtomicBool>,
    lease: Option<crate::lease::guard::LeaseGuard>,
}

/// Whether the shard worker may hand over another page, with `pages` pages of `records`
/// records handed over and not yet finished. The worker and this stage apply the same rule: the
/// stage flushes what it buffered exactly when the worker stops reading (I6).
///
/// Without a batching window a batch is a page: at most `max_in_flight_batches` pages. With a
/// window, batches span pages of any size: at most `max_in_flight_batches` batches' worth of
/// records.
pub(crate) fn may_take_more(config: &crate::ConsumerConfig, pages: usize, records: usize) -> bool {
    if config.batch_window.is_zero() {
        pages < config.max_in_flight_batches
    } else {
        let per_batch = config.batch_size.max(config.max_records_per_call as usize);
        records < config.max_in_flight_batches * per_batch
    }
}

fn lane_of(record: &StreamRecord, lanes: usize) -> usize {
    if lanes == 1 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    record.key_string().hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

/// Run a hook of user code, catching a panic and bounding its time.
async fn guarded<T>(
    timeout: Duration,
    hook: Hook,
    f: impl std::future::Future<Output = T>,
) -> Result<T, HandlerFailure> {
    match crate::rt::timeout(timeout, AssertUnwindSafe(f).catch_unwind()).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(panic)) => Err(HandlerFailure::panicked(hook, panic)),
        Err(_) => Err(HandlerFailure::TimedOut { hook, timeout }),
    }
}

/// A hook's own error, typed.
fn returned(hook: Hook) -> impl FnOnce(crate::HandlerError) -> HandlerFailure {
    move |e| HandlerFailure::Returned {
        hook,
        error: Arc::new(e),
    }
}

async fn run_lane(
    mut lane: Lane,
    mut rx: mpsc::UnboundedReceiver<LaneMsg>,
    stage: ActorRef<HandlerMsg>,
    started: oneshot::Sender<Result<(), HandlerFailure>>,
) {
    let timeout = lane.timeout;
    let start = guarded(
        timeout,
        Hook::OnShardStart,
        lane.handler.on_shard_start(&lane.shard),
    )
    .await
    .and_then(|r| r.map_err(returned(Hook::OnShardStart)));
    let ok = start.is_ok();
    let _ = started.send(start);
    if !ok {
        return;
    }
    while let Some(msg) = rx.recv().await {
        match msg {
            LaneMsg::Work { mut ids, records } => {
                if lane.abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let outcome = lane.deliver(records).await;
                ids.truncate(outcome.finished);
                let stop = outcome.fatal.is_some();
                let _ = stage.cast(HandlerMsg::LaneDone {
                    finished: ids,
                    fatal: outcome.fatal,
                });
                if stop {
                    return;
                }
            }
            LaneMsg::End(reply) => {
                let r = guarded(
                    timeout,
                    Hook::OnShardEnd,
                    lane.handler.on_shard_end(&lane.shard),
                )
                .await
                .and_then(|r| r.map_err(returned(Hook::OnShardEnd)));
                let _ = reply.send(r);
            }
            LaneMsg::LeaseLost(reply) => {
                if let Err(e) = guarded(
                    timeout,
                    Hook::OnLeaseLost,
                    lane.handler.on_lease_lost(&lane.shard),
                )
                .await
                {
                    tracing::warn!(shard = %lane.shard.shard_id, "{e}");
                }
                let _ = reply.send(());
            }
            LaneMsg::Shutdown(reply) => {
                if let Err(e) = guarded(
                    timeout,
                    Hook::OnShutdown,
                    lane.handler.on_shutdown(&lane.shard),
                )
                .await
                {
                    tracing::warn!(shard = %lane.shard.shard_id, "{e}");
                }
                let _ = reply.send(());
            }
        }
    }
}

impl HandlerState {
    /// Hand a lane's buffer over in batches: all of it, or only full batches. Returns whether
    /// anything was handed over.
    fn flush_lane(&mut self, lane: usize, all: bool) -> bool {
        let size = self.shared.config.batch_size;
        let buffer = std::mem::take(&mut self.buffers[lane]);
        let mut rest = buffer;
        let mut sent = false;
        while !rest.is_empty() && (all || rest.len() >= size) {
            let tail = rest.split_off(rest.len().min(size));
            let (ids, records): (Vec<_>, Vec<_>) = rest.into_iter().unzip();
            let _ = self.lanes[lane].send(LaneMsg::Work { ids, records });
            sent = true;
            rest = tail;
        }
        self.buffers[lane] = rest;
        sent
    }

    fn flush_all(&mut self) {
        for lane in 0..self.lanes.len() {
            self.flush_lane(lane, true);
        }
        self.window_generation += 1;
        self.window_armed = false;
    }

    /// Tell the worker how far the checkpoint may move and how many pages are done.
    fn report(&mut self) {
        if let Some(a) = self.watermark.advance() {
            let _ = self.worker.cast(WorkerMsg::Acked {
                through: a.through,
                pages: a.pages,
            });
        }
    }

    async fn broadcast<T: Send + 'static>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> LaneMsg,
    ) -> Vec<Result<T, HandlerFailure>> {
        let mut out = Vec::new();
        for lane in &self.lanes {
            let (tx, rx) = oneshot::channel();
            if lane.send(make(tx)).is_err() {
                out.push(Err(HandlerFailure::LaneStopped));
                continue;
            }
            out.push(rx.await.map_err(|_| HandlerFailure::LaneStopped));
        }
        out
    }
}

impl Actor for HandlerActor {
    type Msg = HandlerMsg;
    type State = HandlerState;
    type Arguments = HandlerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: HandlerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(HandlerState {
            shared: args.shared,
            shard: args.shard,
            worker: args.worker,
            lanes: Vec::new(),
            _tasks: LaneTasks(Vec::new()),
            watermark: Watermark::default(),
            buffers: Vec::new(),
            window_generation: 0,
            window_armed: false,
            failed: false,
            abandoned: Arc::default(),
            lease: args.lease,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HandlerMsg::Start(reply) => {
                let n = state.shared.config.key_parallelism;
                let mut started = Vec::new();
                for index in 0..n {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let (start_tx, start_rx) = oneshot::channel();
                    let api = state.shared.api.clone();
                    let events = state.shared.events.clone();
                    // Each lane's handler knows which lane it is.
                    let shard = Arc::new(crate::ShardInfo {
                        lane: index,
                        ..(*state.shard).clone()
                    });
                    let lane = Lane {
                        handler: (state.shared.factory)(&shard),
                        shard,
                        factory: state.shared.factory.clone(),
                        retry: state.shared.config.retry.clone(),
                        sink: state.shared.failure_sink.clone(),
                        timeout: state.shared.config.handler_timeout,
                        wall_clock: Arc::new(move || api.wall_clock()),
                        emit: Arc::new(move |e| {
                            let _ = events.send(e);
                        }),
                        index,
                        board: state.shared.board.clone(),
                        metrics: state.shared.metrics.clone(),
                        abandoned: state.abandoned.clone(),
                        lease: state.lease.clone(),
                    };
                    state._tasks.0.push(crate::rt::spawn(run_lane(
                        lane,
                        rx,
                        myself.clone(),
                        start_tx,
                    )));
                    state.lanes.push(tx);
                    state.buffers.push(Vec::new());
                    started.push(start_rx);
                }
                let mut result = Ok(());
                for rx in started {
                    let r = rx.await.unwrap_or(Err(HandlerFailure::LaneStopped));
                    if result.is_ok() {
                        result = r;
                    }
                }
                state.failed = result.is_err();
                let _ = reply.send(result);
            }
            HandlerMsg::Deliver { records, through } => {
                if state.failed {
                    return Ok(());
                }
                let seqs = records
                    .iter()
                    .map(|r| r.sequence_number().clone())
                    .collect();
                let page = state.watermark.push_page(through, seqs);
                let lanes = state.lanes.len();
                let mut filtered = Vec::new();
                for (i, r) in records.into_iter().enumerate() {
                    let id = RecordId {
                        page,
                        index: i as u32,
                    };
                    if !state.shared.filter.is_empty() && !state.shared.filter.accepts(&r) {
                        filtered.push(id);
                    } else {
                        let lane = lane_of(&r, lanes);
                        state.buffers[lane].push((id, r));
                    }
                }
                if !filtered.is_empty() {
                    state
                        .shared
                        .metrics
                        .records_filtered
                        .add(filtered.len() as u64, &[]);
                }
                state.watermark.finish(filtered);
                let shared = state.shared.clone();
                let config = &shared.config;
                let (pages, records) =
                    (state.watermark.open_pages(), state.watermark.open_records());
                if config.batch_window.is_zero() || !may_take_more(config, pages, records) {
                    // No window, or the worker cannot send more: hand over what there is.
                    state.flush_all();
                } else {
                    let mut flushed = false;
                    for lane in 0..lanes {
                        flushed |= state.flush_lane(lane, false);
                    }
                    if flushed {
                        // A full batch went out: the window starts again for what remains.
                        state.window_generation += 1;
                        state.window_armed = false;
                    }
                    if !state.window_armed && state.buffers.iter().any(|b| !b.is_empty()) {
                        state.window_armed = true;
                        let generation = state.window_generation;
                        myself.send_after(config.batch_window, move || {
                            HandlerMsg::FlushWindow(generation)
                        });
                    }
                }
                state.report();
            }
            HandlerMsg::FlushWindow(generation) => {
                if generation == state.window_generation && !state.failed {
                    state.flush_all();
                }
            }
            HandlerMsg::LaneDone { finished, fatal } => {
                state.watermark.finish(finished);
                state.report();
                if let Some(fatal) = fatal {
                    if !state.failed {
                        state.failed = true;
                        let _ = state.worker.cast(WorkerMsg::HandlerFailed(fatal));
                    }
                }
            }
            HandlerMsg::End(reply) => {
                let results = state.broadcast(LaneMsg::End).await;
                let first_error = results.into_iter().find_map(|r| r.and_then(|x| x).err());
                let _ = reply.send(first_error.map_or(Ok(()), Err));
            }
            HandlerMsg::Shutdown(reply) => {
                let _ = state.broadcast(LaneMsg::Shutdown).await;
                let _ = reply.send(());
            }
            HandlerMsg::LeaseLost(reply) => {
                state
                    .abandoned
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                state.failed = true;
                for b in &mut state.buffers {
                    b.clear();
                }
                let _ = state.broadcast(LaneMsg::LeaseLost).await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}
