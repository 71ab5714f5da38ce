//! Many shards in one process: 1,000 and 10,000 shards, all idle (no records), read by one
//! consumer with the default configuration on a multi-thread runtime. Per shard count, in a
//! fresh process (the bench runs itself with `--child N`, so one run's memory does not count
//! against the next):
//!
//! - time to discover and start every shard: from `spawn` until `Consumer::status()` shows every
//!   shard `CaughtUp`;
//! - resident memory: peak (`VmHWM`) and current (`VmRSS`) from `/proc/self/status`, and the
//!   consumer's share per shard (RSS after the idle window minus RSS once the source was built,
//!   divided by the shard count);
//! - CPU while idle: user + system time from `/proc/self/stat` over a 10 s window, as a share of
//!   one core; and the GetRecords calls made in that window (default `idle_poll_interval` 1 s per
//!   shard: ~1 call per shard per second is expected).
//!
//! Three sources, each in rows of its own: the simulator, which answers every call with real
//! bookkeeping (its CPU and memory count too, so those rows are an upper bound for the
//! consumer); an idle stub (`IdleStub` below: open shards, every GetRecords an empty page,
//! next to no work per call), whose rows are the consumer's own cost; and the real
//! `aws_sdk_dynamodbstreams` client against the canned endpoint in idle mode (open shards, empty
//! pages; the endpoint runs in the parent process, so the rows are the consumer's and the SDK's
//! cost: signing, HTTP, parsing), what a service pays.
//!
//! `cargo bench --bench scale` (add `-- --quick` for a fast smoke run with 100 and 1,000 shards
//! and a 2 s window; `cargo test --all-targets` builds it unoptimised and runs it in quick mode).
//! Results: docs/benchmarks.md.

mod support;

/// The allocator `ddbstream` uses (src/bin/ddbstream.rs); docs/benchmarks.md.
#[cfg(feature = "cli")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamodb_stream::error::SourceError;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::source::{
    BoxFuture, DescribeStreamRequest, IteratorPosition, RecordsPage, Shard, StreamDescription,
    StreamStatus, StreamsApi,
};
use dynamodb_stream::status::ShardState;
use dynamodb_stream::{Batch, Consumer, HandlerError, SequenceNumber};
use serde_json::json;

const STUB_ARN: &str =
    "arn:aws:dynamodb:us-east-1:000000000000:table/stub/stream/2024-01-01T00:00:00.000";

/// An idle stream that costs next to nothing to serve: `shards` open shards, every GetRecords
/// an empty page. With it the process's CPU and memory are the consumer's own (the simulator
/// does real bookkeeping on every call).
#[derive(Clone)]
struct IdleStub {
    shards: usize,
    calls: Arc<StubCalls>,
}

#[derive(Default)]
struct StubCalls {
    describe: AtomicU64,
    get_records: AtomicU64,
}

impl IdleStub {
    fn shard_id(k: usize) -> String {
        format!("shardId-00000001700000000000-{k:08}")
    }
}

impl StreamsApi for IdleStub {
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, SourceError>> {
        self.calls.describe.fetch_add(1, Ordering::Relaxed);
        let from = request
            .exclusive_start_shard_id
            .as_deref()
            .and_then(|id| id.rsplit('-').next())
            .and_then(|k| k.parse::<usize>().ok())
            .map_or(0, |k| k + 1);
        let limit = request.limit.unwrap_or(100).min(100) as usize;
        let shards: Vec<Shard> = if request.child_shards_of.is_some() {
            Vec::new()
        } else {
            (from..self.shards.min(from + limit))
                .map(|k| Shard {
                    shard_id: IdleStub::shard_id(k),
                    parent_shard_id: None,
                    starting_sequence_number: Some(
                        "100000000000000000001"
                            .parse::<SequenceNumber>()
                            .expect("seq"),
                    ),
                    ending_sequence_number: None,
                })
                .collect()
        };
        let last = (from + limit < self.shards && !shards.is_empty())
            .then(|| shards.last().map(|s| s.shard_id.clone()))
            .flatten();
        Box::pin(async move {
            Ok(StreamDescription {
                stream_arn: request.stream_arn,
                stream_status: StreamStatus::Enabled,
                stream_view_type: None,
                table_name: Some("stub".into()),
                shards,
                last_evaluated_shard_id: last,
            })
        })
    }

