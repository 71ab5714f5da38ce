//! Reads one shard: fetches pages on its own schedule, hands ordered batches to the shard's
//! delivery stage (at most `max_in_flight_batches` unacknowledged), forwards acknowledgements
//! to the checkpointer, and recovers from expired iterators, throttling and transient errors.
//!
//! The worker is a small state machine ([`Phase`]). Calls to the stream run in a task of their
//! own and report back as a message, so an acknowledgement, a handler failure, a lost lease or
//! a shutdown is never queued behind a slow or hung GetRecords.
//!
//! It always exits by writing a [`WorkerExit`] into its exit slot before stopping; a stop
//! without one, or a crash, is a failure the coordinator answers with a restart from the
//! checkpoint.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::rt::Instant;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::checkpointer::CheckpointerMsg;
use super::handler_actor::{may_take_more, HandlerActor, HandlerArgs, HandlerMsg};
use super::{call, ExitSlot, Shared, WorkerCount, WorkerExit, WorkerFailure};
use crate::backoff::Backoff;
use crate::checkpoint::ShardCheckpoint;
use crate::delivery::engine::Fatal;
use crate::delivery::failure::HandlerFailure;
use crate::error::{CheckpointErrorKind, SourceError, SourceErrorKind};
use crate::events::{ConsumerEvent, Gap, GapAction, GapKind, LostRange};
use crate::handler::ShardInfo;
use crate::lease::guard::LeaseGuard;
use crate::position::ShardPlan;
use crate::record::{SequenceNumber, StreamRecord};
use crate::source::{IteratorPosition, RecordsPage};
use crate::status::ShardState;

/// How often a TRIM_HORIZON iterator may answer "trimmed" before nothing is taken to be left:
/// DynamoDB Local does so for every position of a shard aged past the retention, while on the
/// service the horizon can move between GetShardIterator and GetRecords.
const UNREADABLE_AFTER: u32 = 3;

/// A page this large was cut by the service's 1 MB limit: more records are waiting.
const FULL_PAGE_BYTES: u64 = 900 * 1024;

pub(crate) struct ShardWorker;

pub(crate) struct WorkerArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) shard: Arc<ShardInfo>,
    pub(crate) plan: ShardPlan,
    /// The shard was closed when the worker started (it will end once read).
    pub(crate) closed: bool,
    /// A `LATEST` iterator obtained at the first start, before `spawn()` returned.
    pub(crate) initial_iterator: Option<(String, Instant)>,
    pub(crate) checkpointer: ActorRef<CheckpointerMsg>,
    /// Where the worker leaves its reason for stopping.
    pub(crate) exit: ExitSlot,
    /// Lease mode: the validity of this shard's lease, checked before every handler call.
    pub(crate) lease: Option<LeaseGuard>,
}

pub(crate) enum WorkerMsg {
    /// Time to read the next page.
    Poll,
    /// The stream calls started by a `Poll` finished.
    Fetched(Fetched),
    /// The delivery stage finished every record up to `through`, completing `pages` pages.
    Acked {
        through: SequenceNumber,
        pages: usize,
    },
    /// The delivery stage cannot go on.
    HandlerFailed(Fatal),
    /// Stop taking records, let in-flight batches finish, then stop.
    Drain(RpcReplyPort<()>),
    /// The lease is gone: stop reading, tell the handler, stop.
    LeaseLost,
}

