//! `ensure_table` creates the lease table (on-demand billing, hash key `leaseKey`, range key
//! `shardId`), is idempotent, and refuses a table of another shape with a clear message.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamViewType,
};
use dynamodb_stream::lease::{DynamoDbLeaseStore, LeaseErrorKind, LeaseStore, MemoryLeaseStore};

use crate::common::{expect_kind, key, SHARD, TABLE};
use crate::ddb_local::{clients, create_table_with, sdk_error, wait_active, TestClients};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_the_table_and_is_idempotent() {
    let c = clients("ensuretable");
    let store = DynamoDbLeaseStore::new(c.dynamodb.clone(), TABLE);
    assert_eq!(store.table_name(), TABLE);
    store.ensure_table().await.expect("creates");

    let table = c
        .dynamodb
        .describe_table()
        .table_name(TABLE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeTable: {}", sdk_error(&e)))
        .table
        .expect("a table");
    let schema: Vec<_> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().clone()))
        .collect();
    assert_eq!(
        schema,
        [("leaseKey", KeyType::Hash), ("shardId", KeyType::Range)]
    );
    assert!(table
        .attribute_definitions()
        .iter()
        .all(|d| d.attribute_type() == &ScalarAttributeType::S));
    assert_eq!(
        table.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );

    // Again, and from another store (another worker) on the same table: nothing changes.
    store.ensure_table().await.expect("idempotent");
    assert!(store.create(&key(), SHARD, &[]).await.expect("create"));
    let other = DynamoDbLeaseStore::new(c.dynamodb.clone(), TABLE);
    other.ensure_table().await.expect("existing table");
    assert_eq!(other.list(&key()).await.expect("list").len(), 1);

    MemoryLeaseStore::new()
        .ensure_table()
        .await
        .expect("memory: nothing to do");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_racing_to_create_the_table_all_succeed() {
    let c = clients("ensurerace");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = DynamoDbLeaseStore::new(c.dynamodb.clone(), TABLE);
            tokio::spawn(async move { store.ensure_table().await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("ensure_table");
    }
    let store = DynamoDbLeaseStore::new(c.dynamodb.clone(), TABLE);
    assert!(store.create(&key(), SHARD, &[]).await.expect("usable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_another_key_schema_is_fatal() {
    let c = clients("wrongschema");
    // An application table (hash key `pk`) named like the lease table.
    create_table_with(&c, TABLE, Some(StreamViewType::KeysOnly), false).await;
    let store = DynamoDbLeaseStore::new(c.dynamodb.clone(), TABLE);
    let err = expect_kind(store.ensure_table().await, LeaseErrorKind::Fatal);
    let text = err.to_string();
    for expected in [
        "\"leases\"",
        "not a lease table",
        "[pk (HASH, S)]",
        "hash key leaseKey (S) and range key shardId (S)",
    ] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
    assert!(!err.is_retryable());

    // The right names with a wrong type are refused too.
    create_raw(&c, "numbered", ScalarAttributeType::N).await;
    let err = expect_kind(
        DynamoDbLeaseStore::new(c.dynamodb.clone(), "numbered")
            .ensure_table()
            .await,
        LeaseErrorKind::Fatal,
    );
    assert!(err.to_string().contains("shardId (RANGE, N)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_fatal_and_says_so() {
    let c = clients("notable");
    let store = DynamoDbLeaseStore::new(c.dynamodb, TABLE);
    let err = expect_kind(store.list(&key()).await, LeaseErrorKind::Fatal);
    assert!(err.to_string().contains("ensure_table"), "{err}");
    let err = expect_kind(
        store.take(&key(), SHARD, 0, "w", 1).await,
        LeaseErrorKind::Fatal,
    );
    assert!(err.to_string().contains("\"leases\""), "{err}");
}

/// A table with hash key `leaseKey` (S) and range key `shardId` of `shard_type`.
async fn create_raw(c: &TestClients, table: &str, shard_type: ScalarAttributeType) {
    let attribute = |name: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(t)
            .build()
            .expect("attribute definition")
    };
    let key = |name: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .expect("key schema element")
    };
    c.dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("leaseKey", ScalarAttributeType::S))
        .attribute_definitions(attribute("shardId", shard_type))
        .key_schema(key("leaseKey", KeyType::Hash))
        .key_schema(key("shardId", KeyType::Range))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {table}: {}", sdk_error(&e)));
    wait_active(c, table).await;
}
