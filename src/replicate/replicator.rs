//! The bookmark → scan → stream pipeline, its status and its events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::backoff::Backoff;
use crate::checkpoint::{CheckpointStore, ShardCheckpoint, StreamCheckpoints, StreamKey};
use crate::config::ConsumerConfig;
use crate::error::{CheckpointError, Error, HandlerError, Result, RuntimeError, SourceErrorKind};
use crate::events::ConsumerEvent;
use crate::handler::{Batch, Handler};
use crate::position::{initial_checkpoints, StartPosition};
use crate::readiness::{NotReady, Probe, Readiness};
use crate::record::{system_time_to_millis, RecordKind, StreamRecord, StreamViewType};
use crate::source::{describe_all, BoxFuture, StreamsApi};
use crate::Consumer;

use super::sink::{ItemChange, ReplicaSink, ScanProgress, SegmentProgress, SequencedChange};
use super::source::{read_units, ScanPage, ScanRequest, TableSource};
use super::TableInfo;

/// Scan segments unless told otherwise.
pub const DEFAULT_SEGMENTS: u32 = 4;

/// The application name that keys a replicator's checkpoints unless told otherwise.
pub const DEFAULT_APPLICATION: &str = "replicate";

/// How often a running scan stops to catch the stream up, unless told otherwise (time on the
/// stream's clock). See [`ReplicatorBuilder::catch_up_every`].
pub const DEFAULT_CATCH_UP_EVERY: Duration = Duration::from_secs(60 * 60);

/// The longest interval between two catch-ups a scan may be given: what the stream keeps
/// (24 hours) minus time for the catch-up itself and a page per segment.
const MAX_CATCH_UP_EVERY: Duration = Duration::from_secs(12 * 60 * 60);

/// An unfinished scan that was away from the stream for longer than this (since its bookmark or
/// its last catch-up) starts over: the stream keeps records for 24 hours, and replaying from an
/// older position would miss the trimmed ones.
const AWAY_MAX_AGE: Duration = Duration::from_secs(20 * 60 * 60);

/// A read-capacity budget for the scan, all segments together; see
/// [`ReplicatorBuilder::scan_rate`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ScanRate {
    /// Read capacity units per second, as the service reports them for each page
    /// (`ReturnConsumedCapacity`; estimated from the items' sizes with [`read_units`] when the
    /// source does not say). A strongly consistent Scan spends one unit per 4 KB read.
    ReadUnits(f64),
    /// Items per second.
    Items(f64),
}

impl ScanRate {
    fn per_second(self) -> f64 {
        match self {
            ScanRate::ReadUnits(r) | ScanRate::Items(r) => r,
        }
    }

    /// What a page costs in this budget's unit.
    fn cost(self, page: &ScanPage) -> f64 {
        match self {
            ScanRate::ReadUnits(_) => page
                .consumed_read_units
                .unwrap_or_else(|| read_units(&page.items)),
            ScanRate::Items(_) => page.items.len() as f64,
        }
    }
}

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
    /// Read capacity units the scan consumed in this run (reported by the source, or estimated
    /// from the items' sizes).
    pub consumed_read_units: f64,
    /// The scan's current rate limit in the unit of its [`ScanRate`] budget — the budget, or
    /// less while throttling slowed it down; `None` without a budget.
    pub scan_rate_limit: Option<f64>,
    /// Times this run paused the scan to catch the stream up (see
    /// [`ReplicatorBuilder::catch_up_every`]).
    pub backfill_catch_ups: u64,
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
            consumed_read_units: 0.0,
            scan_rate_limit: None,
            backfill_catch_ups: 0,
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
    /// The scan paused, and the stream was read up to where it stood then, every change applied:
    /// no record can expire before it is applied, however long the scan takes.
    BackfillCaughtUp {
        /// Changes applied by this catch-up.
        changes: u64,
        /// Where the stream stood (Unix milliseconds on the stream's clock).
        at_ms: u64,
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
    scan_rate: Option<ScanRate>,
    catch_up_every: Duration,
    config: ConsumerConfig,
    events: broadcast::Sender<ReplicatorEvent>,
    meter: Option<opentelemetry::metrics::Meter>,
}

