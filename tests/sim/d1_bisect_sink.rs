//! D1: bisect-on-error isolates a poison record. A handler that fails every batch holding one
//! item's records, under `RetryPolicy { max_attempts: 2, bisect_on_error: true }` with a
//! `JsonLinesFailureSink`: exactly that item's records land in the sink (one line each, with
//! shard, sequence numbers and reason), every other record is handled exactly once, a
//! `SentToFailureSink` event is emitted per record, and the checkpoint reaches the shard's end.

use std::collections::BTreeSet;
use std::time::Duration;

use dynamodb_stream::checkpoint::{MemoryCheckpointStore, ShardCheckpoint};
use dynamodb_stream::delivery::{FailureReason, JsonLinesFailureSink, RetryPolicy};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{ConsumerEvent, SequenceNumber};

use crate::common::{
    key_string, last_sequence_number, periodic_check, read_json_lines, shard_records, start_with,
    stored_checkpoint, Log, Written,
};

#[tokio::test(start_paused = true)]
async fn a_poison_record_is_isolated_and_sent_to_the_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink_path = dir.path().join("failures.jsonl");
    // Three pages of 25: the poison item's three records fall into different pages.
    let sim = Simulator::builder()
        .initial_shards(1)
        .records_page_limit(25)
        .seed(101)
        .build();
    let shard = sim.open_shards()[0].clone();
    let mut written = Written::default();
    for round in 0..3 {
        for k in 0..25 {
            if round == 2 && k >= 10 {
                break;
            }
            written.put(&sim, &format!("k{k}"));
        }
    }
    let poison = key_string("k7");
    let all = shard_records(&sim, &shard);
    assert_eq!(all.len(), 60);
    let poison_seqs: BTreeSet<SequenceNumber> = all
        .iter()
        .filter(|r| r.key_string() == poison)
        .map(|r| r.sequence_number().clone())
        .collect();
    assert_eq!(poison_seqs.len(), 3);

    let log = Log::new();
    log.poison_key("k7");
    let store = MemoryCheckpointStore::new();
    let sink = JsonLinesFailureSink::new(&sink_path);
    let (consumer, events) = start_with(&sim, &log, &store, |b| {
        b.retry(RetryPolicy {
            max_attempts: 2,
            bisect_on_error: true,
            ..RetryPolicy::default()
        })
        .failure_sink(sink)
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
        Duration::from_secs(120),
        "the checkpoint reaches the shard's last record",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");

    // The sink holds exactly the poison item's records, one per line (bisection went down to
    // single records), each after two attempts.
    let lines = read_json_lines(&sink_path);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let mut sunk = BTreeSet::new();
    for line in &lines {
        assert_eq!(line["shardId"], shard.as_str());
        assert_eq!(line["streamArn"], sim.stream_arn().as_str());
        assert_eq!(line["reason"]["kind"], "retries_exhausted");
        assert_eq!(line["reason"]["attempts"], 2);
        assert!(
            line["error"]
                .as_str()
                .is_some_and(|e| e.contains("injected failure")),
            "{line}"
        );
        let records = line["records"].as_array().expect("records");
        assert_eq!(records.len(), 1, "{line}");
        assert_eq!(records[0]["keys"], serde_json::json!({ "pk": "k7" }));
        let seq = records[0]["sequenceNumber"].as_str().expect("seq");
        assert_eq!(line["firstSequenceNumber"], seq);
        assert_eq!(line["lastSequenceNumber"], seq);
        assert!(records[0]["newImage"]["v"].is_number(), "{line}");
        sunk.insert(seq.parse::<SequenceNumber>().expect("a sequence number"));
    }
    assert_eq!(sunk, poison_seqs);

    // Every other record was handled exactly once, in order; the poison item never.
    let deliveries = log.snapshot();
    assert!(deliveries.iter().all(|d| d.key != poison));
    let delivered: Vec<SequenceNumber> = deliveries
        .iter()
        .map(|d| d.sequence_number.clone())
        .collect();
    let expected: Vec<SequenceNumber> = all
        .iter()
        .filter(|r| r.key_string() != poison)
        .map(|r| r.sequence_number().clone())
        .collect();
    assert_eq!(delivered, expected, "each healthy record once, in order");
    let mut healthy = written.clone();
    healthy.versions.remove(&poison);
    crate::common::check_deliveries(&healthy, &deliveries, true);

    // The last two calls on each poison record held that record alone.
    for seq in &poison_seqs {
        let alone = log
            .calls()
            .iter()
            .filter(|c| c.sequence_numbers() == [seq.clone()])
            .count();
        assert_eq!(alone, 2, "two attempts on {seq} alone");
    }

    let sent: Vec<ConsumerEvent> = events
        .all()
        .into_iter()
        .filter(|e| matches!(e, ConsumerEvent::SentToFailureSink { .. }))
        .collect();
    assert_eq!(sent.len(), 3, "{sent:#?}");
    for e in &sent {
        let ConsumerEvent::SentToFailureSink {
            shard_id,
            first_sequence_number,
            last_sequence_number,
            records,
            reason,
        } = e
        else {
            unreachable!()
        };
        assert_eq!(shard_id, &shard);
        assert_eq!(*records, 1);
        assert_eq!(first_sequence_number, last_sequence_number);
        assert!(poison_seqs.contains(first_sequence_number.as_ref().expect("first")));
        assert_eq!(reason, &FailureReason::RetriesExhausted { attempts: 2 });
    }
    assert_eq!(
        events.count(|e| matches!(
            e,
            ConsumerEvent::WorkerRestarted { .. } | ConsumerEvent::ShardQuarantined { .. }
        )),
        0
    );
}
