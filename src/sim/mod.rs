//! An in-memory DynamoDB Streams simulator, for testing consumers and handlers.
//!
//! [`Simulator`] is a tiny table (put, delete, TTL delete) with a stream attached, and
//! implements [`StreamsApi`] like the real service. It exists to exercise what makes DynamoDB
//! Streams hard to consume correctly, deterministically and fast:
//!
//! - **Shard lineage.** Shards split ([`split_shard`](Simulator::split_shard)) and roll over
//!   ([`rollover_shard`](Simulator::rollover_shard), [`rollover_all`](Simulator::rollover_all));
//!   a closed shard's ending sequence number is the stream's counter at closing time, usually
//!   past its last record, as in the real service. Children take writes at once but can stay
//!   hidden from DescribeStream for a while
//!   ([`child_visibility_delay`](SimulatorBuilder::child_visibility_delay)), and DescribeStream
//!   can show a just-closed shard as still open
//!   ([`stale_describe_probability`](SimulatorBuilder::stale_describe_probability)).
//! - **Time.** Iterators expire after 15 minutes, records are trimmed after 24 hours, and closed
//!   shards disappear 24 hours after closing. Sim time follows tokio's clock (so
//!   `tokio::time::pause` and `advance` drive it) plus [`Simulator::advance`], which ages
//!   everything at once without sleeping.
//! - **Limits.** DescribeStream pages of at most 100 shards; GetRecords pages of at most 1000
//!   records and 1 MiB; a closed shard's last records come with `next_shard_iterator: None`.
//! - **Errors.** Expired iterators, trimmed positions, unknown shards and out-of-range sequence
//!   numbers fail with the [`SourceErrorKind`](crate::error::SourceErrorKind) the real service's
//!   exceptions map to. [`Simulator::set_fault`] injects throttling and other failures from a
//!   seeded generator, and [`Simulator::set_latency`] slows calls down.
//!
//! `examples/test_your_handler.rs` shows a complete test of a handler of your own.
//!
//! It does not model: read capacity or the real per-shard rate limits (it counts calls instead,
//! see [`Simulator::get_records_call_times`]), empty pages on shards that hold records, automatic
//! splits or the periodic rollover of the real service (call the topology methods), conditional
//! or partial updates, secondary indexes, item size limits, or more than one stream per table.
//! Sequence numbers have 21 digits and come from one counter per stream.
//!
//! ```
//! use dynamodb_stream::sim::Simulator;
//! use dynamodb_stream::source::{DescribeStreamRequest, IteratorPosition, StreamsApi};
//! use dynamodb_stream::RecordKind;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Order {
//!     pk: String,
//!     total: u32,
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let sim = Simulator::builder().table_name("orders").seed(7).build();
//!     sim.put_item(serde_dynamo::to_item(Order { pk: "o-1".into(), total: 5 })?)?;
//!
//!     let description = sim
//!         .describe_stream(DescribeStreamRequest {
//!             stream_arn: sim.stream_arn(),
//!             ..Default::default()
//!         })
//!         .await?;
//!     let shard_id = description.shards[0].shard_id.clone();
//!     let iterator = sim
//!         .get_shard_iterator(sim.stream_arn(), shard_id, IteratorPosition::TrimHorizon)
//!         .await?;
//!     let page = sim.get_records(iterator, None).await?;
//!
//!     assert_eq!(page.records.len(), 1);
//!     assert_eq!(page.records[0].kind(), &RecordKind::Insert);
//!     let order: Order = page.records[0].new_image_as()?.expect("a new image");
//!     assert_eq!(order.total, 5);
//!     assert!(page.next_shard_iterator.is_some(), "an open shard never ends");
//!     Ok(())
//! }
//! ```

mod builder;
mod fault;
mod iterator;
mod state;
mod util;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::error::SourceError;
use crate::record::{Item, StreamRecord, UserIdentity};
use crate::source::{BoxFuture, DescribeStreamRequest, IteratorPosition, RecordsPage, Shard};
use crate::source::{StreamDescription, StreamsApi};

pub use builder::SimulatorBuilder;
pub use fault::{FaultKind, FaultRule, Operation, SimStats};

use state::State;

/// Why a table or topology operation of the [`Simulator`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The item lacks this key attribute.
    #[error("item lacks key attribute {0:?}")]
    MissingKey(String),
    /// This key attribute is not a string, number or binary value.
    #[error("key attribute {0:?} must be a string, number or binary value")]
    InvalidKeyType(String),
    /// No such shard (it never existed or was trimmed away).
    #[error("no shard {0:?}")]
    ShardNotFound(String),
    /// The shard is closed and can no longer split or roll over.
    #[error("shard {0:?} is closed")]
    ShardClosed(String),
    /// The shard covers a single hash value and cannot split.
    #[error("shard {0:?} covers a single hash value and cannot split")]
    CannotSplit(String),
    /// The stream is disabled: no shard takes writes.
    #[error("the stream is disabled")]
    StreamDisabled,
}

