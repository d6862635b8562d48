//! Filters over payloads, in the shape Qdrant's users know: `must`, `should` and `must_not`
//! lists of conditions, nested.
//!
//! A [`Filter`] is checked once against the collection's [`Schema`] ([`Filter::check`]:
//! unknown fields, type mismatches and bad ranges are refused naming the field), then
//! evaluated per source: row by row on encoded payloads ([`Filter::matches`], the memtable),
//! or to a bitmap of rows ([`Filter::rows`]) through the source's field indexes where it has
//! them and a scan of the stored values where not (counted in [`FilterStats`]).
//!
//! Semantics: every `must` condition holds, at least one `should` condition holds (when there
//! are any), no `must_not` condition holds; an empty filter matches every point. A condition
//! on a list field holds when it holds for any element. A range compares numbers as f64
//! (integers beyond 2^53 are rounded as f64 rounds them, in the index and in the scan alike).

use std::collections::BTreeSet;

use super::{FieldIndex, FieldType, Raw, Schema};
use crate::error::{Error, Result};
use crate::search::LiveMask;

/// Deepest nesting a filter may have.
pub const MAX_DEPTH: usize = 16;

/// Bounds on a number; unset bounds are open.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Range {
    /// Greater than.
    pub gt: Option<f64>,
    /// Greater than or equal.
    pub gte: Option<f64>,
    /// Less than.
    pub lt: Option<f64>,
    /// Less than or equal.
    pub lte: Option<f64>,
}

impl Range {
    /// No bounds.
    pub fn new() -> Self {
        Range::default()
    }
    /// With `> x`.
    pub fn gt(mut self, x: f64) -> Self {
        self.gt = Some(x);
        self
    }
    /// With `>= x`.
    pub fn gte(mut self, x: f64) -> Self {
        self.gte = Some(x);
        self
    }
    /// With `< x`.
    pub fn lt(mut self, x: f64) -> Self {
        self.lt = Some(x);
        self
    }
    /// With `<= x`.
    pub fn lte(mut self, x: f64) -> Self {
        self.lte = Some(x);
        self
    }

    /// True when `x` is within every bound.
    #[inline]
    pub fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// One condition of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The keyword field equals (or its list contains) the keyword.
    MatchKeyword {
        /// The field.
        field: String,
        /// The keyword.
        value: String,
    },
    /// The integer field equals (or its list contains) the integer.
    MatchInteger {
        /// The field.
        field: String,
        /// The integer.
        value: i64,
    },
    /// The bool field has this value.
    MatchBool {
        /// The field.
        field: String,
        /// The value.
        value: bool,
    },
    /// The keyword field equals (or its list contains) any of the keywords.
    AnyKeyword {
        /// The field.
        field: String,
        /// The keywords.
        values: Vec<String>,
    },
    /// The integer field equals (or its list contains) any of the integers.
    AnyInteger {
        /// The field.
        field: String,
        /// The integers.
        values: Vec<i64>,
    },
    /// The number field (integer or float) has a value within the range.
    Range {
        /// The field.
        field: String,
        /// The bounds.
        range: Range,
    },
    /// The point's id is one of these.
    HasId(Vec<u64>),
    /// The field is absent or an empty list.
    IsEmpty {
        /// The field.
        field: String,
    },
    /// A nested filter.
    Filter(Filter),
}

