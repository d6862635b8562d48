//! Per-segment field indexes: a roaring bitmap of rows per keyword or bool value; for numbers,
//! every (value, row) pair sorted by value, so a range is two binary searches and a slice.
//!
//! An index is derived data: built from a segment's payload section when the segment is opened
//! (or when an index is declared), never stored, so it cannot disagree with the payloads.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use super::{Condition, FieldType, Raw};

/// The index of one field over one segment's rows.
#[derive(Debug, Clone)]
pub enum FieldIndex {
    /// Rows per keyword.
    Keyword {
        /// Keyword bytes → rows holding it.
        values: HashMap<Box<[u8]>, RoaringBitmap>,
        /// Rows with at least one keyword.
        present: RoaringBitmap,
    },
    /// Rows per bool value.
    Bool {
        /// Rows holding `false`, `true`.
        by_value: [RoaringBitmap; 2],
    },
    /// Integers, sorted.
    Integer {
        /// Values in increasing order.
        values: Vec<i64>,
        /// The row of each value.
        rows: Vec<u32>,
        /// Rows with at least one value.
        present: RoaringBitmap,
    },
    /// Floats, sorted.
    Float {
        /// Values in increasing order.
        values: Vec<f64>,
        /// The row of each value.
        rows: Vec<u32>,
        /// Rows with a value.
        present: RoaringBitmap,
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
        let values = (0..rows).filter_map(|r| Some((r, super::field(payload(r), field)?)));
        match kind {
            FieldType::Keyword => {
                let mut map: HashMap<Box<[u8]>, RoaringBitmap> = HashMap::new();
                let mut present = RoaringBitmap::new();
                for (r, raw) in values {
                    for k in raw.keywords() {
                        present.insert(r);
                        match map.get_mut(k) {
                            Some(b) => {
                                b.insert(r);
                            }
                            None => {
                                map.insert(k.into(), std::iter::once(r).collect());
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
                let mut by_value = [RoaringBitmap::new(), RoaringBitmap::new()];
                for (r, raw) in values {
                    if let Raw::Bool(b) = raw {
                        by_value[usize::from(b)].insert(r);
                    }
                }
                FieldIndex::Bool { by_value }
            }
            FieldType::Integer => {
                let mut pairs: Vec<(i64, u32)> = values
                    .flat_map(|(r, raw)| raw.integers().map(move |x| (x, r)))
                    .collect();
                pairs.sort_unstable();
                let present = pairs.iter().map(|p| p.1).collect();
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
                let present = pairs.iter().map(|p| p.1).collect();
                let (values, rows) = pairs.into_iter().unzip();
                FieldIndex::Float {
                    values,
                    rows,
                    present,
                }
            }
        }
    }

    /// Bytes the index holds in memory (roughly).
    pub fn heap_bytes(&self) -> usize {
        match self {
            FieldIndex::Keyword { values, present } => {
                present.serialized_size()
                    + values
                        .iter()
                        .map(|(k, b)| k.len() + b.serialized_size() + 32)
                        .sum::<usize>()
            }
            FieldIndex::Bool { by_value } => by_value.iter().map(|b| b.serialized_size()).sum(),
            FieldIndex::Integer { values, .. } => 12 * values.len(),
            FieldIndex::Float { values, .. } => 12 * values.len(),
        }
    }

    /// The rows where `c` (a checked condition on this field) holds; `None` when this index
    /// does not answer it.
    pub fn rows(&self, c: &Condition, n: u32) -> Option<RoaringBitmap> {
        Some(match (self, c) {
            (FieldIndex::Keyword { values, .. }, Condition::MatchKeyword { value, .. }) => {
                values.get(value.as_bytes()).cloned().unwrap_or_default()
            }
            (FieldIndex::Keyword { values, .. }, Condition::AnyKeyword { values: any, .. }) => {
                let mut out = RoaringBitmap::new();
                for v in any {
                    if let Some(b) = values.get(v.as_bytes()) {
                        out |= b;
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
                sorted_rows(&rows[lo..hi])
            }
            (
                FieldIndex::Integer { values, rows, .. },
                Condition::AnyInteger { values: any, .. },
            ) => {
                let mut picked = Vec::new();
                for v in any {
                    let lo = values.partition_point(|x| x < v);
                    let hi = values.partition_point(|x| x <= v);
                    picked.extend_from_slice(&rows[lo..hi]);
                }
                sorted_rows(&picked)
            }
            (FieldIndex::Integer { values, rows, .. }, Condition::Range { range, .. }) => {
                // i64 → f64 is monotonic, so the values within a range are one slice.
                let (lo, hi) = bounds(values, |x| *x as f64, range);
                sorted_rows(&rows[lo..hi])
            }
            (FieldIndex::Float { values, rows, .. }, Condition::Range { range, .. }) => {
                let (lo, hi) = bounds(values, |x| *x, range);
                sorted_rows(&rows[lo..hi])
            }
            (FieldIndex::Keyword { present, .. }, Condition::IsEmpty { .. })
            | (FieldIndex::Integer { present, .. }, Condition::IsEmpty { .. })
            | (FieldIndex::Float { present, .. }, Condition::IsEmpty { .. }) => {
                let mut all = RoaringBitmap::new();
                if n > 0 {
                    all.insert_range(0..n);
                }
                all - present
            }
            (FieldIndex::Bool { by_value }, Condition::IsEmpty { .. }) => {
                let mut all = RoaringBitmap::new();
                if n > 0 {
                    all.insert_range(0..n);
                }
                all - &by_value[0] - &by_value[1]
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

/// Rows (in any order, maybe repeated) as a bitmap.
fn sorted_rows(rows: &[u32]) -> RoaringBitmap {
    let mut v = rows.to_vec();
    v.sort_unstable();
    v.dedup();
    RoaringBitmap::from_sorted_iter(v).unwrap_or_default()
}
