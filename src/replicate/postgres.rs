//! The PostgreSQL replica: a table's items in a PostgreSQL table, beside the stream checkpoints
//! they reflect and the scan's progress, all in one schema of the database.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::future::try_join_all;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Transaction};

use crate::checkpoint::{CheckpointStore, ShardCheckpoint, StreamCheckpoints, StreamKey};
use crate::error::{CheckpointError, CheckpointErrorKind, Error, Result};
use crate::record::{attribute_to_json, AttributeValue, Item, SequenceNumber};
use crate::source::BoxFuture;

use super::sink::{
    advances, item_to_dynamodb_json, same_key_schema, ItemChange, ReplicaSink, ScanProgress,
    SegmentProgress, SequencedChange,
};
use super::source::key_of;
use super::{KeyAttribute, ScalarType, TableInfo};

/// The layout version, in the schema's `ddbstream_meta` table.
pub const POSTGRES_SCHEMA_VERSION: u32 = 1;
/// The schema the replica lives in unless told otherwise.
pub const DEFAULT_POSTGRES_SCHEMA: &str = "ddbstream";
/// Connections a replica opens at most unless told otherwise (scan segments and shards write
/// in parallel, each on its own connection).
pub const DEFAULT_POSTGRES_CONNECTIONS: usize = 4;

/// Marks a schema as ours (`ddbstream_meta.application`).
const APPLICATION: &str = "ddbstream";
/// The first key of every advisory lock the replica takes ("ddbs"), so its locks stay apart
/// from other applications' in the same database.
const LOCK_TAG: i32 = 0x6464_6273;
/// Columns of an items table that are not key attributes.
const RESERVED_COLUMNS: [&str; 3] = ["_item", "_sequence_number", "_updated_at"];
/// PostgreSQL truncates longer identifiers, which would make two names one.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// A table replica in a PostgreSQL database, and the checkpoint store its stream positions live
/// in — the counterpart of [`SqliteReplica`](super::SqliteReplica) for a database other services
/// can query.
///
/// Everything lives in one schema of the database (default `ddbstream`; several replicated
/// tables can share it, each with its own items table):
///
/// ```sql
/// -- One row per item. Key attributes are columns (S as text, N as numeric — exact, all 38
/// -- digits —, B as bytea; text when the source does not declare the type); `_item` is the
/// -- whole item as DynamoDB JSON ({"pk":{"S":"a"},"n":{"N":"7"}}): every type round-trips
/// -- exactly, numbers are strings of digits (query them as (_item->'n'->>'N')::numeric).
/// CREATE TABLE ddbstream."orders" (
///     "pk" text NOT NULL, "sk" numeric NOT NULL,   -- the table's key attributes
///     _item jsonb NOT NULL,
///     _sequence_number text,                      -- the stream record that wrote it; NULL when scanned
///     _updated_at timestamptz NOT NULL,
///     PRIMARY KEY ("pk", "sk"));
/// CREATE TABLE ddbstream.ddbstream_checkpoints (application text, stream_arn text,
///     shard_id text, state text, sequence_number text, since_ms bigint, updated_at timestamptz,
///     PRIMARY KEY (application, stream_arn, shard_id));
/// CREATE TABLE ddbstream.ddbstream_streams (application text, stream_arn text,
///     started_at_ms bigint, PRIMARY KEY (application, stream_arn));
/// CREATE TABLE ddbstream.ddbstream_replicas (table_name text PRIMARY KEY, stream_arn text,
///     view_type text, key_schema jsonb, items_table text UNIQUE, scan_state text, ...);
/// CREATE TABLE ddbstream.ddbstream_scan_segments (table_name text, segment integer,
///     resume_after jsonb, done boolean, items bigint, PRIMARY KEY (table_name, segment));
/// CREATE TABLE ddbstream.ddbstream_meta (name text PRIMARY KEY, value text);
/// -- application = ddbstream, schema_version = 1
/// ```
///
/// Every write — a scan page with its segment's resume key, a batch of changes with its shard's
/// checkpoint — is one transaction, committed before the call returns; a crash of the process,
/// the connection or the server at any moment leaves the last committed state. Writes to one
/// shard's position are serialized with an advisory lock, so a checkpoint never moves
/// backwards even when two writers race.
///
/// [`connect`](Self::connect) refuses, with [`Error::InvalidArgument`] and without writing
/// anything, a schema that holds another application's tables or a replica layout of another
/// version; [`bind`](ReplicaSink::bind) refuses a replica of another table or stream, and an
/// items table name taken by something else.
///
/// Connections are plain TCP or Unix sockets (no TLS yet: reach a remote server through a
/// tunnel or a local proxy).
#[derive(Clone)]
pub struct PostgresReplica {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: String,
    items_table: Option<String>,
    bound: StdMutex<Option<Bound>>,
}

impl std::fmt::Debug for PostgresReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReplica")
            .field("database", &self.inner.pool.shown)
            .field("schema", &self.inner.schema)
            .field("bound", &self.bound().map(|b| b.table_name))
            .finish_non_exhaustive()
    }
}

/// The table a replica holds, and its statements.
#[derive(Debug, Clone)]
struct Bound {
    table_name: String,
    stream_arn: String,
    key_schema: Vec<KeyAttribute>,
    /// `"schema"."table"`, quoted.
    items: String,
}

/// Configures a [`PostgresReplica`]; made by [`PostgresReplica::builder`].
#[derive(Debug, Clone)]
pub struct PostgresReplicaBuilder {
    url: String,
    schema: String,
    items_table: Option<String>,
    connections: usize,
}

impl PostgresReplicaBuilder {
    /// The schema the replica's tables live in (default [`DEFAULT_POSTGRES_SCHEMA`]); created
    /// when missing.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The name of the items table (default: the DynamoDB table's name).
    pub fn items_table(mut self, name: impl Into<String>) -> Self {
        self.items_table = Some(name.into());
        self
    }

