//! Records as JSON text, written straight into a byte buffer: `ddbstream tail`'s three output
//! formats and the failure sink's records.
//!
//! Nothing is cloned and no `serde_json::Value` tree is built: attribute names and values are
//! escaped from the record into the buffer (issue 16 measured the tree and the image clones at
//! half of `tail`'s CPU). Numbers are copied as DynamoDB sent them, digit for digit.
//!
//! Three formats ([`RecordFormat`]), the schema in `docs/cli.md`:
//!
//! - [`Compact`](RecordFormat::Compact): one flat object per change — `eventName`, `eventId`,
//!   `shardId`, `sequenceNumber`, `approximateCreationDateTime` (RFC 3339), `keys`, `newImage`,
//!   `oldImage`, and `userIdentity` for TTL deletions — with plain values.
//! - [`DynamoDbJson`](RecordFormat::DynamoDbJson): the record as DynamoDB Streams sends it and
//!   as Lambda hands it to a handler — `eventID`, `eventName`, `eventSource`, `awsRegion`,
//!   `dynamodb.{ApproximateCreationDateTime, Keys, NewImage, OldImage, SequenceNumber,
//!   SizeBytes}`, `eventSourceARN`, `userIdentity` — with typed attribute values
//!   (`{"S": "..."}`, `{"N": "12"}`, `{"SS": [...]}`, ...).
//! - [`Plain`](RecordFormat::Plain): the same envelope as `DynamoDbJson`, with plain values
//!   (what `unmarshall` gives a Lambda handler).
//!
//! Plain values, in `Compact` and `Plain`: strings, booleans and nulls as themselves, binary as
//! base64, maps as objects and lists as arrays, with attribute names in byte order. A number is
//! a JSON number — with exactly the digits DynamoDB sent — only when a reader that parses JSON
//! numbers into 64-bit doubles (jq, JavaScript) gets back the same value; any other number
//! (9007199254740993, a 38-digit value, 0.10000000000000000001) is a JSON string of its digits,
//! so no reader can round it. Sets are marked as sets: `{"SS": [..]}`, `{"NS": [..]}`,
//! `{"BS": [..]}` around their elements, never bare arrays.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::record::{AttributeValue, Item, RecordKind, StreamRecord};

/// How [`write_record`] writes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RecordFormat {
    /// One flat object with plain values (`ddbstream tail`'s default).
    #[default]
    Compact,
    /// The DynamoDB Streams / Lambda record with typed attribute values.
    DynamoDbJson,
    /// The DynamoDB Streams / Lambda record with plain values.
    Plain,
}

/// What a record line says that the record itself does not know: where it was read.
#[derive(Debug, Clone, Copy)]
pub struct RecordSource<'a> {
    /// The shard the record was read from.
    pub shard_id: &'a str,
    /// The stream (`eventSourceARN`; its region is `awsRegion`).
    pub stream_arn: &'a str,
}

/// Append `record` to `out` as one JSON object (no newline), in `format`.
///
/// ```
/// use dynamodb_stream::json::{write_record, RecordFormat, RecordSource};
/// use dynamodb_stream::record::{AttributeValue, Item};
/// use dynamodb_stream::{RecordKind, StreamRecord};
///
/// let mut keys = Item::default();
/// keys.insert("pk".into(), AttributeValue::S("o-1".into()));
/// let mut image = keys.clone();
/// image.insert("big".into(), AttributeValue::N("9007199254740993".into()));
/// image.insert("tags".into(), AttributeValue::Ss(vec!["a".into()]));
/// let record = StreamRecord::new(RecordKind::Insert, "000000000000000000001".parse()?, keys)
///     .with_images(None, Some(image));
/// let from = RecordSource { shard_id: "shardId-1", stream_arn: "arn:aws:dynamodb:us-east-1:1:table/t/stream/x" };
///
/// let mut line = Vec::new();
/// write_record(&mut line, RecordFormat::Compact, &from, &record);
/// let text = String::from_utf8(line)?;
/// assert!(text.contains(r#""newImage":{"big":"9007199254740993","pk":"o-1","tags":{"SS":["a"]}}"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_record(
    out: &mut Vec<u8>,
    format: RecordFormat,
    from: &RecordSource<'_>,
    record: &StreamRecord,
) {
    match format {
        RecordFormat::Compact => write_compact(out, from.shard_id, record),
        RecordFormat::DynamoDbJson => write_envelope(out, from, record, Values::Typed),
        RecordFormat::Plain => write_envelope(out, from, record, Values::Plain),
    }
}

