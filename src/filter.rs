//! Declarative record filters in AWS Lambda's event-filtering syntax (`FilterCriteria`).
//!
//! A pattern is matched against a record as Lambda sees it — the record's DynamoDB-JSON form
//! (`eventName`, `dynamodb.Keys`, `dynamodb.NewImage`, `dynamodb.OldImage`, typed attribute
//! values) — but evaluated on the [`StreamRecord`] itself, with no JSON built per record.
//!
//! The invariant: for every pattern this module accepts, a record matches exactly when Lambda's
//! rules accept its DynamoDB-JSON form, with one deliberate difference — numbers in a pattern
//! (`[5]`, `{"numeric": [">", 0]}`) also compare with `N` values (as doubles), which Lambda sees
//! as strings and never matches numerically. `filter::tests` checks it against a naive matcher
//! walking that JSON. Patterns are parsed and checked against
//! the record's shape when built: a field a record never has, an operator Lambda does not know,
//! a rule where a DynamoDB type (`{"S": [...]}`) belongs — each is a [`FilterError`], never a
//! pattern that silently matches nothing.
//!
//! Rules of matching (as Lambda's):
//! - fields of one pattern are ANDed; the values in a field's array are ORed; patterns of one
//!   criteria are ORed;
//! - a value is `"text"`, a number, `true`/`false`, `null`, or an object with one operator:
//!   `prefix`, `suffix`, `equals-ignore-case`, `anything-but` (a value, a list, or
//!   `{"prefix": ..}` / `{"suffix": ..}`), `numeric` (`["=", 5]`, `[">", 0, "<=", 5]`),
//!   `exists` (`true`/`false`);
//! - a set or list attribute (`SS`, `NS`, `BS`, `L`) matches when one of its elements does; an
//!   empty list counts as absent;
//! - only `{"exists": false}` matches a field the record does not have; `anything-but` needs
//!   the field present.
//!
//! ```
//! use dynamodb_stream::filter::FilterCriteria;
//! use dynamodb_stream::record::{AttributeValue, Item};
//! use dynamodb_stream::{RecordKind, StreamRecord};
//!
//! let criteria = FilterCriteria::from_patterns([
//!     r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}}}}"#,
//!     r#"{"dynamodb": {"NewImage": {"total": {"N": [{"numeric": [">", 100]}]}}}}"#,
//! ])?;
//! let mut image = Item::default();
//! image.insert("status".into(), AttributeValue::S("PENDING".into()));
//! image.insert("total".into(), AttributeValue::N("250".into()));
//! let record = StreamRecord::new(RecordKind::Insert, "000000000000000000001".parse()?, Item::default())
//!     .with_images(None, Some(image));
//! assert!(criteria.matches(&record)); // by the second pattern
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use crate::record::{base64_encode, AttributeValue, RecordKind, StreamRecord};

/// Several patterns, ORed: a record passes when one of them matches (Lambda's
/// `FilterCriteria`). Criteria without patterns let every record pass, as in Lambda.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterCriteria {
    patterns: Vec<FilterPattern>,
}

/// One pattern (one of Lambda's `Filters[].Pattern`), parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPattern {
    root: Node,
}

/// What kind of mistake a [`FilterError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FilterErrorKind {
    /// The text is not JSON, or not a pattern's or a criteria's JSON form.
    Syntax,
    /// A field no record has (or one this crate cannot know, such as `awsRegion`).
    UnknownField,
    /// An object where rules belong, or rules where an object belongs.
    Shape,
    /// An operator Lambda's filters do not have (or this crate does not support).
    UnknownOperator,
    /// An operator with the wrong operand.
    BadOperand,
}

/// A pattern that cannot be used, with where it is wrong:
/// `filter 2: "dynamodb.NewImage.status.S": "numeric" needs pairs of an operator and a number`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FilterError {
    filter: Option<usize>,
    path: String,
    kind: FilterErrorKind,
    problem: String,
}

impl FilterError {
    fn new(path: &[&str], kind: FilterErrorKind, problem: impl Into<String>) -> Self {
        Self {
            filter: None,
            path: path.join("."),
            kind,
            problem: problem.into(),
        }
    }

    /// Which filter, counted from 1, when the pattern was one of several.
    pub fn filter(&self) -> Option<usize> {
        self.filter
    }

