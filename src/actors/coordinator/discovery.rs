//! Listing the stream (paced DescribeStream, `CHILD_SHARDS` lookups) and recording what was
//! listed.

use std::time::Duration;

use crate::rt::Instant;
use ractor::{ActorProcessingErr, ActorRef};

use crate::actors::call;
use crate::actors::checkpointer::CheckpointerMsg;
use crate::checkpoint::ShardCheckpoint;
use crate::error::{Error, SourceErrorKind};
use crate::events::ConsumerEvent;
use crate::record::system_time_to_millis;
use crate::source::{describe_all, DescribeStreamRequest, Shard, StreamStatus};

use super::Run;
use super::{CoordinatorMsg, CoordinatorState};

impl CoordinatorState {
    /// Wait so DescribeStream calls stay within `min_describe_interval` (I7).
    pub(super) async fn pace_describe(&mut self) {
        if let Some(t) = self.last_describe {
            let next = t + self.shared.config.min_describe_interval;
            crate::rt::sleep_until(next).await;
        }
        self.last_describe = Some(Instant::now());
    }

    pub(super) fn schedule_discover(&mut self, myself: &ActorRef<CoordinatorMsg>, delay: Duration) {
        if let Some(t) = self.discover_timer.take() {
            t.abort();
        }
        if !self.stopping {
            self.discover_timer = Some(myself.send_after(delay, || CoordinatorMsg::Discover));
        }
    }

    pub(super) async fn discover(
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
                // The consumer never gives up on listing its stream: `spawn` waits meanwhile.
                let wait = self
                    .discover_retry
                    .next_wait()
                    .unwrap_or(self.shared.config.max_retry_backoff);
                // Said once, then every tenth time with the count: an outage of minutes is a
                // few lines, not one per retry.
                let failures = self.discover_retry.failures();
                self.shared.metrics.source_error("DescribeStream", e.kind());
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(error = %e, failures, retry_in = ?wait, "DescribeStream failed; retrying");
                } else {
                    tracing::debug!(error = %e, failures, retry_in = ?wait, "DescribeStream failed; retrying");
                }
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
        self.discover_retry.reset();
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
    pub(super) async fn record_discovered(&mut self) {
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

    pub(super) async fn children_of(
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

    /// A disabled stream whose shards are all ended is done: stop cleanly.
    pub(super) fn check_complete(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        if self.stream_disabled
            && !self.stopping
            && self.shards.values().all(|e| e.run == Run::Ended)
        {
            tracing::info!("stream disabled and every shard ended; stopping");
            let (tx, _rx) = tokio::sync::oneshot::channel();
            let _ = myself.cast(CoordinatorMsg::Shutdown(tx.into()));
        }
    }
}
