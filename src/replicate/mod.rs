//! Keep a copy of a DynamoDB table in a sink — a SQLite file, a PostgreSQL database (feature
//! `postgres`) or a store of your own — that survives crashes at any moment. docs/replica.md
//! has the layouts, the [`ReplicaSink`] contract and the recipe for large tables.
//!
//! The recipe ([`Replicator`]):
//!
//! 1. **Bookmark.** On the very first run, every shard of the table's stream is bookmarked at
//!    `LATEST` in the sink's checkpoint store — durably and by *time*, so the bookmark outlives
//!    the 15-minute iterator expiry: a later start re-reads each shard from `TRIM_HORIZON` and
//!    skips only records older than the bookmark (minus a margin).
//! 2. **Scan.** A parallel segmented Scan copies every item into the sink. Each page and its
//!    segment's resume position are written in one transaction, so a crash resumes the scan
//!    where it stopped. Every [`catch_up_every`](ReplicatorBuilder::catch_up_every) (default one
//!    hour) the scan pauses while the stream is read up to where it stands and every change
//!    applied, so a scan may take longer than the stream's 24 hours. A
//!    [`ScanRate`](ReplicatorBuilder::scan_rate) budget keeps it within a share of the table's
//!    read capacity. Progress (items, rate, read units, ETA from the table's `ItemCount`) is
//!    reported in [`ReplicaStatus`].
//! 3. **Stream.** A [`Consumer`](crate::Consumer) on the same checkpoint store replays the
//!    retained stream from the bookmark on top of the scan: `INSERT`/`MODIFY` put the new
//!    image, `REMOVE` deletes. Each acknowledged batch's changes and the shard's checkpoint are
//!    committed by the sink in one transaction ([`ReplicaSink::apply`]), so the checkpoint never
//!    passes a change the sink does not hold, and never lags one it does.
//!
//! Until every shard has passed the newest record that existed when streaming started, the
//! replica mixes scanned and replayed states: [`ReplicaStatus::is_catching_up`] says so. A
//! second run finds the scan complete and resumes from the stored checkpoints.
//!
//! ```no_run
//! use dynamodb_stream::replicate::{Replicator, SqliteReplica};
//!
//! # async fn run(dynamodb: aws_sdk_dynamodb::Client, streams: aws_sdk_dynamodbstreams::Client)
//! # -> dynamodb_stream::Result<()> {
//! let sink = SqliteReplica::open("orders.sqlite").await?;
//! let mut replicator = Replicator::builder(dynamodb, streams, "orders", sink)
//!     .segments(8)
//!     .spawn()
//!     .await?;
//! replicator.caught_up().await?; // the replica now reflects the table as of this moment
//! tokio::signal::ctrl_c().await.ok();
//! replicator.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The same works on the [`Simulator`](crate::sim::Simulator), which is both the table and the
//! stream: `Replicator::builder(sim.clone(), sim.clone(), sim.table_name(), sink)`.

mod aws;
#[cfg(all(
    feature = "postgres",
    not(all(target_arch = "wasm32", target_os = "unknown"))
))]
mod postgres;
mod replicator;
mod sink;
mod source;
mod sqlite;

use serde::{Deserialize, Serialize};

use crate::record::StreamViewType;

#[cfg(all(
    feature = "postgres",
    not(all(target_arch = "wasm32", target_os = "unknown"))
))]
pub use postgres::{
    PostgresReplica, PostgresReplicaBuilder, DEFAULT_POSTGRES_CONNECTIONS, DEFAULT_POSTGRES_SCHEMA,
    POSTGRES_SCHEMA_VERSION,
};
pub use replicator::{
    check_table, ReplicaPhase, ReplicaStatus, Replicator, ReplicatorBuilder, ReplicatorEvent,
    ScanRate, DEFAULT_APPLICATION, DEFAULT_CATCH_UP_EVERY, DEFAULT_SEGMENTS,
};
pub use sink::{ItemChange, ReplicaSink, ScanProgress, SegmentProgress, SequencedChange};
pub use source::{read_units, ScanPage, ScanRequest, TableSource};
pub use sqlite::SqliteReplica;

/// What a replicator needs to know about a table, from DescribeTable (or the simulator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The table's name.
    pub table_name: String,
    /// Its current stream (`LatestStreamArn`).
    pub stream_arn: String,
    /// Which images the stream carries; `None` when the source reports a type this crate does
    /// not know.
    pub view_type: Option<StreamViewType>,
    /// The primary key, partition key first.
    pub key_schema: Vec<KeyAttribute>,
    /// The table's approximate item count (DynamoDB updates it about every six hours), used
    /// for the scan's ETA.
    pub item_count: Option<u64>,
}

/// One attribute of a table's primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyAttribute {
    /// The attribute name.
    pub name: String,
    /// Partition (hash) or sort (range) key.
    pub role: KeyRole,
    /// Its declared type, when the source knows it (DescribeTable's `AttributeDefinitions`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub scalar_type: Option<ScalarType>,
}

/// Whether a key attribute is the partition or the sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    /// The partition (`HASH`) key.
    Partition,
    /// The sort (`RANGE`) key.
    Sort,
}

/// The type of a key attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScalarType {
    /// A string (`S`).
    S,
    /// A number (`N`).
    N,
    /// Binary (`B`).
    B,
}
