//! Test support shared by the simulator invariant tests.

#![allow(dead_code)]

#[path = "../support/wait.rs"]
mod wait;
pub use wait::periodic_check;

pub use crate::events::Events;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamodb_stream::record::{AttributeValue, Item};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{
    Batch, ConsumerEvent, Handler, HandlerError, RecordKind, SequenceNumber, ShardInfo,
};

/// An item `{pk: key, v: version}`.
pub fn item(key: &str, version: u64) -> Item {
    let mut m = HashMap::new();
    m.insert("pk".to_string(), AttributeValue::S(key.to_string()));
    m.insert("v".to_string(), AttributeValue::N(version.to_string()));
    Item::from(m)
}

/// The key part of [`item`].
pub fn keys(key: &str) -> Item {
    let mut m = HashMap::new();
    m.insert("pk".to_string(), AttributeValue::S(key.to_string()));
    Item::from(m)
}

fn version_of(item: Option<&Item>) -> Option<u64> {
    match item?.get("v")? {
        AttributeValue::N(n) => n.parse().ok(),
        _ => None,
    }
}

/// One record as a handler saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    pub key: String,
    /// The item version the record carries (new image; old image + 1 for removals).
    pub version: u64,
    pub removal: bool,
    /// Which handler instance saw it (a new one per shard start or restart).
    pub handler_instance: usize,
    /// The tag of the [`Log`] handle whose handler saw it (e.g. which worker).
    pub tag: String,
}

/// Shared log of everything handlers saw, plus failure injection.
#[derive(Clone, Default)]
pub struct Log {
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Shards whose `on_shard_end` ran, with the number of deliveries logged at that moment.
    pub ended: Arc<Mutex<Vec<(String, usize)>>>,
    pub shutdowns: Arc<Mutex<Vec<String>>>,
    /// Shards whose handler was told its lease was lost.
    pub leases_lost: Arc<Mutex<Vec<String>>>,
    instances: Arc<AtomicUsize>,
    batches: Arc<AtomicUsize>,
    /// Fail (Err) the batch with this global batch number (1-based), once each.
    pub fail_batches: Arc<Mutex<Vec<usize>>>,
    /// Panic on the batch with this global batch number, once each.
    pub panic_batches: Arc<Mutex<Vec<usize>>>,
    /// Hang (sleep for a day) on the batch with this global batch number, once each.
    pub hang_batches: Arc<Mutex<Vec<usize>>>,
    /// Always fail batches of this shard.
    pub poison_shard: Arc<Mutex<Option<String>>>,
    /// Delay every batch by this much (sim/tokio time).
    pub delay: Arc<Mutex<Duration>>,
    pub failures: Arc<AtomicUsize>,
    /// Every `handle` call, failed ones included, in call order.
    pub calls: Arc<Mutex<Vec<Call>>>,
    /// Always fail (Err, no partial position) any batch holding a record of one of these keys
    /// (`key_string` form, see [`key_string`]).
    pub poison_keys: Arc<Mutex<HashSet<String>>>,
    /// Partial failures, once each: a batch holding this record logs the records before it as
    /// delivered and returns `HandlerError::failed_at` with its sequence number.
    pub partial_failures: Arc<Mutex<Vec<SequenceNumber>>>,
    /// Sleep a random time in `0..=max` (sim/tokio time) per batch, drawn from this seeded
    /// generator, after `delay`.
    pub random_delay: Arc<Mutex<Option<(fastrand::Rng, Duration)>>>,
    /// Written into every delivery and call of handlers made by this handle (see
    /// [`Log::tagged`]).
    pub tag: String,
}

/// One record of a [`Call`].
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub sequence_number: SequenceNumber,
    pub key: String,
    pub kind: RecordKind,
}

/// One `handle` call as a [`Recorder`] received it.
#[derive(Debug, Clone)]
pub struct Call {
    pub shard_id: String,
    pub handler_instance: usize,
    pub records: Vec<CallRecord>,
    /// `Ok` returned.
    pub ok: bool,
    /// The sequence number of a partial failure (`HandlerError::failed_at`).
    pub failed_at: Option<SequenceNumber>,
    /// The tag of the [`Log`] handle whose handler made it.
    pub tag: String,
    /// When the call started (tokio time).
    pub at: tokio::time::Instant,
    /// When it returned.
    pub ended: tokio::time::Instant,
}

