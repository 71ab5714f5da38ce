//! [`StreamsApi`] over `aws-sdk-dynamodbstreams`, SDK error classification, table-name
//! resolution over `aws-sdk-dynamodb`, and recommended client timeouts.
//!
//! Everything the SDK returns is converted into crate-owned types here, so nothing above this
//! module depends on SDK types. Every SDK failure is classified by [`classify_sdk_error`] into a
//! [`SourceErrorKind`]; the consumer's recovery (back off, refresh the iterator, report a gap,
//! stop) depends on that classification.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb as dynamodb;
use aws_sdk_dynamodbstreams as streams;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, Error as OperationError, Output,
};
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;
use aws_smithy_runtime_api::client::ser_de::{DeserializeResponse, SharedResponseDeserializer};
use aws_smithy_types::config_bag::{ConfigBag, FrozenLayer};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::timeout::TimeoutConfig;
use streams::config::http::HttpResponse;
use streams::config::{Intercept, RuntimeComponents};
use streams::error::SdkError;

use crate::aws_error::{self, modeled_codes, short_code, Failure, ModeledCode};
use crate::error::{Cause, SourceError, SourceErrorKind};
use crate::record::{
    AttributeValue, Item, RecordKind, SequenceNumber, StreamRecord, StreamViewType, UserIdentity,
};
use crate::source::wire;
use crate::source::{
    BoxFuture, DescribeStreamRequest, IteratorPosition, RecordsPage, Shard, StreamDescription,
    StreamStatus, StreamsApi,
};

const DESCRIBE_STREAM: &str = "DescribeStream";
const GET_SHARD_ITERATOR: &str = "GetShardIterator";
const GET_RECORDS: &str = "GetRecords";
const DESCRIBE_TABLE: &str = "DescribeTable";

/// Client timeouts recommended for a stream consumer; pass them to the SDK config
/// (`aws_sdk_dynamodbstreams::config::Builder::timeout_config`, or
/// `aws_config::ConfigLoader::timeout_config`).
///
/// - connect: 3 s
/// - read (time to first response byte): 10 s
/// - operation attempt: 10 s
/// - operation (all attempts, including the SDK's own retries): 30 s
///
/// Why: the SDK's only default timeout is the connect timeout. Without the others a call that
/// hangs on a half-open connection never returns, and the shard it reads from stalls forever
/// while everything looks healthy. DynamoDB Streams has no long-poll — GetRecords returns
/// immediately, with or without records — so 10 s per attempt is generous, and a call that
/// exceeds it fails as a retryable timeout that the consumer backs off from and repeats.
///
/// ```no_run
/// # async fn f() {
/// let sdk_config = aws_config::from_env()
///     .timeout_config(dynamodb_stream::recommended_timeouts())
///     .load()
///     .await;
/// let streams = aws_sdk_dynamodbstreams::Client::new(&sdk_config);
/// # drop(streams); }
/// ```
pub fn recommended_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .read_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build()
}

// ---------------------------------------------------------------------------------------------
// Error classification
// ---------------------------------------------------------------------------------------------

modeled_codes! {
    streams::operation::describe_stream::DescribeStreamError {
        InternalServerError, ResourceNotFoundException,
    }
    streams::operation::get_shard_iterator::GetShardIteratorError {
        InternalServerError, ResourceNotFoundException, TrimmedDataAccessException,
    }
    streams::operation::get_records::GetRecordsError {
        ExpiredIteratorException, InternalServerError, LimitExceededException,
        ResourceNotFoundException, TrimmedDataAccessException,
    }
    dynamodb::operation::describe_table::DescribeTableError {
        InternalServerError, InvalidEndpointException, ResourceNotFoundException,
    }
    dynamodb::operation::scan::ScanError {
        InternalServerError, InvalidEndpointException, ProvisionedThroughputExceededException,
        RequestLimitExceeded, ResourceNotFoundException,
    }
}

/// The kind an AWS error code stands for, if it is one this crate knows.
fn kind_for_code(code: &str) -> Option<SourceErrorKind> {
    let kind = match short_code(code) {
        "ExpiredIteratorException" => SourceErrorKind::ExpiredIterator,
        "TrimmedDataAccessException" => SourceErrorKind::TrimmedData,
        "ResourceNotFoundException" => SourceErrorKind::NotFound,
        "LimitExceededException"
        | "ThrottlingException"
        | "Throttling"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded" => SourceErrorKind::Throttled,
        "InternalServerError" | "InternalFailure" | "ServiceUnavailable" => {
            SourceErrorKind::Retryable
        }
        _ => return None,
    };
    Some(kind)
}

/// Classify a failed SDK call of `operation`, keeping the SDK error as the `source`.
///
/// First what the failure says about the set-up ([`Cause`], read from the SDK's error types and
/// from error codes): missing or unloadable credentials, credentials the service rejects
/// (`UnrecognizedClientException`, `ExpiredTokenException`, ...), access denied, an endpoint URL
/// that cannot be used — each `Fatal` at once, with its cause. Then the rest: service errors by
/// code (see [`kind_for_code`]); an unknown code is `Retryable` on HTTP 5xx, `Throttled` on 429,
/// and `Fatal` otherwise (validation errors). A service error without a code on a 2xx response
/// means the body could not be parsed and is `Retryable`, as are timeouts, connection failures
/// (refused, reset: cause `Unreachable`) and unreadable responses. Construction failures and
/// dispatch failures the connector attributes to the request itself are `Fatal`.
///
/// The message is one line: the operation and what failed (the service's code and message, or
/// the innermost transport error); the SDK's full chain stays reachable through `source()`.
pub(crate) fn classify_sdk_error<E>(
    operation: &'static str,
    err: SdkError<E, HttpResponse>,
) -> SourceError
where
    E: ProvideErrorMetadata + ModeledCode + StdError + Send + Sync + 'static,
{
    let innermost = aws_error::innermost(&err);
    let (kind, cause, message) = match aws_error::read(&err) {
        Failure::Service {
            code,
            status,
            detail,
        } => {
            let cause = code.and_then(aws_error::cause_for_code);
            let kind = match code.and_then(kind_for_code) {
                _ if cause.is_some() => SourceErrorKind::Fatal,
                Some(kind) => kind,
                None if (500..600).contains(&status) => SourceErrorKind::Retryable,
                None if status == 429 => SourceErrorKind::Throttled,
                None if code.is_none() && (200..300).contains(&status) => {
                    SourceErrorKind::Retryable
                }
                None => SourceErrorKind::Fatal,
            };
            let message = match code {
                Some(code) => format!("{operation} failed: {code} (HTTP {status}): {detail}"),
                None => format!("{operation} failed: HTTP {status} without error code: {detail}"),
            };
            (kind, cause, message)
        }
        Failure::Timeout => (
            SourceErrorKind::Retryable,
            Some(Cause::NoAnswer),
            format!("{operation} timed out: {innermost}"),
        ),
        Failure::Dispatch { user, cause } => {
            let kind = match cause {
                Some(c) if c.is_configuration() => SourceErrorKind::Fatal,
                _ if user => SourceErrorKind::Fatal,
                _ => SourceErrorKind::Retryable,
            };
            let message = match cause {
                Some(Cause::NoCredentials) => {
                    format!("{operation} was not sent: no AWS credentials were found")
                }
                Some(Cause::CredentialsNotLoaded) => format!(
                    "{operation} was not sent: the AWS credentials could not be loaded: {innermost}"
                ),
                Some(Cause::InvalidEndpoint) => format!(
                    "{operation} was not sent: the endpoint URL cannot be used: {innermost}"
                ),
                Some(Cause::Unreachable) => {
                    format!("{operation} could not connect to the endpoint: {innermost}")
                }
                Some(Cause::NoAnswer) => {
                    format!("{operation}: no answer from the endpoint in time: {innermost}")
                }
                _ => format!("{operation} could not be sent: {innermost}"),
            };
            (kind, cause, message)
        }
        Failure::Response => (
            SourceErrorKind::Retryable,
            None,
            format!("{operation} response could not be read: {innermost}"),
        ),
        Failure::Construction => (
            SourceErrorKind::Fatal,
            None,
            format!("{operation} request could not be built: {innermost}"),
        ),
        Failure::Other => (
            SourceErrorKind::Fatal,
            None,
            format!("{operation} failed: {innermost}"),
        ),
    };
    let error = SourceError::new(kind, message).with_source(err);
    match cause {
        Some(cause) => error.with_cause(cause),
        None => error,
    }
}

