//! Crashes (dropping the replicator) at any moment lose nothing: a crashed scan resumes where
//! it stopped, a completed scan is never repeated, and the replica ends equal to the table.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dynamodb_stream::replicate::{ReplicaPhase, Replicator, ReplicatorEvent, SqliteReplica};
use dynamodb_stream::sim::Simulator;

use crate::common::{by_key, item, keys, wait_until, CountingTable};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_scan_resumes_and_a_finished_one_is_not_repeated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.sqlite");
    let sim = Simulator::builder().table_name("orders").build();
    for id in 0..3_000 {
        sim.put_item(item(id, 1)).expect("put");
    }
    // 3000 items in pages of 20: about 150 pages in all.
    let full_scan_pages = 3_000 / 20;

    let table = CountingTable::new(&sim);
    let sink = SqliteReplica::open(&path).await.expect("open");
    let replicator = Replicator::builder(table.clone(), sim.clone(), "orders", sink)
        .segments(4)
        .scan_page_limit(20)
        .spawn()
        .await
        .expect("spawn");
    let status = replicator.watch_status();
    wait_until("a third of the scan", Duration::from_secs(30), || {
        let scanned = status.borrow().scanned_items;
        async move { scanned >= 1_000 }
    })
    .await;
    assert_eq!(replicator.status().phase, ReplicaPhase::Scanning);
    drop(replicator); // the crash
    let first_pages = table.pages();

    // Writes while nothing runs.
    for id in 0..200 {
        sim.put_item(item(id, 2)).expect("put");
    }
    sim.delete_item(&keys(2_999)).expect("delete");

    let table = CountingTable::new(&sim);
    let sink = SqliteReplica::open(&path).await.expect("reopen");
    let builder = Replicator::builder(table.clone(), sim.clone(), "orders", sink.clone())
        .segments(7) // ignored: the scan resumes with the 4 segments it started with
        .scan_page_limit(20);
    let mut events = builder.events();
    let mut replicator = builder.spawn().await.expect("spawn");
    replicator.caught_up().await.expect("caught up");
    let second_pages = table.pages();
    assert!(
        second_pages + first_pages <= full_scan_pages + 12,
        "the second run rescanned: {first_pages} + {second_pages} pages"
    );
    assert!(second_pages < full_scan_pages - 20, "{second_pages} pages");
    let resumed = std::iter::from_fn(|| events.try_recv().ok()).any(|e| {
        e == ReplicatorEvent::ScanStarted {
            total_segments: 4,
            resumed: true,
        }
    });
    assert!(resumed, "the scan was not reported as resumed");
    wait_until(
        "replica equals the table",
        Duration::from_secs(30),
        || async { by_key(sink.items().await.expect("items")) == by_key(sim.scan()) },
    )
    .await;
    replicator.shutdown().await.expect("shutdown");

    // A third run: the scan is complete, only the stream is read.
    sim.put_item(item(5, 3)).expect("put");
    let table = CountingTable::new(&sim);
    let builder = Replicator::builder(table.clone(), sim.clone(), "orders", sink.clone());
    let mut events = builder.events();
    let mut replicator = builder.spawn().await.expect("spawn");
    replicator.caught_up().await.expect("caught up");
    wait_until("the new write arrives", Duration::from_secs(20), || async {
        sink.get(&keys(5)).await.expect("get") == Some(item(5, 3))
    })
    .await;
    replicator.shutdown().await.expect("shutdown");
    assert_eq!(table.pages(), 0, "a complete scan was repeated");
    let skipped = std::iter::from_fn(|| events.try_recv().ok())
        .any(|e| matches!(e, ReplicatorEvent::ScanSkipped { .. }));
    assert!(skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_while_streaming_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.sqlite");
    let sim = Simulator::builder()
        .table_name("orders")
        .initial_shards(2)
        .seed(5)
        .build();
    for id in 0..800 {
        sim.put_item(item(id, 1)).expect("put");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let sim = sim.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(9);
            let mut step = 2u64;
            while !stop.load(Ordering::SeqCst) {
                let id = rng.u32(0..1_000);
                if rng.u8(0..5) == 0 {
                    sim.delete_item(&keys(id)).expect("delete");
                } else {
                    sim.put_item(item(id, step)).expect("put");
                }
                step += 1;
                if step.is_multiple_of(700) {
                    sim.rollover_all();
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        })
    };

    let mut rng = fastrand::Rng::with_seed(21);
    let mut scan_done = false;
    for round in 0..10 {
        let table = CountingTable::new(&sim);
        let sink = SqliteReplica::open(&path).await.expect("open");
        let builder =
            Replicator::builder(table.clone(), sim.clone(), "orders", sink).scan_page_limit(40);
        let mut events = builder.events();
        let replicator = builder.spawn().await.expect("spawn");
        tokio::time::sleep(Duration::from_millis(rng.u64(20..400))).await;
        drop(replicator); // the crash
        if scan_done {
            assert_eq!(
                table.pages(),
                0,
                "round {round}: a complete scan was repeated"
            );
        }
        scan_done |= std::iter::from_fn(|| events.try_recv().ok()).any(|e| {
            matches!(
                e,
                ReplicatorEvent::ScanCompleted { .. } | ReplicatorEvent::ScanSkipped { .. }
            )
        });
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");

    let table = CountingTable::new(&sim);
    let sink = SqliteReplica::open(&path).await.expect("open");
    let mut replicator = Replicator::builder(table, sim.clone(), "orders", sink.clone())
        .spawn()
        .await
        .expect("spawn");
    replicator.caught_up().await.expect("caught up");
    // Caught up with the stream as of the start of this run, which is after the last write.
    assert_eq!(
        by_key(sink.items().await.expect("items")),
        by_key(sim.scan()),
        "replica differs from the table"
    );
    replicator.shutdown().await.expect("shutdown");
}
