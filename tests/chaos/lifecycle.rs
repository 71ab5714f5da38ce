//! Scenario 3, the stream's lifecycle on the real server.
//!
//! - Disabling the stream (UpdateTable StreamEnabled=false) closes every shard: the consumer
//!   reads each to its end, reports `StreamDisabled`, and `join()` returns `Ok` once all shards
//!   ended; after that it sends no request at all.
//! - Re-enabling gives the table a new stream: `Consumer::for_table` with the old checkpoints
//!   refuses it (`Error::StreamChanged`) unless told `accept_new_stream(true)`.
//! - Deleting the table while a consumer runs: the stream outlives its table (DynamoDB keeps it,
//!   DISABLED and readable, for 24 hours; DynamoDB Local does the same), so the consumer drains
//!   it and stops cleanly; a new `for_table` consumer is refused with "table not found".
//! - A stream that is gone for good (ResourceNotFoundException on every call, injected by the
//!   proxy, as AWS answers 24 hours after the deletion) stops a running consumer with an error,
//!   once: no crash loop, no silent idling.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType};
use aws_sdk_dynamodbstreams::config::retry::RetryConfig;
use dynamodb_stream::checkpoint::FileCheckpointStore;
use dynamodb_stream::status::ShardState;
use dynamodb_stream::{recommended_timeouts, Consumer, ConsumerConfig, ConsumerEvent, Error};

use crate::common::{
    check, lineage, now_ms, put, seed, short_timeouts, streams_via, wait_for, Events, Log, Timed,
    Written,
};
use crate::ddb_local::{clients, create_table, rollover, server, wait_active, TestClients};
use crate::fault_proxy::{Action, FaultProxy, Rule, GET_RECORDS};

const TABLE: &str = "lifecycle";
const STREAMS_ANY: &str = "DynamoDBStreams_20120810.*";

fn quick(c: &mut ConsumerConfig) {
    c.min_poll_interval = Duration::from_millis(50);
    c.idle_poll_interval = Duration::from_millis(100);
    c.discovery_interval = Duration::from_millis(500);
    c.min_describe_interval = Duration::from_millis(20);
    c.checkpoint_interval = Duration::from_millis(100);
    c.retry_backoff = Duration::from_millis(50);
    c.max_retry_backoff = Duration::from_millis(500);
    c.watchdog_interval = Duration::from_millis(500);
}

async fn set_stream(c: &TestClients, enabled: bool) -> Option<String> {
    let mut spec = StreamSpecification::builder().stream_enabled(enabled);
    if enabled {
        spec = spec.stream_view_type(StreamViewType::NewAndOldImages);
    }
    c.dynamodb
        .update_table()
        .table_name(TABLE)
        .stream_specification(spec.build().expect("spec"))
        .send()
        .await
        .expect("UpdateTable");
    wait_active(c, TABLE).await
}

/// Write the next version of `n` keys (`prefix0..`).
async fn write(c: &TestClients, written: &mut Written, prefix: &str, n: usize) {
    for i in 0..n {
        let key = format!("{prefix}{i}");
        let v = {
            let v = written.versions.entry(key.clone()).or_insert(0);
            *v += 1;
            *v
        };
        let t = now_ms();
        written.times.insert((key.clone(), v), t);
        put(c, TABLE, &key, v, t).await;
    }
}

