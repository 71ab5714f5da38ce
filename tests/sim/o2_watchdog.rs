//! The watchdog: a stalled shard, a stuck handler, missing children and quarantine each raise a
//! typed health event and flip `Consumer::health()`; recovery is reported too. `status()` shows
//! lineage, state, checkpoint, lag and the last error per shard.

use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::sim::{FaultKind, FaultRule, Operation, Simulator};
use dynamodb_stream::status::{HealthProblem, ShardState};
use dynamodb_stream::ConsumerEvent;

use crate::common::{periodic_check, start, Log, Written};

fn fast(c: &mut dynamodb_stream::ConsumerConfig) {
    c.watchdog_interval = Duration::from_secs(1);
    c.stall_timeout = Duration::from_secs(30);
    c.handler_stuck_after = Duration::from_secs(10);
    c.children_timeout = Duration::from_secs(60);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_shard_is_reported_and_recovers() {
    let sim = Simulator::builder().initial_shards(1).seed(23).build();
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, events) = start(&sim, &log, &store, fast).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(consumer.health().is_healthy());
    sim.set_fault(
        Operation::GetRecords,
        FaultRule::always(FaultKind::Retryable),
    );
    periodic_check(
        || {
            events.count(|e| {
                matches!(
                    e,
                    ConsumerEvent::Unhealthy(HealthProblem::ShardStalled { .. })
                )
            }) == 1
        },
        Duration::from_secs(120),
        "stall reported",
    )
    .await;
    let health = consumer.health();
    assert!(!health.is_healthy());
    let status = consumer.status();
    assert!(
        status.shards[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("Retryable"),
        "{status:?}"
    );
    sim.clear_faults();
    periodic_check(
        || consumer.health().is_healthy(),
        Duration::from_secs(120),
        "recovery",
    )
    .await;
    assert_eq!(
        events.count(|e| matches!(
            e,
            ConsumerEvent::Recovered(HealthProblem::ShardStalled { .. })
        )),
        1
    );
    consumer.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_stuck_handler_is_reported() {
    let sim = Simulator::builder().initial_shards(1).seed(24).build();
    sim.put_item(crate::common::item("a", 1)).expect("put");
    let log = Log::new();
    *log.hang_batches.lock().unwrap() = vec![1];
    let store = MemoryCheckpointStore::new();
    let (consumer, events) = start(&sim, &log, &store, |c| {
        fast(c);
        c.handler_timeout = Duration::from_secs(600);
    })
    .await;
    periodic_check(
        || {
            events.count(|e| {
                matches!(
                    e,
                    ConsumerEvent::Unhealthy(HealthProblem::HandlerStuck { .. })
                )
            }) == 1
        },
        Duration::from_secs(60),
        "stuck handler reported",
    )
    .await;
    // Blocked by its handler, the shard is not "stalled": it is not supposed to poll.
    assert_eq!(
        events.count(|e| matches!(
            e,
            ConsumerEvent::Unhealthy(HealthProblem::ShardStalled { .. })
        )),
        0
    );
    // The timeout fails the call; the restarted shard delivers the record.
    periodic_check(
        || log.len() == 1,
        Duration::from_secs(1200),
        "redelivery after the timeout",
    )
    .await;
    periodic_check(
        || consumer.health().is_healthy(),
        Duration::from_secs(60),
        "healthy again",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn missing_children_are_reported_and_status_shows_lineage() {
    let sim = Simulator::builder()
        .initial_shards(1)
        .seed(25)
        .child_visibility_delay(Duration::from_secs(3600))
        .build();
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let mut w = Written::default();
    for i in 0..10 {
        w.put(&sim, &format!("k{i}"));
    }
    let (consumer, events) = start(&sim, &log, &store, fast).await;
    let parent = sim.open_shards()[0].clone();
    periodic_check(
        || log.len() == 10,
        Duration::from_secs(60),
        "parent records",
    )
    .await;
    let (a, _b) = sim.split_shard(&parent).expect("split");
    periodic_check(
        || {
            events.count(|e| {
                matches!(
                    e,
                    ConsumerEvent::Unhealthy(HealthProblem::ChildrenMissing { .. })
                )
            }) == 1
        },
        Duration::from_secs(600),
        "missing children reported",
    )
    .await;
    let status = consumer.status();
    let p = status
        .shards
        .iter()
        .find(|s| s.shard_id == parent)
        .expect("parent in status");
    assert_eq!(p.state, ShardState::Ended);
    assert_eq!(
        p.checkpoint,
        log.snapshot().last().map(|d| d.sequence_number.clone())
    );
    // The children become visible; the problem clears and they are read.
    periodic_check(
        || consumer.health().is_healthy(),
        Duration::from_secs(7200),
        "children found",
    )
    .await;
    for i in 10..20 {
        w.put(&sim, &format!("k{i}"));
    }
    periodic_check(
        || log.len() == 20,
        Duration::from_secs(120),
        "children records",
    )
    .await;
    let status = consumer.status();
    let child = status
        .shards
        .iter()
        .find(|s| s.shard_id == a)
        .expect("child in status");
    assert_eq!(child.parent_shard_id.as_deref(), Some(parent.as_str()));
    assert!(
        matches!(child.state, ShardState::Reading | ShardState::CaughtUp),
        "{child:?}"
    );
    consumer.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn quarantine_is_unhealthy_and_shown_in_status() {
    let sim = Simulator::builder().initial_shards(2).seed(26).build();
    let poisoned = sim.open_shards()[0].clone();
    for i in 0..40 {
        sim.put_item(crate::common::item(&format!("k{i}"), 1))
            .expect("put");
    }
    let log = Log::new();
    *log.poison_shard.lock().unwrap() = Some(poisoned.clone());
    let store = MemoryCheckpointStore::new();
    let (consumer, _) = start(&sim, &log, &store, |c| {
        fast(c);
        c.restart.max_failures = 2;
    })
    .await;
    periodic_check(
        || {
            consumer
                .health()
                .problems
                .contains(&HealthProblem::Quarantined {
                    shard_id: poisoned.clone(),
                })
        },
        Duration::from_secs(300),
        "quarantine in health",
    )
    .await;
    let status = consumer.status();
    let s = status
        .shards
        .iter()
        .find(|s| s.shard_id == poisoned)
        .expect("in status");
    assert_eq!(s.state, ShardState::Quarantined);
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("injected failure"),
        "{s:?}"
    );
    consumer.shutdown().await.expect("shutdown");
}
