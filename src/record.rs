//! Stream records and their sequence numbers.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::DecodeError;

pub use serde_dynamo::{AttributeValue, Item};

/// A DynamoDB Streams sequence number: 21 to 40 decimal digits, ordered numerically.
///
/// Sequence numbers of one shard increase with every record; they are not contiguous. They are
/// compared as numbers, never as strings of different lengths.
///
/// ```
/// use dynamodb_stream::SequenceNumber;
/// let a: SequenceNumber = "900000000000000000001".parse()?;
/// let b: SequenceNumber = "1000000000000000000000".parse()?;
/// assert!(a < b);
/// # Ok::<(), dynamodb_stream::InvalidSequenceNumber>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SequenceNumber(Arc<str>);

/// A string that is not a valid [`SequenceNumber`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sequence number {0:?}: expected 21 to 40 decimal digits")]
pub struct InvalidSequenceNumber(pub String);

impl SequenceNumber {
    /// The fewest digits a sequence number has.
    pub const MIN_DIGITS: usize = 21;
    /// The most digits a sequence number has.
    pub const MAX_DIGITS: usize = 40;

    /// The digits as DynamoDB sent them.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn significant(&self) -> &str {
        let t = self.0.trim_start_matches('0');
        if t.is_empty() {
            "0"
        } else {
            t
        }
    }
}

impl std::str::FromStr for SequenceNumber {
    type Err = InvalidSequenceNumber;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (Self::MIN_DIGITS..=Self::MAX_DIGITS).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_digit());
        if ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(InvalidSequenceNumber(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SequenceNumber {
    type Error = InvalidSequenceNumber;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SequenceNumber> for String {
    fn from(s: SequenceNumber) -> Self {
        s.0.to_string()
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.significant(), other.significant());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SequenceNumber({})", self.0)
    }
}

/// What a record says happened to its item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// A new item was written.
    Insert,
    /// An existing item was changed.
    Modify,
    /// An item was deleted; `ttl` is true when DynamoDB's Time to Live deleted it (the record's
    /// user identity is `Service` / `dynamodb.amazonaws.com`).
    Remove {
        /// Deleted by TTL rather than by a client.
        ttl: bool,
    },
    /// An event name this crate does not know (DynamoDB Local sends TTL deletions this way).
    /// Delivered, never dropped: the handler decides.
    Unknown(String),
}

/// Who caused a record, when it was not a client request (today only TTL deletions).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserIdentity {
    /// `"Service"` for TTL deletions.
    pub kind: String,
    /// `"dynamodb.amazonaws.com"` for TTL deletions.
    pub principal_id: String,
}

impl UserIdentity {
    /// Whether this identity marks a Time to Live deletion.
    pub fn is_ttl(&self) -> bool {
        self.kind == "Service" && self.principal_id == "dynamodb.amazonaws.com"
    }
}

/// Which images a stream carries (fixed when the stream is enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StreamViewType {
    /// Only the key attributes.
    KeysOnly,
    /// The item after the change.
    NewImage,
    /// The item before the change.
    OldImage,
    /// Both.
    NewAndOldImages,
}

impl StreamViewType {
    /// The AWS name, e.g. `NEW_AND_OLD_IMAGES`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeysOnly => "KEYS_ONLY",
            Self::NewImage => "NEW_IMAGE",
            Self::OldImage => "OLD_IMAGE",
            Self::NewAndOldImages => "NEW_AND_OLD_IMAGES",
        }
    }
}

/// One change of one item, as read from a shard.
///
/// ```
/// # use dynamodb_stream::StreamRecord;
/// # fn f(record: &StreamRecord) -> Result<(), dynamodb_stream::DecodeError> {
/// #[derive(serde::Deserialize)]
/// struct Order { id: String, total: String }
/// if let Some(order) = record.new_image_as::<Order>()? {
///     println!("{} now totals {}", order.id, order.total);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq)]
pub struct StreamRecord {
    // Records are immutable once read and travel through several hands (the simulator's
    // retained log, batches, retries, failure sinks): sharing makes every clone a reference
    // count instead of a copy of three item maps.
    inner: Arc<RecordInner>,
}

