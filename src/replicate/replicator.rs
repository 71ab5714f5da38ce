//! The bookmark → scan → stream pipeline, its status and its events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::backoff::Backoff;
use crate::checkpoint::{CheckpointStore, ShardCheckpoint, StreamCheckpoints, StreamKey};
use crate::config::ConsumerConfig;
use crate::error::{CheckpointError, Error, HandlerError, Result, RuntimeError};
use crate::events::ConsumerEvent;
use crate::handler::{Batch, Handler};
use crate::position::{initial_checkpoints, StartPosition};
use crate::record::{system_time_to_millis, RecordKind, StreamRecord, StreamViewType};
use crate::source::{describe_all, BoxFuture, StreamsApi};
use crate::Consumer;

use super::sink::{ItemChange, ReplicaSink, ScanProgress, SegmentProgress, SequencedChange};
use super::source::{ScanRequest, TableSource};
use super::TableInfo;

/// Scan segments unless told otherwise.
pub const DEFAULT_SEGMENTS: u32 = 4;

/// The application name that keys a replicator's checkpoints unless told otherwise.
pub const DEFAULT_APPLICATION: &str = "replicate";

/// An unfinished scan whose bookmark is older than this starts over: the stream keeps records
/// for 24 hours, and replaying from an older bookmark would miss the trimmed ones.
const BOOKMARK_MAX_AGE: Duration = Duration::from_secs(20 * 60 * 60);

/// Attempts of one Scan or GetRecords call on retryable failures before giving up.
const MAX_ATTEMPTS: u32 = 12;

/// Where a replicator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplicaPhase {
    /// Bookmarking the stream, checking the sink.
    Starting,
    /// Copying the table with a segmented Scan.
    Scanning,
    /// Replaying the stream; some shard is not yet caught up with the stream as it was when
    /// streaming started (see [`Consumer::caught_up`]), so the replica may mix older and newer
    /// states.
    CatchingUp,
    /// Every shard passed that point: the replica follows the table, a little behind.
    Live,
    /// The replicator stopped (see [`ReplicaStatus::error`]).
    Stopped,
}

/// A snapshot of a replicator's progress; see [`Replicator::status`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// The current phase.
    pub phase: ReplicaPhase,
    /// Items written by the scan, in this run and resumed ones.
    pub scanned_items: u64,
    /// The table's approximate item count (DescribeTable's `ItemCount`).
    pub estimated_items: Option<u64>,
    /// Scan rate in this run, items per second.
    pub items_per_second: f64,
    /// Estimated time to the end of the scan, from the rate and the item count estimate.
    pub eta: Option<Duration>,
    /// Stream changes applied in this run.
    pub applied_changes: u64,
    /// Shards not yet caught up with the stream as it was when streaming started; `None` until
    /// streaming starts.
    pub shards_behind: Option<usize>,
    /// Why the replicator stopped, when it failed.
    pub error: Option<String>,
}

impl ReplicaStatus {
    fn starting(estimated_items: Option<u64>) -> Self {
        Self {
            phase: ReplicaPhase::Starting,
            scanned_items: 0,
            estimated_items,
            items_per_second: 0.0,
            eta: None,
            applied_changes: 0,
            shards_behind: None,
            error: None,
        }
    }

    /// True until the replica has caught up with the stream as of the start of streaming
    /// (during the scan too).
    pub fn is_catching_up(&self) -> bool {
        matches!(
            self.phase,
            ReplicaPhase::Starting | ReplicaPhase::Scanning | ReplicaPhase::CatchingUp
        )
    }
}

/// What a replicator reports as it goes; see [`Replicator::events`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ReplicatorEvent {
    /// First run: every shard was bookmarked at `LATEST` (durably, by time).
    Bookmarked {
        /// The shards bookmarked.
        shards: usize,
        /// The bookmark time (Unix milliseconds).
        at_ms: u64,
    },
    /// The scan started, or resumed where a previous run stopped.
    ScanStarted {
        /// Segments.
        total_segments: u32,
        /// Whether an unfinished scan was resumed.
        resumed: bool,
    },
    /// Every segment was scanned.
    ScanCompleted {
        /// Items written by the scan (all runs).
        items: u64,
        /// Time this run spent scanning.
        elapsed: Duration,
    },
    /// The scan was already complete: streaming resumes from the stored checkpoints.
    ScanSkipped {
        /// Items the earlier scan wrote.
        items: u64,
    },
    /// An unfinished scan was thrown away and started over.
    ScanRestarted {
        /// Why.
        reason: String,
    },
    /// The consumer started on the stream.
    StreamStarted,
    /// Every shard passed the newest record that existed when streaming started.
    CaughtUp,
    /// Something the stream consumer reported.
    Consumer(ConsumerEvent),
}

