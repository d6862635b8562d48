//! Graph search over a view: the glue between the pure graph code (`crate::graph`) and the
//! search pipeline.
//!
//! A view whose columns carry a graph is searched best-first over it; each visited row is
//! scored by the TurboQuant estimator on its record (4-bit codes: the `dot4` integer sum, the
//! key stage 1 of a scan computes) or, for other codes, by the float tables. The best
//! `k × oversample` accepted rows then go through the same stage 2 as a scan's candidates
//! (rerank on stored vectors, or the code-domain estimate). Rows a mask refuses are routed
//! through and never returned; a search that finds fewer than `min(k, allowed)` rows says so
//! and the caller scans instead, so the result count is always exact.

use super::view::{Shape, VectorsRef, View};
use crate::graph::search::{Scorer, search, with_scratch};
use crate::graph::{BuildParams, DEFAULT_EF, Graph, GraphRef, record_stride};
use crate::kernels::dot4;
use crate::kernels::fastscan::Kernel;
use crate::kernels::{lines_spanned, prefetch, squared_norm_f64};
use crate::metric::Metric;
use crate::quantizer::packing;
use crate::quantizer::{QueryLut, layout::BLOCK};
use crate::search::view::Prepared;
use crate::search::{Neighbor, SearchParams, TopK};

/// Scores rows by their graph record: key factor, key offset (L2 only) and packed 4-bit code
/// in one contiguous run of bytes, so a visit costs one burst of cache lines (one line for a
/// cosine record at d ≤ 56).
struct RecordScorer<'a> {
    records: &'a [u8],
    stride: usize,
    code_bytes: usize,
    /// Where the code starts: 8 with a key offset (L2), 4 without.
    code_at: usize,
    levels: &'a dot4::Levels,
    query: &'a dot4::Query,
    scale: f32,
    kernel: Kernel,
}

impl Scorer for RecordScorer<'_> {
    #[inline]
    fn prefetch(&self, row: u32) {
        let at = row as usize * self.stride;
        // Every line the record touches (4 at d = 384): measured on docs-minilm at ef = 64, 7.8k QPS
        // against 5.9k with 2 lines and 4.8k with none.
        prefetch(
            &self.records[at..at + self.stride],
            lines_spanned(self.stride),
        );
    }

    #[inline]
    fn score(&self, row: u32) -> f32 {
        let r = &self.records[row as usize * self.stride..][..self.stride];
        let factor = f32::from_le_bytes([r[0], r[1], r[2], r[3]]);
        let offset = if self.code_at == 8 {
            f32::from_le_bytes([r[4], r[5], r[6], r[7]])
        } else {
            0.0
        };
        let sum = self.kernel.dot4_row(
            &r[self.code_at..self.code_at + self.code_bytes],
            self.levels,
            self.query,
        );
        dot4::key(sum, self.scale, factor, offset)
    }
}

/// Scores rows by the float tables (codes other than 4-bit scalar ones, which have no records).
struct TableScorer<'a, 'v> {
    view: &'a View<'v>,
    lut: &'a QueryLut,
}

impl Scorer for TableScorer<'_, '_> {
    #[inline]
    fn prefetch(&self, row: u32) {
        let cb = self.view.shape.quantizer.code_bytes();
        let at = row as usize * cb;
        prefetch(&self.view.cols.codes[at..at + cb], lines_spanned(cb));
    }

    #[inline]
    fn score(&self, row: u32) -> f32 {
        self.view
            .shape
            .metric
            .to_key(self.view.estimate_row(self.lut, row as usize))
    }
}

/// Bytes of a graph record for `shape`: one per row for 4-bit scalar codes, none for other
/// codes (their rows are scored from the codes column).
pub(crate) fn record_stride_for(shape: &Shape) -> usize {
    if shape.dot4.is_some() {
        record_stride(shape.quantizer.code_bytes(), record_has_offset(shape))
    } else {
        0
    }
}

/// Whether a graph record holds the key offset: only L2 keys have one (cosine and dot keys
/// are `factor · estimate`).
pub(crate) fn record_has_offset(shape: &Shape) -> bool {
    shape.metric == Metric::L2
}

/// Where the packed code starts in a graph record: after the key factor and, for L2, the
/// key offset.
fn record_code_at(shape: &Shape) -> usize {
    if record_has_offset(shape) { 8 } else { 4 }
}

