//! What a running consumer reports: lifecycle events, gaps, and the npm package's vocabulary.

use std::time::Duration;

use crate::record::{Item, RecordKind, SequenceNumber, StreamRecord};

/// Something that happened inside a running consumer, for services to observe (logging,
/// alerting, health). Subscribe with [`Consumer::events`](crate::Consumer::events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConsumerEvent {
    /// Discovery found shards not seen before (the npm package's "new shards").
    ShardsDiscovered {
        /// Their ids.
        shard_ids: Vec<String>,
    },
    /// A shard worker started reading.
    ShardStarted {
        /// The shard.
        shard_id: String,
        /// Its parent, if known.
        parent_shard_id: Option<String>,
        /// The iterator type it opened with, e.g. `AFTER_SEQUENCE_NUMBER`.
        position: String,
        /// Which start of this shard's worker inside this consumer: 1 for the first, one more
        /// after every restart ([`ShardInfo::incarnation`](crate::ShardInfo::incarnation)).
        incarnation: u64,
    },
    /// A shard was read to its end and its end checkpointed; children may start.
    ShardEnded {
        /// The shard.
        shard_id: String,
    },
    /// Shards no longer listed by the stream (trimmed away after they ended; the npm package's
    /// "removed shards").
    ShardsRemoved {
        /// Their ids.
        shard_ids: Vec<String>,
    },
    /// A shard worker failed and will restart from its checkpoint after `backoff`.
    WorkerRestarted {
        /// The shard.
        shard_id: String,
        /// Failures of this shard within the restart window, this one included.
        failures: u32,
        /// Why it failed.
        error: String,
        /// Wait before the restart.
        backoff: Duration,
    },
    /// A shard failed too often and was stopped; other shards go on (unless configured
    /// otherwise). Its children stay blocked: nothing is skipped.
    ShardQuarantined {
        /// The shard.
        shard_id: String,
        /// The last failure.
        error: String,
    },
    /// Records were lost before the consumer could read them.
    Gap(Gap),
    /// The handler could not process these records after the retry policy was exhausted; they
    /// went to the failure sink and the shard moved on.
    SentToFailureSink {
        /// The shard.
        shard_id: String,
        /// The first record sent.
        first_sequence_number: Option<SequenceNumber>,
        /// The last record sent.
        last_sequence_number: Option<SequenceNumber>,
        /// How many records.
        records: usize,
        /// Why.
        reason: crate::delivery::FailureReason,
    },
    /// The table's stream was replaced and the consumer was told to start on the new one
    /// ([`ConsumerBuilder::accept_new_stream`](crate::ConsumerBuilder::accept_new_stream)).
    StreamChanged {
        /// The stream with checkpoints.
        previous: String,
        /// The stream now consumed.
        current: String,
    },
    /// The watchdog found a problem (see [`Consumer::health`](crate::Consumer::health)).
    Unhealthy(crate::status::HealthProblem),
    /// A problem the watchdog had reported is gone.
    Recovered(crate::status::HealthProblem),
    /// Lease mode: this worker took a shard's lease (from a busier worker when `stolen_from`).
    LeaseAcquired {
        /// The shard.
        shard_id: String,
        /// The worker it was taken from, when it was not free or expired.
        stolen_from: Option<String>,
    },
    /// Lease mode: this worker lost a shard's lease (taken by another worker, or not renewed in
    /// time). The shard stopped at once: no more handler calls, no checkpoint writes; calls in
    /// flight were cancelled and their records will be delivered again by the new owner.
    LeaseLost {
        /// The shard.
        shard_id: String,
    },
    /// Lease mode: another worker asked for a shard's lease, and this worker handed it over:
    /// it stopped reading the shard, its handler finished what it was given, the checkpoint was
    /// written and the lease released (`lease.graceful_handoff`). Nothing is repeated.
    LeaseHandedOver {
        /// The shard.
        shard_id: String,
        /// The worker that asked for it.
        to: String,
    },
    /// The stream no longer takes writes (disabled); the consumer stops once every shard ended.
    StreamDisabled,
    /// The consumer stopped; `error` is set when it stopped because of a failure.
    Stopped {
        /// The failure, if any.
        error: Option<String>,
    },
}

/// A reported loss of data (invariant I5).
///
/// [`lost`](Self::lost) says exactly which records of the shard are gone, so a program (or a
/// test) can compare it with what it expected to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The shard with the gap.
    pub shard_id: String,
    /// What happened.
    pub kind: GapKind,
    /// What the consumer did about it (from the [`GapPolicy`](crate::GapPolicy)).
    pub action: GapAction,
    /// The records lost.
    pub lost: LostRange,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            GapKind::TrimmedData => "records were trimmed by the stream's retention before they were read",
            GapKind::VanishedShard => "the shard no longer exists and was not read to its end",
            GapKind::TrimmedStart => "the shard is older than the stream's retention and its parent was not read to its end, so its first records may have been trimmed",
        };
        write!(f, "shard {}: {what} ({})", self.shard_id, self.lost)
    }
}

