//! Aging the stream with the `dilate` hook. DynamoDB Local expires every iterator issued before
//! a dilation (and any older than 15 minutes); 3 hours is below its 24-hour retention, and below
//! its 4-hour shard rollover age (a second 3-hour dilation rolls the shard over). The consumer
//! resumes right after its last processed record, whether it was running or stopped: nothing
//! lost, nothing repeated.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::checkpoint::FileCheckpointStore;
use dynamodb_stream::error::SourceErrorKind;
use dynamodb_stream::{Consumer, ConsumerEvent};

use crate::common::{
    check_deliveries, fast, lineage, periodic_check, Counting, Events, Log, Written,
};
use crate::ddb_local::{clients, create_table, dilate};

const TABLE: &str = "aging";
const THREE_HOURS: Duration = Duration::from_secs(3 * 3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aging_while_running_expires_iterators_and_loses_nothing() {
    let c = clients("agingrunning");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let api = Counting::new(c.streams.clone());
    let log = Log::new();
    let l = log.clone();
    let builder = Consumer::builder(api.clone(), &arn)
        .handler_factory(move |s| l.handler(s))
        .configure(fast)
        .configure(|c| c.max_records_per_call = 10);
    let events = Events::collect(builder.events());
    let consumer = builder.spawn().await.expect("spawn");
    let mut written = Written::default();

    // 1. An idle consumer: its held iterator expires.
    for i in 0..30 {
        written.put(&c, TABLE, &format!("k{}", i % 7)).await;
    }
    periodic_check(|| log.len() >= 30, Duration::from_secs(30), "first 30").await;
    dilate(&c, THREE_HOURS).await;
    assert_eq!(lineage(&c, &arn).await.len(), 1, "3 hours: no rollover");
    // On a timeout, say which errors the source did see (a flake under load, seen once in a
    // full run on a busy machine, left no trace of why).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.count(SourceErrorKind::ExpiredIterator) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held iterator did not expire within 30 s; source errors seen: {:?}; events: {:?}",
            api.errors.lock().unwrap(),
            events.all()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 30..60 {
        written.put(&c, TABLE, &format!("k{}", i % 7)).await;
    }
    periodic_check(|| log.len() >= 60, Duration::from_secs(30), "next 30").await;

    // 2. A busy consumer: the iterator for the next page expires while a batch is in flight.
    // Now 6 hours old, the shard is also rolled over (DynamoDB Local rolls shards over at 4 h).
    *log.hold.lock().unwrap() = true;
    let expired_before = api.count(SourceErrorKind::ExpiredIterator);
    for i in 60..100 {
        written.put(&c, TABLE, &format!("k{}", i % 7)).await;
    }
    periodic_check(
        || log.held_batches.load(Ordering::SeqCst) >= 1,
        Duration::from_secs(30),
        "a batch in flight",
    )
    .await;
    dilate(&c, THREE_HOURS).await;
    *log.hold.lock().unwrap() = false;
    periodic_check(
        || log.len() >= 100,
        Duration::from_secs(30),
        "all 100 records",
    )
    .await;
    assert!(
        api.count(SourceErrorKind::ExpiredIterator) > expired_before,
        "the in-flight iterator expired too"
    );
    consumer.shutdown().await.expect("shutdown");

    check_deliveries(&written, &log.snapshot(), true);
    assert_eq!(api.count(SourceErrorKind::TrimmedData), 0);
    assert_eq!(api.count(SourceErrorKind::NotFound), 0);
    // Recovered inside the shard worker: no restart, no gap, one shard.
    assert_eq!(
        events.count(|e| matches!(
            e,
            ConsumerEvent::WorkerRestarted { .. } | ConsumerEvent::Gap(_)
        )),
        0,
        "{:?}",
        events.all()
    );
    let shards = lineage(&c, &arn).await;
    assert_eq!(shards.len(), 2, "6 hours: one rollover: {shards:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aging_while_stopped_resumes_after_the_checkpoint() {
    let c = clients("agingstopped");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cp.json");
    let mut written = Written::default();
    let start = |log: &Log| {
        let l = log.clone();
        Consumer::builder(c.streams.clone(), &arn)
            .handler_factory(move |s| l.handler(s))
            .checkpoints(FileCheckpointStore::new(&path))
            .configure(fast)
            .spawn()
    };

    let first = Log::new();
    let consumer = start(&first).await.expect("spawn");
    for i in 0..40 {
        written.put(&c, TABLE, &format!("k{}", i % 9)).await;
    }
    periodic_check(|| first.len() >= 40, Duration::from_secs(30), "first 40").await;
    consumer.shutdown().await.expect("shutdown");

    // Written and aged while no consumer runs.
    for i in 40..80 {
        written.put(&c, TABLE, &format!("k{}", i % 9)).await;
    }
    dilate(&c, THREE_HOURS).await;
    for i in 80..100 {
        written.put(&c, TABLE, &format!("k{}", i % 9)).await;
    }

    let second = Log::new();
    let consumer = start(&second).await.expect("spawn");
    periodic_check(
        || second.len() >= 60,
        Duration::from_secs(30),
        "the 60 records written while stopped",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let mut all = first.snapshot();
    all.extend(second.snapshot());
    check_deliveries(&written, &all, true);
}
