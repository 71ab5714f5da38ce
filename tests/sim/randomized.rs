//! Many seeds of a mixed workload — writes and deletes, splits, rollovers, late children, stale
//! listings, iterator expiry, throttling and errors, handler errors and panics, crashes and
//! graceful restarts — each checked per key: every change delivered, in order, and exactly
//! once unless a crash happened.
//!
//! `DDBSTREAM_SEEDS` sets how many seeds run (default 40); `DDBSTREAM_SEED` runs one seed.

use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::sim::{FaultKind, FaultRule, Operation, Simulator};

use crate::common::{check_deliveries, periodic_check, run_seeds, start, Delivery, Log, Written};

fn complete(written: &Written, d: &[Delivery]) -> bool {
    let mut max: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for x in d {
        let m = max.entry(&x.key).or_default();
        *m = (*m).max(x.version);
    }
    written
        .versions
        .iter()
        .all(|(k, n)| max.get(k.as_str()).copied().unwrap_or(0) >= *n)
}

async fn run_seed(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let sim = Simulator::builder()
        .seed(seed)
        .initial_shards(rng.usize(1..=6))
        .records_page_limit(rng.u32(5..=100))
        .child_visibility_delay(Duration::from_secs(rng.u64(0..30)))
        .stale_describe_probability(rng.f64() * 0.3)
        .build();
    sim.set_fault(
        Operation::GetRecords,
        FaultRule::with_probability(rng.f64() * 0.3, FaultKind::Throttled),
    );
    sim.set_fault(
        Operation::GetShardIterator,
        FaultRule::with_probability(rng.f64() * 0.1, FaultKind::Retryable),
    );
    sim.set_fault(
        Operation::DescribeStream,
        FaultRule::with_probability(rng.f64() * 0.1, FaultKind::Throttled),
    );
    let log = Log::new();
    *log.fail_batches.lock().unwrap() = (0..rng.usize(0..4)).map(|_| rng.usize(1..60)).collect();
    *log.panic_batches.lock().unwrap() = (0..rng.usize(0..3)).map(|_| rng.usize(1..60)).collect();
    let store = MemoryCheckpointStore::new();
    let mut written = Written::default();
    let mut consumer = Some(start(&sim, &log, &store, |_| {}).await.0);
    let mut crashes = 0;
    for _ in 0..60 {
        match rng.u32(0..100) {
            0..=59 => {
                for _ in 0..rng.usize(1..40) {
                    let key = format!("k{}", rng.usize(0..40));
                    if rng.u32(0..10) == 0 {
                        written.delete(&sim, &key);
                    } else {
                        written.put(&sim, &key);
                    }
                }
            }
            60..=67 => {
                let open = sim.open_shards();
                if open.len() < 16 {
                    sim.split_shard(&open[rng.usize(0..open.len())])
                        .expect("split");
                }
            }
            68..=75 => {
                let open = sim.open_shards();
                sim.rollover_shard(&open[rng.usize(0..open.len())])
                    .expect("rollover");
            }
            76..=80 => sim.advance(Duration::from_secs(16 * 60)),
            81..=88 => {
                // Crash: drop without shutdown.
                drop(consumer.take());
                crashes += 1;
                consumer = Some(start(&sim, &log, &store, |_| {}).await.0);
            }
            89..=93 => {
                if let Some(c) = consumer.take() {
                    c.shutdown().await.expect("shutdown");
                }
                consumer = Some(start(&sim, &log, &store, |_| {}).await.0);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..2000))).await;
    }
    periodic_check(
        || complete(&written, &log.snapshot()),
        Duration::from_secs(3600),
        &format!("seed {seed}: every change delivered"),
    )
    .await;
    if let Some(c) = consumer.take() {
        c.shutdown().await.expect("shutdown");
    }
    let deliveries = log.snapshot();
    check_deliveries(&written, &deliveries, crashes == 0);
}

#[test]
fn randomized_workloads() {
    run_seeds("randomized workload", 40, run_seed);
}
