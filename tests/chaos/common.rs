//! Helpers of the chaos scenarios: knobs, SDK clients through the fault proxy, a stream client
//! that times and counts every call, a steady writer of versioned items, an append-only
//! delivery log (in-process handlers, or a `ddbstream tail` process's stdout), and the checker
//! that reads it (lost, duplicates, order inversions per shard, lineage violations, per-key
//! version regressions).

#![allow(dead_code)]

#[path = "../support/wait.rs"]
mod wait;
pub use wait::periodic_check as wait_for;

pub use crate::ddb_local::lineage;

pub use crate::events::Events;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue as DdbValue;
use aws_sdk_dynamodbstreams::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_dynamodbstreams::config::timeout::TimeoutConfig;
use dynamodb_stream::error::{SourceError, SourceErrorKind};
use dynamodb_stream::record::AttributeValue;
use dynamodb_stream::source::{
    BoxFuture, DescribeStreamRequest, IteratorPosition, RecordsPage, StreamDescription, StreamsApi,
};
use dynamodb_stream::{Batch, Handler, HandlerError, SequenceNumber, ShardInfo};

use crate::ddb_local::{env_for_cli, sdk_error, TestClients, REGION};
use crate::fault_proxy::FaultProxy;

// ---------------------------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------------------------

/// `DDBSTREAM_CHAOS_SECS`: how long each storm lasts (the soak runs three times as long).
/// Default 10 s, so the whole binary stays within a few minutes on two cores.
pub fn chaos_secs() -> u64 {
    env_u64("DDBSTREAM_CHAOS_SECS").unwrap_or(10).max(3)
}

/// `DDBSTREAM_CHAOS_SEED`: replays the random choices of a run (printed by every scenario).
pub fn seed(scenario: &str) -> u64 {
    let seed = env_u64("DDBSTREAM_CHAOS_SEED").unwrap_or_else(|| fastrand::u64(..));
    println!("{scenario}: DDBSTREAM_CHAOS_SEED={seed}");
    seed
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Clients through the proxy
// ---------------------------------------------------------------------------------------------

/// A DynamoDB Streams client of `c`'s namespace that talks to the fault proxy, with `timeouts`
/// and `retry`. Its retry partition (the SDK's retry token bucket) is its own, so one test's
/// storm never drains another's retry quota.
pub fn streams_via(
    proxy: &FaultProxy,
    c: &TestClients,
    timeouts: TimeoutConfig,
    retry: RetryConfig,
) -> aws_sdk_dynamodbstreams::Client {
    static N: AtomicUsize = AtomicUsize::new(0);
    let credentials = aws_sdk_dynamodbstreams::config::Credentials::new(
        &c.access_key,
        "secret",
        None,
        None,
        "chaos",
    );
    let partition = format!(
        "chaos-{}-{}",
        c.access_key,
        N.fetch_add(1, Ordering::SeqCst)
    );
    aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodbstreams::config::Region::new(REGION))
            .endpoint_url(proxy.url())
            .credentials_provider(credentials)
            .timeout_config(timeouts)
            .retry_config(retry)
            .retry_partition(RetryPartition::new(partition))
            .build(),
    )
}

/// Small SDK timeouts for hang tests: connect 1 s, first byte 2 s, attempt 2 s, call 5 s.
pub fn short_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

// ---------------------------------------------------------------------------------------------
// A stream client that times and counts calls
// ---------------------------------------------------------------------------------------------

/// Per operation: calls, failures by kind, the longest call.
#[derive(Debug, Default, Clone)]
pub struct CallStats {
    pub calls: usize,
    pub errors: HashMap<SourceErrorKind, usize>,
    pub longest: Duration,
}

