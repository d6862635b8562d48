//! [`LiveMask`]: which rows of a run a search may return, one bit per row, one `u32` per
//! 32-row block (the FastScan block), so the scan can skip a block whose word is zero.
//!
//! Invariants: bits past `rows` are zero; `count` is the number of set bits.

use crate::quantizer::layout::BLOCK;

/// One bit per row: set while the row may be returned (live, and allowed by a filter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveMask {
    words: Vec<u32>,
    rows: usize,
    count: usize,
}

impl LiveMask {
    /// `rows` rows, all set.
    pub fn all(rows: usize) -> LiveMask {
        let mut words = vec![u32::MAX; rows.div_ceil(BLOCK)];
        if !rows.is_multiple_of(BLOCK)
            && let Some(last) = words.last_mut()
        {
            *last = (1u32 << (rows % BLOCK)) - 1;
        }
        LiveMask {
            words,
            rows,
            count: rows,
        }
    }

    /// `rows` rows, none set.
    pub fn none(rows: usize) -> LiveMask {
        LiveMask {
            words: vec![0; rows.div_ceil(BLOCK)],
            rows,
            count: 0,
        }
    }

    /// `rows` rows, set except those in `deleted` (row numbers below `rows`).
    pub fn without(rows: usize, deleted: impl IntoIterator<Item = u32>) -> LiveMask {
        let mut m = LiveMask::all(rows);
        for r in deleted {
            m.kill(r as usize);
        }
        m
    }

    /// Rows covered (set or not).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows set.
    pub fn count(&self) -> usize {
        self.count
    }

    /// True when no row is set.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The words, one per 32-row block, as the scan reads them.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// True when `row` is set (false past the end).
    #[inline]
    pub fn contains(&self, row: usize) -> bool {
        row < self.rows && self.words[row / BLOCK] >> (row % BLOCK) & 1 == 1
    }

    /// Clears `row`; true when it was set.
    pub fn kill(&mut self, row: usize) -> bool {
        if !self.contains(row) {
            return false;
        }
        self.words[row / BLOCK] &= !(1 << (row % BLOCK));
        self.count -= 1;
        true
    }

    /// Sets `row` (below `rows`); true when it was clear.
    pub fn set(&mut self, row: usize) -> bool {
        if row >= self.rows || self.contains(row) {
            return false;
        }
        self.words[row / BLOCK] |= 1 << (row % BLOCK);
        self.count += 1;
        true
    }

    /// Appends a set row.
    pub fn push(&mut self) {
        if self.rows.is_multiple_of(BLOCK) {
            self.words.push(0);
        }
        self.rows += 1;
        self.set(self.rows - 1);
    }

    /// The rows set in both.
    pub fn and(&self, other: &LiveMask) -> LiveMask {
        let words: Vec<u32> = self
            .words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| a & b)
            .chain(std::iter::repeat_n(
                0,
                self.words.len().saturating_sub(other.words.len()),
            ))
            .collect();
        let count = words.iter().map(|w| w.count_ones() as usize).sum();
        LiveMask {
            words,
            rows: self.rows,
            count,
        }
    }

    /// Keeps only the rows also set in `other` (of the same `rows`).
    pub fn and_assign(&mut self, other: &LiveMask) {
        self.combine(other, |a, b| a & b);
    }

    /// Adds the rows set in `other` (of the same `rows`).
    pub fn or_assign(&mut self, other: &LiveMask) {
        self.combine(other, |a, b| a | b);
    }

    /// Removes the rows set in `other` (of the same `rows`).
    pub fn and_not_assign(&mut self, other: &LiveMask) {
        self.combine(other, |a, b| a & !b);
    }

    fn combine(&mut self, other: &LiveMask, f: impl Fn(u32, u32) -> u32) {
        let mut count = 0;
        for (i, w) in self.words.iter_mut().enumerate() {
            *w = f(*w, other.words.get(i).copied().unwrap_or(0));
            count += w.count_ones() as usize;
        }
        self.count = count;
    }

    /// The rows set, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(b, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let j = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(b * BLOCK + j)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_count_and_tail_bits() {
        for rows in [0, 1, 31, 32, 33, 95] {
            let mut m = LiveMask::all(rows);
            assert_eq!(m.count(), rows);
            assert_eq!(m.iter().count(), rows);
            assert!(!m.contains(rows));
            if rows > 3 {
                assert!(m.kill(3) && !m.kill(3));
                assert_eq!(m.count(), rows - 1);
                assert!(m.set(3));
            }
            m.push();
            assert_eq!((m.rows(), m.count()), (rows + 1, rows + 1));
            let half = LiveMask::without(rows + 1, (0..rows as u32 + 1).step_by(2));
            let both = m.and(&half);
            assert_eq!(both.count(), half.count());
            let mut x = m.clone();
            x.and_assign(&half);
            assert_eq!(x, both);
            x.or_assign(&m);
            assert_eq!(x, m);
            x.and_not_assign(&half);
            assert_eq!(x.count(), m.count() - half.count());
            assert!(x.iter().all(|r| !half.contains(r)));
            assert_eq!(
                both.iter().collect::<Vec<_>>(),
                half.iter().collect::<Vec<_>>()
            );
        }
    }
}
