//! Payloads: the metadata a point carries beside its vector, and the filters over it.
//!
//! A payload maps field names to typed values ([`Value`]: keyword, integer, float, bool, or a
//! list of keywords or integers). A collection's [`Schema`] fixes each field's type on first
//! use (or by declaration), so a filter can be checked before it runs and an upsert cannot
//! mix types in one field.
//!
//! Encoded form (the WAL record and the segment section share it; byte layout in
//! `docs/format.md`): `u16` field count, then per field in name order `u8` name length, the
//! name (UTF-8), `u8` type tag and the value. [`fields`] walks encoded bytes without allocating
//! (the filter scan reads mapped segment bytes this way); it returns `None` on malformed bytes
//! instead of panicking.
//!
//! Owns: [`Value`], [`Payload`], [`Schema`] and the encoding; the filter language
//! ([`filter`]); the per-segment field indexes ([`index`]). Pure code: no I/O.

pub mod filter;
pub mod index;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use filter::{Condition, Filter, FilterStats, Range};
pub use index::FieldIndex;

/// Longest field name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Most fields in one payload.
pub const MAX_FIELDS: usize = 1024;
/// Largest encoded payload, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// One field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string matched exactly.
    Keyword(String),
    /// A signed 64-bit integer.
    Integer(i64),
    /// A finite 64-bit float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Several keywords (a condition matches when any one does).
    Keywords(Vec<String>),
    /// Several integers (a condition matches when any one does).
    Integers(Vec<i64>),
}

impl Value {
    /// The type of field that holds this value.
    pub fn field_type(&self) -> FieldType {
        match self {
            Value::Keyword(_) | Value::Keywords(_) => FieldType::Keyword,
            Value::Integer(_) | Value::Integers(_) => FieldType::Integer,
            Value::Float(_) => FieldType::Float,
            Value::Bool(_) => FieldType::Bool,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Value::Keyword(_) => TAG_KEYWORD,
            Value::Integer(_) => TAG_INTEGER,
            Value::Float(_) => TAG_FLOAT,
            Value::Bool(_) => TAG_BOOL,
            Value::Keywords(_) => TAG_KEYWORDS,
            Value::Integers(_) => TAG_INTEGERS,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Keyword(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Keyword(s)
    }
}
impl From<i64> for Value {
    fn from(x: i64) -> Self {
        Value::Integer(x)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}
impl From<bool> for Value {
    fn from(x: bool) -> Self {
        Value::Bool(x)
    }
}
impl From<Vec<String>> for Value {
    fn from(x: Vec<String>) -> Self {
        Value::Keywords(x)
    }
}
impl From<Vec<i64>> for Value {
    fn from(x: Vec<i64>) -> Self {
        Value::Integers(x)
    }
}

/// The type a field holds across a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Keywords (single or lists).
    Keyword,
    /// Integers (single or lists).
    Integer,
    /// Floats.
    Float,
    /// Booleans.
    Bool,
}

impl FieldType {
    /// The name used in messages and in `schema.json`.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Keyword => "keyword",
            FieldType::Integer => "integer",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
        }
    }
}

impl std::str::FromStr for FieldType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "keyword" => Ok(FieldType::Keyword),
            "integer" => Ok(FieldType::Integer),
            "float" => Ok(FieldType::Float),
            "bool" => Ok(FieldType::Bool),
            _ => Err(Error::invalid_argument(
                "type",
                format!("unknown field type {s:?}: use keyword, integer, float or bool"),
            )),
        }
    }
}

/// A point's payload: field name → value, in name order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Payload(pub BTreeMap<String, Value>);

impl Payload {
    /// An empty payload.
    pub fn new() -> Self {
        Payload::default()
    }

    /// Adds or replaces a field (builder style).
    pub fn with(mut self, field: impl Into<String>, value: impl Into<Value>) -> Self {
        self.0.insert(field.into(), value.into());
        self
    }

