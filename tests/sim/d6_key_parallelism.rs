//! D6: per-key parallelism. With `key_parallelism(4)` and a handler that sleeps a random (seeded)
//! time per batch, lanes of one shard overlap and finish out of order, yet every item's changes
//! arrive in order, and the checkpoint never passes a record the handler has not acknowledged:
//! a checkpoint store of our own checks, on every save, that each record of the shard up to the
//! saved position was already acknowledged (`handle` returned `Ok` for it). A crash in the middle
//! (the consumer dropped) and a restart lose nothing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamodb_stream::checkpoint::{
    CheckpointStore, MemoryCheckpointStore, ShardCheckpoint, StreamCheckpoints, StreamKey,
};
use dynamodb_stream::error::CheckpointError;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::source::BoxFuture;
use dynamodb_stream::{Consumer, SequenceNumber};

use crate::common::{
    check_deliveries, last_sequence_number, max_concurrent_calls, periodic_check, Events, Log,
    Written,
};

/// A [`MemoryCheckpointStore`] that checks every save against the acknowledgements in a [`Log`]
/// (a record is logged when `handle` returns `Ok` for its batch).
#[derive(Clone)]
struct AckCheckingStore {
    inner: MemoryCheckpointStore,
    sim: Simulator,
    log: Log,
    violations: Arc<Mutex<Vec<String>>>,
    saves: Arc<AtomicUsize>,
}

impl AckCheckingStore {
    fn check(&self, shards: &[(String, ShardCheckpoint)]) {
        let acked: HashSet<(String, SequenceNumber)> = self
            .log
            .snapshot()
            .into_iter()
            .map(|d| (d.shard_id, d.sequence_number))
            .collect();
        let written = self.sim.written_records();
        for (shard, checkpoint) in shards {
            let through = match checkpoint {
                ShardCheckpoint::Processed { sequence_number } => Some(sequence_number),
                ShardCheckpoint::Ended => None,
                ShardCheckpoint::Latest { .. } | ShardCheckpoint::Discovered { .. } => continue,
            };
            for w in written.iter().filter(|w| &w.shard_id == shard) {
                let seq = w.record.sequence_number();
                if through.is_none_or(|t| seq <= t)
                    && !acked.contains(&(shard.clone(), seq.clone()))
                {
                    self.violations.lock().unwrap().push(format!(
                        "checkpoint {checkpoint:?} of {shard} passes unacknowledged {seq}"
                    ));
                }
            }
        }
    }
}

impl CheckpointStore for AckCheckingStore {
    fn load(
        &self,
        key: &StreamKey,
    ) -> BoxFuture<'_, Result<Option<StreamCheckpoints>, CheckpointError>> {
        self.inner.load(key)
    }

    fn save(
        &self,
        key: &StreamKey,
        started_at_ms: u64,
        shards: Vec<(String, ShardCheckpoint)>,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        self.check(&shards);
        self.inner.save(key, started_at_ms, shards)
    }

    fn streams(&self, application: &str) -> BoxFuture<'_, Result<Vec<String>, CheckpointError>> {
        self.inner.streams(application)
    }
}

async fn start(sim: &Simulator, log: &Log, store: &AckCheckingStore) -> (Consumer, Events) {
    let l = log.clone();
    let builder = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .checkpoints(store.clone())
        .key_parallelism(4)
        .batching(10, Duration::ZERO)
        .configure(|c| c.checkpoint_interval = Duration::from_millis(200));
    let events = Events::collect(builder.events());
    (builder.spawn().await.expect("spawn"), events)
}

fn write_round(sim: &Simulator, written: &mut Written, round: u64) {
    for i in 0..40 {
        written.put(sim, &format!("k{}", (round * 7 + i) % 30));
    }
    if round % 3 == 2 {
        written.delete(sim, &format!("k{}", round % 30));
    }
}