/// Configures a [`Replicator`]; made by [`Replicator::builder`].
pub struct ReplicatorBuilder {
    table: Arc<dyn TableSource>,
    streams: Arc<dyn StreamsApi>,
    table_name: String,
    sink: Arc<dyn ReplicaSink>,
    segments: u32,
    scan_page_limit: Option<u32>,
    config: ConsumerConfig,
    events: broadcast::Sender<ReplicatorEvent>,
}

impl std::fmt::Debug for ReplicatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatorBuilder")
            .field("table_name", &self.table_name)
            .field("segments", &self.segments)
            .field("scan_page_limit", &self.scan_page_limit)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ReplicatorBuilder {
    /// Scan in `n` parallel segments (default [`DEFAULT_SEGMENTS`]; at least 1). A resumed
    /// scan keeps the number it was started with.
    pub fn segments(mut self, n: u32) -> Self {
        self.segments = n.clamp(1, 1_000_000);
        self
    }

    /// At most `limit` items per Scan page (default: the service's 1 MB pages). Smaller pages
    /// mean more, smaller transactions.
    pub fn scan_page_limit(mut self, limit: u32) -> Self {
        self.scan_page_limit = Some(limit.max(1));
        self
    }

    /// The application name that keys the checkpoints (default [`DEFAULT_APPLICATION`]).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.config.application_name = name.into();
        self
    }

    /// Tune the stream consumer. Its start position is ignored: the replicator bookmarks the
    /// stream itself.
    pub fn configure(mut self, f: impl FnOnce(&mut ConsumerConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Subscribe to events before the replicator starts, so none are missed.
    pub fn events(&self) -> broadcast::Receiver<ReplicatorEvent> {
        self.events.subscribe()
    }

    /// Check the table and the sink, then start replicating in the background.
    ///
    /// Errors (before anything is written to the sink): the table does not exist or has no
    /// stream, the stream does not carry new images, the sink holds another table or stream.
    pub async fn spawn(self) -> Result<Replicator> {
        self.config.validate()?;
        let info = self.table.table_info(&self.table_name).await?;
        check_table(&info)?;
        let progress = self.sink.bind(&info).await?;
        let (status_tx, status_rx) = watch::channel(ReplicaStatus::starting(info.item_count));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut config = self.config;
        config.start_position = StartPosition::Latest;
        let pipeline = Pipeline {
            key: StreamKey {
                application: config.application_name.clone(),
                stream_arn: info.stream_arn.clone(),
            },
            info: info.clone(),
            table: self.table,
            streams: self.streams,
            sink: self.sink,
            segments: self.segments,
            scan_page_limit: self.scan_page_limit,
            config,
            status: Arc::new(status_tx),
            events: self.events.clone(),
        };
        let task = tokio::spawn(pipeline.run(progress, stop_rx));
        Ok(Replicator {
            info,
            task: Some(task),
            outcome: None,
            status: status_rx,
            stop: stop_tx,
            events: self.events,
        })
    }
}

/// Fails with [`Error::InvalidArgument`] unless `info` describes a table that can be replicated:
/// its stream carries new images (`NEW_IMAGE` or `NEW_AND_OLD_IMAGES`) and it has a key schema.
/// [`ReplicatorBuilder::spawn`] checks this too; call it to fail before opening a sink.
pub fn check_table(info: &TableInfo) -> Result<()> {
    match info.view_type {
        Some(StreamViewType::NewImage | StreamViewType::NewAndOldImages) => {}
        other => {
            let view = other.map_or("an unknown view type", |v| v.as_str());
            return Err(Error::InvalidArgument(format!(
                "replicate needs NEW_IMAGE or NEW_AND_OLD_IMAGES, table {} streams {view}",
                info.table_name
            )));
        }
    }
    if info.key_schema.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "table {} reports no key schema",
            info.table_name
        )));
    }
    Ok(())
}

