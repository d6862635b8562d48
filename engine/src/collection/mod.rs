//! Collections on disk: a WAL, a memtable, mmapped immutable segments, deletions, compaction.
//!
//! The rooms, each owning one concern:
//! * this module: the [`Collection`] handle and its public API (writes, searches, reads, info);
//! * [`types`](self::types): the API's plain types; [`config`](self::config): the collection's
//!   configuration file;
//! * `commit`: the group-commit queue and the periodic WAL sync;
//! * `snapshot`: the state searches read (memtable, sealing memtable, live segments with their
//!   [`LiveMask`](crate::search::LiveMask)s), applying a write to it, the source walk;
//! * `seal`: freezing the memtable and installing its segment; `compaction` and
//!   `merge_policy`: merging segments; `publish`: the one manifest edit and the garbage
//!   collection of files; `recovery`: create, open, sweep, WAL replay;
//! * [`manifest`]: the MANIFEST and deletion-bitmap files; [`Database`]: a data directory of
//!   collections.
//!
//! Every file is reached through a [`Directory`](crate::directory::Directory).
//!
//! Invariants:
//! * A write is acknowledged only after its WAL record is written (and fsynced, by default);
//!   it is applied to the memtable after that, in WAL order, so replay rebuilds the same state.
//! * Readers take a consistent snapshot: the memtable is searched under a read lock, and the
//!   segment set (with its deletion masks) is an `Arc` cloned under the same lock. Writers hold
//!   the write lock only to append already-encoded rows; I/O happens outside it.
//! * The manifest names the live segments, their deletion bitmaps and the first WAL file to
//!   replay; WAL files are removed only after a manifest that covers them is durable.
//! * A segment file is removed only when it has left the manifest and the last snapshot using it
//!   is gone; files that no manifest names (a crash mid-flush) are removed on open.

mod backup;
mod commit;
mod compaction;
mod config;
mod database;
pub mod manifest;
mod memtable;
mod merge_policy;
mod publish;
mod recovery;
mod schema;
mod seal;
mod snapshot;
mod types;

pub use backup::{
    SnapshotFile, SnapshotInfo, copy_verified, copy_with_crc, immutable as immutable_file,
};
pub use config::{CollectionConfig, DEFAULT_INDEX_MIN_ROWS, Durability, SegmentIndex};
pub use database::{Database, check_name};
pub use types::{
    CollectionInfo, Point, Recovery, ScrollPage, ScrollRequest, SearchOptions, SearchOutput,
    SegmentInfo,
};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use crate::directory::{Directory, LockGuard};
use crate::error::{Error, Result};
use crate::payload::{FieldSpec, FieldType, Filter, FilterStats, Payload, PayloadRows, Schema};
use crate::search::flat::encode_rows;
use crate::search::view::{Shape, merge_results, search_group};
use crate::search::{Neighbor, RerankStorage};
use crate::wal;
use commit::{Queue, Writer};
use publish::Garbage;
use snapshot::{Op, Restrict, State, walk_grouped, walk_matched, walk_sources};

#[derive(Debug)]
struct Inner {
    /// Unique among the collections this process opened (see [`Collection::instance`]).
    instance: u64,
    name: String,
    dir: Arc<dyn Directory>,
    /// The directory's path, for messages.
    path: PathBuf,
    config: CollectionConfig,
    shape: Shape,
    state: RwLock<State>,
    /// Payload fields: types and indexes (`schema.json`).
    schema: RwLock<Schema>,
    writer: Mutex<Writer>,
    queue: Queue,
    queue_cv: Condvar,
    compacting: Mutex<()>,
    recovery: Recovery,
    /// A background compaction thread.
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Files out of the manifest, deleted once nothing uses them.
    garbage: Mutex<Vec<Garbage>>,
    /// The data directory's lock, held while any handle to the collection lives.
    _lock: Option<Arc<dyn LockGuard>>,
}

/// A handle to an open collection; clones share it.
#[derive(Debug, Clone)]
pub struct Collection {
    inner: Arc<Inner>,
}

/// A poisoned lock: a thread panicked while holding it, so the state behind it may be half
/// changed. An invariant break, not the caller's fault.
fn poisoned<T>(_: T) -> Error {
    Error::internal("an earlier panic left the collection's state unusable; reopen it")
}