impl Condition {
    /// `field` matches the keyword.
    pub fn keyword(field: impl Into<String>, value: impl Into<String>) -> Self {
        Condition::MatchKeyword {
            field: field.into(),
            value: value.into(),
        }
    }
    /// `field` matches the integer.
    pub fn integer(field: impl Into<String>, value: i64) -> Self {
        Condition::MatchInteger {
            field: field.into(),
            value,
        }
    }
    /// `field` matches the bool.
    pub fn boolean(field: impl Into<String>, value: bool) -> Self {
        Condition::MatchBool {
            field: field.into(),
            value,
        }
    }
    /// `field` matches any of the keywords.
    pub fn any_keyword<S: Into<String>>(
        field: impl Into<String>,
        values: impl IntoIterator<Item = S>,
    ) -> Self {
        Condition::AnyKeyword {
            field: field.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
    /// `field` matches any of the integers.
    pub fn any_integer(field: impl Into<String>, values: impl IntoIterator<Item = i64>) -> Self {
        Condition::AnyInteger {
            field: field.into(),
            values: values.into_iter().collect(),
        }
    }
    /// `field` is within `range`.
    pub fn range(field: impl Into<String>, range: Range) -> Self {
        Condition::Range {
            field: field.into(),
            range,
        }
    }
    /// The id is one of `ids`.
    pub fn has_id(ids: impl IntoIterator<Item = u64>) -> Self {
        Condition::HasId(ids.into_iter().collect())
    }
    /// `field` is absent or empty.
    pub fn is_empty(field: impl Into<String>) -> Self {
        Condition::IsEmpty {
            field: field.into(),
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Condition::MatchKeyword { field, .. }
            | Condition::MatchInteger { field, .. }
            | Condition::MatchBool { field, .. }
            | Condition::AnyKeyword { field, .. }
            | Condition::AnyInteger { field, .. }
            | Condition::Range { field, .. }
            | Condition::IsEmpty { field } => Some(field),
            Condition::HasId(_) | Condition::Filter(_) => None,
        }
    }

    /// Sorts the value lists (binary search at evaluation) and checks the condition.
    fn prepare(&mut self, schema: &Schema, depth: usize) -> Result<()> {
        if let Some(field) = self.field() {
            super::check_name(field)?;
            let Some(spec) = schema.get(field) else {
                return Err(Error::field(
                    field,
                    "unknown field: no point has it and the collection does not declare it",
                ));
            };
            let want: &[FieldType] = match self {
                Condition::MatchKeyword { .. } | Condition::AnyKeyword { .. } => {
                    &[FieldType::Keyword]
                }
                Condition::MatchInteger { .. } | Condition::AnyInteger { .. } => {
                    &[FieldType::Integer]
                }
                Condition::MatchBool { .. } => &[FieldType::Bool],
                Condition::Range { .. } => &[FieldType::Integer, FieldType::Float],
                _ => &[spec.kind],
            };
            if !want.contains(&spec.kind) {
                let what = match self {
                    Condition::Range { .. } => "a range",
                    Condition::MatchBool { .. } => "a bool match",
                    Condition::MatchInteger { .. } | Condition::AnyInteger { .. } => {
                        "an integer match"
                    }
                    _ => "a keyword match",
                };
                return Err(Error::field(
                    field,
                    format!("holds {} values: {what} does not apply", spec.kind.name()),
                ));
            }
        }
        match self {
            Condition::Range { field, range } => {
                let bounds = [range.gt, range.gte, range.lt, range.lte];
                if bounds.iter().flatten().any(|b| b.is_nan()) {
                    return Err(Error::field(field, "a range bound is NaN"));
                }
            }
            Condition::AnyKeyword { values, .. } => {
                values.sort_unstable();
                values.dedup();
            }
            Condition::AnyInteger { values, .. } => {
                values.sort_unstable();
                values.dedup();
            }
            Condition::HasId(ids) => {
                ids.sort_unstable();
                ids.dedup();
            }
            Condition::Filter(f) => f.prepare(schema, depth + 1)?,
            _ => {}
        }
        Ok(())
    }

    /// Whether the condition holds for a point with this id and encoded payload.
    fn holds(&self, id: u64, payload: &[u8]) -> bool {
        let raw = |f: &str| super::field(payload, f);
        match self {
            Condition::MatchKeyword { field, value } => {
                raw(field).is_some_and(|r| r.keywords().any(|k| k == value.as_bytes()))
            }
            Condition::MatchInteger { field, value } => {
                raw(field).is_some_and(|r| r.integers().any(|x| x == *value))
            }
            Condition::MatchBool { field, value } => {
                matches!(raw(field), Some(Raw::Bool(b)) if b == *value)
            }
            Condition::AnyKeyword { field, values } => raw(field).is_some_and(|r| {
                r.keywords()
                    .any(|k| values.binary_search_by(|v| v.as_bytes().cmp(k)).is_ok())
            }),
            Condition::AnyInteger { field, values } => {
                raw(field).is_some_and(|r| r.integers().any(|x| values.binary_search(&x).is_ok()))
            }
            Condition::Range { field, range } => {
                raw(field).is_some_and(|r| r.numbers().any(|x| range.contains(x)))
            }
            Condition::HasId(ids) => ids.binary_search(&id).is_ok(),
            Condition::IsEmpty { field } => raw(field).is_none_or(|r| r.is_empty_list()),
            Condition::Filter(f) => f.matches(id, payload),
        }
    }
}

/// A filter: `must`, `should` and `must_not` lists of conditions (see the module docs).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// Every one holds.
    pub must: Vec<Condition>,
    /// At least one holds (when not empty).
    pub should: Vec<Condition>,
    /// None holds.
    pub must_not: Vec<Condition>,
}

/// What evaluating a filter cost, for a response's stats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterStats {
    /// Fields filtered without an index (their stored values were scanned).
    pub unindexed_fields: BTreeSet<String>,
    /// Stored payloads read by those scans.
    pub payloads_scanned: u64,
    /// Rows that passed the filter (and were live), over every source.
    pub matched_rows: u64,
}

