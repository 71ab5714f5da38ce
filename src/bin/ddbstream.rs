//! `ddbstream`: tail a DynamoDB stream, replicate a table to SQLite, show where a consumer
//! stands in a stream.
//!
//! Endpoint, region and credentials come from the AWS configuration chain (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_PROFILE`, environment credentials, SSO, ...); `--endpoint-url`, `--region`
//! and `--profile` override it. An error is one plain sentence on stderr, `ddbstream: <what is
//! wrong: what to do>` (`-v` adds its causes); exit codes are in [`EXIT_CODES`]. Warnings (a
//! failed call being retried) are lines on stderr too, repeats folded; `-q`, `-v` and
//! `RUST_LOG` change what is shown. docs/cli.md is the manual.

// A binary's crate root looks for modules beside it: these live in `ddbstream/`.
#[path = "ddbstream/fail.rs"]
mod fail;
#[path = "ddbstream/http.rs"]
mod http;
#[path = "ddbstream/otlp.rs"]
mod otlp;
#[path = "ddbstream/output.rs"]
mod output;
#[path = "ddbstream/replicate.rs"]
mod replicate;
#[path = "ddbstream/start.rs"]
mod start;
#[path = "ddbstream/status.rs"]
mod status;
#[path = "ddbstream/tail.rs"]
mod tail;

use std::path::PathBuf;
use std::process::ExitCode;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::fail::{Ended, Failure, Setup, Signal};
use crate::output::{Log, Verbosity};

/// mimalloc: cheaper than the system allocator for records built on one thread and dropped on
/// another (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The exit codes, as `--help` shows them (docs/cli.md says the same).
const EXIT_CODES: &str = "\
Exit codes:
  0    done (tail and replicate without --once: also when stopped by SIGTERM)
  1    error (one line on stderr says what is wrong and what to do)
  2    usage error
  3    status --check: a shard is behind, at risk of losing records, or has lost some
  130  interrupted by SIGINT (Ctrl-C)
  143  terminated by SIGTERM before a --once run or status was done";

/// Tail a DynamoDB stream, keep a copy of a table in SQLite, or show where a consumer stands.
#[derive(Debug, Parser)]
#[command(name = "ddbstream", version, after_help = EXIT_CODES)]
struct Cli {
    /// Send every request to this endpoint (e.g. http://localhost:8000 for DynamoDB Local);
    /// default: the AWS configuration (AWS_ENDPOINT_URL, profiles).
    #[arg(long, global = true, value_name = "URL", help_heading = "AWS")]
    endpoint_url: Option<String>,

    /// The AWS region; default: the AWS configuration (AWS_REGION, profiles).
    #[arg(long, global = true, help_heading = "AWS")]
    region: Option<String>,

    /// The AWS profile for credentials and settings; default: AWS_PROFILE, else "default".
    #[arg(long, global = true, value_name = "NAME", help_heading = "AWS")]
    profile: Option<String>,

    /// Say less: errors and lost records only (no progress, no warnings).
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Output"
    )]
    quiet: bool,

    /// Say more: every retry, the causes of an error (-vv, -vvv: the library's and the AWS
    /// SDK's debug logs). RUST_LOG, when set, chooses the log lines instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Output")]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every change of a stream as one JSON object per line, in order per shard.
    #[command(after_help = TAIL_EXAMPLES)]
    Tail(TailArgs),
    /// Copy a table into a SQLite file and keep it up to date from the table's stream.
    #[command(after_help = REPLICATE_EXAMPLES)]
    Replicate(ReplicateArgs),
    /// Show a stream's shards as a lineage tree, and how far stored positions have read each.
    ///
    /// Positions come from a `tail` checkpoint file (--checkpoint) or a `replicate` database
    /// (--db). Each shard is probed with one GetShardIterator (after the stored position) and
    /// one GetRecords: caught up, behind (how many records on that page, the oldest's age), gap
    /// risk (oldest unread older than 20 h), trimmed (records lost), or ended. Nothing is
    /// written. With --check the exit code says whether all is well (for cron and probes).
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Print a shell completion script for ddbstream.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const TAIL_EXAMPLES: &str = "\
Examples:
  ddbstream tail --table orders
  ddbstream tail --table orders --from trim-horizon --once > changes.jsonl
  ddbstream tail --table orders --checkpoint orders.tail.json | jq -c 'select(.eventName == \"REMOVE\")'
  ddbstream tail --table orders --format dynamodb-json | jq '.dynamodb.NewImage'
  ddbstream tail --stream-arn arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000

