//! `ddbstream status`: a stream's shards as a lineage tree and, given stored positions, where a
//! consumer stands in each shard.
//!
//! Nothing is written anywhere: a checkpoint file is only read, a replica database is opened
//! read only, and each shard is probed with one GetShardIterator and one GetRecords.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use dynamodb_stream::checkpoint::{
    CheckpointStore, FileCheckpointStore, ShardCheckpoint, StreamCheckpoints, StreamKey,
};
use dynamodb_stream::error::{SourceError, SourceErrorKind};
use dynamodb_stream::replicate::DEFAULT_APPLICATION;
use dynamodb_stream::source::{
    IteratorPosition, Shard, StreamDescription, StreamStatus, StreamsApi, GET_RECORDS_LIMIT,
};
use dynamodb_stream::ConsumerConfig;
use futures_util::stream::{self, StreamExt};
use rusqlite::{params, OpenFlags, OptionalExtension};
use serde_json::{json, Value};

use crate::fail::{explain, stream_not_found, Ended, Failure, Setup};
use crate::output::rfc3339;
use crate::start::{first_call, without_retries};
use crate::{unless_stopped, StatusArgs, Stop};

/// The application name `tail` keys its checkpoints with (the same as `tail::APPLICATION`).
use crate::tail::APPLICATION as TAIL_APPLICATION;
/// An unread record older than this is trimmed within hours (retention is 24 hours).
const GAP_RISK_AGE: Duration = Duration::from_secs(20 * 3600);
/// At most 10 DescribeStream calls per second.
const DESCRIBE_INTERVAL: Duration = Duration::from_millis(100);
/// Shards probed at once (each probe is one GetShardIterator and one GetRecords).
const PROBES_IN_FLIGHT: usize = 8;
/// How `SqliteReplica` marks its files (`PRAGMA application_id`, "ddbs") and its layout version.
const REPLICA_APPLICATION_ID: i32 = 0x6464_6273;
const REPLICA_SCHEMA_VERSION: i32 = 2;

pub(crate) async fn run(
    (aws, setup): &(SdkConfig, Setup),
    args: StatusArgs,
    mut stop: Stop,
) -> Result<Ended, Failure> {
    // Local files first: a wrong path fails before any call to AWS.
    let store = Store::open(&args).await?;
    let streams = aws_sdk_dynamodbstreams::Client::new(aws);
    let (stream_arn, table_name) = match (&args.table, &args.stream_arn) {
        (Some(table), _) => {
            let dynamodb = aws_sdk_dynamodb::Client::new(&without_retries(aws));
            match first_call("DescribeTable", setup, &mut stop, || {
                crate::replicate::table_info(&dynamodb, &streams, table)
            })
            .await?
            {
                Ok(info) => (info.stream_arn, Some(info.table_name)),
                Err(signal) => return Ok(Ended::Unfinished(signal)),
            }
        }
        (None, Some(arn)) => {
            dynamodb_stream::source::check_stream_arn(arn).map_err(|e| explain(e, setup))?;
            (arn.clone(), None)
        }
        (None, None) => return Err("pass --table or --stream-arn".into()),
    };
    let first = aws_sdk_dynamodbstreams::Client::new(&without_retries(aws));
    let description = match first_call("DescribeStream", setup, &mut stop, || {
        describe_stream(&first, &stream_arn)
    })
    .await
    {
        Ok(Ok(description)) => description,
        Ok(Err(signal)) => return Ok(Ended::Unfinished(signal)),
        Err(failure) => return Err(stream_not_found(failure, &stream_arn)),
    };
    let probed = report(&streams, &args, store, stream_arn, table_name, &description);
    match unless_stopped(&mut stop, probed).await {
        Ok(result) => result,
        Err(signal) => Ok(Ended::Unfinished(signal)),
    }
}