impl Inner {
    /// A copy of the payload schema.
    fn schema(&self) -> Result<Schema> {
        Ok(self.schema.read().map_err(poisoned)?.clone())
    }
}

/// Rows are scored one by one instead of scanning their blocks when a restricted source's
/// allowed rows are at most 1 / ratio of the rows in the blocks a scan would read: scoring a
/// row directly costs about `ratio` rows of block scan. A batch shares each block load among
/// its queries, so its scan is cheaper per row and its ratio higher. Measured with
/// `gyre-bench recall --filter-selectivity 0.1,0.05,0.02 --staged 0 --mode batch,single`
/// (docs-minilm, 4 bits, ratios 1, 4, 16, 64 tried): 16 for batches, 4 for single queries.
const DIRECT_RATIO_BATCH: usize = 16;
const DIRECT_RATIO_SINGLE: usize = 4;

/// The allowed rows of `masks` when scoring them directly beats scanning their blocks, or,
/// for a source with a graph, beats walking it: a filtered graph search scores about
/// `ef · R` rows per accepted fraction, `ef · R · rows / allowed`, so rows are scored directly
/// while `allowed ≤ √(ef · R · rows)` (a cost model; the graph falls back to a scan when it
/// reaches fewer than k allowed rows).
fn direct_rows(
    view: &crate::search::view::View<'_>,
    masks: &[u32],
    ratio: usize,
    params: &crate::search::SearchParams,
    k: usize,
) -> Option<Vec<u32>> {
    let (mut allowed, mut blocks) = (0usize, 0usize);
    for &w in masks {
        allowed += w.count_ones() as usize;
        blocks += usize::from(w != 0);
    }
    match view.cols.graph {
        Some(g) => {
            let walk = crate::search::graph_effort(params, k)
                .saturating_mul(g.degree)
                .saturating_mul(view.cols.rows());
            if (allowed as u128) * (allowed as u128) > walk as u128 {
                return None;
            }
        }
        None => {
            if allowed.saturating_mul(ratio) > blocks * crate::quantizer::layout::BLOCK {
                return None;
            }
        }
    }
    let mut rows = Vec::with_capacity(allowed);
    for (b, &w) in masks.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            rows.push((b * 32) as u32 + w.trailing_zeros());
            w &= w - 1;
        }
    }
    Some(rows)
}

impl Collection {
    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The collection's configuration.
    pub fn config(&self) -> &CollectionConfig {
        &self.inner.config
    }

    /// What opening replayed from the WAL.
    pub fn recovery(&self) -> Recovery {
        self.inner.recovery
    }

