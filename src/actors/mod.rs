//! The actor tree. ractor stays inside this module; the rest of the crate sees plain types.
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

/// `call` with a timeout, flattened to a string error (the caller decides how to fail).
pub(crate) async fn call<M, T>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Result<T, String>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(msg, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
        Ok(ractor::rpc::CallResult::Timeout) => Err(format!("no answer within {timeout:?}")),
        Ok(ractor::rpc::CallResult::SenderError) => {
            Err("the actor stopped before answering".into())
        }
        Err(e) => Err(format!("the actor is gone: {e}")),
    }
}

/// Stop reasons a shard worker gives, so its supervisor knows the exit was deliberate (the
/// supervision event can overtake any message sent before the stop).
pub(crate) mod exit {
    /// The shard was read to its end and the end is checkpointed.
    pub(crate) const ENDED: &str = "shard ended";
    /// A gap stopped the shard (the coordinator receives the details as a message).
    pub(crate) const GAP: &str = "gap";
    /// Drained for shutdown.
    pub(crate) const DRAINED: &str = "drained";
    /// Retries are exhausted and no failure sink is configured: quarantine at once. The error
    /// follows this prefix.
    pub(crate) const QUARANTINE: &str = "quarantine: ";
    /// The shard's lease was lost; the handler was told.
    pub(crate) const LEASE_LOST: &str = "lease lost";
}
