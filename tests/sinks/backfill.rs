//! Backfill without a deadline: a scan that takes longer than the stream keeps records (24
//! hours) pauses every interval to catch the stream up, so nothing expires before it is
//! applied; the replica ends equal to the table — newer stream versions over older scanned
//! ones, deletes included — across a crash in the middle, on the simulator over several
//! simulated days and on DynamoDB Local aged with its `dilate` hook. And the scan's
//! read-capacity budget, slowed by throttling.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::error::{SourceError, SourceErrorKind};
use dynamodb_stream::replicate::{
    ReplicaPhase, Replicator, ReplicatorEvent, ScanPage, ScanRate, ScanRequest, TableInfo,
    TableSource,
};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::source::BoxFuture;
use dynamodb_stream::{ConsumerConfig, Error};

use crate::common::{assert_same_items, by_key, delete, item, keys, put, put_many, scan_table};
use crate::ddb_local::{clients, create_table, dilate, TestClients};
use crate::harness::{Kind, Storage};
use crate::wait::periodic_check;

const HOUR: Duration = Duration::from_secs(3600);

fn fast(config: &mut ConsumerConfig) {
    config.min_poll_interval = Duration::from_millis(5);
    config.idle_poll_interval = Duration::from_millis(20);
    config.discovery_interval = Duration::from_millis(200);
}

/// The simulator as a slow table: every Scan page takes `per_page` of simulated time, during
/// which the table keeps changing (puts, updates, deletes, a rollover now and then).
#[derive(Clone)]
struct SlowTable {
    sim: Simulator,
    per_page: Duration,
    rng: Arc<Mutex<fastrand::Rng>>,
    pages: Arc<AtomicUsize>,
}

impl TableSource for SlowTable {
    fn table_info(&self, table_name: &str) -> BoxFuture<'_, dynamodb_stream::Result<TableInfo>> {
        self.sim.table_info(table_name)
    }

    fn scan_segment(
        &self,
        request: ScanRequest,
    ) -> BoxFuture<'_, dynamodb_stream::Result<ScanPage>> {
        let page = self.pages.fetch_add(1, Ordering::SeqCst) as u64;
        {
            let mut rng = self.rng.lock().unwrap();
            for _ in 0..8 {
                let id = rng.u32(0..500);
                if rng.u8(0..4) == 0 {
                    self.sim.delete_item(&keys(id)).expect("delete");
                } else {
                    self.sim.put_item(item(id, page + 2)).expect("put");
                }
            }
        }
        if page % 7 == 6 {
            self.sim.rollover_all();
        }
        self.sim.advance(self.per_page);
        self.sim.scan_segment(request)
    }
}