/// Probe every shard against the stored positions, print the report, and judge it if asked.
async fn report(
    streams: &aws_sdk_dynamodbstreams::Client,
    args: &StatusArgs,
    store: Option<Store>,
    stream_arn: String,
    table_name: Option<String>,
    description: &StreamDescription,
) -> Result<Ended, Failure> {
    let table_name = table_name.or_else(|| description.table_name.clone());
    let stored = match &store {
        Some(store) => Some(store.load(&stream_arn).await?),
        None => None,
    };
    let order = tree_order(&description.shards);
    let now = SystemTime::now();
    let probes: Vec<Option<Probe>> = match &stored {
        None => vec![None; order.len()],
        Some(stored) => {
            let stored_shards = stored.checkpoints.as_ref().map(|c| &c.shards);
            let results: Vec<Result<Probe, String>> = stream::iter(order.iter())
                .map(|&(i, _)| {
                    let shard = &description.shards[i];
                    let cp = stored_shards.and_then(|s| s.get(&shard.shard_id));
                    probe(streams, &stream_arn, shard, cp, now)
                })
                .buffered(PROBES_IN_FLIGHT)
                .collect()
                .await;
            results
                .into_iter()
                .map(|r| r.map(Some))
                .collect::<Result<_, _>>()?
        }
    };
    let report = Report {
        stream_arn,
        table_name,
        description,
        store: store.as_ref().zip(stored.as_ref()),
        rows: order
            .iter()
            .zip(probes)
            .map(|(&(i, depth), probe)| Row {
                shard: &description.shards[i],
                depth,
                probe,
            })
            .collect(),
    };
    let check = args.check.then(|| report.problems(args.max_lag));
    let text = if args.json {
        let mut json = report.json();
        if let (Some(problems), Some(map)) = (&check, json.as_object_mut()) {
            map.insert(
                "check".into(),
                json!({
                    "ok": problems.is_empty(),
                    "maxLagSeconds": args.max_lag.as_secs(),
                    "problems": problems,
                }),
            );
        }
        let mut s = serde_json::to_string_pretty(&json)
            .map_err(|e| format!("cannot encode the status: {e}"))?;
        s.push('\n');
        s
    } else {
        let mut s = report.human();
        match &check {
            Some(problems) if problems.is_empty() => s.push_str(&format!(
                "check: OK (no shard behind by more than {}, none at risk, nothing lost)\n",
                short_age(args.max_lag)
            )),
            Some(problems) => s.push_str(&format!("check: FAILED: {}\n", problems.join("; "))),
            None => {}
        }
        s
    };
    print(&text)?;
    Ok(match check {
        Some(problems) if !problems.is_empty() => Ended::CheckFailed,
        _ => Ended::Done,
    })
}

fn print(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `ddbstream status | head`: the reader has all it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write to stdout: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Stored positions
// ---------------------------------------------------------------------------------------------

/// Where stored positions are read from, and for which application.
struct Store {
    application: String,
    path: PathBuf,
    kind: StoreKind,
}

enum StoreKind {
    File(FileCheckpointStore),
    /// A replica database, opened read only (`SqliteReplica::open` creates and migrates).
    Replica(rusqlite::Connection),
    /// A PostgreSQL replica, opened without creating anything.
    Postgres(dynamodb_stream::replicate::PostgresReplica),
}

/// What a store holds for one stream.
struct Stored {
    checkpoints: Option<StreamCheckpoints>,
    /// The application's positions on other streams (a replaced stream's, typically).
    other_streams: Vec<String>,
}

impl Store {
    async fn open(args: &StatusArgs) -> Result<Option<Store>, String> {
        let (path, kind) = match (&args.checkpoint, &args.db) {
            (Some(path), _) => {
                must_exist(path, "checkpoint file")?;
                let file = FileCheckpointStore::new(path);
                // Parse it now: a corrupt file is reported before any AWS call.
                file.streams(TAIL_APPLICATION)
                    .await
                    .map_err(|e| e.to_string())?;
                (path.as_path(), StoreKind::File(file))
            }
            (None, Some(url)) if is_postgres(url) => {
                let url = url.to_string_lossy();
                let replica = dynamodb_stream::replicate::PostgresReplica::builder(url.as_ref())
                    .schema(args.pg_schema.clone())
                    .connections(1)
                    .open_existing()
                    .await
                    .map_err(|e| e.to_string())?;
                // Shown without its password.
                let shown = PathBuf::from(crate::replicate::shown_url(&url));
                return Ok(Some(Store {
                    application: args
                        .application
                        .clone()
                        .unwrap_or_else(|| DEFAULT_APPLICATION.to_owned()),
                    path: shown,
                    kind: StoreKind::Postgres(replica),
                }));
            }
            (None, Some(path)) => {
                // `replicate --to` takes `sqlite:FILE` too.
                let path = match path.to_str().and_then(|s| s.strip_prefix("sqlite:")) {
                    Some(file) => Path::new(file),
                    None => path.as_path(),
                };
                must_exist(path, "replica database")?;
                (path, StoreKind::Replica(open_replica(path)?))
            }
            (None, None) => return Ok(None),
        };
        let default = match kind {
            StoreKind::File(_) => TAIL_APPLICATION,
            StoreKind::Replica(_) | StoreKind::Postgres(_) => DEFAULT_APPLICATION,
        };
        Ok(Some(Store {
            application: args
                .application
                .clone()
                .unwrap_or_else(|| default.to_owned()),
            path: path.to_path_buf(),
            kind,
        }))
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            StoreKind::File(_) => "checkpoint file",
            StoreKind::Replica(_) | StoreKind::Postgres(_) => "replica database",
        }
    }

    async fn load(&self, stream_arn: &str) -> Result<Stored, String> {
        match &self.kind {
            StoreKind::File(file) => self.load_from(file, stream_arn).await,
            StoreKind::Postgres(replica) => self.load_from(replica, stream_arn).await,
            StoreKind::Replica(conn) => {
                load_replica(conn, &self.path, &self.application, stream_arn)
            }
        }
    }
}

