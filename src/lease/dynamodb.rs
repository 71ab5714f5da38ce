//! [`LeaseStore`] over a DynamoDB table.
//!
//! The item layout is documented on [`DynamoDbLeaseStore`].

use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::Duration;

use aws_sdk_dynamodb as ddb;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use ddb::config::http::HttpResponse;
use ddb::error::SdkError;
use ddb::operation::update_item::builders::UpdateItemFluentBuilder;
use ddb::operation::update_item::UpdateItemError;
use ddb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableDescription, TableStatus,
};

use super::{
    check_counter, check_forward, check_held_by, check_owner, next_counter, not_found, Lease,
    LeaseError, LeaseErrorKind, LeaseStore,
};
use crate::aws_error::{self, modeled_codes, short_code, Failure, ModeledCode};
use crate::checkpoint::{ShardCheckpoint, StreamKey};
use crate::record::SequenceNumber;
use crate::source::BoxFuture;

type Item = HashMap<String, AttributeValue>;

const LEASE_KEY: &str = "leaseKey";
const SHARD_ID: &str = "shardId";
const OWNER: &str = "owner";
const COUNTER: &str = "counter";
const EXPIRES: &str = "expiresAtMs";
const PARENTS: &str = "parents";
const STATE: &str = "checkpointState";
const SEQUENCE: &str = "sequenceNumber";
const SEQUENCE_KEY: &str = "sequenceKey";
const SINCE: &str = "sinceMs";
const HANDOFF: &str = "handoffTo";

const STATE_PROCESSED: &str = "processed";
const STATE_ENDED: &str = "ended";
const STATE_LATEST: &str = "latest";
const STATE_DISCOVERED: &str = "discovered";

/// How long [`LeaseStore::ensure_table`] waits for a new table to become ACTIVE (AWS takes
/// seconds to a minute; DynamoDB Local is instant).
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(180);

/// Leases in a DynamoDB table, one item per (application, stream, shard); one table can hold
/// the leases of several applications and streams.
///
/// | attribute         | type | content                                                        |
/// |-------------------|------|----------------------------------------------------------------|
/// | `leaseKey`        | S    | hash key: `"{application}\|{stream_arn}"`                      |
/// | `shardId`         | S    | range key                                                      |
/// | `owner`           | S    | the worker holding the lease; absent when free                 |
/// | `counter`         | N    | the fencing token, +1 on every write                           |
/// | `expiresAtMs`     | N    | the owner's lease is valid until then; 0 when free             |
/// | `parents`         | L    | parent shard ids (S), in order; absent when none (SS is read too) |
/// | `checkpointState` | S    | `processed`, `ended` or `latest`; absent when never processed  |
/// | `sequenceNumber`  | S    | the last processed record (with `processed`)                   |
/// | `sequenceKey`     | S    | `sequenceNumber` zero-padded to 40 digits (with `processed`)   |
/// | `sinceMs`         | N    | the `LATEST` bookmark time (with `latest`)                     |
/// | `handoffTo`       | S    | a worker that asked the owner to hand the lease over           |
///
/// `sequenceKey` exists because conditions compare strings, and sequence numbers have 21 to 40
/// digits: padded to the same width, string order is numeric order, so "never backwards" is
/// one condition evaluated atomically with the write. Stream ARNs never contain `|`, so the
/// hash key is unambiguous whatever the application name.
///
/// Every write but `delete` is a conditional `UpdateItem` or `PutItem` (all but
/// `request_handoff` increment the counter), and reads are strongly
/// consistent. A refused condition is a `Conflict` explained from the item DynamoDB returns
/// with the refusal — unless the item is exactly what the write would have made it: then the
/// write was ours, retried by the SDK after its response was lost, and it counts as done.
/// [`ensure_table`](LeaseStore::ensure_table) creates the table with on-demand billing.
///
/// Give the client the crate's [`recommended_timeouts`](crate::recommended_timeouts): a write
/// that hangs holds up lease renewal, and a lease that is not renewed is lost.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use dynamodb_stream::lease::{DynamoDbLeaseStore, LeaseStore};
/// let sdk_config = aws_config::from_env()
///     .timeout_config(dynamodb_stream::recommended_timeouts())
///     .load()
///     .await;
/// let store = DynamoDbLeaseStore::new(aws_sdk_dynamodb::Client::new(&sdk_config), "leases");
/// store.ensure_table().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DynamoDbLeaseStore {
    client: ddb::Client,
    table: String,
}

