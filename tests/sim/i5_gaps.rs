//! I5: trimmed data and vanished shards are typed, reported gaps with a policy; the default
//! stops the consumer with an error, `Continue` goes on and still reports.

use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::events::{GapAction, GapKind, LostRange};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{ConsumerEvent, Error, GapPolicy};

use crate::common::{periodic_check, start, start_err, Log, Written};

/// Read some records, stop, let the rest age past retention.
async fn trimmed_setup() -> (Simulator, Log, MemoryCheckpointStore) {
    let sim = Simulator::builder().initial_shards(1).seed(9).build();
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let mut w = Written::default();
    for i in 0..20 {
        w.put(&sim, &format!("a{i}"));
    }
    let (consumer, _) = start(&sim, &log, &store, |_| {}).await;
    periodic_check(|| log.len() == 20, Duration::from_secs(30), "first records").await;
    consumer.shutdown().await.expect("shutdown");
    for i in 0..20 {
        w.put(&sim, &format!("b{i}"));
    }
    sim.advance(Duration::from_secs(25 * 3600));
    (sim, log, store)
}

#[tokio::test(start_paused = true)]
async fn trimmed_data_stops_by_default() {
    let (sim, log, store) = trimmed_setup().await;
    let (mut consumer, events) = start(&sim, &log, &store, |_| {}).await;
    let err = tokio::time::timeout(Duration::from_secs(60), consumer.join())
        .await
        .expect("consumer stops")
        .unwrap_err();
    assert!(matches!(err, Error::Gap { .. }), "{err}");
    let gaps: Vec<_> = events
        .all()
        .into_iter()
        .filter_map(|e| {
            if let ConsumerEvent::Gap(g) = e {
                Some(g)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let last = log.snapshot().last().map(|d| d.sequence_number.clone());
    assert_eq!(gaps[0].kind, GapKind::TrimmedData);
    // Exactly what was lost: everything after the last record handled (all of it trimmed).
    assert_eq!(
        gaps[0].lost,
        LostRange {
            after: last,
            before: None
        }
    );
    assert_eq!(gaps[0].action, GapAction::Stopped);
    assert_eq!(log.len(), 20, "nothing delivered past the gap");
}

#[tokio::test(start_paused = true)]
async fn trimmed_data_continue_reports_and_goes_on() {
    let (sim, log, store) = trimmed_setup().await;
    let (consumer, events) =
        start(&sim, &log, &store, |c| c.gap_policy = GapPolicy::Continue).await;
    let mut w = Written::default();
    for i in 0..10 {
        w.put(&sim, &format!("c{i}"));
    }
    periodic_check(
        || log.len() == 30,
        Duration::from_secs(60),
        "records after the gap",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(
        events.count(|e| matches!(e, ConsumerEvent::Gap(g) if g.action == GapAction::Continued)),
        1
    );
    assert!(log.snapshot()[20..].iter().all(|d| d.key.contains('c')));
}

#[tokio::test(start_paused = true)]
async fn a_checkpointed_shard_that_vanished_is_a_gap() {
    let sim = Simulator::builder().initial_shards(1).seed(10).build();
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let mut w = Written::default();
    for i in 0..10 {
        w.put(&sim, &format!("a{i}"));
    }
    let (consumer, _) = start(&sim, &log, &store, |_| {}).await;
    periodic_check(|| log.len() == 10, Duration::from_secs(30), "records").await;
    consumer.shutdown().await.expect("shutdown");
    // More records, then the shard closes and everything ages until the shard is deleted.
    for i in 0..10 {
        w.put(&sim, &format!("b{i}"));
    }
    let child = sim.rollover_shard(&sim.open_shards()[0]).expect("rollover");
    sim.advance(Duration::from_secs(49 * 3600));
    assert!(
        sim.shards().iter().all(|s| s.shard_id == child),
        "parent should be gone"
    );

    // Stored positions are validated before `spawn` returns: the gap stops the start.
    let (err, events) = start_err(&sim, &log, &store, |_| {}).await;
    assert!(matches!(err, Error::Gap { .. }), "{err}");
    let vanished = events
        .iter()
        .filter(|e| matches!(e, ConsumerEvent::Gap(g) if g.kind == GapKind::VanishedShard))
        .count();
    assert_eq!(vanished, 1);

    // With Continue, the gap is reported and the child is read.
    let (consumer, events) =
        start(&sim, &log, &store, |c| c.gap_policy = GapPolicy::Continue).await;
    for i in 0..5 {
        w.put(&sim, &format!("c{i}"));
    }
    periodic_check(|| log.len() == 15, Duration::from_secs(60), "child records").await;
    consumer.shutdown().await.expect("shutdown");
    // The parent's unread records are gone, exactly those; the child, older than the retention
    // now that its parent is gone from the listing, may have lost its first records: a possible
    // loss, reported as such (it held nothing when it was opened).
    let gaps: Vec<_> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ConsumerEvent::Gap(g) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert_eq!(gaps[0].kind, GapKind::VanishedShard);
    assert_eq!(
        gaps[0].lost,
        LostRange {
            after: log.snapshot()[9].sequence_number.clone().into(),
            before: None
        }
    );
    assert_eq!(
        (gaps[1].shard_id.as_str(), gaps[1].kind, &gaps[1].lost),
        (child.as_str(), GapKind::TrimmedStart, &LostRange::default())
    );
}
