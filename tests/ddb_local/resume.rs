//! Restarts resume from a `FileCheckpointStore`: after a graceful shutdown nothing is delivered
//! twice; after a crash (the consumer dropped) only records after the last checkpoint are.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::checkpoint::{CheckpointStore, FileCheckpointStore, StreamKey};
use dynamodb_stream::{Consumer, SequenceNumber};

use crate::common::{
    check_deliveries, fast, missing, periodic_check, periodic_check_async, Delivery, Log, Written,
};
use crate::ddb_local::{clients, create_table, TestClients};

const TABLE: &str = "resume";

async fn start(c: &TestClients, arn: &str, path: &Path, log: &Log) -> Consumer {
    let l = log.clone();
    Consumer::builder(c.streams.clone(), arn)
        .handler_factory(move |s| l.handler(s))
        .checkpoints(FileCheckpointStore::new(path))
        .configure(fast)
        .configure(|c| c.max_records_per_call = 10)
        .spawn()
        .await
        .expect("spawn")
}

/// The single shard's stored position, read from the file by a fresh store.
async fn stored_position(path: &Path, arn: &str) -> Option<SequenceNumber> {
    let key = StreamKey {
        application: "default".into(),
        stream_arn: arn.into(),
    };
    let stored = FileCheckpointStore::new(path)
        .load(&key)
        .await
        .expect("checkpoint file readable")?;
    assert!(stored.shards.len() <= 1, "one shard: {stored:?}");
    stored
        .shards
        .values()
        .next()
        .and_then(|cp| cp.sequence_number().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_repeats_nothing() {
    let c = clients("graceful");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cp.json");
    let mut written = Written::default();

    let first = Log::new();
    let consumer = start(&c, &arn, &path, &first).await;
    for i in 0..100 {
        written.put(&c, TABLE, &format!("k{}", i % 20)).await;
        if i == 60 {
            // Stop mid-stream, with batches in flight.
            periodic_check(|| first.len() >= 30, Duration::from_secs(30), "30 records").await;
            consumer.shutdown().await.expect("shutdown");
            break;
        }
    }
    for i in 61..150 {
        written.put(&c, TABLE, &format!("k{}", i % 20)).await;
    }
    let stored = stored_position(&path, &arn)
        .await
        .expect("a position after shutdown");
    let last_first = first
        .snapshot()
        .last()
        .map(|d| d.sequence_number.clone())
        .expect("deliveries");
    assert_eq!(
        stored, last_first,
        "shutdown checkpoints the last handled record"
    );

    let second = Log::new();
    let consumer = start(&c, &arn, &path, &second).await;
    periodic_check(
        || first.len() + second.len() >= written.total() as usize,
        Duration::from_secs(30),
        "every record across both runs",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let mut all = first.snapshot();
    all.extend(second.snapshot());
    assert!(
        second.snapshot().iter().all(|d| d.sequence_number > stored),
        "the second run resumes after the checkpoint"
    );
    check_deliveries(&written, &all, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_repeats_only_what_follows_the_last_checkpoint() {
    let c = clients("crash");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cp.json");
    let mut written = Written::default();

    let first = Log::new();
    let consumer = start(&c, &arn, &path, &first).await;
    for i in 0..50 {
        written.put(&c, TABLE, &format!("a{i}")).await;
    }
    periodic_check(|| first.len() >= 50, Duration::from_secs(30), "batch A").await;
    let last_a = first.snapshot()[49].sequence_number.clone();
    periodic_check_async(
        || async { stored_position(&path, &arn).await.as_ref() == Some(&last_a) },
        Duration::from_secs(30),
        "A checkpointed",
    )
    .await;

    // B is delivered but never acknowledged: the handler holds its first batch.
    *first.hold.lock().unwrap() = true;
    for i in 0..50 {
        written.put(&c, TABLE, &format!("b{i}")).await;
    }
    periodic_check(
        || first.held_batches.load(Ordering::SeqCst) >= 1,
        Duration::from_secs(30),
        "a batch of B held",
    )
    .await;
    drop(consumer); // the crash
    *first.hold.lock().unwrap() = false;
    let stored = stored_position(&path, &arn)
        .await
        .expect("A's checkpoint survives");
    assert_eq!(stored, last_a, "nothing unacknowledged was checkpointed");

    let second = Log::new();
    let consumer = start(&c, &arn, &path, &second).await;
    let all_b = Written {
        versions: written
            .versions
            .iter()
            .filter(|(k, _)| k.starts_with('b'))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
    };
    periodic_check(
        || missing(&all_b, &second.snapshot()).is_empty(),
        Duration::from_secs(30),
        "all of B in the second run",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");

    let first = first.snapshot();
    let second = second.snapshot();
    // The second run starts exactly after the checkpoint: no A record again, and none skipped.
    assert!(
        second.iter().all(|d| d.sequence_number > stored),
        "redelivery before the checkpoint"
    );
    assert!(second.iter().all(|d| d.key.starts_with('b')));
    check_deliveries(&all_b, &second, true);
    // Duplicates are exactly the B records the first run saw before the crash.
    let ids = |d: &[Delivery]| -> HashSet<SequenceNumber> {
        d.iter().map(|x| x.sequence_number.clone()).collect()
    };
    let dups: Vec<SequenceNumber> = ids(&first).intersection(&ids(&second)).cloned().collect();
    assert!(!dups.is_empty(), "the held batch is delivered again");
    assert!(dups.iter().all(|s| s > &stored));
    let held: HashSet<SequenceNumber> = first
        .iter()
        .filter(|d| d.key.starts_with('b'))
        .map(|d| d.sequence_number.clone())
        .collect();
    assert_eq!(
        dups.len(),
        held.len(),
        "every unacknowledged record, only them"
    );
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    check_deliveries(&written, &all, false);
}
