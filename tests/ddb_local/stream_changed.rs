//! A table whose stream was disabled and re-enabled has a new stream ARN. A consumer built with
//! `Consumer::for_table` notices the stored checkpoints of the previous stream: it refuses to
//! start (the old stream's unread records would be silently abandoned) unless told to accept
//! the new stream, which it then reports.

use std::time::Duration;

use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType};
use dynamodb_stream::checkpoint::FileCheckpointStore;
use dynamodb_stream::{Consumer, ConsumerEvent, Error};

use crate::common::{fast, periodic_check, Log, Written};
use crate::ddb_local::{clients, create_table, wait_active};

async fn set_stream(c: &crate::ddb_local::TestClients, table: &str, enabled: bool) {
    let mut spec = StreamSpecification::builder().stream_enabled(enabled);
    if enabled {
        spec = spec.stream_view_type(StreamViewType::NewAndOldImages);
    }
    c.dynamodb
        .update_table()
        .table_name(table)
        .stream_specification(spec.build().expect("spec"))
        .send()
        .await
        .expect("update table");
    wait_active(c, table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_stream_is_detected_against_stored_checkpoints() {
    let c = clients("streamchanged");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cp.json");
    let first_arn = create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let log = Log::new();
    let l = log.clone();
    let consumer = Consumer::for_table(&c.dynamodb, c.streams.clone(), "orders")
        .await
        .expect("resolves")
        .handler_factory(move |s| l.handler(s))
        .checkpoints(FileCheckpointStore::new(&path))
        .configure(fast)
        .spawn()
        .await
        .expect("spawn");
    let mut written = Written::default();
    for i in 0..5 {
        written.put(&c, "orders", &format!("o{i}")).await;
    }
    periodic_check(|| log.len() >= 5, Duration::from_secs(30), "first records").await;
    consumer.shutdown().await.expect("shutdown");

    set_stream(&c, "orders", false).await;
    set_stream(&c, "orders", true).await;

    let l = log.clone();
    let err = Consumer::for_table(&c.dynamodb, c.streams.clone(), "orders")
        .await
        .expect("resolves the new stream")
        .handler_factory(move |s| l.handler(s))
        .checkpoints(FileCheckpointStore::new(&path))
        .configure(fast)
        .spawn()
        .await
        .expect_err("a replaced stream must not be followed silently");
    match &err {
        Error::StreamChanged {
            previous, current, ..
        } => {
            assert_eq!(previous, &first_arn);
            assert_ne!(current, &first_arn);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(
        err.to_string().contains("accept_new_stream"),
        "the message says what to do: {err}"
    );

    let l = log.clone();
    let builder = Consumer::for_table(&c.dynamodb, c.streams.clone(), "orders")
        .await
        .expect("resolves")
        .handler_factory(move |s| l.handler(s))
        .checkpoints(FileCheckpointStore::new(&path))
        .configure(fast)
        .accept_new_stream(true);
    let mut events = builder.events();
    let consumer = builder.spawn().await.expect("starts on the new stream");
    let mut changed = false;
    while let Ok(e) = events.try_recv() {
        changed |= matches!(e, ConsumerEvent::StreamChanged { ref previous, .. } if previous == &first_arn);
    }
    assert!(changed, "the change is reported");
    for i in 5..8 {
        written.put(&c, "orders", &format!("o{i}")).await;
    }
    periodic_check(
        || log.len() >= 8,
        Duration::from_secs(30),
        "records of the new stream",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
}
