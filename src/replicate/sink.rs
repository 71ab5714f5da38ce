//! Where the replica lives: the [`ReplicaSink`] contract.

use crate::checkpoint::{CheckpointStore, ShardCheckpoint, StreamKey};
use crate::error::Result;
use crate::record::{Item, SequenceNumber};
use crate::source::BoxFuture;

use super::{KeyAttribute, TableInfo};

/// A store that holds a table's items *and* the stream positions they reflect.
///
/// The sink is the consumer's [`CheckpointStore`] too, so that a batch of changes and the
/// checkpoint after it can be committed together. Contract:
///
/// - [`apply`](Self::apply) commits, in **one** transaction, the changes of one shard that come
///   after the shard's stored position, and the shard's new position `Processed { through }`.
///   After a crash the stored position therefore names exactly the changes the items reflect.
///   Changes at or before the stored position are skipped (a restarted shard worker may deliver
///   a batch again), and nothing is applied to a shard stored as `Ended`.
/// - [`CheckpointStore::save`] never moves a shard backwards: the consumer's checkpointer may
///   write an acknowledged position older than one `apply` already committed. `Processed`
///   positions only grow (compared numerically), `Ended` is final, and a `Latest` bookmark never
///   replaces a position.
/// - [`write_scan_page`](Self::write_scan_page) writes a page's items and its segment's resume
///   position in one transaction, so a resumed scan neither skips nor repeats pages.
/// - [`bind`](Self::bind) refuses a sink that holds another table or stream, changing nothing.
/// - [`record_stream_caught_up`](Self::record_stream_caught_up) keeps the latest time given;
///   [`reset`](Self::reset) forgets it. A sink that does not keep it (the default methods) makes
///   an unfinished scan start over when its bookmark is older than 20 hours, instead of
///   resuming.
/// - Every write is durable when its future returns `Ok`.
pub trait ReplicaSink: CheckpointStore {
    /// Tie a fresh sink to `table`, or check that it already holds this table and stream.
    /// Returns how far its scan got.
    fn bind(&self, table: &TableInfo) -> BoxFuture<'_, Result<ScanProgress>>;

    /// Record that a scan in `total_segments` segments begins (every segment pending).
    fn begin_scan(&self, total_segments: u32) -> BoxFuture<'_, Result<()>>;

    /// Write the items of one page of `segment` and where the segment continues (`None`: the
    /// segment is finished), atomically.
    fn write_scan_page(
        &self,
        segment: u32,
        items: Vec<Item>,
        resume_after: Option<Item>,
    ) -> BoxFuture<'_, Result<()>>;

    /// Record that every segment is finished: later runs stream without scanning.
    fn complete_scan(&self) -> BoxFuture<'_, Result<()>>;

    /// Forget the items, the scan, every checkpoint and the stream catch-up time, keeping the
    /// binding to the table: the replica starts over (used when an unfinished scan was away from
    /// the stream for longer than it keeps records).
    fn reset(&self) -> BoxFuture<'_, Result<()>>;

    /// When the stream was last caught up during an unfinished scan, as stored by
    /// [`record_stream_caught_up`](Self::record_stream_caught_up) (Unix milliseconds on the
    /// stream's clock). `None`: never, or the sink does not keep it (the default).
    fn stream_caught_up_at(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        Box::pin(async { Ok(None) })
    }

    /// Durably note that every change of the stream up to `at_ms` (Unix milliseconds on the
    /// stream's clock) is applied: a resumed backfill then only needs the stream to still hold
    /// what came after it. Keeps the later of the stored and the given time. The default keeps
    /// nothing.
    fn record_stream_caught_up(&self, at_ms: u64) -> BoxFuture<'_, Result<()>> {
        let _ = at_ms;
        Box::pin(async { Ok(()) })
    }

    /// Apply the changes of shard `shard_id` that follow its stored position and store
    /// `Processed { through }`, in one transaction. Returns how many changes were applied.
    fn apply(
        &self,
        key: &StreamKey,
        shard_id: &str,
        changes: Vec<SequencedChange>,
        through: SequenceNumber,
    ) -> BoxFuture<'_, Result<usize>>;
}

