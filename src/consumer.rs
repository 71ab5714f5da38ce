//! The public handle: build, run, observe and stop a consumer.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::actors::{Outcome, Shared, Tree};
use crate::checkpoint::{CheckpointStore, MemoryCheckpointStore, StreamKey};
use crate::config::{ConsumerConfig, GapPolicy};
use crate::delivery::{FailureSink, KindFilter, RecordFilter, RetryPolicy};
use crate::error::{Error, Result};
use crate::events::ConsumerEvent;
use crate::handler::{handler_fn, DynHandler, Handler, HandlerFactory, ShardInfo};
use crate::lease::LeaseStore;
use crate::position::StartPosition;
use crate::readiness::{ConsumerProbe, Probe, Readiness, ReadinessCriteria};
use crate::record::StreamRecord;
use crate::source::StreamsApi;
use crate::status::{ConsumerStatus, Health, StatusBoard};
use crate::telemetry::Metrics;
use crate::Batch;

/// How many events a slow [`Consumer::events`] receiver may fall behind before it misses some.
pub const EVENT_CAPACITY: usize = 4096;

/// A running consumer of one DynamoDB stream.
///
/// Dropping it without [`shutdown`](Self::shutdown) is a crash: every actor is killed at once,
/// in-flight batches are abandoned, and the next start resumes from the last durable
/// checkpoint (records after it are delivered again).
///
/// ```no_run
/// use dynamodb_stream::{checkpoint::FileCheckpointStore, Batch, Consumer, HandlerError, StartPosition};
///
/// # async fn run(client: aws_sdk_dynamodbstreams::Client, stream_arn: String) -> dynamodb_stream::Result<()> {
/// let mut consumer = Consumer::builder(client, stream_arn)
///     .handler_fn(|batch: Batch| async move {
///         for record in batch.records() {
///             println!("{:?} {}", record.kind(), record.key_string());
///         }
///         Ok::<(), HandlerError>(())
///     })
///     .checkpoints(FileCheckpointStore::new("orders.checkpoints.json"))
///     .start_from(StartPosition::TrimHorizon)
///     .spawn()
///     .await?;
/// tokio::select! {
///     result = consumer.join() => result?,
///     _ = tokio::signal::ctrl_c() => consumer.shutdown().await?,
/// }
/// # Ok(()) }
/// ```
pub struct Consumer {
    actors: Tree,
    events: broadcast::Sender<ConsumerEvent>,
    outcome: Outcome,
    stream_arn: String,
    stopped: bool,
    board: Arc<StatusBoard>,
    api: Arc<dyn StreamsApi>,
    leases: bool,
    probe: ConsumerProbe,
}

/// What a consumer handled: the result of [`ConsumerBuilder::run_once`], or
/// [`Consumer::report`] at any time.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RunReport {
    /// Records acknowledged by the handler, per shard, in this run (records delivered again
    /// after a restart count again; filtered-out records count too, being acknowledged).
    pub records: std::collections::BTreeMap<String, u64>,
    /// Every gap reported, in order.
    pub gaps: Vec<crate::events::Gap>,
}

impl RunReport {
    /// Records acknowledged in all shards together.
    pub fn total_records(&self) -> u64 {
        self.records.values().sum()
    }