    /// The collection's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.path
    }

    /// Inserts or replaces points (`ids.len()` rows of `dim` values, row-major). Returns once
    /// the write is durable (see [`Durability`]) and visible to searches. All rows are checked
    /// first: on error nothing is written. When an id repeats within the batch, the last row
    /// wins. A replaced point loses its payload (see
    /// [`upsert_with_payloads`](Self::upsert_with_payloads)).
    pub fn upsert(&self, ids: &[u64], rows: &[f32]) -> Result<()> {
        self.upsert_with_payloads(ids, rows, &[])
    }

    /// [`upsert`](Self::upsert) with one payload per id (`payloads` empty: none). A point's
    /// payload is replaced whole by an upsert; an empty payload stores none. A field's type is
    /// fixed by its first use: a value of another type is refused naming the field.
    pub fn upsert_with_payloads(
        &self,
        ids: &[u64],
        rows: &[f32],
        payloads: &[Payload],
    ) -> Result<()> {
        self.check_payloads(ids, payloads)?;
        let parts = encode_rows(&self.inner.shape, ids, rows)?;
        let encoded = payloads
            .iter()
            .any(|p| !p.is_empty())
            .then(|| PayloadRows::encode(payloads));
        if encoded.is_some() {
            self.learn_fields(payloads)?;
        }
        let body = wal::upsert_body(ids, rows, encoded.as_ref());
        self.submit(
            Op::Upsert {
                ids: ids.to_vec(),
                rows: rows.to_vec(),
                parts,
                payloads: encoded,
            },
            body,
        )
        .map(|_| ())
    }

    fn check_payloads(&self, ids: &[u64], payloads: &[Payload]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::invalid_argument("ids", "the batch is empty"));
        }
        if !payloads.is_empty() && payloads.len() != ids.len() {
            return Err(Error::invalid_argument(
                "payloads",
                format!("{} payloads for {} ids", payloads.len(), ids.len()),
            ));
        }
        let schema = self.inner.schema.read().map_err(poisoned)?;
        for p in payloads {
            p.validate()?;
            schema.check(p)?;
        }
        Ok(())
    }

    /// Fixes the types of the batch's new fields in the schema file before the batch reaches
    /// the WAL (so the file never lags the data). Conflicts within the batch are refused.
    fn learn_fields(&self, payloads: &[Payload]) -> Result<()> {
        let fresh = {
            let schema = self.inner.schema.read().map_err(poisoned)?;
            payloads
                .iter()
                .any(|p| p.0.keys().any(|f| schema.get(f).is_none()))
        };
        if !fresh {
            return Ok(());
        }
        let mut schema = self.inner.schema.write().map_err(poisoned)?;
        let mut next = schema.clone();
        for p in payloads {
            next.check(p)?;
            next.learn(p);
        }
        if next != *schema {
            schema::store(&*self.inner.dir, &next)?;
            *schema = next;
        }
        Ok(())
    }

    /// Checks a batch as [`upsert`](Self::upsert) would (ids, dimension, finite values, norms)
    /// without writing it: a batch that passes is refused later only by an I/O failure.
    pub fn check_upsert(&self, ids: &[u64], rows: &[f32]) -> Result<()> {
        self.check_upsert_with_payloads(ids, rows, &[])
    }

    /// [`check_upsert`](Self::check_upsert) with payloads (their names, values and types).
    pub fn check_upsert_with_payloads(
        &self,
        ids: &[u64],
        rows: &[f32],
        payloads: &[Payload],
    ) -> Result<()> {
        self.check_payloads(ids, payloads)?;
        crate::search::flat::check_batch(&self.inner.shape, ids, rows)
    }

    /// The payload schema: each field's type and whether it is indexed.
    pub fn schema(&self) -> Result<Schema> {
        self.inner.schema()
    }

    /// Declares `field` as indexed (with its type; a field in use keeps its type): every
    /// segment builds its index now, and segments written later build it as they appear.
    pub fn create_field_index(&self, field: &str, kind: FieldType) -> Result<()> {
        crate::payload::check_name(field)?;
        let schema = {
            let mut schema = self.inner.schema.write().map_err(poisoned)?;
            if let Some(spec) = schema.get(field)
                && spec.kind != kind
            {
                return Err(Error::field(
                    field,
                    format!(
                        "holds {} values: it cannot be indexed as {}",
                        spec.kind.name(),
                        kind.name()
                    ),
                ));
            }
            let mut next = schema.clone();
            next.fields.insert(
                field.to_string(),
                FieldSpec {
                    kind,
                    indexed: true,
                },
            );
            if next != *schema {
                schema::store(&*self.inner.dir, &next)?;
                *schema = next;
            }
            schema.clone()
        };
        let segments = self.inner.state.read().map_err(poisoned)?.segments.clone();
        for s in segments.iter() {
            s.seg.ensure_indexes(&schema);
        }
        Ok(())
    }

    /// `filter` checked against the schema, and that schema (`None` for no filter or an
    /// empty one).
    fn check_filter(&self, filter: Option<&Filter>) -> Result<Option<(Filter, Schema)>> {
        match filter {
            Some(f) if !f.is_empty() => {
                let schema = self.inner.schema.read().map_err(poisoned)?;
                Ok(Some((f.check(&schema)?, schema.clone())))
            }
            _ => Ok(None),
        }
    }

    /// Deletes points; unknown ids are ignored. Returns how many live points were deleted.
    pub fn delete(&self, ids: &[u64]) -> Result<usize> {
        if ids.is_empty() {
            return Err(Error::invalid_argument("ids", "the batch is empty"));
        }
        let body = wal::delete_body(ids);
        self.submit(Op::Delete { ids: ids.to_vec() }, body)
    }

    /// Waits for background work (a seal in flight, a compaction) and syncs the WAL. Called
    /// when the [`Database`] is dropped; safe to call any time.
    pub fn close(&self) -> Result<()> {
        let sealed = self
            .inner
            .writer
            .lock()
            .map_err(poisoned)
            .and_then(|mut writer| {
                let sealed = self.finish_seal(&mut writer, true);
                writer.wal.heal()?;
                if writer.wal.unsynced() {
                    writer.wal.sync()?;
                }
                sealed
            });
        // Whatever failed above: installing the seal may have started a merge, which must end
        // before the directory's lock is let go.
        let handle = self.inner.background.lock().map_err(poisoned)?.take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        publish::collect_garbage(&self.inner);
        sealed
    }

    fn check_search(&self, opts: &SearchOptions) -> Result<()> {
        if opts.exact && self.inner.config.rerank == RerankStorage::None {
            return Err(Error::invalid_argument(
                "exact",
                "exact search needs stored vectors: create the collection with rerank f16 or f32",
            ));
        }
        Ok(())
    }

    /// The `min(k, live)` best points for `query` (among those `opts.allow` and `opts.filter`
    /// let through). Sees every write acknowledged before it started.
    pub fn search(&self, query: &[f32], k: usize, opts: &SearchOptions) -> Result<Vec<Neighbor>> {
        self.search_with_stats(query, k, opts).map(|o| o.hits)
    }

    /// [`search`](Self::search), with what its filter cost.
    pub fn search_with_stats(
        &self,
        query: &[f32],
        k: usize,
        opts: &SearchOptions,
    ) -> Result<SearchOutput> {
        let shape = &self.inner.shape;
        shape.check_one(query, k, &opts.params)?;
        self.check_search(opts)?;
        let filter = self.check_filter(opts.filter.as_ref())?;
        let restrict = Restrict {
            allow: opts.allow.as_ref(),
            filter: filter.as_ref().map(|f| &f.0),
            schema: filter.as_ref().map(|f| &f.1),
        };
        let restricted = restrict.active();
        let split = !opts.sequential;
        if split {
            crate::search::view::wake_for_split(self.len());
        }
        // Rotation and tables once for all sources.
        let prep = if opts.exact {
            None
        } else {
            Some(shape.prepare(query, &opts.params)?)
        };
        let mut stats = FilterStats::default();
        let walk = |stats: &mut FilterStats| {
            walk_grouped(
                &self.inner.state,
                shape,
                &restrict,
                &opts.cancel,
                stats,
                // The memtable's chunks as one source (one shortlist, not one per chunk).
                |views| match &prep {
                    None => {
                        let lists: Vec<Vec<Neighbor>> = views
                            .iter()
                            .map(|(v, m)| v.exact_search(query, k, m, &opts.cancel, split))
                            .collect();
                        merge_results(shape.metric, k, &lists)
                    }
                    Some(p) => search_group(views, query, p, k, &opts.params),
                },
                |view, masks| match &prep {
                    None => view.exact_search(query, k, masks, &opts.cancel, split),
                    Some(p) => {
                        let params = view.params_for(&opts.params, k);
                        if restricted
                            && let Some(rows) =
                                direct_rows(&view, masks, DIRECT_RATIO_SINGLE, &params, k)
                        {
                            return view.search_rows(query, p, 0, k, &params, &rows);
                        }
                        view.search_prepared(query, p, 0, k, &params, masks, split)
                    }
                },
            )
        };
        // The whole walk runs on one pool thread: the scans' parallel parts are that thread's
        // local jobs (taken by idle threads) instead of one hand-off to the pool and back per
        // source. A sequential search too: the pool's threads, one per core, then run the
        // searches in arrival order (measured on 2 cores, 8 clients: p99 5.2 ms, against 7.3 ms
        // with each search on its caller's thread, time-sliced by the OS).
        let lists = rayon::scope(|_| walk(&mut stats))?;
        // A source cut short by the cancellation is incomplete: nothing is returned.
        opts.cancel.check()?;
        Ok(SearchOutput {
            hits: merge_results(shape.metric, k, &lists),
            filter: stats,
        })
    }

    /// [`search`](Self::search) for every row of `queries`.
    pub fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Neighbor>>> {
        self.search_batch_with_stats(queries, k, opts)
            .map(|o| o.into_iter().map(|o| o.hits).collect())
    }

    /// [`search_batch`](Self::search_batch) with a filter per query (`filters` empty: the
    /// options' filter for every query; else one entry per query, `None` for no filter).
    /// Queries with equal filters share each pass over the codes.
    pub fn search_batch_filtered(
        &self,
        queries: &[f32],
        k: usize,
        opts: &SearchOptions,
        filters: &[Option<Filter>],
    ) -> Result<Vec<SearchOutput>> {
        let d = self.inner.config.dim;
        crate::error::check_rows(queries, d, "queries")?;
        let n = queries.len() / d;
        if filters.is_empty() {
            return self.search_batch_with_stats(queries, k, opts);
        }
        if filters.len() != n {
            return Err(Error::invalid_argument(
                "filters",
                format!("{} filters for {n} queries", filters.len()),
            ));
        }
        // Groups of queries with equal filters, in order of first appearance.
        let mut groups: Vec<(&Option<Filter>, Vec<usize>)> = Vec::new();
        for (q, f) in filters.iter().enumerate() {
            match groups.iter_mut().find(|(g, _)| *g == f) {
                Some((_, members)) => members.push(q),
                None => groups.push((f, vec![q])),
            }
        }
        let mut out: Vec<Option<SearchOutput>> = vec![None; n];
        for (f, members) in groups {
            let mut sub = Vec::with_capacity(members.len() * d);
            for &q in &members {
                sub.extend_from_slice(&queries[q * d..(q + 1) * d]);
            }
            let mut o = opts.clone();
            o.filter = f.clone();
            for (q, r) in members
                .into_iter()
                .zip(self.search_batch_with_stats(&sub, k, &o)?)
            {
                out[q] = Some(r);
            }
        }
        Ok(out.into_iter().map(|o| o.unwrap_or_default()).collect())
    }

    fn search_batch_with_stats(
        &self,
        queries: &[f32],
        k: usize,
        opts: &SearchOptions,
    ) -> Result<Vec<SearchOutput>> {
        let shape = &self.inner.shape;
        shape.check_queries(queries, k, &opts.params)?;
        self.check_search(opts)?;
        let filter = self.check_filter(opts.filter.as_ref())?;
        let restrict = Restrict {
            allow: opts.allow.as_ref(),
            filter: filter.as_ref().map(|f| &f.0),
            schema: filter.as_ref().map(|f| &f.1),
        };
        let restricted = restrict.active();
        let d = self.inner.config.dim;
        let prep = if opts.exact {
            None
        } else {
            Some(shape.prepare(queries, &opts.params)?)
        };
        let mut stats = FilterStats::default();
        let mut per_source = rayon::scope(|_| {
            walk_sources(
                &self.inner.state,
                shape,
                &restrict,
                &opts.cancel,
                &mut stats,
                |view, masks| match &prep {
                    None => {
                        use rayon::prelude::*;
                        queries
                            .par_chunks(d)
                            .map(|q| view.exact_search(q, k, masks, &opts.cancel, false))
                            .collect()
                    }
                    Some(p) => {
                        let params = view.params_for(&opts.params, k);
                        if restricted
                            && let Some(rows) =
                                direct_rows(&view, masks, DIRECT_RATIO_BATCH, &params, k)
                        {
                            use rayon::prelude::*;
                            return queries
                                .par_chunks(d)
                                .enumerate()
                                .map(|(qi, q)| view.search_rows(q, p, qi, k, &params, &rows))
                                .collect();
                        }
                        view.search_batch_prepared(queries, p, k, &params, masks, &opts.cancel)
                    }
                },
            )
        })?;
        opts.cancel.check()?;
        Ok((0..queries.len() / d)
            .map(|q| {
                let lists: Vec<Vec<Neighbor>> = per_source
                    .iter_mut()
                    .map(|s: &mut Vec<Vec<Neighbor>>| std::mem::take(&mut s[q]))
                    .collect();
                SearchOutput {
                    hits: merge_results(shape.metric, k, &lists),
                    filter: stats.clone(),
                }
            })
            .collect())
    }

    /// Live points that pass `filter` (all live points for `None`).
    pub fn count(&self, filter: Option<&Filter>) -> Result<u64> {
        let Some((filter, schema)) = self.check_filter(filter)? else {
            return Ok(self.len() as u64);
        };
        let restrict = Restrict {
            allow: None,
            filter: Some(&filter),
            schema: Some(&schema),
        };
        let mut n = 0u64;
        walk_matched(
            &self.inner.state,
            &self.inner.shape,
            &restrict,
            &mut FilterStats::default(),
            |m| n += m.mask.count() as u64,
        )?;
        Ok(n)
    }

    /// Deletes the live points that pass `filter`, evaluated on a snapshot taken when the
    /// call starts; the ids found are deleted in one durable write (a point written after the
    /// snapshot is not touched unless its id was found). Returns how many were deleted. An
    /// empty filter is refused: it would delete everything.
    pub fn delete_by_filter(&self, filter: &Filter) -> Result<usize> {
        let Some((filter, schema)) = self.check_filter(Some(filter))? else {
            return Err(Error::invalid_argument(
                "filter",
                "an empty filter matches every point: pass at least one condition",
            ));
        };
        let restrict = Restrict {
            allow: None,
            filter: Some(&filter),
            schema: Some(&schema),
        };
        let mut ids = Vec::new();
        walk_matched(
            &self.inner.state,
            &self.inner.shape,
            &restrict,
            &mut FilterStats::default(),
            |m| ids.extend(m.mask.iter().map(|r| m.view.cols.ids[r])),
        )?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.delete(&ids)
    }

    /// One page of points in id order: the first `limit` live points with an id greater than
    /// `req.after` that pass `req.filter`. Each page reads a fresh snapshot: a point upserted
    /// meanwhile with a larger id than the cursor appears on a later page, one deleted before
    /// its page is read does not, and no id is returned twice while the cursor advances.
    pub fn scroll(&self, req: &ScrollRequest) -> Result<ScrollPage> {
        if req.limit == 0 {
            return Err(Error::invalid_argument("limit", "must be at least 1"));
        }
        if req.with_vectors && self.inner.config.rerank == RerankStorage::None {
            return Err(Error::invalid_argument(
                "with_vectors",
                "the collection stores no vectors (rerank none)",
            ));
        }
        let filter = self.check_filter(req.filter.as_ref())?;
        let restrict = Restrict {
            allow: None,
            filter: filter.as_ref().map(|f| &f.0),
            schema: filter.as_ref().map(|f| &f.1),
        };
        let limit = req.limit;
        let mut picked: Vec<Point> = Vec::new();
        let point = |m: &snapshot::Matched<'_>, id: u64, row: usize| Point {
            id,
            vector: if req.with_vectors {
                m.view.vector(row)
            } else {
                None
            },
            payload: if req.with_payload {
                m.payloads.decode(row)
            } else {
                None
            },
        };
        walk_matched(
            &self.inner.state,
            &self.inner.shape,
            &restrict,
            &mut FilterStats::default(),
            |m| match m.segment {
                Some(seg) => {
                    // The segment's id index is sorted: read from the cursor on.
                    let rows = seg
                        .ids_after(req.after)
                        .filter(|&(_, r)| m.mask.contains(r))
                        .take(limit + 1);
                    for (id, row) in rows {
                        picked.push(point(&m, id, row));
                    }
                }
                None => {
                    let ids = m.view.cols.ids;
                    let mut rows: Vec<(u64, usize)> = m
                        .mask
                        .iter()
                        .map(|r| (ids[r], r))
                        .filter(|&(id, _)| req.after.is_none_or(|a| id > a))
                        .collect();
                    rows.sort_unstable();
                    for &(id, row) in rows.iter().take(limit + 1) {
                        picked.push(point(&m, id, row));
                    }
                }
            },
        )?;
        picked.sort_unstable_by_key(|p| p.id);
        let more = picked.len() > limit;
        picked.truncate(limit);
        let next = if more {
            picked.last().map(|p| p.id)
        } else {
            None
        };
        Ok(ScrollPage {
            points: picked,
            next,
        })
    }

    /// The stored points with these ids (`None` for ids not present), in order.
    pub fn get(&self, ids: &[u64]) -> Result<Vec<Option<Point>>> {
        let state = self.inner.state.read().map_err(poisoned)?;
        let shape = &self.inner.shape;
        Ok(ids
            .iter()
            .map(|&id| {
                if let Some(at) = state.memtable.row_of(id) {
                    return Some(Point {
                        id,
                        vector: state.memtable.vector(at),
                        payload: state.memtable.payload(at),
                    });
                }
                if let Some(f) = &state.frozen
                    && let Some(at) = f.table.row_of(id)
                {
                    return Some(Point {
                        id,
                        vector: f.table.vector(at),
                        payload: f.table.payload(at),
                    });
                }
                state.segments.iter().find_map(|s| {
                    let row = s.seg.find(id).filter(|&r| s.live.contains(r))?;
                    Some(Point {
                        id,
                        vector: s.view(shape).vector(row),
                        payload: s.seg.payloads().decode(row),
                    })
                })
            })
            .collect())
    }

    /// Number of live points.
    pub fn len(&self) -> usize {
        self.inner.state.read().map_or(0, |s| s.len())
    }

    /// True when no point is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every segment's section checksums and id index.
    pub fn verify(&self) -> Result<()> {
        let segments = self.inner.state.read().map_err(poisoned)?.segments.clone();
        for s in segments.iter() {
            s.seg.verify()?;
        }
        Ok(())
    }

    /// A number that no other collection this process opened has (not even a dropped and
    /// re-created namesake, nor this one reopened): tells one open collection from another.
    pub fn instance(&self) -> u64 {
        self.inner.instance
    }

    /// The generation of the manifest on disk (it grows with every seal, deletion flush and
    /// compaction; replicas publish a new version when it moves).
    pub fn durable_generation(&self) -> Result<u64> {
        let dir = &*self.inner.dir;
        let bytes = dir.read(manifest::FILE)?;
        Ok(manifest::Manifest::decode(&dir.path_of(manifest::FILE), &bytes)?.generation)
    }

    /// Counts and sizes.
    pub fn info(&self) -> Result<CollectionInfo> {
        let (live_mem, rows_mem, segments) = {
            let s = self.inner.state.read().map_err(poisoned)?;
            let (f_live, f_rows) = s
                .frozen
                .as_ref()
                .map_or((0, 0), |f| (f.table.len(), f.table.rows()));
            (
                s.memtable.len() + f_live,
                s.memtable.rows() + f_rows,
                s.segments.clone(),
            )
        };
        let mut disk_bytes = 0;
        for name in self.inner.dir.list()? {
            disk_bytes += self.inner.dir.file_len(&name).unwrap_or(0);
        }
        let seg_infos: Vec<SegmentInfo> = segments
            .iter()
            .map(|s| SegmentInfo {
                id: s.seg.id(),
                rows: s.seg.rows() as u64,
                live: s.live.count() as u64,
                bytes: s.seg.file_bytes(),
                graph_bytes: s.seg.graph_bytes(),
            })
            .collect();
        let live = live_mem as u64 + seg_infos.iter().map(|s| s.live).sum::<u64>();
        let deleted =
            (rows_mem - live_mem) as u64 + seg_infos.iter().map(|s| s.rows - s.live).sum::<u64>();
        let names: Vec<&str> = segments.iter().map(|s| s.seg.file_name()).collect();
        Ok(CollectionInfo {
            name: self.inner.name.clone(),
            config: self.inner.config,
            live,
            deleted,
            memtable_rows: rows_mem as u64,
            segments: seg_infos,
            disk_bytes,
            resident_bytes: self.inner.dir.resident_bytes(&names),
            schema: self.inner.schema()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRng;
    use std::time::{Duration, Instant};

    fn rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::for_data(seed);
        (0..n * d).map(|_| rng.gaussian() as f32).collect()
    }

    /// A writer's upsert completes while a search is in the middle of scanning the memtable:
    /// the scan holds no lock a writer needs. (Before, the writer waited for the scan.)
    #[test]
    fn a_write_completes_while_a_search_scans_the_memtable() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let d = 64;
        let c = db.create_collection("c", CollectionConfig::new(d)).unwrap();
        let ids: Vec<u64> = (0..10_000).collect();
        c.upsert(&ids, &rows(10_000, d, 1)).unwrap();
        let writer = c.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut first = true;
        let shape = c.inner.shape.clone();
        let waited = walk_sources(
            &c.inner.state,
            &shape,
            &Restrict::default(),
            &crate::Cancel::default(),
            &mut FilterStats::default(),
            |_view, _masks| {
                if std::mem::take(&mut first) {
                    // Mid-scan: a write must get through now.
                    let w = writer.clone();
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let t = Instant::now();
                        w.upsert(&[20_000], &rows(1, 64, 2)).unwrap();
                        tx.send(t.elapsed()).unwrap();
                    });
                    return rx.recv_timeout(Duration::from_secs(20)).ok();
                }
                None
            },
        )
        .unwrap();
        let took = waited[0].expect("the upsert did not complete while a search was scanning");
        assert!(c.get(&[20_000]).unwrap()[0].is_some());
        // Informational: one write's latency during the scan.
        let _ = took;
    }

    /// A cancelled search stops at its next check and returns `Cancelled`, never a partial
    /// answer; tripping the handle from another thread cuts a long exact batch short.
    #[test]
    fn a_cancelled_search_stops_and_returns_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let d = 64;
        let mut config = CollectionConfig::new(d);
        config.segment_rows = 5_000;
        let c = db.create_collection("c", config).unwrap();
        let ids: Vec<u64> = (0..20_000).collect();
        c.upsert(&ids, &rows(20_000, d, 1)).unwrap();
        c.flush().unwrap();
        let queries = rows(2_000, d, 2);
        let mut opts = SearchOptions::recommended(c.config());
        opts.exact = true;
        // Tripped before it starts: no work, Cancelled.
        opts.cancel = crate::Cancel::new();
        opts.cancel.cancel();
        assert!(matches!(
            c.search_batch(&queries, 10, &opts),
            Err(Error::Cancelled { .. })
        ));
        assert!(matches!(
            c.search(&queries[..d], 10, &opts),
            Err(Error::Cancelled { .. })
        ));
        // A deadline already past.
        opts.cancel = crate::Cancel::new().with_deadline(Instant::now());
        assert!(matches!(
            c.search_batch(&queries, 10, &opts),
            Err(Error::Cancelled { reason }) if reason.contains("deadline")
        ));
        // Uncancelled, the batch takes a while; cancelled 20 ms in, it stops far sooner.
        opts.cancel = crate::Cancel::default();
        let t = Instant::now();
        let full = c.search_batch(&queries, 10, &opts).unwrap();
        let whole = t.elapsed();
        assert_eq!(full.len(), 2_000);
        opts.cancel = crate::Cancel::new();
        let handle = opts.cancel.clone();
        let t = Instant::now();
        let tripper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            handle.cancel();
        });
        let r = c.search_batch(&queries, 10, &opts);
        let cut = t.elapsed();
        tripper.join().unwrap();
        assert!(
            matches!(r, Err(Error::Cancelled { .. })),
            "{:?}",
            r.map(|v| v.len())
        );
        assert!(
            cut < whole,
            "cancelled after {cut:?}, the whole batch took {whole:?}"
        );
    }

    /// Memtable chunks are too small for the staged search to pay: they are scanned in full,
    /// so a staged search over them answers exactly as the plain scan does.
    #[test]
    fn small_sources_are_scanned_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let d = crate::search::STAGED_MIN_DIM;
        let mut config = CollectionConfig::new(d);
        config.rerank = RerankStorage::None;
        let c = db.create_collection("c", config).unwrap();
        let ids: Vec<u64> = (0..8192).collect();
        c.upsert(&ids, &rows(8192, d, 1)).unwrap();
        let queries = rows(20, d, 2);
        let mut staged = SearchOptions::recommended(c.config());
        staged.params.staged = true;
        staged.params.rescore = false;
        let mut plain = staged.clone();
        plain.params.staged = false;
        for q in queries.chunks_exact(d) {
            assert_eq!(
                c.search(q, 10, &staged).unwrap(),
                c.search(q, 10, &plain).unwrap()
            );
        }
        assert_eq!(
            c.search_batch(&queries, 10, &staged).unwrap(),
            c.search_batch(&queries, 10, &plain).unwrap()
        );
    }

    /// A search scanned on one thread (what a loaded server asks for) answers exactly as one
    /// split over the pool, on a segment large enough for the staged search and on memtable
    /// chunks.
    #[test]
    fn sequential_and_split_searches_agree() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let d = crate::search::STAGED_MIN_DIM;
        let c = db.create_collection("c", CollectionConfig::new(d)).unwrap();
        let ids: Vec<u64> = (0..24_000).collect();
        c.upsert(&ids, &rows(24_000, d, 1)).unwrap();
        c.flush().unwrap();
        c.upsert(&[30_000, 30_001], &rows(2, d, 3)).unwrap();
        let queries = rows(20, d, 2);
        for rescore in [true, false] {
            let mut split = SearchOptions::recommended(c.config());
            split.params.rescore = rescore;
            let mut one = split.clone();
            one.sequential = true;
            for q in queries.chunks_exact(d) {
                assert_eq!(
                    c.search(q, 10, &split).unwrap(),
                    c.search(q, 10, &one).unwrap()
                );
            }
        }
    }
}
