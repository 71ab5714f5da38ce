//! The one-transaction property: at every moment, the replica's items are exactly the table as
//! of the checkpoint stored beside them — a checkpoint never passes a change the replica lacks,
//! and the replica never holds a change its checkpoint does not cover.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dynamodb_stream::replicate::{Replicator, SqliteReplica};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::SequenceNumber;

use crate::common::{item, keys, replica_snapshot, state_at};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_always_match_their_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.sqlite");
    // One shard: the table as of a sequence number is then well defined.
    let sim = Simulator::builder().table_name("orders").build();
    for id in 0..300 {
        sim.put_item(item(id, 1)).expect("put");
    }
    let sink = SqliteReplica::open(&path).await.expect("open");
    let mut replicator = Replicator::builder(sim.clone(), sim.clone(), "orders", sink)
        .configure(|c| {
            // Small batches: many commits to catch in between.
            c.max_records_per_call = 7;
            c.min_poll_interval = Duration::from_millis(5);
            c.idle_poll_interval = Duration::from_millis(20);
        })
        .spawn()
        .await
        .expect("spawn");
    // From here on every stored position is past the scan: the replica must equal the table
    // as of that position.
    replicator.caught_up().await.expect("caught up");

    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let sim = sim.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut conn = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("reader");
            let mut checks = 0;
            let mut positions = std::collections::BTreeSet::new();
            while !done.load(Ordering::SeqCst) {
                let (checkpoints, items) = replica_snapshot(&mut conn);
                assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
                let (state, seq) = checkpoints.values().next().expect("one shard").clone();
                assert_eq!(state, "processed");
                let seq: SequenceNumber = seq.expect("sequence number").parse().expect("valid");
                let expected = state_at(&sim.written_records(), &seq);
                assert!(
                    items == expected,
                    "at checkpoint {seq} the replica holds {} items, the table held {}",
                    items.len(),
                    expected.len()
                );
                positions.insert(seq);
                checks += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            (checks, positions.len())
        })
    };
    let mut rng = fastrand::Rng::with_seed(1);
    for step in 0..1_500u64 {
        let id = rng.u32(0..400);
        if rng.u8(0..4) == 0 {
            sim.delete_item(&keys(id)).expect("delete");
        } else {
            sim.put_item(item(id, step + 2)).expect("put");
        }
        if step % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::SeqCst);
    let (checks, positions) = checker.join().expect("checker");
    replicator.shutdown().await.expect("shutdown");
    assert!(checks >= 50, "only {checks} snapshots checked");
    assert!(
        positions >= 20,
        "only {positions} distinct checkpoints seen"
    );
}
