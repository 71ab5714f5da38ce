//! Holds the consumer's positions in memory and writes them to the [`CheckpointStore`].
//!
//! Acknowledged positions are coalesced and written every `checkpoint_interval`; shard ends
//! and first-start bookmarks are written at once and answered only when durable, because a
//! child shard may start (I2) or a `LATEST` reader may open (I4) only after that.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::Shared;
use crate::backoff::Backoff;
use crate::checkpoint::{CheckpointStore, ShardCheckpoint, StreamKey};
use crate::error::{CheckpointError, CheckpointErrorKind, RuntimeError};
use crate::lease::guard::{LeaseGuard, LeaseState};
use crate::lease::{Lease, LeaseError, LeaseErrorKind, LeaseStore};
use crate::record::system_time_to_millis;
use crate::record::SequenceNumber;
use crate::rt::Instant;

pub(crate) struct Checkpointer;

pub(crate) struct CheckpointerArgs {
    pub(crate) shared: Arc<Shared>,
    /// With leases, positions live in the lease table instead of `store`, and every write is
    /// fenced by the lease counter.
    pub(crate) leases: Option<LeaseBackend>,
    pub(crate) coordinator: Option<ActorRef<super::coordinator::CoordinatorMsg>>,
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
    /// Lease mode: take this lease (as listed) for this worker; the guard says how long it may
    /// be acted on.
    Take {
        lease: Lease,
        reply: RpcReplyPort<Result<(Lease, LeaseGuard), LeaseError>>,
    },
    /// Lease mode: the lease table as just listed. A lease this worker believes it holds but
    /// which the table gives to another worker (or to none) was lost while this worker was not
    /// looking (a pause, a stall): drop it before anything else is decided.
    Reconcile(Vec<Lease>),
    /// Lease mode: write what is pending for these shards (all held when `None`), then give
    /// their leases back.
    Release {
        shards: Option<Vec<String>>,
        reply: RpcReplyPort<()>,
    },
    /// Lease mode: write what is pending, then make `to` the owner of this shard's lease (a
    /// take on its behalf, fenced by this worker's counter), for a handoff it asked for.
    HandOver {
        shard: String,
        to: String,
        reply: RpcReplyPort<Result<(), CheckpointError>>,
    },
    /// Lease mode: renew every held lease.
    Renew,
    /// Lease mode: the shards this worker holds.
    Held(RpcReplyPort<Vec<String>>),
}

/// The lease side of the checkpointer: which leases this worker holds, and their fencing
/// counters. Only the checkpointer writes leases, so the counter is never raced.
pub(crate) struct LeaseBackend {
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) owner: String,
    pub(crate) held: BTreeMap<String, HeldLease>,
}

#[derive(Debug, Clone)]
pub(crate) struct HeldLease {
    counter: u64,
    expires_at_ms: u64,
    guard: LeaseGuard,
}

pub(crate) struct CheckpointerState {
    shared: Arc<Shared>,
    leases: Option<LeaseBackend>,
    coordinator: Option<ActorRef<super::coordinator::CoordinatorMsg>>,
    store: Arc<dyn CheckpointStore>,
    key: StreamKey,
    started_at_ms: u64,
    current: BTreeMap<String, ShardCheckpoint>,
    dirty: BTreeMap<String, ShardCheckpoint>,
    flush_scheduled: bool,
    /// Waits between failed checkpoint writes.
    write_retry: Backoff,
}

impl CheckpointerState {
    /// Take a position if it is further along than the one held (`ShardCheckpoint::advances`):
    /// a checkpoint never moves backwards, whoever asks (a restarted worker re-acknowledging, a
    /// `Discovered` mark racing a first acknowledgement).
    fn record(&mut self, shard_id: String, checkpoint: ShardCheckpoint) -> bool {
        if !ShardCheckpoint::advances(self.current.get(&shard_id), &checkpoint) {
            return false;
        }
        self.current.insert(shard_id.clone(), checkpoint.clone());
        self.dirty.insert(shard_id, checkpoint);
        true
    }

    /// Write everything dirty. A failed write keeps it dirty for the next attempt.
    /// Hand a held lease over to `to`: the checkpoint first (the next owner starts right after
    /// it), then the lease, with a full term, so `to` adopts it at its next round.
    async fn hand_over(&mut self, shard: &str, to: &str) -> Result<(), CheckpointError> {
        self.flush().await?;
        let Some(leases) = self.leases.as_mut() else {
            return Ok(());
        };
        let Some(held) = leases.held.remove(shard) else {
            return Err(CheckpointError::new(
                CheckpointErrorKind::LeaseLost,
                format!("the lease of shard {shard} is no longer held here"),
            ));
        };
        held.guard.lose();
        let (store, duration) = (
            leases.store.clone(),
            self.shared.config.lease.lease_duration,
        );
        let expires = self.now_ms() + u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        store
            .take(&self.key, shard, held.counter, to, expires)
            .await
            .map(|_| ())
            .map_err(|e| {
                CheckpointError::new(CheckpointErrorKind::LeaseLost, "the handoff was refused")
                    .with_source(e)
            })
    }

