//! The search pipeline over borrowed columns.
//!
//! [`Shape`] is what a run of rows shares (quantizer, metric, layout sizes); [`Columns`] borrows
//! the rows' arrays, owned by a [`FlatIndex`](super::FlatIndex) or mapped from a segment file;
//! [`View`] pairs them and runs stage 1 (FastScan or float tables), the staged refinement and
//! stage 2 (code-domain estimate or rerank on stored vectors). Nothing here owns data or does
//! I/O, so the in-memory index and the mmapped segments search with the same code.

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result, check_norm, check_rows, check_vector};
use crate::kernels::fastscan::{Kernel, MAX_MULTI, MAX_TOP, TopQuery};
use crate::kernels::{self, dot4};
use crate::kernels::{dot_f32, squared_l2_f32, squared_norm_f64};
use crate::metric::Metric;
use crate::quantizer::layout::{self, BLOCK};
use crate::quantizer::{
    CodeRef, Codebook, Estimator, NibbleLut, Quantizer, QuantizerConfig, QueryLut, VectorScalars,
};
use crate::search::{Cancel, Neighbor, SearchParams, TopK};

/// Rows per parallel task when one query is split across threads.
pub(crate) const ROW_CHUNK: usize = 4096;
/// Most blocks scored per kernel call (their sums stay in L1: 64 · 32 · 4 bytes).
const SCAN_BLOCKS: usize = 64;
/// Code bytes per chunk of a grouped scan: small enough to stay in L2 while every query of
/// the group passes over it.
const CHUNK_BYTES: usize = 192 * 1024;
/// Rows ahead of the one being refined whose code is prefetched: enough to cover a DRAM miss
/// with a `dot4_row` of a few tens of nanoseconds each.
const REFINE_AHEAD: usize = 8;
/// Queries scanned together in a batch (one pass of the widest kernels; groups of 32 sharing
/// L2-sized chunks measured no faster at d = 768, 100k rows).
const QUERY_GROUP: usize = 8;
/// Smallest shortlist a split single-query search refines on several threads. The workers
/// have just scanned, so a hand-off is quick; refining 160 rows at d = 768 (from DRAM) took
/// 30 µs on one thread and 20–24 on two.
const SPLIT_REFINE_MIN: usize = 64;
/// Fewest candidates a split single-query search reranks on several threads (one row's
/// stored vector is 3 KB at d = 768 in f32, a read from DRAM).
const SPLIT_RERANK_MIN: usize = 16;
/// See [`View::params_for`].
const STAGED_ROWS_PER_CANDIDATE: usize = 64;
/// Smallest dimension with a sign plane for staged search.
pub const STAGED_MIN_DIM: usize = 256;

/// Sizes of one blocked code array: nibble columns per block and bytes per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockShape {
    pub columns: usize,
    pub block_bytes: usize,
}

impl BlockShape {
    fn new(dim: usize, bits: u8) -> Self {
        let (_, columns) = layout::nibbles(dim, bits);
        BlockShape {
            columns,
            block_bytes: columns * 16,
        }
    }

    /// The interleaved arrangement of 4-bit codes (`columns` counts padded coordinates).
    fn interleaved(dim: usize) -> Self {
        let block_bytes = layout::interleaved_block_bytes(dim);
        BlockShape {
            columns: block_bytes / 16,
            block_bytes,
        }
    }

    /// Bytes of the blocked array for `rows` rows.
    pub fn bytes_for(&self, rows: usize) -> usize {
        rows.div_ceil(BLOCK) * self.block_bytes
    }
}

/// What every row of an index shares.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub quantizer: Quantizer,
    pub metric: Metric,
    /// The blocked layout stage 1 scans: of the codes (1, 2, 4 bits) or of their 4-bit
    /// prefixes (3, 5..=8 bits; see `layout::prefix_code`).
    pub blocked: Option<BlockShape>,
    /// True when `blocked` holds prefixes rather than the codes.
    pub prefix: bool,
    /// 4-bit scalar codes: `blocked` is in the interleaved arrangement and stage 1 runs the
    /// `dot4` kernels with these levels of the codebook.
    pub dot4: Option<dot4::Levels>,
    /// The blocked layout of the QJL sign bits (prod codes): a second stage-1 pass.
    pub sketch: Option<BlockShape>,
    /// The sign plane of 4-bit codes with `dim ≥ STAGED_MIN_DIM`, and its 1-bit codebook.
    pub plane: Option<(BlockShape, Arc<Codebook>)>,
}

impl Shape {
    pub fn new(config: QuantizerConfig, metric: Metric) -> Result<Self> {
        let quantizer = Quantizer::new(config)?;
        let bits = config.mse_bits();
        let dot4 = match quantizer.codebook() {
            Some(cb) if bits == 4 && config.variant == crate::quantizer::Variant::Mse => {
                Some(dot4::Levels::new(cb.centroids_f32()))
            }
            _ => None,
        };
        let blocked = if dot4.is_some() {
            Some(BlockShape::interleaved(config.dim))
        } else {
            layout::scan_bits(bits).map(|sb| BlockShape::new(config.dim, sb))
        };
        let prefix = blocked.is_some() && !layout::supports(bits);
        // Only 4-bit codes gain from staging: a 2-bit scan costs about what the plane pass and
        // the shortlist rescoring cost together (measured on docs-minilm-384).
        // Low dimensions have too noisy a sign plane to shortlist from (at d = 50 the 1-bit
        // recall@10 of GloVe is 0.18 and a staged 4-bit search loses a third of its recall).
        let plane = if bits == 4 && config.dim >= STAGED_MIN_DIM {
            Some((
                BlockShape::new(config.dim, 1),
                Codebook::get(config.dim, 1)?,
            ))
        } else {
            None
        };
        let sketch = (config.variant == crate::quantizer::Variant::Prod)
            .then(|| BlockShape::new(config.dim, 1));
        Ok(Shape {
            quantizer,
            metric,
            blocked,
            prefix,
            dot4,
            sketch,
            plane,
        })
    }

    /// Stage-1 key of a row: `factor · estimate + offset`, an affine function of the
    /// code-domain estimate that orders rows as the metric does (up to per-query constants).
    pub fn key_terms(&self, sc: &VectorScalars) -> (f32, f32) {
        match self.metric {
            Metric::Dot => (sc.scale, 0.0),
            Metric::Cosine => (sc.scale / sc.norm, 0.0),
            Metric::L2 => (2.0 * sc.scale, -sc.norm * sc.norm),
        }
    }

    /// The factor of a row's QJL term in its stage-1 key (prod codes): the estimator's
    /// `residual_norm · √(π/2)/d`, scaled for the metric as `key_terms` scales the codes' term.
    pub fn sketch_factor(&self, sc: &VectorScalars) -> f32 {
        let c = sc.residual_norm * self.quantizer.qjl_coefficient().unwrap_or(0.0);
        match self.metric {
            Metric::Dot => sc.norm * c,
            Metric::Cosine => c,
            Metric::L2 => 2.0 * sc.norm * c,
        }
    }

