//! I4: with a checkpoint, AFTER_SEQUENCE_NUMBER; shards that appear after the first start read
//! from TRIM_HORIZON; the user's LATEST applies only to shards open at first start, and is
//! never applied again after a restart.

use std::collections::HashSet;
use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{ConsumerEvent, StartPosition};

use crate::common::{check_deliveries, periodic_check, start, Log, Written};

fn keys_seen(log: &Log) -> HashSet<String> {
    log.snapshot().into_iter().map(|d| d.key).collect()
}

async fn wait_started(events: &crate::common::Events, n: usize) {
    periodic_check(
        || events.count(|e| matches!(e, ConsumerEvent::ShardStarted { .. })) >= n,
        Duration::from_secs(30),
        "shards started",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn latest_applies_only_to_shards_open_at_first_start() {
    let sim = Simulator::builder().initial_shards(2).seed(6).build();
    let mut before = Written::default();
    for i in 0..50 {
        before.put(&sim, &format!("old{i}"));
    }
    // A shard that is already closed at first start holds only old records.
    sim.rollover_shard(&sim.open_shards()[0]).expect("rollover");
    for i in 0..20 {
        before.put(&sim, &format!("old-b{i}"));
    }
    tokio::time::advance(Duration::from_secs(600)).await;

    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, events) = start(&sim, &log, &store, |c| {
        c.start_position = StartPosition::Latest
    })
    .await;
    wait_started(&events, 2).await;
    let mut after = Written::default();
    for i in 0..50 {
        after.put(&sim, &format!("new{i}"));
    }
    // Children created after the first start are read from their beginning.
    let (a, b) = sim.split_shard(&sim.open_shards()[0]).expect("split");
    for i in 0..100 {
        after.put(&sim, &format!("child{i}"));
    }
    periodic_check(
        || log.len() as u64 >= after.total(),
        Duration::from_secs(120),
        "new records",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    consumer.shutdown().await.expect("shutdown");

    check_deliveries(&after, &log.snapshot(), true);
    assert!(
        keys_seen(&log).iter().all(|k| !k.contains("old")),
        "records from before the start were delivered"
    );
    let child_records = log
        .snapshot()
        .iter()
        .filter(|d| d.shard_id == a || d.shard_id == b)
        .count();
    assert!(child_records > 0, "children delivered nothing");
    for e in events.all() {
        if let ConsumerEvent::ShardStarted {
            shard_id, position, ..
        } = e
        {
            if shard_id == a || shard_id == b {
                assert_eq!(position, "TRIM_HORIZON", "child {shard_id}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_never_reapplies_latest() {
    let sim = Simulator::builder().initial_shards(2).seed(7).build();
    for i in 0..30 {
        sim.put_item(crate::common::item(&format!("old{i}"), 1))
            .expect("put");
    }
    tokio::time::advance(Duration::from_secs(600)).await;
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, events) = start(&sim, &log, &store, |c| {
        c.start_position = StartPosition::Latest
    })
    .await;
    wait_started(&events, 2).await;
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(log.len(), 0);

    // Written while the consumer is down: a restart at LATEST would lose these.
    let mut down = Written::default();
    for i in 0..40 {
        down.put(&sim, &format!("down{i}"));
    }
    let (consumer, events) = start(&sim, &log, &store, |c| {
        c.start_position = StartPosition::Latest
    })
    .await;
    periodic_check(
        || log.len() as u64 >= down.total(),
        Duration::from_secs(60),
        "records written while down",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    check_deliveries(&down, &log.snapshot(), true);
    assert!(
        keys_seen(&log).iter().all(|k| !k.contains("old")),
        "records from before the first start were delivered"
    );
    for e in events.all() {
        if let ConsumerEvent::ShardStarted { position, .. } = e {
            assert_ne!(position, "LATEST", "a restart opened a shard at LATEST");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_expired_first_iterator_reopens_without_loss() {
    let sim = Simulator::builder().initial_shards(1).seed(8).build();
    for i in 0..30 {
        sim.put_item(crate::common::item(&format!("old{i}"), 1))
            .expect("put");
    }
    tokio::time::advance(Duration::from_secs(600)).await;
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, events) = start(&sim, &log, &store, |c| {
        c.start_position = StartPosition::Latest
    })
    .await;
    wait_started(&events, 1).await;
    // Age every iterator past 15 minutes before anything was read.
    sim.advance(Duration::from_secs(16 * 60));
    let mut after = Written::default();
    for i in 0..40 {
        after.put(&sim, &format!("new{i}"));
    }
    periodic_check(
        || log.len() as u64 >= after.total(),
        Duration::from_secs(60),
        "new records",
    )
    .await;
    // And again, now that records were delivered: the reopen is AFTER the last one.
    sim.advance(Duration::from_secs(16 * 60));
    for i in 40..80 {
        after.put(&sim, &format!("new{i}"));
    }
    periodic_check(
        || log.len() as u64 >= after.total(),
        Duration::from_secs(60),
        "newer records",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    consumer.shutdown().await.expect("shutdown");
    check_deliveries(&after, &log.snapshot(), true);
    assert!(keys_seen(&log).iter().all(|k| !k.contains("old")));
}
