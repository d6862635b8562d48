//! Building the graph: rows inserted in a seeded order, each linked to the survivors of the
//! α-pruning rule among the `pool` nearest rows a search of the graph so far scored (a beam of
//! `build_ef`), and linked back from them (a list that overflows is pruned again).
//!
//! Distances are squared Euclidean on the points the caller gives (unit vectors for cosine,
//! the vectors for L2 and dot), held as binary16 after a power-of-two scale that puts the
//! largest component near 2^14 (ordering and the α rule are scale-free): the build waits on
//! memory, one candidate row per cache miss, and halves move half the lines (docs-minilm,
//! 1 thread: 23.2 s on f32 points, 18.2–18.5 s on halves, recall at ef 64 0.9863 → 0.9859).
//! Rows go in batches that grow with the graph (at most 1/16 of the rows inserted so far, at
//! most [`MAX_BATCH`]): a batch's rows are searched and pruned in parallel against the graph
//! as it stood, then linked in row order, so the graph is the same whatever the thread count.

use rayon::prelude::*;

use super::NONE;
use super::search::{Scorer, search, with_scratch};
use crate::kernels::half::{HalfDistanceFn, f32_to_f16, squared_l2_f16_fn};
use crate::kernels::squared_l2_wide;
use crate::random::SeededRng;

/// Cache lines of a point prefetched per neighbour: the whole row up to 16 lines (1 KiB of
/// halves, d ≤ 512), else the first line only. Measured on one thread: docs-minilm's 768-byte
/// half rows build in 18.2–18.5 s prefetched whole (13 lines), 19.3–21.3 s with 12 lines,
/// 24–25 s with 8, 21–23 s with 1; glove-50's rows are 2–3 lines. On f32 points (1,536-byte
/// rows) the whole row was the worst choice (67 s against 23 s for one line): past some depth
/// the prefetches queue behind each other, hence the cap.
fn prefetch_lines(dim: usize) -> usize {
    let lines = crate::kernels::lines_spanned(2 * dim);
    if lines <= 16 { lines } else { 1 }
}

/// Largest batch of rows searched against one state of the graph.
pub const MAX_BATCH: usize = 1024;

/// How a graph is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildParams {
    /// Out-degree bound `R`.
    pub degree: usize,
    /// Candidates a row's insertion search keeps (its beam).
    pub build_ef: usize,
    /// Candidates a row is pruned from: the `pool` nearest of every row its insertion search
    /// scored (at least the `build_ef` it kept). More candidates, better lists, at the price
    /// of pruning only (the search is the same).
    pub pool: usize,
    /// Pruning factor α ≥ 1: a candidate `c` is dropped when a kept neighbour `o` has
    /// `α · d(o, c) ≤ d(p, c)`; above 1 keeps longer edges (fewer hops across the data, more
    /// neighbours per list). 1 (HNSW's heuristic) measured best on glove-50 and docs-minilm.
    pub alpha: f32,
    /// Entry rows a search starts from: the medoid and `entries - 1` seeded rows.
    pub entries: usize,
    /// Seed of the insertion order and the sampled entries.
    pub seed: u64,
}

impl Default for BuildParams {
    fn default() -> Self {
        BuildParams {
            degree: 32,
            build_ef: 64,
            pool: 128,
            alpha: 1.0,
            entries: 16,
            seed: 0x6779_7265_6772_6166,
        }
    }
}

impl BuildParams {
    /// Checks the parameters (a clear error instead of a degenerate graph).
    pub fn check(&self) -> crate::error::Result<()> {
        let bad = |what: &str| {
            Err(crate::error::Error::invalid_argument(
                "graph",
                what.to_string(),
            ))
        };
        if !(2..=256).contains(&self.degree) {
            return bad("degree must be within 2..=256");
        }
        if self.build_ef < 1 || self.build_ef > 4096 {
            return bad("build ef must be within 1..=4096");
        }
        if self.pool > 16384 {
            return bad("build pool must be at most 16384");
        }
        if !(self.alpha.is_finite() && (1.0..=4.0).contains(&self.alpha)) {
            return bad("alpha must be within 1..=4");
        }
        if !(1..=1024).contains(&self.entries) {
            return bad("entries must be within 1..=1024");
        }
        Ok(())
    }

