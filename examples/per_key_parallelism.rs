//! A slow handler on a busy shard: run several handler instances per shard, one lane per item key.
//!
//! DynamoDB Streams orders records per shard, and a shard is read by one worker: with a handler
//! that waits on another service for every batch, one shard's throughput is one batch per round
//! trip. But DynamoDB only promises order *per item*: all changes of one item go to one shard, in
//! the order they happened, while changes of different items are unrelated (they may even live in
//! different shards, read concurrently). So order per item is all a consumer has to keep.
//!
//! `key_parallelism(n)` runs `n` lanes per shard, each with its own handler instance handling one
//! batch at a time, and routes every record by a hash of its item key: all changes of one item go
//! to the same lane, in sequence order, so each item's changes are still handled in order. The
//! lanes finish out of order; the checkpoint only moves to a position below which *every* record
//! was acknowledged by its lane, so delivery stays at least once: after a crash the records after
//! the checkpoint come again (some may have been handled already: handlers stay idempotent).
//!
//! This example reads one shard of 20,000 changes (20 versions of each of 1,000 items) with a
//! handler that sleeps 5 ms per call of up to 100 records, once with 1 lane and once with 8, prints
//! records per second, and checks that every item saw versions 1, 2, … 20 in order.
//! Run: `cargo run --example per_key_parallelism` (real time, a few seconds).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynamodb_stream::record::{AttributeValue, Item};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{Batch, Consumer, HandlerError};

const ITEMS: u64 = 1_000;
const VERSIONS: u64 = 20;

fn item(key: u64, version: u64) -> Item {
    let mut m = HashMap::new();
    m.insert("pk".into(), AttributeValue::S(format!("item-{key}")));
    m.insert("version".into(), AttributeValue::N(version.to_string()));
    Item::from(m)
}

/// Per item, the last version handled; counts versions that did not follow the previous one.
#[derive(Clone, Default)]
struct OrderCheck {
    last: Arc<Mutex<HashMap<String, u64>>>,
    out_of_order: Arc<AtomicU64>,
    handled: Arc<AtomicU64>,
}

async fn run(lanes: usize) -> Result<(), Box<dyn std::error::Error>> {
    let sim = Simulator::builder().seed(11).build();
    for version in 1..=VERSIONS {
        for key in 0..ITEMS {
            sim.put_item(item(key, version))?;
        }
    }
    let total = ITEMS * VERSIONS;
    let check = OrderCheck::default();
    let c = check.clone();
    let started = Instant::now();
    let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_fn(move |batch: Batch| {
            let c = c.clone();
            async move {
                // The call to another service.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let mut last = c.last.lock().expect("lock");
                for record in batch.records() {
                    let version = match record.new_image().and_then(|i| i.get("version")) {
                        Some(AttributeValue::N(n)) => n.parse::<u64>()?,
                        _ => return Err(HandlerError::msg("no version")),
                    };
                    let previous = last.insert(record.key_string(), version).unwrap_or(0);
                    if version != previous + 1 {
                        c.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                }
                c.handled.fetch_add(batch.len() as u64, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        })
        .key_parallelism(lanes)
        .batching(100, Duration::ZERO)
        // The simulator has no read limit; the real service allows 5 GetRecords/s per shard
        // (1000 records each), which is not the bottleneck here either.
        .configure(|c| c.min_poll_interval = Duration::ZERO)
        .spawn()
        .await?;
    while check.handled.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    consumer.shutdown().await?;
    let complete = check
        .last
        .lock()
        .expect("lock")
        .values()
        .all(|v| *v == VERSIONS);
    println!(
        "{lanes:>2} lane(s): {total} records in {:>6.2} s = {:>7.0} records/s; \
         versions out of order: {}; every item at version {VERSIONS}: {complete}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        check.out_of_order.load(Ordering::Relaxed),
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for lanes in [1, 8] {
        run(lanes).await?;
    }
    Ok(())
}