    fn now_ms(&self) -> u64 {
        system_time_to_millis(self.shared.api.wall_clock())
    }

    /// How long a take or renewal keeps a lease valid for acting on it, by this process's
    /// clocks: the lease duration minus the safety margin.
    fn valid_for(&self) -> std::time::Duration {
        let lease = &self.shared.config.lease;
        lease.lease_duration.saturating_sub(lease.safety_margin)
    }

    /// A lease is gone (taken by another worker, or not renewed in time): forget it, never
    /// write for it again, and tell the coordinator to stop its shard at once.
    fn lose(&mut self, shard_id: &str, why: &str) {
        if let Some(leases) = self.leases.as_mut() {
            if let Some(held) = leases.held.remove(shard_id) {
                held.guard.lose();
                tracing::warn!(shard = shard_id, why, "lease lost");
                self.shared.metrics.leases_lost.add(1, &[]);
                self.shared.emit(crate::events::ConsumerEvent::LeaseLost {
                    shard_id: shard_id.to_owned(),
                });
                self.dirty.remove(shard_id);
                if let Some(c) = &self.coordinator {
                    let _ = c.cast(super::coordinator::CoordinatorMsg::LeaseLost(
                        shard_id.to_owned(),
                    ));
                }
            }
        }
    }

    /// Lease mode: write every dirty position of a held lease, fenced by its counter.
    async fn flush_leases(&mut self) -> Result<(), CheckpointError> {
        let Some(leases) = self.leases.as_ref() else {
            return Ok(());
        };
        let (store, owner) = (leases.store.clone(), leases.owner.clone());
        let dirty: Vec<_> = self
            .dirty
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut first_error = None;
        for (shard, cp) in dirty {
            let Some(held) = self
                .leases
                .as_ref()
                .and_then(|l| l.held.get(&shard).cloned())
            else {
                // Not ours (any more): the position must not be written.
                self.dirty.remove(&shard);
                continue;
            };
            if held
                .guard
                .state(Instant::now(), self.shared.api.wall_clock())
                != LeaseState::Valid
            {
                // It may have expired (this worker was paused): write only after a renewal
                // succeeded; if it fails the lease is lost and the position dropped with it.
                if !self
                    .ensure_valid(std::slice::from_ref(&shard))
                    .await
                    .is_empty()
                {
                    continue;
                }
            }
            let Some(held) = self
                .leases
                .as_ref()
                .and_then(|l| l.held.get(&shard).cloned())
            else {
                continue;
            };
            let started = crate::rt::Instant::now();
            let result = store
                .checkpoint(&self.key, &shard, &owner, held.counter, &cp)
                .await;
            self.shared
                .metrics
                .checkpoint_duration
                .record(started.elapsed().as_secs_f64(), &[]);
            match result {
                Ok(counter) => {
                    if let Some(h) = self.leases.as_mut().and_then(|l| l.held.get_mut(&shard)) {
                        h.counter = counter;
                    }
                    if self.dirty.get(&shard) == Some(&cp) {
                        self.dirty.remove(&shard);
                    }
                }
                Err(e) if e.kind() == LeaseErrorKind::Conflict => {
                    self.lose(&shard, "checkpoint refused")
                }
                Err(e) => {
                    let kind = if e.is_retryable() {
                        CheckpointErrorKind::Io
                    } else {
                        CheckpointErrorKind::Mismatch
                    };
                    first_error
                        .get_or_insert(CheckpointError::new(kind, format!("lease table: {e}")));
                }
            }
        }
        match first_error {
            None => {
                self.write_retry.reset();
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Renew every held lease; a refused or overdue renewal loses the lease.
    async fn renew(&mut self) {
        let Some(leases) = self.leases.as_ref() else {
            return;
        };
        let (store, owner) = (leases.store.clone(), leases.owner.clone());
        let held: Vec<_> = leases
            .held
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (shard, h) in held {
            self.renew_one(&store, &owner, &shard, &h).await;
        }
    }

    /// Renew one held lease.
    async fn renew_one(
        &mut self,
        store: &Arc<dyn LeaseStore>,
        owner: &str,
        shard: &str,
        h: &HeldLease,
    ) {
        let duration = self.shared.config.lease.lease_duration.as_millis() as u64;
        {
            let (sent, sent_wall) = (Instant::now(), self.shared.api.wall_clock());
            let now = system_time_to_millis(sent_wall);
            match store
                .renew(&self.key, shard, owner, h.counter, now + duration)
                .await
            {
                Ok(counter) => {
                    let valid_for = self.valid_for();
                    if let Some(x) = self.leases.as_mut().and_then(|l| l.held.get_mut(shard)) {
                        x.counter = counter;
                        x.expires_at_ms = now + duration;
                        x.guard.extend(sent, sent_wall, valid_for);
                    }
                }
                Err(e) if e.kind() == LeaseErrorKind::Conflict => {
                    self.lose(shard, "renewal refused")
                }
                Err(e) => {
                    // Past its expiry another worker may hold it: stop rather than race.
                    if self.now_ms() >= h.expires_at_ms {
                        self.lose(shard, "could not renew before expiry");
                    } else {
                        tracing::warn!(shard = %shard, error = %e, "lease renewal failed; retrying");
                    }
                }
            }
        }
    }

    /// Lease mode, before a durable write for held shards: a lease that may have expired by
    /// this process's clocks is renewed first. Returns the shards that are not (or no longer)
    /// held.
    async fn ensure_valid(&mut self, shards: &[String]) -> Vec<String> {
        let Some(l) = self.leases.as_ref() else {
            return Vec::new();
        };
        let (store, owner) = (l.store.clone(), l.owner.clone());
        let mut lost = Vec::new();
        for shard in shards {
            let held = self
                .leases
                .as_ref()
                .and_then(|l| l.held.get(shard).cloned());
            let Some(h) = held else {
                lost.push(shard.clone());
                continue;
            };
            if h.guard.state(Instant::now(), self.shared.api.wall_clock()) != LeaseState::Valid {
                self.renew_one(&store, &owner, shard, &h).await;
                let valid = self
                    .leases
                    .as_ref()
                    .and_then(|l| l.held.get(shard))
                    .is_some_and(|h| {
                        h.guard.state(Instant::now(), self.shared.api.wall_clock())
                            == LeaseState::Valid
                    });
                if !valid {
                    lost.push(shard.clone());
                }
            }
        }
        lost
    }

    async fn flush(&mut self) -> Result<(), CheckpointError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        if self.leases.is_some() {
            return self.flush_leases().await;
        }
        let updates: Vec<_> = self
            .dirty
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let span = tracing::debug_span!("checkpoint", stream = %self.key.stream_arn, shards = updates.len());
        let started = crate::rt::Instant::now();
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
                self.write_retry.reset();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Actor for Checkpointer {
    type Msg = CheckpointerMsg;
    type State = CheckpointerState;
    type Arguments = CheckpointerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CheckpointerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        if args.leases.is_some() {
            myself.send_after(args.shared.config.lease.renew_interval, || {
                CheckpointerMsg::Renew
            });
        }
        let write_retry = Backoff::for_config(&args.shared.config);
        Ok(CheckpointerState {
            leases: args.leases,
            coordinator: args.coordinator,
            shared: args.shared,
            store: args.store,
            key: args.key,
            started_at_ms: args.started_at_ms,
            current: args.current,
            dirty: BTreeMap::new(),
            flush_scheduled: false,
            write_retry,
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
                let moved = state.record(shard_id, ShardCheckpoint::Processed { sequence_number });
                if moved && !state.flush_scheduled {
                    state.flush_scheduled = true;
                    myself.send_after(state.shared.config.checkpoint_interval, || {
                        CheckpointerMsg::Flush(None)
                    });
                }
            }
            CheckpointerMsg::Save { updates, reply } => {
                // With leases only held, valid shards may be written: saying "durable" for one
                // whose lease is gone would let its end (and so its children) be assumed.
                if state.leases.is_some() {
                    let shards: Vec<String> = updates.iter().map(|(s, _)| s.clone()).collect();
                    if let Some(shard) = state.ensure_valid(&shards).await.first() {
                        let _ = reply.send(Err(CheckpointError::new(
                            CheckpointErrorKind::LeaseLost,
                            format!("the lease of shard {shard} is not held by this worker"),
                        )));
                        return Ok(());
                    }
                }
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
            CheckpointerMsg::Take { lease, reply } => {
                let (sent, sent_wall) = (Instant::now(), state.shared.api.wall_clock());
                let valid_for = state.valid_for();
                if state
                    .leases
                    .as_ref()
                    .is_some_and(|l| l.held.contains_key(&lease.shard_id))
                {
                    // Taking what this worker believes it holds means the table moved on while
                    // it was not looking: the old holding is lost first, so its shard worker
                    // stops before the shard can be read again (never two at once).
                    state.lose(&lease.shard_id, "taken by another worker meanwhile");
                }
                let result = match state.leases.as_ref() {
                    None => Err(LeaseError::new(LeaseErrorKind::Fatal, "not in lease mode")),
                    Some(l) => {
                        let expires = system_time_to_millis(sent_wall)
                            + state.shared.config.lease.lease_duration.as_millis() as u64;
                        let (store, owner) = (l.store.clone(), l.owner.clone());
                        store
                            .take(&state.key, &lease.shard_id, lease.counter, &owner, expires)
                            .await
                    }
                };
                let result = result.map(|taken| {
                    let guard = LeaseGuard::new(sent, sent_wall, valid_for);
                    (taken, guard)
                });
                if let (Ok((taken, guard)), Some(l)) = (&result, state.leases.as_mut()) {
                    l.held.insert(
                        taken.shard_id.clone(),
                        HeldLease {
                            counter: taken.counter,
                            expires_at_ms: taken.expires_at_ms,
                            guard: guard.clone(),
                        },
                    );
                    // The lease table is the authority on where the shard stands.
                    match &taken.checkpoint {
                        Some(cp) => {
                            state.current.insert(taken.shard_id.clone(), cp.clone());
                        }
                        None => {
                            state.current.remove(&taken.shard_id);
                        }
                    }
                    state.dirty.remove(&taken.shard_id);
                }
                let _ = reply.send(result);
            }
            CheckpointerMsg::HandOver { shard, to, reply } => {
                let result = state.hand_over(&shard, &to).await;
                let _ = reply.send(result);
            }
            CheckpointerMsg::Release { shards, reply } => {
                if let Err(e) = state.flush().await {
                    tracing::warn!(error = %e, "final checkpoint before releasing leases failed");
                }
                if let Some(l) = state.leases.as_ref() {
                    let (store, owner) = (l.store.clone(), l.owner.clone());
                    let held: Vec<_> = l
                        .held
                        .iter()
                        .filter(|(k, _)| shards.as_ref().is_none_or(|s| s.contains(k)))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    for (shard, h) in held {
                        h.guard.lose();
                        if let Err(e) = store.release(&state.key, &shard, &owner, h.counter).await {
                            tracing::warn!(shard = %shard, error = %e, "releasing a lease failed; it will expire");
                        }
                        if let Some(l) = state.leases.as_mut() {
                            l.held.remove(&shard);
                        }
                    }
                }
                let _ = reply.send(());
            }
            CheckpointerMsg::Renew => {
                state.renew().await;
                myself.send_after(state.shared.config.lease.renew_interval, || {
                    CheckpointerMsg::Renew
                });
            }
            CheckpointerMsg::Reconcile(listed) => {
                let me = state.leases.as_ref().map(|l| l.owner.clone());
                let gone: Vec<String> = state
                    .leases
                    .as_ref()
                    .map(|l| {
                        l.held
                            .iter()
                            .filter(|(shard, held)| {
                                // A listing older than this worker's own last write (a stale
                                // read: its counter is lower) says nothing about the lease now.
                                listed
                                    .iter()
                                    .find(|lease| &lease.shard_id == *shard)
                                    .is_some_and(|lease| {
                                        lease.owner != me && lease.counter >= held.counter
                                    })
                            })
                            .map(|(shard, _)| shard.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for shard in gone {
                    state.lose(&shard, "the lease table names another owner");
                }
            }
            CheckpointerMsg::Held(reply) => {
                let held = state
                    .leases
                    .as_ref()
                    .map(|l| l.held.keys().cloned().collect())
                    .unwrap_or_default();
                let _ = reply.send(held);
            }
            CheckpointerMsg::Flush(reply) => {
                state.flush_scheduled = false;
                let r = state.flush().await;
                if let Err(e) = &r {
                    if !e.is_retryable() {
                        // Fatal: whoever asked gets the error; without an asker the checkpointer
                        // stops with it, typed (the coordinator takes it as the consumer's).
                        return match (reply, r) {
                            (Some(reply), r) => {
                                let _ = reply.send(r);
                                Err(RuntimeError::new("the checkpoint store failed for good")
                                    .into())
                            }
                            (None, Err(e)) => Err(Box::new(e)),
                            (None, Ok(())) => Ok(()),
                        };
                    }
                    let wait = state
                        .write_retry
                        .next_wait()
                        .unwrap_or(state.shared.config.max_retry_backoff);
                    tracing::warn!(error = %e, attempts = state.write_retry.failures(), "checkpoint write failed; retrying");
                    if !state.flush_scheduled {
                        state.flush_scheduled = true;
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