/// The kinds of gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GapKind {
    /// The position to read from is older than the stream's 24-hour retention: the records
    /// between it and the oldest retained one were trimmed (for example after a long outage, or
    /// while a slow reader chased the trim horizon).
    TrimmedData,
    /// A shard with records not yet read no longer exists in the stream: it had an unfinished
    /// checkpoint, it was never seen by this consumer but a listed shard names it as its parent,
    /// or it disappeared while being read.
    VanishedShard,
    /// A shard read from its start (`TRIM_HORIZON`) whose records could have been trimmed
    /// before this consumer got to them: its parent vanished, was trimmed while being read, or
    /// is itself gone from the listing (so the shard is older than the retention). The service
    /// cannot say whether any record was in fact trimmed, so this reports a possible loss of the
    /// shard's first records.
    TrimmedStart,
}

/// Which records of a shard a [`Gap`] lost: every record after [`after`](Self::after) and before
/// [`before`](Self::before).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LostRange {
    /// The last record processed before the gap; `None`: from the shard's start.
    pub after: Option<SequenceNumber>,
    /// The oldest record still retained after the gap (the first one read after it); `None`:
    /// none was retained when the gap was found — nothing more of the shard could be read, or, on
    /// an open shard, every record delivered from it afterwards is newer than the lost ones.
    pub before: Option<SequenceNumber>,
}

impl LostRange {
    /// Whether the record with this sequence number is inside the lost range.
    ///
    /// ```
    /// use dynamodb_stream::events::LostRange;
    /// let lost = LostRange {
    ///     after: Some("100000000000000000100".parse()?),
    ///     before: Some("100000000000000000200".parse()?),
    /// };
    /// assert!(lost.contains(&"100000000000000000150".parse()?));
    /// assert!(!lost.contains(&"100000000000000000100".parse()?));
    /// assert!(!lost.contains(&"100000000000000000200".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&self, sequence_number: &SequenceNumber) -> bool {
        self.after.as_ref().is_none_or(|a| sequence_number > a)
            && self.before.as_ref().is_none_or(|b| sequence_number < b)
    }
}

impl std::fmt::Display for LostRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.after {
            Some(a) => write!(f, "lost: records after {a}")?,
            None => write!(f, "lost: records from the shard's start")?,
        }
        match &self.before {
            Some(b) => write!(f, " and before {b}"),
            None => write!(f, " on, as far as was retained"),
        }
    }
}

/// What the consumer did about a [`Gap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapAction {
    /// The consumer stops with an error.
    Stopped,
    /// Reading went on from the oldest retained record (or past the vanished shard).
    Continued,
}

/// A record in the vocabulary of the npm `dynamodb-stream` package: insert, modify and remove
/// events with plain items.
///
/// ```
/// # use dynamodb_stream::{events::Change, StreamRecord};
/// # fn f(record: &StreamRecord) {
/// match Change::from(record) {
///     Change::Insert { new_image, .. } => println!("insert {new_image:?}"),
///     Change::Modify { old_image, new_image, .. } => println!("{old_image:?} -> {new_image:?}"),
///     Change::Remove { old_image, .. } => println!("remove {old_image:?}"),
///     _ => {} // `Other` (unknown event names), and kinds added later
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// `insert record`.
    Insert {
        /// The key attributes.
        keys: Item,
        /// The new item (absent on `KEYS_ONLY` / `OLD_IMAGE` streams).
        new_image: Option<Item>,
    },
    /// `modify record`.
    Modify {
        /// The key attributes.
        keys: Item,
        /// The item before (absent on `KEYS_ONLY` / `NEW_IMAGE` streams).
        old_image: Option<Item>,
        /// The item after.
        new_image: Option<Item>,
    },
    /// `remove record` (including TTL deletions).
    Remove {
        /// The key attributes.
        keys: Item,
        /// The item before.
        old_image: Option<Item>,
    },
    /// A record with an event name this crate does not know.
    Other {
        /// The event name.
        event_name: String,
        /// The key attributes.
        keys: Item,
    },
}

impl From<&StreamRecord> for Change {
    fn from(r: &StreamRecord) -> Self {
        let keys = r.keys().clone();
        match r.kind() {
            RecordKind::Insert => Change::Insert {
                keys,
                new_image: r.new_image().cloned(),
            },
            RecordKind::Modify => Change::Modify {
                keys,
                old_image: r.old_image().cloned(),
                new_image: r.new_image().cloned(),
            },
            RecordKind::Remove { .. } => Change::Remove {
                keys,
                old_image: r.old_image().cloned(),
            },
            RecordKind::Unknown(name) => Change::Other {
                event_name: name.clone(),
                keys,
            },
        }
    }
}
