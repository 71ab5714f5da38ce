//! `ddbstream tail --once` against DynamoDB Local (issue 20): each run prints what the stream
//! holds up to when it started and exits; with a checkpoint file the next run continues after
//! the last printed record. Over several runs, with writes in between, during a run and across a
//! rollover, every change is printed exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use serde_json::Value;

use crate::common::{delete, item, keys, once_printed, put, run_cli};
use crate::ddb_local::{clients, create_table, rollover, TestClients};

/// (key, version or "removed") of each printed change.
fn changes(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            let key = r["keys"]["pk"].as_str().expect("pk").to_owned();
            let version = match r["newImage"]["v"].as_i64() {
                Some(v) => v.to_string(),
                None => "removed".to_owned(),
            };
            (key, version)
        })
        .collect()
}

async fn once(c: &TestClients, checkpoint: &str) -> Vec<Value> {
    let args = [
        "tail",
        "--table",
        "orders",
        "--from",
        "trim-horizon",
        "--checkpoint",
        checkpoint,
        "--once",
    ];
    let out = tokio::time::timeout(Duration::from_secs(120), run_cli(c, &args))
        .await
        .expect("a once-run ends");
    once_printed(&out)
}

/// Whether item 7 has reached version 3 (the writer of run 3 started).
async fn written_some(c: &TestClients) -> bool {
    let got = c
        .dynamodb
        .get_item()
        .table_name("orders")
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("item-{:05}", 7)),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem");
    got.item()
        .and_then(|i| i.get("v"))
        .and_then(|v| v.as_n().ok())
        .is_some_and(|v| v != "2" && v != "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_once_twice_prints_each_change_once() {
    let c = clients("cli_tail_once");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("tail.json");
    let checkpoint = checkpoint.to_str().expect("utf-8 path");
    let mut expected: Vec<(String, String)> = Vec::new();
    let key = |id: u32| format!("item-{id:05}");

    // Run 1: what was written before it.
    for id in 0..20 {
        put(&c, "orders", &item(id, 1)).await;
        expected.push((key(id), "1".into()));
    }
    let first = changes(&once(&c, checkpoint).await);
    assert_eq!(
        first, expected,
        "the first run prints what was written before it"
    );

    // Run 2: only what came since, across a rollover.
    let mut since = Vec::new();
    for id in 0..10 {
        put(&c, "orders", &item(id, 2)).await;
        since.push((key(id), "2".into()));
    }
    rollover(&c).await;
    delete(&c, "orders", &keys(15)).await;
    since.push((key(15), "removed".into()));
    let second = changes(&once(&c, checkpoint).await);
    assert_eq!(second, since, "the second run prints only what came since");
    expected.extend(since);

    // Run 3 while a writer goes on the whole time (it stops only once the run has ended): the
    // run still ends, having printed what was written before it started.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut v = 3u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                put(&c, "orders", &item(7, v)).await;
                written.push((format!("item-{:05}", 7), v.to_string()));
                v += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            written
        })
    };
    while !written_some(&c).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = changes(&once(&c, checkpoint).await);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.await.expect("writer");
    assert!(
        !third.is_empty(),
        "the third run printed what was written before it"
    );
    assert!(third.len() < written.len());
    expected.extend(written);

    // Run 4 prints the rest; nothing twice, nothing missing, per key in order.
    let fourth = changes(&once(&c, checkpoint).await);
    let all: Vec<(String, String)> = first
        .into_iter()
        .chain(second)
        .chain(third)
        .chain(fourth)
        .collect();
    let per_key = |list: &[(String, String)]| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in list {
            m.entry(k.clone()).or_default().push(v.clone());
        }
        m
    };
    assert_eq!(per_key(&all), per_key(&expected));
    assert!(
        changes(&once(&c, checkpoint).await).is_empty(),
        "a run with nothing new prints nothing"
    );
}