fn stopped_error(events: &Events) -> Vec<Option<String>> {
    events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ConsumerEvent::Stopped { error } => Some(error),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_drains_reenable_needs_consent_delete_drains() {
    let c = clients("chaos_lifecycle");
    let first_arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    // No rules: the proxy only counts what the consumers send.
    let proxy = FaultProxy::start(&server().endpoint, seed("lifecycle"));
    let api = streams_via(&proxy, &c, recommended_timeouts(), RetryConfig::standard());
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = dir.path().join("checkpoints.json");

    // ----- disable -----
    let log = Log::new();
    let l = log.clone();
    let builder = Consumer::for_table(&c.dynamodb, api.clone(), TABLE)
        .await
        .expect("resolves the table's stream")
        .handler_factory(move |s| l.handler(s))
        .checkpoints(FileCheckpointStore::new(&cp))
        .configure(quick);
    let events = Events::collect(builder.events());
    let mut first = builder.spawn().await.expect("spawn");
    let mut written = Written::default();
    write(&c, &mut written, "a", 10).await;
    rollover(&c).await;
    write(&c, &mut written, "b", 10).await;
    wait_for(
        || log.has_all(&written),
        Duration::from_secs(30),
        "the first records",
    )
    .await;
    // Records written just before the stream is disabled are still delivered.
    write(&c, &mut written, "c", 5).await;
    let disabled_at = std::time::Instant::now();
    assert!(set_stream(&c, false).await.is_none(), "stream disabled");
    tokio::time::timeout(Duration::from_secs(30), first.join())
        .await
        .expect("join() returns once every shard of the disabled stream ended")
        .expect("a drained disabled stream is a clean stop");
    // Stopped is the last event: once the collector has it, it has every earlier one.
    wait_for(
        || !stopped_error(&events).is_empty(),
        Duration::from_secs(5),
        "the Stopped event",
    )
    .await;
    let stop_took = disabled_at.elapsed();
    let shards = lineage(&c, &first_arn).await;
    let report = check(&written, &log.snapshot(), &shards);
    println!(
        "lifecycle/disable: {} ({} shards), stopped {stop_took:?} after UpdateTable",
        report.summary(),
        shards.len()
    );
    report.assert_clean(true);
    assert_eq!(
        events.count(|e| matches!(e, ConsumerEvent::StreamDisabled)),
        1,
        "{:?}",
        events.all()
    );
    let ended: BTreeSet<String> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ConsumerEvent::ShardEnded { shard_id } => Some(shard_id),
            _ => None,
        })
        .collect();
    assert_eq!(ended, shards.keys().cloned().collect(), "every shard ended");
    assert_eq!(stopped_error(&events), [None], "one clean Stopped event");
    assert!(
        first
            .status()
            .shards
            .iter()
            .all(|s| s.state == ShardState::Ended),
        "{:?}",
        first.status()
    );
    // It stopped polling.
    let sent = proxy.count(STREAMS_ANY);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(proxy.count(STREAMS_ANY), sent, "requests after join()");
    first.shutdown().await.expect("already stopped cleanly");

    // ----- re-enable -----
    let second_arn = set_stream(&c, true).await.expect("a new stream");
    assert_ne!(second_arn, first_arn);
    let log2 = Log::new();
    let l = log2.clone();
    let refused = Consumer::for_table(&c.dynamodb, api.clone(), TABLE)
        .await
        .expect("resolves the new stream")
        .handler_factory(move |s| l.handler(s))
        .checkpoints(FileCheckpointStore::new(&cp))
        .configure(quick)
        .spawn()
        .await
        .expect_err("a replaced stream is not followed without consent");
    match &refused {
        Error::StreamChanged {
            previous, current, ..
        } => {
            assert_eq!(previous, &first_arn);
            assert_eq!(current, &second_arn);
        }
        other => panic!("expected StreamChanged, got {other}"),
    }
    let l = log2.clone();
    let builder = Consumer::for_table(&c.dynamodb, api.clone(), TABLE)
        .await
        .expect("resolves")
        .handler_factory(move |s| l.handler(s))
        .checkpoints(FileCheckpointStore::new(&cp))
        .configure(quick)
        .accept_new_stream(true);
    let events2 = Events::collect(builder.events());
    let mut second = builder.spawn().await.expect("starts on the new stream");
    let mut written2 = Written::default();
    write(&c, &mut written2, "d", 10).await;
    wait_for(
        || log2.has_all(&written2),
        Duration::from_secs(30),
        "records of the new stream",
    )
    .await;
    assert_eq!(
        events2.count(
            |e| matches!(e, ConsumerEvent::StreamChanged { previous, .. } if previous == &first_arn)
        ),
        1
    );

    // ----- delete the table under a running consumer -----
    write(&c, &mut written2, "e", 5).await;
    c.dynamodb
        .delete_table()
        .table_name(TABLE)
        .send()
        .await
        .expect("DeleteTable");
    let deleted_at = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), second.join())
        .await
        .expect("a consumer whose table was deleted stops (it must not idle forever)");
    let stop_took = deleted_at.elapsed();
    println!(
        "lifecycle/delete: join() -> {outcome:?} {stop_took:?} after DeleteTable; events: {:?}",
        events2
            .all()
            .iter()
            .filter(|e| matches!(
                e,
                ConsumerEvent::StreamDisabled
                    | ConsumerEvent::Stopped { .. }
                    | ConsumerEvent::Gap(_)
            ))
            .collect::<Vec<_>>()
    );
    outcome.expect("the stream outlives its table: drained, then a clean stop");
    // Stopped is the last event: once the collector has it, it has every earlier one.
    wait_for(
        || !stopped_error(&events2).is_empty(),
        Duration::from_secs(5),
        "the Stopped event",
    )
    .await;
    assert_eq!(
        events2.count(|e| matches!(e, ConsumerEvent::StreamDisabled)),
        1
    );
    assert_eq!(stopped_error(&events2), [None]);
    let report = check(&written2, &log2.snapshot(), &lineage(&c, &second_arn).await);
    println!("lifecycle/delete: {}", report.summary());
    report.assert_clean(true);
    let sent = proxy.count(STREAMS_ANY);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(proxy.count(STREAMS_ANY), sent, "requests after join()");
    second.shutdown().await.expect("already stopped cleanly");

    // A new consumer of the deleted table is refused with a clear message.
    let e = Consumer::for_table(&c.dynamodb, api.clone(), TABLE)
        .await
        .expect_err("the table is gone");
    assert!(e.to_string().contains("not found"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_stream_stops_the_consumer_with_an_error() {
    let c = clients("chaos_vanished");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let proxy = FaultProxy::start(&server().endpoint, seed("vanished"));
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
        .configure(quick);
    let events = Events::collect(builder.events());
    let mut consumer = builder.spawn().await.expect("spawn");
    let mut written = Written::default();
    write(&c, &mut written, "a", 5).await;
    wait_for(|| log.has_all(&written), Duration::from_secs(30), "records").await;

    proxy.set_rule("gone", Rule::new(STREAMS_ANY, Action::ResourceNotFound));
    let gone_at = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), consumer.join())
        .await
        .expect("a consumer of a vanished stream stops (no crash loop, no silent idling)");
    let took = gone_at.elapsed();
    let error = outcome.expect_err("a vanished stream is an error");
    println!("lifecycle/vanished: stopped after {took:?} with: {error}");
    assert!(
        matches!(
            error,
            Error::Gap { .. } | Error::Source(_) | Error::InvalidArgument(_)
        ),
        "{error:?}"
    );
    // join() returns when the coordinator has stopped; the event collector may still be
    // receiving its last events.
    wait_for(
        || !stopped_error(&events).is_empty(),
        Duration::from_secs(5),
        "the Stopped event",
    )
    .await;
    let stopped = stopped_error(&events);
    assert_eq!(stopped.len(), 1, "{:?}", events.all());
    assert!(stopped[0].is_some(), "the Stopped event carries the error");
    assert_eq!(
        events.count(|e| matches!(e, ConsumerEvent::WorkerRestarted { .. })),
        0,
        "no restart loop: {:?}",
        events.all()
    );
    // Nothing is sent any more.
    let sent = proxy.count(STREAMS_ANY);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(proxy.count(STREAMS_ANY), sent, "requests after join()");
    println!(
        "lifecycle/vanished: {} GetRecords answered ResourceNotFound before the stop",
        proxy
            .seen()
            .iter()
            .filter(|s| s.target == GET_RECORDS && s.fault.is_some())
            .count()
    );
}
