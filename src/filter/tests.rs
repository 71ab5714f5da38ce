use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::json::{write_record, RecordFormat, RecordSource};
use crate::record::{AttributeValue as A, Item, UserIdentity};

fn item(pairs: Vec<(&str, A)>) -> Item {
    let mut item = Item::default();
    for (k, v) in pairs {
        item.insert(k.to_owned(), v);
    }
    item
}

fn record(kind: RecordKind, new_image: Option<Item>, old_image: Option<Item>) -> StreamRecord {
    StreamRecord::new(
        kind,
        "000000000000000000001".parse().expect("valid"),
        item(vec![("pk", A::S("o-1".into()))]),
    )
    .with_images(old_image, new_image)
}

/// An order as Lambda's examples have it: a status, a total, tags, an address map.
fn order() -> StreamRecord {
    let image = item(vec![
        ("pk", A::S("o-1".into())),
        ("status", A::S("SHIPPED".into())),
        ("total", A::N("42.5".into())),
        ("qty", A::N("3".into())),
        ("paid", A::Bool(true)),
        ("gift", A::Null(true)),
        ("note", A::S(String::new())),
        ("tags", A::Ss(vec!["red".into(), "big".into()])),
        ("sizes", A::Ns(vec!["1".into(), "10".into()])),
        (
            "address",
            A::M(
                [
                    ("city".to_owned(), A::S("Lyon".into())),
                    ("zip".to_owned(), A::N("69001".into())),
                ]
                .into_iter()
                .collect(),
            ),
        ),
        ("lines", A::L(vec![A::S("a-1".into()), A::N("7".into())])),
        ("blob", A::B(vec![1, 2])),
    ]);
    record(RecordKind::Modify, Some(image), None).with_meta(
        "ev-1",
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        120,
    )
}

fn matches(pattern: Value, record: &StreamRecord) -> bool {
    FilterPattern::from_value(&pattern)
        .expect("a valid pattern")
        .matches(record)
}

fn new_image(attr: &str, typed: Value) -> Value {
    json!({"dynamodb": {"NewImage": {attr: typed}}})
}

fn error(pattern: &str) -> FilterError {
    FilterPattern::parse(pattern).expect_err("an invalid pattern")
}

#[test]
fn equals_matches_one_of_the_values() {
    let r = order();
    assert!(matches(new_image("status", json!({"S": ["SHIPPED"]})), &r));
    assert!(matches(
        new_image("status", json!({"S": ["NEW", "SHIPPED"]})),
        &r
    ));
    assert!(!matches(new_image("status", json!({"S": ["shipped"]})), &r));
    assert!(matches(json!({"eventName": ["MODIFY"]}), &r));
    assert!(!matches(json!({"eventName": ["INSERT", "REMOVE"]}), &r));
    assert!(matches(
        json!({"dynamodb": {"Keys": {"pk": {"S": ["o-1"]}}}}),
        &r
    ));
    assert!(matches(new_image("paid", json!({"BOOL": [true]})), &r));
    assert!(!matches(new_image("paid", json!({"BOOL": [false]})), &r));
    assert!(matches(new_image("gift", json!({"NULL": [true]})), &r));
    assert!(matches(new_image("blob", json!({"B": ["AQI="]})), &r));
}

#[test]
fn a_different_type_does_not_match() {
    let r = order();
    // "status" is an S: a pattern on its N value finds nothing there.
    assert!(!matches(new_image("status", json!({"N": ["SHIPPED"]})), &r));
    assert!(!matches(new_image("qty", json!({"S": ["3"]})), &r));
}