impl Call {
    pub fn sequence_numbers(&self) -> Vec<SequenceNumber> {
        self.records
            .iter()
            .map(|r| r.sequence_number.clone())
            .collect()
    }

    pub fn has_key(&self, key: &str) -> bool {
        self.records.iter().any(|r| r.key == key)
    }
}

/// The most calls of `shard_id` that were running at the same time.
pub fn max_concurrent_calls(calls: &[Call], shard_id: &str) -> usize {
    let mut edges: Vec<(tokio::time::Instant, i32)> = calls
        .iter()
        .filter(|c| c.shard_id == shard_id)
        .flat_map(|c| [(c.at, 1), (c.ended, -1)])
        .collect();
    // Ends before starts at the same instant: back-to-back calls do not overlap.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

impl Log {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn handler(&self, _shard: &ShardInfo) -> Recorder {
        Recorder {
            log: self.clone(),
            instance: self.instances.fetch_add(1, Ordering::SeqCst),
        }
    }

    pub fn len(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }

    pub fn snapshot(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The same log (one record of everything, in order), for handlers that tag what they
    /// see with `tag` — one handle per worker, say.
    pub fn tagged(&self, tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            ..self.clone()
        }
    }

    /// Make every batch holding a record of `key` (a plain `pk` value) fail.
    pub fn poison_key(&self, key: &str) {
        self.poison_keys.lock().unwrap().insert(key_string(key));
    }
}

/// A [`Handler`] that appends to a [`Log`].
pub struct Recorder {
    log: Log,
    instance: usize,
}

impl Handler for Recorder {
    async fn handle(&mut self, batch: Batch) -> Result<(), HandlerError> {
        let n = self.log.batches.fetch_add(1, Ordering::SeqCst) + 1;
        let at = tokio::time::Instant::now();
        if std::env::var("DDBSTREAM_DEBUG").is_ok() {
            eprintln!(
                "CALL {} {} inst {} at {:?} first {:?}",
                self.log.tag,
                batch.shard().shard_id,
                self.instance,
                at,
                batch.records().first().map(|r| r.sequence_number().clone())
            );
        }
        let hang = {
            let mut h = self.log.hang_batches.lock().unwrap();
            let hit = h.contains(&n);
            h.retain(|b| *b != n);
            hit
        };
        if hang {
            tokio::time::sleep(Duration::from_secs(86_400)).await;
        }
        let delay = *self.log.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let random_delay = self
            .log
            .random_delay
            .lock()
            .unwrap()
            .as_mut()
            .map(|(rng, max)| Duration::from_nanos(rng.u64(0..=max.as_nanos() as u64)));
        if let Some(d) = random_delay {
            tokio::time::sleep(d).await;
        }
        let poisoned = self.log.poison_shard.lock().unwrap().as_deref()
            == Some(batch.shard().shard_id.as_str())
            || {
                let keys = self.log.poison_keys.lock().unwrap();
                !keys.is_empty() && batch.iter().any(|r| keys.contains(&r.key_string()))
            };
        let fail = {
            let mut f = self.log.fail_batches.lock().unwrap();
            let hit = f.contains(&n);
            f.retain(|b| *b != n);
            hit
        };
        if fail || poisoned {
            self.log.failures.fetch_add(1, Ordering::SeqCst);
            self.note_call(&batch, at, false, None);
            return Err(HandlerError::msg(format!("injected failure on batch {n}")));
        }
        let panic = {
            let mut p = self.log.panic_batches.lock().unwrap();
            let hit = p.contains(&n);
            p.retain(|b| *b != n);
            hit
        };
        if panic {
            self.log.failures.fetch_add(1, Ordering::SeqCst);
            self.note_call(&batch, at, false, None);
            panic!("injected panic on batch {n}");
        }
        let partial = {
            let mut p = self.log.partial_failures.lock().unwrap();
            let hit = batch.iter().position(|r| p.contains(r.sequence_number()));
            if let Some(i) = hit {
                let s = batch.records()[i].sequence_number();
                p.retain(|x| x != s);
            }
            hit
        };
        if let Some(i) = partial {
            self.log.failures.fetch_add(1, Ordering::SeqCst);
            let failed = batch.records()[i].sequence_number().clone();
            self.log_deliveries(&batch, &batch.records()[..i]);
            self.note_call(&batch, at, false, Some(failed.clone()));
            return Err(HandlerError::failed_at(
                failed,
                format!("injected partial failure on batch {n}"),
            ));
        }
        self.log_deliveries(&batch, batch.records());
        self.note_call(&batch, at, true, None);
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

    async fn on_shutdown(&mut self, shard: &ShardInfo) {
        self.log
            .shutdowns
            .lock()
            .unwrap()
            .push(shard.shard_id.clone());
    }

    async fn on_lease_lost(&mut self, shard: &ShardInfo) {
        self.log
            .leases_lost
            .lock()
            .unwrap()
            .push(shard.shard_id.clone());
    }
}

impl Recorder {
    fn note_call(
        &self,
        batch: &Batch,
        at: tokio::time::Instant,
        ok: bool,
        failed_at: Option<SequenceNumber>,
    ) {
        let records = batch
            .iter()
            .map(|r| CallRecord {
                sequence_number: r.sequence_number().clone(),
                key: r.key_string(),
                kind: r.kind().clone(),
            })
            .collect();
        self.log.calls.lock().unwrap().push(Call {
            shard_id: batch.shard().shard_id.clone(),
            handler_instance: self.instance,
            records,
            ok,
            failed_at,
            tag: self.log.tag.clone(),
            at,
            ended: tokio::time::Instant::now(),
        });
    }

    fn log_deliveries(&self, batch: &Batch, records: &[dynamodb_stream::StreamRecord]) {
        let mut out = self.log.deliveries.lock().unwrap();
        for r in records {
            let removal = matches!(r.kind(), RecordKind::Remove { .. });
            let version = if removal {
                version_of(r.old_image()).map(|v| v + 1).unwrap_or(0)
            } else {
                version_of(r.new_image()).unwrap_or(0)
            };
            out.push(Delivery {
                shard_id: batch.shard().shard_id.clone(),
                sequence_number: r.sequence_number().clone(),
                key: r.key_string(),
                version,
                removal,
                handler_instance: self.instance,
                tag: self.log.tag.clone(),
            });
        }
    }
}

/// What the writer did: per key, the number of versions written (1..=n), and the key string
/// as `StreamRecord::key_string` renders it.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub versions: BTreeMap<String, u64>,
}

impl Written {
    /// Write the next version of `key` to the simulator (insert or modify).
    pub fn put(&mut self, sim: &Simulator, key: &str) {
        let ks = key_string(key);
        let v = self.versions.entry(ks).or_insert(0);
        *v += 1;
        sim.put_item(item(key, *v)).expect("put");
    }

    /// Delete `key` (counts as the next version) if it exists.
    pub fn delete(&mut self, sim: &Simulator, key: &str) {
        let ks = key_string(key);
        if let Some(v) = self.versions.get_mut(&ks) {
            if sim.get_item(&keys(key)).is_some() {
                *v += 1;
                sim.delete_item(&keys(key)).expect("delete");
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.versions.values().sum()
    }

    /// Whether every version of every key is among `deliveries` (duplicates do not count twice:
    /// comparing counts would be fooled by redeliveries).
    pub fn all_delivered(&self, deliveries: &[Delivery]) -> bool {
        let mut seen: HashMap<&str, std::collections::HashSet<u64>> = HashMap::new();
        for d in deliveries {
            seen.entry(&d.key).or_default().insert(d.version);
        }
        self.versions.iter().all(|(k, n)| {
            seen.get(k.as_str())
                .is_some_and(|v| (1..=*n).all(|x| v.contains(&x)))
        })
    }
}

/// `StreamRecord::key_string` of a `{pk: key}` item.
pub fn key_string(key: &str) -> String {
    format!("pk={}", serde_json::Value::String(key.to_string()))
}

/// Check the delivery log against what was written:
/// - every version of every key was delivered (no loss);
/// - a handler instance saw each shard's records in strictly increasing sequence order (I1);
/// - per key, every delivery of version v > 1 comes after some delivery of v - 1 (order across
///   shards and lineage);
/// - without failures (`exactly_once`), nothing was delivered twice.
pub fn check_deliveries(written: &Written, deliveries: &[Delivery], exactly_once: bool) {
    let mut seen: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut last_seq: HashMap<(usize, &str), &SequenceNumber> = HashMap::new();
    for d in deliveries {
        if let Some(prev) = last_seq.insert((d.handler_instance, &d.shard_id), &d.sequence_number) {
            assert!(
                prev < &d.sequence_number,
                "order violated in shard {}: {} after {}",
                d.shard_id,
                d.sequence_number,
                prev
            );
        }
        let versions = seen.entry(&d.key).or_default();
        if d.version > 1 {
            assert!(
                versions.contains(&(d.version - 1)),
                "key {} version {} delivered before version {} (seen so far {:?})",
                d.key,
                d.version,
                d.version - 1,
                versions
            );
        }
        versions.push(d.version);
    }
    for (key, n) in &written.versions {
        let got = seen.get(key.as_str()).cloned().unwrap_or_default();
        for v in 1..=*n {
            assert!(
                got.contains(&v),
                "key {key} version {v} was never delivered (got {got:?})"
            );
        }
    }
    if exactly_once {
        let total: usize = seen.values().map(|v| v.len()).sum();
        assert_eq!(
            total as u64,
            written.total(),
            "duplicates delivered without any failure"
        );
    }
}

/// A consumer of `sim` recording into `log`, with `store`, configured by `f`.
pub async fn start(
    sim: &Simulator,
    log: &Log,
    store: &dynamodb_stream::checkpoint::MemoryCheckpointStore,
    f: impl FnOnce(&mut dynamodb_stream::ConsumerConfig),
) -> (dynamodb_stream::Consumer, Events) {
    let l = log.clone();
    let builder = dynamodb_stream::Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .checkpoints(store.clone())
        .configure(f);
    let events = Events::collect(builder.events());
    (builder.spawn().await.expect("spawn"), events)
}

/// A [`StreamsApi`] wrapper that counts errors by kind, to tell recovery paths apart.
#[derive(Clone)]
pub struct Counting {
    pub inner: Simulator,
    pub errors: Arc<Mutex<HashMap<dynamodb_stream::error::SourceErrorKind, usize>>>,
}

impl Counting {
    pub fn new(inner: Simulator) -> Self {
        Self {
            inner,
            errors: Arc::default(),
        }
    }

    pub fn count(&self, kind: dynamodb_stream::error::SourceErrorKind) -> usize {
        self.errors.lock().unwrap().get(&kind).copied().unwrap_or(0)
    }

    fn note<T>(
        &self,
        r: Result<T, dynamodb_stream::error::SourceError>,
    ) -> Result<T, dynamodb_stream::error::SourceError> {
        if let Err(e) = &r {
            *self.errors.lock().unwrap().entry(e.kind()).or_default() += 1;
        }
        r
    }
}

use dynamodb_stream::source::{
    BoxFuture, DescribeStreamRequest, IteratorPosition, RecordsPage, StreamDescription, StreamsApi,
};

impl StreamsApi for Counting {
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, dynamodb_stream::error::SourceError>> {
        Box::pin(async move { self.note(self.inner.describe_stream(request).await) })
    }
    fn get_shard_iterator(
        &self,
        arn: String,
        shard: String,
        position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, dynamodb_stream::error::SourceError>> {
        Box::pin(
            async move { self.note(self.inner.get_shard_iterator(arn, shard, position).await) },
        )
    }
    fn get_records(
        &self,
        iterator: String,
        limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, dynamodb_stream::error::SourceError>> {
        Box::pin(async move { self.note(self.inner.get_records(iterator, limit).await) })
    }
    fn wall_clock(&self) -> std::time::SystemTime {
        self.inner.wall_clock()
    }
}

/// A consumer of `sim` recording into `log`, with `store`, and whatever `f` adds to the builder
/// (retry policy, failure sink, filters, lanes, batching, configuration).
pub async fn start_with(
    sim: &Simulator,
    log: &Log,
    store: &dynamodb_stream::checkpoint::MemoryCheckpointStore,
    f: impl FnOnce(dynamodb_stream::ConsumerBuilder) -> dynamodb_stream::ConsumerBuilder,
) -> (dynamodb_stream::Consumer, Events) {
    let l = log.clone();
    let builder = f(
        dynamodb_stream::Consumer::builder(sim.clone(), sim.stream_arn())
            .handler_factory(move |s| l.handler(s))
            .checkpoints(store.clone()),
    );
    let events = Events::collect(builder.events());
    (builder.spawn().await.expect("spawn"), events)
}

/// The checkpoint key of the default application on `sim`'s stream.
pub fn stream_key(sim: &Simulator) -> dynamodb_stream::checkpoint::StreamKey {
    dynamodb_stream::checkpoint::StreamKey {
        application: "default".into(),
        stream_arn: sim.stream_arn(),
    }
}

/// What `store` holds for `shard_id` of `sim`'s stream.
pub fn stored_checkpoint(
    store: &dynamodb_stream::checkpoint::MemoryCheckpointStore,
    sim: &Simulator,
    shard_id: &str,
) -> Option<dynamodb_stream::checkpoint::ShardCheckpoint> {
    store
        .snapshot(&stream_key(sim))
        .and_then(|s| s.shards.get(shard_id).cloned())
}

/// Every record written to `shard_id`, in sequence order.
pub fn shard_records(sim: &Simulator, shard_id: &str) -> Vec<dynamodb_stream::StreamRecord> {
    sim.written_records()
        .into_iter()
        .filter(|w| w.shard_id == shard_id)
        .map(|w| w.record)
        .collect()
}

/// The last sequence number written to `shard_id`.
pub fn last_sequence_number(sim: &Simulator, shard_id: &str) -> SequenceNumber {
    shard_records(sim, shard_id)
        .last()
        .map(|r| r.sequence_number().clone())
        .expect("the shard holds records")
}

/// Wait until `store` holds `shard_id` as processed through the last record written to it
/// (records filtered out or given up on included); fail with `what` after `within`.
pub async fn until_checkpointed_to_last(
    store: &dynamodb_stream::checkpoint::MemoryCheckpointStore,
    sim: &Simulator,
    shard_id: &str,
    within: Duration,
    what: &str,
) {
    let last = last_sequence_number(sim, shard_id);
    periodic_check(
        || {
            stored_checkpoint(store, sim, shard_id)
                == Some(dynamodb_stream::checkpoint::ShardCheckpoint::Processed {
                    sequence_number: last.clone(),
                })
        },
        within,
        what,
    )
    .await;
}

/// The JSON objects of a JSON-lines file (none when it does not exist).
pub fn read_json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// A [`StreamsApi`] wrapper that logs the sequence numbers of every non-empty GetRecords page,
/// to tell which page each record came from.
#[derive(Clone)]
pub struct Pages {
    pub inner: Simulator,
    pub pages: Arc<Mutex<Vec<Vec<SequenceNumber>>>>,
}

impl Pages {
    pub fn new(inner: Simulator) -> Self {
        Self {
            inner,
            pages: Arc::default(),
        }
    }

    pub fn pages(&self) -> Vec<Vec<SequenceNumber>> {
        self.pages.lock().unwrap().clone()
    }

    /// The index of the page `seq` came in (the first, if it came more than once).
    pub fn page_of(&self, seq: &SequenceNumber) -> Option<usize> {
        self.pages
            .lock()
            .unwrap()
            .iter()
            .position(|p| p.contains(seq))
    }
}

impl StreamsApi for Pages {
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, dynamodb_stream::error::SourceError>> {
        self.inner.describe_stream(request)
    }
    fn get_shard_iterator(
        &self,
        arn: String,
        shard: String,
        position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, dynamodb_stream::error::SourceError>> {
        self.inner.get_shard_iterator(arn, shard, position)
    }
    fn get_records(
        &self,
        iterator: String,
        limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, dynamodb_stream::error::SourceError>> {
        Box::pin(async move {
            let page = self.inner.get_records(iterator, limit).await?;
            if !page.records.is_empty() {
                self.pages.lock().unwrap().push(
                    page.records
                        .iter()
                        .map(|r| r.sequence_number().clone())
                        .collect(),
                );
            }
            Ok(page)
        })
    }
    fn wall_clock(&self) -> std::time::SystemTime {
        self.inner.wall_clock()
    }
}

/// Like [`start`], for a consumer that must refuse to start: the error and the events so far.
pub async fn start_err(
    sim: &Simulator,
    log: &Log,
    store: &dynamodb_stream::checkpoint::MemoryCheckpointStore,
    f: impl FnOnce(&mut dynamodb_stream::ConsumerConfig),
) -> (dynamodb_stream::Error, Vec<ConsumerEvent>) {
    let l = log.clone();
    let builder = dynamodb_stream::Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .checkpoints(store.clone())
        .configure(f);
    let mut rx = builder.events();
    let err = builder
        .spawn()
        .await
        .expect_err("the consumer must refuse to start");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (err, events)
}

/// Every gap among `events`, in order.
pub fn gaps(events: &[ConsumerEvent]) -> Vec<dynamodb_stream::events::Gap> {
    events
        .iter()
        .filter_map(|e| match e {
            ConsumerEvent::Gap(g) => Some(g.clone()),
            _ => None,
        })
        .collect()
}

/// No quiet loss (I5), exactly: every record written to `sim` was delivered, or lies in the lost
/// range of a gap reported for its own shard; and a gap whose range has an upper bound claims no
/// record the stream still holds (it lost exactly what it says: the bound was the oldest
/// retained record when the gap was found, and trimming only moves forward).
pub fn check_no_quiet_loss(
    sim: &Simulator,
    deliveries: &[Delivery],
    gaps: &[dynamodb_stream::events::Gap],
) {
    let delivered: HashSet<(&str, &SequenceNumber)> = deliveries
        .iter()
        .map(|d| (d.shard_id.as_str(), &d.sequence_number))
        .collect();
    for w in sim.written_records() {
        let seq = w.record.sequence_number();
        if delivered.contains(&(w.shard_id.as_str(), seq)) {
            continue;
        }
        assert!(
            gaps.iter()
                .any(|g| g.shard_id == w.shard_id && g.lost.contains(seq)),
            "record {seq} of shard {} ({}) was neither delivered nor reported lost; gaps: {gaps:?}",
            w.shard_id,
            w.record.key_string()
        );
    }
    check_bounded_gaps(sim, gaps);
}

/// A gap whose range has an upper bound claims no record the stream still holds.
pub fn check_bounded_gaps(sim: &Simulator, gaps: &[dynamodb_stream::events::Gap]) {
    for g in gaps.iter().filter(|g| g.lost.before.is_some()) {
        let retained = sim.retained_records(&g.shard_id).unwrap_or_default();
        if let Some(r) = retained
            .iter()
            .find(|r| g.lost.contains(r.sequence_number()))
        {
            panic!(
                "gap {g} claims record {} that the stream still holds",
                r.sequence_number()
            );
        }
    }
}

use dynamodb_stream::checkpoint::{ShardCheckpoint, StreamKey};
use dynamodb_stream::error::SourceError;
use dynamodb_stream::lease::{Lease, LeaseError, LeaseStore, MemoryLeaseStore};

/// Hangs every call while `paused` is set.
#[derive(Clone)]
pub struct Pausable<T> {
    pub inner: T,
    pub paused: Arc<std::sync::atomic::AtomicBool>,
}

impl<T> Pausable<T> {
    async fn wait(&self) {
        while self.paused.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl StreamsApi for Pausable<Simulator> {
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, SourceError>> {
        Box::pin(async move {
            self.wait().await;
            self.inner.describe_stream(request).await
        })
    }
    fn get_shard_iterator(
        &self,
        arn: String,
        shard: String,
        position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            self.wait().await;
            self.inner.get_shard_iterator(arn, shard, position).await
        })
    }
    fn get_records(
        &self,
        iterator: String,
        limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, SourceError>> {
        Box::pin(async move {
            self.wait().await;
            self.inner.get_records(iterator, limit).await
        })
    }
    fn wall_clock(&self) -> std::time::SystemTime {
        self.inner.wall_clock()
    }
}

impl LeaseStore for Pausable<MemoryLeaseStore> {
    fn ensure_table(&self) -> BoxFuture<'_, Result<(), LeaseError>> {
        Box::pin(async move {
            self.wait().await;
            self.inner.ensure_table().await
        })
    }
    fn list(&self, key: &StreamKey) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        let key = key.clone();
        Box::pin(async move {
            self.wait().await;
            self.inner.list(&key).await
        })
    }
    fn create(
        &self,
        key: &StreamKey,
        shard_id: &str,
        parents: &[String],
    ) -> BoxFuture<'_, Result<bool, LeaseError>> {
        let (key, shard_id, parents) = (key.clone(), shard_id.to_owned(), parents.to_vec());
        Box::pin(async move {
            self.wait().await;
            self.inner.create(&key, &shard_id, &parents).await
        })
    }
    fn take(
        &self,
        key: &StreamKey,
        shard_id: &str,
        expected: u64,
        owner: &str,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<Lease, LeaseError>> {
        let (key, shard_id, owner) = (key.clone(), shard_id.to_owned(), owner.to_owned());
        Box::pin(async move {
            self.wait().await;
            self.inner
                .take(&key, &shard_id, expected, &owner, expires_at_ms)
                .await
        })
    }
    fn renew(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<u64, LeaseError>> {
        let (key, shard_id, owner) = (key.clone(), shard_id.to_owned(), owner.to_owned());
        Box::pin(async move {
            self.wait().await;
            self.inner
                .renew(&key, &shard_id, &owner, counter, expires_at_ms)
                .await
        })
    }
    fn checkpoint(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
        checkpoint: &ShardCheckpoint,
    ) -> BoxFuture<'_, Result<u64, LeaseError>> {
        let (key, shard_id, owner, cp) = (
            key.clone(),
            shard_id.to_owned(),
            owner.to_owned(),
            checkpoint.clone(),
        );
        Box::pin(async move {
            self.wait().await;
            self.inner
                .checkpoint(&key, &shard_id, &owner, counter, &cp)
                .await
        })
    }
    fn release(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
    ) -> BoxFuture<'_, Result<u64, LeaseError>> {
        let (key, shard_id, owner) = (key.clone(), shard_id.to_owned(), owner.to_owned());
        Box::pin(async move {
            self.wait().await;
            self.inner.release(&key, &shard_id, &owner, counter).await
        })
    }
    fn request_handoff(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        to: &str,
    ) -> BoxFuture<'_, Result<bool, LeaseError>> {
        let (key, shard_id, owner, to) = (
            key.clone(),
            shard_id.to_owned(),
            owner.to_owned(),
            to.to_owned(),
        );
        Box::pin(async move {
            self.wait().await;
            self.inner
                .request_handoff(&key, &shard_id, &owner, &to)
                .await
        })
    }
    fn delete(&self, key: &StreamKey, shard_id: &str) -> BoxFuture<'_, Result<(), LeaseError>> {
        let (key, shard_id) = (key.clone(), shard_id.to_owned());
        Box::pin(async move {
            self.wait().await;
            self.inner.delete(&key, &shard_id).await
        })
    }
}

/// Run `run` for each seed on a paused single-threaded runtime: `DDBSTREAM_SEED` runs one seed,
/// `DDBSTREAM_SEEDS` sets the last one (from `DDBSTREAM_FIRST_SEED`, default 1; `default` when
/// unset). A failing seed is named, with
/// how to run it alone.
pub fn run_seeds<F, Fut>(what: &str, default: u64, run: F)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let seeds: Vec<u64> = match std::env::var("DDBSTREAM_SEED") {
        Ok(s) => vec![s.parse().expect("DDBSTREAM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("DDBSTREAM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default);
            // To go on after a failing seed was fixed: DDBSTREAM_FIRST_SEED=N.
            let first: u64 = std::env::var("DDBSTREAM_FIRST_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            (first..=n).collect()
        }
    };
    if std::env::var("DDBSTREAM_DEBUG").is_ok() {
        // The consumer's own log (RUST_LOG filters it), with the handler's CALL lines.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    for seed in seeds {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(run(seed))));
        if let Err(e) = result {
            eprintln!("{what} failed for seed {seed}; rerun with DDBSTREAM_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