impl<T: ReplicaSink + ?Sized> ReplicaSink for std::sync::Arc<T> {
    fn bind(&self, table: &TableInfo) -> BoxFuture<'_, Result<ScanProgress>> {
        (**self).bind(table)
    }
    fn begin_scan(&self, total_segments: u32) -> BoxFuture<'_, Result<()>> {
        (**self).begin_scan(total_segments)
    }
    fn write_scan_page(
        &self,
        segment: u32,
        items: Vec<Item>,
        resume_after: Option<Item>,
    ) -> BoxFuture<'_, Result<()>> {
        (**self).write_scan_page(segment, items, resume_after)
    }
    fn complete_scan(&self) -> BoxFuture<'_, Result<()>> {
        (**self).complete_scan()
    }
    fn reset(&self) -> BoxFuture<'_, Result<()>> {
        (**self).reset()
    }
    fn stream_caught_up_at(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        (**self).stream_caught_up_at()
    }
    fn record_stream_caught_up(&self, at_ms: u64) -> BoxFuture<'_, Result<()>> {
        (**self).record_stream_caught_up(at_ms)
    }
    fn apply(
        &self,
        key: &StreamKey,
        shard_id: &str,
        changes: Vec<SequencedChange>,
        through: SequenceNumber,
    ) -> BoxFuture<'_, Result<usize>> {
        (**self).apply(key, shard_id, changes, through)
    }
}

/// How far a sink's scan got.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScanProgress {
    /// No scan was started.
    NotStarted,
    /// A scan was started and not finished.
    Running {
        /// The number of segments it was started with (a resumed scan keeps it).
        total_segments: u32,
        /// One entry per segment.
        segments: Vec<SegmentProgress>,
    },
    /// Every segment was scanned.
    Complete {
        /// Items written by the scan.
        items: u64,
    },
}

/// How far one scan segment got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentProgress {
    /// The segment number.
    pub segment: u32,
    /// Continue after this key; `None` with `done == false` means "from the start".
    pub resume_after: Option<Item>,
    /// The segment was read to its end.
    pub done: bool,
    /// Items written from this segment so far.
    pub items: u64,
}

/// One change to apply to a replica.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemChange {
    /// Write `item` (the new image), replacing the item with the same key.
    Put {
        /// The item's key attributes.
        keys: Item,
        /// The whole item.
        item: Item,
    },
    /// Delete the item with these key attributes (if present).
    Delete {
        /// The key attributes.
        keys: Item,
    },
}

/// A change with the stream position it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct SequencedChange {
    /// The record's sequence number.
    pub sequence_number: SequenceNumber,
    /// What to do.
    pub change: ItemChange,
}

/// An item as DynamoDB JSON (`{"pk":{"S":"a"},"n":{"N":"7"}}`) with sorted attribute names:
/// exact for every type (numbers stay strings of digits), and the same bytes for equal items.
/// The SQLite and PostgreSQL replicas store items this way.
pub(crate) fn item_to_dynamodb_json(item: &Item) -> serde_json::Result<String> {
    let mut value = serde_json::to_value(item)?;
    value.sort_all_objects();
    Ok(value.to_string())
}

/// Whether two key schemas describe the same key: names and roles in order, and types where
/// both sides know them (the simulator does not declare types).
pub(crate) fn same_key_schema(a: &[KeyAttribute], b: &[KeyAttribute]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.name == b.name
                && a.role == b.role
                && (a.scalar_type.is_none()
                    || b.scalar_type.is_none()
                    || a.scalar_type == b.scalar_type)
        })
}

/// Whether storing `new` over `old` moves a shard forward (the sink's monotonic rule):
/// `Ended` is final, `Processed` only grows, a `Latest` bookmark only replaces a later bookmark.
pub(crate) fn advances(old: Option<&ShardCheckpoint>, new: &ShardCheckpoint) -> bool {
    ShardCheckpoint::advances(old, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ShardCheckpoint::{Ended, Latest, Processed};

    fn p(n: &str) -> ShardCheckpoint {
        Processed {
            sequence_number: n.parse().expect("seq"),
        }
    }

    #[test]
    fn positions_only_move_forward() {
        let small = p("900000000000000000000");
        let big = p("1000000000000000000000");
        assert!(advances(Some(&small), &big));
        assert!(!advances(Some(&big), &small));
        assert!(!advances(Some(&big), &big));
        assert!(advances(Some(&Latest { since_ms: 5 }), &small));
        assert!(!advances(Some(&small), &Latest { since_ms: 5 }));
        assert!(advances(Some(&small), &Ended));
        assert!(!advances(Some(&Ended), &big));
        assert!(!advances(Some(&Ended), &Latest { since_ms: 1 }));
        assert!(advances(None, &Latest { since_ms: 1 }));
        assert!(advances(
            Some(&Latest { since_ms: 5 }),
            &Latest { since_ms: 4 }
        ));
    }
}