    /// Open at most `n` connections (default [`DEFAULT_POSTGRES_CONNECTIONS`]; at least 1).
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n.max(1);
        self
    }

    /// Connect, and create the schema's bookkeeping tables if the schema is new or empty.
    ///
    /// Errors: a URL that does not parse or names no host, a bad schema or table name, a schema
    /// that holds another application's tables, or a replica layout of another version
    /// ([`Error::InvalidArgument`], nothing written); a server that cannot be reached
    /// ([`CheckpointErrorKind::Io`], retryable).
    pub async fn connect(self) -> Result<PostgresReplica> {
        self.open(true).await
    }

    /// Connect to a replica that exists, creating nothing: for readers of its positions (such
    /// as `ddbstream status`). A schema that holds no ddbstream replica is
    /// [`Error::InvalidArgument`]; otherwise as [`connect`](Self::connect).
    ///
    /// ```no_run
    /// # async fn f() -> dynamodb_stream::Result<()> {
    /// use dynamodb_stream::checkpoint::CheckpointStore;
    /// use dynamodb_stream::replicate::PostgresReplica;
    /// let replica = PostgresReplica::builder("postgres://reader@127.0.0.1/copies")
    ///     .open_existing()
    ///     .await?;
    /// let streams = replica.streams("replicate").await?;
    /// # Ok(()) }
    /// ```
    pub async fn open_existing(self) -> Result<PostgresReplica> {
        self.open(false).await
    }

    /// `create`: make the schema and its tables when missing.
    async fn open(self, create: bool) -> Result<PostgresReplica> {
        check_identifier("schema", &self.schema)?;
        if let Some(t) = &self.items_table {
            check_identifier("items table", t)?;
        }
        let mut config = Config::from_str(&self.url).map_err(|e| {
            Error::InvalidArgument(format!(
                "{} is not a PostgreSQL URL: {e}",
                redact(&self.url)
            ))
        })?;
        if config.get_hosts().is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} names no host",
                redact(&self.url)
            )));
        }
        if config.get_application_name().is_none() {
            config.application_name("ddbstream");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let pool = Pool {
            shown: shown(&config),
            config,
            idle: StdMutex::new(Vec::new()),
            permits: Semaphore::new(self.connections),
        };
        {
            let mut conn = pool.get().await?;
            prepare_schema(conn.client(), &self.schema, &pool.shown, create).await?;
            conn.done();
        }
        Ok(PostgresReplica {
            inner: Arc::new(Inner {
                pool,
                schema: self.schema,
                items_table: self.items_table,
                bound: StdMutex::new(None),
            }),
        })
    }
}

impl PostgresReplica {
    /// Connect to the database at `url` (`postgres://user:password@host:port/database`, or the
    /// `host=… dbname=…` form), with the replica in schema [`DEFAULT_POSTGRES_SCHEMA`].
    ///
    /// ```no_run
    /// # async fn f() -> dynamodb_stream::Result<()> {
    /// use dynamodb_stream::replicate::PostgresReplica;
    /// let sink = PostgresReplica::connect("postgres://replicator@127.0.0.1:5432/copies").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// A replica with a schema, items table name or connection count of your choice.
    ///
    /// ```no_run
    /// # async fn f() -> dynamodb_stream::Result<()> {
    /// use dynamodb_stream::replicate::PostgresReplica;
    /// let sink = PostgresReplica::builder("postgres://replicator@db.internal/copies")
    ///     .schema("dynamodb")
    ///     .items_table("orders_copy")
    ///     .connections(8)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(url: impl Into<String>) -> PostgresReplicaBuilder {
        PostgresReplicaBuilder {
            url: url.into(),
            schema: DEFAULT_POSTGRES_SCHEMA.to_owned(),
            items_table: None,
            connections: DEFAULT_POSTGRES_CONNECTIONS,
        }
    }

    /// The schema the replica lives in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The items table, schema-qualified and quoted as SQL needs it (`"ddbstream"."orders"`),
    /// once bound to a table.
    pub fn items_table(&self) -> Option<String> {
        self.bound().map(|b| b.items)
    }

    /// Every item of the replica (after [`bind`](ReplicaSink::bind)).
    pub async fn items(&self) -> Result<Vec<Item>> {
        let bound = self.require_bound("read items")?;
        let mut conn = self.inner.pool.get().await?;
        let rows = conn
            .client()
            .query(&format!("SELECT _item::text FROM {}", bound.items), &[])
            .await
            .map_err(|e| db("read items", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let json: String = row.try_get(0).map_err(|e| db("read items", e))?;
            out.push(parse_item(&json)?);
        }
        conn.done();
        Ok(out)
    }

    /// The item with these key attributes, if the replica holds it (after
    /// [`bind`](ReplicaSink::bind)).
    pub async fn get(&self, keys: &Item) -> Result<Option<Item>> {
        let bound = self.require_bound("read an item")?;
        let params = key_params(&bound.key_schema, keys)?;
        let sql = format!(
            "SELECT _item::text FROM {} WHERE {}",
            bound.items,
            key_predicate(&bound.key_schema, 1)
        );
        let mut conn = self.inner.pool.get().await?;
        let row = conn
            .client()
            .query_opt(&sql, &refs(&params))
            .await
            .map_err(|e| db("read an item", e))?;
        conn.done();
        match row {
            Some(row) => {
                let json: String = row.try_get(0).map_err(|e| db("read an item", e))?;
                Ok(Some(parse_item(&json)?))
            }
            None => Ok(None),
        }
    }

    fn bound(&self) -> Option<Bound> {
        self.inner
            .bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn require_bound(&self, what: &str) -> std::result::Result<Bound, CheckpointError> {
        self.bound().ok_or_else(|| {
            CheckpointError::new(
                CheckpointErrorKind::Refused,
                format!(
                    "replica database: {what}: the replica is not bound to a table yet (call bind)"
                ),
            )
        })
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{}", quote(&self.inner.schema), quote(name))
    }

    /// Refuse checkpoints of a stream other than the bound one.
    fn check_stream(&self, key: &StreamKey) -> std::result::Result<(), CheckpointError> {
        match self.bound() {
            Some(b) if b.stream_arn != key.stream_arn => Err(CheckpointError::new(
                CheckpointErrorKind::Mismatch,
                format!(
                    "the replica holds stream {}, not {}",
                    b.stream_arn, key.stream_arn
                ),
            )),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// A few connections, opened on demand and reopened after a failure.
struct Pool {
    config: Config,
    /// `postgres://user@host:port/database`, without the password, for messages.
    shown: String,
    idle: StdMutex<Vec<Client>>,
    permits: Semaphore,
}

/// A connection taken from the pool; it goes back when dropped (unless it broke). A dropped
/// transaction on it rolls back before the next user's statements: tokio-postgres queues the
/// `ROLLBACK` first.
struct Conn<'a> {
    client: Option<Client>,
    /// Set by [`done`](Self::done) once an operation succeeded: a connection whose operation
    /// failed or was abandoned midway is closed, not reused — it may be broken (a killed
    /// backend is only seen as closed a moment later), or still inside a transaction.
    healthy: bool,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl Conn<'_> {
    fn client(&mut self) -> &mut Client {
        // Only `Drop` takes it.
        self.client
            .as_mut()
            .expect("a pooled connection holds its client")
    }

    /// The operation succeeded: the connection may serve the next one.
    fn done(&mut self) {
        self.healthy = true;
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if self.healthy && !client.is_closed() {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(client);
            }
        }
    }
}

impl Pool {
    async fn get(&self) -> std::result::Result<Conn<'_>, CheckpointError> {
        let permit = self.permits.acquire().await.map_err(|e| {
            CheckpointError::new(CheckpointErrorKind::Io, "replica database: pool closed")
                .with_source(e)
        })?;
        let idle = loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some(c) if c.is_closed() => continue,
                other => break other,
            }
        };
        let client = match idle {
            Some(c) => c,
            None => self.open().await?,
        };
        Ok(Conn {
            client: Some(client),
            healthy: false,
            pool: self,
            _permit: permit,
        })
    }

    async fn open(&self) -> std::result::Result<Client, CheckpointError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| {
            // Refused, unreachable, timed out, or the server is starting: all may pass.
            CheckpointError::new(
                CheckpointErrorKind::Io,
                format!("cannot connect to {}: {}", self.shown, error_text(&e)),
            )
            .with_source(e)
        })?;
        let shown = self.shown.clone();
        tokio::spawn(async move {
            // The client sees the failure on its next call; this only tells the log why.
            if let Err(e) = connection.await {
                tracing::warn!(database = %shown, error = %e, "replica database connection lost");
            }
        });
        Ok(client)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Classify a failed statement: connection failures, server restarts and transient conflicts