/// A scan of five simulated days (3 hours a page), crashed on the third day and resumed: the
/// stream is caught up every six hours, the earliest records are trimmed long before the end,
/// and the replica equals the table.
async fn a_scan_of_several_days_loses_nothing(kind: Kind) {
    let storage = Storage::new(kind, "several_days").await;
    let sim = Simulator::builder()
        .table_name("orders")
        .initial_shards(2)
        .seed(7)
        .build();
    for id in 0..400 {
        sim.put_item(item(id, 1)).expect("put");
    }
    let table = SlowTable {
        sim: sim.clone(),
        per_page: 3 * HOUR,
        rng: Arc::new(Mutex::new(fastrand::Rng::with_seed(3))),
        pages: Arc::new(AtomicUsize::new(0)),
    };
    let start = |sink| {
        Replicator::builder(table.clone(), sim.clone(), "orders", sink)
            .segments(2)
            .scan_page_limit(10)
            .catch_up_every(6 * HOUR)
            .configure(fast)
    };
    let replicator = start(storage.open().await.sink)
        .spawn()
        .await
        .expect("spawn");
    let status = replicator.watch_status();
    periodic_check(
        || sim.elapsed() > 2 * 24 * HOUR && status.borrow().backfill_catch_ups >= 4,
        Duration::from_secs(120),
        "two simulated days of scanning",
    )
    .await;
    assert_eq!(
        replicator.status().phase,
        ReplicaPhase::Scanning,
        "{kind:?}"
    );
    drop(replicator); // the crash, with the bookmark two days old

    let sink = storage.open().await;
    let builder = start(sink.sink.clone());
    let mut events = builder.events();
    let mut replicator = builder.spawn().await.expect("spawn");
    replicator.caught_up().await.expect("caught up");
    let seen: Vec<ReplicatorEvent> = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| !matches!(e, ReplicatorEvent::Consumer(_)))
        .collect();
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, ReplicatorEvent::ScanRestarted { .. })),
        "{kind:?}: the resumed scan started over: {seen:?}"
    );
    assert!(
        seen.contains(&ReplicatorEvent::ScanStarted {
            total_segments: 2,
            resumed: true
        }),
        "{kind:?}: {seen:?}"
    );
    assert!(
        sim.elapsed() > 4 * 24 * HOUR,
        "{kind:?}: the scan took only {:?}",
        sim.elapsed()
    );
    // The stream no longer holds the first day: without the catch-ups those changes were lost.
    let retained: BTreeSet<_> = sim
        .shards()
        .iter()
        .flat_map(|s| sim.retained_records(&s.shard_id).unwrap_or_default())
        .map(|r| r.sequence_number().clone())
        .collect();
    let first = sim.written_records()[0].record.sequence_number().clone();
    assert!(!retained.contains(&first), "{kind:?}: nothing was trimmed");
    assert_same_items(
        &sink.items().await,
        &by_key(sim.scan()),
        &format!("{kind:?}"),
    );
    replicator.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_scan_of_several_days_loses_nothing() {
    a_scan_of_several_days_loses_nothing(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_scan_of_several_days_loses_nothing() {
    a_scan_of_several_days_loses_nothing(Kind::Postgres).await;
}

/// DynamoDB Local as a slow table: each Scan page ages the server's stream by `per_page` (its
/// `dilate` hook: iterators expire, records are trimmed past 24 hours, shards roll over), after
/// writing a few changes. The first catch-up happens before anything is aged, as in real time.
#[derive(Clone)]
struct AgingTable {
    c: TestClients,
    per_page: Duration,
    catch_ups: Arc<AtomicUsize>,
    version: Arc<AtomicUsize>,
}

impl TableSource for AgingTable {
    fn table_info(&self, table_name: &str) -> BoxFuture<'_, dynamodb_stream::Result<TableInfo>> {
        self.c.dynamodb.table_info(table_name)
    }

    fn scan_segment(
        &self,
        request: ScanRequest,
    ) -> BoxFuture<'_, dynamodb_stream::Result<ScanPage>> {
        Box::pin(async move {
            let v = self.version.fetch_add(1, Ordering::SeqCst) as u32;
            for i in 0..4u32 {
                let id = (v * 37 + i * 101) % 260;
                if i == 3 {
                    delete(&self.c, "orders", &keys(id)).await;
                } else {
                    put(&self.c, "orders", &item(id, u64::from(v) + 2)).await;
                }
            }
            if self.catch_ups.load(Ordering::SeqCst) > 0 {
                dilate(&self.c, self.per_page).await;
            }
            self.c.dynamodb.scan_segment(request).await
        })
    }
}

