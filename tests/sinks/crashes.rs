//! The replicator over every sink, crashed (dropped: its task aborted mid-transaction) again and
//! again under writes and shard rollovers: a crashed scan resumes where it stopped, a finished
//! one is never repeated, and after the last run the replica equals the table item for item —
//! on the simulator, and on DynamoDB Local with its forced rollovers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::replicate::{
    ReplicaPhase, Replicator, ReplicatorEvent, ScanPage, ScanRequest, TableInfo, TableSource,
};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::source::BoxFuture;

use crate::common::{
    assert_same_items, by_key, delete, item, keys, put, put_many, scan_table, wait_until,
    CountingTable,
};
use crate::ddb_local::{clients, create_table, rollover};
use crate::harness::{Kind, Storage};

async fn a_crashed_scan_resumes_and_a_finished_one_is_not_repeated(kind: Kind) {
    let storage = Storage::new(kind, "scan_resumes_replicator").await;
    let sim = Simulator::builder().table_name("orders").build();
    for id in 0..2_000 {
        sim.put_item(item(id, 1)).expect("put");
    }
    let full_scan_pages = 2_000 / 20;
    let table = CountingTable::new(&sim);
    let replicator = Replicator::builder(
        table.clone(),
        sim.clone(),
        "orders",
        storage.open().await.sink,
    )
    .segments(4)
    .scan_page_limit(20)
    .spawn()
    .await
    .expect("spawn");
    let status = replicator.watch_status();
    wait_until("a third of the scan", Duration::from_secs(60), || {
        let scanned = status.borrow().scanned_items;
        async move { scanned >= 700 }
    })
    .await;
    assert_eq!(
        replicator.status().phase,
        ReplicaPhase::Scanning,
        "{kind:?}"
    );
    drop(replicator); // the crash
    let first_pages = table.pages();
    for id in 0..150 {
        sim.put_item(item(id, 2)).expect("put");
    }
    sim.delete_item(&keys(1_999)).expect("delete");

    let table = CountingTable::new(&sim);
    let sink = storage.open().await;
    let builder = Replicator::builder(table.clone(), sim.clone(), "orders", sink.sink.clone())
        .segments(7) // ignored: the scan resumes with the 4 segments it started with
        .scan_page_limit(20);
    let mut events = builder.events();
    let mut replicator = builder.spawn().await.expect("spawn");
    replicator.caught_up().await.expect("caught up");
    let second_pages = table.pages();
    assert!(
        second_pages + first_pages <= full_scan_pages + 12,
        "{kind:?}: the second run rescanned: {first_pages} + {second_pages} pages"
    );
    let resumed = std::iter::from_fn(|| events.try_recv().ok()).any(|e| {
        e == ReplicatorEvent::ScanStarted {
            total_segments: 4,
            resumed: true,
        }
    });
    assert!(resumed, "{kind:?}: the scan was not reported as resumed");
    wait_until(
        "replica equals the table",
        Duration::from_secs(30),
        || async { sink.items().await == by_key(sim.scan()) },
    )
    .await;
    replicator.shutdown().await.expect("shutdown");

    // A third run: the scan is complete, only the stream is read.
    sim.put_item(item(5, 3)).expect("put");
    let table = CountingTable::new(&sim);
    let sink = storage.open().await;
    let mut replicator =
        Replicator::builder(table.clone(), sim.clone(), "orders", sink.sink.clone())
            .spawn()
            .await
            .expect("spawn");
    replicator.caught_up().await.expect("caught up");
    wait_until("the new write arrives", Duration::from_secs(20), || async {
        sink.get(&keys(5)).await == Some(item(5, 3))
    })
    .await;
    replicator.shutdown().await.expect("shutdown");
    assert_eq!(table.pages(), 0, "{kind:?}: a complete scan was repeated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_crashed_scan_resumes_and_a_finished_one_is_not_repeated() {
    a_crashed_scan_resumes_and_a_finished_one_is_not_repeated(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_crashed_scan_resumes_and_a_finished_one_is_not_repeated() {
    a_crashed_scan_resumes_and_a_finished_one_is_not_repeated(Kind::Postgres).await;
}

/// Ten crashes at random moments while a writer puts and deletes and the shards roll over.
async fn crashes_while_streaming_lose_nothing(kind: Kind) {
    let storage = Storage::new(kind, "crashes_streaming").await;
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
        let (sim, stop) = (sim.clone(), stop.clone());
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
        let builder = Replicator::builder(
            table.clone(),
            sim.clone(),
            "orders",
            storage.open().await.sink,
        )
        .scan_page_limit(40);
        let mut events = builder.events();
        let replicator = builder.spawn().await.expect("spawn");
        tokio::time::sleep(Duration::from_millis(rng.u64(20..400))).await;
        drop(replicator); // the crash
        if scan_done {
            assert_eq!(
                table.pages(),
                0,
                "{kind:?} round {round}: a complete scan was repeated"
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

    let sink = storage.open().await;
    let mut replicator = Replicator::builder(sim.clone(), sim.clone(), "orders", sink.sink.clone())
        .spawn()
        .await
        .expect("spawn");
    replicator.caught_up().await.expect("caught up");
    // Caught up with the stream as of the start of this run, which is after the last write.
    assert_same_items(
        &sink.items().await,
        &by_key(sim.scan()),
        &format!("{kind:?}"),
    );
    replicator.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crashes_while_streaming_lose_nothing() {
    crashes_while_streaming_lose_nothing(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashes_while_streaming_lose_nothing() {
    crashes_while_streaming_lose_nothing(Kind::Postgres).await;
}

/// DynamoDB as a table, counting Scan pages.
#[derive(Clone)]
struct CountingDynamoDb {
    client: aws_sdk_dynamodb::Client,
    pages: Arc<AtomicUsize>,
}

impl TableSource for CountingDynamoDb {
    fn table_info(&self, table_name: &str) -> BoxFuture<'_, dynamodb_stream::Result<TableInfo>> {
        self.client.table_info(table_name)
    }

    fn scan_segment(
        &self,
        request: ScanRequest,
    ) -> BoxFuture<'_, dynamodb_stream::Result<ScanPage>> {
        self.pages.fetch_add(1, Ordering::SeqCst);
        self.client.scan_segment(request)
    }
}

/// On DynamoDB Local: a writer puts and deletes, the open shard is rolled over every 0.5–1.5 s,
/// and the replicator is dropped at random moments (during the scan and while streaming),
/// eight times. After the writer stops, one last run catches up: the replica equals a Scan.
async fn ddb_local_crashes_under_writes_and_rollovers(kind: Kind) {
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let name = format!("crashes{kind:?}");
    let c = clients(&name);
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    put_many(
        &c,
        "orders",
        &(0..600).map(|id| item(id, 1)).collect::<Vec<_>>(),
    )
    .await;
    let storage = Storage::new(kind, &name).await;

    let stop = Arc::new(AtomicBool::new(false));
    let roller = {
        let (c, stop) = (c.clone(), stop.clone());
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x11);
        tokio::spawn(async move {
            let mut rollovers = 0u32;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.u64(500..1_500))).await;
                rollover(&c).await;
                rollovers += 1;
            }
            rollovers
        })
    };
    let writer = {
        let (c, stop) = (c.clone(), stop.clone());
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
        tokio::spawn(async move {
            let mut version = 2;
            while !stop.load(Ordering::SeqCst) {
                let id = rng.u32(0..700);
                if rng.u8(0..4) == 0 {
                    delete(&c, "orders", &keys(id)).await;
                } else {
                    put(&c, "orders", &item(id, version)).await;
                }
                version += 1;
                tokio::time::sleep(Duration::from_millis(rng.u64(1..6))).await;
            }
        })
    };
    let fast = |config: &mut dynamodb_stream::ConsumerConfig| {
        config.min_poll_interval = Duration::from_millis(20);
        config.idle_poll_interval = Duration::from_millis(100);
        config.discovery_interval = Duration::from_millis(500);
    };
    let mut scan_done = false;
    for round in 0..8 {
        let table = CountingDynamoDb {
            client: c.dynamodb.clone(),
            pages: Arc::new(AtomicUsize::new(0)),
        };
        let builder = Replicator::builder(
            table.clone(),
            c.streams.clone(),
            "orders",
            storage.open().await.sink,
        )
        .scan_page_limit(25)
        .configure(fast);
        let mut events = builder.events();
        let replicator = builder.spawn().await.expect("spawn");
        tokio::time::sleep(Duration::from_millis(rng.u64(100..2_000))).await;
        drop(replicator); // the crash
        if scan_done {
            assert_eq!(
                table.pages.load(Ordering::SeqCst),
                0,
                "{kind:?} round {round}: a complete scan was repeated"
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
    let rollovers = roller.await.expect("roller");
    assert!(rollovers >= 3, "only {rollovers} rollovers");

    let sink = storage.open().await;
    let mut replicator = Replicator::builder(
        c.dynamodb.clone(),
        c.streams.clone(),
        "orders",
        sink.sink.clone(),
    )
    .configure(fast)
    .spawn()
    .await
    .expect("spawn");
    replicator.caught_up().await.expect("caught up");
    let expected = scan_table(&c, "orders").await;
    assert_same_items(
        &sink.items().await,
        &expected,
        &format!("{kind:?} (seed {seed})"),
    );
    replicator.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_dynamodb_local_crashes_under_writes_and_rollovers() {
    ddb_local_crashes_under_writes_and_rollovers(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_on_dynamodb_local_crashes_under_writes_and_rollovers() {
    ddb_local_crashes_under_writes_and_rollovers(Kind::Postgres).await;
}
