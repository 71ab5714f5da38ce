//! Side by side on one canned DynamoDB Streams endpoint (benches/support/canned.rs: loopback
//! HTTP, pre-serialized pages of 1000 records of ~900 bytes, every shard closed after a fixed
//! number of pages): records per second from the first call until every record was received,
//! for
//!
//! - a raw `aws_sdk_dynamodbstreams` loop (DescribeStream, then per shard GetShardIterator
//!   TRIM_HORIZON and GetRecords until no next iterator, shards concurrently): the floor of any
//!   consumer built on the Rust SDK;
//! - this crate's consumer with its default configuration (catch-up mode: a shard that is
//!   behind reads again at once) and a no-op handler, and with typed decoding of every new image
//!   into a serde struct;
//! - `ddbstream tail` with its defaults, its JSON lines read from a pipe and counted (process
//!   start-up included: it is what a user waits for);
//! - the npm package `dynamodb-stream` 1.x on the JS SDK v3, driven by its own
//!   `fetchStreamState()` loop (scripts/bench-npm/driver.js), with and without `unmarshall`.
//!
//! Runs alternate between contenders, round after round; the median of the rounds is reported.
//!
//! `cargo bench --bench contenders` (add `-- --quick` for a fast smoke run; `cargo test
//! --all-targets` builds it unoptimised and runs it in quick mode). `scripts/bench.sh` installs
//! the npm contender first; without node or the installed package that contender is skipped
//! (and says why). Results: docs/benchmarks.md.

mod support;

/// The allocator `ddbstream` uses (src/bin/ddbstream.rs), for every contender in this process
/// alike: the consumer's records are built on one thread and dropped on another, where the
/// system allocator is slow (docs/benchmarks.md; docs/operations.md advises services the same).
#[cfg(feature = "cli")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodbstreams as streams;
use dynamodb_stream::{Batch, Consumer, HandlerError};
use serde::Deserialize;
use support::canned::{Endpoint, Spec, REGION};

