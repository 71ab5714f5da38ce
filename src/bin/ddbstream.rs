//! `ddbstream`: tail a DynamoDB stream, replicate a table to SQLite, show where a consumer
//! stands in a stream.
//!
//! Endpoint, region and credentials come from the AWS configuration chain (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_PROFILE`, environment credentials, SSO, ...); `--endpoint-url` and
//! `--region` override it. Errors are one line on stderr, `ddbstream: <what is wrong>`, with
//! exit code 1 (2 for usage errors). Warnings (a failed call being retried, a worker restart)
//! are lines on stderr too; `RUST_LOG` changes what is shown (default `warn`).

// A binary's crate root looks for modules beside it: these live in `ddbstream/`.
#[path = "ddbstream/output.rs"]
mod output;
#[path = "ddbstream/replicate.rs"]
mod replicate;
#[path = "ddbstream/status.rs"]
mod status;
#[path = "ddbstream/tail.rs"]
mod tail;

use std::path::PathBuf;
use std::process::ExitCode;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// mimalloc: cheaper than the system allocator for records built on one thread and dropped on
/// another (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tail a DynamoDB stream, keep a copy of a table in SQLite, or show where a consumer stands.
#[derive(Debug, Parser)]
#[command(name = "ddbstream", version)]
struct Cli {
    /// Send every request to this endpoint (e.g. http://localhost:8000 for DynamoDB Local);
    /// default: the AWS configuration (AWS_ENDPOINT_URL, profiles).
    #[arg(long, global = true, value_name = "URL", help_heading = "AWS")]
    endpoint_url: Option<String>,

    /// The AWS region; default: the AWS configuration (AWS_REGION, profiles).
    #[arg(long, global = true, help_heading = "AWS")]
    region: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every change of a stream as one JSON object per line, in order per shard.
    Tail(TailArgs),
    /// Copy a table into a SQLite file and keep it up to date from the table's stream.
    Replicate(ReplicateArgs),
    /// Show a stream's shards as a lineage tree, and how far stored positions have read each.
    ///
    /// Positions come from a `tail` checkpoint file (--checkpoint) or a `replicate` database
    /// (--db). Each shard is probed with one GetShardIterator (after the stored position) and
    /// one GetRecords: caught up, behind (how many records on that page, the oldest's age), gap
    /// risk (oldest unread older than 20 h), trimmed (records lost), or ended. Nothing is
    /// written.
    Status(StatusArgs),
}

/// Where `tail` starts on its first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StartFrom {
    /// Only changes made from now on.
    Latest,
    /// Every change the stream still holds (up to 24 hours back).
    TrimHorizon,
}

/// How shards are polled (the library's defaults, docs/semantics.md "Pace").
#[derive(Debug, Clone, Args)]
struct PollArgs {
    /// Wait between GetRecords of a shard that is behind (a backlog): 0 reads at once.
    #[arg(long, value_name = "MS", default_value_t = 0, help_heading = "Polling")]
    catch_up_poll_interval: u64,

    /// Wait between GetRecords of a shard that keeps up (its last page held records).
    #[arg(long, value_name = "MS", default_value_t = 200, help_heading = "Polling",
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    min_poll_interval: u64,

    /// Wait after an empty page: how soon a write to a quiet shard is seen.
    #[arg(long, value_name = "MS", default_value_t = 400, help_heading = "Polling",
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    idle_poll_interval: u64,
}

impl PollArgs {
    fn apply(&self, c: &mut dynamodb_stream::ConsumerConfig) {
        use std::time::Duration;
        c.catch_up_poll_interval = Duration::from_millis(self.catch_up_poll_interval);
        c.min_poll_interval = Duration::from_millis(self.min_poll_interval);
        c.idle_poll_interval = Duration::from_millis(self.idle_poll_interval);
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("stream").required(true).args(["table", "stream_arn"])))]
struct TailArgs {
    /// The table whose stream to tail.
    #[arg(long)]
    table: Option<String>,

    /// The stream to tail.
    #[arg(long, value_name = "ARN")]
    stream_arn: Option<String>,

    /// Where to start the first time (later runs with --checkpoint resume where they stopped).
    #[arg(long, value_enum, default_value_t = StartFrom::Latest)]
    from: StartFrom,

    /// Keep positions in this JSON file, so a restart resumes after the last printed record.
    #[arg(long, value_name = "FILE", conflicts_with = "lease_table")]
    checkpoint: Option<PathBuf>,

    /// Share the stream with other `tail` processes through this DynamoDB lease table (created
    /// if missing): each prints the shards it holds; positions are kept in the table.
    #[arg(long, value_name = "TABLE")]
    lease_table: Option<String>,