/// (serialization failures, deadlocks, lock timeouts, too many connections) may pass — `Io`,
/// retryable; anything else the server said (permission denied, a missing table, a value it
/// cannot hold) is `Refused`.
fn db(what: &str, e: tokio_postgres::Error) -> CheckpointError {
    let transient = e.is_closed()
        || match e.code() {
            None => true, // no server answer: the connection broke
            Some(code) => {
                let c = code.code();
                c.starts_with("08") // connection exception
                    || c.starts_with("53") // insufficient resources
                    || c.starts_with("57P") // admin / crash shutdown, cannot connect now
                    || c == "40001" // serialization failure
                    || c == "40P01" // deadlock detected
                    || c == "55P03" // lock not available
                    || c == "57014" // query canceled
            }
        };
    let kind = if transient {
        CheckpointErrorKind::Io
    } else {
        CheckpointErrorKind::Refused
    };
    CheckpointError::new(
        kind,
        format!("replica database: {what}: {}", error_text(&e)),
    )
    .with_source(e)
}

/// The server's message when there is one (tokio-postgres' `Display` says only "db error").
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => d.message().to_owned(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn corrupt(what: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::new(
        CheckpointErrorKind::Corrupt,
        format!("replica database: {what}"),
    )
}

fn parse_item(json: &str) -> std::result::Result<Item, CheckpointError> {
    serde_json::from_str(json).map_err(|e| corrupt(format!("undecodable item {json:?}: {e}")))
}

fn item_json(item: &Item) -> std::result::Result<String, CheckpointError> {
    item_to_dynamodb_json(item).map_err(|e| {
        CheckpointError::new(
            CheckpointErrorKind::Refused,
            format!("replica database: encode item: {e}"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn check_identifier(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_BYTES || name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "{what} name {name:?} cannot be a PostgreSQL identifier (1 to \
             {MAX_IDENTIFIER_BYTES} bytes)"
        )));
    }
    Ok(())
}

/// `postgres://user@host:port/database` of a configuration, without its password.
fn shown(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = config
        .get_ports()
        .first()
        .map_or(String::new(), |p| format!(":{p}"));
    let user = config.get_user().map_or(String::new(), |u| format!("{u}@"));
    let db = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{host}{port}/{db}")
}

/// A URL for messages: the password replaced.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ if url.contains("password") => "the connection string".to_owned(),
        _ => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The schema
// ---------------------------------------------------------------------------------------------

/// An advisory lock key for `what`, held to the end of the transaction.
async fn lock(tx: &Transaction<'_>, what: &str) -> std::result::Result<(), CheckpointError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_TAG, &what],
    )
    .await
    .map_err(|e| db("lock", e))?;
    Ok(())
}

/// Check that `schema` is ours (or absent, or empty: then create our tables in it). Looks before
/// it writes: a schema of another application or version is left exactly as it was.
/// A reader found no replica where it was told to look.
fn no_replica(schema: &str, shown: &str) -> Error {
    Error::InvalidArgument(format!(
        "schema {schema:?} of {shown} holds no ddbstream replica (made by `ddbstream replicate \
         --to postgres://…`)"
    ))
}

/// Check the replica's schema, and with `create` make what is missing.
async fn prepare_schema(
    client: &mut Client,
    schema: &str,
    shown: &str,
    create: bool,
) -> Result<()> {
    let s = quote(schema);
    let tx = client
        .transaction()
        .await
        .map_err(|e| db("begin transaction", e))?;
    lock(&tx, &format!("schema {schema}")).await?;
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(|e| db("look for the schema", e))?
        .is_some();
    if exists {
        let meta: Option<String> = tx
            .query_one(
                "SELECT to_regclass($1)::text",
                &[&format!("{s}.ddbstream_meta")],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| db("look for the replica tables", e))?;
        if meta.is_some() {
            let rows = tx
                .query(&format!("SELECT name, value FROM {s}.ddbstream_meta"), &[])
                .await
                .map_err(|e| db("read the replica metadata", e))?;
            let mut values = BTreeMap::new();
            for row in rows {
                let name: String = row.try_get(0).map_err(|e| db("read metadata", e))?;
                let value: String = row.try_get(1).map_err(|e| db("read metadata", e))?;
                values.insert(name, value);
            }
            if values.get("application").map(String::as_str) != Some(APPLICATION) {
                return Err(foreign_schema(schema, shown));
            }
            let version = values.get("schema_version").cloned().unwrap_or_default();
            if version != POSTGRES_SCHEMA_VERSION.to_string() {
                return Err(Error::InvalidArgument(format!(
                    "schema {schema:?} of {shown} holds ddbstream replicas of layout version \
                     {version}; this build reads version {POSTGRES_SCHEMA_VERSION}"
                )));
            }
            // Ours, and current: nothing to write.
            tx.rollback().await.map_err(|e| db("end transaction", e))?;
            return Ok(());
        }
        if !create {
            return Err(no_replica(schema, shown));
        }
        let objects: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n
                           ON n.oid = c.relnamespace WHERE n.nspname = $1)
                      + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n
                           ON n.oid = p.pronamespace WHERE n.nspname = $1)",
                &[&schema],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| db("look into the schema", e))?;
        if objects > 0 {
            return Err(foreign_schema(schema, shown));
        }
    } else if !create {
        return Err(no_replica(schema, shown));
    } else {
        tx.batch_execute(&format!(
            "CREATE SCHEMA {s};
             COMMENT ON SCHEMA {s} IS 'ddbstream: replicas of DynamoDB tables';"
        ))
        .await
        .map_err(|e| db(&format!("create schema {schema:?}"), e))?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE {s}.ddbstream_meta (name text PRIMARY KEY, value text NOT NULL);
         CREATE TABLE {s}.ddbstream_replicas (
             table_name text PRIMARY KEY,
             stream_arn text NOT NULL,
             view_type text NOT NULL,
             key_schema jsonb NOT NULL,
             items_table text NOT NULL UNIQUE,
             scan_state text NOT NULL DEFAULT 'not_started'
                 CHECK (scan_state IN ('not_started', 'running', 'complete')),
             scan_total_segments integer,
             scan_items bigint,
             scan_started_at timestamptz,
             scan_completed_at timestamptz,
             stream_caught_up_at_ms bigint,
             created_at timestamptz NOT NULL DEFAULT now()
         );
         CREATE TABLE {s}.ddbstream_scan_segments (
             table_name text NOT NULL REFERENCES {s}.ddbstream_replicas ON DELETE CASCADE,
             segment integer NOT NULL,
             resume_after jsonb,
             done boolean NOT NULL DEFAULT false,
             items bigint NOT NULL DEFAULT 0,
             PRIMARY KEY (table_name, segment)
         );
         CREATE TABLE {s}.ddbstream_streams (
             application text NOT NULL,
             stream_arn text NOT NULL,
             started_at_ms bigint NOT NULL,
             PRIMARY KEY (application, stream_arn)
         );
         CREATE TABLE {s}.ddbstream_checkpoints (
             application text NOT NULL,
             stream_arn text NOT NULL,
             shard_id text NOT NULL,
             state text NOT NULL
                 CHECK (state IN ('latest', 'processed', 'ended', 'discovered')),
             sequence_number text,
             since_ms bigint,
             updated_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (application, stream_arn, shard_id)
         );
         INSERT INTO {s}.ddbstream_meta (name, value) VALUES
             ('application', '{APPLICATION}'),
             ('schema_version', '{POSTGRES_SCHEMA_VERSION}'),
             ('created_at', now()::text);"
    ))
    .await
    .map_err(|e| db("create the replica tables", e))?;
    tx.commit().await.map_err(|e| db("commit", e))?;
    Ok(())
}