/// The new image, typed.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Order {
    pk: String,
    sk: String,
    status: String,
    amount: f64,
    gift: bool,
    tags: Vec<String>,
    address: Address,
    lines: Vec<Line>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Address {
    street: String,
    zip: String,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Line {
    sku: String,
    qty: u32,
}

/// An SDK client for the canned endpoint: static credentials, latest behavior version, no
/// retries (a failure is a bench bug, not something to hide).
fn client(endpoint: &Endpoint) -> streams::Client {
    use streams::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
    streams::Client::from_conf(
        streams::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&endpoint.url)
            .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

/// Records received and seconds taken.
type Run = (u64, f64);

async fn raw_sdk_loop(endpoint: &Endpoint) -> Run {
    use streams::types::ShardIteratorType;
    let client = client(endpoint);
    let started = Instant::now();
    let mut shard_ids = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let out = client
            .describe_stream()
            .stream_arn(&endpoint.stream_arn)
            .set_exclusive_start_shard_id(start.take())
            .send()
            .await
            .expect("DescribeStream");
        let description = out.stream_description.expect("a stream description");
        shard_ids.extend(
            description
                .shards()
                .iter()
                .filter_map(|s| s.shard_id.clone()),
        );
        match description.last_evaluated_shard_id {
            Some(last) => start = Some(last),
            None => break,
        }
    }
    let tasks: Vec<_> = shard_ids
        .into_iter()
        .map(|shard_id| {
            let client = client.clone();
            let arn = endpoint.stream_arn.clone();
            tokio::spawn(async move {
                let mut iterator = client
                    .get_shard_iterator()
                    .stream_arn(arn)
                    .shard_id(shard_id)
                    .shard_iterator_type(ShardIteratorType::TrimHorizon)
                    .send()
                    .await
                    .expect("GetShardIterator")
                    .shard_iterator;
                let mut records = 0u64;
                while let Some(it) = iterator {
                    let out = client
                        .get_records()
                        .shard_iterator(it)
                        .limit(1000)
                        .send()
                        .await
                        .expect("GetRecords");
                    records += out.records().len() as u64;
                    iterator = out.next_shard_iterator;
                }
                records
            })
        })
        .collect();
    let mut records = 0;
    for task in tasks {
        records += task.await.expect("shard task");
    }
    (records, started.elapsed().as_secs_f64())
}

async fn our_consumer(endpoint: &Endpoint, typed: bool) -> Run {
    let total = endpoint.spec.total_records();
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let started = Instant::now();
    let consumer = Consumer::builder(client(endpoint), endpoint.stream_arn.clone())
        .handler_fn(move |batch: Batch| {
            let counter = counter.clone();
            async move {
                if typed {
                    for r in batch.records() {
                        let order: Option<Order> = r.new_image_as()?;
                        std::hint::black_box(order);
                    }
                }
                counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        })
        // Defaults: catch-up mode reads a backlog at once.
        .spawn()
        .await
        .expect("spawn the consumer");
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen.load(Ordering::Relaxed) < total {
        assert!(Instant::now() < deadline, "consumer did not finish");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    consumer.shutdown().await.expect("shutdown");
    (seen.load(Ordering::Relaxed), elapsed)
}

/// `ddbstream tail --from trim-horizon` with its defaults, until it printed every record.
fn tail_cli(endpoint: &Endpoint) -> Run {
    use std::io::BufRead;
    let total = endpoint.spec.total_records();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ddbstream"))
        .args([
            "tail",
            "--stream-arn",
            &endpoint.stream_arn,
            "--from",
            "trim-horizon",
        ])
        .env("AWS_ENDPOINT_URL", &endpoint.url)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ddbstream tail");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = 0u64;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, stdout);
    let mut line = Vec::new();
    while lines < total {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => lines += 1,
            Err(e) => panic!("reading tail's output: {e}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Done: a plain kill (its position is not kept anyway).
    let _ = child.kill();
    let _ = child.wait();
    (lines, elapsed)
}

fn npm_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench-npm")
}

/// Why the npm contender cannot run here, if it cannot.
fn npm_unavailable() -> Option<String> {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Some("node is not installed (it needs node ≥ 20 and npm)".into()),
    }
    for package in ["dynamodb-stream", "@aws-sdk/client-dynamodb-streams"] {
        let manifest = npm_dir()
            .join("node_modules")
            .join(package)
            .join("package.json");
        if !manifest.exists() {
            return Some(format!(
                "{package} is not installed: run scripts/bench.sh (it runs \
                 `npm install --prefix scripts/bench-npm`)"
            ));
        }
    }
    None
}

/// The npm package's version, as installed.
fn npm_version() -> String {
    let manifest = npm_dir().join("node_modules/dynamodb-stream/package.json");
    std::fs::read_to_string(manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Run the node driver; its own clock (from before its first call until every record was
/// received) is reported, so node's start-up is not counted.
fn npm_package(endpoint: &Endpoint, unmarshall: bool) -> Run {
    let mut cmd = Command::new("node");
    cmd.arg(npm_dir().join("driver.js"))
        .arg("--endpoint")
        .arg(&endpoint.url)
        .arg("--arn")
        .arg(&endpoint.stream_arn)
        .arg("--expected")
        .arg(endpoint.spec.total_records().to_string());
    if unmarshall {
        cmd.arg("--unmarshall");
    }
    let out = cmd.output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the npm driver failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("driver said {line:?}: {e}"));
    (
        v["records"].as_u64().expect("records"),
        v["seconds"].as_f64().expect("seconds"),
    )
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Contender {
    Raw,
    Ours,
    OursTyped,
    Tail,
    Npm,
    NpmUnmarshall,
}

impl Contender {
    fn key(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Ours => "ours",
            Self::OursTyped => "typed",
            Self::Tail => "tail",
            Self::Npm => "npm",
            Self::NpmUnmarshall => "npm-unmarshall",
        }
    }

    fn label(self, npm_version: &str) -> String {
        match self {
            Self::Raw => "raw aws-sdk-dynamodbstreams GetRecords loop".into(),
            Self::Ours => "dynamodb-stream (this crate), no-op handler".into(),
            Self::OursTyped => "dynamodb-stream (this crate), typed decode of NewImage".into(),
            Self::Tail => "ddbstream tail (defaults), JSON lines to a pipe".into(),
            Self::Npm => format!("npm dynamodb-stream {npm_version} + JS SDK v3, raw records"),
            Self::NpmUnmarshall => {
                format!("npm dynamodb-stream {npm_version} + JS SDK v3, unmarshall")
            }
        }
    }
}

fn scenario(rt: &tokio::runtime::Runtime, spec: Spec, rounds: usize, contenders: &[Contender]) {
    let endpoint = Endpoint::start(spec);
    let total = spec.total_records();
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    // Endpoint calls per contender, summed over its runs (shutdown included).
    let mut calls: Vec<[u64; 3]> = vec![[0; 3]; contenders.len()];
    for round in 0..rounds {
        // Alternate the order too, so no contender always runs right after the same one.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..contenders.len()).collect()
        } else {
            (0..contenders.len()).rev().collect()
        };
        for i in order {
            let before = endpoint.calls();
            let (records, seconds) = match contenders[i] {
                Contender::Raw => rt.block_on(raw_sdk_loop(&endpoint)),
                Contender::Ours => rt.block_on(our_consumer(&endpoint, false)),
                Contender::OursTyped => rt.block_on(our_consumer(&endpoint, true)),
                Contender::Tail => tail_cli(&endpoint),
                Contender::Npm => npm_package(&endpoint, false),
                Contender::NpmUnmarshall => npm_package(&endpoint, true),
            };
            assert!(
                records >= total,
                "{}: {records} of {total} records",
                contenders[i].label("")
            );
            results[i].push(total as f64 / seconds);
            let after = endpoint.calls();
            calls[i][0] += after.0 - before.0;
            calls[i][1] += after.1 - before.1;
            calls[i][2] += after.2 - before.2;
        }
    }
    assert_eq!(endpoint.calls().3, 0, "the endpoint answered errors");
    let version = npm_version();
    let median_of = |c: Contender| {
        contenders
            .iter()
            .position(|&x| x == c)
            .map(|i| support::median(&results[i]))
    };
    println!();
    println!(
        "### {} shard(s) × {} pages × {} records ({} records, ~{} B/record, {} KB/page), \
         median of {rounds}",
        spec.shards,
        spec.pages_per_shard,
        spec.records_per_page,
        support::thousands(total as f64),
        endpoint.record_bytes,
        endpoint.page_bytes / 1000,
    );
    println!();
    println!("| contender | records/s (median) | min – max | vs raw SDK loop |");
    println!("|---|---|---|---|");
    let raw = median_of(Contender::Raw);
    for (i, c) in contenders.iter().enumerate() {
        let m = support::median(&results[i]);
        let min = results[i].iter().copied().fold(f64::INFINITY, f64::min);
        let max = results[i].iter().copied().fold(0.0, f64::max);
        println!(
            "| {} | {} | {} – {} | {} |",
            c.label(&version),
            support::thousands(m),
            support::thousands(min),
            support::thousands(max),
            raw.map_or("–".into(), |raw| format!("{:.2}×", m / raw)),
        );
    }
    println!();
    let ratio = |a: Contender, b: Contender| match (median_of(a), median_of(b)) {
        (Some(a), Some(b)) => format!("{:.2}×", a / b),
        _ => "–".into(),
    };
    println!(
        "ratios ({} shard(s)): us/raw = {}, typed/raw = {}, us/npm = {} (no-op vs raw \
         records), typed/npm-unmarshall = {}, tail/npm = {}, tail/raw = {}; load average {}",
        spec.shards,
        ratio(Contender::Ours, Contender::Raw),
        ratio(Contender::OursTyped, Contender::Raw),
        ratio(Contender::Ours, Contender::Npm),
        ratio(Contender::OursTyped, Contender::NpmUnmarshall),
        ratio(Contender::Tail, Contender::Npm),
        ratio(Contender::Tail, Contender::Raw),
        support::load_average(),
    );
    for (i, c) in contenders.iter().enumerate() {
        let per_run = |n: u64| n as f64 / rounds as f64;
        println!(
            "endpoint calls per run, {}: {:.0} DescribeStream, {:.0} GetShardIterator, {:.0} \
             GetRecords",
            c.label(&version),
            per_run(calls[i][0]),
            per_run(calls[i][1]),
            per_run(calls[i][2]),
        );
    }
}

fn main() {
    let quick = support::quick();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `--only raw|ours|typed|npm|npm-unmarshall` runs one contender (e.g. under a profiler);
    // `--shards 1|100` one scenario.
    let only = support::arg_value("--only");
    let only_shards: Option<usize> = support::arg_value("--shards").and_then(|s| s.parse().ok());
    let mut contenders = vec![
        Contender::Raw,
        Contender::Ours,
        Contender::OursTyped,
        Contender::Tail,
    ];
    let wants_npm = only.as_deref().is_none_or(|o| o.starts_with("npm"));
    if wants_npm {
        match npm_unavailable() {
            None => contenders.extend([Contender::Npm, Contender::NpmUnmarshall]),
            Some(why) => println!("npm contender skipped: {why}"),
        }
    }
    if let Some(only) = &only {
        contenders.retain(|c| c.key() == only);
        assert!(
            !contenders.is_empty(),
            "--only {only}: no such contender here"
        );
    }
    // (shards, pages per shard, records per page)
    let (scenarios, rounds): (&[(usize, usize, usize)], usize) = if quick {
        (&[(1, 3, 100), (100, 1, 100)], 1)
    } else {
        (&[(1, 50, 1000), (100, 3, 1000)], 5)
    };
    println!(
        "## contenders ({}; {} CPUs; runtime: tokio multi-thread, endpoint on its own thread)",
        if quick {
            "QUICK mode: harness check only, figures meaningless"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for &(shards, pages_per_shard, records_per_page) in scenarios {
        if only_shards.is_some_and(|n| n != shards) {
            continue;
        }
        let spec = Spec {
            shards,
            pages_per_shard,
            records_per_page,
            open: false,
        };
        scenario(&rt, spec, rounds, &contenders);
    }
}