/// A record as it was written, with the shard it went to; see [`Simulator::written_records`].
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenRecord {
    /// The shard the record was appended to.
    pub shard_id: String,
    /// The record.
    pub record: StreamRecord,
}

/// An in-memory table with a DynamoDB stream; see the [module docs](self).
///
/// Clones share the same table and stream, so a test can keep one handle and give another to
/// the consumer.
#[derive(Clone)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Simulator").field(&*self.lock()).finish()
    }
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Simulator {
    /// A simulator with every [`SimulatorBuilder`] default: table `sim-table` keyed by `pk`, one
    /// shard, `NEW_AND_OLD_IMAGES`, the real service's limits and no faults.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configure a simulator.
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::default()
    }

    fn from_builder(builder: SimulatorBuilder) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::new(builder))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("simulator state mutex poisoned")
    }

    /// Locks the state, brings trimming up to date and runs `f` at the current sim time.
    fn with_state<T>(&self, f: impl FnOnce(&mut State, Duration) -> T) -> T {
        let mut state = self.lock();
        let now = state.now();
        state.maintain(now);
        f(&mut state, now)
    }

    // ----- clock -----

    /// Moves sim time forward by `by` at once: iterators age, records and closed shards get
    /// trimmed, hidden children become visible. Like DynamoDB Local's `dilateEventTimes`, but
    /// for everything. Takes effect on the next call.
    pub fn advance(&self, by: Duration) {
        self.lock().advance(by);
    }

    /// Sim time since the simulator was built: tokio time elapsed plus every
    /// [`advance`](Self::advance).
    pub fn elapsed(&self) -> Duration {
        self.lock().now()
    }

    /// The simulator's wall clock: its start time plus [`elapsed`](Self::elapsed). Record
    /// creation times are read from it.
    pub fn now_system_time(&self) -> SystemTime {
        let state = self.lock();
        state.wall(state.now())
    }

    // ----- table -----

    /// Writes an item, replacing any item with the same key. Appends an `INSERT` record if the
    /// key was new, a `MODIFY` record if the item changed, and nothing if it is identical.
    pub fn put_item(&self, item: Item) -> Result<(), SimError> {
        self.with_state(|s, now| s.put_item(now, item))
    }

    /// Deletes the item with these keys (other attributes are ignored), appending a `REMOVE`
    /// record if it existed.
    pub fn delete_item(&self, keys: &Item) -> Result<(), SimError> {
        self.with_state(|s, now| s.delete_item(now, keys, None))
    }

    /// Deletes the item as DynamoDB's Time to Live does: the `REMOVE` record carries the user
    /// identity `Service` / `dynamodb.amazonaws.com`.
    pub fn ttl_delete(&self, keys: &Item) -> Result<(), SimError> {
        let identity = UserIdentity {
            kind: "Service".to_owned(),
            principal_id: "dynamodb.amazonaws.com".to_owned(),
        };
        self.with_state(|s, now| s.delete_item(now, keys, Some(identity)))
    }

    /// The item with these keys; `None` if absent or if `keys` lacks a key attribute.
    pub fn get_item(&self, keys: &Item) -> Option<Item> {
        self.lock().get_item(keys)
    }

    /// Every item, ordered by key.
    pub fn scan(&self) -> Vec<Item> {
        self.lock().scan()
    }

    /// How many items the table holds.
    pub fn item_count(&self) -> usize {
        self.lock().item_count()
    }

    // ----- stream and topology -----

    /// The stream's ARN,
    /// `arn:aws:dynamodb:us-east-1:000000000000:table/<table>/stream/<start time>`.
    pub fn stream_arn(&self) -> String {
        self.lock().arn().to_owned()
    }

    /// The table's name.
    pub fn table_name(&self) -> String {
        self.lock().table_name().to_owned()
    }

    /// Closes an open shard and opens two children, each with half its hash range.
    /// Returns the children's ids (lower half first).
    pub fn split_shard(&self, shard_id: &str) -> Result<(String, String), SimError> {
        self.with_state(|s, now| s.split_shard(now, shard_id))
    }

    /// Closes an open shard and opens one child with the same hash range, as the service
    /// does every few hours. Returns the child's id.
    pub fn rollover_shard(&self, shard_id: &str) -> Result<String, SimError> {
        self.with_state(|s, now| s.rollover_shard(now, shard_id))
    }

    /// Rolls over every open shard; returns the new shards' ids.
    pub fn rollover_all(&self) -> Vec<String> {
        self.with_state(|s, now| s.rollover_all(now))
    }

    /// Disables the stream: every open shard closes without children, the status becomes
    /// `DISABLED`, and later table writes append no records. Existing records stay readable
    /// until trimmed.
    pub fn disable_stream(&self) {
        self.with_state(|s, now| s.disable_stream(now));
    }

    /// Whether [`disable_stream`](Self::disable_stream) was called.
    pub fn is_disabled(&self) -> bool {
        self.lock().is_disabled()
    }

    /// The ids of the open shards, in creation order.
    pub fn open_shards(&self) -> Vec<String> {
        self.with_state(|s, _| s.open_shards())
    }

    /// Every shard not yet trimmed away, in id (creation) order, including children still
    /// hidden from DescribeStream, and always with the true ending sequence number.
    pub fn shards(&self) -> Vec<Shard> {
        self.with_state(|s, _| s.shards())
    }

    /// The inclusive range of key hashes a shard covers; `None` for an unknown shard.
    pub fn hash_range(&self, shard_id: &str) -> Option<(u64, u64)> {
        self.lock().hash_range(shard_id)
    }

    /// The open shard that a write with these keys goes to now.
    pub fn shard_for_keys(&self, keys: &Item) -> Result<String, SimError> {
        self.with_state(|s, _| s.shard_for_keys(keys))
    }

    /// The records a shard still holds (not yet trimmed), oldest first; `None` for an unknown
    /// shard.
    pub fn retained_records(&self, shard_id: &str) -> Option<Vec<StreamRecord>> {
        self.with_state(|s, _| s.retained_records(shard_id))
    }

    /// Every record ever written, in write (sequence) order, including trimmed ones: the
    /// ground truth a consumer test compares against.
    pub fn written_records(&self) -> Vec<WrittenRecord> {
        self.lock().written()
    }

    /// How many records were ever written.
    pub fn records_written(&self) -> usize {
        self.lock().records_written()
    }

    // ----- faults and counters -----

    /// Makes `operation` fail according to `rule`, replacing its previous rule.
    pub fn set_fault(&self, operation: Operation, rule: FaultRule) {
        self.lock().set_fault(operation, rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.lock().clear_faults();
    }

    /// Makes every `operation` call wait this long (with `tokio::time::sleep`) before it
    /// answers; zero removes the delay.
    pub fn set_latency(&self, operation: Operation, latency: Duration) {
        self.lock().set_latency(operation, latency);
    }

    /// How often each call was made, and how many faults were injected.
    pub fn stats(&self) -> SimStats {
        self.lock().stats()
    }

    /// The sim time ([`elapsed`](Self::elapsed)) of every GetRecords call on this shard, in
    /// call order, failed calls included (the real service allows about 5 per second per
    /// shard).
    pub fn get_records_call_times(&self, shard_id: &str) -> Vec<Duration> {
        self.lock().call_times(shard_id)
    }

    /// Counts the call, then waits out its latency; returns its injected fault, if any.
    async fn begin(&self, op: Operation, iterator: Option<&str>) -> Option<SourceError> {
        let (fault, delay) = {
            let mut state = self.lock();
            let shard = iterator
                .and_then(|it| state.decode_iterator(it))
                .map(|it| it.shard_id);
            state.begin_call(op, shard.as_deref())
        };
        if !delay.is_zero() {
            crate::rt::sleep(delay).await;
        }
        fault.map(|kind| kind.to_error(op))
    }
}

impl StreamsApi for Simulator {
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, SourceError>> {
        Box::pin(async move {
            if let Some(fault) = self.begin(Operation::DescribeStream, None).await {
                return Err(fault);
            }
            self.with_state(|s, now| s.describe_stream(now, &request))
        })
    }

    fn get_shard_iterator(
        &self,
        stream_arn: String,
        shard_id: String,
        position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            if let Some(fault) = self.begin(Operation::GetShardIterator, None).await {
                return Err(fault);
            }
            self.with_state(|s, now| s.get_shard_iterator(now, &stream_arn, &shard_id, &position))
        })
    }

    fn wall_clock(&self) -> SystemTime {
        self.now_system_time()
    }

    fn get_records(
        &self,
        shard_iterator: String,
        limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, SourceError>> {
        Box::pin(async move {
            let fault = self
                .begin(Operation::GetRecords, Some(&shard_iterator))
                .await;
            if let Some(fault) = fault {
                return Err(fault);
            }
            self.with_state(|s, now| s.get_records(now, &shard_iterator, limit))
        })
    }
}