fn foreign_schema(schema: &str, shown: &str) -> Error {
    Error::InvalidArgument(format!(
        "schema {schema:?} of {shown} holds another application's tables, not ddbstream \
         replicas: choose another schema"
    ))
}

fn check_key_names(key_schema: &[KeyAttribute]) -> Result<()> {
    for a in key_schema {
        if RESERVED_COLUMNS.contains(&a.name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "key attribute {:?} clashes with a column of the replica's items table",
                a.name
            )));
        }
        check_identifier("key attribute", &a.name)?;
    }
    Ok(())
}

fn column_type(a: &KeyAttribute) -> &'static str {
    match a.scalar_type {
        Some(ScalarType::N) => "numeric",
        Some(ScalarType::B) => "bytea",
        Some(ScalarType::S) | None => "text",
    }
}

/// The placeholder of key attribute `a` as parameter `$i`: numbers travel as text and become
/// `numeric` on the server (tokio-postgres has no exact decimal type of 38 digits).
fn placeholder(a: &KeyAttribute, i: usize) -> String {
    match a.scalar_type {
        Some(ScalarType::N) => format!("CAST(${i}::text AS numeric)"),
        Some(ScalarType::B) => format!("${i}::bytea"),
        Some(ScalarType::S) | None => format!("${i}::text"),
    }
}

