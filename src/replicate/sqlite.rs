//! The SQLite replica: one file holding a table's items, the stream checkpoints they reflect,
//! and the scan's progress.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::checkpoint::{CheckpointStore, ShardCheckpoint, StreamCheckpoints, StreamKey};
use crate::error::{CheckpointError, CheckpointErrorKind, Error, Result, RuntimeError};
use crate::record::{item_key_string, AttributeValue, Item, SequenceNumber};
use crate::source::BoxFuture;

use super::sink::{
    advances, item_to_dynamodb_json, same_key_schema, ItemChange, ReplicaSink, ScanProgress,
    SegmentProgress, SequencedChange,
};
use super::source::key_of;
use super::{KeyAttribute, ScalarType, TableInfo};

/// Marks the file as a ddbstream replica (SQLite's `application_id` header field, "ddbs").
const APPLICATION_ID: i32 = 0x6464_6273;
/// The layout version, in `PRAGMA user_version` and the `meta` table.
const SCHEMA_VERSION: i32 = 2;
/// Columns of `items` that are not key attributes.
const RESERVED_COLUMNS: [&str; 4] = ["_key", "_item", "_sequence_number", "_updated_at_ms"];

/// A table replica in one SQLite file, and the checkpoint store its stream positions live in.
///
/// Layout (schema version 1; the file is marked with `PRAGMA application_id = 0x64646273`):
///
/// ```sql
/// -- One row per item. Key attributes are columns (S as TEXT, B as BLOB, N as INTEGER when it
/// -- fits 64 bits and as TEXT otherwise, so 38-digit numbers keep every digit); `_item` is the
/// -- whole item as DynamoDB JSON ({"pk":{"S":"a"},"n":{"N":"7"}}), which round-trips exactly.
/// CREATE TABLE items (
///     _key TEXT PRIMARY KEY,        -- the key as `item_key_string` renders it: pk="a"|sk=7
///     "pk" TEXT, "sk",              -- the table's key attributes
///     _item TEXT NOT NULL,
///     _sequence_number TEXT,        -- the stream record that wrote it; NULL when scanned
///     _updated_at_ms INTEGER NOT NULL
/// ) WITHOUT ROWID;
/// CREATE TABLE checkpoints (
///     application TEXT, stream_arn TEXT, shard_id TEXT,
///     state TEXT CHECK (state IN ('latest', 'processed', 'ended', 'discovered')),
///     sequence_number TEXT,         -- as DynamoDB sent it
///     sequence_key TEXT,            -- zero-padded to 40 digits: compares numerically as text
///     since_ms INTEGER,             -- the LATEST bookmark time
///     updated_at_ms INTEGER,
///     PRIMARY KEY (application, stream_arn, shard_id)
/// ) WITHOUT ROWID;
/// CREATE TABLE streams (application TEXT, stream_arn TEXT, started_at_ms INTEGER,
///     PRIMARY KEY (application, stream_arn)) WITHOUT ROWID;
/// CREATE TABLE scan_segments (segment INTEGER PRIMARY KEY, resume_after TEXT,
///     done INTEGER, items INTEGER);
/// CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
/// -- schema_version, table_name, stream_arn, view_type, key_schema (JSON), created_at_ms,
/// -- scan_state (not_started | running | complete), scan_total_segments, scan_started_at_ms,
/// -- scan_completed_at_ms, scan_items
/// ```
///
/// The file is in WAL mode with `synchronous = FULL`: every transaction — a scan page, a batch
/// of changes with its checkpoint — is durable when it returns, and a crash at any moment leaves
/// the last committed state. Other processes may read it while a replicator writes (WAL
/// readers see committed snapshots); only one process may write.
///
/// Opening a file that is not a SQLite database, a SQLite database of another application, or
/// (at [`bind`](ReplicaSink::bind)) a replica of another table or stream fails with
/// [`Error::InvalidArgument`] and changes nothing in the file.
#[derive(Debug, Clone)]
pub struct SqliteReplica {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    bound: Option<Bound>,
}

