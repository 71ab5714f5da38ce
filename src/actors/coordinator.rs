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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::rt::Instant;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::checkpointer::{Checkpointer, CheckpointerArgs, CheckpointerMsg, LeaseBackend};
use super::worker::{ShardWorker, WorkerArgs, WorkerMsg};
use super::{call, ExitSlot, Outcome, Shared, WorkerExit};
use crate::checkpoint::{CheckpointStore, ShardCheckpoint, StreamCheckpoints, StreamKey};
use crate::config::backoff;
use crate::error::{CheckpointError, CheckpointErrorKind, Error, RuntimeError, SourceErrorKind};
use crate::events::{ConsumerEvent, Gap, GapAction, GapKind, LostRange};
use crate::handler::ShardInfo;
use crate::lease::guard::LeaseGuard;
use crate::position::{initial_checkpoints, plan_shard, ShardStart};
use crate::record::system_time_to_millis;
use crate::source::{describe_all, DescribeStreamRequest, Shard, StreamStatus};
use crate::status::{HealthProblem, ShardState};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
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
}

struct Entry {
    shard: Shard,
    run: Run,
    failures: VecDeque<Instant>,
    listed: bool,
    /// Workers started for this shard in this consumer (the next one's incarnation is one more).
    starts: u64,
    /// It ended because of a gap (it vanished, or nothing of it could be read): its children's
    /// first records may be lost too.
    lossy_end: bool,
    /// Lease mode: the validity of the lease this worker holds on it.
    lease: Option<LeaseGuard>,
    /// Lease mode: a lease stolen from a live owner is read only once the owner's term ran
    /// out (wall-clock Unix ms, as listed): by then the owner starts no more handler calls.
    not_before_ms: Option<u64>,
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
    discover_failures: u32,
    discover_timer: Option<JoinHandle<Result<(), ractor::MessagingErr<CoordinatorMsg>>>>,
    stream_disabled: bool,
    stopping: bool,
}

impl CoordinatorState {
    fn checkpointer(&self) -> Result<&ActorRef<CheckpointerMsg>, Error> {
        self.checkpointer
            .as_ref()
            .ok_or_else(|| RuntimeError::new("the checkpointer is not running").into())
    }

