//! Collections on disk: a WAL, a memtable, mmapped immutable segments, deletions, compaction.
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

mod config;
mod database;
pub mod manifest;

pub use config::{CollectionConfig, Durability};
pub use database::Database;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use roaring::{RoaringBitmap, RoaringTreemap};

use crate::error::{Error, Result};
use crate::fsio::{self, IoContext};
use crate::quantizer::layout::BLOCK;
use crate::search::flat::{Encoded, encode_rows};
use crate::search::view::{Shape, View, merge_results};
use crate::search::{FlatIndex, Neighbor, RerankStorage, SearchParams};
use crate::segment::{self, Segment};
use crate::wal::{self, Record, WalWriter};
use manifest::Manifest;

/// Search options of a collection.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// Scan parameters (oversampling, rescore on stored vectors, staged search).
    pub params: SearchParams,
    /// Brute force on the stored vectors instead of the code scan (needs rerank storage).
    pub exact: bool,
    /// Only these ids may be returned.
    pub allow: Option<RoaringTreemap>,
}

impl SearchOptions {
    /// The recommended parameters for `config` (see [`SearchParams::recommended`]).
    pub fn recommended(config: &CollectionConfig) -> Self {
        SearchOptions {
            params: SearchParams::recommended(config.bits, config.rerank),
            ..Default::default()
        }
    }
}

/// A stored point returned by [`Collection::get`].
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The id.
    pub id: u64,
    /// The vector, when the collection keeps full-precision copies (f16 copies are widened).
    pub vector: Option<Vec<f32>>,
}

/// Counts and sizes of a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    /// The collection's name.
    pub name: String,
    /// Its configuration.
    pub config: CollectionConfig,
    /// Live points (one per id).
    pub live: u64,
    /// Rows stored that are deleted or replaced but not yet compacted away.
    pub deleted: u64,
    /// Rows in memory: the memtable and a memtable being sealed (live or replaced).
    pub memtable_rows: u64,
    /// Per segment: id, rows, live rows, file bytes.
    pub segments: Vec<SegmentInfo>,
    /// Bytes of every file in the collection's directory.
    pub disk_bytes: u64,
    /// Bytes of the segment files resident in memory (Linux only; `None` elsewhere).
    pub resident_bytes: Option<u64>,
}

/// One segment in [`CollectionInfo`].
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    /// Segment id.
    pub id: u64,
    /// Rows in the file.
    pub rows: u64,
    /// Live rows.
    pub live: u64,
    /// File size.
    pub bytes: u64,
}

/// A segment as the current state sees it: the file and which of its rows are deleted.
#[derive(Debug)]
struct SegState {
    seg: Arc<Segment>,
    deleted: RoaringBitmap,
    /// Per-block live masks derived from `deleted`.
    live: Vec<u32>,
    live_count: usize,
    /// True when `deleted` has changes the manifest does not have yet.
    dirty: bool,
    /// The deletion file generation the manifest names (0: none).
    del_gen: u64,
    del_crc: u32,
}

impl SegState {
    fn new(seg: Arc<Segment>, deleted: RoaringBitmap, del_gen: u64, del_crc: u32) -> SegState {
        let rows = seg.rows();
        let mut live = vec![u32::MAX; rows.div_ceil(BLOCK)];
        if !rows.is_multiple_of(BLOCK) {
            *live.last_mut().expect("a partial block") = (1u32 << (rows % BLOCK)) - 1;
        }
        for r in deleted.iter() {
            live[r as usize / BLOCK] &= !(1 << (r as usize % BLOCK));
        }
        let live_count = rows - deleted.len() as usize;
        SegState {
            seg,
            deleted,
            live,
            live_count,
            dirty: false,
            del_gen,
            del_crc,
        }
    }

    fn is_live(&self, row: usize) -> bool {
        self.live[row / BLOCK] >> (row % BLOCK) & 1 == 1
    }

    /// A copy with `rows` deleted too.
    fn with_deleted(&self, rows: &[u32]) -> SegState {
        let mut next = SegState {
            seg: self.seg.clone(),
            deleted: self.deleted.clone(),
            live: self.live.clone(),
            live_count: self.live_count,
            dirty: true,
            del_gen: self.del_gen,
            del_crc: self.del_crc,
        };
        for &r in rows {
            if next.deleted.insert(r) {
                next.live[r as usize / BLOCK] &= !(1 << (r as usize % BLOCK));
                next.live_count -= 1;
            }
        }
        next
    }

    fn view<'a>(&'a self, shape: &'a Shape) -> View<'a> {
        View {
            shape,
            cols: self.seg.columns(),
        }
    }

    fn allowed_masks(&self, allow: &RoaringTreemap) -> Vec<u32> {
        let mut masks = vec![0u32; self.live.len()];
        let mut set = |row: usize| {
            if self.is_live(row) {
                masks[row / BLOCK] |= 1 << (row % BLOCK);
            }
        };
        if (allow.len() as usize) < self.seg.rows() / 8 {
            for id in allow.iter() {
                if let Some(row) = self.seg.find(id) {
                    set(row);
                }
            }
        } else {
            for (row, &id) in self.seg.columns().ids.iter().enumerate() {
                if allow.contains(id) {
                    set(row);
                }
            }
        }
        masks
    }
}