impl Store {
    /// The positions of this application on `stream_arn` in a checkpoint store, and the other
    /// streams it has positions on.
    async fn load_from(
        &self,
        store: &dyn CheckpointStore,
        stream_arn: &str,
    ) -> Result<Stored, String> {
        let key = StreamKey {
            application: self.application.clone(),
            stream_arn: stream_arn.to_owned(),
        };
        let checkpoints = store.load(&key).await.map_err(|e| e.to_string())?;
        let mut other_streams = store
            .streams(&self.application)
            .await
            .map_err(|e| e.to_string())?;
        other_streams.retain(|a| a != stream_arn);
        Ok(Stored {
            checkpoints,
            other_streams,
        })
    }
}

/// `--db postgres://…` (or `postgresql://…`).
fn is_postgres(db: &Path) -> bool {
    db.to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

fn must_exist(path: &Path, what: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{what} {} is not a file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{what} {} does not exist", path.display()))
        }
        Err(e) => Err(format!("cannot read {what} {}: {e}", path.display())),
    }
}

/// Open a replica database read only and check that it is one.
///
/// A replica is in WAL mode, and a read-only connection to a WAL database creates its `-wal`
/// and `-shm` files when they are missing (and cannot remove them). Missing, they mean no
/// connection has the database open, so it is opened `immutable` instead: no locks, no files.
/// When they exist (a replicator runs, or crashed), the connection shares them like any reader.
fn open_replica(path: &Path) -> Result<rusqlite::Connection, String> {
    let shown = path.display();
    let sidecar = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let quiescent = !sidecar("-wal").exists() && !sidecar("-shm").exists();
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if quiescent {
        let absolute =
            std::path::absolute(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
        rusqlite::Connection::open_with_flags(
            format!("file:{}?immutable=1", uri_path(&absolute)),
            flags | OpenFlags::SQLITE_OPEN_URI,
        )
    } else {
        rusqlite::Connection::open_with_flags(path, flags)
    }
    .map_err(|e| format!("cannot open {shown}: {e}"))?;
    let unreadable = |e: rusqlite::Error| format!("{shown} is not a readable SQLite database: {e}");
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(unreadable)?;
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(unreadable)?;
    if application_id != REPLICA_APPLICATION_ID {
        return Err(format!(
            "{shown} is not a ddbstream replica database (made by `ddbstream replicate`)"
        ));
    }
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unreadable)?;
    // Version 1 differs only in the checkpoint states it allows: read both.
    if !(1..=REPLICA_SCHEMA_VERSION).contains(&version) {
        return Err(format!(
            "{shown} is a ddbstream replica of schema version {version}; this build reads \
             version {REPLICA_SCHEMA_VERSION}"
        ));
    }
    Ok(conn)
}

