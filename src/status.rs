//! Where a running consumer stands: per-shard state, position, lag and errors, plus health.
//!
//! One status board per consumer is written by the coordinator (shard states) and the shard
//! workers (reads, acknowledgements, errors), and read by [`Consumer::status`](crate::Consumer::status),
//! the metrics callbacks and the watchdog.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::rt::Instant;

use crate::record::SequenceNumber;

/// What a shard is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShardState {
    /// Waiting for its parent to end (or for the first discovery).
    WaitingOnParent,
    /// Being read; records remain (or it was not polled empty yet).
    Reading,
    /// Open, and the last poll found no new records: nothing to do.
    CaughtUp,
    /// Failed; restarting after a backoff.
    Restarting,
    /// Read to its end; its end is checkpointed.
    Ended,
    /// Stopped after repeated failures; reported, children blocked.
    Quarantined,
    /// Stopped by a gap.
    Stopped,
}

/// One shard's status.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ShardStatus {
    /// The shard.
    pub shard_id: String,
    /// Its parent, if known.
    pub parent_shard_id: Option<String>,
    /// What it is doing.
    pub state: ShardState,
    /// The last acknowledged sequence number (what the checkpoint moves to).
    pub checkpoint: Option<SequenceNumber>,
    /// How far behind the stream the handler is: the age of the oldest record handed over and
    /// not yet acknowledged, or of the newest acknowledged one; zero once caught up.
    pub lag: Option<Duration>,
    /// Records acknowledged since this consumer started.
    pub records: u64,
    /// Records read and handed to the delivery stage but not yet acknowledged (buffered for a
    /// batch, or in a handler call).
    pub records_in_flight: usize,
    /// GetRecords pages those records came in.
    pub pages_in_flight: usize,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// A problem the watchdog found (see `docs/operations.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthProblem {
    /// An open shard had no successful GetRecords for `for_`.
    ShardStalled {
        /// The shard.
        shard_id: String,
        /// How long.
        for_: Duration,
    },
    /// A handler call has been running for `for_`.
    HandlerStuck {
        /// The shard.
        shard_id: String,
        /// How long.
        for_: Duration,
    },
    /// A parent shard ended `for_` ago and none of its children was found.
    ChildrenMissing {
        /// The parent.
        shard_id: String,
        /// How long.
        for_: Duration,
    },
    /// A shard is quarantined.
    Quarantined {
        /// The shard.
        shard_id: String,
    },
}

/// Whether the consumer is doing its job, for readiness probes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// Current problems; empty when healthy.
    pub problems: Vec<HealthProblem>,
}

impl Health {
    /// No problems.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A snapshot of the whole consumer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConsumerStatus {
    /// The stream.
    pub stream_arn: String,
    /// Every shard known to the consumer, in id order.
    pub shards: Vec<ShardStatus>,
    /// The watchdog's view.
    pub health: Health,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) parent: Option<String>,
    pub(crate) state: ShardState,
    pub(crate) checkpoint: Option<SequenceNumber>,
    pub(crate) records: u64,
    pub(crate) last_error: Option<String>,
    /// Creation times of the first and last record of each page handed over and not yet
    /// acknowledged.
    pub(crate) unacked_pages: VecDeque<(Option<SystemTime>, Option<SystemTime>)>,
    pub(crate) newest_acked_time: Option<SystemTime>,
    pub(crate) caught_up: bool,
    pub(crate) last_poll_ok: Option<Instant>,
    pub(crate) running_since: Option<Instant>,
    /// When the oldest running handler call started, per lane.
    pub(crate) calls: BTreeMap<usize, Instant>,
    pub(crate) ended_at: Option<Instant>,
    /// When the last GetRecords that found the open shard empty was sent, by this incarnation
    /// of its worker (a restart forgets it: records of the failed one are read again).
    pub(crate) empty_poll_started: Option<Instant>,
    pub(crate) in_flight_records: usize,
    pub(crate) in_flight_pages: usize,
    /// [`Entry::lag`] as last computed inside the runtime, for metric callbacks (which run on
    /// the exporter's thread, away from the runtime's clock).
    pub(crate) lag_cached: Option<Duration>,
}

impl Entry {
    pub(crate) fn new(parent: Option<String>) -> Self {
        Self {
            parent,
            state: ShardState::WaitingOnParent,
            checkpoint: None,
            records: 0,
            last_error: None,
            unacked_pages: VecDeque::new(),
            newest_acked_time: None,
            caught_up: false,
            last_poll_ok: None,
            running_since: None,
            calls: BTreeMap::new(),
            ended_at: None,
            empty_poll_started: None,
            in_flight_records: 0,
            in_flight_pages: 0,
            lag_cached: None,
        }
    }