/// The table a replica holds.
#[derive(Debug, Clone)]
struct Bound {
    table_name: String,
    stream_arn: String,
    key_schema: Vec<KeyAttribute>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn io(what: &str, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::new(
        CheckpointErrorKind::Io,
        format!("replica database: {what}: {e}"),
    )
}

fn corrupt(what: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::new(
        CheckpointErrorKind::Corrupt,
        format!("replica database: {what}"),
    )
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An item as DynamoDB JSON with sorted attribute names (stable bytes for equal items).
fn item_json(item: &Item) -> std::result::Result<String, CheckpointError> {
    item_to_dynamodb_json(item).map_err(|e| io("encode item", e))
}

fn parse_item(json: &str) -> std::result::Result<Item, CheckpointError> {
    serde_json::from_str(json).map_err(|e| corrupt(format!("undecodable item {json:?}: {e}")))
}

/// A key attribute as a column value.
fn key_column(value: Option<&AttributeValue>) -> Value {
    match value {
        Some(AttributeValue::S(s)) => Value::Text(s.clone()),
        Some(AttributeValue::N(n)) => match n.parse::<i64>() {
            // Only when the digits are exactly the integer's: "007" or "1e3" stay text.
            Ok(i) if i.to_string() == *n => Value::Integer(i),
            _ => Value::Text(n.clone()),
        },
        Some(AttributeValue::B(b)) => Value::Blob(b.clone()),
        Some(other) => Value::Text(crate::record::attribute_to_json(other).to_string()),
        None => Value::Null,
    }
}

/// A sequence number as text that sorts numerically.
fn sequence_key(seq: &SequenceNumber) -> String {
    format!("{:0>40}", seq.as_str())
}

impl SqliteReplica {
    /// Open (or create) the replica at `path`.
    ///
    /// A new or empty file becomes an empty replica. An existing file must be a replica made by
    /// this crate; anything else — an unreadable file, another application's database, a newer
    /// schema — is an [`Error::InvalidArgument`] that names the file, and the file is left
    /// untouched.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let inner = tokio::task::spawn_blocking(move || open_sync(&p))
            .await
            .map_err(|e| RuntimeError::new("the replica open task failed").with_source(e))??;
        Ok(Self {
            path,
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every item of the replica, ordered by key.
    pub async fn items(&self) -> Result<Vec<Item>> {
        self.run(|inner| {
            let mut stmt = inner
                .conn
                .prepare("SELECT _item FROM items ORDER BY _key")
                .map_err(|e| io("read items", e))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| io("read items", e))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(parse_item(&row.map_err(|e| io("read items", e))?)?);
            }
            Ok(out)
        })
        .await
    }

    /// The item with these key attributes, if the replica holds it.
    pub async fn get(&self, keys: &Item) -> Result<Option<Item>> {
        let keys = keys.clone();
        self.run(move |inner| {
            let key = match &inner.bound {
                Some(b) => item_key_string(&key_of(&b.key_schema, &keys)),
                None => item_key_string(&keys),
            };
            inner
                .conn
                .query_row("SELECT _item FROM items WHERE _key = ?1", [key], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(|e| io("read item", e))?
                .map(|json| parse_item(&json))
                .transpose()
        })
        .await
    }

    /// Run `f` on the connection off the async threads.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> std::result::Result<T, CheckpointError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let r = tokio::task::spawn_blocking(move || f(&mut lock(&inner)))
            .await
            .map_err(|e| RuntimeError::new("a replica task failed").with_source(e))?;
        Ok(r?)
    }

    async fn run_store<T, F>(&self, f: F) -> std::result::Result<T, CheckpointError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> std::result::Result<T, CheckpointError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner)))
            .await
            .map_err(|e| io("task", e))?
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // Every write is one SQLite transaction, rolled back if a panic unwinds through it, so the
    // connection behind a poisoned lock is still consistent.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// Create a missing database file with mode 0600 before SQLite opens it: the replica holds