    /// The dotted path in the pattern (`dynamodb.NewImage.status.S`); empty for the whole.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What kind of mistake it is.
    pub fn kind(&self) -> FilterErrorKind {
        self.kind
    }

    fn in_filter(mut self, index: usize) -> Self {
        self.filter = Some(index + 1);
        self
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.filter {
            write!(f, "filter {n}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{:?}: ", self.path)?;
        }
        f.write_str(&self.problem)
    }
}

impl FilterCriteria {
    /// Criteria from patterns, each a JSON string as in Lambda's `Filters[].Pattern`.
    pub fn from_patterns<I, S>(patterns: I) -> Result<Self, FilterError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .enumerate()
            .map(|(i, p)| FilterPattern::parse(p.as_ref()).map_err(|e| e.in_filter(i)))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Criteria from a JSON document (a file, a configuration entry): Lambda's form
    /// `{"Filters": [{"Pattern": "<pattern as a JSON string>"}, ...]}`, an array of patterns
    /// (objects, or JSON strings), or one pattern object.
    ///
    /// ```
    /// use dynamodb_stream::filter::FilterCriteria;
    /// let lambda = FilterCriteria::from_json(
    ///     r#"{"Filters": [{"Pattern": "{\"eventName\": [\"REMOVE\"]}"}]}"#,
    /// )?;
    /// let array = FilterCriteria::from_json(r#"[{"eventName": ["REMOVE"]}]"#)?;
    /// assert_eq!(lambda, array);
    /// # Ok::<(), dynamodb_stream::filter::FilterError>(())
    /// ```
    pub fn from_json(text: &str) -> Result<Self, FilterError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| {
            FilterError::new(&[], FilterErrorKind::Syntax, format!("not JSON ({e})"))
        })?;
        let entries: Vec<Value> = match doc {
            Value::Object(mut o) if o.contains_key("Filters") => {
                let Some(Value::Array(filters)) = o.remove("Filters") else {
                    return Err(FilterError::new(
                        &["Filters"],
                        FilterErrorKind::Syntax,
                        "expected an array of {\"Pattern\": \"...\"}",
                    ));
                };
                let mut entries = Vec::with_capacity(filters.len());
                for (i, f) in filters.into_iter().enumerate() {
                    match f {
                        Value::Object(mut f) if f.len() == 1 && f.contains_key("Pattern") => {
                            entries.push(f.remove("Pattern").unwrap_or(Value::Null));
                        }
                        _ => {
                            return Err(FilterError::new(
                                &[],
                                FilterErrorKind::Syntax,
                                "expected {\"Pattern\": \"<pattern as a JSON string>\"}",
                            )
                            .in_filter(i))
                        }
                    }
                }
                entries
            }
            Value::Array(entries) => entries,
            pattern @ Value::Object(_) => vec![pattern],
            _ => {
                return Err(FilterError::new(
                    &[],
                    FilterErrorKind::Syntax,
                    "expected {\"Filters\": [...]}, an array of patterns, or a pattern",
                ))
            }
        };
        let patterns = entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                match entry {
                    // Lambda's form: the pattern is itself a JSON string.
                    Value::String(text) => FilterPattern::parse(&text),
                    value => FilterPattern::from_value(&value),
                }
                .map_err(|e| e.in_filter(i))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Add a pattern (ORed with the others).
    pub fn or(mut self, pattern: FilterPattern) -> Self {
        self.patterns.push(pattern);
        self
    }

    /// The patterns.
    pub fn patterns(&self) -> &[FilterPattern] {
        &self.patterns
    }

    /// Whether there are no patterns (every record passes).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `record` passes: one pattern matches, or there are none.
    pub fn matches(&self, record: &StreamRecord) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(record))
    }
}

impl std::str::FromStr for FilterCriteria {
    type Err = FilterError;
    /// The same as [`FilterCriteria::from_json`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_json(s)
    }
}

impl FilterPattern {
    /// Parse one pattern's JSON text.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            FilterError::new(
                &[],
                FilterErrorKind::Syntax,
                format!("the pattern is not JSON ({e})"),
            )
        })?;
        Self::from_value(&value)
    }

    /// A pattern from its JSON value.
    pub fn from_value(value: &Value) -> Result<Self, FilterError> {
        let mut path = Vec::new();
        let root = parse_node(value, Shape::Record, &mut path)?;
        Ok(Self { root })
    }

    /// Whether `record` matches.
    pub fn matches(&self, record: &StreamRecord) -> bool {
        node_matches(&self.root, &View::Record(record))
    }
}