#[tokio::test(start_paused = true)]
async fn lanes_keep_item_order_and_the_checkpoint_waits_for_every_lane() {
    let sim = Simulator::builder()
        .initial_shards(2)
        .records_page_limit(50)
        .seed(108)
        .build();
    let log = Log::new();
    *log.random_delay.lock().unwrap() =
        Some((fastrand::Rng::with_seed(108), Duration::from_millis(800)));
    let store = AckCheckingStore {
        inner: MemoryCheckpointStore::new(),
        sim: sim.clone(),
        log: log.clone(),
        violations: Arc::default(),
        saves: Arc::default(),
    };
    let mut written = Written::default();

    let (consumer, _events) = start(&sim, &log, &store).await;
    for round in 0..8 {
        write_round(&sim, &mut written, round);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_millis(170)).await;
    // A crash: in-flight batches abandoned, acknowledged positions maybe not written.
    drop(consumer);
    let calls_before_crash = log.calls();
    let delivered_before_crash = log.len();
    assert!(
        delivered_before_crash > 0 && (delivered_before_crash as u64) < written.total(),
        "crash in the middle: {delivered_before_crash} of {}",
        written.total()
    );
    for shard in sim.open_shards() {
        let overlap = max_concurrent_calls(&calls_before_crash, &shard);
        assert!(
            overlap >= 3,
            "lanes of {shard} overlapped at most {overlap}"
        );
    }
    for round in 8..12 {
        write_round(&sim, &mut written, round);
    }

    let (consumer, _events) = start(&sim, &log, &store).await;
    for round in 12..16 {
        write_round(&sim, &mut written, round);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let shards = sim.open_shards();
    periodic_check(
        || {
            shards.iter().all(|s| {
                store
                    .inner
                    .snapshot(&crate::common::stream_key(&sim))
                    .and_then(|c| c.shards.get(s).cloned())
                    == Some(ShardCheckpoint::Processed {
                        sequence_number: last_sequence_number(&sim, s),
                    })
            })
        },
        Duration::from_secs(600),
        "every shard checkpointed to its last record",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");

    let violations = store.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:#?}");
    let saves = store.saves.load(Ordering::SeqCst);
    assert!(saves >= 10, "only {saves} saves checked");
    // Nothing lost across the crash; each lane (handler instance) saw its records in sequence
    // order, and each item's versions arrived in order.
    let deliveries = log.snapshot();
    check_deliveries(&written, &deliveries, false);
    let instances: HashSet<usize> = deliveries.iter().map(|d| d.handler_instance).collect();
    assert!(
        instances.len() >= 12,
        "{} handler instances delivered (4 lanes × 2 shards × 2 runs)",
        instances.len()
    );
}

/// The bound docs/semantics.md states for key parallelism: a worker restart inside a running
/// consumer (a failed batch, no retry policy) repeats the records after the contiguous
/// watermark, including those other lanes had already finished — never more than the
/// unacknowledged window, `max_in_flight_batches` pages of `max_records_per_call` records.
#[tokio::test(start_paused = true)]
async fn a_restart_repeats_at_most_the_unacknowledged_window() {
    const PAGE: u32 = 50;
    const IN_FLIGHT: usize = 2;
    for seed in 0..10u64 {
        let sim = Simulator::builder().initial_shards(1).seed(seed).build();
        let log = Log::new();
        *log.random_delay.lock().unwrap() =
            Some((fastrand::Rng::with_seed(seed), Duration::from_millis(200)));
        *log.fail_batches.lock().unwrap() = vec![5, 17];
        let mut written = Written::default();
        for i in 0..1_000 {
            written.put(&sim, &format!("k{}", i % 97));
        }
        let l = log.clone();
        let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
            .handler_factory(move |s| l.handler(s))
            .key_parallelism(4)
            .configure(|c| {
                c.max_records_per_call = PAGE;
                c.max_in_flight_batches = IN_FLIGHT;
            })
            .spawn()
            .await
            .expect("spawn");
        periodic_check(
            || written.all_delivered(&log.snapshot()),
            Duration::from_secs(600),
            "every record",
        )
        .await;
        consumer.shutdown().await.expect("shutdown");
        let deliveries = log.snapshot();
        let distinct: HashSet<&SequenceNumber> =
            deliveries.iter().map(|d| &d.sequence_number).collect();
        let repeated = deliveries.len() - distinct.len();
        let restarts = log.failures();
        assert!(restarts >= 1, "seed {seed}: no restart happened");
        assert!(
            repeated <= restarts * IN_FLIGHT * PAGE as usize,
            "seed {seed}: {repeated} records repeated after {restarts} restarts"
        );
        check_deliveries(&written, &deliveries, false);
    }
}