/// whole items, and SQLite gives its `-wal` and `-shm` files the database file's mode. An
/// existing file is left as it is.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn open_sync(path: &Path) -> Result<Inner> {
    let shown = path.display();
    let unreadable = |e: rusqlite::Error| {
        Error::InvalidArgument(format!("{shown} is not a readable SQLite database: {e}"))
    };
    create_private(path)
        .map_err(|e| Error::InvalidArgument(format!("cannot create {shown}: {e}")))?;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::InvalidArgument(format!("cannot open {shown}: {e}")))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(unreadable)?;
    // Look before writing anything: a file that is not ours must stay byte for byte as it was.
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(unreadable)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(unreadable)?;
    let fresh = application_id == 0 && objects == 0;
    if !fresh && application_id != APPLICATION_ID {
        return Err(Error::InvalidArgument(format!(
            "{shown} is a SQLite database of another application, not a ddbstream replica"
        )));
    }
    let mut bound = None;
    if !fresh {
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(unreadable)?;
        if version == 1 {
            migrate_v1(&mut conn)
                .map_err(|e| Error::Checkpoint(io("upgrade the schema from version 1", e)))?;
        } else if version != SCHEMA_VERSION {
            return Err(Error::InvalidArgument(format!(
                "{shown} is a ddbstream replica of schema version {version}; this build reads \
                 version {SCHEMA_VERSION}"
            )));
        }
        bound = read_bound(&conn)
            .map_err(|e| Error::InvalidArgument(format!("{shown} is damaged: {e}")))?;
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(unreadable)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::InvalidArgument(format!(
            "{shown}: cannot switch to WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(unreadable)?;
    let mut inner = Inner { conn, bound };
    if fresh {
        create_schema(&mut inner.conn).map_err(|e| Error::Checkpoint(io("create schema", e)))?;
    }
    Ok(inner)
}

/// The checkpoints table (schema version 2).
const CHECKPOINTS_TABLE: &str = "CREATE TABLE checkpoints (
             application TEXT NOT NULL,
             stream_arn TEXT NOT NULL,
             shard_id TEXT NOT NULL,
             state TEXT NOT NULL CHECK (state IN ('latest', 'processed', 'ended', 'discovered')),
             sequence_number TEXT,
             sequence_key TEXT,
             since_ms INTEGER,
             updated_at_ms INTEGER NOT NULL,
             PRIMARY KEY (application, stream_arn, shard_id)
         ) WITHOUT ROWID;";

fn create_schema(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};
         CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
         CREATE TABLE streams (
             application TEXT NOT NULL,
             stream_arn TEXT NOT NULL,
             started_at_ms INTEGER NOT NULL,
             PRIMARY KEY (application, stream_arn)
         ) WITHOUT ROWID;
         {CHECKPOINTS_TABLE}
         CREATE TABLE scan_segments (
             segment INTEGER PRIMARY KEY,
             resume_after TEXT,
             done INTEGER NOT NULL DEFAULT 0,
             items INTEGER NOT NULL DEFAULT 0
         );"
    ))?;
    tx.execute(
        "INSERT INTO meta (name, value) VALUES ('schema_version', ?1), ('created_at_ms', ?2),
             ('scan_state', 'not_started')",
        params![SCHEMA_VERSION.to_string(), now_ms().to_string()],
    )?;
    tx.commit()
}

/// Version 1 to 2: checkpoints may also be `discovered` (a shard listed and not yet read). SQLite
/// cannot change a CHECK constraint in place: the table is rebuilt, in one transaction.
fn migrate_v1(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&format!(
        "ALTER TABLE checkpoints RENAME TO checkpoints_v1;
         {CHECKPOINTS_TABLE}
         INSERT INTO checkpoints SELECT * FROM checkpoints_v1;
         DROP TABLE checkpoints_v1;
         UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE name = 'schema_version';
         PRAGMA user_version = {SCHEMA_VERSION};"
    ))?;
    tx.commit()
}

fn meta(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
}

fn set_meta(tx: &Transaction<'_>, name: &str, value: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )
    .map(|_| ())
}

fn read_bound(conn: &Connection) -> std::result::Result<Option<Bound>, String> {
    let get = |name: &str| meta(conn, name).map_err(|e| format!("cannot read metadata: {e}"));
    let (Some(table_name), Some(stream_arn), Some(schema)) =
        (get("table_name")?, get("stream_arn")?, get("key_schema")?)
    else {
        return Ok(None);
    };
    let key_schema: Vec<KeyAttribute> = serde_json::from_str(&schema)
        .map_err(|e| format!("unreadable key schema {schema:?}: {e}"))?;
    Ok(Some(Bound {
        table_name,
        stream_arn,
        key_schema,
    }))
}

/// Why `table` cannot be replicated into a replica bound to `bound`, if it cannot.
fn binding_mismatch(path: &Path, bound: &Bound, table: &TableInfo) -> Option<String> {
    let shown = path.display();
    if bound.table_name != table.table_name {
        return Some(format!(
            "{shown} is a replica of table {:?}, not {:?}: use another database file",
            bound.table_name, table.table_name
        ));
    }
    if bound.stream_arn != table.stream_arn {
        return Some(format!(
            "{shown} replicates stream {} of table {:?}, but the table now streams {} (was the \
             stream disabled and enabled again?): use a new database file",
            bound.stream_arn, table.table_name, table.stream_arn
        ));
    }
    if !same_key_schema(&bound.key_schema, &table.key_schema) {
        return Some(format!(
            "{shown} holds table {:?} with another key schema: use a new database file",
            table.table_name
        ));
    }
    None
}

