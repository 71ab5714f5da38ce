//! Durable shard positions.
//!
//! A [`CheckpointStore`] keeps, per (application, stream ARN), the consumer's first-start time
//! and one [`ShardCheckpoint`] per shard. The consumer only ever stores sequence numbers (never
//! shard iterators, which expire after 15 minutes), and a checkpoint never passes a record the
//! handler has not acknowledged (invariant I3).

// Files and a blocking pool: not in the browser.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod file;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod local_storage;
mod memory;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::CheckpointError;
use crate::record::SequenceNumber;
use crate::source::BoxFuture;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub use file::FileCheckpointStore;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub use local_storage::LocalStorageCheckpointStore;
pub use memory::MemoryCheckpointStore;

/// Identifies one consumer's position set: several applications can consume one stream, each
/// with its own checkpoints, and a re-enabled stream has a new ARN (and so starts afresh).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamKey {
    /// The consumer application's name.
    pub application: String,
    /// The stream ARN.
    pub stream_arn: String,
}

/// Where a consumer stands in one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ShardCheckpoint {
    /// Every record up to and including `sequence_number` has been processed.
    Processed {
        /// The last processed record.
        sequence_number: SequenceNumber,
    },
    /// The shard was read to its end and every record processed; its children may start.
    Ended,
    /// The consumer first started at `LATEST` at `since_ms` (Unix milliseconds) and has
    /// processed nothing in this shard since.
    Latest {
        /// The bookmark time.
        since_ms: u64,
    },
    /// The shard was listed while the consumer read the stream, and nothing of it is processed
    /// yet (it waits for its parent, say): kept so that a shard which vanishes unread during an
    /// outage is reported as a gap by name.
    Discovered {
        /// Where reading began: the oldest record retained when the shard was first read from
        /// its start. Nothing before it was the consumer's to read (a first start at
        /// `TRIM_HORIZON`); from it on every record is delivered or reported lost. `None` until
        /// the first record was read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<SequenceNumber>,
        /// When the consumer first listed the shard (Unix milliseconds). Nothing of a shard
        /// listed longer ago than the stream's retention and never read can be trusted to be
        /// whole: its first records may have been trimmed while the consumer was away.
        #[serde(default)]
        since_ms: u64,
    },
}

impl ShardCheckpoint {
    /// Whether `new` is further along than `old` (`None`: nothing stored): the one order of
    /// positions every store and the consumer obey, so a checkpoint never moves backwards.
    ///
    /// `Discovered` (without, then with, where reading began) < `Latest` < `Processed` (by
    /// sequence number, numerically) < `Ended`; of two `Latest` bookmarks the earlier one is
    /// further along (it skips less).
    ///
    /// ```
    /// use dynamodb_stream::checkpoint::ShardCheckpoint;
    /// let at = |n: &str| ShardCheckpoint::Processed { sequence_number: n.parse().unwrap() };
    /// let discovered = ShardCheckpoint::Discovered { from: None, since_ms: 0 };
    /// assert!(ShardCheckpoint::advances(None, &discovered));
    /// assert!(ShardCheckpoint::advances(Some(&at("100000000000000000009")), &at("100000000000000000010")));
    /// assert!(!ShardCheckpoint::advances(Some(&at("100000000000000000010")), &at("100000000000000000009")));
    /// assert!(!ShardCheckpoint::advances(Some(&ShardCheckpoint::Ended), &at("100000000000000000010")));
    /// ```
    pub fn advances(old: Option<&Self>, new: &Self) -> bool {
        use ShardCheckpoint::{Discovered, Ended, Latest, Processed};
        match (old, new) {
            (None, _) => true,
            (Some(Ended), _) => false,
            (Some(_), Ended) => true,
            (Some(Discovered { from: None, .. }), Discovered { from, .. }) => from.is_some(),
            (Some(Discovered { .. }), Discovered { .. }) => false,
            (Some(Discovered { .. }), _) => true,
            (Some(Latest { .. } | Processed { .. }), Discovered { .. }) => false,
            (Some(Latest { .. }), Processed { .. }) => true,
            (Some(Processed { sequence_number: a }), Processed { sequence_number: b }) => b > a,
            (Some(Latest { since_ms: a }), Latest { since_ms: b }) => b < a,
            (Some(Processed { .. }), Latest { .. }) => false,
        }
    }