Output formats (docs/cli.md has the schema):
  compact        one flat object per change: eventName, eventId, shardId, sequenceNumber,
                 approximateCreationDateTime (RFC 3339), keys, newImage, oldImage
  dynamodb-json  the record as DynamoDB Streams and Lambda give it: eventID, eventName,
                 dynamodb.Keys/NewImage/OldImage/SequenceNumber/ApproximateCreationDateTime,
                 with typed values ({\"S\": \"o-1\"}, {\"N\": \"42\"})
  plain          the same record with plain values
In compact and plain, a number a double cannot hold exactly (e.g. 9007199254740993) is a JSON
string, so jq cannot round it; sets are {\"SS\": [...]}, {\"NS\": [...]}, {\"BS\": [...]}.";

const REPLICATE_EXAMPLES: &str = "\
Examples:
  ddbstream replicate --table orders --db orders.sqlite --once    # copy, catch up, exit
  ddbstream replicate --table orders --db orders.sqlite           # follow until Ctrl-C
  sqlite3 orders.sqlite \"SELECT _item FROM items LIMIT 3\"";

const STATUS_EXAMPLES: &str = "\
Examples:
  ddbstream status --table orders
  ddbstream status --table orders --db orders.sqlite
  ddbstream status --table orders --checkpoint orders.tail.json --json
  ddbstream status --table orders --db orders.sqlite --check --max-lag 5m || alert

--check fails (exit code 3) when a shard is behind by more than --max-lag, close to the 24-hour
retention (oldest unread record older than 20 h), has lost records (trimmed, or vanished before
it was read to its end), or cannot be probed. A quarantined shard stops advancing: it shows as
behind, then at risk.";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  ddbstream completions bash > ~/.local/share/bash-completion/completions/ddbstream
  ddbstream completions zsh > ~/.zfunc/_ddbstream
  ddbstream completions fish > ~/.config/fish/completions/ddbstream.fish";

/// Where `tail` starts on its first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StartFrom {
    /// Only changes made from now on.
    Latest,
    /// Every change the stream still holds (up to 24 hours back).
    TrimHorizon,
}

/// How `tail` writes records (docs/cli.md has the schema of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One flat object per change with plain values (the default).
    Compact,
    /// The record as DynamoDB Streams and Lambda give it, with typed attribute values.
    #[value(name = "dynamodb-json")]
    DynamoDbJson,
    /// The DynamoDB Streams / Lambda record with plain values.
    Plain,
}

impl Format {
    fn record_format(self) -> dynamodb_stream::json::RecordFormat {
        use dynamodb_stream::json::RecordFormat;
        match self {
            Format::Compact => RecordFormat::Compact,
            Format::DynamoDbJson => RecordFormat::DynamoDbJson,
            Format::Plain => RecordFormat::Plain,
        }
    }
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

    /// How each record is written: one JSON object per line.
    #[arg(long, value_enum, default_value_t = Format::Compact)]
    format: Format,

    /// Print only records matching this pattern, in Lambda's event-filtering syntax, e.g.
    /// '{"dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}}}}'. Repeat it: a record
    /// matching any pattern is printed. Records left out still move the checkpoint.
    #[arg(long = "filter", value_name = "PATTERN")]
    filters: Vec<String>,

    /// Patterns from a JSON file: Lambda's {"Filters": [{"Pattern": "..."}]} or an array of
    /// patterns; ORed with --filter.
    #[arg(long, value_name = "FILE")]
    filter_file: Option<PathBuf>,

    #[command(flatten)]
    poll: PollArgs,

    #[command(flatten)]
    http: http::HttpArgs,

    #[command(flatten)]
    otlp: otlp::OtlpArgs,
}

#[derive(Debug, Args)]
struct ReplicateArgs {
    /// The table to copy (its stream must carry NEW_IMAGE or NEW_AND_OLD_IMAGES).
    #[arg(long)]
    table: String,

    /// The SQLite file holding the copy (created if missing); the same as `--to FILE`.
    #[arg(long, value_name = "FILE", conflicts_with = "to")]
    db: Option<PathBuf>,

    /// Where the copy goes: a SQLite file (`orders.sqlite`, `sqlite:orders.sqlite`) or a
    /// PostgreSQL database (`postgres://user:password@host:5432/db`): a schema of its own in it,
    /// one table per replicated table, positions in the same transactions as the rows.
    #[arg(long, value_name = "DEST", required_unless_present = "db")]
    to: Option<String>,

    /// PostgreSQL: the schema holding the copy and its bookkeeping.
    #[arg(long, value_name = "NAME", default_value = "ddbstream")]
    pg_schema: String,

    /// Keep the first copy's Scan within this many read capacity units per second (as the
    /// service reports them per page); throttling slows it further.
    #[arg(long, value_name = "RCU", conflicts_with = "scan_rate_items",
          value_parser = parse_rate)]
    scan_rate: Option<f64>,

    /// Keep the first copy's Scan within this many items per second.
    #[arg(long, value_name = "ITEMS", value_parser = parse_rate)]
    scan_rate_items: Option<f64>,

    /// During the first copy, pause the Scan this often to apply the stream, so a scan longer
    /// than the stream's 24 hours loses nothing (90s, 10m, 2h; at most 12h).
    #[arg(long, value_name = "AGE", default_value = "1h", value_parser = parse_age)]
    catch_up_every: std::time::Duration,

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

    /// Milliseconds between progress lines when stderr is not a terminal (default 5000). For
    /// tests.
    #[arg(long, hide = true, value_name = "MS")]
    progress_every: Option<u64>,

    #[command(flatten)]
    poll: PollArgs,

    #[command(flatten)]
    http: http::HttpArgs,

    #[command(flatten)]
    otlp: otlp::OtlpArgs,
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

    /// Compare with the positions in this replica (`replicate --to`): a SQLite file, or a
    /// PostgreSQL URL (`postgres://user@host/db`). Read only: nothing is created or written.
    #[arg(long, value_name = "DB")]
    db: Option<PathBuf>,

    /// PostgreSQL: the schema holding the replica (`replicate --pg-schema`).
    #[arg(long, value_name = "NAME", default_value = "ddbstream")]
    pg_schema: String,

    /// Whose positions to read [default: ddbstream-tail with --checkpoint, replicate with
    /// --db].
    #[arg(long, value_name = "NAME", requires = "store")]
    application: Option<String>,

    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,

    /// Exit with code 3 when a shard is behind by more than --max-lag, close to the 24-hour
    /// retention, has lost records, or cannot be probed (for cron jobs and probes).
    #[arg(long, requires = "store")]
    check: bool,

    /// With --check: how old the oldest unread record of a shard may be (e.g. 90s, 10m, 2h).
    #[arg(long, value_name = "AGE", default_value = "10m", requires = "check",
          value_parser = parse_age)]
    max_lag: std::time::Duration,
}