/// The outcome of one fetch: a GetShardIterator when needed, then one GetRecords.
pub(crate) struct Fetched {
    /// The iterator the GetRecords used (kept for a retry after throttling).
    iterator: Option<String>,
    /// Where a fresh iterator was opened, when one was.
    opened: Option<IteratorPosition>,
    /// When the GetRecords was sent (when the GetShardIterator failed: when that was).
    started: Instant,
    result: Result<RecordsPage, (&'static str, SourceError)>,
}

/// What the worker is doing.
enum Phase {
    /// Reading pages.
    Reading,
    /// A page said the shard ended. An end is confirmed from a fresh iterator right after the
    /// last record read before it is believed: DynamoDB Local answers a GetRecords that races a
    /// write and a rollover with a page that lacks its last records and has no next iterator.
    ConfirmingEnd,
    /// Read to its end (`lossy`: the end was forced by a gap, so its children's first records
    /// may be lost too); waiting for in-flight batches, then `on_shard_end` and the end
    /// checkpoint.
    Ending { lossy: bool },
    /// Shutdown asked: no more reads; waiting for in-flight batches.
    Draining(Option<RpcReplyPort<()>>),
    /// Exiting; every further message is ignored.
    Done,
}

/// A gap found and not yet reported: it is reported, with the oldest retained record as its
/// upper bound, once the shard was reopened at `TRIM_HORIZON` and returned its first page.
struct PendingGap {
    kind: GapKind,
    after: Option<SequenceNumber>,
}

pub(crate) struct WorkerState {
    /// Counts this worker in the idle-poll budget until it is dropped.
    _counted: WorkerCount,
    shared: Arc<Shared>,
    shard: Arc<ShardInfo>,
    plan: ShardPlan,
    closed: bool,
    handler_ref: Option<ActorRef<HandlerMsg>>,
    checkpointer: ActorRef<CheckpointerMsg>,
    exit: ExitSlot,
    lease: Option<LeaseGuard>,
    phase: Phase,
    /// The iterator to use next and when it was issued.
    iterator: Option<(String, Instant)>,
    /// Whether an iterator was ever obtained (after that, `LATEST` must not be used again).
    opened: bool,
    /// Open the next iterator at `TRIM_HORIZON` (a gap is being measured).
    reopen_at_trim_horizon: bool,
    /// The current iterator chain was opened at `TRIM_HORIZON` and no record was read since.
    fresh_at_trim_horizon: bool,
    /// Consecutive "trimmed" answers to a fresh `TRIM_HORIZON` iterator.
    trim_horizon_failures: u32,
    pending_gap: Option<PendingGap>,
    /// The shard's first records may have been trimmed before it was read (see
    /// [`GapKind::TrimmedStart`]); reported with the first page.
    start_may_be_trimmed: bool,
    /// A gap of an unreadable open shard was reported and nothing was read since: do not report
    /// it again on every attempt.
    unreadable_reported: bool,
    /// The last record handed to the handler (or skipped): reopening resumes after it.
    last_read: Option<SequenceNumber>,
    /// Records of each page handed over and not yet acknowledged, oldest first.
    in_flight: VecDeque<usize>,
    poll_timer: Option<JoinHandle<Result<(), ractor::MessagingErr<WorkerMsg>>>>,
    fetch: Option<crate::rt::JoinHandle<()>>,
    last_poll: Option<Instant>,
    /// Waits between failed stream calls; reset by a page.
    retry: Backoff,
    /// The last page said the shard is behind: poll again without the polite pace (I7).
    catching_up: bool,
    /// The wait between catch-up polls since throttling: doubles on every throttle, halves with
    /// every page that follows, so a throttled shard climbs back gradually.
    throttle_pace: Duration,
}

/// What to do after a page or an error.
enum Step {
    /// Read again after this delay (pacing is applied on top).
    Again(Duration),
    /// The end is confirmed.
    End { lossy: bool },
    /// A gap stopped the shard (policy `Fail`).
    Stop(Gap),
}

impl WorkerState {
    fn in_flight_records(&self) -> usize {
        self.in_flight.iter().sum()
    }

    fn reading(&self) -> bool {
        matches!(self.phase, Phase::Reading | Phase::ConfirmingEnd)
    }

    fn schedule_poll(&mut self, myself: &ActorRef<WorkerMsg>, delay: Duration) {
        if self.poll_timer.is_some() || self.fetch.is_some() || !self.reading() {
            return;
        }
        // Pace (I7): a shard that is behind reads again after `catch_up_poll_interval` (at once
        // by default), slowed only by recent throttling; otherwise never two GetRecords closer
        // than `min_poll_interval`.
        let cfg = &self.shared.config;
        let spacing = if self.catching_up {
            cfg.catch_up_poll_interval.max(self.throttle_pace)
        } else {
            cfg.min_poll_interval
        };
        let paced = match self.last_poll {
            Some(t) => delay.max((t + spacing).saturating_duration_since(Instant::now())),
            None => delay,
        };
        if paced.is_zero() {
            // No timer (and no task) for a poll that is due now.
            let _ = myself.cast(WorkerMsg::Poll);
        } else {
            self.poll_timer = Some(myself.send_after(paced, || WorkerMsg::Poll));
        }
    }

