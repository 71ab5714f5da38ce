//! Consumer tuning, with documented defaults (see also `docs/semantics.md`).

use std::time::Duration;

use crate::delivery::RetryPolicy;
use crate::position::StartPosition;

/// What to do when records were lost before the consumer could read them (a *gap*: trimmed
/// data, a checkpointed shard that vanished). The gap is always reported as a
/// [`ConsumerEvent::Gap`](crate::ConsumerEvent::Gap) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GapPolicy {
    /// Stop the consumer with [`Error::Gap`](crate::Error::Gap): an operator decides.
    #[default]
    Fail,
    /// Continue from the oldest retained record (or treat a vanished shard as ended).
    Continue,
}

/// What happens when one shard keeps failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Backoff before the first restart; doubles per failure in the window, with jitter.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Failures within `window` after which the shard is quarantined (stopped and reported)
    /// while the other shards go on.
    pub max_failures: u32,
    /// The window over which failures are counted.
    pub window: Duration,
    /// Stop the whole consumer (with [`Error::Quarantined`](crate::Error::Quarantined)) when a
    /// shard is quarantined, instead of letting the other shards go on.
    pub stop_consumer_on_quarantine: bool,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_failures: 10,
            window: Duration::from_secs(300),
            stop_consumer_on_quarantine: false,
        }
    }
}

/// How workers share a stream through a lease table (see
/// [`ConsumerBuilder::leases`](crate::ConsumerBuilder::leases)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a lease stays valid without renewal: how long a crashed worker's shards wait
    /// before others take them. Default 10 s.
    pub lease_duration: Duration,
    /// How often a worker renews its leases and rebalances. Must be well below
    /// `lease_duration`. Default 3 s.
    pub renew_interval: Duration,
    /// The most leases one worker holds. Default: no limit.
    pub max_leases_per_worker: usize,
    /// The most leases a worker takes from busier workers per round, so balancing is gradual.
    /// Default 1.
    pub max_steals_per_round: usize,
    /// How long before a lease would expire, by this worker's own clocks, it stops handing
    /// batches to its handler and writing checkpoints until a renewal succeeds: a worker that
    /// was paused past its lease (a VM pause, a stall, a laptop sleep) never delivers a shard
    /// another worker may already have taken. Covers clock skew between workers and the
    /// latency of the lease write. Default 2 s; must be below `lease_duration -
    /// renew_interval`.
    pub safety_margin: Duration,
    /// Balance by handing leases over instead of stealing them: a worker below its share asks
    /// a busier one for a lease; the owner stops reading that shard, lets its handler finish
    /// what it was given, writes the checkpoint and releases the lease, so the taker starts
    /// right after the last acknowledged record — no record handled twice. An owner that does
    /// not hand over within `handoff_timeout` (stopped, paused, or a store that cannot hand
    /// over) has its lease stolen as before. Default `true`.
    pub graceful_handoff: bool,
    /// How long a worker waits for a lease it asked for before it steals it. Default 20 s.
    pub handoff_timeout: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(10),
            renew_interval: Duration::from_secs(3),
            max_leases_per_worker: usize::MAX,
            max_steals_per_round: 1,
            safety_margin: Duration::from_secs(2),
            graceful_handoff: true,
            handoff_timeout: Duration::from_secs(20),
        }
    }
}