/// `path` for a `file:` URI: everything but unreserved characters and `/` percent-encoded.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The positions of `application` on `stream_arn` in a replica database (its `streams` and
/// `checkpoints` tables), read in one transaction.
fn load_replica(
    conn: &rusqlite::Connection,
    path: &Path,
    application: &str,
    stream_arn: &str,
) -> Result<Stored, String> {
    let shown = path.display();
    let err = |e: rusqlite::Error| format!("cannot read {shown}: {e}");
    // A read transaction: one consistent snapshot while a replicator may be writing.
    conn.execute_batch("BEGIN").map_err(err)?;
    let result = (|| {
        let bound: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'stream_arn'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        if let Some(bound) = bound.filter(|b| b != stream_arn) {
            return Err(format!(
                "{shown} replicates stream {bound}, not {stream_arn} (was the table's stream \
                 replaced?)"
            ));
        }
        let mut stmt = conn
            .prepare(
                "SELECT stream_arn FROM streams WHERE application = ?1 AND stream_arn <> ?2
                 ORDER BY stream_arn",
            )
            .map_err(err)?;
        let other_streams = stmt
            .query_map(params![application, stream_arn], |r| r.get::<_, String>(0))
            .map_err(err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err)?;
        let started: Option<i64> = conn
            .query_row(
                "SELECT started_at_ms FROM streams WHERE application = ?1 AND stream_arn = ?2",
                params![application, stream_arn],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let Some(started) = started else {
            return Ok(Stored {
                checkpoints: None,
                other_streams,
            });
        };
        let mut stmt = conn
            .prepare(
                "SELECT shard_id, state, sequence_number, since_ms FROM checkpoints
                 WHERE application = ?1 AND stream_arn = ?2",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![application, stream_arn], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })
            .map_err(err)?;
        let mut checkpoints = StreamCheckpoints {
            started_at_ms: u64::try_from(started).unwrap_or(0),
            shards: Default::default(),
        };
        for row in rows {
            let (shard, state, seq, since) = row.map_err(err)?;
            let cp = match (
                state.as_str(),
                seq,
                since.and_then(|s| u64::try_from(s).ok()),
            ) {
                ("ended", _, _) => ShardCheckpoint::Ended,
                ("discovered", from, since) => ShardCheckpoint::Discovered {
                    from: from
                        .map(|s| s.parse())
                        .transpose()
                        .map_err(|e| format!("{shown} is damaged: shard {shard}: {e}"))?,
                    since_ms: since.unwrap_or(0),
                },
                ("latest", _, Some(since_ms)) => ShardCheckpoint::Latest { since_ms },
                ("processed", Some(seq), _) => ShardCheckpoint::Processed {
                    sequence_number: seq
                        .parse()
                        .map_err(|e| format!("{shown} is damaged: shard {shard}: {e}"))?,
                },
                (state, _, _) => {
                    return Err(format!(
                        "{shown} is damaged: shard {shard}: unreadable checkpoint {state:?}"
                    ))
                }
            };
            checkpoints.shards.insert(shard, cp);
        }
        Ok(Stored {
            checkpoints: Some(checkpoints),
            other_streams,
        })
    })();
    // Ends the read transaction; nothing was written.
    let _ = conn.execute_batch("COMMIT");
    result
}

// ---------------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------------

/// Every shard of the stream, following DescribeStream pages (at most 10 calls a second).
async fn describe_stream(
    api: &impl StreamsApi,
    arn: &str,
) -> dynamodb_stream::Result<StreamDescription> {
    dynamodb_stream::source::describe_all(api, arn, || tokio::time::sleep(DESCRIBE_INTERVAL))
        .await
        .map_err(dynamodb_stream::Error::from)
}

/// Shards in tree order — each parent followed by its children, oldest first — with their
/// depth. Roots are shards without a parent or whose parent is no longer listed.
fn tree_order(shards: &[Shard]) -> Vec<(usize, usize)> {
    let index: HashMap<&str, usize> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (s.shard_id.as_str(), i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        match s.parent_shard_id.as_deref().and_then(|p| index.get(p)) {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let by_age = |a: &usize, b: &usize| {
        let (a, b) = (&shards[*a], &shards[*b]);
        (&a.starting_sequence_number, &a.shard_id).cmp(&(&b.starting_sequence_number, &b.shard_id))
    };
    roots.sort_by(by_age);
    for kids in children.values_mut() {
        kids.sort_by(by_age);
    }
    let mut out = Vec::with_capacity(shards.len());
    let mut visited = vec![false; shards.len()];
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&i| (i, 0)).collect();
    loop {
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut visited[i], true) {
                continue;
            }
            out.push((i, depth));
            for &k in children.get(&i).into_iter().flatten().rev() {
                stack.push((k, depth + 1));
            }
        }
        // Shards in a parent cycle (DynamoDB makes none) are shown as roots.
        match visited.iter().position(|v| !v) {
            Some(i) => stack.push((i, 0)),
            None => return out,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Probing a shard
// ---------------------------------------------------------------------------------------------

/// How a stored position compares to its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    CaughtUp,
    Behind,
    GapRisk,
    Ended,
    Trimmed,
    Unknown,
}

impl Position {
    fn name(self) -> &'static str {
        match self {
            Self::CaughtUp => "caught_up",
            Self::Behind => "behind",
            Self::GapRisk => "gap_risk",
            Self::Ended => "ended",
            Self::Trimmed => "trimmed",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone)]
struct Probe {
    position: Position,
    /// Unread records on the one page read (`None` when nothing was read).
    unread: Option<usize>,
    /// The page was full: more unread records may follow.
    page_full: bool,
    /// The age of the oldest unread record.
    oldest_unread_age: Option<Duration>,
    /// Why the position is `trimmed` or `unknown`.
    detail: Option<String>,
}

impl Probe {
    fn at(position: Position, unread: Option<usize>) -> Self {
        Self {
            position,
            unread,
            page_full: false,
            oldest_unread_age: None,
            detail: None,
        }
    }

    fn with_detail(position: Position, detail: impl Into<String>) -> Self {
        Self {
            detail: Some(detail.into()),
            ..Self::at(position, None)
        }
    }
}

/// Read the shard once from where the store stands: one GetShardIterator (after the stored
/// sequence number; from TRIM_HORIZON without one or with a LATEST bookmark) and one GetRecords.
async fn probe(
    api: &impl StreamsApi,
    stream_arn: &str,
    shard: &Shard,
    checkpoint: Option<&ShardCheckpoint>,
    now: SystemTime,
) -> Result<Probe, String> {
    // With a LATEST bookmark the consumer has read nothing since its time, and on its next
    // start reads what was created from the bookmark minus its margin on (creation times are
    // approximate): those records are the unread ones.
    let mut unread_from = None;
    let position = match checkpoint {
        Some(ShardCheckpoint::Ended) => return Ok(Probe::at(Position::Ended, None)),
        Some(ShardCheckpoint::Processed { sequence_number }) => {
            if !shard.contains(sequence_number) {
                return Ok(Probe::with_detail(
                    Position::Unknown,
                    format!("stored sequence number {sequence_number} is outside the shard"),
                ));
            }
            IteratorPosition::AfterSequenceNumber(sequence_number.clone())
        }
        Some(ShardCheckpoint::Latest { since_ms }) => {
            let since = from_ms(*since_ms);
            let margin = ConsumerConfig::default().latest_bookmark_margin;
            unread_from = Some(since.checked_sub(margin).unwrap_or(since));
            IteratorPosition::TrimHorizon
        }
        None | Some(ShardCheckpoint::Discovered { from: None, .. }) => {
            IteratorPosition::TrimHorizon
        }
        Some(ShardCheckpoint::Discovered { from: Some(s), .. }) => {
            IteratorPosition::AtSequenceNumber(s.clone())
        }
    };
    let iterator = match api
        .get_shard_iterator(stream_arn.to_owned(), shard.shard_id.clone(), position)
        .await
    {
        Ok(i) => i,
        Err(e) => return read_failed(shard, e),
    };
    let page = match api.get_records(iterator, Some(GET_RECORDS_LIMIT)).await {
        Ok(p) => p,
        Err(e) => return read_failed(shard, e),
    };
    let page_full = page.records.len() >= GET_RECORDS_LIMIT as usize;
    let unread: Vec<_> = page
        .records
        .iter()
        .filter(|r| match (unread_from, r.approximate_creation_time()) {
            (Some(from), Some(created)) => created >= from,
            _ => true,
        })
        .collect();
    if let Some(oldest) = unread.first() {
        let age = oldest
            .approximate_creation_time()
            .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO));
        return Ok(Probe {
            position: if age.is_some_and(|a| a > GAP_RISK_AGE) {
                Position::GapRisk
            } else {
                Position::Behind
            },
            unread: Some(unread.len()),
            page_full,
            oldest_unread_age: age,
            detail: None,
        });
    }
    if page.next_shard_iterator.is_none() {
        // Closed and read to its end.
        return Ok(Probe::at(Position::Ended, Some(0)));
    }
    if page_full {
        return Ok(Probe::with_detail(
            Position::Unknown,
            "the first page holds only records from before the LATEST bookmark",
        ));
    }
    if !shard.is_closed() {
        return Ok(Probe::at(Position::CaughtUp, Some(0)));
    }
    Ok(Probe::with_detail(
        Position::Unknown,
        "closed shard: one empty page did not reach its end",
    ))
}

/// A failed probe call: trimmed data is the finding; a transient failure leaves the position
/// unknown; anything else (access denied, bad request) stops the command.
fn read_failed(shard: &Shard, e: SourceError) -> Result<Probe, String> {
    match e.kind() {
        SourceErrorKind::TrimmedData => Ok(Probe::with_detail(
            Position::Trimmed,
            "the stored position is past the 24-hour retention: records were lost",
        )),
        SourceErrorKind::Fatal => Err(format!("shard {}: stream API: {e}", shard.shard_id)),
        _ => Ok(Probe::with_detail(Position::Unknown, e.to_string())),
    }
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

struct Row<'a> {
    shard: &'a Shard,
    depth: usize,
    /// `None` without a store.
    probe: Option<Probe>,
}

struct Report<'a> {
    stream_arn: String,
    table_name: Option<String>,
    description: &'a StreamDescription,
    store: Option<(&'a Store, &'a Stored)>,
    rows: Vec<Row<'a>>,
}