    fn check_query(&self, query: &[f32], k: usize, params: &SearchParams) -> Result<()> {
        if k == 0 {
            return Err(Error::invalid_argument("k", "k must be at least 1"));
        }
        if params.oversample == 0 {
            return Err(Error::invalid_argument("oversample", "must be at least 1"));
        }
        if params.ef > crate::graph::MAX_EF {
            return Err(Error::invalid_argument(
                "ef",
                format!(
                    "must be at most {}, got {}",
                    crate::graph::MAX_EF,
                    params.ef
                ),
            ));
        }
        if let Some(t) = params.target_recall
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(Error::invalid_argument(
                "target_recall",
                format!("must be in (0, 1], got {t}"),
            ));
        }
        check_vector(query, self.quantizer.dim())?;
        check_norm(query, self.metric == Metric::L2)?;
        Ok(())
    }

    /// Checks a batch of queries (the whole batch fails on the first bad one).
    pub fn check_queries(&self, queries: &[f32], k: usize, params: &SearchParams) -> Result<()> {
        let d = self.quantizer.dim();
        check_rows(queries, d, "queries")?;
        for q in queries.chunks_exact(d) {
            self.check_query(q, k, params)?;
        }
        Ok(())
    }

    /// Rotates checked queries and builds their tables (in parallel for a batch); shared by
    /// every source a search covers. Each source decides for itself whether a staged search
    /// pays ([`View::params_for`]), so a staged search builds the full codes' tables too, on
    /// first use by a source too small to stage.
    pub fn prepare(&self, queries: &[f32], params: &SearchParams) -> Result<Prepared> {
        let d = self.quantizer.dim();
        // One query is prepared on the caller's thread (a trip to the pool costs more).
        let luts = if queries.len() <= d {
            queries
                .chunks(d)
                .map(|q| self.quantizer.prepare_query(q))
                .collect::<Result<Vec<_>>>()?
        } else {
            queries
                .par_chunks(d)
                .map(|q| self.quantizer.prepare_query(q))
                .collect::<Result<Vec<_>>>()?
        };
        let plane = match &self.plane {
            Some((_, codebook)) if params.staged => {
                luts.iter().map(|l| l.sign_plane_lut(codebook)).collect()
            }
            _ => None,
        };
        // The full codes' tables now when they are the scan's; for a staged search only once a
        // source asks for them (one too small to stage).
        let full = std::sync::OnceLock::new();
        let blocked = self.blocked.is_some() && self.dot4.is_none();
        if plane.is_none() {
            let _ = full.set(full_tables(blocked, &luts));
        }
        let dot4 = self
            .dot4
            .map(|_| luts.iter().map(|l| dot4::Query::new(l.rotated())).collect());
        let sketch = self
            .sketch
            .and_then(|_| luts.iter().map(QueryLut::sketch_lut).collect());
        Ok(Prepared {
            luts,
            plane,
            full,
            blocked,
            dot4,
            sketch,
        })
    }

    /// Checks one query.
    pub fn check_one(&self, query: &[f32], k: usize, params: &SearchParams) -> Result<()> {
        self.check_query(query, k, params)
    }
}

/// The full codes' u8 tables of `luts`, for a shape with a blocked layout.
fn full_tables(blocked: bool, luts: &[QueryLut]) -> Option<Vec<NibbleLut>> {
    if blocked {
        luts.iter().map(QueryLut::nibble_lut).collect()
    } else {
        None
    }
}

/// The u8 tables of some of the prepared queries.
#[derive(Debug, Clone, Copy)]
struct Tables<'a> {
    plane: Option<&'a [NibbleLut]>,
    full: Option<&'a [NibbleLut]>,
    sketch: Option<&'a [NibbleLut]>,
    /// The rounded queries of a `dot4` scan (4-bit codes).
    dot4: Option<&'a [dot4::Query]>,
}

impl Prepared {
    fn tables(&self, queries: std::ops::Range<usize>) -> Tables<'_> {
        fn pick(t: &Option<Vec<NibbleLut>>, q: std::ops::Range<usize>) -> Option<&[NibbleLut]> {
            t.as_ref().map(|t| &t[q])
        }
        Tables {
            plane: pick(&self.plane, queries.clone()),
            full: None,
            sketch: pick(&self.sketch, queries.clone()),
            dot4: self.dot4.as_ref().map(|t| &t[queries]),
        }
    }

    /// The rotated query `qi` with its float tables.
    pub(crate) fn lut(&self, qi: usize) -> &QueryLut {
        &self.luts[qi]
    }

    /// Query `qi` rounded for the `dot4` kernels (4-bit codes).
    pub(crate) fn dot4_query(&self, qi: usize) -> Option<&dot4::Query> {
        self.dot4.as_ref().and_then(|v| v.get(qi))
    }

    /// [`tables`](Self::tables) with the full codes' tables too (built now if needed).
    fn tables_full(&self, queries: std::ops::Range<usize>) -> Tables<'_> {
        let full = self
            .full
            .get_or_init(|| full_tables(self.blocked, &self.luts));
        Tables {
            full: full.as_ref().map(|t| &t[queries.clone()]),
            ..self.tables(queries)
        }
    }
}

/// One FastScan pass of stage 1: a blocked array, its shape, the per-row factor its estimate
/// is scaled by, and one table per query.
#[derive(Debug, Clone, Copy)]
struct Pass<'a> {
    bytes: &'a [u8],
    shape: BlockShape,
    factor: &'a [f32],
    tables: &'a [NibbleLut],
}

/// Queries prepared for stage 1: rotated queries with their float tables, and the u8 tables.
#[derive(Debug)]
pub(crate) struct Prepared {
    luts: Vec<QueryLut>,
    /// Tables of the sign plane (a staged search).
    plane: Option<Vec<NibbleLut>>,
    /// Tables of the full codes (blocked layouts), built on first use in a staged search.
    full: std::sync::OnceLock<Option<Vec<NibbleLut>>>,
    /// Whether the shape has a FastScan layout of the codes (so full tables can be built).
    blocked: bool,
    /// The queries rounded for the `dot4` kernels (4-bit codes).
    dot4: Option<Vec<dot4::Query>>,
    /// Tables of the QJL sign bits (prod codes, unstaged scans).
    sketch: Option<Vec<NibbleLut>>,
}

/// Full-precision copies of the rows, borrowed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum VectorsRef<'a> {
    #[default]
    None,
    F16(&'a [half::f16]),
    F32(&'a [f32]),
}

/// The arrays of a run of rows, borrowed. Row `i` of every array belongs to `ids[i]`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Columns<'a> {
    pub ids: &'a [u64],
    /// Packed codes, `rows × code_bytes`.
    pub codes: &'a [u8],
    /// QJL sketches, `rows × sketch_bytes`.
    pub sketches: &'a [u8],
    pub scalars: &'a [VectorScalars],
    /// The codes in the blocked layout (when the shape has one).
    pub blocked: &'a [u8],
    /// The sign plane in the blocked layout (when the shape has one) and its per-row key factor.
    pub plane: &'a [u8],
    pub plane_factor: &'a [f32],
    pub key_factor: &'a [f32],
    pub key_offset: &'a [f32],
    /// The QJL sign bits in the blocked layout (prod) and their per-row key factor.
    pub sketch_blocked: &'a [u8],
    pub sketch_factor: &'a [f32],
    pub vectors: VectorsRef<'a>,
    /// The rows' graph (a sealed segment's index, or a `FlatIndex` after `build_graph`).
    pub graph: Option<crate::graph::GraphRef<'a>>,
}

impl Columns<'_> {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }
}

/// A searchable run of rows: a shape and its columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub shape: &'a Shape,
    pub cols: Columns<'a>,
}

