//! D2: `max_record_age` stops retrying records that got too old. A handler that always fails on
//! one item, `max_attempts: 1000`, `max_record_age: 1 h`: the backoffs (doubling up to 30 s,
//! paused time) run until the poison record is an hour old, then it goes to the sink with
//! `RecordTooOld` — long before a thousand attempts. A record that is already too old at its
//! first failure is given up on after that one call.

use std::time::Duration;

use dynamodb_stream::checkpoint::{MemoryCheckpointStore, ShardCheckpoint};
use dynamodb_stream::delivery::{FailureReason, JsonLinesFailureSink, RetryPolicy};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::ConsumerEvent;

use crate::common::{
    key_string, last_sequence_number, periodic_check, read_json_lines, shard_records, start_with,
    stored_checkpoint, Log, Written,
};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn old_records_go_to_the_sink_instead_of_being_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink_path = dir.path().join("failures.jsonl");
    let sim = Simulator::builder().initial_shards(1).seed(102).build();
    let shard = sim.open_shards()[0].clone();
    let mut written = Written::default();
    for k in 0..8 {
        written.put(&sim, &format!("k{k}"));
    }
    written.put(&sim, "k3");
    let poison = key_string("k3");
    let poison_seqs: Vec<_> = shard_records(&sim, &shard)
        .into_iter()
        .filter(|r| r.key_string() == poison)
        .map(|r| r.sequence_number().clone())
        .collect();
    assert_eq!(poison_seqs.len(), 2);

    let log = Log::new();
    log.poison_key("k3");
    let store = MemoryCheckpointStore::new();
    let started = tokio::time::Instant::now();
    let (consumer, events) = start_with(&sim, &log, &store, |b| {
        b.retry(RetryPolicy {
            max_attempts: 1000,
            max_record_age: Some(HOUR),
            bisect_on_error: true,
            ..RetryPolicy::default()
        })
        .failure_sink(JsonLinesFailureSink::new(&sink_path))
    })
    .await;
    let last = last_sequence_number(&sim, &shard);
    periodic_check(
        || {
            stored_checkpoint(&store, &sim, &shard)
                == Some(ShardCheckpoint::Processed {
                    sequence_number: last.clone(),
                })
        },
        Duration::from_secs(3 * 3600),
        "the checkpoint passes the given-up records",
    )
    .await;
    let took = started.elapsed();
    consumer.shutdown().await.expect("shutdown");

    // Bisection isolates each poison record; the first is retried until it is an hour old,
    // the second is already older than that at its first failure.
    let lines = read_json_lines(&sink_path);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for (line, seq) in lines.iter().zip(&poison_seqs) {
        assert_eq!(line["reason"]["kind"], "record_too_old", "{line}");
        assert_eq!(line["firstSequenceNumber"], seq.as_str());
        assert_eq!(line["lastSequenceNumber"], seq.as_str());
        let age = Duration::from_millis(line["reason"]["ageMillis"].as_u64().expect("age"));
        // Given up on at the first failure past the limit: at most one capped backoff (30 s)
        // plus the bisection calls later.
        assert!(
            age > HOUR && age < HOUR + Duration::from_secs(60),
            "{age:?}"
        );
    }
    let attempts = |seq: &dynamodb_stream::SequenceNumber| {
        log.calls()
            .iter()
            .filter(|c| c.sequence_numbers() == [seq.clone()])
            .count()
    };
    let first = attempts(&poison_seqs[0]);
    // 200 ms doubling to a 30 s cap (with jitter in [half, full]): about a hundred calls
    // fill the hour; a thousand would take at least four hours.
    assert!(
        (100..=260).contains(&first),
        "{first} attempts on the first"
    );
    assert_eq!(attempts(&poison_seqs[1]), 1, "too old at once");
    assert!(
        took > HOUR && took < HOUR + Duration::from_secs(120),
        "{took:?}"
    );

    let reasons: Vec<FailureReason> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ConsumerEvent::SentToFailureSink { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons
        .iter()
        .all(|r| matches!(r, FailureReason::RecordTooOld { age } if *age > HOUR)));

    // The other items were handled once each (bisection let them through around the poison
    // records).
    let mut healthy = written.clone();
    healthy.versions.remove(&poison);
    crate::common::check_deliveries(&healthy, &log.snapshot(), true);
}

#[tokio::test(start_paused = true)]
async fn sim_advance_ages_records_past_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink_path = dir.path().join("failures.jsonl");
    let sim = Simulator::builder().initial_shards(1).seed(103).build();
    let shard = sim.open_shards()[0].clone();
    let mut written = Written::default();
    for k in 0..4 {
        written.put(&sim, &format!("k{k}"));
    }
    let log = Log::new();
    log.poison_key("k1");
    let store = MemoryCheckpointStore::new();
    let (consumer, _events) = start_with(&sim, &log, &store, |b| {
        b.retry(RetryPolicy {
            max_attempts: 1000,
            max_record_age: Some(HOUR),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            ..RetryPolicy::default()
        })
        .failure_sink(JsonLinesFailureSink::new(&sink_path))
    })
    .await;
    periodic_check(
        || log.calls().len() >= 5,
        Duration::from_secs(60),
        "some attempts",
    )
    .await;
    assert!(read_json_lines(&sink_path).is_empty(), "still retrying");
    // The records age by two hours at once: the next failure gives up.
    sim.advance(2 * HOUR);
    let last = last_sequence_number(&sim, &shard);
    periodic_check(
        || {
            stored_checkpoint(&store, &sim, &shard)
                == Some(ShardCheckpoint::Processed {
                    sequence_number: last.clone(),
                })
        },
        Duration::from_secs(60),
        "the checkpoint passes the given-up batch",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let calls = log.calls().len();
    assert!(calls < 20, "{calls} calls");
    let lines = read_json_lines(&sink_path);
    assert_eq!(lines.len(), 1);
    // No bisection: the whole batch (all four items) went to the sink.
    assert_eq!(lines[0]["records"].as_array().expect("records").len(), 4);
    assert_eq!(lines[0]["reason"]["kind"], "record_too_old");
    assert!(log.snapshot().is_empty());
}
