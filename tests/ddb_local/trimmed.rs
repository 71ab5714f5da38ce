//! Aging past the 24-hour retention. DynamoDB Local then answers GetRecords on the aged shard
//! with TrimmedDataAccessException (the dilation also rolls the shard over: it is older than
//! 4 hours); records the consumer had not read are gone. The consumer reports a
//! `GapKind::TrimmedData` gap, and under the default `GapPolicy::Fail` stops with
//! `Error::Gap`: it neither restarts in a loop nor goes quiet.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::checkpoint::FileCheckpointStore;
use dynamodb_stream::events::{Gap, GapAction, GapKind, LostRange};
use dynamodb_stream::{Consumer, ConsumerEvent, Error};

use crate::common::{fast, periodic_check, Events, Log, Written};
use crate::ddb_local::{clients, create_table, dilate};

const TABLE: &str = "trimmed";
const PAST_RETENTION: Duration = Duration::from_secs(25 * 3600);

/// The consumer stopped with a trimmed-data gap after `after`, said so once, and never
/// restarted a worker.
async fn assert_one_trim_gap(events: &Events, after: &dynamodb_stream::SequenceNumber) {
    // Events arrive through a channel: the last one may still be on its way.
    periodic_check(
        || events.count(|e| matches!(e, ConsumerEvent::Stopped { .. })) > 0,
        Duration::from_secs(10),
        "the Stopped event",
    )
    .await;
    let all = events.all();
    let gaps: Vec<&Gap> = all
        .iter()
        .filter_map(|e| match e {
            ConsumerEvent::Gap(g) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 1, "one gap: {all:?}");
    assert_eq!(gaps[0].kind, GapKind::TrimmedData);
    // Exactly what was lost: everything after the last record handled; DynamoDB Local kept
    // nothing of the aged shard.
    assert_eq!(
        gaps[0].lost,
        LostRange {
            after: Some(after.clone()),
            before: None
        }
    );
    assert_eq!(gaps[0].action, GapAction::Stopped);
    assert!(
        !all.iter()
            .any(|e| matches!(e, ConsumerEvent::WorkerRestarted { .. })),
        "no restart loop: {all:?}"
    );
    assert!(
        all.iter()
            .any(|e| matches!(e, ConsumerEvent::Stopped { error: Some(_) })),
        "stopped with an error: {all:?}"
    );
}

async fn join_within(consumer: &mut Consumer, timeout: Duration) -> Result<(), Error> {
    tokio::time::timeout(timeout, consumer.join())
        .await
        .unwrap_or_else(|_| panic!("the consumer went quiet: join() did not return in {timeout:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_while_running_is_a_gap_and_stops_the_consumer() {
    let c = clients("trimrunning");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let log = Log::new();
    let l = log.clone();
    let builder = Consumer::builder(c.streams.clone(), &arn)
        .handler_factory(move |s| l.handler(s))
        .configure(fast)
        .configure(|c| {
            c.max_records_per_call = 10;
            c.max_in_flight_batches = 1;
        });
    let events = Events::collect(builder.events());
    let mut consumer = builder.spawn().await.expect("spawn");
    *log.hold.lock().unwrap() = true;
    let mut written = Written::default();
    for i in 0..50 {
        written.put(&c, TABLE, &format!("k{i}")).await;
    }
    periodic_check(
        || log.held_batches.load(Ordering::SeqCst) >= 1,
        Duration::from_secs(30),
        "the first batch in flight",
    )
    .await;
    // Everything after the first batch is lost to retention while it is handled.
    dilate(&c, PAST_RETENTION).await;
    *log.hold.lock().unwrap() = false;
    let err = join_within(&mut consumer, Duration::from_secs(30))
        .await
        .expect_err("a gap stops the consumer");
    let deliveries = log.snapshot();
    let last = deliveries
        .last()
        .expect("the first batch")
        .sequence_number
        .clone();
    match &err {
        Error::Gap(gap) => {
            assert_eq!(gap.shard_id, deliveries[0].shard_id);
            assert_eq!(gap.kind, GapKind::TrimmedData, "{gap}");
        }
        other => panic!("expected Error::Gap, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(
        deliveries.len() <= 10,
        "only the first batch: {}",
        deliveries.len()
    );
    assert_one_trim_gap(&events, &last).await;
    consumer
        .shutdown()
        .await
        .expect("join() already returned the error, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_while_stopped_is_a_gap_at_restart() {
    let c = clients("trimstopped");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cp.json");
    let log = Log::new();
    let start = |log: &Log| {
        let l = log.clone();
        let builder = Consumer::builder(c.streams.clone(), &arn)
            .handler_factory(move |s| l.handler(s))
            .checkpoints(FileCheckpointStore::new(&path))
            .configure(fast);
        let events = Events::collect(builder.events());
        (builder.spawn(), events)
    };
    let mut written = Written::default();
    let (spawn, _) = start(&log);
    let consumer = spawn.await.expect("spawn");
    for i in 0..20 {
        written.put(&c, TABLE, &format!("k{i}")).await;
    }
    periodic_check(|| log.len() >= 20, Duration::from_secs(30), "first 20").await;
    consumer.shutdown().await.expect("shutdown");
    let last = log.snapshot()[19].sequence_number.clone();

    // Written while stopped, then aged out before anyone read them.
    for i in 20..40 {
        written.put(&c, TABLE, &format!("k{i}")).await;
    }
    dilate(&c, PAST_RETENTION).await;

    let (spawn, events) = start(&log);
    let mut consumer = spawn.await.expect("spawn");
    let err = join_within(&mut consumer, Duration::from_secs(30))
        .await
        .expect_err("a gap stops the consumer");
    assert!(matches!(err, Error::Gap { .. }), "{err:?}");
    assert_eq!(log.len(), 20, "nothing after the gap is delivered");
    assert_one_trim_gap(&events, &last).await;
}

/// Under `GapPolicy::Continue` the gap is reported and reading goes on: records written after
/// the aging (in the child shard the dilation rolled over to) are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_under_continue_reports_and_goes_on() {
    let c = clients("trimcontinue");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let mut lost = Written::default();
    for i in 0..20 {
        lost.put(&c, TABLE, &format!("old{i}")).await;
    }
    dilate(&c, PAST_RETENTION).await;
    let mut kept = Written::default();
    for i in 0..10 {
        kept.put(&c, TABLE, &format!("new{i}")).await;
    }
    let log = Log::new();
    let l = log.clone();
    let builder = Consumer::builder(c.streams.clone(), &arn)
        .handler_factory(move |s| l.handler(s))
        .configure(fast)
        .gap_policy(dynamodb_stream::GapPolicy::Continue);
    let events = Events::collect(builder.events());
    let consumer = builder.spawn().await.expect("spawn");
    periodic_check(
        || log.has_all(&kept),
        Duration::from_secs(30),
        "the records written after the aging",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let gaps = events.count(|e| matches!(e, ConsumerEvent::Gap(_)));
    assert!(
        (1..=2).contains(&gaps),
        "the gap is reported, not repeated: {gaps} gap events"
    );
    crate::common::check_deliveries(&kept, &log.snapshot(), true);
}
