//! `ddbstream tail`: every record of a stream as a JSON line on stdout.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use aws_config::SdkConfig;
use dynamodb_stream::checkpoint::FileCheckpointStore;
use dynamodb_stream::events::GapAction;
use dynamodb_stream::filter::{FilterCriteria, FilterPattern};
use dynamodb_stream::json::{write_record, RecordFormat, RecordSource};
use dynamodb_stream::lease::DynamoDbLeaseStore;
use dynamodb_stream::source::{DescribeStreamRequest, StreamsApi};
use dynamodb_stream::status::HealthProblem;
use dynamodb_stream::{Batch, Consumer, ConsumerEvent, HandlerError, StartPosition};
use tokio::sync::{broadcast, Notify};

use crate::fail::{explain, stream_not_found, Ended, Failure, Setup};
use crate::http::Endpoints;
use crate::otlp::Metrics;
use crate::output::Log;
use crate::start::{first_call, without_retries};
use crate::{stopped, unless_stopped, StartFrom, Stop, TailArgs};

/// The application name that keys `tail`'s checkpoints in a `--checkpoint` file.
pub(crate) const APPLICATION: &str = "ddbstream-tail";

/// Stdout for records; notices when the reader went away.
struct Printer {
    format: RecordFormat,
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
        let from = RecordSource {
            shard_id: &batch.shard().shard_id,
            stream_arn: &batch.shard().stream_arn,
        };
        // The whole batch in one buffer, written with one call: records go from the record
        // straight into it (no JSON tree, no copies of images).
        let mut text = Vec::with_capacity(batch.len() * 512);
        for record in batch.records() {
            write_record(&mut text, self.format, &from, record);
            text.push(b'\n');
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(&text).and_then(|()| out.flush()) {
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

pub(crate) async fn run(
    config: &(SdkConfig, Setup),
    args: TailArgs,
    criteria: Option<FilterCriteria>,
    stop: Stop,
) -> Result<Ended, Failure> {
    // A collector URL that cannot be used fails before anything is started.
    let otlp = args.otlp.reader()?;
    // The probes' address next: a port in use fails before anything else is done, and an
    // orchestrator can probe while the consumer starts.
    let (endpoints, prometheus) = args.http.start().await?.unzip();
    let metrics = Metrics::new(prometheus, otlp);
    let ended = tail(config, args, criteria, stop, endpoints, &metrics).await;
    // However it ended (a --once run done, SIGTERM, an error): the last counts go out.
    metrics.finish().await;
    ended
}

async fn tail(
    (aws, setup): &(SdkConfig, Setup),
    args: TailArgs,
    criteria: Option<FilterCriteria>,
    mut stop: Stop,
    endpoints: Option<Endpoints>,
    metrics: &Metrics,
) -> Result<Ended, Failure> {
    // Local files first: an unwritable checkpoint path fails before any call to AWS, and long
    // before the first record would be printed without its position ever being saved.
    let store = match &args.checkpoint {
        Some(path) => {
            let store = FileCheckpointStore::new(path);
            store.check_writable().await.map_err(|e| {
                Failure::new(format!(
                    "cannot keep positions in --checkpoint {}: {e}; choose a file in a \
                     writable directory",
                    path.display()
                ))
                .with_source(e)
            })?;
            Some(store)
        }
        None => None,
    };
    let streams = aws_sdk_dynamodbstreams::Client::new(aws);
    let builder = match (&args.table, &args.stream_arn) {
        (Some(table), _) => {
            let dynamodb = aws_sdk_dynamodb::Client::new(&without_retries(aws));
            let found = first_call("DescribeTable", setup, &mut stop, || {
                Consumer::for_table(&dynamodb, streams.clone(), table)
            })
            .await?;
            match found {
                Ok(builder) => builder,
                Err(signal) => return Ok(stopped(signal, args.once)),
            }
        }
        (None, Some(arn)) => {
            dynamodb_stream::source::check_stream_arn(arn).map_err(|e| explain(e, setup))?;
            // The consumer retries a stream it cannot list for ever; one call first says at
            // once whether the set-up works and the stream exists.
            let probe = aws_sdk_dynamodbstreams::Client::new(&without_retries(aws));
            let listed = first_call("DescribeStream", setup, &mut stop, || async {
                StreamsApi::describe_stream(
                    &probe,
                    DescribeStreamRequest {
                        stream_arn: arn.clone(),
                        limit: Some(1),
                        ..Default::default()
                    },
                )
                .await
                .map_err(dynamodb_stream::Error::from)
            })
            .await
            .map_err(|f| stream_not_found(f, arn))?;
            if let Err(signal) = listed {
                return Ok(stopped(signal, args.once));
            }
            Consumer::builder(streams, arn.clone())
        }
        (None, None) => return Err("pass --table or --stream-arn".into()),
    };
    let printer = Arc::new(Printer {
        format: args.format.record_format(),
        printed: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        closed_notify: Notify::new(),
    });
    let handler_printer = printer.clone();
    let poll = args.poll.clone();
    let probes = args.http.clone();
    let mut builder = builder
        .application_name(APPLICATION)
        .configure(move |c| {
            poll.apply(c);
            probes.apply(c);
        })
        .start_from(match args.from {
            StartFrom::Latest => StartPosition::Latest,
            StartFrom::TrimHorizon => StartPosition::TrimHorizon,
        })
        .handler_fn(move |batch: Batch| {
            let printer = handler_printer.clone();
            async move { printer.print(&batch) }
        });
    if let Some(store) = store {
        builder = builder.checkpoints(store);
    }
    if let Some(criteria) = criteria {
        builder = builder.filter_criteria(criteria);
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
    if let Some(meter) = metrics.meter() {
        builder = builder.meter(meter);
    }
    let events = builder.events();
    let mut consumer = match unless_stopped(&mut stop, builder.spawn()).await {
        Ok(spawned) => spawned.map_err(|e| explain(e, setup))?,
        Err(signal) => return Ok(stopped(signal, args.once)),
    };
    if let Some(endpoints) = &endpoints {
        endpoints.serve(consumer.probe());
    }
    let mut caught_up = std::pin::pin!(consumer.caught_up());
    let from = match args.from {
        StartFrom::Latest => "latest: changes made from now on",
        StartFrom::TrimHorizon => "trim-horizon: every change the stream holds",
    };
    Log::get().info(&format!(
        "ddbstream: tailing {}; shards without a stored position start at {from}",
        consumer.stream_arn()
    ));
    // Subscribed before the start, shown after the line above: no event is missed.
    tokio::spawn(log_events(events));
    enum Next {
        Stopped(dynamodb_stream::Result<()>),
        Stop(Option<crate::fail::Signal>),
        CaughtUp(dynamodb_stream::Result<()>),
    }
    let next = tokio::select! {
        r = consumer.join() => Next::Stopped(r),
        signal = &mut stop => Next::Stop(Some(signal)),
        () = printer.closed_notify.notified() => Next::Stop(None),
        r = &mut caught_up, if args.once => Next::CaughtUp(r),
    };
    match next {
        Next::Stopped(r) => r.map(|()| Ended::Done).map_err(|e| explain(e, setup)),
        Next::CaughtUp(caught_up) => {
            // The consumer's own error, when it stopped with one, says more.
            consumer.shutdown().await.map_err(|e| explain(e, setup))?;
            caught_up.map_err(|e| explain(e, setup))?;
            Log::get().info(&format!(
                "ddbstream: caught up; {} records printed",
                printer.printed.load(Ordering::Relaxed)
            ));
            Ok(Ended::Done)
        }
        Next::Stop(signal) => {
            let r = consumer.shutdown().await;
            // A closed stdout is how `ddbstream tail | head` ends: not a failure.
            if printer.closed.load(Ordering::SeqCst) {
                return Ok(Ended::Done);
            }
            r.map_err(|e| explain(e, setup))?;
            match signal {
                Some(signal) => Ok(stopped(signal, args.once)),
                None => Ok(Ended::Done),
            }
        }
    }
}

/// `--filter` and `--filter-file` as one criteria (ORed), or `None` when neither is given; a
/// pattern that cannot be used is one sentence naming the option, the pattern and the place.
pub(crate) fn filter_criteria(args: &TailArgs) -> Result<Option<FilterCriteria>, Failure> {
    let mut criteria = FilterCriteria::default();
    for (i, text) in args.filters.iter().enumerate() {
        let pattern = FilterPattern::parse(text).map_err(|e| {
            let which = if args.filters.len() == 1 {
                "--filter".to_owned()
            } else {
                format!("--filter #{}", i + 1)
            };
            Failure::new(format!("{which}: {e}")).with_source(e)
        })?;
        criteria = criteria.or(pattern);
    }
    if let Some(path) = &args.filter_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(format!("cannot read --filter-file {}: {e}", path.display()))
                .with_source(e)
        })?;
        let from_file = FilterCriteria::from_json(&text).map_err(|e| {
            Failure::new(format!("--filter-file {}: {e}", path.display())).with_source(e)
        })?;
        for pattern in from_file.patterns() {
            criteria = criteria.or(pattern.clone());
        }
    }
    Ok((!criteria.is_empty()).then_some(criteria))
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
                log.info(&format!("ddbstream: ({n} consumer events not shown)"));
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Some(line) = event_line(&event, false) {
            line.show(log);
        }
    }
}

