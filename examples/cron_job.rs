//! A job that wakes up, applies what changed since last time, saves its position and exits: the
//! npm package's `fetchStreamState()` + `setShardState()` loop, as one call,
//! [`ConsumerBuilder::run_once`](dynamodb_stream::ConsumerBuilder::run_once).
//!
//! Each run reads every shard up to where the stream stood when the run started (children of
//! shards that split meanwhile included), takes the final checkpoint and returns what it
//! handled. The next run, with the same checkpoint file, continues right after: every change
//! once, none lost between runs. Here three "wake-ups" run on the embedded simulator, with
//! writes and a shard split between them; against AWS the job is the same function with
//! `Consumer::for_table(&dynamodb, streams, "orders")` in place of the simulator.
//!
//! Run: `cargo run --example cron_job`

use std::path::Path;

use dynamodb_stream::checkpoint::FileCheckpointStore;
use dynamodb_stream::events::Change;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::source::StreamsApi;
use dynamodb_stream::{Batch, Consumer, HandlerError, RunReport, StartPosition};

/// What the job does on each wake-up.
async fn job(
    source: impl StreamsApi,
    stream_arn: String,
    checkpoints: &Path,
) -> dynamodb_stream::Result<RunReport> {
    Consumer::builder(source, stream_arn)
        .checkpoints(FileCheckpointStore::new(checkpoints))
        // Only the very first run uses this; later runs continue from the checkpoints.
        .start_from(StartPosition::TrimHorizon)
        .handler_fn(|batch: Batch| async move {
            for record in batch.records() {
                let what = match Change::from(record) {
                    Change::Insert { .. } => "insert",
                    Change::Modify { .. } => "modify",
                    Change::Remove { .. } => "remove",
                    _ => "other",
                };
                println!("  {what} {}", record.key_string());
            }
            // Returning Ok acknowledges the batch: the checkpoint may move past it.
            Ok::<(), HandlerError>(())
        })
        .run_once()
        .await
}

fn order(id: u32, total: u32) -> dynamodb_stream::record::Item {
    serde_dynamo::to_item(serde_json::json!({ "pk": format!("order-{id}"), "total": total }))
        .expect("an item")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Simulator::builder().table_name("orders").build();
    let dir = std::env::temp_dir().join(format!("ddbstream-cron-job-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let checkpoints = dir.join("orders.checkpoints.json");

    for wake_up in 1..=3u32 {
        // What happened to the table since the last run.
        for id in 0..3 {
            sim.put_item(order(wake_up * 10 + id, wake_up))?;
        }
        if wake_up == 2 {
            sim.delete_item(&serde_dynamo::to_item(
                serde_json::json!({ "pk": "order-10" }),
            )?)?;
            let shard = sim.open_shards()[0].clone();
            sim.split_shard(&shard)?;
            sim.put_item(order(99, 2))?;
        }
        println!("run {wake_up}:");
        let report = job(sim.clone(), sim.stream_arn(), &checkpoints).await?;
        println!(
            "run {wake_up}: {} changes from {} shards, {} gaps; position saved in {}",
            report.total_records(),
            report.records.len(),
            report.gaps.len(),
            checkpoints.display()
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
