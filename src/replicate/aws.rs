//! [`TableSource`] over `aws-sdk-dynamodb`: DescribeTable and a consistent, segmented Scan.

use std::collections::HashMap;

use aws_sdk_dynamodb as dynamodb;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use dynamodb::error::SdkError;
use dynamodb::types::AttributeValue as Sdk;

use crate::error::{Error, Result, SourceError, SourceErrorKind};
use crate::record::{AttributeValue, Item};
use crate::source::aws::resolve_table_stream;
use crate::source::BoxFuture;

use super::source::{ScanPage, ScanRequest, TableSource};
use super::{KeyAttribute, KeyRole, ScalarType, TableInfo};

impl TableSource for dynamodb::Client {
    fn table_info(&self, table_name: &str) -> BoxFuture<'_, Result<TableInfo>> {
        let table_name = table_name.to_owned();
        Box::pin(async move {
            // The shared resolution gives the crate's one wording for a missing table or stream.
            let stream = resolve_table_stream(self, &table_name).await?;
            // A second look for what it does not keep: attribute types and the item count.
            let output = self
                .describe_table()
                .table_name(&table_name)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeTable", &table_name, e))?;
            let table = output
                .table
                .unwrap_or_else(|| dynamodb::types::TableDescription::builder().build());
            let types: HashMap<&str, Option<ScalarType>> = table
                .attribute_definitions()
                .iter()
                .map(|d| {
                    let t = match d.attribute_type() {
                        dynamodb::types::ScalarAttributeType::S => Some(ScalarType::S),
                        dynamodb::types::ScalarAttributeType::N => Some(ScalarType::N),
                        dynamodb::types::ScalarAttributeType::B => Some(ScalarType::B),
                        _ => None,
                    };
                    (d.attribute_name(), t)
                })
                .collect();
            let key_schema = stream
                .key_attributes
                .iter()
                .enumerate()
                .map(|(i, name)| KeyAttribute {
                    name: name.clone(),
                    // `resolve_table_stream` lists the partition key first.
                    role: if i == 0 {
                        KeyRole::Partition
                    } else {
                        KeyRole::Sort
                    },
                    scalar_type: types.get(name.as_str()).copied().flatten(),
                })
                .collect();
            Ok(TableInfo {
                table_name,
                stream_arn: stream.stream_arn,
                view_type: stream.view_type,
                key_schema,
                item_count: table.item_count().and_then(|n| u64::try_from(n).ok()),
            })
        })
    }

    fn scan_segment(&self, request: ScanRequest) -> BoxFuture<'_, Result<ScanPage>> {
        Box::pin(async move {
            let to_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
            let output = dynamodb::Client::scan(self)
                .table_name(&request.table_name)
                .segment(to_i32(request.segment))
                .total_segments(to_i32(request.total_segments))
                // The stream replay starts at the bookmark, taken before the scan: a consistent
                // read makes sure no write acknowledged before the page was read is missed.
                .consistent_read(true)
                // What the page cost, for the scan's read-capacity budget.
                .return_consumed_capacity(dynamodb::types::ReturnConsumedCapacity::Total)
                .set_limit(request.limit.map(to_i32))
                .set_exclusive_start_key(request.exclusive_start_key.map(item_to_sdk))
                .send()
                .await
                .map_err(|e| sdk_error("Scan", &request.table_name, e))?;
            let items = output
                .items
                .unwrap_or_default()
                .into_iter()
                .map(item_from_sdk)
                .collect::<Result<Vec<_>>>()?;
            let last_evaluated_key = output
                .last_evaluated_key
                .filter(|k| !k.is_empty())
                .map(item_from_sdk)
                .transpose()?;
            Ok(ScanPage {
                items,
                last_evaluated_key,
                consumed_read_units: output.consumed_capacity.and_then(|c| c.capacity_units),
            })
        })
    }
}

