//! D3: a partial failure (`HandlerError::failed_at(seq_k, ..)`) retries only the tail. The next
//! call starts at record k; no record before k is handed over twice — whether the retry happens
//! in place under a `RetryPolicy` (bisection does not split a batch that said where it failed)
//! or, without one, through a worker restart from the checkpoint, which moved to record k - 1.

use std::time::Duration;

use dynamodb_stream::checkpoint::{MemoryCheckpointStore, ShardCheckpoint};
use dynamodb_stream::delivery::RetryPolicy;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{ConsumerEvent, SequenceNumber};

use crate::common::{
    check_deliveries, periodic_check, shard_records, start_with, stored_checkpoint, Log, Written,
};

const K: usize = 7;

async fn run(with_retry: bool) {
    let sim = Simulator::builder().initial_shards(1).seed(104).build();
    let shard = sim.open_shards()[0].clone();
    let mut written = Written::default();
    for k in 0..20 {
        written.put(&sim, &format!("k{k}"));
    }
    let seqs: Vec<SequenceNumber> = shard_records(&sim, &shard)
        .iter()
        .map(|r| r.sequence_number().clone())
        .collect();
    let log = Log::new();
    log.partial_failures.lock().unwrap().push(seqs[K].clone());
    let store = MemoryCheckpointStore::new();
    let (consumer, events) = start_with(&sim, &log, &store, |b| {
        if with_retry {
            b.retry(RetryPolicy {
                bisect_on_error: true,
                ..RetryPolicy::default()
            })
        } else {
            b
        }
    })
    .await;
    periodic_check(
        || log.len() >= 20,
        Duration::from_secs(60),
        "every record handled",
    )
    .await;
    periodic_check(
        || {
            stored_checkpoint(&store, &sim, &shard)
                == Some(ShardCheckpoint::Processed {
                    sequence_number: seqs[19].clone(),
                })
        },
        Duration::from_secs(60),
        "the checkpoint reaches the last record",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");

    let calls = log.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0].sequence_numbers(), seqs);
    assert!(!calls[0].ok);
    assert_eq!(calls[0].failed_at.as_ref(), Some(&seqs[K]));
    assert!(calls[1].ok);
    assert_eq!(
        calls[1].sequence_numbers(),
        seqs[K..].to_vec(),
        "the retry starts at the failed record and holds the whole tail"
    );
    // Records before k were acknowledged by the partial failure and never handed over again.
    let delivered: Vec<SequenceNumber> = log
        .snapshot()
        .into_iter()
        .map(|d| d.sequence_number)
        .collect();
    assert_eq!(delivered, seqs);
    check_deliveries(&written, &log.snapshot(), true);
    let restarts = events.count(|e| matches!(e, ConsumerEvent::WorkerRestarted { .. }));
    assert_eq!(restarts, usize::from(!with_retry));
}

#[tokio::test(start_paused = true)]
async fn in_place_retry_starts_at_the_failed_record() {
    run(true).await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_at_the_failed_record() {
    run(false).await;
}