    /// The value of `field`.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True without fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks names and values: names of 1 to 255 bytes, finite floats, at most
    /// [`MAX_FIELDS`] fields and [`MAX_PAYLOAD_BYTES`] encoded.
    pub fn validate(&self) -> Result<()> {
        if self.0.len() > MAX_FIELDS {
            return Err(Error::invalid_argument(
                "payload",
                format!("{} fields exceed the limit of {MAX_FIELDS}", self.0.len()),
            ));
        }
        for (name, value) in &self.0 {
            check_name(name)?;
            if let Value::Float(x) = value
                && !x.is_finite()
            {
                return Err(Error::field(name, format!("{x} is not a finite number")));
            }
        }
        let bytes = self.encoded_len();
        if bytes > MAX_PAYLOAD_BYTES {
            return Err(Error::invalid_argument(
                "payload",
                format!("{bytes} bytes encoded exceed the limit of {MAX_PAYLOAD_BYTES}"),
            ));
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        2 + self.0.iter().map(|(n, v)| field_len(n, v)).sum::<usize>()
    }

    /// Appends the encoded payload to `out` (validated first by the caller).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u16).to_le_bytes());
        for (name, value) in &self.0 {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.push(value.tag());
            match value {
                Value::Keyword(s) => put_str(out, s),
                Value::Integer(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::Float(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::Bool(b) => out.push(u8::from(*b)),
                Value::Keywords(l) => {
                    out.extend_from_slice(&(l.len() as u32).to_le_bytes());
                    for s in l {
                        put_str(out, s);
                    }
                }
                Value::Integers(l) => {
                    out.extend_from_slice(&(l.len() as u32).to_le_bytes());
                    for x in l {
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
        }
    }

    /// The encoded payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes bytes written by [`encode`](Self::encode); `None` when they are malformed.
    pub fn decode(bytes: &[u8]) -> Option<Payload> {
        let mut map = BTreeMap::new();
        for f in fields(bytes)? {
            let (name, raw) = f?;
            map.insert(name.to_string(), raw.to_value()?);
        }
        Some(Payload(map))
    }
}

/// Encoded bytes of one field: name length and tag bytes, the name, the value.
fn field_len(name: &str, v: &Value) -> usize {
    2 + name.len()
        + match v {
            Value::Keyword(s) => 4 + s.len(),
            Value::Integer(_) | Value::Float(_) => 8,
            Value::Bool(_) => 1,
            Value::Keywords(l) => 4 + l.iter().map(|s| 4 + s.len()).sum::<usize>(),
            Value::Integers(l) => 4 + 8 * l.len(),
        }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Checks a field name: 1 to 255 bytes.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(Error::field(
            name,
            format!(
                "a field name has 1 to {MAX_NAME_BYTES} bytes, this one {}",
                name.len()
            ),
        ));
    }
    Ok(())
}

const TAG_KEYWORD: u8 = 1;
const TAG_INTEGER: u8 = 2;
const TAG_FLOAT: u8 = 3;
const TAG_BOOL: u8 = 4;
const TAG_KEYWORDS: u8 = 5;
const TAG_INTEGERS: u8 = 6;

/// A value still in its encoded bytes.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    /// One keyword.
    Keyword(&'a [u8]),
    /// One integer.
    Integer(i64),
    /// One float.
    Float(f64),
    /// One bool.
    Bool(bool),
    /// `count` keywords, each `u32` length + bytes.
    Keywords(u32, &'a [u8]),
    /// Little-endian i64s.
    Integers(&'a [u8]),
}

impl<'a> Raw<'a> {
    /// The field type.
    pub fn field_type(&self) -> FieldType {
        match self {
            Raw::Keyword(_) | Raw::Keywords(..) => FieldType::Keyword,
            Raw::Integer(_) | Raw::Integers(_) => FieldType::Integer,
            Raw::Float(_) => FieldType::Float,
            Raw::Bool(_) => FieldType::Bool,
        }
    }

    /// Every keyword (one for a single keyword); empty for other types.
    pub fn keywords(self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (mut left, mut rest, one) = match self {
            Raw::Keyword(s) => (0, &[][..], Some(s)),
            Raw::Keywords(n, b) => (n, b, None),
            _ => (0, &[][..], None),
        };
        one.into_iter().chain(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let s = rest.get(4..4 + len)?;
            rest = &rest[4 + len..];
            Some(s)
        }))
    }

    /// Every integer (one for a single integer); empty for other types.
    pub fn integers(self) -> impl Iterator<Item = i64> + 'a {
        let (one, list) = match self {
            Raw::Integer(x) => (Some(x), &[][..]),
            Raw::Integers(b) => (None, b),
            _ => (None, &[][..]),
        };
        one.into_iter().chain(
            list.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))),
        )
    }

