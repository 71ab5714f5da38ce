//! `ddbstream tail`: every record of a stream as a JSON line on stdout.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use aws_config::SdkConfig;
use dynamodb_stream::checkpoint::FileCheckpointStore;
use dynamodb_stream::events::GapAction;
use dynamodb_stream::lease::DynamoDbLeaseStore;
use dynamodb_stream::status::HealthProblem;
use dynamodb_stream::{Batch, Consumer, ConsumerEvent, HandlerError, StartPosition};
use tokio::sync::{broadcast, Notify};

use crate::output::{record_json, Log};
use crate::{describe, unless_stopped, StartFrom, Stop, TailArgs};

/// The application name that keys `tail`'s checkpoints in a `--checkpoint` file.
pub(crate) const APPLICATION: &str = "ddbstream-tail";

/// Stdout for records; notices when the reader went away.
struct Printer {
    /// Records printed.
    printed: AtomicU64,
    closed: AtomicBool,
    closed_notify: Notify,
}

impl Printer {
    /// Print a batch and flush. A failed write (a closed pipe) acknowledges nothing, so the
    /// checkpoint never passes a record that was not printed, and asks for a clean stop.
    fn print(&self, batch: &Batch) -> Result<(), HandlerError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(HandlerError::msg("stdout is closed"));
        }
        let shard_id = &batch.shard().shard_id;
        let mut text = String::new();
        for record in batch.records() {
            text.push_str(&record_json(shard_id, record).to_string());
            text.push('\n');
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {
                self.printed
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.closed.store(true, Ordering::SeqCst);
                self.closed_notify.notify_one();
                Err(HandlerError::msg(format!("cannot write to stdout: {e}")))
            }
        }
    }
}

pub(crate) async fn run(aws: &SdkConfig, args: TailArgs, mut stop: Stop) -> Result<(), String> {
    let streams = aws_sdk_dynamodbstreams::Client::new(aws);
    let builder = match (&args.table, &args.stream_arn) {
        (Some(table), _) => {
            let dynamodb = aws_sdk_dynamodb::Client::new(aws);
            let found = Consumer::for_table(&dynamodb, streams, table);
            let Some(found) = unless_stopped(&mut stop, found).await else {
                return Ok(());
            };
            found.map_err(describe)?
        }
        (None, Some(arn)) => Consumer::builder(streams, arn.clone()),
        (None, None) => return Err("pass --table or --stream-arn".into()),
    };
    let printer = Arc::new(Printer {
        printed: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        closed_notify: Notify::new(),
    });
    let handler_printer = printer.clone();
    let poll = args.poll.clone();
    let mut builder = builder
        .application_name(APPLICATION)
        .configure(move |c| poll.apply(c))
        .start_from(match args.from {
            StartFrom::Latest => StartPosition::Latest,
            StartFrom::TrimHorizon => StartPosition::TrimHorizon,
        })
        .handler_fn(move |batch: Batch| {
            let printer = handler_printer.clone();
            async move { printer.print(&batch) }
        });
    if let Some(path) = &args.checkpoint {
        builder = builder.checkpoints(FileCheckpointStore::new(path));
    }
    if let Some(table) = &args.lease_table {
        let worker = args.worker_id.clone().unwrap_or_else(default_worker_id);
        let store = DynamoDbLeaseStore::new(aws_sdk_dynamodb::Client::new(aws), table.clone());
        let duration = std::time::Duration::from_secs(args.lease_duration);
        builder = builder.leases(store, worker).configure(|c| {
            c.lease.lease_duration = duration;
            c.lease.renew_interval = duration / 3;
            c.lease.safety_margin = duration / 5;
        });
    }
    let events = builder.events();
    let Some(spawned) = unless_stopped(&mut stop, builder.spawn()).await else {
        return Ok(());
    };
    let mut consumer = spawned.map_err(describe)?;
    let mut caught_up = std::pin::pin!(consumer.caught_up());
    let from = match args.from {
        StartFrom::Latest => "latest",
        StartFrom::TrimHorizon => "trim-horizon",
    };
    Log::get().line(&format!(
        "ddbstream: tailing {} (first start: {from})",
        consumer.stream_arn()
    ));
    // Subscribed before the start, shown after the line above: no event is missed.
    tokio::spawn(log_events(events));
    enum Next {
        Stopped(dynamodb_stream::Result<()>),
        Stop,
        CaughtUp(dynamodb_stream::Result<()>),
    }
    let next = tokio::select! {
        r = consumer.join() => Next::Stopped(r),
        () = &mut stop => Next::Stop,
        () = printer.closed_notify.notified() => Next::Stop,
        r = &mut caught_up, if args.once => Next::CaughtUp(r),
    };
    match next {
        Next::Stopped(r) => r.map_err(describe),
        Next::CaughtUp(caught_up) => {
            // The consumer's own error, when it stopped with one, says more.
            consumer.shutdown().await.map_err(describe)?;
            caught_up.map_err(describe)?;
            Log::get().line(&format!(
                "ddbstream: caught up; {} records printed",
                printer.printed.load(Ordering::Relaxed)
            ));
            Ok(())
        }
        Next::Stop => {
            let r = consumer.shutdown().await;
            // A closed stdout is how `ddbstream tail | head` ends: not a failure.
            if printer.closed.load(Ordering::SeqCst) {
                return Ok(());
            }
            r.map_err(describe)
        }
    }
}