/// Builds the graph over `rows` (`(view, row)` pairs, in the order the graph numbers them:
/// a segment's row order). The iterator is walked twice: for the points, then the records.
pub(crate) fn build_over<'a, 'v: 'a, I>(
    shape: &Shape,
    rows: I,
    params: &BuildParams,
    progress: &(dyn Fn(usize) + Sync),
) -> Graph
where
    I: Iterator<Item = (&'a View<'v>, usize)> + Clone,
{
    let d = shape.quantizer.dim();
    let n = rows.clone().count();
    let mut points = vec![0.0f32; n * d];
    let mut idx = Vec::new();
    for ((v, r), out) in rows.clone().zip(points.chunks_exact_mut(d.max(1))) {
        v.graph_point_into(r, out, &mut idx);
    }
    let built = crate::graph::build::build(&points, d, params, progress);
    drop(points);
    let stride = record_stride_for(shape);
    let mut records = vec![0u8; n * stride];
    if stride > 0 {
        for ((v, r), out) in rows.zip(records.chunks_exact_mut(stride)) {
            v.graph_record_into(r, out);
        }
    }
    Graph::encode(
        params,
        params.degree,
        &built.entries,
        &built.adjacency,
        stride,
        &records,
    )
}

/// Rows allowed by `masks` (one bit per row, one u32 per block).
fn allowed(masks: &[u32]) -> usize {
    masks.iter().map(|w| w.count_ones() as usize).sum()
}

/// A walk that may return only `allowed` of the rows scores about `ef · rows / allowed` rows
/// before its list holds `ef` allowed ones, while the scan that replaces it costs about the
/// same per row whatever the filter. Measured on docs-minilm (50k) and the 300k mixture at
/// ef 64 (docs/results/graph-index.md, "Filters"), the two cross where about `200 · ef` rows
/// are allowed, at both sizes: below that the scan (with its direct path for the most
/// selective filters) is faster.
const FILTER_WALK: usize = 200;

/// Whether a filter leaves so few rows that a scan beats walking the graph.
pub(crate) fn filter_prefers_scan(allowed: usize, rows: usize, ef: usize) -> bool {
    allowed < rows && allowed < FILTER_WALK.saturating_mul(ef)
}

/// The candidate list length a search with `params` keeps for `k` results.
pub(crate) fn effort(params: &SearchParams, k: usize) -> usize {
    let ef = if params.ef == 0 {
        DEFAULT_EF
    } else {
        params.ef
    };
    ef.max(k.saturating_mul(params.oversample.max(1))).max(1)
}

impl<'a> View<'a> {
    /// This view with `graph` as its index (an owned graph built over exactly these rows).
    pub(crate) fn with_graph(mut self, graph: Option<&'a Graph>) -> Self {
        self.cols.graph = graph.and_then(|g| g.view(self.cols.rows(), self.graph_stride()).ok());
        self
    }

    /// The record stride of this view's graph (see [`record_stride_for`]).
    pub(crate) fn graph_stride(&self) -> usize {
        record_stride_for(self.shape)
    }

    /// Row `row`'s graph record (see [`RecordScorer`]) into `out` (`graph_stride()` bytes).
    pub(crate) fn graph_record_into(&self, row: usize, out: &mut [u8]) {
        let cb = self.shape.quantizer.code_bytes();
        out[0..4].copy_from_slice(&self.cols.key_factor[row].to_le_bytes());
        let at = record_code_at(self.shape);
        if at == 8 {
            out[4..8].copy_from_slice(&self.cols.key_offset[row].to_le_bytes());
        } else {
            debug_assert_eq!(self.cols.key_offset[row], 0.0);
        }
        out[at..at + cb].copy_from_slice(&self.cols.codes[row * cb..(row + 1) * cb]);
    }

    /// Row `row`'s point in the space the graph links (`dim` floats into `out`): its stored
    /// vector, or without one its code's reconstruction in the rotated space (the rotation
    /// keeps distances, so no inverse rotation is needed); unit length for cosine, where
    /// neighbours are by angle.
    pub(crate) fn graph_point_into(&self, row: usize, out: &mut [f32], idx: &mut Vec<u8>) {
        let d = self.shape.quantizer.dim();
        match self.cols.vectors {
            VectorsRef::F32(v) => out.copy_from_slice(&v[row * d..(row + 1) * d]),
            VectorsRef::F16(v) => {
                for (o, h) in out.iter_mut().zip(&v[row * d..(row + 1) * d]) {
                    *o = h.to_f32();
                }
            }
            VectorsRef::None => {
                let q = &self.shape.quantizer;
                let cb = q.code_bytes();
                match q.codebook() {
                    Some(book) => {
                        let c = book.centroids_f32();
                        idx.resize(d, 0);
                        packing::unpack(
                            &self.cols.codes[row * cb..(row + 1) * cb],
                            book.bits(),
                            idx,
                        );
                        let s = self.cols.scalars[row].scale;
                        for (o, &i) in out.iter_mut().zip(idx.iter()) {
                            *o = s * c[usize::from(i)];
                        }
                    }
                    None => out.fill(0.0),
                }
            }
        }
        if self.shape.metric == Metric::Cosine {
            let n = squared_norm_f64(out).sqrt() as f32;
            if n > 0.0 {
                out.iter_mut().for_each(|v| *v /= n);
            }
        }
    }

