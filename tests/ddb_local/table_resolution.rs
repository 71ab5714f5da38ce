//! `Consumer::for_table` resolves a table's stream ARN with DescribeTable, and says clearly
//! when the table does not exist or has no stream.

use std::time::Duration;

use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType};
use dynamodb_stream::{Consumer, Error};

use crate::common::{check_deliveries, fast, periodic_check, Log, Written};
use crate::ddb_local::{clients, create_table, create_table_with, sdk_error, wait_active};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_table_resolves_the_latest_stream_arn() {
    let c = clients("fortable");
    let arn = create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let log = Log::new();
    let l = log.clone();
    let consumer = Consumer::for_table(&c.dynamodb, c.streams.clone(), "orders")
        .await
        .expect("resolves")
        .handler_factory(move |s| l.handler(s))
        .configure(fast)
        .spawn()
        .await
        .expect("spawn");
    assert_eq!(consumer.stream_arn(), arn);
    assert!(
        arn.contains(":table/orders/stream/"),
        "a DynamoDB Local stream ARN names its table: {arn}"
    );
    let mut written = Written::default();
    for i in 0..10 {
        written.put(&c, "orders", &format!("o{i}")).await;
    }
    periodic_check(|| log.len() >= 10, Duration::from_secs(30), "ten records").await;
    consumer.shutdown().await.expect("shutdown");
    check_deliveries(&written, &log.snapshot(), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_table_is_an_invalid_argument() {
    let c = clients("notable");
    let err = Consumer::for_table(&c.dynamodb, c.streams.clone(), "no-such-table")
        .await
        .expect_err("no such table");
    match &err {
        Error::InvalidArgument(msg) => {
            assert!(msg.contains("no-such-table"), "{msg}");
            assert!(msg.contains("not found"), "{msg}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(err.is_fatal());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_stream_is_an_invalid_argument() {
    let c = clients("nostream");
    assert_eq!(create_table_with(&c, "plain", None, false).await, None);
    let err = Consumer::for_table(&c.dynamodb, c.streams.clone(), "plain")
        .await
        .expect_err("no stream");
    match &err {
        Error::InvalidArgument(msg) => {
            assert!(msg.contains("plain"), "{msg}");
            assert!(msg.contains("no stream"), "{msg}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    // A stream that was disabled counts as none, although DescribeTable still names it.
    let arn = create_table(&c, "was-streaming", StreamViewType::KeysOnly).await;
    c.dynamodb
        .update_table()
        .table_name("was-streaming")
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(false)
                .build()
                .expect("spec"),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("UpdateTable: {}", sdk_error(&e)));
    wait_active(&c, "was-streaming").await;
    let err = Consumer::for_table(&c.dynamodb, c.streams.clone(), "was-streaming")
        .await
        .expect_err("stream disabled");
    match &err {
        Error::InvalidArgument(msg) => assert!(msg.contains("no stream"), "{msg} ({arn})"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}
