//! One bad record must not stop a shard: isolate it by bisection and park it in a failure sink.
//!
//! Delivery is *at least once*. A record counts as processed when the `handle` call that
//! received it returns `Ok`; the checkpoint never moves past a record that was not processed, so
//! after a crash or restart the records after the checkpoint are handed over again. Handlers must
//! therefore be idempotent (upsert by item key, or remember the last applied sequence number per
//! item).
//!
//! Without a retry policy, a failing batch restarts the shard from its checkpoint, again and
//! again, until the shard is quarantined: one malformed record blocks every change behind it.
//! This example sets a `RetryPolicy` instead:
//!
//! - a failing batch is retried in place, with backoff, up to `max_attempts` calls;
//! - with `bisect_on_error`, a failing batch is first split in halves, and the halves retried,
//!   down to the single record that keeps failing — every other record goes through once;
//! - when the attempts (or `max_record_age`) are exhausted, the records go to the failure sink,
//!   here a JSON-lines file, written and fsynced before the checkpoint moves past them. Nothing is
//!   skipped silently: the sink holds the record, its shard, sequence number and the last error,
//!   and a `SentToFailureSink` event is emitted. Without a sink the shard would be quarantined.
//!
//! Time is tokio's paused clock, so the backoffs cost nothing. Run:
//! `cargo run --example poison_record`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamodb_stream::checkpoint::{MemoryCheckpointStore, StreamKey};
use dynamodb_stream::delivery::{JsonLinesFailureSink, RetryPolicy};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{Batch, Consumer, ConsumerEvent, HandlerError};

#[derive(serde::Serialize, serde::Deserialize)]
struct Order {
    pk: String,
    total: u32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let sink_path = dir.path().join("orders.failures.jsonl");

    let sim = Simulator::builder().table_name("orders").seed(3).build();
    for i in 0..40 {
        sim.put_item(serde_dynamo::to_item(Order {
            pk: format!("order-{i}"),
            total: 10 + i,
        })?)?;
        if i == 17 {
            // A malformed item: `total` is not a number. Decoding it fails, every time.
            sim.put_item(serde_dynamo::to_item(serde_json::json!({
                "pk": "order-bad",
                "total": "forty-two",
            }))?)?;
        }
    }

    let applied = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0usize));
    let (out, counter) = (applied.clone(), calls.clone());
    let policy = RetryPolicy {
        max_attempts: 3,
        bisect_on_error: true,
        ..RetryPolicy::default()
    };
    let store = MemoryCheckpointStore::new();
    let builder = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_fn(move |batch: Batch| {
            let (out, counter) = (out.clone(), counter.clone());
            async move {
                *counter.lock().expect("lock") += 1;
                // Decode the whole batch first, then apply it: all or nothing.
                let mut orders = Vec::new();
                for record in batch.records() {
                    let order: Order = record.new_image_as()?.ok_or("no new image")?;
                    orders.push(order.pk);
                }
                out.lock().expect("lock").extend(orders);
                Ok::<(), HandlerError>(())
            }
        })
        .checkpoints(store.clone())
        .retry(policy)
        .failure_sink(JsonLinesFailureSink::new(&sink_path));
    let mut events = builder.events();
    let consumer = builder.spawn().await?;

    // Wait for the failure report, then for every good order.
    loop {
        match events.recv().await? {
            ConsumerEvent::SentToFailureSink {
                shard_id,
                first_sequence_number,
                records,
                reason,
                ..
            } => {
                println!(
                    "event: {records} record(s) of {shard_id} from {} sent to the sink: {reason:?}",
                    first_sequence_number
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                );
                break;
            }
            other => println!("event: {other:?}"),
        }
    }
    while applied.lock().expect("lock").len() < 40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the checkpoint (written every second) catch up, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    consumer.shutdown().await?;

    let applied = applied.lock().expect("lock").clone();
    let distinct: std::collections::HashSet<&String> = applied.iter().collect();
    assert_eq!(distinct.len(), applied.len(), "each good order once");
    assert!(!applied.iter().any(|pk| pk == "order-bad"));
    println!(
        "\n{} good orders applied once each, in {} handler calls (bisection included)",
        applied.len(),
        calls.lock().expect("lock")
    );
    println!("\nthe failure sink {}:", sink_path.display());
    for line in std::fs::read_to_string(&sink_path)?.lines() {
        let failure: serde_json::Value = serde_json::from_str(line)?;
        println!("{}", serde_json::to_string_pretty(&failure)?);
    }
    let key = StreamKey {
        application: "default".into(),
        stream_arn: sim.stream_arn(),
    };
    let stored = store.snapshot(&key).ok_or("no checkpoint")?;
    let last = sim
        .written_records()
        .last()
        .map(|w| w.record.sequence_number().clone());
    for (shard, checkpoint) in &stored.shards {
        println!(
            "\ncheckpoint of {shard}: {:?} (the shard's last record: {:?})",
            checkpoint.sequence_number(),
            last
        );
    }
    Ok(())
}
