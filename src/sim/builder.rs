//! Configuration of a [`Simulator`].

use std::time::{Duration, SystemTime};

use crate::record::StreamViewType;

use super::Simulator;

/// Configures a [`Simulator`]; start with [`Simulator::builder`].
///
/// Every setting has a default that matches DynamoDB Streams (or, for the fault knobs, a
/// well-behaved stream), so `Simulator::builder().build()` equals [`Simulator::new`].
#[derive(Debug, Clone)]
pub struct SimulatorBuilder {
    pub(super) table_name: String,
    pub(super) hash_key: String,
    pub(super) range_key: Option<String>,
    pub(super) view_type: StreamViewType,
    pub(super) initial_shards: usize,
    pub(super) seed: u64,
    pub(super) start_time: Option<SystemTime>,
    pub(super) iterator_ttl: Duration,
    pub(super) retention: Duration,
    pub(super) describe_page_limit: u32,
    pub(super) records_page_limit: u32,
    pub(super) page_bytes_limit: u64,
    pub(super) child_visibility_delay: Duration,
    pub(super) stale_describe_probability: f64,
    pub(super) end_race_probability: f64,
}

impl Default for SimulatorBuilder {
    fn default() -> Self {
        Self {
            table_name: "sim-table".to_owned(),
            hash_key: "pk".to_owned(),
            range_key: None,
            view_type: StreamViewType::NewAndOldImages,
            initial_shards: 1,
            seed: 0,
            start_time: None,
            iterator_ttl: Duration::from_secs(15 * 60),
            retention: Duration::from_secs(24 * 60 * 60),
            describe_page_limit: 100,
            records_page_limit: 1000,
            page_bytes_limit: 1024 * 1024,
            child_visibility_delay: Duration::ZERO,
            stale_describe_probability: 0.0,
            end_race_probability: 0.0,
        }
    }
}

impl SimulatorBuilder {
    /// The table's name, which also appears in the stream ARN. Default `"sim-table"`.
    pub fn table_name(mut self, name: impl Into<String>) -> Self {
        self.table_name = name.into();
        self
    }

    /// The partition key attribute. Default `"pk"`.
    pub fn hash_key(mut self, name: impl Into<String>) -> Self {
        self.hash_key = name.into();
        self
    }

    /// A sort key attribute. Default: none.
    pub fn range_key(mut self, name: impl Into<String>) -> Self {
        self.range_key = Some(name.into());
        self
    }

    /// Which images records carry. Default [`StreamViewType::NewAndOldImages`].
    pub fn view_type(mut self, view_type: StreamViewType) -> Self {
        self.view_type = view_type;
        self
    }

    /// How many open shards the stream starts with, splitting the 64-bit hash space evenly.
    /// Default 1; 0 counts as 1.
    pub fn initial_shards(mut self, n: usize) -> Self {
        self.initial_shards = n.max(1);
        self
    }

    /// Seeds the generator behind fault injection, stale DescribeStream answers and iterator
    /// signing. Default 0: the same calls give the same results on every run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The wall-clock time at which the simulator starts: record creation times, shard ids and
    /// the stream ARN count from it. Default: the system time at [`build`](Self::build). Set it
    /// (with [`seed`](Self::seed) and a paused tokio clock) for runs that repeat byte for byte.
    pub fn start_time(mut self, start: SystemTime) -> Self {
        self.start_time = Some(start);
        self
    }

    /// How long a shard iterator stays valid. Default 15 minutes, as in DynamoDB Streams.
    pub fn iterator_ttl(mut self, ttl: Duration) -> Self {
        self.iterator_ttl = ttl;
        self
    }

    /// How long records are kept; older records are trimmed, and closed shards disappear this
    /// long after they closed. Default 24 hours, as in DynamoDB Streams.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The most shards one DescribeStream page returns, whatever the request asks. Default 100,
    /// the service's cap; 0 counts as 1.
    pub fn describe_page_limit(mut self, limit: u32) -> Self {
        self.describe_page_limit = limit.max(1);
        self
    }

    /// The most records one GetRecords call returns, whatever the request asks. Default 1000,
    /// the service's cap; 0 counts as 1.
    pub fn records_page_limit(mut self, limit: u32) -> Self {
        self.records_page_limit = limit.max(1);
        self
    }

    /// The most record bytes (see [`StreamRecord::size_bytes`](crate::StreamRecord::size_bytes))
    /// one GetRecords page holds; a page always holds at least one record. Default 1 MiB, as in
    /// DynamoDB Streams.
    pub fn page_bytes_limit(mut self, bytes: u64) -> Self {
        self.page_bytes_limit = bytes.max(1);
        self
    }

    /// How long the children of a split or rollover stay hidden from DescribeStream. They exist
    /// and take writes at once, as in the real service, where a consumer can see a parent closed
    /// before its children are listed. Default zero.
    pub fn child_visibility_delay(mut self, delay: Duration) -> Self {
        self.child_visibility_delay = delay;
        self
    }

    /// The chance that DescribeStream lists a shard closed within the last 10 seconds (sim time)
    /// as still open, without its ending sequence number, as the eventually consistent real
    /// service sometimes does. Drawn per shard per call. Default 0.0.
    pub fn stale_describe_probability(mut self, probability: f64) -> Self {
        self.stale_describe_probability = probability.clamp(0.0, 1.0);
        self
    }

    /// The chance that a GetRecords call which reads a closed shard to its end leaves out the
    /// last records of its page (one to all of them, drawn) and still answers without a next
    /// iterator. DynamoDB Local does this when a write and a rollover race the call: it reads the
    /// page, then asks separately whether the shard is closed. A consumer that takes such a page
    /// for the shard's end loses the records left out; confirming the end from a fresh iterator
    /// after the last record read finds them. Drawn per call. Default 0.0.
    pub fn end_race_probability(mut self, probability: f64) -> Self {
        self.end_race_probability = probability.clamp(0.0, 1.0);
        self
    }

    /// The simulator, with its stream enabled and its initial shards open.
    pub fn build(self) -> Simulator {
        Simulator::from_builder(self)
    }
}