    /// Whether the shard still has records to process: not ended.
    pub fn is_unfinished(&self) -> bool {
        !matches!(self, Self::Ended)
    }

    /// The last processed sequence number, if any.
    pub fn sequence_number(&self) -> Option<&SequenceNumber> {
        match self {
            Self::Processed { sequence_number } => Some(sequence_number),
            _ => None,
        }
    }
}

/// Everything stored for one [`StreamKey`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamCheckpoints {
    /// When the consumer first started on this stream (Unix milliseconds). Its presence means
    /// "not the first start": new shards then read from their beginning.
    pub started_at_ms: u64,
    /// One entry per shard the consumer has a position in.
    pub shards: BTreeMap<String, ShardCheckpoint>,
}

/// Persistent storage for checkpoints.
///
/// Contract:
/// - `load` returns `Ok(None)` only when nothing was ever stored for `key`. Unreadable or foreign
///   data is an error ([`Corrupt`](crate::error::CheckpointErrorKind::Corrupt) /
///   [`Mismatch`](crate::error::CheckpointErrorKind::Mismatch)), never `None`: treating it as
///   empty would silently restart from the start position.
/// - `save` is durable when it returns `Ok`: `started_at_ms` is recorded (if not yet) and every
///   entry of `shards` that is further along than the stored one
///   ([`ShardCheckpoint::advances`]) replaces it, all or nothing. An entry that is not further
///   along is ignored, not an error: a checkpoint never moves backwards, whoever saves (a
///   restarted worker re-acknowledging, a late write racing a newer one).
/// - Saving the same state twice is harmless (idempotent).
///
/// `tests/stores/` runs one contract suite against every store of this crate.
pub trait CheckpointStore: Send + Sync + 'static {
    /// Everything stored for `key`.
    fn load(
        &self,
        key: &StreamKey,
    ) -> BoxFuture<'_, Result<Option<StreamCheckpoints>, CheckpointError>>;

    /// Durably record `started_at_ms` (first call only) and the given shard checkpoints.
    fn save(
        &self,
        key: &StreamKey,
        started_at_ms: u64,
        shards: Vec<(String, ShardCheckpoint)>,
    ) -> BoxFuture<'_, Result<(), CheckpointError>>;

    /// The stream ARNs that `application` has checkpoints for. Used to notice that a table's
    /// stream was replaced (disabled and re-enabled gives a new ARN) while checkpoints of the old
    /// one remain. A store that cannot list returns an empty list, which turns that check off.
    fn streams(&self, application: &str) -> BoxFuture<'_, Result<Vec<String>, CheckpointError>> {
        let _ = application;
        Box::pin(async { Ok(Vec::new()) })
    }
}

impl<T: CheckpointStore + ?Sized> CheckpointStore for std::sync::Arc<T> {
    fn load(
        &self,
        key: &StreamKey,
    ) -> BoxFuture<'_, Result<Option<StreamCheckpoints>, CheckpointError>> {
        (**self).load(key)
    }

    fn save(
        &self,
        key: &StreamKey,
        started_at_ms: u64,
        shards: Vec<(String, ShardCheckpoint)>,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        (**self).save(key, started_at_ms, shards)
    }

    fn streams(&self, application: &str) -> BoxFuture<'_, Result<Vec<String>, CheckpointError>> {
        (**self).streams(application)
    }
}

/// The stream ARNs of `application` in an in-memory copy (shared by the memory and file stores).
pub(crate) fn streams_of(
    content: &BTreeMap<StreamKey, StreamCheckpoints>,
    application: &str,
) -> Vec<String> {
    content
        .keys()
        .filter(|k| k.application == application)
        .map(|k| k.stream_arn.clone())
        .collect()
}

/// Apply a save to an in-memory copy (shared by the memory and file stores).
pub(crate) fn merge(
    into: &mut BTreeMap<StreamKey, StreamCheckpoints>,
    key: &StreamKey,
    started_at_ms: u64,
    shards: Vec<(String, ShardCheckpoint)>,
) {
    let entry = into
        .entry(key.clone())
        .or_insert_with(|| StreamCheckpoints {
            started_at_ms,
            shards: BTreeMap::new(),
        });
    for (shard, checkpoint) in shards {
        if ShardCheckpoint::advances(entry.shards.get(&shard), &checkpoint) {
            entry.shards.insert(shard, checkpoint);
        }
    }
}