#[derive(Debug, Clone, PartialEq)]
struct RecordInner {
    event_id: String,
    kind: RecordKind,
    keys: Item,
    new_image: Option<Item>,
    old_image: Option<Item>,
    sequence_number: SequenceNumber,
    approximate_creation_time: Option<SystemTime>,
    size_bytes: u64,
    user_identity: Option<UserIdentity>,
}

impl fmt::Debug for StreamRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.inner, f)
    }
}

impl StreamRecord {
    /// Build a record, e.g. for a custom [`StreamsApi`](crate::source::StreamsApi) or a test.
    ///
    /// A `Remove` with a TTL user identity becomes `Remove { ttl: true }`.
    pub fn new(kind: RecordKind, sequence_number: SequenceNumber, keys: Item) -> Self {
        Self {
            inner: Arc::new(RecordInner {
                event_id: String::new(),
                kind,
                keys,
                new_image: None,
                old_image: None,
                sequence_number,
                approximate_creation_time: None,
                size_bytes: 0,
                user_identity: None,
            }),
        }
    }

    /// Set the images (builder style).
    pub fn with_images(mut self, old_image: Option<Item>, new_image: Option<Item>) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.old_image = old_image;
        inner.new_image = new_image;
        self
    }

    /// Set the event id, creation time and size (builder style).
    pub fn with_meta(
        mut self,
        event_id: impl Into<String>,
        approximate_creation_time: Option<SystemTime>,
        size_bytes: u64,
    ) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.event_id = event_id.into();
        inner.approximate_creation_time = approximate_creation_time;
        inner.size_bytes = size_bytes;
        self
    }

    /// Set the user identity (builder style); a TTL identity turns `Remove` into a TTL removal.
    pub fn with_user_identity(mut self, identity: Option<UserIdentity>) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        if let (RecordKind::Remove { ttl }, Some(id)) = (&mut inner.kind, &identity) {
            *ttl = id.is_ttl();
        }
        inner.user_identity = identity;
        self
    }

    /// What happened.
    pub fn kind(&self) -> &RecordKind {
        &self.inner.kind
    }

    /// The record's unique id within the stream.
    pub fn event_id(&self) -> &str {
        &self.inner.event_id
    }

    /// The key attributes of the item.
    pub fn keys(&self) -> &Item {
        &self.inner.keys
    }

    /// The item after the change (streams with `NEW_IMAGE` or `NEW_AND_OLD_IMAGES`; absent for
    /// removals).
    pub fn new_image(&self) -> Option<&Item> {
        self.inner.new_image.as_ref()
    }

    /// The item before the change (streams with `OLD_IMAGE` or `NEW_AND_OLD_IMAGES`; absent for
    /// inserts).
    pub fn old_image(&self) -> Option<&Item> {
        self.inner.old_image.as_ref()
    }

    /// The new image, taken out of the record (copied when the record is shared).
    pub fn into_new_image(self) -> Option<Item> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner.new_image,
            Err(shared) => shared.new_image.clone(),
        }
    }

    /// The record's position in its shard.
    pub fn sequence_number(&self) -> &SequenceNumber {
        &self.inner.sequence_number
    }

    /// When the change was made, approximately (DynamoDB Local truncates to the minute).
    pub fn approximate_creation_time(&self) -> Option<SystemTime> {
        self.inner.approximate_creation_time
    }

    /// How long ago the change was made, measured against `now`.
    pub fn age_at(&self, now: SystemTime) -> Option<Duration> {
        self.inner
            .approximate_creation_time
            .and_then(|t| now.duration_since(t).ok())
    }

    /// The record's size as DynamoDB counts it.
    pub fn size_bytes(&self) -> u64 {
        self.inner.size_bytes
    }

    /// Who made the change, when it was not a client (TTL).
    pub fn user_identity(&self) -> Option<&UserIdentity> {
        self.inner.user_identity.as_ref()
    }

    /// The keys decoded into `T`.
    pub fn keys_as<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        self.decode("keys", &self.inner.keys)
    }

    /// The new image decoded into `T`, if the record has one.
    ///
    /// Numbers keep every digit when `T` stores them losslessly (a `String`, or a decimal type
    /// that deserializes from strings).
    pub fn new_image_as<T: DeserializeOwned>(&self) -> Result<Option<T>, DecodeError> {
        self.inner
            .new_image
            .as_ref()
            .map(|i| self.decode("new", i))
            .transpose()
    }

    /// The old image decoded into `T`, if the record has one.
    pub fn old_image_as<T: DeserializeOwned>(&self) -> Result<Option<T>, DecodeError> {
        self.inner
            .old_image
            .as_ref()
            .map(|i| self.decode("old", i))
            .transpose()
    }

    fn decode<T: DeserializeOwned>(
        &self,
        image: &'static str,
        item: &Item,
    ) -> Result<T, DecodeError> {
        crate::decode::from_item(item).map_err(|source| DecodeError {
            sequence_number: self.inner.sequence_number.clone(),
            image,
            source,
        })
    }

    /// A stable string for the item's key, e.g. for routing or maps: the key attributes sorted
    /// by name, each `name=value` with the value as JSON, joined by `|` — `pk="o-3"|sk=7`.
    ///
    /// String values keep their quotes on purpose: the string `"7"` and the number `7` stay
    /// different keys, and a `|` or `=` inside a string cannot run into the next attribute.
    /// The form never changes between versions (the SQLite replica stores it as its primary
    /// key); see [`item_key_string`].
    ///
    /// ```
    /// use dynamodb_stream::record::{AttributeValue, Item};
    /// use dynamodb_stream::{RecordKind, StreamRecord};
    /// let mut keys = Item::default();
    /// keys.insert("pk".into(), AttributeValue::S("o-3".into()));
    /// keys.insert("sk".into(), AttributeValue::N("7".into()));
    /// let record = StreamRecord::new(RecordKind::Insert, "000000000000000000001".parse()?, keys);
    /// assert_eq!(record.key_string(), r#"pk="o-3"|sk=7"#);
    /// # Ok::<(), dynamodb_stream::InvalidSequenceNumber>(())
    /// ```
    pub fn key_string(&self) -> String {
        item_key_string(&self.inner.keys)
    }
}