/// A consumer event as a line, at its level.
pub(crate) enum EventLine {
    /// What happens normally (a shard started or ended, a lease taken): not with `-q`.
    Info(String),
    /// A failure that is being retried: not with `-q`, repeats folded.
    Warn(String, String),
    /// Lost records, a stopped shard: always.
    Error(String),
}

impl EventLine {
    pub(crate) fn show(&self, log: &Log) {
        match self {
            EventLine::Info(text) => log.info(text),
            EventLine::Warn(key, text) => log.warn(key, text),
            EventLine::Error(text) => log.error(text),
        }
    }
}

/// Where a shard worker starts, in words, with the iterator type it opened.
///
/// `bookmarked`: a replicate first run, which bookmarked the stream by time and reads from the
/// shard's oldest record on, skipping what was written before the bookmark.
fn start_words(position: &str, bookmarked: bool) -> String {
    match position {
        "TRIM_HORIZON" if bookmarked => {
            "from the bookmark (TRIM_HORIZON, skipping changes made before it)".to_owned()
        }
        "TRIM_HORIZON" => "from its oldest record (TRIM_HORIZON)".to_owned(),
        "LATEST" => "from now on (LATEST)".to_owned(),
        "AFTER_SEQUENCE_NUMBER" => "after its stored position (AFTER_SEQUENCE_NUMBER)".to_owned(),
        "AT_SEQUENCE_NUMBER" => "from its first record (AT_SEQUENCE_NUMBER)".to_owned(),
        other => format!("at {other}"),
    }
}