/// The mutable part of a collection, behind one lock.
#[derive(Debug)]
struct State {
    memtable: FlatIndex,
    /// A memtable being sealed into a segment in the background (searched from memory until the
    /// segment is installed).
    frozen: Option<Frozen>,
    segments: Arc<Vec<Arc<SegState>>>,
}

/// A frozen memtable and the deletions it received after freezing.
#[derive(Debug)]
struct Frozen {
    index: Arc<FlatIndex>,
    /// The rows live at the freeze, in order: the new segment's rows.
    rows: Vec<u32>,
    /// Rows deleted since the freeze.
    deleted: RoaringBitmap,
    /// The index's live masks minus `deleted`.
    masks: Vec<u32>,
    live_count: usize,
}

impl Frozen {
    fn is_live(&self, row: usize) -> bool {
        self.masks[row / BLOCK] >> (row % BLOCK) & 1 == 1
    }

    fn kill(&mut self, row: usize) -> bool {
        if !self.is_live(row) {
            return false;
        }
        self.masks[row / BLOCK] &= !(1 << (row % BLOCK));
        self.deleted.insert(row as u32);
        self.live_count -= 1;
        true
    }

    fn allowed_masks(&self, allow: &RoaringTreemap) -> Vec<u32> {
        let mut masks = self.index.allowed_masks(allow);
        for (m, live) in masks.iter_mut().zip(&self.masks) {
            *m &= live;
        }
        masks
    }
}

/// A segment being written by a background thread.
#[derive(Debug)]
struct Seal {
    handle: std::thread::JoinHandle<Result<Arc<Segment>>>,
    /// The WAL file started at the freeze: the manifest's `wal_seq` once installed.
    wal_seq: u64,
    /// The first WAL file the frozen rows came from.
    old_wal: u64,
}

/// What the single writer owns: the WAL and the manifest's counters.
#[derive(Debug)]
struct Writer {
    wal: WalWriter,
    manifest: Manifest,
    last_sync: Instant,
    synced: bool,
    /// Set when a WAL write or sync failed: later writes are refused.
    failed: Option<Error>,
    seal: Option<Seal>,
}

/// A write waiting in the group-commit queue.
#[derive(Debug)]
struct Request {
    op: Op,
    body: Vec<u8>,
    result: Mutex<Option<Result<usize>>>,
}

#[derive(Debug)]
enum Op {
    Upsert {
        ids: Vec<u64>,
        rows: Vec<f32>,
        parts: Vec<Encoded>,
    },
    Delete {
        ids: Vec<u64>,
    },
}

#[derive(Debug)]
struct Inner {
    name: String,
    dir: PathBuf,
    config: CollectionConfig,
    shape: Shape,
    state: RwLock<State>,
    writer: Mutex<Writer>,
    queue: Mutex<VecDeque<Arc<Request>>>,
    queue_cv: Condvar,
    compacting: Mutex<()>,
    recovery: Recovery,
    /// A background compaction thread.
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The data directory's lock, held while any handle to the collection lives.
    _lock: Option<Arc<std::fs::File>>,
}

/// What opening a collection replayed from its WAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// WAL records applied.
    pub wal_records: u64,
    /// Bytes of a torn tail cut from the newest WAL file (a write interrupted by a crash; it was
    /// never acknowledged).
    pub truncated_bytes: u64,
}

/// A handle to an open collection; clones share it.
#[derive(Debug, Clone)]
pub struct Collection {
    inner: Arc<Inner>,
}

fn poisoned<T>(_: T) -> Error {
    Error::invalid_argument(
        "collection",
        "an earlier panic left the collection unusable",
    )
}

/// Most bytes of WAL records one group commit writes.
const GROUP_BYTES: usize = 32 << 20;

impl Collection {
    /// Creates the files of a new collection in `dir` (which must not exist).
    pub(crate) fn create(dir: &Path, config: CollectionConfig) -> Result<()> {
        config.validate()?;
        std::fs::create_dir_all(dir).at(dir)?;
        config.store(&dir.join("config.json"))?;
        let manifest = Manifest {
            generation: 1,
            wal_seq: 1,
            next_segment: 1,
            entries: Vec::new(),
        };
        manifest.store(dir)?;
        WalWriter::create(dir, 1, config.dim)?;
        Ok(())
    }

