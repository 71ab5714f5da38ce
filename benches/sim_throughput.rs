//! In-process throughput: records per second from the simulator through coordinator → shard
//! worker → handler actor → checkpointer, with a no-op handler (and with typed decoding).
//!
//! `cargo bench --bench sim_throughput` (add `-- --quick` for a fast smoke run; `cargo test
//! --all-targets`, as CI runs, builds it unoptimised and runs it in quick mode).
//! Results and the machine they came from: docs/benchmarks.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamodb_stream::record::{AttributeValue, Item};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{Batch, Consumer, HandlerError};

fn item(i: u64) -> Item {
    let mut m = std::collections::HashMap::new();
    m.insert("pk".into(), AttributeValue::S(format!("item-{i}")));
    m.insert("n".into(), AttributeValue::N(i.to_string()));
    m.insert("s".into(), AttributeValue::S("x".repeat(64)));
    m.insert("b".into(), AttributeValue::Bool(i.is_multiple_of(2)));
    Item::from(m)
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Row {
    pk: String,
    n: u64,
    s: String,
    b: bool,
}

/// Records per second for `records` spread over `shards`, all written before the consumer
/// starts (the consumer, not the writer, is measured).
async fn run(shards: usize, records: u64, typed: bool) -> f64 {
    let sim = Simulator::builder().initial_shards(shards).seed(1).build();
    for i in 0..records {
        sim.put_item(item(i)).expect("put");
    }
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let started = Instant::now();
    let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_fn(move |batch: Batch| {
            let counter = counter.clone();
            async move {
                if typed {
                    for r in batch.records() {
                        let _row: Option<Row> = r.new_image_as()?;
                    }
                }
                counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        })
        .configure(|c| c.min_poll_interval = Duration::ZERO)
        .spawn()
        .await
        .expect("spawn");
    while seen.load(Ordering::Relaxed) < records {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    consumer.shutdown().await.expect("shutdown");
    records as f64 / elapsed.as_secs_f64()
}

fn main() {
    // Unoptimised builds (`cargo test --all-targets` runs this in the test profile) only check
    // that the harness works; figures come from `cargo bench`.
    let quick = cfg!(debug_assertions) || std::env::args().any(|a| a == "--quick");
    let (records, rounds) = if quick { (20_000, 1) } else { (500_000, 5) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("records={records} rounds={rounds} (median reported)");
    for (shards, typed) in [(1, false), (1, true), (100, false), (100, true)] {
        let mut results: Vec<f64> = (0..rounds)
            .map(|_| rt.block_on(run(shards, records, typed)))
            .collect();
        results.sort_by(|a, b| a.total_cmp(b));
        let median = results[results.len() / 2];
        println!(
            "sim → no-op handler{}: {shards:>3} shard(s): {:>10.0} records/s",
            if typed { " (typed decode)" } else { "" },
            median
        );
    }
}
