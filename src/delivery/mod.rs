//! Delivery controls: batching, retries with bisect, partial failures, a failure sink,
//! filters, and per-key parallelism inside a shard.
//!
//! Without a [`RetryPolicy`] (the default) a failing batch fails the shard worker, which
//! restarts from its checkpoint and redelivers. With one, failures are retried in place; when
//! the attempts or the record age are exhausted the records go to the [`FailureSink`] and the
//! shard moves on — or, without a sink, the shard is quarantined. Nothing is skipped silently.

pub(crate) mod engine;
pub(crate) mod failure;
// A file sink: no files in a browser.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod json_lines;
mod sink;
pub(crate) mod watermark;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::record::{RecordKind, SequenceNumber, StreamRecord};

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub use json_lines::JsonLinesFailureSink;
pub use sink::FailureSink;

/// How a failing batch is retried in place.
///
/// ```
/// use dynamodb_stream::delivery::RetryPolicy;
/// use std::time::Duration;
/// let policy = RetryPolicy {
///     max_attempts: 5,
///     max_record_age: Some(Duration::from_secs(3600)),
///     bisect_on_error: true,
///     ..RetryPolicy::default()
/// };
/// # drop(policy);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls per batch before giving up (the first call included). Splits made by bisection
    /// start their own count and are not attempts themselves. Default 3.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles per attempt, with jitter. Default 200 ms.
    pub initial_backoff: Duration,
    /// Backoff cap. Default 30 s.
    pub max_backoff: Duration,
    /// Give up at once on a batch whose oldest record is older than this (by its approximate
    /// creation time). Default: no limit.
    pub max_record_age: Option<Duration>,
    /// Split a failing batch in halves and retry each, to isolate a poison record. Default off.
    pub bisect_on_error: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_record_age: None,
            bisect_on_error: false,
        }
    }
}

/// Why records were given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// The handler failed `attempts` times.
    RetriesExhausted {
        /// Calls made.
        attempts: u32,
    },
    /// The oldest record was older than [`RetryPolicy::max_record_age`].
    RecordTooOld {
        /// Its age when the consumer gave up.
        age: Duration,
    },
}

/// Records the handler could not process, as handed to a [`FailureSink`].
#[derive(Debug, Clone)]
pub struct DeliveryFailure {
    /// The stream.
    pub stream_arn: String,
    /// The shard.
    pub shard_id: String,
    /// The records, in sequence order.
    pub records: Vec<StreamRecord>,
    /// Why they were given up on.
    pub reason: FailureReason,
    /// The handler's last error.
    pub error: String,
}

impl DeliveryFailure {
    /// The first record's sequence number.
    pub fn first_sequence_number(&self) -> Option<&SequenceNumber> {
        self.records.first().map(|r| r.sequence_number())
    }

    /// The last record's sequence number.
    pub fn last_sequence_number(&self) -> Option<&SequenceNumber> {
        self.records.last().map(|r| r.sequence_number())
    }
}

/// Event kinds, for [`ConsumerBuilder::filter_kinds`](crate::ConsumerBuilder::filter_kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KindFilter {
    /// New items.
    Insert,
    /// Changed items.
    Modify,
    /// Deletions by a client.
    Remove,
    /// Deletions by Time to Live.
    TtlRemove,
    /// Event names this crate does not know.
    Unknown,
}

impl KindFilter {
    fn of(kind: &RecordKind) -> Self {
        match kind {
            RecordKind::Insert => Self::Insert,
            RecordKind::Modify => Self::Modify,
            RecordKind::Remove { ttl: false } => Self::Remove,
            RecordKind::Remove { ttl: true } => Self::TtlRemove,
            RecordKind::Unknown(_) => Self::Unknown,
        }
    }
}

type Predicate = Arc<dyn Fn(&StreamRecord) -> bool + Send + Sync>;

/// Which records reach the handler. Records filtered out count as processed: the checkpoint
/// moves past them.
#[derive(Clone, Default)]
pub(crate) struct RecordFilter {
    pub(crate) kinds: Option<HashSet<KindFilter>>,
    pub(crate) predicate: Option<Predicate>,
    pub(crate) criteria: Option<Arc<crate::filter::FilterCriteria>>,
}

impl std::fmt::Debug for RecordFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordFilter")
            .field("kinds", &self.kinds)
            .field("predicate", &self.predicate.is_some())
            .field("criteria", &self.criteria)
            .finish()
    }
}

impl RecordFilter {
    pub(crate) fn accepts(&self, record: &StreamRecord) -> bool {
        self.kinds
            .as_ref()
            .is_none_or(|k| k.contains(&KindFilter::of(record.kind())))
            && self.predicate.as_ref().is_none_or(|p| p(record))
            && self.criteria.as_ref().is_none_or(|c| c.matches(record))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.kinds.is_none() && self.predicate.is_none() && self.criteria.is_none()
    }
}