/// A running replication of one table into one sink.
///
/// Dropping it without [`shutdown`](Self::shutdown) is a crash: work stops at once, and the
/// next start resumes from what the sink committed (a scan page, a batch and its checkpoint are
/// each all or nothing).
#[derive(Debug)]
pub struct Replicator {
    info: TableInfo,
    task: Option<JoinHandle<Result<()>>>,
    outcome: Option<Result<()>>,
    status: watch::Receiver<ReplicaStatus>,
    stop: watch::Sender<bool>,
    events: broadcast::Sender<ReplicatorEvent>,
}

impl Replicator {
    /// Start building a replicator of `table_name` (scanned through `table`, streamed through
    /// `streams`) into `sink`.
    ///
    /// ```no_run
    /// # use dynamodb_stream::{replicate::{Replicator, SqliteReplica}, sim::Simulator};
    /// # async fn f() -> dynamodb_stream::Result<()> {
    /// let sim = Simulator::new();
    /// let sink = SqliteReplica::open("replica.sqlite").await?;
    /// let replicator = Replicator::builder(sim.clone(), sim.clone(), sim.table_name(), sink)
    ///     .spawn()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(
        table: impl TableSource,
        streams: impl StreamsApi,
        table_name: impl Into<String>,
        sink: impl ReplicaSink,
    ) -> ReplicatorBuilder {
        let (events, _) = broadcast::channel(crate::EVENT_CAPACITY);
        let config = ConsumerConfig {
            application_name: DEFAULT_APPLICATION.to_owned(),
            ..ConsumerConfig::default()
        };
        ReplicatorBuilder {
            table: Arc::new(table),
            streams: Arc::new(streams),
            table_name: table_name.into(),
            sink: Arc::new(sink),
            segments: DEFAULT_SEGMENTS,
            scan_page_limit: None,
            config,
            events,
        }
    }

    /// The table being replicated.
    pub fn table(&self) -> &TableInfo {
        &self.info
    }

    /// Where the replicator is now.
    pub fn status(&self) -> ReplicaStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change (for progress displays).
    pub fn watch_status(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.clone()
    }

    /// Subscribe to events from now on (see [`ReplicatorBuilder::events`] to miss none).
    pub fn events(&self) -> broadcast::Receiver<ReplicatorEvent> {
        self.events.subscribe()
    }

    /// Wait until the replica has caught up: the scan is complete and every shard has been read
    /// up to where the stream stood when streaming started (children of shards that ended
    /// meanwhile included; see [`Consumer::caught_up`]). Fails if the replicator stops first.
    pub async fn caught_up(&mut self) -> Result<()> {
        let mut status = self.status.clone();
        loop {
            let phase = status.borrow_and_update().phase;
            match phase {
                ReplicaPhase::Live => return Ok(()),
                ReplicaPhase::Stopped => {
                    self.join().await?;
                    return Err(
                        RuntimeError::new("the replicator stopped before catching up").into(),
                    );
                }
                _ => {}
            }
            if status.changed().await.is_err() {
                // The pipeline is gone without saying so: its outcome says why.
                self.join().await?;
                return Err(RuntimeError::new("the replicator stopped before catching up").into());
            }
        }
    }

    /// Wait until the replicator stops by itself (an error, or a disabled stream read to its
    /// end). Cancel-safe.
    pub async fn join(&mut self) -> Result<()> {
        if let Some(task) = self.task.as_mut() {
            let r = match task.await {
                Ok(r) => r,
                Err(e) => Err(RuntimeError::new("the replicator task failed")
                    .with_source(e)
                    .into()),
            };
            self.task = None;
            self.outcome = Some(r);
        }
        match self.outcome.take() {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Graceful stop: a scan stops after its current pages (and resumes next time), a running
    /// consumer drains and writes its final checkpoint.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        self.join().await
    }

    /// Stop at once, as a crash would.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Everything the background task needs.
struct Pipeline {
    key: StreamKey,
    info: TableInfo,
    table: Arc<dyn TableSource>,
    streams: Arc<dyn StreamsApi>,
    sink: Arc<dyn ReplicaSink>,
    segments: u32,
    scan_page_limit: Option<u32>,
    config: ConsumerConfig,
    status: Arc<watch::Sender<ReplicaStatus>>,
    events: broadcast::Sender<ReplicatorEvent>,
}

impl Pipeline {
    fn emit(&self, event: ReplicatorEvent) {
        // No subscriber is fine: events are informational.
        let _ = self.events.send(event);
    }

    async fn run(self, progress: ScanProgress, stop: watch::Receiver<bool>) -> Result<()> {
        let result = self.run_phases(progress, stop).await;
        self.status.send_modify(|s| {
            s.phase = ReplicaPhase::Stopped;
            s.error = result.as_ref().err().map(|e| e.to_string());
        });
        result
    }

    async fn run_phases(
        &self,
        mut progress: ScanProgress,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut stored = self.sink.load(&self.key).await?;
        if !matches!(progress, ScanProgress::Complete { .. }) {
            let now = system_time_to_millis(self.streams.wall_clock());
            if let Some(s) = &stored {
                let age = Duration::from_millis(now.saturating_sub(s.started_at_ms));
                if age > BOOKMARK_MAX_AGE {
                    self.emit(ReplicatorEvent::ScanRestarted {
                        reason: format!(
                            "the unfinished scan's bookmark is {} hours old; the stream keeps \
                             24 hours",
                            age.as_secs() / 3600
                        ),
                    });
                    self.sink.reset().await?;
                    progress = ScanProgress::NotStarted;
                    stored = None;
                }
            }
        }
        let segments = match progress {
            ScanProgress::Complete { items } => {
                self.status.send_modify(|s| s.scanned_items = items);
                self.emit(ReplicatorEvent::ScanSkipped { items });
                None
            }
            ScanProgress::NotStarted => {
                // A bookmark left by a run that crashed before `begin_scan` is older than a
                // new one would be, so it covers more: keep it.
                if stored.is_none() {
                    self.bookmark().await?;
                }
                self.sink.begin_scan(self.segments).await?;
                self.emit(ReplicatorEvent::ScanStarted {
                    total_segments: self.segments,
                    resumed: false,
                });
                let fresh = (0..self.segments)
                    .map(|segment| SegmentProgress {
                        segment,
                        resume_after: None,
                        done: false,
                        items: 0,
                    })
                    .collect();
                Some((self.segments, fresh))
            }
            ScanProgress::Running {
                total_segments,
                segments,
            } => {
                self.emit(ReplicatorEvent::ScanStarted {
                    total_segments,
                    resumed: true,
                });
                Some((total_segments, segments))
            }
        };
        if let Some((total, segments)) = segments {
            let started = Instant::now();
            if !self.scan(total, segments, stop.clone()).await? {
                return Ok(());
            }
            self.sink.complete_scan().await?;
            let items = self.status.borrow().scanned_items;
            self.emit(ReplicatorEvent::ScanCompleted {
                items,
                elapsed: started.elapsed(),
            });
        }
        self.stream(stop).await
    }

    /// First run: bookmark every shard at `LATEST`, durably, before the scan reads anything.
    async fn bookmark(&self) -> Result<()> {
        let description = describe_all(&*self.streams, &self.key.stream_arn, || {
            tokio::time::sleep(self.config.min_describe_interval)
        })
        .await?;
        let now_ms = system_time_to_millis(self.streams.wall_clock());
        let shards = initial_checkpoints(&description.shards, StartPosition::Latest, now_ms);
        let count = shards.len();
        self.sink.save(&self.key, now_ms, shards).await?;
        self.emit(ReplicatorEvent::Bookmarked {
            shards: count,
            at_ms: now_ms,
        });
        Ok(())
    }

    /// Scan the unfinished segments in parallel. Returns false when stopped before the end.
    async fn scan(
        &self,
        total: u32,
        segments: Vec<SegmentProgress>,
        stop: watch::Receiver<bool>,
    ) -> Result<bool> {
        let before: u64 = segments.iter().map(|s| s.items).sum();
        self.status.send_modify(|s| {
            s.phase = ReplicaPhase::Scanning;
            s.scanned_items = before;
        });
        let counter = Arc::new(ScanCounter {
            started: Instant::now(),
            before,
            this_run: Mutex::new(0),
        });
        let mut set = JoinSet::new();
        for segment in segments.into_iter().filter(|s| !s.done) {
            let worker = SegmentScan {
                table: self.table.clone(),
                sink: self.sink.clone(),
                table_name: self.info.table_name.clone(),
                total,
                limit: self.scan_page_limit,
                status: self.status.clone(),
                counter: counter.clone(),
                stop: stop.clone(),
            };
            set.spawn(worker.run(segment));
        }
        while let Some(joined) = set.join_next().await {
            let failure = match joined {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(
                    RuntimeError::new("a scan segment task failed")
                        .with_source(e)
                        .into(),
                ),
            };
            if let Some(e) = failure {
                // Abandoned pages are harmless: each page is one transaction in the sink.
                set.abort_all();
                return Err(e);
            }
        }
        Ok(!*stop.borrow())
    }

    /// Replay the stream into the sink until stopped.
    async fn stream(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        self.status
            .send_modify(|s| s.phase = ReplicaPhase::CatchingUp);
        let store = SinkStore {
            sink: self.sink.clone(),
        };
        let handler = ApplyHandler {
            sink: self.sink.clone(),
            key: self.key.clone(),
            status: self.status.clone(),
        };
        let builder = Consumer::builder(self.streams.clone(), self.key.stream_arn.clone())
            .config(self.config.clone())
            .checkpoints(store)
            .handler_factory(move |_| handler.clone());
        let mut consumer_events = builder.events();
        let forward = self.events.clone();
        tokio::spawn(async move {
            loop {
                match consumer_events.recv().await {
                    Ok(e) => {
                        let _ = forward.send(ReplicatorEvent::Consumer(e));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        // Caught up means: as of the moment streaming starts.
        let asked = crate::rt::Instant::now();
        let asked_wall = self.streams.wall_clock();
        let mut consumer = builder.spawn().await?;
        self.emit(ReplicatorEvent::StreamStarted);
        let status = self.status.clone();
        let mut caught_up =
            std::pin::pin!(
                consumer.caught_up_reporting(asked, asked_wall, move |behind| {
                    status.send_if_modified(|s| {
                        let changed = s.shards_behind != Some(behind);
                        s.shards_behind = Some(behind);
                        changed
                    });
                })
            );
        let mut waiting = true;
        enum Next {
            Stopped(Result<()>),
            Stop,
            CaughtUp(Result<()>),
        }
        loop {
            let next = tokio::select! {
                r = consumer.join() => Next::Stopped(r),
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() { Next::Stop } else { continue }
                }
                r = &mut caught_up, if waiting => Next::CaughtUp(r),
            };
            match next {
                Next::Stopped(r) => return r,
                Next::Stop => return consumer.shutdown().await,
                Next::CaughtUp(Ok(())) => {
                    waiting = false;
                    self.status.send_modify(|s| {
                        s.shards_behind = Some(0);
                        s.phase = ReplicaPhase::Live;
                    });
                    self.emit(ReplicatorEvent::CaughtUp);
                }
                Next::CaughtUp(Err(e)) => {
                    // The consumer's own error, when it stopped with one, says more.
                    consumer.shutdown().await?;
                    return Err(e);
                }
            }
        }
    }
}

/// Items scanned in this run, shared by the segment tasks.
struct ScanCounter {
    started: Instant,
    before: u64,
    this_run: Mutex<u64>,
}

/// One scan segment's loop.
struct SegmentScan {
    table: Arc<dyn TableSource>,
    sink: Arc<dyn ReplicaSink>,
    table_name: String,
    total: u32,
    limit: Option<u32>,
    status: Arc<watch::Sender<ReplicaStatus>>,
    counter: Arc<ScanCounter>,
    stop: watch::Receiver<bool>,
}

impl SegmentScan {
    async fn run(self, progress: SegmentProgress) -> Result<()> {
        let mut resume = progress.resume_after;
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            let request = ScanRequest {
                table_name: self.table_name.clone(),
                segment: progress.segment,
                total_segments: self.total,
                exclusive_start_key: resume.clone(),
                limit: self.limit,
            };
            let page = retry(|| self.table.scan_segment(request.clone())).await?;
            let n = page.items.len() as u64;
            self.sink
                .write_scan_page(
                    progress.segment,
                    page.items,
                    page.last_evaluated_key.clone(),
                )
                .await?;
            self.report(n);
            match page.last_evaluated_key {
                Some(k) => resume = Some(k),
                None => return Ok(()),
            }
        }
    }

    fn report(&self, n: u64) {
        let this_run = {
            let mut c = self
                .counter
                .this_run
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *c += n;
            *c
        };
        let elapsed = self.counter.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            this_run as f64 / elapsed
        } else {
            0.0
        };
        let scanned = self.counter.before + this_run;
        self.status.send_modify(|s| {
            s.scanned_items = scanned;
            s.items_per_second = rate;
            s.eta = match s.estimated_items {
                Some(total) if rate > 0.0 && total > scanned => {
                    Some(Duration::from_secs_f64((total - scanned) as f64 / rate))
                }
                Some(_) => Some(Duration::ZERO),
                None => None,
            };
        });
    }
}

/// Run `call` until it succeeds, backing off on retryable failures.
async fn retry<'a, T, F>(mut call: F) -> Result<T>
where
    F: FnMut() -> BoxFuture<'a, Result<T>>,
{
    let mut retry =
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).limited(MAX_ATTEMPTS - 1);
    loop {
        let e = match call().await {
            Err(e) if e.is_retryable() => e,
            other => return other,
        };
        match retry.next_wait() {
            Some(wait) => {
                tracing::warn!(error = %e, attempt = retry.failures(), backoff = ?wait, "retrying");
                tokio::time::sleep(wait).await;
            }
            None => return Err(e),
        }
    }
}

/// The sink as the consumer's checkpoint store.
struct SinkStore {
    sink: Arc<dyn ReplicaSink>,
}

impl CheckpointStore for SinkStore {
    fn load(
        &self,
        key: &StreamKey,
    ) -> BoxFuture<'_, std::result::Result<Option<StreamCheckpoints>, CheckpointError>> {
        self.sink.load(key)
    }

    fn save(
        &self,
        key: &StreamKey,
        started_at_ms: u64,
        shards: Vec<(String, ShardCheckpoint)>,
    ) -> BoxFuture<'_, std::result::Result<(), CheckpointError>> {
        self.sink.save(key, started_at_ms, shards)
    }

    fn streams(
        &self,
        application: &str,
    ) -> BoxFuture<'_, std::result::Result<Vec<String>, CheckpointError>> {
        self.sink.streams(application)
    }
}