#[test]
fn numbers_compare_with_n_values_as_numbers() {
    let r = order();
    // As text, the way Lambda compares them.
    assert!(matches(new_image("qty", json!({"N": ["3"]})), &r));
    assert!(!matches(new_image("qty", json!({"N": ["3.0"]})), &r));
    // As numbers (where Lambda, seeing strings, would not match).
    assert!(matches(new_image("qty", json!({"N": [3]})), &r));
    assert!(matches(new_image("qty", json!({"N": [3.0]})), &r));
    assert!(matches(
        new_image("total", json!({"N": [{"numeric": ["=", 42.5]}]})),
        &r
    ));
    assert!(matches(
        new_image("total", json!({"N": [{"numeric": [">", 0, "<=", 42.5]}]})),
        &r
    ));
    assert!(!matches(
        new_image("total", json!({"N": [{"numeric": [">", 0, "<", 42.5]}]})),
        &r
    ));
    assert!(matches(
        new_image("total", json!({"N": [{"numeric": [">=", 42.5]}]})),
        &r
    ));
    assert!(!matches(
        new_image("total", json!({"N": [{"numeric": ["<", -1]}]})),
        &r
    ));
    // A number never matches a string attribute, even one of digits.
    let digits = record(
        RecordKind::Insert,
        Some(item(vec![("code", A::S("7".into()))])),
        None,
    );
    assert!(!matches(new_image("code", json!({"S": [7]})), &digits));
    assert!(!matches(
        new_image("code", json!({"S": [{"numeric": ["=", 7]}]})),
        &digits
    ));
    // The record's own numbers.
    assert!(matches(
        json!({"dynamodb": {"SizeBytes": [{"numeric": [">", 100]}]}}),
        &r
    ));
    assert!(matches(
        json!({"dynamodb": {"ApproximateCreationDateTime": [{"numeric": [">=", 1_700_000_000]}]}}),
        &r
    ));
}

#[test]
fn prefix_suffix_and_ignore_case() {
    let r = order();
    assert!(matches(
        new_image("status", json!({"S": [{"prefix": "SHIP"}]})),
        &r
    ));
    assert!(!matches(
        new_image("status", json!({"S": [{"prefix": "ship"}]})),
        &r
    ));
    assert!(matches(
        new_image("status", json!({"S": [{"suffix": "PED"}]})),
        &r
    ));
    assert!(!matches(
        new_image("status", json!({"S": [{"suffix": "X"}]})),
        &r
    ));
    assert!(matches(
        new_image("status", json!({"S": [{"equals-ignore-case": "shipped"}]})),
        &r
    ));
    assert!(!matches(
        new_image("status", json!({"S": [{"equals-ignore-case": "ship"}]})),
        &r
    ));
    // N values are strings to these operators, as in Lambda.
    assert!(matches(
        new_image("total", json!({"N": [{"prefix": "42."}]})),
        &r
    ));
}

#[test]
fn anything_but_needs_the_value_present() {
    let r = order();
    assert!(matches(
        new_image("status", json!({"S": [{"anything-but": ["NEW", "LOST"]}]})),
        &r
    ));
    assert!(!matches(
        new_image("status", json!({"S": [{"anything-but": ["SHIPPED"]}]})),
        &r
    ));
    assert!(!matches(
        new_image("status", json!({"S": [{"anything-but": "SHIPPED"}]})),
        &r
    ));
    assert!(matches(
        new_image("status", json!({"S": [{"anything-but": {"prefix": "NE"}}]})),
        &r
    ));
    assert!(!matches(
        new_image("status", json!({"S": [{"anything-but": {"prefix": "SH"}}]})),
        &r
    ));
    assert!(!matches(
        new_image("status", json!({"S": [{"anything-but": {"suffix": "ED"}}]})),
        &r
    ));
    assert!(!matches(
        new_image("qty", json!({"N": [{"anything-but": [3]}]})),
        &r
    ));
    assert!(matches(
        new_image("qty", json!({"N": [{"anything-but": [4]}]})),
        &r
    ));
    // Missing: anything-but does not match.
    assert!(!matches(
        new_image("nope", json!({"S": [{"anything-but": ["x"]}]})),
        &r
    ));
}

#[test]
fn exists_true_and_false() {
    let r = order();
    assert!(matches(
        new_image("status", json!({"S": [{"exists": true}]})),
        &r
    ));
    assert!(!matches(
        new_image("status", json!({"S": [{"exists": false}]})),
        &r
    ));
    assert!(matches(
        new_image("nope", json!({"S": [{"exists": false}]})),
        &r
    ));
    assert!(!matches(
        new_image("nope", json!({"S": [{"exists": true}]})),
        &r
    ));
    // The attribute is there, with another type: no S value exists.
    assert!(matches(
        new_image("qty", json!({"S": [{"exists": false}]})),
        &r
    ));
    // No old image at all: every attribute in it is missing.
    assert!(matches(
        json!({"dynamodb": {"OldImage": {"status": {"S": [{"exists": false}]}}}}),
        &r
    ));
    assert!(!matches(
        json!({"dynamodb": {"OldImage": {"status": {"S": ["SHIPPED"]}}}}),
        &r
    ));
    // Missing attributes match nothing else.
    assert!(!matches(new_image("nope", json!({"S": [""]})), &r));
    // TTL deletions carry a user identity; client changes do not.
    let ttl = record(RecordKind::Remove { ttl: false }, None, None).with_user_identity(Some(
        UserIdentity {
            kind: "Service".into(),
            principal_id: "dynamodb.amazonaws.com".into(),
        },
    ));
    let pattern = json!({"userIdentity": {"type": ["Service"]}});
    assert!(matches(pattern.clone(), &ttl));
    assert!(!matches(pattern, &r));
    assert!(matches(
        json!({"userIdentity": {"type": [{"exists": false}]}}),
        &r
    ));
}