fn check_key_names(key_schema: &[KeyAttribute]) -> Result<()> {
    for (i, a) in key_schema.iter().enumerate() {
        if RESERVED_COLUMNS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&a.name))
        {
            return Err(Error::InvalidArgument(format!(
                "key attribute {:?} clashes with a column of the replica's items table",
                a.name
            )));
        }
        // SQLite column names ignore ASCII case.
        if key_schema[..i]
            .iter()
            .any(|b| b.name.eq_ignore_ascii_case(&a.name))
        {
            return Err(Error::InvalidArgument(format!(
                "key attributes {:?} differ only in case: they cannot both be SQLite columns",
                a.name
            )));
        }
    }
    Ok(())
}

fn create_items_table(tx: &Transaction<'_>, key_schema: &[KeyAttribute]) -> rusqlite::Result<()> {
    let mut columns = String::new();
    for a in key_schema {
        // N has no declared type: any numeric affinity would turn long numbers into floats.
        let ty = match a.scalar_type {
            Some(ScalarType::S) => " TEXT",
            Some(ScalarType::B) => " BLOB",
            Some(ScalarType::N) | None => "",
        };
        columns.push_str(&format!("{}{ty}, ", quote(&a.name)));
    }
    let index_columns: Vec<String> = key_schema.iter().map(|a| quote(&a.name)).collect();
    tx.execute_batch(&format!(
        "CREATE TABLE items (
             _key TEXT PRIMARY KEY,
             {columns}
             _item TEXT NOT NULL,
             _sequence_number TEXT,
             _updated_at_ms INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX items_by_key ON items ({});",
        index_columns.join(", ")
    ))
}

fn scan_progress(conn: &Connection) -> rusqlite::Result<ScanProgress> {
    let state = meta(conn, "scan_state")?.unwrap_or_default();
    Ok(match state.as_str() {
        "complete" => ScanProgress::Complete {
            items: meta(conn, "scan_items")?
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        },
        "running" => {
            let total_segments = meta(conn, "scan_total_segments")?
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut stmt = conn.prepare(
                "SELECT segment, resume_after, done, items FROM scan_segments ORDER BY segment",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut segments = Vec::new();
            for row in rows {
                let (segment, resume, done, items) = row?;
                // An unreadable resume key restarts that segment: pages are idempotent upserts.
                let resume_after = resume.and_then(|j| serde_json::from_str(&j).ok());
                segments.push(SegmentProgress {
                    segment,
                    resume_after,
                    done,
                    items: u64::try_from(items).unwrap_or(0),
                });
            }
            ScanProgress::Running {
                total_segments,
                segments,
            }
        }
        _ => ScanProgress::NotStarted,
    })
}

/// The stored checkpoint of one shard.
fn read_checkpoint(
    tx: &Connection,
    key: &StreamKey,
    shard_id: &str,
) -> std::result::Result<Option<ShardCheckpoint>, CheckpointError> {
    tx.query_row(
        "SELECT state, sequence_number, since_ms FROM checkpoints
         WHERE application = ?1 AND stream_arn = ?2 AND shard_id = ?3",
        params![key.application, key.stream_arn, shard_id],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        },
    )
    .optional()
    .map_err(|e| io("read checkpoint", e))?
    .map(|(state, seq, since)| to_checkpoint(shard_id, &state, seq, since))
    .transpose()
}

fn to_checkpoint(
    shard_id: &str,
    state: &str,
    seq: Option<String>,
    since: Option<i64>,
) -> std::result::Result<ShardCheckpoint, CheckpointError> {
    match state {
        "ended" => Ok(ShardCheckpoint::Ended),
        "discovered" => Ok(ShardCheckpoint::Discovered {
            since_ms: since.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            from: seq
                .map(|raw| {
                    raw.parse().map_err(|e| {
                        corrupt(format!(
                            "shard {shard_id}: bad sequence number {raw:?}: {e}"
                        ))
                    })
                })
                .transpose()?,
        }),
        "latest" => Ok(ShardCheckpoint::Latest {
            since_ms: since.and_then(|s| u64::try_from(s).ok()).ok_or_else(|| {
                corrupt(format!("shard {shard_id}: LATEST bookmark without a time"))
            })?,
        }),
        "processed" => {
            let raw = seq.unwrap_or_default();
            let sequence_number = raw.parse().map_err(|e| {
                corrupt(format!(
                    "shard {shard_id}: bad sequence number {raw:?}: {e}"
                ))
            })?;
            Ok(ShardCheckpoint::Processed { sequence_number })
        }
        other => Err(corrupt(format!(
            "shard {shard_id}: unknown state {other:?}"
        ))),
    }
}

