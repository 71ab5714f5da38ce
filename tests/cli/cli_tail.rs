//! `ddbstream tail` against DynamoDB Local: inserts, modifications and removals come out as
//! JSON lines in order; SIGTERM stops it cleanly with a final checkpoint, and a restart with
//! the same checkpoint file resumes right after the last printed record.

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use serde_json::{json, Value};

use crate::common::{ddbstream, delete, item, keys, put, Lines, Running};
use crate::ddb_local::{clients, create_table};

const WAIT: Duration = Duration::from_secs(60);

fn start_tail(c: &crate::ddb_local::TestClients, args: &[&str]) -> (Running, Lines, Lines) {
    let mut cmd = ddbstream(c);
    cmd.arg("tail")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut running = Running::spawn(cmd);
    let out = Lines::new(running.child.stdout.take().expect("stdout"));
    let err = Lines::new(running.child.stderr.take().expect("stderr"));
    (running, out, err)
}

async fn next_record(lines: &Lines) -> Value {
    let line = lines.next(WAIT).await;
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_changes_and_checkpoints_on_sigterm() {
    let c = clients("cli_tail");
    let arn = create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("tail.json");
    let checkpoint_arg = checkpoint.to_str().expect("utf-8 path");

    let (mut tail, out, err) = start_tail(
        &c,
        &[
            "--table",
            "orders",
            "--from",
            "trim-horizon",
            "--checkpoint",
            checkpoint_arg,
        ],
    );
    put(&c, "orders", &item(1, 1)).await;
    put(&c, "orders", &item(1, 2)).await;
    put(&c, "orders", &item(2, 1)).await;
    delete(&c, "orders", &keys(1)).await;

    let mut records = Vec::new();
    for _ in 0..4 {
        records.push(next_record(&out).await);
    }
    let names: Vec<&str> = records
        .iter()
        .map(|r| r["eventName"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["INSERT", "MODIFY", "INSERT", "REMOVE"],
        "{records:#?}"
    );
    assert_eq!(records[0]["keys"], json!({ "pk": "item-00001" }));
    assert_eq!(records[0]["oldImage"], Value::Null);
    assert_eq!(records[0]["newImage"]["v"], json!(1));
    // 38-digit numbers stay exact strings; binary is base64 (sets: cli_tail_formats.rs).
    assert_eq!(
        records[1]["newImage"]["big"],
        json!("98765432109876543210987654321098760002")
    );
    assert_eq!(records[1]["newImage"]["meta"]["even"], json!(true));
    assert_eq!(records[1]["newImage"]["meta"]["raw"], json!("AAEC"));
    assert_eq!(records[1]["oldImage"]["v"], json!(1));
    assert_eq!(records[3]["newImage"], Value::Null);
    assert_eq!(records[3]["oldImage"]["v"], json!(2));
    let shard = records[0]["shardId"].as_str().expect("shardId").to_owned();
    let seqs: Vec<u128> = records
        .iter()
        .map(|r| {
            assert_eq!(r["shardId"], json!(shard));
            r["sequenceNumber"]
                .as_str()
                .expect("sequenceNumber")
                .parse()
                .expect("digits")
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let time = records[0]["approximateCreationDateTime"]
        .as_str()
        .expect("time");
    assert!(
        time.len() >= 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "not RFC 3339: {time}"
    );

    tail.terminate();
    let status = tail.wait(WAIT).await;
    assert!(
        status.success(),
        "exit {status:?}; stderr:\n{}",
        err.drain().join("\n")
    );

    // The final checkpoint names the last printed record.
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&checkpoint).expect("checkpoint file"))
            .expect("checkpoint JSON");
    let stream = stored["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream_arn"] == json!(arn)))
        .unwrap_or_else(|| panic!("no checkpoint for {arn}: {stored}"));
    assert_eq!(
        stream["shards"][&shard]["state"],
        json!("processed"),
        "{stored}"
    );
    assert_eq!(
        stream["shards"][&shard]["sequence_number"], records[3]["sequenceNumber"],
        "{stored}"
    );

    // A restart (by stream ARN this time) resumes after it: nothing is printed twice.
    let (mut tail, out, err) =
        start_tail(&c, &["--stream-arn", &arn, "--checkpoint", checkpoint_arg]);
    put(&c, "orders", &item(3, 1)).await;
    let next = next_record(&out).await;
    assert_eq!(next["eventName"], json!("INSERT"), "{next}");
    assert_eq!(next["keys"], json!({ "pk": "item-00003" }), "{next}");
    tail.terminate();
    let status = tail.wait(WAIT).await;
    assert!(
        status.success(),
        "exit {status:?}; stderr:\n{}",
        err.drain().join("\n")
    );
    assert!(out.drain().is_empty());
}
