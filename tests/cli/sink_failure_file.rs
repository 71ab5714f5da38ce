//! Issue 17, points 4 and 8: `JsonLinesFailureSink` creates its file 0600 and writes records as
//! `ddbstream tail` prints them: `approximateCreationDateTime` in RFC 3339, numbers a double
//! cannot hold as strings, sets marked.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, UNIX_EPOCH};

use dynamodb_stream::delivery::{
    DeliveryFailure, FailureReason, FailureSink, JsonLinesFailureSink,
};
use dynamodb_stream::record::{AttributeValue, Item};
use dynamodb_stream::{RecordKind, StreamRecord};
use serde_json::{json, Value};

#[tokio::test]
async fn the_failure_file_is_private_and_written_like_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("failures.jsonl");
    let sink = JsonLinesFailureSink::new(&path);
    let mut keys = HashMap::new();
    keys.insert("pk".to_owned(), AttributeValue::S("o-1".into()));
    let mut image = keys.clone();
    image.insert(
        "big".to_owned(),
        AttributeValue::N("9007199254740993".into()),
    );
    image.insert("tags".to_owned(), AttributeValue::Ss(vec!["a".into()]));
    let record = StreamRecord::new(
        RecordKind::Insert,
        "000000000000000000007".parse().expect("seq"),
        Item::from(keys),
    )
    .with_images(None, Some(Item::from(image)))
    .with_meta(
        "e-7",
        Some(UNIX_EPOCH + Duration::from_millis(1_709_210_096_789)),
        20,
    );
    sink.send(DeliveryFailure {
        stream_arn: "arn:aws:dynamodb:us-east-1:1:table/t/stream/x".into(),
        shard_id: "shardId-1".into(),
        records: vec![record],
        reason: FailureReason::RetriesExhausted { attempts: 3 },
        error: "handler said \"no\"".into(),
    })
    .await
    .expect("written");

    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).expect("read");
    let line: Value = serde_json::from_str(text.trim_end()).expect("one JSON line");
    assert_eq!(line["shardId"], json!("shardId-1"));
    assert_eq!(line["firstSequenceNumber"], json!("000000000000000000007"));
    assert_eq!(
        line["reason"],
        json!({ "kind": "retries_exhausted", "attempts": 3 })
    );
    assert_eq!(line["error"], json!("handler said \"no\""));
    let r = &line["records"][0];
    assert_eq!(
        r["approximateCreationDateTime"],
        json!("2024-02-29T12:34:56.789Z")
    );
    assert_eq!(r["eventName"], json!("INSERT"));
    assert_eq!(r["eventId"], json!("e-7"));
    assert_eq!(r["newImage"]["big"], json!("9007199254740993"));
    assert_eq!(r["newImage"]["tags"], json!({ "SS": ["a"] }));
    assert_eq!(r["keys"], json!({ "pk": "o-1" }));
}