    /// Opens the collection in `dir`: maps its segments, loads deletions, replays the WAL.
    pub(crate) fn open(
        name: &str,
        dir: &Path,
        lock: Option<Arc<std::fs::File>>,
    ) -> Result<Collection> {
        let config = CollectionConfig::load(&dir.join("config.json"))?;
        let shape = Shape::new(config.quantizer(), config.metric)?;
        let manifest = Manifest::load(dir)?;
        let meta = config.segment_meta();
        let mut segments = Vec::with_capacity(manifest.entries.len());
        for e in &manifest.entries {
            let path = dir.join(segment::file_name(e.segment));
            let seg = Segment::open(&path, &meta, &shape, config.verify_on_open)?;
            if seg.rows() as u64 != e.rows || seg.id() != e.segment {
                return Err(Error::corrupt(&path, "does not match its manifest entry"));
            }
            let deleted = manifest::load_deletions(dir, e)?;
            segments.push(Arc::new(SegState::new(
                Arc::new(seg),
                deleted,
                e.del_gen,
                e.del_crc,
            )));
        }
        // Files no manifest names: leftovers of an interrupted flush, compaction or write.
        let mut wal_files = Vec::new();
        for entry in std::fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let file = entry.file_name();
            let Some(fname) = file.to_str() else { continue };
            let stale = if let Some(id) = segment::parse_file_name(fname) {
                !manifest.entries.iter().any(|e| e.segment == id)
            } else if let Some((id, generation)) = manifest::parse_del_file_name(fname) {
                !manifest
                    .entries
                    .iter()
                    .any(|e| e.segment == id && e.del_gen == generation)
            } else if let Some(seq) = wal::parse_file_name(fname) {
                if seq >= manifest.wal_seq {
                    wal_files.push(seq);
                }
                seq < manifest.wal_seq
            } else {
                fname.ends_with(".tmp")
            };
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        wal_files.sort_unstable();
        let memtable = FlatIndex::new(config.quantizer(), config.metric, config.rerank)?;
        let mut state = State {
            memtable,
            frozen: None,
            segments: Arc::new(segments),
        };
        let mut wal = None;
        let mut recovery = Recovery::default();
        for (i, &seq) in wal_files.iter().enumerate() {
            let last = i + 1 == wal_files.len();
            let (replayed, w) =
                wal::replay(&dir.join(wal::file_name(seq)), config.dim, last, |r| {
                    apply_record(&shape, &mut state, r)
                })?;
            recovery.wal_records += replayed.records as u64;
            recovery.truncated_bytes += replayed.truncated;
            wal = w;
        }
        let wal = match wal {
            Some(w) => w,
            None => WalWriter::create(dir, manifest.wal_seq, config.dim)?,
        };
        let collection = Collection {
            inner: Arc::new(Inner {
                name: name.to_string(),
                dir: dir.to_path_buf(),
                config,
                shape,
                state: RwLock::new(state),
                writer: Mutex::new(Writer {
                    wal,
                    manifest,
                    last_sync: Instant::now(),
                    synced: true,
                    failed: None,
                    seal: None,
                }),
                queue: Mutex::new(VecDeque::new()),
                queue_cv: Condvar::new(),
                compacting: Mutex::new(()),
                recovery,
                background: Mutex::new(None),
                _lock: lock,
            }),
        };
        if let Durability::Periodic(ms) = config.durability {
            collection.start_periodic_sync(ms);
        }
        Ok(collection)
    }