    fn report_gap(&self, kind: GapKind, lost: LostRange) -> Gap {
        self.shared.report_gap(&self.shard.shard_id, kind, lost)
    }

    /// Where to (re)open the shard.
    fn open_position(&self) -> IteratorPosition {
        if self.reopen_at_trim_horizon {
            return IteratorPosition::TrimHorizon;
        }
        match (&self.last_read, self.opened) {
            (Some(seq), _) => IteratorPosition::AfterSequenceNumber(seq.clone()),
            (None, false) => self.plan.position.clone(),
            (None, true) => self.plan.reopen_position(),
        }
    }

    fn retry_delay(&mut self) -> Duration {
        // A shard worker retries transient failures for as long as they last (the watchdog
        // reports a stalled shard meanwhile).
        self.retry
            .next_wait()
            .unwrap_or(self.shared.config.max_retry_backoff)
    }

    /// Start a fetch in a task of its own (a GetShardIterator when needed, then a GetRecords);
    /// its result comes back as [`WorkerMsg::Fetched`].
    fn start_fetch(&mut self, myself: &ActorRef<WorkerMsg>) {
        let cfg = &self.shared.config;
        if !may_take_more(cfg, self.in_flight.len(), self.in_flight_records()) {
            // An acknowledgement schedules the next poll.
            return;
        }
        // A held iterator may have aged while the handler lagged: replace it from the last read
        // position before it can expire (I6).
        if let Some((_, issued)) = &self.iterator {
            if issued.elapsed() >= cfg.iterator_refresh_age {
                tracing::debug!(shard = %self.shard.shard_id, "refreshing an aging iterator");
                self.shared
                    .metrics
                    .iterator_refreshes
                    .add(1, &[opentelemetry::KeyValue::new("reason", "age")]);
                self.iterator = None;
            }
        }
        let open = match self.iterator.take() {
            Some((it, _)) => Err(it),
            None => Ok(self.open_position()),
        };
        self.last_poll = Some(Instant::now());
        let api = self.shared.api.clone();
        let metrics = self.shared.metrics.clone();
        let (stream_arn, shard_id) = (self.shared.stream_arn.clone(), self.shard.shard_id.clone());
        let limit = cfg.max_records_per_call;
        let span = tracing::debug_span!(
            "poll",
            stream = %stream_arn,
            shard = %shard_id,
            sequence_number = %self.last_read.as_ref().map(|s| s.as_str()).unwrap_or_default(),
        );
        let worker = myself.clone();
        let task = async move {
            let started = Instant::now();
            let (iterator, opened) = match open {
                Err(iterator) => (iterator, None),
                Ok(position) => {
                    match api
                        .get_shard_iterator(stream_arn, shard_id, position.clone())
                        .await
                    {
                        Ok(iterator) => (iterator, Some(position)),
                        Err(e) => {
                            let _ = worker.cast(WorkerMsg::Fetched(Fetched {
                                iterator: None,
                                opened: None,
                                started,
                                result: Err(("GetShardIterator", e)),
                            }));
                            return;
                        }
                    }
                }
            };
            let started = Instant::now();
            let result = api.get_records(iterator.clone(), Some(limit)).await;
            metrics
                .get_records_duration
                .record(started.elapsed().as_secs_f64(), &[]);
            let _ = worker.cast(WorkerMsg::Fetched(Fetched {
                iterator: Some(iterator),
                opened,
                started,
                result: result.map_err(|e| ("GetRecords", e)),
            }));
        };
        self.fetch = Some(crate::rt::spawn(tracing::Instrument::instrument(
            task, span,
        )));
    }

    fn stop_reading(&mut self) {
        if let Some(t) = self.poll_timer.take() {
            t.abort();
        }
        if let Some(f) = self.fetch.take() {
            f.abort();
        }
    }

    async fn on_fetched(&mut self, fetched: Fetched) -> Result<Step, WorkerFailure> {
        if let Some(position) = &fetched.opened {
            self.opened = true;
            self.fresh_at_trim_horizon = *position == IteratorPosition::TrimHorizon;
            if self.fresh_at_trim_horizon {
                self.reopen_at_trim_horizon = false;
            }
        }
        match fetched.result {
            Ok(page) => {
                if let Some(first) = page.records.first() {
                    self.anchor(first.sequence_number()).await?;
                }
                self.on_page(page, fetched.started)
            }
            Err((op, e)) => self.on_source_error(op, e, fetched.iterator),
        }
    }