impl FilterStats {
    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: FilterStats) {
        self.unindexed_fields.extend(other.unindexed_fields);
        self.payloads_scanned += other.payloads_scanned;
        self.matched_rows += other.matched_rows;
    }
}

/// What a filter reads of one source of rows (a segment).
pub trait RowSource {
    /// Rows in the source.
    fn rows(&self) -> u32;
    /// The id of `row`.
    fn id(&self, row: u32) -> u64;
    /// The row holding `id` (live or not).
    fn row_of(&self, id: u64) -> Option<u32>;
    /// True when [`row_of`](Self::row_of) is a lookup, not a scan: `has_id` then looks its
    /// ids up; otherwise it tests every row's id against the (sorted) list.
    fn ids_indexed(&self) -> bool {
        true
    }
    /// The encoded payload of `row` (empty: none).
    fn payload(&self, row: u32) -> &[u8];
    /// The index of `field`, when the source has one.
    fn index(&self, field: &str) -> Option<&FieldIndex>;
}

impl Filter {
    /// The empty filter (matches everything).
    pub fn new() -> Self {
        Filter::default()
    }
    /// Adds a `must` condition.
    pub fn must(mut self, c: Condition) -> Self {
        self.must.push(c);
        self
    }
    /// Adds a `should` condition.
    pub fn should(mut self, c: Condition) -> Self {
        self.should.push(c);
        self
    }
    /// Adds a `must_not` condition.
    pub fn must_not(mut self, c: Condition) -> Self {
        self.must_not.push(c);
        self
    }

    /// True without conditions.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }

    /// Checks the filter against `schema` (unknown fields, type mismatches, NaN bounds, nesting
    /// deeper than [`MAX_DEPTH`]) and returns it ready to evaluate (value lists sorted).
    pub fn check(&self, schema: &Schema) -> Result<Filter> {
        let mut f = self.clone();
        f.prepare(schema, 1)?;
        Ok(f)
    }

