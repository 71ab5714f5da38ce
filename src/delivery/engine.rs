//! One lane's delivery of a batch: calls the handler, and on failure retries, bisects, honours
//! partial failures and record age, and finally hands records to the failure sink.
//!
//! Records of a lane are always finished in order: the outcome reports how many leading records
//! of the input were finished (acknowledged by the handler, or accepted by the sink).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;

use super::failure::{HandlerFailure, Hook};
use super::{DeliveryFailure, FailureReason, FailureSink, RetryPolicy};
use crate::backoff::{Backoff, TRANSIENT_ATTEMPTS};
use crate::events::ConsumerEvent;
use crate::handler::{Batch, DynHandler, HandlerFactory, ShardInfo};
use crate::record::{SequenceNumber, StreamRecord};
use crate::status::StatusBoard;
use crate::telemetry::Metrics;

/// How often a lane waiting for its lease's renewal looks again.
const LEASE_CHECK_EVERY: Duration = Duration::from_millis(50);

/// Everything one lane needs; owned by the lane's task.
pub(crate) struct Lane {
    pub(crate) shard: Arc<ShardInfo>,
    pub(crate) factory: HandlerFactory,
    pub(crate) handler: Box<dyn DynHandler>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) sink: Option<Arc<dyn FailureSink>>,
    pub(crate) timeout: Duration,
    pub(crate) wall_clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    pub(crate) emit: Arc<dyn Fn(ConsumerEvent) + Send + Sync>,
    pub(crate) index: usize,
    pub(crate) board: Arc<StatusBoard>,
    pub(crate) metrics: Metrics,
    /// Set when the shard's lease was lost: no further handler call may start.
    pub(crate) abandoned: Arc<std::sync::atomic::AtomicBool>,
    /// Lease mode: a handler call starts only while the lease is valid by this process's own
    /// clocks (a worker woken from a pause waits for its renewal, or for the loss).
    pub(crate) lease: Option<crate::lease::guard::LeaseGuard>,
}

/// Why a lane cannot go on.
#[derive(Debug, Clone)]
pub(crate) enum Fatal {
    /// Restart the shard worker from its checkpoint (no retry policy: the issue-2 default).
    Restart(HandlerFailure),
    /// Retries are exhausted and there is no failure sink: stop the shard and report it.
    Quarantine(HandlerFailure),
}

/// The result of delivering one input.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Leading records of the input that are finished.
    pub(crate) finished: usize,
    pub(crate) fatal: Option<Fatal>,
}

struct CallFailure {
    error: HandlerFailure,
    failed_at: Option<SequenceNumber>,
    /// The handler may be in a broken state (panic, cancelled by timeout): replace it.
    replace: bool,
}

impl Lane {
    async fn call(&mut self, records: Arc<Vec<StreamRecord>>) -> Result<(), CallFailure> {
        let (count, bytes) = (
            records.len() as u64,
            records.iter().map(|r| r.size_bytes()).sum::<u64>(),
        );
        let Some(batch) = Batch::from_ordered(self.shard.clone(), records) else {
            return Ok(());
        };
        let started = crate::rt::Instant::now();
        let (shard_id, parent, lane) = (
            &self.shard.shard_id,
            self.shard.parent_shard_id.as_ref(),
            self.index,
        );
        self.board
            .update(shard_id, parent, |e| e.calls.insert(lane, started));
        let span = tracing::debug_span!(
            "handle",
            stream = %self.shard.stream_arn,
            shard = %self.shard.shard_id,
            sequence_number = %batch.last_sequence_number().map(|s| s.as_str()).unwrap_or_default(),
            records = count,
            lane = lane,
        );
        let call = AssertUnwindSafe(self.handler.handle(batch)).catch_unwind();
        let result =
            tracing::Instrument::instrument(crate::rt::timeout(self.timeout, call), span).await;
        let ok = matches!(result, Ok(Ok(Ok(()))));
        self.board.update(shard_id, parent, |e| {
            e.calls.remove(&lane);
            if ok {
                e.records += count;
            }
        });
        let outcome = opentelemetry::KeyValue::new("outcome", if ok { "ok" } else { "error" });
        self.metrics
            .handler_duration
            .record(started.elapsed().as_secs_f64(), &[outcome]);
        if ok {
            self.metrics.batches.add(1, &[]);
            self.metrics.records.add(count, &[]);
            self.metrics.bytes.add(bytes, &[]);
        }
        if !ok {
            let outcome = match &result {
                Ok(Ok(_)) => "error",
                Ok(Err(_)) => "panic",
                Err(_) => "timeout",
            };
            self.metrics
                .handler_failures
                .add(1, &[opentelemetry::KeyValue::new("outcome", outcome)]);
        }
        match result {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(CallFailure {
                failed_at: e.failed_sequence_number().cloned(),
                error: HandlerFailure::Returned {
                    hook: Hook::Handle,
                    error: Arc::new(e),
                },
                replace: false,
            }),
            Ok(Err(panic)) => Err(CallFailure {
                error: HandlerFailure::panicked(Hook::Handle, panic),
                failed_at: None,
                replace: true,
            }),
            Err(_) => Err(CallFailure {
                error: HandlerFailure::TimedOut {
                    hook: Hook::Handle,
                    timeout: self.timeout,
                },
                failed_at: None,
                replace: true,
            }),
        }
    }