    /// Mirror a shard's run state on the status board.
    fn show(&self, shard_id: &str, state: ShardState, error: Option<&str>) {
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

    /// The watchdog: problems now present, reported as events when they appear or clear.
    fn watchdog(&mut self) {
        self.shared.board.refresh_lags(self.shared.api.wall_clock());
        let cfg = &self.shared.config;
        let now = Instant::now();
        let mut problems = Vec::new();
        let parents_with_children: HashSet<&str> = self
            .shards
            .values()
            .filter_map(|e| e.shard.parent_shard_id.as_deref())
            .collect();
        self.shared.board.with_all(|all| {
            for (id, e) in all {
                match e.state {
                    ShardState::Reading | ShardState::CaughtUp => {
                        let oldest_call = e.calls.values().min().copied();
                        if let Some(t) =
                            oldest_call.filter(|t| now.duration_since(*t) > cfg.handler_stuck_after)
                        {
                            problems.push(HealthProblem::HandlerStuck {
                                shard_id: id.clone(),
                                for_: now.duration_since(t),
                            });
                        }
                        // A shard whose handler holds every batch is not expected to poll.
                        let should_poll = oldest_call.is_none() && e.unacked_pages.is_empty();
                        let last_ok = e.last_poll_ok.or(e.running_since);
                        if let Some(t) = last_ok
                            .filter(|t| should_poll && now.duration_since(*t) > cfg.stall_timeout)
                        {
                            problems.push(HealthProblem::ShardStalled {
                                shard_id: id.clone(),
                                for_: now.duration_since(t),
                            });
                        }
                    }
                    ShardState::Quarantined => problems.push(HealthProblem::Quarantined {
                        shard_id: id.clone(),
                    }),
                    ShardState::Ended
                        if !self.stream_disabled
                            && !parents_with_children.contains(id.as_str()) =>
                    {
                        if let Some(t) = e
                            .ended_at
                            .filter(|t| now.duration_since(*t) > cfg.children_timeout)
                        {
                            problems.push(HealthProblem::ChildrenMissing {
                                shard_id: id.clone(),
                                for_: now.duration_since(t),
                            });
                        }
                    }
                    _ => {}
                }
            }
        });
        let key = |p: &HealthProblem| match p {
            HealthProblem::ShardStalled { shard_id, .. } => ("stalled", shard_id.clone()),
            HealthProblem::HandlerStuck { shard_id, .. } => ("stuck", shard_id.clone()),
            HealthProblem::ChildrenMissing { shard_id, .. } => ("children", shard_id.clone()),
            HealthProblem::Quarantined { shard_id } => ("quarantined", shard_id.clone()),
        };
        let before = self.shared.board.health().problems;
        let before_keys: HashSet<_> = before.iter().map(key).collect();
        let now_keys: HashSet<_> = problems.iter().map(key).collect();
        for p in &problems {
            if !before_keys.contains(&key(p)) {
                tracing::warn!(problem = ?p, "consumer unhealthy");
                self.shared.emit(ConsumerEvent::Unhealthy(p.clone()));
            }
        }
        for p in before {
            if !now_keys.contains(&key(&p)) {
                tracing::info!(problem = ?p, "recovered");
                self.shared.emit(ConsumerEvent::Recovered(p));
            }
        }
        self.shared.board.set_problems(problems);
    }

    /// Wait so DescribeStream calls stay within `min_describe_interval` (I7).
    async fn pace_describe(&mut self) {
        if let Some(t) = self.last_describe {
            let next = t + self.shared.config.min_describe_interval;
            crate::rt::sleep_until(next).await;
        }
        self.last_describe = Some(Instant::now());
    }

    fn schedule_discover(&mut self, myself: &ActorRef<CoordinatorMsg>, delay: Duration) {
        if let Some(t) = self.discover_timer.take() {
            t.abort();
        }
        if !self.stopping {
            self.discover_timer = Some(myself.send_after(delay, || CoordinatorMsg::Discover));
        }
    }

    /// Record shards from a DescribeStream result; returns the ids seen for the first time.
    fn merge(&mut self, listed: Vec<Shard>, full_listing: bool) -> Vec<String> {
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
    fn parent_done(&self, shard: &Shard) -> bool {
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

    async fn start_ready(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if self.stopping {
            return Ok(());
        }
        loop {
            let now_ms = system_time_to_millis(self.shared.api.wall_clock());
            let ready: Vec<String> = self
                .shards
                .iter()
                .filter(|(_, e)| e.run == Run::Pending && self.parent_done(&e.shard))
                .filter(|(_, e)| e.not_before_ms.is_none_or(|t| now_ms >= t))
                .map(|(id, _)| id.clone())
                .collect();
            if ready.is_empty() {
                return Ok(());
            }
            let mut progressed = false;
            for id in ready {
                if self.start_shard(myself, &id).await? {
                    progressed = true;
                }
            }
            // Starting a shard that is already finished may unblock its children.
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Whether a shard read from its start without a checkpoint of its own may have lost its
    /// first records before this consumer got to it (I5): its parent ended with a gap here, or
    /// its parent is gone from the listing — closed more than the retention ago, so the shard
    /// itself is older than that. Shards listed at the very first start are exempt: reading
    /// them from where the start position says is what was asked for.
    fn start_may_be_trimmed(&self, shard: &Shard) -> bool {
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
    fn listed_too_long_ago(&self, checkpoint: Option<&ShardCheckpoint>) -> bool {
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
    fn report_unknown_parent(&mut self, shard: &Shard) -> Option<Gap> {
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

    /// Start a worker; returns true when the shard turned out to be finished already.
    async fn start_shard(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        id: &str,
    ) -> Result<bool, ActorProcessingErr> {
        if self.workers.values().any(|r| r.shard_id == id) {
            // The previous worker of this shard is still stopping (a lost lease taken back, say):
            // never two at once. Its exit starts this one.
            return Ok(false);
        }
        let timeout = Duration::from_secs(30);
        let checkpointer = self.checkpointer()?.clone();
        let shard_id = id.to_owned();
        let checkpoint = call(
            &checkpointer,
            |reply| CheckpointerMsg::Get { shard_id, reply },
            timeout,
        )
        .await?;
        let fresh = self.fresh_latest.remove(id);
        let plan = match plan_shard(
            checkpoint.as_ref(),
            fresh.is_some(),
            self.shared.config.latest_bookmark_margin,
        ) {
            ShardStart::Done => {
                if let Some(e) = self.shards.get_mut(id) {
                    e.run = Run::Ended;
                }
                self.show(id, ShardState::Ended, None);
                return Ok(true);
            }
            ShardStart::Read(plan) => plan,
        };
        let Some(shard) = self.shards.get(id).map(|e| e.shard.clone()) else {
            return Ok(false);
        };
        let mut plan = plan;
        if matches!(
            checkpoint,
            None | Some(ShardCheckpoint::Discovered { from: None, .. })
        ) {
            if let Some(gap) = self.report_unknown_parent(&shard) {
                self.fail(myself, Error::Gap(Box::new(gap)));
                return Ok(false);
            }
            // TRIM_HORIZON cannot tell whether anything was trimmed (and AT_SEQUENCE_NUMBER of
            // the starting sequence number answers "trimmed" on DynamoDB Local even when nothing
            // was): a shard that may be older than the retention is reported as a possible loss.
            plan.start_may_be_trimmed =
                self.start_may_be_trimmed(&shard) || self.listed_too_long_ago(checkpoint.as_ref());
        }
        let Some(entry) = self.shards.get_mut(id) else {
            return Ok(false);
        };
        entry.starts += 1;
        entry.not_before_ms = None;
        let info = Arc::new(ShardInfo {
            stream_arn: self.shared.stream_arn.clone(),
            shard_id: id.to_owned(),
            parent_shard_id: entry.shard.parent_shard_id.clone(),
            incarnation: entry.starts,
            lane: 0,
        });
        let exit = ExitSlot::default();
        let args = WorkerArgs {
            shared: self.shared.clone(),
            shard: info,
            plan,
            closed: entry.shard.is_closed(),
            initial_iterator: fresh,
            checkpointer,
            exit: exit.clone(),
            lease: entry.lease.clone(),
        };
        match Actor::spawn_linked(None, ShardWorker, args, myself.get_cell()).await {
            Ok((worker, _)) => {
                entry.run = Run::Running;
                self.workers.insert(
                    worker.get_id(),
                    Running {
                        shard_id: id.to_owned(),
                        worker,
                        exit,
                    },
                );
            }
            Err(e) => {
                entry.run = Run::Running;
                self.on_worker_failure(myself, id, format!("cannot start worker: {e}"))?;
            }
        }
        Ok(false)
    }

    fn on_worker_failure(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        shard_id: &str,
        error: String,
    ) -> Result<(), ActorProcessingErr> {
        let policy = self.shared.config.restart.clone();
        let Some(entry) = self.shards.get_mut(shard_id) else {
            return Ok(());
        };
        // Stopped because its lease was lost: not a failure, and not ours to restart.
        if entry.run == Run::Unowned {
            return Ok(());
        }
        let now = Instant::now();
        entry.failures.push_back(now);
        while entry
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.window)
        {
            entry.failures.pop_front();
        }
        let failures = entry.failures.len() as u32;
        if failures >= policy.max_failures {
            return self.quarantine(myself, shard_id, error);
        }
        entry.run = Run::Backoff;
        self.shared.metrics.restarts.add(1, &[]);
        self.show(shard_id, ShardState::Restarting, Some(&error));
        let wait = backoff(policy.initial_backoff, policy.max_backoff, failures - 1);
        tracing::warn!(shard = shard_id, %error, failures, backoff = ?wait, "shard worker failed; restarting from its checkpoint");
        self.shared.emit(ConsumerEvent::WorkerRestarted {
            shard_id: shard_id.to_owned(),
            failures,
            error,
            backoff: wait,
        });
        let id = shard_id.to_owned();
        myself.send_after(wait, move || CoordinatorMsg::Restart(id));
        Ok(())
    }

    /// Stop a shard for good and report it; its children stay blocked (nothing is skipped).
    fn quarantine(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        shard_id: &str,
        error: String,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(entry) = self.shards.get_mut(shard_id) {
            entry.run = Run::Quarantined;
        }
        self.show(shard_id, ShardState::Quarantined, Some(&error));
        tracing::error!(shard = shard_id, %error, "shard quarantined");
        self.shared.emit(ConsumerEvent::ShardQuarantined {
            shard_id: shard_id.to_owned(),
            error: error.clone(),
        });
        if self.shared.config.restart.stop_consumer_on_quarantine {
            self.fail(
                myself,
                Error::Quarantined {
                    shard_id: shard_id.to_owned(),
                    last_error: error,
                },
            );
        }
        Ok(())
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

    /// Validate stored checkpoints against the listing (I10). Returns an error to stop with.
    async fn validate(
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
    async fn bootstrap(&mut self) -> Result<(), Error> {
        let shards: Vec<Shard> = self.shards.values().map(|e| e.shard.clone()).collect();
        if self.shared.config.start_position == crate::StartPosition::Latest {
            for shard in shards.iter().filter(|s| !s.is_closed()) {
                let it = self.latest_iterator(&shard.shard_id).await?;
                self.fresh_latest
                    .insert(shard.shard_id.clone(), (it, Instant::now()));
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

    /// Lease mode, first discovery: create leases for every listed shard; on the very first start
    /// of the application on the stream (no leases yet), bookmark the start position in them.
    async fn lease_setup(&mut self) -> Result<(), Error> {
        let Some((store, _)) = self.shared.leases.clone() else {
            return Ok(());
        };
        let existing = store.list(&self.key).await?;
        let first_start = existing.is_empty();
        let shards: Vec<Shard> = self.shards.values().map(|e| e.shard.clone()).collect();
        self.create_leases(&shards).await?;
        if first_start && self.shared.config.start_position == crate::StartPosition::Latest {
            let since = system_time_to_millis(self.shared.api.wall_clock());
            let leases = store.list(&self.key).await?;
            let checkpointer = self.checkpointer()?.clone();
            let no_answer = |e| RuntimeError::new("the checkpointer did not answer").with_source(e);
            for (id, cp) in initial_checkpoints(&shards, crate::StartPosition::Latest, since) {
                let Some(lease) = leases
                    .iter()
                    .find(|l| l.shard_id == id && l.checkpoint.is_none())
                else {
                    continue;
                };
                // Another worker starting at the same moment may win the lease: fine, it writes
                // the same kind of bookmark.
                let lease = lease.clone();
                let taken = call(
                    &checkpointer,
                    |reply| CheckpointerMsg::Take { lease, reply },
                    Duration::from_secs(60),
                )
                .await
                .map_err(no_answer)?;
                if taken.is_err() {
                    continue;
                }
                let updates = vec![(id.clone(), cp)];
                call(
                    &checkpointer,
                    |reply| CheckpointerMsg::Save { updates, reply },
                    Duration::from_secs(60),
                )
                .await
                .map_err(no_answer)??;
                let shards = Some(vec![id]);
                call(
                    &checkpointer,
                    |reply| CheckpointerMsg::Release { shards, reply },
                    Duration::from_secs(60),
                )
                .await
                .map_err(no_answer)?;
            }
        }
        Ok(())
    }

    /// Lease mode: a lease per shard (conditional on absence: other workers do the same).
    async fn create_leases(&self, shards: &[Shard]) -> Result<(), Error> {
        let Some((store, _)) = &self.shared.leases else {
            return Ok(());
        };
        for s in shards {
            let parents: Vec<String> = s.parent_shard_id.iter().cloned().collect();
            let mut attempt = 0;
            loop {
                match store.create(&self.key, &s.shard_id, &parents).await {
                    Ok(_) => break,
                    Err(e) if e.is_retryable() && attempt < 10 => {
                        let c = &self.shared.config;
                        crate::rt::sleep(backoff(c.retry_backoff, c.max_retry_backoff, attempt))
                            .await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Lease mode: take free and expired leases whose parents have ended, up to a fair share,
    /// and take gradually from busier workers; start the shards taken.
    async fn balance(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let Some((store, me)) = self.shared.leases.clone() else {
            return Ok(());
        };
        if self.stopping {
            return Ok(());
        }
        let leases = match store.list(&self.key).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing leases failed; balancing next round");
                return Ok(());
            }
        };
        let checkpointer = self.checkpointer()?.clone();
        // Leases the table gives to someone else are lost before anything is planned (a pause
        // may have hidden it from the renewals); their workers stop, and until they have, their
        // shards are not taken again.
        let _ = checkpointer.cast(CheckpointerMsg::Reconcile(leases.clone()));
        let held: HashSet<String> = call(
            &checkpointer,
            CheckpointerMsg::Held,
            Duration::from_secs(30),
        )
        .await?
        .into_iter()
        .collect();
        let now = system_time_to_millis(self.shared.api.wall_clock());
        // Shards ended by any worker are ended here too (lineage, status, completion).
        for l in leases
            .iter()
            .filter(|l| matches!(l.checkpoint, Some(ShardCheckpoint::Ended)))
        {
            if let Some(e) = self.shards.get_mut(&l.shard_id) {
                if e.run == Run::Unowned {
                    e.run = Run::Ended;
                    self.show(&l.shard_id, ShardState::Ended, None);
                }
            }
        }
        // Only a shard with no worker of its own here may be taken (`Unowned`): one whose lease
        // was just found lost keeps its state until its worker stopped. Never two workers on
        // one shard in one process.
        let cfg = &self.shared.config.lease;
        let limits = crate::lease::plan::Limits {
            max_leases_per_worker: cfg.max_leases_per_worker,
            max_steals_per_round: cfg.max_steals_per_round,
        };
        let takes = crate::lease::plan::plan(&leases, &held, &me, now, limits, |shard| {
            self.shards
                .get(shard)
                .is_some_and(|e| e.run == Run::Unowned)
        });
        for crate::lease::plan::Take { lease, stolen_from } in takes {
            let shard_id = lease.shard_id.clone();
            // The previous owner's term, when it was live: it may deliver until then.
            let owner_term = stolen_from.as_ref().map(|_| lease.expires_at_ms);
            match call(
                &checkpointer,
                |reply| CheckpointerMsg::Take { lease, reply },
                Duration::from_secs(30),
            )
            .await?
            {
                Ok((_, guard)) => {
                    tracing::info!(shard = %shard_id, ?stolen_from, "lease acquired");
                    self.shared.emit(ConsumerEvent::LeaseAcquired {
                        shard_id: shard_id.clone(),
                        stolen_from,
                    });
                    if let Some(e) = self.shards.get_mut(&shard_id) {
                        e.run = Run::Pending;
                        e.failures.clear();
                        e.lease = Some(guard);
                        e.not_before_ms = owner_term;
                    }
                    if let Some(term) = owner_term {
                        let wait = Duration::from_millis(term.saturating_sub(now));
                        let id = shard_id.clone();
                        myself.send_after(wait, move || CoordinatorMsg::Restart(id));
                    }
                }
                // Someone else was faster: fine, next round.
                Err(e) => tracing::debug!(shard = %shard_id, error = %e, "lease not taken"),
            }
        }
        self.start_ready(myself).await
    }

    /// Lease mode: the lease is gone; stop the shard at once (no drain: nothing more may be
    /// handled or written for it).
    fn lease_lost(&mut self, shard_id: &str) {
        if let Some(e) = self.shards.get_mut(shard_id) {
            if matches!(e.run, Run::Ended) {
                return;
            }
            e.run = Run::Unowned;
        }
        let worker = self
            .workers
            .values()
            .find(|r| r.shard_id == shard_id)
            .map(|r| r.worker.clone());
        if let Some(w) = worker {
            // Stops intake at once and tells the handler once a running call returned; nothing
            // it does can be checkpointed any more (the checkpointer dropped the lease).
            let _ = w.cast(WorkerMsg::LeaseLost);
            // A handler that never returns must not keep the shard: kill it after the timeout.
            let grace = self.shared.config.handler_timeout + Duration::from_secs(10);
            crate::rt::spawn(async move {
                crate::rt::sleep(grace).await;
                w.kill();
            });
        }
        self.shared.board.remove(shard_id);
        self.shared.emit(ConsumerEvent::LeaseLost {
            shard_id: shard_id.to_owned(),
        });
    }

    /// A `LATEST` iterator, retrying transient errors (the first start cannot go on without it).
    async fn latest_iterator(&self, shard_id: &str) -> Result<String, Error> {
        let mut attempt = 0;
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
            match result {
                Ok(it) => return Ok(it),
                Err(e) if e.is_retryable() && attempt < 20 => {
                    self.shared
                        .metrics
                        .source_error("GetShardIterator", e.kind());
                    let c = &self.shared.config;
                    crate::rt::sleep(backoff(c.retry_backoff, c.max_retry_backoff, attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(Error::Source(e)),
            }
        }
    }

    async fn discover(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let min_interval = self.shared.config.min_describe_interval;
        self.pace_describe().await;
        let api = self.shared.api.clone();
        let span = tracing::info_span!("discover", stream = %self.shared.stream_arn);
        let result = tracing::Instrument::instrument(
            describe_all(api.as_ref(), &self.shared.stream_arn, || {
                crate::rt::sleep(min_interval)
            }),
            span,
        )
        .await;
        let description = match result {
            Ok(d) => d,
            Err(e) if e.is_retryable() => {
                self.discover_failures += 1;
                let c = &self.shared.config;
                let wait = backoff(c.retry_backoff, c.max_retry_backoff, self.discover_failures);
                tracing::warn!(error = %e, retry_in = ?wait, "DescribeStream failed; retrying");
                self.schedule_discover(myself, wait);
                return Ok(());
            }
            Err(e) => {
                let error = if e.kind() == SourceErrorKind::NotFound && !self.validated {
                    Error::InvalidArgument(format!(
                        "stream {} not found: {}",
                        self.shared.stream_arn,
                        e.message()
                    ))
                } else {
                    Error::Source(e)
                };
                self.fail(myself, error);
                return Ok(());
            }
        };
        self.discover_failures = 0;
        let new = self.merge(description.shards, true);
        let disabled = matches!(
            description.stream_status,
            StreamStatus::Disabled | StreamStatus::Disabling
        );
        if disabled {
            self.shared.board.update_meta(|m| m.stream_disabled = true);
        }
        if self.shared.leases.is_some() {
            if !self.validated {
                self.validated = true;
                if let Err(e) = self.lease_setup().await {
                    self.fail(myself, e);
                    return Ok(());
                }
                myself.send_after(self.shared.config.lease.renew_interval, || {
                    CoordinatorMsg::Balance
                });
            } else {
                let shards: Vec<Shard> = new
                    .iter()
                    .filter_map(|id| self.shards.get(id).map(|e| e.shard.clone()))
                    .collect();
                self.create_leases(&shards).await?;
            }
            self.balance(myself).await?;
        }
        if !self.validated {
            self.validated = true;
            if self.stored.is_none() {
                if let Err(e) = self.bootstrap().await {
                    self.fail(myself, e);
                    return Ok(());
                }
            } else if let Some(error) = self.validate(myself).await? {
                self.fail(myself, error);
                return Ok(());
            }
        }
        if disabled && !self.stream_disabled {
            self.stream_disabled = true;
            tracing::info!(stream = %self.shared.stream_arn, "stream disabled; reading remaining shards to their end");
            self.shared.emit(ConsumerEvent::StreamDisabled);
        }
        if self.shared.leases.is_none() {
            self.record_discovered().await;
        }
        self.start_ready(myself).await?;
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        self.check_complete(myself);
        self.schedule_discover(myself, self.shared.config.discovery_interval);
        Ok(())
    }

    /// Shards listed now with nothing stored are recorded as `Discovered`, so that one which
    /// vanishes unread while the consumer is away is reported as a gap by name (I5). A failed
    /// write is tried again at the next discovery.
    async fn record_discovered(&mut self) {
        let Some(stored) = self.stored.as_ref() else {
            return;
        };
        let now_ms = system_time_to_millis(self.shared.api.wall_clock());
        let updates: Vec<(String, ShardCheckpoint)> = self
            .shards
            .iter()
            .filter(|(id, e)| e.run != Run::Ended && !stored.shards.contains_key(*id))
            .map(|(id, _)| {
                let cp = ShardCheckpoint::Discovered {
                    from: None,
                    since_ms: now_ms,
                };
                (id.clone(), cp)
            })
            .collect();
        if updates.is_empty() {
            return;
        }
        let Ok(checkpointer) = self.checkpointer().cloned() else {
            return;
        };
        let saved = updates.clone();
        match call(
            &checkpointer,
            |reply| CheckpointerMsg::Save { updates, reply },
            Duration::from_secs(60),
        )
        .await
        {
            Ok(Ok(())) => {
                if let Some(stored) = self.stored.as_mut() {
                    for (id, cp) in saved {
                        stored.shards.entry(id).or_insert(cp);
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "recording discovered shards failed; next discovery tries again")
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording discovered shards failed; next discovery tries again")
            }
        }
    }

    /// A disabled stream whose shards are all ended is done: stop cleanly.
    fn check_complete(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        if self.stream_disabled
            && !self.stopping
            && self.shards.values().all(|e| e.run == Run::Ended)
        {
            tracing::info!("stream disabled and every shard ended; stopping");
            let (tx, _rx) = tokio::sync::oneshot::channel();
            let _ = myself.cast(CoordinatorMsg::Shutdown(tx.into()));
        }
    }

    async fn children_of(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        parent: String,
    ) -> Result<(), ActorProcessingErr> {
        self.pace_describe().await;
        let request = DescribeStreamRequest {
            stream_arn: self.shared.stream_arn.clone(),
            child_shards_of: Some(parent.clone()),
            ..Default::default()
        };
        match self.shared.api.describe_stream(request).await {
            Ok(d) => {
                // Only the listed children are new information; a filtered listing says nothing
                // about other shards.
                let children: Vec<Shard> = d
                    .shards
                    .into_iter()
                    .filter(|s| s.parent_shard_id.as_deref() == Some(parent.as_str()))
                    .collect();
                let new = self.merge(children, false);
                if self.shared.leases.is_none() && !new.is_empty() {
                    // Known before they are read, so one that vanishes unread is named.
                    self.record_discovered().await;
                }
                if self.shared.leases.is_some() && !new.is_empty() {
                    let shards: Vec<Shard> = new
                        .iter()
                        .filter_map(|id| self.shards.get(id).map(|e| e.shard.clone()))
                        .collect();
                    self.create_leases(&shards).await?;
                    // The children may be ready now: take them without waiting for the round.
                    self.balance(myself).await?;
                }
            }
            // The periodic discovery will find the children; nothing is lost by waiting.
            Err(e) => tracing::debug!(error = %e, %parent, "child shard lookup failed"),
        }
        let has_children = self
            .shards
            .values()
            .any(|e| e.shard.parent_shard_id.as_deref() == Some(parent.as_str()));
        if !has_children && !self.stream_disabled {
            // Not listed yet (a child can appear late, and DynamoDB Local answers the
            // CHILD_SHARDS filter with nothing): list everything again soon instead of waiting
            // for the periodic discovery, which delays every record of the child.
            let soon = self
                .shared
                .config
                .discovery_interval
                .min(Duration::from_secs(1));
            self.schedule_discover(myself, soon);
        }
        self.start_ready(myself).await
    }

    async fn shutdown(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        self.stopping = true;
        if let Some(t) = self.discover_timer.take() {
            t.abort();
        }
        let drain_timeout = self.shared.config.handler_timeout * 2 + Duration::from_secs(10);
        let mut drains = crate::rt::JoinSet::new();
        // Workers stay in the map until their exit is seen: a drained worker is not restarted.
        let workers: Vec<ActorRef<WorkerMsg>> =
            self.workers.values().map(|r| r.worker.clone()).collect();
        for worker in workers {
            drains.spawn(async move { call(&worker, WorkerMsg::Drain, drain_timeout).await });
        }
        while drains.join_next().await.is_some() {}
        if let Some(cp) = &self.checkpointer {
            match call(
                cp,
                |r| CheckpointerMsg::Flush(Some(r)),
                Duration::from_secs(60),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.record_error(Error::Checkpoint(e)),
                Err(e) => self.record_error(
                    RuntimeError::new("the final checkpoint got no answer")
                        .with_source(e)
                        .into(),
                ),
            }
        }
        if self.shared.leases.is_some() {
            if let Some(cp) = &self.checkpointer {
                // After the final checkpoint: hand every lease back so other workers take over
                // at once instead of waiting for expiry.
                let _ = call(
                    cp,
                    |reply| CheckpointerMsg::Release {
                        shards: None,
                        reply,
                    },
                    Duration::from_secs(60),
                )
                .await;
            }
        }
        let error = self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| e.to_string());
        self.shared.emit(ConsumerEvent::Stopped { error });
        myself.stop(None);
    }

    /// A shard worker stopped: act on why.
    fn worker_exited(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        shard_id: &str,
        exit: Option<WorkerExit>,
        panic: Option<String>,
    ) -> Result<(), ActorProcessingErr> {
        match exit {
            Some(WorkerExit::Ended { lossy }) => {
                if let Some(e) = self.shards.get_mut(shard_id) {
                    e.run = Run::Ended;
                    e.lossy_end = lossy;
                    e.lease = None;
                }
                if self.shared.leases.is_some() {
                    // Its end is checkpointed (fenced): hand the lease back so it no longer
                    // counts towards this worker's share.
                    if let Some(cp) = &self.checkpointer {
                        let (tx, _rx) = tokio::sync::oneshot::channel();
                        let _ = cp.cast(CheckpointerMsg::Release {
                            shards: Some(vec![shard_id.to_owned()]),
                            reply: tx.into(),
                        });
                    }
                }
                self.show(shard_id, ShardState::Ended, None);
                self.shared.emit(ConsumerEvent::ShardEnded {
                    shard_id: shard_id.to_owned(),
                });
                let _ = myself.cast(CoordinatorMsg::ChildrenOf(shard_id.to_owned()));
                self.check_complete(myself);
            }
            Some(WorkerExit::Gap(gap)) => {
                if let Some(e) = self.shards.get_mut(shard_id) {
                    e.run = Run::Stopped;
                }
                self.show(shard_id, ShardState::Stopped, Some(&gap.to_string()));
                self.fail(myself, Error::Gap(gap));
            }
            Some(WorkerExit::Quarantine(error)) => self.quarantine(myself, shard_id, error)?,
            // Shutdown drained it, or its lease went to another worker: nothing to restart.
            Some(WorkerExit::Drained) | Some(WorkerExit::LeaseLost) => {}
            Some(WorkerExit::Failed(f)) if !self.stopping => {
                self.on_worker_failure(myself, shard_id, f.to_string())?
            }
            None if !self.stopping => {
                let error = panic.unwrap_or_else(|| "the worker stopped unexpectedly".into());
                self.on_worker_failure(myself, shard_id, error)?
            }
            _ => {}
        }
        Ok(())
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
            discover_failures: 0,
            discover_timer: None,
            stream_disabled: false,
            stopping: false,
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
        .map_err(|e| format!("cannot start the checkpointer: {e}"))?;
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
        let (cell, panic) = match evt {
            SupervisionEvent::ActorFailed(cell, e) => (cell, Some(e.to_string())),
            SupervisionEvent::ActorTerminated(cell, ..) => (cell, None),
            _ => return Ok(()),
        };
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
            let e = panic.unwrap_or_else(|| "checkpointer stopped".into());
            state.record_error(
                RuntimeError::new("the checkpointer failed")
                    .with_source(e.clone())
                    .into(),
            );
            state.stopping = true;
            let error = Some(e);
            state.shared.emit(ConsumerEvent::Stopped { error });
            myself.stop(Some("checkpointer failed".into()));
        }
        Ok(())
    }
}
