//! What only the PostgreSQL replica has: a schema shared with other data (refused when it is
//! another application's, or another layout version, leaving the database as it was), several
//! replicated tables side by side, typed key columns with exact numbers, and transactions
//! killed inside the server.

use std::collections::HashMap;
use std::time::Duration;

use dynamodb_stream::checkpoint::{CheckpointStore, ShardCheckpoint, StreamKey};
use dynamodb_stream::record::{AttributeValue, Item, StreamViewType};
use dynamodb_stream::replicate::{
    ItemChange, KeyAttribute, KeyRole, PostgresReplica, ReplicaSink, ScalarType, SequencedChange,
    TableInfo,
};
use dynamodb_stream::{Error, SequenceNumber};

use crate::common::{item, keys};
use crate::postgres;
use crate::wait::periodic_check_async;

fn arn(table: &str) -> String {
    format!("arn:aws:dynamodb:us-east-1:000000000000:table/{table}/stream/2024-01-01T00:00:00.000")
}

fn table(name: &str) -> TableInfo {
    TableInfo {
        table_name: name.into(),
        stream_arn: arn(name),
        view_type: Some(StreamViewType::NewImage),
        key_schema: vec![KeyAttribute {
            name: "pk".into(),
            role: KeyRole::Partition,
            scalar_type: Some(ScalarType::S),
        }],
        item_count: None,
    }
}

fn key(table: &str) -> StreamKey {
    StreamKey {
        application: "app".into(),
        stream_arn: arn(table),
    }
}

fn n(i: u64) -> SequenceNumber {
    format!("{:021}", 100_000_000_000_000_000_000u128 + u128::from(i))
        .parse()
        .expect("sequence number")
}

fn put(i: u64, id: u32, version: u64) -> SequencedChange {
    SequencedChange {
        sequence_number: n(i),
        change: ItemChange::Put {
            keys: keys(id),
            item: item(id, version),
        },
    }
}

