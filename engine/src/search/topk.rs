//! A bounded top-k collector with deterministic ties.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// An entry ordered so that the heap's top is the *worst* kept candidate: lower key is worse, and
/// among equal keys the larger id is worse (ties go to the smaller id).
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: f32,
    id: u64,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // "Greater" = worse, so BinaryHeap (a max-heap) keeps the worst on top.
        other.key.total_cmp(&self.key).then(self.id.cmp(&other.id))
    }
}

/// Keeps the `k` best `(id, key)` pairs seen, where a larger key is better and equal keys are
/// ordered by increasing id. The result is independent of the order candidates arrive in.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl TopK {
    /// An empty collector for `k` results.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The key a candidate must beat to enter once the collector is full.
    #[inline]
    pub fn threshold(&self) -> Option<f32> {
        if self.heap.len() == self.k {
            self.heap.peek().map(|e| e.key)
        } else {
            None
        }
    }

    /// Offers a candidate.
    #[inline]
    pub fn push(&mut self, id: u64, key: f32) {
        if self.k == 0 {
            return;
        }
        let e = Entry { key, id };
        if self.heap.len() < self.k {
            self.heap.push(e);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && e < *worst
        {
            *worst = e;
        }
    }

    /// Merges another collector into this one.
    pub fn merge(&mut self, other: TopK) {
        for e in other.heap {
            self.push(e.id, e.key);
        }
    }

    /// The kept `(id, key)` pairs, best first.
    pub fn into_sorted(self) -> Vec<(u64, f32)> {
        let mut v = self.heap.into_vec();
        v.sort_unstable();
        v.into_iter().map(|e| (e.id, e.key)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_full_sort(keys in proptest::collection::vec(-5i8..5, 0..200), k in 0usize..20) {
            let mut top = TopK::new(k);
            for (i, &key) in keys.iter().enumerate() {
                top.push(i as u64, f32::from(key));
            }
            let mut all: Vec<(u64, f32)> = keys.iter().enumerate().map(|(i, &k)| (i as u64, f32::from(k))).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            prop_assert_eq!(top.into_sorted(), all);
        }
    }
}
