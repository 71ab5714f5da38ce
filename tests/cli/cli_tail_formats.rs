//! Issue 17, point 3: `tail --format compact | dynamodb-json | plain` against DynamoDB Local.
//! No reader that parses numbers into doubles (jq, JavaScript) can change a number of the
//! output: numbers a double cannot hold are strings in the plain forms, and every number in
//! `dynamodb-json` is a string; sets are marked as sets; `dynamodb-json` is the record as
//! Lambda handlers and `aws dynamodbstreams get-records` users know it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::record::{AttributeValue as A, Item};
use serde_json::{json, Value};

use crate::common::{delete, keys, put, run_cli, stderr};
use crate::ddb_local::{clients, create_table};

/// Every attribute type, and numbers on both sides of what a double holds.
fn odd_item(version: u64) -> Item {
    let mut m = HashMap::new();
    m.insert("pk".to_owned(), A::S("item-00001".into()));
    m.insert("v".to_owned(), A::N(version.to_string()));
    m.insert("above".to_owned(), A::N("9007199254740993".into()));
    m.insert("exact".to_owned(), A::N("9007199254740992".into()));
    m.insert("negative".to_owned(), A::N("-17".into()));
    m.insert("tenth".to_owned(), A::N("0.1".into()));
    m.insert(
        "long".to_owned(),
        A::N("12345678901234567890123456789012345678".into()),
    );
    m.insert("ss".to_owned(), A::Ss(vec!["a".into(), "b".into()]));
    m.insert(
        "ns".to_owned(),
        A::Ns(vec!["1".into(), "9007199254740993".into()]),
    );
    m.insert("bs".to_owned(), A::Bs(vec![vec![0, 1, 2]]));
    m.insert("bin".to_owned(), A::B(vec![255]));
    m.insert("nul".to_owned(), A::Null(true));
    m.insert("yes".to_owned(), A::Bool(true));
    m.insert(
        "m".to_owned(),
        A::M(
            [(
                "z".to_owned(),
                A::L(vec![A::N("1".into()), A::S("x".into())]),
            )]
            .into_iter()
            .collect(),
        ),
    );
    Item::from(m)
}

/// The JSON number tokens of a line (outside strings), as written.
fn number_tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_string = true;
        } else if c == '-' || c.is_ascii_digit() {
            let mut token = c.to_string();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() || "+-.eE".contains(d) {
                    token.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(token);
        }
    }
    out
}

/// `digits × 10^exponent`, no leading or trailing zeros: a decimal's value, comparable.
fn value_of(decimal: &str) -> (bool, String, i64) {
    let (mantissa, exponent) = match decimal.find(['e', 'E']) {
        Some(at) => (
            &decimal[..at],
            decimal[at + 1..].parse::<i64>().expect("exponent"),
        ),
        None => (decimal, 0),
    };
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches('-');
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let trimmed = digits.trim_end_matches('0');
    let exponent = exponent - frac.len() as i64 + (digits.len() - trimmed.len()) as i64;
    let digits = trimmed.trim_start_matches('0').to_owned();
    if digits.is_empty() {
        return (false, digits, 0);
    }
    (negative, digits, exponent)
}

/// What jq does to a number: read it into a double and write it back.
fn through_a_double(token: &str) -> String {
    let double: f64 = token.parse().expect("a number");
    format!("{double:e}")
}

fn assert_no_number_changes_through_a_double(lines: &[String]) {
    for line in lines {
        for token in number_tokens(line) {
            assert_eq!(
                value_of(&through_a_double(&token)),
                value_of(&token),
                "{token} changes when read as a double, in\n{line}"
            );
        }
    }
}