/// Render key attributes as a stable string — sorted attribute names, JSON values, e.g.
/// `pk="order-1"|sk=7` — the same string [`StreamRecord::key_string`] gives.
///
/// Values are rendered as [`attribute_to_json`] renders them (strings quoted, binary as quoted
/// base64, numbers bare unless too long for a 64-bit integer or a short decimal). A table's key
/// attributes each have one type, so within a table no two keys render alike.
pub fn item_key_string(keys: &Item) -> String {
    let mut names: Vec<&String> = keys.keys().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        if !out.is_empty() {
            out.push('|');
        }
        out.push_str(name);
        out.push('=');
        if let Some(v) = keys.get(name) {
            out.push_str(&attribute_to_json(v).to_string());
        }
    }
    out
}

/// An attribute as plain JSON. Numbers that would lose precision as JSON numbers stay strings of
/// digits; binary values render as base64 strings; sets become arrays.
pub fn attribute_to_json(value: &AttributeValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => number_to_json(n),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::B(b) => Value::String(base64_encode(b)),
        AttributeValue::M(m) => {
            let mut names: Vec<&String> = m.keys().collect();
            names.sort();
            Value::Object(
                names
                    .into_iter()
                    .filter_map(|k| m.get(k).map(|v| (k.clone(), attribute_to_json(v))))
                    .collect(),
            )
        }
        AttributeValue::L(l) => Value::Array(l.iter().map(attribute_to_json).collect()),
        AttributeValue::Ss(s) => Value::Array(s.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(n) => Value::Array(n.iter().map(|n| number_to_json(n)).collect()),
        AttributeValue::Bs(b) => {
            Value::Array(b.iter().map(|b| Value::String(base64_encode(b))).collect())
        }
    }
}

/// An item as a plain JSON object (see [`attribute_to_json`]).
pub fn item_to_json(item: &Item) -> serde_json::Value {
    attribute_to_json(&AttributeValue::M(item.inner().clone()))
}

