//! Issue 17, point 8: the smaller things. Errors about the caller's own input carry no
//! "invalid argument:" prefix in any command; the first replicate run describes its start in
//! one vocabulary (a bookmark, then reading from it) instead of "at LATEST" then
//! "(TRIM_HORIZON)"; tail says where shards start in words. (The unknown stream ARN said once:
//! `cli_setup_errors.rs`; the failure sink's dates: `sink_failure_file.rs`; `key_string`:
//! `cli_readme_local.rs` and `record::tests::key_strings_are_stable`; the README's handler
//! example compiles with `deny(unused)` as a doctest.)

use aws_sdk_dynamodb::types::StreamViewType;

use crate::common::{assert_one_line_error, item, put, run_cli, stderr};
use crate::ddb_local::{clients, create_table, create_table_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_invalid_argument_prefixes() {
    let c = clients("cli_prefixes");
    create_table(&c, "keysonly", StreamViewType::KeysOnly).await;
    create_table_with(&c, "nostream", None, false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("r.sqlite");
    let db = db.to_str().expect("utf-8");
    for (args, expected) in [
        (
            vec!["tail", "--stream-arn", "bad"],
            "\"bad\" is not a DynamoDB stream ARN",
        ),
        (
            vec!["status", "--stream-arn", "bad"],
            "\"bad\" is not a DynamoDB stream ARN",
        ),
        (vec!["tail", "--table", "nope"], "table \"nope\" not found"),
        (
            vec!["status", "--table", "nope"],
            "table \"nope\" not found",
        ),
        (
            vec!["replicate", "--table", "nope", "--db", db, "--once"],
            "table \"nope\" not found",
        ),
        (vec!["tail", "--table", "nostream"], "has no stream enabled"),
        (
            vec!["replicate", "--table", "keysonly", "--db", db, "--once"],
            "replicate needs NEW_IMAGE or NEW_AND_OLD_IMAGES",
        ),
    ] {
        let out = run_cli(&c, &args).await;
        assert_one_line_error(&out, expected);
        assert!(
            !stderr(&out).contains("invalid argument"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_replicate_run_says_bookmark_throughout() {
    let c = clients("cli_first_run_words");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    put(&c, "orders", &item(1, 1)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let db = db.to_str().expect("utf-8");
    let out = run_cli(
        &c,
        &["replicate", "--table", "orders", "--db", db, "--once"],
    )
    .await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("ddbstream: first run: bookmarked the stream (1 shard) at 20"),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("ddbstream: reading shard ")
                && l.contains(
                    " from the bookmark (TRIM_HORIZON, skipping changes made before it)"
                )),
        "{log}"
    );
    assert!(!log.contains("LATEST"), "{log}");

    // A later run reads after its stored positions, and says so.
    put(&c, "orders", &item(2, 1)).await;
    let out = run_cli(
        &c,
        &["replicate", "--table", "orders", "--db", db, "--once"],
    )
    .await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("bookmark"), "{log}");
    assert!(
        log.contains("after its stored position (AFTER_SEQUENCE_NUMBER)"),
        "{log}"
    );

    // tail: where shards without a stored position start, and where this one did.
    let out = run_cli(&c, &["tail", "--table", "orders", "--once"]).await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("shards without a stored position start at latest: changes made from now on"),
        "{log}"
    );
    assert!(log.contains("from now on (LATEST)"), "{log}");
}