/// Wraps a [`StreamsApi`]: every call is timed and its outcome counted, per operation.
#[derive(Clone)]
pub struct Timed<A> {
    pub inner: A,
    pub stats: Arc<Mutex<BTreeMap<&'static str, CallStats>>>,
    /// When each call started (operation, time since the wrapper was made).
    pub starts: Arc<Mutex<Vec<(&'static str, Duration)>>>,
    created: tokio::time::Instant,
}

impl<A: StreamsApi + Clone> Timed<A> {
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            stats: Arc::default(),
            starts: Arc::default(),
            created: tokio::time::Instant::now(),
        }
    }

    /// Start times of `op` calls, since the wrapper was made.
    pub fn call_starts(&self, op: &str) -> Vec<Duration> {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, at)| *at)
            .collect()
    }

    fn start(&self, op: &'static str) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        self.starts
            .lock()
            .unwrap()
            .push((op, now.duration_since(self.created)));
        now
    }

    pub fn stats(&self) -> BTreeMap<&'static str, CallStats> {
        self.stats.lock().unwrap().clone()
    }

    fn note<T>(
        &self,
        op: &'static str,
        started: tokio::time::Instant,
        r: Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        let took = started.elapsed();
        let mut stats = self.stats.lock().unwrap();
        let s = stats.entry(op).or_default();
        s.calls += 1;
        s.longest = s.longest.max(took);
        if let Err(e) = &r {
            *s.errors.entry(e.kind()).or_default() += 1;
        }
        r
    }
}

impl<A: StreamsApi + Clone> StreamsApi for Timed<A> {
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, SourceError>> {
        Box::pin(async move {
            let t = self.start("DescribeStream");
            let r = self.inner.describe_stream(request).await;
            self.note("DescribeStream", t, r)
        })
    }

