//! Where the replicator reads the table: DescribeTable and segmented Scan, behind one trait.

use crate::error::{Error, Result};
use crate::record::{item_key_string, AttributeValue, Item};
use crate::sim::{SimError, Simulator};
use crate::source::{DescribeStreamRequest, StreamsApi};

use super::{KeyAttribute, KeyRole, TableInfo};

/// A table to scan: `aws_sdk_dynamodb::Client`, the [`Simulator`], or your own.
///
/// Contract for implementors:
/// - `table_info` fails with [`Error::InvalidArgument`] when the table does not exist or has
///   no enabled stream, naming the table.
/// - `scan_segment` returns one page of one segment, in the manner of DynamoDB's parallel Scan: the
///   segments together return every item exactly once, and a page's `last_evaluated_key`
///   continues its segment (`None` when the segment is finished). Retryable failures
///   (throttling, timeouts) are `Error::Source` errors whose kind says so: the replicator backs
///   off and repeats the call.
pub trait TableSource: Send + Sync + 'static {
    /// The table, its stream and its key schema.
    fn table_info(&self, table_name: &str) -> crate::source::BoxFuture<'_, Result<TableInfo>>;

    /// One page of one scan segment.
    fn scan_segment(&self, request: ScanRequest) -> crate::source::BoxFuture<'_, Result<ScanPage>>;
}

impl<T: TableSource + ?Sized> TableSource for std::sync::Arc<T> {
    fn table_info(&self, table_name: &str) -> crate::source::BoxFuture<'_, Result<TableInfo>> {
        (**self).table_info(table_name)
    }

    fn scan_segment(&self, request: ScanRequest) -> crate::source::BoxFuture<'_, Result<ScanPage>> {
        (**self).scan_segment(request)
    }
}

/// Arguments of one Scan call.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRequest {
    /// The table.
    pub table_name: String,
    /// This segment (0-based).
    pub segment: u32,
    /// How many segments the scan is split into.
    pub total_segments: u32,
    /// Continue after this key (the previous page's `last_evaluated_key`).
    pub exclusive_start_key: Option<Item>,
    /// At most this many items per page (the service also stops at 1 MB).
    pub limit: Option<u32>,
}

/// One page of a Scan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScanPage {
    /// The items.
    pub items: Vec<Item>,
    /// Where the segment continues; `None` once it is finished.
    pub last_evaluated_key: Option<Item>,
    /// Read capacity units the page consumed, as the service reported it
    /// (`ReturnConsumedCapacity`); `None` when the source does not say (the replicator's scan
    /// budget then estimates it from the items' sizes, see [`read_units`]).
    pub consumed_read_units: Option<f64>,
}

/// Read capacity units a strongly consistent Scan spends on `items`: their approximate sizes
/// summed and rounded up to 4 KB, at least one unit per page (DynamoDB's rule).
pub fn read_units(items: &[Item]) -> f64 {
    let bytes: usize = items
        .iter()
        .map(|item| {
            item.iter()
                .map(|(name, value)| name.len() + attribute_size(value))
                .sum::<usize>()
        })
        .sum();
    bytes.div_ceil(4096).max(1) as f64
}

/// DynamoDB's size of an attribute value (approximately: numbers by their digits).
fn attribute_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(Vec::len).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|a| 1 + attribute_size(a)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, a)| 1 + k.len() + attribute_size(a))
                .sum::<usize>()
        }
    }
}

/// The simulator is a table too: its items, split into segments by a hash of their key.
impl TableSource for Simulator {
    fn table_info(&self, table_name: &str) -> crate::source::BoxFuture<'_, Result<TableInfo>> {
        let table_name = table_name.to_owned();
        Box::pin(async move {
            if table_name != self.table_name() {
                return Err(Error::InvalidArgument(format!(
                    "table {table_name:?} not found"
                )));
            }
            let description = self
                .describe_stream(DescribeStreamRequest {
                    stream_arn: self.stream_arn(),
                    limit: Some(1),
                    ..Default::default()
                })
                .await?;
            Ok(TableInfo {
                table_name,
                stream_arn: description.stream_arn,
                view_type: description.stream_view_type,
                key_schema: simulator_key_schema(self),
                item_count: Some(self.item_count() as u64),
            })
        })
    }

    fn scan_segment(&self, request: ScanRequest) -> crate::source::BoxFuture<'_, Result<ScanPage>> {
        Box::pin(async move {
            if request.table_name != self.table_name() {
                return Err(Error::InvalidArgument(format!(
                    "table {:?} not found",
                    request.table_name
                )));
            }
            let total = request.total_segments.max(1);
            if request.segment >= total {
                return Err(Error::InvalidArgument(format!(
                    "scan segment {} out of range 0..{total}",
                    request.segment
                )));
            }
            let key_schema = simulator_key_schema(self);
            let after = request
                .exclusive_start_key
                .as_ref()
                .map(|k| item_key_string(&key_of(&key_schema, k)));
            // Items in key-string order, so a key string is a resume position.
            let mut items: Vec<(String, Item)> = self
                .scan()
                .into_iter()
                .map(|item| (item_key_string(&key_of(&key_schema, &item)), item))
                .filter(|(k, _)| segment_of(k, total) == request.segment)
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
                .collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            let limit = request.limit.map_or(usize::MAX, |l| l.max(1) as usize);
            let more = items.len() > limit;
            items.truncate(limit);
            let last_evaluated_key = if more {
                items.last().map(|(_, item)| key_of(&key_schema, item))
            } else {
                None
            };
            let items: Vec<Item> = items.into_iter().map(|(_, item)| item).collect();
            Ok(ScanPage {
                consumed_read_units: Some(read_units(&items)),
                items,
                last_evaluated_key,
            })
        })
    }
}

/// The simulator's key attributes.
///
/// The simulator has no accessor for its key schema, but tells which key attribute an item
/// lacks; asking about an empty key and then a key with only the partition attribute reveals
/// both, without touching the table.
fn simulator_key_schema(sim: &Simulator) -> Vec<KeyAttribute> {
    let mut schema = Vec::new();
    let mut probe = Item::default();
    for role in [KeyRole::Partition, KeyRole::Sort] {
        match sim.shard_for_keys(&probe) {
            Err(SimError::MissingKey(name)) => {
                probe.insert(name.clone(), AttributeValue::S(String::new()));
                schema.push(KeyAttribute {
                    name,
                    role,
                    scalar_type: None,
                });
            }
            _ => break,
        }
    }
    schema
}

/// The key attributes of `item`.
pub(crate) fn key_of(key_schema: &[KeyAttribute], item: &Item) -> Item {
    let mut key = Item::default();
    for attribute in key_schema {
        if let Some(value) = item.get(&attribute.name) {
            key.insert(attribute.name.clone(), value.clone());
        }
    }
    key
}

/// Which of `total` segments a key belongs to (FNV-1a of its key string: stable across runs).
fn segment_of(key_string: &str, total: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key_string.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(total.max(1))) as u32
}