async fn tail(c: &crate::ddb_local::TestClients, format: &str) -> Vec<String> {
    let out = run_cli(
        c,
        &[&crate::common::TAIL_ORDERS_ONCE[..], &["--format", format]].concat(),
    )
    .await;
    assert!(out.status.success(), "{format}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn parse(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_formats_that_no_double_can_corrupt() {
    let c = clients("cli_tail_formats");
    let arn = create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    put(&c, "orders", &odd_item(1)).await;
    put(&c, "orders", &odd_item(2)).await;
    delete(&c, "orders", &keys(1)).await;

    // compact (the default): flat, plain values.
    let lines = tail(&c, "compact").await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_no_number_changes_through_a_double(&lines);
    assert!(
        lines[0].starts_with(r#"{"approximateCreationDateTime":""#),
        "{}",
        lines[0]
    );
    let records = parse(&lines);
    let new = &records[0]["newImage"];
    assert_eq!(new["above"], json!("9007199254740993"), "{new}");
    assert_eq!(new["exact"], json!(9007199254740992_u64), "{new}");
    assert_eq!(new["negative"], json!(-17), "{new}");
    assert_eq!(new["tenth"], json!(0.1), "{new}");
    assert_eq!(
        new["long"],
        json!("12345678901234567890123456789012345678"),
        "{new}"
    );
    assert_eq!(new["ss"], json!({ "SS": ["a", "b"] }), "{new}");
    assert_eq!(new["ns"], json!({ "NS": [1, "9007199254740993"] }), "{new}");
    assert_eq!(new["bs"], json!({ "BS": ["AAEC"] }), "{new}");
    assert_eq!(new["bin"], json!("/w=="), "{new}");
    assert_eq!(new["nul"], Value::Null, "{new}");
    assert_eq!(new["yes"], json!(true), "{new}");
    assert_eq!(new["m"], json!({ "z": [1, "x"] }), "{new}");
    assert_eq!(records[0]["keys"], json!({ "pk": "item-00001" }));
    let names: Vec<&Value> = records.iter().map(|r| &r["eventName"]).collect();
    assert_eq!(
        names,
        [&json!("INSERT"), &json!("MODIFY"), &json!("REMOVE")]
    );
    assert_eq!(records[2]["newImage"], Value::Null);
    assert_eq!(records[2]["oldImage"]["v"], json!(2));

    // dynamodb-json: the Lambda / GetRecords record, typed values (every number a string).
    let lines = tail(&c, "dynamodb-json").await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_no_number_changes_through_a_double(&lines);
    let records = parse(&lines);
    for (r, name) in records.iter().zip(["INSERT", "MODIFY", "REMOVE"]) {
        assert_eq!(r["eventName"], json!(name), "{r}");
        assert!(
            r["eventID"].as_str().is_some_and(|id| !id.is_empty()),
            "{r}"
        );
        assert_eq!(r["eventSource"], json!("aws:dynamodb"), "{r}");
        // The stream's region, from its ARN (DynamoDB Local's ARNs say "ddblocal").
        let region = arn.split(':').nth(3).expect("a region in the ARN");
        assert_eq!(r["awsRegion"], json!(region), "{r}");
        assert_eq!(r["eventSourceARN"], json!(arn), "{r}");
        let d = &r["dynamodb"];
        assert_eq!(d["Keys"], json!({ "pk": { "S": "item-00001" } }), "{r}");
        assert!(d["SequenceNumber"].as_str().is_some(), "{r}");
        assert!(d["ApproximateCreationDateTime"].is_number(), "{r}");
        assert!(d["SizeBytes"].as_u64().is_some_and(|n| n > 0), "{r}");
    }
    let new = &records[0]["dynamodb"]["NewImage"];
    assert_eq!(new["above"], json!({ "N": "9007199254740993" }), "{new}");
    assert_eq!(new["tenth"], json!({ "N": "0.1" }), "{new}");
    assert_eq!(new["ss"], json!({ "SS": ["a", "b"] }), "{new}");
    assert_eq!(
        new["ns"],
        json!({ "NS": ["1", "9007199254740993"] }),
        "{new}"
    );
    assert_eq!(new["bin"], json!({ "B": "/w==" }), "{new}");
    assert_eq!(new["nul"], json!({ "NULL": true }), "{new}");
    assert_eq!(new["yes"], json!({ "BOOL": true }), "{new}");
    assert_eq!(
        new["m"],
        json!({ "M": { "z": { "L": [{ "N": "1" }, { "S": "x" }] } } }),
        "{new}"
    );
    assert!(records[0]["dynamodb"].get("OldImage").is_none());
    assert_eq!(records[1]["dynamodb"]["OldImage"]["v"], json!({ "N": "1" }));
    assert!(records[2]["dynamodb"].get("NewImage").is_none());

    // plain: the same record with plain values.
    let lines = tail(&c, "plain").await;
    assert_no_number_changes_through_a_double(&lines);
    let records = parse(&lines);
    let new = &records[0]["dynamodb"]["NewImage"];
    assert_eq!(records[0]["eventName"], json!("INSERT"));
    assert_eq!(
        records[0]["dynamodb"]["Keys"],
        json!({ "pk": "item-00001" })
    );
    assert_eq!(new["above"], json!("9007199254740993"), "{new}");
    assert_eq!(new["exact"], json!(9007199254740992_u64), "{new}");
    assert_eq!(new["ss"], json!({ "SS": ["a", "b"] }), "{new}");
    assert_eq!(records[1]["dynamodb"]["OldImage"]["v"], json!(1));
}

#[test]
fn the_number_reader_of_this_test_is_right() {
    assert_eq!(
        number_tokens(r#"{"a":-1.5e3,"b":"9","c":[1,2],"d":"x\"1"}"#),
        ["-1.5e3", "1", "2"]
    );
    assert_eq!(value_of("1500"), value_of("1.5e3"));
    assert_ne!(
        value_of(&through_a_double("9007199254740993")),
        value_of("9007199254740993")
    );
    assert_eq!(value_of(&through_a_double("0.1")), value_of("0.1"));
}
