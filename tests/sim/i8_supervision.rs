//! I8: a failing shard worker restarts from its checkpoint with backoff; after K failures in
//! the window it is quarantined and reported while the other shards go on; a hung handler is
//! detected by its timeout. Handler errors and panics lose nothing (I3).

use std::time::Duration;

use dynamodb_stream::checkpoint::{MemoryCheckpointStore, StreamKey};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{ConsumerEvent, Error};

use crate::common::{check_deliveries, periodic_check, start, Log, Written};

#[tokio::test(start_paused = true)]
async fn errors_panics_and_hangs_are_redelivered() {
    let sim = Simulator::builder()
        .initial_shards(2)
        .records_page_limit(20)
        .seed(13)
        .build();
    let mut written = Written::default();
    for i in 0..400 {
        written.put(&sim, &format!("k{}", i % 97));
    }
    let log = Log::new();
    *log.fail_batches.lock().unwrap() = vec![3, 9];
    *log.panic_batches.lock().unwrap() = vec![5];
    *log.hang_batches.lock().unwrap() = vec![12];
    let store = MemoryCheckpointStore::new();
    let (consumer, events) = start(&sim, &log, &store, |c| {
        c.handler_timeout = Duration::from_secs(30)
    })
    .await;
    periodic_check(
        || log.len() as u64 >= written.total(),
        Duration::from_secs(600),
        "all records",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    check_deliveries(&written, &log.snapshot(), false);
    let restarts: Vec<String> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ConsumerEvent::WorkerRestarted { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(restarts.len(), 4, "{restarts:?}");
    assert!(
        restarts.iter().any(|e| e.contains("panicked")),
        "{restarts:?}"
    );
    assert!(
        restarts.iter().any(|e| e.contains("did not return within")),
        "{restarts:?}"
    );
    assert!(
        restarts
            .iter()
            .filter(|e| e.contains("injected failure"))
            .count()
            == 2,
        "{restarts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_poisoned_shard_is_quarantined_while_others_go_on() {
    let sim = Simulator::builder().initial_shards(3).seed(14).build();
    let poisoned = sim.open_shards()[1].clone();
    let mut written = Written::default();
    for i in 0..300 {
        written.put(&sim, &format!("k{i}"));
    }
    let log = Log::new();
    *log.poison_shard.lock().unwrap() = Some(poisoned.clone());
    let store = MemoryCheckpointStore::new();
    let (mut consumer, events) = start(&sim, &log, &store, |c| c.restart.max_failures = 4).await;
    periodic_check(
        || events.count(|e| matches!(e, ConsumerEvent::ShardQuarantined { .. })) == 1,
        Duration::from_secs(600),
        "quarantine",
    )
    .await;
    let healthy: u64 = sim
        .written_records()
        .iter()
        .filter(|w| w.shard_id != poisoned)
        .count() as u64;
    periodic_check(
        || log.len() as u64 >= healthy,
        Duration::from_secs(600),
        "other shards",
    )
    .await;
    assert!(log.snapshot().iter().all(|d| d.shard_id != poisoned));
    assert_eq!(log.failures(), 4, "restarts stop at the quarantine");
    assert_eq!(
        events.count(|e| matches!(e, ConsumerEvent::WorkerRestarted { .. })),
        3
    );
    // Still running; nothing of the poisoned shard is checkpointed.
    assert!(
        tokio::time::timeout(Duration::from_secs(60), consumer.join())
            .await
            .is_err()
    );
    consumer.shutdown().await.expect("shutdown");
    let key = StreamKey {
        application: "default".into(),
        stream_arn: sim.stream_arn(),
    };
    let stored = store.snapshot(&key).expect("stored");
    // Known (listed, reading began at its first record), nothing processed.
    assert!(
        matches!(
            stored.shards.get(&poisoned),
            Some(dynamodb_stream::checkpoint::ShardCheckpoint::Discovered { .. })
        ),
        "{:?}",
        stored.shards.get(&poisoned)
    );
}

#[tokio::test(start_paused = true)]
async fn quarantine_can_stop_the_consumer() {
    let sim = Simulator::builder().initial_shards(1).seed(15).build();
    sim.put_item(crate::common::item("a", 1)).expect("put");
    let log = Log::new();
    *log.poison_shard.lock().unwrap() = Some(sim.open_shards()[0].clone());
    let store = MemoryCheckpointStore::new();
    let (mut consumer, _) = start(&sim, &log, &store, |c| {
        c.restart.max_failures = 2;
        c.restart.stop_consumer_on_quarantine = true;
    })
    .await;
    let err = tokio::time::timeout(Duration::from_secs(600), consumer.join())
        .await
        .expect("stops")
        .unwrap_err();
    assert!(matches!(err, Error::Quarantined { .. }), "{err}");
}