/// Store `cp` for the shard if it moves the shard forward; returns whether it did.
fn write_checkpoint(
    tx: &Transaction<'_>,
    key: &StreamKey,
    shard_id: &str,
    cp: &ShardCheckpoint,
) -> std::result::Result<bool, CheckpointError> {
    let old = read_checkpoint(tx, key, shard_id)?;
    if !advances(old.as_ref(), cp) {
        return Ok(false);
    }
    let (state, seq, seq_key, since) = match cp {
        ShardCheckpoint::Ended => ("ended", None, None, None),
        ShardCheckpoint::Discovered { from, since_ms } => (
            "discovered",
            from.as_ref().map(|s| s.as_str().to_owned()),
            None,
            Some(i64::try_from(*since_ms).unwrap_or(i64::MAX)),
        ),
        ShardCheckpoint::Latest { since_ms } => (
            "latest",
            None,
            None,
            Some(i64::try_from(*since_ms).unwrap_or(i64::MAX)),
        ),
        ShardCheckpoint::Processed { sequence_number } => (
            "processed",
            Some(sequence_number.as_str().to_owned()),
            Some(sequence_key(sequence_number)),
            None,
        ),
    };
    tx.execute(
        "INSERT INTO checkpoints
             (application, stream_arn, shard_id, state, sequence_number, sequence_key, since_ms,
              updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (application, stream_arn, shard_id) DO UPDATE SET
             state = excluded.state, sequence_number = excluded.sequence_number,
             sequence_key = excluded.sequence_key, since_ms = excluded.since_ms,
             updated_at_ms = excluded.updated_at_ms",
        params![
            key.application,
            key.stream_arn,
            shard_id,
            state,
            seq,
            seq_key,
            since,
            now_ms()
        ],
    )
    .map_err(|e| io("write checkpoint", e))?;
    Ok(true)
}

fn record_start(
    tx: &Transaction<'_>,
    key: &StreamKey,
    started_at_ms: u64,
) -> std::result::Result<(), CheckpointError> {
    tx.execute(
        "INSERT OR IGNORE INTO streams (application, stream_arn, started_at_ms) VALUES (?1, ?2, ?3)",
        params![
            key.application,
            key.stream_arn,
            i64::try_from(started_at_ms).unwrap_or(i64::MAX)
        ],
    )
    .map_err(|e| io("write stream start", e))?;
    Ok(())
}

fn check_stream(inner: &Inner, key: &StreamKey) -> std::result::Result<(), CheckpointError> {
    match &inner.bound {
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

fn put_item(
    tx: &Transaction<'_>,
    key_schema: &[KeyAttribute],
    item: &Item,
    sequence_number: Option<&SequenceNumber>,
) -> std::result::Result<(), CheckpointError> {
    let keys = key_of(key_schema, item);
    let mut columns = vec!["_key".to_owned()];
    let mut values = vec![Value::Text(item_key_string(&keys))];
    for a in key_schema {
        columns.push(quote(&a.name));
        values.push(key_column(keys.get(&a.name)));
    }
    columns.extend(["_item", "_sequence_number", "_updated_at_ms"].map(str::to_owned));
    values.push(Value::Text(item_json(item)?));
    values.push(match sequence_number {
        Some(s) => Value::Text(s.as_str().to_owned()),
        None => Value::Null,
    });
    values.push(Value::Integer(now_ms()));
    let placeholders: Vec<String> = (1..=values.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT OR REPLACE INTO items ({}) VALUES ({})",
        columns.join(", "),
        placeholders.join(", ")
    );
    tx.prepare_cached(&sql)
        .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(values)))
        .map_err(|e| io("write item", e))?;
    Ok(())
}

fn delete_item(
    tx: &Transaction<'_>,
    key_schema: &[KeyAttribute],
    keys: &Item,
) -> std::result::Result<(), CheckpointError> {
    let key = item_key_string(&key_of(key_schema, keys));
    tx.prepare_cached("DELETE FROM items WHERE _key = ?1")
        .and_then(|mut stmt| stmt.execute([key]))
        .map_err(|e| io("delete item", e))?;
    Ok(())
}

fn bound_schema(inner: &Inner) -> std::result::Result<Vec<KeyAttribute>, CheckpointError> {
    inner
        .bound
        .as_ref()
        .map(|b| b.key_schema.clone())
        .ok_or_else(|| {
            io(
                "write items",
                "the replica is not bound to a table yet (call bind)",
            )
        })
}

fn immediate(conn: &mut Connection) -> std::result::Result<Transaction<'_>, CheckpointError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| io("begin transaction", e))
}

