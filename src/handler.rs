//! The user's side: a [`Handler`] per shard that receives ordered [`Batch`]es.

use std::future::Future;
use std::sync::Arc;

use crate::error::HandlerError;
use crate::record::{SequenceNumber, StreamRecord};
use crate::source::BoxFuture;

/// The shard a handler works on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ShardInfo {
    /// The stream ARN.
    pub stream_arn: String,
    /// The shard id.
    pub shard_id: String,
    /// The shard it descends from, if known.
    pub parent_shard_id: Option<String>,
    /// Which start of this shard's worker inside this consumer the handler belongs to: 1 for
    /// the first, one more after every restart (a failure, a lease taken back). Handlers of
    /// different incarnations never run at the same time.
    pub incarnation: u64,
    /// Which handler instance of the shard this is, `0..key_parallelism`
    /// ([`ConsumerBuilder::key_parallelism`](crate::ConsumerBuilder::key_parallelism)); always
    /// 0 without key parallelism.
    pub lane: usize,
}

impl ShardInfo {
    /// A shard's first incarnation, lane 0 — for calling a handler's hooks in tests.
    ///
    /// ```
    /// let shard = dynamodb_stream::ShardInfo::new("arn:aws:dynamodb:…", "shardId-1", None);
    /// assert_eq!((shard.incarnation, shard.lane), (1, 0));
    /// ```
    pub fn new(
        stream_arn: impl Into<String>,
        shard_id: impl Into<String>,
        parent_shard_id: Option<String>,
    ) -> Self {
        Self {
            stream_arn: stream_arn.into(),
            shard_id: shard_id.into(),
            parent_shard_id,
            incarnation: 1,
            lane: 0,
        }
    }
}

/// Records of one shard, in strictly increasing sequence order, never empty.
///
/// ```
/// # use dynamodb_stream::Batch;
/// # fn f(batch: Batch) {
/// for record in batch.records() {
///     println!("{} {:?}", record.sequence_number(), record.kind());
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Batch {
    pub(crate) shard: Arc<ShardInfo>,
    // Shared with the consumer, which keeps the records for a retry: cloning a batch is cheap.
    pub(crate) records: Arc<Vec<StreamRecord>>,
}

impl Batch {
    /// A batch of `records` for `shard` (for tests of your own handlers).
    ///
    /// Returns `None` when `records` is empty or not in strictly increasing sequence order: the
    /// consumer never hands out such a batch.
    pub fn new(shard: ShardInfo, records: Vec<StreamRecord>) -> Option<Self> {
        let ordered = records
            .windows(2)
            .all(|w| w[0].sequence_number() < w[1].sequence_number());
        (!records.is_empty() && ordered).then(|| Self {
            shard: Arc::new(shard),
            records: Arc::new(records),
        })
    }

    /// A batch from records already checked to be in strictly increasing order.
    pub(crate) fn from_ordered(
        shard: Arc<ShardInfo>,
        records: Arc<Vec<StreamRecord>>,
    ) -> Option<Self> {
        (!records.is_empty()).then_some(Self { shard, records })
    }

    /// The shard these records come from.
    pub fn shard(&self) -> &ShardInfo {
        &self.shard
    }

    /// The records, in sequence order.
    pub fn records(&self) -> &[StreamRecord] {
        &self.records
    }