/// `90`, `90s`, `10m`, `2h` → a duration.
/// A positive rate (read units or items per second).
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{text:?} is not a positive number per second")),
    }
}

fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not an age like 90s, 10m or 2h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{text:?} is not an age like 90s, 10m or 2h")),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "ddbstream",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let verbosity = if cli.quiet {
        Verbosity::QUIET
    } else {
        Verbosity(i8::try_from(cli.verbose).unwrap_or(i8::MAX))
    };
    Log::init(verbosity, std::env::var_os("RUST_LOG").is_some());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(Failure::new(format!("cannot start the async runtime: {e}"))),
    };
    // Before the subscriber is set up (it takes the tracer), within the runtime (the exporter
    // sends on it). A collector URL that cannot be used ends the command here.
    let traces = match &cli.command {
        Command::Tail(TailArgs { otlp, .. }) | Command::Replicate(ReplicateArgs { otlp, .. }) => {
            let _entered = runtime.enter();
            match otlp.traces() {
                Ok(traces) => traces,
                Err(failure) => return fail(failure),
            }
        }
        Command::Status(_) | Command::Completions { .. } => None,
    };
    output::init_tracing(verbosity, traces.as_ref().map(otlp::Traces::tracer));
    let result = runtime.block_on(async {
        let result = run(cli).await;
        // The spans of the end (shutdown, the last checkpoint) included.
        if let Some(traces) = traces {
            traces.finish().await;
        }
        result
    });
    Log::get().clear_bar();
    match result {
        Ok(ended) => ended.exit_code(),
        Err(failure) => fail(failure),
    }
}

/// Print the error line (and, with `-v`, its causes) and return exit code 1.
fn fail(failure: Failure) -> ExitCode {
    let log = Log::get();
    log.error(&format!("ddbstream: {}", fail::one_line(&failure.message)));
    if log.detailed() {
        for cause in failure.chain() {
            log.error(&format!("ddbstream:   caused by: {cause}"));
        }
    }
    ExitCode::from(fail::code::ERROR)
}

async fn run(cli: Cli) -> Result<Ended, Failure> {
    // First of all: from here on SIGINT/SIGTERM mean a clean stop, whatever phase it is in.
    let mut stop: Stop = Box::pin(stop_signal()?);
    let once = match &cli.command {
        Command::Tail(a) => a.once,
        Command::Replicate(a) => a.once,
        Command::Status(_) | Command::Completions { .. } => true,
    };
    // A pattern that cannot be used is the user's to fix: said before the AWS set-up is even
    // looked at, and before anything is started.
    let criteria = match &cli.command {
        Command::Tail(a) => tail::filter_criteria(a)?,
        _ => None,
    };
    let config = match unless_stopped(&mut stop, aws_config(&cli)).await {
        Ok(config) => config?,
        Err(signal) => return Ok(stopped(signal, once)),
    };
    match cli.command {
        Command::Tail(args) => tail::run(&config, args, criteria, stop).await,
        Command::Replicate(args) => replicate::run(&config, args, stop).await,
        // A read-only probe: stopping it early loses nothing, but it did not finish.
        Command::Status(args) => status::run(&config, args, stop).await,
        Command::Completions { .. } => Ok(Ended::Done),
    }
}