/// Append `item` to `out` as a JSON object with plain values (see the module documentation).
pub fn write_plain_item(out: &mut Vec<u8>, item: &Item) {
    write_map(out, item.iter(), Values::Plain);
}

/// The record's event name: `INSERT`, `MODIFY`, `REMOVE`, or the name DynamoDB sent.
fn event_name(record: &StreamRecord) -> &str {
    match record.kind() {
        RecordKind::Insert => "INSERT",
        RecordKind::Modify => "MODIFY",
        RecordKind::Remove { .. } => "REMOVE",
        RecordKind::Unknown(name) => name,
    }
}

/// `tail`'s flat form. Field order is byte order of the names (the order the form always had).
fn write_compact(out: &mut Vec<u8>, shard_id: &str, record: &StreamRecord) {
    out.extend_from_slice(b"{\"approximateCreationDateTime\":");
    match record.approximate_creation_time() {
        Some(t) => write_str(out, &crate::record::rfc3339(t)),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"eventId\":");
    write_str(out, record.event_id());
    out.extend_from_slice(b",\"eventName\":");
    write_str(out, event_name(record));
    out.extend_from_slice(b",\"keys\":");
    write_map(out, record.keys().iter(), Values::Plain);
    out.extend_from_slice(b",\"newImage\":");
    write_image(out, record.new_image(), Values::Plain);
    out.extend_from_slice(b",\"oldImage\":");
    write_image(out, record.old_image(), Values::Plain);
    out.extend_from_slice(b",\"sequenceNumber\":");
    write_str(out, record.sequence_number().as_str());
    out.extend_from_slice(b",\"shardId\":");
    write_str(out, shard_id);
    if let Some(identity) = record.user_identity() {
        out.extend_from_slice(b",\"userIdentity\":{\"principalId\":");
        write_str(out, &identity.principal_id);
        out.extend_from_slice(b",\"type\":");
        write_str(out, &identity.kind);
        out.push(b'}');
    }
    out.push(b'}');
}

/// The DynamoDB Streams / Lambda record shape, in Lambda's field order.
fn write_envelope(
    out: &mut Vec<u8>,
    from: &RecordSource<'_>,
    record: &StreamRecord,
    values: Values,
) {
    out.extend_from_slice(b"{\"eventID\":");
    write_str(out, record.event_id());
    out.extend_from_slice(b",\"eventName\":");
    write_str(out, event_name(record));
    out.extend_from_slice(b",\"eventSource\":\"aws:dynamodb\",\"awsRegion\":");
    // arn:aws:dynamodb:REGION:ACCOUNT:table/...
    write_str(out, from.stream_arn.split(':').nth(3).unwrap_or(""));
    out.extend_from_slice(b",\"dynamodb\":{");
    if let Some(t) = record.approximate_creation_time() {
        out.extend_from_slice(b"\"ApproximateCreationDateTime\":");
        write_epoch_seconds(out, t);
        out.push(b',');
    }
    out.extend_from_slice(b"\"Keys\":");
    write_map(out, record.keys().iter(), values);
    if let Some(image) = record.new_image() {
        out.extend_from_slice(b",\"NewImage\":");
        write_map(out, image.iter(), values);
    }
    if let Some(image) = record.old_image() {
        out.extend_from_slice(b",\"OldImage\":");
        write_map(out, image.iter(), values);
    }
    out.extend_from_slice(b",\"SequenceNumber\":");
    write_str(out, record.sequence_number().as_str());
    out.extend_from_slice(b",\"SizeBytes\":");
    out.extend_from_slice(record.size_bytes().to_string().as_bytes());
    out.extend_from_slice(b"},\"eventSourceARN\":");
    write_str(out, from.stream_arn);
    if let Some(identity) = record.user_identity() {
        out.extend_from_slice(b",\"userIdentity\":{\"type\":");
        write_str(out, &identity.kind);
        out.extend_from_slice(b",\"principalId\":");
        write_str(out, &identity.principal_id);
        out.push(b'}');
    }
    out.push(b'}');
}

