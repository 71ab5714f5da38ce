//! `ddbstream replicate`: a table's copy in a SQLite file or a PostgreSQL database, kept up to
//! date from its stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use dynamodb_stream::replicate::{
    check_table, PostgresReplica, ReplicaPhase, ReplicaSink, ReplicaStatus, Replicator,
    ReplicatorEvent, ScanRate, SqliteReplica, TableSource,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{broadcast, watch};

use crate::fail::{explain, Ended, Failure, Setup};
use crate::http::Endpoints;
use crate::otlp::Metrics;
use crate::output::{clock, rfc3339, thousands, Log};
use crate::start::{first_call, without_retries};
use crate::tail::event_line;
use crate::{stopped, unless_stopped, ReplicateArgs, Stop};

/// How often the progress bar is updated on a terminal, and a progress line printed otherwise.
const REDRAW: Duration = Duration::from_millis(250);
const PRINT: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    config: &(SdkConfig, Setup),
    args: ReplicateArgs,
    stop: Stop,
) -> Result<Ended, Failure> {
    let dest = Destination::of(&args)?;
    // A collector URL that cannot be used fails before anything is started.
    let otlp = args.otlp.reader()?;
    // The probes' address next: a port in use fails before anything else is done, and an
    // orchestrator can probe during the scan.
    let (endpoints, prometheus) = args.http.start().await?.unzip();
    let metrics = Metrics::new(prometheus, otlp);
    let ended = replicate(config, args, dest, stop, endpoints, &metrics).await;
    // However it ended (a --once run done, SIGTERM, an error): the last counts go out.
    metrics.finish().await;
    ended
}

async fn replicate(
    (aws, setup): &(SdkConfig, Setup),
    args: ReplicateArgs,
    dest: Destination,
    mut stop: Stop,
    endpoints: Option<Endpoints>,
    metrics: &Metrics,
) -> Result<Ended, Failure> {
    // Local first: a database that cannot be written fails before any call to AWS.
    if let Destination::Sqlite(path) = &dest {
        check_writable_database(path)?;
    }
    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    let streams = aws_sdk_dynamodbstreams::Client::new(aws);
    // Check the table before the database file is opened (or created): a wrong table name or
    // stream type leaves no file behind.
    let first = aws_sdk_dynamodb::Client::new(&without_retries(aws));
    let info = match first_call("DescribeTable", setup, &mut stop, || {
        table_info(&first, &streams, &args.table)
    })
    .await?
    {
        Ok(info) => info,
        Err(signal) => return Ok(stopped(signal, args.once)),
    };
    check_table(&info).map_err(|e| explain(e, setup))?;
    let sink: Arc<dyn ReplicaSink> = match &dest {
        Destination::Sqlite(path) => Arc::new(
            SqliteReplica::open(path)
                .await
                .map_err(|e| explain(e, setup))?,
        ),
        Destination::Postgres(url) => Arc::new(
            PostgresReplica::builder(url.clone())
                .schema(args.pg_schema.clone())
                .connections(args.segments.clamp(1, 16) as usize)
                .connect()
                .await
                .map_err(|e| explain(e, setup))?,
        ),
    };
    let poll = args.poll.clone();
    let probes = args.http.clone();
    let mut builder = Replicator::builder(dynamodb, streams, &args.table, sink)
        .segments(args.segments)
        .catch_up_every(args.catch_up_every)
        .configure(move |c| {
            poll.apply(c);
            probes.apply(c);
        });
    if let Some(meter) = metrics.meter() {
        builder = builder.meter(meter);
    }
    if let Some(limit) = args.scan_page_limit {
        builder = builder.scan_page_limit(limit);
    }
    if let Some(units) = args.scan_rate {
        builder = builder.scan_rate(ScanRate::ReadUnits(units));
    }
    if let Some(items) = args.scan_rate_items {
        builder = builder.scan_rate(ScanRate::Items(items));
    }
    let events = builder.events();
    let mut replicator = match unless_stopped(&mut stop, builder.spawn()).await {
        Ok(spawned) => spawned.map_err(|e| explain(e, setup))?,
        Err(signal) => return Ok(stopped(signal, args.once)),
    };
    if let Some(endpoints) = &endpoints {
        endpoints.serve(replicator.probe());
    }
    Log::get().info(&format!(
        "ddbstream: replicating table {} ({}) into {}",
        info.table_name, info.stream_arn, dest
    ));
    // Subscribed before the start, shown after the line above: no event is missed.
    tokio::spawn(log_events(events, args.once));
    let every = args.progress_every.map_or(PRINT, Duration::from_millis);
    let progress = tokio::spawn(show_progress(replicator.watch_status(), every));
    enum Next {
        Done(dynamodb_stream::Result<()>),
        Stop(crate::fail::Signal),
    }
    let next = if args.once {
        tokio::select! {
            r = replicator.caught_up() => Next::Done(r),
            signal = &mut stop => Next::Stop(signal),
        }
    } else {
        tokio::select! {
            r = replicator.join() => Next::Done(r),
            signal = &mut stop => Next::Stop(signal),
        }
    };
    progress.abort();
    Log::get().clear_bar();
    match next {
        Next::Done(Err(e)) => Err(explain(e, setup)),
        Next::Done(Ok(())) | Next::Stop(_) => {
            let status = replicator.status();
            replicator.shutdown().await.map_err(|e| explain(e, setup))?;
            Log::get().info(&format!(
                "ddbstream: stopped ({} changes applied{})",
                thousands(status.applied_changes),
                if status.is_catching_up() {
                    "; not caught up yet: the next run continues"
                } else {
                    ""
                }
            ));
            Ok(match next {
                Next::Stop(signal) => stopped(signal, args.once),
                Next::Done(_) => Ended::Done,
            })
        }
    }
}