#[test]
fn empty_strings_and_null() {
    let r = order();
    assert!(matches(new_image("note", json!({"S": [""]})), &r));
    assert!(!matches(new_image("status", json!({"S": [""]})), &r));
    // A record's JSON form has no nulls: NULL attributes are {"NULL": true}.
    assert!(!matches(new_image("gift", json!({"NULL": [null]})), &r));
    assert!(!matches(new_image("nope", json!({"S": [null]})), &r));
}

#[test]
fn sets_lists_and_maps() {
    let r = order();
    assert!(matches(new_image("tags", json!({"SS": ["big"]})), &r));
    assert!(!matches(new_image("tags", json!({"SS": ["small"]})), &r));
    assert!(matches(
        new_image("sizes", json!({"NS": [{"numeric": [">", 5]}]})),
        &r
    ));
    assert!(!matches(
        new_image("sizes", json!({"NS": [{"numeric": [">", 50]}]})),
        &r
    ));
    assert!(matches(
        new_image("address", json!({"M": {"city": {"S": ["Lyon"]}}})),
        &r
    ));
    assert!(matches(
        new_image(
            "address",
            json!({"M": {"city": {"S": ["Lyon"]}, "zip": {"N": [{"numeric": ["<", 70000]}]}}})
        ),
        &r
    ));
    assert!(!matches(
        new_image("address", json!({"M": {"city": {"S": ["Paris"]}}})),
        &r
    ));
    assert!(matches(
        new_image(
            "address",
            json!({"M": {"street": {"S": [{"exists": false}]}}})
        ),
        &r
    ));
    assert!(matches(
        new_image("lines", json!({"L": {"S": [{"prefix": "a-"}]}})),
        &r
    ));
    assert!(matches(new_image("lines", json!({"L": {"N": [7]}})), &r));
    assert!(!matches(new_image("lines", json!({"L": {"S": ["b"]}})), &r));
    let empty = record(
        RecordKind::Insert,
        Some(item(vec![("lines", A::L(Vec::new()))])),
        None,
    );
    assert!(matches(
        new_image("lines", json!({"L": {"S": [{"exists": false}]}})),
        &empty
    ));
}

