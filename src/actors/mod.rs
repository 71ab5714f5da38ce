//! The actor tree. ractor stays inside this module (and `rt`'s browser timers); the rest of the
//! crate sees plain types: [`Tree`] is what the public `Consumer` holds.
//!
//! ```text
//! Coordinator ─ supervises ─┬─ ShardWorker (one per shard being read) ─ HandlerActor (user code)
//!                           └─ Checkpointer (one per consumer) ─ CheckpointStore
//! ```
//! See docs/architecture.md for the message flow.

pub(crate) mod checkpointer;
pub(crate) mod coordinator;
pub(crate) mod handler_actor;
pub(crate) mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::broadcast;

use crate::config::ConsumerConfig;
use crate::delivery::{FailureSink, RecordFilter};
use crate::error::Error;
use crate::events::ConsumerEvent;
use crate::handler::HandlerFactory;
use crate::source::StreamsApi;
use crate::status::StatusBoard;
use crate::telemetry::Metrics;

/// A consumer's running actor tree, as the public handle sees it: started, asked to stop,
/// killed, or waited for, without ractor showing through.
pub(crate) struct Tree {
    coordinator: ActorRef<coordinator::CoordinatorMsg>,
    join: Option<ractor::concurrency::JoinHandle<()>>,
}

impl Tree {
    /// Start the coordinator (it starts the rest) and wait until the first discovery
    /// established every shard's position. Fails with why the consumer stopped meanwhile.
    pub(crate) async fn start(
        shared: Arc<Shared>,
        store: Arc<dyn crate::checkpoint::CheckpointStore>,
        key: crate::checkpoint::StreamKey,
        stored: Option<crate::checkpoint::StreamCheckpoints>,
        outcome: Outcome,
    ) -> Result<Self, Error> {
        let (ready, started) = tokio::sync::oneshot::channel();
        let (coordinator, join) = ractor::Actor::spawn(
            None,
            coordinator::Coordinator,
            coordinator::CoordinatorArgs {
                shared,
                store,
                key,
                stored,
                outcome: outcome.clone(),
                ready: Some(ready),
            },
        )
        .await
        .map_err(|e| {
            Error::Runtime(
                crate::error::RuntimeError::new("the coordinator did not start").with_source(e),
            )
        })?;
        if started.await.is_err() {
            // The coordinator stopped before positions were established: say why.
            let _ = join.await;
            let error = outcome.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(error.unwrap_or_else(|| {
                crate::error::RuntimeError::new("the consumer stopped while starting").into()
            }));
        }
        Ok(Self {
            coordinator,
            join: Some(join),
        })
    }

    /// Wait until every actor stopped. Cancel-safe.
    pub(crate) async fn join(&mut self) {
        if let Some(handle) = self.join.as_mut() {
            let _ = handle.await;
            self.join = None;
        }
    }

    /// Graceful stop (see `Consumer::shutdown`), then wait for it.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self
            .coordinator
            .call(coordinator::CoordinatorMsg::Shutdown, None)
            .await;
        self.join().await;
    }

    /// Stop everything at once, as a crash would.
    pub(crate) fn kill(&self) {
        self.coordinator.kill();
    }

    /// A handle that tells whether the coordinator still runs, for liveness probes that must
    /// not hold the tree (the consumer's owner may be waiting in `join` meanwhile).
    pub(crate) fn liveness(&self) -> Liveness {
        Liveness(self.coordinator.get_cell())
    }
}

/// Whether a consumer's coordinator still runs; see [`Tree::liveness`].
#[derive(Clone)]
pub(crate) struct Liveness(ractor::ActorCell);

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Liveness").field(&self.is_alive()).finish()
    }
}

impl Liveness {
    /// True while the coordinator is starting or running: it supervises every other actor, and
    /// stops (or is killed) when the consumer does.
    pub(crate) fn is_alive(&self) -> bool {
        ractor::ACTIVE_STATES.contains(&self.0.get_status())
    }
}

/// What every actor of one consumer shares, read-only.
pub(crate) struct Shared {
    pub(crate) api: Arc<dyn StreamsApi>,
    pub(crate) config: ConsumerConfig,
    pub(crate) stream_arn: String,
    pub(crate) events: broadcast::Sender<ConsumerEvent>,
    pub(crate) factory: HandlerFactory,
    pub(crate) filter: RecordFilter,
    pub(crate) failure_sink: Option<Arc<dyn FailureSink>>,
    pub(crate) board: Arc<StatusBoard>,
    pub(crate) metrics: Metrics,
    /// Lease mode: the lease table and this worker's id.
    pub(crate) leases: Option<(Arc<dyn crate::lease::LeaseStore>, String)>,
    /// Shard workers alive now: the idle-poll budget is shared among them.
    pub(crate) workers: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// Publish an event; having no subscriber is fine.
    pub(crate) fn emit(&self, event: ConsumerEvent) {
        let _ = self.events.send(event);
    }