/// Where the copy goes.
enum Destination {
    Sqlite(PathBuf),
    /// The URL as given (it may hold a password: shown only without it).
    Postgres(String),
}

impl Destination {
    fn of(args: &ReplicateArgs) -> Result<Self, Failure> {
        if let Some(path) = &args.db {
            return Ok(Self::Sqlite(path.clone()));
        }
        let to = args.to.as_deref().unwrap_or_default();
        if to.starts_with("postgres://") || to.starts_with("postgresql://") {
            return Ok(Self::Postgres(to.to_owned()));
        }
        let path = to.strip_prefix("sqlite:").unwrap_or(to);
        if path.is_empty() || path.contains("://") {
            return Err(Failure::new(format!(
                "--to {to:?} is neither a SQLite file nor a postgres:// URL"
            )));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => write!(f, "{}", shown_url(url)),
        }
    }
}

/// A PostgreSQL URL as it may be shown: `postgres://user:password@host/db` →
/// `postgres://user@host/db`.
pub(crate) fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let shown = match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{user}@{host}")
        }
        None => rest.to_owned(),
    };
    format!("{scheme}://{shown}")
}

/// The table and its stream, found by the library's classified DescribeTable first (which says
/// "no credentials", "access denied" or "not found" in plain words), then read as the
/// replicator needs it.
pub(crate) async fn table_info(
    dynamodb: &aws_sdk_dynamodb::Client,
    streams: &aws_sdk_dynamodbstreams::Client,
    table: &str,
) -> dynamodb_stream::Result<dynamodb_stream::replicate::TableInfo> {
    dynamodb_stream::Consumer::for_table(dynamodb, streams.clone(), table).await?;
    dynamodb.table_info(table).await
}

