//! Reads one shard: polls GetRecords on its own schedule, hands ordered batches to the shard's
//! handler actor (at most `max_in_flight_batches` unacknowledged), forwards acknowledgements to
//! the checkpointer, and recovers from expired iterators, throttling and transient errors.
//!
//! Exits deliberately with a reason from [`exit`](super::exit); any other stop or a failure
//! is a crash the coordinator answers with a restart from the checkpoint.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::rt::Instant;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::checkpointer::CheckpointerMsg;
use super::coordinator::CoordinatorMsg;
use super::handler_actor::{may_take_more, HandlerActor, HandlerArgs, HandlerMsg};
use super::{call, exit, Shared, WorkerCount};
use crate::checkpoint::ShardCheckpoint;
use crate::config::{backoff, GapPolicy};
use crate::error::{SourceError, SourceErrorKind};
use crate::events::{ConsumerEvent, Gap, GapAction, GapKind};
use crate::handler::ShardInfo;
use crate::position::ShardPlan;
use crate::record::SequenceNumber;
use crate::source::IteratorPosition;
use crate::status::ShardState;

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
    pub(crate) coordinator: ActorRef<CoordinatorMsg>,
}

pub(crate) enum WorkerMsg {
    Poll,
    /// The delivery stage finished every record up to `through`, completing `pages` pages.
    Acked {
        through: SequenceNumber,
        pages: usize,
    },
    /// The delivery stage cannot go on; `quarantine` when retries are exhausted without a sink.
    HandlerFailed {
        error: String,
        quarantine: bool,
    },
    /// Stop taking records, let in-flight batches finish, then stop.
    Drain(RpcReplyPort<()>),
    /// The lease is gone: stop reading, tell the handler, stop.
    LeaseLost,
}

pub(crate) struct WorkerState {
    /// Counts this worker in the idle-poll budget until it is dropped.
    _counted: WorkerCount,
    shared: Arc<Shared>,
    shard: Arc<ShardInfo>,
    plan: ShardPlan,
    handler_ref: Option<ActorRef<HandlerMsg>>,
    checkpointer: ActorRef<CheckpointerMsg>,
    coordinator: ActorRef<CoordinatorMsg>,
    /// The iterator to use next and when it was issued.
    iterator: Option<(String, Instant)>,
    /// Whether an iterator was ever obtained (after that, `LATEST` must not be used again).
    opened: bool,
    /// Read from `TRIM_HORIZON` next (after a trimmed-data gap under `GapPolicy::Continue`).
    reopen_at_trim_horizon: bool,
    /// The current iterator was opened at `TRIM_HORIZON`.
    at_trim_horizon: bool,
    /// A gap was reported and no record was read since: report the next one only after
    /// progress, so an unreadable shard does not flood events.
    gap_reported: bool,
    /// An empty page without a next iterator was seen and is being confirmed with a fresh
    /// iterator (see `poll_once`).
    confirming_end: bool,
    closed: bool,
    /// The last record handed to the handler (or skipped): reopening resumes after it.
    last_read: Option<SequenceNumber>,
    in_flight: usize,
    /// Records of each page handed over and not yet acknowledged, oldest first.
    in_flight_records: std::collections::VecDeque<usize>,
    end_reached: bool,
    poll_timer: Option<JoinHandle<Result<(), ractor::MessagingErr<WorkerMsg>>>>,
    last_poll: Option<Instant>,
    retries: u32,
    draining: Option<RpcReplyPort<()>>,
    is_draining: bool,
}

enum Step {
    /// Poll again after this delay (pacing is applied on top).
    Again(Duration),
    /// Wait for an acknowledgement before polling.
    Wait,
    /// The shard is read to its end.
    End,
    /// A gap stopped the shard.
    Stop,
}

impl WorkerState {
    fn schedule_poll(&mut self, myself: &ActorRef<WorkerMsg>, delay: Duration) {
        if self.poll_timer.is_some() || self.is_draining || self.end_reached {
            return;
        }
        // Pace: never two GetRecords on one shard closer than `min_poll_interval` (I7).
        let paced = match self.last_poll {
            Some(t) => {
                let earliest = t + self.shared.config.min_poll_interval;
                delay.max(earliest.saturating_duration_since(Instant::now()))
            }
            None => delay,
        };
        self.poll_timer = Some(myself.send_after(paced, || WorkerMsg::Poll));
    }

