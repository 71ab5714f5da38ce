//! Scenario 2, hung calls and broken connections. For `DDBSTREAM_CHAOS_SECS`, GetRecords,
//! DescribeStream and GetShardIterator are delayed by 30 s, hung (never answered), reset before
//! or after the server answered, or answered with half a body (and GetRecords sometimes with
//! an expired iterator), while a writer puts ~20 items/s and the open shard is rolled over every
//! 3 s (so child discovery, i.e. DescribeStream, matters). The SDK runs with small timeouts
//! (attempt 2 s, call 5 s) and its standard retries.
//!
//! Pass: every call ends within the call timeout (5 s, plus scheduling slack); no shard stalls
//! for good (afterwards every shard is ended or caught up, the consumer is healthy, every
//! reported stall recovered); nothing is lost, nothing reordered, lineage kept.
//!
//! These faults are made at the HTTP level, one request at a time. The same kinds of failure
//! below HTTP — packets dropped (a blackhole), connections reset or refused, random packet loss —
//! are made with iptables in a private network namespace by `net_faults.rs`.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use aws_sdk_dynamodbstreams::config::retry::RetryConfig;
use dynamodb_stream::status::{HealthProblem, ShardState};
use dynamodb_stream::{Consumer, ConsumerEvent};

use crate::common::{
    chaos_secs, check, lineage, seed, short_timeouts, streams_via, wait_for, Events, Log, Timed,
    Writer,
};
use crate::ddb_local::{clients, create_table, rollover, server};
use crate::fault_proxy::{
    Action, FaultProxy, Rule, DESCRIBE_STREAM, GET_RECORDS, GET_SHARD_ITERATOR,
};