/// `"pk" = $first AND "sk" = $first+1`.
fn key_predicate(key_schema: &[KeyAttribute], first: usize) -> String {
    key_schema
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{} = {}", quote(&a.name), placeholder(a, first + i)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

type Param = Box<dyn ToSql + Sync + Send>;

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The key attributes of `item` as statement parameters, in key schema order.
fn key_params(
    key_schema: &[KeyAttribute],
    item: &Item,
) -> std::result::Result<Vec<Param>, CheckpointError> {
    let mut out: Vec<Param> = Vec::with_capacity(key_schema.len());
    for a in key_schema {
        let value = item.get(&a.name);
        let param: Param = match (a.scalar_type, value) {
            (Some(ScalarType::S) | None, Some(AttributeValue::S(s))) => Box::new(s.clone()),
            (Some(ScalarType::N) | None, Some(AttributeValue::N(n))) => Box::new(n.clone()),
            (Some(ScalarType::B), Some(AttributeValue::B(b))) => Box::new(b.clone()),
            // Undeclared types (the simulator) become text; binary renders as base64.
            (None, Some(other)) => match attribute_to_json(other) {
                serde_json::Value::String(s) => Box::new(s),
                json => Box::new(json.to_string()),
            },
            (declared, found) => {
                return Err(CheckpointError::new(
                    CheckpointErrorKind::Refused,
                    format!(
                        "replica database: key attribute {:?} is {} in an item, the table \
                         declares {:?}",
                        a.name,
                        found.map_or("missing".to_owned(), |v| format!("{v:?}")),
                        declared
                    ),
                ))
            }
        };
        out.push(param);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Items and checkpoints inside a transaction
// ---------------------------------------------------------------------------------------------

/// Statements of one transaction on the items table.
struct ItemStatements {
    put: tokio_postgres::Statement,
    delete: tokio_postgres::Statement,
}

impl ItemStatements {
    async fn prepare(
        tx: &Transaction<'_>,
        bound: &Bound,
    ) -> std::result::Result<Self, CheckpointError> {
        let keys = &bound.key_schema;
        let n = keys.len();
        let columns: Vec<String> = keys.iter().map(|a| quote(&a.name)).collect();
        let values: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, a)| placeholder(a, i + 1))
            .collect();
        let put = format!(
            "INSERT INTO {items} ({columns}, _item, _sequence_number, _updated_at)
             VALUES ({values}, ${j}::text::jsonb, ${s}::text, now())
             ON CONFLICT ({columns}) DO UPDATE SET _item = excluded._item,
                 _sequence_number = excluded._sequence_number, _updated_at = excluded._updated_at",
            items = bound.items,
            columns = columns.join(", "),
            values = values.join(", "),
            j = n + 1,
            s = n + 2,
        );
        let delete = format!(
            "DELETE FROM {} WHERE {}",
            bound.items,
            key_predicate(keys, 1)
        );
        // Both in one round trip.
        let (put, delete) = futures_util::future::try_join(tx.prepare(&put), tx.prepare(&delete))
            .await
            .map_err(|e| db("prepare", e))?;
        Ok(Self { put, delete })
    }
}

/// One write of the items table: its statement and parameters.
struct ItemWrite {
    put: bool,
    params: Vec<Param>,
}

impl ItemWrite {
    fn put(
        key_schema: &[KeyAttribute],
        item: &Item,
        sequence_number: Option<&SequenceNumber>,
    ) -> std::result::Result<Self, CheckpointError> {
        let mut params = key_params(key_schema, &key_of(key_schema, item))?;
        params.push(Box::new(item_json(item)?));
        params.push(Box::new(sequence_number.map(|s| s.as_str().to_owned())));
        Ok(Self { put: true, params })
    }

    fn delete(
        key_schema: &[KeyAttribute],
        keys: &Item,
    ) -> std::result::Result<Self, CheckpointError> {
        Ok(Self {
            put: false,
            params: key_params(key_schema, &key_of(key_schema, keys))?,
        })
    }
}

/// Run the writes in order, pipelined (tokio-postgres sends statements in the order their
/// futures are first polled, and `try_join_all` polls in order).
async fn write_items(
    tx: &Transaction<'_>,
    statements: &ItemStatements,
    writes: &[ItemWrite],
) -> std::result::Result<(), CheckpointError> {
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = writes.iter().map(|w| refs(&w.params)).collect();
    try_join_all(writes.iter().zip(&params).map(|(w, p)| {
        let statement = if w.put {
            &statements.put
        } else {
            &statements.delete
        };
        tx.execute(statement, p)
    }))
    .await
    .map_err(|e| db("write items", e))?;
    Ok(())
}

impl PostgresReplica {
    /// Serialize every writer of one shard's position: the stored position is read, compared and
    /// replaced under this lock, so racing writers cannot move it backwards.
    async fn lock_shard(
        tx: &Transaction<'_>,
        key: &StreamKey,
        shard_id: &str,
    ) -> std::result::Result<(), CheckpointError> {
        lock(
            tx,
            &format!("shard {}\n{}\n{shard_id}", key.application, key.stream_arn),
        )
        .await
    }

    async fn read_checkpoint(
        &self,
        tx: &Transaction<'_>,
        key: &StreamKey,
        shard_id: &str,
    ) -> std::result::Result<Option<ShardCheckpoint>, CheckpointError> {
        let row = tx
            .query_opt(
                &format!(
                    "SELECT state, sequence_number, since_ms FROM {}
                     WHERE application = $1 AND stream_arn = $2 AND shard_id = $3",
                    self.table("ddbstream_checkpoints")
                ),
                &[&key.application, &key.stream_arn, &shard_id],
            )
            .await
            .map_err(|e| db("read checkpoint", e))?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get(0).map_err(|e| db("read checkpoint", e))?;
        let seq: Option<String> = row.try_get(1).map_err(|e| db("read checkpoint", e))?;
        let since: Option<i64> = row.try_get(2).map_err(|e| db("read checkpoint", e))?;
        to_checkpoint(shard_id, &state, seq, since).map(Some)
    }

    /// Store `cp` for the shard if it moves the shard forward (the caller holds the shard's
    /// lock); returns whether it did.
    async fn write_checkpoint(
        &self,
        tx: &Transaction<'_>,
        key: &StreamKey,
        shard_id: &str,
        cp: &ShardCheckpoint,
    ) -> std::result::Result<bool, CheckpointError> {
        let old = self.read_checkpoint(tx, key, shard_id).await?;
        if !advances(old.as_ref(), cp) {
            return Ok(false);
        }
        let ms = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
        let (state, seq, since): (&str, Option<String>, Option<i64>) = match cp {
            ShardCheckpoint::Ended => ("ended", None, None),
            ShardCheckpoint::Discovered { from, since_ms } => (
                "discovered",
                from.as_ref().map(|s| s.as_str().to_owned()),
                Some(ms(*since_ms)),
            ),
            ShardCheckpoint::Latest { since_ms } => ("latest", None, Some(ms(*since_ms))),
            ShardCheckpoint::Processed { sequence_number } => {
                ("processed", Some(sequence_number.as_str().to_owned()), None)
            }
        };
        tx.execute(
            &format!(
                "INSERT INTO {} AS c
                     (application, stream_arn, shard_id, state, sequence_number, since_ms,
                      updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, now())
                 ON CONFLICT (application, stream_arn, shard_id) DO UPDATE SET
                     state = excluded.state, sequence_number = excluded.sequence_number,
                     since_ms = excluded.since_ms, updated_at = excluded.updated_at",
                self.table("ddbstream_checkpoints")
            ),
            &[
                &key.application,
                &key.stream_arn,
                &shard_id,
                &state,
                &seq,
                &since,
            ],
        )
        .await
        .map_err(|e| db("write checkpoint", e))?;
        Ok(true)
    }

    async fn record_start(
        &self,
        tx: &Transaction<'_>,
        key: &StreamKey,
        started_at_ms: u64,
    ) -> std::result::Result<(), CheckpointError> {
        tx.execute(
            &format!(
                "INSERT INTO {} (application, stream_arn, started_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                self.table("ddbstream_streams")
            ),
            &[
                &key.application,
                &key.stream_arn,
                &i64::try_from(started_at_ms).unwrap_or(i64::MAX),
            ],
        )
        .await
        .map_err(|e| db("write stream start", e))?;
        Ok(())
    }

    async fn scan_progress(
        &self,
        tx: &Transaction<'_>,
        table_name: &str,
    ) -> std::result::Result<ScanProgress, CheckpointError> {
        let row = tx
            .query_one(
                &format!(
                    "SELECT scan_state, scan_total_segments, scan_items FROM {}
                     WHERE table_name = $1",
                    self.table("ddbstream_replicas")
                ),
                &[&table_name],
            )
            .await
            .map_err(|e| db("read scan state", e))?;
        let state: String = row.try_get(0).map_err(|e| db("read scan state", e))?;
        let total: Option<i32> = row.try_get(1).map_err(|e| db("read scan state", e))?;
        let items: Option<i64> = row.try_get(2).map_err(|e| db("read scan state", e))?;
        Ok(match state.as_str() {
            "complete" => ScanProgress::Complete {
                items: items.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            },
            "running" => {
                let rows = tx
                    .query(
                        &format!(
                            "SELECT segment, resume_after::text, done, items FROM {}
                             WHERE table_name = $1 ORDER BY segment",
                            self.table("ddbstream_scan_segments")
                        ),
                        &[&table_name],
                    )
                    .await
                    .map_err(|e| db("read scan state", e))?;
                let mut segments = Vec::with_capacity(rows.len());
                for row in rows {
                    let segment: i32 = row.try_get(0).map_err(|e| db("read scan state", e))?;
                    let resume: Option<String> =
                        row.try_get(1).map_err(|e| db("read scan state", e))?;
                    let done: bool = row.try_get(2).map_err(|e| db("read scan state", e))?;
                    let items: i64 = row.try_get(3).map_err(|e| db("read scan state", e))?;
                    segments.push(SegmentProgress {
                        segment: u32::try_from(segment).unwrap_or(0),
                        // An unreadable resume key restarts that segment: pages are upserts.
                        resume_after: resume.and_then(|j| serde_json::from_str(&j).ok()),
                        done,
                        items: u64::try_from(items).unwrap_or(0),
                    });
                }
                ScanProgress::Running {
                    total_segments: total.and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
                    segments,
                }
            }
            _ => ScanProgress::NotStarted,
        })
    }

    /// Bind inside `tx`: check an existing registration, or create the items table.
    async fn bind_in(
        &self,
        tx: &Transaction<'_>,
        table: &TableInfo,
    ) -> Result<(Bound, ScanProgress)> {
        let shown = &self.inner.pool.shown;
        let schema = &self.inner.schema;
        let replicas = self.table("ddbstream_replicas");
        lock(tx, &format!("schema {schema}")).await?;
        let wanted_items = self
            .inner
            .items_table
            .clone()
            .unwrap_or_else(|| table.table_name.clone());
        check_identifier("items table", &wanted_items)?;
        let registered = tx
            .query_opt(
                &format!(
                    "SELECT stream_arn, key_schema::text, items_table FROM {replicas}
                     WHERE table_name = $1"
                ),
                &[&table.table_name],
            )
            .await
            .map_err(|e| db("read the replica registration", e))?;
        let owner = tx
            .query_opt(
                &format!("SELECT table_name FROM {replicas} WHERE items_table = $1"),
                &[&wanted_items],
            )
            .await
            .map_err(|e| db("read the replica registration", e))?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()
            .map_err(|e| db("read the replica registration", e))?;
        if let Some(row) = registered {
            let stream_arn: String = row.try_get(0).map_err(|e| db("read registration", e))?;
            let key_schema: String = row.try_get(1).map_err(|e| db("read registration", e))?;
            let items_table: String = row.try_get(2).map_err(|e| db("read registration", e))?;
            let key_schema: Vec<KeyAttribute> = serde_json::from_str(&key_schema)
                .map_err(|e| corrupt(format!("unreadable key schema {key_schema:?}: {e}")))?;
            let place = format!("{}.{}", quote(schema), quote(&items_table));
            if self.inner.items_table.is_some() && items_table != wanted_items {
                return Err(Error::InvalidArgument(format!(
                    "{shown} replicates table {:?} into {place}, not {}.{}",
                    table.table_name,
                    quote(schema),
                    quote(&wanted_items)
                )));
            }
            if stream_arn != table.stream_arn {
                return Err(Error::InvalidArgument(format!(
                    "{place} of {shown} replicates stream {stream_arn} of table {:?}, but the \
                     table now streams {} (was the stream disabled and enabled again?): use \
                     another schema",
                    table.table_name, table.stream_arn
                )));
            }
            if !same_key_schema(&key_schema, &table.key_schema) {
                return Err(Error::InvalidArgument(format!(
                    "{place} of {shown} holds table {:?} with another key schema: use another \
                     schema",
                    table.table_name
                )));
            }
            self.check_items_layout(tx, &items_table, &key_schema)
                .await?;
            let bound = Bound {
                table_name: table.table_name.clone(),
                stream_arn,
                items: self.table(&items_table),
                key_schema,
            };
            let progress = self.scan_progress(tx, &table.table_name).await?;
            return Ok((bound, progress));
        }
        let place = format!("{}.{}", quote(schema), quote(&wanted_items));
        if let Some(other) = owner {
            return Err(Error::InvalidArgument(format!(
                "{place} of {shown} is a replica of table {other:?}, not {:?}: choose another \
                 items table or schema",
                table.table_name
            )));
        }
        let taken: Option<String> = tx
            .query_one(
                "SELECT to_regclass($1)::text",
                &[&self.table(&wanted_items)],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| db("look for the items table", e))?;
        if taken.is_some() {
            return Err(Error::InvalidArgument(format!(
                "{place} of {shown} exists and is not a ddbstream replica: choose another items \
                 table or schema"
            )));
        }
        check_key_names(&table.key_schema)?;
        let columns: Vec<String> = table
            .key_schema
            .iter()
            .map(|a| format!("{} {} NOT NULL", quote(&a.name), column_type(a)))
            .collect();
        let key: Vec<String> = table.key_schema.iter().map(|a| quote(&a.name)).collect();
        let items = self.table(&wanted_items);
        tx.batch_execute(&format!(
            "CREATE TABLE {items} (
                 {columns},
                 _item jsonb NOT NULL,
                 _sequence_number text,
                 _updated_at timestamptz NOT NULL,
                 PRIMARY KEY ({key})
             );",
            columns = columns.join(", "),
            key = key.join(", "),
        ))
        .await
        .map_err(|e| db("create the items table", e))?;
        let key_schema = serde_json::to_string(&table.key_schema).map_err(|e| {
            CheckpointError::new(
                CheckpointErrorKind::Refused,
                format!("replica database: encode key schema: {e}"),
            )
        })?;
        tx.execute(
            &format!(
                "INSERT INTO {replicas} (table_name, stream_arn, view_type, key_schema,
                     items_table)
                 VALUES ($1, $2, $3, $4::text::jsonb, $5)"
            ),
            &[
                &table.table_name,
                &table.stream_arn,
                &table.view_type.map(|v| v.as_str()).unwrap_or(""),
                &key_schema,
                &wanted_items,
            ],
        )
        .await
        .map_err(|e| db("register the replica", e))?;
        Ok((
            Bound {
                table_name: table.table_name.clone(),
                stream_arn: table.stream_arn.clone(),
                key_schema: table.key_schema.clone(),
                items,
            },
            ScanProgress::NotStarted,
        ))
    }

    /// The items table still has the columns the replica writes.
    async fn check_items_layout(
        &self,
        tx: &Transaction<'_>,
        items_table: &str,
        key_schema: &[KeyAttribute],
    ) -> Result<()> {
        let rows = tx
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = $2",
                &[&self.inner.schema, &items_table],
            )
            .await
            .map_err(|e| db("read the items table's columns", e))?;
        let mut columns = BTreeMap::new();
        for row in rows {
            let name: String = row.try_get(0).map_err(|e| db("read columns", e))?;
            let ty: String = row.try_get(1).map_err(|e| db("read columns", e))?;
            columns.insert(name, ty);
        }
        let mut expected: Vec<(&str, &str)> = key_schema
            .iter()
            .map(|a| (a.name.as_str(), column_type(a)))
            .collect();
        expected.extend([
            ("_item", "jsonb"),
            ("_sequence_number", "text"),
            ("_updated_at", "timestamp with time zone"),
        ]);
        for (name, ty) in expected {
            if columns.get(name).map(String::as_str) != Some(ty) {
                return Err(Error::InvalidArgument(format!(
                    "{}.{} of {} does not have the layout ddbstream made (column {name:?} of \
                     type {ty} is missing or changed): restore it or use another schema",
                    quote(&self.inner.schema),
                    quote(items_table),
                    self.inner.pool.shown
                )));
            }
        }
        Ok(())
    }
}