fn refusal<T: std::fmt::Debug>(r: dynamodb_stream::Result<T>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

fn dump(url: &str) -> String {
    postgres::server().dump(postgres::database_name(url))
}

#[tokio::test]
async fn another_applications_schema_is_left_alone() {
    let url = postgres::database("foreign_schema").await;
    let client = postgres::connect(&url).await;
    client
        .batch_execute(
            "CREATE SCHEMA ddbstream;
             CREATE TABLE ddbstream.notes (body text);
             INSERT INTO ddbstream.notes VALUES ('keep me');",
        )
        .await
        .expect("fill");
    let before = dump(&url);
    let m = refusal(PostgresReplica::connect(&url).await);
    assert!(m.contains("holds another application's tables"), "{m}");
    assert!(m.contains("schema \"ddbstream\""), "{m}");
    assert!(dump(&url) == before, "the database changed");
    // Another schema of the same database is fine, and an empty schema is adopted.
    client
        .batch_execute("CREATE SCHEMA copies")
        .await
        .expect("schema");
    let sink = PostgresReplica::builder(&url)
        .schema("copies")
        .connect()
        .await
        .expect("an empty schema is adopted");
    sink.bind(&table("orders")).await.expect("bind");
    assert_eq!(sink.items_table().as_deref(), Some("\"copies\".\"orders\""));
}

#[tokio::test]
async fn another_layout_version_is_left_alone() {
    let url = postgres::database("layout_version").await;
    drop(PostgresReplica::connect(&url).await.expect("create"));
    let client = postgres::connect(&url).await;
    client
        .batch_execute(
            "UPDATE ddbstream.ddbstream_meta SET value = '99' WHERE name = 'schema_version'",
        )
        .await
        .expect("pretend a newer layout");
    let before = dump(&url);
    let m = refusal(PostgresReplica::connect(&url).await);
    assert!(
        m.contains("layout version 99; this build reads version 1"),
        "{m}"
    );
    assert!(dump(&url) == before, "the database changed");
}

#[tokio::test]
async fn a_table_that_is_not_a_replica_is_left_alone() {
    let url = postgres::database("not_a_replica").await;
    let sink = PostgresReplica::connect(&url).await.expect("connect");
    let client = postgres::connect(&url).await;
    client
        .batch_execute(
            "CREATE TABLE ddbstream.orders (id int); INSERT INTO ddbstream.orders VALUES (1);",
        )
        .await
        .expect("someone's table");
    let before = dump(&url);
    let m = refusal(sink.bind(&table("orders")).await);
    assert!(m.contains("exists and is not a ddbstream replica"), "{m}");
    assert!(dump(&url) == before, "the database changed");
    // A changed items table is noticed on the next start.
    let sink = PostgresReplica::builder(&url)
        .items_table("orders_copy")
        .connect()
        .await
        .expect("connect");
    sink.bind(&table("orders")).await.expect("bind");
    client
        .batch_execute("ALTER TABLE ddbstream.orders_copy DROP COLUMN _item")
        .await
        .expect("break it");
    let sink = PostgresReplica::connect(&url).await.expect("connect");
    let m = refusal(sink.bind(&table("orders")).await);
    assert!(m.contains("does not have the layout ddbstream made"), "{m}");
}

#[tokio::test]
async fn several_tables_share_a_schema_and_stay_apart() {
    let url = postgres::database("several_tables").await;
    let orders = PostgresReplica::connect(&url).await.expect("connect");
    orders.bind(&table("orders")).await.expect("bind");
    let users = PostgresReplica::connect(&url).await.expect("connect");
    users.bind(&table("users")).await.expect("bind");
    orders
        .apply(&key("orders"), "s1", vec![put(1, 1, 1)], n(1))
        .await
        .expect("apply");
    users
        .apply(&key("users"), "s1", vec![put(7, 2, 1), put(8, 3, 1)], n(8))
        .await
        .expect("apply");
    assert_eq!(orders.items().await.expect("items"), vec![item(1, 1)]);
    assert_eq!(users.items().await.expect("items").len(), 2);
    let position = |s: Option<dynamodb_stream::checkpoint::StreamCheckpoints>| {
        s.and_then(|s| s.shards.get("s1").cloned())
    };
    assert_eq!(
        position(orders.load(&key("orders")).await.expect("load")),
        Some(ShardCheckpoint::Processed {
            sequence_number: n(1)
        })
    );
    assert_eq!(
        position(users.load(&key("users")).await.expect("load")),
        Some(ShardCheckpoint::Processed {
            sequence_number: n(8)
        })
    );
    // One replica handle holds one table.
    let m = refusal(orders.bind(&table("users")).await);
    assert!(m.contains("holds table \"orders\", not \"users\""), "{m}");
    // One items table holds one DynamoDB table.
    let before = dump(&url);
    let clash = PostgresReplica::builder(&url)
        .items_table("orders")
        .connect()
        .await
        .expect("connect");
    let m = refusal(clash.bind(&table("customers")).await);
    assert!(
        m.contains("is a replica of table \"orders\", not \"customers\""),
        "{m}"
    );
    // And a table keeps the items table it was first given.
    let m = refusal(clash.bind(&table("users")).await);
    assert!(
        m.contains("replicates table \"users\" into \"ddbstream\".\"users\""),
        "{m}"
    );
    assert!(dump(&url) == before, "the database changed");
}

/// Key attributes are typed columns (S text, N numeric, B bytea) and the whole item is jsonb in
/// DynamoDB JSON: a 38-digit number is exact in both, as SQL reads it.
#[tokio::test]
async fn key_columns_are_typed_and_numbers_exact() {
    let url = postgres::database("typed_columns").await;
    let sink = PostgresReplica::connect(&url).await.expect("connect");
    let mut info = table("events");
    info.key_schema = vec![
        KeyAttribute {
            name: "user".into(),
            role: KeyRole::Partition,
            scalar_type: Some(ScalarType::B),
        },
        KeyAttribute {
            name: "at".into(),
            role: KeyRole::Sort,
            scalar_type: Some(ScalarType::N),
        },
    ];
    sink.bind(&info).await.expect("bind");
    let long = "12345678901234567890123456789012345678";
    let row = |at: &str, total: &str| {
        let mut m = HashMap::new();
        m.insert("user".to_owned(), AttributeValue::B(vec![0, 255]));
        m.insert("at".to_owned(), AttributeValue::N(at.to_owned()));
        m.insert("total".to_owned(), AttributeValue::N(total.to_owned()));
        Item::from(m)
    };
    let keys_of = |at: &str| {
        let mut m = HashMap::new();
        m.insert("user".to_owned(), AttributeValue::B(vec![0, 255]));
        m.insert("at".to_owned(), AttributeValue::N(at.to_owned()));
        Item::from(m)
    };
    let change = |i: u64, at: &str, total: &str| SequencedChange {
        sequence_number: n(i),
        change: ItemChange::Put {
            keys: keys_of(at),
            item: row(at, total),
        },
    };
    sink.apply(
        &key("events"),
        "s1",
        vec![
            change(1, long, long),
            change(2, "-2.5", "0.1"),
            change(3, "1", "7"),
        ],
        n(3),
    )
    .await
    .expect("apply");
    // A number key is a number: 1.0 is the item 1, as in DynamoDB.
    assert_eq!(
        sink.get(&keys_of("1.0")).await.expect("get"),
        Some(row("1", "7"))
    );
    let client = postgres::connect(&url).await;
    let rows = client
        .query(
            "SELECT encode(\"user\", 'hex'), at::text, pg_typeof(at)::text,
                    (_item->'total'->>'N')::numeric::text, _sequence_number
             FROM ddbstream.events ORDER BY at",
            &[],
        )
        .await
        .expect("query");
    let got: Vec<(String, String, String, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let seq = |i: u64| Some(n(i).as_str().to_owned());
    assert_eq!(
        got,
        vec![
            (
                "00ff".into(),
                "-2.5".into(),
                "numeric".into(),
                "0.1".into(),
                seq(2)
            ),
            (
                "00ff".into(),
                "1".into(),
                "numeric".into(),
                "7".into(),
                seq(3)
            ),
            (
                "00ff".into(),
                long.into(),
                "numeric".into(),
                long.into(),
                seq(1)
            ),
        ]
    );
}

/// Our backend that sits in the stalling trigger, once it is there.
async fn stalled_backend(client: &tokio_postgres::Client, db: &str) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'ddbstream' AND wait_event = 'PgSleep'",
            &[&db],
        )
        .await
        .expect("pg_stat_activity")
        .map(|r| r.get(0))
}