#[test]
fn fields_are_anded_and_patterns_ored() {
    let r = order();
    let both = json!({"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}, "paid": {"BOOL": [true]}}}});
    assert!(matches(both, &r));
    let one_wrong =
        json!({"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}}}});
    assert!(!matches(one_wrong, &r));
    let criteria = FilterCriteria::from_patterns([
        r#"{"eventName": ["INSERT"]}"#,
        r#"{"dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}}}}"#,
    ])
    .expect("valid");
    assert!(criteria.matches(&r));
    let criteria = FilterCriteria::from_patterns([r#"{"eventName": ["INSERT"]}"#]).expect("valid");
    assert!(!criteria.matches(&r));
    assert!(FilterCriteria::default().matches(&r));
    // An empty pattern, as in Lambda, matches every record.
    assert!(matches(json!({}), &r));
}

#[test]
fn criteria_from_lambda_json_arrays_and_one_pattern() {
    let lambda = FilterCriteria::from_json(
        r#"{"Filters": [{"Pattern": "{\"eventName\": [\"INSERT\"]}"}, {"Pattern": "{\"eventName\": [\"REMOVE\"]}"}]}"#,
    )
    .expect("valid");
    let array = FilterCriteria::from_json(
        r#"[{"eventName": ["INSERT"]}, "{\"eventName\": [\"REMOVE\"]}"]"#,
    )
    .expect("valid");
    assert_eq!(lambda, array);
    assert_eq!(lambda.patterns().len(), 2);
    let one = FilterCriteria::from_json(r#"{"eventName": ["INSERT"]}"#).expect("valid");
    assert_eq!(one.patterns().len(), 1);
    let e = FilterCriteria::from_json(r#"{"Filters": [{"Pattern": "{\"eventName\": [\"INSERT\"]}"}, {"Pattern": "{\"eventname\": [1]}"}]}"#)
        .expect_err("invalid");
    assert_eq!(e.filter(), Some(2));
    assert_eq!(e.kind(), FilterErrorKind::UnknownField);
    let e = FilterCriteria::from_json(r#"{"Filters": [{"pattern": "{}"}]}"#).expect_err("invalid");
    assert_eq!(e.kind(), FilterErrorKind::Syntax);
    assert!(FilterCriteria::from_json("[").is_err());
}

#[test]
fn errors_say_what_and_where() {
    let e = FilterCriteria::from_patterns([
        r#"{"eventName": ["INSERT"]}"#,
        r#"{"dynamodb": {"NewImage": {"status": {"S": [{"numeric": [">", 0, "<="]}]}}}}"#,
    ])
    .expect_err("invalid");
    assert_eq!(
        e.to_string(),
        "filter 2: \"dynamodb.NewImage.status.S\": \"numeric\" needs pairs of an operator \
         (=, <, <=, >, >=) and a number, e.g. [\">\", 0, \"<=\", 5]"
    );
    assert_eq!(e.kind(), FilterErrorKind::BadOperand);
    assert_eq!(e.path(), "dynamodb.NewImage.status.S");

    let cases = [
        (r#"{"awsRegion": ["eu-west-1"]}"#, FilterErrorKind::UnknownField, "\"awsRegion\": unknown field \"awsRegion\": a pattern can match eventName, eventID, eventSource, userIdentity and dynamodb"),
        (r#"{"dynamodb": {"StreamViewType": ["KEYS_ONLY"]}}"#, FilterErrorKind::UnknownField, "unknown field \"StreamViewType\""),
        (r#"{"dynamodb": {"NewImage": {"status": ["SHIPPED"]}}}"#, FilterErrorKind::Shape, "\"dynamodb.NewImage.status\": give the attribute's DynamoDB type"),
        (r#"{"dynamodb": {"NewImage": {"status": {"STR": ["x"]}}}}"#, FilterErrorKind::UnknownField, "unknown DynamoDB type \"STR\""),
        (r#"{"dynamodb": {"NewImage": ["x"]}}"#, FilterErrorKind::Shape, "expected an object of fields"),
        (r#"{"eventName": "INSERT"}"#, FilterErrorKind::Shape, "\"eventName\": expected an array of values"),
        (r#"{"eventName": []}"#, FilterErrorKind::Shape, "an empty array matches nothing"),
        (r#"{"eventName": [["INSERT"]]}"#, FilterErrorKind::Shape, "not an array"),
        (r#"{"eventName": [{"wildcard": "IN*"}]}"#, FilterErrorKind::UnknownOperator, "unknown operator \"wildcard\""),
        (r#"{"eventName": [{"prefix": "I", "suffix": "T"}]}"#, FilterErrorKind::UnknownOperator, "exactly one of"),
        (r#"{"eventName": [{"prefix": 1}]}"#, FilterErrorKind::BadOperand, "\"prefix\" needs a string"),
        (r#"{"eventName": [{"exists": "yes"}]}"#, FilterErrorKind::BadOperand, "\"exists\" needs true or false"),
        (r#"{"eventName": [{"anything-but": []}]}"#, FilterErrorKind::BadOperand, "\"anything-but\" needs"),
        (r#"{"eventName": [{"anything-but": {"wildcard": "x"}}]}"#, FilterErrorKind::BadOperand, "\"anything-but\" needs"),
        (r#"{"dynamodb": {"SizeBytes": [{"numeric": ["=>", 5]}]}}"#, FilterErrorKind::BadOperand, "\"numeric\" needs pairs"),
        (r#"{"dynamodb": {"SizeBytes": [{"numeric": []}]}}"#, FilterErrorKind::BadOperand, "\"numeric\" needs pairs"),
        (r#"{"$or": [{"eventName": ["INSERT"]}]}"#, FilterErrorKind::UnknownOperator, "give several filters instead"),
        (r#"["INSERT"]"#, FilterErrorKind::Shape, "a pattern is a JSON object"),
        (r#"{"eventName": ["INSERT"]"#, FilterErrorKind::Syntax, "the pattern is not JSON"),
    ];
    for (pattern, kind, says) in cases {
        let e = error(pattern);
        assert_eq!(e.kind(), kind, "{pattern}: {e}");
        assert!(e.to_string().contains(says), "{pattern}: {e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

// ---- the oracle: Lambda's matcher on the record's JSON form -------------------------------

/// The record as a Lambda handler receives it, written by `json` (not by the filter).
fn lambda_json(record: &StreamRecord) -> Value {
    let mut out = Vec::new();
    let from = RecordSource {
        shard_id: "shardId-1",
        stream_arn: "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x",
    };
    write_record(&mut out, RecordFormat::DynamoDbJson, &from, record);
    serde_json::from_slice(&out).expect("the writer writes JSON")
}

/// A naive reading of Lambda's rules on a JSON tree: a field's value is what the JSON has at
/// that key; arrays match when an element does (an empty one is as if absent); rules match
/// scalars. `key` is the JSON key the value was found under: under `N` or `NS` a string is a
/// DynamoDB number, which numeric rules compare as a number (this crate's one difference).
fn oracle(pattern: &Value, event: Option<&Value>, key: &str) -> bool {
    match pattern {
        Value::Object(fields) => fields.iter().all(|(k, sub)| {
            let child = event.and_then(|e| e.as_object()).and_then(|o| o.get(k));
            match child {
                Some(Value::Array(items)) if items.is_empty() => oracle(sub, None, k),
                Some(Value::Array(items)) => items.iter().any(|v| oracle(sub, Some(v), k)),
                other => oracle(sub, other, k),
            }
        }),
        Value::Array(rules) => match event {
            None => rules.iter().any(|r| *r == json!({"exists": false})),
            Some(v) => rules.iter().any(|r| oracle_rule(r, v, key)),
        },
        _ => panic!("not a pattern: {pattern}"),
    }
}

fn oracle_number(v: &Value, key: &str) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if key == "N" || key == "NS" => s.parse().ok(),
        _ => None,
    }
}

fn oracle_equals(literal: &Value, v: &Value, key: &str) -> bool {
    match literal {
        Value::Number(n) => oracle_number(v, key).is_some() && oracle_number(v, key) == n.as_f64(),
        Value::Null => v.is_null(),
        other => other == v,
    }
}

fn oracle_rule(rule: &Value, v: &Value, key: &str) -> bool {
    let Value::Object(op) = rule else {
        return oracle_equals(rule, v, key);
    };
    let (name, operand) = op.iter().next().expect("one operator");
    let text = v.as_str();
    match name.as_str() {
        "prefix" => text.is_some_and(|t| t.starts_with(operand.as_str().expect("string"))),
        "suffix" => text.is_some_and(|t| t.ends_with(operand.as_str().expect("string"))),
        "equals-ignore-case" => text
            .is_some_and(|t| t.to_lowercase() == operand.as_str().expect("string").to_lowercase()),
        "exists" => operand.as_bool().expect("bool"),
        "anything-but" => match operand {
            Value::Array(values) => !values.iter().any(|l| oracle_equals(l, v, key)),
            Value::Object(o) => match o.iter().next().expect("one") {
                (p, Value::String(s)) if p == "prefix" => {
                    text.is_some_and(|t| !t.starts_with(s.as_str()))
                }
                (p, Value::String(s)) if p == "suffix" => {
                    text.is_some_and(|t| !t.ends_with(s.as_str()))
                }
                _ => panic!("bad anything-but"),
            },
            single => !oracle_equals(single, v, key),
        },
        "numeric" => {
            let Some(x) = oracle_number(v, key) else {
                return false;
            };
            operand.as_array().expect("array").chunks(2).all(|pair| {
                let n = pair[1].as_f64().expect("number");
                match pair[0].as_str().expect("operator") {
                    "=" => x == n,
                    "<" => x < n,
                    "<=" => x <= n,
                    ">" => x > n,
                    ">=" => x >= n,
                    other => panic!("operator {other}"),
                }
            })
        }
        other => panic!("operator {other}"),
    }
}

const NAMES: [&str; 2] = ["a", "b"];
const STRINGS: [&str; 6] = ["", "x", "xy", "X", "yx", "1"];
const NUMBERS: [&str; 6] = ["0", "1", "1.5", "-2", "10", "3"];

fn arb_scalar() -> impl Strategy<Value = A> {
    prop_oneof![
        3 => prop::sample::select(&STRINGS[..]).prop_map(|s| A::S(s.into())),
        3 => prop::sample::select(&NUMBERS[..]).prop_map(|n| A::N(n.into())),
        1 => any::<bool>().prop_map(A::Bool),
        1 => Just(A::Null(true)),
        1 => prop::collection::vec(any::<u8>(), 0..3).prop_map(A::B),
        1 => prop::collection::btree_set(prop::sample::select(&STRINGS[..]), 1..3)
            .prop_map(|s| A::Ss(s.into_iter().map(str::to_owned).collect())),
        1 => prop::collection::btree_set(prop::sample::select(&NUMBERS[..]), 1..3)
            .prop_map(|s| A::Ns(s.into_iter().map(str::to_owned).collect())),
    ]
}

fn arb_value() -> impl Strategy<Value = A> {
    arb_scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(A::L),
            prop::collection::hash_map(prop::sample::select(&NAMES[..]), inner, 0..3)
                .prop_map(|m| A::M(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn arb_item() -> impl Strategy<Value = Item> {
    prop::collection::hash_map(prop::sample::select(&NAMES[..]), arb_value(), 0..4).prop_map(|m| {
        let mut item = Item::default();
        for (k, v) in m {
            item.insert(k.to_owned(), v);
        }
        item
    })
}

fn arb_record() -> impl Strategy<Value = StreamRecord> {
    (
        prop_oneof![
            Just(RecordKind::Insert),
            Just(RecordKind::Modify),
            Just(RecordKind::Remove { ttl: false }),
            Just(RecordKind::Unknown("xy".into())),
        ],
        prop::option::of(arb_item()),
        prop::option::of(arb_item()),
        prop::sample::select(&STRINGS[..]),
        0u64..20,
        any::<bool>(),
    )
        .prop_map(|(kind, new, old, pk, size, ttl)| {
            let record = StreamRecord::new(
                kind,
                "000000000000000000007".parse().expect("valid"),
                item(vec![("pk", A::S(pk.into()))]),
            )
            .with_images(old, new)
            .with_meta("xy", None, size);
            record.with_user_identity(ttl.then(|| UserIdentity {
                kind: "Service".into(),
                principal_id: "dynamodb.amazonaws.com".into(),
            }))
        })
}

fn arb_literal() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(&STRINGS[..]).prop_map(|s| json!(s)),
        prop::sample::select(&NUMBERS[..]).prop_map(|s| json!(s)),
        prop::sample::select(&[0.0, 1.0, 1.5, -2.0, 10.0, 3.0][..]).prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
    ]
}

fn arb_rule() -> impl Strategy<Value = Value> {
    let text = prop::sample::select(&STRINGS[..]);
    let number = prop::sample::select(&[-2.0, 0.0, 1.0, 1.5, 3.0, 10.0][..]);
    let op = prop::sample::select(&["=", "<", "<=", ">", ">="][..]);
    prop_oneof![
        arb_literal(),
        text.clone().prop_map(|s| json!({"prefix": s})),
        text.clone().prop_map(|s| json!({"suffix": s})),
        text.clone().prop_map(|s| json!({"equals-ignore-case": s})),
        prop::collection::vec(
            prop_oneof![
                text.clone().prop_map(|s| json!(s)),
                number.clone().prop_map(|n| json!(n))
            ],
            1..3
        )
        .prop_map(|v| json!({"anything-but": v})),
        text.clone().prop_map(|s| json!({"anything-but": s})),
        text.clone()
            .prop_map(|s| json!({"anything-but": {"prefix": s}})),
        text.prop_map(|s| json!({"anything-but": {"suffix": s}})),
        prop::collection::vec((op, number), 1..3).prop_map(|pairs| {
            let flat: Vec<Value> = pairs
                .into_iter()
                .flat_map(|(o, n)| [json!(o), json!(n)])
                .collect();
            json!({"numeric": flat})
        }),
        any::<bool>().prop_map(|b| json!({"exists": b})),
    ]
}

fn arb_rules() -> impl Strategy<Value = Value> {
    prop::collection::vec(arb_rule(), 1..3).prop_map(Value::Array)
}

/// A typed-value pattern: `{"S": [rules]}`, `{"M": {name: typed}}`, `{"L": typed}`.
fn arb_typed() -> impl Strategy<Value = Value> {
    // S and N most often, so that patterns and values meet.
    let leaf_type = prop::sample::select(
        &[
            "S", "S", "S", "N", "N", "N", "B", "BOOL", "NULL", "SS", "NS", "BS",
        ][..],
    );
    let leaf = (leaf_type, arb_rules()).prop_map(|(t, r)| json!({t: r}));
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (prop::sample::select(&NAMES[..]), inner.clone())
                .prop_map(|(n, t)| json!({"M": {n: t}})),
            inner.prop_map(|t| json!({"L": t})),
        ]
    })
}

fn arb_item_pattern() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(&["a", "b", "pk"][..]),
        arb_typed(),
        1..2,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

/// One part of a pattern: a top-level field with what it holds.
fn arb_part() -> impl Strategy<Value = (&'static str, Value)> {
    let image = prop::sample::select(&["Keys", "NewImage", "OldImage"][..]);
    prop_oneof![
        arb_rules().prop_map(|r| ("eventName", r)),
        (image, arb_item_pattern()).prop_map(|(i, p)| ("dynamodb", json!({i: p}))),
        arb_rules().prop_map(|r| ("dynamodb", json!({"SizeBytes": r}))),
        arb_rules().prop_map(|r| ("userIdentity", json!({"type": r}))),
    ]
}

/// One or two parts (ANDed; a repeated field keeps the last), so that a fair share of
/// patterns match.
fn arb_pattern() -> impl Strategy<Value = Value> {
    prop::collection::vec(arb_part(), 1..3).prop_map(|parts| {
        Value::Object(parts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    })
}

fn type_of(value: &A) -> &'static str {
    match value {
        A::S(_) => "S",
        A::N(_) => "N",
        A::B(_) => "B",
        A::Bool(_) => "BOOL",
        A::Null(_) => "NULL",
        A::M(_) => "M",
        A::L(_) => "L",
        A::Ss(_) => "SS",
        A::Ns(_) => "NS",
        A::Bs(_) => "BS",
    }
}

/// One scalar attribute and rules on it, mostly under its own type: every operator meets
/// every kind of value often.
fn arb_leaf_case() -> impl Strategy<Value = (StreamRecord, Value)> {
    (
        arb_scalar(),
        prop::option::weighted(0.2, prop::sample::select(&["S", "N", "BOOL"][..])),
        arb_rules(),
        any::<bool>(),
    )
        .prop_map(|(value, other_type, rules, absent)| {
            let t = other_type.unwrap_or(type_of(&value));
            let image = if absent {
                item(vec![])
            } else {
                item(vec![("a", value)])
            };
            let record = record(RecordKind::Insert, Some(image), None);
            (record, json!({"dynamodb": {"NewImage": {"a": {t: rules}}}}))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// The evaluator, walking the record, agrees with a naive matcher walking the record's
    /// Lambda JSON.
    #[test]
    fn agrees_with_a_matcher_on_the_lambda_json(record in arb_record(), pattern in arb_pattern()) {
        let parsed = FilterPattern::from_value(&pattern);
        prop_assert!(parsed.is_ok(), "{pattern}: {parsed:?}");
        let event = lambda_json(&record);
        let expected = oracle(&pattern, Some(&event), "");
        prop_assert_eq!(parsed.expect("checked").matches(&record), expected, "{} on {}", pattern, event);
    }

    /// The same, value by value: each operator against each kind of scalar.
    #[test]
    fn operators_agree_with_the_matcher((record, pattern) in arb_leaf_case()) {
        let parsed = FilterPattern::from_value(&pattern);
        prop_assert!(parsed.is_ok(), "{pattern}: {parsed:?}");
        let event = lambda_json(&record);
        let expected = oracle(&pattern, Some(&event), "");
        prop_assert_eq!(parsed.expect("checked").matches(&record), expected, "{} on {}", pattern, event);
    }
}