    /// The numbers a range compares (integers widened to f64; floats as they are).
    pub fn numbers(self) -> impl Iterator<Item = f64> + 'a {
        let float = match self {
            Raw::Float(x) => Some(x),
            _ => None,
        };
        float.into_iter().chain(self.integers().map(|x| x as f64))
    }

    /// True for an empty list.
    pub fn is_empty_list(&self) -> bool {
        matches!(self, Raw::Keywords(0, _)) || matches!(self, Raw::Integers(b) if b.is_empty())
    }

    /// The decoded value; `None` for invalid UTF-8.
    pub fn to_value(&self) -> Option<Value> {
        let s = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
        Some(match *self {
            Raw::Keyword(b) => Value::Keyword(s(b)?),
            Raw::Integer(x) => Value::Integer(x),
            Raw::Float(x) => Value::Float(x),
            Raw::Bool(x) => Value::Bool(x),
            Raw::Keywords(..) => Value::Keywords(self.keywords().map(s).collect::<Option<_>>()?),
            Raw::Integers(_) => Value::Integers(self.integers().collect()),
        })
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The fields of an encoded payload, in name order: `(name, value)`, or `None` for a field
/// whose bytes are malformed (the walk stops there). `None` when even the count is missing;
/// empty bytes are an empty payload.
pub fn fields(bytes: &[u8]) -> Option<impl Iterator<Item = Option<(&str, Raw<'_>)>> + '_> {
    let count = match bytes.len() {
        0 => 0,
        1 => return None,
        _ => u16::from_le_bytes([bytes[0], bytes[1]]) as usize,
    };
    let mut c = Cursor { b: bytes, at: 2 };
    let mut left = count;
    let mut broken = false;
    Some(std::iter::from_fn(move || {
        if left == 0 || broken {
            return None;
        }
        left -= 1;
        let f = (|| {
            let n = c.u8()? as usize;
            let name = std::str::from_utf8(c.take(n)?).ok()?;
            let raw = match c.u8()? {
                TAG_KEYWORD => {
                    let n = c.u32()? as usize;
                    Raw::Keyword(c.take(n)?)
                }
                TAG_INTEGER => Raw::Integer(c.u64()? as i64),
                TAG_FLOAT => Raw::Float(f64::from_bits(c.u64()?)),
                TAG_BOOL => Raw::Bool(c.u8()? != 0),
                TAG_KEYWORDS => {
                    let count = c.u32()?;
                    let start = c.at;
                    for _ in 0..count {
                        let n = c.u32()? as usize;
                        c.take(n)?;
                    }
                    Raw::Keywords(count, &c.b[start..c.at])
                }
                TAG_INTEGERS => {
                    let count = c.u32()? as usize;
                    Raw::Integers(c.take(count.checked_mul(8)?)?)
                }
                _ => return None,
            };
            Some((name, raw))
        })();
        broken = f.is_none();
        Some(f)
    }))
}

/// The value of `field` in encoded bytes (`None`: absent or malformed).
pub fn field<'a>(bytes: &'a [u8], field: &str) -> Option<Raw<'a>> {
    for f in fields(bytes)? {
        let (name, raw) = f?;
        match name.cmp(field) {
            std::cmp::Ordering::Equal => return Some(raw),
            std::cmp::Ordering::Greater => return None,
            std::cmp::Ordering::Less => {}
        }
    }
    None
}

