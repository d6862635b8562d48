//! `FlatIndex`: an in-memory index that scans every code.
//!
//! Stage 1 scans every code and keeps the `k × oversample` best candidates. For 1-, 2- and
//! 4-bit codes it runs the FastScan kernels over the blocked layout with the query's u8 nibble
//! tables (an integer approximation of the float estimate); for other widths it uses the float
//! tables directly. Stage 2 rescores the candidates: with the float tables (the exact
//! code-domain estimate), or, when rescoring on stored vectors is asked for and the index keeps
//! them (f32 or f16), with exact distances.

use rayon::prelude::*;

use super::view::{Columns, Shape, VectorsRef, View, plane_row};
use crate::error::{Error, Result, check_norm, check_rows, check_vector};
use crate::kernels::fastscan::Kernel;
use crate::metric::Metric;
use crate::quantizer::layout::{self, BlockedCodes};
use crate::quantizer::packing;
use crate::quantizer::{EncodedBatch, Quantizer, QuantizerConfig};
use crate::search::{LiveMask, Neighbor};

/// Full-precision copies kept for reranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum RerankStorage {
    /// No copies: results carry code-domain estimates.
    #[default]
    None,
    /// Half-precision copies (2 bytes per component).
    F16,
    /// Single-precision copies (4 bytes per component).
    F32,
}

impl RerankStorage {
    /// The name used on command lines and in files.
    pub fn name(self) -> &'static str {
        match self {
            RerankStorage::None => "none",
            RerankStorage::F16 => "f16",
            RerankStorage::F32 => "f32",
        }
    }
}

impl std::str::FromStr for RerankStorage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(RerankStorage::None),
            "f16" => Ok(RerankStorage::F16),
            "f32" => Ok(RerankStorage::F32),
            other => Err(Error::invalid_argument(
                "rerank",
                format!("unknown rerank storage {other:?}: use none, f16 or f32"),
            )),
        }
    }
}

/// Per-search knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchParams {
    /// Candidates kept by the code scan, as a multiple of k (≥ 1).
    pub oversample: usize,
    /// Rerank candidates on the stored full vectors (needs rerank storage).
    pub rescore: bool,
    /// Scan the 1-bit sign plane first and the full codes only for a shortlist (4-bit indexes
    /// with `dim ≥ 256`; ignored otherwise).
    pub staged: bool,
    /// Staged search: the sign-plane pass keeps `shortlist × k × oversample` candidates (≥ 1).
    /// 16 keeps the recall of the plain scan on docs-minilm-384; 8 trades ~0.001 recall@10 at
    /// 4 bits for 1.35× the speed (see README).
    pub shortlist: usize,
    /// With `rescore`: rerank only the candidates that can still be among the true `k` best
    /// with this probability, by the code-domain estimator's known error law (its standard
    /// deviation `√(D_mse/d)` per unit norms, from the codebook), instead of all
    /// `k × oversample` (which becomes the cap). `None`: rerank them all. In `(0, 1]`.
    pub target_recall: Option<f32>,
    /// Graph-indexed segments: the candidate list size of the graph search (its effort; at
    /// least `k × oversample` is used). 0: [`DEFAULT_EF`](crate::graph::DEFAULT_EF). Ignored
    /// by flat scans.
    pub ef: usize,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            oversample: 1,
            rescore: true,
            staged: true,
            shortlist: 16,
            target_recall: None,
            ef: 0,
        }
    }
}