/// Seconds since the epoch as a JSON number, as DynamoDB Streams sends
/// `ApproximateCreationDateTime`: whole seconds, or with the milliseconds the record has.
fn write_epoch_seconds(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let text = match d.subsec_millis() {
        0 => d.as_secs().to_string(),
        ms => {
            let mut s = format!("{}.{ms:03}", d.as_secs());
            while s.ends_with('0') {
                s.pop();
            }
            s
        }
    };
    out.extend_from_slice(text.as_bytes());
}

/// Whether attribute values are written typed (`{"S": ".."}`) or plain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Values {
    Typed,
    Plain,
}

fn write_image(out: &mut Vec<u8>, image: Option<&Item>, values: Values) {
    match image {
        Some(image) => write_map(out, image.iter(), values),
        None => out.extend_from_slice(b"null"),
    }
}

/// A map's attributes in byte order of their names, so equal items are equal lines.
fn write_map<'a>(
    out: &mut Vec<u8>,
    attributes: impl Iterator<Item = (&'a String, &'a AttributeValue)>,
    values: Values,
) {
    let mut sorted: Vec<(&String, &AttributeValue)> = attributes.collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (name, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name);
        out.push(b':');
        write_value(out, value, values);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, value: &AttributeValue, values: Values) {
    use AttributeValue as A;
    match values {
        Values::Plain => match value {
            A::S(s) => write_str(out, s),
            A::N(n) => write_plain_number(out, n),
            A::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            A::Null(_) => out.extend_from_slice(b"null"),
            A::B(b) => write_str(out, &crate::record::base64_encode(b)),
            A::M(m) => write_map(out, m.iter(), values),
            A::L(l) => write_list(out, l.iter(), |out, v| write_value(out, v, values)),
            A::Ss(s) => write_set(out, "SS", s.iter(), |out, v| write_str(out, v)),
            A::Ns(n) => write_set(out, "NS", n.iter(), |out, v| write_plain_number(out, v)),
            A::Bs(b) => write_set(out, "BS", b.iter(), |out, v| {
                write_str(out, &crate::record::base64_encode(v))
            }),
        },
        Values::Typed => {
            out.push(b'{');
            match value {
                A::S(s) => typed(out, "S", |out| write_str(out, s)),
                A::N(n) => typed(out, "N", |out| write_str(out, n)),
                A::Bool(b) => typed(out, "BOOL", |out| {
                    out.extend_from_slice(if *b { b"true" } else { b"false" })
                }),
                A::Null(b) => typed(out, "NULL", |out| {
                    out.extend_from_slice(if *b { b"true" } else { b"false" })
                }),
                A::B(b) => typed(out, "B", |out| {
                    write_str(out, &crate::record::base64_encode(b))
                }),
                A::M(m) => typed(out, "M", |out| write_map(out, m.iter(), values)),
                A::L(l) => typed(out, "L", |out| {
                    write_list(out, l.iter(), |out, v| write_value(out, v, values))
                }),
                A::Ss(s) => typed(out, "SS", |out| {
                    write_list(out, s.iter(), |out, v| write_str(out, v))
                }),
                A::Ns(n) => typed(out, "NS", |out| {
                    write_list(out, n.iter(), |out, v| write_str(out, v))
                }),
                A::Bs(b) => typed(out, "BS", |out| {
                    write_list(out, b.iter(), |out, v| {
                        write_str(out, &crate::record::base64_encode(v))
                    })
                }),
            }
            out.push(b'}');
        }
    }
}

/// `"TYPE":<value>` inside an already opened object.
fn typed(out: &mut Vec<u8>, name: &str, value: impl FnOnce(&mut Vec<u8>)) {
    write_str(out, name);
    out.push(b':');
    value(out);
}

fn write_list<T>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = T>,
    mut each: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(b']');
}

/// A set in plain form: `{"SS":[...]}`, so it never looks like a list.
fn write_set<T>(
    out: &mut Vec<u8>,
    name: &str,
    items: impl Iterator<Item = T>,
    each: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'{');
    write_str(out, name);
    out.push(b':');
    write_list(out, items, each);
    out.push(b'}');
}

/// A DynamoDB number as plain JSON: its own digits as a JSON number when a double holds its
/// value, else a string of its digits (see the module documentation).
fn write_plain_number(out: &mut Vec<u8>, n: &str) {
    if survives_a_double(n) {
        out.extend_from_slice(n.as_bytes());
    } else {
        write_str(out, n);
    }
}