/// Stall every checkpoint write for `seconds` inside the server.
async fn stall_checkpoint_writes(client: &tokio_postgres::Client, seconds: u32) {
    client
        .batch_execute(&format!(
            "CREATE FUNCTION public.stall() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$;
             CREATE TRIGGER stall BEFORE INSERT OR UPDATE ON ddbstream.ddbstream_checkpoints
                 FOR EACH ROW EXECUTE FUNCTION public.stall();"
        ))
        .await
        .expect("stall trigger");
}

async fn unstall(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "DROP TRIGGER stall ON ddbstream.ddbstream_checkpoints; DROP FUNCTION public.stall();",
        )
        .await
        .expect("drop stall trigger");
}

/// A transaction killed by the server after its rows and before its checkpoint (the backend
/// terminated while the checkpoint write stalls) leaves both as they were; the sink reconnects
/// and the same batch then applies whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_killed_between_rows_and_checkpoint_leaves_both_unchanged() {
    let url = postgres::database("killed_transaction").await;
    let db = postgres::database_name(&url).to_owned();
    let sink = PostgresReplica::connect(&url).await.expect("connect");
    sink.bind(&table("orders")).await.expect("bind");
    sink.apply(&key("orders"), "s1", vec![put(1, 1, 1)], n(1))
        .await
        .expect("apply");
    let client = postgres::connect(&url).await;
    stall_checkpoint_writes(&client, 60).await;
    let batch = vec![put(2, 1, 2), put(3, 2, 1), put(4, 3, 1)];
    let task = {
        let (sink, batch) = (sink.clone(), batch.clone());
        tokio::spawn(async move { sink.apply(&key("orders"), "s1", batch, n(4)).await })
    };
    periodic_check_async(
        || async { stalled_backend(&client, &db).await.is_some() },
        Duration::from_secs(30),
        "the apply stalls in its checkpoint write",
    )
    .await;
    let pid = stalled_backend(&client, &db)
        .await
        .expect("stalled backend");
    // The rows are written: the transaction holds the write lock of the items table.
    let writes_items: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks
                 WHERE pid = $1 AND relation = 'ddbstream.orders'::regclass
                   AND mode = 'RowExclusiveLock' AND granted)",
            &[&pid],
        )
        .await
        .expect("pg_locks")
        .get(0);
    assert!(writes_items, "the stalled transaction has not written rows");
    client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
    let err = task
        .await
        .expect("join")
        .expect_err("the killed transaction fails");
    assert!(
        err.is_retryable(),
        "a killed connection is retryable: {err}"
    );
    unstall(&client).await;
    assert_eq!(sink.items().await.expect("items"), vec![item(1, 1)]);
    let stored = sink
        .load(&key("orders"))
        .await
        .expect("load")
        .expect("some");
    assert_eq!(
        stored.shards.get("s1"),
        Some(&ShardCheckpoint::Processed {
            sequence_number: n(1)
        })
    );
    // The sink opens a new connection and the batch applies whole.
    let applied = sink
        .apply(&key("orders"), "s1", batch, n(4))
        .await
        .expect("apply after the kill");
    assert_eq!(applied, 3);
    assert_eq!(sink.items().await.expect("items").len(), 3);
}