    /// The defaults for `dim`-dimensional data: degree 28 below 128 dimensions (a 4-bit code
    /// is small there and the neighbour list dominates the memory: 28 keeps glove-50 within
    /// half of hnswlib's bytes per vector), 32 from 128 on.
    pub fn for_dim(dim: usize) -> Self {
        BuildParams {
            degree: if dim < 128 { 28 } else { 32 },
            ..BuildParams::default()
        }
    }
}

/// A built graph: entry rows (the medoid first) and `rows × degree` neighbours.
#[derive(Debug, Clone)]
pub struct Built {
    /// Entry rows.
    pub entries: Vec<u32>,
    /// Neighbour lists, [`NONE`]-padded.
    pub adjacency: Vec<u32>,
}

/// The build's points: binary16 copies of the caller's, scaled by a power of two.
struct Points<'a> {
    x: &'a [u16],
    dim: usize,
    l2: HalfDistanceFn,
}

impl Points<'_> {
    #[inline]
    fn row(&self, r: u32) -> &[u16] {
        &self.x[r as usize * self.dim..][..self.dim]
    }
    #[inline]
    fn dist(&self, a: u32, b: u32) -> f32 {
        (self.l2)(self.row(a), self.row(b))
    }
}

/// The power of two that brings the largest finite magnitude of `x` into [2^13, 2^14): far
/// from the binary16 overflow at 65504 even for a difference of two components, and as far
/// from its subnormals as the data allows.
fn half_scale(x: &[f32]) -> f32 {
    let max = x
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        return 1.0;
    }
    // max = m · 2^e with m in [1, 2): scale 2^(13 - e), clamped to what an f32 holds.
    let e = ((max.to_bits() >> 23) & 0xff) as i32 - 127;
    2f32.powi((13 - e).clamp(-126, 127))
}

/// `x` scaled by `half_scale(x)`, as binary16.
fn to_halves(x: &[f32]) -> Vec<u16> {
    let s = half_scale(x);
    let mut out = vec![0u16; x.len()];
    out.par_chunks_mut(1 << 16)
        .zip(x.par_chunks(1 << 16))
        .for_each(|(o, v)| {
            for (o, &v) in o.iter_mut().zip(v) {
                *o = f32_to_f16(v * s);
            }
        });
    out
}

struct ToPoint<'a> {
    points: &'a Points<'a>,
    q: &'a [u16],
    lines: usize,
}

impl Scorer for ToPoint<'_> {
    #[inline]
    fn prefetch(&self, row: u32) {
        let r = self.points.row(row);
        // `lines` from `prefetch_lines`: short rows whole, long rows their first line only.
        crate::kernels::prefetch(bytemuck::cast_slice(r), self.lines);
    }
    #[inline]
    fn score(&self, row: u32) -> f32 {
        -(self.points.l2)(self.q, self.points.row(row))
    }
}

/// Keeps from `cands` (sorted nearest first, `(distance to p, row)`) up to `degree` rows by the
/// α rule, into `out`.
fn prune(
    points: &Points<'_>,
    cands: &[(f32, u32)],
    alpha2: f32,
    degree: usize,
    out: &mut Vec<u32>,
) {
    out.clear();
    'next: for &(d, c) in cands {
        for &o in out.iter() {
            if alpha2 * points.dist(o, c) <= d {
                continue 'next;
            }
        }
        out.push(c);
        if out.len() == degree {
            break;
        }
    }
}

/// Prunes `q`'s overflowing list back to `degree` rows by the α rule, nearest first.
fn reprune(points: &Points<'_>, q: u32, list: &mut Vec<u32>, alpha2: f32, degree: usize) {
    let mut cands: Vec<(f32, u32)> = list.iter().map(|&c| (points.dist(q, c), c)).collect();
    cands.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    prune(points, &cands, alpha2, degree, list);
}

