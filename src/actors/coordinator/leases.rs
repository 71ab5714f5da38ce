//! Lease mode: creating leases, taking and balancing them (planned by `lease::plan`), losing them.

use std::collections::HashSet;
use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef};

use crate::actors::call;
use crate::actors::checkpointer::CheckpointerMsg;
use crate::actors::worker::WorkerMsg;
use crate::backoff::{Backoff, TRANSIENT_ATTEMPTS};
use crate::checkpoint::ShardCheckpoint;
use crate::error::{Error, RuntimeError};
use crate::events::ConsumerEvent;
use crate::position::initial_checkpoints;
use crate::record::system_time_to_millis;
use crate::source::Shard;
use crate::status::ShardState;

use super::Run;
use super::{CoordinatorMsg, CoordinatorState};

impl CoordinatorState {
    /// Lease mode, first discovery: create leases for every listed shard; on the very first start
    /// of the application on the stream (no leases yet), bookmark the start position in them.
    pub(super) async fn lease_setup(&mut self) -> Result<(), Error> {
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
    pub(super) async fn create_leases(&self, shards: &[Shard]) -> Result<(), Error> {
        let Some((store, _)) = &self.shared.leases else {
            return Ok(());
        };
        for s in shards {
            let parents: Vec<String> = s.parent_shard_id.iter().cloned().collect();
            let mut retry = Backoff::for_config(&self.shared.config).limited(TRANSIENT_ATTEMPTS);
            loop {
                let e = match store.create(&self.key, &s.shard_id, &parents).await {
                    Ok(_) => break,
                    Err(e) => e,
                };
                match retry.next_wait().filter(|_| e.is_retryable()) {
                    Some(wait) => crate::rt::sleep(wait).await,
                    None => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Lease mode: take free and expired leases whose parents have ended, up to a fair share,
    /// and take gradually from busier workers; start the shards taken.
    pub(super) async fn balance(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let Some((store, me)) = self.shared.leases.clone() else {
            return Ok(());
        };
        if self.stopping {
            return Ok(());
        }
        // An eventually consistent read, at half the cost: everything decided from it is a
        // write conditional on the listed counter (a stale lease fails its condition), and the
        // reconciliation below trusts a listing only where it is newer than what is held.
        let leases = match store.list_recent(&self.key).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing leases failed; balancing next round");
                return Ok(());
            }
        };
        let now = system_time_to_millis(self.shared.api.wall_clock());
        // Workers seen: distinct owners of live leases, and this one (which may hold none yet).
        let workers: HashSet<&str> = leases
            .iter()
            .filter(|l| l.expires_at_ms > now)
            .filter_map(|l| l.owner.as_deref())
            .chain([me.as_str()])
            .collect();
        let seen = Some(workers.len());
        // Only a change is announced: waiters on the board wake for changes.
        if self.shared.board.read_meta(|m| m.workers_seen) != seen {
            self.shared.board.update_meta(|m| m.workers_seen = seen);
        }
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
        let shared = self.shared.clone();
        let cfg = &shared.config.lease;
        let limits = crate::lease::plan::Limits {
            max_leases_per_worker: cfg.max_leases_per_worker,
            max_steals_per_round: cfg.max_steals_per_round,
        };
        let takes = crate::lease::plan::plan(&leases, &held, &me, now, limits, |shard| {
            self.shards
                .get(shard)
                .is_some_and(|e| e.run == Run::Unowned)
        });
        if cfg.graceful_handoff {
            // Leases another worker asked for: hand them over (drain, checkpoint, release).
            for l in &leases {
                let Some(to) = l.handoff_to.as_ref().filter(|to| **to != me) else {
                    continue;
                };
                if !held.contains(&l.shard_id) {
                    continue;
                }
                let handing = self.shards.get_mut(&l.shard_id).is_some_and(|e| {
                    let start = matches!(e.run, Run::Pending | Run::Running | Run::Backoff);
                    if start {
                        e.run = Run::HandingOff;
                    }
                    start
                });
                if handing {
                    self.hand_over(myself, &l.shard_id, to.clone())?;
                }
            }
            // A request stands while the lease still names this worker and has an owner; once
            // released it is taken like any free lease.
            self.handoffs_asked.retain(|shard, _| {
                leases.iter().any(|l| {
                    l.shard_id == *shard
                        && l.owner.is_some()
                        && l.owner.as_deref() != Some(me.as_str())
                        && l.handoff_to.as_deref() == Some(me.as_str())
                })
            });
        }
        for crate::lease::plan::Take { lease, stolen_from } in takes {
            let shard_id = lease.shard_id.clone();
            let handed_to_me = lease.owner.as_deref() == Some(me.as_str());
            if let (Some(owner), true) = (&stolen_from, cfg.graceful_handoff) {
                match self.handoffs_asked.get(&shard_id) {
                    None => match store
                        .request_handoff(&self.key, &shard_id, owner, &me)
                        .await
                    {
                        Ok(true) => {
                            tracing::info!(shard = %shard_id, %owner, "lease asked for");
                            self.handoffs_asked.insert(shard_id, now);
                            continue;
                        }
                        // The store cannot hand over: steal.
                        Ok(false) => {}
                        // The owner changed meanwhile: plan again next round.
                        Err(e) => {
                            tracing::debug!(shard = %shard_id, error = %e, "lease not asked for");
                            continue;
                        }
                    },
                    Some(&asked)
                        if now.saturating_sub(asked)
                            < u64::try_from(cfg.handoff_timeout.as_millis())
                                .unwrap_or(u64::MAX) =>
                    {
                        continue
                    }
                    // Not handed over in time: steal it.
                    Some(_) => {
                        self.handoffs_asked.remove(&shard_id);
                    }
                }
            }
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
                    let how = match (&stolen_from, handed_to_me) {
                        (Some(_), _) => "stolen",
                        (None, true) => "handed_over",
                        (None, false) => "free",
                    };
                    self.shared
                        .metrics
                        .leases_taken
                        .add(1, &[opentelemetry::KeyValue::new("how", how)]);
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
    /// Hand a shard's lease over to `to`, which asked for it: stop its worker the way a shutdown
    /// does (in-flight batches finish, `on_shutdown`), write the checkpoint and make `to` the
    /// owner — in a task, so supervision goes on meanwhile. (Released instead, the free lease
    /// could be taken back by a worker that is short of leases, this one included.)
    fn hand_over(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        shard_id: &str,
        to: String,
    ) -> Result<(), Error> {
        let worker = self
            .workers
            .values()
            .find(|r| r.shard_id == shard_id)
            .map(|r| r.worker.clone());
        let checkpointer = self.checkpointer()?.clone();
        let drain_timeout = self.shared.config.handler_timeout * 2 + Duration::from_secs(10);
        let (coordinator, shard) = (myself.clone(), shard_id.to_owned());
        tracing::info!(shard = %shard, %to, "handing the lease over");
        crate::rt::spawn(async move {
            if let Some(w) = worker {
                let _ = call(&w, WorkerMsg::Drain, drain_timeout).await;
            }
            // Every acknowledged position is written first.
            let handed = call(
                &checkpointer,
                |reply| CheckpointerMsg::HandOver {
                    shard: shard.clone(),
                    to: to.clone(),
                    reply,
                },
                Duration::from_secs(60),
            )
            .await;
            if !matches!(handed, Ok(Ok(()))) {
                // The lease went another way (stolen meanwhile, or the write failed): the
                // checkpoint is written, so whoever reads next starts after it or repeats at
                // most what the handler had not acknowledged.
                tracing::warn!(shard = %shard, ?handed, "handing the lease over failed");
            }
            let _ = coordinator.cast(CoordinatorMsg::HandedOver {
                shard_id: shard,
                to,
            });
        });
        Ok(())
    }

    /// A lease was handed over: the shard is another worker's now.
    pub(super) fn handed_over(&mut self, shard_id: &str, to: String) {
        if let Some(e) = self.shards.get_mut(shard_id) {
            if e.run == Run::HandingOff {
                e.run = Run::Unowned;
                e.lease = None;
            }
        }
        self.shared.board.remove(shard_id);
        self.shared.metrics.leases_handed_over.add(1, &[]);
        self.shared.emit(ConsumerEvent::LeaseHandedOver {
            shard_id: shard_id.to_owned(),
            to,
        });
    }

    pub(super) fn lease_lost(&mut self, shard_id: &str) {
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
        // The checkpointer reported the loss as an event already (also during a shutdown, when
        // this message is no longer handled).
        self.shared.board.remove(shard_id);
    }
}
