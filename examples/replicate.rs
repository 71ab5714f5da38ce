//! Copy a table into a SQLite file and keep it up to date — on the embedded simulator, so it
//! runs anywhere.
//!
//! The first run bookmarks the stream, scans the table in parallel segments while a writer keeps
//! changing it, then replays the stream on top of the scan until the copy has caught up. A
//! second run finds the scan complete and resumes from the checkpoints stored in the same file.
//!
//! Run: `cargo run --example replicate`
//!
//! The same against DynamoDB Local (or AWS, without the endpoint) with the `ddbstream` tool:
//!
//! ```text
//! export AWS_ENDPOINT_URL=http://localhost:8000 AWS_REGION=us-east-1 \
//!        AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
//! aws dynamodb create-table --table-name orders \
//!     --attribute-definitions AttributeName=pk,AttributeType=S \
//!     --key-schema AttributeName=pk,KeyType=HASH --billing-mode PAY_PER_REQUEST \
//!     --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES
//! ddbstream replicate --table orders --db orders.sqlite --once   # copy, catch up, exit
//! ddbstream replicate --table orders --db orders.sqlite          # follow until Ctrl-C
//! ddbstream tail --table orders --from trim-horizon              # watch the changes as JSON
//! sqlite3 orders.sqlite "SELECT pk, json_extract(_item, '$.total.N') FROM items"
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dynamodb_stream::record::{AttributeValue, Item};
use dynamodb_stream::replicate::{Replicator, ReplicatorEvent, SqliteReplica};
use dynamodb_stream::sim::Simulator;

fn order(id: u32, total: u64) -> Item {
    let mut m = HashMap::new();
    m.insert("pk".to_owned(), AttributeValue::S(format!("order-{id:05}")));
    m.insert("total".to_owned(), AttributeValue::N(total.to_string()));
    // A number no float can hold: the replica keeps every digit.
    m.insert(
        "ledger".to_owned(),
        AttributeValue::N(format!("1234567890123456789012345678901234{id:04}")),
    );
    Item::from(m)
}

fn key(id: u32) -> Item {
    let mut m = HashMap::new();
    m.insert("pk".to_owned(), AttributeValue::S(format!("order-{id:05}")));
    Item::from(m)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("orders.sqlite");
    let sim = Simulator::builder()
        .table_name("orders")
        .initial_shards(2)
        .build();
    for id in 0..2_000 {
        sim.put_item(order(id, u64::from(id)))?;
    }

    // A writer that keeps changing the table while the copy is made.
    let writer_sim = sim.clone();
    let writer = tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(7);
        for step in 0..1_500u64 {
            let id = rng.u32(0..2_500);
            let outcome = if rng.u8(0..4) == 0 {
                writer_sim.delete_item(&key(id))
            } else {
                writer_sim.put_item(order(id, 10_000 + step))
            };
            outcome.expect("simulator write");
            if step == 700 {
                // Shards split as tables grow; the replica follows parents before children.
                let shard = writer_sim.open_shards()[0].clone();
                writer_sim.split_shard(&shard).expect("split");
            }
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
    });

    let started = Instant::now();
    let sink = SqliteReplica::open(&db).await?;
    let builder = Replicator::builder(sim.clone(), sim.clone(), "orders", sink)
        .segments(4)
        .scan_page_limit(100);
    let mut events = builder.events();
    let mut replicator = builder.spawn().await?;
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                ReplicatorEvent::Consumer(_) => {}
                other => println!("  event: {other:?}"),
            }
        }
    });
    replicator.caught_up().await?;
    let status = replicator.status();
    println!(
        "first run: caught up after {:?}: {} items scanned, {} changes applied",
        started.elapsed(),
        status.scanned_items,
        status.applied_changes
    );
    writer.await?;
    let replica = SqliteReplica::open(&db).await?;
    wait_equal(&sim, &replica).await?;
    replicator.shutdown().await?;
    println!(
        "first run: the replica equals the table ({} items)",
        sim.item_count()
    );

    // More changes while nothing runs, then a second run: no scan, just the stream.
    for id in 0..300 {
        sim.put_item(order(id, 99_999))?;
    }
    let mut replicator = Replicator::builder(sim.clone(), sim.clone(), "orders", replica.clone())
        .spawn()
        .await?;
    replicator.caught_up().await?;
    wait_equal(&sim, &replica).await?;
    let status = replicator.status();
    replicator.shutdown().await?;
    println!(
        "second run: {} changes applied, {} items scanned (by the first run), replica equal",
        status.applied_changes, status.scanned_items
    );
    let ledger = replica
        .get(&key(42))
        .await?
        .and_then(|i| i.get("ledger").cloned());
    println!("order-00042 ledger, every digit kept: {ledger:?}");
    println!("replica file: {} (deleted on exit)", db.display());
    Ok(())
}

/// Wait until the replica holds exactly the table's items.
async fn wait_equal(
    sim: &Simulator,
    replica: &SqliteReplica,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if replica.items().await? == sim.scan() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the replica did not converge within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