impl SearchParams {
    /// Oversampling measured to reach recall@10 ≥ 0.95 on docs-minilm-384 (50k MiniLM vectors,
    /// `gyre-bench recall`): with f32 rerank, 1-bit codes need 4× (0.978), 2-bit 2× (0.990),
    /// 4-bit 1× (0.963; 2× gives 1.000). Without rerank only 4-bit and wider codes get there
    /// (4-bit 0.963; 3-bit stops at 0.931, 2-bit at 0.863, 1-bit at 0.727 whatever the
    /// oversampling). 5- to 8-bit codes are scanned by their 4-bit prefix and need 2× for the
    /// rescoring to see their own ranking (8-bit: 0.941 at 1×, 1.000 at 2×). 3-bit codes get 2×
    /// with rerank by interpolation (not measured).
    pub fn recommended(bits: u8, rerank: RerankStorage) -> Self {
        let oversample = match (rerank, bits) {
            (_, 5..=8) => 2,
            (RerankStorage::None, _) => 1,
            (_, 1) => 4,
            (_, 2 | 3) => 2,
            _ => 1,
        };
        SearchParams {
            oversample,
            ..SearchParams::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
enum Vectors {
    #[default]
    None,
    F16(Vec<half::f16>),
    F32(Vec<f32>),
}

/// An in-memory flat index over TurboQuant codes (see the module docs).
#[derive(Debug, Clone)]
pub struct FlatIndex {
    shape: Shape,
    ids: Vec<u64>,
    codes: EncodedBatch,
    /// The same codes in the blocked FastScan layout (1-, 2- and 4-bit scalar codes).
    blocked: Option<BlockedCodes>,
    /// The sign plane of 4-bit codes (staged search) and its per-row key factor.
    plane: Option<BlockedCodes>,
    plane_factor: Vec<f32>,
    /// Stage 1 ranks row `i` by `key_factor[i] · est + key_offset[i]` (see `Shape::key_terms`).
    key_factor: Vec<f32>,
    key_offset: Vec<f32>,
    /// The QJL sign bits in the blocked layout (prod) and their key factor.
    sketch_blocked: Option<BlockedCodes>,
    sketch_factor: Vec<f32>,
    /// Set while a row holds the current version of its id.
    live: LiveMask,
    rows_by_id: std::collections::HashMap<u64, usize>,
    vectors: Vectors,
    /// The graph over all rows, once built (adding rows drops it).
    graph: Option<crate::graph::Graph>,
}

impl FlatIndex {
    /// An empty index.
    pub fn new(config: QuantizerConfig, metric: Metric, rerank: RerankStorage) -> Result<Self> {
        let shape = Shape::new(config, metric)?;
        let codes = EncodedBatch::new(&shape.quantizer);
        let bits = config.mse_bits();
        let blocked = if shape.dot4.is_some() {
            Some(BlockedCodes::interleaved(config.dim))
        } else {
            layout::scan_bits(bits)
                .filter(|_| shape.blocked.is_some())
                .map(|sb| BlockedCodes::new(config.dim, sb))
                .transpose()?
        };
        let plane = shape
            .plane
            .as_ref()
            .map(|_| BlockedCodes::new(config.dim, 1))
            .transpose()?;
        let sketch_blocked = shape
            .sketch
            .map(|_| BlockedCodes::new(config.dim, 1))
            .transpose()?;
        let vectors = match rerank {
            RerankStorage::None => Vectors::None,
            RerankStorage::F16 => Vectors::F16(Vec::new()),
            RerankStorage::F32 => Vectors::F32(Vec::new()),
        };
        Ok(FlatIndex {
            shape,
            ids: Vec::new(),
            codes,
            blocked,
            plane,
            plane_factor: Vec::new(),
            key_factor: Vec::new(),
            key_offset: Vec::new(),
            sketch_blocked,
            sketch_factor: Vec::new(),
            live: LiveMask::default(),
            rows_by_id: std::collections::HashMap::new(),
            vectors,
            graph: None,
        })
    }

    /// The quantizer.
    pub fn quantizer(&self) -> &Quantizer {
        &self.shape.quantizer
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.shape.metric
    }

    /// The rerank storage kind.
    pub fn rerank(&self) -> RerankStorage {
        match self.vectors {
            Vectors::None => RerankStorage::None,
            Vectors::F16(_) => RerankStorage::F16,
            Vectors::F32(_) => RerankStorage::F32,
        }
    }

    /// Number of live vectors (one per id).
    pub fn len(&self) -> usize {
        self.live.count()
    }

    /// True when no vector is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Rows stored, including replaced and removed ones not yet compacted away.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// The index's arrays, borrowed for the search pipeline or for writing a segment.
    pub(crate) fn view(&self) -> View<'_> {
        View {
            shape: &self.shape,
            cols: Columns {
                ids: &self.ids,
                codes: self.codes.codes(),
                sketches: self.codes.sketches(),
                scalars: self.codes.scalars(),
                blocked: self.blocked.as_ref().map_or(&[], |b| b.as_bytes()),
                plane: self.plane.as_ref().map_or(&[], |b| b.as_bytes()),
                plane_factor: &self.plane_factor,
                key_factor: &self.key_factor,
                key_offset: &self.key_offset,
                sketch_blocked: self.sketch_blocked.as_ref().map_or(&[], |b| b.as_bytes()),
                sketch_factor: &self.sketch_factor,
                vectors: match &self.vectors {
                    Vectors::None => VectorsRef::None,
                    Vectors::F16(v) => VectorsRef::F16(v),
                    Vectors::F32(v) => VectorsRef::F32(v),
                },
                graph: None,
            },
        }
        .with_graph(self.graph.as_ref())
    }

    /// Builds a graph over the rows (see `crate::graph`): searches then walk it instead of
    /// scanning every code, with `SearchParams::ef` as their effort. Adding rows drops it
    /// (build again after the last add); removing rows keeps it (they are masked). `progress`
    /// gets the rows linked so far.
    pub fn build_graph(
        &mut self,
        params: &crate::graph::BuildParams,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<()> {
        params.check()?;
        self.graph = None;
        let graph = self.view().build_graph(params, progress);
        self.graph = Some(graph);
        Ok(())
    }

    /// The graph's encoded bytes (to keep beside the data and [`load_graph`](Self::load_graph)
    /// later), `None` without one.
    pub fn graph_encoded(&self) -> Option<&[u8]> {
        self.graph.as_ref().map(|g| g.bytes())
    }

    /// Takes a graph [`graph_encoded`](Self::graph_encoded) gave for these same rows (same
    /// vectors, same quantizer). Bytes that do not parse for this index's rows and codes are
    /// refused (`InvalidArgument`) and the index keeps its state.
    pub fn load_graph(&mut self, bytes: &[u8]) -> Result<()> {
        let graph = crate::graph::Graph::from_bytes(bytes);
        let stride = crate::search::graph::record_stride_for(&self.shape);
        graph
            .view(self.ids.len(), stride)
            .map_err(|e| Error::invalid_argument("graph", e.to_string()))?;
        self.graph = Some(graph);
        Ok(())
    }

    /// True once [`build_graph`](Self::build_graph) has run (and no row was added since).
    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Bytes a graph search keeps in memory per row: the graph (neighbour lists and the codes'
    /// records) and the ids; `None` without a graph. The rerank copies are read only for the
    /// final candidates.
    pub fn graph_bytes(&self) -> Option<usize> {
        self.graph
            .as_ref()
            .map(|g| g.bytes().len() + 8 * self.ids.len() + 4 * self.live.words().len())
    }

    fn kill(&mut self, row: usize) {
        self.live.kill(row);
    }

    /// Removes the vectors with these ids; unknown ids are ignored. Returns how many were removed.
    pub fn remove(&mut self, ids: &[u64]) -> usize {
        let mut removed = 0;
        for id in ids {
            if let Some(row) = self.rows_by_id.remove(id) {
                self.kill(row);
                removed += 1;
            }
        }
        removed
    }

    /// Per-block masks of the live rows whose id is in `allow`.
    pub(crate) fn allowed(&self, allow: &roaring::RoaringTreemap) -> LiveMask {
        let mut mask = LiveMask::none(self.live.rows());
        if allow.len() as usize <= self.rows_by_id.len() {
            for id in allow.iter() {
                if let Some(&row) = self.rows_by_id.get(&id) {
                    mask.set(row);
                }
            }
        } else {
            for (&id, &row) in &self.rows_by_id {
                if allow.contains(id) {
                    mask.set(row);
                }
            }
        }
        mask
    }

    /// Bytes held by the index's arrays (excluding the id map's hash table).
    pub fn memory_bytes(&self) -> usize {
        let vectors = match &self.vectors {
            Vectors::None => 0,
            Vectors::F16(v) => 2 * v.len(),
            Vectors::F32(v) => 4 * v.len(),
        };
        // Everything held: the packed per-vector codes (stage 2 reads them), their blocked copy
        // (stage 1), the sign plane, the per-row scalars and keys, ids, masks, rerank copies.
        let blocked = self.blocked.as_ref().map_or(0, |b| b.as_bytes().len())
            + self
                .sketch_blocked
                .as_ref()
                .map_or(0, |b| b.as_bytes().len())
            + 4 * self.sketch_factor.len();
        let plane =
            self.plane.as_ref().map_or(0, |p| p.as_bytes().len()) + 4 * self.plane_factor.len();
        self.codes.codes().len()
            + blocked
            + plane
            + self.codes.sketches().len()
            + 12 * self.codes.len()
            + 4 * (self.key_factor.len() + self.key_offset.len())
            + 8 * self.ids.len()
            + 4 * self.live.words().len()
            + vectors
            + self.graph.as_ref().map_or(0, |g| g.bytes().len())
    }

    /// Encodes and adds `rows` (row-major, `ids.len() × dim`), in parallel. All rows are
    /// validated first: on error nothing changes. Adding an id that is already present replaces
    /// its vector; when an id repeats within one call, the last row wins.
    pub fn add(&mut self, ids: &[u64], rows: &[f32]) -> Result<()> {
        let parts = encode_rows(&self.shape, ids, rows)?;
        self.add_encoded(ids, rows, &parts);
        Ok(())
    }

    /// Appends rows encoded by [`encode_rows`] (in order, covering `ids`), with their full
    /// vectors for rerank storage. Replaces earlier versions of the ids.
    pub(crate) fn add_encoded(&mut self, ids: &[u64], rows: &[f32], parts: &[Encoded]) {
        self.append_range(ids, rows, parts, 0..ids.len(), true);
    }

    /// Appends rows `range` of an [`encode_rows`] result. With `track_ids`, an id already
    /// present is replaced (its old row dies); without, rows are appended live and the caller
    /// keeps the id map (the memtable's chunks).
    pub(crate) fn append_range(
        &mut self,
        ids: &[u64],
        rows: &[f32],
        parts: &[Encoded],
        range: std::ops::Range<usize>,
        track_ids: bool,
    ) {
        self.graph = None;
        let dim = self.shape.quantizer.dim();
        let plane_bytes = packing::packed_len(dim, 1);
        let prefix_bytes = packing::packed_len(dim, 4);
        let mut base = 0;
        for part in parts {
            let batch = &part.batch;
            let (lo, hi) = (
                range.start.max(base) - base,
                range.end.min(base + batch.len()).saturating_sub(base),
            );
            base += batch.len();
            if lo >= hi {
                continue;
            }
            for i in lo..hi {
                let code = batch.get(i);
                if let Some(blocked) = &mut self.blocked {
                    if self.shape.prefix {
                        blocked.push(&part.prefix[i * prefix_bytes..(i + 1) * prefix_bytes]);
                    } else {
                        blocked.push(code.codes);
                    }
                }
                if let Some(plane) = &mut self.plane {
                    plane.push(&part.plane[i * plane_bytes..(i + 1) * plane_bytes]);
                    self.plane_factor.push(part.plane_factor[i]);
                }
                let (factor, offset) = self.shape.key_terms(&code.scalars);
                self.key_factor.push(factor);
                self.key_offset.push(offset);
                if let Some(sk) = &mut self.sketch_blocked {
                    sk.push(code.sketch);
                    self.sketch_factor
                        .push(self.shape.sketch_factor(&code.scalars));
                }
                self.codes.push_code(code);
            }
        }
        let first = self.ids.len();
        self.ids.extend_from_slice(&ids[range.clone()]);
        for (i, &id) in ids[range.clone()].iter().enumerate() {
            let row = first + i;
            debug_assert_eq!(row, self.live.rows());
            self.live.push();
            if track_ids && let Some(old) = self.rows_by_id.insert(id, row) {
                self.kill(old);
            }
        }
        let values = &rows[range.start * dim..range.end * dim];
        match &mut self.vectors {
            Vectors::None => {}
            Vectors::F16(v) => v.extend(values.iter().map(|&x| half::f16::from_f32(x))),
            Vectors::F32(v) => v.extend_from_slice(values),
        }
    }

    /// True when this index has a sign plane, so `SearchParams::staged` takes effect (4-bit
    /// codes with `dim ≥ STAGED_MIN_DIM`).
    pub fn staged_available(&self) -> bool {
        self.shape.plane.is_some()
    }

    /// The kernel stage 1 runs (reported by benchmarks).
    pub fn kernel(&self) -> &'static str {
        if self.shape.blocked.is_some() {
            Kernel::detect().name()
        } else {
            "portable-float"
        }
    }

    /// The `min(k, len)` best matches for `query`; the scan is split across threads.
    pub fn search(&self, query: &[f32], k: usize, params: &SearchParams) -> Result<Vec<Neighbor>> {
        self.shape.check_one(query, k, params)?;
        self.view()
            .search_masked(query, k, params, self.live.words())
    }

    /// [`search`](Self::search) restricted to the ids in `allow` (ids not in the index are
    /// ignored); returns `min(k, |allowed live ids|)` results.
    pub fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        allow: &roaring::RoaringTreemap,
    ) -> Result<Vec<Neighbor>> {
        self.shape.check_one(query, k, params)?;
        self.view()
            .search_masked(query, k, params, self.allowed(allow).words())
    }

    /// [`search`](Self::search) for every row of `queries`, in parallel over queries.
    pub fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Neighbor>>> {
        self.shape.check_queries(queries, k, params)?;
        self.view()
            .search_batch_masked(queries, k, params, self.live.words())
    }

    /// [`search_filtered`](Self::search_filtered) for every row of `queries`.
    pub fn search_batch_filtered(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        allow: &roaring::RoaringTreemap,
    ) -> Result<Vec<Vec<Neighbor>>> {
        self.shape.check_queries(queries, k, params)?;
        self.view()
            .search_batch_masked(queries, k, params, self.allowed(allow).words())
    }
}

/// Checks a batch of rows to add under `shape` without encoding it: whole rows of finite
/// values, one id each, every norm within [`MIN_NORM`](crate::MIN_NORM)..=
/// [`MAX_NORM`](crate::MAX_NORM) (the error names the row).
pub(crate) fn check_batch(shape: &Shape, ids: &[u64], rows: &[f32]) -> Result<()> {
    let d = shape.quantizer.dim();
    check_rows(rows, d, "rows")?;
    if rows.len() / d != ids.len() {
        return Err(Error::invalid_argument(
            "ids",
            format!("{} ids for {} rows", ids.len(), rows.len() / d),
        ));
    }
    let bad = rows.chunks_exact(d).enumerate().find_map(|(i, r)| {
        let checked = check_vector(r, d).and_then(|()| check_norm(r, false));
        checked.err().map(|e| (i, e))
    });
    match bad {
        None => Ok(()),
        Some((row, e @ (Error::ZeroVector | Error::NormOutOfRange { .. }))) => {
            Err(Error::invalid_argument("rows", format!("row {row}: {e}")))
        }
        Some((_, e)) => Err(e),
    }
}

/// Validates ([`check_batch`]) and encodes rows to add under `shape` (in parallel). On error
/// nothing is returned.
pub(crate) fn encode_rows(shape: &Shape, ids: &[u64], rows: &[f32]) -> Result<Vec<Encoded>> {
    let d = shape.quantizer.dim();
    check_batch(shape, ids, rows)?;
    rows.par_chunks(d * 1024)
        .map(|chunk| {
            let batch = shape.quantizer.encode_batch(chunk)?;
            let (mut plane, mut plane_factor) = (Vec::new(), Vec::new());
            if shape.plane.is_some() {
                let pb = packing::packed_len(d, 1);
                let (mut c, mut s) = (vec![0u8; d], vec![0u8; d]);
                plane.resize(pb * batch.len(), 0);
                for (i, p) in plane.chunks_exact_mut(pb).enumerate() {
                    plane_factor.push(plane_row(shape, batch.get(i), &mut c, &mut s, p));
                }
            }
            let mut prefix = Vec::new();
            if shape.prefix {
                let bits = shape.quantizer.config().mse_bits();
                let pb = packing::packed_len(d, 4);
                let mut scratch = vec![0u8; d];
                prefix.resize(pb * batch.len(), 0);
                for (i, p) in prefix.chunks_exact_mut(pb).enumerate() {
                    layout::pack_prefix(batch.get(i).codes, bits, d, &mut scratch, p);
                }
            }
            Ok(Encoded {
                batch,
                plane,
                plane_factor,
                prefix,
            })
        })
        .collect::<Result<Vec<_>>>()
}

/// Rows encoded by [`encode_rows`]: the codes, and the sign plane (packed 1-bit codes and key
/// factors) when the shape has one.
#[derive(Debug)]
pub(crate) struct Encoded {
    batch: EncodedBatch,
    plane: Vec<u8>,
    plane_factor: Vec<f32>,
    /// Packed 4-bit prefixes (3- and 5..=8-bit codes).
    prefix: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRng;
    use crate::search::{ExactIndex, STAGED_MIN_DIM, TopK};

    fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::for_data(seed);
        (0..n * d).map(|_| rng.gaussian() as f32).collect()
    }

    #[test]
    fn rerank_with_full_oversampling_is_exact() {
        let (n, d) = (700, 24);
        let rows = data(n, d, 1);
        let queries = data(20, d, 2);
        let ids: Vec<u64> = (0..n as u64).map(|i| i * 3 + 5).collect();
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for storage in [RerankStorage::F32, RerankStorage::F16] {
                let mut index =
                    FlatIndex::new(QuantizerConfig::new(d, 2), metric, storage).unwrap();
                index.add(&ids, &rows).unwrap();
                let exact = ExactIndex::new(d, metric, &rows).unwrap();
                // Oversampling that covers the whole index makes stage 1 irrelevant.
                let params = SearchParams {
                    oversample: n,
                    rescore: true,
                    staged: false,
                    shortlist: 16,
                    target_recall: None,
                    ef: 0,
                };
                let got = index.search_batch(&queries, 10, &params).unwrap();
                for (q, g) in queries.chunks_exact(d).zip(&got) {
                    let want: Vec<u64> = exact
                        .search(q, 10)
                        .unwrap()
                        .iter()
                        .map(|n| ids[n.id as usize])
                        .collect();
                    let have: Vec<u64> = g.iter().map(|n| n.id).collect();
                    if storage == RerankStorage::F32 {
                        assert_eq!(have, want, "{metric:?}");
                    } else {
                        let common = have.iter().filter(|i| want.contains(i)).count();
                        assert!(common >= 9, "{metric:?} f16: {common}/10");
                    }
                    assert_eq!(index.search(q, 10, &params).unwrap(), *g, "single == batch");
                }
            }
        }
    }