const TABLE: &str = "hangs";
/// The SDK's operation timeout in [`short_timeouts`].
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Scheduling slack on two busy cores.
const SLACK: Duration = Duration::from_millis(1_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_calls_and_resets_end_in_time_and_lose_nothing() {
    let chaos = Duration::from_secs(chaos_secs());
    let seed = seed("hangs");
    let c = clients("chaos_hangs");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let proxy = FaultProxy::start(&server().endpoint, seed);
    let api = Timed::new(streams_via(
        &proxy,
        &c,
        short_timeouts(),
        RetryConfig::standard(),
    ));
    let log = Log::new();
    let l = log.clone();
    let builder = Consumer::builder(api.clone(), &arn)
        .handler_factory(move |s| l.handler(s))
        .configure(|cfg| {
            cfg.min_poll_interval = Duration::from_millis(50);
            cfg.idle_poll_interval = Duration::from_millis(200);
            cfg.discovery_interval = Duration::from_secs(1);
            cfg.min_describe_interval = Duration::from_millis(50);
            cfg.checkpoint_interval = Duration::from_millis(200);
            cfg.retry_backoff = Duration::from_millis(100);
            cfg.max_retry_backoff = Duration::from_secs(1);
            cfg.watchdog_interval = Duration::from_secs(1);
            cfg.stall_timeout = Duration::from_secs(10);
            cfg.children_timeout = Duration::from_secs(20);
        });
    let events = Events::collect(builder.events());
    let consumer = builder.spawn().await.expect("spawn");
    let writer = Writer::start(&c, TABLE, 50, Duration::from_millis(50), seed);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let delay = Action::Delay(Duration::from_secs(30));
    proxy.set_rule(
        "records",
        Rule::mix(
            GET_RECORDS,
            vec![
                (0.07, delay.clone()),
                (0.07, Action::Hang),
                (0.07, Action::ResetBeforeForward),
                (0.07, Action::ResetAfterForward),
                (0.07, Action::TruncateBody),
                (0.04, Action::ExpiredIterator),
            ],
        ),
    );
    proxy.set_rule(
        "describe",
        Rule::mix(
            DESCRIBE_STREAM,
            vec![
                (0.1, delay.clone()),
                (0.1, Action::Hang),
                (0.05, Action::ResetBeforeForward),
                (0.05, Action::ResetAfterForward),
                (0.1, Action::TruncateBody),
            ],
        ),
    );
    proxy.set_rule(
        "iterators",
        Rule::mix(
            GET_SHARD_ITERATOR,
            vec![
                (0.05, Action::Hang),
                (0.05, Action::ResetBeforeForward),
                (0.05, Action::TruncateBody),
            ],
        ),
    );
    let started = Instant::now();
    let mut rollovers = 0;
    while started.elapsed() < chaos {
        tokio::time::sleep(Duration::from_secs(3).min(chaos.saturating_sub(started.elapsed())))
            .await;
        if started.elapsed() < chaos {
            rollover(&c).await;
            rollovers += 1;
        }
    }
    let during = proxy.seen();
    let requests = |target: &str| during.iter().filter(|s| s.target == target).count();
    let totals = format!(
        "{} GetRecords, {} DescribeStream, {} GetShardIterator requests",
        requests(GET_RECORDS),
        requests(DESCRIBE_STREAM),
        requests(GET_SHARD_ITERATOR)
    );
    let faulted: Vec<_> = during.into_iter().filter(|s| s.fault.is_some()).collect();
    proxy.clear();
    let cleared = Instant::now();

    // Every shard gets going again: all written delivered, every shard ended or caught up.
    let written = writer.stop().await;
    wait_for(
        || log.has_all(&written),
        Duration::from_secs(45),
        "every write delivered after the faults stopped",
    )
    .await;
    wait_for(
        || {
            consumer
                .status()
                .shards
                .iter()
                .all(|s| s.state == ShardState::Ended || s.state == ShardState::CaughtUp)
        },
        Duration::from_secs(20),
        "every shard ended or caught up",
    )
    .await;
    let settled = cleared.elapsed();
    tokio::time::sleep(Duration::from_millis(1_500)).await; // one more watchdog round
    let health = consumer.health();
    assert!(
        health.is_healthy(),
        "unhealthy after the faults: {health:?}"
    );
    let stalls = events.count(|e| {
        matches!(
            e,
            ConsumerEvent::Unhealthy(HealthProblem::ShardStalled { .. })
        )
    });
    let stall_recoveries = events.count(|e| {
        matches!(
            e,
            ConsumerEvent::Recovered(HealthProblem::ShardStalled { .. })
        )
    });
    assert_eq!(
        stalls,
        stall_recoveries,
        "a stall never recovered: {:?}",
        events.all()
    );
    let quarantined = events.count(|e| matches!(e, ConsumerEvent::ShardQuarantined { .. }));
    assert_eq!(quarantined, 0, "{:?}", events.all());
    let restarts = events.count(|e| matches!(e, ConsumerEvent::WorkerRestarted { .. }));

    let shards = lineage(&c, &arn).await;
    let report = check(&written, &log.snapshot(), &shards);
    let stats = api.stats();
    let by_fault = |name: &str| faulted.iter().filter(|s| s.fault == Some(name)).count();
    println!(
        "hangs: {}s of faults, {rollovers} rollovers, {} shards; {totals}; injected: {} delays of 30 s, {} hangs, {} resets before, {} resets after, {} truncated, {} expired; \
         longest call: GetRecords {:?}, DescribeStream {:?}, GetShardIterator {:?}; calls failed (after SDK retries): GetRecords {:?}, DescribeStream {:?}, GetShardIterator {:?}; \
         {stalls} stalls reported (all recovered), {restarts} worker restarts; settled {settled:?} after the faults stopped; {}",
        chaos.as_secs(),
        shards.len(),
        by_fault("delay"),
        by_fault("hang"),
        by_fault("reset-before"),
        by_fault("reset-after"),
        by_fault("truncate"),
        by_fault("ExpiredIteratorException"),
        stats.get("GetRecords").map(|s| s.longest),
        stats.get("DescribeStream").map(|s| s.longest),
        stats.get("GetShardIterator").map(|s| s.longest),
        stats.get("GetRecords").map(|s| s.errors.clone()),
        stats.get("DescribeStream").map(|s| s.errors.clone()),
        stats.get("GetShardIterator").map(|s| s.errors.clone()),
        report.summary(),
    );
    for (op, s) in &stats {
        assert!(
            s.longest <= CALL_TIMEOUT + SLACK,
            "a {op} call took {:?}, past the {CALL_TIMEOUT:?} call timeout",
            s.longest
        );
    }
    assert!(
        by_fault("hang") + by_fault("delay") > 0,
        "no hang was injected: run longer"
    );
    report.assert_clean(false);
    assert!(
        shards.len() > rollovers,
        "{} shards after {rollovers} rollovers",
        shards.len()
    );
    consumer.shutdown().await.expect("shutdown");
}
