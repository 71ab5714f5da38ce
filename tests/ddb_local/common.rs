//! Helpers shared by the DynamoDB Local tests: writing versioned items, recording what handlers
//! saw, collecting events, reading shard lineage, and waiting for conditions.

#![allow(dead_code)]

#[path = "../support/wait.rs"]
mod wait;
pub use wait::{periodic_check, periodic_check_async};

pub use crate::ddb_local::lineage;

pub use crate::events::Events;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue as DdbValue;
use dynamodb_stream::error::{SourceError, SourceErrorKind};
use dynamodb_stream::record::AttributeValue;
use dynamodb_stream::source::{
    BoxFuture, DescribeStreamRequest, IteratorPosition, RecordsPage, StreamDescription, StreamsApi,
};
use dynamodb_stream::{Batch, Handler, HandlerError, RecordKind, SequenceNumber, ShardInfo};

use crate::ddb_local::{sdk_error, TestClients};

/// Fast polling so the tests finish quickly; everything else is the default.
pub fn fast(c: &mut dynamodb_stream::ConsumerConfig) {
    c.min_poll_interval = Duration::from_millis(20);
    c.idle_poll_interval = Duration::from_millis(50);
    c.discovery_interval = Duration::from_millis(500);
    c.min_describe_interval = Duration::from_millis(20);
    c.checkpoint_interval = Duration::from_millis(100);
    c.retry_backoff = Duration::from_millis(50);
    c.max_retry_backoff = Duration::from_millis(500);
}