    /// The first record read from the shard's horizon, nothing read before: reading begins
    /// here. It is made durable before anything is delivered, and every re-open (an expired
    /// iterator, a restart, another worker taking the lease) reads from it, so whatever the
    /// horizon trims meanwhile is reported instead of skipped.
    async fn anchor(&mut self, first: &SequenceNumber) -> Result<(), WorkerFailure> {
        let unanchored = self.last_read.is_none()
            && self.fresh_at_trim_horizon
            && self.plan.position == IteratorPosition::TrimHorizon
            && self.plan.skip_before.is_none();
        if !unanchored {
            return Ok(());
        }
        let updates = vec![(
            self.shard.shard_id.clone(),
            ShardCheckpoint::Discovered {
                from: Some(first.clone()),
                since_ms: crate::record::system_time_to_millis(self.shared.api.wall_clock()),
            },
        )];
        let timeout = self.shared.config.handler_timeout + Duration::from_secs(5);
        call(
            &self.checkpointer,
            |reply| CheckpointerMsg::Save { updates, reply },
            timeout,
        )
        .await?
        .map_err(WorkerFailure::Checkpoint)?;
        self.plan.position = IteratorPosition::AtSequenceNumber(first.clone());
        Ok(())
    }

    fn on_page(&mut self, page: RecordsPage, sent: Instant) -> Result<Step, WorkerFailure> {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        self.retry.reset();
        self.trim_horizon_failures = 0;
        let first_retained = page.records.first().map(|r| r.sequence_number().clone());

        // A gap is measured now: the iterator was reopened at TRIM_HORIZON, so the first record
        // (if any) is the oldest one retained.
        if self.fresh_at_trim_horizon {
            let gap = match self.pending_gap.take() {
                Some(p) => Some((p.kind, p.after)),
                None if self.start_may_be_trimmed => Some((GapKind::TrimmedStart, None)),
                None => None,
            };
            self.start_may_be_trimmed = false;
            if let Some((kind, after)) = gap {
                let gap = self.report_gap(
                    kind,
                    LostRange {
                        after,
                        before: first_retained.clone(),
                    },
                );
                if gap.action == GapAction::Stopped {
                    return Ok(Step::Stop(gap));
                }
            }
        }
        if !page.records.is_empty() {
            self.unreadable_reported = false;
        }

        let now = Instant::now();
        let times = (
            page.records
                .first()
                .and_then(|r| r.approximate_creation_time()),
            page.records
                .last()
                .and_then(|r| r.approximate_creation_time()),
        );
        let open_and_empty = page.records.is_empty() && page.next_shard_iterator.is_some();
        let delivering = !page.records.is_empty();
        let wall = self.shared.api.wall_clock();
        let page_len = page.records.len();
        // Full: as many records as asked for, or close to the 1 MB a page holds at most.
        let bytes: u64 = page.records.iter().map(|r| r.size_bytes()).sum();
        let full = page_len >= cfg.max_records_per_call as usize || bytes >= FULL_PAGE_BYTES;
        self.shared.metrics.records_polled.add(page_len as u64, &[]);
        let new_records = self.deliver(page.records)?;
        let in_flight_records = self.in_flight_records();
        let in_flight_pages = self.in_flight.len();
        self.shared.board.update(
            &self.shard.shard_id,
            self.shard.parent_shard_id.as_ref(),
            |e| {
                e.last_poll_ok = Some(now);
                e.caught_up = open_and_empty;
                if open_and_empty {
                    e.empty_poll_started = Some(sent);
                }
                if delivering && new_records {
                    e.unacked_pages.push_back(times);
                }
                e.in_flight_records = in_flight_records;
                e.in_flight_pages = in_flight_pages;
                e.state = if open_and_empty && e.unacked_pages.is_empty() {
                    ShardState::CaughtUp
                } else {
                    ShardState::Reading
                };
                e.lag_cached = e.lag(wall);
            },
        );

        let Some(next) = page.next_shard_iterator else {
            // Every apparent end is confirmed from a fresh iterator after the last record read;
            // a confirmation that still finds records is confirmed again.
            self.iterator = None;
            return Ok(match self.phase {
                Phase::ConfirmingEnd if !new_records => Step::End { lossy: false },
                _ => {
                    self.phase = Phase::ConfirmingEnd;
                    Step::Again(Duration::ZERO)
                }
            });
        };
        self.iterator = Some((next, now));
        self.phase = Phase::Reading;
        let old = times
            .1
            .and_then(|t| Some((wall.duration_since(t).ok()?, rounding(t))))
            .is_some_and(|(age, rounding)| age > cfg.catch_up_lag + rounding);
        self.catching_up = full || old;
        // Climb back after throttling: half the wait with every page.
        self.throttle_pace /= 2;
        if self.throttle_pace < Duration::from_millis(1) {
            self.throttle_pace = Duration::ZERO;
        }
        Ok(if self.catching_up {
            Step::Again(Duration::ZERO)
        } else if page_len > 0 {
            Step::Again(cfg.min_poll_interval)
        } else {
            Step::Again(self.shared.idle_delay())
        })
    }