/// The row nearest the mean (on the caller's f32 points).
fn medoid(x: &[f32], dim: usize, rows: usize) -> u32 {
    let row = |r: usize| &x[r * dim..][..dim];
    let mut mean = vec![0f64; dim];
    for r in 0..rows {
        for (m, &v) in mean.iter_mut().zip(row(r)) {
            *m += f64::from(v);
        }
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / rows as f64) as f32).collect();
    (0..rows as u32)
        .into_par_iter()
        .map(|r| (squared_l2_wide(&mean, row(r as usize)), r))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map_or(0, |m| m.1)
}

/// Builds the graph over the `x.len() / dim` points of `x`. `progress` is told the rows
/// inserted so far after each batch.
pub fn build(
    x: &[f32],
    dim: usize,
    params: &BuildParams,
    progress: &(dyn Fn(usize) + Sync),
) -> Built {
    let rows = x.len().checked_div(dim).unwrap_or(0);
    let degree = params.degree.max(1);
    if rows == 0 {
        return Built {
            entries: Vec::new(),
            adjacency: Vec::new(),
        };
    }
    let halves = to_halves(&x[..rows * dim]);
    let points = Points {
        x: &halves,
        dim,
        l2: squared_l2_f16_fn(),
    };
    let alpha2 = params.alpha * params.alpha;
    // Lists may overflow to `slack` between prunes (DiskANN's slack): a full list pruned on
    // every new reverse edge costs O(R²) distances per edge, the build's largest cost.
    let slack = degree + degree / 3;
    let start = medoid(x, dim, rows);
    let pool = params.pool.max(params.build_ef);
    let pf = prefetch_lines(dim);
    let mut rng = SeededRng::new(params.seed, 0x6772_6170);
    let mut order: Vec<u32> = rng.permutation(rows);
    if let Some(i) = order.iter().position(|&r| r == start) {
        order.swap(0, i);
    }
    let mut lists: Vec<Vec<u32>> = vec![Vec::new(); rows];
    let entry = [start];
    let mut done = 1;
    while done < rows {
        let batch = (done / 16).clamp(1, MAX_BATCH).min(rows - done);
        let ids = &order[done..done + batch];
        let graph: &[Vec<u32>] = &lists;
        let outs: Vec<Vec<u32>> = ids
            .par_iter()
            .map(|&p| {
                let scorer = ToPoint {
                    points: &points,
                    q: points.row(p),
                    lines: pf,
                };
                let mut found = Vec::new();
                with_scratch(|s| {
                    s.record = pool > params.build_ef;
                    search(graph, rows, &entry, &scorer, params.build_ef, |_| true, s);
                    if s.record {
                        s.best_seen(pool, &mut found);
                    } else {
                        s.results(&mut found);
                    }
                    s.record = false;
                });
                let cands: Vec<(f32, u32)> = found
                    .into_iter()
                    .filter(|&(r, _)| r != p)
                    .map(|(r, k)| (-k, r))
                    .collect();
                let mut out = Vec::with_capacity(degree);
                prune(&points, &cands, alpha2, degree, &mut out);
                out
            })
            .collect();
        let mut back: Vec<(u32, u32)> = Vec::with_capacity(batch * degree);
        for (&p, out) in ids.iter().zip(outs) {
            back.extend(out.iter().map(|&q| (q, p)));
            lists[p as usize] = out;
        }
        back.sort_unstable();
        let groups: Vec<&[(u32, u32)]> = back.chunk_by(|a, b| a.0 == b.0).collect();
        let graph: &[Vec<u32>] = &lists;
        let updates: Vec<(u32, Vec<u32>)> = groups
            .par_iter()
            .map(|g| {
                let q = g[0].0;
                let mut list = graph[q as usize].clone();
                for &(_, p) in g.iter() {
                    if !list.contains(&p) {
                        list.push(p);
                    }
                }
                if list.len() > slack {
                    reprune(&points, q, &mut list, alpha2, degree);
                }
                (q, list)
            })
            .collect();
        for (q, list) in updates {
            lists[q as usize] = list;
        }
        done += batch;
        progress(done);
    }
    lists.par_iter_mut().enumerate().for_each(|(q, list)| {
        if list.len() > degree {
            reprune(&points, q as u32, list, alpha2, degree);
        }
    });
    let mut adjacency = vec![NONE; rows * degree];
    for (r, list) in lists.iter().enumerate() {
        adjacency[r * degree..r * degree + list.len()].copy_from_slice(list);
    }
    let mut entries = vec![start];
    let extra = params.entries.saturating_sub(1).min(rows - 1);
    let mut rng = SeededRng::new(params.seed, 0x656e_7472);
    for r in rng.permutation(rows) {
        if entries.len() > extra {
            break;
        }
        if r != start {
            entries.push(r);
        }
    }
    Built { entries, adjacency }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::search::Scratch;

    fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::for_data(seed);
        (0..n * d).map(|_| rng.gaussian() as f32).collect()
    }

    /// The graph finds the exact nearest neighbours of held-out points almost always, and is
    /// the same whatever the thread count.
    #[test]
    fn graph_search_finds_true_neighbours_and_builds_deterministically() {
        let (n, d) = (3000, 16);
        let x = data(n, d, 1);
        let p = BuildParams {
            degree: 16,
            ..BuildParams::default()
        };
        let g = build(&x, d, &p, &|_| {});
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let g1 = one.install(|| build(&x, d, &p, &|_| {}));
        assert_eq!(g.adjacency, g1.adjacency);
        assert_eq!(g.entries, g1.entries);
        assert_eq!(g.entries.len(), p.entries);
        let row = |r: u32| &x[r as usize * d..][..d];
        let lists: Vec<Vec<u32>> = g
            .adjacency
            .chunks(p.degree)
            .map(|l| l.iter().copied().filter(|&v| v != NONE).collect())
            .collect();
        assert!(lists.iter().all(|l| !l.is_empty()));
        let queries = data(100, d, 2);
        let mut s = Scratch::default();
        let mut hits = 0;
        let mut out = Vec::new();
        for q in queries.chunks(d) {
            let truth = (0..n as u32)
                .map(|r| (squared_l2_wide(q, row(r)), r))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap()
                .1;
            let scorer = Exact { x: &x, d, q };
            search(&lists[..], n, &g.entries, &scorer, 32, |_| true, &mut s);
            s.results(&mut out);
            hits += usize::from(out[0].0 == truth);
        }
        assert!(hits >= 95, "recall@1 {hits}/100");
    }

    /// Exact f32 distances from a query (the graph is judged apart from its build points).
    struct Exact<'a> {
        x: &'a [f32],
        d: usize,
        q: &'a [f32],
    }

    impl Scorer for Exact<'_> {
        fn prefetch(&self, _row: u32) {}
        fn score(&self, row: u32) -> f32 {
            -squared_l2_wide(self.q, &self.x[row as usize * self.d..][..self.d])
        }
    }

    /// The scale puts the largest magnitude in [2^13, 2^14) whatever its size, and the
    /// halves of scaled points keep their distances to a part in a thousand.
    #[test]
    fn half_points_keep_distances_at_any_magnitude() {
        for mag in [1e-30f32, 1e-6, 1.0, 7.5, 1e4, 1e30] {
            let x: Vec<f32> = data(50, 8, 4).iter().map(|v| v * mag).collect();
            let s = half_scale(&x);
            let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) * s;
            assert!((8192.0..16384.0).contains(&max), "mag {mag}: {max}");
            let h = to_halves(&x);
            let p = Points {
                x: &h,
                dim: 8,
                l2: squared_l2_f16_fn(),
            };
            for (a, b) in [(0u32, 1u32), (3, 40), (17, 18)] {
                let want: f64 = (0..8)
                    .map(|i| {
                        let (u, v) = (x[a as usize * 8 + i], x[b as usize * 8 + i]);
                        ((f64::from(u) - f64::from(v)) * f64::from(s)).powi(2)
                    })
                    .sum();
                let got = f64::from(p.dist(a, b));
                assert!(
                    (got - want).abs() <= 1e-3 * want,
                    "mag {mag}: {got} vs {want}"
                );
            }
        }
        assert_eq!(half_scale(&[0.0, -0.0]), 1.0);
    }

    #[test]
    fn tiny_inputs_build() {
        for n in [0usize, 1, 2, 5] {
            let x = data(n, 4, 3);
            let g = build(&x, 4, &BuildParams::default(), &|_| {});
            assert_eq!(g.adjacency.len(), n * 32);
            assert_eq!(g.entries.len(), n.min(16));
        }
    }
}
