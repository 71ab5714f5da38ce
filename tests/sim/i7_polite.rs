//! I7: polite and fast when behind — a shard with a backlog reads again at once, a shard that
//! keeps up stays within 5 GetRecords a second, idle shards are polled at the idle interval
//! within a consumer-wide budget, throttling and errors are retried with backoff — and nothing
//! is lost or duplicated because of them.

use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::sim::{FaultKind, FaultRule, Operation, Simulator};
use dynamodb_stream::ConsumerConfig;

use crate::common::{check_deliveries, periodic_check, start, Log, Written};

fn max_calls_per_second(times: &[Duration]) -> usize {
    let mut best = 0;
    for (i, t) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        best = best.max(n);
    }
    best
}

#[tokio::test(start_paused = true)]
async fn thirty_percent_throttling_loses_nothing_and_stays_polite() {
    let sim = Simulator::builder()
        .initial_shards(4)
        .records_page_limit(25)
        .seed(12)
        .build();
    for op in [
        Operation::GetRecords,
        Operation::GetShardIterator,
        Operation::DescribeStream,
    ] {
        sim.set_fault(op, FaultRule::with_probability(0.3, FaultKind::Throttled));
    }
    sim.set_fault(
        Operation::GetRecords,
        FaultRule::with_probability(0.3, FaultKind::Throttled),
    );
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, _) = start(&sim, &log, &store, |_| {}).await;
    let mut written = Written::default();
    for round in 0..20 {
        for i in 0..100 {
            written.put(&sim, &format!("k{}", (round * 17 + i) % 150));
        }
        if round == 10 {
            sim.split_shard(&sim.open_shards()[1]).expect("split");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    periodic_check(
        || log.len() as u64 >= written.total(),
        Duration::from_secs(600),
        "all records",
    )
    .await;
    // A guard on the setup, not on the consumer: about 30 % of ~150 calls were throttled.
    assert!(
        sim.stats().faults_injected >= 25,
        "faults were injected: {:?}",
        sim.stats()
    );
    check_deliveries(&written, &log.snapshot(), true);

    // Caught up: a minute of idling costs one GetRecords per idle interval per shard.
    sim.clear_faults();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = sim.stats().get_records_calls;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let open = sim.open_shards().len() as u64;
    let idle_calls = sim.stats().get_records_calls - before;
    let per_shard = 60_000 / ConsumerConfig::default().idle_poll_interval.as_millis() as u64;
    assert!(
        idle_calls <= open * (per_shard + 2),
        "{idle_calls} GetRecords in an idle minute on {open} shards"
    );
    assert!(
        idle_calls >= open * per_shard / 2,
        "idle shards must still be polled: {idle_calls}"
    );
    consumer.shutdown().await.expect("shutdown");

    for shard in sim.shards() {
        let times = sim.get_records_call_times(&shard.shard_id);
        let peak = max_calls_per_second(&times);
        assert!(
            peak <= 5,
            "shard {} saw {peak} GetRecords within one second",
            shard.shard_id
        );
    }
}

#[tokio::test(start_paused = true)]
async fn idle_polling_of_a_wide_stream_stays_within_its_budget() {
    // 40 idle shards at a 400 ms idle interval would be 100 GetRecords/s; the budget is 20/s,
    // so each shard is polled every 2 s instead.
    let sim = Simulator::builder().initial_shards(40).seed(7).build();
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, _) = start(&sim, &log, &store, |c| {
        c.idle_poll_interval = Duration::from_millis(400);
        c.max_idle_polls_per_second = 20;
    })
    .await;
    let mut written = Written::default();
    for i in 0..200 {
        written.put(&sim, &format!("k{i}"));
    }
    periodic_check(
        || log.len() as u64 >= written.total(),
        Duration::from_secs(120),
        "all records",
    )
    .await;
    check_deliveries(&written, &log.snapshot(), true);

    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = sim.stats().get_records_calls;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle_calls = sim.stats().get_records_calls - before;
    // 20/s for a minute, plus at most one call per shard in flight at either edge.
    assert!(
        idle_calls <= 20 * 60 + 2 * 40,
        "{idle_calls} GetRecords in an idle minute, budget 20/s"
    );
    assert!(
        idle_calls >= 20 * 60 / 2,
        "idle shards must still be polled: {idle_calls}"
    );
    // And a write to an idle shard still arrives, within one stretched interval.
    written.put(&sim, "late");
    periodic_check(
        || log.len() as u64 >= written.total(),
        Duration::from_secs(3),
        "the late write within one stretched idle interval",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_backlog_is_read_at_once_and_a_caught_up_shard_politely() {
    let sim = Simulator::builder()
        .initial_shards(1)
        .records_page_limit(100)
        .seed(16)
        .build();
    let mut written = Written::default();
    for i in 0..3_000 {
        written.put(&sim, &format!("k{}", i % 500));
    }
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, _) = start(&sim, &log, &store, |c| c.max_records_per_call = 100).await;
    periodic_check(
        || log.len() == 3_000,
        Duration::from_secs(60),
        "the backlog",
    )
    .await;
    let shard = sim.open_shards()[0].clone();
    let times = sim.get_records_call_times(&shard);
    // 30 full pages: read one after the other, not 200 ms apart (which would take 6 s).
    assert!(times.len() >= 30, "{} calls", times.len());
    let backlog = times[29] - times[0];
    assert!(
        backlog < ConsumerConfig::default().min_poll_interval * 5,
        "30 pages took {backlog:?} of simulated time"
    );
    // Caught up: polite again, one call per idle interval.
    let before = sim.get_records_call_times(&shard).len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = sim.get_records_call_times(&shard).len() - before;
    let per_idle = 10_000 / ConsumerConfig::default().idle_poll_interval.as_millis() as usize;
    assert!(idle <= per_idle + 2, "{idle} calls in 10 idle seconds");
    consumer.shutdown().await.expect("shutdown");
    check_deliveries(&written, &log.snapshot(), true);
}
