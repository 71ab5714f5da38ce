//! Every DynamoDB attribute type survives the round trip through DynamoDB Local, the SDK and
//! the consumer: untyped (`new_image()`, `old_image()`) and typed (`new_image_as::<T>()`), with
//! a 38-digit number kept exact.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue as Ddb, StreamViewType};
use dynamodb_stream::record::{item_to_json, AttributeValue, Item};
use dynamodb_stream::{Batch, Consumer, HandlerError, RecordKind, StreamRecord};
use serde::Deserialize;

use crate::common::{fast, periodic_check};
use crate::ddb_local::{clients, create_table, sdk_error, TestClients};

const TABLE: &str = "types";
/// 38 significant digits: more than f64 (and i64/u64) can hold.
const BIG: &str = "12345678901234567890123456789012345678";
const TINY: &str = "0.000000000000000000000000000000000001";

fn full_item() -> HashMap<String, Ddb> {
    let nested = HashMap::from([
        ("deep".to_owned(), Ddb::S("down".into())),
        (
            "list".to_owned(),
            Ddb::L(vec![Ddb::N("1".into()), Ddb::Bool(false), Ddb::Null(true)]),
        ),
    ]);
    HashMap::from([
        ("pk".to_owned(), Ddb::S("all-types".into())),
        ("s".to_owned(), Ddb::S("héllo wörld ✓".into())),
        ("n".to_owned(), Ddb::N("-42".into())),
        ("f".to_owned(), Ddb::N("3.25".into())),
        ("big".to_owned(), Ddb::N(BIG.into())),
        ("tiny".to_owned(), Ddb::N(TINY.into())),
        ("b".to_owned(), Ddb::B(Blob::new(vec![0u8, 1, 2, 254, 255]))),
        (
            "ss".to_owned(),
            Ddb::Ss(vec!["x".into(), "y".into(), "z".into()]),
        ),
        (
            "ns".to_owned(),
            Ddb::Ns(vec!["1".into(), "2.5".into(), BIG.into()]),
        ),
        (
            "bs".to_owned(),
            Ddb::Bs(vec![Blob::new(vec![1u8]), Blob::new(vec![2u8, 3])]),
        ),
        (
            "m".to_owned(),
            Ddb::M(HashMap::from([
                ("name".to_owned(), Ddb::S("inner".into())),
                ("nested".to_owned(), Ddb::M(nested)),
            ])),
        ),
        (
            "l".to_owned(),
            Ddb::L(vec![
                Ddb::S("one".into()),
                Ddb::N("2".into()),
                Ddb::Bool(true),
                Ddb::Null(true),
                Ddb::M(HashMap::from([("k".to_owned(), Ddb::S("v".into()))])),
                Ddb::L(vec![Ddb::S("inner".into())]),
            ]),
        ),
        ("nul".to_owned(), Ddb::Null(true)),
        ("yes".to_owned(), Ddb::Bool(true)),
        ("no".to_owned(), Ddb::Bool(false)),
    ])
}

/// The same item in the crate's (serde_dynamo) attribute model.
fn expected_item() -> Item {
    fn conv(v: &Ddb) -> AttributeValue {
        match v {
            Ddb::S(s) => AttributeValue::S(s.clone()),
            Ddb::N(n) => AttributeValue::N(n.clone()),
            Ddb::B(b) => AttributeValue::B(b.as_ref().to_vec()),
            Ddb::Ss(s) => AttributeValue::Ss(s.clone()),
            Ddb::Ns(n) => AttributeValue::Ns(n.clone()),
            Ddb::Bs(b) => AttributeValue::Bs(b.iter().map(|b| b.as_ref().to_vec()).collect()),
            Ddb::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), conv(v))).collect()),
            Ddb::L(l) => AttributeValue::L(l.iter().map(conv).collect()),
            Ddb::Null(b) => AttributeValue::Null(*b),
            Ddb::Bool(b) => AttributeValue::Bool(*b),
            other => panic!("unexpected attribute {other:?}"),
        }
    }
    Item::from(
        full_item()
            .iter()
            .map(|(k, v)| (k.clone(), conv(v)))
            .collect::<HashMap<_, _>>(),
    )
}

/// Sets have no order: sort their members so two items compare by content.
fn normalized(item: &Item) -> Item {
    fn norm(v: &AttributeValue) -> AttributeValue {
        match v {
            AttributeValue::Ss(s) => AttributeValue::Ss(sorted(s.clone())),
            AttributeValue::Ns(n) => AttributeValue::Ns(sorted(n.clone())),
            AttributeValue::Bs(b) => AttributeValue::Bs(sorted(b.clone())),
            AttributeValue::M(m) => {
                AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), norm(v))).collect())
            }
            AttributeValue::L(l) => AttributeValue::L(l.iter().map(norm).collect()),
            other => other.clone(),
        }
    }
    fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
        v.sort();
        v
    }
    Item::from(
        item.iter()
            .map(|(k, v)| (k.clone(), norm(v)))
            .collect::<HashMap<_, _>>(),
    )
}

/// Binary attributes decode from bytes (serde_dynamo hands them to `visit_bytes`).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Bytes(Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[derive(Debug, Deserialize)]
struct Nested {
    deep: String,
    list: (u8, bool, Option<String>),
}

#[derive(Debug, Deserialize)]
struct Inner {
    name: String,
    nested: Nested,
}

#[derive(Debug, Deserialize)]
struct KV {
    k: String,
}

