//! The three DynamoDB Streams calls the consumer needs, behind one trait.
//!
//! [`StreamsApi`] uses crate-owned types and classified [`SourceError`]s, so the consumer runs
//! the same against AWS (`aws-sdk-dynamodbstreams`, feature `aws`), DynamoDB Local, and the
//! in-memory [`sim`](crate::sim).

#[cfg(feature = "aws")]
pub(crate) mod aws;
#[cfg(feature = "aws")]
mod wire;

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
        crate::rt::system_now()
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
/// `between_pages` runs before each page after the first (to stay within the DescribeStream
/// rate limit). Shards listed twice are kept once; a service that answers the same page again
/// gets a retryable error instead of an endless loop.
pub async fn describe_all<F, Fut>(
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
    let mut all = api.describe_stream(request.clone()).await?;
    let mut seen: std::collections::HashSet<String> =
        all.shards.iter().map(|s| s.shard_id.clone()).collect();
    while let Some(last) = all.last_evaluated_shard_id.take() {
        if request.exclusive_start_shard_id.as_ref() == Some(&last) {
            return Err(SourceError::new(
                crate::error::SourceErrorKind::Retryable,
                format!("DescribeStream of {stream_arn} returned the same page twice (after shard {last})"),
            ));
        }
        between_pages().await;
        request.exclusive_start_shard_id = Some(last);
        let page = api.describe_stream(request.clone()).await?;
        all.shards.extend(
            page.shards
                .into_iter()
                .filter(|s| seen.insert(s.shard_id.clone())),
        );
        all.last_evaluated_shard_id = page.last_evaluated_shard_id;
        all.stream_status = page.stream_status;
    }
    Ok(all)
}

/// Check that `arn` looks like a DynamoDB stream ARN,
/// `arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL`; the error names the value.
pub fn check_stream_arn(arn: &str) -> Result<(), crate::Error> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let resource: Vec<&str> = parts
        .get(5)
        .map(|r| r.split('/').collect())
        .unwrap_or_default();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "dynamodb"
        && resource.len() == 4
        && resource[0] == "table"
        && resource[2] == "stream"
        && resource.iter().all(|p| !p.is_empty());
    if ok {
        Ok(())
    } else {
        Err(crate::Error::InvalidArgument(format!(
            "{arn:?} is not a DynamoDB stream ARN (expected arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SourceErrorKind;

    /// Serves pages of two shards each; `repeat` makes it answer the second page forever.
    struct Pages {
        repeat: bool,
    }

    fn shard(n: u32) -> Shard {
        Shard {
            shard_id: format!("shardId-{n:04}"),
            parent_shard_id: None,
            starting_sequence_number: None,
            ending_sequence_number: None,
        }
    }

    impl StreamsApi for Pages {
        fn describe_stream(
            &self,
            request: DescribeStreamRequest,
        ) -> BoxFuture<'_, Result<StreamDescription, SourceError>> {
            let start = match (request.exclusive_start_shard_id.as_deref(), self.repeat) {
                (None, _) => 0,
                (Some(_), true) => 1,
                (Some(s), false) => s.trim_start_matches("shardId-").parse::<u32>().unwrap_or(0),
            };
            // Pages overlap by one shard, and end after shard 5.
            let shards: Vec<Shard> = (start..(start + 2).min(6)).map(shard).collect();
            let last = (start + 2 < 6).then(|| shard(start + 1).shard_id);
            Box::pin(async move {
                Ok(StreamDescription {
                    stream_arn: request.stream_arn,
                    stream_status: StreamStatus::Enabled,
                    stream_view_type: None,
                    table_name: None,
                    shards,
                    last_evaluated_shard_id: last,
                })
            })
        }
        fn get_shard_iterator(
            &self,
            _: String,
            _: String,
            _: IteratorPosition,
        ) -> BoxFuture<'_, Result<String, SourceError>> {
            Box::pin(async { Err(SourceError::new(SourceErrorKind::Fatal, "unused")) })
        }
        fn get_records(
            &self,
            _: String,
            _: Option<u32>,
        ) -> BoxFuture<'_, Result<RecordsPage, SourceError>> {
            Box::pin(async { Err(SourceError::new(SourceErrorKind::Fatal, "unused")) })
        }
    }

    #[tokio::test]
    async fn pages_are_followed_and_shards_kept_once() {
        let all = describe_all(&Pages { repeat: false }, "arn", || async {})
            .await
            .expect("listed");
        let ids: Vec<&str> = all.shards.iter().map(|s| s.shard_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "shardId-0000",
                "shardId-0001",
                "shardId-0002",
                "shardId-0003",
                "shardId-0004",
                "shardId-0005"
            ]
        );
    }

    #[tokio::test]
    async fn a_repeated_page_is_a_retryable_error_not_a_loop() {
        let err = describe_all(&Pages { repeat: true }, "arn", || async {})
            .await
            .unwrap_err();
        assert_eq!(err.kind(), SourceErrorKind::Retryable);
        assert!(err.message().contains("same page twice"), "{err}");
    }
}