/// Every knob of the consumer. Start from `ConsumerConfig::default()` and change what you need;
/// [`ConsumerBuilder`](crate::ConsumerBuilder) has setters for the common ones.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Names this consumer's checkpoints, so several applications can consume one stream.
    /// Default `"default"`.
    pub application_name: String,
    /// Where to start on shards open at the very first start. Default `TrimHorizon`.
    pub start_position: StartPosition,
    /// Records per GetRecords call (1..=1000). Default 1000.
    pub max_records_per_call: u32,
    /// Batches handed to a shard's handler and not yet acknowledged (I6). Memory per shard is
    /// bounded by this many GetRecords pages (≤ 1 MB each). Default 2.
    pub max_in_flight_batches: usize,
    /// Minimum time between two GetRecords calls on one shard. Default 200 ms (≤ 5 calls/s,
    /// the service's per-shard limit).
    pub min_poll_interval: Duration,
    /// Wait after an empty page on an open shard. Default 400 ms: a write to a quiet shard
    /// reaches the handler within about that (p99 < 500 ms, docs/benchmarks.md), at 2.5
    /// GetRecords per second per idle shard (half the service's per-shard limit).
    pub idle_poll_interval: Duration,
    /// The most GetRecords calls per second this consumer makes on idle shards, all together.
    /// Beyond `max_idle_polls_per_second × idle_poll_interval` open shards (320 by default)
    /// each idle shard is polled less often, so CPU and request costs of a very wide stream stay
    /// bounded: 1,000 idle shards are polled every 1.25 s, 10,000 every 12.5 s. Shards with
    /// records are not affected (a page with records is followed at `min_poll_interval`, or at
    /// once when behind). Each GetRecords through the AWS SDK costs about 110–160 µs of CPU
    /// with mimalloc, 270–320 µs with the system allocator (signing, HTTP, parsing;
    /// docs/benchmarks.md) and is a billed request: 800 calls/s measured 9–13 % of a core
    /// with mimalloc, 21–25 % without. Default 800.
    pub max_idle_polls_per_second: u32,
    /// How often the stream's shards are listed to find new ones. Default 10 s. Children of
    /// an ended shard are looked up at once, independently of this.
    pub discovery_interval: Duration,
    /// Minimum time between two DescribeStream calls of this consumer. Default 100 ms
    /// (≤ 10 calls/s, the service's limit).
    pub min_describe_interval: Duration,
    /// How long acknowledged positions may wait before they are written to the checkpoint
    /// store. Shard ends and shutdown are always written at once. Default 1 s.
    pub checkpoint_interval: Duration,
    /// A handler call running longer than this counts as a failure. Default 5 min.
    pub handler_timeout: Duration,
    /// A held shard iterator older than this is replaced (from the last read sequence number)
    /// before use, so a slow handler never lets it expire. Default 10 min (iterators live 15).
    pub iterator_refresh_age: Duration,
    /// The wait between GetRecords calls of a shard that is *behind* — its last page was full,
    /// or its newest record older than `catch_up_lag` — so a backlog drains at the machine's
    /// speed instead of at `min_poll_interval`'s 5 pages a second. Throttling slows that shard
    /// down (doubling from `min_poll_interval`, with jitter) and it climbs back by halving its
    /// wait with every page that follows. Set it to `min_poll_interval` to keep the old pace.
    /// Default 0: at once.
    pub catch_up_poll_interval: Duration,
    /// A page whose newest record is older than this (beyond the rounding of its creation time:
    /// a second on DynamoDB, a minute on DynamoDB Local) counts as behind even when it is not
    /// full (a page cut by the 1 MB limit). Default 10 s.
    pub catch_up_lag: Duration,
    /// First backoff after a throttled or failed GetRecords; doubles up to `max_retry_backoff`,
    /// with jitter. Default 200 ms.
    pub retry_backoff: Duration,
    /// Backoff cap for GetRecords and DescribeStream retries. Default 10 s.
    pub max_retry_backoff: Duration,
    /// Widening of a `LATEST` bookmark when a shard has to be re-read from its beginning
    /// (restart before the first record, expired first iterator): records created up to this long
    /// before the bookmark are delivered too (creation times are approximate: DynamoDB Local
    /// truncates them to the minute). Default 2 min.
    pub latest_bookmark_margin: Duration,
    /// How long the stream keeps records: 24 hours for DynamoDB Streams (a simulator may be
    /// built with another). A shard that was listed longer ago than this, and never read, may
    /// have lost its first records while the consumer was away: it is reported as a possible
    /// gap ([`GapKind::TrimmedStart`](crate::events::GapKind::TrimmedStart)). Default 24 h.
    pub retention: Duration,
    /// Restart and quarantine rules.
    pub restart: RestartPolicy,
    /// What to do about gaps. Default [`GapPolicy::Fail`].
    pub gap_policy: GapPolicy,
    /// Most records per handler call (1..=10,000). Default 1000 (one GetRecords page).
    pub batch_size: usize,
    /// Wait up to this long for a fuller batch, which may then span several GetRecords pages.
    /// Default 0: each page is handed over at once.
    pub batch_window: Duration,
    /// Retry failing batches in place. Default `None`: a failing batch fails the shard worker,
    /// which restarts from its checkpoint (see `restart`).
    pub retry: Option<RetryPolicy>,
    /// Handler instances per shard working concurrently, with records routed by item key so each
    /// item's changes stay in order. Default 1.
    pub key_parallelism: usize,
    /// How often the watchdog looks for stalled shards, stuck handlers and missing children.
    /// Default 10 s.
    pub watchdog_interval: Duration,
    /// An open shard without a successful GetRecords for this long (while it should be reading)
    /// is reported stalled. Default 2 min.
    pub stall_timeout: Duration,
    /// A handler call running this long is reported stuck (it fails at `handler_timeout`).
    /// Default 1 min.
    pub handler_stuck_after: Duration,
    /// A parent that ended this long ago without any child found (on an enabled stream) is
    /// reported. Default 5 min.
    pub children_timeout: Duration,
    /// Lease timing and balancing, when leases are used.
    pub lease: LeaseConfig,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            application_name: "default".into(),
            start_position: StartPosition::TrimHorizon,
            max_records_per_call: 1000,
            max_in_flight_batches: 2,
            min_poll_interval: Duration::from_millis(200),
            idle_poll_interval: Duration::from_millis(400),
            max_idle_polls_per_second: 800,
            discovery_interval: Duration::from_secs(10),
            min_describe_interval: Duration::from_millis(100),
            checkpoint_interval: Duration::from_secs(1),
            handler_timeout: Duration::from_secs(300),
            iterator_refresh_age: Duration::from_secs(600),
            catch_up_poll_interval: Duration::ZERO,
            catch_up_lag: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(200),
            max_retry_backoff: Duration::from_secs(10),
            latest_bookmark_margin: Duration::from_secs(120),
            retention: Duration::from_secs(24 * 60 * 60),
            restart: RestartPolicy::default(),
            gap_policy: GapPolicy::Fail,
            batch_size: 1000,
            batch_window: Duration::ZERO,
            retry: None,
            key_parallelism: 1,
            watchdog_interval: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(120),
            handler_stuck_after: Duration::from_secs(60),
            children_timeout: Duration::from_secs(300),
            lease: LeaseConfig::default(),
        }
    }
}

