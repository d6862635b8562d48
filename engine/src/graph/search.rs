//! Best-first search over a graph: the candidate frontier in a max-heap, the `ef` best
//! accepted rows in a min-heap, a visited mark per row. Rows are scored by a [`Scorer`]
//! (larger is better); the neighbours of an expanded row are all prefetched before the first
//! is scored.
//!
//! A row the caller does not accept (deleted, or outside a filter) is still scored and
//! expanded, so the search routes through it, but it never enters the results. The search
//! stops when the best unexpanded row cannot improve a full result list; when fewer than `ef`
//! rows are accepted in the reachable part of the graph it visits all of that part.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Scores rows for a search.
pub trait Scorer {
    /// Starts loading what [`score`](Self::score) will read for `row`.
    fn prefetch(&self, row: u32);
    /// The row's key: larger is better.
    fn score(&self, row: u32) -> f32;
}

/// A graph's out-lists.
pub trait Neighbors {
    /// The neighbours of `row`.
    fn neighbors(&self, row: u32) -> &[u32];
    /// Starts loading `row`'s list.
    fn prefetch_list(&self, _row: u32) {}
}

impl Neighbors for super::GraphRef<'_> {
    #[inline]
    fn neighbors(&self, row: u32) -> &[u32] {
        super::GraphRef::neighbors(self, row)
    }
    #[inline]
    fn prefetch_list(&self, row: u32) {
        super::GraphRef::prefetch_list(self, row)
    }
}

impl Neighbors for [Vec<u32>] {
    #[inline]
    fn neighbors(&self, row: u32) -> &[u32] {
        &self[row as usize]
    }
}