    /// Hand a page's new records to the delivery stage; returns whether there were any.
    fn deliver(&mut self, records: Vec<StreamRecord>) -> Result<bool, WorkerFailure> {
        let Some(through) = records.last().map(|r| r.sequence_number().clone()) else {
            return Ok(false);
        };
        let last_read = self.last_read.clone();
        if last_read.as_ref().is_some_and(|l| &through <= l) {
            // A source that repeats itself: nothing new (I1).
            return Ok(false);
        }
        let skip_before = self.plan.skip_before;
        let mut kept = Vec::with_capacity(records.len());
        let mut newest = last_read;
        for r in records {
            // Strictly increasing per shard (I1), even if a source repeats itself.
            if newest.as_ref().is_some_and(|n| r.sequence_number() <= n) {
                continue;
            }
            newest = Some(r.sequence_number().clone());
            if !predates(r.approximate_creation_time(), skip_before) {
                kept.push(r);
            }
        }
        self.last_read = Some(through.clone());
        self.fresh_at_trim_horizon = false;
        self.in_flight.push_back(kept.len());
        let handler = self
            .handler_ref
            .as_ref()
            .ok_or(WorkerFailure::Runtime("the delivery stage is missing"))?;
        handler
            .cast(HandlerMsg::Deliver {
                records: kept,
                through,
            })
            .map_err(|_| WorkerFailure::Runtime("the delivery stage stopped"))?;
        Ok(true)
    }

    fn on_source_error(
        &mut self,
        op: &'static str,
        e: SourceError,
        iterator: Option<String>,
    ) -> Result<Step, WorkerFailure> {
        let shard = self.shard.shard_id.clone();
        self.shared.metrics.source_error(op, e.kind());
        let message = e.to_string();
        self.shared
            .board
            .update(&shard, self.shard.parent_shard_id.as_ref(), |entry| {
                entry.last_error = Some(message)
            });
        match e.kind() {
            SourceErrorKind::ExpiredIterator => {
                tracing::info!(%shard, "{op}: iterator expired; reopening after the last read record");
                self.shared
                    .metrics
                    .iterator_refreshes
                    .add(1, &[opentelemetry::KeyValue::new("reason", "expired")]);
                Ok(Step::Again(Duration::ZERO))
            }
            SourceErrorKind::Throttled | SourceErrorKind::Retryable => {
                // The iterator is still good: retry with it.
                self.iterator = iterator.map(|it| (it, Instant::now()));
                if e.kind() == SourceErrorKind::Throttled {
                    let cfg = &self.shared.config;
                    self.throttle_pace = (self.throttle_pace * 2)
                        .max(cfg.min_poll_interval)
                        .min(cfg.max_retry_backoff);
                }
                let wait = self.retry_delay();
                tracing::warn!(%shard, error = %e, retry_in = ?wait, attempt = self.retry.failures(), "{op} failed; backing off");
                Ok(Step::Again(wait))
            }
            SourceErrorKind::TrimmedData => self.on_trimmed(),
            SourceErrorKind::NotFound => {
                // The shard is gone: nothing more can be read from it.
                let gap = self.report_gap(
                    GapKind::VanishedShard,
                    LostRange {
                        after: self.last_read.clone(),
                        before: None,
                    },
                );
                Ok(match gap.action {
                    GapAction::Stopped => Step::Stop(gap),
                    // Its children may go on (the gap is reported, and theirs will be).
                    _ => Step::End { lossy: true },
                })
            }
            _ => Err(WorkerFailure::Source { op, error: e }),
        }
    }