impl std::fmt::Debug for ReplicatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatorBuilder")
            .field("table_name", &self.table_name)
            .field("segments", &self.segments)
            .field("scan_page_limit", &self.scan_page_limit)
            .field("scan_rate", &self.scan_rate)
            .field("catch_up_every", &self.catch_up_every)
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

    /// A read-capacity budget for the scan, all segments together (default: none, as fast as the
    /// table answers). Pages are paced to the budget from what each one consumed; throttling
    /// halves the pace, which climbs back by a tenth per page once ten seconds passed without
    /// throttling. Smaller pages ([`scan_page_limit`](Self::scan_page_limit)) pace more evenly.
    ///
    /// ```no_run
    /// # use dynamodb_stream::{replicate::{Replicator, ScanRate, SqliteReplica}, sim::Simulator};
    /// # async fn f(sim: Simulator, sink: SqliteReplica) -> dynamodb_stream::Result<()> {
    /// let replicator = Replicator::builder(sim.clone(), sim.clone(), sim.table_name(), sink)
    ///     .scan_rate(ScanRate::ReadUnits(200.0)) // of the table's provisioned read capacity
    ///     .spawn()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn scan_rate(mut self, rate: ScanRate) -> Self {
        let per_second = rate.per_second();
        self.scan_rate = (per_second.is_finite() && per_second > 0.0).then_some(rate);
        self
    }

    /// Pause the scan every `interval` (on the stream's clock) to read the stream up to where
    /// it stands and apply every change, so that no record expires before it is applied,
    /// however long the scan takes (default [`DEFAULT_CATCH_UP_EVERY`]; at most 12 hours; each
    /// segment reads at least one page between two catch-ups). A scan shorter than `interval`
    /// never pauses.
    pub fn catch_up_every(mut self, interval: Duration) -> Self {
        self.catch_up_every = interval.min(MAX_CATCH_UP_EVERY);
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

    /// Record the stream consumer's metrics into `meter` (see
    /// [`ConsumerBuilder::meter`](crate::ConsumerBuilder::meter)).
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.meter = Some(meter);
        self
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
        let mut starting = ReplicaStatus::starting(info.item_count);
        starting.scan_rate_limit = self.scan_rate.map(ScanRate::per_second);
        let (status_tx, status_rx) = watch::channel(starting);
        let (stop_tx, stop_rx) = watch::channel(false);
        let streaming: Arc<Mutex<Option<Probe>>> = Arc::default();
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
            scan_rate: self.scan_rate,
            catch_up_every: self.catch_up_every,
            config,
            status: Arc::new(status_tx),
            events: self.events.clone(),
            meter: self.meter,
            streaming: streaming.clone(),
        };
        let task = tokio::spawn(pipeline.run(progress, stop_rx));
        Ok(Replicator {
            info,
            task: Some(task),
            outcome: None,
            status: status_rx,
            stop: stop_tx,
            events: self.events,
            streaming,
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
    /// The stream consumer's probe, once streaming started.
    streaming: Arc<Mutex<Option<Probe>>>,
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
            scan_rate: None,
            catch_up_every: DEFAULT_CATCH_UP_EVERY,
            config,
            events,
            meter: None,
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

    /// A cloneable handle for liveness and readiness probes (see [`Probe`]). Alive while the
    /// replicator runs. Ready once the replica is live (the scan done and the stream caught up
    /// as of the start of streaming — until then [`NotReady::NotStreaming`] names the phase)
    /// and the stream consumer is ready by the criteria.
    pub fn probe(&self) -> Probe {
        let status = self.status.clone();
        let streaming = self.streaming.clone();
        let alive_status = self.status.clone();
        let alive_streaming = self.streaming.clone();
        let running = move |status: &watch::Receiver<ReplicaStatus>| {
            // A dropped sender means the pipeline task is gone, whatever the last phase said.
            status.borrow().phase != ReplicaPhase::Stopped && status.has_changed().is_ok()
        };
        Probe::new(
            move || {
                running(&alive_status)
                    && alive_streaming
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                        .is_none_or(Probe::is_alive)
            },
            move |criteria| {
                if !running(&status) {
                    return Readiness::of(vec![NotReady::Stopped]);
                }
                let phase = match status.borrow().phase {
                    ReplicaPhase::Live => None,
                    ReplicaPhase::Starting => Some("starting"),
                    ReplicaPhase::Scanning => Some("scanning"),
                    ReplicaPhase::CatchingUp => Some("catching_up"),
                    ReplicaPhase::Stopped => return Readiness::of(vec![NotReady::Stopped]),
                };
                let consumer = streaming.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let mut readiness = match &consumer {
                    Some(probe) => probe.readiness(criteria),
                    None => Readiness::of(Vec::new()),
                };
                if let Some(phase) = phase {
                    readiness.reasons.insert(
                        0,
                        NotReady::NotStreaming {
                            phase: phase.to_owned(),
                        },
                    );
                    readiness.ready = false;
                }
                readiness
            },
        )
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
    scan_rate: Option<ScanRate>,
    catch_up_every: Duration,
    config: ConsumerConfig,
    status: Arc<watch::Sender<ReplicaStatus>>,
    events: broadcast::Sender<ReplicatorEvent>,
    meter: Option<opentelemetry::metrics::Meter>,
    /// Where [`Replicator::probe`] finds the stream consumer.
    streaming: Arc<Mutex<Option<Probe>>>,
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
                // Everything before the later of the bookmark and the last catch-up is applied;
                // what came after must still be in the stream.
                let caught_up = self.sink.stream_caught_up_at().await?.unwrap_or(0);
                let since = s.started_at_ms.max(caught_up);
                let age = Duration::from_millis(now.saturating_sub(since));
                if age > AWAY_MAX_AGE {
                    self.emit(ReplicatorEvent::ScanRestarted {
                        reason: format!(
                            "the unfinished scan last caught up with the stream {} hours ago; \
                             the stream keeps 24 hours",
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

    /// Scan the unfinished segments in parallel, in slices: every
    /// [`catch_up_every`](ReplicatorBuilder::catch_up_every) the segments stop after their
    /// current page and the stream is caught up before they go on. Returns false when stopped
    /// before the end.
    async fn scan(
        &self,
        total: u32,
        mut segments: Vec<SegmentProgress>,
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
            this_run: Mutex::new((0, 0.0)),
        });
        let pacer = self.scan_rate.map(|rate| {
            Arc::new(Mutex::new(Pacer::new(
                rate.per_second(),
                tokio::time::Instant::now(),
            )))
        });
        // The last moment up to which every change is applied: the bookmark or a catch-up.
        let mut caught_up_at = {
            let stored = self.sink.load(&self.key).await?;
            let caught_up = self.sink.stream_caught_up_at().await?.unwrap_or(0);
            stored.map_or(0, |s| s.started_at_ms).max(caught_up)
        };
        loop {
            let interval = u64::try_from(self.catch_up_every.as_millis()).unwrap_or(u64::MAX);
            let deadline_ms = caught_up_at.saturating_add(interval);
            let mut set = JoinSet::new();
            for segment in segments.iter().filter(|s| !s.done).cloned() {
                let worker = SegmentScan {
                    table: self.table.clone(),
                    streams: self.streams.clone(),
                    sink: self.sink.clone(),
                    table_name: self.info.table_name.clone(),
                    total,
                    limit: self.scan_page_limit,
                    rate: self.scan_rate,
                    pacer: pacer.clone(),
                    status: self.status.clone(),
                    counter: counter.clone(),
                    stop: stop.clone(),
                };
                set.spawn(worker.run(segment, deadline_ms));
            }
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok(Ok(progress)) => {
                        if let Some(s) = segments.iter_mut().find(|s| s.segment == progress.segment)
                        {
                            *s = progress;
                        }
                    }
                    Ok(Err(e)) => {
                        // Abandoned pages are harmless: each page is one transaction in the sink.
                        set.abort_all();
                        return Err(e);
                    }
                    Err(e) => {
                        set.abort_all();
                        return Err(RuntimeError::new("a scan segment task failed")
                            .with_source(e)
                            .into());
                    }
                }
            }
            if *stop.borrow() {
                return Ok(false);
            }
            if segments.iter().all(|s| s.done) {
                return Ok(true);
            }
            caught_up_at = self.catch_up().await?;
        }
    }

    /// Read the stream up to where it stands now, apply every change, and note it in the sink
    /// (the scan then may go on for another interval). Returns where the stream stood.
    async fn catch_up(&self) -> Result<u64> {
        let at_ms = system_time_to_millis(self.streams.wall_clock());
        let report = self.consumer_builder().run_once().await?;
        self.sink.record_stream_caught_up(at_ms).await?;
        self.status.send_modify(|s| s.backfill_catch_ups += 1);
        self.emit(ReplicatorEvent::BackfillCaughtUp {
            changes: report.total_records(),
            at_ms,
        });
        Ok(at_ms)
    }

    /// A consumer of the stream that applies each batch to the sink with its checkpoint, its
    /// events forwarded as [`ReplicatorEvent::Consumer`].
    fn consumer_builder(&self) -> crate::ConsumerBuilder {
        let store = SinkStore {
            sink: self.sink.clone(),
        };
        let handler = ApplyHandler {
            sink: self.sink.clone(),
            key: self.key.clone(),
            status: self.status.clone(),
        };
        let mut builder = Consumer::builder(self.streams.clone(), self.key.stream_arn.clone())
            .config(self.config.clone())
            .checkpoints(store)
            .handler_factory(move |_| handler.clone());
        if let Some(meter) = &self.meter {
            builder = builder.meter(meter.clone());
        }
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
        builder
    }

    /// Replay the stream into the sink until stopped.
    async fn stream(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        self.status
            .send_modify(|s| s.phase = ReplicaPhase::CatchingUp);
        let builder = self.consumer_builder();
        // Caught up means: as of the moment streaming starts.
        let asked = crate::rt::Instant::now();
        let asked_wall = self.streams.wall_clock();
        let mut consumer = builder.spawn().await?;
        *self.streaming.lock().unwrap_or_else(|p| p.into_inner()) = Some(consumer.probe());
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

/// Items and read units scanned in this run, shared by the segment tasks.
struct ScanCounter {
    started: Instant,
    before: u64,
    this_run: Mutex<(u64, f64)>,
}

/// One scan segment's loop.
struct SegmentScan {
    table: Arc<dyn TableSource>,
    streams: Arc<dyn StreamsApi>,
    sink: Arc<dyn ReplicaSink>,
    table_name: String,
    total: u32,
    limit: Option<u32>,
    rate: Option<ScanRate>,
    pacer: Option<Arc<Mutex<Pacer>>>,
    status: Arc<watch::Sender<ReplicaStatus>>,
    counter: Arc<ScanCounter>,
    stop: watch::Receiver<bool>,
}

impl SegmentScan {
    /// Scan pages until the segment ends, the replicator stops, or the stream's clock reaches
    /// `deadline_ms` (after at least one page, so that every slice makes progress). Returns how
    /// far the segment got.
    async fn run(self, mut progress: SegmentProgress, deadline_ms: u64) -> Result<SegmentProgress> {
        let mut first = true;
        loop {
            if *self.stop.borrow() || progress.done {
                return Ok(progress);
            }
            if !first && system_time_to_millis(self.streams.wall_clock()) >= deadline_ms {
                return Ok(progress);
            }
            first = false;
            self.pace().await;
            let request = ScanRequest {
                table_name: self.table_name.clone(),
                segment: progress.segment,
                total_segments: self.total,
                exclusive_start_key: progress.resume_after.clone(),
                limit: self.limit,
            };
            let page = retry(
                || self.table.scan_segment(request.clone()),
                |e| self.throttled(e),
            )
            .await?;
            let n = page.items.len() as u64;
            // In the budget's unit (read units or items).
            let cost = self.rate.map_or(0.0, |r| r.cost(&page));
            let read_units_spent = page
                .consumed_read_units
                .unwrap_or_else(|| read_units(&page.items));
            self.sink
                .write_scan_page(
                    progress.segment,
                    page.items,
                    page.last_evaluated_key.clone(),
                )
                .await?;
            if let Some(pacer) = &self.pacer {
                let limit = {
                    let mut p = pacer.lock().unwrap_or_else(|p| p.into_inner());
                    p.charge(cost, tokio::time::Instant::now());
                    p.rate()
                };
                self.status.send_modify(|s| s.scan_rate_limit = Some(limit));
            }
            self.report(n, read_units_spent);
            progress.items += n;
            match page.last_evaluated_key {
                Some(k) => progress.resume_after = Some(k),
                None => {
                    progress.resume_after = None;
                    progress.done = true;
                }
            }
        }
    }

    /// Wait until the budget allows another page.
    async fn pace(&self) {
        let Some(pacer) = &self.pacer else { return };
        loop {
            let wait = pacer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .wait(tokio::time::Instant::now());
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return,
            }
        }
    }

    /// A failed Scan call: throttling slows the budget down.
    fn throttled(&self, e: &Error) {
        let throttled = matches!(e, Error::Source(s) if s.kind() == SourceErrorKind::Throttled);
        if let (true, Some(pacer)) = (throttled, &self.pacer) {
            let limit = {
                let mut p = pacer.lock().unwrap_or_else(|p| p.into_inner());
                p.throttled(tokio::time::Instant::now());
                p.rate()
            };
            self.status.send_modify(|s| s.scan_rate_limit = Some(limit));
        }
    }

    fn report(&self, n: u64, units: f64) {
        let (this_run, units_this_run) = {
            let mut c = self
                .counter
                .this_run
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            c.0 += n;
            c.1 += units;
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
            s.consumed_read_units = units_this_run;
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

/// A token bucket for the scan's budget, with a pace that halves on throttling and climbs back
/// carefully: pure (the caller passes the time), so its arithmetic is tested without a clock.
///
/// A page may start while the bucket is not in debt; its cost, known only once it is read, is
/// then charged (pages of parallel segments may overshoot by one page each, never more). At
/// most one second of budget accumulates while idle.
#[derive(Debug)]
pub(crate) struct Pacer {
    budget: f64,
    /// The share of the budget in force: 1 until throttled.
    factor: f64,
    tokens: f64,
    last: tokio::time::Instant,
    last_throttle: Option<tokio::time::Instant>,
}

impl Pacer {
    /// The pace never falls below this share of the budget.
    const MIN_FACTOR: f64 = 1.0 / 64.0;
    /// Quiet time after throttling before the pace climbs back.
    const CALM: Duration = Duration::from_secs(10);

    pub(crate) fn new(budget: f64, now: tokio::time::Instant) -> Self {
        Self {
            budget,
            factor: 1.0,
            tokens: budget,
            last: now,
            last_throttle: None,
        }
    }

    /// Units per second in force.
    pub(crate) fn rate(&self) -> f64 {
        self.budget * self.factor
    }

    fn refill(&mut self, now: tokio::time::Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate()).min(self.rate());
    }

    /// How long to wait before the next page may start; `None`: now.
    pub(crate) fn wait(&mut self, now: tokio::time::Instant) -> Option<Duration> {
        self.refill(now);
        // At least a millisecond: a debt of a few femto-units rounds to a zero wait, and a zero
        // wait lets no time pass to pay it (a spin; on a paused clock, for ever).
        (self.tokens < 0.0).then(|| {
            Duration::from_secs_f64(-self.tokens / self.rate()).max(Duration::from_millis(1))
        })
    }

    /// A page cost `units`; after a calm spell the pace climbs back by a tenth.
    pub(crate) fn charge(&mut self, units: f64, now: tokio::time::Instant) {
        self.refill(now);
        self.tokens -= units.max(0.0);
        let calm = self
            .last_throttle
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::CALM);
        if calm && self.factor < 1.0 {
            self.factor = (self.factor * 1.1).min(1.0);
        }
    }

    /// The table throttled a page: halve the pace, and start from an empty bucket.
    pub(crate) fn throttled(&mut self, now: tokio::time::Instant) {
        self.refill(now);
        self.factor = (self.factor / 2.0).max(Self::MIN_FACTOR);
        self.tokens = self.tokens.min(0.0);
        self.last_throttle = Some(now);
    }
}

/// Run `call` until it succeeds, backing off on retryable failures (each one shown to
/// `on_retry` first).
async fn retry<'a, T, F>(mut call: F, mut on_retry: impl FnMut(&Error)) -> Result<T>
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
                on_retry(&e);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tiny_debt_still_waits_a_millisecond() {
        let t0 = tokio::time::Instant::now();
        let mut p = Pacer::new(5.0, t0);
        p.charge(5.0 + 1e-13, t0);
        assert!(p.wait(t0).is_some_and(|w| w >= Duration::from_millis(1)));
    }

    fn at(start: tokio::time::Instant, ms: u64) -> tokio::time::Instant {
        start + Duration::from_millis(ms)
    }

    /// Over any stretch, pages start only while the bucket holds budget: what they cost in all
    /// is at most the budget times the time, plus one second of burst and the last page.
    #[test]
    fn the_pace_keeps_to_the_budget() {
        let t0 = tokio::time::Instant::now();
        let mut pacer = Pacer::new(100.0, t0);
        let mut now = t0;
        let mut spent = 0.0;
        for _ in 0..500 {
            if let Some(wait) = pacer.wait(now) {
                now += wait;
                assert!(pacer.wait(now).is_none(), "waiting as told is enough");
            }
            pacer.charge(37.0, now);
            spent += 37.0;
        }
        let elapsed = now.duration_since(t0).as_secs_f64();
        assert!(
            spent <= 100.0 * elapsed + 100.0 + 37.0,
            "{spent} units in {elapsed} s"
        );
        assert!(
            spent >= 100.0 * elapsed,
            "{spent} units in {elapsed} s: too slow"
        );
    }

    #[test]
    fn throttling_halves_the_pace_which_climbs_back_after_a_calm_spell() {
        let t0 = tokio::time::Instant::now();
        let mut pacer = Pacer::new(80.0, t0);
        pacer.throttled(at(t0, 0));
        pacer.throttled(at(t0, 10));
        assert_eq!(pacer.rate(), 20.0);
        // No climbing while throttling is recent.
        pacer.charge(1.0, at(t0, 5_000));
        assert_eq!(pacer.rate(), 20.0);
        // After ten calm seconds, a tenth per page, up to the budget and no further.
        pacer.charge(1.0, at(t0, 10_010));
        assert!((pacer.rate() - 22.0).abs() < 1e-9, "{}", pacer.rate());
        for i in 0..100 {
            pacer.charge(1.0, at(t0, 10_020 + i));
        }
        assert_eq!(pacer.rate(), 80.0);
        // It never stops entirely.
        for i in 0..100 {
            pacer.throttled(at(t0, 20_000 + i));
        }
        assert_eq!(pacer.rate(), 80.0 / 64.0);
        pacer.charge(5.0, at(t0, 20_100));
        let wait = pacer.wait(at(t0, 20_100)).expect("in debt");
        assert!(wait <= Duration::from_secs(4), "{wait:?}");
    }

    #[test]
    fn an_idle_bucket_holds_one_second_of_budget() {
        let t0 = tokio::time::Instant::now();
        let mut pacer = Pacer::new(10.0, t0);
        pacer.charge(10.0, t0);
        // An hour idle does not allow an hour's worth at once.
        pacer.charge(15.0, at(t0, 3_600_000));
        assert_eq!(
            pacer.wait(at(t0, 3_600_000)),
            Some(Duration::from_millis(500))
        );
    }
}