    fn gap(&self, kind: GapKind) -> GapAction {
        let action = match self.shared.config.gap_policy {
            GapPolicy::Fail => GapAction::Stopped,
            GapPolicy::Continue => GapAction::Continued,
        };
        tracing::error!(shard = %self.shard.shard_id, ?kind, ?action, "gap: records were lost before they could be read");
        self.shared.emit(ConsumerEvent::Gap(Gap {
            shard_id: self.shard.shard_id.clone(),
            kind: kind.clone(),
            action,
        }));
        if action == GapAction::Stopped {
            let _ = self.coordinator.cast(CoordinatorMsg::GapStop {
                shard_id: self.shard.shard_id.clone(),
                reason: format!("{kind:?}"),
            });
        }
        action
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
        self.retries += 1;
        let c = &self.shared.config;
        backoff(c.retry_backoff, c.max_retry_backoff, self.retries - 1)
    }

    /// One GetShardIterator (if needed) and one GetRecords.
    async fn poll_once(&mut self) -> Result<Step, ActorProcessingErr> {
        let cfg = &self.shared.config;
        if !may_take_more(cfg, self.in_flight, self.in_flight_records.iter().sum()) {
            return Ok(Step::Wait);
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
        if self.iterator.is_none() {
            let position = self.open_position();
            match self
                .shared
                .api
                .get_shard_iterator(
                    self.shared.stream_arn.clone(),
                    self.shard.shard_id.clone(),
                    position.clone(),
                )
                .await
            {
                Ok(it) => {
                    self.iterator = Some((it, Instant::now()));
                    self.opened = true;
                    self.at_trim_horizon = position == IteratorPosition::TrimHorizon;
                    self.reopen_at_trim_horizon = false;
                }
                Err(e) => return self.on_source_error(e, "GetShardIterator").await,
            }
        }
        let Some((iterator, _)) = self.iterator.clone() else {
            return Ok(Step::Again(Duration::ZERO));
        };
        self.last_poll = Some(Instant::now());
        let started = Instant::now();
        let span = tracing::debug_span!(
            "poll",
            stream = %self.shard.stream_arn,
            shard = %self.shard.shard_id,
            sequence_number = %self.last_read.as_ref().map(|s| s.as_str()).unwrap_or_default(),
        );
        let result = tracing::Instrument::instrument(
            self.shared
                .api
                .get_records(iterator, Some(cfg.max_records_per_call)),
            span,
        )
        .await;
        self.shared
            .metrics
            .get_records_duration
            .record(started.elapsed().as_secs_f64(), &[]);
        let page = match result {
            Ok(p) => p,
            Err(e) => return self.on_source_error(e, "GetRecords").await,
        };
        self.retries = 0;
        if !page.records.is_empty() {
            self.gap_reported = false;
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
        self.shared.board.update(
            &self.shard.shard_id,
            self.shard.parent_shard_id.as_ref(),
            |e| {
                e.last_poll_ok = Some(now);
                e.caught_up = open_and_empty;
                if delivering {
                    e.unacked_pages.push_back(times);
                }
                e.state = if open_and_empty && e.unacked_pages.is_empty() {
                    ShardState::CaughtUp
                } else {
                    ShardState::Reading
                };
                e.lag_cached = e.lag(wall);
            },
        );
        self.iterator = page.next_shard_iterator.map(|it| (it, now));
        let page_len = page.records.len();
        let full = page_len >= cfg.max_records_per_call as usize;

        if let Some(through) = page.records.last().map(|r| r.sequence_number().clone()) {
            // Strictly increasing per shard (I1), even if a source repeats itself.
            let last_read = self.last_read.clone();
            let skip_before = self.plan.skip_before;
            let mut newest = last_read.clone();
            let mut records = Vec::with_capacity(page_len);
            for r in page.records {
                if newest.as_ref().is_some_and(|n| r.sequence_number() <= n) {
                    continue;
                }
                newest = Some(r.sequence_number().clone());
                if !predates(r.approximate_creation_time(), skip_before) {
                    records.push(r);
                }
            }
            if last_read.as_ref().is_none_or(|l| &through > l) {
                self.last_read = Some(through.clone());
                self.in_flight += 1;
                self.in_flight_records.push_back(records.len());
                let handler = self.handler_ref.as_ref().ok_or("handler actor missing")?;
                handler
                    .cast(HandlerMsg::Deliver { records, through })
                    .map_err(|e| format!("handler actor gone: {e}"))?;
            }
        }
        if self.iterator.is_none() {
            // An empty page that ends the shard is confirmed once from a fresh iterator right
            // after the last read record: DynamoDB Local answers an iterator issued before a
            // rollover with "no records, no next iterator" even when records follow its
            // position, and ending then would skip them. Records on a final page end at once.
            if page_len == 0 && !self.confirming_end {
                self.confirming_end = true;
                return Ok(Step::Again(Duration::ZERO));
            }
            return Ok(Step::End);
        }
        self.confirming_end = false;
        Ok(if full {
            Step::Again(Duration::ZERO)
        } else if page_len > 0 {
            Step::Again(cfg.min_poll_interval)
        } else {
            Step::Again(self.shared.idle_delay())
        })
    }

    async fn on_source_error(
        &mut self,
        e: SourceError,
        op: &'static str,
    ) -> Result<Step, ActorProcessingErr> {
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
                self.iterator = None;
                Ok(Step::Again(Duration::ZERO))
            }
            SourceErrorKind::Throttled | SourceErrorKind::Retryable => {
                let wait = self.retry_delay();
                tracing::warn!(%shard, error = %e, retry_in = ?wait, attempt = self.retries, "{op} failed; backing off");
                Ok(Step::Again(wait))
            }
            SourceErrorKind::TrimmedData => {
                let after = self.last_read.clone();
                let action = if self.gap_reported {
                    GapAction::Continued
                } else {
                    self.gap_reported = true;
                    self.gap(GapKind::TrimmedData { after })
                };
                let unreadable = self.at_trim_horizon;
                self.iterator = None;
                match action {
                    GapAction::Stopped => Ok(Step::Stop),
                    // Even its oldest retained position is trimmed (DynamoDB Local after aging):
                    // a closed shard has nothing left to read, so its children may go on; an open
                    // one may take new records, so keep trying it, slowly.
                    _ if unreadable && self.closed => Ok(Step::End),
                    _ if unreadable => {
                        self.reopen_at_trim_horizon = true;
                        Ok(Step::Again(self.shared.idle_delay()))
                    }
                    _ => {
                        self.reopen_at_trim_horizon = true;
                        Ok(Step::Again(Duration::ZERO))
                    }
                }
            }
            SourceErrorKind::NotFound => {
                let after = self.last_read.clone();
                match self.gap(GapKind::VanishedShard { after }) {
                    GapAction::Stopped => Ok(Step::Stop),
                    // Nothing more can be read: let its children go on (the gap is reported).
                    _ => {
                        self.iterator = None;
                        Ok(Step::End)
                    }
                }
            }
            _ => Err(format!("{op} on shard {shard}: {e}").into()),
        }
    }