    fn get_shard_iterator(
        &self,
        arn: String,
        shard: String,
        position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let t = self.start("GetShardIterator");
            let r = self.inner.get_shard_iterator(arn, shard, position).await;
            self.note("GetShardIterator", t, r)
        })
    }

    fn get_records(
        &self,
        iterator: String,
        limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, SourceError>> {
        Box::pin(async move {
            let t = self.start("GetRecords");
            let r = self.inner.get_records(iterator, limit).await;
            self.note("GetRecords", t, r)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// What was written: per key the versions 1..=n, and when each was written.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub versions: BTreeMap<String, u64>,
    /// (key, version) → write time (ms since the epoch, also stored in the item as `t`).
    pub times: HashMap<(String, u64), u64>,
}

impl Written {
    pub fn total(&self) -> u64 {
        self.versions.values().sum()
    }
}

/// Put `{pk: key, v: version, t: write time}`.
pub async fn put(c: &TestClients, table: &str, key: &str, version: u64, t: u64) {
    c.dynamodb
        .put_item()
        .table_name(table)
        .item("pk", DdbValue::S(key.to_owned()))
        .item("v", DdbValue::N(version.to_string()))
        .item("t", DdbValue::N(t.to_string()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem {table}/{key}: {}", sdk_error(&e)));
}

/// A background writer: the next version of a random key of `keys`, every `every`, straight to
/// DynamoDB Local (never through the proxy: the faults are on the reading side).
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub written: Arc<Mutex<Written>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    pub fn start(c: &TestClients, table: &str, keys: usize, every: Duration, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(Mutex::new(Written::default()));
        let (c, table, s, w) = (c.clone(), table.to_owned(), stop.clone(), written.clone());
        let task = tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut next = tokio::time::Instant::now();
            while !s.load(Ordering::SeqCst) {
                let key = format!("k{:03}", rng.usize(0..keys));
                let t = now_ms();
                let version = {
                    let mut w = w.lock().unwrap();
                    let v = w.versions.entry(key.clone()).or_insert(0);
                    *v += 1;
                    let v = *v;
                    w.times.insert((key.clone(), v), t);
                    v
                };
                put(&c, &table, &key, version, t).await;
                next += every;
                tokio::time::sleep_until(next.max(tokio::time::Instant::now())).await;
            }
        });
        Self {
            stop,
            written,
            task: Some(task),
        }
    }

    /// Writes so far.
    pub fn count(&self) -> u64 {
        self.written.lock().unwrap().total()
    }

    pub fn snapshot(&self) -> Written {
        self.written.lock().unwrap().clone()
    }

    /// Stop, wait for the write in progress, and return everything written.
    pub async fn stop(mut self) -> Written {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            t.await.expect("writer");
        }
        self.snapshot()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// The delivery log
// ---------------------------------------------------------------------------------------------

/// One record as a consumer delivered it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Which consumer life saw it: a handler instance (a new one per shard start or restart)
    /// in-process, a process run for `ddbstream tail`.
    pub run: usize,
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    pub key: String,
    pub version: u64,
    /// The write time stored in the item (`t`), if present.
    pub written_ms: Option<u64>,
    /// When it was delivered (ms since the epoch).
    pub delivered_ms: u64,
}

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// Append-only: everything handlers saw, in the order they saw it.
#[derive(Clone, Default)]
pub struct Log {
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// `on_shard_end` calls: the shard and the number of deliveries logged at that moment.
    pub ended: Arc<Mutex<Vec<(String, usize)>>>,
}

impl Log {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn handler(&self, _shard: &ShardInfo) -> Recorder {
        Recorder {
            log: self.clone(),
            run: INSTANCES.fetch_add(1, Ordering::SeqCst),
        }
    }

    pub fn len(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }

    pub fn snapshot(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// Whether every version of every key in `written` was delivered.
    pub fn has_all(&self, written: &Written) -> bool {
        has_all(written, &self.deliveries.lock().unwrap())
    }
}

fn number(item: Option<&dynamodb_stream::record::Item>, name: &str) -> Option<u64> {
    match item?.get(name)? {
        AttributeValue::N(n) => n.parse().ok(),
        _ => None,
    }
}

/// A [`Handler`] that appends to a [`Log`].
pub struct Recorder {
    log: Log,
    run: usize,
}

impl Handler for Recorder {
    async fn handle(&mut self, batch: Batch) -> Result<(), HandlerError> {
        let at = now_ms();
        let mut out = self.log.deliveries.lock().unwrap();
        for r in batch.records() {
            let key = match r.keys().get("pk") {
                Some(AttributeValue::S(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            out.push(Delivery {
                run: self.run,
                shard_id: batch.shard().shard_id.clone(),
                sequence_number: r.sequence_number().clone(),
                key,
                version: number(r.new_image(), "v")
                    .or_else(|| number(r.old_image(), "v"))
                    .unwrap_or(0),
                written_ms: number(r.new_image(), "t"),
                delivered_ms: at,
            });
        }
        Ok(())
    }

    async fn on_shard_end(&mut self, shard: &ShardInfo) -> Result<(), HandlerError> {
        let at = self.log.deliveries.lock().unwrap().len();
        self.log
            .ended
            .lock()
            .unwrap()
            .push((shard.shard_id.clone(), at));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// A `ddbstream tail` process
// ---------------------------------------------------------------------------------------------

/// Point a command running `ddbstream` at `c`'s namespace on DynamoDB Local (and at nothing
/// else from the caller's AWS configuration).
pub fn cli_env(cmd: &mut Command, c: &TestClients) {
    for var in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"] {
        cmd.env_remove(var);
    }
    cmd.envs(env_for_cli(c));
}

/// A running `ddbstream tail`: its stdout (one JSON line per record) is the delivery log, each
/// line stamped when it arrived; its stderr goes to a file.
pub struct TailProcess {
    pub child: Child,
    /// Stdout lines with their arrival time (ms since the epoch).
    pub lines: Arc<Mutex<Vec<(u64, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: PathBuf,
    pub started: Instant,
    /// (time since start, VmRSS in kB), from [`TailProcess::sample_rss`].
    pub rss: Vec<(Duration, u64)>,
}

impl TailProcess {
    /// Start `cmd` (a `ddbstream tail ...` command line), its stderr into the file `stderr`.
    pub fn spawn(mut cmd: Command, stderr: PathBuf) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let mut child = cmd.spawn().expect("start ddbstream tail");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let sink = lines.clone();
        // Ends at end of output: when the process exits or dies.
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).split(b'\n') {
                let Ok(line) = line else { return };
                let text = String::from_utf8_lossy(&line).into_owned();
                sink.lock().unwrap().push((now_ms(), text));
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
            stderr,
            started: Instant::now(),
            rss: Vec::new(),
        }
    }

    pub fn sample_rss(&mut self) {
        let path = format!("/proc/{}/status", self.child.id());
        let kb = std::fs::read_to_string(path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        });
        if let Some(kb) = kb {
            self.rss.push((self.started.elapsed(), kb));
        }
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL, then collect every line it printed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().expect("stdout reader");
        }
    }

    /// SIGTERM; wait for a clean exit.
    pub async fn terminate(&mut self) {
        // A run started just before (after a kill) may not have installed its signal handler
        // yet: in the first milliseconds of a process SIGTERM's default action kills it, which
        // no program can prevent. Its first stderr line comes after the handler is in place.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stderr_text().is_empty() && self.exited().is_none() && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(s) = self.exited() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "tail did not stop within 30 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            exit.success(),
            "tail exited with {exit} after SIGTERM:\n{}",
            self.stderr_text()
        );
        if let Some(r) = self.reader.take() {
            r.join().expect("stdout reader");
        }
    }

    /// The records it printed, as deliveries of run `run`; and how many lines did not parse
    /// (a line cut by SIGKILL).
    pub fn deliveries(&self, run: usize) -> (Vec<Delivery>, usize) {
        let mut out = Vec::new();
        let mut bad = 0;
        for (at, line) in self.lines.lock().unwrap().iter() {
            match parse_tail_line(line) {
                Some((shard_id, sequence_number, key, version, t)) => out.push(Delivery {
                    run,
                    shard_id,
                    sequence_number,
                    key,
                    version,
                    written_ms: t,
                    delivered_ms: *at,
                }),
                None => bad += 1,
            }
        }
        (out, bad)
    }
}

impl Drop for TailProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `{"shardId", "sequenceNumber", "keys": {"pk"}, "newImage": {"v", "t"}}` of a tail line.
fn parse_tail_line(line: &str) -> Option<(String, SequenceNumber, String, u64, Option<u64>)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let shard = v.get("shardId")?.as_str()?.to_owned();
    let seq = v.get("sequenceNumber")?.as_str()?.parse().ok()?;
    let key = v.get("keys")?.get("pk")?.as_str()?.to_owned();
    let image = v.get("newImage")?;
    let version = image.get("v")?.as_u64()?;
    let t = image.get("t").and_then(|t| t.as_u64());
    Some((shard, seq, key, version, t))
}

/// Whether every version of every key in `written` is among `deliveries`.
pub fn has_all(written: &Written, deliveries: &[Delivery]) -> bool {
    missing(written, deliveries) == 0
}

/// How many written (key, version) pairs are not among `deliveries`.
pub fn missing(written: &Written, deliveries: &[Delivery]) -> usize {
    let got: HashSet<(&str, u64)> = deliveries
        .iter()
        .map(|d| (d.key.as_str(), d.version))
        .collect();
    written
        .versions
        .iter()
        .flat_map(|(k, n)| (1..=*n).map(move |v| (k.as_str(), v)))
        .filter(|kv| !got.contains(kv))
        .count()
}

// ---------------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------------

/// What the delivery log says about a run.
#[derive(Debug, Default)]
pub struct Report {
    pub deliveries: usize,
    pub distinct: usize,
    /// (key, version) written and never delivered.
    pub lost: Vec<(String, u64)>,
    /// (key, version) delivered but never written.
    pub phantoms: Vec<(String, u64)>,
    /// Deliveries of a (shard, sequence number) beyond its first.
    pub duplicates: usize,
    /// Within one run and shard, a sequence number not above the previous one; or, over all
    /// runs, a record first delivered after a later record of its shard.
    pub order_inversions: Vec<String>,
    /// A child shard delivered before its parent's last delivery.
    pub lineage_violations: Vec<String>,
    /// A key's version first delivered after a higher version of that key.
    pub version_regressions: Vec<String>,
    /// Delivery lag (delivered − written) of first deliveries, ms, sorted.
    pub lags_ms: Vec<u64>,
}

impl Report {
    pub fn lag_percentile(&self, p: f64) -> Option<u64> {
        if self.lags_ms.is_empty() {
            return None;
        }
        let i = ((self.lags_ms.len() as f64 - 1.0) * p).round() as usize;
        Some(self.lags_ms[i])
    }

    pub fn summary(&self) -> String {
        format!(
            "{} deliveries, {} distinct, {} lost, {} duplicates, {} order inversions, {} lineage violations, {} version regressions, lag p50 {:?} ms p99 {:?} ms max {:?} ms",
            self.deliveries,
            self.distinct,
            self.lost.len(),
            self.duplicates,
            self.order_inversions.len(),
            self.lineage_violations.len(),
            self.version_regressions.len(),
            self.lag_percentile(0.5),
            self.lag_percentile(0.99),
            self.lags_ms.last(),
        )
    }

    /// Panics unless nothing was lost, invented, reordered or delivered out of lineage; with
    /// `exactly_once`, also unless nothing was delivered twice.
    pub fn assert_clean(&self, exactly_once: bool) {
        let first = |v: &Vec<String>| v.iter().take(5).cloned().collect::<Vec<_>>();
        assert!(
            self.lost.is_empty(),
            "{} records lost, e.g. {:?}\n{}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(10)],
            self.summary()
        );
        assert!(
            self.phantoms.is_empty(),
            "records never written were delivered: {:?}",
            &self.phantoms[..self.phantoms.len().min(10)]
        );
        assert!(
            self.order_inversions.is_empty(),
            "order inversions: {:?}",
            first(&self.order_inversions)
        );
        assert!(
            self.lineage_violations.is_empty(),
            "lineage violations: {:?}",
            first(&self.lineage_violations)
        );
        assert!(
            self.version_regressions.is_empty(),
            "version regressions: {:?}",
            first(&self.version_regressions)
        );
        if exactly_once {
            assert_eq!(self.duplicates, 0, "duplicates: {}", self.summary());
        }
    }
}

/// Check `deliveries` (in log order) against `written`, with `parents` (shard → parent) for
/// lineage.
pub fn check(
    written: &Written,
    deliveries: &[Delivery],
    parents: &BTreeMap<String, Option<String>>,
) -> Report {
    let mut report = Report {
        deliveries: deliveries.len(),
        ..Default::default()
    };
    let mut first_seen: HashSet<(&str, &SequenceNumber)> = HashSet::new();
    let mut last_in_run: HashMap<(usize, &str), &SequenceNumber> = HashMap::new();
    let mut newest_first: HashMap<&str, &SequenceNumber> = HashMap::new();
    let mut delivered: HashSet<(&str, u64)> = HashSet::new();
    let mut highest: HashMap<&str, u64> = HashMap::new();
    let mut span: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        let shard = d.shard_id.as_str();
        let e = span.entry(shard).or_insert((i, i));
        e.1 = i;
        if let Some(prev) = last_in_run.insert((d.run, shard), &d.sequence_number) {
            if prev >= &d.sequence_number {
                report.order_inversions.push(format!(
                    "run {} shard {shard}: {} after {prev}",
                    d.run, d.sequence_number
                ));
            }
        }
        if !first_seen.insert((shard, &d.sequence_number)) {
            report.duplicates += 1;
            continue;
        }
        // A first delivery: it must follow every earlier first delivery of its shard...
        if let Some(prev) = newest_first.get(shard) {
            if *prev >= &d.sequence_number {
                report.order_inversions.push(format!(
                    "shard {shard}: {} first delivered after {prev}",
                    d.sequence_number
                ));
            }
        }
        newest_first.insert(shard, &d.sequence_number);
        // ...and its key's earlier versions.
        let key = d.key.as_str();
        if !delivered.insert((key, d.version)) {
            // The same version under another sequence number: written twice?
            report.phantoms.push((d.key.clone(), d.version));
            continue;
        }
        let h = highest.entry(key).or_insert(0);
        if d.version < *h {
            report.version_regressions.push(format!(
                "key {key}: version {} first delivered after version {h}",
                d.version
            ));
        }
        *h = (*h).max(d.version);
        if let Some(t) = d.written_ms {
            report.lags_ms.push(d.delivered_ms.saturating_sub(t));
        }
        if written
            .versions
            .get(&d.key)
            .is_none_or(|n| d.version > *n || d.version == 0)
        {
            report.phantoms.push((d.key.clone(), d.version));
        }
    }
    report.distinct = delivered.len();
    for (k, n) in &written.versions {
        for v in 1..=*n {
            if !delivered.contains(&(k.as_str(), v)) {
                report.lost.push((k.clone(), v));
            }
        }
    }
    for (child, (child_first, _)) in &span {
        let Some(Some(parent)) = parents.get(*child) else {
            continue;
        };
        if let Some((_, parent_last)) = span.get(parent.as_str()) {
            if parent_last > child_first {
                report.lineage_violations.push(format!(
                    "child {child} first delivered at #{child_first}, its parent {parent} last at #{parent_last}"
                ));
            }
        }
    }
    report.lags_ms.sort_unstable();
    report
}

/// Deliveries by shard id, for messages.
pub fn per_shard(deliveries: &[Delivery]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for d in deliveries {
        *out.entry(d.shard_id.clone()).or_default() += 1;
    }
    out
}