    fn from_board(board: &StatusBoard) -> Self {
        board.view(|shards, meta| Self {
            records: shards
                .iter()
                .filter(|(_, e)| e.records > 0)
                .map(|(id, e)| (id.clone(), e.records))
                .collect(),
            gaps: meta.gaps.clone(),
        })
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("stream_arn", &self.stream_arn)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Start building a consumer of `stream_arn` read through `source` (an
    /// `aws_sdk_dynamodbstreams::Client`, a [`Simulator`](crate::sim::Simulator), or any
    /// [`StreamsApi`]).
    pub fn builder(source: impl StreamsApi, stream_arn: impl Into<String>) -> ConsumerBuilder {
        let config = ConsumerConfig::default();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        ConsumerBuilder {
            api: Arc::new(source),
            stream_arn: stream_arn.into(),
            config,
            factory: None,
            store: None,
            events,
            table: None,
            accept_new_stream: false,
            filter: RecordFilter::default(),
            failure_sink: None,
            meter: None,
            leases: None,
        }
    }

    /// Start building a consumer of a table's current stream: DescribeTable gives its
    /// `LatestStreamArn`. Fails with a clear error when the table does not exist or has no
    /// stream.
    #[cfg(feature = "aws")]
    pub async fn for_table(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: &str,
    ) -> Result<ConsumerBuilder> {
        let resolved = crate::source::aws::resolve_table_stream(dynamodb, table).await?;
        let mut builder = Self::builder(streams, resolved.stream_arn);
        builder.table = Some(table.to_owned());
        Ok(builder)
    }

    /// The stream being consumed.
    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// Subscribe to lifecycle events from now on (see also [`ConsumerBuilder::events`] to miss
    /// none). A receiver that falls more than [`EVENT_CAPACITY`] events behind is told how many
    /// it missed (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<ConsumerEvent> {
        self.events.subscribe()
    }

    /// Where every shard stands: state, lineage, acknowledged position, lag, last error; and the
    /// watchdog's health view.
    pub fn status(&self) -> ConsumerStatus {
        self.board.snapshot(&self.stream_arn, self.api.wall_clock())
    }

    /// The watchdog's view, e.g. for a readiness probe: healthy when no shard is stalled,
    /// quarantined or stuck in its handler, and no ended shard misses its children.
    pub fn health(&self) -> Health {
        self.board.health()
    }

    /// Whether the consumer is doing its job now (for a readiness probe): every shard it owns
    /// is being read, none is quarantined, stalled, restarting, stopped by a gap or blocked in
    /// its handler, no ended shard misses its children, and none lags more than
    /// `criteria.max_lag`; otherwise why not, shard by shard. See [`Probe`] for a handle that
    /// outlives this borrow (to mount in an HTTP server).
    pub fn readiness(&self, criteria: &ReadinessCriteria) -> Readiness {
        self.probe.readiness(criteria)
    }

    /// Whether the consumer still runs (for a liveness probe): false once it stopped, by an
    /// error, a shutdown or a crash. Slowness or an unreachable stream never make it false.
    pub fn is_alive(&self) -> bool {
        self.probe.is_alive()
    }

    /// A cloneable handle answering [`readiness`](Self::readiness) and
    /// [`is_alive`](Self::is_alive) from any task while this consumer runs (or is awaited in
    /// [`join`](Self::join)); see the [`Probe`] docs for serving it over HTTP.
    pub fn probe(&self) -> Probe {
        Probe::of_consumer(self.probe.clone())
    }

    /// A future that resolves once the consumer has caught up with the stream as it is now:
    /// every shard that exists now has been read and acknowledged up to where the stream stood
    /// at this call, children of shards that end meanwhile included. The consumer goes on
    /// reading; the future only says when that point is passed.
    ///
    /// A shard counts as caught up when everything handed to its handler is acknowledged and a
    /// GetRecords sent after this call found no more records, or a record written after this
    /// call was acknowledged (its approximate creation time is later than the wall clock now,
    /// so a busy shard that never runs empty still gets there).
    ///
    /// Errors: a quarantined shard ([`Error::Quarantined`]), a shard stopped by a gap
    /// ([`Error::Gap`]), a consumer that stopped before it got there (its own error comes from
    /// [`join`](Self::join) or [`shutdown`](Self::shutdown)), or a consumer sharing the stream
    /// through leases ([`Error::InvalidArgument`]: other workers read some of the shards).
    ///
    /// ```no_run
    /// # async fn f(consumer: dynamodb_stream::Consumer) -> dynamodb_stream::Result<()> {
    /// consumer.caught_up().await?; // everything written before this line was handled
    /// consumer.shutdown().await?; // and its checkpoint is durable
    /// # Ok(()) }
    /// ```
    pub fn caught_up(&self) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        self.caught_up_since(crate::rt::Instant::now(), self.api.wall_clock())
    }

    /// [`caught_up`](Self::caught_up) as of an earlier moment.
    pub(crate) fn caught_up_since(
        &self,
        asked: crate::rt::Instant,
        asked_wall: std::time::SystemTime,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        self.caught_up_reporting(asked, asked_wall, |_| {})
    }