/// Whether `n` is a JSON number that a reader parsing numbers into doubles gets back unchanged
/// in value: `n` read as a double, written back in its shortest form, is the same decimal.
pub(crate) fn survives_a_double(n: &str) -> bool {
    let Some(exact) = Decimal::parse(n) else {
        return false;
    };
    // Fast path: distinct decimals of up to 15 significant digits are distinct doubles
    // (DBL_DIG), so the shortest form of the double is the decimal itself — far from the ends
    // of the double range, where the magnitude would overflow or lose digits.
    let magnitude = exact.exponent + exact.digits.len() as i64;
    if exact.digits.len() <= 15 && (-290..=290).contains(&magnitude) {
        return true;
    }
    let Ok(double) = n.parse::<f64>() else {
        return false;
    };
    if !double.is_finite() {
        return false;
    }
    // `{:e}` writes the shortest digits that read back as the same double.
    Decimal::parse_exp(&format!("{double:e}")).is_some_and(|shortest| shortest == exact)
}

/// A decimal number as significant digits (no leading or trailing zeros) times 10^exponent.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

impl Decimal {
    /// Parse JSON number syntax: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn parse(text: &str) -> Option<Decimal> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let negative = bytes.first() == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int = &text[int_start..i];
        if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
            return None;
        }
        let mut frac = "";
        if bytes.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac = &text[start..i];
            if frac.is_empty() {
                return None;
            }
        }
        let mut exponent: i64 = 0;
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            let sign_negative = match bytes.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &text[start..i];
            if digits.is_empty() || digits.len() > 6 {
                return None;
            }
            exponent = digits.parse::<i64>().ok()?;
            if sign_negative {
                exponent = -exponent;
            }
        }
        if i != bytes.len() {
            return None;
        }
        Some(Self::normalized(negative, int, frac, exponent))
    }

    /// Parse Rust's `{:e}` form of a finite double (`-1.5e-7`, `9.007199254740992e15`).
    fn parse_exp(text: &str) -> Option<Decimal> {
        let (mantissa, exponent) = text.split_once('e')?;
        let exponent: i64 = exponent.parse().ok()?;
        let negative = mantissa.starts_with('-');
        let mantissa = mantissa.trim_start_matches('-');
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        Some(Self::normalized(negative, int, frac, exponent))
    }

    fn normalized(negative: bool, int: &str, frac: &str, exponent: i64) -> Decimal {
        let mut digits: String = int.chars().chain(frac.chars()).collect();
        let mut exponent = exponent - frac.len() as i64;
        let trailing = digits.len() - digits.trim_end_matches('0').len();
        digits.truncate(digits.len() - trailing);
        exponent += trailing as i64;
        let digits = digits.trim_start_matches('0').to_owned();
        if digits.is_empty() {
            // Zero, whatever its sign and exponent.
            return Decimal {
                negative: false,
                digits,
                exponent: 0,
            };
        }
        Decimal {
            negative,
            digits,
            exponent,
        }
    }
}

