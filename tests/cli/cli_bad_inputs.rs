//! Bad input to `ddbstream`: exit code 1, one line on stderr saying what is wrong, and nothing
//! in an existing database file changes.

use aws_sdk_dynamodb::types::StreamViewType;

use crate::common::{assert_one_line_error, item, put, read_replica, run_cli};
use crate::ddb_local::{clients, create_table, create_table_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tables_and_databases_are_refused() {
    let c = clients("cli_bad_inputs");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    create_table(&c, "users", StreamViewType::NewImage).await;
    create_table(&c, "keysonly", StreamViewType::KeysOnly).await;
    create_table(&c, "oldonly", StreamViewType::OldImage).await;
    create_table_with(&c, "nostream", None, false).await;
    put(&c, "orders", &item(1, 1)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let db_arg = db.to_str().expect("utf-8 path");

    // Unknown table, table without stream, streams without new images: refused before the
    // database file is even created.
    for (table, expected) in [
        ("nope", "table \"nope\" not found"),
        ("nostream", "table \"nostream\" has no stream enabled"),
        (
            "keysonly",
            "replicate needs NEW_IMAGE or NEW_AND_OLD_IMAGES, table keysonly streams KEYS_ONLY",
        ),
        (
            "oldonly",
            "replicate needs NEW_IMAGE or NEW_AND_OLD_IMAGES, table oldonly streams OLD_IMAGE",
        ),
    ] {
        let out = run_cli(
            &c,
            &["replicate", "--table", table, "--db", db_arg, "--once"],
        )
        .await;
        assert_one_line_error(&out, expected);
        assert!(!db.exists(), "{table}: a database file was created");
    }
    let out = run_cli(&c, &["tail", "--table", "nope"]).await;
    assert_one_line_error(&out, "table \"nope\" not found");

    // A good replica of `orders` ...
    let out = run_cli(
        &c,
        &["replicate", "--table", "orders", "--db", db_arg, "--once"],
    )
    .await;
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let before = std::fs::read(&db).expect("read");
    assert_eq!(read_replica(&db).len(), 1);
    // ... is not taken over by another table, and keeps every byte.
    let out = run_cli(
        &c,
        &["replicate", "--table", "users", "--db", db_arg, "--once"],
    )
    .await;
    assert_one_line_error(&out, "is a replica of table \"orders\", not \"users\"");
    assert_eq!(
        std::fs::read(&db).expect("read"),
        before,
        "the database changed"
    );
    assert_eq!(read_replica(&db).len(), 1);

    // A file that is not a database stays as it was.
    let garbage = dir.path().join("garbage.sqlite");
    let bytes = b"this is not a database, but it is somebody's file\n".repeat(100);
    std::fs::write(&garbage, &bytes).expect("write");
    let out = run_cli(
        &c,
        &[
            "replicate",
            "--table",
            "orders",
            "--db",
            garbage.to_str().expect("path"),
            "--once",
        ],
    )
    .await;
    assert_one_line_error(&out, "is not a readable SQLite database");
    assert_eq!(std::fs::read(&garbage).expect("read"), bytes);

    // Another application's SQLite database too.
    let foreign = dir.path().join("foreign.sqlite");
    {
        let conn = rusqlite::Connection::open(&foreign).expect("create");
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
            .expect("fill");
    }
    let before = std::fs::read(&foreign).expect("read");
    let out = run_cli(
        &c,
        &[
            "replicate",
            "--table",
            "orders",
            "--db",
            foreign.to_str().expect("path"),
            "--once",
        ],
    )
    .await;
    assert_one_line_error(&out, "is a SQLite database of another application");
    assert_eq!(std::fs::read(&foreign).expect("read"), before);

    // Usage errors are clap's: exit code 2.
    let out = run_cli(&c, &["replicate", "--table", "orders"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        crate::common::stderr(&out)
    );
}