/// A total order on keys as `u32`s (larger key, larger number; NaN lowest).
#[inline]
fn ord(key: f32) -> u32 {
    let key = if key.is_nan() { f32::NEG_INFINITY } else { key };
    let b = key.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

#[inline]
fn unord(u: u32) -> f32 {
    f32::from_bits(if u & 0x8000_0000 != 0 {
        u & 0x7fff_ffff
    } else {
        !u
    })
}

#[inline]
fn pack(key: f32, row: u32) -> u64 {
    (u64::from(ord(key)) << 32) | u64::from(row)
}

/// Reusable search state: visited marks (one `u16` epoch per row) and the two heaps. One per
/// thread ([`with_scratch`]), so a search does not allocate once its buffers have grown.
#[derive(Debug, Default)]
pub struct Scratch {
    marks: Vec<u16>,
    epoch: u16,
    frontier: BinaryHeap<u64>,
    best: BinaryHeap<Reverse<u64>>,
    fresh: Vec<u32>,
    /// Rows scored by the last search.
    pub scored: usize,
    /// When set, every scored row's packed key is kept in `seen` (the build prunes from the
    /// whole visited set, not only the `ef` best).
    pub record: bool,
    seen: Vec<u64>,
}

impl Scratch {
    fn begin(&mut self, rows: usize) {
        if self.marks.len() < rows {
            self.marks.resize(rows, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
        self.frontier.clear();
        self.best.clear();
        self.seen.clear();
        self.scored = 0;
    }

    /// Marks `row` visited; false when it already was.
    #[inline]
    fn visit(&mut self, row: u32) -> bool {
        let m = &mut self.marks[row as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }

    /// Hands the accepted rows of the last search to `f` with their keys, in no order.
    pub fn drain_best(&mut self, mut f: impl FnMut(u32, f32)) {
        for Reverse(p) in self.best.drain() {
            f(p as u32, unord((p >> 32) as u32));
        }
    }

    /// The `n` best rows the last search scored (accepted or not, when `record` was set) with
    /// their keys, best first, into `out`.
    pub fn best_seen(&mut self, n: usize, out: &mut Vec<(u32, f32)>) {
        out.clear();
        let n = n.min(self.seen.len());
        if n == 0 {
            return;
        }
        if n < self.seen.len() {
            self.seen.select_nth_unstable_by(n - 1, |a, b| b.cmp(a));
        }
        self.seen[..n].sort_unstable_by(|a, b| b.cmp(a));
        out.extend(
            self.seen[..n]
                .iter()
                .map(|&p| (p as u32, unord((p >> 32) as u32))),
        );
    }

    /// The accepted rows of the last search with their keys, best first, into `out`.
    pub fn results(&mut self, out: &mut Vec<(u32, f32)>) {
        out.clear();
        out.extend(
            self.best
                .drain()
                .map(|Reverse(p)| (p as u32, unord((p >> 32) as u32))),
        );
        out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch.
pub fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> T) -> T {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        // Re-entered (a scorer that searches): a fresh one.
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Searches `graph` (over `rows` rows) from `entries` for the `ef` best rows `accept` lets
/// through; they are left in `scratch` ([`Scratch::results`]).
pub fn search<N: Neighbors + ?Sized, S: Scorer + ?Sized>(
    graph: &N,
    rows: usize,
    entries: &[u32],
    scorer: &S,
    ef: usize,
    accept: impl Fn(u32) -> bool,
    scratch: &mut Scratch,
) {
    let ef = ef.max(1);
    scratch.begin(rows);
    for &e in entries {
        if (e as usize) < rows && scratch.visit(e) {
            scorer.prefetch(e);
        }
    }
    for &e in entries {
        if (e as usize) >= rows {
            continue;
        }
        let p = pack(scorer.score(e), e);
        scratch.scored += 1;
        if scratch.record {
            scratch.seen.push(p);
        }
        scratch.frontier.push(p);
        if accept(e) {
            scratch.best.push(Reverse(p));
            if scratch.best.len() > ef {
                scratch.best.pop();
            }
        }
    }
    while let Some(top) = scratch.frontier.pop() {
        if scratch.best.len() >= ef && scratch.best.peek().is_some_and(|w| top < w.0) {
            break;
        }
        let mut fresh = std::mem::take(&mut scratch.fresh);
        fresh.clear();
        for &nb in graph.neighbors(top as u32) {
            if scratch.visit(nb) {
                scorer.prefetch(nb);
                fresh.push(nb);
            }
        }
        for &nb in &fresh {
            let p = pack(scorer.score(nb), nb);
            scratch.scored += 1;
            if scratch.record {
                scratch.seen.push(p);
            }
            if scratch.best.len() < ef || scratch.best.peek().is_some_and(|w| p > w.0) {
                // Its list is read if it is expanded: start loading it now.
                graph.prefetch_list(nb);
                scratch.frontier.push(p);
                if accept(nb) {
                    scratch.best.push(Reverse(p));
                    if scratch.best.len() > ef {
                        scratch.best.pop();
                    }
                }
            }
        }
        scratch.fresh = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_total_and_round_trips() {
        let keys = [
            f32::NEG_INFINITY,
            -1e30,
            -1.0,
            -f32::MIN_POSITIVE,
            -0.0,
            0.0,
            f32::MIN_POSITIVE,
            1.0,
            1e30,
            f32::INFINITY,
        ];
        for w in keys.windows(2) {
            assert!(ord(w[0]) <= ord(w[1]), "{w:?}");
        }
        for k in keys {
            assert_eq!(unord(ord(k)).to_bits(), k.to_bits());
        }
        assert_eq!(ord(f32::NAN), ord(f32::NEG_INFINITY));
    }

    /// Points on a line, each linked to its two neighbours: the search walks from one end to
    /// the best accepted rows.
    struct Line(Vec<f32>);
    impl Scorer for Line {
        fn prefetch(&self, _: u32) {}
        fn score(&self, row: u32) -> f32 {
            -(self.0[row as usize] - 42.0).abs()
        }
    }

    #[test]
    fn walks_to_the_best_rows_and_skips_unaccepted_ones() {
        let n = 100u32;
        let lists: Vec<Vec<u32>> = (0..n)
            .map(|i| {
                [i.wrapping_sub(1), i + 1]
                    .into_iter()
                    .filter(|&j| j < n)
                    .collect()
            })
            .collect();
        let scorer = Line((0..n).map(|i| i as f32).collect());
        let mut s = Scratch::default();
        search(&lists[..], n as usize, &[0], &scorer, 3, |_| true, &mut s);
        let mut out = Vec::new();
        s.results(&mut out);
        let rows: Vec<u32> = out.iter().map(|r| r.0).collect();
        assert_eq!(rows, vec![42, 41, 43]);
        // Row 42 is not accepted: the search routes through it to the next best.
        search(
            &lists[..],
            n as usize,
            &[99],
            &scorer,
            2,
            |r| r != 42,
            &mut s,
        );
        s.results(&mut out);
        let rows: Vec<u32> = out.iter().map(|r| r.0).collect();
        assert_eq!(rows, vec![41, 43]);
        // Nothing accepted: every reachable row is visited, nothing returned.
        search(&lists[..], n as usize, &[0], &scorer, 2, |_| false, &mut s);
        assert_eq!(s.scored, n as usize);
        s.results(&mut out);
        assert!(out.is_empty());
    }
}
