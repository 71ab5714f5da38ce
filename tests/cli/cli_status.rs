//! `ddbstream status` against DynamoDB Local: the shard tree after rollovers; where a `tail`
//! checkpoint file and a `replicate` database stand (caught up, behind by how many, trimmed
//! after aging past the retention); bad inputs fail with one line and change nothing.

use std::process::{Output, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use serde_json::{json, Value};

use crate::common::{
    assert_one_line_error, ddbstream, item, put, run_cli, stderr, wait_until, Lines, Running,
};
use crate::ddb_local::{clients, create_table, create_table_with, dilate, rollover, TestClients};

const WAIT: Duration = Duration::from_secs(60);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ddbstream status ARGS... --json`, successful, parsed.
async fn status_json(c: &TestClients, args: &[&str]) -> Value {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = run_cli(c, &all).await;
    assert!(out.status.success(), "status failed:\n{}", stderr(&out));
    serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(&out)))
}

/// `ddbstream status ARGS...`, successful: the human output.
async fn status_text(c: &TestClients, args: &[&str]) -> String {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    let out = run_cli(c, &all).await;
    assert!(out.status.success(), "status failed:\n{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    stdout(&out)
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn shards(doc: &Value) -> &Vec<Value> {
    doc["shards"].as_array().expect("shards array")
}

/// The line of the human table that shows `shard_id`, and its indentation.
fn shard_line<'a>(text: &'a str, shard_id: &str) -> (&'a str, usize) {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(shard_id))
        .unwrap_or_else(|| panic!("{shard_id} not shown:\n{text}"));
    (line, line.len() - line.trim_start().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_lineage_tree() {
    let c = clients("cli_status_tree");
    let arn = create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    put(&c, "orders", &item(1, 1)).await;
    rollover(&c).await;
    put(&c, "orders", &item(2, 1)).await;
    rollover(&c).await;
    put(&c, "orders", &item(3, 1)).await;

    let doc = status_json(&c, &["--table", "orders"]).await;
    eprintln!("{doc:#}");
    assert_eq!(doc["streamArn"], json!(arn));
    assert_eq!(doc["tableName"], json!("orders"));
    assert_eq!(doc["status"], json!("ENABLED"));
    assert_eq!(doc["store"], Value::Null);
    assert_eq!(doc["vanished"], json!([]));
    let list = shards(&doc);
    assert_eq!(list.len(), 3, "{doc:#}");
    // Tree order: root, child, grandchild.
    assert_eq!(list[0]["parentShardId"], Value::Null, "{doc:#}");
    assert_eq!(list[1]["parentShardId"], list[0]["shardId"], "{doc:#}");
    assert_eq!(list[2]["parentShardId"], list[1]["shardId"], "{doc:#}");
    for (depth, shard) in list.iter().enumerate() {
        assert_eq!(shard["depth"], json!(depth), "{doc:#}");
        let open = depth == 2;
        assert_eq!(shard["open"], json!(open), "{doc:#}");
        assert!(shard["startingSequenceNumber"].is_string(), "{doc:#}");
        assert_eq!(shard["endingSequenceNumber"].is_string(), !open, "{doc:#}");
        // No store: no positions.
        assert_eq!(shard["checkpoint"], Value::Null);
        assert_eq!(shard["position"], Value::Null);
    }
    let ids: Vec<&str> = list
        .iter()
        .map(|s| s["shardId"].as_str().expect("shardId"))
        .collect();

    // The same as a table, children indented under their parents; by stream ARN too.
    let text = status_text(&c, &["--stream-arn", &arn]).await;
    eprintln!("{text}");
    assert!(text.contains("table:   orders"), "{text}");
    let header = text
        .lines()
        .find(|l| l.starts_with("SHARD"))
        .unwrap_or_else(|| panic!("no header:\n{text}"));
    assert!(!header.contains("CHECKPOINT"), "{text}");
    let (root, root_indent) = shard_line(&text, ids[0]);
    let (child, child_indent) = shard_line(&text, ids[1]);
    let (grandchild, grandchild_indent) = shard_line(&text, ids[2]);
    assert!(
        root_indent < child_indent && child_indent < grandchild_indent,
        "{text}"
    );
    assert!(
        root.contains("closed") && child.contains("closed"),
        "{text}"
    );
    assert!(grandchild.contains("open"), "{text}");
    // Columns line up: every shard's state starts where the header's STATE does.
    let state_col = header.find("STATE").expect("STATE column");
    for line in [root, child, grandchild] {
        let at = &line[state_col..];
        assert!(
            at.starts_with("closed") || at.starts_with("open"),
            "misaligned:\n{text}"
        );
    }
    assert!(text.contains("3 shards, 1 open"), "{text}");

    // Positions that name shards no longer listed: an ended one is fine, another is a gap.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cp.json");
    let stored = json!({
        "version": 1,
        "streams": [{
            "application": "mine",
            "stream_arn": arn,
            "started_at_ms": 1_700_000_000_000u64,
            "shards": {
                ids[0]: { "state": "ended" },
                "shardId-00000001700000000000-0000aaaa": { "state": "ended" },
                "shardId-00000001700000000000-0000bbbb": {
                    "state": "processed",
                    "sequence_number": "000000000000000000042"
                }
            }
        }]
    });
    std::fs::write(&file, stored.to_string()).expect("write");
    let args = [
        "--table",
        "orders",
        "--checkpoint",
        file.to_str().expect("path"),
        "--application",
        "mine",
    ];
    let doc = status_json(&c, &args).await;
    eprintln!("{doc:#}");
    assert_eq!(
        doc["vanished"],
        json!([
            { "shardId": "shardId-00000001700000000000-0000aaaa",
              "checkpoint": { "state": "ended" }, "gap": false },
            { "shardId": "shardId-00000001700000000000-0000bbbb",
              "checkpoint": { "state": "processed", "sequenceNumber": "000000000000000000042" },
              "gap": true },
        ]),
        "{doc:#}"
    );
    let list = shards(&doc);
    assert_eq!(list[0]["position"], json!("ended"), "{doc:#}");
    // Never read by this application: each still holds its one record.
    for shard in &list[1..] {
        assert_eq!(shard["checkpoint"], json!({ "state": "none" }), "{doc:#}");
        assert_eq!(shard["position"], json!("behind"), "{doc:#}");
        assert_eq!(shard["unreadOnFirstPage"], json!(1), "{doc:#}");
    }
    let text = status_text(&c, &args).await;
    eprintln!("{text}");
    assert!(text.contains("stored shards no longer listed:"), "{text}");
    let gone = text
        .lines()
        .find(|l| l.contains("0000bbbb"))
        .expect("the vanished shard");
    assert!(gone.contains("GAP"), "{text}");
    assert!(text.contains("GAPS in 1 shard(s)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_compares_a_tail_checkpoint_file() {
    let c = clients("cli_status_tail");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("tail.json");
    let checkpoint_arg = checkpoint.to_str().expect("utf-8 path");

    // tail reads three records, then SIGTERM: its final checkpoint names the third.
    let mut cmd = ddbstream(&c);
    cmd.args([
        "tail",
        "--table",
        "orders",
        "--from",
        "trim-horizon",
        "--checkpoint",
        checkpoint_arg,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut tail = Running::spawn(cmd);
    let out = Lines::new(tail.child.stdout.take().expect("stdout"));
    let err = Lines::new(tail.child.stderr.take().expect("stderr"));
    for id in 1..=3 {
        put(&c, "orders", &item(id, 1)).await;
    }
    let mut last = Value::Null;
    for _ in 0..3 {
        let line = out.next(WAIT).await;
        last = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    tail.terminate();
    let exit = tail.wait(WAIT).await;
    assert!(exit.success(), "tail: {exit:?}\n{}", err.drain().join("\n"));
    let shard_id = last["shardId"].as_str().expect("shardId").to_owned();
    let before = std::fs::read(&checkpoint).expect("checkpoint file");

    // Caught up.
    let args = ["--table", "orders", "--checkpoint", checkpoint_arg];
    let doc = status_json(&c, &args).await;
    eprintln!("{doc:#}");
    assert_eq!(doc["store"]["kind"], json!("checkpoint_file"), "{doc:#}");
    assert_eq!(doc["store"]["application"], json!("ddbstream-tail"));
    assert_eq!(doc["store"]["found"], json!(true));
    let list = shards(&doc);
    assert_eq!(list.len(), 1, "{doc:#}");
    assert_eq!(list[0]["shardId"], json!(shard_id));
    assert_eq!(
        list[0]["checkpoint"],
        json!({ "state": "processed", "sequenceNumber": last["sequenceNumber"] }),
        "{doc:#}"
    );
    assert_eq!(list[0]["position"], json!("caught_up"), "{doc:#}");
    assert_eq!(list[0]["unreadOnFirstPage"], json!(0), "{doc:#}");
    let text = status_text(&c, &args).await;
    eprintln!("{text}");
    let (line, _) = shard_line(&text, &shard_id);
    assert!(line.contains("caught up"), "{text}");
    assert!(
        line.contains(&format!(
            "processed {}",
            last["sequenceNumber"].as_str().unwrap()
        )),
        "{text}"
    );

    // Four more changes: behind by exactly those, the oldest a few moments old (DynamoDB Local
    // truncates creation times to the minute).
    for id in 4..=7 {
        put(&c, "orders", &item(id, 1)).await;
    }
    let doc = status_json(&c, &args).await;
    eprintln!("{doc:#}");
    let shard = &shards(&doc)[0];
    assert_eq!(shard["position"], json!("behind"), "{doc:#}");
    assert_eq!(shard["unreadOnFirstPage"], json!(4), "{doc:#}");
    assert_eq!(shard["firstPageFull"], json!(false), "{doc:#}");
    let age = shard["oldestUnreadAgeSeconds"].as_u64().expect("an age");
    assert!(age < 600, "{doc:#}");
    let text = status_text(&c, &args).await;
    eprintln!("{text}");
    assert!(
        shard_line(&text, &shard_id)
            .0
            .contains("behind: 4 unread, oldest "),
        "{text}"
    );

    // 21 hours later the records are still there, but the oldest unread one is trimmed within
    // 3 hours. (DynamoDB Local also rolls the aged shard over: a child appears.)
    dilate(&c, Duration::from_secs(21 * 3600)).await;
    let doc = status_json(&c, &args).await;
    eprintln!("{doc:#}");
    let aged = shards(&doc)
        .iter()
        .find(|s| s["shardId"] == json!(shard_id))
        .unwrap_or_else(|| panic!("the aged shard is still listed: {doc:#}"));
    assert_eq!(aged["position"], json!("gap_risk"), "{doc:#}");
    assert_eq!(aged["unreadOnFirstPage"], json!(4), "{doc:#}");
    let age = aged["oldestUnreadAgeSeconds"].as_u64().expect("an age");
    assert!((21 * 3600..22 * 3600).contains(&age), "{doc:#}");
    let text = status_text(&c, &args).await;
    eprintln!("{text}");
    assert!(
        shard_line(&text, &shard_id)
            .0
            .contains("GAP RISK: 4 unread, oldest 21h"),
        "{text}"
    );

    // Past the 24-hour retention: the unread records are gone.
    dilate(&c, Duration::from_secs(4 * 3600)).await;
    let doc = status_json(&c, &args).await;
    eprintln!("{doc:#}");
    let list = shards(&doc);
    let aged = list
        .iter()
        .find(|s| s["shardId"] == json!(shard_id))
        .unwrap_or_else(|| panic!("the aged shard is still listed: {doc:#}"));
    assert_eq!(aged["position"], json!("trimmed"), "{doc:#}");
    assert_eq!(aged["open"], json!(false), "rolled over: {doc:#}");
    assert_eq!(aged["unreadOnFirstPage"], Value::Null, "{doc:#}");
    // Its descendants (the 4 more hours rolled the first child over too) were never read by
    // the consumer: read from their start, they hold nothing.
    assert!(list.len() >= 2, "{doc:#}");
    for other in list.iter().filter(|s| s["shardId"] != json!(shard_id)) {
        assert_eq!(other["checkpoint"], json!({ "state": "none" }), "{doc:#}");
        let expected = if other["open"] == json!(true) {
            "caught_up"
        } else {
            "ended"
        };
        assert_eq!(other["position"], json!(expected), "{doc:#}");
    }
    let text = status_text(&c, &args).await;
    eprintln!("{text}");
    assert!(shard_line(&text, &shard_id).0.contains("TRIMMED"), "{text}");
    assert!(text.contains("GAPS in 1 shard(s)"), "{text}");

    // status only reads.
    assert_eq!(
        std::fs::read(&checkpoint).expect("read"),
        before,
        "status changed the checkpoint file"
    );
    assert_eq!(
        files_in(dir.path()),
        ["tail.json"],
        "status left files behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_a_latest_bookmark() {
    let c = clients("cli_status_latest");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("tail.json");
    let checkpoint_arg = checkpoint.to_str().expect("utf-8 path");

    // tail's first start at LATEST bookmarks the shard; stopped before any record.
    let mut cmd = ddbstream(&c);
    cmd.args(["tail", "--table", "orders", "--checkpoint", checkpoint_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let tail = Running::spawn(cmd);
    wait_until("the LATEST bookmark", WAIT, || async {
        std::fs::read_to_string(&checkpoint).is_ok_and(|t| t.contains("\"latest\""))
    })
    .await;
    let mut tail = tail;
    tail.terminate();
    assert!(tail.wait(WAIT).await.success());

    let args = ["--table", "orders", "--checkpoint", checkpoint_arg];
    let doc = status_json(&c, &args).await;
    eprintln!("{doc:#}");
    let shard = &shards(&doc)[0];
    assert_eq!(shard["checkpoint"]["state"], json!("latest"), "{doc:#}");
    assert!(shard["checkpoint"]["since"].is_string(), "{doc:#}");
    assert_eq!(shard["position"], json!("caught_up"), "{doc:#}");

    // Written after the bookmark: read from the shard's start, they are what is unread.
    put(&c, "orders", &item(1, 1)).await;
    put(&c, "orders", &item(2, 1)).await;
    let doc = status_json(&c, &args).await;
    let shard = &shards(&doc)[0];
    assert_eq!(shard["position"], json!("behind"), "{doc:#}");
    assert_eq!(shard["unreadOnFirstPage"], json!(2), "{doc:#}");
    let text = status_text(&c, &args).await;
    eprintln!("{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("shardId-"))
        .expect("a shard line");
    assert!(line.contains("latest bookmark 20"), "{text}");
    assert!(line.contains("behind: 2 unread"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_a_replica_database() {
    let c = clients("cli_status_replica");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    for id in 1..=5 {
        put(&c, "orders", &item(id, 1)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let db_arg = db.to_str().expect("utf-8 path");
    let replicate = ["replicate", "--table", "orders", "--db", db_arg, "--once"];
    let out = run_cli(&c, &replicate).await;
    assert!(out.status.success(), "replicate:\n{}", stderr(&out));

    // Bookmarked (or read) past everything written before: caught up.
    let args = ["--table", "orders", "--db", db_arg];
    let doc = status_json(&c, &args).await;
    eprintln!("{doc:#}");
    assert_eq!(doc["store"]["kind"], json!("replica_database"), "{doc:#}");
    assert_eq!(doc["store"]["application"], json!("replicate"));
    assert_eq!(doc["store"]["found"], json!(true));
    let shard = &shards(&doc)[0];
    let state = shard["checkpoint"]["state"].as_str().expect("state");
    assert!(["latest", "processed"].contains(&state), "{doc:#}");
    assert_eq!(shard["position"], json!("caught_up"), "{doc:#}");
    let text = status_text(&c, &args).await;
    eprintln!("{text}");
    assert!(
        text.contains("(replica database), application \"replicate\""),
        "{text}"
    );

    // Three changes applied by a second run, two more waiting.
    for id in 6..=8 {
        put(&c, "orders", &item(id, 1)).await;
    }
    let out = run_cli(&c, &replicate).await;
    assert!(out.status.success(), "replicate:\n{}", stderr(&out));
    for id in 9..=10 {
        put(&c, "orders", &item(id, 1)).await;
    }
    let before = std::fs::read(&db).expect("read");
    let files_before = files_in(dir.path());
    let doc = status_json(&c, &args).await;
    eprintln!("{doc:#}");
    let shard = &shards(&doc)[0];
    assert_eq!(shard["checkpoint"]["state"], json!("processed"), "{doc:#}");
    assert_eq!(shard["position"], json!("behind"), "{doc:#}");
    assert_eq!(shard["unreadOnFirstPage"], json!(2), "{doc:#}");
    // Opened read only: not a byte changes.
    assert_eq!(
        std::fs::read(&db).expect("read"),
        before,
        "status changed the database"
    );
    assert_eq!(
        files_in(dir.path()),
        files_before,
        "status left files behind"
    );

    // While a replicator follows the stream (and holds the database open), status reads
    // beside it.
    let mut cmd = ddbstream(&c);
    cmd.args(["replicate", "--table", "orders", "--db", db_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut follower = Running::spawn(cmd);
    let log = Lines::new(follower.child.stderr.take().expect("stderr"));
    loop {
        if log.next(WAIT).await.contains("caught up") {
            break;
        }
    }
    put(&c, "orders", &item(11, 1)).await;
    wait_until("the follower applied everything", WAIT, || async {
        let doc = status_json(&c, &args).await;
        shards(&doc)[0]["position"] == json!("caught_up")
    })
    .await;
    follower.terminate();
    assert!(follower.wait(WAIT).await.success());

    // Another application has nothing there: every shard from its start, and a note.
    let doc = status_json(
        &c,
        &[
            "--table",
            "orders",
            "--db",
            db_arg,
            "--application",
            "other",
        ],
    )
    .await;
    assert_eq!(doc["store"]["found"], json!(false), "{doc:#}");
    assert_eq!(shards(&doc)[0]["checkpoint"], json!({ "state": "none" }));
    assert_eq!(shards(&doc)[0]["unreadOnFirstPage"], json!(11), "{doc:#}");
    assert!(
        doc["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("no positions of application \"other\"")),
        "{doc:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_refuses_bad_inputs_and_changes_nothing() {
    let c = clients("cli_status_bad");
    let arn = create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    create_table_with(&c, "nostream", None, false).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let out = run_cli(&c, &["status", "--table", "nope"]).await;
    assert_one_line_error(&out, "table \"nope\" not found");
    let out = run_cli(&c, &["status", "--table", "nostream"]).await;
    assert_one_line_error(&out, "table \"nostream\" has no stream enabled");
    let out = run_cli(&c, &["status", "--stream-arn", "orders"]).await;
    assert_one_line_error(&out, "is not a DynamoDB stream ARN");
    let gone = arn.replace("table/orders/", "table/gone/");
    let out = run_cli(&c, &["status", "--stream-arn", &gone]).await;
    assert_one_line_error(&out, &format!("stream {gone} not found"));

    // A corrupt checkpoint file: refused, byte for byte as it was.
    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, b"{\"version\":1,\"streams\":[{").expect("write");
    let corrupt_arg = corrupt.to_str().expect("path");
    let out = run_cli(
        &c,
        &["status", "--table", "orders", "--checkpoint", corrupt_arg],
    )
    .await;
    assert_one_line_error(&out, "is not valid JSON");
    assert_eq!(
        std::fs::read(&corrupt).expect("read"),
        b"{\"version\":1,\"streams\":[{"
    );

    // A missing one is not created.
    let missing = dir.path().join("missing.json");
    let out = run_cli(
        &c,
        &[
            "status",
            "--table",
            "orders",
            "--checkpoint",
            missing.to_str().expect("path"),
        ],
    )
    .await;
    assert_one_line_error(&out, "does not exist");
    assert!(!missing.exists());
    let missing = dir.path().join("missing.sqlite");
    let out = run_cli(
        &c,
        &[
            "status",
            "--table",
            "orders",
            "--db",
            missing.to_str().expect("path"),
        ],
    )
    .await;
    assert_one_line_error(&out, "does not exist");
    assert!(!missing.exists());

    // Files that are not replicas stay as they were.
    let garbage = dir.path().join("garbage.sqlite");
    let bytes = b"not a database\n".repeat(100);
    std::fs::write(&garbage, &bytes).expect("write");
    let out = run_cli(
        &c,
        &[
            "status",
            "--table",
            "orders",
            "--db",
            garbage.to_str().expect("path"),
        ],
    )
    .await;
    assert_one_line_error(&out, "is not a readable SQLite database");
    assert_eq!(std::fs::read(&garbage).expect("read"), bytes);
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
            "status",
            "--table",
            "orders",
            "--db",
            foreign.to_str().expect("path"),
        ],
    )
    .await;
    assert_one_line_error(&out, "is not a ddbstream replica database");
    assert_eq!(std::fs::read(&foreign).expect("read"), before);

    // Usage errors are clap's: exit code 2.
    for args in [
        &["status"][..],
        &["status", "--table", "orders", "--application", "x"],
        &[
            "status",
            "--table",
            "orders",
            "--checkpoint",
            "a",
            "--db",
            "b",
        ],
    ] {
        let out = run_cli(&c, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}