    /// Builds the graph of this view's rows (all of them, live or not: a segment's rows are
    /// fixed, its deletions are masks). `progress` gets the rows inserted so far.
    pub(crate) fn build_graph(
        &self,
        params: &BuildParams,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Graph {
        build_over(
            self.shape,
            (0..self.cols.rows()).map(|r| (self, r)),
            params,
            progress,
        )
    }

    /// The `min(k, allowed)` best rows for query `qi` of `prep` found over `graph`, or `None`
    /// when the graph search reached fewer than that (a filter that cuts the graph apart): the
    /// caller then scans. `masks` say which rows may be returned.
    #[allow(clippy::too_many_arguments)]
    pub fn search_graph(
        &self,
        graph: &GraphRef<'_>,
        query: &[f32],
        prep: &Prepared,
        qi: usize,
        k: usize,
        params: &SearchParams,
        masks: &[u32],
    ) -> Option<Vec<Neighbor>> {
        let rows = self.cols.rows();
        let allowed = allowed(masks);
        let want = k.min(allowed);
        if want == 0 {
            return Some(Vec::new());
        }
        let keep = k.saturating_mul(params.oversample.max(1)).max(k);
        let ef = effort(params, k);
        if filter_prefers_scan(allowed, rows, ef) {
            return None;
        }
        let accept = |r: u32| masks[r as usize / BLOCK] >> (r as usize % BLOCK) & 1 == 1;
        let lut = prep.lut(qi);
        let q4 = prep.dot4_query(qi);
        let top = with_scratch(|s| {
            match (q4, &self.shape.dot4, graph.stride) {
                (Some(query), Some(levels), stride) if stride > 0 => {
                    let scorer = RecordScorer {
                        records: graph.records,
                        stride,
                        code_bytes: self.shape.quantizer.code_bytes(),
                        code_at: record_code_at(self.shape),
                        levels,
                        query,
                        scale: levels.step * query.step,
                        kernel: Kernel::detect(),
                    };
                    search(graph, rows, graph.entries, &scorer, ef, accept, s);
                }
                _ => {
                    let scorer = TableScorer { view: self, lut };
                    search(graph, rows, graph.entries, &scorer, ef, accept, s);
                }
            }
            let mut top = TopK::new(keep);
            let mut found = 0;
            s.drain_best(|row, key| {
                found += 1;
                top.push(u64::from(row), key);
            });
            (found >= want).then_some(top)
        })?;
        let mut params = *params;
        params.staged = false;
        Some(self.finish(query, lut, q4, k, &params, top, 1))
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::BuildParams;
    use crate::metric::Metric;
    use crate::quantizer::QuantizerConfig;
    use crate::random::SeededRng;
    use crate::search::{ExactIndex, FlatIndex, RerankStorage, SearchParams};

    fn clustered(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::for_data(seed);
        let centres: Vec<f32> = (0..32 * d).map(|_| rng.gaussian() as f32).collect();
        let mut x = Vec::with_capacity(n * d);
        for i in 0..n {
            let c = &centres[(i % 32) * d..(i % 32 + 1) * d];
            x.extend(c.iter().map(|&v| v + 0.4 * rng.gaussian() as f32));
        }
        x
    }

    fn recall(got: &[Vec<crate::search::Neighbor>], truth: &[Vec<crate::search::Neighbor>]) -> f64 {
        let mut hit = 0;
        let mut all = 0;
        for (g, t) in got.iter().zip(truth) {
            all += t.len();
            hit += g.iter().filter(|n| t.iter().any(|m| m.id == n.id)).count();
        }
        hit as f64 / all.max(1) as f64
    }

    #[test]
    fn graph_search_finds_what_the_scan_finds_and_never_returns_removed_rows() {
        let (n, d, k) = (4000, 48, 10);
        for (metric, rerank, bits) in [
            (Metric::Cosine, RerankStorage::F32, 4),
            (Metric::L2, RerankStorage::None, 4),
            (Metric::Dot, RerankStorage::F16, 4),
            (Metric::Cosine, RerankStorage::F32, 2),
        ] {
            let x = clustered(n, d, 7);
            let ids: Vec<u64> = (0..n as u64).map(|i| i * 3 + 1).collect();
            let mut index = FlatIndex::new(QuantizerConfig::new(d, bits), metric, rerank).unwrap();
            index.add(&ids, &x).unwrap();
            // Remove every fifth id: none may come back.
            let removed: Vec<u64> = ids.iter().copied().step_by(5).collect();
            index.remove(&removed);
            let kept: Vec<usize> = (0..n).filter(|i| i % 5 != 0).collect();
            let kept_x: Vec<f32> = kept
                .iter()
                .flat_map(|&i| x[i * d..(i + 1) * d].to_vec())
                .collect();
            let exact = ExactIndex::new(d, metric, &kept_x).unwrap();
            // Fresh points of the same clusters (the first n rows repeat `x`).
            let queries = clustered(n + 50, d, 7)[n * d..].to_vec();
            let params = SearchParams {
                oversample: 4,
                rescore: rerank != RerankStorage::None,
                ef: 128,
                ..SearchParams::default()
            };
            let flat = index.search_batch(&queries, k, &params).unwrap();
            index
                .build_graph(&BuildParams::for_dim(d), &|_| {})
                .unwrap();
            let graph = index.search_batch(&queries, k, &params).unwrap();
            let truth: Vec<_> = queries
                .chunks_exact(d)
                .map(|q| {
                    let mut hits = exact.search(q, k).unwrap();
                    for h in &mut hits {
                        h.id = ids[kept[h.id as usize]];
                    }
                    hits
                })
                .collect();
            for list in &graph {
                assert_eq!(list.len(), k);
                assert!(
                    list.iter().all(|h| (h.id - 1) % 15 != 0),
                    "a removed id came back"
                );
            }
            let (rf, rg) = (recall(&flat, &truth), recall(&graph, &truth));
            assert!(
                rg >= rf - 0.03,
                "{metric:?} {bits}: graph recall {rg} against flat {rf}"
            );
        }
    }

    #[test]
    fn filtered_graph_search_returns_exact_counts() {
        let (n, d, k) = (3000, 32, 10);
        let x = clustered(n, d, 3);
        let ids: Vec<u64> = (0..n as u64).collect();
        let mut index =
            FlatIndex::new(QuantizerConfig::new(d, 4), Metric::L2, RerankStorage::F32).unwrap();
        index.add(&ids, &x).unwrap();
        index
            .build_graph(&BuildParams::for_dim(d), &|_| {})
            .unwrap();
        let params = SearchParams {
            rescore: true,
            ..SearchParams::default()
        };
        for allowed in [0usize, 1, 3, 10, 25, 400, 3000] {
            // Spread the allowed ids over the clusters: some far from every query.
            let allow: roaring::RoaringTreemap =
                (0..allowed as u64).map(|i| i * 7 % n as u64).collect();
            let q = &x[5 * d..6 * d];
            let hits = index.search_filtered(q, k, &params, &allow).unwrap();
            assert_eq!(hits.len(), k.min(allow.len() as usize), "allowed {allowed}");
            assert!(hits.iter().all(|h| allow.contains(h.id)));
        }
        // At ef 1 (k = 1) the walk takes filters that allow 200 rows or more: 400 and 2999
        // walk the graph, the rest scan; every count stays exact and every hit allowed.
        let one = SearchParams {
            ef: 1,
            oversample: 1,
            ..params
        };
        assert!(super::filter_prefers_scan(199, n, 1) && !super::filter_prefers_scan(200, n, 1));
        assert!(!super::filter_prefers_scan(n, n, 1_000_000));
        for allowed in [1usize, 150, 400, 2999] {
            let allow: roaring::RoaringTreemap =
                (0..allowed as u64).map(|i| i * 7 % n as u64).collect();
            for qi in 0..20 {
                let q = &x[qi * d..(qi + 1) * d];
                let hits = index.search_filtered(q, 1, &one, &allow).unwrap();
                assert_eq!(hits.len(), 1, "allowed {allowed}");
                assert!(allow.contains(hits[0].id));
            }
        }
    }
}
