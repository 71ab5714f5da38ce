//! Typed decoding of DynamoDB items that keeps every digit of a number.
//!
//! serde_dynamo's deserializer turns every `N` into an `i64`, `u64` or `f64` first, so a
//! 38-digit number cannot reach any target type intact. This deserializer reads the same items
//! the same way, except that numbers stay text until the target asks for a type: a `String`
//! field (or a decimal type that deserializes from a string) receives the digits exactly,
//! integer and float fields parse them, and self-describing targets (`serde_json::Value`) get an
//! integer when it fits, a float when at most 15 significant digits make it exact, and the
//! digits as a string otherwise.
//!
//! Conventions shared with serde_dynamo: `NULL` is `None`/unit; a map with one key is an enum
//! variant with data, a string a unit variant; string, number and binary sets are sequences.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use crate::record::{AttributeValue, Item};

/// Why a value did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure(String);

impl fmt::Display for DecodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeFailure {}

impl de::Error for DecodeFailure {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// Decode an item into `T`, keeping every digit of numbers that `T` stores as strings.
///
/// ```
/// use dynamodb_stream::record::{AttributeValue, Item};
/// #[derive(serde::Deserialize)]
/// struct Account { id: String, balance: String }
/// let item = Item::from(std::collections::HashMap::from([
///     ("id".to_owned(), AttributeValue::S("a-1".into())),
///     ("balance".to_owned(), AttributeValue::N("12345678901234567890123456789012345678".into())),
/// ]));
/// let account: Account = dynamodb_stream::decode::from_item(&item)?;
/// assert_eq!(account.balance.len(), 38);
/// # Ok::<(), dynamodb_stream::decode::DecodeFailure>(())
/// ```
pub fn from_item<T: DeserializeOwned>(item: &Item) -> Result<T, DecodeFailure> {
    T::deserialize(MapDe(item.inner()))
}

fn kind(v: &AttributeValue) -> &'static str {
    match v {
        AttributeValue::N(_) => "a number (N)",
        AttributeValue::S(_) => "a string (S)",
        AttributeValue::Bool(_) => "a boolean (BOOL)",
        AttributeValue::B(_) => "binary (B)",
        AttributeValue::Null(_) => "null (NULL)",
        AttributeValue::M(_) => "a map (M)",
        AttributeValue::L(_) => "a list (L)",
        AttributeValue::Ss(_) => "a string set (SS)",
        AttributeValue::Ns(_) => "a number set (NS)",
        AttributeValue::Bs(_) => "a binary set (BS)",
    }
}

/// An `N` as the most faithful self-describing value.
fn visit_number<'de, V: Visitor<'de>>(n: &str, visitor: V) -> Result<V::Value, DecodeFailure> {
    if let Ok(i) = n.parse::<i64>() {
        return visitor.visit_i64(i);
    }
    if let Ok(u) = n.parse::<u64>() {
        return visitor.visit_u64(u);
    }
    let significant = n
        .trim_start_matches(['-', '+'])
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect::<String>();
    let significant = significant
        .trim_start_matches('0')
        .trim_end_matches('0')
        .len();
    if significant <= 15 {
        if let Ok(f) = n.parse::<f64>() {
            return visitor.visit_f64(f);
        }
    }
    visitor.visit_str(n)
}

struct ValueDe<'a>(&'a AttributeValue);

macro_rules! parse_number {
    ($name:ident, $ty:ty, $visit:ident) => {
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
            match self.0 {
                AttributeValue::N(n) => n
                    .parse::<$ty>()
                    .map_err(|e| {
                        de::Error::custom(format!(
                            "number {n} does not fit {}: {e}",
                            stringify!($ty)
                        ))
                    })
                    .and_then(|v| visitor.$visit(v)),
                other => Err(de::Error::custom(format!(
                    "expected a number, found {}",
                    kind(other)
                ))),
            }
        }
    };
}

