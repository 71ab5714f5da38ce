//! Items that cannot be read as leases (written by something else, or damaged) are `Corrupt`,
//! naming the shard — never skipped, never read as "no lease".

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use dynamodb_stream::lease::{DynamoDbLeaseStore, LeaseErrorKind, LeaseStore};

use crate::common::{expect_kind, key, processed, SHARD, TABLE};
use crate::ddb_local::{clients, sdk_error, TestClients};

fn lease_key() -> String {
    format!("{}|{}", key().application, key().stream_arn)
}

async fn put_raw(c: &TestClients, attributes: &[(&str, AttributeValue)]) {
    let mut item: HashMap<String, AttributeValue> = HashMap::from([
        ("leaseKey".to_owned(), AttributeValue::S(lease_key())),
        ("shardId".to_owned(), AttributeValue::S(SHARD.to_owned())),
    ]);
    for (name, value) in attributes {
        item.insert((*name).to_owned(), value.clone());
    }
    c.dynamodb
        .put_item()
        .table_name(TABLE)
        .set_item(Some(item))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem: {}", sdk_error(&e)));
}

async fn store(name: &str) -> (TestClients, DynamoDbLeaseStore) {
    let c = clients(name);
    let store = DynamoDbLeaseStore::new(c.dynamodb.clone(), TABLE);
    store.ensure_table().await.expect("ensure_table");
    (c, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ill_typed_counter_is_corrupt_for_reads_and_writes() {
    let (c, store) = store("corruptcounter").await;
    put_raw(
        &c,
        &[
            ("counter", AttributeValue::S("1".into())),
            ("expiresAtMs", AttributeValue::N("0".into())),
        ],
    )
    .await;
    let err = expect_kind(store.list(&key()).await, LeaseErrorKind::Corrupt);
    assert!(err.to_string().contains(SHARD), "names the shard: {err}");
    assert!(err.to_string().contains("counter is S, not N"), "{err}");
    // A write's condition cannot hold on it either; the refusal says why.
    expect_kind(
        store.take(&key(), SHARD, 1, "w", 5).await,
        LeaseErrorKind::Corrupt,
    );
    // `create` does not paper over it.
    assert!(!store.create(&key(), SHARD, &[]).await.expect("exists"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_checkpoints_are_corrupt() {
    let (c, store) = store("corruptcheckpoint").await;
    let base = [
        ("counter", AttributeValue::N("3".into())),
        ("expiresAtMs", AttributeValue::N("0".into())),
        ("owner", AttributeValue::S("w".into())),
    ];
    let cases: [(&[(&str, AttributeValue)], &str); 4] = [
        (
            &[
                ("checkpointState", AttributeValue::S("processed".into())),
                ("sequenceNumber", AttributeValue::S("not-a-number".into())),
            ],
            "not a sequence number",
        ),
        (
            &[
                ("checkpointState", AttributeValue::S("processed".into())),
                (
                    "sequenceNumber",
                    AttributeValue::S("000000000000000000007".into()),
                ),
            ],
            "sequenceKey None does not match",
        ),
        (
            &[("checkpointState", AttributeValue::S("latest".into()))],
            "no sinceMs attribute",
        ),
        (
            &[("checkpointState", AttributeValue::S("half-done".into()))],
            "unknown checkpointState",
        ),
    ];
    for (extra, expected) in cases {
        let attributes: Vec<_> = base.iter().chain(extra).cloned().collect();
        put_raw(&c, &attributes).await;
        let err = expect_kind(store.list(&key()).await, LeaseErrorKind::Corrupt);
        let text = err.to_string();
        assert!(text.contains(SHARD), "{text}");
        assert!(text.contains(expected), "{expected:?} in {text}");
        // A checkpoint write by the owner is refused by the order condition or explained as
        // corrupt: never accepted over a position it cannot read.
        let result = store.checkpoint(&key(), SHARD, "w", 3, &processed(1)).await;
        if let Err(e) = &result {
            assert_eq!(e.kind(), LeaseErrorKind::Corrupt, "{e}");
        }
    }
}
