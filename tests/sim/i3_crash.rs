//! I3: a checkpoint never passes an unacknowledged record; after a crash (the consumer dropped
//! without shutdown, in-flight work abandoned) processing resumes right after the last
//! checkpoint and nothing is lost.

use std::time::Duration;

use dynamodb_stream::checkpoint::{FileCheckpointStore, MemoryCheckpointStore};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::Consumer;

use crate::common::{check_deliveries, periodic_check, start, Log, Written};

#[tokio::test(start_paused = true)]
async fn crashes_lose_nothing() {
    let sim = Simulator::builder()
        .initial_shards(4)
        .records_page_limit(20)
        .seed(4)
        .build();
    let log = Log::new();
    *log.delay.lock().unwrap() = Duration::from_millis(300);
    let store = MemoryCheckpointStore::new();
    let mut written = Written::default();
    for crash in 0..6u64 {
        let (consumer, _) = start(&sim, &log, &store, |c| {
            c.checkpoint_interval = Duration::from_millis(500)
        })
        .await;
        // More work than fits before the crash, so the crash hits in-flight batches and
        // acknowledged positions not yet written.
        for i in 0..400 {
            written.put(&sim, &format!("k{}", (crash * 13 + i) % 60));
        }
        if crash == 3 {
            sim.split_shard(&sim.open_shards()[0]).expect("split");
        }
        tokio::time::sleep(Duration::from_millis(1200 + 350 * crash)).await;
        // A crash: no drain, no final checkpoint.
        drop(consumer);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (consumer, _) = start(&sim, &log, &store, |_| {}).await;
    let total = written.total();
    periodic_check(
        || {
            let d = log.snapshot();
            check_complete(&written, &d)
        },
        Duration::from_secs(900),
        "every version delivered after the crashes",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let deliveries = log.snapshot();
    check_deliveries(&written, &deliveries, false);
    assert!(
        deliveries.len() as u64 > total,
        "crashes mid-batch must have caused some redelivery"
    );
}

fn check_complete(written: &Written, d: &[crate::common::Delivery]) -> bool {
    written
        .versions
        .iter()
        .all(|(k, n)| d.iter().any(|x| &x.key == k && x.version == *n))
}

#[tokio::test]
async fn crash_and_resume_from_a_file_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cp.json");
    let sim = Simulator::builder()
        .initial_shards(2)
        .records_page_limit(10)
        .seed(5)
        .build();
    let log = Log::new();
    let mut written = Written::default();
    for i in 0..100 {
        written.put(&sim, &format!("k{i}"));
    }
    for _ in 0..2 {
        let l = log.clone();
        let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
            .handler_factory(move |s| l.handler(s))
            .checkpoints(FileCheckpointStore::new(&path))
            .configure(|c| c.checkpoint_interval = Duration::from_millis(20))
            .spawn()
            .await
            .expect("spawn");
        periodic_check(
            || log.len() >= 50,
            Duration::from_secs(30),
            "half the records",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(consumer);
        for i in 100..150 {
            written.put(&sim, &format!("k{i}"));
        }
    }
    let l = log.clone();
    let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .checkpoints(FileCheckpointStore::new(&path))
        .spawn()
        .await
        .expect("spawn");
    periodic_check(
        || check_complete(&written, &log.snapshot()),
        Duration::from_secs(60),
        "all records",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    check_deliveries(&written, &log.snapshot(), false);
}
