//! A GetRecords response body, read straight into this crate's [`StreamRecord`]s.
//!
//! Why this exists: through the SDK, every page was parsed into the SDK's own types and then
//! rebuilt, attribute by attribute, into [`Item`]s — two passes and two sets of allocations per
//! attribute, 60–70 % of the consumer's CPU on a busy shard (docs/benchmarks.md). Reading the
//! JSON 1.0 body once, directly into the records the consumer hands on, removes one of them.
//!
//! The reader is deliberately strict and falls back rather than guesses: anything it does not
//! accept (a malformed body, a record without a sequence number, an attribute type it does not
//! know) is an error here, and the caller then lets the SDK's own deserializer read the same
//! body, so odd answers get exactly the SDK path's behaviour and error messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::record::{Item, RecordKind, SequenceNumber, StreamRecord, UserIdentity};

/// One GetRecords answer: the records in order and the iterator for the next call.
#[derive(Debug)]
pub(crate) struct WirePage {
    pub(crate) records: Vec<StreamRecord>,
    pub(crate) next_shard_iterator: Option<String>,
}

/// Why the fast reader declined a body (the SDK path then reads it).
#[derive(Debug)]
pub(crate) struct NotAccepted(pub(crate) String);

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Page {
    #[serde(default)]
    records: Option<Vec<Record>>,
    #[serde(default)]
    next_shard_iterator: Option<String>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventID", default)]
    event_id: Option<String>,
    #[serde(rename = "eventName", default)]
    event_name: Option<String>,
    #[serde(rename = "dynamodb", default)]
    data: Option<Data>,
    #[serde(rename = "userIdentity", default)]
    user_identity: Option<Identity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Data {
    #[serde(default)]
    approximate_creation_date_time: Option<f64>,
    #[serde(default)]
    keys: Option<Item>,
    #[serde(default)]
    new_image: Option<Item>,
    #[serde(default)]
    old_image: Option<Item>,
    #[serde(default)]
    sequence_number: Option<String>,
    #[serde(default)]
    size_bytes: Option<i64>,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "PrincipalId", default)]
    principal_id: Option<String>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
}

/// Read a successful GetRecords body.
pub(crate) fn parse_get_records(body: &[u8]) -> Result<WirePage, NotAccepted> {
    let page: Page = serde_json::from_slice(body).map_err(|e| NotAccepted(format!("body: {e}")))?;
    let records = page
        .records
        .unwrap_or_default()
        .into_iter()
        .map(into_record)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WirePage {
        records,
        next_shard_iterator: page.next_shard_iterator,
    })
}

fn into_record(record: Record) -> Result<StreamRecord, NotAccepted> {
    let data = record
        .data
        .ok_or_else(|| NotAccepted("a record without a dynamodb section".into()))?;
    let sequence_number: SequenceNumber = data
        .sequence_number
        .ok_or_else(|| NotAccepted("a record without a SequenceNumber".into()))?
        .parse()
        .map_err(|e| NotAccepted(format!("{e}")))?;
    let kind = match record.event_name.as_deref() {
        Some("INSERT") => RecordKind::Insert,
        Some("MODIFY") => RecordKind::Modify,
        Some("REMOVE") => RecordKind::Remove { ttl: false },
        Some(other) => RecordKind::Unknown(other.to_owned()),
        None => RecordKind::Unknown(String::new()),
    };
    let created = match data.approximate_creation_date_time {
        Some(secs) => Some(epoch_seconds(secs)?),
        None => None,
    };
    let size = data
        .size_bytes
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(0);
    let identity = record.user_identity.map(|id| UserIdentity {
        kind: id.kind.unwrap_or_default(),
        principal_id: id.principal_id.unwrap_or_default(),
    });
    Ok(
        StreamRecord::new(kind, sequence_number, data.keys.unwrap_or_default())
            .with_images(data.old_image, data.new_image)
            .with_meta(record.event_id.unwrap_or_default(), created, size)
            .with_user_identity(identity),
    )
}