/// A JSON string: `"`, `\` and control characters escaped exactly as `serde_json` escapes them
/// (so lines stay byte-identical to what `tail` printed before), everything else as is.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::record::UserIdentity;

    fn item(pairs: Vec<(&str, AttributeValue)>) -> Item {
        let mut item = Item::default();
        for (k, v) in pairs {
            item.insert(k.to_owned(), v);
        }
        item
    }

    fn text(format: RecordFormat, record: &StreamRecord) -> String {
        let mut out = Vec::new();
        let from = RecordSource {
            shard_id: "shardId-1",
            stream_arn: "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2024",
        };
        write_record(&mut out, format, &from, record);
        String::from_utf8(out).expect("UTF-8")
    }

    fn number(n: &str) -> String {
        let mut out = Vec::new();
        write_plain_number(&mut out, n);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn numbers_a_double_cannot_hold_are_strings() {
        for exact in [
            "0",
            "-0",
            "42",
            "-17",
            "9007199254740991",
            "9007199254740992",
            "1.5",
            "0.1",
            "-0.000001",
            "1E+3",
            "1e22",
            "123456789012345",
            "0.30000000000000004",
        ] {
            assert_eq!(number(exact), exact, "{exact} is exact as a double");
        }
        for inexact in [
            "9007199254740993",
            "-9007199254740993",
            "18446744073709551615",
            "12345678901234567890123456789012345678",
            "0.10000000000000000001",
            "1e400",
            "1e-400",
        ] {
            assert_eq!(number(inexact), format!("\"{inexact}\""), "{inexact}");
        }
        // Not JSON number syntax: kept, as a string.
        for odd in ["01", ".5", "5.", "+1", "1e", "", "-", "1.2.3", "NaN"] {
            assert_eq!(number(odd), format!("\"{odd}\""), "{odd:?}");
        }
    }

    #[test]
    fn every_plain_number_reads_back_exactly_through_a_double() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let digits: String = (0..rng.usize(1..40))
                .map(|i| {
                    let d = rng.u8(0..10);
                    char::from(b'0' + if i == 0 { d.max(1) } else { d })
                })
                .collect();
            let n = match rng.u8(0..3) {
                0 => digits,
                1 => format!("-{digits}"),
                _ => {
                    let at = rng.usize(0..digits.len());
                    let (a, b) = digits.split_at(at);
                    if a.is_empty() || b.is_empty() {
                        digits
                    } else {
                        format!("{a}.{b}")
                    }
                }
            };
            let written = number(&n);
            if !written.starts_with('"') {
                let read: f64 = written.parse().expect("a JSON number");
                let back = Decimal::parse_exp(&format!("{read:e}")).expect("shortest form");
                assert_eq!(
                    Some(back),
                    Decimal::parse(&n),
                    "{n} changes through a double"
                );
            }
        }
    }

    fn sample() -> StreamRecord {
        use AttributeValue as A;
        let keys = item(vec![("pk", A::S("o-1".into()))]);
        let new = item(vec![
            ("pk", A::S("o-1".into())),
            ("n", A::N("9007199254740993".into())),
            ("d", A::N("0.5".into())),
            ("ss", A::Ss(vec!["a".into(), "b\"c".into()])),
            ("ns", A::Ns(vec!["1".into(), "9007199254740993".into()])),
            ("bs", A::Bs(vec![vec![0, 1, 2]])),
            ("b", A::B(vec![255])),
            ("nul", A::Null(true)),
            ("yes", A::Bool(true)),
            (
                "m",
                A::M(
                    [(
                        "z".to_owned(),
                        A::L(vec![A::N("1".into()), A::S("\n".into())]),
                    )]
                    .into_iter()
                    .collect(),
                ),
            ),
        ]);
        StreamRecord::new(
            RecordKind::Remove { ttl: false },
            "000000000000000000042".parse().expect("seq"),
            keys,
        )
        .with_images(Some(new), None)
        .with_meta(
            "ev-1",
            Some(UNIX_EPOCH + Duration::from_millis(1_709_210_096_500)),
            26,
        )
        .with_user_identity(Some(UserIdentity {
            kind: "Service".into(),
            principal_id: "dynamodb.amazonaws.com".into(),
        }))
    }

    #[test]
    fn compact_form() {
        assert_eq!(
            text(RecordFormat::Compact, &sample()),
            concat!(
                r#"{"approximateCreationDateTime":"2024-02-29T12:34:56.500Z","eventId":"ev-1","#,
                r#""eventName":"REMOVE","keys":{"pk":"o-1"},"newImage":null,"#,
                r#""oldImage":{"b":"/w==","bs":{"BS":["AAEC"]},"d":0.5,"m":{"z":[1,"\n"]},"#,
                r#""n":"9007199254740993","ns":{"NS":[1,"9007199254740993"]},"nul":null,"#,
                r#""pk":"o-1","ss":{"SS":["a","b\"c"]},"yes":true},"#,
                r#""sequenceNumber":"000000000000000000042","shardId":"shardId-1","#,
                r#""userIdentity":{"principalId":"dynamodb.amazonaws.com","type":"Service"}}"#
            )
        );
    }

    #[test]
    fn dynamodb_json_form() {
        assert_eq!(
            text(RecordFormat::DynamoDbJson, &sample()),
            concat!(
                r#"{"eventID":"ev-1","eventName":"REMOVE","eventSource":"aws:dynamodb","#,
                r#""awsRegion":"eu-west-1","dynamodb":{"ApproximateCreationDateTime":1709210096.5,"#,
                r#""Keys":{"pk":{"S":"o-1"}},"OldImage":{"b":{"B":"/w=="},"bs":{"BS":["AAEC"]},"#,
                r#""d":{"N":"0.5"},"m":{"M":{"z":{"L":[{"N":"1"},{"S":"\n"}]}}},"#,
                r#""n":{"N":"9007199254740993"},"ns":{"NS":["1","9007199254740993"]},"#,
                r#""nul":{"NULL":true},"pk":{"S":"o-1"},"ss":{"SS":["a","b\"c"]},"#,
                r#""yes":{"BOOL":true}},"SequenceNumber":"000000000000000000042","SizeBytes":26},"#,
                r#""eventSourceARN":"arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2024","#,
                r#""userIdentity":{"type":"Service","principalId":"dynamodb.amazonaws.com"}}"#
            )
        );
    }

    #[test]
    fn plain_form_and_valid_json() {
        let plain = text(RecordFormat::Plain, &sample());
        assert!(
            plain.contains(r#""OldImage":{"b":"/w==","bs":{"BS":["AAEC"]},"d":0.5,"#),
            "{plain}"
        );
        for format in [
            RecordFormat::Compact,
            RecordFormat::DynamoDbJson,
            RecordFormat::Plain,
        ] {
            let line = text(format, &sample());
            serde_json::from_str::<serde_json::Value>(&line)
                .unwrap_or_else(|e| panic!("{format:?} is not JSON ({e}): {line}"));
        }
    }

    /// Keys sorted at every level, as `tail` printed them when it built a `serde_json` tree.
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                let sorted: std::collections::BTreeMap<String, Value> =
                    m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(sorted.into_iter().collect())
            }
            Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
            other => other,
        }
    }

    #[test]
    fn compact_is_what_tail_printed_where_that_was_right() {
        use crate::record::item_to_json;
        use AttributeValue as A;
        // Everything but numbers beyond 2^53 and sets, which the old form got wrong.
        let image = item(vec![
            ("pk", A::S("o-\"1\"\n é".into())),
            ("i", A::N("-42".into())),
            ("f", A::N("1.5".into())),
            ("big", A::N("12345678901234567890123456789012345678".into())),
            ("b", A::B(vec![1, 2, 3, 250])),
            ("t", A::Bool(false)),
            ("z", A::Null(true)),
            (
                "m",
                A::M(
                    [
                        ("y".to_owned(), A::L(vec![A::N("7".into()), A::Null(true)])),
                        ("x".to_owned(), A::S("".into())),
                    ]
                    .into_iter()
                    .collect(),
                ),
            ),
        ]);
        let keys = item(vec![("pk", A::S("o-\"1\"\n é".into()))]);
        for (kind, name, old, new) in [
            (RecordKind::Insert, "INSERT", None, Some(image.clone())),
            (
                RecordKind::Modify,
                "MODIFY",
                Some(image.clone()),
                Some(image.clone()),
            ),
            (
                RecordKind::Remove { ttl: false },
                "REMOVE",
                Some(image.clone()),
                None,
            ),
        ] {
            let record = StreamRecord::new(
                kind,
                "100000000000000000001".parse().expect("seq"),
                keys.clone(),
            )
            .with_images(old.clone(), new.clone())
            .with_meta(
                "e-1",
                Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                10,
            );
            let before = serde_json::json!({
                "eventName": name,
                "eventId": "e-1",
                "shardId": "shardId-1",
                "sequenceNumber": "100000000000000000001",
                "approximateCreationDateTime": "2023-11-14T22:13:20Z",
                "keys": item_to_json(&keys),
                "newImage": new.as_ref().map(item_to_json),
                "oldImage": old.as_ref().map(item_to_json),
            });
            assert_eq!(
                text(RecordFormat::Compact, &record),
                sorted(before).to_string(),
                "{name}"
            );
        }
    }

    #[test]
    fn strings_escape_like_serde_json() {
        for s in [
            "plain",
            "q\"b\\",
            "\u{0}\u{1f}\u{7f}\t\n\r\u{8}\u{c}",
            "é ü 日本 🎉",
            "",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).expect("UTF-8"),
                serde_json::to_string(s).expect("serde_json"),
                "{s:?}"
            );
        }
    }
}
