//! Time-to-live deletions are delivered, not dropped.
//!
//! DynamoDB Local 3.3.1 deletes expired items about once a second, and its stream record for
//! such a deletion has the event name `UNKNOWN_TO_SDK_VERSION` (its Java SDK model cannot
//! serialize the internal `EXPIRE` operation) and no user identity. The Rust SDK turns that into
//! `OperationType::Unknown`, the consumer into `RecordKind::Unknown(name)`. The real service
//! sends `REMOVE` with the user identity `Service` / `dynamodb.amazonaws.com`
//! (`RecordKind::Remove { ttl: true }`); both are accepted here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{AttributeValue as Ddb, StreamViewType, TimeToLiveSpecification};
use dynamodb_stream::events::Change;
use dynamodb_stream::record::AttributeValue;
use dynamodb_stream::{Batch, Consumer, HandlerError, RecordKind, StreamRecord};

use crate::common::{fast, periodic_check, put};
use crate::ddb_local::{clients, create_table, sdk_error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_deletions_are_delivered() {
    let c = clients("ttl");
    let table = "expiring";
    let arn = create_table(&c, table, StreamViewType::NewAndOldImages).await;
    c.dynamodb
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires")
                .build()
                .expect("ttl spec"),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("UpdateTimeToLive: {}", sdk_error(&e)));

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<StreamRecord>::new()));
    let sink = seen.clone();
    let consumer = Consumer::builder(c.streams.clone(), &arn)
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

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    put(&c, table, "before", 1).await;
    c.dynamodb
        .put_item()
        .table_name(table)
        .item("pk", Ddb::S("expired".into()))
        .item("v", Ddb::N("1".into()))
        .item("expires", Ddb::N((now - 60).to_string()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem: {}", sdk_error(&e)));
    put(&c, table, "after", 1).await;

    let is_expired = |r: &StreamRecord| {
        r.keys().get("pk") == Some(&AttributeValue::S("expired".into()))
            && !matches!(r.kind(), RecordKind::Insert)
    };
    periodic_check(
        || seen.lock().unwrap().iter().any(is_expired),
        Duration::from_secs(60),
        "the TTL deletion's record",
    )
    .await;
    // Something written after the deletion still arrives after it.
    put(&c, table, "later", 1).await;
    periodic_check(
        || {
            seen.lock()
                .unwrap()
                .iter()
                .any(|r| r.keys().get("pk") == Some(&AttributeValue::S("later".into())))
        },
        Duration::from_secs(30),
        "a record after the TTL deletion",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");

    let records = seen.lock().unwrap().clone();
    let ttl: Vec<&StreamRecord> = records.iter().filter(|r| is_expired(r)).collect();
    assert_eq!(ttl.len(), 1, "one TTL deletion: {records:?}");
    let r = ttl[0];
    match r.kind() {
        RecordKind::Unknown(name) => {
            assert!(!name.is_empty(), "the event name is kept");
            assert!(
                matches!(Change::from(r), Change::Other { ref event_name, .. } if event_name == name)
            );
        }
        RecordKind::Remove { ttl: true } => {
            assert!(r.user_identity().is_some_and(|u| u.is_ttl()));
            assert!(matches!(Change::from(r), Change::Remove { .. }));
        }
        other => panic!("a TTL deletion arrived as {other:?}"),
    }
    assert!(r.new_image().is_none());
    let old = r.old_image().expect("the deleted item is in the old image");
    assert_eq!(old.get("v"), Some(&AttributeValue::N("1".into())));
    let order: Vec<String> = records.iter().map(|r| r.key_string()).collect();
    let pos = |k: &str| {
        order
            .iter()
            .position(|x| x == &format!("pk=\"{k}\""))
            .unwrap_or_else(|| panic!("{k} missing from {order:?}"))
    };
    let deletion = records.iter().position(is_expired).expect("deletion");
    assert!(pos("before") < pos("expired"));
    assert!(pos("expired") < deletion, "insert before its deletion");
    assert!(deletion < pos("later"));
}
