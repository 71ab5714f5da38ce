//! Scenario 1, a throttling and 5xx storm. A writer puts ~25 items/s; after a calm phase (the
//! lag baseline), GetRecords is answered for `DDBSTREAM_CHAOS_SECS` with 50 % throttling errors
//! (LimitExceeded, ProvisionedThroughputExceeded, Throttling in equal parts) and 20 % 5xx (500
//! InternalServerError, 503 without a code), plus, every 10 s, a burst of three 503s in a row
//! that exhausts one call's SDK retries. The consumer runs with its default configuration and
//! the SDK's standard retries (3 attempts), as in production.
//!
//! Pass: nothing lost (and nothing repeated while no worker restarted); the consumer's calls
//! stay paced (GetRecords calls per shard per second ≤ 5, counted by the proxy); no shard is
//! quarantined and the consumer is healthy afterwards; the lag is back to its baseline within
//! 30 s of the storm's end.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use aws_sdk_dynamodbstreams::config::retry::RetryConfig;
use dynamodb_stream::error::SourceErrorKind;
use dynamodb_stream::status::ShardState;
use dynamodb_stream::{recommended_timeouts, Consumer, ConsumerEvent};

use crate::common::{
    chaos_secs, check, lineage, now_ms, seed, streams_via, wait_for, Events, Log, Timed, Writer,
};
use crate::ddb_local::{clients, create_table, server};
use crate::fault_proxy::{
    attempts, call_starts, max_in_window, Action, FaultProxy, Rule, GET_RECORDS,
};

