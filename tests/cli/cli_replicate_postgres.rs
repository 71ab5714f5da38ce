//! `ddbstream replicate --to postgres://…` against DynamoDB Local and a real PostgreSQL server
//! (Debian's `postgresql`, started by tests/support/postgres.rs): the first run scans and
//! catches up, a second run after writes resumes without rescanning, and the copy equals a
//! Scan of the table, item for item. A destination that is neither a file nor a PostgreSQL URL
//! is refused in one sentence before anything is read.

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::replicate::{PostgresReplica, ReplicaSink, TableSource};

use crate::common::{
    assert_one_line_error, assert_same_items, by_key, delete, item, keys, put, put_many, run_cli,
    scan_table, stderr,
};
use crate::ddb_local::{clients, create_table};
use crate::postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_into_postgres_and_resume_without_rescanning() {
    let c = clients("cli_replicate_pg");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let initial: Vec<_> = (0..150).map(|id| item(id, 1)).collect();
    put_many(&c, "orders", &initial).await;
    let url = postgres::database("cli_replicate_pg").await;
    let args = ["replicate", "--table", "orders", "--to", &url, "--once"];

    let out = run_cli(&c, &args).await;
    let log = stderr(&out);
    assert!(out.status.success(), "first run failed:\n{log}");
    assert!(log.contains("scanning"), "{log}");

    for id in 0..20 {
        put(&c, "orders", &item(id, 2)).await;
    }
    delete(&c, "orders", &keys(100)).await;
    let out = run_cli(&c, &args).await;
    let log = stderr(&out);
    assert!(out.status.success(), "second run failed:\n{log}");
    assert!(
        !log.contains("scanning"),
        "the second run scanned again:\n{log}"
    );

    let sink = PostgresReplica::connect(&url).await.expect("connect");
    let info = c.dynamodb.table_info("orders").await.expect("table info");
    sink.bind(&info).await.expect("bind");
    let copy = by_key(sink.items().await.expect("items"));
    assert_same_items(&copy, &scan_table(&c, "orders").await, "postgres copy");
    assert_eq!(copy.len(), 149);

    // `status` reads the replica's positions — caught up now, behind after two more writes —
    // and changes nothing in the database.
    let before = postgres::server().dump(postgres::database_name(&url));
    let status = ["status", "--table", "orders", "--db", &url, "--json"];
    let doc = json_of(&run_cli(&c, &status).await);
    assert_eq!(doc["store"]["kind"], "replica_database", "{doc:#}");
    assert_eq!(doc["store"]["application"], "replicate", "{doc:#}");
    assert_eq!(doc["store"]["found"], true, "{doc:#}");
    assert_eq!(doc["shards"][0]["position"], "caught_up", "{doc:#}");
    for id in 200..202 {
        put(&c, "orders", &item(id, 1)).await;
    }
    let doc = json_of(&run_cli(&c, &status).await);
    assert_eq!(
        doc["shards"][0]["checkpoint"]["state"], "processed",
        "{doc:#}"
    );
    assert_eq!(doc["shards"][0]["position"], "behind", "{doc:#}");
    assert_eq!(doc["shards"][0]["unreadOnFirstPage"], 2, "{doc:#}");

    // Another schema holds no replica: one sentence, and nothing is created.
    let other = [
        "status",
        "--table",
        "orders",
        "--db",
        &url,
        "--pg-schema",
        "elsewhere",
    ];
    let out = run_cli(&c, &other).await;
    assert_one_line_error(&out, "schema \"elsewhere\"");
    assert_one_line_error(&out, "holds no ddbstream replica");
    assert_eq!(
        postgres::server().dump(postgres::database_name(&url)),
        before,
        "status changed the database"
    );
}

/// A successful command's standard output as JSON.
fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "failed:\n{}", stderr(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_no_database_is_refused() {
    let c = clients("cli_replicate_bad_to");
    let out = run_cli(
        &c,
        &[
            "replicate",
            "--table",
            "orders",
            "--to",
            "mysql://db/copies",
        ],
    )
    .await;
    assert_one_line_error(&out, "is neither a SQLite file nor a postgres:// URL");
}