    /// [`caught_up_since`](Self::caught_up_since), telling `on_progress` how many shards are not
    /// caught up yet whenever that is evaluated.
    pub(crate) fn caught_up_reporting(
        &self,
        asked: crate::rt::Instant,
        asked_wall: std::time::SystemTime,
        on_progress: impl FnMut(usize) + Send + 'static,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let board = self.board.clone();
        let leases = self.leases;
        async move {
            if leases {
                return Err(Error::InvalidArgument(
                    "caught_up is not available with leases: other workers read some of the \
                     shards"
                        .into(),
                ));
            }
            crate::catch_up::wait(board, asked, asked_wall, on_progress).await
        }
    }

    /// What this consumer handled so far: records acknowledged per shard, and every gap.
    pub fn report(&self) -> RunReport {
        RunReport::from_board(&self.board)
    }

    /// Wait until the consumer stops by itself: an error (a gap under [`GapPolicy::Fail`], a
    /// quarantine with `stop_consumer_on_quarantine`, a corrupt or foreign checkpoint, a stream
    /// that vanished), or a disabled stream read to its end (`Ok`).
    ///
    /// Cancel-safe; the error is returned once.
    pub async fn join(&mut self) -> Result<()> {
        if !self.stopped {
            self.actors.join().await;
            self.stopped = true;
        }
        self.take_outcome()
    }

    /// Graceful stop: stop reading, let in-flight batches finish, call `on_shutdown` on every
    /// handler, write the final checkpoint (with leases: then hand every lease back). Returns the
    /// error the consumer had stopped with, if it had.
    pub async fn shutdown(mut self) -> Result<()> {
        if !self.stopped {
            self.actors.shutdown().await;
            self.stopped = true;
        }
        self.take_outcome()
    }

    /// Stop at once without draining or a final checkpoint, as a crash would.
    pub fn abort(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if !self.stopped {
            self.actors.kill();
            self.stopped = true;
        }
        // A killed actor runs no `post_stop`: tell those waiting on the board here.
        self.board.update_meta(|m| m.closed = true);
    }

    fn take_outcome(&self) -> Result<()> {
        match self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Configures a [`Consumer`]; made by [`Consumer::builder`].
pub struct ConsumerBuilder {
    api: Arc<dyn StreamsApi>,
    stream_arn: String,
    config: ConsumerConfig,
    factory: Option<HandlerFactory>,
    store: Option<Arc<dyn CheckpointStore>>,
    events: broadcast::Sender<ConsumerEvent>,
    /// Set by `for_table`: lets `spawn` notice a replaced stream.
    table: Option<String>,
    accept_new_stream: bool,
    filter: RecordFilter,
    failure_sink: Option<Arc<dyn FailureSink>>,
    meter: Option<opentelemetry::metrics::Meter>,
    leases: Option<(Arc<dyn LeaseStore>, String)>,
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("stream_arn", &self.stream_arn)
            .field("config", &self.config)
            .field("has_handler", &self.factory.is_some())
            .field("has_checkpoints", &self.store.is_some())
            .finish()
    }
}

impl ConsumerBuilder {
    /// Make a new handler per shard (called at every shard start and restart).
    pub fn handler_factory<H, F>(mut self, factory: F) -> Self
    where
        H: Handler,
        F: Fn(&ShardInfo) -> H + Send + Sync + 'static,
    {
        self.factory = Some(Arc::new(move |shard: &ShardInfo| {
            Box::new(factory(shard)) as Box<dyn DynHandler>
        }));
        self
    }

    /// Use clones of one handler, one per shard.
    pub fn handler<H: Handler + Clone + Sync>(self, handler: H) -> Self {
        self.handler_factory(move |_| handler.clone())
    }

    /// Handle batches with a closure; it is shared by all shards.
    ///
    /// ```no_run
    /// # use dynamodb_stream::{Batch, Consumer, HandlerError, sim::Simulator};
    /// # let sim = Simulator::new();
    /// let builder = Consumer::builder(sim.clone(), sim.stream_arn())
    ///     .handler_fn(|batch: Batch| async move {
    ///         println!("{} records from {}", batch.len(), batch.shard().shard_id);
    ///         Ok::<(), HandlerError>(())
    ///     });
    /// ```
    pub fn handler_fn<F, Fut>(self, f: F) -> Self
    where
        F: Fn(Batch) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::result::Result<(), crate::HandlerError>>
            + Send
            + 'static,
    {
        let f = Arc::new(f);
        self.handler_factory(move |_| {
            let f = f.clone();
            handler_fn(move |batch| f(batch))
        })
    }