/// Classify a failed DynamoDB call the way every stream call is (`source::aws`: set-up problems
/// such as missing or rejected credentials are fatal, with their cause; throttling and transient
/// failures retryable), naming the table; a missing table is the caller's problem.
fn sdk_error<E>(
    operation: &'static str,
    table: &str,
    err: SdkError<E, dynamodb::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata
        + crate::aws_error::ModeledCode
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    let classified = crate::source::aws::classify_sdk_error(operation, err);
    if classified.kind() == SourceErrorKind::NotFound {
        return Error::InvalidArgument(format!("table {table:?} not found"));
    }
    let mut named = SourceError::new(
        classified.kind(),
        format!("table {table:?}: {}", classified.message()),
    );
    if let Some(cause) = classified.cause() {
        named = named.with_cause(cause);
    }
    Error::Source(named.with_source(classified))
}

fn item_from_sdk(map: HashMap<String, Sdk>) -> Result<Item> {
    map.into_iter()
        .map(|(name, value)| {
            attribute_from_sdk(value)
                .map(|v| (name.clone(), v))
                .ok_or_else(|| {
                    Error::Source(SourceError::new(
                        SourceErrorKind::Fatal,
                        format!(
                            "Scan: attribute {name:?} has a type this SDK version does not know"
                        ),
                    ))
                })
        })
        .collect::<Result<HashMap<_, _>>>()
        .map(Item::from)
}

fn attribute_from_sdk(value: Sdk) -> Option<AttributeValue> {
    Some(match value {
        Sdk::S(s) => AttributeValue::S(s),
        Sdk::N(n) => AttributeValue::N(n),
        Sdk::B(b) => AttributeValue::B(b.into_inner()),
        Sdk::Ss(s) => AttributeValue::Ss(s),
        Sdk::Ns(n) => AttributeValue::Ns(n),
        Sdk::Bs(b) => AttributeValue::Bs(b.into_iter().map(|b| b.into_inner()).collect()),
        Sdk::M(m) => AttributeValue::M(
            m.into_iter()
                .map(|(k, v)| attribute_from_sdk(v).map(|v| (k, v)))
                .collect::<Option<_>>()?,
        ),
        Sdk::L(l) => AttributeValue::L(
            l.into_iter()
                .map(attribute_from_sdk)
                .collect::<Option<_>>()?,
        ),
        Sdk::Null(b) => AttributeValue::Null(b),
        Sdk::Bool(b) => AttributeValue::Bool(b),
        _ => return None,
    })
}

fn item_to_sdk(item: Item) -> HashMap<String, Sdk> {
    item.into_inner()
        .into_iter()
        .map(|(k, v)| (k, attribute_to_sdk(v)))
        .collect()
}

fn attribute_to_sdk(value: AttributeValue) -> Sdk {
    use aws_smithy_types::Blob;
    match value {
        AttributeValue::S(s) => Sdk::S(s),
        AttributeValue::N(n) => Sdk::N(n),
        AttributeValue::B(b) => Sdk::B(Blob::new(b)),
        AttributeValue::Ss(s) => Sdk::Ss(s),
        AttributeValue::Ns(n) => Sdk::Ns(n),
        AttributeValue::Bs(b) => Sdk::Bs(b.into_iter().map(Blob::new).collect()),
        AttributeValue::M(m) => Sdk::M(
            m.into_iter()
                .map(|(k, v)| (k, attribute_to_sdk(v)))
                .collect(),
        ),
        AttributeValue::L(l) => Sdk::L(l.into_iter().map(attribute_to_sdk).collect()),
        AttributeValue::Null(b) => Sdk::Null(b),
        AttributeValue::Bool(b) => Sdk::Bool(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_through_the_sdk_types() {
        let mut item: Item = serde_dynamo::to_item(serde_json::json!({
            "pk": "a",
            "m": { "l": [1, "x", true, null] },
        }))
        .expect("item");
        item.insert(
            "n".into(),
            AttributeValue::N("12345678901234567890123456789012345678".into()),
        );
        item.insert("b".into(), AttributeValue::B(vec![0, 1, 255]));
        item.insert(
            "ss".into(),
            AttributeValue::Ss(vec!["x".into(), "y".into()]),
        );
        item.insert("bs".into(), AttributeValue::Bs(vec![vec![1], vec![2]]));
        let back = item_from_sdk(item_to_sdk(item.clone())).expect("converts");
        assert_eq!(back, item);
    }
}
