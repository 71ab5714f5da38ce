//! I9: shutdown stops intake, drains in-flight batches, writes the final checkpoint and calls
//! `on_shutdown`.

use std::time::Duration;

use dynamodb_stream::checkpoint::{MemoryCheckpointStore, ShardCheckpoint, StreamKey};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::ConsumerEvent;

use crate::common::{periodic_check, start, Log, Written};

#[tokio::test(start_paused = true)]
async fn shutdown_drains_and_checkpoints() {
    let sim = Simulator::builder()
        .initial_shards(1)
        .records_page_limit(10)
        .seed(16)
        .build();
    let mut written = Written::default();
    for i in 0..100 {
        written.put(&sim, &format!("k{i}"));
    }
    let log = Log::new();
    *log.delay.lock().unwrap() = Duration::from_secs(2);
    let store = MemoryCheckpointStore::new();
    // A long checkpoint interval: only the final checkpoint can make the store current.
    let (consumer, events) = start(&sim, &log, &store, |c| {
        c.checkpoint_interval = Duration::from_secs(3600)
    })
    .await;
    periodic_check(|| log.len() >= 30, Duration::from_secs(60), "some batches").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.shutdown().await.expect("shutdown");
    let delivered = log.len();
    assert_eq!(delivered % 10, 0, "only whole batches are handled");
    assert!(delivered < 100, "shutdown must stop intake");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(log.len(), delivered, "nothing handled after shutdown");

    let last = log
        .snapshot()
        .last()
        .map(|d| d.sequence_number.clone())
        .expect("delivered");
    let key = StreamKey {
        application: "default".into(),
        stream_arn: sim.stream_arn(),
    };
    let stored = store.snapshot(&key).expect("stored");
    assert_eq!(
        stored.shards.get(&sim.open_shards()[0]),
        Some(&ShardCheckpoint::Processed {
            sequence_number: last
        })
    );
    assert_eq!(
        log.shutdowns.lock().unwrap().len(),
        1,
        "on_shutdown once per running shard"
    );
    assert!(events.count(|e| matches!(e, ConsumerEvent::Stopped { error: None })) == 1);

    // The next consumer resumes right after the final checkpoint: no record twice.
    let log2 = Log::new();
    let (consumer, _) = start(&sim, &log2, &store, |_| {}).await;
    periodic_check(
        || log2.len() == 100 - delivered,
        Duration::from_secs(600),
        "the rest",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let mut all = log.snapshot();
    all.extend(log2.snapshot());
    crate::common::check_deliveries(&written, &all, true);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_stream_read_to_its_end_stops_cleanly() {
    let sim = Simulator::builder().initial_shards(2).seed(17).build();
    let mut written = Written::default();
    for i in 0..50 {
        written.put(&sim, &format!("k{i}"));
    }
    sim.disable_stream();
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (mut consumer, events) = start(&sim, &log, &store, |_| {}).await;
    tokio::time::timeout(Duration::from_secs(120), consumer.join())
        .await
        .expect("stops")
        .expect("cleanly");
    crate::common::check_deliveries(&written, &log.snapshot(), true);
    assert_eq!(
        events.count(|e| matches!(e, ConsumerEvent::StreamDisabled)),
        1
    );
}