fn to_checkpoint(
    shard_id: &str,
    state: &str,
    seq: Option<String>,
    since: Option<i64>,
) -> std::result::Result<ShardCheckpoint, CheckpointError> {
    let parse = |raw: String| {
        raw.parse::<SequenceNumber>().map_err(|e| {
            corrupt(format!(
                "shard {shard_id}: bad sequence number {raw:?}: {e}"
            ))
        })
    };
    let since = since.and_then(|s| u64::try_from(s).ok());
    match state {
        "ended" => Ok(ShardCheckpoint::Ended),
        "discovered" => Ok(ShardCheckpoint::Discovered {
            since_ms: since.unwrap_or(0),
            from: seq.map(parse).transpose()?,
        }),
        "latest" => Ok(ShardCheckpoint::Latest {
            since_ms: since.ok_or_else(|| {
                corrupt(format!("shard {shard_id}: LATEST bookmark without a time"))
            })?,
        }),
        "processed" => Ok(ShardCheckpoint::Processed {
            sequence_number: parse(seq.unwrap_or_default())?,
        }),
        other => Err(corrupt(format!(
            "shard {shard_id}: unknown state {other:?}"
        ))),
    }
}

fn now_ms() -> u64 {
    crate::record::system_time_to_millis(std::time::SystemTime::now())
}

// ---------------------------------------------------------------------------------------------
// The traits
// ---------------------------------------------------------------------------------------------