fn commit(tx: Transaction<'_>) -> std::result::Result<(), CheckpointError> {
    tx.commit().map_err(|e| io("commit", e))
}

impl CheckpointStore for SqliteReplica {
    fn load(
        &self,
        key: &StreamKey,
    ) -> BoxFuture<'_, std::result::Result<Option<StreamCheckpoints>, CheckpointError>> {
        let key = key.clone();
        Box::pin(self.run_store(move |inner| {
            check_stream(inner, &key)?;
            let conn = &inner.conn;
            let started: Option<i64> = conn
                .query_row(
                    "SELECT started_at_ms FROM streams WHERE application = ?1 AND stream_arn = ?2",
                    params![key.application, key.stream_arn],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| io("read checkpoints", e))?;
            let Some(started) = started else {
                return Ok(None);
            };
            let mut stmt = conn
                .prepare(
                    "SELECT shard_id, state, sequence_number, since_ms FROM checkpoints
                     WHERE application = ?1 AND stream_arn = ?2",
                )
                .map_err(|e| io("read checkpoints", e))?;
            let rows = stmt
                .query_map(params![key.application, key.stream_arn], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                })
                .map_err(|e| io("read checkpoints", e))?;
            let mut shards = BTreeMap::new();
            for row in rows {
                let (shard, state, seq, since) = row.map_err(|e| io("read checkpoints", e))?;
                let cp = to_checkpoint(&shard, &state, seq, since)?;
                shards.insert(shard, cp);
            }
            Ok(Some(StreamCheckpoints {
                started_at_ms: u64::try_from(started).unwrap_or(0),
                shards,
            }))
        }))
    }

    fn save(
        &self,
        key: &StreamKey,
        started_at_ms: u64,
        shards: Vec<(String, ShardCheckpoint)>,
    ) -> BoxFuture<'_, std::result::Result<(), CheckpointError>> {
        let key = key.clone();
        Box::pin(self.run_store(move |inner| {
            check_stream(inner, &key)?;
            let tx = immediate(&mut inner.conn)?;
            record_start(&tx, &key, started_at_ms)?;
            for (shard, cp) in &shards {
                write_checkpoint(&tx, &key, shard, cp)?;
            }
            commit(tx)
        }))
    }

    fn streams(
        &self,
        application: &str,
    ) -> BoxFuture<'_, std::result::Result<Vec<String>, CheckpointError>> {
        let application = application.to_owned();
        Box::pin(self.run_store(move |inner| {
            let mut stmt = inner
                .conn
                .prepare(
                    "SELECT stream_arn FROM streams WHERE application = ?1 ORDER BY stream_arn",
                )
                .map_err(|e| io("read streams", e))?;
            let rows = stmt
                .query_map([application], |r| r.get::<_, String>(0))
                .map_err(|e| io("read streams", e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| io("read streams", e))
        }))
    }
}