    /// Every batch is acknowledged and the shard is read to its end: run `on_shard_end`, make
    /// the end durable, then exit so the coordinator can start the children (I2).
    async fn finish(&mut self, myself: &ActorRef<WorkerMsg>) -> Result<(), ActorProcessingErr> {
        let timeout = self.shared.config.handler_timeout + Duration::from_secs(5);
        let handler = self.handler_ref.as_ref().ok_or("handler actor missing")?;
        call(handler, HandlerMsg::End, timeout).await??;
        call(
            &self.checkpointer,
            |reply| CheckpointerMsg::Save {
                updates: vec![(self.shard.shard_id.clone(), ShardCheckpoint::Ended)],
                reply,
            },
            timeout,
        )
        .await?
        .map_err(|e| {
            format!(
                "cannot checkpoint the end of shard {}: {e}",
                self.shard.shard_id
            )
        })?;
        tracing::info!(shard = %self.shard.shard_id, "shard ended");
        myself.stop(Some(exit::ENDED.into()));
        Ok(())
    }

    async fn finish_drain(&mut self, myself: &ActorRef<WorkerMsg>) {
        if let Some(h) = &self.handler_ref {
            let _ = call(h, HandlerMsg::Shutdown, self.shared.config.handler_timeout).await;
        }
        if let Some(reply) = self.draining.take() {
            let _ = reply.send(());
        }
        myself.stop(Some(exit::DRAINED.into()));
    }