    fn prepare(&mut self, schema: &Schema, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid_argument(
                "filter",
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        for c in self
            .must
            .iter_mut()
            .chain(&mut self.should)
            .chain(&mut self.must_not)
        {
            c.prepare(schema, depth)?;
        }
        Ok(())
    }

    /// Whether a point with this id and encoded payload passes (a checked filter).
    pub fn matches(&self, id: u64, payload: &[u8]) -> bool {
        self.must.iter().all(|c| c.holds(id, payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.holds(id, payload)))
            && !self.must_not.iter().any(|c| c.holds(id, payload))
    }

    /// The rows of `src` that pass (a checked filter), through its indexes where it has them.
    pub fn rows(&self, src: &dyn RowSource, stats: &mut FilterStats) -> LiveMask {
        self.rows_within(src, None, stats)
    }

    /// [`rows`](Self::rows) restricted to `within` (all rows when `None`): conditions without
    /// an index then test only those rows.
    pub fn rows_within(
        &self,
        src: &dyn RowSource,
        within: Option<&LiveMask>,
        stats: &mut FilterStats,
    ) -> LiveMask {
        // Indexed conditions first: they narrow the rows the scans must test.
        let mut must: Vec<&Condition> = self.must.iter().collect();
        must.sort_by_key(|c| !cheap(c, src));
        let mut acc: Option<LiveMask> = within.cloned();
        for c in must {
            let rows = condition_rows(c, src, acc.as_ref(), stats);
            match &mut acc {
                Some(a) => a.and_assign(&rows),
                None => acc = Some(rows),
            }
            if acc.as_ref().is_some_and(|a| a.is_empty()) {
                return LiveMask::none(src.rows() as usize);
            }
        }
        if !self.should.is_empty() {
            let mut any = LiveMask::none(src.rows() as usize);
            for c in &self.should {
                any.or_assign(&condition_rows(c, src, acc.as_ref(), stats));
            }
            match &mut acc {
                Some(a) => a.and_assign(&any),
                None => acc = Some(any),
            }
        }
        let mut out = acc.unwrap_or_else(|| LiveMask::all(src.rows() as usize));
        for c in &self.must_not {
            if out.is_empty() {
                break;
            }
            let hit = condition_rows(c, src, Some(&out), stats);
            out.and_not_assign(&hit);
        }
        out
    }
}

/// True when `c` is answered without reading payloads.
fn cheap(c: &Condition, src: &dyn RowSource) -> bool {
    match c {
        Condition::HasId(_) => true,
        Condition::Filter(_) => false,
        c => c.field().is_some_and(|f| src.index(f).is_some()),
    }
}

/// The rows (within `within`, when given) where `c` holds.
fn condition_rows(
    c: &Condition,
    src: &dyn RowSource,
    within: Option<&LiveMask>,
    stats: &mut FilterStats,
) -> LiveMask {
    let n = src.rows() as usize;
    let restrict = |mut b: LiveMask| {
        if let Some(w) = within {
            b.and_assign(w);
        }
        b
    };
    match c {
        Condition::HasId(ids) => {
            let mut rows = LiveMask::none(n);
            if src.ids_indexed() {
                for &id in ids {
                    if let Some(r) = src.row_of(id) {
                        rows.set(r as usize);
                    }
                }
            } else {
                for r in 0..n {
                    if ids.binary_search(&src.id(r as u32)).is_ok() {
                        rows.set(r);
                    }
                }
            }
            return restrict(rows);
        }
        Condition::Filter(f) => return f.rows_within(src, within, stats),
        _ => {}
    }
    let field = c.field().expect("a field condition");
    if let Some(ix) = src.index(field)
        && let Some(rows) = ix.rows(c, n)
    {
        return restrict(rows);
    }
    // No index: test the stored values of the rows in question.
    stats.unindexed_fields.insert(field.to_string());
    let mut out = LiveMask::none(n);
    let mut test = |row: usize| {
        if c.holds(src.id(row as u32), src.payload(row as u32)) {
            out.set(row);
        }
    };
    match within {
        Some(w) => {
            stats.payloads_scanned += w.count() as u64;
            w.iter().for_each(&mut test);
        }
        None => {
            stats.payloads_scanned += n as u64;
            (0..n).for_each(&mut test);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{FieldSpec, Payload};

    struct Rows {
        payloads: Vec<Vec<u8>>,
        indexes: Vec<(String, FieldIndex)>,
    }

    impl RowSource for Rows {
        fn rows(&self) -> u32 {
            self.payloads.len() as u32
        }
        fn id(&self, row: u32) -> u64 {
            1000 + u64::from(row)
        }
        fn row_of(&self, id: u64) -> Option<u32> {
            id.checked_sub(1000)
                .filter(|&r| r < self.payloads.len() as u64)
                .map(|r| r as u32)
        }
        fn payload(&self, row: u32) -> &[u8] {
            &self.payloads[row as usize]
        }
        fn index(&self, field: &str) -> Option<&FieldIndex> {
            self.indexes
                .iter()
                .find(|(f, _)| f == field)
                .map(|(_, i)| i)
        }
    }

    fn data() -> (Vec<Payload>, Schema) {
        let langs = ["en", "de", "fr"];
        let points: Vec<Payload> = (0..300i64)
            .map(|i| {
                let mut p = Payload::new();
                if i % 7 != 0 {
                    p = p.with("lang", langs[(i % 3) as usize]);
                }
                p = p.with("year", 1990 + i % 40).with("score", i as f64 / 10.0);
                p = p.with("public", i % 2 == 0);
                let tags: Vec<String> = (0..(i % 4)).map(|t| format!("t{}", (i + t) % 5)).collect();
                p.with("tags", tags).with("ints", vec![i % 11, -(i % 13)])
            })
            .collect();
        let mut schema = Schema::default();
        for p in &points {
            schema.learn(p);
        }
        (points, schema)
    }

    fn filters() -> Vec<Filter> {
        let c = Condition::keyword;
        vec![
            Filter::new(),
            Filter::new().must(c("lang", "en")),
            Filter::new().must(Condition::integer("year", 2000)),
            Filter::new().must(Condition::boolean("public", false)),
            Filter::new().must(Condition::any_keyword("tags", ["t1", "t3", "zz"])),
            Filter::new().must(Condition::any_integer("ints", [0, -5, 7])),
            Filter::new().must(Condition::range("score", Range::new().gte(3.0).lt(9.5))),
            Filter::new().must(Condition::range("year", Range::new().gt(2010.5))),
            Filter::new().must(Condition::range("ints", Range::new().lte(-12.0))),
            Filter::new().must(Condition::has_id([1000, 1005, 1299, 5])),
            Filter::new().must(Condition::is_empty("lang")),
            Filter::new().must(Condition::is_empty("tags")),
            Filter::new()
                .should(c("lang", "de"))
                .should(c("lang", "fr")),
            Filter::new()
                .must(Condition::boolean("public", true))
                .must_not(c("lang", "en"))
                .must_not(Condition::range("year", Range::new().lt(2000.0))),
            Filter::new().must(Condition::Filter(
                Filter::new()
                    .should(Condition::Filter(
                        Filter::new().must(c("lang", "en")).must(c("tags", "t2")),
                    ))
                    .should(Condition::has_id([1001, 1002])),
            )),
            Filter::new().must_not(Condition::Filter(Filter::new())),
            Filter::new().must(c("lang", "xx")),
        ]
    }

    /// The bitmap evaluation, with and without indexes, equals the row-by-row evaluation, which
    /// equals a direct reading of the conditions on decoded payloads.
    #[test]
    fn every_operator_agrees_across_indexes_scans_and_rows() {
        let (points, mut schema) = data();
        let payloads: Vec<Vec<u8>> = points.iter().map(|p| p.encode()).collect();
        let plain = Rows {
            payloads: payloads.clone(),
            indexes: Vec::new(),
        };
        let indexes = schema
            .fields
            .iter()
            .map(|(f, s)| {
                let ix = FieldIndex::build(s.kind, f, plain.rows(), |r| plain.payload(r));
                (f.clone(), ix)
            })
            .collect();
        let indexed = Rows { payloads, indexes };
        for spec in schema.fields.values_mut() {
            spec.indexed = true;
        }
        // A decoded reading of a few filters, independent of the evaluator.
        let lang = |p: &Payload| match p.get("lang") {
            Some(crate::payload::Value::Keyword(s)) => Some(s.clone()),
            _ => None,
        };
        let year = |p: &Payload| match p.get("year") {
            Some(crate::payload::Value::Integer(x)) => *x,
            _ => unreachable!(),
        };
        for (fi, f) in filters().iter().enumerate() {
            let f = f.check(&schema).unwrap();
            let mut by_rows = LiveMask::none(300);
            for r in (0..300u32).filter(|&r| f.matches(plain.id(r), plain.payload(r))) {
                by_rows.set(r as usize);
            }
            let mut s1 = FilterStats::default();
            let mut s2 = FilterStats::default();
            assert_eq!(f.rows(&plain, &mut s1), by_rows, "filter {fi} (scan)");
            assert_eq!(f.rows(&indexed, &mut s2), by_rows, "filter {fi} (index)");
            assert!(s2.unindexed_fields.is_empty(), "filter {fi}: {s2:?}");
            let expected: Option<Vec<u32>> = match fi {
                0 => Some((0..300).collect()),
                1 => Some((0..300).filter(|&i| i % 7 != 0 && i % 3 == 0).collect()),
                2 => Some((0..300).filter(|&i| i % 40 == 10).collect()),
                10 => Some((0..300).filter(|&i| i % 7 == 0).collect()),
                11 => Some((0..300).filter(|&i| i % 4 == 0).collect()),
                13 => Some(
                    (0..300u32)
                        .filter(|&i| {
                            let p = &points[i as usize];
                            i % 2 == 0 && lang(p).as_deref() != Some("en") && year(p) >= 2000
                        })
                        .collect(),
                ),
                15 => Some(Vec::new()),
                16 => Some(Vec::new()),
                _ => None,
            };
            if let Some(e) = expected {
                let got: Vec<u32> = by_rows.iter().map(|r| r as u32).collect();
                assert_eq!(got, e, "filter {fi}");
            }
            if fi != 0 && fi != 15 && fi != 16 && fi != 9 {
                assert!(
                    !s1.unindexed_fields.is_empty() || fi == 14,
                    "filter {fi}: a scan is reported"
                );
            }
        }
    }

    #[test]
    fn bad_filters_name_the_field() {
        let (_, schema) = data();
        let bad = [
            (
                Filter::new().must(Condition::keyword("nope", "x")),
                "unknown field",
            ),
            (
                Filter::new().must(Condition::keyword("year", "x")),
                "integer values",
            ),
            (
                Filter::new().must(Condition::integer("lang", 1)),
                "keyword values",
            ),
            (
                Filter::new().must(Condition::range("lang", Range::new().gt(1.0))),
                "a range does not apply",
            ),
            (
                Filter::new().must(Condition::boolean("score", true)),
                "float values",
            ),
            (
                Filter::new().must(Condition::range("score", Range::new().gt(f64::NAN))),
                "NaN",
            ),
            (
                Filter::new().must(Condition::Filter(
                    Filter::new().must_not(Condition::is_empty("missing")),
                )),
                "\"missing\"",
            ),
        ];
        for (f, want) in bad {
            let e = f.check(&schema).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        }
        let mut deep = Filter::new();
        for _ in 0..20 {
            deep = Filter::new().must(Condition::Filter(deep));
        }
        assert!(deep.check(&schema).is_err());
        // Declared fields are known before any point has them.
        let mut s = Schema::default();
        s.fields.insert(
            "lang".into(),
            FieldSpec {
                kind: FieldType::Keyword,
                indexed: true,
            },
        );
        Filter::new()
            .must(Condition::keyword("lang", "en"))
            .check(&s)
            .unwrap();
    }
}