    /// The position read from is older than the retention.
    fn on_trimmed(&mut self) -> Result<Step, WorkerFailure> {
        let at_horizon = self.fresh_at_trim_horizon || self.reopen_at_trim_horizon;
        if !at_horizon {
            // Records between the last one read and the horizon are lost: reopen at the horizon,
            // and report the gap with the oldest retained record once it is known.
            self.pending_gap.get_or_insert(PendingGap {
                kind: GapKind::TrimmedData,
                after: self.last_read.clone(),
            });
            self.reopen_at_trim_horizon = true;
            return Ok(Step::Again(Duration::ZERO));
        }
        // Even the oldest retained position answers "trimmed" (DynamoDB Local after aging; on
        // the service the horizon may just have moved): try a few times before believing it.
        self.trim_horizon_failures += 1;
        self.reopen_at_trim_horizon = true;
        if self.trim_horizon_failures < UNREADABLE_AFTER {
            return Ok(Step::Again(self.retry_delay()));
        }
        self.trim_horizon_failures = 0;
        let pending = self.pending_gap.take();
        if self.unreadable_reported && pending.is_none() {
            return Ok(Step::Again(self.shared.idle_delay()));
        }
        let (kind, after) = match pending {
            Some(p) => (p.kind, p.after),
            None if self.start_may_be_trimmed => (GapKind::TrimmedStart, None),
            None => (GapKind::TrimmedData, self.last_read.clone()),
        };
        self.start_may_be_trimmed = false;
        self.unreadable_reported = true;
        let gap = self.report_gap(
            kind,
            LostRange {
                after,
                before: None,
            },
        );
        Ok(match gap.action {
            GapAction::Stopped => Step::Stop(gap),
            // A closed shard has nothing left to read: its children may go on.
            _ if self.closed => Step::End { lossy: true },
            // An open one may take new records: keep trying it, slowly.
            _ => Step::Again(self.shared.idle_delay()),
        })
    }

    /// Record why the worker stops, then stop it.
    fn exit(&mut self, myself: &ActorRef<WorkerMsg>, exit: WorkerExit) {
        self.stop_reading();
        self.phase = Phase::Done;
        *self.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(exit);
        myself.stop(None);
    }

    async fn after_step(&mut self, myself: &ActorRef<WorkerMsg>, step: Step) {
        match step {
            Step::Again(delay) => self.schedule_poll(myself, delay),
            Step::End { lossy } => {
                self.phase = Phase::Ending { lossy };
                if self.in_flight.is_empty() {
                    self.finish(myself, lossy).await;
                }
            }
            Step::Stop(gap) => self.exit(myself, WorkerExit::Gap(Box::new(gap))),
        }
    }

    /// Every batch is acknowledged and the shard is read to its end: run `on_shard_end`, make
    /// the end durable, then exit so the coordinator can start the children (I2).
    async fn finish(&mut self, myself: &ActorRef<WorkerMsg>, lossy: bool) {
        let exit = match self.end_shard().await {
            Ok(()) => {
                tracing::info!(shard = %self.shard.shard_id, "shard ended");
                WorkerExit::Ended { lossy }
            }
            Err(WorkerFailure::Checkpoint(e)) if e.kind() == CheckpointErrorKind::LeaseLost => {
                WorkerExit::LeaseLost
            }
            Err(f) => WorkerExit::Failed(f),
        };
        self.exit(myself, exit);
    }

    async fn end_shard(&mut self) -> Result<(), WorkerFailure> {
        let timeout = self.shared.config.handler_timeout + Duration::from_secs(5);
        let handler = self
            .handler_ref
            .as_ref()
            .ok_or(WorkerFailure::Runtime("the delivery stage is missing"))?;
        call(handler, HandlerMsg::End, timeout)
            .await?
            .map_err(WorkerFailure::Handler)?;
        call(
            &self.checkpointer,
            |reply| CheckpointerMsg::Save {
                updates: vec![(self.shard.shard_id.clone(), ShardCheckpoint::Ended)],
                reply,
            },
            timeout,
        )
        .await?
        .map_err(WorkerFailure::Checkpoint)
    }

