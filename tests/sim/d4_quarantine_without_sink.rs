//! D4: giving up without a failure sink. With a `RetryPolicy` and no sink, exhausted retries
//! quarantine the shard at once — `ShardQuarantined`, no `WorkerRestarted` loop — with its
//! checkpoint right before the poison record, while the other shards go on. Without any retry
//! policy a failing batch restarts the worker from its checkpoint (`WorkerRestarted`), as before
//! delivery controls existed, until the restart budget quarantines it.

use std::time::Duration;

use dynamodb_stream::checkpoint::{MemoryCheckpointStore, ShardCheckpoint};
use dynamodb_stream::delivery::RetryPolicy;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{ConsumerEvent, SequenceNumber, StreamRecord};

use crate::common::{
    periodic_check, shard_records, start_with, stored_checkpoint, Events, Log, Written,
};

/// Three shards, one version of each of 60 items; GetRecords pages of 4. Returns the poisoned
/// shard, its records, and the index of the poison record in it (the 7th: page 2, not first).
fn setup() -> (Simulator, Written, String, Vec<StreamRecord>, usize) {
    let sim = Simulator::builder()
        .initial_shards(3)
        .records_page_limit(4)
        .seed(105)
        .build();
    let mut written = Written::default();
    for k in 0..60 {
        written.put(&sim, &format!("k{k}"));
    }
    let shard = sim.open_shards()[1].clone();
    let records = shard_records(&sim, &shard);
    assert!(records.len() > 10, "{} records", records.len());
    (sim, written, shard, records, 6)
}

/// Every record of the other shards is handled and checkpointed.
async fn others_go_on(sim: &Simulator, log: &Log, store: &MemoryCheckpointStore, poisoned: &str) {
    for shard in sim.open_shards() {
        if shard == poisoned {
            continue;
        }
        let records = shard_records(sim, &shard);
        let last = records.last().expect("records").sequence_number().clone();
        periodic_check(
            || {
                stored_checkpoint(store, sim, &shard)
                    == Some(ShardCheckpoint::Processed {
                        sequence_number: last.clone(),
                    })
            },
            Duration::from_secs(120),
            "the healthy shards are checkpointed to their last record",
        )
        .await;
        let handled = log
            .snapshot()
            .iter()
            .filter(|d| d.shard_id == shard)
            .count();
        assert_eq!(handled, records.len(), "shard {shard} once each");
    }
}

fn quarantine_errors(events: &Events) -> Vec<String> {
    events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ConsumerEvent::ShardQuarantined { error, .. } => Some(error),
            _ => None,
        })
        .collect()
}

fn processed(seq: &SequenceNumber) -> Option<ShardCheckpoint> {
    Some(ShardCheckpoint::Processed {
        sequence_number: seq.clone(),
    })
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_without_a_sink_quarantine_at_once() {
    let (sim, _written, poisoned, records, at) = setup();
    let log = Log::new();
    log.poison_keys
        .lock()
        .unwrap()
        .insert(records[at].key_string());
    let store = MemoryCheckpointStore::new();
    let (mut consumer, events) = start_with(&sim, &log, &store, |b| {
        b.retry(RetryPolicy {
            max_attempts: 2,
            bisect_on_error: true,
            ..RetryPolicy::default()
        })
    })
    .await;
    periodic_check(
        || !quarantine_errors(&events).is_empty(),
        Duration::from_secs(60),
        "the quarantine",
    )
    .await;
    others_go_on(&sim, &log, &store, &poisoned).await;
    let calls_then = log.calls().len();
    // Still running, and the quarantined shard is left alone.
    assert!(
        tokio::time::timeout(Duration::from_secs(300), consumer.join())
            .await
            .is_err()
    );
    assert_eq!(log.calls().len(), calls_then, "no more calls");
    consumer.shutdown().await.expect("shutdown");

    let errors = quarantine_errors(&events);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("no failure sink"), "{}", errors[0]);
    assert!(errors[0].contains("injected failure"), "{}", errors[0]);
    assert_eq!(
        events.count(|e| matches!(e, ConsumerEvent::WorkerRestarted { .. })),
        0,
        "no restart loop"
    );
    assert_eq!(
        events.count(|e| matches!(e, ConsumerEvent::SentToFailureSink { .. })),
        0
    );
    // Bisection let the records before the poison record through; the checkpoint is right
    // before it, and nothing from it on was handled.
    assert_eq!(
        stored_checkpoint(&store, &sim, &poisoned),
        processed(records[at - 1].sequence_number())
    );
    let handled: Vec<SequenceNumber> = log
        .snapshot()
        .into_iter()
        .filter(|d| d.shard_id == poisoned)
        .map(|d| d.sequence_number)
        .collect();
    let before: Vec<SequenceNumber> = records[..at]
        .iter()
        .map(|r| r.sequence_number().clone())
        .collect();
    assert_eq!(handled, before);
    // Two attempts on the poison record alone, then the shard stopped.
    let alone = log
        .calls()
        .iter()
        .filter(|c| c.sequence_numbers() == [records[at].sequence_number().clone()])
        .count();
    assert_eq!(alone, 2);
}

#[tokio::test(start_paused = true)]
async fn without_a_retry_policy_a_failure_restarts_the_worker() {
    let (sim, _written, poisoned, records, at) = setup();
    let log = Log::new();
    log.poison_keys
        .lock()
        .unwrap()
        .insert(records[at].key_string());
    let store = MemoryCheckpointStore::new();
    let (consumer, events) = start_with(&sim, &log, &store, |b| {
        b.configure(|c| c.restart.max_failures = 3)
    })
    .await;
    periodic_check(
        || !quarantine_errors(&events).is_empty(),
        Duration::from_secs(600),
        "the quarantine after the restart budget",
    )
    .await;
    others_go_on(&sim, &log, &store, &poisoned).await;
    consumer.shutdown().await.expect("shutdown");

    let all = events.all();
    let restarts: Vec<&ConsumerEvent> = all
        .iter()
        .filter(|e| matches!(e, ConsumerEvent::WorkerRestarted { shard_id, .. } if *shard_id == poisoned))
        .collect();
    assert_eq!(restarts.len(), 2, "{all:#?}");
    for r in &restarts {
        let ConsumerEvent::WorkerRestarted { error, .. } = r else {
            unreachable!()
        };
        assert!(error.contains("injected failure"), "{error}");
    }
    let first_restart = all
        .iter()
        .position(|e| matches!(e, ConsumerEvent::WorkerRestarted { .. }));
    let quarantine = all
        .iter()
        .position(|e| matches!(e, ConsumerEvent::ShardQuarantined { .. }));
    assert!(first_restart < quarantine, "restarts come first");
    // Each attempt is the whole page holding the poison record (pages of 4: records 4..8),
    // redelivered from the checkpoint after the first page.
    let failed: Vec<_> = log.calls().into_iter().filter(|c| !c.ok).collect();
    assert_eq!(failed.len(), 3);
    let page: Vec<SequenceNumber> = records[4..8]
        .iter()
        .map(|r| r.sequence_number().clone())
        .collect();
    assert!(failed.iter().all(|c| c.sequence_numbers() == page));
    assert_eq!(
        stored_checkpoint(&store, &sim, &poisoned),
        processed(records[3].sequence_number())
    );
}
