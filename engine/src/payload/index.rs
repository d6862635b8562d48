//! Per-segment field indexes: the rows of each keyword (increasing) and a row mask per bool
//! value; for numbers, every (value, row) pair sorted by value, so a range is two binary
//! searches and a slice. Answers are row masks ([`LiveMask`]), the form the scan reads.
//!
//! An index is derived data: built from a segment's payload section when the segment is opened
//! (or when an index is declared), never stored, so it cannot disagree with the payloads.

use std::collections::HashMap;

use super::{Condition, FieldType, Raw};
use crate::search::LiveMask;

/// The index of one field over one segment's rows.
#[derive(Debug, Clone)]
pub enum FieldIndex {
    /// Rows per keyword.
    Keyword {
        /// Keyword bytes → the rows holding it, increasing.
        values: HashMap<Box<[u8]>, Vec<u32>>,
        /// Rows with at least one keyword.
        present: LiveMask,
    },
    /// Rows per bool value.
    Bool {
        /// Rows holding `false`, `true`.
        by_value: [LiveMask; 2],
    },
    /// Integers, sorted.
    Integer {
        /// Values in increasing order.
        values: Vec<i64>,
        /// The row of each value.
        rows: Vec<u32>,
        /// Rows with at least one value.
        present: LiveMask,
    },
    /// Floats, sorted.
    Float {
        /// Values in increasing order.
        values: Vec<f64>,
        /// The row of each value.
        rows: Vec<u32>,
        /// Rows with a value.
        present: LiveMask,
    },
}

impl FieldIndex {
    /// Builds the index of `field` (of type `kind`) over rows `0..rows`, reading each row's
    /// encoded payload from `payload`. Values of another type are not indexed (they cannot be
    /// there: the schema refuses them).
    pub fn build<'a>(
        kind: FieldType,
        field: &str,
        rows: u32,
        payload: impl Fn(u32) -> &'a [u8],
    ) -> FieldIndex {
        let n = rows as usize;
        let values = (0..rows).filter_map(|r| Some((r, super::field(payload(r), field)?)));
        match kind {
            FieldType::Keyword => {
                let mut map: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
                let mut present = LiveMask::none(n);
                for (r, raw) in values {
                    for k in raw.keywords() {
                        present.set(r as usize);
                        match map.get_mut(k) {
                            // A list may repeat a keyword: rows stay distinct.
                            Some(v) if v.last() == Some(&r) => {}
                            Some(v) => v.push(r),
                            None => {
                                map.insert(k.into(), vec![r]);
                            }
                        }
                    }
                }
                FieldIndex::Keyword {
                    values: map,
                    present,
                }
            }
            FieldType::Bool => {
                let mut by_value = [LiveMask::none(n), LiveMask::none(n)];
                for (r, raw) in values {
                    if let Raw::Bool(b) = raw {
                        by_value[usize::from(b)].set(r as usize);
                    }
                }
                FieldIndex::Bool { by_value }
            }
            FieldType::Integer => {
                let mut pairs: Vec<(i64, u32)> = values
                    .flat_map(|(r, raw)| raw.integers().map(move |x| (x, r)))
                    .collect();
                pairs.sort_unstable();
                let mut present = LiveMask::none(n);
                for p in &pairs {
                    present.set(p.1 as usize);
                }
                let (values, rows) = pairs.into_iter().unzip();
                FieldIndex::Integer {
                    values,
                    rows,
                    present,
                }
            }
            FieldType::Float => {
                let mut pairs: Vec<(f64, u32)> = values
                    .filter_map(|(r, raw)| match raw {
                        Raw::Float(x) => Some((x, r)),
                        _ => None,
                    })
                    .collect();
                pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let mut present = LiveMask::none(n);
                for p in &pairs {
                    present.set(p.1 as usize);
                }
                let (values, rows) = pairs.into_iter().unzip();
                FieldIndex::Float {
                    values,
                    rows,
                    present,
                }
            }
        }
    }

    /// The rows where `c` (a checked condition on this field) holds, over `n` rows; `None`
    /// when this index does not answer it.
    pub fn rows(&self, c: &Condition, n: usize) -> Option<LiveMask> {
        let of = |rows: &[u32]| {
            let mut m = LiveMask::none(n);
            for &r in rows {
                m.set(r as usize);
            }
            m
        };
        let absent = |present: &LiveMask| {
            let mut all = LiveMask::all(n);
            all.and_not_assign(present);
            all
        };
        Some(match (self, c) {
            (FieldIndex::Keyword { values, .. }, Condition::MatchKeyword { value, .. }) => {
                of(values.get(value.as_bytes()).map_or(&[][..], |v| v))
            }
            (FieldIndex::Keyword { values, .. }, Condition::AnyKeyword { values: any, .. }) => {
                let mut out = LiveMask::none(n);
                for v in any {
                    for &r in values.get(v.as_bytes()).map_or(&[][..], |v| v) {
                        out.set(r as usize);
                    }
                }
                out
            }
            (FieldIndex::Bool { by_value }, Condition::MatchBool { value, .. }) => {
                by_value[usize::from(*value)].clone()
            }
            (FieldIndex::Integer { values, rows, .. }, Condition::MatchInteger { value, .. }) => {
                let lo = values.partition_point(|x| x < value);
                let hi = values.partition_point(|x| x <= value);
                of(&rows[lo..hi])
            }
            (
                FieldIndex::Integer { values, rows, .. },
                Condition::AnyInteger { values: any, .. },
            ) => {
                let mut out = LiveMask::none(n);
                for v in any {
                    let lo = values.partition_point(|x| x < v);
                    let hi = values.partition_point(|x| x <= v);
                    for &r in &rows[lo..hi] {
                        out.set(r as usize);
                    }
                }
                out
            }
            (FieldIndex::Integer { values, rows, .. }, Condition::Range { range, .. }) => {
                // i64 → f64 is monotonic, so the values within a range are one slice.
                let (lo, hi) = bounds(values, |x| *x as f64, range);
                of(&rows[lo..hi])
            }
            (FieldIndex::Float { values, rows, .. }, Condition::Range { range, .. }) => {
                let (lo, hi) = bounds(values, |x| *x, range);
                of(&rows[lo..hi])
            }
            (FieldIndex::Keyword { present, .. }, Condition::IsEmpty { .. })
            | (FieldIndex::Integer { present, .. }, Condition::IsEmpty { .. })
            | (FieldIndex::Float { present, .. }, Condition::IsEmpty { .. }) => absent(present),
            (FieldIndex::Bool { by_value }, Condition::IsEmpty { .. }) => {
                let mut all = LiveMask::all(n);
                all.and_not_assign(&by_value[0]);
                all.and_not_assign(&by_value[1]);
                all
            }
            _ => return None,
        })
    }
}

/// The slice `lo..hi` of sorted `values` within `range`.
fn bounds<T>(values: &[T], num: impl Fn(&T) -> f64, range: &super::Range) -> (usize, usize) {
    let lo = values.partition_point(|x| {
        let v = num(x);
        range.gt.is_some_and(|b| v <= b) || range.gte.is_some_and(|b| v < b)
    });
    let hi = values.partition_point(|x| {
        let v = num(x);
        range.lt.is_none_or(|b| v < b) && range.lte.is_none_or(|b| v <= b)
    });
    (lo, hi.max(lo))
}