    /// Whether a handler call may start: not once the lease is lost, and only while it is valid.
    fn may_call(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        // Owned parts: the lane itself (its handler) is not `Sync`, so it cannot be held across
        // the wait.
        let (abandoned, lease, clock) = (
            self.abandoned.clone(),
            self.lease.clone(),
            self.wall_clock.clone(),
        );
        async move {
            if abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            let Some(lease) = lease else {
                return true;
            };
            let valid = lease.wait_valid(clock.as_ref(), LEASE_CHECK_EVERY).await;
            valid && !abandoned.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A fresh handler after a panic or timeout, started like the first.
    async fn replace_handler(&mut self) -> Result<(), HandlerFailure> {
        self.handler = (self.factory)(&self.shard);
        let hook = Hook::OnShardStart;
        match crate::rt::timeout(self.timeout, self.handler.on_shard_start(&self.shard)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(HandlerFailure::Returned {
                hook,
                error: Arc::new(e),
            }),
            Err(_) => Err(HandlerFailure::TimedOut {
                hook,
                timeout: self.timeout,
            }),
        }
    }

    fn oldest_age(&self, records: &[StreamRecord]) -> Option<Duration> {
        let now = (self.wall_clock)();
        records.iter().filter_map(|r| r.age_at(now)).max()
    }

    /// Hand records to the sink until it accepts them (it may be briefly unavailable).
    async fn give_up(
        &mut self,
        records: Vec<StreamRecord>,
        reason: FailureReason,
        error: HandlerFailure,
    ) -> Result<(), Fatal> {
        let Some(sink) = self.sink.clone() else {
            return Err(Fatal::Quarantine(HandlerFailure::NoFailureSink {
                cause: Box::new(error),
                reason,
            }));
        };
        let failure = DeliveryFailure {
            stream_arn: self.shard.stream_arn.clone(),
            shard_id: self.shard.shard_id.clone(),
            records,
            reason,
            // The sink stores text: what failed, for whoever reads the dead letters.
            error: error.to_string(),
        };
        let mut retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
            .limited(TRANSIENT_ATTEMPTS);
        loop {
            let e = match sink.send(failure.clone()).await {
                Ok(()) => break,
                Err(e) => e,
            };
            match retry.next_wait() {
                Some(wait) => {
                    tracing::warn!(shard = %self.shard.shard_id, error = %e, "failure sink refused; retrying");
                    crate::rt::sleep(wait).await;
                }
                None => return Err(Fatal::Restart(HandlerFailure::SinkFailing(Arc::from(e)))),
            }
        }
        self.metrics
            .records_to_failure_sink
            .add(failure.records.len() as u64, &[]);
        tracing::warn!(
            shard = %self.shard.shard_id,
            records = failure.records.len(),
            reason = ?failure.reason,
            "records sent to the failure sink"
        );
        (self.emit)(ConsumerEvent::SentToFailureSink {
            shard_id: failure.shard_id.clone(),
            first_sequence_number: failure.first_sequence_number().cloned(),
            last_sequence_number: failure.last_sequence_number().cloned(),
            records: failure.records.len(),
            reason: failure.reason.clone(),
        });
        Ok(())
    }

    /// Deliver `records` (ascending, one shard, this lane's keys).
    pub(crate) async fn deliver(&mut self, records: Vec<StreamRecord>) -> Outcome {
        let mut finished = 0;
        // Work items in order; bisection pushes halves to the front.
        let mut queue: VecDeque<Arc<Vec<StreamRecord>>> = VecDeque::from([Arc::new(records)]);
        while let Some(mut batch) = queue.pop_front() {
            let mut attempts = 0u32;
            loop {
                if !self.may_call().await {
                    return Outcome {
                        finished,
                        fatal: None,
                    };
                }
                attempts += 1;
                let failure = match self.call(batch.clone()).await {
                    Ok(()) => {
                        finished += batch.len();
                        break;
                    }
                    Err(f) => f,
                };
                // A partial failure: the records before the failed one are done.
                let prefix = failure
                    .failed_at
                    .as_ref()
                    .and_then(|at| batch.iter().position(|r| r.sequence_number() == at))
                    .unwrap_or(0);
                finished += prefix;
                if failure.replace {
                    if let Err(e) = self.replace_handler().await {
                        return Outcome {
                            finished,
                            fatal: Some(Fatal::Restart(e)),
                        };
                    }
                }
                let Some(policy) = self.retry.clone() else {
                    return Outcome {
                        finished,
                        fatal: Some(Fatal::Restart(failure.error)),
                    };
                };
                if prefix > 0 {
                    batch = Arc::new(batch[prefix..].to_vec());
                }
                if policy.bisect_on_error && failure.failed_at.is_none() && batch.len() > 1 {
                    let mid = batch.len() / 2;
                    queue.push_front(Arc::new(batch[mid..].to_vec()));
                    queue.push_front(Arc::new(batch[..mid].to_vec()));
                    break;
                }
                let too_old = policy
                    .max_record_age
                    .and_then(|max| self.oldest_age(&batch).filter(|age| *age > max));
                if attempts >= policy.max_attempts || too_old.is_some() {
                    let n = batch.len();
                    let reason = match too_old {
                        Some(age) => FailureReason::RecordTooOld { age },
                        None => FailureReason::RetriesExhausted { attempts },
                    };
                    let records = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
                    if let Err(fatal) = self.give_up(records, reason, failure.error).await {
                        return Outcome {
                            finished,
                            fatal: Some(fatal),
                        };
                    }
                    finished += n;
                    break;
                }
                crate::rt::sleep(Backoff::nth(
                    policy.initial_backoff,
                    policy.max_backoff,
                    attempts - 1,
                ))
                .await;
            }
        }
        Outcome {
            finished,
            fatal: None,
        }
    }
}