/// How a command that was stopped by `signal` ends: a follower stops, a `--once` run or a
/// `status` is unfinished.
fn stopped(signal: Signal, once: bool) -> Ended {
    if once {
        Ended::Unfinished(signal)
    } else {
        Ended::Stopped(signal)
    }
}

/// SIGINT or SIGTERM, as a future that is polled across the phases of a command.
type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = Signal> + Send>>;

/// The SDK configuration and what it says about the set-up, checked before any call: the
/// profile exists, there is a region, the endpoint URL is a URL.
async fn aws_config(cli: &Cli) -> Result<(SdkConfig, Setup), Failure> {
    let profile = cli
        .profile
        .clone()
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .filter(|p| !p.is_empty());
    if let Some(name) = &profile {
        check_profile(name).await?;
    }
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(dynamodb_stream::recommended_timeouts());
    if let Some(name) = &cli.profile {
        loader = loader.profile_name(name);
    }
    if let Some(url) = &cli.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = &cli.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let config = loader.load().await;
    let region = match config.region() {
        Some(r) if !r.as_ref().is_empty() => r.to_string(),
        _ => {
            return Err(Failure::new(
                "no AWS region: pass --region or set AWS_REGION (or a region in the profile)",
            ))
        }
    };
    let setup = Setup {
        endpoint_url: config.endpoint_url().map(str::to_owned),
        region,
        profile,
    };
    if let Some(url) = &setup.endpoint_url {
        if !has_scheme(url) {
            return Err(Failure::new(format!(
                "could not connect to the endpoint URL {url:?}: it has no scheme; write it as \
                 http://{url} (or https://)"
            )));
        }
    }
    Ok((config, setup))
}

/// `http://…` or `https://…` with something after it.
fn has_scheme(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["http://", "https://"]
        .iter()
        .any(|s| lower.starts_with(s) && lower.len() > s.len())
}

/// Fail with the profile's name when it is in neither `~/.aws/config` nor `~/.aws/credentials`
/// (aws-config would otherwise only report that no credentials were found).
// aws-config's own loader takes the profile-file list under its deprecated name; naming it
// through aws-config spares a direct dependency on aws-runtime.
#[allow(deprecated)]
async fn check_profile(name: &str) -> Result<(), Failure> {
    use aws_config::profile::profile_file::ProfileFiles;
    use aws_types::os_shim_internal::{Env, Fs};
    let profiles =
        aws_config::profile::load(&Fs::real(), &Env::real(), &ProfileFiles::default(), None)
            .await
            .map_err(|e| {
                Failure::new(format!("cannot read the AWS profile files: {e}")).with_source(e)
            })?;
    if profiles.get_profile(name).is_some() {
        return Ok(());
    }
    let mut known: Vec<&str> = profiles.profiles().collect();
    known.sort_unstable();
    let known = if known.is_empty() {
        "there are none".to_owned()
    } else {
        format!("known: {}", known.join(", "))
    };
    Err(Failure::new(format!(
        "AWS profile {name:?} not found in ~/.aws/config or ~/.aws/credentials ({known}): \
         check --profile or AWS_PROFILE"
    )))
}

/// Runs `work` unless SIGINT or SIGTERM comes first (then the signal, after a line saying so).
///
/// Why: starting can take long — an unreachable endpoint is retried with back-off, a replica's
/// first scan reads the whole table — and the tool must stay stoppable all along.
async fn unless_stopped<T>(
    stop: &mut Stop,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Signal> {
    tokio::select! {
        r = work => Ok(r),
        signal = stop.as_mut() => {
            Log::get().info("ddbstream: stopped before the stream was read");
            Err(signal)
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, with which it was. The handlers are installed when
/// this is called, so call it before starting work.
fn stop_signal() -> Result<impl std::future::Future<Output = Signal> + Send, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => Signal::Interrupt,
            _ = terminate.recv() => Signal::Terminate,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ages_parse() {
        use std::time::Duration;
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "m", "10d", "-1", "1.5h"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoint_urls_need_a_scheme() {
        assert!(has_scheme("http://localhost:8000"));
        assert!(has_scheme("HTTPS://dynamodb.us-east-1.amazonaws.com"));
        for bad in ["localhost:8000", "http://", "127.0.0.1", "ftp://x"] {
            assert!(!has_scheme(bad), "{bad}");
        }
    }
}