impl CheckpointStore for PostgresReplica {
    fn load(
        &self,
        key: &StreamKey,
    ) -> BoxFuture<'_, std::result::Result<Option<StreamCheckpoints>, CheckpointError>> {
        let key = key.clone();
        Box::pin(async move {
            self.check_stream(&key)?;
            let mut conn = self.inner.pool.get().await?;
            // One snapshot for the start time and the positions.
            let tx = conn
                .client()
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(|e| db("begin transaction", e))?;
            let started = tx
                .query_opt(
                    &format!(
                        "SELECT started_at_ms FROM {} WHERE application = $1 AND stream_arn = $2",
                        self.table("ddbstream_streams")
                    ),
                    &[&key.application, &key.stream_arn],
                )
                .await
                .map_err(|e| db("read checkpoints", e))?;
            let Some(started) = started else {
                tx.commit().await.map_err(|e| db("end transaction", e))?;
                conn.done();
                return Ok(None);
            };
            let started: i64 = started.try_get(0).map_err(|e| db("read checkpoints", e))?;
            let rows = tx
                .query(
                    &format!(
                        "SELECT shard_id, state, sequence_number, since_ms FROM {}
                         WHERE application = $1 AND stream_arn = $2",
                        self.table("ddbstream_checkpoints")
                    ),
                    &[&key.application, &key.stream_arn],
                )
                .await
                .map_err(|e| db("read checkpoints", e))?;
            let mut shards = BTreeMap::new();
            for row in rows {
                let shard: String = row.try_get(0).map_err(|e| db("read checkpoints", e))?;
                let state: String = row.try_get(1).map_err(|e| db("read checkpoints", e))?;
                let seq: Option<String> = row.try_get(2).map_err(|e| db("read checkpoints", e))?;
                let since: Option<i64> = row.try_get(3).map_err(|e| db("read checkpoints", e))?;
                let cp = to_checkpoint(&shard, &state, seq, since)?;
                shards.insert(shard, cp);
            }
            tx.commit().await.map_err(|e| db("end transaction", e))?;
            conn.done();
            Ok(Some(StreamCheckpoints {
                started_at_ms: u64::try_from(started).unwrap_or(0),
                shards,
            }))
        })
    }

    fn save(
        &self,
        key: &StreamKey,
        started_at_ms: u64,
        shards: Vec<(String, ShardCheckpoint)>,
    ) -> BoxFuture<'_, std::result::Result<(), CheckpointError>> {
        let key = key.clone();
        Box::pin(async move {
            self.check_stream(&key)?;
            let mut shards = shards;
            // Locks in one order: two saves of overlapping shards cannot deadlock.
            shards.sort_by(|a, b| a.0.cmp(&b.0));
            let mut conn = self.inner.pool.get().await?;
            let tx = conn
                .client()
                .transaction()
                .await
                .map_err(|e| db("begin transaction", e))?;
            self.record_start(&tx, &key, started_at_ms).await?;
            for (shard, cp) in &shards {
                Self::lock_shard(&tx, &key, shard).await?;
                self.write_checkpoint(&tx, &key, shard, cp).await?;
            }
            tx.commit().await.map_err(|e| db("commit", e))?;
            conn.done();
            Ok(())
        })
    }

    fn streams(
        &self,
        application: &str,
    ) -> BoxFuture<'_, std::result::Result<Vec<String>, CheckpointError>> {
        let application = application.to_owned();
        Box::pin(async move {
            let mut conn = self.inner.pool.get().await?;
            let rows = conn
                .client()
                .query(
                    &format!(
                        "SELECT stream_arn FROM {} WHERE application = $1 ORDER BY stream_arn",
                        self.table("ddbstream_streams")
                    ),
                    &[&application],
                )
                .await
                .map_err(|e| db("read streams", e))?;
            let streams = rows
                .iter()
                .map(|r| r.try_get(0).map_err(|e| db("read streams", e)))
                .collect::<std::result::Result<Vec<String>, _>>()?;
            conn.done();
            Ok(streams)
        })
    }
}