    /// Where positions are stored. Default: a [`MemoryCheckpointStore`] (lost on exit).
    pub fn checkpoints(mut self, store: impl CheckpointStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Where to start on shards open at the very first start on this stream (default
    /// `TrimHorizon`). Ignored once checkpoints exist.
    pub fn start_from(mut self, position: StartPosition) -> Self {
        self.config.start_position = position;
        self
    }

    /// The application name that keys the checkpoints (default `"default"`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.config.application_name = name.into();
        self
    }

    /// What to do about gaps (default [`GapPolicy::Fail`]).
    pub fn gap_policy(mut self, policy: GapPolicy) -> Self {
        self.config.gap_policy = policy;
        self
    }

    /// Replace the whole configuration (the start position, application name and gap policy
    /// set before are overwritten by `config`'s).
    pub fn config(mut self, config: ConsumerConfig) -> Self {
        self.config = config;
        self
    }

    /// Change the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut ConsumerConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// With [`Consumer::for_table`]: when the table's stream was replaced (disabled and
    /// re-enabled) while this application still has checkpoints for the previous stream, start
    /// on the new stream anyway (reporting [`ConsumerEvent::StreamChanged`]) instead of failing
    /// with [`Error::StreamChanged`]. Default `false`: whether the old stream's remaining records
    /// matter is the operator's call.
    pub fn accept_new_stream(mut self, accept: bool) -> Self {
        self.accept_new_stream = accept;
        self
    }

    /// Retry failing batches in place (see [`RetryPolicy`]) instead of restarting the shard
    /// worker on the first failure.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = Some(policy);
        self
    }

    /// Where records go when the retry policy gives up on them, so the shard can move on.
    /// Without a sink such a shard is quarantined instead.
    pub fn failure_sink(mut self, sink: impl FailureSink) -> Self {
        self.failure_sink = Some(Arc::new(sink));
        self
    }

    /// Only hand records of these kinds to the handler; the others are checkpointed as
    /// processed.
    ///
    /// ```no_run
    /// # use dynamodb_stream::{delivery::KindFilter, Consumer, sim::Simulator};
    /// # let sim = Simulator::new();
    /// let builder = Consumer::builder(sim.clone(), sim.stream_arn())
    ///     .filter_kinds([KindFilter::Remove, KindFilter::TtlRemove]);
    /// ```
    pub fn filter_kinds(mut self, kinds: impl IntoIterator<Item = KindFilter>) -> Self {
        self.filter.kinds = Some(kinds.into_iter().collect());
        self
    }

    /// Only hand records for which `predicate` is true to the handler; the others are
    /// checkpointed as processed. Combines with [`filter_kinds`](Self::filter_kinds).
    pub fn filter(
        mut self,
        predicate: impl Fn(&StreamRecord) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filter.predicate = Some(Arc::new(predicate));
        self
    }

    /// Only hand records that match one of Lambda-style filter patterns to the handler (see
    /// [`FilterCriteria`](crate::filter::FilterCriteria)); the others are checkpointed as
    /// processed and counted in `ddbstream.records.filtered`, like every filtered record.
    /// Combines (ANDed) with [`filter_kinds`](Self::filter_kinds) and [`filter`](Self::filter);
    /// a second call replaces the criteria. Empty criteria let every record through.
    ///
    /// ```no_run
    /// # use dynamodb_stream::{filter::FilterCriteria, Consumer, sim::Simulator};
    /// # fn f() -> Result<(), dynamodb_stream::filter::FilterError> {
    /// # let sim = Simulator::new();
    /// let shipped = FilterCriteria::from_patterns([
    ///     r#"{"dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}}}}"#,
    /// ])?;
    /// let builder = Consumer::builder(sim.clone(), sim.stream_arn()).filter_criteria(shipped);
    /// # Ok(()) }
    /// ```
    pub fn filter_criteria(mut self, criteria: crate::filter::FilterCriteria) -> Self {
        // Empty criteria would pass everything: leaving the filter off keeps the stage's
        // no-filter fast path.
        self.filter.criteria = (!criteria.is_empty()).then(|| Arc::new(criteria));
        self
    }