    /// Periodic durability: a thread syncs the WAL every `ms` milliseconds while writes are
    /// unsynced, and stops when the collection is gone.
    fn start_periodic_sync(&self, ms: u32) {
        let weak = Arc::downgrade(&self.inner);
        let period = std::time::Duration::from_millis(u64::from(ms.max(1)));
        let _ = std::thread::Builder::new()
            .name("gyre-wal-sync".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(period);
                    let Some(inner) = weak.upgrade() else { return };
                    if let Ok(mut w) = inner.writer.lock()
                        && !w.synced
                        && w.failed.is_none()
                    {
                        match w.wal.sync() {
                            Ok(()) => {
                                w.synced = true;
                                w.last_sync = Instant::now();
                            }
                            Err(e) => w.failed = Some(e),
                        }
                    }
                }
            });
    }

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
        &self.inner.dir
    }

    /// Inserts or replaces points (`ids.len()` rows of `dim` values, row-major). Returns once
    /// the write is durable (see [`Durability`]) and visible to searches. All rows are checked
    /// first: on error nothing is written. When an id repeats within the batch, the last row
    /// wins.
    pub fn upsert(&self, ids: &[u64], rows: &[f32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::invalid_argument("ids", "the batch is empty"));
        }
        let parts = encode_rows(&self.inner.shape, ids, rows)?;
        let body = wal::upsert_body(ids, rows);
        self.submit(
            Op::Upsert {
                ids: ids.to_vec(),
                rows: rows.to_vec(),
                parts,
            },
            body,
        )
        .map(|_| ())
    }

    /// Deletes points; unknown ids are ignored. Returns how many live points were deleted.
    pub fn delete(&self, ids: &[u64]) -> Result<usize> {
        if ids.is_empty() {
            return Err(Error::invalid_argument("ids", "the batch is empty"));
        }
        let body = wal::delete_body(ids);
        self.submit(Op::Delete { ids: ids.to_vec() }, body)
    }

    /// Group commit: the request at the head of the queue writes every queued request's record
    /// with one write and one fsync, applies them in order, and wakes their callers.
    fn submit(&self, op: Op, body: Vec<u8>) -> Result<usize> {
        let inner = &self.inner;
        let req = Arc::new(Request {
            op,
            body,
            result: Mutex::new(None),
        });
        let mut queue = inner.queue.lock().map_err(poisoned)?;
        queue.push_back(req.clone());
        loop {
            if let Some(r) = req.result.lock().map_err(poisoned)?.take() {
                return r;
            }
            if queue.front().is_some_and(|f| Arc::ptr_eq(f, &req)) {
                break;
            }
            queue = inner.queue_cv.wait(queue).map_err(poisoned)?;
        }
        // Leader: take a group off the queue's front (they stay queued so followers wait).
        let mut group = Vec::new();
        let mut bytes = 0;
        for r in queue.iter() {
            if !group.is_empty() && bytes + r.body.len() > GROUP_BYTES {
                break;
            }
            bytes += r.body.len();
            group.push(r.clone());
        }
        drop(queue);
        let outcome = self.commit_group(&group);
        let mut queue = inner.queue.lock().map_err(poisoned)?;
        for r in &group {
            let res = match &outcome {
                Ok(counts) => Ok(counts[group.iter().position(|g| Arc::ptr_eq(g, r)).unwrap_or(0)]),
                Err(e) => Err(e.clone()),
            };
            *r.result.lock().map_err(poisoned)? = Some(res);
            queue.pop_front();
        }
        inner.queue_cv.notify_all();
        drop(queue);
        let result = req.result.lock().map_err(poisoned)?.take();
        result.unwrap_or_else(|| {
            Err(Error::invalid_argument(
                "collection",
                "write lost its result",
            ))
        })
    }

    fn commit_group(&self, group: &[Arc<Request>]) -> Result<Vec<usize>> {
        let inner = &self.inner;
        let mut writer = inner.writer.lock().map_err(poisoned)?;
        if let Some(e) = &writer.failed {
            return Err(e.clone());
        }
        self.finish_seal(&mut writer, false)?;
        for r in group {
            writer.wal.stage(&r.body);
        }
        // After a failed WAL write or sync the file's state is unknown (the kernel may have
        // dropped dirty pages): refuse further writes until the collection is reopened and
        // replays what really reached the disk.
        let logged = writer
            .wal
            .write()
            .and_then(|()| match inner.config.durability {
                Durability::Fsync => writer.wal.sync(),
                Durability::Periodic(ms) => {
                    writer.synced = false;
                    if writer.last_sync.elapsed().as_millis() >= u128::from(ms) {
                        writer.wal.sync()?;
                        writer.synced = true;
                        writer.last_sync = Instant::now();
                    }
                    Ok(())
                }
            });
        if let Err(e) = logged {
            writer.failed = Some(e.clone());
            return Err(e);
        }
        let mut counts = Vec::with_capacity(group.len());
        let seal = {
            let mut state = inner.state.write().map_err(poisoned)?;
            for r in group {
                counts.push(apply_op(&inner.shape, &mut state, &r.op));
            }
            state.memtable.rows() >= inner.config.segment_rows
        };
        if seal {
            // The group is durable and applied whatever happens here; a failed seal is
            // reported by the next write and by `flush()`. At most one seal runs: a full
            // memtable waits for the previous one (backpressure).
            let _ = self
                .finish_seal(&mut writer, true)
                .and_then(|()| self.freeze(&mut writer));
        }
        Ok(counts)
    }

    /// Seals the memtable into a segment and persists deletions; returns when durable.
    pub fn flush(&self) -> Result<()> {
        let mut writer = self.inner.writer.lock().map_err(poisoned)?;
        self.flush_locked(&mut writer)
    }

    fn flush_locked(&self, writer: &mut MutexGuard<'_, Writer>) -> Result<()> {
        self.finish_seal(writer, true)?;
        self.freeze(writer)?;
        self.finish_seal(writer, true)
    }

    /// Installs a finished background seal (waiting for it with `wait`).
    fn finish_seal(&self, writer: &mut MutexGuard<'_, Writer>, wait: bool) -> Result<()> {
        let Some(seal) = writer.seal.take_if(|s| wait || s.handle.is_finished()) else {
            return Ok(());
        };
        let inner = &self.inner;
        let written = seal
            .handle
            .join()
            .unwrap_or_else(|_| Err(Error::invalid_argument("flush", "the seal thread panicked")));
        let seg = match written {
            Ok(seg) => seg,
            Err(e) => {
                // The frozen rows stay searchable and in the WAL; writes stop until a reopen
                // replays them (the disk is full or failing).
                writer.failed = Some(e.clone());
                return Err(e);
            }
        };
        let mut state = inner.state.write().map_err(poisoned)?;
        let frozen = state
            .frozen
            .take()
            .expect("a seal in flight has frozen rows");
        // Rows deleted since the freeze, renumbered as in the new segment.
        let late: Vec<u32> = frozen
            .deleted
            .iter()
            .filter_map(|r| frozen.rows.binary_search(&r).ok().map(|i| i as u32))
            .collect();
        let mut seg_state = SegState::new(seg, RoaringBitmap::new(), 0, 0);
        if !late.is_empty() {
            seg_state = seg_state.with_deleted(&late);
        }
        let mut segments: Vec<Arc<SegState>> = state.segments.iter().cloned().collect();
        segments.push(Arc::new(seg_state));
        let mut next = writer.manifest.clone();
        next.generation += 1;
        next.wal_seq = seal.wal_seq;
        let published = persist_deletions(&inner.dir, next.generation, segments).and_then(
            |(segments, obsolete)| {
                next.entries = entries(&segments);
                next.store(&inner.dir)?;
                Ok((segments, obsolete))
            },
        );
        let (segments, obsolete_dels) = match published {
            Ok(p) => p,
            Err(e) => {
                state.frozen = Some(frozen);
                writer.failed = Some(e.clone());
                return Err(e);
            }
        };
        state.segments = Arc::new(segments);
        drop(state);
        writer.manifest = next;
        for seq in seal.old_wal..seal.wal_seq {
            let _ = std::fs::remove_file(inner.dir.join(wal::file_name(seq)));
        }
        for f in obsolete_dels {
            let _ = std::fs::remove_file(inner.dir.join(f));
        }
        if self.segment_count() > inner.config.compact_segments {
            self.compact_in_background();
        }
        Ok(())
    }

    /// Freezes the memtable and seals it into a segment on a background thread (installed by
    /// [`finish_seal`](Self::finish_seal)); writes continue into a new memtable and WAL file.
    /// With no live rows to seal, persists the deletions synchronously instead.
    fn freeze(&self, writer: &mut MutexGuard<'_, Writer>) -> Result<()> {
        let inner = &self.inner;
        let dir = &inner.dir;
        debug_assert!(writer.seal.is_none());
        // Everything in the current WAL must be durable before a newer WAL file exists: replay
        // treats damage in any file but the newest as corruption.
        if !writer.synced {
            writer.wal.sync()?;
            writer.synced = true;
        }
        let (rows, dirty, mt_rows) = {
            let state = inner.state.read().map_err(poisoned)?;
            let mt = &state.memtable;
            let live = mt.live_masks();
            let rows: Vec<u32> = (0..mt.rows())
                .filter(|&r| live[r / BLOCK] >> (r % BLOCK) & 1 == 1)
                .map(|r| r as u32)
                .collect();
            (rows, state.segments.iter().any(|s| s.dirty), mt.rows())
        };
        if rows.is_empty() && !dirty && mt_rows == 0 {
            return Ok(());
        }
        let old_wal = writer.wal.seq();
        let new_wal = WalWriter::create(dir, old_wal + 1, inner.config.dim)?;
        let fresh = FlatIndex::new(
            inner.config.quantizer(),
            inner.config.metric,
            inner.config.rerank,
        )?;
        if rows.is_empty() {
            // Nothing to seal: persist segment deletions and drop the dead memtable rows.
            let mut state = inner.state.write().map_err(poisoned)?;
            let mut next = writer.manifest.clone();
            next.generation += 1;
            next.wal_seq = old_wal + 1;
            let segments: Vec<Arc<SegState>> = state.segments.iter().cloned().collect();
            let (segments, obsolete_dels) = persist_deletions(dir, next.generation, segments)?;
            next.entries = entries(&segments);
            next.store(dir)?;
            state.memtable = fresh;
            state.segments = Arc::new(segments);
            drop(state);
            writer.manifest = next;
            writer.wal = new_wal;
            let _ = std::fs::remove_file(dir.join(wal::file_name(old_wal)));
            for f in obsolete_dels {
                let _ = std::fs::remove_file(dir.join(f));
            }
            return Ok(());
        }
        let index = {
            let mut state = inner.state.write().map_err(poisoned)?;
            let index = Arc::new(std::mem::replace(&mut state.memtable, fresh));
            state.frozen = Some(Frozen {
                index: index.clone(),
                masks: index.live_masks().to_vec(),
                live_count: rows.len(),
                rows: rows.clone(),
                deleted: RoaringBitmap::new(),
            });
            index
        };
        writer.wal = new_wal;
        writer.last_sync = Instant::now();
        let id = writer.manifest.next_segment;
        writer.manifest.next_segment += 1;
        let (meta, shape) = (inner.config.segment_meta(), inner.shape.clone());
        let path = dir.join(segment::file_name(id));
        let handle = std::thread::Builder::new()
            .name("gyre-seal".into())
            .spawn(move || -> Result<Arc<Segment>> {
                segment::write(&path, &meta, &shape, id, &[(index.view(), rows)])?;
                Ok(Arc::new(Segment::open(&path, &meta, &shape, false)?))
            })
            .map_err(|e| Error::io(dir, e))?;
        writer.seal = Some(Seal {
            handle,
            wal_seq: old_wal + 1,
            old_wal,
        });
        Ok(())
    }

    fn segment_count(&self) -> usize {
        self.inner.state.read().map_or(0, |s| s.segments.len())
    }

    fn compact_in_background(&self) {
        let Ok(mut slot) = self.inner.background.lock() else {
            return;
        };
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let me = self.clone();
        // A failed background compaction leaves the segments as they were; the next flush or
        // an explicit `compact()` tries again and reports the error.
        *slot = std::thread::Builder::new()
            .name("gyre-compact".into())
            .spawn(move || {
                let _ = me.compact();
            })
            .ok();
    }

    /// Waits for background work (a seal in flight, a compaction) and syncs the WAL. Called
    /// when the [`Database`] is dropped; safe to call any time.
    pub fn close(&self) -> Result<()> {
        let handle = self.inner.background.lock().map_err(poisoned)?.take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        let mut writer = self.inner.writer.lock().map_err(poisoned)?;
        self.finish_seal(&mut writer, true)?;
        if !writer.synced {
            writer.wal.sync()?;
            writer.synced = true;
        }
        Ok(())
    }

    /// Merges all segments into one, dropping deleted rows. Writers and readers continue
    /// meanwhile; only the final swap takes the writer lock. Returns false when another
    /// compaction was running or there was nothing to do.
    pub fn compact(&self) -> Result<bool> {
        let inner = &self.inner;
        let Ok(_guard) = inner.compacting.try_lock() else {
            return Ok(false);
        };
        let start = inner.state.read().map_err(poisoned)?.segments.clone();
        if start.is_empty() || (start.len() == 1 && start[0].deleted.is_empty()) {
            return Ok(false);
        }
        let id = {
            let mut w = inner.writer.lock().map_err(poisoned)?;
            let id = w.manifest.next_segment;
            w.manifest.next_segment += 1;
            id
        };
        let meta = inner.config.segment_meta();
        let path = inner.dir.join(segment::file_name(id));
        let sources: Vec<segment::Source<'_>> = start
            .iter()
            .map(|s| {
                let rows = (0..s.seg.rows())
                    .filter(|&r| s.is_live(r))
                    .map(|r| r as u32)
                    .collect();
                (s.view(&inner.shape), rows)
            })
            .collect();
        let written = segment::write(&path, &meta, &inner.shape, id, &sources);
        drop(sources);
        if let Err(e) = written {
            let _ = std::fs::remove_file(fsio::temp_path(&path));
            return Err(e);
        }
        let merged = Arc::new(Segment::open(&path, &meta, &inner.shape, false)?);
        // Publish: carry over deletions made while we merged.
        let mut writer = inner.writer.lock().map_err(poisoned)?;
        let mut state = inner.state.write().map_err(poisoned)?;
        let mut late = Vec::new();
        let mut offset = 0u32;
        for old in start.iter() {
            let now = state
                .segments
                .iter()
                .find(|s| Arc::ptr_eq(&s.seg, &old.seg))
                .expect("only compaction removes segments");
            for r in now.deleted.iter() {
                if !old.deleted.contains(r) {
                    // New row = live rows of `old` before r, plus this source's offset.
                    late.push(offset + (r - old.deleted.rank(r) as u32));
                }
            }
            offset += old.live_count as u32;
        }
        let mut merged_state = SegState::new(merged, RoaringBitmap::new(), 0, 0);
        if !late.is_empty() {
            merged_state = merged_state.with_deleted(&late);
        }
        // Deletion files of the merged segments, as of now (a flush may have rewritten them).
        let mut dead_dels: Vec<String> = Vec::new();
        for s in state.segments.iter().chain(start.iter()) {
            if start.iter().any(|o| Arc::ptr_eq(&o.seg, &s.seg)) && s.del_gen != 0 {
                dead_dels.push(manifest::del_file_name(s.seg.id(), s.del_gen));
            }
        }
        let mut segments: Vec<Arc<SegState>> = state
            .segments
            .iter()
            .filter(|s| !start.iter().any(|o| Arc::ptr_eq(&o.seg, &s.seg)))
            .cloned()
            .collect();
        segments.insert(0, Arc::new(merged_state));
        let mut next = writer.manifest.clone();
        next.generation += 1;
        let (segments, obsolete_dels) = persist_deletions(&inner.dir, next.generation, segments)?;
        next.entries = entries(&segments);
        next.store(&inner.dir)?;
        state.segments = Arc::new(segments);
        writer.manifest = next;
        drop(state);
        drop(writer);
        for old in start.iter() {
            old.seg.mark_obsolete();
        }
        for f in obsolete_dels.into_iter().chain(dead_dels) {
            let _ = std::fs::remove_file(inner.dir.join(f));
        }
        Ok(true)
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

    /// Runs `run` on every source a search covers, with the masks of its live rows (restricted
    /// to `allow`): the memtable and a memtable being sealed under the state read lock, then the
    /// segments of the snapshot taken under that same lock, outside it. Empty sources are
    /// skipped.
    fn for_each_source<T>(
        &self,
        allow: Option<&RoaringTreemap>,
        mut run: impl FnMut(View<'_>, &[u32]) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let segments = {
            let state = self.inner.state.read().map_err(poisoned)?;
            let mt = &state.memtable;
            if mt.rows() > 0 {
                out.push(match allow {
                    Some(a) => run(mt.view(), &mt.allowed_masks(a))?,
                    None => run(mt.view(), mt.live_masks())?,
                });
            }
            if let Some(f) = &state.frozen {
                out.push(match allow {
                    Some(a) => run(f.index.view(), &f.allowed_masks(a))?,
                    None => run(f.index.view(), &f.masks)?,
                });
            }
            state.segments.clone()
        };
        let shape = &self.inner.shape;
        for s in segments.iter() {
            out.push(match allow {
                Some(a) => run(s.view(shape), &s.allowed_masks(a))?,
                None if s.live_count == 0 => continue,
                None => run(s.view(shape), &s.live)?,
            });
        }
        Ok(out)
    }

    /// The `min(k, live)` best points for `query`. Sees every write acknowledged before it
    /// started.
    pub fn search(&self, query: &[f32], k: usize, opts: &SearchOptions) -> Result<Vec<Neighbor>> {
        let shape = &self.inner.shape;
        shape.check_one(query, k, &opts.params)?;
        self.check_search(opts)?;
        // Rotation and tables once for all sources.
        let prep = if opts.exact {
            None
        } else {
            Some(shape.prepare(query, &opts.params)?)
        };
        let lists = self.for_each_source(opts.allow.as_ref(), |view, masks| {
            Ok(match &prep {
                None => view.exact_search(query, k, masks),
                Some(p) => view.search_prepared(query, p, 0, k, &opts.params, masks),
            })
        })?;
        Ok(merge_results(shape.metric, k, &lists))
    }

    /// [`search`](Self::search) for every row of `queries`.
    pub fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Neighbor>>> {
        let shape = &self.inner.shape;
        shape.check_queries(queries, k, &opts.params)?;
        self.check_search(opts)?;
        let d = self.inner.config.dim;
        let prep = if opts.exact {
            None
        } else {
            Some(shape.prepare(queries, &opts.params)?)
        };
        let mut per_source = self.for_each_source(opts.allow.as_ref(), |view, masks| {
            Ok(match &prep {
                None => {
                    use rayon::prelude::*;
                    queries
                        .par_chunks(d)
                        .map(|q| view.exact_search(q, k, masks))
                        .collect()
                }
                Some(p) => view.search_batch_prepared(queries, p, k, &opts.params, masks),
            })
        })?;
        Ok((0..queries.len() / d)
            .map(|q| {
                let lists: Vec<Vec<Neighbor>> = per_source
                    .iter_mut()
                    .map(|s: &mut Vec<Vec<Neighbor>>| std::mem::take(&mut s[q]))
                    .collect();
                merge_results(shape.metric, k, &lists)
            })
            .collect())
    }

    /// The stored points with these ids (`None` for ids not present), in order.
    pub fn get(&self, ids: &[u64]) -> Result<Vec<Option<Point>>> {
        let state = self.inner.state.read().map_err(poisoned)?;
        let shape = &self.inner.shape;
        Ok(ids
            .iter()
            .map(|&id| {
                if let Some(row) = state.memtable.row_of(id) {
                    return Some(Point {
                        id,
                        vector: state.memtable.view().vector(row),
                    });
                }
                if let Some(f) = &state.frozen
                    && let Some(row) = f.index.row_of(id)
                    && f.is_live(row)
                {
                    return Some(Point {
                        id,
                        vector: f.index.view().vector(row),
                    });
                }
                state.segments.iter().find_map(|s| {
                    let row = s.seg.find(id).filter(|&r| s.is_live(r))?;
                    Some(Point {
                        id,
                        vector: s.view(shape).vector(row),
                    })
                })
            })
            .collect())
    }

    /// Number of live points.
    pub fn len(&self) -> usize {
        self.inner.state.read().map_or(0, |s| {
            s.memtable.len()
                + s.frozen.as_ref().map_or(0, |f| f.live_count)
                + s.segments.iter().map(|g| g.live_count).sum::<usize>()
        })
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

    /// Counts and sizes.
    pub fn info(&self) -> Result<CollectionInfo> {
        let (live_mem, rows_mem, segments) = {
            let s = self.inner.state.read().map_err(poisoned)?;
            let (f_live, f_rows) = s
                .frozen
                .as_ref()
                .map_or((0, 0), |f| (f.live_count, f.index.rows()));
            (
                s.memtable.len() + f_live,
                s.memtable.rows() + f_rows,
                s.segments.clone(),
            )
        };
        let mut disk_bytes = 0;
        for entry in std::fs::read_dir(&self.inner.dir).at(&self.inner.dir)? {
            if let Ok(m) = entry.at(&self.inner.dir)?.metadata() {
                disk_bytes += m.len();
            }
        }
        let seg_infos: Vec<SegmentInfo> = segments
            .iter()
            .map(|s| SegmentInfo {
                id: s.seg.id(),
                rows: s.seg.rows() as u64,
                live: s.live_count as u64,
                bytes: s.seg.file_bytes(),
            })
            .collect();
        let live = live_mem as u64 + seg_infos.iter().map(|s| s.live).sum::<u64>();
        let deleted =
            (rows_mem - live_mem) as u64 + seg_infos.iter().map(|s| s.rows - s.live).sum::<u64>();
        let paths: Vec<PathBuf> = segments
            .iter()
            .map(|s| s.seg.path().to_path_buf())
            .collect();
        Ok(CollectionInfo {
            name: self.inner.name.clone(),
            config: self.inner.config,
            live,
            deleted,
            memtable_rows: rows_mem as u64,
            segments: seg_infos,
            disk_bytes,
            resident_bytes: resident_bytes(&paths),
        })
    }
}

/// Applies one replayed WAL record.
fn apply_record(shape: &Shape, state: &mut State, record: Record) -> Result<()> {
    let op = match record {
        Record::Upsert { ids, rows } => {
            let parts = encode_rows(shape, &ids, &rows)?;
            Op::Upsert { ids, rows, parts }
        }
        Record::Delete { ids } => Op::Delete { ids },
    };
    apply_op(shape, state, &op);
    Ok(())
}

/// Applies a durable write to the memtable and the segments' deletions; returns the number of
/// live points a delete removed (0 for upserts).
fn apply_op(_shape: &Shape, state: &mut State, op: &Op) -> usize {
    let ids = match op {
        Op::Upsert { ids, .. } | Op::Delete { ids } => ids,
    };
    // Older versions in segments die first (an id is live in at most one place).
    let mut removed = 0;
    let mut changed = false;
    let mut segments: Vec<Arc<SegState>> = state.segments.iter().cloned().collect();
    for s in segments.iter_mut() {
        let rows: Vec<u32> = ids
            .iter()
            .filter_map(|&id| s.seg.find(id))
            .filter(|&r| s.is_live(r))
            .map(|r| r as u32)
            .collect();
        if !rows.is_empty() {
            let mut unique = rows.clone();
            unique.sort_unstable();
            unique.dedup();
            removed += unique.len();
            *s = Arc::new(s.with_deleted(&unique));
            changed = true;
        }
    }
    if changed {
        state.segments = Arc::new(segments);
    }
    if let Some(f) = &mut state.frozen {
        for &id in ids {
            if let Some(row) = f.index.row_of(id)
                && f.kill(row)
            {
                removed += 1;
            }
        }
    }
    match op {
        Op::Upsert { ids, rows, parts } => {
            state.memtable.add_encoded(ids, rows, parts);
            0
        }
        Op::Delete { ids } => removed + state.memtable.remove(ids),
    }
}

/// Writes deletion files for segments with unpersisted deletions (generation `generation`);
/// returns the updated states and the names of the deletion files they replace.
fn persist_deletions(
    dir: &Path,
    generation: u64,
    segments: Vec<Arc<SegState>>,
) -> Result<(Vec<Arc<SegState>>, Vec<String>)> {
    let mut obsolete = Vec::new();
    let mut out = Vec::with_capacity(segments.len());
    for s in segments {
        if !s.dirty {
            out.push(s);
            continue;
        }
        let crc = manifest::store_deletions(dir, s.seg.id(), generation, &s.deleted)?;
        if s.del_gen != 0 {
            obsolete.push(manifest::del_file_name(s.seg.id(), s.del_gen));
        }
        out.push(Arc::new(SegState {
            seg: s.seg.clone(),
            deleted: s.deleted.clone(),
            live: s.live.clone(),
            live_count: s.live_count,
            dirty: false,
            del_gen: generation,
            del_crc: crc,
        }));
    }
    Ok((out, obsolete))
}

fn entries(segments: &[Arc<SegState>]) -> Vec<manifest::Entry> {
    segments
        .iter()
        .map(|s| manifest::Entry {
            segment: s.seg.id(),
            rows: s.seg.rows() as u64,
            del_gen: s.del_gen,
            del_count: if s.del_gen == 0 { 0 } else { s.deleted.len() },
            del_crc: s.del_crc,
        })
        .collect()
}

/// Resident bytes of the mappings of `paths`, from `/proc/self/smaps` (Linux).
fn resident_bytes(paths: &[PathBuf]) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let names: Vec<String> = paths
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .map(|p| p.display().to_string())
        .collect();
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = names.iter().any(|n| line.ends_with(n.as_str()));
        } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
            total += kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()?
                * 1024;
        }
    }
    Some(total)
}