    /// What is wrong with a shard that is being read (`Reading` or `CaughtUp`), as of `now`: a
    /// handler call running longer than `stuck_after`, or no successful GetRecords for longer
    /// than `stall_after` while the shard should be polling. Shared by the watchdog and
    /// readiness (which asks between watchdog rounds, and while the coordinator is busy).
    pub(crate) fn reading_problems(
        &self,
        shard_id: &str,
        now: Instant,
        stall_after: Duration,
        stuck_after: Duration,
    ) -> Vec<HealthProblem> {
        let mut problems = Vec::new();
        if !matches!(self.state, ShardState::Reading | ShardState::CaughtUp) {
            return problems;
        }
        let oldest_call = self.calls.values().min().copied();
        if let Some(t) = oldest_call.filter(|t| now.duration_since(*t) > stuck_after) {
            problems.push(HealthProblem::HandlerStuck {
                shard_id: shard_id.to_owned(),
                for_: now.duration_since(t),
            });
        }
        // A shard whose handler holds every batch is not expected to poll.
        let should_poll = oldest_call.is_none() && self.unacked_pages.is_empty();
        let last_ok = self.last_poll_ok.or(self.running_since);
        if let Some(t) = last_ok.filter(|t| should_poll && now.duration_since(*t) > stall_after) {
            problems.push(HealthProblem::ShardStalled {
                shard_id: shard_id.to_owned(),
                for_: now.duration_since(t),
            });
        }
        problems
    }

    /// The lag as defined on [`ShardStatus::lag`].
    pub(crate) fn lag(&self, now: SystemTime) -> Option<Duration> {
        let age = |t: SystemTime| now.duration_since(t).unwrap_or(Duration::ZERO);
        if let Some(first) = self.unacked_pages.iter().find_map(|(first, _)| *first) {
            return Some(age(first));
        }
        if self.caught_up || self.state == ShardState::Ended {
            return Some(Duration::ZERO);
        }
        self.newest_acked_time.map(age)
    }
}

/// What the board knows beyond single shards.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    /// The stream is disabled: shards that end have no children.
    pub(crate) stream_disabled: bool,
    /// The consumer stopped (or is being killed): nothing on the board moves any more.
    pub(crate) closed: bool,
    /// Every gap reported, in order.
    pub(crate) gaps: Vec<crate::events::Gap>,
    /// Lease mode: the workers holding a live lease on the stream in the last lease listing,
    /// this one always included.
    pub(crate) workers_seen: Option<usize>,
}

/// The shared status of one consumer.
#[derive(Debug)]
pub(crate) struct StatusBoard {
    shards: Mutex<BTreeMap<String, Entry>>,
    meta: Mutex<Meta>,
    problems: Mutex<Vec<HealthProblem>>,
    /// Bumped by every change, for those who wait for one ([`StatusBoard::changes`]).
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self {
            shards: Mutex::default(),
            meta: Mutex::default(),
            problems: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl StatusBoard {
    pub(crate) fn update<R>(
        &self,
        shard_id: &str,
        parent: Option<&String>,
        f: impl FnOnce(&mut Entry) -> R,
    ) -> R {
        // A panic while holding this lock leaves at worst a stale field: status is advisory.
        let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        let entry = shards
            .entry(shard_id.to_owned())
            .or_insert_with(|| Entry::new(parent.cloned()));
        let r = f(entry);
        drop(shards);
        self.bump();
        r
    }

    pub(crate) fn remove(&self, shard_id: &str) {
        self.shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(shard_id);
        self.bump();
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that sees a change whenever the board changes.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Change what the board knows beyond single shards.
    pub(crate) fn update_meta<R>(&self, f: impl FnOnce(&mut Meta) -> R) -> R {
        let r = f(&mut self.meta.lock().unwrap_or_else(|p| p.into_inner()));
        self.bump();
        r
    }

    /// Read the rest without announcing a change.
    pub(crate) fn read_meta<R>(&self, f: impl FnOnce(&Meta) -> R) -> R {
        f(&self.meta.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Read the shards and the rest together (shards locked first, as everywhere).
    pub(crate) fn view<R>(&self, f: impl FnOnce(&BTreeMap<String, Entry>, &Meta) -> R) -> R {
        let shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        let meta = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        f(&shards, &meta)
    }

    pub(crate) fn with_all<R>(&self, f: impl FnOnce(&BTreeMap<String, Entry>) -> R) -> R {
        f(&self.shards.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Recompute every shard's cached lag (the watchdog does, so lag never freezes).
    pub(crate) fn refresh_lags(&self, now: SystemTime) {
        let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        for e in shards.values_mut() {
            e.lag_cached = e.lag(now);
        }
    }

    pub(crate) fn set_problems(&self, problems: Vec<HealthProblem>) {
        *self.problems.lock().unwrap_or_else(|p| p.into_inner()) = problems;
    }

    pub(crate) fn health(&self) -> Health {
        Health {
            problems: self
                .problems
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    pub(crate) fn snapshot(&self, stream_arn: &str, now: SystemTime) -> ConsumerStatus {
        let shards = self.with_all(|all| {
            all.iter()
                .map(|(id, e)| ShardStatus {
                    shard_id: id.clone(),
                    parent_shard_id: e.parent.clone(),
                    state: e.state,
                    checkpoint: e.checkpoint.clone(),
                    lag: e.lag(now),
                    records: e.records,
                    records_in_flight: e.in_flight_records,
                    pages_in_flight: e.in_flight_pages,
                    last_error: e.last_error.clone(),
                })
                .collect()
        });
        ConsumerStatus {
            stream_arn: stream_arn.to_owned(),
            shards,
            health: self.health(),
        }
    }
}