fn number_to_json(n: &str) -> serde_json::Value {
    // An i64 or a short decimal survives as a JSON number; anything longer stays a string so
    // that 38-digit numbers are never rounded through f64.
    if let Ok(i) = n.parse::<i64>() {
        return serde_json::Value::from(i);
    }
    if n.len() <= 15 {
        if let Ok(f) = n.parse::<f64>() {
            if let Some(num) = serde_json::Number::from_f64(f) {
                return serde_json::Value::Number(num);
            }
        }
    }
    serde_json::Value::String(n.to_owned())
}

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `t` in RFC 3339, UTC: `2024-05-01T12:34:56Z`, with milliseconds when it has some (how the CLI
/// prints [`StreamRecord::approximate_creation_time`]).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
/// assert_eq!(dynamodb_stream::record::rfc3339(t), "2024-02-29T12:34:56.789Z");
/// ```
pub fn rfc3339(t: SystemTime) -> String {
    let (year, month, day, h, m, sec, ms) = utc_parts(t);
    let time = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}");
    match ms {
        0 => format!("{time}Z"),
        ms => format!("{time}.{ms:03}Z"),
    }
}

/// Calendar date and time of day (UTC) of `t`: year, month, day, hours, minutes, seconds,
/// milliseconds. Times before 1970 count as 1970-01-01.
pub(crate) fn utc_parts(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    (
        year,
        month,
        day,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        d.subsec_millis(),
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Milliseconds since the Unix epoch, for storage.
pub(crate) fn system_time_to_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The inverse of [`system_time_to_millis`].
pub(crate) fn millis_to_system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str) -> SequenceNumber {
        s.parse().expect("valid")
    }

    #[test]
    fn orders_numerically_across_lengths() {
        assert!(seq("999999999999999999999") < seq("1000000000000000000000"));
        assert!(seq("000000000000000000002") > seq("000000000000000000001"));
        assert_eq!(
            seq("000000000000000000002").cmp(&seq("0000000000000000000002")),
            Ordering::Equal
        );
    }

    #[test]
    fn rejects_bad_input_with_the_value() {
        let err = "12ab".parse::<SequenceNumber>().unwrap_err();
        assert!(err.to_string().contains("12ab"));
        assert!("1".repeat(41).parse::<SequenceNumber>().is_err());
        assert!("1".repeat(20).parse::<SequenceNumber>().is_err());
    }

    #[test]
    fn big_numbers_stay_exact_in_json() {
        let n = "12345678901234567890123456789012345678";
        assert_eq!(number_to_json(n), serde_json::Value::String(n.into()));
        assert_eq!(number_to_json("42"), serde_json::json!(42));
        assert_eq!(number_to_json("1.5"), serde_json::json!(1.5));
    }

    #[test]
    fn key_strings_are_stable() {
        // The SQLite replica's primary keys: these forms must never change.
        let keys = |pairs: Vec<(&str, AttributeValue)>| {
            let mut item = Item::default();
            for (k, v) in pairs {
                item.insert(k.to_owned(), v);
            }
            item
        };
        use AttributeValue as A;
        assert_eq!(
            item_key_string(&keys(vec![("pk", A::S("o-3".into()))])),
            r#"pk="o-3""#
        );
        assert_eq!(
            item_key_string(&keys(vec![
                ("sk", A::N("7".into())),
                ("pk", A::S("a|b=c".into()))
            ])),
            r#"pk="a|b=c"|sk=7"#
        );
        assert_eq!(
            item_key_string(&keys(vec![("pk", A::S("7".into()))])),
            r#"pk="7""#
        );
        assert_eq!(
            item_key_string(&keys(vec![("id", A::N("9007199254740993".into()))])),
            "id=9007199254740993"
        );
        assert_eq!(
            item_key_string(&keys(vec![("b", A::B(vec![1, 2]))])),
            r#"b="AQI=""#
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(i.as_bytes()), o);
        }
    }

    #[test]
    fn rfc3339_renders_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_799)),
            "2099-12-31T23:59:59Z"
        );
    }

    #[test]
    fn ttl_identity_marks_removals() {
        let r = StreamRecord::new(
            RecordKind::Remove { ttl: false },
            seq(&"1".repeat(21)),
            Item::default(),
        )
        .with_user_identity(Some(UserIdentity {
            kind: "Service".into(),
            principal_id: "dynamodb.amazonaws.com".into(),
        }));
        assert_eq!(r.kind(), &RecordKind::Remove { ttl: true });
    }

    proptest! {
        #[test]
        fn order_matches_u128_order(a in 10u128.pow(20)..u128::MAX, b in 10u128.pow(20)..u128::MAX) {
            prop_assert_eq!(seq(&a.to_string()).cmp(&seq(&b.to_string())), a.cmp(&b));
        }
    }
}