/// Checks that encoded bytes are well formed: every field readable, names increasing, UTF-8
/// keywords, nothing after the last field. (At segment open and WAL replay, not per query.)
pub fn check_encoded(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let Some(it) = fields(bytes) else {
        return false;
    };
    let mut prev: Option<&str> = None;
    let mut len = 2;
    for f in it {
        let Some((name, raw)) = f else {
            return false;
        };
        if name.is_empty() || prev.is_some_and(|p| p >= name) {
            return false;
        }
        let Some(v) = raw.to_value() else {
            return false;
        };
        len += field_len(name, &v);
        prev = Some(name);
    }
    len == bytes.len()
}

/// Encoded payloads of consecutive rows: row `r`'s bytes are `bytes[offsets[r]..offsets[r +
/// 1]]` (empty: no payload). The memtable's form, and the segment section's.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadRows {
    offsets: Vec<u64>,
    bytes: Vec<u8>,
}

impl Default for PayloadRows {
    fn default() -> Self {
        PayloadRows {
            offsets: vec![0],
            bytes: Vec::new(),
        }
    }
}

impl PayloadRows {
    /// No rows.
    pub fn new() -> Self {
        PayloadRows::default()
    }

    /// Encodes `payloads` (validated by the caller).
    pub fn encode(payloads: &[Payload]) -> PayloadRows {
        let mut out = PayloadRows::new();
        for p in payloads {
            if !p.is_empty() {
                p.encode_into(&mut out.bytes);
            }
            out.offsets.push(out.bytes.len() as u64);
        }
        out
    }

    /// Appends one row's encoded payload (empty: none).
    pub fn push(&mut self, encoded: &[u8]) {
        self.bytes.extend_from_slice(encoded);
        self.offsets.push(self.bytes.len() as u64);
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True when no row has a payload.
    pub fn is_blank(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The rows as a borrowed slice.
    pub fn slice(&self) -> PayloadSlice<'_> {
        PayloadSlice {
            offsets: &self.offsets,
            bytes: &self.bytes,
        }
    }

    /// From the parts of a WAL record: one length per row, then the bytes.
    pub(crate) fn from_lengths(lengths: &[u32], bytes: &[u8]) -> Option<PayloadRows> {
        let mut offsets = Vec::with_capacity(lengths.len() + 1);
        offsets.push(0u64);
        let mut at = 0u64;
        for &l in lengths {
            let end = at + u64::from(l);
            if !check_encoded(bytes.get(at as usize..end as usize)?) {
                return None;
            }
            at = end;
            offsets.push(at);
        }
        (at as usize == bytes.len()).then(|| PayloadRows {
            offsets,
            bytes: bytes.to_vec(),
        })
    }
}

/// Borrowed encoded payloads of consecutive rows (see [`PayloadRows`]); a source without
/// payloads (a segment of an older format) is [`PayloadSlice::EMPTY`].
#[derive(Debug, Clone, Copy)]
pub struct PayloadSlice<'a> {
    offsets: &'a [u64],
    bytes: &'a [u8],
}

impl<'a> PayloadSlice<'a> {
    /// No payloads for any row.
    pub const EMPTY: PayloadSlice<'static> = PayloadSlice {
        offsets: &[],
        bytes: &[],
    };

    /// A slice over checked parts (`offsets` non-decreasing, the last within `bytes`).
    pub(crate) fn new(offsets: &'a [u64], bytes: &'a [u8]) -> Self {
        PayloadSlice { offsets, bytes }
    }

    /// Row `row`'s encoded payload (empty: none or out of range).
    #[inline]
    pub fn get(&self, row: usize) -> &'a [u8] {
        match (self.offsets.get(row), self.offsets.get(row + 1)) {
            (Some(&a), Some(&b)) => self.bytes.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Row `row`'s payload, decoded (`None`: no payload).
    pub fn decode(&self, row: usize) -> Option<Payload> {
        let b = self.get(row);
        if b.is_empty() {
            None
        } else {
            Payload::decode(b)
        }
    }

    /// The offsets (for writing a segment).
    pub(crate) fn parts(&self) -> (&'a [u64], &'a [u8]) {
        (self.offsets, self.bytes)
    }
}

/// Per field: its type and whether segments index it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// The field's type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Segments build an index of it (bitmaps per keyword or bool, sorted values for numbers).
    pub indexed: bool,
}

