//! Starting shard workers in lineage order, acting on how they exit (restart with backoff,
//! quarantine, gaps), and the graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::rt::Instant;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::checkpointer::CheckpointerMsg;
use crate::actors::worker::{ShardWorker, WorkerArgs, WorkerMsg};
use crate::actors::{call, ExitSlot, WorkerExit};
use crate::backoff::Backoff;
use crate::checkpoint::ShardCheckpoint;
use crate::error::{Error, RuntimeError};
use crate::events::ConsumerEvent;
use crate::handler::ShardInfo;
use crate::position::{plan_shard, ShardStart};
use crate::record::system_time_to_millis;
use crate::status::ShardState;

use super::Run;
use super::{CoordinatorMsg, CoordinatorState, Running};

impl CoordinatorState {
    pub(super) async fn start_ready(
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

    /// Start a worker; returns true when the shard turned out to be finished already.
    pub(super) async fn start_shard(
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

    pub(super) fn on_worker_failure(
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
        let wait = Backoff::nth(policy.initial_backoff, policy.max_backoff, failures - 1);
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
    pub(super) fn quarantine(
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

    /// A shard worker stopped: act on why.
    pub(super) fn worker_exited(
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
            Some(WorkerExit::Quarantine(error)) => {
                self.quarantine(myself, shard_id, error.to_string())?
            }
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

    pub(super) async fn shutdown(&mut self, myself: &ActorRef<CoordinatorMsg>) {
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
}