impl ConsumerConfig {
    /// Check the values; the message names the bad field.
    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: &str| Err(crate::Error::InvalidArgument(m.to_owned()));
        if self.application_name.is_empty() {
            return bad("application_name must not be empty");
        }
        if !(1..=1000).contains(&self.max_records_per_call) {
            return bad("max_records_per_call must be within 1..=1000");
        }
        if self.max_idle_polls_per_second == 0 {
            return bad("max_idle_polls_per_second must be at least 1");
        }
        if self.max_in_flight_batches == 0 {
            return bad("max_in_flight_batches must be at least 1");
        }
        if self.iterator_refresh_age >= Duration::from_secs(15 * 60) {
            return bad("iterator_refresh_age must be below the 15-minute iterator lifetime");
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return bad("batch_size must be within 1..=10000");
        }
        if !(1..=256).contains(&self.key_parallelism) {
            return bad("key_parallelism must be within 1..=256");
        }
        if self.retry.as_ref().is_some_and(|r| r.max_attempts == 0) {
            return bad("retry.max_attempts must be at least 1");
        }
        if self.lease.renew_interval.is_zero()
            || self.lease.renew_interval * 2 > self.lease.lease_duration
        {
            return bad(
                "lease.renew_interval must be positive and at most half of lease.lease_duration",
            );
        }
        if self.lease.safety_margin + self.lease.renew_interval >= self.lease.lease_duration {
            return bad(
                "lease.safety_margin must be below lease.lease_duration - lease.renew_interval",
            );
        }
        if self.lease.max_leases_per_worker == 0 {
            return bad("lease.max_leases_per_worker must be at least 1");
        }
        if self.restart.max_failures == 0 {
            return bad("restart.max_failures must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let c = ConsumerConfig {
            max_in_flight_batches: 0,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("max_in_flight_batches"), "{e}");
        assert!(ConsumerConfig::default().validate().is_ok());
    }
}