/// A collection's payload fields: each field's type, fixed by its first use or declaration,
/// and which fields are indexed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Schema {
    /// The fields by name.
    pub fields: BTreeMap<String, FieldSpec>,
}

impl Schema {
    /// The spec of `field`.
    pub fn get(&self, field: &str) -> Option<FieldSpec> {
        self.fields.get(field).copied()
    }

    /// Checks `payload` against the known types; returns the fields it would add.
    pub fn check(&self, payload: &Payload) -> Result<Vec<(String, FieldType)>> {
        let mut new = Vec::new();
        for (name, value) in &payload.0 {
            let t = value.field_type();
            match self.fields.get(name) {
                Some(spec) if spec.kind != t => {
                    return Err(Error::field(
                        name,
                        format!(
                            "the collection holds {} values in this field, got a {} value",
                            spec.kind.name(),
                            t.name()
                        ),
                    ));
                }
                Some(_) => {}
                None => new.push((name.clone(), t)),
            }
        }
        Ok(new)
    }

    /// Learns the types of `payload`'s new fields (unindexed); conflicts keep the known type.
    pub fn learn(&mut self, payload: &Payload) {
        for (name, value) in &payload.0 {
            self.fields.entry(name.clone()).or_insert(FieldSpec {
                kind: value.field_type(),
                indexed: false,
            });
        }
    }

    /// The indexed fields and their types.
    pub fn indexed(&self) -> impl Iterator<Item = (&str, FieldType)> {
        self.fields
            .iter()
            .filter(|(_, s)| s.indexed)
            .map(|(n, s)| (n.as_str(), s.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        Payload::new()
            .with("lang", "en")
            .with("year", 2024i64)
            .with("score", 0.5f64)
            .with("public", true)
            .with("tags", vec!["a".to_string(), "bé".to_string()])
            .with("ints", vec![3i64, -7])
            .with("empty", Vec::<i64>::new())
    }

    #[test]
    fn payloads_round_trip_through_their_encoding() {
        let p = sample();
        p.validate().unwrap();
        let b = p.encode();
        assert_eq!(b.len(), p.encoded_len());
        assert!(check_encoded(&b));
        assert_eq!(Payload::decode(&b).unwrap(), p);
        assert_eq!(
            field(&b, "year").unwrap().integers().collect::<Vec<_>>(),
            [2024]
        );
        assert_eq!(
            field(&b, "tags").unwrap().keywords().collect::<Vec<_>>(),
            [b"a".as_slice(), "bé".as_bytes()]
        );
        assert!(field(&b, "empty").unwrap().is_empty_list());
        assert!(field(&b, "missing").is_none());
        assert!(check_encoded(&Payload::new().encode()));
        assert!(check_encoded(&[]));
    }

    #[test]
    fn malformed_bytes_are_refused_without_panicking() {
        let b = sample().encode();
        for cut in 0..b.len() {
            // Every truncation fails the check; reads never panic.
            if cut != 0 {
                assert!(!check_encoded(&b[..cut]), "cut at {cut}");
            }
            let _ = Payload::decode(&b[..cut]);
            let _ = field(&b[..cut], "tags").map(|r| r.keywords().count());
        }
        let mut long = b.clone();
        long.push(0);
        assert!(!check_encoded(&long));
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0xff;
            let _ = Payload::decode(&x);
            let _ = check_encoded(&x);
        }
    }

    #[test]
    fn bad_payloads_name_the_field() {
        let e = Payload::new().with("x", f64::NAN).validate().unwrap_err();
        assert!(e.to_string().contains("\"x\""), "{e}");
        let e = Payload::new().with("", 1i64).validate().unwrap_err();
        assert!(e.to_string().contains("1 to 255"), "{e}");
        let mut s = Schema::default();
        s.learn(&Payload::new().with("year", 1i64));
        let e = s.check(&Payload::new().with("year", "x")).unwrap_err();
        assert!(e.to_string().contains("integer values"), "{e}");
        assert_eq!(
            s.check(&Payload::new().with("lang", "x")).unwrap(),
            [("lang".to_string(), FieldType::Keyword)]
        );
    }
}