    /// A gap, with what the policy says to do about it: logged, counted and published.
    pub(crate) fn report_gap(
        &self,
        shard_id: &str,
        kind: crate::events::GapKind,
        lost: crate::events::LostRange,
    ) -> crate::events::Gap {
        let action = match self.config.gap_policy {
            crate::config::GapPolicy::Fail => crate::events::GapAction::Stopped,
            crate::config::GapPolicy::Continue => crate::events::GapAction::Continued,
        };
        let gap = crate::events::Gap {
            shard_id: shard_id.to_owned(),
            kind,
            action,
            lost,
        };
        tracing::error!(shard = shard_id, %gap, ?action, "gap: records were lost before they could be read");
        self.metrics.gaps.add(
            1,
            &[opentelemetry::KeyValue::new("kind", format!("{kind:?}"))],
        );
        self.board.update_meta(|m| m.gaps.push(gap.clone()));
        self.emit(ConsumerEvent::Gap(gap.clone()));
        gap
    }

    /// The wait after an empty page: `idle_poll_interval`, stretched when this many workers
    /// polling at that pace would exceed `max_idle_polls_per_second` together.
    pub(crate) fn idle_delay(&self) -> Duration {
        let workers = self.workers.load(std::sync::atomic::Ordering::Relaxed);
        let budget = self.config.max_idle_polls_per_second.max(1);
        let share = Duration::from_secs_f64(workers as f64 / f64::from(budget));
        self.config.idle_poll_interval.max(share)
    }
}

/// Counts a shard worker in [`Shared::workers`] for as long as it lives.
pub(crate) struct WorkerCount(Arc<Shared>);

impl WorkerCount {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        shared
            .workers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for WorkerCount {
    fn drop(&mut self) {
        self.0
            .workers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How the consumer ended, written by the coordinator before it stops.
pub(crate) type Outcome = Arc<Mutex<Option<Error>>>;

/// Why a `call` got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    /// The actor did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The actor stopped (or was never there) before answering.
    #[error("the actor stopped before answering")]
    Stopped,
}

/// `call` with a timeout.
pub(crate) async fn call<M, T>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Result<T, CallError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(msg, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
        Ok(ractor::rpc::CallResult::Timeout) => Err(CallError::Timeout(timeout)),
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(CallError::Stopped),
    }
}

/// Where a shard worker leaves its [`WorkerExit`] before it stops. The coordinator holds the
/// other end: a supervision event can overtake any message sent before the stop, but the slot is
/// written first.
pub(crate) type ExitSlot = Arc<Mutex<Option<WorkerExit>>>;

/// Why a shard worker stopped.
#[derive(Debug)]
pub(crate) enum WorkerExit {
    /// Read to its end, `on_shard_end` returned and the end is checkpointed. `lossy`: the end
    /// was forced by a gap (the shard vanished, or nothing of it could be read), so the first
    /// records of its children may be lost too.
    Ended { lossy: bool },
    /// A gap, and the policy says stop (the gap event was emitted).
    Gap(Box<crate::events::Gap>),
    /// Drained for shutdown.
    Drained,
    /// Its lease was lost; the handler was told.
    LeaseLost,
    /// Retries are exhausted and no failure sink is configured: quarantine at once.
    Quarantine(crate::delivery::failure::HandlerFailure),
    /// A failure to restart from the checkpoint.
    Failed(WorkerFailure),
}

/// What failed in a shard worker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerFailure {
    /// The handler failed (an error, a panic or a timeout).
    #[error("{0}")]
    Handler(#[from] crate::delivery::failure::HandlerFailure),
    /// A stream call failed in a way retrying in place cannot fix.
    #[error("{op} failed: {error}")]
    Source {
        op: &'static str,
        error: crate::error::SourceError,
    },
    /// The checkpoint could not be written.
    #[error("checkpoint: {0}")]
    Checkpoint(crate::error::CheckpointError),
    /// Another actor of the consumer did not answer.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The worker's own actors broke down.
    #[error("{0}")]
    Runtime(&'static str),
}