const TABLE: &str = "storm";
/// The consumer's default pacing: at most 5 GetRecords calls per shard per second.
const MAX_CALLS_PER_SHARD_PER_SEC: usize = 5;
/// Arrival jitter allowed when counting calls per second at the proxy: calls started 200 ms
/// apart can arrive closer on a loaded machine.
const JITTER: Duration = Duration::from_millis(100);
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// How often three GetRecords requests in a row fail (a call whose SDK retries are exhausted).
/// Rare on purpose: the consumer backs off to one call every few seconds in the storm, and
/// bursts must not crowd out the 50 %/20 % mix.
const BURST_EVERY: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_5xx_storm_loses_nothing_and_keeps_pace() {
    let storm_secs = chaos_secs();
    let seed = seed("storm");
    let c = clients("chaos_storm");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let proxy = FaultProxy::start(&server().endpoint, seed);
    let api = Timed::new(streams_via(
        &proxy,
        &c,
        recommended_timeouts(),
        RetryConfig::standard(),
    ));
    let log = Log::new();
    let l = log.clone();
    let builder = Consumer::builder(api.clone(), &arn)
        .handler_factory(move |s| l.handler(s))
        // Production pacing and backoff; only the watchdog looks more often.
        .configure(|cfg| cfg.watchdog_interval = Duration::from_secs(1));
    let events = Events::collect(builder.events());
    let consumer = builder.spawn().await.expect("spawn");
    let writer = Writer::start(&c, TABLE, 50, Duration::from_millis(40), seed);

    // ----- calm: the baseline -----
    let calm_from = now_ms();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let baseline: Vec<u64> = {
        let mut lags: Vec<u64> = log
            .snapshot()
            .iter()
            .filter(|d| d.written_ms.is_some_and(|t| t >= calm_from + 1_000))
            .map(|d| d.delivered_ms - d.written_ms.unwrap_or(0))
            .collect();
        lags.sort_unstable();
        lags
    };
    assert!(
        baseline.len() > 50,
        "the calm phase delivered {}",
        baseline.len()
    );
    let baseline_p99 = baseline[(baseline.len() - 1) * 99 / 100];
    // "Back to baseline": no write older than the baseline p99 + 1 s is undelivered.
    let threshold = baseline_p99 + 1_000;

    // ----- the storm -----
    let storm_from = proxy.now();
    proxy.set_rule(
        "exhaust",
        Rule::new(GET_RECORDS, Action::ServiceUnavailable).count(0),
    );
    let third = 0.5 / 3.0;
    proxy.set_rule(
        "storm",
        Rule::mix(
            GET_RECORDS,
            vec![
                (third, Action::LimitExceeded),
                (third, Action::ProvisionedThroughputExceeded),
                (third, Action::Throttling),
                (0.1, Action::InternalServerError),
                (0.1, Action::ServiceUnavailable),
            ],
        ),
    );
    let storm_started = Instant::now();
    let mut max_lag_ms = 0u64;
    let mut open_shards = 0usize;
    let mut next_burst = Instant::now();
    let mut bursts = 0;
    while storm_started.elapsed() < Duration::from_secs(storm_secs) {
        if Instant::now() >= next_burst {
            // Three failures in a row: one call's three SDK attempts, all failed.
            proxy.set_rule(
                "exhaust",
                Rule::new(GET_RECORDS, Action::ServiceUnavailable).count(3),
            );
            bursts += 1;
            next_burst += BURST_EVERY;
        }
        let status = consumer.status();
        open_shards = open_shards.max(
            status
                .shards
                .iter()
                .filter(|s| s.state != ShardState::Ended)
                .count(),
        );
        let written = writer.snapshot();
        let delivered = log.snapshot();
        if let Some(oldest_pending) = oldest_undelivered(&written, &delivered) {
            max_lag_ms = max_lag_ms.max(now_ms().saturating_sub(oldest_pending));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let storm_to = proxy.now();
    let storm_end_ms = now_ms();
    proxy.clear();

    // ----- recovery -----
    let recovery_started = Instant::now();
    let mut caught_up_since: Option<u64> = None;
    let recovered_ms = loop {
        let at = now_ms();
        let written = writer.snapshot();
        let delivered = log.snapshot();
        let behind = oldest_undelivered(&written, &delivered).is_some_and(|t| t + threshold < at);
        match (behind, caught_up_since) {
            (false, None) => caught_up_since = Some(at),
            (true, _) => caught_up_since = None,
            _ => {}
        }
        if let Some(since) = caught_up_since {
            if at - since >= 3_000 {
                break since.saturating_sub(storm_end_ms);
            }
        }
        assert!(
            recovery_started.elapsed() < RECOVERY_LIMIT + Duration::from_secs(3),
            "the lag was not back to baseline (p99 {baseline_p99} ms + 1 s) within {RECOVERY_LIMIT:?} after the storm; status: {:?}",
            consumer.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        Duration::from_millis(recovered_ms) <= RECOVERY_LIMIT,
        "back to baseline only {recovered_ms} ms after the storm"
    );
    let recovery_to = proxy.now();

    // ----- the end: everything delivered, caught up, healthy -----
    let written = writer.stop().await;
    wait_for(
        || log.has_all(&written),
        Duration::from_secs(30),
        "every write delivered",
    )
    .await;
    wait_for(
        || {
            consumer.status().shards.iter().all(|s| {
                s.state == ShardState::Ended
                    || (s.state == ShardState::CaughtUp && s.lag == Some(Duration::ZERO))
            })
        },
        Duration::from_secs(15),
        "every shard caught up with zero lag",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await; // one more watchdog round
    let health = consumer.health();
    assert!(health.is_healthy(), "unhealthy after the storm: {health:?}");

    let quarantined = events.count(|e| matches!(e, ConsumerEvent::ShardQuarantined { .. }));
    let restarts = events.count(|e| matches!(e, ConsumerEvent::WorkerRestarted { .. }));
    assert_eq!(
        quarantined,
        0,
        "a shard was quarantined: {:?}",
        events.all()
    );
    let shards = lineage(&c, &arn).await;
    let report = check(&written, &log.snapshot(), &shards);
    report.assert_clean(restarts == 0);

    // ----- pacing, counted by the proxy -----
    let seen = proxy.seen();
    let shard_count = open_shards.max(1);
    let calls = call_starts(&seen, GET_RECORDS, storm_from, recovery_to);
    let peak_calls = max_in_window(&calls, Duration::from_secs(1) - JITTER);
    let peak_calls_raw = max_in_window(&calls, Duration::from_secs(1));
    // The same at the source, where the consumer starts its calls: no network in between.
    let started = api.call_starts("GetRecords");
    let peak_started = max_in_window(&started, Duration::from_millis(990));
    if std::env::var("DDBSTREAM_DEBUG").is_ok() {
        let ms: Vec<u128> = started.iter().map(|d| d.as_millis()).collect();
        eprintln!("GetRecords starts (ms): {ms:?}");
    }
    let all_attempts = attempts(&seen, GET_RECORDS, storm_from, storm_to);
    let peak_attempts = max_in_window(&all_attempts, Duration::from_secs(1));
    let storm_seen: Vec<_> = seen
        .iter()
        .filter(|s| s.target == GET_RECORDS && s.at >= storm_from && s.at < storm_to)
        .collect();
    let faults = storm_seen.iter().filter(|s| s.fault.is_some()).count();
    let exhausted = storm_seen
        .iter()
        .filter(|s| s.fault.is_some() && s.attempt.is_some() && s.attempt == s.max_attempts)
        .count();
    let stats = api.stats();
    let gr = stats.get("GetRecords").cloned().unwrap_or_default();
    let surfaced = |k| gr.errors.get(&k).copied().unwrap_or(0);
    println!(
        "storm: {storm_secs} s storm, {bursts} exhaust bursts; {} GetRecords attempts in the storm, {faults} faulted, {exhausted} last attempts faulted; \
         the consumer saw {} throttled + {} retryable GetRecords failures out of {} calls; \
         peak {peak_calls} calls/s per shard at the proxy ({peak_calls_raw} in a raw 1 s window; {peak_started} started by the consumer in any 990 ms; {shard_count} open shard(s)), peak {peak_attempts} attempts/s; \
         lag baseline p99 {baseline_p99} ms, worst undelivered age in the storm {max_lag_ms} ms, back to baseline {recovered_ms} ms after the storm; \
         {restarts} worker restarts, {quarantined} quarantined; {}",
        storm_seen.len(),
        surfaced(SourceErrorKind::Throttled),
        surfaced(SourceErrorKind::Retryable),
        gr.calls,
        report.summary()
    );
    // Some calls failed even after the SDK's retries (or once its retry quota was spent).
    let surfaced_total: usize = gr.errors.values().sum();
    assert!(
        faults > 0 && surfaced_total > 0,
        "the storm did not bite: {faults} faults, {surfaced_total} failed calls"
    );
    assert!(
        peak_calls <= MAX_CALLS_PER_SHARD_PER_SEC * shard_count,
        "{peak_calls} GetRecords calls within 1 s at the proxy on {shard_count} shard(s): a tight loop"
    );
    assert!(
        peak_started <= MAX_CALLS_PER_SHARD_PER_SEC * shard_count,
        "the consumer started {peak_started} GetRecords calls within 990 ms on {shard_count} shard(s)"
    );
    consumer.shutdown().await.expect("shutdown");
}

/// The write time of the oldest write not delivered yet.
fn oldest_undelivered(
    written: &crate::common::Written,
    delivered: &[crate::common::Delivery],
) -> Option<u64> {
    let got: std::collections::HashSet<(&str, u64)> = delivered
        .iter()
        .map(|d| (d.key.as_str(), d.version))
        .collect();
    written
        .times
        .iter()
        .filter(|((k, v), _)| !got.contains(&(k.as_str(), *v)))
        .map(|(_, t)| *t)
        .min()
}