    /// Run `n` handler instances per shard concurrently, routing records by item key so each
    /// item's changes stay in order (DynamoDB orders changes per item only). The checkpoint moves
    /// only past records every lane has finished.
    pub fn key_parallelism(mut self, n: usize) -> Self {
        self.config.key_parallelism = n;
        self
    }

    /// Records per handler call, and how long to wait for a fuller batch.
    pub fn batching(mut self, batch_size: usize, window: std::time::Duration) -> Self {
        self.config.batch_size = batch_size;
        self.config.batch_window = window;
        self
    }

    /// Share the stream with other workers through a lease table: each shard is processed by
    /// the one worker holding its lease; workers take free and expired leases, balance by taking
    /// gradually from busier workers, and hand leases back on shutdown. Positions are stored in
    /// the lease table with every write fenced by the lease (a worker that lost a lease can never
    /// move its checkpoint), so [`checkpoints`](Self::checkpoints) is not used. `worker_id` must
    /// be unique among the workers (a host name plus process id will do). Timing and limits:
    /// [`ConsumerConfig::lease`](crate::ConsumerConfig).
    pub fn leases(mut self, store: impl LeaseStore, worker_id: impl Into<String>) -> Self {
        self.leases = Some((Arc::new(store), worker_id.into()));
        self
    }

    /// Record metrics into `meter` (default: the global meter provider's `dynamodb-stream`
    /// meter, a no-op until the application installs a provider). Names: [`crate::telemetry::names`].
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Subscribe to events before the consumer starts, so none are missed.
    pub fn events(&self) -> broadcast::Receiver<ConsumerEvent> {
        self.events.subscribe()
    }

    /// Validate, load checkpoints, list the stream and establish every shard's start position,
    /// then return the running consumer. Must run inside a tokio runtime.
    ///
    /// With `StartPosition::Latest`, every record written after `spawn` returns is delivered.
    /// While the stream cannot be listed because of transient errors (throttling, outages),
    /// `spawn` keeps retrying; wrap it in a timeout if you need a bound.
    ///
    /// Errors: a malformed stream ARN, no handler, an invalid configuration, checkpoints that
    /// cannot be read or do not belong to the stream (corrupt, foreign), a stream that does not
    /// exist, a gap in stored positions under `GapPolicy::Fail` — the consumer never starts over
    /// silently.
    pub async fn spawn(self) -> Result<Consumer> {
        crate::source::check_stream_arn(&self.stream_arn)?;
        self.config.validate()?;
        let factory = self.factory.ok_or_else(|| {
            Error::InvalidArgument(
                "no handler: call handler(), handler_factory() or handler_fn()".into(),
            )
        })?;
        let store: Arc<dyn CheckpointStore> = match self.store {
            Some(s) => s,
            None => Arc::new(MemoryCheckpointStore::new()),
        };
        let key = StreamKey {
            application: self.config.application_name.clone(),
            stream_arn: self.stream_arn.clone(),
        };
        // With leases the positions live in the lease table, read by the coordinator.
        let stored = match &self.leases {
            Some((_, worker)) if worker.is_empty() => {
                return Err(Error::InvalidArgument(
                    "the lease worker id must not be empty".into(),
                ))
            }
            Some((leases, _)) => {
                leases.ensure_table().await.map_err(Error::Lease)?;
                None
            }
            None => store.load(&key).await?,
        };
        if let (Some(table), None) = (&self.table, &stored) {
            let table_prefix = self.stream_arn.split("/stream/").next().unwrap_or_default();
            let previous = store
                .streams(&key.application)
                .await?
                .into_iter()
                .find(|arn| {
                    arn != &self.stream_arn && arn.split("/stream/").next() == Some(table_prefix)
                });
            if let Some(previous) = previous {
                if !self.accept_new_stream {
                    return Err(Error::StreamChanged {
                        table: table.clone(),
                        previous,
                        current: self.stream_arn.clone(),
                    });
                }
                tracing::warn!(%previous, current = %self.stream_arn, "the table's stream was replaced; starting on the new stream");
                let _ = self.events.send(ConsumerEvent::StreamChanged {
                    previous,
                    current: self.stream_arn.clone(),
                });
            }
        }
        let events = self.events;
        let board = Arc::new(StatusBoard::default());
        let meter = self
            .meter
            .unwrap_or_else(|| opentelemetry::global::meter("dynamodb-stream"));
        let metrics = Metrics::new(&meter, board.clone());
        let api = self.api.clone();
        let leases = self.leases.is_some();
        let (stall_timeout, handler_stuck_after) =
            (self.config.stall_timeout, self.config.handler_stuck_after);
        let shared = Arc::new(Shared {
            board: board.clone(),
            metrics,
            api: self.api,
            config: self.config,
            stream_arn: self.stream_arn.clone(),
            events: events.clone(),
            factory,
            filter: self.filter,
            failure_sink: self.failure_sink,
            leases: self.leases,
            workers: std::sync::atomic::AtomicUsize::new(0),
        });
        let outcome: Outcome = Arc::new(Mutex::new(None));
        let actors = Tree::start(shared, store, key, stored, outcome.clone()).await?;
        let probe = ConsumerProbe {
            board: board.clone(),
            api: api.clone(),
            liveness: actors.liveness(),
            stall_timeout,
            handler_stuck_after,
        };
        Ok(Consumer {
            probe,
            actors,
            events,
            outcome,
            stream_arn: self.stream_arn,
            stopped: false,
            board,
            api,
            leases,
        })
    }

