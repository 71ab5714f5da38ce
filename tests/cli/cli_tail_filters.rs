//! `ddbstream tail --filter` / `--filter-file` against DynamoDB Local: only records matching a
//! pattern are printed, several patterns are ORed, the records left out still move the
//! checkpoint (a later run without filters prints nothing of them), and a pattern that cannot
//! be used ends the command at once with one sentence and exit code 1.

use std::process::Output;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;

use crate::common::{
    assert_one_line_error, bare_ddbstream, delete, item, keys, once_printed, put, run_cli,
    run_within,
};
use crate::ddb_local::{clients, create_table, TestClients};

/// (eventName, key, version or "-") of each record a clean once-run printed.
fn printed(out: &Output) -> Vec<(String, String, String)> {
    once_printed(out)
        .iter()
        .map(|r| {
            (
                r["eventName"].as_str().expect("eventName").to_owned(),
                r["keys"]["pk"].as_str().expect("pk").to_owned(),
                r["newImage"]["v"]
                    .as_i64()
                    .map_or_else(|| "-".to_owned(), |v| v.to_string()),
            )
        })
        .collect()
}

async fn once(c: &TestClients, extra: &[&str]) -> Vec<(String, String, String)> {
    let mut args = crate::common::TAIL_ORDERS_ONCE.to_vec();
    args.extend_from_slice(extra);
    let out = tokio::time::timeout(Duration::from_secs(120), run_cli(c, &args))
        .await
        .expect("a once-run ends");
    printed(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_once_prints_only_records_matching_a_filter() {
    let c = clients("cli_tail_filters");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let key = |id: u32| format!("item-{id:05}");
    for id in 0..12 {
        put(&c, "orders", &item(id, 1)).await;
    }
    for id in 0..6 {
        put(&c, "orders", &item(id, 2)).await;
    }
    delete(&c, "orders", &keys(9)).await;
    // Records nobody asked for come last: the checkpoint must pass them too.
    for id in 20..25 {
        put(&c, "orders", &item(id, 1)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("tail.json");
    let checkpoint = checkpoint.to_str().expect("utf-8 path");

    // Modifications to version 2 or more (a number compared as a number), or any removal.
    let modified = r#"{"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"v": {"N": [{"numeric": [">=", 2]}]}}}}"#;
    let removed = r#"{"eventName": ["REMOVE"]}"#;
    let got = once(
        &c,
        &[
            "--filter",
            modified,
            "--filter",
            removed,
            "--checkpoint",
            checkpoint,
        ],
    )
    .await;
    let mut expected: Vec<(String, String, String)> = (0..6)
        .map(|id| ("MODIFY".to_owned(), key(id), "2".to_owned()))
        .collect();
    expected.push(("REMOVE".to_owned(), key(9), "-".to_owned()));
    assert_eq!(got, expected);

    // The same stream from its start, through Lambda's FilterCriteria in a file: items whose
    // nested map says they are even (version 2).
    let file = dir.path().join("filters.json");
    std::fs::write(
        &file,
        r#"{"Filters": [{"Pattern": "{\"dynamodb\": {\"NewImage\": {\"meta\": {\"M\": {\"even\": {\"BOOL\": [true]}}}}}}"}]}"#,
    )
    .expect("write");
    let got = once(&c, &["--filter-file", file.to_str().expect("utf-8 path")]).await;
    assert_eq!(got, expected[..6].to_vec());

    // Without filters, the first checkpoint's run has nothing left: the records it left out
    // were passed, not kept for later.
    assert_eq!(once(&c, &["--checkpoint", checkpoint]).await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_filter_is_one_sentence_and_exit_code_1() {
    // No AWS set-up at all: the pattern is refused before it is looked at.
    let home = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("filters.json");
    std::fs::write(
        &file,
        r#"[{"eventName": ["INSERT"]}, {"eventName": "INSERT"}]"#,
    )
    .expect("write");
    let file = file.to_str().expect("utf-8 path").to_owned();
    let cases: [(Vec<&str>, &str); 5] = [
        (
            vec![
                "--filter",
                r#"{"dynamodb": {"NewImage": {"total": {"N": [{"numeric": [">", 0, "<="]}]}}}}"#,
            ],
            r#"--filter: "dynamodb.NewImage.total.N": "numeric" needs pairs of an operator"#,
        ),
        (
            vec![
                "--filter",
                r#"{"eventName": ["INSERT"]}"#,
                "--filter",
                r#"{"region": ["x"]}"#,
            ],
            r#"--filter #2: "region": unknown field "region""#,
        ),
        (
            vec![
                "--filter",
                r#"{"dynamodb": {"NewImage": {"status": ["SHIPPED"]}}}"#,
            ],
            r#""dynamodb.NewImage.status": give the attribute's DynamoDB type"#,
        ),
        (vec!["--filter", "{"], "--filter: the pattern is not JSON"),
        (
            vec!["--filter-file", &file],
            r#"filter 2: "eventName": expected an array of values"#,
        ),
    ];
    for (extra, expected) in cases {
        let mut cmd = bare_ddbstream(home.path(), &[]);
        cmd.args(["tail", "--table", "orders"]).args(&extra);
        let out = run_within(cmd, Duration::from_secs(30)).await;
        assert_one_line_error(&out, expected);
        assert!(out.stdout.is_empty());
    }
}