/// A worker id unique on this machine: the host name and the process id.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Log what the consumer reports, one line each, on stderr.
async fn log_events(mut events: broadcast::Receiver<ConsumerEvent>) {
    let log = Log::get();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                log.line(&format!("ddbstream: ({n} consumer events not shown)"));
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Some(line) = event_line(&event) {
            log.line(&line);
        }
    }
}

/// A log line for a consumer event worth telling the operator about.
pub(crate) fn event_line(event: &ConsumerEvent) -> Option<String> {
    Some(match event {
        ConsumerEvent::ShardStarted {
            shard_id, position, ..
        } => format!("ddbstream: reading shard {shard_id} ({position})"),
        ConsumerEvent::ShardEnded { shard_id } => format!("ddbstream: shard {shard_id} ended"),
        ConsumerEvent::WorkerRestarted {
            shard_id,
            error,
            backoff,
            ..
        } => format!("ddbstream: shard {shard_id} failed ({error}); retrying in {backoff:?}"),
        ConsumerEvent::ShardQuarantined { shard_id, error } => {
            format!("ddbstream: shard {shard_id} stopped after repeated failures: {error}")
        }
        ConsumerEvent::Gap(gap) => format!(
            "ddbstream: records lost in shard {}: {:?}{}",
            gap.shard_id,
            gap.kind,
            if gap.action == GapAction::Stopped {
                " (stopping)"
            } else {
                ""
            }
        ),
        ConsumerEvent::StreamDisabled => "ddbstream: the stream was disabled".to_owned(),
        ConsumerEvent::LeaseAcquired {
            shard_id,
            stolen_from,
        } => match stolen_from {
            Some(from) => format!("ddbstream: took the lease of {shard_id} from {from}"),
            None => format!("ddbstream: took the lease of {shard_id}"),
        },
        ConsumerEvent::LeaseLost { shard_id } => {
            format!("ddbstream: lost the lease of {shard_id}; another worker reads it now")
        }
        ConsumerEvent::Unhealthy(problem) => {
            format!("ddbstream: unhealthy: {}", problem_text(problem))
        }
        ConsumerEvent::Recovered(problem) => {
            format!("ddbstream: recovered: {}", problem_text(problem))
        }
        _ => return None,
    })
}

/// A watchdog finding in words.
fn problem_text(problem: &HealthProblem) -> String {
    match problem {
        HealthProblem::ShardStalled { shard_id, for_ } => {
            format!("shard {shard_id} has had no successful read for {for_:?}")
        }
        HealthProblem::HandlerStuck { shard_id, for_ } => {
            format!("the output of shard {shard_id} has been blocked for {for_:?}")
        }
        HealthProblem::ChildrenMissing { shard_id, for_ } => {
            format!("shard {shard_id} ended {for_:?} ago and no child shard was found")
        }
        HealthProblem::Quarantined { shard_id } => format!("shard {shard_id} is quarantined"),
        other => format!("{other:?}"),
    }
}