impl DynamoDbLeaseStore {
    /// A store in `table_name` (created by [`ensure_table`](LeaseStore::ensure_table) if
    /// missing).
    pub fn new(client: ddb::Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table: table_name.into(),
        }
    }

    /// The lease table's name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    fn key_item(key: &StreamKey, shard_id: &str) -> Item {
        HashMap::from([
            (LEASE_KEY.to_owned(), s(lease_key(key))),
            (SHARD_ID.to_owned(), s(shard_id)),
        ])
    }

    /// An UpdateItem of one lease that, when its condition fails, returns the item as it is,
    /// so the refusal can be explained (and a retried write of our own recognised) without
    /// another read.
    fn update(&self, key: &StreamKey, shard_id: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_item(key, shard_id)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }

    async fn send_update(
        &self,
        operation: &'static str,
        call: UpdateItemFluentBuilder,
    ) -> Result<Option<Item>, WriteError> {
        match call.send().await {
            Ok(out) => Ok(out.attributes),
            Err(err) => {
                if let Some(UpdateItemError::ConditionalCheckFailedException(e)) =
                    err.as_service_error()
                {
                    return Err(WriteError::ConditionFailed(e.item().cloned()));
                }
                Err(WriteError::Store(self.classify(operation, err)))
            }
        }
    }

    /// The lease as it is after a refused write: from the refusal when DynamoDB returned the
    /// item, else read (consistently) — `None` when it does not exist.
    async fn current(
        &self,
        key: &StreamKey,
        shard_id: &str,
        returned: Option<Item>,
    ) -> Result<Option<Lease>, LeaseError> {
        let item = match returned {
            Some(item) => Some(item),
            None => self.get(key, shard_id).await?,
        };
        item.map(|item| self.lease_from_item(&item)).transpose()
    }

    async fn get(&self, key: &StreamKey, shard_id: &str) -> Result<Option<Item>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_item(key, shard_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.classify("GetItem", e))?;
        Ok(out.item)
    }

    /// The lease after a refused write; [`NotFound`](LeaseErrorKind::NotFound) when missing.
    async fn refused(
        &self,
        key: &StreamKey,
        shard_id: &str,
        returned: Option<Item>,
    ) -> Result<Lease, LeaseError> {
        self.current(key, shard_id, returned)
            .await?
            .ok_or_else(|| not_found(key, shard_id))
    }

    // -----------------------------------------------------------------------------------------
    // Table
    // -----------------------------------------------------------------------------------------

    async fn describe(&self) -> Result<Option<TableDescription>, LeaseError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(out.table),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(ddb::operation::describe_table::DescribeTableError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(self.classify("DescribeTable", err)),
        }
    }

    async fn create_table(&self) -> Result<(), LeaseError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
        };
        let built = (|| {
            Ok::<_, ddb::error::BuildError>((
                attribute(LEASE_KEY)?,
                attribute(SHARD_ID)?,
                key(LEASE_KEY, KeyType::Hash)?,
                key(SHARD_ID, KeyType::Range)?,
            ))
        })();
        let (lease_attr, shard_attr, hash, range) = built.map_err(|e| {
            LeaseError::new(
                LeaseErrorKind::Fatal,
                format!("cannot build the CreateTable request of {:?}", self.table),
            )
            .with_source(e)
        })?;
        let result = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(lease_attr)
            .attribute_definitions(shard_attr)
            .key_schema(hash)
            .key_schema(range)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Another worker created it at the same moment: fine, its schema is checked next.
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(ddb::operation::create_table::CreateTableError::ResourceInUseException(_))
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(self.classify("CreateTable", err)),
        }
    }

    /// Wait until the table is usable; its description then.
    async fn wait_active(&self) -> Result<TableDescription, LeaseError> {
        let deadline = crate::rt::Instant::now() + ACTIVE_TIMEOUT;
        let mut delay = Duration::from_millis(50);
        loop {
            // A table just created may not be visible at once (DescribeTable is eventually
            // consistent), so "not found" is waited out like CREATING.
            let status = match self.describe().await? {
                Some(desc) => match desc.table_status() {
                    Some(TableStatus::Active | TableStatus::Updating) => return Ok(desc),
                    Some(TableStatus::Deleting) => {
                        return Err(LeaseError::new(
                            LeaseErrorKind::Io,
                            format!(
                                "lease table {:?} is being deleted; try again once it is gone",
                                self.table
                            ),
                        ))
                    }
                    Some(TableStatus::Creating) | None => "CREATING".to_owned(),
                    Some(other) => {
                        return Err(LeaseError::new(
                            LeaseErrorKind::Fatal,
                            format!(
                                "lease table {:?} is {} and cannot be used",
                                self.table,
                                other.as_str()
                            ),
                        ))
                    }
                },
                None => "not visible yet".to_owned(),
            };
            if crate::rt::Instant::now() >= deadline {
                return Err(LeaseError::new(
                    LeaseErrorKind::Io,
                    format!(
                        "lease table {:?} not ACTIVE after {ACTIVE_TIMEOUT:?} ({status})",
                        self.table
                    ),
                ));
            }
            crate::rt::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// A table of another shape would accept none of our items (or worse, some of them):
    /// refuse it with a message that says what is wrong.
    fn validate(&self, desc: &TableDescription) -> Result<(), LeaseError> {
        let type_of = |name: &str| {
            desc.attribute_definitions()
                .iter()
                .find(|d| d.attribute_name() == name)
                .map(|d| d.attribute_type().as_str().to_owned())
                .unwrap_or_else(|| "?".to_owned())
        };
        let schema: Vec<(String, String, String)> = desc
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                    type_of(k.attribute_name()),
                )
            })
            .collect();
        let expected = [
            (LEASE_KEY, KeyType::Hash.as_str(), "S"),
            (SHARD_ID, KeyType::Range.as_str(), "S"),
        ];
        let matches = schema.len() == expected.len()
            && schema
                .iter()
                .zip(expected)
                .all(|((n, k, t), (en, ek, et))| n == en && k == ek && t == et);
        if matches {
            return Ok(());
        }
        let found = schema
            .iter()
            .map(|(n, k, t)| format!("{n} ({k}, {t})"))
            .collect::<Vec<_>>()
            .join(", ");
        Err(LeaseError::new(
            LeaseErrorKind::Fatal,
            format!(
                "table {:?} exists but is not a lease table: its key schema is [{found}], a lease \
                 table needs hash key {LEASE_KEY} (S) and range key {SHARD_ID} (S); use another \
                 table name for the leases",
                self.table
            ),
        ))
    }

    async fn ensure(&self) -> Result<(), LeaseError> {
        match self.describe().await? {
            Some(desc) => {
                self.validate(&desc)?;
                if !matches!(
                    desc.table_status(),
                    Some(TableStatus::Active | TableStatus::Updating)
                ) {
                    self.wait_active().await?;
                }
                Ok(())
            }
            None => {
                self.create_table().await?;
                let desc = self.wait_active().await?;
                self.validate(&desc)
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Items
    // -----------------------------------------------------------------------------------------

    fn lease_from_item(&self, item: &Item) -> Result<Lease, LeaseError> {
        let shard_id = match item.get(SHARD_ID) {
            Some(AttributeValue::S(id)) => id.clone(),
            other => {
                let lease_key = match item.get(LEASE_KEY) {
                    Some(AttributeValue::S(k)) => k.as_str(),
                    _ => "?",
                };
                return Err(LeaseError::new(
                    LeaseErrorKind::Corrupt,
                    format!(
                        "a lease item of {lease_key:?} in table {:?} has {}",
                        self.table,
                        attribute_problem(SHARD_ID, other, "S")
                    ),
                ));
            }
        };
        let corrupt = |what: String| {
            LeaseError::new(
                LeaseErrorKind::Corrupt,
                format!(
                    "lease of shard {shard_id} in table {:?}: {what}",
                    self.table
                ),
            )
        };
        let owner = optional_s(item, OWNER)
            .map_err(&corrupt)?
            .map(str::to_owned);
        let handoff_to = optional_s(item, HANDOFF)
            .map_err(&corrupt)?
            .map(str::to_owned);
        let counter = required_n(item, COUNTER).map_err(&corrupt)?;
        let expires_at_ms = required_n(item, EXPIRES).map_err(&corrupt)?;
        let parent_shard_ids = match item.get(PARENTS) {
            None => Vec::new(),
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| match v {
                    AttributeValue::S(id) => Ok(id.clone()),
                    other => Err(corrupt(format!(
                        "{PARENTS} holds a {}, not S",
                        type_name(other)
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(AttributeValue::Ss(set)) => {
                // A set has no order; sorted, so equal sets read as equal leases.
                let mut ids = set.clone();
                ids.sort();
                ids
            }
            other => return Err(corrupt(attribute_problem(PARENTS, other, "L or SS"))),
        };
        let checkpoint = match optional_s(item, STATE).map_err(&corrupt)? {
            None => None,
            Some(STATE_PROCESSED) => {
                let digits = optional_s(item, SEQUENCE)
                    .map_err(&corrupt)?
                    .ok_or_else(|| corrupt(format!("{STATE_PROCESSED} without {SEQUENCE}")))?;
                let sequence_number: SequenceNumber = digits.parse().map_err(|e| {
                    corrupt(format!("{SEQUENCE} {digits:?} is not a sequence number"))
                        .with_source(e)
                })?;
                // The key is what the "never backwards" condition compares: one that does not
                // match the sequence number would let the position move backwards.
                let stored_key = optional_s(item, SEQUENCE_KEY).map_err(&corrupt)?;
                let expected_key = sequence_key(&sequence_number);
                if stored_key != Some(expected_key.as_str()) {
                    return Err(corrupt(format!(
                        "{SEQUENCE_KEY} {stored_key:?} does not match {SEQUENCE} {digits}"
                    )));
                }
                Some(ShardCheckpoint::Processed { sequence_number })
            }
            Some(STATE_ENDED) => Some(ShardCheckpoint::Ended),
            Some(STATE_DISCOVERED) => Some(ShardCheckpoint::Discovered {
                since_ms: optional_n(item, SINCE).map_err(&corrupt)?.unwrap_or(0),
                from: optional_s(item, SEQUENCE)
                    .map_err(&corrupt)?
                    .map(|digits| {
                        digits.parse().map_err(|e| {
                            corrupt(format!("{SEQUENCE} {digits:?} is not a sequence number"))
                                .with_source(e)
                        })
                    })
                    .transpose()?,
            }),
            Some(STATE_LATEST) => Some(ShardCheckpoint::Latest {
                since_ms: required_n(item, SINCE).map_err(&corrupt)?,
            }),
            Some(other) => {
                return Err(corrupt(format!(
                    "unknown {STATE} {other:?} (expected {STATE_PROCESSED}, {STATE_ENDED}, \
                     {STATE_LATEST} or {STATE_DISCOVERED})"
                )))
            }
        };
        Ok(Lease {
            shard_id,
            parent_shard_ids,
            owner,
            counter,
            expires_at_ms,
            checkpoint,
            handoff_to,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Errors
    // -----------------------------------------------------------------------------------------

    /// Classify a failed SDK call, keeping the SDK error as the `source`.
    ///
    /// Throttling, 5xx, timeouts and connection failures are [`Io`](LeaseErrorKind::Io);
    /// validation errors, access denied and a missing table are
    /// [`Fatal`](LeaseErrorKind::Fatal). Conditional check failures are handled by the caller
    /// before this (they carry the item).
    fn classify<E>(&self, operation: &'static str, err: SdkError<E, HttpResponse>) -> LeaseError
    where
        E: ProvideErrorMetadata + ModeledCode + StdError + Send + Sync + 'static,
    {
        let table = &self.table;
        // One line: what actually failed; the SDK's full chain stays the source.
        let context = aws_error::innermost(&err);
        let (kind, message) = match aws_error::read(&err) {
            Failure::Service {
                code,
                status,
                detail,
            } => {
                let kind = match code.and_then(kind_for_code) {
                    Some(kind) => kind,
                    None if (500..600).contains(&status) || status == 429 => LeaseErrorKind::Io,
                    // A 2xx "error" without code: the response body did not parse.
                    None if code.is_none() && (200..300).contains(&status) => LeaseErrorKind::Io,
                    None => LeaseErrorKind::Fatal,
                };
                let hint = if code.is_some_and(|c| short_code(c) == "ResourceNotFoundException") {
                    " (the lease table does not exist: call ensure_table first)"
                } else {
                    ""
                };
                let message = format!(
                    "{operation} on lease table {table:?} failed: {} (HTTP {status}): {detail}{hint}",
                    code.unwrap_or("no error code"),
                );
                (kind, message)
            }
            Failure::Timeout => (
                LeaseErrorKind::Io,
                format!("{operation} on lease table {table:?} timed out: {context}"),
            ),
            // No credentials, an unusable endpoint: retrying cannot help.
            Failure::Dispatch { user, cause } => (
                if user || cause.is_some_and(|c| c.is_configuration()) {
                    LeaseErrorKind::Fatal
                } else {
                    LeaseErrorKind::Io
                },
                format!("{operation} on lease table {table:?} could not be sent: {context}"),
            ),
            Failure::Response => (
                LeaseErrorKind::Io,
                format!(
                    "{operation} on lease table {table:?}: response could not be read: {context}"
                ),
            ),
            Failure::Construction | Failure::Other => (
                LeaseErrorKind::Fatal,
                format!("{operation} on lease table {table:?} failed: {context}"),
            ),
        };
        LeaseError::new(kind, message).with_source(err)
    }
}

/// Why a write did not happen.
enum WriteError {
    /// The condition failed; the item as it is, when DynamoDB returned it.
    ConditionFailed(Option<Item>),
    /// Anything else, classified.
    Store(LeaseError),
}

/// Whether a refused write was in fact ours: `owner` wrote the lease to counter `next`. The
/// caller also compares the values it wrote.
///
/// The SDK retries a request whose response was lost (timeout, connection reset), and the retry
/// of a write that did succeed fails its condition — the counter already moved, by us.
/// Reporting that as a conflict would make the owner drop a lease it holds, so when the lease is
/// exactly as our write left it the write counts as done. Nobody else produces that state: only
/// a write stating the counter before `next` reaches `next`, and another worker's would name
/// that worker as owner (take) or have been refused (it does not own the lease).
fn own_write(lease: &Lease, next: u64, owner: &str) -> bool {
    lease.counter == next && lease.owner.as_deref() == Some(owner)
}

fn changed_concurrently(lease: &Lease) -> LeaseError {
    LeaseError::new(
        LeaseErrorKind::Conflict,
        format!(
            "lease of shard {} changed concurrently (now counter {})",
            lease.shard_id, lease.counter
        ),
    )
}

fn lease_key(key: &StreamKey) -> String {
    format!("{}|{}", key.application, key.stream_arn)
}

/// The sequence number's digits without leading zeros, left-padded with zeros to 40 (the most
/// a sequence number has), so string order is numeric order.
fn sequence_key(sequence_number: &SequenceNumber) -> String {
    let significant = sequence_number.as_str().trim_start_matches('0');
    format!("{significant:0>width$}", width = SequenceNumber::MAX_DIGITS)
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn optional_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, String> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        other => Err(attribute_problem(name, other, "S")),
    }
}

fn optional_n(item: &Item, name: &str) -> Result<Option<u64>, String> {
    match item.get(name) {
        None => Ok(None),
        Some(_) => required_n(item, name).map(Some),
    }
}

fn required_n(item: &Item, name: &str) -> Result<u64, String> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| format!("{name} {v:?} is not a whole number of at most 20 digits")),
        other => Err(attribute_problem(name, other, "N")),
    }
}

fn attribute_problem(name: &str, value: Option<&AttributeValue>, expected: &str) -> String {
    match value {
        None => format!("no {name} attribute"),
        Some(v) => format!("{name} is {}, not {expected}", type_name(v)),
    }
}

fn type_name(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::B(_) => "B",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Bs(_) => "BS",
        AttributeValue::L(_) => "L",
        AttributeValue::M(_) => "M",
        AttributeValue::N(_) => "N",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::S(_) => "S",
        AttributeValue::Ss(_) => "SS",
        _ => "an unknown type",
    }
}

fn kind_for_code(code: &str) -> Option<LeaseErrorKind> {
    let kind = match short_code(code) {
        "ConditionalCheckFailedException" => LeaseErrorKind::Conflict,
        "LimitExceededException"
        | "ThrottlingException"
        | "Throttling"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded"
        | "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        // Another transaction or region is writing the item right now: try again.
        | "TransactionConflictException"
        | "ReplicatedWriteConflictException" => LeaseErrorKind::Io,
        // The table is missing: nothing changes that but `ensure_table`.
        "ResourceNotFoundException" => LeaseErrorKind::Fatal,
        _ => return None,
    };
    Some(kind)
}

modeled_codes! {
    UpdateItemError {
        ConditionalCheckFailedException, InternalServerError, ProvisionedThroughputExceededException,
        ReplicatedWriteConflictException, RequestLimitExceeded, ResourceNotFoundException,
        ThrottlingException, TransactionConflictException,
    }
    ddb::operation::put_item::PutItemError {
        ConditionalCheckFailedException, InternalServerError, ProvisionedThroughputExceededException,
        ReplicatedWriteConflictException, RequestLimitExceeded, ResourceNotFoundException,
        ThrottlingException, TransactionConflictException,
    }
    ddb::operation::delete_item::DeleteItemError {
        ConditionalCheckFailedException, InternalServerError, ProvisionedThroughputExceededException,
        ReplicatedWriteConflictException, RequestLimitExceeded, ResourceNotFoundException,
        ThrottlingException, TransactionConflictException,
    }
    ddb::operation::get_item::GetItemError {
        InternalServerError, ProvisionedThroughputExceededException, RequestLimitExceeded,
        ResourceNotFoundException, ThrottlingException,
    }
    ddb::operation::query::QueryError {
        InternalServerError, ProvisionedThroughputExceededException, RequestLimitExceeded,
        ResourceNotFoundException, ThrottlingException,
    }
    // DescribeTableError: implemented once, in source::aws (table resolution).
    ddb::operation::create_table::CreateTableError {
        InternalServerError, LimitExceededException, ResourceInUseException,
    }
}

impl DynamoDbLeaseStore {
    /// Every lease under `lease_key`, page after page; `consistent`: a strongly consistent read (one
    /// read unit per 4 KB of leases) or an eventually consistent one (half).
    async fn query_leases(
        &self,
        lease_key: String,
        consistent: bool,
    ) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#lk = :lk")
                .expression_attribute_names("#lk", LEASE_KEY)
                .expression_attribute_values(":lk", s(lease_key.clone()))
                .consistent_read(consistent)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.classify("Query", e))?;
            for item in out.items() {
                leases.push(self.lease_from_item(item)?);
            }
            match out.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => break,
            }
        }
        Ok(leases)
    }
}

impl LeaseStore for DynamoDbLeaseStore {
    fn ensure_table(&self) -> BoxFuture<'_, Result<(), LeaseError>> {
        Box::pin(self.ensure())
    }

    fn list(&self, key: &StreamKey) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        Box::pin(self.query_leases(lease_key(key), true))
    }

    fn list_recent(&self, key: &StreamKey) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        Box::pin(self.query_leases(lease_key(key), false))
    }

    fn create(
        &self,
        key: &StreamKey,
        shard_id: &str,
        parent_shard_ids: &[String],
    ) -> BoxFuture<'_, Result<bool, LeaseError>> {
        let mut item = Self::key_item(key, shard_id);
        item.insert(COUNTER.to_owned(), n(0));
        item.insert(EXPIRES.to_owned(), n(0));
        if !parent_shard_ids.is_empty() {
            // A list keeps the parents' order (a string set would not), so a lease reads back
            // exactly as created.
            item.insert(
                PARENTS.to_owned(),
                AttributeValue::L(parent_shard_ids.iter().map(s).collect()),
            );
        }
        Box::pin(async move {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#sk)")
                .expression_attribute_names("#sk", SHARD_ID)
                .send()
                .await;
            match result {
                Ok(_) => Ok(true),
                Err(err)
                    if matches!(
                        err.as_service_error(),
                        Some(
                            ddb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                                _
                            )
                        )
                    ) =>
                {
                    Ok(false)
                }
                Err(err) => Err(self.classify("PutItem", err)),
            }
        })
    }

    fn take(
        &self,
        key: &StreamKey,
        shard_id: &str,
        expected_counter: u64,
        owner: &str,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<Lease, LeaseError>> {
        let key = key.clone();
        let shard_id = shard_id.to_owned();
        let owner = owner.to_owned();
        Box::pin(async move {
            let next = next_counter(&shard_id, expected_counter)?;
            let call = self
                .update(&key, &shard_id)
                .update_expression(
                    "SET #owner = :owner, #expires = :expires, #counter = :next REMOVE #handoff",
                )
                // A missing item has no counter, so this also refuses to create one.
                .condition_expression("#counter = :expected")
                .expression_attribute_names("#handoff", HANDOFF)
                .expression_attribute_names("#owner", OWNER)
                .expression_attribute_names("#expires", EXPIRES)
                .expression_attribute_names("#counter", COUNTER)
                .expression_attribute_values(":owner", s(owner.clone()))
                .expression_attribute_values(":expires", n(expires_at_ms))
                .expression_attribute_values(":next", n(next))
                .expression_attribute_values(":expected", n(expected_counter))
                .return_values(ReturnValue::AllNew);
            match self.send_update("UpdateItem (take)", call).await {
                Ok(Some(item)) => self.lease_from_item(&item),
                Ok(None) => Err(LeaseError::new(
                    LeaseErrorKind::Io,
                    format!(
                        "UpdateItem (take) on lease table {:?} returned no attributes for shard \
                         {shard_id}",
                        self.table
                    ),
                )),
                Err(WriteError::Store(e)) => Err(e),
                Err(WriteError::ConditionFailed(returned)) => {
                    let lease = self.refused(&key, &shard_id, returned).await?;
                    if own_write(&lease, next, &owner) && lease.expires_at_ms == expires_at_ms {
                        return Ok(lease);
                    }
                    check_counter(&lease, expected_counter)?;
                    Err(changed_concurrently(&lease))
                }
            }
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
        let key = key.clone();
        let shard_id = shard_id.to_owned();
        let owner = owner.to_owned();
        Box::pin(async move {
            let next = next_counter(&shard_id, counter)?;
            let call = self
                .update(&key, &shard_id)
                .update_expression("SET #expires = :expires, #counter = :next")
                .condition_expression("#owner = :owner AND #counter = :counter")
                .expression_attribute_names("#owner", OWNER)
                .expression_attribute_names("#expires", EXPIRES)
                .expression_attribute_names("#counter", COUNTER)
                .expression_attribute_values(":owner", s(owner.clone()))
                .expression_attribute_values(":expires", n(expires_at_ms))
                .expression_attribute_values(":next", n(next))
                .expression_attribute_values(":counter", n(counter));
            match self.send_update("UpdateItem (renew)", call).await {
                Ok(_) => Ok(next),
                Err(WriteError::Store(e)) => Err(e),
                Err(WriteError::ConditionFailed(returned)) => {
                    let lease = self.refused(&key, &shard_id, returned).await?;
                    if own_write(&lease, next, &owner) && lease.expires_at_ms == expires_at_ms {
                        return Ok(next);
                    }
                    check_owner(&lease, &owner, counter)?;
                    Err(changed_concurrently(&lease))
                }
            }
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
        let key = key.clone();
        let shard_id = shard_id.to_owned();
        let owner = owner.to_owned();
        let checkpoint = checkpoint.clone();
        Box::pin(async move {
            let next = next_counter(&shard_id, counter)?;
            const FENCE: &str = "#owner = :owner AND #counter = :counter";
            let call = self
                .update(&key, &shard_id)
                .expression_attribute_names("#owner", OWNER)
                .expression_attribute_names("#counter", COUNTER)
                .expression_attribute_names("#state", STATE)
                .expression_attribute_values(":owner", s(owner.clone()))
                .expression_attribute_values(":counter", n(counter))
                .expression_attribute_values(":next", n(next));
            // Each position removes the attributes of the others, so the item holds exactly
            // one checkpoint. The conditions encode Discovered < Latest < Processed (by
            // sequenceKey) < Ended (`ShardCheckpoint::advances`).
            let call = match &checkpoint {
                ShardCheckpoint::Processed { sequence_number } => call
                    .update_expression(
                        "SET #counter = :next, #state = :processed, #seq = :seq, \
                         #seqkey = :seqkey REMOVE #since",
                    )
                    .condition_expression(format!(
                        "{FENCE} AND (attribute_not_exists(#state) OR #state = :discovered OR \
                         #state = :latest OR (#state = :processed AND #seqkey <= :seqkey))"
                    ))
                    .expression_attribute_names("#seq", SEQUENCE)
                    .expression_attribute_names("#seqkey", SEQUENCE_KEY)
                    .expression_attribute_names("#since", SINCE)
                    .expression_attribute_values(":processed", s(STATE_PROCESSED))
                    .expression_attribute_values(":discovered", s(STATE_DISCOVERED))
                    .expression_attribute_values(":latest", s(STATE_LATEST))
                    .expression_attribute_values(":seq", s(sequence_number.as_str()))
                    .expression_attribute_values(":seqkey", s(sequence_key(sequence_number))),
                ShardCheckpoint::Latest { since_ms } => call
                    .update_expression(
                        "SET #counter = :next, #state = :latest, #since = :since \
                         REMOVE #seq, #seqkey",
                    )
                    .condition_expression(format!(
                        "{FENCE} AND (attribute_not_exists(#state) OR #state = :discovered OR \
                         #state = :latest)"
                    ))
                    .expression_attribute_names("#seq", SEQUENCE)
                    .expression_attribute_names("#seqkey", SEQUENCE_KEY)
                    .expression_attribute_names("#since", SINCE)
                    .expression_attribute_values(":discovered", s(STATE_DISCOVERED))
                    .expression_attribute_values(":latest", s(STATE_LATEST))
                    .expression_attribute_values(":since", n(*since_ms)),
                ShardCheckpoint::Discovered {
                    from: None,
                    since_ms,
                } => call
                    .update_expression(
                        "SET #counter = :next, #state = :discovered, #since = :since \
                         REMOVE #seq, #seqkey",
                    )
                    .condition_expression(format!(
                        "{FENCE} AND (attribute_not_exists(#state) OR \
                         (#state = :discovered AND attribute_not_exists(#seq)))"
                    ))
                    .expression_attribute_names("#seq", SEQUENCE)
                    .expression_attribute_names("#seqkey", SEQUENCE_KEY)
                    .expression_attribute_names("#since", SINCE)
                    .expression_attribute_values(":discovered", s(STATE_DISCOVERED))
                    .expression_attribute_values(":since", n(*since_ms)),
                ShardCheckpoint::Discovered {
                    from: Some(from),
                    since_ms,
                } => call
                    .update_expression(
                        "SET #counter = :next, #state = :discovered, #seq = :seq, \
                         #since = :since REMOVE #seqkey",
                    )
                    .condition_expression(format!(
                        "{FENCE} AND (attribute_not_exists(#state) OR \
                         (#state = :discovered AND (attribute_not_exists(#seq) OR #seq = :seq)))"
                    ))
                    .expression_attribute_names("#seq", SEQUENCE)
                    .expression_attribute_names("#seqkey", SEQUENCE_KEY)
                    .expression_attribute_names("#since", SINCE)
                    .expression_attribute_values(":discovered", s(STATE_DISCOVERED))
                    .expression_attribute_values(":seq", s(from.as_str()))
                    .expression_attribute_values(":since", n(*since_ms)),
                ShardCheckpoint::Ended => call
                    .update_expression(
                        "SET #counter = :next, #state = :ended REMOVE #seq, #seqkey, #since",
                    )
                    .condition_expression(FENCE)
                    .expression_attribute_names("#seq", SEQUENCE)
                    .expression_attribute_names("#seqkey", SEQUENCE_KEY)
                    .expression_attribute_names("#since", SINCE)
                    .expression_attribute_values(":ended", s(STATE_ENDED)),
            };
            match self.send_update("UpdateItem (checkpoint)", call).await {
                Ok(_) => Ok(next),
                Err(WriteError::Store(e)) => Err(e),
                Err(WriteError::ConditionFailed(returned)) => {
                    let lease = self.refused(&key, &shard_id, returned).await?;
                    if own_write(&lease, next, &owner)
                        && lease.checkpoint.as_ref() == Some(&checkpoint)
                    {
                        return Ok(next);
                    }
                    check_owner(&lease, &owner, counter)?;
                    check_forward(&lease, &checkpoint)?;
                    Err(changed_concurrently(&lease))
                }
            }
        })
    }

    fn release(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
    ) -> BoxFuture<'_, Result<u64, LeaseError>> {
        let key = key.clone();
        let shard_id = shard_id.to_owned();
        let owner = owner.to_owned();
        Box::pin(async move {
            let next = next_counter(&shard_id, counter)?;
            let call = self
                .update(&key, &shard_id)
                .update_expression("SET #expires = :zero, #counter = :next REMOVE #owner, #handoff")
                .condition_expression("#owner = :owner AND #counter = :counter")
                .expression_attribute_names("#handoff", HANDOFF)
                .expression_attribute_names("#owner", OWNER)
                .expression_attribute_names("#expires", EXPIRES)
                .expression_attribute_names("#counter", COUNTER)
                .expression_attribute_values(":owner", s(owner.clone()))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":next", n(next))
                .expression_attribute_values(":counter", n(counter));
            match self.send_update("UpdateItem (release)", call).await {
                Ok(_) => Ok(next),
                Err(WriteError::Store(e)) => Err(e),
                Err(WriteError::ConditionFailed(returned)) => {
                    let lease = self.refused(&key, &shard_id, returned).await?;
                    // Only the owner at `counter` can write `counter + 1` without taking the
                    // lease (a take names its taker), so a free lease there is our release,
                    // retried (see `own_write`).
                    if lease.counter == next && lease.owner.is_none() && lease.expires_at_ms == 0 {
                        return Ok(next);
                    }
                    check_owner(&lease, &owner, counter)?;
                    Err(changed_concurrently(&lease))
                }
            }
        })
    }

    fn delete(&self, key: &StreamKey, shard_id: &str) -> BoxFuture<'_, Result<(), LeaseError>> {
        let item_key = Self::key_item(key, shard_id);
        Box::pin(async move {
            // Unconditional: cleanup of a shard gone from the stream; racing cleaners (and a
            // retry after a lost response) must all succeed.
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(item_key))
                .send()
                .await
                .map_err(|e| self.classify("DeleteItem", e))?;
            Ok(())
        })
    }

    fn request_handoff(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        to: &str,
    ) -> BoxFuture<'_, Result<bool, LeaseError>> {
        let key = key.clone();
        let shard_id = shard_id.to_owned();
        let (owner, to) = (owner.to_owned(), to.to_owned());
        Box::pin(async move {
            // Conditional on the owner only: the owner's renewals move the counter all the
            // time, and this write is a request, not a change of ownership (it leaves the
            // counter alone, so the owner's fenced writes go on).
            let call = self
                .update(&key, &shard_id)
                .update_expression("SET #handoff = :to")
                .condition_expression("#owner = :owner")
                .expression_attribute_names("#handoff", HANDOFF)
                .expression_attribute_names("#owner", OWNER)
                .expression_attribute_values(":to", s(to.clone()))
                .expression_attribute_values(":owner", s(owner.clone()));
            match self.send_update("UpdateItem (request handoff)", call).await {
                Ok(_) => Ok(true),
                Err(WriteError::Store(e)) => Err(e),
                Err(WriteError::ConditionFailed(returned)) => {
                    let lease = self.refused(&key, &shard_id, returned).await?;
                    check_held_by(&lease, &owner)?;
                    // Held by `owner` after all: the request was ours, retried.
                    Ok(true)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_mocks::{
        create_mock_http_client, mock, MockResponseInterceptor, Rule, RuleMode,
    };
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use ddb::error::ConnectorError;
    use ddb::operation::get_item::GetItemOutput;
    use ddb::operation::query::QueryOutput;
    use ddb::types::error::{
        ConditionalCheckFailedException, ProvisionedThroughputExceededException,
    };

    use super::*;

    const SHARD: &str = "shardId-00000001700000000000-aaaaaaaa";

    fn key() -> StreamKey {
        StreamKey {
            application: "app".into(),
            stream_arn:
                "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024-01-01T00:00:00.000"
                    .into(),
        }
    }

    fn store(rules: &[&Rule]) -> DynamoDbLeaseStore {
        let interceptor = rules.iter().fold(
            MockResponseInterceptor::new().rule_mode(RuleMode::Sequential),
            |i, r| i.with_rule(r),
        );
        let config = ddb::Config::builder()
            .behavior_version(ddb::config::BehaviorVersion::latest())
            .region(ddb::config::Region::new("us-east-1"))
            .credentials_provider(ddb::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .retry_config(ddb::config::retry::RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .build();
        DynamoDbLeaseStore::new(ddb::Client::from_conf(config), "leases")
    }

    fn offline() -> DynamoDbLeaseStore {
        store(&[])
    }

    fn http_error(status: u16, code: &str) -> HttpResponse {
        let body = format!(r#"{{"__type":"{code}","message":"m"}}"#);
        HttpResponse::new(
            status.try_into().expect("valid status"),
            SdkBody::from(body),
        )
    }

    fn lease_item(owner: Option<&str>, counter: u64, expires: u64) -> Item {
        let mut item = DynamoDbLeaseStore::key_item(&key(), SHARD);
        item.insert(COUNTER.into(), n(counter));
        item.insert(EXPIRES.into(), n(expires));
        if let Some(owner) = owner {
            item.insert(OWNER.into(), s(owner));
        }
        item
    }

    fn condition_failed(item: Item) -> UpdateItemError {
        UpdateItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .set_item(Some(item))
                .build(),
        )
    }

    #[test]
    fn sequence_keys_order_numerically() {
        let key = |d: &str| sequence_key(&d.parse().expect("valid"));
        assert_eq!(key("000000000000000000123").len(), 40);
        assert_eq!(key("000000000000000000123"), format!("{:0>40}", "123"));
        assert!(key("900000000000000000001") < key("1000000000000000000000"));
        assert_eq!(
            key("0000000000000000000000000000000000000000"),
            "0".repeat(40)
        );
        let max = "9".repeat(40);
        assert_eq!(key(&max), max);
    }

    #[test]
    fn items_round_trip_and_bad_items_are_corrupt_naming_the_shard() {
        let store = offline();
        let mut item = lease_item(Some("w1"), 7, 1234);
        item.insert(PARENTS.into(), AttributeValue::L(vec![s("p2"), s("p1")]));
        item.insert(STATE.into(), s(STATE_PROCESSED));
        item.insert(SEQUENCE.into(), s("000000000000000000042"));
        item.insert(SEQUENCE_KEY.into(), s(format!("{:0>40}", "42")));
        let lease = store.lease_from_item(&item).expect("readable");
        assert_eq!(
            lease,
            Lease {
                shard_id: SHARD.into(),
                parent_shard_ids: vec!["p2".into(), "p1".into()],
                owner: Some("w1".into()),
                counter: 7,
                expires_at_ms: 1234,
                checkpoint: Some(ShardCheckpoint::Processed {
                    sequence_number: "000000000000000000042".parse().expect("valid"),
                }),
                handoff_to: None,
            }
        );

        let mut ss = lease_item(None, 0, 0);
        ss.insert(
            PARENTS.into(),
            AttributeValue::Ss(vec!["b".into(), "a".into()]),
        );
        assert_eq!(
            store.lease_from_item(&ss).expect("SS").parent_shard_ids,
            vec!["a".to_owned(), "b".to_owned()]
        );

        let with = |name: &str, value: AttributeValue| {
            let mut bad = item.clone();
            bad.insert(name.into(), value);
            bad
        };
        let without = |name: &str| {
            let mut bad = item.clone();
            bad.remove(name);
            bad
        };
        let cases = [
            (without(COUNTER), "no counter attribute"),
            (with(COUNTER, s("1")), "counter is S, not N"),
            (
                with(COUNTER, AttributeValue::N("-1".into())),
                "counter \"-1\"",
            ),
            (
                with(EXPIRES, AttributeValue::Bool(true)),
                "expiresAtMs is BOOL",
            ),
            (with(OWNER, n(3)), "owner is N"),
            (with(SEQUENCE, s("12")), "is not a sequence number"),
            (without(SEQUENCE_KEY), "sequenceKey None does not match"),
            (with(SEQUENCE_KEY, s("42")), "does not match"),
            (with(STATE, s("done")), "unknown checkpointState \"done\""),
            (with(STATE, s(STATE_LATEST)), "no sinceMs attribute"),
            (with(PARENTS, s("p")), "parents is S, not L or SS"),
            (
                with(PARENTS, AttributeValue::L(vec![n(1)])),
                "parents holds a N",
            ),
        ];
        for (bad, expected) in cases {
            let err = store.lease_from_item(&bad).expect_err(expected);
            assert_eq!(err.kind(), LeaseErrorKind::Corrupt, "{err}");
            let text = err.to_string();
            assert!(text.contains(SHARD), "{text}");
            assert!(text.contains(expected), "{expected}: {text}");
        }

        let mut no_shard = item.clone();
        no_shard.remove(SHARD_ID);
        let err = store.lease_from_item(&no_shard).expect_err("no shard id");
        assert_eq!(err.kind(), LeaseErrorKind::Corrupt);
        assert!(err.to_string().contains("no shardId attribute"), "{err}");
    }

    #[tokio::test]
    async fn store_errors_are_classified() {
        let cases: Vec<(fn() -> HttpResponse, LeaseErrorKind)> = vec![
            (
                || http_error(400, "ThrottlingException"),
                LeaseErrorKind::Io,
            ),
            (
                || {
                    http_error(
                        400,
                        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                    )
                },
                LeaseErrorKind::Io,
            ),
            (
                || http_error(400, "RequestLimitExceeded"),
                LeaseErrorKind::Io,
            ),
            (
                || http_error(400, "TransactionConflictException"),
                LeaseErrorKind::Io,
            ),
            (
                || http_error(500, "InternalServerError"),
                LeaseErrorKind::Io,
            ),
            (
                || HttpResponse::new(503.try_into().expect("status"), SdkBody::from("")),
                LeaseErrorKind::Io,
            ),
            (
                || HttpResponse::new(429.try_into().expect("status"), SdkBody::from("")),
                LeaseErrorKind::Io,
            ),
            (
                || http_error(400, "com.amazon.coral.validate#ValidationException"),
                LeaseErrorKind::Fatal,
            ),
            (
                || http_error(400, "AccessDeniedException"),
                LeaseErrorKind::Fatal,
            ),
            (
                || http_error(400, "UnrecognizedClientException"),
                LeaseErrorKind::Fatal,
            ),
            (
                || http_error(400, "ResourceNotFoundException"),
                LeaseErrorKind::Fatal,
            ),
        ];
        for (i, (make, kind)) in cases.into_iter().enumerate() {
            let rule = mock!(ddb::Client::update_item).then_http_response(make);
            let err = store(&[&rule])
                .renew(&key(), SHARD, "w", 1, 2)
                .await
                .expect_err("mocked failure");
            assert_eq!(err.kind(), kind, "case {i}: {err}");
            assert_eq!(err.is_retryable(), kind == LeaseErrorKind::Io);
            assert!(
                err.message().contains("\"leases\""),
                "names the table: {err}"
            );
            assert!(StdError::source(&err).is_some(), "SDK error kept as source");
        }

        let rule = mock!(ddb::Client::query)
            .then_http_response(|| http_error(400, "ResourceNotFoundException"));
        let err = store(&[&rule]).list(&key()).await.expect_err("no table");
        assert!(err.message().contains("ensure_table"), "{err}");

        // A modeled error built in code has no code in its metadata: the variant decides.
        let rule = mock!(ddb::Client::query).then_error(|| {
            ddb::operation::query::QueryError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder().build(),
            )
        });
        let err = store(&[&rule]).list(&key()).await.expect_err("throttled");
        assert_eq!(err.kind(), LeaseErrorKind::Io, "{err}");

        let rule = mock!(ddb::Client::update_item).then_error(|| {
            UpdateItemError::generic(ErrorMetadata::builder().code("SomethingNew").build())
        });
        let err = store(&[&rule])
            .release(&key(), SHARD, "w", 1)
            .await
            .expect_err("unknown");
        assert_eq!(err.kind(), LeaseErrorKind::Fatal, "{err}");
    }

    #[test]
    fn transport_failures_are_classified() {
        let store = offline();
        let classify = |e: SdkError<UpdateItemError, HttpResponse>| store.classify("UpdateItem", e);
        let timeout = classify(SdkError::timeout_error("operation attempt timed out"));
        assert_eq!(timeout.kind(), LeaseErrorKind::Io);
        assert!(timeout.message().contains("timed out"), "{timeout}");
        let reset = classify(SdkError::dispatch_failure(ConnectorError::io(
            "connection reset by peer".into(),
        )));
        assert_eq!(reset.kind(), LeaseErrorKind::Io);
        let user = classify(SdkError::dispatch_failure(ConnectorError::user(
            "invalid URI".into(),
        )));
        assert_eq!(user.kind(), LeaseErrorKind::Fatal);
        let construction = classify(SdkError::construction_failure("missing field"));
        assert_eq!(construction.kind(), LeaseErrorKind::Fatal);
    }

    #[tokio::test]
    async fn refusals_are_explained_from_the_returned_item() {
        let rule = mock!(ddb::Client::update_item)
            .then_error(|| condition_failed(lease_item(Some("thief"), 5, 99)));
        let err = store(&[&rule])
            .checkpoint(&key(), SHARD, "w", 3, &ShardCheckpoint::Ended)
            .await
            .expect_err("fenced");
        assert_eq!(err.kind(), LeaseErrorKind::Conflict);
        assert!(err.message().contains("\"thief\""), "{err}");

        let rule = mock!(ddb::Client::update_item)
            .then_error(|| condition_failed(lease_item(Some("w"), 9, 99)));
        let err = store(&[&rule])
            .take(&key(), SHARD, 3, "x", 100)
            .await
            .expect_err("moved on");
        assert_eq!(err.kind(), LeaseErrorKind::Conflict);
        assert!(err.message().contains("counter 9"), "{err}");

        // Without the item in the refusal, the store reads it; absent means not found.
        let update = mock!(ddb::Client::update_item).then_error(|| {
            UpdateItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder().build(),
            )
        });
        let get = mock!(ddb::Client::get_item)
            .match_requests(|r| r.consistent_read() == Some(true))
            .then_output(|| GetItemOutput::builder().build());
        let err = store(&[&update, &get])
            .renew(&key(), SHARD, "w", 3, 100)
            .await
            .expect_err("missing");
        assert_eq!(err.kind(), LeaseErrorKind::NotFound, "{err}");
    }

    #[tokio::test]
    async fn a_retried_write_that_had_succeeded_counts_as_done() {
        // The first attempt's response was lost, the SDK retried, and the retry's condition
        // failed because the first attempt moved the counter: the item is exactly as our
        // write left it.
        let rule = mock!(ddb::Client::update_item)
            .then_error(|| condition_failed(lease_item(Some("w"), 4, 500)));
        let counter = store(&[&rule])
            .renew(&key(), SHARD, "w", 3, 500)
            .await
            .expect("our own renewal");
        assert_eq!(counter, 4);

        let rule = mock!(ddb::Client::update_item)
            .then_error(|| condition_failed(lease_item(Some("w"), 4, 500)));
        let lease = store(&[&rule])
            .take(&key(), SHARD, 3, "w", 500)
            .await
            .expect("our own take");
        assert_eq!((lease.owner.as_deref(), lease.counter), (Some("w"), 4));

        let rule =
            mock!(ddb::Client::update_item).then_error(|| condition_failed(lease_item(None, 4, 0)));
        let counter = store(&[&rule])
            .release(&key(), SHARD, "w", 3)
            .await
            .expect("our own release");
        assert_eq!(counter, 4);

        // Same counter, but another renewal than ours: a conflict.
        let rule = mock!(ddb::Client::update_item)
            .then_error(|| condition_failed(lease_item(Some("w"), 4, 777)));
        let err = store(&[&rule])
            .renew(&key(), SHARD, "w", 3, 500)
            .await
            .expect_err("not ours");
        assert_eq!(err.kind(), LeaseErrorKind::Conflict);
    }

    /// Two pages of leases (`s1`, `s2`; then `s3`), served only to requests whose
    /// `ConsistentRead` is `consistent`: any other request finds no rule and fails.
    async fn list_two_pages(consistent: bool, recent: bool) -> Vec<String> {
        let item = |shard: &str| {
            let mut i = lease_item(None, 0, 0);
            i.insert(SHARD_ID.into(), s(shard));
            i
        };
        let first = mock!(ddb::Client::query)
            .match_requests(move |r| {
                r.exclusive_start_key().is_none() && r.consistent_read() == Some(consistent)
            })
            .then_output(move || {
                QueryOutput::builder()
                    .items(item("s1"))
                    .items(item("s2"))
                    .set_last_evaluated_key(Some(DynamoDbLeaseStore::key_item(&key(), "s2")))
                    .build()
            });
        let second = mock!(ddb::Client::query)
            .match_requests(move |r| {
                r.consistent_read() == Some(consistent)
                    && r.exclusive_start_key()
                        .and_then(|k| k.get(SHARD_ID))
                        .is_some_and(|v| v == &s("s2"))
            })
            .then_output(move || QueryOutput::builder().items(item("s3")).build());
        let store = store(&[&first, &second]);
        let leases = if recent {
            store.list_recent(&key()).await
        } else {
            store.list(&key()).await
        };
        let leases = leases.expect("list");
        leases.into_iter().map(|l| l.shard_id).collect()
    }

    #[tokio::test]
    async fn list_follows_pages_strongly_consistent() {
        assert_eq!(list_two_pages(true, false).await, ["s1", "s2", "s3"]);
    }

    #[tokio::test]
    async fn list_recent_reads_every_page_eventually_consistent() {
        assert_eq!(list_two_pages(false, true).await, ["s1", "s2", "s3"]);
    }
}