/// The replica's file and directory can be written: SQLite needs the directory for its `-wal`
/// and `-shm` files, and an existing file must be writable. Checked before anything is read, so
/// a replica that could never be saved is not bootstrapped from a whole-table scan first.
fn check_writable_database(path: &Path) -> Result<(), Failure> {
    let shown = path.display();
    let refuse = |what: String| {
        Failure::new(format!(
            "cannot write the replica {shown}: {what}; choose a --db path in a writable directory"
        ))
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(refuse(format!("{} is not a directory", dir.display()))),
        Err(e) => return Err(refuse(format!("{}: {e}", dir.display()))),
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(refuse("it is a directory".to_owned())),
        Ok(_) => {
            // Opened for writing, never truncated: nothing changes.
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| refuse(e.to_string()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(refuse(e.to_string())),
    }
    // A file can be created beside it (what SQLite's -wal and -shm files need).
    let probe = dir.join(format!(".ddbstream-probe.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| refuse(format!("cannot create files in {}: {e}", dir.display())))?;
    std::fs::remove_file(&probe)
        .map_err(|e| refuse(format!("cannot remove {}: {e}", probe.display())))
}

async fn log_events(mut events: broadcast::Receiver<ReplicatorEvent>, once: bool) {
    let log = Log::get();
    // A first run reads each shard from the bookmark: say so instead of a bare TRIM_HORIZON.
    let mut bookmarked = false;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let line = match event {
            ReplicatorEvent::Bookmarked { shards, at_ms } => {
                bookmarked = true;
                let at = std::time::UNIX_EPOCH + Duration::from_millis(at_ms);
                format!(
                    "ddbstream: first run: bookmarked the stream ({shards} shard{}) at {}; \
                     changes made from then on are applied on top of the scan",
                    if shards == 1 { "" } else { "s" },
                    rfc3339(at)
                )
            }
            ReplicatorEvent::ScanStarted {
                total_segments,
                resumed: false,
            } => format!("ddbstream: scanning in {total_segments} segments"),
            ReplicatorEvent::ScanStarted {
                total_segments,
                resumed: true,
            } => format!("ddbstream: resuming the interrupted scan ({total_segments} segments)"),
            ReplicatorEvent::ScanCompleted { items, elapsed } => format!(
                "ddbstream: scan complete: {} items in {}",
                thousands(items),
                clock(elapsed)
            ),
            ReplicatorEvent::ScanSkipped { items } => format!(
                "ddbstream: scan already complete ({} items); resuming from the stored \
                 checkpoints",
                thousands(items)
            ),
            ReplicatorEvent::ScanRestarted { reason } => {
                format!("ddbstream: starting the copy over: {reason}")
            }
            ReplicatorEvent::StreamStarted => {
                "ddbstream: applying the stream; catching up".to_owned()
            }
            ReplicatorEvent::CaughtUp => {
                if once {
                    "ddbstream: caught up".to_owned()
                } else {
                    "ddbstream: caught up; following the stream (Ctrl-C stops)".to_owned()
                }
            }
            ReplicatorEvent::Consumer(e) => {
                if let Some(line) = event_line(&e, bookmarked) {
                    line.show(log);
                }
                continue;
            }
            _ => continue,
        };
        log.info(&line);
    }
}

/// Show the bootstrap's progress until the replica is live: the scan (items, rate, ETA), then
/// the catch-up (shards still behind, changes applied). On a terminal a bar (indicatif), redrawn
/// in place; otherwise a line when a phase begins and every `every`.
async fn show_progress(mut status: watch::Receiver<ReplicaStatus>, every: Duration) {
    let log = Log::get();
    if !log.chatty() {
        return;
    }
    let terminal = log.is_terminal();
    let mut bar: Option<(ReplicaPhase, ProgressBar)> = None;
    let mut printed: Option<(ReplicaPhase, tokio::time::Instant)> = None;
    // The most shards seen behind at once: the catch-up's total.
    let mut most_behind = 0;
    loop {
        let s = status.borrow_and_update().clone();
        if let Some(behind) = s.shards_behind {
            most_behind = most_behind.max(behind);
        }
        match s.phase {
            ReplicaPhase::Scanning | ReplicaPhase::CatchingUp if terminal => {
                if bar.as_ref().is_none_or(|(phase, _)| *phase != s.phase) {
                    log.clear_bar();
                    let new = new_bar(&s);
                    log.show_bar(new.clone());
                    bar = Some((s.phase, new));
                }
                if let Some((_, bar)) = &bar {
                    update_bar(bar, &s, most_behind);
                }
            }
            ReplicaPhase::Scanning | ReplicaPhase::CatchingUp => {
                let now = tokio::time::Instant::now();
                let due = match printed {
                    Some((phase, at)) => phase != s.phase || now.duration_since(at) >= every,
                    None => true,
                };
                if due {
                    log.info(&progress_line(&s, most_behind));
                    printed = Some((s.phase, now));
                }
            }
            ReplicaPhase::Live | ReplicaPhase::Stopped => {
                log.clear_bar();
                return;
            }
            _ => {}
        }
        // Woken by a change (a new phase shows at once), or to redraw / print on time.
        let wait = if terminal { REDRAW } else { every };
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    log.clear_bar();
                    return;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn new_bar(s: &ReplicaStatus) -> ProgressBar {
    let (len, template) = match s.phase {
        ReplicaPhase::Scanning => match s.estimated_items.filter(|t| *t > 0) {
            Some(total) => (
                Some(total),
                "ddbstream: scanning [{bar:25}] {human_pos}/~{human_len} items, {wide_msg}",
            ),
            None => (
                None,
                "ddbstream: scanning {spinner} {human_pos} items, {wide_msg}",
            ),
        },
        _ => (None, "ddbstream: catching up {spinner} {wide_msg}"),
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr()).with_style(style)
}

fn update_bar(bar: &ProgressBar, s: &ReplicaStatus, most_behind: usize) {
    match s.phase {
        ReplicaPhase::Scanning => {
            bar.set_position(s.scanned_items);
            let mut msg = format!("{} items/s", thousands(s.items_per_second as u64));
            if let Some(eta) = s.eta {
                msg.push_str(&format!(", ETA {}", clock(eta)));
            }
            bar.set_message(msg);
        }
        _ => bar.set_message(catch_up_text(s, most_behind)),
    }
    bar.tick();
}

/// `2 of 3 shards behind, 1,234 changes applied`.
fn catch_up_text(s: &ReplicaStatus, most_behind: usize) -> String {
    let Some(behind) = s.shards_behind else {
        return format!(
            "starting on the stream, {} changes applied",
            thousands(s.applied_changes)
        );
    };
    format!(
        "{behind} of {} shard{} behind, {} changes applied",
        most_behind.max(behind),
        if most_behind.max(behind) == 1 {
            ""
        } else {
            "s"
        },
        thousands(s.applied_changes)
    )
}

/// One progress line (when stderr is not a terminal).
fn progress_line(s: &ReplicaStatus, most_behind: usize) -> String {
    if s.phase == ReplicaPhase::CatchingUp {
        return format!("ddbstream: catching up: {}", catch_up_text(s, most_behind));
    }
    let mut line = format!("ddbstream: scanned {}", thousands(s.scanned_items));
    if let Some(total) = s.estimated_items.filter(|t| *t > 0) {
        let pct = (s.scanned_items as f64 / total as f64 * 100.0).min(100.0);
        line.push_str(&format!(" of ~{} items ({pct:.0}%)", thousands(total)));
    } else {
        line.push_str(" items");
    }
    line.push_str(&format!(
        ", {} items/s",
        thousands(s.items_per_second as u64)
    ));
    if let Some(eta) = s.eta {
        line.push_str(&format!(", ETA {}", clock(eta)));
    }
    line
}