async fn on_dynamodb_local_records_older_than_a_day_are_applied_in_time(kind: Kind) {
    let name = format!("aging{kind:?}");
    let c = clients(&name);
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    put_many(
        &c,
        "orders",
        &(0..200).map(|id| item(id, 1)).collect::<Vec<_>>(),
    )
    .await;
    let storage = Storage::new(kind, &name).await;
    let table = AgingTable {
        c: c.clone(),
        per_page: 4 * HOUR,
        catch_ups: Arc::new(AtomicUsize::new(0)),
        version: Arc::new(AtomicUsize::new(0)),
    };
    let sink = storage.open().await;
    let builder = Replicator::builder(
        table.clone(),
        c.streams.clone(),
        "orders",
        sink.sink.clone(),
    )
    .segments(2)
    .scan_page_limit(20)
    // DynamoDB Local's clock is not ours: catch up after every page of each segment.
    .catch_up_every(Duration::ZERO)
    .configure(fast);
    let mut events = builder.events();
    let mut replicator = builder.spawn().await.expect("spawn");
    let counter = table.catch_ups.clone();
    let mut seen = Vec::new();
    let watcher = async {
        loop {
            match events.recv().await {
                Ok(ReplicatorEvent::Consumer(_)) => {}
                Ok(e) => {
                    if matches!(e, ReplicatorEvent::BackfillCaughtUp { .. }) {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    seen.push(e);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    };
    tokio::select! {
        r = replicator.caught_up() => r.expect("caught up"),
        () = watcher => panic!("events ended"),
    }
    let aged = table.per_page * (table.version.load(Ordering::SeqCst) as u32);
    assert!(aged > 30 * HOUR, "{kind:?}: the stream aged only {aged:?}");
    let catch_ups = seen
        .iter()
        .filter(|e| matches!(e, ReplicatorEvent::BackfillCaughtUp { .. }))
        .count();
    assert!(catch_ups >= 5, "{kind:?}: {catch_ups} catch-ups: {seen:?}");
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, ReplicatorEvent::ScanRestarted { .. })),
        "{kind:?}: {seen:?}"
    );
    let expected = scan_table(&c, "orders").await;
    assert_same_items(&sink.items().await, &expected, &format!("{kind:?}"));
    replicator.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_dynamodb_local_records_older_than_a_day_are_applied_in_time() {
    on_dynamodb_local_records_older_than_a_day_are_applied_in_time(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_on_dynamodb_local_records_older_than_a_day_are_applied_in_time() {
    on_dynamodb_local_records_older_than_a_day_are_applied_in_time(Kind::Postgres).await;
}

/// The simulator as a table that throttles its first Scan calls.
#[derive(Clone)]
struct ThrottlingTable {
    sim: Simulator,
    calls: Arc<AtomicUsize>,
}

impl TableSource for ThrottlingTable {
    fn table_info(&self, table_name: &str) -> BoxFuture<'_, dynamodb_stream::Result<TableInfo>> {
        self.sim.table_info(table_name)
    }

    fn scan_segment(
        &self,
        request: ScanRequest,
    ) -> BoxFuture<'_, dynamodb_stream::Result<ScanPage>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if (2..5).contains(&call) {
            return Box::pin(async {
                Err(Error::Source(SourceError::new(
                    SourceErrorKind::Throttled,
                    "ProvisionedThroughputExceededException",
                )))
            });
        }
        self.sim.scan_segment(request)
    }
}

/// A budget of read units per second: the scan spends no more than the budget allows over its
/// run (on tokio's paused clock, so the check is exact, not a timing guess), throttling lowers
/// the pace, and the scan still completes.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_scan_keeps_to_its_read_budget_and_slows_down_when_throttled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Simulator::builder().table_name("orders").build();
    for id in 0..600 {
        sim.put_item(item(id, 1)).expect("put");
    }
    let budget = 5.0;
    let sink = dynamodb_stream::replicate::SqliteReplica::open(dir.path().join("r.sqlite"))
        .await
        .expect("open");
    let table = ThrottlingTable {
        sim: sim.clone(),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let started = tokio::time::Instant::now();
    let mut replicator = Replicator::builder(table, sim.clone(), "orders", sink.clone())
        .segments(3)
        .scan_page_limit(25)
        .scan_rate(ScanRate::ReadUnits(budget))
        .configure(fast)
        .spawn()
        .await
        .expect("spawn");
    let mut status = replicator.watch_status();
    let mut lowest = budget;
    let mut scanned = None;
    while scanned.is_none() {
        status.changed().await.expect("status");
        let s = status.borrow().clone();
        if let Some(limit) = s.scan_rate_limit {
            lowest = lowest.min(limit);
        }
        if s.phase != ReplicaPhase::Scanning && s.phase != ReplicaPhase::Starting {
            scanned = Some((s.consumed_read_units, started.elapsed()));
        }
    }
    let (units, elapsed) = scanned.expect("scan done");
    assert!(lowest < budget, "throttling did not slow the scan down");
    // One second of burst, plus one page per segment in flight.
    let largest_page = dynamodb_stream::replicate::read_units(&sim.scan()[..25]);
    let allowed = budget * elapsed.as_secs_f64() + budget + 3.0 * largest_page;
    assert!(
        units > 0.0 && units <= allowed,
        "{units} read units in {elapsed:?} with a budget of {budget}/s"
    );
    replicator.caught_up().await.expect("caught up");
    assert_eq!(
        by_key(sink.items().await.expect("items")),
        by_key(sim.scan())
    );
    replicator.shutdown().await.expect("shutdown");
}