    async fn finish_drain(&mut self, myself: &ActorRef<WorkerMsg>) {
        if let Some(h) = &self.handler_ref {
            let _ = call(h, HandlerMsg::Shutdown, self.shared.config.handler_timeout).await;
        }
        if let Phase::Draining(reply) = &mut self.phase {
            if let Some(reply) = reply.take() {
                let _ = reply.send(());
            }
        }
        self.exit(myself, WorkerExit::Drained);
    }
}

/// How much older than its record a creation time may read: DynamoDB rounds it down to the
/// second, DynamoDB Local to the minute. Read from the time itself: a whole minute may be
/// rounded by a minute (a record of a second-rounding stream created at :00 then merely counts
/// as behind 59 s later).
fn rounding(t: SystemTime) -> Duration {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    match (since.subsec_nanos(), since.as_secs() % 60) {
        (0, 0) => Duration::from_secs(60),
        (0, _) => Duration::from_secs(1),
        _ => Duration::ZERO,
    }
}

/// Whether a record was created before a `LATEST` bookmark (records without a time are kept).
fn predates(created: Option<SystemTime>, bookmark: Option<SystemTime>) -> bool {
    matches!((created, bookmark), (Some(c), Some(b)) if c < b)
}

impl Actor for ShardWorker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WorkerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Resuming after a checkpoint: that record counts as read (the gap report and reopening
        // both start from it).
        let last_read = match &args.plan.position {
            IteratorPosition::AfterSequenceNumber(s) => Some(s.clone()),
            _ => None,
        };
        let opened = args.initial_iterator.is_some();
        Ok(WorkerState {
            _counted: WorkerCount::new(args.shared.clone()),
            start_may_be_trimmed: args.plan.start_may_be_trimmed,
            iterator: args.initial_iterator,
            opened,
            reopen_at_trim_horizon: false,
            fresh_at_trim_horizon: false,
            trim_horizon_failures: 0,
            pending_gap: None,
            unreadable_reported: false,
            closed: args.closed,
            retry: Backoff::for_config(&args.shared.config),
            shared: args.shared,
            shard: args.shard,
            plan: args.plan,
            handler_ref: None,
            checkpointer: args.checkpointer,
            exit: args.exit,
            lease: args.lease,
            phase: Phase::Reading,
            last_read,
            in_flight: VecDeque::new(),
            poll_timer: None,
            fetch: None,
            last_poll: None,
            catching_up: false,
            throttle_pace: Duration::ZERO,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (handler_ref, _) = Actor::spawn_linked(
            None,
            HandlerActor,
            HandlerArgs {
                shared: state.shared.clone(),
                shard: state.shard.clone(),
                worker: myself.clone(),
                lease: state.lease.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        let timeout = state.shared.config.handler_timeout + Duration::from_secs(5);
        let started = match call(&handler_ref, HandlerMsg::Start, timeout).await {
            Ok(r) => r.map_err(WorkerFailure::Handler),
            Err(e) => Err(WorkerFailure::Call(e)),
        };
        state.handler_ref = Some(handler_ref);
        if let Err(f) = started {
            state.exit(&myself, WorkerExit::Failed(f));
            return Ok(());
        }
        state.shared.board.update(
            &state.shard.shard_id,
            state.shard.parent_shard_id.as_ref(),
            |e| {
                e.state = ShardState::Reading;
                e.running_since = Some(Instant::now());
                e.unacked_pages.clear();
                e.in_flight_records = 0;
                e.in_flight_pages = 0;
                e.caught_up = false;
                e.empty_poll_started = None;
                e.calls.clear();
            },
        );
        state.shared.emit(ConsumerEvent::ShardStarted {
            shard_id: state.shard.shard_id.clone(),
            parent_shard_id: state.shard.parent_shard_id.clone(),
            position: state.plan.position.type_name().to_owned(),
            incarnation: state.shard.incarnation,
        });
        tracing::info!(shard = %state.shard.shard_id, position = state.plan.position.type_name(), incarnation = state.shard.incarnation, "shard started");
        let _ = myself.cast(WorkerMsg::Poll);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_reading();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if matches!(state.phase, Phase::Done) {
            return Ok(());
        }
        match msg {
            WorkerMsg::Poll => {
                state.poll_timer = None;
                if state.reading() && state.fetch.is_none() {
                    state.start_fetch(&myself);
                }
            }
            WorkerMsg::Fetched(fetched) => {
                state.fetch = None;
                // Pace from when the GetRecords was sent, not from when the fetch began: a
                // GetShardIterator before it must not bring two GetRecords closer (I7).
                state.last_poll = Some(fetched.started);
                if !state.reading() {
                    // Draining or ending: what was read is not handed over.
                    return Ok(());
                }
                match state.on_fetched(fetched).await {
                    Ok(step) => state.after_step(&myself, step).await,
                    Err(WorkerFailure::Checkpoint(e))
                        if e.kind() == CheckpointErrorKind::LeaseLost =>
                    {
                        state.exit(&myself, WorkerExit::LeaseLost)
                    }
                    Err(f) => state.exit(&myself, WorkerExit::Failed(f)),
                }
            }
            WorkerMsg::Acked { through, pages } => {
                for _ in 0..pages {
                    state.in_flight.pop_front();
                }
                let acked = through.clone();
                let wall = state.shared.api.wall_clock();
                let (records, in_flight_pages) = (state.in_flight_records(), state.in_flight.len());
                state.shared.board.update(
                    &state.shard.shard_id,
                    state.shard.parent_shard_id.as_ref(),
                    |e| {
                        for _ in 0..pages {
                            if let Some((_, last)) = e.unacked_pages.pop_front() {
                                e.newest_acked_time = last.or(e.newest_acked_time);
                            }
                        }
                        e.in_flight_records = records;
                        e.in_flight_pages = in_flight_pages;
                        e.checkpoint = Some(acked);
                        if e.caught_up && e.unacked_pages.is_empty() {
                            e.state = ShardState::CaughtUp;
                        }
                        e.lag_cached = e.lag(wall);
                    },
                );
                let _ = state.checkpointer.cast(CheckpointerMsg::Processed {
                    shard_id: state.shard.shard_id.clone(),
                    sequence_number: through,
                });
                match state.phase {
                    Phase::Draining(_) if state.in_flight.is_empty() => {
                        state.finish_drain(&myself).await
                    }
                    Phase::Ending { lossy } if state.in_flight.is_empty() => {
                        state.finish(&myself, lossy).await
                    }
                    _ => state.schedule_poll(&myself, Duration::ZERO),
                }
            }
            WorkerMsg::HandlerFailed(fatal) => {
                let exit = match fatal {
                    // Not a crash to restart from: the policy gave up and nothing may be skipped.
                    Fatal::Quarantine(e) => WorkerExit::Quarantine(e),
                    Fatal::Restart(e) => WorkerExit::Failed(WorkerFailure::Handler(e)),
                };
                state.exit(&myself, exit);
            }
            WorkerMsg::LeaseLost => {
                state.stop_reading();
                state.phase = Phase::Done;
                if let Some(h) = &state.handler_ref {
                    let timeout = state.shared.config.handler_timeout + Duration::from_secs(5);
                    let _ = call(h, HandlerMsg::LeaseLost, timeout).await;
                }
                state.exit(&myself, WorkerExit::LeaseLost);
            }
            WorkerMsg::Drain(reply) => {
                // A GetRecords in flight (perhaps hung) is abandoned: shutdown never waits for it.
                state.stop_reading();
                state.phase = Phase::Draining(Some(reply));
                if state.in_flight.is_empty() {
                    state.finish_drain(&myself).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The delivery stage only stops with its worker; on its own it stops by failing (a panic
        // in user code). Either way the batch in hand is not acknowledged: fail so the
        // coordinator restarts this shard from its checkpoint.
        if matches!(state.phase, Phase::Done) {
            return Ok(());
        }
        match evt {
            SupervisionEvent::ActorFailed(_, e) => state.exit(
                &myself,
                WorkerExit::Failed(WorkerFailure::Handler(HandlerFailure::Stage(Arc::from(e)))),
            ),
            SupervisionEvent::ActorTerminated(..) => state.exit(
                &myself,
                WorkerExit::Failed(WorkerFailure::Runtime(
                    "the delivery stage stopped unexpectedly",
                )),
            ),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times_are_as_coarse_as_they_look() {
        let at = |secs: u64, nanos: u32| SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        // DynamoDB Local: whole minutes.
        assert_eq!(rounding(at(1_796_218_740, 0)), Duration::from_secs(60));
        // DynamoDB: whole seconds.
        assert_eq!(rounding(at(1_796_218_741, 0)), Duration::from_secs(1));
        // The simulator: exact.
        assert_eq!(rounding(at(1_796_218_741, 5_000_000)), Duration::ZERO);
    }
}