impl<'de, 'a> de::Deserializer<'de> for ValueDe<'a> {
    type Error = DecodeFailure;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
        match self.0 {
            AttributeValue::S(s) => visitor.visit_str(s),
            AttributeValue::N(n) => visit_number(n, visitor),
            AttributeValue::Bool(b) => visitor.visit_bool(*b),
            AttributeValue::B(b) => visitor.visit_bytes(b),
            AttributeValue::Null(_) => visitor.visit_unit(),
            AttributeValue::M(m) => visitor.visit_map(de::value::MapDeserializer::new(
                m.iter().map(|(k, v)| (k.as_str(), ValueDe(v))),
            )),
            AttributeValue::L(l) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(l.iter().map(ValueDe)))
            }
            AttributeValue::Ss(s) => visitor.visit_seq(de::value::SeqDeserializer::new(
                s.iter().map(|s| s.as_str()),
            )),
            AttributeValue::Ns(ns) => visitor.visit_seq(de::value::SeqDeserializer::new(
                ns.iter().map(|n| NumberDe(n)),
            )),
            AttributeValue::Bs(bs) => visitor.visit_seq(de::value::SeqDeserializer::new(
                bs.iter().map(|b| de::value::BytesDeserializer::new(b)),
            )),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
        match self.0 {
            // The point of this module: a number reaches a string target digit for digit.
            AttributeValue::S(s) | AttributeValue::N(s) => visitor.visit_str(s),
            other => Err(de::Error::custom(format!(
                "expected a string, found {}",
                kind(other)
            ))),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
        match self.0 {
            AttributeValue::Null(_) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeFailure> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
        match self.0 {
            AttributeValue::Bool(b) => visitor.visit_bool(*b),
            other => Err(de::Error::custom(format!(
                "expected a boolean, found {}",
                kind(other)
            ))),
        }
    }

    parse_number!(deserialize_i8, i8, visit_i8);
    parse_number!(deserialize_i16, i16, visit_i16);
    parse_number!(deserialize_i32, i32, visit_i32);
    parse_number!(deserialize_i64, i64, visit_i64);
    parse_number!(deserialize_i128, i128, visit_i128);
    parse_number!(deserialize_u8, u8, visit_u8);
    parse_number!(deserialize_u16, u16, visit_u16);
    parse_number!(deserialize_u32, u32, visit_u32);
    parse_number!(deserialize_u64, u64, visit_u64);
    parse_number!(deserialize_u128, u128, visit_u128);
    parse_number!(deserialize_f32, f32, visit_f32);
    parse_number!(deserialize_f64, f64, visit_f64);

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeFailure> {
        match self.0 {
            AttributeValue::S(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            AttributeValue::M(m) if m.len() == 1 => visitor.visit_enum(
                de::value::MapAccessDeserializer::new(de::value::MapDeserializer::new(
                    m.iter().map(|(k, v)| (k.as_str(), ValueDe(v))),
                )),
            ),
            other => Err(de::Error::custom(format!(
                "expected an enum (a string, or a map with one key), found {}",
                kind(other)
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl<'de, 'a> IntoDeserializer<'de, DecodeFailure> for ValueDe<'a> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// An element of a number set: a number without an attribute of its own.
struct NumberDe<'a>(&'a str);

macro_rules! parse_set_number {
    ($name:ident, $ty:ty, $visit:ident) => {
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
            let n = self.0;
            n.parse::<$ty>()
                .map_err(|e| {
                    de::Error::custom(format!("number {n} does not fit {}: {e}", stringify!($ty)))
                })
                .and_then(|v| visitor.$visit(v))
        }
    };
}

impl<'de, 'a> de::Deserializer<'de> for NumberDe<'a> {
    type Error = DecodeFailure;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
        visit_number(self.0, visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
        visitor.visit_str(self.0)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
        visitor.visit_str(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeFailure> {
        visitor.visit_newtype_struct(self)
    }

    parse_set_number!(deserialize_i8, i8, visit_i8);
    parse_set_number!(deserialize_i16, i16, visit_i16);
    parse_set_number!(deserialize_i32, i32, visit_i32);
    parse_set_number!(deserialize_i64, i64, visit_i64);
    parse_set_number!(deserialize_i128, i128, visit_i128);
    parse_set_number!(deserialize_u8, u8, visit_u8);
    parse_set_number!(deserialize_u16, u16, visit_u16);
    parse_set_number!(deserialize_u32, u32, visit_u32);
    parse_set_number!(deserialize_u64, u64, visit_u64);
    parse_set_number!(deserialize_u128, u128, visit_u128);
    parse_set_number!(deserialize_f32, f32, visit_f32);
    parse_set_number!(deserialize_f64, f64, visit_f64);

    serde::forward_to_deserialize_any! {
        bool char bytes byte_buf unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, 'a> IntoDeserializer<'de, DecodeFailure> for NumberDe<'a> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// The top-level item.
struct MapDe<'a>(&'a HashMap<String, AttributeValue>);

impl<'de, 'a> de::Deserializer<'de> for MapDe<'a> {
    type Error = DecodeFailure;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeFailure> {
        visitor.visit_map(de::value::MapDeserializer::new(
            self.0.iter().map(|(k, v)| (k.as_str(), ValueDe(v))),
        ))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn item(pairs: Vec<(&str, AttributeValue)>) -> Item {
        Item::from(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<HashMap<_, _>>(),
        )
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Status {
        Open,
        Shipped { carrier: String },
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Order {
        id: String,
        total: String,
        count: u32,
        price: f64,
        big: u128,
        flag: bool,
        note: Option<String>,
        missing: Option<String>,
        tags: BTreeSet<String>,
        scores: Vec<i64>,
        exact: Vec<String>,
        blob: serde_bytes_like::Bytes,
        status: Status,
        shipped: Status,
        nested: HashMap<String, Vec<u8>>,
        any: serde_json::Value,
    }

    mod serde_bytes_like {
        #[derive(Debug, PartialEq)]
        pub(super) struct Bytes(pub(super) Vec<u8>);
        impl<'de> serde::Deserialize<'de> for Bytes {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Bytes;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                        Ok(Bytes(v.to_vec()))
                    }
                }
                d.deserialize_bytes(V)
            }
        }
    }

    #[test]
    fn every_type_decodes_and_numbers_keep_their_digits() {
        let n38 = "12345678901234567890123456789012345678";
        let i = item(vec![
            ("id", AttributeValue::S("o-1".into())),
            ("total", AttributeValue::N(n38.into())),
            ("count", AttributeValue::N("7".into())),
            ("price", AttributeValue::N("12.5".into())),
            (
                "big",
                AttributeValue::N("340282366920938463463374607431768211455".into()),
            ),
            ("flag", AttributeValue::Bool(true)),
            ("note", AttributeValue::S("hi".into())),
            ("missing", AttributeValue::Null(true)),
            ("tags", AttributeValue::Ss(vec!["a".into(), "b".into()])),
            ("scores", AttributeValue::Ns(vec!["1".into(), "-2".into()])),
            ("exact", AttributeValue::Ns(vec![n38.into()])),
            ("blob", AttributeValue::B(vec![0, 1, 2])),
            ("status", AttributeValue::S("open".into())),
            (
                "shipped",
                AttributeValue::M(HashMap::from([(
                    "shipped".to_owned(),
                    AttributeValue::M(HashMap::from([(
                        "carrier".to_owned(),
                        AttributeValue::S("ups".into()),
                    )])),
                )])),
            ),
            (
                "nested",
                AttributeValue::M(HashMap::from([(
                    "x".to_owned(),
                    AttributeValue::L(vec![
                        AttributeValue::N("1".into()),
                        AttributeValue::N("2".into()),
                    ]),
                )])),
            ),
            (
                "any",
                AttributeValue::L(vec![
                    AttributeValue::N(n38.into()),
                    AttributeValue::N("1.5".into()),
                    AttributeValue::N("-3".into()),
                    AttributeValue::Null(true),
                ]),
            ),
        ]);
        let o: Order = from_item(&i).expect("decodes");
        assert_eq!(o.total, n38, "38 digits survive into a String");
        assert_eq!(o.exact, vec![n38.to_owned()]);
        assert_eq!(o.big, u128::MAX);
        assert_eq!((o.count, o.price, o.flag), (7, 12.5, true));
        assert_eq!(o.note.as_deref(), Some("hi"));
        assert_eq!(o.missing, None);
        assert_eq!(o.scores, vec![1, -2]);
        assert_eq!(o.blob.0, vec![0, 1, 2]);
        assert_eq!(o.status, Status::Open);
        assert_eq!(
            o.shipped,
            Status::Shipped {
                carrier: "ups".into()
            }
        );
        assert_eq!(o.nested["x"], vec![1, 2]);
        assert_eq!(o.any, serde_json::json!([n38, 1.5, -3, null]));
    }

    #[test]
    fn mismatches_say_what_was_found() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            n: u8,
        }
        let e = from_item::<T>(&item(vec![("n", AttributeValue::S("x".into()))])).unwrap_err();
        assert!(e.to_string().contains("found a string (S)"), "{e}");
        let e = from_item::<T>(&item(vec![("n", AttributeValue::N("300".into()))])).unwrap_err();
        assert!(
            e.to_string().contains("300") && e.to_string().contains("u8"),
            "{e}"
        );
        let e = from_item::<T>(&item(vec![])).unwrap_err();
        assert!(e.to_string().contains("missing field"), "{e}");
    }
}
