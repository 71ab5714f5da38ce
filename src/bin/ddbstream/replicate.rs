//! `ddbstream replicate`: a table's copy in a SQLite file, kept up to date from its stream.

use std::time::Duration;

use aws_config::SdkConfig;
use dynamodb_stream::replicate::{
    check_table, ReplicaPhase, ReplicaStatus, Replicator, ReplicatorEvent, SqliteReplica,
    TableSource,
};
use tokio::sync::{broadcast, watch};

use crate::output::{clock, thousands, Log};
use crate::tail::event_line;
use crate::{describe, unless_stopped, ReplicateArgs, Stop};

/// How often the progress line is redrawn on a terminal, and printed otherwise.
const REDRAW: Duration = Duration::from_millis(250);
const PRINT: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    aws: &SdkConfig,
    args: ReplicateArgs,
    mut stop: Stop,
) -> Result<(), String> {
    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    let streams = aws_sdk_dynamodbstreams::Client::new(aws);
    // Check the table before the database file is opened (or created): a wrong table name or
    // stream type leaves no file behind.
    let Some(info) = unless_stopped(&mut stop, dynamodb.table_info(&args.table)).await else {
        return Ok(());
    };
    let info = info.map_err(describe)?;
    check_table(&info).map_err(describe)?;
    let sink = SqliteReplica::open(&args.db).await.map_err(describe)?;
    let poll = args.poll.clone();
    let mut builder = Replicator::builder(dynamodb, streams, &args.table, sink)
        .segments(args.segments)
        .configure(move |c| poll.apply(c));
    if let Some(limit) = args.scan_page_limit {
        builder = builder.scan_page_limit(limit);
    }
    let events = builder.events();
    let Some(spawned) = unless_stopped(&mut stop, builder.spawn()).await else {
        return Ok(());
    };
    let mut replicator = spawned.map_err(describe)?;
    Log::get().line(&format!(
        "ddbstream: replicating table {} ({}) into {}",
        info.table_name,
        info.stream_arn,
        args.db.display()
    ));
    // Subscribed before the start, shown after the line above: no event is missed.
    tokio::spawn(log_events(events, args.once));
    tokio::spawn(show_progress(replicator.watch_status()));
    enum Next {
        Done(dynamodb_stream::Result<()>),
        Stop,
    }
    let next = if args.once {
        tokio::select! {
            r = replicator.caught_up() => Next::Done(r),
            () = &mut stop => Next::Stop,
        }
    } else {
        tokio::select! {
            r = replicator.join() => Next::Done(r),
            () = &mut stop => Next::Stop,
        }
    };
    match next {
        Next::Done(Err(e)) => Err(describe(e)),
        Next::Done(Ok(())) | Next::Stop => {
            let status = replicator.status();
            replicator.shutdown().await.map_err(describe)?;
            Log::get().line(&format!(
                "ddbstream: stopped ({} changes applied{})",
                thousands(status.applied_changes),
                if status.is_catching_up() {
                    "; not caught up yet: the next run continues"
                } else {
                    ""
                }
            ));
            Ok(())
        }
    }
}

async fn log_events(mut events: broadcast::Receiver<ReplicatorEvent>, once: bool) {
    let log = Log::get();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let line = match event {
            ReplicatorEvent::Bookmarked { shards, .. } => format!(
                "ddbstream: first run: bookmarked {shards} shard(s) at LATEST; changes from now \
                 on are replayed on top of the scan"
            ),
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
            ReplicatorEvent::Consumer(e) => match event_line(&e) {
                Some(line) => line,
                None => continue,
            },
            _ => continue,
        };
        log.line(&line);
    }
}

/// Draw scan progress while the scan runs.
async fn show_progress(mut status: watch::Receiver<ReplicaStatus>) {
    let log = Log::get();
    let every = if log.is_terminal() { REDRAW } else { PRINT };
    loop {
        tokio::time::sleep(every).await;
        let s = status.borrow_and_update().clone();
        match s.phase {
            ReplicaPhase::Scanning => log.progress(&progress_line(&s)),
            ReplicaPhase::Stopped => return,
            _ => {}
        }
        if status.has_changed().is_err() {
            return;
        }
    }
}

fn progress_line(s: &ReplicaStatus) -> String {
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