impl std::str::FromStr for FilterPattern {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// ---- the compiled form ---------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Every field must match (the value at a missing field is absent).
    Fields(Vec<(String, Node)>),
    /// One of the rules must match the value there.
    Rules(Vec<Rule>),
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    Equals(Literal),
    Prefix(String),
    Suffix(String),
    /// Kept lowercased.
    EqualsIgnoreCase(String),
    AnythingBut(Vec<Literal>),
    AnythingButPrefix(String),
    AnythingButSuffix(String),
    Numeric(Vec<(Cmp, f64)>),
    Exists(bool),
}

/// What the record has at a place in a pattern: the shape the pattern is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Record,
    Identity,
    Dynamodb,
    /// Keys, images and `M` values: attribute names, each a typed value.
    Item,
    /// A typed value: `{"S": ...}`, `{"M": {...}}`, ...
    Attribute,
    /// A scalar (or a set of them): rules.
    Leaf,
}

const RECORD_FIELDS: &str = "eventName, eventID, eventSource, userIdentity and dynamodb";
const DYNAMODB_FIELDS: &str =
    "Keys, NewImage, OldImage, SequenceNumber, SizeBytes and ApproximateCreationDateTime";
const TYPES: &str = "S, N, B, BOOL, NULL, M, L, SS, NS or BS";
const OPERATORS: &str = "prefix, suffix, equals-ignore-case, anything-but, numeric or exists";

/// The shape of `field` inside a `shape`, or why there is none.
fn field_shape(shape: Shape, field: &str) -> Result<Shape, String> {
    Ok(match (shape, field) {
        (_, "$or") => {
            return Err(
                "\"$or\" is not supported: give several filters instead (they are ORed)".into(),
            )
        }
        (Shape::Record, "eventName" | "eventID" | "eventSource") => Shape::Leaf,
        (Shape::Record, "userIdentity") => Shape::Identity,
        (Shape::Record, "dynamodb") => Shape::Dynamodb,
        (Shape::Record, other) => {
            return Err(format!(
                "unknown field {other:?}: a pattern can match {RECORD_FIELDS}"
            ))
        }
        (Shape::Identity, "type" | "principalId") => Shape::Leaf,
        (Shape::Identity, other) => {
            return Err(format!(
                "unknown field {other:?}: userIdentity has type and principalId"
            ))
        }
        (Shape::Dynamodb, "Keys" | "NewImage" | "OldImage") => Shape::Item,
        (Shape::Dynamodb, "SequenceNumber" | "SizeBytes" | "ApproximateCreationDateTime") => {
            Shape::Leaf
        }
        (Shape::Dynamodb, other) => {
            return Err(format!(
                "unknown field {other:?}: dynamodb has {DYNAMODB_FIELDS}"
            ))
        }
        (Shape::Item, _) => Shape::Attribute,
        (Shape::Attribute, "S" | "N" | "B" | "BOOL" | "NULL" | "SS" | "NS" | "BS") => Shape::Leaf,
        (Shape::Attribute, "M") => Shape::Item,
        (Shape::Attribute, "L") => Shape::Attribute,
        (Shape::Attribute, other) => {
            return Err(format!("unknown DynamoDB type {other:?}: expected {TYPES}"))
        }
        (Shape::Leaf, other) => return Err(format!("unexpected field {other:?}")),
    })
}

fn parse_node<'p>(
    value: &'p Value,
    shape: Shape,
    path: &mut Vec<&'p str>,
) -> Result<Node, FilterError> {
    if shape == Shape::Leaf {
        return parse_rules(value, path).map(Node::Rules);
    }
    let Value::Object(fields) = value else {
        let problem = match shape {
            Shape::Attribute => format!(
                "give the attribute's DynamoDB type with its rules, e.g. {{\"S\": [\"text\"]}} \
                 (one of {TYPES})"
            ),
            Shape::Record => "a pattern is a JSON object".to_owned(),
            _ => "expected an object of fields, not rules".to_owned(),
        };
        return Err(FilterError::new(path, FilterErrorKind::Shape, problem));
    };
    let mut out = Vec::with_capacity(fields.len());
    for (name, sub) in fields {
        path.push(name);
        let sub_shape = field_shape(shape, name).map_err(|problem| {
            let kind = if name == "$or" {
                FilterErrorKind::UnknownOperator
            } else {
                FilterErrorKind::UnknownField
            };
            FilterError::new(path, kind, problem)
        })?;
        out.push((name.clone(), parse_node(sub, sub_shape, path)?));
        path.pop();
    }
    Ok(Node::Fields(out))
}