impl ReplicaSink for PostgresReplica {
    fn bind(&self, table: &TableInfo) -> BoxFuture<'_, Result<ScanProgress>> {
        let table = table.clone();
        Box::pin(async move {
            if let Some(bound) = self.bound() {
                if bound.table_name != table.table_name {
                    return Err(Error::InvalidArgument(format!(
                        "this PostgresReplica holds table {:?}, not {:?}: connect another one \
                         for each replicated table",
                        bound.table_name, table.table_name
                    )));
                }
            }
            let mut conn = self.inner.pool.get().await?;
            let tx = conn
                .client()
                .transaction()
                .await
                .map_err(|e| db("begin transaction", e))?;
            // A refusal returns before the commit: the dropped transaction rolls back.
            let (bound, progress) = self.bind_in(&tx, &table).await?;
            tx.commit().await.map_err(|e| db("commit", e))?;
            conn.done();
            *self.inner.bound.lock().unwrap_or_else(|p| p.into_inner()) = Some(bound);
            Ok(progress)
        })
    }

    fn begin_scan(&self, total_segments: u32) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let bound = self.require_bound("begin scan")?;
            let mut conn = self.inner.pool.get().await?;
            let tx = conn
                .client()
                .transaction()
                .await
                .map_err(|e| db("begin transaction", e))?;
            let segments = self.table("ddbstream_scan_segments");
            tx.execute(
                &format!("DELETE FROM {segments} WHERE table_name = $1"),
                &[&bound.table_name],
            )
            .await
            .map_err(|e| db("begin scan", e))?;
            let total = i32::try_from(total_segments).unwrap_or(i32::MAX);
            tx.execute(
                &format!(
                    "INSERT INTO {segments} (table_name, segment)
                     SELECT $1, s FROM generate_series(0, $2 - 1) AS s"
                ),
                &[&bound.table_name, &total],
            )
            .await
            .map_err(|e| db("begin scan", e))?;
            tx.execute(
                &format!(
                    "UPDATE {} SET scan_state = 'running', scan_total_segments = $2,
                         scan_started_at = now(), scan_completed_at = NULL, scan_items = NULL
                     WHERE table_name = $1",
                    self.table("ddbstream_replicas")
                ),
                &[&bound.table_name, &total],
            )
            .await
            .map_err(|e| db("begin scan", e))?;
            tx.commit().await.map_err(|e| db("commit", e))?;
            conn.done();
            Ok(())
        })
    }

    fn write_scan_page(
        &self,
        segment: u32,
        items: Vec<Item>,
        resume_after: Option<Item>,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let bound = self.require_bound("write items")?;
            let writes = items
                .iter()
                .map(|item| ItemWrite::put(&bound.key_schema, item, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let resume = resume_after.as_ref().map(item_json).transpose()?;
            let mut conn = self.inner.pool.get().await?;
            let tx = conn
                .client()
                .transaction()
                .await
                .map_err(|e| db("begin transaction", e))?;
            if !writes.is_empty() {
                let statements = ItemStatements::prepare(&tx, &bound).await?;
                write_items(&tx, &statements, &writes).await?;
            }
            let updated = tx
                .execute(
                    &format!(
                        "UPDATE {} SET resume_after = $3::text::jsonb, done = $4,
                             items = items + $5
                         WHERE table_name = $1 AND segment = $2",
                        self.table("ddbstream_scan_segments")
                    ),
                    &[
                        &bound.table_name,
                        &i32::try_from(segment).unwrap_or(i32::MAX),
                        &resume,
                        &resume.is_none(),
                        &i64::try_from(items.len()).unwrap_or(i64::MAX),
                    ],
                )
                .await
                .map_err(|e| db("record scan progress", e))?;
            if updated != 1 {
                return Err(CheckpointError::new(
                    CheckpointErrorKind::Refused,
                    format!(
                        "replica database: record scan progress: no scan segment {segment} \
                         (begin_scan not called?)"
                    ),
                )
                .into());
            }
            tx.commit().await.map_err(|e| db("commit", e))?;
            conn.done();
            Ok(())
        })
    }

    fn complete_scan(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let bound = self.require_bound("complete scan")?;
            let mut conn = self.inner.pool.get().await?;
            conn.client()
                .execute(
                    &format!(
                        "UPDATE {} SET scan_state = 'complete', scan_completed_at = now(),
                             scan_items = (SELECT coalesce(sum(items), 0) FROM {}
                                           WHERE table_name = $1)
                         WHERE table_name = $1",
                        self.table("ddbstream_replicas"),
                        self.table("ddbstream_scan_segments")
                    ),
                    &[&bound.table_name],
                )
                .await
                .map_err(|e| db("complete scan", e))?;
            conn.done();
            Ok(())
        })
    }

    fn reset(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let bound = self.require_bound("reset")?;
            let mut conn = self.inner.pool.get().await?;
            let tx = conn
                .client()
                .transaction()
                .await
                .map_err(|e| db("begin transaction", e))?;
            tx.batch_execute(&format!("DELETE FROM {}", bound.items))
                .await
                .map_err(|e| db("reset", e))?;
            for (table, column) in [
                ("ddbstream_scan_segments", "table_name"),
                ("ddbstream_checkpoints", "stream_arn"),
                ("ddbstream_streams", "stream_arn"),
            ] {
                let value = if column == "table_name" {
                    &bound.table_name
                } else {
                    &bound.stream_arn
                };
                tx.execute(
                    &format!("DELETE FROM {} WHERE {column} = $1", self.table(table)),
                    &[value],
                )
                .await
                .map_err(|e| db("reset", e))?;
            }
            tx.execute(
                &format!(
                    "UPDATE {} SET scan_state = 'not_started', scan_total_segments = NULL,
                         scan_items = NULL, scan_started_at = NULL, scan_completed_at = NULL,
                         stream_caught_up_at_ms = NULL
                     WHERE table_name = $1",
                    self.table("ddbstream_replicas")
                ),
                &[&bound.table_name],
            )
            .await
            .map_err(|e| db("reset", e))?;
            tx.commit().await.map_err(|e| db("commit", e))?;
            conn.done();
            Ok(())
        })
    }

    fn stream_caught_up_at(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        Box::pin(async move {
            let bound = self.require_bound("read the stream catch-up time")?;
            let mut conn = self.inner.pool.get().await?;
            let at: Option<i64> = conn
                .client()
                .query_one(
                    &format!(
                        "SELECT stream_caught_up_at_ms FROM {} WHERE table_name = $1",
                        self.table("ddbstream_replicas")
                    ),
                    &[&bound.table_name],
                )
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| db("read the stream catch-up time", e))?;
            conn.done();
            Ok(at.and_then(|t| u64::try_from(t).ok()))
        })
    }

    fn record_stream_caught_up(&self, at_ms: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let bound = self.require_bound("record the stream catch-up time")?;
            let mut conn = self.inner.pool.get().await?;
            conn.client()
                .execute(
                    &format!(
                        "UPDATE {} SET stream_caught_up_at_ms =
                             greatest(coalesce(stream_caught_up_at_ms, 0), $2)
                         WHERE table_name = $1",
                        self.table("ddbstream_replicas")
                    ),
                    &[&bound.table_name, &i64::try_from(at_ms).unwrap_or(i64::MAX)],
                )
                .await
                .map_err(|e| db("record the stream catch-up time", e))?;
            conn.done();
            Ok(())
        })
    }

    fn apply(
        &self,
        key: &StreamKey,
        shard_id: &str,
        changes: Vec<SequencedChange>,
        through: SequenceNumber,
    ) -> BoxFuture<'_, Result<usize>> {
        let key = key.clone();
        let shard_id = shard_id.to_owned();
        Box::pin(async move {
            self.check_stream(&key)?;
            let bound = self.require_bound("apply changes")?;
            let mut conn = self.inner.pool.get().await?;
            let tx = conn
                .client()
                .transaction()
                .await
                .map_err(|e| db("begin transaction", e))?;
            Self::lock_shard(&tx, &key, &shard_id).await?;
            let stored = self.read_checkpoint(&tx, &key, &shard_id).await?;
            let after = match &stored {
                Some(ShardCheckpoint::Ended) => {
                    tx.rollback().await.map_err(|e| db("end transaction", e))?;
                    conn.done();
                    return Ok(0);
                }
                Some(ShardCheckpoint::Processed { sequence_number }) => Some(sequence_number),
                _ => None,
            };
            let writes = changes
                .iter()
                .filter(|c| after.is_none_or(|a| &c.sequence_number > a))
                .map(|c| match &c.change {
                    ItemChange::Put { item, .. } => {
                        ItemWrite::put(&bound.key_schema, item, Some(&c.sequence_number))
                    }
                    ItemChange::Delete { keys } => ItemWrite::delete(&bound.key_schema, keys),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            if !writes.is_empty() {
                let statements = ItemStatements::prepare(&tx, &bound).await?;
                write_items(&tx, &statements, &writes).await?;
            }
            // A replayed batch must still leave a start time, so a restart resumes instead of
            // starting afresh.
            self.record_start(&tx, &key, now_ms()).await?;
            self.write_checkpoint(
                &tx,
                &key,
                &shard_id,
                &ShardCheckpoint::Processed {
                    sequence_number: through,
                },
            )
            .await?;
            tx.commit().await.map_err(|e| db("commit", e))?;
            conn.done();
            Ok(writes.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("host=db password=s3cret"), "the connection string");
        let config = Config::from_str("postgres://app:s3cret@db:5433/x").expect("config");
        assert_eq!(shown(&config), "postgres://app@db:5433/x");
    }

    #[test]
    fn numbers_are_cast_on_the_server() {
        let keys = [
            KeyAttribute {
                name: "pk".into(),
                role: super::super::KeyRole::Partition,
                scalar_type: Some(ScalarType::S),
            },
            KeyAttribute {
                name: "n\"x".into(),
                role: super::super::KeyRole::Sort,
                scalar_type: Some(ScalarType::N),
            },
        ];
        assert_eq!(
            key_predicate(&keys, 3),
            "\"pk\" = $3::text AND \"n\"\"x\" = CAST($4::text AS numeric)"
        );
    }
}