    async fn after_step(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
        step: Step,
    ) -> Result<(), ActorProcessingErr> {
        match step {
            Step::Again(delay) => self.schedule_poll(myself, delay),
            Step::Wait => {}
            Step::End => {
                self.end_reached = true;
                if self.in_flight == 0 {
                    self.finish(myself).await?;
                }
            }
            Step::Stop => {
                self.end_reached = true;
                myself.stop(Some(exit::GAP.into()));
            }
        }
        Ok(())
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
            iterator: args.initial_iterator,
            opened,
            at_trim_horizon: false,
            gap_reported: false,
            confirming_end: false,
            closed: args.closed,
            shared: args.shared,
            shard: args.shard,
            plan: args.plan,
            handler_ref: None,
            checkpointer: args.checkpointer,
            coordinator: args.coordinator,
            reopen_at_trim_horizon: false,
            last_read,
            in_flight: 0,
            in_flight_records: std::collections::VecDeque::new(),
            end_reached: false,
            poll_timer: None,
            last_poll: None,
            retries: 0,
            draining: None,
            is_draining: false,
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
            },
            myself.get_cell(),
        )
        .await
        .map_err(|e| format!("cannot start the handler actor: {e}"))?;
        let timeout = state.shared.config.handler_timeout + Duration::from_secs(5);
        call(&handler_ref, HandlerMsg::Start, timeout).await??;
        state.handler_ref = Some(handler_ref);
        state.shared.board.update(
            &state.shard.shard_id,
            state.shard.parent_shard_id.as_ref(),
            |e| {
                e.state = ShardState::Reading;
                e.running_since = Some(Instant::now());
                e.unacked_pages.clear();
                e.caught_up = false;
                e.calls.clear();
            },
        );
        state.shared.emit(ConsumerEvent::ShardStarted {
            shard_id: state.shard.shard_id.clone(),
            parent_shard_id: state.shard.parent_shard_id.clone(),
            position: state.plan.position.type_name().to_owned(),
        });
        tracing::info!(shard = %state.shard.shard_id, position = state.plan.position.type_name(), "shard started");
        let _ = myself.cast(WorkerMsg::Poll);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.poll_timer.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Poll => {
                state.poll_timer = None;
                if state.is_draining || state.end_reached {
                    return Ok(());
                }
                let step = state.poll_once().await?;
                state.after_step(&myself, step).await?;
            }
            WorkerMsg::Acked { through, pages } => {
                state.in_flight = state.in_flight.saturating_sub(pages);
                for _ in 0..pages {
                    state.in_flight_records.pop_front();
                }
                let acked = through.clone();
                let wall = state.shared.api.wall_clock();
                state.shared.board.update(
                    &state.shard.shard_id,
                    state.shard.parent_shard_id.as_ref(),
                    |e| {
                        for _ in 0..pages {
                            if let Some((_, last)) = e.unacked_pages.pop_front() {
                                e.newest_acked_time = last.or(e.newest_acked_time);
                            }
                        }
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
                if state.in_flight == 0 && state.is_draining {
                    state.finish_drain(&myself).await;
                } else if state.in_flight == 0 && state.end_reached {
                    state.finish(&myself).await?;
                } else {
                    state.schedule_poll(&myself, Duration::ZERO);
                }
            }
            WorkerMsg::HandlerFailed { error, quarantine } => {
                if quarantine {
                    // Not a crash to restart from: the policy gave up and nothing may be skipped.
                    state.end_reached = true;
                    myself.stop(Some(format!("{}{error}", exit::QUARANTINE)));
                    return Ok(());
                }
                return Err(error.into());
            }
            WorkerMsg::LeaseLost => {
                state.is_draining = true;
                state.end_reached = true;
                if let Some(t) = state.poll_timer.take() {
                    t.abort();
                }
                if let Some(h) = &state.handler_ref {
                    let timeout = state.shared.config.handler_timeout + Duration::from_secs(5);
                    let _ = call(h, HandlerMsg::LeaseLost, timeout).await;
                }
                myself.stop(Some(exit::LEASE_LOST.into()));
            }
            WorkerMsg::Drain(reply) => {
                state.is_draining = true;
                if let Some(t) = state.poll_timer.take() {
                    t.abort();
                }
                state.draining = Some(reply);
                if state.in_flight == 0 {
                    state.finish_drain(&myself).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The handler actor only stops with its worker; on its own it stops by failing (a panic
        // in user code). Either way the batch in hand is not acknowledged: fail so the
        // coordinator restarts this shard from its checkpoint.
        match evt {
            SupervisionEvent::ActorFailed(_, e) => Err(format!("handler panicked: {e}").into()),
            SupervisionEvent::ActorTerminated(_, _, reason) => Err(format!(
                "handler stopped unexpectedly: {}",
                reason.unwrap_or_default()
            )
            .into()),
            _ => Ok(()),
        }
    }
}