fn parse_rules(value: &Value, path: &[&str]) -> Result<Vec<Rule>, FilterError> {
    let shape_error = |problem: &str| FilterError::new(path, FilterErrorKind::Shape, problem);
    let Value::Array(items) = value else {
        return Err(shape_error(
            "expected an array of values, e.g. [\"text\"] or [{\"prefix\": \"a\"}]",
        ));
    };
    if items.is_empty() {
        return Err(shape_error(
            "an empty array matches nothing; give at least one value",
        ));
    }
    items.iter().map(|item| parse_rule(item, path)).collect()
}

fn literal(value: &Value) -> Option<Literal> {
    Some(match value {
        Value::String(s) => Literal::Str(s.clone()),
        Value::Number(n) => Literal::Num(n.as_f64()?),
        Value::Bool(b) => Literal::Bool(*b),
        Value::Null => Literal::Null,
        Value::Array(_) | Value::Object(_) => return None,
    })
}

fn parse_rule(value: &Value, path: &[&str]) -> Result<Rule, FilterError> {
    let Value::Object(op) = value else {
        return literal(value).map(Rule::Equals).ok_or_else(|| {
            FilterError::new(
                path,
                FilterErrorKind::Shape,
                "a value in the array is text, a number, true, false, null or an operator \
                 object, not an array",
            )
        });
    };
    let mut ops = op.iter();
    let (Some((name, operand)), None) = (ops.next(), ops.next()) else {
        return Err(FilterError::new(
            path,
            FilterErrorKind::UnknownOperator,
            format!("an operator object has exactly one of {OPERATORS}"),
        ));
    };
    let bad = |need: &str| {
        FilterError::new(
            path,
            FilterErrorKind::BadOperand,
            format!("{name:?} needs {need}"),
        )
    };
    let text = |v: &Value| v.as_str().map(str::to_owned).ok_or_else(|| bad("a string"));
    Ok(match name.as_str() {
        "prefix" => Rule::Prefix(text(operand)?),
        "suffix" => Rule::Suffix(text(operand)?),
        "equals-ignore-case" => Rule::EqualsIgnoreCase(text(operand)?.to_lowercase()),
        "exists" => Rule::Exists(operand.as_bool().ok_or_else(|| bad("true or false"))?),
        "numeric" => Rule::Numeric(parse_numeric(operand).ok_or_else(|| {
            bad("pairs of an operator (=, <, <=, >, >=) and a number, e.g. [\">\", 0, \"<=\", 5]")
        })?),
        "anything-but" => parse_anything_but(operand).ok_or_else(|| {
            bad(
                "a value, a non-empty array of strings or numbers, or {\"prefix\": ..} / \
                 {\"suffix\": ..}",
            )
        })?,
        other => {
            return Err(FilterError::new(
                path,
                FilterErrorKind::UnknownOperator,
                format!("unknown operator {other:?}: expected {OPERATORS}"),
            ))
        }
    })
}

fn parse_numeric(operand: &Value) -> Option<Vec<(Cmp, f64)>> {
    let items = operand.as_array()?;
    if items.is_empty() || items.len() % 2 != 0 {
        return None;
    }
    items
        .chunks(2)
        .map(|pair| {
            let cmp = match pair[0].as_str()? {
                "=" => Cmp::Eq,
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                ">" => Cmp::Gt,
                ">=" => Cmp::Ge,
                _ => return None,
            };
            Some((cmp, pair[1].as_f64()?))
        })
        .collect()
}

