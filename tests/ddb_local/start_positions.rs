//! Where a first start begins: TRIM_HORIZON delivers every retained record, LATEST only what
//! is written after the consumer started.

use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::{Consumer, ConsumerEvent, StartPosition};

use crate::common::{check_deliveries, fast, missing, periodic_check, Events, Log, Written};
use crate::ddb_local::{clients, create_table};

const TABLE: &str = "positions";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_horizon_delivers_records_written_before_the_start() {
    let c = clients("trimhorizon");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let mut written = Written::default();
    for i in 0..25 {
        written.put(&c, TABLE, &format!("before-{}", i % 10)).await;
    }
    let log = Log::new();
    let l = log.clone();
    let builder = Consumer::builder(c.streams.clone(), &arn)
        .handler_factory(move |s| l.handler(s))
        .start_from(StartPosition::TrimHorizon)
        .configure(fast);
    let events = Events::collect(builder.events());
    let consumer = builder.spawn().await.expect("spawn");
    for i in 0..25 {
        written.put(&c, TABLE, &format!("after-{}", i % 10)).await;
    }
    periodic_check(
        || log.len() as u64 >= written.total(),
        Duration::from_secs(30),
        "all 50 records",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    check_deliveries(&written, &log.snapshot(), true);
    let positions: Vec<String> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ConsumerEvent::ShardStarted { position, .. } => Some(position),
            _ => None,
        })
        .collect();
    assert_eq!(positions, vec!["TRIM_HORIZON".to_owned()]);
}

/// Records written before a LATEST start are not delivered; every record written after
/// `spawn()` returned is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_skips_earlier_records_and_delivers_all_later_ones() {
    let c = clients("latest");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let mut before = Written::default();
    for i in 0..20 {
        before.put(&c, TABLE, &format!("before-{}", i % 5)).await;
    }
    let log = Log::new();
    let l = log.clone();
    let store = MemoryCheckpointStore::new();
    let consumer = Consumer::builder(c.streams.clone(), &arn)
        .handler_factory(move |s| l.handler(s))
        .checkpoints(store.clone())
        .start_from(StartPosition::Latest)
        .configure(fast)
        .spawn()
        .await
        .expect("spawn");
    // Written right after the start: the consumer must not miss them, even though its first
    // GetShardIterator may not have happened yet.
    let mut after = Written::default();
    for i in 0..20 {
        after.put(&c, TABLE, &format!("after-{}", i % 5)).await;
    }
    periodic_check(
        || log.has_all(&after),
        Duration::from_secs(30),
        "every record written after the start",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let deliveries = log.snapshot();
    let early: Vec<_> = deliveries
        .iter()
        .filter(|d| d.key.starts_with("before-"))
        .collect();
    assert!(
        early.is_empty(),
        "records written before a LATEST start were delivered: {early:?}"
    );
    let lost = missing(&after, &deliveries);
    assert!(
        lost.is_empty(),
        "{} of {} records written after spawn() returned were never delivered: {lost:?}",
        lost.len(),
        after.total()
    );
    check_deliveries(&after, &deliveries, true);
}

/// A LATEST start whose consumer already holds its iterator (it delivered a first record
/// written after the start): later records are all delivered, earlier ones never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_once_reading_delivers_everything_after() {
    let c = clients("latestreading");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let mut before = Written::default();
    for i in 0..20 {
        before.put(&c, TABLE, &format!("before-{}", i % 5)).await;
    }
    let log = Log::new();
    let l = log.clone();
    let builder = Consumer::builder(c.streams.clone(), &arn)
        .handler_factory(move |s| l.handler(s))
        .start_from(StartPosition::Latest)
        .configure(fast);
    let events = Events::collect(builder.events());
    let consumer = builder.spawn().await.expect("spawn");
    periodic_check(
        || events.count(|e| matches!(e, ConsumerEvent::ShardStarted { .. })) > 0,
        Duration::from_secs(30),
        "the shard worker started",
    )
    .await;
    // Probe writes until one is delivered: from then on the LATEST iterator is in place.
    let mut after = Written::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while log.len() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no probe delivered");
        after.put(&c, TABLE, "probe").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..30 {
        after.put(&c, TABLE, &format!("after-{}", i % 6)).await;
    }
    periodic_check(
        || log.has_all(&after),
        Duration::from_secs(30),
        "every record written after the start",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let deliveries = log.snapshot();
    assert!(
        deliveries.iter().all(|d| !d.key.starts_with("before-")),
        "records written before a LATEST start were delivered"
    );
    // Probes written before the iterator was taken may be missing; all others are there once.
    let rest: Vec<_> = deliveries
        .iter()
        .filter(|d| d.key.starts_with("after-"))
        .cloned()
        .collect();
    let mut after_only = after.clone();
    after_only.versions.remove("probe");
    check_deliveries(&after_only, &rest, true);
    let positions: Vec<String> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ConsumerEvent::ShardStarted { position, .. } => Some(position),
            _ => None,
        })
        .collect();
    assert_eq!(positions, vec!["LATEST".to_owned()]);
}