    /// This worker's id in the lease table [default: host name and process id].
    #[arg(long, value_name = "ID", requires = "lease_table")]
    worker_id: Option<String>,

    /// How long a lease lasts without renewal: how long a crashed worker's shards wait.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, requires = "lease_table",
          value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_duration: u64,

    /// Print what the stream holds up to now, then exit: every shard read up to where the
    /// stream stood when tail started. With --checkpoint, the next run continues after the
    /// last record this one printed.
    #[arg(long, conflicts_with = "lease_table")]
    once: bool,

    #[command(flatten)]
    poll: PollArgs,
}

#[derive(Debug, Args)]
struct ReplicateArgs {
    /// The table to copy (its stream must carry NEW_IMAGE or NEW_AND_OLD_IMAGES).
    #[arg(long)]
    table: String,

    /// The SQLite file holding the copy (created if missing).
    #[arg(long, value_name = "FILE")]
    db: PathBuf,

    /// Parallel Scan segments for the first copy.
    #[arg(long, default_value_t = dynamodb_stream::replicate::DEFAULT_SEGMENTS,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    segments: u32,

    /// Exit once the copy has caught up with the stream as it was when streaming started
    /// (after the first run's scan; at once on later runs).
    #[arg(long)]
    once: bool,

    /// Items per Scan page (default: 1 MB pages). For tests of interrupted scans.
    #[arg(long, hide = true)]
    scan_page_limit: Option<u32>,

    #[command(flatten)]
    poll: PollArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("stream").required(true).args(["table", "stream_arn"])))]
#[command(group(ArgGroup::new("store").args(["checkpoint", "db"])))]
struct StatusArgs {
    /// The table whose stream to show.
    #[arg(long)]
    table: Option<String>,

    /// The stream to show.
    #[arg(long, value_name = "ARN")]
    stream_arn: Option<String>,

    /// Compare with the positions in this checkpoint file (`tail --checkpoint`, or a
    /// FileCheckpointStore). Read only.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,

    /// Compare with the positions in this replica database (`replicate --db`). Opened read
    /// only.
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,

    /// Whose positions to read [default: ddbstream-tail with --checkpoint, replicate with
    /// --db].
    #[arg(long, value_name = "NAME", requires = "store")]
    application: Option<String>,

    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::init_warnings();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

/// Print the one error line and return exit code 1.
fn fail(message: &str) -> ExitCode {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    output::Log::get().line(&format!("ddbstream: {line}"));
    ExitCode::from(1)
}

async fn run(cli: Cli) -> Result<(), String> {
    // First of all: from here on SIGINT/SIGTERM mean a clean stop, whatever phase it is in.
    let mut stop: Stop = Box::pin(stop_signal()?);
    let Some(config) = unless_stopped(&mut stop, aws_config(&cli)).await else {
        return Ok(());
    };
    let config = config?;
    match cli.command {
        Command::Tail(args) => tail::run(&config, args, stop).await,
        Command::Replicate(args) => replicate::run(&config, args, stop).await,
        // A read-only probe: stopping it early loses nothing.
        Command::Status(args) => unless_stopped(&mut stop, status::run(&config, args))
            .await
            .unwrap_or(Ok(())),
    }
}

/// SIGINT or SIGTERM, as a future that is polled across the phases of a command.
type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn aws_config(cli: &Cli) -> Result<SdkConfig, String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(dynamodb_stream::recommended_timeouts());
    if let Some(url) = &cli.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = &cli.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let config = loader.load().await;
    if config.region().is_none_or(|r| r.as_ref().is_empty()) {
        return Err("no AWS region: pass --region or set AWS_REGION".into());
    }
    Ok(config)
}

/// The message of a library error, without the "invalid argument" prefix for the caller's own
/// mistakes (they read better as is).
fn describe(e: dynamodb_stream::Error) -> String {
    match e {
        dynamodb_stream::Error::InvalidArgument(m) => m,
        other => other.to_string(),
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called, so
/// call it before starting work.
/// Runs `work` unless SIGINT or SIGTERM comes first (`None` then, after a line saying so).
///
/// Why: starting can take long — an unreachable endpoint is retried with back-off, a replica's
/// first scan reads the whole table — and the tool must stay stoppable all along.
async fn unless_stopped<T>(
    stop: &mut Stop,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        r = work => Some(r),
        () = stop.as_mut() => {
            output::Log::get().line("ddbstream: stopped before the stream was read");
            None
        }
    }
}

fn stop_signal() -> Result<impl std::future::Future<Output = ()> + Send, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