fn parse_anything_but(operand: &Value) -> Option<Rule> {
    match operand {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| match v {
                Value::String(_) | Value::Number(_) => literal(v),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(Rule::AnythingBut),
        Value::Object(o) if o.len() == 1 => {
            let (name, v): (&String, &Value) = o.iter().next()?;
            let s = v.as_str()?.to_owned();
            match name.as_str() {
                "prefix" => Some(Rule::AnythingButPrefix(s)),
                "suffix" => Some(Rule::AnythingButSuffix(s)),
                _ => None,
            }
        }
        Value::String(_) | Value::Number(_) => literal(operand).map(|l| Rule::AnythingBut(vec![l])),
        _ => None,
    }
}

// ---- evaluation ----------------------------------------------------------------------------

/// A place in a record, as its DynamoDB-JSON form would have it, borrowed from the record.
enum View<'a> {
    Record(&'a StreamRecord),
    Identity(&'a crate::record::UserIdentity),
    Dynamodb(&'a StreamRecord),
    Item(&'a HashMap<String, AttributeValue>),
    Attribute(&'a AttributeValue),
    Leaf(Leaf<'a>),
}

/// A scalar value of the JSON form.
enum Leaf<'a> {
    Str(Cow<'a, str>),
    /// A DynamoDB number: a string in Lambda's JSON, compared as a number by numeric rules.
    NumText(&'a str),
    Num(f64),
    Bool(bool),
}

/// What is at a field: nothing, one value, or the elements of a list or set (borrowed: a
/// record is matched without collecting anything).
enum Child<'a> {
    Absent,
    One(View<'a>),
    List(&'a [AttributeValue]),
    Strings(&'a [String]),
    Numbers(&'a [String]),
    Binaries(&'a [Vec<u8>]),
}

fn event_name(kind: &RecordKind) -> &str {
    match kind {
        RecordKind::Insert => "INSERT",
        RecordKind::Modify => "MODIFY",
        RecordKind::Remove { .. } => "REMOVE",
        RecordKind::Unknown(name) => name,
    }
}

fn child<'a>(view: &View<'a>, field: &str) -> Child<'a> {
    use AttributeValue as A;
    let leaf = |l: Leaf<'a>| Child::One(View::Leaf(l));
    let text = |s: &'a str| Child::One(View::Leaf(Leaf::Str(Cow::Borrowed(s))));
    match view {
        View::Record(r) => match field {
            "eventName" => text(event_name(r.kind())),
            "eventID" => text(r.event_id()),
            "eventSource" => text("aws:dynamodb"),
            "userIdentity" => r
                .user_identity()
                .map_or(Child::Absent, |id| Child::One(View::Identity(id))),
            "dynamodb" => Child::One(View::Dynamodb(r)),
            _ => Child::Absent,
        },
        View::Identity(id) => match field {
            "type" => text(&id.kind),
            "principalId" => text(&id.principal_id),
            _ => Child::Absent,
        },
        View::Dynamodb(r) => match field {
            "Keys" => Child::One(View::Item(r.keys().inner())),
            "NewImage" => r
                .new_image()
                .map_or(Child::Absent, |i| Child::One(View::Item(i.inner()))),
            "OldImage" => r
                .old_image()
                .map_or(Child::Absent, |i| Child::One(View::Item(i.inner()))),
            "SequenceNumber" => text(r.sequence_number().as_str()),
            "SizeBytes" => leaf(Leaf::Num(r.size_bytes() as f64)),
            "ApproximateCreationDateTime" => {
                r.approximate_creation_time().map_or(Child::Absent, |t| {
                    let secs = t
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_millis() as f64 / 1000.0);
                    leaf(Leaf::Num(secs))
                })
            }
            _ => Child::Absent,
        },
        View::Item(item) => item
            .get(field)
            .map_or(Child::Absent, |v| Child::One(View::Attribute(v))),
        View::Attribute(value) => match (field, value) {
            ("S", A::S(s)) => text(s),
            ("N", A::N(n)) => leaf(Leaf::NumText(n)),
            ("B", A::B(b)) => leaf(Leaf::Str(Cow::Owned(base64_encode(b)))),
            ("BOOL", A::Bool(b)) => leaf(Leaf::Bool(*b)),
            ("NULL", A::Null(b)) => leaf(Leaf::Bool(*b)),
            ("M", A::M(m)) => Child::One(View::Item(m)),
            ("L", A::L(l)) => Child::List(l),
            ("SS", A::Ss(s)) => Child::Strings(s),
            ("NS", A::Ns(n)) => Child::Numbers(n),
            ("BS", A::Bs(b)) => Child::Binaries(b),
            _ => Child::Absent,
        },
        View::Leaf(_) => Child::Absent,
    }
}

fn node_matches(node: &Node, view: &View<'_>) -> bool {
    match node {
        Node::Fields(fields) => fields.iter().all(|(name, sub)| match child(view, name) {
            Child::Absent => absent_matches(sub),
            Child::One(v) => node_matches(sub, &v),
            Child::List(l) => any_element(sub, l.iter().map(View::Attribute)),
            Child::Strings(s) => any_element(
                sub,
                s.iter().map(|s| View::Leaf(Leaf::Str(Cow::Borrowed(s)))),
            ),
            Child::Numbers(n) => any_element(sub, n.iter().map(|n| View::Leaf(Leaf::NumText(n)))),
            Child::Binaries(b) => any_element(
                sub,
                b.iter()
                    .map(|b| View::Leaf(Leaf::Str(Cow::Owned(base64_encode(b))))),
            ),
        }),
        Node::Rules(rules) => match view {
            View::Leaf(leaf) => rules.iter().any(|r| rule_matches(r, leaf)),
            // Parsing puts rules only where the record has scalars.
            _ => false,
        },
    }
}

/// Whether `node` matches one of the elements of a list or set; an empty one has no value at
/// all, as if absent.
fn any_element<'a>(node: &Node, mut elements: impl Iterator<Item = View<'a>>) -> bool {
    let mut empty = true;
    elements.any(|v| {
        empty = false;
        node_matches(node, &v)
    }) || (empty && absent_matches(node))
}

/// Whether `node` matches where the record has nothing: only `{"exists": false}` does.
fn absent_matches(node: &Node) -> bool {
    match node {
        Node::Fields(fields) => fields.iter().all(|(_, sub)| absent_matches(sub)),
        Node::Rules(rules) => rules.contains(&Rule::Exists(false)),
    }
}

fn leaf_text<'l>(leaf: &'l Leaf<'_>) -> Option<&'l str> {
    match leaf {
        Leaf::Str(s) => Some(s),
        Leaf::NumText(n) => Some(n),
        Leaf::Num(_) | Leaf::Bool(_) => None,
    }
}

fn leaf_number(leaf: &Leaf<'_>) -> Option<f64> {
    match leaf {
        Leaf::Num(n) => Some(*n),
        // The deliberate difference from Lambda: DynamoDB numbers compare as numbers.
        Leaf::NumText(n) => n.parse().ok(),
        Leaf::Str(_) | Leaf::Bool(_) => None,
    }
}

fn literal_equals(literal: &Literal, leaf: &Leaf<'_>) -> bool {
    match literal {
        Literal::Str(s) => leaf_text(leaf) == Some(s.as_str()),
        Literal::Num(n) => leaf_number(leaf) == Some(*n),
        Literal::Bool(b) => matches!(leaf, Leaf::Bool(x) if x == b),
        // The JSON form of a record has no nulls (a NULL attribute is `{"NULL": true}`).
        Literal::Null => false,
    }
}

fn rule_matches(rule: &Rule, leaf: &Leaf<'_>) -> bool {
    match rule {
        Rule::Equals(l) => literal_equals(l, leaf),
        Rule::Prefix(p) => leaf_text(leaf).is_some_and(|t| t.starts_with(p.as_str())),
        Rule::Suffix(s) => leaf_text(leaf).is_some_and(|t| t.ends_with(s.as_str())),
        Rule::EqualsIgnoreCase(lower) => leaf_text(leaf)
            .is_some_and(|t| t.chars().flat_map(char::to_lowercase).eq(lower.chars())),
        Rule::AnythingBut(values) => !values.iter().any(|l| literal_equals(l, leaf)),
        Rule::AnythingButPrefix(p) => leaf_text(leaf).is_some_and(|t| !t.starts_with(p.as_str())),
        Rule::AnythingButSuffix(s) => leaf_text(leaf).is_some_and(|t| !t.ends_with(s.as_str())),
        Rule::Numeric(conditions) => leaf_number(leaf).is_some_and(|x| {
            conditions.iter().all(|(cmp, n)| match cmp {
                Cmp::Eq => x == *n,
                Cmp::Lt => x < *n,
                Cmp::Le => x <= *n,
                Cmp::Gt => x > *n,
                Cmp::Ge => x >= *n,
            })
        }),
        Rule::Exists(exists) => *exists,
    }
}

#[cfg(test)]
mod tests;
