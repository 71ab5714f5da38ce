//! The three DynamoDB Streams calls the consumer needs, behind one trait.
//!
//! [`StreamsApi`] uses crate-owned types and classified [`SourceError`]s, so the consumer runs
//! the same against AWS (`aws-sdk-dynamodbstreams`, feature `aws`), DynamoDB Local, and the
//! in-memory [`sim`](crate::sim).

#[cfg(feature = "aws")]
pub(crate) mod aws;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::SourceError;
use crate::record::{SequenceNumber, StreamRecord, StreamViewType};

/// A boxed, sendable future, as returned by [`StreamsApi`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The most shards one DescribeStream page returns.
pub const DESCRIBE_STREAM_PAGE_LIMIT: u32 = 100;

/// The most records one GetRecords call returns.
pub const GET_RECORDS_LIMIT: u32 = 1000;

/// DynamoDB Streams' read operations, as the consumer uses them.
///
/// Contract for implementors:
/// - `describe_stream` returns at most `limit` shards starting after `exclusive_start_shard_id`,
///   and sets `last_evaluated_shard_id` when more remain. With `child_shards_of` set it returns
///   only that shard's children.
/// - `get_records` returns records of one shard in increasing sequence order, and
///   `next_shard_iterator: None` only when the shard is closed and fully read.
/// - Errors are classified precisely: an expired iterator is
///   [`ExpiredIterator`](crate::error::SourceErrorKind::ExpiredIterator), a trimmed position
///   [`TrimmedData`](crate::error::SourceErrorKind::TrimmedData); the consumer's recovery depends
///   on it.
pub trait StreamsApi: Send + Sync + 'static {
    /// One page of the stream's description.
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, SourceError>>;

    /// An iterator into `shard_id` at `position`.
    fn get_shard_iterator(
        &self,
        stream_arn: String,
        shard_id: String,
        position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, SourceError>>;

    /// Up to `limit` records from `shard_iterator`.
    fn get_records(
        &self,
        shard_iterator: String,
        limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, SourceError>>;

    /// The wall clock that record creation times are measured against. The consumer dates its
    /// `LATEST` bookmark with it. Real services use the system clock (the default); a simulator
    /// with a controllable clock returns its own.
    fn wall_clock(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
}

impl<T: StreamsApi + ?Sized> StreamsApi for Arc<T> {
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, SourceError>> {
        (**self).describe_stream(request)
    }

    fn get_shard_iterator(
        &self,
        stream_arn: String,
        shard_id: String,
        position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, SourceError>> {
        (**self).get_shard_iterator(stream_arn, shard_id, position)
    }

    fn get_records(
        &self,
        shard_iterator: String,
        limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, SourceError>> {
        (**self).get_records(shard_iterator, limit)
    }

    fn wall_clock(&self) -> std::time::SystemTime {
        (**self).wall_clock()
    }
}

/// Arguments of DescribeStream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeStreamRequest {
    /// The stream.
    pub stream_arn: String,
    /// Continue after this shard (from the previous page's `last_evaluated_shard_id`).
    pub exclusive_start_shard_id: Option<String>,
    /// Page size; the service caps it at 100.
    pub limit: Option<u32>,
    /// Only the children of this shard (`ShardFilter` `CHILD_SHARDS`).
    pub child_shards_of: Option<String>,
}

/// The status of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamStatus {
    /// Being enabled.
    Enabling,
    /// Records flow.
    Enabled,
    /// Being disabled.
    Disabling,
    /// No new records; existing shards can still be read until they are trimmed.
    Disabled,
    /// A status this crate does not know.
    Unknown(String),
}

/// One page of DescribeStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    /// The stream.
    pub stream_arn: String,
    /// Its status.
    pub stream_status: StreamStatus,
    /// Which images its records carry.
    pub stream_view_type: Option<StreamViewType>,
    /// The table it belongs to.
    pub table_name: Option<String>,
    /// The shards on this page.
    pub shards: Vec<Shard>,
    /// Set when more shards follow.
    pub last_evaluated_shard_id: Option<String>,
}

/// A shard as DescribeStream lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shard {
    /// The shard's id.
    pub shard_id: String,
    /// The shard it was split or rolled over from, if that is still known.
    pub parent_shard_id: Option<String>,
    /// The first sequence number it holds.
    pub starting_sequence_number: Option<SequenceNumber>,
    /// Its last sequence number; set once the shard is closed.
    pub ending_sequence_number: Option<SequenceNumber>,
}

impl Shard {
    /// A closed shard takes no new records; it ends once read to its ending sequence number.
    pub fn is_closed(&self) -> bool {
        self.ending_sequence_number.is_some()
    }

    /// Whether `seq` can belong to this shard (inside its sequence number range).
    pub fn contains(&self, seq: &SequenceNumber) -> bool {
        let after_start = self
            .starting_sequence_number
            .as_ref()
            .is_none_or(|s| seq >= s);
        let before_end = self
            .ending_sequence_number
            .as_ref()
            .is_none_or(|e| seq <= e);
        after_start && before_end
    }
}

/// Where a shard iterator starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IteratorPosition {
    /// The oldest record still retained (up to 24 hours back).
    TrimHorizon,
    /// Only records written after the iterator is created.
    Latest,
    /// At this record.
    AtSequenceNumber(SequenceNumber),
    /// Right after this record.
    AfterSequenceNumber(SequenceNumber),
}

impl IteratorPosition {
    /// The AWS name of the iterator type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::TrimHorizon => "TRIM_HORIZON",
            Self::Latest => "LATEST",
            Self::AtSequenceNumber(_) => "AT_SEQUENCE_NUMBER",
            Self::AfterSequenceNumber(_) => "AFTER_SEQUENCE_NUMBER",
        }
    }
}

/// One GetRecords result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordsPage {
    /// Records in increasing sequence order; may be empty on an open shard.
    pub records: Vec<StreamRecord>,
    /// Where to continue; `None` once a closed shard has been read to its end.
    pub next_shard_iterator: Option<String>,
}

/// Every shard of a stream, following DescribeStream pages to the end.
///
/// `between_pages` runs before each page after the first (the coordinator uses it to stay
/// within the DescribeStream rate limit).
pub(crate) async fn describe_all<F, Fut>(
    api: &dyn StreamsApi,
    stream_arn: &str,
    mut between_pages: F,
) -> Result<StreamDescription, SourceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut request = DescribeStreamRequest {
        stream_arn: stream_arn.to_owned(),
        limit: Some(DESCRIBE_STREAM_PAGE_LIMIT),
        ..Default::default()
    };
    let mut first = api.describe_stream(request.clone()).await?;
    while let Some(last) = first.last_evaluated_shard_id.take() {
        between_pages().await;
        request.exclusive_start_shard_id = Some(last);
        let page = api.describe_stream(request.clone()).await?;
        first.shards.extend(page.shards);
        first.last_evaluated_shard_id = page.last_evaluated_shard_id;
        first.stream_status = page.stream_status;
    }
    Ok(first)
}