/// `ApproximateCreationDateTime` is epoch seconds, possibly fractional. A value before 1970 or
/// beyond what `SystemTime` holds is left to the SDK path, which has its own rules for it.
fn epoch_seconds(secs: f64) -> Result<SystemTime, NotAccepted> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .ok_or_else(|| NotAccepted(format!("ApproximateCreationDateTime {secs}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AttributeValue;

    const PAGE: &str = r#"{"Records":[
        {"awsRegion":"us-east-1","eventID":"e1","eventName":"INSERT","eventSource":"aws:dynamodb",
         "eventVersion":"1.1","dynamodb":{"ApproximateCreationDateTime":1700000000,
         "Keys":{"pk":{"S":"a"}},"NewImage":{"pk":{"S":"a"},"n":{"N":"1.5"},"b":{"B":"AAE="},
         "bs":{"BS":["AAE=","Ag=="]},"ss":{"SS":["x","y"]},"ns":{"NS":["1","2"]},
         "m":{"M":{"inner":{"L":[{"NULL":true},{"BOOL":false}]}}}},
         "SequenceNumber":"100000000000000000001","SizeBytes":42,"StreamViewType":"NEW_AND_OLD_IMAGES"}},
        {"eventID":"e2","eventName":"REMOVE","dynamodb":{"Keys":{"pk":{"S":"a"}},
         "OldImage":{"pk":{"S":"a"}},"SequenceNumber":"100000000000000000002","SizeBytes":7},
         "userIdentity":{"PrincipalId":"dynamodb.amazonaws.com","Type":"Service"}}
        ],"NextShardIterator":"next-it"}"#;

    #[test]
    fn reads_every_attribute_type_and_the_metadata() {
        let page = parse_get_records(PAGE.as_bytes()).expect("accepted");
        assert_eq!(page.next_shard_iterator.as_deref(), Some("next-it"));
        assert_eq!(page.records.len(), 2);
        let insert = &page.records[0];
        assert_eq!(insert.kind(), &RecordKind::Insert);
        assert_eq!(insert.sequence_number().as_str(), "100000000000000000001");
        assert_eq!(insert.event_id(), "e1");
        assert_eq!(insert.size_bytes(), 42);
        assert_eq!(
            insert.approximate_creation_time(),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        let image = insert.new_image().expect("new image");
        assert_eq!(image.get("b"), Some(&AttributeValue::B(vec![0, 1])));
        assert_eq!(
            image.get("bs"),
            Some(&AttributeValue::Bs(vec![vec![0, 1], vec![2]]))
        );
        assert_eq!(image.get("n"), Some(&AttributeValue::N("1.5".into())));
        let remove = &page.records[1];
        assert_eq!(remove.kind(), &RecordKind::Remove { ttl: true });
        assert!(remove.new_image().is_none());
        assert!(remove.old_image().is_some());
    }

    #[test]
    fn reads_the_benchmark_page_shape() {
        // One record of the canned endpoint's pages (docs/benchmarks.md).
        let body = br#"{"Records":[{"awsRegion":"us-east-1","eventID":"0123456789abcdef0123456789abcdef","eventName":"MODIFY",
         "eventSource":"aws:dynamodb","eventVersion":"1.1",
         "dynamodb":{"ApproximateCreationDateTime":1700000000,"SequenceNumber":"100000000000000000002",
           "SizeBytes":412,"StreamViewType":"NEW_AND_OLD_IMAGES",
           "Keys":{"pk":{"S":"cust#000001"},"sk":{"S":"ord#00000001"}},
           "NewImage":{"pk":{"S":"cust#000001"},"sk":{"S":"ord#00000001"},"status":{"S":"SHIPPED"},
             "amount":{"N":"1.01"},"gift":{"BOOL":false},"tags":{"SS":["vip","eu-1"]},
             "address":{"M":{"street":{"S":"2 Elm St"},"zip":{"S":"00001"}}},
             "lines":{"L":[{"M":{"sku":{"S":"sku-000001"},"qty":{"N":"2"}}}]}},
           "OldImage":{"pk":{"S":"cust#000001"},"sk":{"S":"ord#00000001"},"status":{"S":"PAID"}}}}],
         "NextShardIterator":"it"}"#;
        let page = parse_get_records(body).expect("accepted");
        let image = page.records[0].new_image().expect("new image");
        assert_eq!(image.len(), 8);
        assert_eq!(image.get("gift"), Some(&AttributeValue::Bool(false)));
    }

    #[test]
    fn escaped_strings_are_read_too() {
        // `\/` is `/` in JSON: base64 and strings may arrive escaped.
        let body = br#"{"Records":[{"eventName":"INSERT","dynamodb":{"SequenceNumber":"100000000000000000001","Keys":{"k\u00e9":{"S":"a\/b\n"}},"NewImage":{"b":{"B":"\/w=="},"bs":{"BS":["\/w==","AA=="]}}}}]}"#;
        let page = parse_get_records(body).expect("accepted");
        let record = &page.records[0];
        assert_eq!(
            record.keys().get("k\u{e9}"),
            Some(&AttributeValue::S("a/b\n".into()))
        );
        let image = record.new_image().expect("new image");
        assert_eq!(image.get("b"), Some(&AttributeValue::B(vec![0xff])));
        assert_eq!(
            image.get("bs"),
            Some(&AttributeValue::Bs(vec![vec![0xff], vec![0]]))
        );
    }

    #[test]
    fn the_last_page_of_a_closed_shard_has_no_iterator() {
        let page = parse_get_records(br#"{"Records":[]}"#).expect("accepted");
        assert!(page.records.is_empty());
        assert!(page.next_shard_iterator.is_none());
    }

    #[test]
    fn declines_what_it_does_not_know_instead_of_guessing() {
        for body in [
            // Not JSON at all, or cut short.
            &b"<html>"[..],
            br#"{"Records":[{"eventID":"x""#,
            // No sequence number, a bad one, no dynamodb section.
            br#"{"Records":[{"eventName":"INSERT","dynamodb":{"Keys":{}}}]}"#,
            br#"{"Records":[{"eventName":"INSERT","dynamodb":{"SequenceNumber":"12"}}]}"#,
            br#"{"Records":[{"eventName":"INSERT"}]}"#,
            // An attribute type that does not exist (yet).
            br#"{"Records":[{"dynamodb":{"SequenceNumber":"100000000000000000001","NewImage":{"a":{"X":"1"}}}}]}"#,
            // A creation time before 1970.
            br#"{"Records":[{"dynamodb":{"SequenceNumber":"100000000000000000001","ApproximateCreationDateTime":-5}}]}"#,
        ] {
            assert!(
                parse_get_records(body).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