/// Put `{pk: key, v: version}` (plus `extra` attributes).
pub async fn put(c: &TestClients, table: &str, key: &str, version: u64) {
    c.dynamodb
        .put_item()
        .table_name(table)
        .item("pk", DdbValue::S(key.to_owned()))
        .item("v", DdbValue::N(version.to_string()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem {table}/{key}: {}", sdk_error(&e)));
}

/// Delete `{pk: key}`.
pub async fn delete(c: &TestClients, table: &str, key: &str) {
    c.dynamodb
        .delete_item()
        .table_name(table)
        .key("pk", DdbValue::S(key.to_owned()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteItem {table}/{key}: {}", sdk_error(&e)));
}

/// What was written: per key, the versions 1..=n.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub versions: BTreeMap<String, u64>,
}

impl Written {
    /// Write the next version of `key`.
    pub async fn put(&mut self, c: &TestClients, table: &str, key: &str) {
        let v = self.versions.entry(key.to_owned()).or_insert(0);
        *v += 1;
        put(c, table, key, *v).await;
    }

    pub fn total(&self) -> u64 {
        self.versions.values().sum()
    }

    pub fn merge(&mut self, other: Written) {
        for (k, v) in other.versions {
            let e = self.versions.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
}

/// One record as a handler saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    /// The `pk` value.
    pub key: String,
    /// The `v` of the new image (of the old image for removals; 0 when there is none).
    pub version: u64,
    pub kind: RecordKind,
    /// Which handler instance (a new one per shard start or restart).
    pub instance: usize,
}

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// Everything handlers saw, in the order they saw it.
#[derive(Clone, Default)]
pub struct Log {
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// `on_shard_end` calls: the shard and the number of deliveries logged at that moment.
    pub ended: Arc<Mutex<Vec<(String, usize)>>>,
    /// While set, a handler records its batch and then waits until it is cleared (the batch
    /// stays unacknowledged).
    pub hold: Arc<Mutex<bool>>,
    pub held_batches: Arc<AtomicUsize>,
}

impl Log {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn handler(&self, _shard: &ShardInfo) -> Recorder {
        Recorder {
            log: self.clone(),
            // Unique across logs, so the deliveries of two runs can be checked together.
            instance: INSTANCES.fetch_add(1, Ordering::SeqCst),
        }
    }

    pub fn len(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }

    pub fn snapshot(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// Distinct (key, version) pairs delivered.
    pub fn distinct(&self) -> usize {
        let d = self.deliveries.lock().unwrap();
        let mut set = std::collections::HashSet::new();
        for x in d.iter() {
            set.insert((x.key.clone(), x.version));
        }
        set.len()
    }

    /// Whether the last version of every written key was delivered.
    pub fn has_all(&self, written: &Written) -> bool {
        let d = self.deliveries.lock().unwrap();
        let mut latest: HashMap<&str, u64> = HashMap::new();
        for x in d.iter() {
            let e = latest.entry(x.key.as_str()).or_insert(0);
            *e = (*e).max(x.version);
        }
        written
            .versions
            .iter()
            .all(|(k, v)| latest.get(k.as_str()).is_some_and(|got| got >= v))
    }
}

fn number(item: Option<&dynamodb_stream::record::Item>, name: &str) -> Option<u64> {
    match item?.get(name)? {
        AttributeValue::N(n) => n.parse().ok(),
        _ => None,
    }
}

fn string(item: &dynamodb_stream::record::Item, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// A [`Handler`] that appends to a [`Log`].
pub struct Recorder {
    log: Log,
    instance: usize,
}

impl Handler for Recorder {
    async fn handle(&mut self, batch: Batch) -> Result<(), HandlerError> {
        {
            let mut out = self.log.deliveries.lock().unwrap();
            for r in batch.records() {
                let version = number(r.new_image(), "v")
                    .or_else(|| number(r.old_image(), "v"))
                    .unwrap_or(0);
                out.push(Delivery {
                    shard_id: batch.shard().shard_id.clone(),
                    sequence_number: r.sequence_number().clone(),
                    key: string(r.keys(), "pk"),
                    version,
                    kind: r.kind().clone(),
                    instance: self.instance,
                });
            }
        }
        if *self.log.hold.lock().unwrap() {
            self.log.held_batches.fetch_add(1, Ordering::SeqCst);
            while *self.log.hold.lock().unwrap() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
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

/// The (key, version) pairs written but never delivered, in key order.
pub fn missing(written: &Written, deliveries: &[Delivery]) -> Vec<(String, u64)> {
    let got: std::collections::HashSet<(&str, u64)> = deliveries
        .iter()
        .map(|d| (d.key.as_str(), d.version))
        .collect();
    let mut out = Vec::new();
    for (k, n) in &written.versions {
        for v in 1..=*n {
            if !got.contains(&(k.as_str(), v)) {
                out.push((k.clone(), v));
            }
        }
    }
    out
}

/// Check the deliveries against what was written: every version of every key delivered, each
/// handler instance saw its shard in strictly increasing order, per key versions arrive in
/// order, and with `exactly_once` nothing was delivered twice.
pub fn check_deliveries(written: &Written, deliveries: &[Delivery], exactly_once: bool) {
    let mut seen: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut last_seq: HashMap<(usize, &str), &SequenceNumber> = HashMap::new();
    for d in deliveries {
        if let Some(prev) = last_seq.insert((d.instance, &d.shard_id), &d.sequence_number) {
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
                "key {} version {} delivered before version {}",
                d.key,
                d.version,
                d.version - 1,
            );
        }
        versions.push(d.version);
    }
    for (key, n) in &written.versions {
        let got = seen.get(key.as_str()).cloned().unwrap_or_default();
        for v in 1..=*n {
            assert!(
                got.contains(&v),
                "key {key} version {v} was never delivered"
            );
        }
    }
    if exactly_once {
        let mut dups: Vec<(&str, u64)> = Vec::new();
        for (k, vs) in &seen {
            let mut sorted = vs.clone();
            sorted.sort_unstable();
            for w in sorted.windows(2) {
                if w[0] == w[1] {
                    dups.push((k, w[0]));
                }
            }
        }
        assert!(
            dups.is_empty(),
            "{} duplicate deliveries, e.g. {:?}",
            dups.len(),
            &dups[..dups.len().min(10)]
        );
        assert_eq!(deliveries.len() as u64, written.total(), "delivery count");
    }
}

/// The stream client with every failed call counted by kind, to see which recovery paths ran.
#[derive(Clone)]
pub struct Counting {
    pub inner: aws_sdk_dynamodbstreams::Client,
    pub errors: Arc<Mutex<HashMap<SourceErrorKind, usize>>>,
}

impl Counting {
    pub fn new(inner: aws_sdk_dynamodbstreams::Client) -> Self {
        Self {
            inner,
            errors: Arc::default(),
        }
    }

    pub fn count(&self, kind: SourceErrorKind) -> usize {
        self.errors.lock().unwrap().get(&kind).copied().unwrap_or(0)
    }

    fn note<T>(&self, r: Result<T, SourceError>) -> Result<T, SourceError> {
        if let Err(e) = &r {
            *self.errors.lock().unwrap().entry(e.kind()).or_default() += 1;
        }
        r
    }
}

impl StreamsApi for Counting {
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, SourceError>> {
        Box::pin(async move { self.note(StreamsApi::describe_stream(&self.inner, request).await) })
    }
    fn get_shard_iterator(
        &self,
        arn: String,
        shard: String,
        position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            self.note(StreamsApi::get_shard_iterator(&self.inner, arn, shard, position).await)
        })
    }
    fn get_records(
        &self,
        iterator: String,
        limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, SourceError>> {
        Box::pin(
            async move { self.note(StreamsApi::get_records(&self.inner, iterator, limit).await) },
        )
    }
}
