//! Keep a live copy of a table in a map — on the embedded stream simulator, no AWS needed.
//!
//! A writer puts, updates and deletes items while the consumer runs; midway a shard splits
//! into two children, and the handler fails once on purpose. The consumer restarts that shard
//! from its checkpoint, reads parents before children, and the replica ends equal to the table.
//!
//! Run: `cargo run --example quickstart`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::record::Item;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{
    Batch, Consumer, ConsumerEvent, Handler, HandlerError, RecordKind, ShardInfo,
};

/// The replica: item key → item.
type Replica = Arc<Mutex<HashMap<String, Item>>>;

/// Applies each change to the replica. One handler per shard; all share the map.
struct ReplicaHandler {
    replica: Replica,
    /// Fail the first batch after this many, once, to show redelivery.
    fail_after: Arc<Mutex<Option<usize>>>,
}

impl Handler for ReplicaHandler {
    async fn handle(&mut self, batch: Batch) -> Result<(), HandlerError> {
        {
            let mut fail = self.fail_after.lock().expect("lock");
            if let Some(n) = fail.as_mut() {
                if *n == 0 {
                    *fail = None;
                    return Err(HandlerError::msg(
                        "injected failure: this batch will be redelivered",
                    ));
                }
                *n -= 1;
            }
        }
        let mut replica = self.replica.lock().expect("lock");
        for record in batch.records() {
            match record.kind() {
                RecordKind::Insert | RecordKind::Modify => {
                    if let Some(item) = record.new_image() {
                        replica.insert(record.key_string(), item.clone());
                    }
                }
                RecordKind::Remove { .. } => {
                    replica.remove(&record.key_string());
                }
                other => println!("ignoring unknown event {other:?}"),
            }
        }
        Ok(())
    }

    async fn on_shard_end(&mut self, shard: &ShardInfo) -> Result<(), HandlerError> {
        println!("  shard {} read to its end", shard.shard_id);
        Ok(())
    }
}

fn order(id: u32, version: u32) -> Item {
    serde_dynamo::to_item(serde_json::json!({
        "pk": format!("order-{id}"),
        "status": if version.is_multiple_of(3) { "shipped" } else { "open" },
        "version": version,
        "total": format!("{}.{:02}", id * 7, version),
    }))
    .expect("a JSON object is an item")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let sim = Simulator::builder()
        .table_name("orders")
        .initial_shards(2)
        .seed(42)
        .build();
    let replica: Replica = Arc::default();
    let fail_after = Arc::new(Mutex::new(Some(3)));

    let (r, f) = (replica.clone(), fail_after.clone());
    let builder = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |_shard| ReplicaHandler {
            replica: r.clone(),
            fail_after: f.clone(),
        })
        .checkpoints(MemoryCheckpointStore::new())
        // Snappier than the production defaults, for a demo on an in-memory stream.
        .configure(|c| {
            c.idle_poll_interval = Duration::from_millis(50);
            c.discovery_interval = Duration::from_millis(500);
            c.restart.initial_backoff = Duration::from_millis(50);
        });
    let mut events = builder.events();
    let consumer = builder.spawn().await?;
    let restarts = Arc::new(Mutex::new(0));
    let counted = restarts.clone();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                ConsumerEvent::ShardStarted {
                    shard_id, position, ..
                } => println!("  shard {shard_id} started at {position}"),
                ConsumerEvent::WorkerRestarted {
                    shard_id, error, ..
                } => {
                    *counted.lock().expect("lock") += 1;
                    println!("  shard {shard_id} restarts after: {error}");
                }
                _ => {}
            }
        }
    });

    println!("writing 3000 changes to table 'orders' (puts, updates, deletes; one split midway)");
    let mut changes = 0;
    for step in 0..3000u32 {
        let id = step % 400;
        if step % 11 == 10 {
            sim.delete_item(&serde_dynamo::to_item(
                serde_json::json!({ "pk": format!("order-{id}") }),
            )?)?;
        } else {
            sim.put_item(order(id, step / 400 + 1))?;
        }
        changes += 1;
        if step == 1500 {
            let parent = sim.open_shards()[0].clone();
            let (a, b) = sim.split_shard(&parent)?;
            println!("  split {parent} into {a} and {b}");
        }
        if step % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    let table: HashMap<String, Item> = sim
        .scan()
        .into_iter()
        .map(|item| {
            let keys: Item = item
                .iter()
                .filter(|(k, _)| k.as_str() == "pk")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>()
                .into();
            (dynamodb_stream::record::item_key_string(&keys), item)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while *replica.lock().expect("lock") != table {
        if Instant::now() > deadline {
            return Err("the replica did not converge within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.shutdown().await?;

    let restarts = *restarts.lock().expect("lock");
    println!(
        "replica equals the table: {} items after {changes} changes across {} shards, {restarts} restart(s), in {:.1?}",
        table.len(),
        sim.shards().len(),
        started.elapsed()
    );
    Ok(())
}