    /// Read until caught up, then stop: spawn, wait until every shard that exists now has been
    /// read and acknowledged up to where the stream stands now (children of shards that end
    /// meanwhile included; see [`Consumer::caught_up`]), take the final checkpoint and stop. The
    /// pull style of a cron job or a serverless function: called again later with the same
    /// checkpoint store, it continues where this run stopped, so repeated runs deliver every
    /// record, each once when nothing fails. A shard that receives writes the whole time does not
    /// keep it running: it reads up to the moment it was called.
    ///
    /// Not available with leases. The first run on a stream starts where
    /// [`start_from`](Self::start_from) says.
    ///
    /// ```
    /// use dynamodb_stream::{checkpoint::MemoryCheckpointStore, sim::Simulator, Batch, Consumer, HandlerError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sim = Simulator::new();
    /// let store = MemoryCheckpointStore::new();
    /// let run = || {
    ///     Consumer::builder(sim.clone(), sim.stream_arn())
    ///         .checkpoints(store.clone())
    ///         .handler_fn(|batch: Batch| async move { Ok::<(), HandlerError>(()) })
    ///         .run_once()
    /// };
    /// sim.put_item(serde_dynamo::to_item(serde_json::json!({"pk": "a"}))?)?;
    /// assert_eq!(run().await?.total_records(), 1);
    /// sim.put_item(serde_dynamo::to_item(serde_json::json!({"pk": "b"}))?)?;
    /// assert_eq!(run().await?.total_records(), 1); // only what is new
    /// # Ok(()) }
    /// ```
    pub async fn run_once(self) -> Result<RunReport> {
        let asked = crate::rt::Instant::now();
        let asked_wall = self.api.wall_clock();
        let consumer = self.spawn().await?;
        let caught_up = consumer.caught_up_since(asked, asked_wall).await;
        let board = consumer.board.clone();
        // The consumer's own error (a gap under GapPolicy::Fail, a failed store) says more than
        // "stopped before it caught up".
        consumer.shutdown().await?;
        caught_up?;
        Ok(RunReport::from_board(&board))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_arns_are_checked() {
        assert!(crate::source::check_stream_arn(
            "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2024-01-01T00:00:00.000"
        )
        .is_ok());
        for bad in [
            "",
            "orders",
            "arn:aws:dynamodb:us-east-1:0:table/t",
            "arn:aws:s3:::bucket/table/t/stream/x",
        ] {
            let e = crate::source::check_stream_arn(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a DynamoDB stream ARN"), "{e}");
        }
    }
}