    #[test]
    fn code_scan_finds_most_true_neighbours_at_4_bits() {
        let (n, d) = (2000, 64);
        let rows = data(n, d, 3);
        let queries = data(30, d, 4);
        let ids: Vec<u64> = (0..n as u64).collect();
        let mut index =
            FlatIndex::new(QuantizerConfig::new(d, 4), Metric::Dot, RerankStorage::None).unwrap();
        index.add(&ids, &rows).unwrap();
        let exact = ExactIndex::new(d, Metric::Dot, &rows).unwrap();
        let mut hits = 0;
        for q in queries.chunks_exact(d) {
            let want: Vec<u64> = exact.search(q, 10).unwrap().iter().map(|n| n.id).collect();
            let got = index
                .search(
                    q,
                    10,
                    &SearchParams {
                        oversample: 1,
                        rescore: false,
                        staged: false,
                        shortlist: 16,
                        target_recall: None,
                        ef: 0,
                    },
                )
                .unwrap();
            hits += got.iter().filter(|n| want.contains(&n.id)).count();
        }
        assert!(hits as f64 / 300.0 > 0.8, "recall {}", hits as f64 / 300.0);
    }

    /// With enough oversampling, stage 2 sees every vector, so the blocked integer scan must give
    /// exactly the ranking of stage 2's estimates (the float table's; for 4-bit codes the `dot4`
    /// sums, which must agree with the float ranking on at least 9 of 10); with less, it must
    /// still find most of it.
    #[test]
    fn blocked_scan_agrees_with_float_estimates() {
        let (n, d) = (1000, 50);
        let rows = data(n, d, 6);
        let queries = data(10, d, 7);
        let ids: Vec<u64> = (0..n as u64).collect();
        for bits in [1u8, 2, 3, 4, 5, 8] {
            for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
                let mut index =
                    FlatIndex::new(QuantizerConfig::new(d, bits), metric, RerankStorage::None)
                        .unwrap();
                index.add(&ids, &rows).unwrap();
                assert!(index.blocked.is_some());
                let view = index.view();
                let mut overlap = 0;
                for q in queries.chunks_exact(d) {
                    let lut = index.quantizer().prepare_query(q).unwrap();
                    let q4 = crate::kernels::dot4::Query::new(lut.rotated());
                    let (mut want, mut float) = (TopK::new(10), TopK::new(10));
                    for row in 0..n {
                        let est = view.refine_estimate(&lut, Some(&q4), row);
                        want.push(row as u64, metric.to_key(est));
                        float.push(row as u64, metric.to_key(view.estimate_row(&lut, row)));
                    }
                    let want: Vec<u64> = want.into_sorted().iter().map(|w| w.0).collect();
                    let float: Vec<u64> = float.into_sorted().iter().map(|w| w.0).collect();
                    let agree = want.iter().filter(|r| float.contains(r)).count();
                    assert!(agree >= 9, "bits={bits} {metric:?}: {agree}/10");
                    if bits != 4 {
                        assert_eq!(want, float);
                    }
                    let all = SearchParams {
                        oversample: n,
                        rescore: false,
                        staged: false,
                        shortlist: 16,
                        target_recall: None,
                        ef: 0,
                    };
                    let got: Vec<u64> = index
                        .search(q, 10, &all)
                        .unwrap()
                        .iter()
                        .map(|g| g.id)
                        .collect();
                    assert_eq!(got, want, "bits={bits} {metric:?}");
                    let staged = SearchParams {
                        oversample: n,
                        rescore: false,
                        staged: true,
                        shortlist: 16,
                        target_recall: None,
                        ef: 0,
                    };
                    let got: Vec<u64> = index
                        .search(q, 10, &staged)
                        .unwrap()
                        .iter()
                        .map(|g| g.id)
                        .collect();
                    assert_eq!(got, want, "staged, bits={bits} {metric:?}");
                    let few = SearchParams {
                        oversample: 2,
                        rescore: false,
                        staged: false,
                        shortlist: 16,
                        target_recall: None,
                        ef: 0,
                    };
                    let got = index.search(q, 10, &few).unwrap();
                    overlap += got.iter().filter(|g| want.contains(&g.id)).count();
                }
                assert!(
                    overlap >= 90,
                    "bits={bits} {metric:?}: {overlap}/100 with oversample 2"
                );
            }
        }
    }

    /// Prod codes: stage 1 adds a FastScan pass over the QJL sign bits to the pass over the
    /// `b-1`-bit codes (or runs it alone at 1 bit). With every row reaching stage 2 the ranking
    /// is the float estimator's; with 2× oversampling it still finds most of it.
    #[test]
    fn prod_sign_bit_pass_agrees_with_float_estimates() {
        let (n, d) = (800, 64);
        let rows = data(n, d, 16);
        let queries = data(10, d, 17);
        let ids: Vec<u64> = (0..n as u64).collect();
        for bits in [1u8, 2, 3, 5] {
            for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
                let config = QuantizerConfig {
                    variant: crate::Variant::Prod,
                    ..QuantizerConfig::new(d, bits)
                };
                let mut index = FlatIndex::new(config, metric, RerankStorage::None).unwrap();
                index.add(&ids, &rows).unwrap();
                assert!(index.sketch_blocked.is_some());
                let view = index.view();
                let mut overlap = 0;
                for q in queries.chunks_exact(d) {
                    let lut = index.quantizer().prepare_query(q).unwrap();
                    let q4 = crate::kernels::dot4::Query::new(lut.rotated());
                    let (mut want, mut float) = (TopK::new(10), TopK::new(10));
                    for row in 0..n {
                        let est = view.refine_estimate(&lut, Some(&q4), row);
                        want.push(row as u64, metric.to_key(est));
                        float.push(row as u64, metric.to_key(view.estimate_row(&lut, row)));
                    }
                    let want: Vec<u64> = want.into_sorted().iter().map(|w| w.0).collect();
                    let float: Vec<u64> = float.into_sorted().iter().map(|w| w.0).collect();
                    let agree = want.iter().filter(|r| float.contains(r)).count();
                    assert!(agree >= 9, "bits={bits} {metric:?}: {agree}/10");
                    if bits != 4 {
                        assert_eq!(want, float);
                    }
                    let params = |oversample| SearchParams {
                        oversample,
                        rescore: false,
                        staged: false,
                        shortlist: 16,
                        target_recall: None,
                        ef: 0,
                    };
                    let got: Vec<u64> = index
                        .search(q, 10, &params(n))
                        .unwrap()
                        .iter()
                        .map(|g| g.id)
                        .collect();
                    assert_eq!(got, want, "prod bits={bits} {metric:?}");
                    let got = index.search(q, 10, &params(2)).unwrap();
                    overlap += got.iter().filter(|g| want.contains(&g.id)).count();
                }
                assert!(
                    overlap >= 85,
                    "prod bits={bits} {metric:?}: {overlap}/100 at 2x"
                );
            }
        }
    }

    /// The staged search (d ≥ 256, 4 bits): with a shortlist covering everything it is the
    /// plain ranking by float estimates; with the default shortlist it finds nearly all of it.
    #[test]
    fn staged_search_matches_the_plain_ranking() {
        let (n, d) = (1200, STAGED_MIN_DIM);
        let rows = data(n, d, 10);
        let queries = data(10, d, 11);
        let ids: Vec<u64> = (0..n as u64).collect();
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let mut index =
                FlatIndex::new(QuantizerConfig::new(d, 4), metric, RerankStorage::None).unwrap();
            index.add(&ids, &rows).unwrap();
            assert!(index.staged_available());
            let small = FlatIndex::new(
                QuantizerConfig::new(STAGED_MIN_DIM - 1, 4),
                metric,
                RerankStorage::None,
            );
            assert!(
                !small.unwrap().staged_available(),
                "no sign plane below STAGED_MIN_DIM"
            );
            let plain = SearchParams {
                oversample: n,
                rescore: false,
                staged: false,
                shortlist: 16,
                target_recall: None,
                ef: 0,
            };
            let everything = SearchParams {
                oversample: n,
                rescore: false,
                staged: true,
                shortlist: 1,
                target_recall: None,
                ef: 0,
            };
            let default = SearchParams {
                oversample: 1,
                rescore: false,
                staged: true,
                shortlist: 16,
                target_recall: None,
                ef: 0,
            };
            let mut overlap = 0;
            for q in queries.chunks_exact(d) {
                let want: Vec<u64> = index
                    .search(q, 10, &plain)
                    .unwrap()
                    .iter()
                    .map(|g| g.id)
                    .collect();
                let got: Vec<u64> = index
                    .search(q, 10, &everything)
                    .unwrap()
                    .iter()
                    .map(|g| g.id)
                    .collect();
                assert_eq!(got, want, "{metric:?}");
                let got = index.search(q, 10, &default).unwrap();
                overlap += got.iter().filter(|g| want.contains(&g.id)).count();
            }
            assert!(
                overlap >= 90,
                "{metric:?}: {overlap}/100 with the default shortlist"
            );
        }
    }

    #[test]
    fn a_split_staged_search_answers_as_one_thread_does() {
        // Enough rows for three parts of a split scan, a shortlist long enough
        // (10 · 8 · 8 = 640 rows) to be refined on several threads, and 80 candidates to
        // rerank on them.
        let (n, d) = (3 * super::super::view::ROW_CHUNK + 500, STAGED_MIN_DIM);
        let rows = data(n, d, 12);
        let queries = data(6, d, 13);
        let ids: Vec<u64> = (0..n as u64).collect();
        for rerank in [RerankStorage::None, RerankStorage::F32] {
            let mut index =
                FlatIndex::new(QuantizerConfig::new(d, 4), Metric::Cosine, rerank).unwrap();
            index.add(&ids, &rows).unwrap();
            let params = SearchParams {
                oversample: 8,
                rescore: rerank != RerankStorage::None,
                staged: true,
                shortlist: 8,
                target_recall: None,
                ef: 0,
            };
            let answers = |threads: usize| -> Vec<Vec<(u64, u32)>> {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    queries
                        .chunks_exact(d)
                        .map(|q| {
                            let hits = index.search(q, 10, &params).unwrap();
                            hits.iter().map(|h| (h.id, h.score.to_bits())).collect()
                        })
                        .collect()
                })
            };
            let one = answers(1);
            assert!(one.iter().all(|a| a.len() == 10));
            assert_eq!(answers(3), one, "{rerank:?}: three threads");
            assert_eq!(answers(2), one, "{rerank:?}: two threads");
        }
    }

    #[test]
    fn removed_replaced_and_filtered_rows_are_honoured() {
        let (n, d) = (300, 16);
        let rows = data(n, d, 8);
        let ids: Vec<u64> = (0..n as u64).map(|i| 1000 + i).collect();
        for bits in [4u8, 3] {
            let mut index = FlatIndex::new(
                QuantizerConfig::new(d, bits),
                Metric::L2,
                RerankStorage::F32,
            )
            .unwrap();
            index.add(&ids, &rows).unwrap();
            let all = SearchParams {
                oversample: n,
                rescore: true,
                staged: false,
                shortlist: 16,
                target_recall: None,
                ef: 0,
            };
            let q = &rows[5 * d..6 * d];
            assert_eq!(index.search(q, 1, &all).unwrap()[0].id, 1005, "bits={bits}");
            // Remove the best match and everything in blocks 1..=7 except one row: the
            // all-dead blocks are skipped, and the survivors are still found.
            let mut gone: Vec<u64> = vec![1005];
            gone.extend((32..256).filter(|&i| i != 100).map(|i| 1000 + i as u64));
            assert_eq!(index.remove(&gone), gone.len());
            assert_eq!(
                index.remove(&[1005, 7]),
                0,
                "removing twice or unknown ids does nothing"
            );
            assert_eq!(index.len(), n - gone.len());
            let got = index.search(q, n, &all).unwrap();
            assert_eq!(got.len(), n - gone.len(), "min(k, live rows)");
            assert!(got.iter().all(|g| !gone.contains(&g.id)));
            assert!(got.iter().any(|g| g.id == 1100));
            // Replacing an id: the new vector is found, the old one is not.
            index.add(&[1010], &rows[5 * d..6 * d]).unwrap();
            assert_eq!(index.len(), n - gone.len());
            let top = index.search(q, 2, &all).unwrap();
            assert_eq!(top[0].id, 1010);
            assert_ne!(top[1].id, 1010, "the old row of 1010 is dead");
            // Allow-lists: only allowed live ids, as many as exist.
            let allow: roaring::RoaringTreemap =
                [1001u64, 1002, 1005, 1010, 9999].into_iter().collect();
            let got = index.search_filtered(q, 10, &all, &allow).unwrap();
            let mut got_ids: Vec<u64> = got.iter().map(|g| g.id).collect();
            got_ids.sort_unstable();
            assert_eq!(got_ids, vec![1001, 1002, 1010]);
            let batch = index
                .search_batch_filtered(&rows[..2 * d], 10, &all, &allow)
                .unwrap();
            assert!(batch.iter().all(|r| r.len() == 3));
            let none = roaring::RoaringTreemap::new();
            assert!(
                index
                    .search_filtered(q, 10, &all, &none)
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[test]
    fn duplicate_ids_in_one_batch_keep_the_last_row() {
        let d = 8;
        let rows = data(3, d, 9);
        let mut index =
            FlatIndex::new(QuantizerConfig::new(d, 4), Metric::L2, RerankStorage::F32).unwrap();
        index.add(&[7, 8, 7], &rows).unwrap();
        assert_eq!(index.len(), 2);
        let all = SearchParams {
            oversample: 10,
            rescore: true,
            staged: false,
            shortlist: 16,
            target_recall: None,
            ef: 0,
        };
        let got = index.search(&rows[2 * d..], 1, &all).unwrap();
        assert_eq!(got[0].id, 7);
        assert!(
            got[0].score < 1e-6,
            "the last row for id 7 is the one stored"
        );
        let got = index.search(&rows[..d], 2, &all).unwrap();
        assert!(
            got.iter().all(|g| g.score > 1e-6),
            "the first row for id 7 is gone"
        );
    }

    #[test]
    fn edge_cases_and_bad_input() {
        let mut index = FlatIndex::new(
            QuantizerConfig::new(8, 4),
            Metric::Cosine,
            RerankStorage::F32,
        )
        .unwrap();
        let p = SearchParams::default();
        assert!(
            index.search(&[1.0; 8], 5, &p).unwrap().is_empty(),
            "empty index"
        );
        index.add(&[1, 2], &data(2, 8, 5)).unwrap();
        assert_eq!(
            index.search(&[1.0; 8], 5, &p).unwrap().len(),
            2,
            "k > n returns n"
        );
        assert!(matches!(
            index.search(&[1.0; 7], 5, &p),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(matches!(
            index.search(&[0.0; 8], 5, &p),
            Err(Error::ZeroVector)
        ));
        assert!(matches!(
            index.search(&[1.0; 8], 0, &p),
            Err(Error::InvalidArgument { name: "k", .. })
        ));
        let bad = SearchParams {
            oversample: 0,
            rescore: true,
            staged: false,
            shortlist: 16,
            target_recall: None,
            ef: 0,
        };
        assert!(matches!(
            index.search(&[1.0; 8], 1, &bad),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(
            index.add(&[3], &[0.0; 8]).is_err(),
            "zero vector under cosine"
        );
        assert!(index.add(&[3, 4], &[1.0; 8]).is_err(), "ids/rows mismatch");
        let mut nan = vec![1.0; 8];
        nan[3] = f32::NAN;
        assert!(index.add(&[3], &nan).is_err());
        assert_eq!(index.len(), 2, "failed adds change nothing");
    }

    /// `target_recall` reranks fewer candidates than `k × oversample` yet keeps (nearly) the
    /// same answers; values outside (0, 1] are refused.
    #[test]
    fn target_recall_keeps_the_answers_with_fewer_candidates() {
        let (n, d) = (4000, 64);
        let rows = data(n, d, 31);
        let queries = data(40, d, 32);
        let ids: Vec<u64> = (0..n as u64).collect();
        for bits in [2u8, 4] {
            for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
                let mut index =
                    FlatIndex::new(QuantizerConfig::new(d, bits), metric, RerankStorage::F32)
                        .unwrap();
                index.add(&ids, &rows).unwrap();
                let all = SearchParams {
                    oversample: 8,
                    rescore: true,
                    staged: false,
                    shortlist: 1,
                    target_recall: None,
                    ef: 0,
                };
                let bounded = SearchParams {
                    target_recall: Some(0.99),
                    ..all
                };
                let mut same = 0;
                for q in queries.chunks_exact(d) {
                    let want: Vec<u64> = index
                        .search(q, 10, &all)
                        .unwrap()
                        .iter()
                        .map(|r| r.id)
                        .collect();
                    let got: Vec<u64> = index
                        .search(q, 10, &bounded)
                        .unwrap()
                        .iter()
                        .map(|r| r.id)
                        .collect();
                    assert_eq!(got.len(), 10);
                    same += got.iter().filter(|g| want.contains(g)).count();
                }
                assert!(same >= 396, "bits={bits} {metric:?}: {same}/400");
                for bad in [0.0f32, -0.5, 1.5, f32::NAN] {
                    let p = SearchParams {
                        target_recall: Some(bad),
                        ..all
                    };
                    assert!(index.search(&queries[..d], 10, &p).is_err(), "{bad}");
                }
            }
        }
    }

    #[test]
    fn bounded_candidates_follow_the_error_law() {
        let shape = Shape::new(QuantizerConfig::new(384, 4), Metric::Cosine).unwrap();
        let sigma = (shape.quantizer.codebook().unwrap().expected_mse() / 384.0).sqrt() as f32;
        // Ten candidates at 0.9, one just inside 2·z·σ below them, one far below.
        let z = 2.326_f32;
        let mut c: Vec<(u64, f32, f32)> = (0..10).map(|i| (i, 0.9, 1.0)).collect();
        c.push((10, 0.9 - 1.9 * z * sigma, 1.0));
        c.push((11, 0.9 - 2.1 * z * sigma, 1.0));
        c.push((12, 0.2, 1.0));
        let kept: Vec<u64> = super::super::view::bounded(&shape, 1.0, c, 10, 0.99)
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(kept, (0..11).collect::<Vec<u64>>());
    }
}