/// A log line for a consumer event worth telling the operator about.
pub(crate) fn event_line(event: &ConsumerEvent, bookmarked: bool) -> Option<EventLine> {
    use EventLine::{Error, Info, Warn};
    Some(match event {
        ConsumerEvent::ShardStarted {
            shard_id, position, ..
        } => Info(format!(
            "ddbstream: reading shard {shard_id} {}",
            start_words(position, bookmarked)
        )),
        ConsumerEvent::ShardEnded { shard_id } => {
            Info(format!("ddbstream: shard {shard_id} ended"))
        }
        ConsumerEvent::WorkerRestarted {
            shard_id,
            error,
            backoff,
            ..
        } => Warn(
            format!("restart {shard_id} {error}"),
            format!("ddbstream: shard {shard_id} failed ({error}); retrying in {backoff:?}"),
        ),
        ConsumerEvent::ShardQuarantined { shard_id, error } => Error(format!(
            "ddbstream: shard {shard_id} stopped after repeated failures: {error}"
        )),
        ConsumerEvent::Gap(gap) => Error(format!(
            "ddbstream: records lost in shard {}: {:?}{}",
            gap.shard_id,
            gap.kind,
            if gap.action == GapAction::Stopped {
                " (stopping)"
            } else {
                ""
            }
        )),
        ConsumerEvent::StreamDisabled => Info("ddbstream: the stream was disabled".to_owned()),
        ConsumerEvent::LeaseAcquired {
            shard_id,
            stolen_from,
        } => Info(match stolen_from {
            Some(from) => format!("ddbstream: took the lease of {shard_id} from {from}"),
            None => format!("ddbstream: took the lease of {shard_id}"),
        }),
        ConsumerEvent::LeaseLost { shard_id } => Info(format!(
            "ddbstream: lost the lease of {shard_id}; another worker reads it now"
        )),
        ConsumerEvent::Unhealthy(problem) => match problem {
            HealthProblem::Quarantined { .. } => {
                Error(format!("ddbstream: unhealthy: {}", problem_text(problem)))
            }
            _ => Warn(
                format!("unhealthy {problem:?}"),
                format!("ddbstream: unhealthy: {}", problem_text(problem)),
            ),
        },
        ConsumerEvent::Recovered(problem) => {
            Info(format!("ddbstream: recovered: {}", problem_text(problem)))
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
