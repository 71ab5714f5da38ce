//! Per-key parallelism against a slow handler: records per second on one shard for
//! `key_parallelism` 1, 2, 4, 8 and 16, with a handler that waits 2 ms per call (standing in for
//! a write to another service) and batches of at most 100 records.
//!
//! `cargo bench --bench key_parallelism` (add `-- --quick` for a fast smoke run; `cargo test
//! --all-targets` builds it unoptimised and runs it in quick mode).
//! Results and the machine they came from: docs/benchmarks.md.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynamodb_stream::record::{AttributeValue, Item};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{Batch, Consumer, HandlerError};

const HANDLER_LATENCY: Duration = Duration::from_millis(2);
const BATCH_SIZE: usize = 100;
const ITEMS: u64 = 5_000;

fn item(i: u64, version: u64) -> Item {
    let mut m = HashMap::new();
    m.insert(
        "pk".into(),
        AttributeValue::S(format!("item-{}", i % ITEMS)),
    );
    m.insert("v".into(), AttributeValue::N(version.to_string()));
    m.insert("s".into(), AttributeValue::S("x".repeat(64)));
    Item::from(m)
}

struct Outcome {
    records_per_second: f64,
    calls: u64,
    order_violations: u64,
}

/// Records per second for `records` on one shard, all written before the consumer starts;
/// `latency` per handler call, `in_flight` pages per shard (`max_in_flight_batches`).
async fn run(lanes: usize, records: u64, latency: Duration, in_flight: usize) -> Outcome {
    let sim = Simulator::builder().initial_shards(1).seed(1).build();
    for i in 0..records {
        // Each item is written several times: versions 1, 2, … in order.
        sim.put_item(item(i, i / ITEMS + 1)).expect("put");
    }
    let seen = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(AtomicU64::new(0));
    let last_version: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let (counter, call_counter, bad, last) = (
        seen.clone(),
        calls.clone(),
        violations.clone(),
        last_version.clone(),
    );
    let started = Instant::now();
    let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_fn(move |batch: Batch| {
            let (counter, call_counter, bad, last) = (
                counter.clone(),
                call_counter.clone(),
                bad.clone(),
                last.clone(),
            );
            async move {
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                {
                    let mut last = last.lock().expect("lock");
                    for r in batch.records() {
                        let v = match r.new_image().and_then(|i| i.get("v")) {
                            Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
                            _ => 0,
                        };
                        let prev = last.insert(r.key_string(), v).unwrap_or(0);
                        if v != prev + 1 {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                call_counter.fetch_add(1, Ordering::Relaxed);
                counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        })
        .key_parallelism(lanes)
        .batching(BATCH_SIZE, Duration::ZERO)
        .configure(|c| {
            c.min_poll_interval = Duration::ZERO;
            c.max_in_flight_batches = in_flight;
        })
        .spawn()
        .await
        .expect("spawn");
    while seen.load(Ordering::Relaxed) < records {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    consumer.shutdown().await.expect("shutdown");
    Outcome {
        records_per_second: records as f64 / elapsed.as_secs_f64(),
        calls: calls.load(Ordering::Relaxed),
        order_violations: violations.load(Ordering::Relaxed),
    }
}

fn main() {
    // Unoptimised builds (`cargo test --all-targets` runs this in the test profile) only check
    // that the harness works; figures come from `cargo bench`.
    let quick = cfg!(debug_assertions) || std::env::args().any(|a| a == "--quick");
    let (records, rounds) = if quick { (5_000, 1) } else { (100_000, 3) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "records={records} on 1 shard, handler sleeps {HANDLER_LATENCY:?} per call of ≤ {BATCH_SIZE} \
         records, rounds={rounds} (median reported)"
    );
    let median = |lanes: usize, latency: Duration, in_flight: usize| -> Outcome {
        let mut results: Vec<Outcome> = (0..rounds)
            .map(|_| rt.block_on(run(lanes, records, latency, in_flight)))
            .collect();
        assert!(
            results.iter().all(|o| o.order_violations == 0),
            "an item's versions arrived out of order"
        );
        results.sort_by(|a, b| a.records_per_second.total_cmp(&b.records_per_second));
        results.swap_remove(results.len() / 2)
    };
    println!("| key_parallelism | records/s | speed-up | handler calls | records/call |");
    println!("|---|---|---|---|---|");
    let mut base = None;
    for lanes in [1, 2, 4, 8, 16] {
        let m = median(lanes, HANDLER_LATENCY, 2);
        let base = *base.get_or_insert(m.records_per_second);
        println!(
            "| {lanes} | {:.0} | {:.1}× | {} | {:.1} |",
            m.records_per_second,
            m.records_per_second / base,
            m.calls,
            records as f64 / m.calls as f64
        );
    }
    println!();
    println!("Where it flattens: 16 lanes, other in-flight bounds, and without the handler's wait");
    println!("| key_parallelism | handler wait | max_in_flight_batches | records/s |");
    println!("|---|---|---|---|");
    for (lanes, latency, in_flight) in [
        (16, HANDLER_LATENCY, 4),
        (16, HANDLER_LATENCY, 8),
        (1, Duration::ZERO, 2),
        (16, Duration::ZERO, 2),
    ] {
        let m = median(lanes, latency, in_flight);
        println!(
            "| {lanes} | {latency:?} | {in_flight} | {:.0} |",
            m.records_per_second
        );
    }
}