/// The process side of the same crash: the apply future dropped (its task aborted) in the middle
/// of its transaction rolls it back; nothing of it is ever visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_dropped_mid_transaction_is_rolled_back() {
    let url = postgres::database("dropped_apply").await;
    let db = postgres::database_name(&url).to_owned();
    let sink = PostgresReplica::connect(&url).await.expect("connect");
    sink.bind(&table("orders")).await.expect("bind");
    sink.apply(&key("orders"), "s1", vec![put(1, 1, 1)], n(1))
        .await
        .expect("apply");
    let client = postgres::connect(&url).await;
    stall_checkpoint_writes(&client, 1).await;
    let task = {
        let sink = sink.clone();
        tokio::spawn(async move {
            sink.apply(&key("orders"), "s1", vec![put(2, 1, 2), put(3, 2, 1)], n(3))
                .await
        })
    };
    periodic_check_async(
        || async { stalled_backend(&client, &db).await.is_some() },
        Duration::from_secs(30),
        "the apply stalls in its checkpoint write",
    )
    .await;
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());
    // The abandoned transaction ends (rolled back) once the stalled statement returns.
    periodic_check_async(
        || async {
            let busy: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1
                     AND application_name = 'ddbstream' AND state <> 'idle'",
                    &[&db],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            busy == 0
        },
        Duration::from_secs(30),
        "the abandoned transaction ends",
    )
    .await;
    unstall(&client).await;
    assert_eq!(sink.items().await.expect("items"), vec![item(1, 1)]);
    let stored = sink
        .load(&key("orders"))
        .await
        .expect("load")
        .expect("some");
    assert_eq!(
        stored.shards.get("s1"),
        Some(&ShardCheckpoint::Processed {
            sequence_number: n(1)
        })
    );
}