    /// Iterate over the records.
    pub fn iter(&self) -> std::slice::Iter<'_, StreamRecord> {
        self.records.iter()
    }

    /// The records as an owned vector. This copies them while the consumer still holds the batch
    /// (it does during `handle`, to retry it); prefer [`records`](Self::records) to read.
    pub fn into_records(self) -> Vec<StreamRecord> {
        Arc::try_unwrap(self.records).unwrap_or_else(|shared| (*shared).clone())
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Always false for batches the consumer delivers.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The last record's sequence number: the checkpoint once this batch is acknowledged.
    pub fn last_sequence_number(&self) -> Option<&SequenceNumber> {
        self.records.last().map(|r| r.sequence_number())
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a StreamRecord;
    type IntoIter = std::slice::Iter<'a, StreamRecord>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}

/// Processes the records of one shard. The consumer makes one handler per shard (see
/// [`ConsumerBuilder::handler_factory`](crate::ConsumerBuilder::handler_factory)) and calls it
/// from one task at a time.
///
/// Contract:
/// - `handle` receives one shard's batches in sequence order, each batch after the previous one
///   returned `Ok`. Returning `Ok` acknowledges every record of the batch: the checkpoint may
///   move past them.
/// - Returning `Err` (or panicking, or exceeding the handler timeout) acknowledges nothing in the
///   batch: the shard worker restarts after a backoff and the batch is delivered again — to a new
///   handler made by the factory. Handlers must therefore be idempotent (at-least-once delivery).
/// - Parents come first: a child shard's handler starts only after its parent's last batch was
///   acknowledged and `on_shard_end` returned.
///
/// ```
/// use dynamodb_stream::{Batch, Handler, HandlerError};
///
/// struct Count(usize);
///
/// impl Handler for Count {
///     async fn handle(&mut self, batch: Batch) -> Result<(), HandlerError> {
///         self.0 += batch.len();
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + 'static {
    /// Called once before the first batch of a shard (and again after each restart, on the new
    /// handler). An `Err` counts as a failure of the shard worker.
    fn on_shard_start(
        &mut self,
        shard: &ShardInfo,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = shard;
        async { Ok(()) }
    }

    /// Process one batch. See the trait docs for what `Ok` and `Err` mean.
    fn handle(&mut self, batch: Batch) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called once when the shard was read to its end and every batch acknowledged, before its
    /// end is checkpointed. An `Err` means the end is not recorded and is retried after a restart.
    fn on_shard_end(
        &mut self,
        shard: &ShardInfo,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = shard;
        async { Ok(()) }
    }

    /// Called on graceful shutdown after the last in-flight batch of the shard was handled.
    fn on_shutdown(&mut self, shard: &ShardInfo) -> impl Future<Output = ()> + Send {
        let _ = shard;
        async {}
    }

    /// With leases: another worker now owns the shard. Called after a call in progress returned;
    /// no more batches follow and nothing more is checkpointed for this shard. Batches handled
    /// since the last checkpoint will be delivered again to the new owner.
    fn on_lease_lost(&mut self, shard: &ShardInfo) -> impl Future<Output = ()> + Send {
        let _ = shard;
        async {}
    }
}

/// A handler made from a closure: see
/// [`ConsumerBuilder::handler_fn`](crate::ConsumerBuilder::handler_fn).
#[derive(Clone)]
pub struct HandlerFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandlerFn")
    }
}

/// Wrap a closure `Fn(Batch) -> impl Future<Output = Result<(), HandlerError>>` as a [`Handler`].
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Batch) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    HandlerFn { f }
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Batch) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(&mut self, batch: Batch) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (self.f)(batch)
    }
}

/// Object-safe form of [`Handler`], so one consumer can hold handlers of any type.
pub(crate) trait DynHandler: Send + 'static {
    fn on_shard_start<'a>(
        &'a mut self,
        shard: &'a ShardInfo,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
    fn handle(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), HandlerError>>;
    fn on_shard_end<'a>(
        &'a mut self,
        shard: &'a ShardInfo,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
    fn on_shutdown<'a>(&'a mut self, shard: &'a ShardInfo) -> BoxFuture<'a, ()>;
    fn on_lease_lost<'a>(&'a mut self, shard: &'a ShardInfo) -> BoxFuture<'a, ()>;
}

impl<H: Handler> DynHandler for H {
    fn on_shard_start<'a>(
        &'a mut self,
        shard: &'a ShardInfo,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(Handler::on_shard_start(self, shard))
    }
    fn handle(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(Handler::handle(self, batch))
    }
    fn on_shard_end<'a>(
        &'a mut self,
        shard: &'a ShardInfo,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(Handler::on_shard_end(self, shard))
    }
    fn on_shutdown<'a>(&'a mut self, shard: &'a ShardInfo) -> BoxFuture<'a, ()> {
        Box::pin(Handler::on_shutdown(self, shard))
    }
    fn on_lease_lost<'a>(&'a mut self, shard: &'a ShardInfo) -> BoxFuture<'a, ()> {
        Box::pin(Handler::on_lease_lost(self, shard))
    }
}

/// Makes a fresh handler for a shard (at start and after every restart).
pub(crate) type HandlerFactory = Arc<dyn Fn(&ShardInfo) -> Box<dyn DynHandler> + Send + Sync>;
