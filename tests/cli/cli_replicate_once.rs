//! `ddbstream replicate --once` copies a table that is being written to: pre-existing items,
//! concurrent puts, updates and deletes. A second `--once` run resumes without rescanning, and
//! the replica equals a full Scan, item for item.

use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;

use crate::common::{
    assert_same_items, delete, item, keys, put, put_many, read_replica, run_cli, scan_table, stderr,
};
use crate::ddb_local::{clients, create_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_once_copies_a_busy_table() {
    let c = clients("cli_replicate_once");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let initial: Vec<_> = (0..600).map(|id| item(id, 1)).collect();
    put_many(&c, "orders", &initial).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let db_arg = db.to_str().expect("utf-8 path").to_owned();

    // Writes on keys 0..300 and 600..700 only: keys 300..600 keep their first version.
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(17);
            for step in 0..300u64 {
                let id = if rng.bool() {
                    rng.u32(0..300)
                } else {
                    rng.u32(600..700)
                };
                if rng.u8(0..4) == 0 {
                    delete(&c, "orders", &keys(id)).await;
                } else {
                    put(&c, "orders", &item(id, step + 2)).await;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let args = [
        "replicate",
        "--table",
        "orders",
        "--db",
        &db_arg,
        "--once",
        "--segments",
        "3",
        "--scan-page-limit",
        "40",
    ];
    let out = run_cli(&c, &args).await;
    assert!(out.status.success(), "first run failed:\n{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("scanning in 3 segments"), "{log}");
    assert!(log.contains("scan complete"), "{log}");
    assert!(log.contains("caught up"), "{log}");
    // Everything the writer did not touch is there as it was.
    let replica = read_replica(&db);
    for id in 300..600 {
        let key = dynamodb_stream::record::item_key_string(&keys(id));
        assert_eq!(replica.get(&key), Some(&item(id, 1)), "{key}");
    }
    writer.await.expect("writer");

    // A second run finds the scan complete and catches up with the rest of the writes.
    let out = run_cli(&c, &args).await;
    assert!(out.status.success(), "second run failed:\n{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("scan already complete"), "{log}");
    assert!(!log.contains("scanning in"), "rescanned:\n{log}");
    assert_same_items(
        &read_replica(&db),
        &scan_table(&c, "orders").await,
        "replica vs Scan",
    );
}