/// Every attribute, typed; numbers that fit go to native types.
#[derive(Debug, Deserialize)]
struct AllTypes {
    pk: String,
    s: String,
    n: i64,
    f: f64,
    b: Bytes,
    ss: BTreeSet<String>,
    bs: BTreeSet<Bytes>,
    m: Inner,
    l: (String, i32, bool, Option<String>, KV, Vec<String>),
    nul: Option<String>,
    yes: bool,
    no: bool,
}

/// The numbers that do not fit a native type, as their exact digits.
#[derive(Debug, Deserialize)]
struct ExactNumbers {
    big: String,
    tiny: String,
    ns: Vec<String>,
}

async fn write_and_collect(c: &TestClients, arn: &str) -> Vec<StreamRecord> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let consumer = Consumer::builder(c.streams.clone(), arn)
        .handler_fn(move |batch: Batch| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().extend(batch.records().iter().cloned());
                Ok::<(), HandlerError>(())
            }
        })
        .configure(fast)
        .spawn()
        .await
        .expect("spawn");
    c.dynamodb
        .put_item()
        .table_name(TABLE)
        .set_item(Some(full_item()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem: {}", sdk_error(&e)));
    // A modify that changes only `s`, so the old image is the full item.
    c.dynamodb
        .update_item()
        .table_name(TABLE)
        .key("pk", Ddb::S("all-types".into()))
        .update_expression("SET s = :s")
        .expression_attribute_values(":s", Ddb::S("changed".into()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("UpdateItem: {}", sdk_error(&e)));
    periodic_check(
        || seen.lock().unwrap().len() >= 2,
        Duration::from_secs(30),
        "the insert and the modify",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let records = seen.lock().unwrap().clone();
    assert_eq!(records.len(), 2, "{records:?}");
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attribute_type_round_trips() {
    let c = clients("attrtypes");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let records = write_and_collect(&c, &arn).await;
    let (insert, modify) = (&records[0], &records[1]);
    assert_eq!(insert.kind(), &RecordKind::Insert);
    assert_eq!(modify.kind(), &RecordKind::Modify);

    // Untyped: the images are exactly what was written (sets compared as sets).
    let expected = normalized(&expected_item());
    let new = insert.new_image().expect("insert has a new image");
    assert_eq!(normalized(new), expected);
    assert!(insert.old_image().is_none());
    assert_eq!(normalized(modify.old_image().expect("old image")), expected);
    assert_eq!(
        modify.new_image().and_then(|i| i.get("s")),
        Some(&AttributeValue::S("changed".into()))
    );
    assert_eq!(new.get("big"), Some(&AttributeValue::N(BIG.into())));
    assert_eq!(new.get("tiny"), Some(&AttributeValue::N(TINY.into())));
    assert_eq!(
        insert.keys().get("pk"),
        Some(&AttributeValue::S("all-types".into()))
    );
    assert_eq!(insert.key_string(), r#"pk="all-types""#);
    // As plain JSON the 38-digit number stays a string of digits.
    let json = item_to_json(new);
    assert_eq!(json["big"], serde_json::Value::String(BIG.into()));
    assert_eq!(json["n"], serde_json::json!(-42));
    assert_eq!(json["m"]["nested"]["deep"], serde_json::json!("down"));

    // Typed.
    let t: AllTypes = insert
        .new_image_as()
        .expect("decodes")
        .expect("has a new image");
    assert_eq!(t.pk, "all-types");
    assert_eq!(t.s, "héllo wörld ✓");
    assert_eq!(t.n, -42);
    assert_eq!(t.f, 3.25);
    assert_eq!(t.b, Bytes(vec![0, 1, 2, 254, 255]));
    assert_eq!(
        t.ss,
        ["x", "y", "z"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(
        t.bs,
        [Bytes(vec![1]), Bytes(vec![2, 3])].into_iter().collect()
    );
    assert_eq!(t.m.name, "inner");
    assert_eq!(t.m.nested.deep, "down");
    assert_eq!(t.m.nested.list, (1, false, None));
    assert_eq!(t.l.0, "one");
    assert_eq!(t.l.1, 2);
    assert!(t.l.2);
    assert_eq!(t.l.3, None);
    assert_eq!(t.l.4.k, "v");
    assert_eq!(t.l.5, vec!["inner".to_owned()]);
    assert_eq!(t.nul, None);
    assert!(t.yes);
    assert!(!t.no);
    let old: AllTypes = modify
        .old_image_as()
        .expect("decodes")
        .expect("has an old image");
    assert_eq!(old.s, "héllo wörld ✓");
    let new: AllTypes = modify
        .new_image_as()
        .expect("decodes")
        .expect("has a new image");
    assert_eq!(new.s, "changed");
    #[derive(Deserialize)]
    struct Key {
        pk: String,
    }
    assert_eq!(
        insert.keys_as::<Key>().expect("keys decode").pk,
        "all-types"
    );
}

/// `new_image_as` documents that numbers keep every digit when decoded into a `String`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_38_digit_number_decodes_exactly_into_a_string() {
    let c = clients("bignumber");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let records = write_and_collect(&c, &arn).await;
    let exact: ExactNumbers = records[0]
        .new_image_as()
        .unwrap_or_else(|e| panic!("38-digit number into String: {e}"))
        .expect("has a new image");
    assert_eq!(exact.big, BIG);
    assert_eq!(exact.tiny, TINY);
    let mut ns = exact.ns;
    ns.sort();
    let mut want = vec!["1".to_owned(), "2.5".to_owned(), BIG.to_owned()];
    want.sort();
    assert_eq!(ns, want);
}