/// Applies each batch to the sink together with the shard's checkpoint.
#[derive(Clone)]
struct ApplyHandler {
    sink: Arc<dyn ReplicaSink>,
    key: StreamKey,
    status: Arc<watch::Sender<ReplicaStatus>>,
}

impl Handler for ApplyHandler {
    async fn handle(&mut self, batch: Batch) -> std::result::Result<(), HandlerError> {
        let shard_id = batch.shard().shard_id.clone();
        let Some(through) = batch.last_sequence_number().cloned() else {
            return Ok(());
        };
        let changes = batch
            .into_records()
            .into_iter()
            .map(to_change)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let applied = self
            .sink
            .apply(&self.key, &shard_id, changes, through.clone())
            .await?;
        self.status.send_modify(|s| {
            s.applied_changes += applied as u64;
        });
        Ok(())
    }
}

/// What a record does to the replica.
fn to_change(record: StreamRecord) -> std::result::Result<SequencedChange, HandlerError> {
    let sequence_number = record.sequence_number().clone();
    let keys = record.keys().clone();
    let kind = record.kind().clone();
    let change = match (&kind, record.into_new_image()) {
        (RecordKind::Remove { .. }, _) => ItemChange::Delete { keys },
        (_, Some(item)) => ItemChange::Put { keys, item },
        (RecordKind::Insert | RecordKind::Modify, None) => {
            return Err(HandlerError::msg(format!(
                "record {sequence_number} has no new image: the stream must carry NEW_IMAGE \
                 or NEW_AND_OLD_IMAGES"
            )))
        }
        // An event this crate does not know, without a new image (DynamoDB Local's TTL
        // deletions): the item is gone.
        (_, None) => ItemChange::Delete { keys },
    };
    Ok(SequencedChange {
        sequence_number,
        change,
    })
}