/// The client cannot make a call without a region: say so before the SDK fails with a message
/// about signing, or an endpoint it could not resolve.
fn require_region(
    operation: &'static str,
    region: Option<&streams::config::Region>,
) -> Result<(), SourceError> {
    match region {
        Some(r) if !r.as_ref().is_empty() => Ok(()),
        _ => Err(SourceError::new(
            SourceErrorKind::Fatal,
            format!("{operation} was not sent: no AWS region is configured"),
        )
        .with_cause(Cause::NoRegion)),
    }
}

fn malformed(operation: &'static str, what: &str) -> SourceError {
    SourceError::new(
        SourceErrorKind::Retryable,
        format!("{operation} returned a malformed response: {what}"),
    )
}

// ---------------------------------------------------------------------------------------------
// StreamsApi
// ---------------------------------------------------------------------------------------------

fn limit_to_i32(limit: u32) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

impl StreamsApi for streams::Client {
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, SourceError>> {
        Box::pin(async move {
            require_region(DESCRIBE_STREAM, self.config().region())?;
            let mut call =
                streams::Client::describe_stream(self).stream_arn(request.stream_arn.clone());
            if let Some(limit) = request.limit {
                call = call.limit(limit_to_i32(limit));
            }
            if let Some(start) = request.exclusive_start_shard_id {
                call = call.exclusive_start_shard_id(start);
            }
            if let Some(parent) = request.child_shards_of {
                call = call.shard_filter(
                    streams::types::ShardFilter::builder()
                        .r#type(streams::types::ShardFilterType::ChildShards)
                        .shard_id(parent)
                        .build(),
                );
            }
            let output = call
                .send()
                .await
                .map_err(|e| classify_sdk_error(DESCRIBE_STREAM, e))?;
            let description = output
                .stream_description
                .ok_or_else(|| malformed(DESCRIBE_STREAM, "no StreamDescription"))?;
            convert_description(description, request.stream_arn)
        })
    }

