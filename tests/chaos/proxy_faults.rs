//! The fault proxy itself: every action reaches the SDK as the fault it stands for, and the
//! crate classifies it as the consumer's recovery expects (throttled, retryable, expired
//! iterator, trimmed data); rules fire by count and skip, match `DynamoDB_20120810.*`, and the
//! proxy records every attempt of an SDK call under one invocation id.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use aws_sdk_dynamodbstreams::config::retry::RetryConfig;
use dynamodb_stream::error::SourceErrorKind;
use dynamodb_stream::source::{DescribeStreamRequest, IteratorPosition, StreamsApi};

use crate::common::{now_ms, put, seed, short_timeouts, streams_via, Timed};
use crate::ddb_local::{clients, create_table, server, REGION};
use crate::fault_proxy::{Action, FaultProxy, Rule, DYNAMODB_ANY, GET_RECORDS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_reaches_the_sdk_classified() {
    let c = clients("chaos_proxy");
    let arn = create_table(&c, "faults", StreamViewType::NewAndOldImages).await;
    put(&c, "faults", "a", 1, now_ms()).await;
    let proxy = FaultProxy::start(&server().endpoint, seed("proxy_faults"));
    // No SDK retries: each call is one request, so its outcome is the fault's.
    let api = Timed::new(streams_via(
        &proxy,
        &c,
        short_timeouts(),
        RetryConfig::disabled(),
    ));

    let description = api
        .describe_stream(DescribeStreamRequest {
            stream_arn: arn.clone(),
            ..Default::default()
        })
        .await
        .expect("DescribeStream through the proxy");
    let shard = description.shards[0].shard_id.clone();
    let iterator = api
        .get_shard_iterator(arn.clone(), shard, IteratorPosition::TrimHorizon)
        .await
        .expect("GetShardIterator through the proxy");
    let page = api
        .get_records(iterator.clone(), None)
        .await
        .expect("GetRecords through the proxy");
    assert_eq!(page.records.len(), 1, "the record comes through unchanged");

    let cases = [
        (Action::LimitExceeded, Some(SourceErrorKind::Throttled)),
        (
            Action::ProvisionedThroughputExceeded,
            Some(SourceErrorKind::Throttled),
        ),
        (Action::Throttling, Some(SourceErrorKind::Throttled)),
        (
            Action::InternalServerError,
            Some(SourceErrorKind::Retryable),
        ),
        (Action::ServiceUnavailable, Some(SourceErrorKind::Retryable)),
        (
            Action::ExpiredIterator,
            Some(SourceErrorKind::ExpiredIterator),
        ),
        (Action::TrimmedData, Some(SourceErrorKind::TrimmedData)),
        (Action::ResourceNotFound, Some(SourceErrorKind::NotFound)),
        (Action::Delay(Duration::from_millis(300)), None),
        // Past the 2 s attempt timeout: the SDK gives up, the call is a retryable timeout.
        (
            Action::Delay(Duration::from_secs(30)),
            Some(SourceErrorKind::Retryable),
        ),
        (Action::Hang, Some(SourceErrorKind::Retryable)),
        (Action::ResetBeforeForward, Some(SourceErrorKind::Retryable)),
        (Action::ResetAfterForward, Some(SourceErrorKind::Retryable)),
        (Action::TruncateBody, Some(SourceErrorKind::Retryable)),
    ];
    for (action, expected) in cases {
        proxy.set_rule("case", Rule::new(GET_RECORDS, action.clone()).count(1));
        let started = Instant::now();
        let result = api.get_records(iterator.clone(), None).await;
        let took = started.elapsed();
        match (&result, expected) {
            (Ok(page), None) => assert_eq!(page.records.len(), 1, "{action:?}"),
            (Err(e), Some(kind)) => assert_eq!(e.kind(), kind, "{action:?}: {e}"),
            (r, _) => panic!(
                "{action:?}: expected {expected:?}, got {:?}",
                r.as_ref().err()
            ),
        }
        assert!(
            took < Duration::from_millis(3_500),
            "{action:?} took {took:?}: past the 2 s attempt timeout"
        );
        if let Action::Delay(d) = action {
            assert!(
                took >= d.min(Duration::from_secs(2)),
                "{action:?} took {took:?}"
            );
        }
        assert_eq!(proxy.fired("case"), 1, "{action:?} fired once");
        // The rule is spent: the next call goes through.
        let page = api
            .get_records(iterator.clone(), None)
            .await
            .unwrap_or_else(|e| panic!("after {action:?}: {e}"));
        assert_eq!(page.records.len(), 1);
    }

    // skip and count: the first request passes, the next two fail, then the rule is spent.
    proxy.set_rule(
        "case",
        Rule::new(GET_RECORDS, Action::Throttling).skip(1).count(2),
    );
    let outcomes: Vec<bool> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(api.get_records(iterator.clone(), None).await.is_ok());
        }
        v
    };
    assert_eq!(outcomes, [true, false, false, true]);

    // Probability: about half of 200 requests.
    proxy.set_rule(
        "case",
        Rule::new(GET_RECORDS, Action::ServiceUnavailable).probability(0.5),
    );
    let mut failed = 0;
    for _ in 0..200 {
        failed += usize::from(api.get_records(iterator.clone(), None).await.is_err());
    }
    assert!(
        (60..=140).contains(&failed),
        "{failed} of 200 failed at p = 0.5"
    );
    proxy.clear();

    // With the SDK's standard retries, two throttled attempts are retried away: the proxy sees
    // three attempts of one invocation.
    let retrying = Timed::new(streams_via(
        &proxy,
        &c,
        short_timeouts(),
        RetryConfig::standard(),
    ));
    let before = proxy.seen().len();
    proxy.set_rule(
        "case",
        Rule::new(GET_RECORDS, Action::LimitExceeded).count(2),
    );
    retrying
        .get_records(iterator.clone(), None)
        .await
        .expect("retried past two throttles");
    let attempts: Vec<_> = proxy.seen()[before..].to_vec();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(attempts
        .iter()
        .all(|s| s.invocation == attempts[0].invocation));
    assert_eq!(
        attempts.iter().map(|s| s.attempt).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(3)]
    );
    assert_eq!(
        attempts.iter().map(|s| s.fault).collect::<Vec<_>>(),
        [
            Some("LimitExceededException"),
            Some("LimitExceededException"),
            None
        ]
    );
    assert_eq!(attempts[2].status, Some(200));
    proxy.clear();

    // DynamoDB operations match `DynamoDB_20120810.*`.
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new(REGION))
            .endpoint_url(proxy.url())
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                &c.access_key,
                "secret",
                None,
                None,
                "chaos",
            ))
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build(),
    );
    dynamodb
        .describe_table()
        .table_name("faults")
        .send()
        .await
        .expect("DescribeTable through the proxy");
    proxy.set_rule("case", Rule::new(DYNAMODB_ANY, Action::InternalServerError));
    let e = dynamodb
        .describe_table()
        .table_name("faults")
        .send()
        .await
        .expect_err("DescribeTable fails");
    assert_eq!(
        e.raw_response().map(|r| r.status().as_u16()),
        Some(500),
        "{e:?}"
    );
    assert_eq!(proxy.count("DynamoDB_20120810.DescribeTable"), 2);
    assert_eq!(proxy.count(DYNAMODB_ANY), 2);
    println!(
        "proxy_faults: {} requests seen, all actions classified as expected",
        proxy.seen().len()
    );
}