/// A stored shard that DescribeStream no longer lists.
struct Vanished<'a> {
    shard_id: &'a str,
    checkpoint: &'a ShardCheckpoint,
    /// Not ended: whatever it still held was never read.
    gap: bool,
}

impl<'a> Report<'a> {
    fn checkpoint(&self, shard_id: &str) -> Option<Option<&'a ShardCheckpoint>> {
        let (_, stored) = self.store?;
        Some(
            stored
                .checkpoints
                .as_ref()
                .and_then(|c| c.shards.get(shard_id)),
        )
    }

    fn vanished(&self) -> Vec<Vanished<'a>> {
        let Some((_, stored)) = self.store else {
            return Vec::new();
        };
        let listed: HashSet<&str> = self
            .description
            .shards
            .iter()
            .map(|s| s.shard_id.as_str())
            .collect();
        stored
            .checkpoints
            .iter()
            .flat_map(|c| &c.shards)
            .filter(|(id, _)| !listed.contains(id.as_str()))
            .map(|(id, cp)| Vanished {
                shard_id: id,
                checkpoint: cp,
                gap: *cp != ShardCheckpoint::Ended,
            })
            .collect()
    }

    /// What `--check` fails on, one phrase per shard: behind by more than `max_lag`, at risk
    /// of trimming, records lost, a position that could not be probed; and no stored positions
    /// at all (nothing reads the stream).
    fn problems(&self, max_lag: Duration) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((store, stored)) = self.store {
            if stored.checkpoints.is_none() {
                out.push(format!(
                    "{} holds no positions of application {:?} on this stream",
                    store.path.display(),
                    store.application
                ));
            }
        }
        for row in &self.rows {
            let Some(p) = &row.probe else { continue };
            let id = &row.shard.shard_id;
            let age = p.oldest_unread_age.map(short_age);
            match p.position {
                Position::CaughtUp | Position::Ended => {}
                Position::Behind => {
                    if p.oldest_unread_age.is_some_and(|a| a > max_lag) {
                        out.push(format!(
                            "shard {id} is behind by {} (more than {})",
                            age.unwrap_or_default(),
                            short_age(max_lag)
                        ));
                    }
                }
                Position::GapRisk => out.push(format!(
                    "shard {id} is at risk: its oldest unread record is {} old, and records \
                     are trimmed at 24 h",
                    age.unwrap_or_default()
                )),
                Position::Trimmed => out.push(format!("shard {id} lost records (trimmed)")),
                Position::Unknown => out.push(format!(
                    "shard {id}: position unknown ({})",
                    p.detail.as_deref().unwrap_or("not probed")
                )),
            }
        }
        for v in self.vanished() {
            if v.gap {
                out.push(format!(
                    "shard {} vanished before it was read to its end: records lost",
                    v.shard_id
                ));
            }
        }
        out
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some((store, stored)) = self.store {
            if stored.checkpoints.is_none() {
                notes.push(format!(
                    "{} holds no positions of application {:?} on this stream (another \
                     --application?); shards are compared from their oldest record",
                    store.path.display(),
                    store.application
                ));
            }
            if !stored.other_streams.is_empty() {
                notes.push(format!(
                    "application {:?} also has positions on {} (a replaced stream?): not shown",
                    store.application,
                    stored.other_streams.join(", ")
                ));
            }
        }
        if matches!(
            self.description.stream_status,
            StreamStatus::Disabled | StreamStatus::Disabling
        ) {
            notes.push(
                "the stream is disabled: no new records; its shards stay readable until trimmed"
                    .to_owned(),
            );
        }
        notes
    }

    fn json(&self) -> Value {
        let shards: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let s = row.shard;
                let p = row.probe.as_ref();
                json!({
                    "shardId": s.shard_id,
                    "parentShardId": s.parent_shard_id,
                    "depth": row.depth,
                    "open": !s.is_closed(),
                    "startingSequenceNumber": s.starting_sequence_number.as_ref().map(|n| n.as_str()),
                    "endingSequenceNumber": s.ending_sequence_number.as_ref().map(|n| n.as_str()),
                    "checkpoint": self.checkpoint(&s.shard_id).map(checkpoint_json),
                    "position": p.map(|p| p.position.name()),
                    "unreadOnFirstPage": p.and_then(|p| p.unread),
                    "firstPageFull": p.and_then(|p| p.unread.map(|_| p.page_full)),
                    "oldestUnreadAgeSeconds": p.and_then(|p| p.oldest_unread_age).map(|a| a.as_secs()),
                    "detail": p.and_then(|p| p.detail.clone()),
                })
            })
            .collect();
        let vanished: Vec<Value> = self
            .vanished()
            .iter()
            .map(|v| {
                json!({
                    "shardId": v.shard_id,
                    "checkpoint": checkpoint_json(Some(v.checkpoint)),
                    "gap": v.gap,
                })
            })
            .collect();
        let store = self.store.map(|(store, stored)| {
            json!({
                "kind": match store.kind {
                    StoreKind::File(_) => "checkpoint_file",
                    StoreKind::Replica(_) | StoreKind::Postgres(_) => "replica_database",
                },
                "path": store.path.display().to_string(),
                "application": store.application,
                "found": stored.checkpoints.is_some(),
                "firstStartedAt": stored.checkpoints.as_ref().map(|c| rfc3339(from_ms(c.started_at_ms))),
            })
        });
        json!({
            "streamArn": self.stream_arn,
            "tableName": self.table_name,
            "status": status_name(&self.description.stream_status),
            "store": store,
            "shards": shards,
            "vanished": vanished,
            "notes": self.notes(),
        })
    }

    fn human(&self) -> String {
        let mut out = String::new();
        let mut header = vec![
            ("stream", self.stream_arn.clone()),
            (
                "table",
                self.table_name.clone().unwrap_or_else(|| "?".to_owned()),
            ),
            ("status", status_name(&self.description.stream_status)),
        ];
        if let Some((store, stored)) = self.store {
            let mut line = format!(
                "{} ({}), application {:?}",
                store.path.display(),
                store.kind_name(),
                store.application
            );
            if let Some(c) = &stored.checkpoints {
                line.push_str(&format!(
                    ", first started {}",
                    rfc3339(from_ms(c.started_at_ms))
                ));
            }
            header.push(("positions", line));
        }
        out.push_str(&columns(
            &header
                .into_iter()
                .map(|(k, v)| vec![format!("{k}:"), v])
                .collect::<Vec<_>>(),
        ));
        out.push('\n');

        let with_store = self.store.is_some();
        let mut table = vec![{
            let mut h = vec!["SHARD", "STATE", "SEQUENCE NUMBERS"];
            if with_store {
                h.extend(["CHECKPOINT", "POSITION"]);
            }
            h.into_iter().map(str::to_owned).collect::<Vec<_>>()
        }];
        for row in &self.rows {
            let s = row.shard;
            let mut cells = vec![
                format!("{}{}", "  ".repeat(row.depth), s.shard_id),
                if s.is_closed() { "closed" } else { "open" }.to_owned(),
                format!(
                    "{}..{}",
                    s.starting_sequence_number
                        .as_ref()
                        .map_or("?", |n| n.as_str()),
                    s.ending_sequence_number.as_ref().map_or("", |n| n.as_str())
                ),
            ];
            if let Some(cp) = self.checkpoint(&s.shard_id) {
                cells.push(checkpoint_text(cp));
                cells.push(row.probe.as_ref().map(position_text).unwrap_or_default());
            }
            table.push(cells);
        }
        if self.rows.is_empty() {
            out.push_str("no shards listed\n");
        } else {
            out.push_str(&columns(&table));
        }

        let vanished = self.vanished();
        if !vanished.is_empty() {
            out.push_str("\nstored shards no longer listed:\n");
            let rows: Vec<Vec<String>> = vanished
                .iter()
                .map(|v| {
                    vec![
                        format!("  {}", v.shard_id),
                        checkpoint_text(Some(v.checkpoint)),
                        if v.gap {
                            "GAP: not read to its end; its remaining records are gone"
                        } else {
                            "ended before it was trimmed: fine"
                        }
                        .to_owned(),
                    ]
                })
                .collect();
            out.push_str(&columns(&rows));
        }

        out.push('\n');
        out.push_str(&self.summary(&vanished));
        for note in self.notes() {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    fn summary(&self, vanished: &[Vanished<'_>]) -> String {
        let open = self.rows.iter().filter(|r| !r.shard.is_closed()).count();
        let mut line = format!(
            "{} shard{}, {open} open",
            self.rows.len(),
            if self.rows.len() == 1 { "" } else { "s" }
        );
        if self.store.is_some() {
            let mut counts: Vec<(Position, usize)> = Vec::new();
            for p in self.rows.iter().filter_map(|r| r.probe.as_ref()) {
                match counts.iter_mut().find(|(q, _)| *q == p.position) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((p.position, 1)),
                }
            }
            counts.sort_by_key(|(p, _)| *p as u8);
            let parts: Vec<String> = counts
                .iter()
                .map(|(p, n)| format!("{n} {}", p.name().replace('_', " ")))
                .collect();
            if !parts.is_empty() {
                line.push_str(&format!("; {}", parts.join(", ")));
            }
            let gaps = self
                .rows
                .iter()
                .filter(|r| {
                    r.probe
                        .as_ref()
                        .is_some_and(|p| p.position == Position::Trimmed)
                })
                .count()
                + vanished.iter().filter(|v| v.gap).count();
            if gaps > 0 {
                line.push_str(&format!("; GAPS in {gaps} shard(s)"));
            }
        }
        line.push('\n');
        line
    }
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn status_name(status: &StreamStatus) -> String {
    match status {
        StreamStatus::Enabling => "ENABLING".to_owned(),
        StreamStatus::Enabled => "ENABLED".to_owned(),
        StreamStatus::Disabling => "DISABLING".to_owned(),
        StreamStatus::Disabled => "DISABLED".to_owned(),
        StreamStatus::Unknown(s) if !s.is_empty() => s.clone(),
        other => format!("{other:?}"),
    }
}

fn checkpoint_json(cp: Option<&ShardCheckpoint>) -> Value {
    match cp {
        None => json!({ "state": "none" }),
        Some(ShardCheckpoint::Discovered { from, .. }) => {
            json!({ "state": "discovered", "from": from.as_ref().map(|s| s.as_str()) })
        }
        Some(ShardCheckpoint::Ended) => json!({ "state": "ended" }),
        Some(ShardCheckpoint::Processed { sequence_number }) => {
            json!({ "state": "processed", "sequenceNumber": sequence_number.as_str() })
        }
        Some(ShardCheckpoint::Latest { since_ms }) => {
            json!({ "state": "latest", "since": rfc3339(from_ms(*since_ms)), "sinceMs": since_ms })
        }
    }
}

fn checkpoint_text(cp: Option<&ShardCheckpoint>) -> String {
    match cp {
        None => "none".to_owned(),
        Some(ShardCheckpoint::Discovered { from: None, .. }) => "none (discovered)".to_owned(),
        Some(ShardCheckpoint::Discovered { from: Some(s), .. }) => {
            format!("none (reading from {s})")
        }
        Some(ShardCheckpoint::Ended) => "ended".to_owned(),
        Some(ShardCheckpoint::Processed { sequence_number }) => {
            format!("processed {sequence_number}")
        }
        Some(ShardCheckpoint::Latest { since_ms }) => {
            format!("latest bookmark {}", rfc3339(from_ms(*since_ms)))
        }
    }
}

fn position_text(p: &Probe) -> String {
    let unread = || {
        let n = p.unread.unwrap_or(0);
        let oldest = match p.oldest_unread_age {
            Some(age) => format!("oldest {} ago", short_age(age)),
            None => "age unknown".to_owned(),
        };
        format!("{n}{} unread, {oldest}", if p.page_full { "+" } else { "" })
    };
    let detail = p.detail.as_deref().unwrap_or("");
    match p.position {
        Position::CaughtUp => "caught up".to_owned(),
        Position::Ended => "ended".to_owned(),
        Position::Behind => format!("behind: {}", unread()),
        Position::GapRisk => format!("GAP RISK: {} (trimmed at 24 h)", unread()),
        Position::Trimmed => format!("TRIMMED: {detail}"),
        Position::Unknown => format!("unknown: {detail}"),
    }
}

/// `42s`, `3m05s`, `20h07m`.
fn short_age(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    }
}

/// Rows as aligned columns, two spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, start: u128) -> Shard {
        Shard {
            shard_id: id.to_owned(),
            parent_shard_id: parent.map(str::to_owned),
            starting_sequence_number: Some(format!("{start:021}").parse().expect("seq")),
            ending_sequence_number: None,
        }
    }

    #[test]
    fn shards_in_tree_order() {
        let shards = vec![
            shard("c", Some("b"), 30),
            shard("b2", Some("a"), 25),
            shard("b", Some("a"), 20),
            shard("a", Some("gone"), 10),
            shard("z", None, 5),
            // A cycle DynamoDB never makes: still shown.
            shard("x", Some("y"), 1),
            shard("y", Some("x"), 2),
        ];
        let order: Vec<(&str, usize)> = tree_order(&shards)
            .into_iter()
            .map(|(i, d)| (shards[i].shard_id.as_str(), d))
            .collect();
        assert_eq!(
            order,
            [
                ("z", 0),
                ("a", 0),
                ("b", 1),
                ("c", 2),
                ("b2", 1),
                ("x", 0),
                ("y", 1)
            ]
        );
    }

    #[test]
    fn stream_arns_are_checked() {
        use dynamodb_stream::source::check_stream_arn;
        assert!(check_stream_arn(
            "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2024-01-01T00:00:00.000"
        )
        .is_ok());
        for bad in ["", "orders", "arn:aws:dynamodb:us-east-1:0:table/t"] {
            assert!(check_stream_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uri_paths_are_escaped() {
        assert_eq!(
            uri_path(Path::new("/tmp/a b/r%?#.sqlite")),
            "/tmp/a%20b/r%25%3F%23.sqlite"
        );
    }

    #[test]
    fn columns_align() {
        let text = columns(&[
            vec!["A".into(), "BB".into(), "C".into()],
            vec!["aaa".into(), "b".into(), "".into()],
        ]);
        assert_eq!(text, "A    BB  C\naaa  b\n");
        assert_eq!(short_age(Duration::from_secs(42)), "42s");
        assert_eq!(short_age(Duration::from_secs(185)), "3m05s");
        assert_eq!(short_age(Duration::from_secs(20 * 3600 + 420)), "20h07m");
    }
}