    fn get_shard_iterator(
        &self,
        stream_arn: String,
        shard_id: String,
        position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            use streams::types::ShardIteratorType;
            require_region(GET_SHARD_ITERATOR, self.config().region())?;
            let call = streams::Client::get_shard_iterator(self)
                .stream_arn(stream_arn)
                .shard_id(shard_id);
            let call = match position {
                IteratorPosition::TrimHorizon => {
                    call.shard_iterator_type(ShardIteratorType::TrimHorizon)
                }
                IteratorPosition::Latest => call.shard_iterator_type(ShardIteratorType::Latest),
                IteratorPosition::AtSequenceNumber(seq) => call
                    .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                    .sequence_number(String::from(seq)),
                IteratorPosition::AfterSequenceNumber(seq) => call
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(String::from(seq)),
            };
            let output = call
                .send()
                .await
                .map_err(|e| classify_sdk_error(GET_SHARD_ITERATOR, e))?;
            output
                .shard_iterator
                .ok_or_else(|| malformed(GET_SHARD_ITERATOR, "no ShardIterator"))
        })
    }

    fn get_records(
        &self,
        shard_iterator: String,
        limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, SourceError>> {
        Box::pin(async move {
            require_region(GET_RECORDS, self.config().region())?;
            let mut call = streams::Client::get_records(self).shard_iterator(shard_iterator);
            if let Some(limit) = limit {
                call = call.limit(limit_to_i32(limit));
            }
            let fast = FastPage::default();
            let output = if sdk_get_records_layer().is_some() {
                call.customize().interceptor(fast.clone()).send().await
            } else {
                call.send().await
            }
            .map_err(|e| classify_sdk_error(GET_RECORDS, e))?;
            let records = match fast.take() {
                Some(records) => records,
                // The SDK read this page (the fast reader declined it, or an interceptor of the
                // caller's supplied the output): convert its types.
                None => output
                    .records
                    .unwrap_or_default()
                    .into_iter()
                    .map(convert_record)
                    .collect::<Result<Vec<_>, _>>()?,
            };
            Ok(RecordsPage {
                records,
                next_shard_iterator: output.next_shard_iterator,
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------
// GetRecords fast path
// ---------------------------------------------------------------------------------------------

/// Reads a successful GetRecords body straight into records ([`wire`]) instead of letting the
/// SDK build its own types first, which the consumer would then rebuild (the profile in
/// docs/benchmarks.md: the two passes were 60–70 % of a busy shard's CPU).
///
/// Only the body reader changes: signing, endpoints, retries, timeouts and the caller's own
/// interceptors stay the SDK's. Error answers, and any body the fast reader declines, go to the
/// SDK's own GetRecords deserializer, so their classification and messages are unchanged.
///
/// The slot carries the records from the reader (inside the SDK's call) back to the caller;
/// empty when the SDK's own reader read the page.
#[derive(Clone, Default)]
struct FastPage(Arc<Mutex<Option<Vec<StreamRecord>>>>);

impl FastPage {
    /// The records the fast reader produced, if it read the page.
    fn take(&self) -> Option<Vec<StreamRecord>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn put(&self, records: Vec<StreamRecord>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(records);
    }
}

// Records hold item contents, which never reach logs (docs/operations.md).
impl std::fmt::Debug for FastPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FastPage")
    }
}

/// The SDK's configuration layer for GetRecords, which holds its response deserializer; `None`
/// if it has none (then the SDK reads every page, as before).
fn sdk_get_records_layer() -> Option<&'static FrozenLayer> {
    static LAYER: OnceLock<Option<FrozenLayer>> = OnceLock::new();
    LAYER
        .get_or_init(|| streams::operation::get_records::GetRecords::new().config())
        .as_ref()
}

impl Intercept for FastPage {
    fn name(&self) -> &'static str {
        "dynamodb_stream::FastPage"
    }

    // Installed on every attempt, just before the response is read: the interceptor layer of
    // the config bag is searched before the operation's own, so this reader replaces the SDK's
    // for this call only. An earlier attempt's records are dropped: only the answer the call
    // ends with may be delivered.
    fn modify_before_deserialization(
        &self,
        _context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.take();
        cfg.interceptor_state()
            .store_put(SharedResponseDeserializer::new(self.clone()));
        Ok(())
    }
}

impl DeserializeResponse for FastPage {
    fn deserialize_nonstreaming_with_config(
        &self,
        response: &HttpResponse,
        cfg: &ConfigBag,
    ) -> Result<Output, OrchestratorError<OperationError>> {
        if response.status().is_success() {
            if let Some(body) = response.body().bytes() {
                match wire::parse_get_records(body) {
                    Ok(page) => {
                        self.put(page.records);
                        let output = streams::operation::get_records::GetRecordsOutput::builder()
                            .set_next_shard_iterator(page.next_shard_iterator)
                            .build();
                        return Ok(Output::erase(output));
                    }
                    Err(declined) => {
                        tracing::debug!(reason = %declined.0, "GetRecords page left to the SDK's reader");
                    }
                }
            }
        }
        match sdk_get_records_layer().and_then(|sdk| sdk.load::<SharedResponseDeserializer>()) {
            Some(sdk) => sdk.deserialize_nonstreaming_with_config(response, cfg),
            None => Err(OrchestratorError::other(
                "the SDK's GetRecords deserializer is missing from its operation layer",
            )),
        }
    }
}

fn view_type_from_str(name: &str) -> Option<StreamViewType> {
    match name {
        "KEYS_ONLY" => Some(StreamViewType::KeysOnly),
        "NEW_IMAGE" => Some(StreamViewType::NewImage),
        "OLD_IMAGE" => Some(StreamViewType::OldImage),
        "NEW_AND_OLD_IMAGES" => Some(StreamViewType::NewAndOldImages),
        _ => None,
    }
}

fn convert_status(status: Option<streams::types::StreamStatus>) -> StreamStatus {
    use streams::types::StreamStatus as Sdk;
    match status {
        Some(Sdk::Enabling) => StreamStatus::Enabling,
        Some(Sdk::Enabled) => StreamStatus::Enabled,
        Some(Sdk::Disabling) => StreamStatus::Disabling,
        Some(Sdk::Disabled) => StreamStatus::Disabled,
        Some(other) => StreamStatus::Unknown(other.as_str().to_owned()),
        None => StreamStatus::Unknown(String::new()),
    }
}

fn parse_sequence_number(
    operation: &'static str,
    context: &str,
    value: String,
) -> Result<SequenceNumber, SourceError> {
    value.parse::<SequenceNumber>().map_err(|e| {
        SourceError::new(
            SourceErrorKind::Fatal,
            format!("{operation}: {context}: unparseable sequence number {value:?}"),
        )
        .with_source(e)
    })
}

fn convert_description(
    description: streams::types::StreamDescription,
    requested_arn: String,
) -> Result<StreamDescription, SourceError> {
    let shards = description
        .shards
        .unwrap_or_default()
        .into_iter()
        .map(convert_shard)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StreamDescription {
        stream_arn: description.stream_arn.unwrap_or(requested_arn),
        stream_status: convert_status(description.stream_status),
        stream_view_type: description
            .stream_view_type
            .as_ref()
            .and_then(|v| view_type_from_str(v.as_str())),
        table_name: description.table_name,
        shards,
        last_evaluated_shard_id: description.last_evaluated_shard_id,
    })
}

fn convert_shard(shard: streams::types::Shard) -> Result<Shard, SourceError> {
    let shard_id = shard
        .shard_id
        .ok_or_else(|| malformed(DESCRIBE_STREAM, "a shard without ShardId"))?;
    let (start, end) = match shard.sequence_number_range {
        Some(range) => (range.starting_sequence_number, range.ending_sequence_number),
        None => (None, None),
    };
    let context = format!("shard {shard_id}");
    let starting_sequence_number = start
        .map(|s| parse_sequence_number(DESCRIBE_STREAM, &context, s))
        .transpose()?;
    let ending_sequence_number = end
        .map(|s| parse_sequence_number(DESCRIBE_STREAM, &context, s))
        .transpose()?;
    Ok(Shard {
        shard_id,
        parent_shard_id: shard.parent_shard_id,
        starting_sequence_number,
        ending_sequence_number,
    })
}

/// An attribute type the SDK did not recognise, with the path of the attribute (innermost
/// segment first while unwinding).
struct UnknownAttribute {
    path: Vec<String>,
}

impl UnknownAttribute {
    fn at(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }

    fn path(&self) -> String {
        let mut out = String::new();
        for segment in self.path.iter().rev() {
            if !segment.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
        out
    }
}

fn convert_attribute(
    value: streams::types::AttributeValue,
) -> Result<AttributeValue, UnknownAttribute> {
    use streams::types::AttributeValue as Sdk;
    Ok(match value {
        Sdk::S(s) => AttributeValue::S(s),
        Sdk::N(n) => AttributeValue::N(n),
        Sdk::B(b) => AttributeValue::B(b.into_inner()),
        Sdk::Ss(s) => AttributeValue::Ss(s),
        Sdk::Ns(n) => AttributeValue::Ns(n),
        Sdk::Bs(b) => AttributeValue::Bs(b.into_iter().map(|b| b.into_inner()).collect()),
        Sdk::M(m) => AttributeValue::M(convert_map(m)?),
        Sdk::L(l) => AttributeValue::L(
            l.into_iter()
                .enumerate()
                .map(|(i, v)| convert_attribute(v).map_err(|e| e.at(format!("[{i}]"))))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Sdk::Null(b) => AttributeValue::Null(b),
        Sdk::Bool(b) => AttributeValue::Bool(b),
        _ => return Err(UnknownAttribute { path: Vec::new() }),
    })
}

fn convert_map(
    map: HashMap<String, streams::types::AttributeValue>,
) -> Result<HashMap<String, AttributeValue>, UnknownAttribute> {
    map.into_iter()
        .map(|(name, value)| match convert_attribute(value) {
            Ok(v) => Ok((name, v)),
            Err(e) => Err(e.at(name)),
        })
        .collect()
}

fn convert_image(
    image: Option<HashMap<String, streams::types::AttributeValue>>,
    which: &str,
    sequence_number: &SequenceNumber,
) -> Result<Option<Item>, SourceError> {
    image
        .map(|m| {
            convert_map(m).map(Item::from).map_err(|e| {
                SourceError::new(
                    SourceErrorKind::Fatal,
                    format!(
                        "{GET_RECORDS}: record {sequence_number}: {which} attribute {:?} has a \
                         type this SDK version does not know (AttributeValue::Unknown)",
                        e.path()
                    ),
                )
            })
        })
        .transpose()
}

fn convert_record(record: streams::types::Record) -> Result<StreamRecord, SourceError> {
    use streams::types::OperationType;
    let event_id = record.event_id.unwrap_or_default();
    let kind = match record.event_name {
        Some(OperationType::Insert) => RecordKind::Insert,
        Some(OperationType::Modify) => RecordKind::Modify,
        Some(OperationType::Remove) => RecordKind::Remove { ttl: false },
        Some(other) => RecordKind::Unknown(other.as_str().to_owned()),
        None => RecordKind::Unknown(String::new()),
    };
    let data = record.dynamodb.ok_or_else(|| {
        SourceError::new(
            SourceErrorKind::Fatal,
            format!("{GET_RECORDS}: record {event_id:?} has no dynamodb section"),
        )
    })?;
    let raw_sequence_number = data.sequence_number.ok_or_else(|| {
        SourceError::new(
            SourceErrorKind::Fatal,
            format!("{GET_RECORDS}: record {event_id:?} has no SequenceNumber"),
        )
    })?;
    let sequence_number = parse_sequence_number(
        GET_RECORDS,
        &format!("record {event_id:?}"),
        raw_sequence_number,
    )?;
    let keys = convert_image(data.keys, "key", &sequence_number)?.unwrap_or_default();
    let new_image = convert_image(data.new_image, "new image", &sequence_number)?;
    let old_image = convert_image(data.old_image, "old image", &sequence_number)?;
    let created = data
        .approximate_creation_date_time
        .and_then(|t| SystemTime::try_from(t).ok());
    let size = data
        .size_bytes
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(0);
    let identity = record.user_identity.map(|id| UserIdentity {
        kind: id.r#type.unwrap_or_default(),
        principal_id: id.principal_id.unwrap_or_default(),
    });
    Ok(StreamRecord::new(kind, sequence_number, keys)
        .with_images(old_image, new_image)
        .with_meta(event_id, created, size)
        .with_user_identity(identity))
}

// ---------------------------------------------------------------------------------------------
// Table resolution
// ---------------------------------------------------------------------------------------------

/// A table's current stream, as DescribeTable reports it.
#[derive(Debug, Clone, PartialEq, Eq)]

pub(crate) struct TableStream {
    /// `LatestStreamArn`.
    pub(crate) stream_arn: String,
    /// The stream's view type, when DynamoDB reports one this crate knows.
    pub(crate) view_type: Option<StreamViewType>,
    /// The table's key attribute names, partition key first.
    pub(crate) key_attributes: Vec<String>,
}

/// Find the enabled stream of `table`.
///
/// Errors: `InvalidArgument` when the table does not exist or has no enabled stream; any other
/// failure is a classified `Source` error.
pub(crate) async fn resolve_table_stream(
    client: &dynamodb::Client,
    table: &str,
) -> Result<TableStream, crate::Error> {
    require_region(DESCRIBE_TABLE, client.config().region())?;
    let output = match client.describe_table().table_name(table).send().await {
        Ok(output) => output,
        Err(e) => {
            let err = classify_sdk_error(DESCRIBE_TABLE, e);
            return Err(if err.kind() == SourceErrorKind::NotFound {
                crate::Error::InvalidArgument(format!("table {table:?} not found"))
            } else {
                crate::Error::Source(err)
            });
        }
    };
    let description = output
        .table
        .ok_or_else(|| malformed(DESCRIBE_TABLE, "no Table"))?;
    let spec = description
        .stream_specification()
        .filter(|s| s.stream_enabled());
    let (Some(spec), Some(stream_arn)) = (spec, description.latest_stream_arn()) else {
        return Err(crate::Error::InvalidArgument(format!(
            "table {table:?} has no stream enabled; enable one with a view type \
             (NEW_AND_OLD_IMAGES recommended)"
        )));
    };
    // Partition (HASH) key first, whatever order DynamoDB lists them in.
    let mut key_schema: Vec<_> = description.key_schema().iter().collect();
    key_schema.sort_by_key(|k| *k.key_type() != dynamodb::types::KeyType::Hash);
    let key_attributes = key_schema
        .into_iter()
        .map(|k| k.attribute_name().to_owned())
        .collect();
    Ok(TableStream {
        stream_arn: stream_arn.to_owned(),
        view_type: spec
            .stream_view_type()
            .and_then(|v| view_type_from_str(v.as_str())),
        key_attributes,
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use aws_smithy_mocks::{
        create_mock_http_client, mock, MockResponseInterceptor, Rule, RuleMode,
    };
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use aws_smithy_types::{Blob, DateTime};
    use streams::error::ConnectorError;
    use streams::operation::describe_stream::{DescribeStreamError, DescribeStreamOutput};
    use streams::operation::get_records::{GetRecordsError, GetRecordsOutput};
    use streams::operation::get_shard_iterator::{GetShardIteratorError, GetShardIteratorOutput};
    use streams::types::error::{
        ExpiredIteratorException, InternalServerError, LimitExceededException,
        ResourceNotFoundException, TrimmedDataAccessException,
    };
    use streams::types::AttributeValue as Sdk;

    use super::*;

    const ARN: &str =
        "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024-01-01T00:00:00.000";

    fn seq(n: u128) -> SequenceNumber {
        format!("{n:021}").parse().expect("valid sequence number")
    }

    fn interceptor(rules: &[&Rule]) -> MockResponseInterceptor {
        rules.iter().fold(
            MockResponseInterceptor::new().rule_mode(RuleMode::Sequential),
            |i, r| i.with_rule(r),
        )
    }

    fn streams_client(rules: &[&Rule]) -> streams::Client {
        let config = streams::Config::builder()
            .behavior_version(streams::config::BehaviorVersion::latest())
            .region(streams::config::Region::new("us-east-1"))
            .credentials_provider(streams::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .retry_config(streams::config::retry::RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor(rules))
            .build();
        streams::Client::from_conf(config)
    }

    fn dynamodb_client(rules: &[&Rule]) -> dynamodb::Client {
        let config = dynamodb::Config::builder()
            .behavior_version(dynamodb::config::BehaviorVersion::latest())
            .region(dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(dynamodb::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .retry_config(dynamodb::config::retry::RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor(rules))
            .build();
        dynamodb::Client::from_conf(config)
    }

    fn http(status: u16, body: &'static str) -> HttpResponse {
        HttpResponse::new(
            status.try_into().expect("valid status"),
            SdkBody::from(body),
        )
    }

    fn json_error(status: u16, code: &'static str, message: &'static str) -> HttpResponse {
        let body = format!(r#"{{"__type":"{code}","message":"{message}"}}"#);
        HttpResponse::new(
            status.try_into().expect("valid status"),
            SdkBody::from(body),
        )
    }

    async fn get_records_error(rule: Rule) -> SourceError {
        let client = streams_client(&[&rule]);
        StreamsApi::get_records(&client, "it".into(), None)
            .await
            .expect_err("mocked failure")
    }

    // ----- classification: modeled errors -----

    #[tokio::test]
    async fn modeled_get_records_errors_are_classified() {
        type Case = (fn() -> GetRecordsError, SourceErrorKind, &'static str);
        let cases: Vec<Case> = vec![
            (
                || {
                    GetRecordsError::ExpiredIteratorException(
                        ExpiredIteratorException::builder()
                            .message("too old")
                            .build(),
                    )
                },
                SourceErrorKind::ExpiredIterator,
                "ExpiredIteratorException",
            ),
            (
                || {
                    GetRecordsError::TrimmedDataAccessException(
                        TrimmedDataAccessException::builder()
                            .message("trimmed")
                            .build(),
                    )
                },
                SourceErrorKind::TrimmedData,
                "TrimmedDataAccessException",
            ),
            (
                || {
                    GetRecordsError::ResourceNotFoundException(
                        ResourceNotFoundException::builder().message("gone").build(),
                    )
                },
                SourceErrorKind::NotFound,
                "ResourceNotFoundException",
            ),
            (
                || {
                    GetRecordsError::LimitExceededException(
                        LimitExceededException::builder()
                            .message("slow down")
                            .build(),
                    )
                },
                SourceErrorKind::Throttled,
                "LimitExceededException",
            ),
            (
                || {
                    GetRecordsError::InternalServerError(
                        InternalServerError::builder().message("oops").build(),
                    )
                },
                SourceErrorKind::Retryable,
                "InternalServerError",
            ),
        ];
        for (make, kind, code) in cases {
            let err = get_records_error(mock!(streams::Client::get_records).then_error(make)).await;
            assert_eq!(err.kind(), kind, "{code}: {err}");
            assert!(err.message().contains("GetRecords"), "{err}");
            assert!(err.message().contains(code), "{err}");
            assert!(StdError::source(&err).is_some(), "SDK error kept as source");
        }
    }

    #[tokio::test]
    async fn generic_error_codes_are_classified() {
        let cases = [
            ("ThrottlingException", SourceErrorKind::Throttled),
            (
                "ProvisionedThroughputExceededException",
                SourceErrorKind::Throttled,
            ),
            ("RequestLimitExceeded", SourceErrorKind::Throttled),
            ("ValidationException", SourceErrorKind::Fatal),
            ("AccessDeniedException", SourceErrorKind::Fatal),
            ("UnrecognizedClientException", SourceErrorKind::Fatal),
            (
                "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
                SourceErrorKind::NotFound,
            ),
        ];
        for (code, kind) in cases {
            let rule = mock!(streams::Client::get_records).then_error(move || {
                GetRecordsError::generic(ErrorMetadata::builder().code(code).message("m").build())
            });
            let err = get_records_error(rule).await;
            assert_eq!(err.kind(), kind, "{code}: {err}");
            assert!(err.message().contains(code), "{err}");
        }
    }

    #[tokio::test]
    async fn modeled_errors_of_the_other_calls_are_classified() {
        let rule = mock!(streams::Client::get_shard_iterator).then_error(|| {
            GetShardIteratorError::TrimmedDataAccessException(
                TrimmedDataAccessException::builder().build(),
            )
        });
        let client = streams_client(&[&rule]);
        let err = StreamsApi::get_shard_iterator(
            &client,
            ARN.into(),
            "shardId-1".into(),
            IteratorPosition::AfterSequenceNumber(seq(5)),
        )
        .await
        .expect_err("mocked failure");
        assert_eq!(err.kind(), SourceErrorKind::TrimmedData);
        assert!(err.message().contains("GetShardIterator"), "{err}");

        let rule = mock!(streams::Client::describe_stream).then_error(|| {
            DescribeStreamError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("no stream")
                    .build(),
            )
        });
        let client = streams_client(&[&rule]);
        let err = StreamsApi::describe_stream(
            &client,
            DescribeStreamRequest {
                stream_arn: ARN.into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("mocked failure");
        assert_eq!(err.kind(), SourceErrorKind::NotFound);
        assert!(err.message().contains("DescribeStream"), "{err}");
        assert!(err.message().contains("no stream"), "{err}");
    }

    // ----- classification: HTTP responses -----

    #[tokio::test]
    async fn http_error_responses_are_classified() {
        let cases: Vec<(fn() -> HttpResponse, SourceErrorKind)> = vec![
            (
                || {
                    json_error(
                        400,
                        "com.amazonaws.dynamodb.v20120810#ExpiredIteratorException",
                        "x",
                    )
                },
                SourceErrorKind::ExpiredIterator,
            ),
            (
                || json_error(400, "ThrottlingException", "rate exceeded"),
                SourceErrorKind::Throttled,
            ),
            (
                || json_error(400, "ProvisionedThroughputExceededException", "x"),
                SourceErrorKind::Throttled,
            ),
            (
                || json_error(400, "com.amazon.coral.validate#ValidationException", "bad"),
                SourceErrorKind::Fatal,
            ),
            (
                || json_error(400, "UnrecognizedClientException", "bad token"),
                SourceErrorKind::Fatal,
            ),
            (
                || json_error(400, "AccessDeniedException", "no"),
                SourceErrorKind::Fatal,
            ),
            (
                || json_error(500, "InternalServerError", "x"),
                SourceErrorKind::Retryable,
            ),
            (|| http(503, ""), SourceErrorKind::Retryable),
            (
                || http(502, "<html>bad gateway</html>"),
                SourceErrorKind::Retryable,
            ),
            (
                || http(500, r#"{"__type":"SomethingNew"}"#),
                SourceErrorKind::Retryable,
            ),
            (|| http(429, ""), SourceErrorKind::Throttled),
            (|| http(403, ""), SourceErrorKind::Fatal),
            // A 200 whose body does not parse (truncated JSON).
            (
                || http(200, r#"{"Records": [{"#),
                SourceErrorKind::Retryable,
            ),
        ];
        for (i, (make, kind)) in cases.into_iter().enumerate() {
            let err =
                get_records_error(mock!(streams::Client::get_records).then_http_response(make))
                    .await;
            assert_eq!(err.kind(), kind, "case {i}: {err}");
            assert!(err.message().contains("GetRecords"), "case {i}: {err}");
        }
    }

    // ----- classification: transport failures (built directly; the mock cannot produce them) --

    fn classify_direct(err: SdkError<GetRecordsError, HttpResponse>) -> SourceError {
        classify_sdk_error(GET_RECORDS, err)
    }

    #[test]
    fn transport_failures_are_classified() {
        let timeout = classify_direct(SdkError::timeout_error("operation attempt timed out"));
        assert_eq!(timeout.kind(), SourceErrorKind::Retryable);
        assert!(
            timeout.message().contains("GetRecords timed out"),
            "{timeout}"
        );

        let reset = classify_direct(SdkError::dispatch_failure(ConnectorError::io(
            "connection reset by peer".into(),
        )));
        assert_eq!(reset.kind(), SourceErrorKind::Retryable);
        assert!(reset.message().contains("connection reset"), "{reset}");

        let refused = classify_direct(SdkError::dispatch_failure(ConnectorError::other(
            "connection refused".into(),
            None,
        )));
        assert_eq!(refused.kind(), SourceErrorKind::Retryable);

        let connect_timeout = classify_direct(SdkError::dispatch_failure(ConnectorError::timeout(
            "connect timed out".into(),
        )));
        assert_eq!(connect_timeout.kind(), SourceErrorKind::Retryable);

        let user = classify_direct(SdkError::dispatch_failure(ConnectorError::user(
            "invalid URI".into(),
        )));
        assert_eq!(user.kind(), SourceErrorKind::Fatal);

        let truncated = classify_direct(SdkError::response_error(
            "unexpected end of body",
            http(200, r#"{"Rec"#),
        ));
        assert_eq!(truncated.kind(), SourceErrorKind::Retryable);
        assert!(
            truncated.message().contains("unexpected end of body"),
            "{truncated}"
        );

        let construction = classify_direct(SdkError::construction_failure("missing field"));
        assert_eq!(construction.kind(), SourceErrorKind::Fatal);
        assert!(StdError::source(&construction).is_some());
    }

    // ----- classification: the caller's set-up -----

    /// A credentials provider that finds nothing, as the default chain does on a machine
    /// without credentials.
    #[derive(Debug)]
    struct NoCredentials;

    impl aws_credential_types::provider::ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                aws_credential_types::provider::error::CredentialsError::not_loaded(
                    "no credentials in this test",
                ),
            ))
        }
    }

    /// DescribeStream's error on `client`.
    async fn describe_error(client: &streams::Client) -> SourceError {
        StreamsApi::describe_stream(
            client,
            DescribeStreamRequest {
                stream_arn: ARN.into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("the call cannot succeed")
    }

    fn set_up_client(
        build: impl FnOnce(streams::config::Builder) -> streams::config::Builder,
    ) -> streams::Client {
        // No mock rules: they answer before credentials and endpoints are resolved, and these
        // calls must fail there, before anything is sent.
        let config = streams::Config::builder()
            .behavior_version(streams::config::BehaviorVersion::latest())
            .region(streams::config::Region::new("us-east-1"))
            .credentials_provider(streams::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .retry_config(streams::config::retry::RetryConfig::disabled())
            .http_client(create_mock_http_client());
        streams::Client::from_conf(build(config).build())
    }

    #[tokio::test]
    async fn set_up_errors_are_fatal_with_their_cause() {
        let no_credentials = set_up_client(|c| c.credentials_provider(NoCredentials));
        let err = describe_error(&no_credentials).await;
        assert_eq!(err.kind(), SourceErrorKind::Fatal, "{err}");
        assert_eq!(err.cause(), Some(Cause::NoCredentials), "{err}");
        assert!(err.message().contains("no AWS credentials"), "{err}");
        assert!(StdError::source(&err).is_some(), "SDK error kept as source");

        let no_scheme = set_up_client(|c| c.endpoint_url("localhost:8000"));
        let err = describe_error(&no_scheme).await;
        assert_eq!(err.kind(), SourceErrorKind::Fatal, "{err}");
        assert_eq!(err.cause(), Some(Cause::InvalidEndpoint), "{err}");
        assert!(err.message().contains("scheme"), "{err}");
        assert!(
            !err.message().contains("Request {"),
            "one line, not the request: {err}"
        );

        let no_region = set_up_client(|c| c.region(None));
        let err = describe_error(&no_region).await;
        assert_eq!(err.kind(), SourceErrorKind::Fatal, "{err}");
        assert_eq!(err.cause(), Some(Cause::NoRegion), "{err}");

        // Service answers that say the credentials are wrong or not allowed.
        for (code, cause) in [
            ("AccessDeniedException", Cause::AccessDenied),
            ("UnrecognizedClientException", Cause::InvalidCredentials),
            ("ExpiredTokenException", Cause::InvalidCredentials),
            ("InvalidSignatureException", Cause::InvalidCredentials),
        ] {
            let rule = mock!(streams::Client::get_records).then_error(move || {
                GetRecordsError::generic(ErrorMetadata::builder().code(code).message("m").build())
            });
            let err = get_records_error(rule).await;
            assert_eq!(err.kind(), SourceErrorKind::Fatal, "{code}: {err}");
            assert_eq!(err.cause(), Some(cause), "{code}: {err}");
        }
        // Throttling and server errors say nothing about the set-up.
        let rule = mock!(streams::Client::get_records).then_http_response(|| http(503, ""));
        assert_eq!(get_records_error(rule).await.cause(), None);
    }

    #[test]
    fn transport_failures_have_their_cause() {
        let refused = classify_direct(SdkError::dispatch_failure(ConnectorError::io(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ))));
        assert_eq!(refused.kind(), SourceErrorKind::Retryable, "{refused}");
        assert_eq!(refused.cause(), Some(Cause::Unreachable), "{refused}");
        assert!(refused.message().contains("could not connect"), "{refused}");

        let timeout = classify_direct(SdkError::timeout_error("operation timed out"));
        assert_eq!(timeout.cause(), Some(Cause::NoAnswer));
        assert_eq!(timeout.kind(), SourceErrorKind::Retryable);

        // Anywhere in a chain, also around errors this module did not classify.
        let wrapped = crate::Error::Source(refused);
        assert_eq!(wrapped.cause(), Some(Cause::Unreachable));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(crate::error::cause_of(&io), Some(Cause::Unreachable));
        let plain = std::io::Error::other("something else");
        assert_eq!(crate::error::cause_of(&plain), None);
    }

    #[test]
    fn recommended_timeouts_are_set() {
        let t = recommended_timeouts();
        assert_eq!(t.connect_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(t.read_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(30)));
    }

    // ----- GetRecords conversion -----

    fn sdk_map(pairs: Vec<(&str, Sdk)>) -> HashMap<String, Sdk> {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn item(pairs: Vec<(&str, AttributeValue)>) -> Item {
        Item::from(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<HashMap<String, AttributeValue>>(),
        )
    }

    const BIG: &str = "12345678901234567890123456789012345678";

    fn sdk_full_image() -> HashMap<String, Sdk> {
        sdk_map(vec![
            ("pk", Sdk::S("user#1".into())),
            ("big", Sdk::N(BIG.into())),
            (
                "dec",
                Sdk::N("-0.000000000000000000000000000000000001".into()),
            ),
            ("bin", Sdk::B(Blob::new(vec![0u8, 1, 2, 255]))),
            ("ss", Sdk::Ss(vec!["a".into(), "b".into()])),
            ("ns", Sdk::Ns(vec!["1".into(), BIG.into()])),
            (
                "bs",
                Sdk::Bs(vec![Blob::new(vec![1u8]), Blob::new(vec![2u8, 3])]),
            ),
            ("nul", Sdk::Null(true)),
            ("yes", Sdk::Bool(true)),
            (
                "map",
                Sdk::M(sdk_map(vec![
                    (
                        "inner",
                        Sdk::L(vec![
                            Sdk::N("1".into()),
                            Sdk::M(sdk_map(vec![("deep", Sdk::Bool(false))])),
                        ]),
                    ),
                    ("s", Sdk::S("x".into())),
                ])),
            ),
            (
                "list",
                Sdk::L(vec![Sdk::S("x".into()), Sdk::L(vec![Sdk::Null(true)])]),
            ),
        ])
    }

    fn expected_full_image() -> Item {
        use AttributeValue as A;
        item(vec![
            ("pk", A::S("user#1".into())),
            ("big", A::N(BIG.into())),
            (
                "dec",
                A::N("-0.000000000000000000000000000000000001".into()),
            ),
            ("bin", A::B(vec![0, 1, 2, 255])),
            ("ss", A::Ss(vec!["a".into(), "b".into()])),
            ("ns", A::Ns(vec!["1".into(), BIG.into()])),
            ("bs", A::Bs(vec![vec![1], vec![2, 3]])),
            ("nul", A::Null(true)),
            ("yes", A::Bool(true)),
            (
                "map",
                A::M(
                    [
                        (
                            "inner".to_owned(),
                            A::L(vec![
                                A::N("1".into()),
                                A::M([("deep".to_owned(), A::Bool(false))].into_iter().collect()),
                            ]),
                        ),
                        ("s".to_owned(), A::S("x".into())),
                    ]
                    .into_iter()
                    .collect(),
                ),
            ),
            (
                "list",
                A::L(vec![A::S("x".into()), A::L(vec![A::Null(true)])]),
            ),
        ])
    }

    fn sdk_record(
        event_name: &str,
        n: u128,
        new_image: Option<HashMap<String, Sdk>>,
        old_image: Option<HashMap<String, Sdk>>,
        identity: Option<(&str, &str)>,
    ) -> streams::types::Record {
        let data = streams::types::StreamRecord::builder()
            .set_keys(Some(sdk_map(vec![("pk", Sdk::S("user#1".into()))])))
            .set_new_image(new_image)
            .set_old_image(old_image)
            .sequence_number(format!("{n:021}"))
            .size_bytes(123)
            .approximate_creation_date_time(DateTime::from_secs(1_700_000_000))
            .stream_view_type(streams::types::StreamViewType::NewAndOldImages)
            .build();
        let mut record = streams::types::Record::builder()
            .event_id(format!("event-{n}"))
            .event_name(streams::types::OperationType::from(event_name))
            .dynamodb(data);
        if let Some((kind, principal)) = identity {
            record = record.user_identity(
                streams::types::Identity::builder()
                    .r#type(kind)
                    .principal_id(principal)
                    .build(),
            );
        }
        record.build()
    }

    #[tokio::test]
    async fn get_records_converts_every_record_and_attribute() {
        let rule = mock!(streams::Client::get_records)
            .match_requests(|r| r.shard_iterator() == Some("it-1") && r.limit() == Some(1000))
            .then_output(|| {
                GetRecordsOutput::builder()
                    .records(sdk_record("INSERT", 1, Some(sdk_full_image()), None, None))
                    .records(sdk_record(
                        "MODIFY",
                        2,
                        Some(sdk_full_image()),
                        Some(sdk_full_image()),
                        None,
                    ))
                    .records(sdk_record("REMOVE", 3, None, Some(sdk_full_image()), None))
                    .records(sdk_record(
                        "REMOVE",
                        4,
                        None,
                        Some(sdk_full_image()),
                        Some(("Service", "dynamodb.amazonaws.com")),
                    ))
                    .records(sdk_record("TTL_DELETE", 5, None, None, None))
                    .next_shard_iterator("it-2")
                    .build()
            });
        let client = streams_client(&[&rule]);
        let page = StreamsApi::get_records(&client, "it-1".into(), Some(1000))
            .await
            .expect("records");
        assert_eq!(page.next_shard_iterator.as_deref(), Some("it-2"));
        let kinds: Vec<_> = page.records.iter().map(|r| r.kind().clone()).collect();
        assert_eq!(
            kinds,
            vec![
                RecordKind::Insert,
                RecordKind::Modify,
                RecordKind::Remove { ttl: false },
                RecordKind::Remove { ttl: true },
                RecordKind::Unknown("TTL_DELETE".into()),
            ]
        );
        let full = expected_full_image();
        let keys = item(vec![("pk", AttributeValue::S("user#1".into()))]);
        for (i, r) in page.records.iter().enumerate() {
            let n = i as u128 + 1;
            assert_eq!(r.sequence_number(), &seq(n));
            assert_eq!(r.event_id(), format!("event-{n}"));
            assert_eq!(r.keys(), &keys);
            assert_eq!(r.size_bytes(), 123);
            assert_eq!(
                r.approximate_creation_time(),
                Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            );
        }
        let r = &page.records;
        assert_eq!(r[0].new_image(), Some(&full));
        assert_eq!(r[0].old_image(), None);
        assert_eq!(r[1].new_image(), Some(&full));
        assert_eq!(r[1].old_image(), Some(&full));
        assert_eq!(r[2].new_image(), None);
        assert_eq!(r[2].old_image(), Some(&full));
        assert_eq!(r[2].user_identity(), None);
        assert_eq!(
            r[3].user_identity(),
            Some(&UserIdentity {
                kind: "Service".into(),
                principal_id: "dynamodb.amazonaws.com".into()
            })
        );
        assert_eq!(r[4].new_image(), None);
        assert_eq!(r[4].old_image(), None);
        // The 38-digit number survives exactly.
        match r[0].new_image().and_then(|i| i.get("big")) {
            Some(AttributeValue::N(n)) => assert_eq!(n, BIG),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn get_records_parses_the_wire_format_exactly() {
        const BODY: &str = r#"{
            "NextShardIterator": "it-next",
            "Records": [{
                "eventID": "e1",
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1700000000.5,
                    "Keys": {"pk": {"S": "a"}},
                    "NewImage": {
                        "pk": {"S": "a"},
                        "n": {"N": "12345678901234567890123456789012345678"},
                        "b": {"B": "AAEC/w=="},
                        "m": {"M": {"l": {"L": [{"NULL": true}, {"BOOL": false}, {"NS": ["1", "2.5"]}]}}}
                    },
                    "SequenceNumber": "000000000000000000001",
                    "SizeBytes": 42,
                    "StreamViewType": "NEW_AND_OLD_IMAGES"
                }
            }]
        }"#;
        let rule = mock!(streams::Client::get_records).then_http_response(|| http(200, BODY));
        let client = streams_client(&[&rule]);
        let page = StreamsApi::get_records(&client, "it".into(), None)
            .await
            .expect("records");
        assert_eq!(page.next_shard_iterator.as_deref(), Some("it-next"));
        let [record] = page.records.as_slice() else {
            panic!("one record expected: {page:?}");
        };
        use AttributeValue as A;
        let expected = item(vec![
            ("pk", A::S("a".into())),
            ("n", A::N(BIG.into())),
            ("b", A::B(vec![0, 1, 2, 255])),
            (
                "m",
                A::M(
                    [(
                        "l".to_owned(),
                        A::L(vec![
                            A::Null(true),
                            A::Bool(false),
                            A::Ns(vec!["1".into(), "2.5".into()]),
                        ]),
                    )]
                    .into_iter()
                    .collect(),
                ),
            ),
        ]);
        assert_eq!(record.kind(), &RecordKind::Insert);
        assert_eq!(record.new_image(), Some(&expected));
        assert_eq!(record.size_bytes(), 42);
        assert_eq!(
            record.approximate_creation_time(),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500))
        );
    }

    #[tokio::test]
    async fn unknown_attribute_type_is_a_fatal_error_naming_it() {
        const BODY: &str = r#"{"Records": [{
            "eventID": "e1",
            "eventName": "MODIFY",
            "dynamodb": {
                "Keys": {"pk": {"S": "a"}},
                "NewImage": {"pk": {"S": "a"}, "outer": {"M": {"list": {"L": [{"S": "ok"}, {"VECTOR": [1, 2]}]}}}},
                "SequenceNumber": "000000000000000000007"
            }
        }]}"#;
        let rule = mock!(streams::Client::get_records).then_http_response(|| http(200, BODY));
        let err = get_records_error(rule).await;
        assert_eq!(err.kind(), SourceErrorKind::Fatal, "{err}");
        assert!(err.message().contains("outer.list[1]"), "{err}");
        assert!(err.message().contains("new image"), "{err}");
        assert!(err.message().contains("000000000000000000007"), "{err}");
    }

    #[tokio::test]
    async fn bad_sequence_number_in_a_record_is_fatal() {
        let rule = mock!(streams::Client::get_records).then_output(|| {
            GetRecordsOutput::builder()
                .records(
                    streams::types::Record::builder()
                        .event_name(streams::types::OperationType::Insert)
                        .dynamodb(
                            streams::types::StreamRecord::builder()
                                .sequence_number("12x")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let err = get_records_error(rule).await;
        assert_eq!(err.kind(), SourceErrorKind::Fatal);
        assert!(err.message().contains("12x"), "{err}");
    }

    #[tokio::test]
    async fn closed_shard_end_has_no_next_iterator() {
        let rule =
            mock!(streams::Client::get_records).then_output(|| GetRecordsOutput::builder().build());
        let client = streams_client(&[&rule]);
        let page = StreamsApi::get_records(&client, "it".into(), None)
            .await
            .expect("page");
        assert!(page.records.is_empty());
        assert_eq!(page.next_shard_iterator, None);
    }

    // ----- GetShardIterator -----

    #[tokio::test]
    async fn get_shard_iterator_sends_every_position() {
        use streams::types::ShardIteratorType as T;
        let cases = [
            (IteratorPosition::TrimHorizon, T::TrimHorizon, None),
            (IteratorPosition::Latest, T::Latest, None),
            (
                IteratorPosition::AtSequenceNumber(seq(7)),
                T::AtSequenceNumber,
                Some(seq(7)),
            ),
            (
                IteratorPosition::AfterSequenceNumber(seq(8)),
                T::AfterSequenceNumber,
                Some(seq(8)),
            ),
        ];
        for (position, ty, sequence) in cases {
            let expected_seq = sequence.map(String::from);
            let rule = mock!(streams::Client::get_shard_iterator)
                .match_requests(move |r| {
                    r.stream_arn() == Some(ARN)
                        && r.shard_id() == Some("shardId-9")
                        && r.shard_iterator_type() == Some(&ty)
                        && r.sequence_number() == expected_seq.as_deref()
                })
                .then_output(|| {
                    GetShardIteratorOutput::builder()
                        .shard_iterator("iter")
                        .build()
                });
            let client = streams_client(&[&rule]);
            let it = StreamsApi::get_shard_iterator(
                &client,
                ARN.into(),
                "shardId-9".into(),
                position.clone(),
            )
            .await
            .expect("iterator");
            assert_eq!(it, "iter", "{position:?}");
            assert_eq!(rule.num_calls(), 1);
        }
    }

    #[tokio::test]
    async fn missing_iterator_is_retryable() {
        let rule = mock!(streams::Client::get_shard_iterator)
            .then_output(|| GetShardIteratorOutput::builder().build());
        let client = streams_client(&[&rule]);
        let err = StreamsApi::get_shard_iterator(
            &client,
            ARN.into(),
            "shardId-1".into(),
            IteratorPosition::TrimHorizon,
        )
        .await
        .expect_err("no iterator");
        assert_eq!(err.kind(), SourceErrorKind::Retryable);
    }

    // ----- DescribeStream -----

    fn sdk_shard(
        id: &str,
        parent: Option<&str>,
        start: u128,
        end: Option<u128>,
    ) -> streams::types::Shard {
        streams::types::Shard::builder()
            .shard_id(id)
            .set_parent_shard_id(parent.map(str::to_owned))
            .sequence_number_range(
                streams::types::SequenceNumberRange::builder()
                    .starting_sequence_number(format!("{start:021}"))
                    .set_ending_sequence_number(end.map(|e| format!("{e:021}")))
                    .build(),
            )
            .build()
    }

    #[tokio::test]
    async fn describe_stream_maps_the_page() {
        let rule = mock!(streams::Client::describe_stream)
            .match_requests(|r| {
                r.stream_arn() == Some(ARN)
                    && r.limit() == Some(100)
                    && r.exclusive_start_shard_id() == Some("shardId-0")
                    && r.shard_filter().is_none()
            })
            .then_output(|| {
                DescribeStreamOutput::builder()
                    .stream_description(
                        streams::types::StreamDescription::builder()
                            .stream_arn(ARN)
                            .stream_status(streams::types::StreamStatus::Enabled)
                            .stream_view_type(streams::types::StreamViewType::NewAndOldImages)
                            .table_name("t")
                            .shards(sdk_shard("shardId-1", None, 100, Some(199)))
                            .shards(sdk_shard("shardId-2", Some("shardId-1"), 200, None))
                            .last_evaluated_shard_id("shardId-2")
                            .build(),
                    )
                    .build()
            });
        let client = streams_client(&[&rule]);
        let page = StreamsApi::describe_stream(
            &client,
            DescribeStreamRequest {
                stream_arn: ARN.into(),
                exclusive_start_shard_id: Some("shardId-0".into()),
                limit: Some(100),
                child_shards_of: None,
            },
        )
        .await
        .expect("description");
        assert_eq!(
            page,
            StreamDescription {
                stream_arn: ARN.into(),
                stream_status: StreamStatus::Enabled,
                stream_view_type: Some(StreamViewType::NewAndOldImages),
                table_name: Some("t".into()),
                shards: vec![
                    Shard {
                        shard_id: "shardId-1".into(),
                        parent_shard_id: None,
                        starting_sequence_number: Some(seq(100)),
                        ending_sequence_number: Some(seq(199)),
                    },
                    Shard {
                        shard_id: "shardId-2".into(),
                        parent_shard_id: Some("shardId-1".into()),
                        starting_sequence_number: Some(seq(200)),
                        ending_sequence_number: None,
                    },
                ],
                last_evaluated_shard_id: Some("shardId-2".into()),
            }
        );
        assert!(page.shards[0].is_closed());
        assert!(!page.shards[1].is_closed());
    }

    #[tokio::test]
    async fn describe_stream_sends_the_child_shard_filter() {
        let rule = mock!(streams::Client::describe_stream)
            .match_requests(|r| {
                r.shard_filter().and_then(|f| f.r#type())
                    == Some(&streams::types::ShardFilterType::ChildShards)
                    && r.shard_filter().and_then(|f| f.shard_id()) == Some("shardId-parent")
                    && r.exclusive_start_shard_id().is_none()
                    && r.limit().is_none()
            })
            .then_output(|| {
                DescribeStreamOutput::builder()
                    .stream_description(
                        streams::types::StreamDescription::builder()
                            .stream_status(streams::types::StreamStatus::Disabled)
                            .shards(sdk_shard(
                                "shardId-child",
                                Some("shardId-parent"),
                                300,
                                None,
                            ))
                            .build(),
                    )
                    .build()
            });
        let client = streams_client(&[&rule]);
        let page = StreamsApi::describe_stream(
            &client,
            DescribeStreamRequest {
                stream_arn: ARN.into(),
                child_shards_of: Some("shardId-parent".into()),
                ..Default::default()
            },
        )
        .await
        .expect("children");
        assert_eq!(rule.num_calls(), 1);
        // The ARN falls back to the requested one when the response omits it.
        assert_eq!(page.stream_arn, ARN);
        assert_eq!(page.stream_status, StreamStatus::Disabled);
        assert_eq!(page.stream_view_type, None);
        assert_eq!(page.shards.len(), 1);
        assert_eq!(
            page.shards[0].parent_shard_id.as_deref(),
            Some("shardId-parent")
        );
        assert_eq!(page.last_evaluated_shard_id, None);
    }

    #[test]
    fn stream_statuses_map() {
        use streams::types::StreamStatus as S;
        assert_eq!(convert_status(Some(S::Enabling)), StreamStatus::Enabling);
        assert_eq!(convert_status(Some(S::Enabled)), StreamStatus::Enabled);
        assert_eq!(convert_status(Some(S::Disabling)), StreamStatus::Disabling);
        assert_eq!(convert_status(Some(S::Disabled)), StreamStatus::Disabled);
        assert_eq!(
            convert_status(Some(S::from("PAUSED"))),
            StreamStatus::Unknown("PAUSED".into())
        );
        assert_eq!(convert_status(None), StreamStatus::Unknown(String::new()));
    }

    #[tokio::test]
    async fn describe_stream_rejects_unparseable_shard_sequence_numbers() {
        let rule = mock!(streams::Client::describe_stream).then_output(|| {
            DescribeStreamOutput::builder()
                .stream_description(
                    streams::types::StreamDescription::builder()
                        .shards(
                            streams::types::Shard::builder()
                                .shard_id("shardId-bad")
                                .sequence_number_range(
                                    streams::types::SequenceNumberRange::builder()
                                        .starting_sequence_number("not-a-number")
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let client = streams_client(&[&rule]);
        let err = StreamsApi::describe_stream(
            &client,
            DescribeStreamRequest {
                stream_arn: ARN.into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("bad sequence number");
        assert_eq!(err.kind(), SourceErrorKind::Fatal);
        assert!(err.message().contains("not-a-number"), "{err}");
        assert!(err.message().contains("shardId-bad"), "{err}");
    }

    // ----- resolve_table_stream -----

    fn table(
        stream: Option<(bool, Option<&'static str>)>,
    ) -> dynamodb::operation::describe_table::DescribeTableOutput {
        use dynamodb::types::{
            KeySchemaElement, KeyType, StreamSpecification, StreamViewType as V, TableDescription,
        };
        let mut description = TableDescription::builder()
            .table_name("orders")
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("sk")
                    .key_type(KeyType::Range)
                    .build()
                    .expect("key"),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("key"),
            );
        if let Some((enabled, arn)) = stream {
            description = description
                .stream_specification(
                    StreamSpecification::builder()
                        .stream_enabled(enabled)
                        .set_stream_view_type(enabled.then_some(V::NewAndOldImages))
                        .build()
                        .expect("spec"),
                )
                .set_latest_stream_arn(arn.map(str::to_owned));
        }
        dynamodb::operation::describe_table::DescribeTableOutput::builder()
            .table(description.build())
            .build()
    }

    #[tokio::test]
    async fn resolves_the_table_stream() {
        let rule = mock!(dynamodb::Client::describe_table)
            .match_requests(|r| r.table_name() == Some("orders"))
            .then_output(|| table(Some((true, Some(ARN)))));
        let client = dynamodb_client(&[&rule]);
        let stream = resolve_table_stream(&client, "orders")
            .await
            .expect("stream");
        assert_eq!(
            stream,
            TableStream {
                stream_arn: ARN.into(),
                view_type: Some(StreamViewType::NewAndOldImages),
                key_attributes: vec!["pk".into(), "sk".into()],
            }
        );
    }

    #[tokio::test]
    async fn missing_table_is_an_invalid_argument() {
        let rule = mock!(dynamodb::Client::describe_table).then_error(|| {
            dynamodb::operation::describe_table::DescribeTableError::ResourceNotFoundException(
                dynamodb::types::error::ResourceNotFoundException::builder()
                    .message("Requested resource not found")
                    .build(),
            )
        });
        let client = dynamodb_client(&[&rule]);
        let err = resolve_table_stream(&client, "nope")
            .await
            .expect_err("not found");
        match err {
            crate::Error::InvalidArgument(msg) => assert_eq!(msg, r#"table "nope" not found"#),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn table_without_stream_is_an_invalid_argument() {
        for output in [
            table(None),
            table(Some((false, Some(ARN)))),
            table(Some((true, None))),
        ] {
            let rule = mock!(dynamodb::Client::describe_table).then_output(move || output.clone());
            let client = dynamodb_client(&[&rule]);
            let err = resolve_table_stream(&client, "orders")
                .await
                .expect_err("no stream");
            match err {
                crate::Error::InvalidArgument(msg) => assert_eq!(
                    msg,
                    "table \"orders\" has no stream enabled; enable one with a view type \
                     (NEW_AND_OLD_IMAGES recommended)"
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn other_describe_table_failures_are_classified_source_errors() {
        let cases: Vec<(fn() -> HttpResponse, SourceErrorKind)> = vec![
            (
                || json_error(400, "AccessDeniedException", "denied"),
                SourceErrorKind::Fatal,
            ),
            (
                || json_error(400, "ThrottlingException", "slow"),
                SourceErrorKind::Throttled,
            ),
            (|| http(503, ""), SourceErrorKind::Retryable),
        ];
        for (make, kind) in cases {
            let rule = mock!(dynamodb::Client::describe_table).then_http_response(make);
            let client = dynamodb_client(&[&rule]);
            match resolve_table_stream(&client, "orders").await {
                Err(crate::Error::Source(e)) => {
                    assert_eq!(e.kind(), kind, "{e}");
                    assert!(e.message().contains("DescribeTable"), "{e}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    // --- The GetRecords fast path reads pages exactly as the SDK path does ---------------------

    /// The same 200 answer read by the fast reader and by the SDK's deserializer followed by
    /// `convert_record`: (fast result, SDK result).
    fn read_both_ways(body: String) -> (Option<Vec<StreamRecord>>, Vec<StreamRecord>) {
        let response =
            HttpResponse::new(200.try_into().expect("valid status"), SdkBody::from(body));
        let sdk_layer = sdk_get_records_layer().expect("the SDK's GetRecords layer");
        let reader = FastPage::default();
        let fast_output = reader
            .deserialize_nonstreaming_with_config(&response, &ConfigBag::base())
            .expect("the fast reader's output");
        let fast_output = fast_output
            .downcast::<GetRecordsOutput>()
            .expect("a GetRecordsOutput");
        let fast = reader.take();
        let sdk_output = sdk_layer
            .load::<SharedResponseDeserializer>()
            .expect("the SDK's deserializer")
            .deserialize_nonstreaming_with_config(&response, &ConfigBag::base())
            .expect("the SDK's output")
            .downcast::<GetRecordsOutput>()
            .expect("a GetRecordsOutput");
        assert_eq!(
            fast_output.next_shard_iterator, sdk_output.next_shard_iterator,
            "both readers must hand back the same next iterator"
        );
        if fast.is_none() {
            // Declined: the reader's answer is the SDK's own, records included.
            assert_eq!(fast_output.records, sdk_output.records);
        }
        let sdk = sdk_output
            .records
            .unwrap_or_default()
            .into_iter()
            .map(convert_record)
            .collect::<Result<Vec<_>, _>>()
            .expect("the SDK path converts");
        (fast, sdk)
    }

    fn attribute() -> impl proptest::strategy::Strategy<Value = AttributeValue> {
        use proptest::prelude::*;
        let bytes = proptest::collection::vec(any::<u8>(), 0..8);
        let number = "-?[0-9]{1,5}(\\.[0-9]{1,3})?";
        let leaf = prop_oneof![
            any::<String>().prop_map(AttributeValue::S),
            number.prop_map(AttributeValue::N),
            bytes.clone().prop_map(AttributeValue::B),
            any::<bool>().prop_map(AttributeValue::Bool),
            Just(AttributeValue::Null(true)),
            proptest::collection::vec(any::<String>(), 1..4).prop_map(AttributeValue::Ss),
            proptest::collection::vec(number, 1..4).prop_map(AttributeValue::Ns),
            proptest::collection::vec(bytes, 1..3).prop_map(AttributeValue::Bs),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
                proptest::collection::hash_map("[a-z\\\"\\u{e9}]{1,6}", inner, 0..4)
                    .prop_map(AttributeValue::M),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        #[test]
        fn the_fast_reader_and_the_sdk_agree_on_every_page(
            images in proptest::collection::vec(
                (
                    proptest::collection::hash_map("[a-z]{1,4}", attribute(), 1..5),
                    proptest::option::of(proptest::collection::hash_map("[a-z]{1,4}", attribute(), 0..3)),
                    proptest::sample::select(vec!["INSERT", "MODIFY", "REMOVE", "SOMETHING_NEW"]),
                    proptest::option::of(0u32..2_000_000_000),
                    proptest::bool::ANY,
                ),
                0..6,
            ),
            next in proptest::option::of("[A-Za-z0-9+/=]{1,40}"),
        ) {
            let records: Vec<serde_json::Value> = images
                .into_iter()
                .enumerate()
                .map(|(i, (new_image, old_image, name, created, ttl))| {
                    let mut data = serde_json::json!({
                        "Keys": {"pk": {"S": format!("k{i}")}},
                        "NewImage": Item::from(new_image),
                        "SequenceNumber": format!("{:021}", 100 + i),
                        "SizeBytes": 10 + i,
                        "StreamViewType": "NEW_AND_OLD_IMAGES",
                    });
                    if let Some(old) = old_image {
                        data["OldImage"] = serde_json::json!(Item::from(old));
                    }
                    if let Some(secs) = created {
                        // Whole and fractional epoch seconds, as the service sends both.
                        data["ApproximateCreationDateTime"] = if secs % 2 == 0 {
                            serde_json::json!(secs)
                        } else {
                            serde_json::json!(f64::from(secs) + 0.5)
                        };
                    }
                    let mut record = serde_json::json!({
                        "awsRegion": "us-east-1",
                        "eventID": format!("ev{i}"),
                        "eventName": name,
                        "eventSource": "aws:dynamodb",
                        "eventVersion": "1.1",
                        "dynamodb": data,
                    });
                    if ttl {
                        record["userIdentity"] = serde_json::json!(
                            {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
                        );
                    }
                    record
                })
                .collect();
            let mut body = serde_json::json!({ "Records": records });
            if let Some(next) = &next {
                body["NextShardIterator"] = serde_json::json!(next);
            }
            let (fast, sdk) = read_both_ways(body.to_string());
            let fast = fast.expect("the fast reader accepts every well-formed page");
            proptest::prop_assert_eq!(fast, sdk);
        }
    }

    #[test]
    fn pages_the_fast_reader_declines_still_read_through_the_sdk() {
        // A creation time before 1970: the fast reader declines the page rather than guess,
        // and the SDK path reads it with its own rules (a time before the epoch).
        let body = r#"{"Records":[{"eventName":"INSERT","dynamodb":{"SequenceNumber":"100000000000000000001","Keys":{"pk":{"S":"a"}},"ApproximateCreationDateTime":-5}}],"NextShardIterator":"n"}"#;
        let (fast, sdk) = read_both_ways(body.to_owned());
        assert!(fast.is_none(), "the fast reader must decline this page");
        assert_eq!(sdk.len(), 1);
        assert_eq!(
            sdk[0].approximate_creation_time(),
            UNIX_EPOCH.checked_sub(Duration::from_secs(5))
        );
    }
}