impl View<'_> {
    fn code(&self, row: usize) -> CodeRef<'_> {
        let q = &self.shape.quantizer;
        let (cb, sb) = (q.code_bytes(), q.sketch_bytes());
        CodeRef {
            codes: &self.cols.codes[row * cb..(row + 1) * cb],
            sketch: &self.cols.sketches[row * sb..(row + 1) * sb],
            scalars: self.cols.scalars[row],
        }
    }

    /// The code-domain estimate of the metric's score for `row`.
    #[inline]
    pub fn estimate_row(&self, lut: &QueryLut, row: usize) -> f32 {
        let code = self.code(row);
        let est = Estimator::Renormalized;
        match self.shape.metric {
            Metric::Cosine => lut.cosine(code, est),
            Metric::Dot => lut.inner_product(code, est),
            Metric::L2 => lut.squared_l2(code, est),
        }
    }

    fn staged(&self, params: &SearchParams) -> bool {
        params.staged && self.shape.plane.is_some()
    }

    /// `params` for this source: a staged search only where it pays. Refining the shortlist
    /// costs a float estimate per candidate, about what scanning 64 rows' full codes costs,
    /// so a source of fewer than 64 rows per shortlist entry (a 4096-row memtable chunk, for
    /// k = 10) is scanned in full instead: faster, and never less accurate (the staged search
    /// approximates the full ranking). The collection applies it per source; a `FlatIndex`
    /// does as its parameters say.
    pub fn params_for(&self, params: &SearchParams, k: usize) -> SearchParams {
        params_for_rows(params, k, self.cols.rows())
    }

    /// Stage 1 over rows `rows` (block-aligned) for a group of queries: the `keep` best of
    /// each by an approximate key. Only rows whose bit is set in `masks` (one u32 per block) are
    /// considered.
    ///
    /// With a sign plane and `params.staged`, this scans the plane for `keep ×
    /// params.shortlist` candidates, which [`refine`](Self::refine) then ranks by the full codes
    /// (after the shortlists of a split scan are merged); otherwise it scans the full codes
    /// (blocked FastScan for 1, 2, 4 bits, float tables else).
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        luts: &[QueryLut],
        tables: Tables<'_>,
        rows: std::ops::Range<usize>,
        keep: usize,
        masks: &[u32],
        params: &SearchParams,
        seed: Option<(TopK, u64)>,
    ) -> Vec<TopK> {
        let cols = &self.cols;
        if let (Some(tables), Some((plane, _)), true) =
            (tables.plane, &self.shape.plane, self.staged(params))
        {
            let pass = Pass {
                bytes: cols.plane,
                shape: *plane,
                factor: cols.plane_factor,
                tables,
            };
            return self.scan_blocked(
                &[pass],
                luts.len(),
                rows,
                self.scan_size(keep, params),
                masks,
                seed,
            );
        }
        if let (Some(queries), Some(levels)) = (tables.dot4, &self.shape.dot4) {
            return self.scan_dot4(queries, levels, rows, keep, masks, seed);
        }
        let mut passes = Vec::with_capacity(2);
        if let (Some(tables), Some(shape)) = (tables.full, self.shape.blocked) {
            passes.push(Pass {
                bytes: cols.blocked,
                shape,
                factor: cols.key_factor,
                tables,
            });
        }
        if let (Some(tables), Some(shape)) = (tables.sketch, self.shape.sketch) {
            passes.push(Pass {
                bytes: cols.sketch_blocked,
                shape,
                factor: cols.sketch_factor,
                tables,
            });
        }
        if !passes.is_empty() {
            return self.scan_blocked(&passes, luts.len(), rows, keep, masks, seed);
        }
        let (mut seed, id_base) = match seed {
            Some((top, base)) => (Some(top), base),
            None => (None, 0),
        };
        luts.iter()
            .map(|lut| {
                let mut top = seed.take().unwrap_or_else(|| TopK::new(keep));
                for row in rows.clone() {
                    if masks[row / BLOCK] >> (row % BLOCK) & 1 == 1 {
                        top.push(
                            id_base + row as u64,
                            self.shape.metric.to_key(self.estimate_row(lut, row)),
                        );
                    }
                }
                top
            })
            .collect()
    }

    /// How many candidates [`scan`](Self::scan) keeps per query.
    fn scan_size(&self, keep: usize, params: &SearchParams) -> usize {
        if self.staged(params) {
            keep.saturating_mul(params.shortlist.max(1))
        } else {
            keep
        }
    }

    /// After [`scan`](Self::scan): for a staged search, ranks the sign-plane shortlist by the
    /// full codes' float estimate and keeps `keep`; otherwise returns the candidates as they are.
    ///
    /// A shortlist of a split single query is refined on `parts` threads that claim chunks of
    /// it in turn (the calling thread one of them), since it is the part of the query a split
    /// scan would otherwise leave to one thread. The result does not depend on `parts`: each
    /// thread keeps its `keep` best by the same total order, so the best `keep` of the union
    /// are among them.
    fn refine(
        &self,
        lut: &QueryLut,
        q4: Option<&dot4::Query>,
        candidates: TopK,
        keep: usize,
        params: &SearchParams,
        parts: usize,
    ) -> TopK {
        if !self.staged(params) {
            return candidates;
        }
        let rows = candidates.into_unordered();
        if parts < 2 || rows.len() < SPLIT_REFINE_MIN {
            return self.refine_rows(lut, q4, &rows, TopK::new(keep));
        }
        let tops = claim_slices(
            parts,
            &rows,
            || TopK::new(keep),
            |top, part| self.refine_rows(lut, q4, part, top),
        );
        let mut top = TopK::new(keep);
        for t in tops {
            top.merge(t);
        }
        top
    }

    /// `top` with `rows` pushed, keyed by the full codes' estimate.
    fn refine_rows(
        &self,
        lut: &QueryLut,
        q4: Option<&dot4::Query>,
        rows: &[(u64, f32)],
        mut top: TopK,
    ) -> TopK {
        // A shortlist runs to thousands of rows (hard data needs `shortlist × k × oversample`
        // of 2,560 and more): touching them all first would evict the first from L2 before
        // they are scored, so each row's code and scalars are asked for REFINE_AHEAD rows
        // before it is scored instead. The rows come in the shortlist's own order: the
        // prefetch already covers the reads, and sorting 2,560 of them by row costs 27 µs
        // (`--bench topk`).
        for &(row, _) in rows.iter().take(REFINE_AHEAD) {
            self.prefetch_code(row as usize);
        }
        for (i, &(row, _)) in rows.iter().enumerate() {
            if let Some(&(next, _)) = rows.get(i + REFINE_AHEAD) {
                self.prefetch_code(next as usize);
            }
            top.push(
                row,
                self.shape
                    .metric
                    .to_key(self.refine_estimate(lut, q4, row as usize)),
            );
        }
        top
    }

    /// Asks for the cache lines of row `row`'s packed code and of its scalars.
    #[inline]
    fn prefetch_code(&self, row: usize) {
        let cb = self.shape.quantizer.code_bytes();
        if let Some(code) = self.cols.codes.get(row * cb..(row + 1) * cb) {
            kernels::prefetch(code, kernels::lines_spanned(cb));
        }
        if let Some(sc) = self.cols.scalars.get(row..row + 1) {
            kernels::prefetch(bytemuck::cast_slice(sc), 1);
        }
    }

    /// The code-domain estimate stage 2 ranks candidates by (and a staged search refines its
    /// shortlist with): for 4-bit codes the `dot4` integer sum of the row's packed code, a few
    /// instructions per row and the same integers the scan summed; the float table's else.
    #[inline]
    pub(crate) fn refine_estimate(
        &self,
        lut: &QueryLut,
        q4: Option<&dot4::Query>,
        row: usize,
    ) -> f32 {
        let (Some(q), Some(levels)) = (q4, &self.shape.dot4) else {
            return self.estimate_row(lut, row);
        };
        let cb = self.shape.quantizer.code_bytes();
        let s = Kernel::detect().dot4_row(&self.cols.codes[row * cb..(row + 1) * cb], levels, q);
        let sc = self.cols.scalars[row];
        let ip = sc.scale * (levels.step * q.step * s as f32);
        match self.shape.metric {
            Metric::Dot => ip,
            Metric::Cosine => {
                let denom = lut.norm() * sc.norm;
                if denom > 0.0 { ip / denom } else { 0.0 }
            }
            Metric::L2 => (lut.norm() * lut.norm() + sc.norm * sc.norm - 2.0 * ip).max(0.0),
        }
    }

    /// Reads one byte of every cache line of each row's slice of `bytes` (`row_bytes` per
    /// row) before the rows are scored: the reads are independent, so their cache misses
    /// overlap, where the scoring loop would take them one row at a time. Rows come in
    /// increasing order, so memory is walked forwards.
    fn touch(&self, rows: impl Iterator<Item = usize>, bytes: &[u8], row_bytes: usize) {
        let mut sink = 0u8;
        for row in rows {
            if let Some(r) = bytes.get(row * row_bytes..(row + 1) * row_bytes) {
                for line in r.iter().step_by(64) {
                    sink ^= *line;
                }
            }
        }
        std::hint::black_box(sink);
    }

    /// The blocked FastScan passes: row `i`'s key is `key_offset[i] + Σ_passes factor[i] ·
    /// (delta · sum + bias)` (one pass over the codes or the sign plane; for prod codes a
    /// second pass over the QJL sign bits).
    ///
    /// It walks the codes in chunks small enough to stay in L2 and runs every query of the group
    /// over a chunk before moving on, so a batch reads the codes from memory once per group.
    fn scan_blocked(
        &self,
        passes: &[Pass<'_>],
        queries: usize,
        rows: std::ops::Range<usize>,
        keep: usize,
        masks: &[u32],
        seed: Option<(TopK, u64)>,
    ) -> Vec<TopK> {
        let kernel = Kernel::detect();
        if let [pass] = passes {
            return self.scan_fused(kernel, pass, queries, rows, keep, masks, seed);
        }
        let block_bytes: usize = passes.iter().map(|p| p.shape.block_bytes).sum();
        let chunk_blocks = (CHUNK_BYTES / block_bytes.max(1)).clamp(1, SCAN_BLOCKS);
        // A seed (one query) continues a heap filled by earlier sources, whose rows are told
        // apart by `id_base`; its threshold holds from the first row on.
        let (mut tops, id_base): (Vec<TopK>, u64) = match seed {
            Some((top, base)) => (vec![top], base),
            None => ((0..queries).map(|_| TopK::new(keep)).collect(), 0),
        };
        // Excluded rows get key -inf, below every threshold (which starts at the lowest finite
        // value), so they never enter a heap.
        let mut thresholds: Vec<f32> = tops
            .iter()
            .map(|t| t.threshold().unwrap_or(f32::MIN))
            .collect();
        // Sums and keys of up to MAX_MULTI queries, scored together by the multi-query kernel.
        let lanes = queries.clamp(1, MAX_MULTI);
        let mut sums = vec![0u32; lanes * SCAN_BLOCKS * BLOCK];
        let mut keys = vec![0.0f32; lanes * SCAN_BLOCKS * BLOCK];
        let end_block = rows.end.div_ceil(BLOCK);
        let mut b = rows.start / BLOCK;
        while b < end_block {
            // Skip blocks with nothing to find, then take a run of blocks that have something.
            if masks[b] == 0 {
                b += 1;
                continue;
            }
            let mut nb = 1;
            while nb < chunk_blocks && b + nb < end_block && masks[b + nb] != 0 {
                nb += 1;
            }
            let base = b * BLOCK;
            let n = (base + nb * BLOCK).min(rows.end) - base;
            let offsets = &self.cols.key_offset[base..base + n];
            let span = SCAN_BLOCKS * BLOCK;
            for q0 in (0..queries).step_by(MAX_MULTI) {
                let group = (queries - q0).min(MAX_MULTI);
                for g in 0..group {
                    keys[g * span..g * span + n].copy_from_slice(offsets);
                }
                for pass in passes {
                    let bb = pass.shape.block_bytes;
                    let codes = &pass.bytes[b * bb..(b + nb) * bb];
                    let luts = &pass.tables[q0..q0 + group];
                    let mut tables: [&[u8]; MAX_MULTI] = [&[]; MAX_MULTI];
                    for (t, lut) in tables.iter_mut().zip(luts) {
                        *t = &lut.tables;
                    }
                    let m = nb * BLOCK;
                    let mut parts = sums.chunks_mut(span);
                    let mut outs: [&mut [u32]; MAX_MULTI] = std::array::from_fn(|_| {
                        parts.next().map_or(Default::default(), |s| &mut s[..m])
                    });
                    kernel.scan_multi(
                        codes,
                        pass.shape.columns,
                        &tables[..group],
                        &mut outs[..group],
                    );
                    // Keys for the whole chunk in one pass the compiler vectorises.
                    let factors = &pass.factor[base..base + n];
                    for (g, lut) in luts.iter().enumerate() {
                        let (delta, bias) = (lut.delta, lut.bias);
                        let s = &sums[g * span..g * span + n];
                        for ((key, &sum), &f) in
                            keys[g * span..g * span + n].iter_mut().zip(s).zip(factors)
                        {
                            *key += f * (delta * sum as f32 + bias);
                        }
                    }
                }
                for g in 0..group {
                    let (top, threshold) = (&mut tops[q0 + g], &mut thresholds[q0 + g]);
                    let keys = &mut keys[g * span..g * span + n];
                    for (block_keys, &mask) in keys.chunks_mut(BLOCK).zip(&masks[b..b + nb]) {
                        if mask != u32::MAX {
                            for (j, key) in block_keys.iter_mut().enumerate() {
                                if mask >> j & 1 == 0 {
                                    *key = f32::NEG_INFINITY;
                                }
                            }
                        }
                    }
                    // A compare against the heap's threshold that rarely succeeds.
                    for (c, chunk) in keys.chunks(16).enumerate() {
                        // Branch-free "does any key reach the threshold" over 16 keys.
                        if !chunk
                            .iter()
                            .fold(false, |any, &key| any | (key >= *threshold))
                        {
                            continue;
                        }
                        for (j, &key) in chunk.iter().enumerate() {
                            if key >= *threshold {
                                top.push(id_base + (base + c * 16 + j) as u64, key);
                                *threshold = top.threshold().unwrap_or(f32::MIN);
                            }
                        }
                    }
                }
            }
            b += nb;
        }
        tops
    }

    /// Stage 1 over interleaved 4-bit codes: the `dot4` kernels score up to their width of
    /// queries per load of the codes and offer each heap only the rows that reach its
    /// threshold. A batch wider than the kernel walks the codes in chunks that stay in L2
    /// while each group of queries passes over them.
    fn scan_dot4(
        &self,
        queries: &[dot4::Query],
        levels: &dot4::Levels,
        rows: std::ops::Range<usize>,
        keep: usize,
        masks: &[u32],
        seed: Option<(TopK, u64)>,
    ) -> Vec<TopK> {
        let kernel = Kernel::detect();
        let width = kernel.dot4_width();
        let bb = self
            .shape
            .blocked
            .expect("dot4 codes are blocked")
            .block_bytes;
        let (mut cands, id_base) = Candidates::start(seed, queries.len(), keep);
        let mut scales = [0.0f32; dot4::MAX_QUERIES];
        let chunk_blocks = if queries.len() > width {
            (CHUNK_BYTES / bb).max(1)
        } else {
            usize::MAX
        };
        let end_block = rows.end.div_ceil(BLOCK);
        let mut b = rows.start / BLOCK;
        while b < end_block {
            let nb = chunk_blocks.min(end_block - b);
            let base = b * BLOCK;
            let end = ((b + nb) * BLOCK).min(rows.end);
            let r = dot4::Rows {
                factor: &self.cols.key_factor[base..end],
                offset: &self.cols.key_offset[base..end],
                masks: &masks[b..b + nb],
            };
            let codes = &self.cols.blocked[b * bb..(b + nb) * bb];
            for c in &mut cands {
                c.base = id_base + base as u64;
            }
            for q0 in (0..queries.len()).step_by(width) {
                let group = (queries.len() - q0).min(width);
                let mut qs: [&dot4::Query; dot4::MAX_QUERIES] = [&queries[q0]; dot4::MAX_QUERIES];
                for (i, q) in queries[q0..q0 + group].iter().enumerate() {
                    qs[i] = q;
                    scales[i] = levels.step * q.step;
                }
                kernel.dot4_top(
                    codes,
                    levels,
                    &qs[..group],
                    &scales[..group],
                    r,
                    &mut cands[q0..q0 + group],
                );
            }
            b += nb;
        }
        cands.into_iter().map(|c| c.top).collect()
    }

    /// One FastScan pass with the keys compared inside the kernel (`Kernel::scan_top`): up to
    /// `MAX_MULTI` queries per load of the codes, over chunks that stay in L2 while every
    /// group of the batch passes over them.
    #[allow(clippy::too_many_arguments)]
    fn scan_fused(
        &self,
        kernel: Kernel,
        pass: &Pass<'_>,
        queries: usize,
        rows: std::ops::Range<usize>,
        keep: usize,
        masks: &[u32],
        seed: Option<(TopK, u64)>,
    ) -> Vec<TopK> {
        let bb = pass.shape.block_bytes;
        let (mut cands, id_base) = Candidates::start(seed, queries, keep);
        let width = kernel.top_width();
        let chunk_blocks = if queries > width {
            (CHUNK_BYTES / bb).max(1)
        } else {
            usize::MAX
        };
        let end_block = rows.end.div_ceil(BLOCK);
        let mut b = rows.start / BLOCK;
        while b < end_block {
            let nb = chunk_blocks.min(end_block - b);
            let base = b * BLOCK;
            let end = ((b + nb) * BLOCK).min(rows.end);
            let r = dot4::Rows {
                factor: &pass.factor[base..end],
                offset: &self.cols.key_offset[base..end],
                masks: &masks[b..b + nb],
            };
            let codes = &pass.bytes[b * bb..(b + nb) * bb];
            for c in &mut cands {
                c.base = id_base + base as u64;
            }
            for q0 in (0..queries).step_by(width) {
                let group = (queries - q0).min(width);
                let mut qs = [TopQuery {
                    tables: &[],
                    delta: 0.0,
                    bias: 0.0,
                }; MAX_TOP];
                for (q, lut) in qs.iter_mut().zip(&pass.tables[q0..q0 + group]) {
                    *q = TopQuery {
                        tables: &lut.tables,
                        delta: lut.delta,
                        bias: lut.bias,
                    };
                }
                kernel.scan_top(
                    codes,
                    pass.shape.columns,
                    &qs[..group],
                    r,
                    &mut cands[q0..q0 + group],
                );
            }
            b += nb;
        }
        cands.into_iter().map(|c| c.top).collect()
    }

    /// The exact score of row `row` on its stored vector (`None` without rerank storage).
    pub fn exact_score(
        &self,
        query: &[f32],
        q_norm: f32,
        row: usize,
        buf: &mut [f32],
    ) -> Option<f32> {
        let d = self.shape.quantizer.dim();
        let x: &[f32] = match self.cols.vectors {
            VectorsRef::None => return None,
            VectorsRef::F32(v) => &v[row * d..(row + 1) * d],
            VectorsRef::F16(v) => {
                for (b, h) in buf.iter_mut().zip(&v[row * d..(row + 1) * d]) {
                    *b = h.to_f32();
                }
                buf
            }
        };
        Some(match self.shape.metric {
            Metric::Dot => dot_f32(query, x),
            Metric::L2 => squared_l2_f32(query, x),
            Metric::Cosine => {
                // An f32 copy is the vector itself, whose norm the encoder stored (the same
                // f64 sum, rounded the same way); an f16 copy's norm is its own.
                let n = match self.cols.vectors {
                    VectorsRef::F32(_) => self.cols.scalars[row].norm,
                    _ => squared_norm_f64(x).sqrt() as f32,
                };
                dot_f32(query, x) / (q_norm * n)
            }
        })
    }

    /// True when rows carry full-precision copies.
    pub fn has_vectors(&self) -> bool {
        !matches!(self.cols.vectors, VectorsRef::None)
    }

    /// The stored vector of `row`, widened to f32 (`None` without rerank storage).
    pub fn vector(&self, row: usize) -> Option<Vec<f32>> {
        let d = self.shape.quantizer.dim();
        match self.cols.vectors {
            VectorsRef::None => None,
            VectorsRef::F32(v) => Some(v[row * d..(row + 1) * d].to_vec()),
            VectorsRef::F16(v) => Some(
                v[row * d..(row + 1) * d]
                    .iter()
                    .map(|h| h.to_f32())
                    .collect(),
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish(
        &self,
        query: &[f32],
        lut: &QueryLut,
        q4: Option<&dot4::Query>,
        k: usize,
        params: &SearchParams,
        candidates: TopK,
        parts: usize,
    ) -> Vec<Neighbor> {
        let metric = self.shape.metric;
        let mut candidates = candidates.into_by_id();
        let mut top = TopK::new(k);
        if params.rescore && self.has_vectors() {
            if let Some(target) = params.target_recall {
                let staged = self.staged(params);
                let with_estimates: Vec<(u64, f32, f32)> = candidates
                    .iter()
                    .map(|&(row, key)| {
                        let r = row as usize;
                        let key = if staged {
                            key
                        } else {
                            metric.to_key(self.refine_estimate(lut, q4, r))
                        };
                        (row, key, self.cols.scalars[r].norm)
                    })
                    .collect();
                candidates = bounded(self.shape, lut.norm(), with_estimates, k, target);
            }
            let d = self.shape.quantizer.dim();
            let q_norm = squared_norm_f64(query).sqrt() as f32;
            // Exact scores of some candidates pushed into `top`, their vectors read first.
            let rerank = |rows: &[(u64, f32)], mut top: TopK, buf: &mut [f32]| {
                let ids = rows.iter().map(|c| c.0 as usize);
                match self.cols.vectors {
                    VectorsRef::F32(v) => self.touch(ids, bytemuck::cast_slice(v), 4 * d),
                    VectorsRef::F16(v) => self.touch(ids, bytemuck::cast_slice(v), 2 * d),
                    VectorsRef::None => {}
                }
                for &(row, _) in rows {
                    let score = self
                        .exact_score(query, q_norm, row as usize, buf)
                        .unwrap_or(f32::NAN);
                    top.push(row, metric.to_key(score));
                }
                top
            };
            if parts >= 2 && candidates.len() >= SPLIT_RERANK_MIN {
                // A split query reranks on its threads too, as it refines (the same answer:
                // exact scores, one total order).
                let tops = claim_slices(
                    parts,
                    &candidates,
                    || (TopK::new(k), vec![0.0f32; d]),
                    |(top, mut buf), part| (rerank(part, top, &mut buf), buf),
                );
                for (t, _) in tops {
                    top.merge(t);
                }
            } else {
                let mut buf = vec![0.0f32; d];
                top = rerank(&candidates, top, &mut buf);
            }
        } else {
            // Stage 2: the exact code-domain estimate of each candidate (a staged search's
            // `refine` already ranked its candidates by exactly that).
            let exact_keys = self.staged(params);
            if !exact_keys {
                let rows = candidates.iter().map(|c| c.0 as usize);
                self.touch(rows, self.cols.codes, self.shape.quantizer.code_bytes());
            }
            for (row, key) in candidates {
                let key = if exact_keys {
                    key
                } else {
                    metric.to_key(self.refine_estimate(lut, q4, row as usize))
                };
                top.push(row, key);
            }
        }
        top.into_sorted()
            .into_iter()
            .map(|(row, key)| Neighbor {
                id: self.cols.ids[row as usize],
                score: metric.to_key(key),
            })
            .collect()
    }

    /// The `min(k, live)` best matches for one checked query; the scan is split across threads.
    pub fn search_masked(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        masks: &[u32],
    ) -> Result<Vec<Neighbor>> {
        if self.cols.graph.is_none() {
            wake_for_split(self.cols.rows());
        }
        let prep = self.shape.prepare(query, params)?;
        Ok(self.search_prepared(query, &prep, 0, k, params, masks, true))
    }

    /// [`search_masked`](Self::search_masked) for query `qi` of `prep` (prepared once for all
    /// the sources a collection searches).
    ///
    /// `split`: spread the scan's row chunks over the thread pool (the lowest latency on an
    /// idle machine), or scan them on this thread (the most throughput when many queries run
    /// at once: a split then costs hand-offs and gains nothing).
    #[allow(clippy::too_many_arguments)]
    pub fn search_prepared(
        &self,
        query: &[f32],
        prep: &Prepared,
        qi: usize,
        k: usize,
        params: &SearchParams,
        masks: &[u32],
        split: bool,
    ) -> Vec<Neighbor> {
        if let Some(graph) = self.cols.graph
            && let Some(hits) = self.search_graph(&graph, query, prep, qi, k, params, masks)
        {
            return hits;
        }
        let keep = k.saturating_mul(params.oversample);
        let n = self.cols.rows();
        let luts = &prep.luts[qi..qi + 1];
        let tables = if self.staged(params) {
            prep.tables(qi..qi + 1)
        } else {
            prep.tables_full(qi..qi + 1)
        };
        let (top, parts) = if split {
            // The rows go in chunks of whole blocks to threads that claim them in turn, each
            // thread with one heap whose threshold rises over every chunk it scans. The calling
            // thread is one of them: called from outside the pool (a library caller's thread),
            // a parallel iterator would hand the whole search to the pool and sleep until it
            // ends. Claiming instead of one fixed part per thread lets the calling thread go on
            // while a sleeping worker wakes (about 40 µs here, a sixth of a query at d = 768).
            let parts = split_parts(n);
            // One thread scans its rows in one call.
            let chunk = if parts == 1 {
                n.max(1)
            } else {
                n.div_ceil(parts * CLAIMS_PER_THREAD)
                    .next_multiple_of(BLOCK)
                    .max(ROW_CHUNK / 2)
            };
            let size = self.scan_size(keep, params);
            let tops = claim(
                parts,
                n.div_ceil(chunk),
                || TopK::new(size),
                |top, c| {
                    let rows = c * chunk..((c + 1) * chunk).min(n);
                    self.scan(luts, tables, rows, keep, masks, params, Some((top, 0)))
                        .pop()
                        .unwrap_or_else(|| TopK::new(0))
                },
            );
            let mut top = TopK::new(size);
            for t in tops {
                top.merge(t);
            }
            (top, parts)
        } else {
            // One pass, one heap: its threshold keeps rising over the whole source, so far
            // fewer candidates reach it than with a fresh heap per chunk.
            let top = self
                .scan(luts, tables, 0..n, keep, masks, params, None)
                .pop()
                .unwrap_or_else(|| TopK::new(0));
            (top, 1)
        };
        let top = self.refine(&luts[0], prep.dot4_query(qi), top, keep, params, parts);
        self.finish(query, &luts[0], prep.dot4_query(qi), k, params, top, parts)
    }

    /// The best of `rows` (few rows a filter let through, in increasing order) for query `qi`
    /// of `prep`: each row is scored directly by the stage-2 estimate, the way a scan's
    /// candidates are, instead of scanning the blocks they lie in; then rescored as `finish`
    /// does. Never less accurate than the scan: every allowed row gets the fine estimate.
    #[allow(clippy::too_many_arguments)]
    pub fn search_rows(
        &self,
        query: &[f32],
        prep: &Prepared,
        qi: usize,
        k: usize,
        params: &SearchParams,
        rows: &[u32],
    ) -> Vec<Neighbor> {
        let keep = k.saturating_mul(params.oversample).max(k);
        let lut = &prep.luts[qi];
        let q4 = prep.dot4_query(qi);
        let metric = self.shape.metric;
        self.touch(
            rows.iter().map(|&r| r as usize),
            self.cols.codes,
            self.shape.quantizer.code_bytes(),
        );
        let mut top = TopK::new(keep);
        for &r in rows {
            top.push(
                u64::from(r),
                metric.to_key(self.refine_estimate(lut, q4, r as usize)),
            );
        }
        // The keys are the stage-2 estimates already: `finish` keeps them as a staged
        // search's refined keys are kept.
        let mut params = *params;
        params.staged = self.shape.plane.is_some();
        self.finish(query, lut, q4, k, &params, top, 1)
    }

    /// [`search_masked`](Self::search_masked) for every row of checked `queries`, in parallel
    /// over groups of queries that share each pass over the codes.
    pub fn search_batch_masked(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        masks: &[u32],
    ) -> Result<Vec<Vec<Neighbor>>> {
        let prep = self.shape.prepare(queries, params)?;
        Ok(self.search_batch_prepared(queries, &prep, k, params, masks, &Cancel::default()))
    }

    /// [`search_batch_masked`](Self::search_batch_masked) with the queries prepared. Once
    /// `cancel` trips, the groups not yet started are skipped (their lists left empty): the
    /// caller checks `cancel` and discards the result.
    pub fn search_batch_prepared(
        &self,
        queries: &[f32],
        prep: &Prepared,
        k: usize,
        params: &SearchParams,
        masks: &[u32],
        cancel: &Cancel,
    ) -> Vec<Vec<Neighbor>> {
        let d = self.shape.quantizer.dim();
        if self.cols.graph.is_some() {
            // A graph search touches a few hundred rows: one task per query, nothing shared.
            return queries
                .par_chunks(d)
                .enumerate()
                .map(|(qi, q)| {
                    if cancel.is_cancelled() {
                        return Vec::new();
                    }
                    self.search_prepared(q, prep, qi, k, params, masks, false)
                })
                .collect();
        }
        let keep = k.saturating_mul(params.oversample);
        let size = QUERY_GROUP;
        let groups = queries
            .par_chunks(d * size)
            .enumerate()
            .map(|(g, group)| {
                let range = g * size..g * size + group.len() / d;
                if cancel.is_cancelled() {
                    return vec![Vec::new(); range.len()];
                }
                let luts = &prep.luts[range.clone()];
                let tables = if self.staged(params) {
                    prep.tables(range)
                } else {
                    prep.tables_full(range)
                };
                let tops = self.scan(luts, tables, 0..self.cols.rows(), keep, masks, params, None);
                group
                    .chunks_exact(d)
                    .zip(luts)
                    .zip(tops)
                    .enumerate()
                    .map(|(i, ((q, lut), top))| {
                        let q4 = prep.dot4_query(g * size + i);
                        let top = self.refine(lut, q4, top, keep, params, 1);
                        self.finish(q, lut, q4, k, params, top, 1)
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        groups.into_iter().flatten().collect()
    }

    /// Brute force on the stored vectors: the exact `min(k, live)` best rows (needs rerank
    /// storage; callers check). Once `cancel` trips, row chunks not yet started are skipped
    /// (the caller checks `cancel` and discards the result).
    pub fn exact_search(
        &self,
        query: &[f32],
        k: usize,
        masks: &[u32],
        cancel: &Cancel,
        split: bool,
    ) -> Vec<Neighbor> {
        let metric = self.shape.metric;
        let q_norm = squared_norm_f64(query).sqrt() as f32;
        let n = self.cols.rows();
        let top = (0..n.div_ceil(ROW_CHUNK))
            .into_par_iter()
            .with_min_len(if split { 1 } else { usize::MAX })
            .map(|c| {
                let mut top = TopK::new(k);
                if cancel.is_cancelled() {
                    return top;
                }
                let mut buf = vec![0.0f32; self.shape.quantizer.dim()];
                for row in c * ROW_CHUNK..((c + 1) * ROW_CHUNK).min(n) {
                    if masks[row / BLOCK] >> (row % BLOCK) & 1 == 1
                        && let Some(s) = self.exact_score(query, q_norm, row, &mut buf)
                    {
                        top.push(row as u64, metric.to_key(s));
                    }
                }
                top
            })
            .reduce(
                || TopK::new(k),
                |mut a, b| {
                    a.merge(b);
                    a
                },
            );
        top.into_sorted()
            .into_iter()
            .map(|(row, key)| Neighbor {
                id: self.cols.ids[row as usize],
                score: metric.to_key(key),
            })
            .collect()
    }
}

/// Φ⁻¹(p), the standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The candidates worth reranking for `target` recall: `(row, key, norm)` with `key` the
/// metric key of the code-domain estimate. The estimate of a unit-norm inner product errs with
/// standard deviation `σ = √(D_mse/d)` (the rotation spreads the quantization error evenly over
/// directions); a candidate is kept when its key plus `z·σ` (scaled by the norms for dot and
/// L2) still reaches the k-th best of the keys minus their margins, `z = Φ⁻¹(target)`. At least
/// `k` stay (all of them when the code has no codebook).
pub(crate) fn bounded(
    shape: &Shape,
    q_norm: f32,
    candidates: Vec<(u64, f32, f32)>,
    k: usize,
    target: f32,
) -> Vec<(u64, f32)> {
    let Some(cb) = shape.quantizer.codebook() else {
        return candidates.into_iter().map(|(r, key, _)| (r, key)).collect();
    };
    let sigma = (cb.expected_mse() / shape.quantizer.dim() as f64).sqrt();
    let z = if target >= 1.0 {
        6.0
    } else {
        normal_quantile(f64::from(target))
    }
    .max(0.0);
    let margin = |norm: f32| -> f32 {
        let unit = (z * sigma) as f32;
        match shape.metric {
            Metric::Cosine => unit,
            Metric::Dot => unit * q_norm * norm,
            Metric::L2 => 2.0 * unit * q_norm * norm,
        }
    };
    if candidates.len() <= k {
        return candidates.into_iter().map(|(r, key, _)| (r, key)).collect();
    }
    let mut lows: Vec<f32> = candidates
        .iter()
        .map(|&(_, key, n)| key - margin(n))
        .collect();
    let (_, kth, _) = lows.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let floor = *kth;
    candidates
        .into_iter()
        .filter(|&(_, key, n)| key + margin(n) >= floor)
        .map(|(r, key, _)| (r, key))
        .collect()
}

/// Chunks each thread of a split single-query search claims, on average: enough that a
/// thread that starts late (a worker waking up) or runs slower leaves little for the others
/// to wait on at the end.
const CLAIMS_PER_THREAD: usize = 8;

/// Wakes a sleeping worker of the pool when a single query over `rows` rows will be split
/// across threads, so that it is awake by the time the query's chunks are offered: a split
/// search calls this before it prepares the query (about 14 µs at d = 768), where a worker
/// woken by the chunks themselves starts 30–40 µs after the calling thread. Measured with the
/// recall runner on random768, staged shortlist 16, single queries on 2 threads, 5 interleaved
/// pairs: median 4,697 → 5,092 QPS (faster in every pair). The no-op job costs nothing where
/// the workers are busy. (A collection passes its live points, which may wake a worker that
/// no single source then needs: a spurious no-op job, nothing more.)
pub(crate) fn wake_for_split(rows: usize) {
    if split_parts(rows) > 1 {
        rayon::spawn(|| {});
    }
}

/// Threads a split single query over `rows` rows runs on (at least one).
fn split_parts(rows: usize) -> usize {
    rows.div_ceil(ROW_CHUNK)
        .min(rayon::current_num_threads())
        .max(1)
}

/// Runs `step` over chunk indices `0..chunks` on `threads` threads, the calling thread one of
/// them (see `search_prepared`); each thread claims the next unclaimed chunk until none is
/// left, folding its chunks into one state that starts at `init()`. Returns the states.
fn claim<T: Send>(
    threads: usize,
    chunks: usize,
    init: impl Fn() -> T + Sync,
    step: impl Fn(T, usize) -> T + Sync,
) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let run = || {
        let mut state = init();
        loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= chunks {
                return state;
            }
            state = step(state, c);
        }
    };
    let mut states: Vec<Option<T>> = (0..threads.max(1)).map(|_| None).collect();
    let (first, rest) = states.split_first_mut().expect("at least one thread");
    rayon::in_place_scope(|s| {
        for slot in rest {
            let run = &run;
            s.spawn(move |_| *slot = Some(run()));
        }
        *first = Some(run());
    });
    states.into_iter().flatten().collect()
}

/// [`claim`] over the items of a slice, in chunks of about `1 / CLAIMS_PER_THREAD` of a
/// thread's share: `step` folds one chunk of items into a thread's state.
fn claim_slices<I: Sync, T: Send>(
    threads: usize,
    items: &[I],
    init: impl Fn() -> T + Sync,
    step: impl Fn(T, &[I]) -> T + Sync,
) -> Vec<T> {
    let chunk = items
        .len()
        .div_ceil(threads.max(1) * CLAIMS_PER_THREAD)
        .max(1);
    claim(threads, items.len().div_ceil(chunk), init, |state, c| {
        step(state, &items[c * chunk..((c + 1) * chunk).min(items.len())])
    })
}

/// A heap as a kernel's sink: rows offered relative to a chunk's first row, `base`.
struct Candidates {
    top: TopK,
    base: u64,
}

impl Candidates {
    /// One heap per query, or the one a seed continues, and the id base of the source.
    fn start(seed: Option<(TopK, u64)>, queries: usize, keep: usize) -> (Vec<Candidates>, u64) {
        match seed {
            Some((top, base)) => (vec![Candidates { top, base: 0 }], base),
            None => (
                (0..queries)
                    .map(|_| Candidates {
                        top: TopK::new(keep),
                        base: 0,
                    })
                    .collect(),
                0,
            ),
        }
    }
}

impl dot4::Sink for Candidates {
    #[inline]
    fn bound(&self) -> f32 {
        self.top.threshold().unwrap_or(f32::MIN)
    }
    #[inline]
    fn offer(&mut self, row: usize, key: f32) {
        self.top.push(self.base + row as u64, key);
    }
}

/// [`View::params_for`] for a source of `rows` rows.
fn params_for_rows(params: &SearchParams, k: usize, rows: usize) -> SearchParams {
    let shortlist = k
        .saturating_mul(params.oversample)
        .saturating_mul(params.shortlist.max(1));
    let mut p = *params;
    if rows < STAGED_ROWS_PER_CANDIDATE.saturating_mul(shortlist) {
        p.staged = false;
    }
    p
}

/// One query over several sources of one shape (a memtable's chunks) as if they were one
/// source: one shortlist, one refinement and one rescoring across all of them, instead of a
/// shortlist, refinement and rescoring per 4096-row chunk. The staged search is chosen by their
/// rows together. Candidates carry `(source, row)` until the end; the result breaks ties by
/// id, as every search does.
pub(crate) fn search_group(
    views: &[(View<'_>, &[u32])],
    query: &[f32],
    prep: &Prepared,
    k: usize,
    params: &SearchParams,
) -> Vec<Neighbor> {
    let Some((first, _)) = views.first() else {
        return Vec::new();
    };
    let metric = first.shape.metric;
    let rows: usize = views.iter().map(|(v, _)| v.cols.rows()).sum();
    let params = params_for_rows(params, k, rows);
    let keep = k.saturating_mul(params.oversample);
    let staged = first.staged(&params);
    let luts = &prep.luts[0..1];
    let tables = if staged {
        prep.tables(0..1)
    } else {
        prep.tables_full(0..1)
    };
    let at = |c: u64| ((c >> 32) as usize, (c & u64::from(u32::MAX)) as usize);
    // One heap through every source: its threshold carries from chunk to chunk.
    let mut top = TopK::new(first.scan_size(keep, &params));
    for (vi, (v, masks)) in views.iter().enumerate() {
        let seed = Some((top, (vi as u64) << 32));
        top = v
            .scan(luts, tables, 0..v.cols.rows(), keep, masks, &params, seed)
            .pop()
            .unwrap_or_else(|| TopK::new(0));
    }
    if staged {
        let mut refined = TopK::new(keep);
        for (c, _) in top.into_by_id() {
            let (vi, row) = at(c);
            let est = views[vi]
                .0
                .refine_estimate(&luts[0], prep.dot4_query(0), row);
            refined.push(c, metric.to_key(est));
        }
        top = refined;
    }
    let q_norm = squared_norm_f64(query).sqrt() as f32;
    let mut buf = vec![0.0f32; first.shape.quantizer.dim()];
    let mut out = TopK::new(k);
    let mut candidates = top.into_by_id();
    if let (true, Some(target)) = (params.rescore && first.has_vectors(), params.target_recall) {
        let with_estimates = candidates
            .iter()
            .map(|&(c, key)| {
                let (vi, row) = at(c);
                let v = &views[vi].0;
                let key = if staged {
                    key
                } else {
                    metric.to_key(v.refine_estimate(&luts[0], prep.dot4_query(0), row))
                };
                (c, key, v.cols.scalars[row].norm)
            })
            .collect();
        candidates = bounded(first.shape, luts[0].norm(), with_estimates, k, target);
    }
    for (c, key) in candidates {
        let (vi, row) = at(c);
        let v = &views[vi].0;
        let key = if params.rescore && v.has_vectors() {
            let score = v.exact_score(query, q_norm, row, &mut buf);
            metric.to_key(score.unwrap_or(f32::NAN))
        } else if staged {
            key
        } else {
            metric.to_key(v.refine_estimate(&luts[0], prep.dot4_query(0), row))
        };
        out.push(v.cols.ids[row], key);
    }
    out.into_sorted()
        .into_iter()
        .map(|(id, key)| Neighbor {
            id,
            score: metric.to_key(key),
        })
        .collect()
}

/// Merges per-source result lists (each best first) into the `k` best overall; ties go to the
/// smaller id, as within a source.
pub(crate) fn merge_results(metric: Metric, k: usize, lists: &[Vec<Neighbor>]) -> Vec<Neighbor> {
    let mut top = TopK::new(k);
    for list in lists {
        for n in list {
            top.push(n.id, metric.to_key(n.score));
        }
    }
    top.into_sorted()
        .into_iter()
        .map(|(id, key)| Neighbor {
            id,
            score: metric.to_key(key),
        })
        .collect()
}

/// The sign-plane code of one packed 4-bit code and its plane key factor: the norm over
/// `<ĉ, ĉ₁>` (the full reconstruction against its sign reconstruction, which stands in for
/// `<y, ĉ₁>`), adjusted for the metric as `key_factor` is. `scratch` holds `dim` bytes twice.
pub(crate) fn plane_row(
    shape: &Shape,
    code: CodeRef<'_>,
    codes: &mut [u8],
    signs: &mut [u8],
    packed: &mut [u8],
) -> f32 {
    use crate::quantizer::packing;
    let quantizer = &shape.quantizer;
    let cb = quantizer
        .codebook()
        .expect("codes with a sign plane have a codebook");
    let bits = cb.bits();
    let centroids = cb.centroids_f32();
    let c1 = shape
        .plane
        .as_ref()
        .expect("a shape with a plane")
        .1
        .centroids_f32()[1];
    packing::unpack(code.codes, bits, codes);
    let mut abs_sum = 0.0f32;
    for (s, &c) in signs.iter_mut().zip(codes.iter()) {
        *s = c >> (bits - 1);
        abs_sum += centroids[usize::from(c)].abs();
    }
    packing::pack(signs, 1, packed);
    let sc = code.scalars;
    let scale = if abs_sum > 0.0 {
        sc.norm / (c1 * abs_sum)
    } else {
        sc.scale
    };
    match shape.metric {
        Metric::Dot => scale,
        Metric::Cosine => scale / sc.norm,
        Metric::L2 => 2.0 * scale,
    }
}