    fn get_shard_iterator(
        &self,
        _stream_arn: String,
        shard_id: String,
        _position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move { Ok(format!("{shard_id}|iterator")) })
    }

    fn get_records(
        &self,
        shard_iterator: String,
        _limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, SourceError>> {
        self.calls.get_records.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            Ok(RecordsPage {
                records: Vec::new(),
                next_shard_iterator: Some(shard_iterator),
            })
        })
    }
}

/// Counts the calls of the SDK client.
#[derive(Clone)]
struct CountingSdk {
    inner: aws_sdk_dynamodbstreams::Client,
    calls: Arc<StubCalls>,
}

impl StreamsApi for CountingSdk {
    fn describe_stream(
        &self,
        request: DescribeStreamRequest,
    ) -> BoxFuture<'_, Result<StreamDescription, SourceError>> {
        self.calls.describe.fetch_add(1, Ordering::Relaxed);
        StreamsApi::describe_stream(&self.inner, request)
    }

    fn get_shard_iterator(
        &self,
        stream_arn: String,
        shard_id: String,
        position: IteratorPosition,
    ) -> BoxFuture<'_, Result<String, SourceError>> {
        StreamsApi::get_shard_iterator(&self.inner, stream_arn, shard_id, position)
    }

    fn get_records(
        &self,
        shard_iterator: String,
        limit: Option<u32>,
    ) -> BoxFuture<'_, Result<RecordsPage, SourceError>> {
        self.calls.get_records.fetch_add(1, Ordering::Relaxed);
        StreamsApi::get_records(&self.inner, shard_iterator, limit)
    }
}

/// An SDK client for the canned endpoint, configured as a service would: static credentials,
/// the crate's recommended timeouts, standard retries.
fn sdk_client(url: &str) -> aws_sdk_dynamodbstreams::Client {
    use aws_sdk_dynamodbstreams::config::{BehaviorVersion, Credentials, Region};
    aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(support::canned::REGION))
            .endpoint_url(url)
            .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
            .timeout_config(dynamodb_stream::recommended_timeouts())
            .build(),
    )
}

/// What the consumer reads from: the simulator, the idle stub, or the SDK client.
enum Source {
    Sim(Simulator),
    Stub(IdleStub),
    Sdk(CountingSdk),
}

impl Source {
    /// `(DescribeStream, GetRecords)` calls so far.
    fn calls(&self) -> (u64, u64) {
        match self {
            Source::Sim(sim) => {
                let s = sim.stats();
                (s.describe_stream_calls, s.get_records_calls)
            }
            Source::Stub(IdleStub { calls, .. }) | Source::Sdk(CountingSdk { calls, .. }) => (
                calls.describe.load(Ordering::Relaxed),
                calls.get_records.load(Ordering::Relaxed),
            ),
        }
    }
}

/// Measure one shard count in this process; prints one JSON line.
fn child(shards: usize, idle: Duration, source: &str, endpoint: Option<String>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_, rss_start) = support::rss();
    let report = rt.block_on(async move {
        let source = match (source, endpoint) {
            ("stub", _) => Source::Stub(IdleStub {
                shards,
                calls: Arc::default(),
            }),
            ("sdk", Some(url)) => Source::Sdk(CountingSdk {
                inner: sdk_client(&url),
                calls: Arc::default(),
            }),
            ("sdk", None) => panic!("--source sdk needs --endpoint"),
            _ => Source::Sim(Simulator::builder().initial_shards(shards).seed(1).build()),
        };
        let (_, rss_sim) = support::rss();
        let started = Instant::now();
        let builder = match &source {
            Source::Sim(sim) => Consumer::builder(sim.clone(), sim.stream_arn()),
            Source::Stub(stub) => Consumer::builder(stub.clone(), STUB_ARN),
            Source::Sdk(sdk) => Consumer::builder(sdk.clone(), support::canned::STREAM_ARN),
        };
        let consumer = builder
            .handler_fn(|_batch: Batch| async { Ok::<(), HandlerError>(()) })
            .spawn()
            .await
            .expect("spawn");
        let spawned = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let status = consumer.status();
            let caught_up = status
                .shards
                .iter()
                .filter(|s| s.state == ShardState::CaughtUp)
                .count();
            if caught_up == shards {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {caught_up} of {shards} shards caught up after 600 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let startup = started.elapsed();
        let (hwm_started, rss_started) = support::rss();

        let calls0 = source.calls();
        let cpu0 = support::cpu_time();
        let t0 = Instant::now();
        tokio::time::sleep(idle).await;
        let cpu = support::cpu_time() - cpu0;
        let window = t0.elapsed();
        let calls1 = source.calls();
        let (hwm_idle, rss_idle) = support::rss();

        let status = consumer.status();
        let still_caught_up = status
            .shards
            .iter()
            .filter(|s| s.state == ShardState::CaughtUp)
            .count();
        let shutdown_started = Instant::now();
        consumer.shutdown().await.expect("shutdown");
        let shutdown = shutdown_started.elapsed();
        json!({
            "shards": shards,
            "spawn_s": spawned.as_secs_f64(),
            "startup_s": startup.as_secs_f64(),
            "shutdown_s": shutdown.as_secs_f64(),
            "rss_start": rss_start,
            "rss_sim": rss_sim,
            "hwm_started": hwm_started,
            "rss_started": rss_started,
            "hwm_idle": hwm_idle,
            "rss_idle": rss_idle,
            "idle_window_s": window.as_secs_f64(),
            "idle_cpu_s": cpu.as_secs_f64(),
            "get_records_per_s": (calls1.1 - calls0.1) as f64 / window.as_secs_f64(),
            "describe_calls_in_window": calls1.0 - calls0.0,
            "still_caught_up": still_caught_up,
        })
    });
    println!("{report}");
}

