//! Readiness and liveness (`Consumer::probe`): a quarantined shard, a stalled shard and lag
//! above the threshold each make the consumer not ready, named by shard, at once — not at the
//! watchdog's next round (it is an hour away here) — and it is ready again once they clear. A
//! stopped consumer is neither alive nor ready.

use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::sim::{FaultKind, FaultRule, Operation, Simulator};
use dynamodb_stream::status::ShardState;
use dynamodb_stream::{NotReady, Probe, ReadinessCriteria};

use crate::common::{periodic_check, start, Log};

/// Thresholds of a few seconds, and a watchdog that never runs during the test: readiness
/// must judge from the status board itself.
fn no_watchdog(c: &mut dynamodb_stream::ConsumerConfig) {
    c.watchdog_interval = Duration::from_secs(3600);
    c.stall_timeout = Duration::from_secs(30);
    c.handler_stuck_after = Duration::from_secs(600);
}

fn reasons(probe: &Probe, criteria: &ReadinessCriteria) -> Vec<NotReady> {
    let readiness = probe.readiness(criteria);
    assert_eq!(
        readiness.ready,
        readiness.reasons.is_empty(),
        "{readiness:?}"
    );
    readiness.reasons
}

#[tokio::test(start_paused = true)]
async fn a_quarantined_shard_makes_the_consumer_unready_at_once() {
    let sim = Simulator::builder().initial_shards(2).seed(41).build();
    let poisoned = sim.open_shards()[0].clone();
    for i in 0..20 {
        sim.put_item(crate::common::item(&format!("k{i}"), 1))
            .expect("put");
    }
    let log = Log::new();
    *log.poison_shard.lock().unwrap() = Some(poisoned.clone());
    let store = MemoryCheckpointStore::new();
    let (consumer, _) = start(&sim, &log, &store, |c| {
        no_watchdog(c);
        c.restart.max_failures = 2;
    })
    .await;
    let probe = consumer.probe();
    let criteria = ReadinessCriteria::default().with_max_lag(None);
    periodic_check(
        || {
            consumer
                .status()
                .shards
                .iter()
                .any(|s| s.shard_id == poisoned && s.state == ShardState::Quarantined)
        },
        Duration::from_secs(300),
        "the shard quarantined",
    )
    .await;
    let why = reasons(&probe, &criteria);
    assert_eq!(
        why,
        [NotReady::Quarantined {
            shard_id: poisoned.clone()
        }],
        "only the quarantined shard is a reason"
    );
    // The watchdog has not run: readiness did not wait for it.
    assert!(consumer.health().is_healthy());
    assert!(probe.is_alive(), "a quarantine is not a dead process");
    let json = serde_json::to_value(consumer.readiness(&criteria)).expect("plain data");
    assert_eq!(
        json,
        serde_json::json!({
            "ready": false,
            "reasons": [{"reason": "quarantined", "shard_id": poisoned}],
        })
    );
    consumer.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_shard_is_unready_until_it_reads_again() {
    let sim = Simulator::builder().initial_shards(1).seed(42).build();
    let shard = sim.open_shards()[0].clone();
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, _) = start(&sim, &log, &store, no_watchdog).await;
    let probe = consumer.probe();
    let criteria = ReadinessCriteria::default();
    periodic_check(
        || probe.readiness(&criteria).ready,
        Duration::from_secs(10),
        "ready while reading",
    )
    .await;
    sim.set_fault(
        Operation::GetRecords,
        FaultRule::always(FaultKind::Retryable),
    );
    periodic_check(
        || {
            reasons(&probe, &criteria)
                .iter()
                .any(|r| matches!(r, NotReady::ShardStalled { shard_id, for_ } if *shard_id == shard && *for_ > Duration::from_secs(30)))
        },
        Duration::from_secs(120),
        "the stall as a reason",
    )
    .await;
    assert!(consumer.health().is_healthy(), "the watchdog has not run");
    sim.clear_faults();
    periodic_check(
        || probe.readiness(&criteria).ready,
        Duration::from_secs(120),
        "ready again",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn lag_above_the_threshold_is_unready() {
    let sim = Simulator::builder().initial_shards(1).seed(43).build();
    let shard = sim.open_shards()[0].clone();
    let log = Log::new();
    // A slow handler: the record waits in it, its age grows.
    *log.delay.lock().unwrap() = Duration::from_secs(120);
    let store = MemoryCheckpointStore::new();
    let (consumer, _) = start(&sim, &log, &store, no_watchdog).await;
    sim.put_item(crate::common::item("a", 1)).expect("put");
    let probe = consumer.probe();
    let strict = ReadinessCriteria::default().with_max_lag(Some(Duration::from_secs(30)));
    periodic_check(
        || {
            reasons(&probe, &strict).iter().any(|r| {
                matches!(r, NotReady::LagAboveThreshold { shard_id, lag, max_lag }
                    if *shard_id == shard && *lag > *max_lag && *max_lag == Duration::from_secs(30))
            })
        },
        Duration::from_secs(60),
        "lag above 30 s as a reason",
    )
    .await;
    // Lag left out, nothing else is wrong.
    let lenient = strict.clone().with_max_lag(None);
    assert_eq!(reasons(&probe, &lenient), []);
    periodic_check(
        || log.len() == 1 && probe.readiness(&strict).ready,
        Duration::from_secs(300),
        "ready once the record is handled",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_stopped_consumer_is_neither_alive_nor_ready() {
    let sim = Simulator::builder().initial_shards(1).seed(44).build();
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let criteria = ReadinessCriteria::default();

    let (consumer, _) = start(&sim, &log, &store, no_watchdog).await;
    let probe = consumer.probe();
    assert!(probe.is_alive() && consumer.is_alive());
    consumer.shutdown().await.expect("shutdown");
    assert!(!probe.is_alive());
    assert_eq!(reasons(&probe, &criteria), [NotReady::Stopped]);

    // A crash (the handle dropped) too.
    let (consumer, _) = start(&sim, &log, &store, no_watchdog).await;
    let probe = consumer.probe();
    drop(consumer);
    periodic_check(|| !probe.is_alive(), Duration::from_secs(5), "dead").await;
    assert_eq!(reasons(&probe, &criteria), [NotReady::Stopped]);
}
