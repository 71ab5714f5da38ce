//! The four stream view types: which images an insert, a modify and a remove carry.

use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::events::Change;
use dynamodb_stream::record::AttributeValue;
use dynamodb_stream::{Batch, Consumer, HandlerError, RecordKind, StreamRecord};

use crate::common::{delete, fast, periodic_check, put};
use crate::ddb_local::{clients, create_table};

/// (has new image, has old image) for insert, modify, remove.
type Expect = [(bool, bool); 3];

async fn check_view(view: StreamViewType, expect: Expect) {
    let name = format!("view{}", view.as_str().replace('_', ""));
    let c = clients(&name);
    let table = "views";
    let arn = create_table(&c, table, view.clone()).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<StreamRecord>::new()));
    let sink = seen.clone();
    let consumer = Consumer::for_table(&c.dynamodb, c.streams.clone(), table)
        .await
        .expect("table with a stream")
        .handler_fn(move |batch: Batch| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().extend(batch.records().iter().cloned());
                Ok::<(), HandlerError>(())
            }
        })
        .configure(fast)
        .spawn()
        .await
        .expect("spawn");
    assert_eq!(consumer.stream_arn(), arn);
    put(&c, table, "item", 1).await;
    put(&c, table, "item", 2).await;
    delete(&c, table, "item").await;
    periodic_check(
        || seen.lock().unwrap().len() >= 3,
        Duration::from_secs(30),
        "insert, modify and remove",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let records = seen.lock().unwrap().clone();
    assert_eq!(records.len(), 3, "{view:?}: {records:?}");
    let kinds: Vec<&RecordKind> = records.iter().map(|r| r.kind()).collect();
    assert_eq!(
        kinds,
        [
            &RecordKind::Insert,
            &RecordKind::Modify,
            &RecordKind::Remove { ttl: false }
        ],
        "{view:?}"
    );
    let v = |i: Option<&dynamodb_stream::record::Item>| match i.and_then(|i| i.get("v")) {
        Some(AttributeValue::N(n)) => n.clone(),
        other => panic!("{view:?}: image without v: {other:?}"),
    };
    for (r, (new, old)) in records.iter().zip(expect) {
        assert_eq!(
            r.keys().get("pk"),
            Some(&AttributeValue::S("item".into())),
            "{view:?}: keys of {:?}",
            r.kind()
        );
        assert_eq!(r.keys().len(), 1, "{view:?}: keys hold only the key");
        assert_eq!(
            r.new_image().is_some(),
            new,
            "{view:?}: new image of {:?}",
            r.kind()
        );
        assert_eq!(
            r.old_image().is_some(),
            old,
            "{view:?}: old image of {:?}",
            r.kind()
        );
    }
    // The images hold the right versions.
    if expect[0].0 {
        assert_eq!(v(records[0].new_image()), "1");
    }
    if expect[1].0 {
        assert_eq!(v(records[1].new_image()), "2");
    }
    if expect[1].1 {
        assert_eq!(v(records[1].old_image()), "1");
    }
    if expect[2].1 {
        assert_eq!(v(records[2].old_image()), "2");
    }
    // The npm package's vocabulary agrees.
    assert!(matches!(Change::from(&records[0]), Change::Insert { .. }));
    assert!(matches!(Change::from(&records[1]), Change::Modify { .. }));
    assert!(matches!(Change::from(&records[2]), Change::Remove { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_only_carries_no_images() {
    check_view(
        StreamViewType::KeysOnly,
        [(false, false), (false, false), (false, false)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_image_carries_the_item_after() {
    check_view(
        StreamViewType::NewImage,
        [(true, false), (true, false), (false, false)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_image_carries_the_item_before() {
    check_view(
        StreamViewType::OldImage,
        [(false, false), (false, true), (false, true)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_old_images_carry_both() {
    check_view(
        StreamViewType::NewAndOldImages,
        [(true, false), (true, true), (false, true)],
    )
    .await;
}