fn main() {
    if let Some(n) = support::arg_value("--child") {
        let idle = support::arg_value("--idle")
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(10), Duration::from_secs_f64);
        let source = support::arg_value("--source").unwrap_or_else(|| "sim".into());
        child(
            n.parse().expect("--child N"),
            idle,
            &source,
            support::arg_value("--endpoint"),
        );
        return;
    }
    let quick = support::quick();
    let (sizes, idle): (&[usize], f64) = if quick {
        (&[100, 1000], 2.0)
    } else {
        (&[1000, 10_000], 10.0)
    };
    // `--source sim|stub|sdk` runs one source only (e.g. under a profiler).
    let sources: Vec<&str> = match support::arg_value("--source").as_deref() {
        Some("stub") => vec!["stub"],
        Some("sdk") => vec!["sdk"],
        Some(_) => vec!["sim"],
        None => vec!["sim", "stub", "sdk"],
    };
    println!(
        "## scale ({}; {} CPUs; default config, multi-thread runtime, one process per row)",
        if quick {
            "QUICK mode: harness check only, figures meaningless"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!();
    println!(
        "| source | shards | spawn → all CaughtUp | peak RSS (VmHWM) | RSS idle | consumer RSS \
         per shard | idle CPU (% of a core, {idle:.0} s) | GetRecords/s idle | shutdown |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("current exe");
    for source in sources {
        for &n in sizes {
            // The SDK rows read from a canned endpoint served by this (parent) process.
            let endpoint = (source == "sdk")
                .then(|| support::canned::Endpoint::start(support::canned::Spec::idle(n)));
            let mut cmd = Command::new(&exe);
            cmd.args(["--child", &n.to_string(), "--idle", &idle.to_string()])
                .args(["--source", source])
                .stderr(Stdio::inherit());
            if let Some(e) = &endpoint {
                cmd.args(["--endpoint", &e.url]);
            }
            let out = cmd.output().expect("run the child");
            drop(endpoint);
            assert!(out.status.success(), "child for {n} shards failed");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout.lines().last().unwrap_or_default();
            let r: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("child said {line:?}: {e}"));
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            assert_eq!(
                r["still_caught_up"].as_u64(),
                Some(n as u64),
                "shards left CaughtUp while idle"
            );
            let per_shard = (f("rss_idle") - f("rss_sim")) / n as f64;
            println!(
                "| {} | {} | {:.2} s (spawn returned after {:.2} s) | {} | {} | {:.1} KB \
                 | {:.1} % | {} | {:.2} s |",
                match source {
                    "stub" => "idle stub",
                    "sdk" => "aws-sdk client → canned endpoint",
                    _ => "simulator",
                },
                support::thousands(n as f64),
                f("startup_s"),
                f("spawn_s"),
                support::mb(f("hwm_idle")),
                support::mb(f("rss_idle")),
                per_shard / 1e3,
                100.0 * f("idle_cpu_s") / f("idle_window_s"),
                support::thousands(f("get_records_per_s")),
                f("shutdown_s"),
            );
            eprintln!(
                "  {source}, {n} shards: RSS at start {}, with the source built {}, all caught \
                 up {}; DescribeStream calls in the idle window: {}",
                support::mb(f("rss_start")),
                support::mb(f("rss_sim")),
                support::mb(f("rss_started")),
                r["describe_calls_in_window"],
            );
        }
    }
}