impl ReplicaSink for SqliteReplica {
    fn bind(&self, table: &TableInfo) -> BoxFuture<'_, Result<ScanProgress>> {
        let table = table.clone();
        let path = self.path.clone();
        Box::pin(async move {
            check_key_names(&table.key_schema)?;
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || {
                let mut inner = lock(&inner);
                if let Some(bound) = &inner.bound {
                    if let Some(why) = binding_mismatch(&path, bound, &table) {
                        return Err(Error::InvalidArgument(why));
                    }
                } else {
                    let schema = serde_json::to_string(&table.key_schema)
                        .map_err(|e| Error::Checkpoint(io("encode key schema", e)))?;
                    let view = table.view_type.map(|v| v.as_str()).unwrap_or("");
                    let tx = immediate(&mut inner.conn)?;
                    (|| {
                        create_items_table(&tx, &table.key_schema)?;
                        set_meta(&tx, "table_name", &table.table_name)?;
                        set_meta(&tx, "stream_arn", &table.stream_arn)?;
                        set_meta(&tx, "view_type", view)?;
                        set_meta(&tx, "key_schema", &schema)
                    })()
                    .map_err(|e| Error::Checkpoint(io("bind to the table", e)))?;
                    commit(tx)?;
                    inner.bound = Some(Bound {
                        table_name: table.table_name.clone(),
                        stream_arn: table.stream_arn.clone(),
                        key_schema: table.key_schema.clone(),
                    });
                }
                scan_progress(&inner.conn).map_err(|e| Error::Checkpoint(io("read scan state", e)))
            })
            .await
            .map_err(|e| RuntimeError::new("a replica task failed").with_source(e))?
        })
    }

    fn begin_scan(&self, total_segments: u32) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.run(move |inner| {
            let tx = immediate(&mut inner.conn)?;
            (|| {
                tx.execute("DELETE FROM scan_segments", [])?;
                for segment in 0..total_segments {
                    tx.execute("INSERT INTO scan_segments (segment) VALUES (?1)", [segment])?;
                }
                set_meta(&tx, "scan_state", "running")?;
                set_meta(&tx, "scan_total_segments", &total_segments.to_string())?;
                set_meta(&tx, "scan_started_at_ms", &now_ms().to_string())
            })()
            .map_err(|e| io("begin scan", e))?;
            commit(tx)
        }))
    }

    fn write_scan_page(
        &self,
        segment: u32,
        items: Vec<Item>,
        resume_after: Option<Item>,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.run(move |inner| {
            let schema = bound_schema(inner)?;
            let resume = resume_after.as_ref().map(item_json).transpose()?;
            let tx = immediate(&mut inner.conn)?;
            for item in &items {
                put_item(&tx, &schema, item, None)?;
            }
            let updated = tx
                .execute(
                    "UPDATE scan_segments SET resume_after = ?2, done = ?3, items = items + ?4
                     WHERE segment = ?1",
                    params![segment, resume, resume.is_none(), items.len() as i64],
                )
                .map_err(|e| io("record scan progress", e))?;
            if updated != 1 {
                return Err(io(
                    "record scan progress",
                    format!("no scan segment {segment} (begin_scan not called?)"),
                ));
            }
            commit(tx)
        }))
    }

    fn complete_scan(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.run(|inner| {
            let tx = immediate(&mut inner.conn)?;
            (|| {
                let items: i64 = tx.query_row(
                    "SELECT coalesce(sum(items), 0) FROM scan_segments",
                    [],
                    |r| r.get(0),
                )?;
                set_meta(&tx, "scan_state", "complete")?;
                set_meta(&tx, "scan_items", &items.to_string())?;
                set_meta(&tx, "scan_completed_at_ms", &now_ms().to_string())
            })()
            .map_err(|e| io("complete scan", e))?;
            commit(tx)
        }))
    }

    fn reset(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.run(|inner| {
            let has_items = inner.bound.is_some();
            let tx = immediate(&mut inner.conn)?;
            (|| {
                if has_items {
                    tx.execute("DELETE FROM items", [])?;
                }
                tx.execute_batch(
                    "DELETE FROM scan_segments; DELETE FROM checkpoints; DELETE FROM streams;
                     DELETE FROM meta WHERE name = 'stream_caught_up_at_ms';",
                )?;
                set_meta(&tx, "scan_state", "not_started")
            })()
            .map_err(|e| io("reset", e))?;
            commit(tx)
        }))
    }

    fn stream_caught_up_at(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        Box::pin(self.run(|inner| {
            Ok(meta(&inner.conn, "stream_caught_up_at_ms")
                .map_err(|e| io("read the stream catch-up time", e))?
                .and_then(|v| v.parse().ok()))
        }))
    }

    fn record_stream_caught_up(&self, at_ms: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.run(move |inner| {
            let tx = immediate(&mut inner.conn)?;
            let stored: Option<u64> = meta(&tx, "stream_caught_up_at_ms")
                .map_err(|e| io("read the stream catch-up time", e))?
                .and_then(|v| v.parse().ok());
            if stored.is_none_or(|s| s < at_ms) {
                set_meta(&tx, "stream_caught_up_at_ms", &at_ms.to_string())
                    .map_err(|e| io("record the stream catch-up time", e))?;
            }
            commit(tx)
        }))
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
        Box::pin(self.run(move |inner| {
            check_stream(inner, &key)?;
            let schema = bound_schema(inner)?;
            let tx = immediate(&mut inner.conn)?;
            let stored = read_checkpoint(&tx, &key, &shard_id)?;
            let after = match &stored {
                Some(ShardCheckpoint::Ended) => return Ok(0),
                Some(ShardCheckpoint::Processed { sequence_number }) => Some(sequence_number),
                _ => None,
            };
            let mut applied = 0;
            for c in changes
                .iter()
                .filter(|c| after.is_none_or(|a| &c.sequence_number > a))
            {
                match &c.change {
                    ItemChange::Put { item, .. } => {
                        put_item(&tx, &schema, item, Some(&c.sequence_number))?
                    }
                    ItemChange::Delete { keys } => delete_item(&tx, &schema, keys)?,
                }
                applied += 1;
            }
            // A replayed batch must still leave a start time, so a restart resumes instead of
            // starting afresh.
            record_start(&tx, &key, u64::try_from(now_ms()).unwrap_or(0))?;
            write_checkpoint(
                &tx,
                &key,
                &shard_id,
                &ShardCheckpoint::Processed {
                    sequence_number: through,
                },
            )?;
            commit(tx)?;
            Ok(applied)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_keys_sort_numerically() {
        let a: SequenceNumber = "900000000000000000000".parse().expect("seq");
        let b: SequenceNumber = "1000000000000000000000".parse().expect("seq");
        assert!(sequence_key(&a) < sequence_key(&b));
        assert_eq!(sequence_key(&b).len(), 40);
    }

    #[test]
    fn key_columns_keep_every_digit() {
        let long = "12345678901234567890123456789012345678";
        assert_eq!(
            key_column(Some(&AttributeValue::N(long.into()))),
            Value::Text(long.into())
        );
        assert_eq!(
            key_column(Some(&AttributeValue::N("42".into()))),
            Value::Integer(42)
        );
        assert_eq!(
            key_column(Some(&AttributeValue::N("4.5".into()))),
            Value::Text("4.5".into())
        );
    }

    /// A replica made by an earlier build (schema version 1, whose checkpoints cannot be
    /// `discovered`) opens, keeps its checkpoints, and takes the new state.
    #[tokio::test]
    async fn a_version_1_replica_is_upgraded_in_place() {
        use crate::checkpoint::CheckpointStore;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.sqlite");
        drop(SqliteReplica::open(&path).await.expect("create"));
        {
            // Turn it back into version 1, holding one checkpoint.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE v1 (
                     application TEXT NOT NULL,
                     stream_arn TEXT NOT NULL,
                     shard_id TEXT NOT NULL,
                     state TEXT NOT NULL CHECK (state IN ('latest', 'processed', 'ended')),
                     sequence_number TEXT,
                     sequence_key TEXT,
                     since_ms INTEGER,
                     updated_at_ms INTEGER NOT NULL,
                     PRIMARY KEY (application, stream_arn, shard_id)
                 ) WITHOUT ROWID;
                 DROP TABLE checkpoints;
                 ALTER TABLE v1 RENAME TO checkpoints;
                 INSERT INTO streams VALUES ('app', 'arn:s', 1);
                 INSERT INTO checkpoints VALUES ('app', 'arn:s', 'shard-a', 'ended', NULL, NULL,
                     NULL, 1);
                 UPDATE meta SET value = '1' WHERE name = 'schema_version';
                 PRAGMA user_version = 1;",
            )
            .expect("downgrade");
        }
        let replica = SqliteReplica::open(&path).await.expect("upgrade");
        let key = StreamKey {
            application: "app".into(),
            stream_arn: "arn:s".into(),
        };
        let discovered = ShardCheckpoint::Discovered {
            from: None,
            since_ms: 5,
        };
        replica
            .save(&key, 1, vec![("shard-b".into(), discovered.clone())])
            .await
            .expect("a discovered shard can be stored");
        let stored = replica.load(&key).await.expect("load").expect("stored");
        assert_eq!(stored.shards.get("shard-a"), Some(&ShardCheckpoint::Ended));
        assert_eq!(stored.shards.get("shard-b"), Some(&discovered));
    }
}
