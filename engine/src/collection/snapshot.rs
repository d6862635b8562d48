//! The state searches read: the memtable, a memtable being sealed, and the live segments with
//! their deletion masks; and how a durable write changes it.
//!
//! Invariants:
//! * An id is live in at most one place: applying a write first kills the id's older versions
//!   in segments and in the sealing memtable, then appends to (or deletes from) the memtable.
//! * A segment's state is replaced copy-on-write (`Arc<SegState>` in an `Arc<Vec<_>>`), so a
//!   reader's snapshot never changes under it.
//! * `SegState::live` is the complement of `deleted` over the segment's rows.

use std::sync::Arc;

use roaring::{RoaringBitmap, RoaringTreemap};

use super::memtable::{Chunks, MemTable};
use crate::error::Result;
use crate::payload::filter::RowSource;
use crate::payload::{FieldIndex, Filter, FilterStats, PayloadRows, PayloadSlice, Schema};
use crate::search::flat::Encoded;
use crate::search::view::{Shape, View};
use crate::search::{Cancel, LiveMask};
use crate::segment::FieldIndexes;
use crate::segment::Segment;

/// A segment as the current state sees it: the file and which of its rows are deleted.
#[derive(Debug, Clone)]
pub(super) struct SegState {
    pub seg: Arc<Segment>,
    pub deleted: RoaringBitmap,
    pub live: LiveMask,
    /// True when `deleted` has changes the manifest does not have yet.
    pub dirty: bool,
    /// The deletion file generation the manifest names (0: none).
    pub del_gen: u64,
    pub del_crc: u32,
}

impl SegState {
    pub fn new(seg: Arc<Segment>, deleted: RoaringBitmap, del_gen: u64, del_crc: u32) -> SegState {
        let live = LiveMask::without(seg.rows(), deleted.iter());
        SegState {
            seg,
            deleted,
            live,
            dirty: false,
            del_gen,
            del_crc,
        }
    }

    /// A copy with `rows` deleted too (marked dirty).
    pub fn with_deleted(&self, rows: &[u32]) -> SegState {
        let mut next = self.clone();
        next.dirty = true;
        for &r in rows {
            if next.live.kill(r as usize) {
                next.deleted.insert(r);
            }
        }
        next
    }

    pub fn view<'a>(&'a self, shape: &'a Shape) -> View<'a> {
        View {
            shape,
            cols: self.seg.columns(),
        }
    }

    /// The live rows whose id is in `allow`.
    pub fn allowed(&self, allow: &RoaringTreemap) -> LiveMask {
        let mut mask = LiveMask::none(self.seg.rows());
        if (allow.len() as usize) < self.seg.rows() / 8 {
            for id in allow.iter() {
                if let Some(row) = self.seg.find(id) {
                    mask.set(row);
                }
            }
        } else {
            for (row, &id) in self.seg.columns().ids.iter().enumerate() {
                if allow.contains(id) {
                    mask.set(row);
                }
            }
        }
        mask.and(&self.live)
    }

    /// The live rows, in order (what a merge copies).
    pub fn live_rows(&self) -> Vec<u32> {
        self.live.iter().map(|r| r as u32).collect()
    }
}

/// A frozen memtable being sealed, and the deletions it received after freezing.
#[derive(Debug)]
pub(super) struct Frozen {
    pub table: MemTable,
    /// The rows of each chunk live at the freeze, in order: the new segment's rows.
    pub copied: Vec<Vec<u32>>,
    /// Per chunk, rows deleted since the freeze.
    pub late: Vec<RoaringBitmap>,
}

impl Frozen {
    pub fn new(table: MemTable) -> Frozen {
        let copied = table.live_rows();
        let late = vec![RoaringBitmap::new(); copied.len()];
        Frozen {
            table,
            copied,
            late,
        }
    }

    /// Kills the live rows of `ids`; returns how many.
    pub fn kill(&mut self, ids: &[u64]) -> usize {
        let killed = self.table.remove(ids);
        for &(c, r) in &killed {
            self.late[c].insert(r as u32);
        }
        killed.len()
    }
}

/// The mutable part of a collection, behind one lock.
#[derive(Debug)]
pub(super) struct State {
    pub memtable: MemTable,
    /// A memtable being sealed into a segment (searched from memory until the segment is
    /// installed).
    pub frozen: Option<Frozen>,
    pub segments: Arc<Vec<Arc<SegState>>>,
}

impl State {
    /// Live points.
    pub fn len(&self) -> usize {
        self.memtable.len()
            + self.frozen.as_ref().map_or(0, |f| f.table.len())
            + self.segments.iter().map(|g| g.live.count()).sum::<usize>()
    }
}

/// A durable write to apply.
#[derive(Debug)]
pub(super) enum Op {
    Upsert {
        ids: Vec<u64>,
        rows: Vec<f32>,
        parts: Vec<Encoded>,
        payloads: Option<PayloadRows>,
    },
    Delete {
        ids: Vec<u64>,
    },
}

/// What applying a write did.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Applied {
    /// Live points a delete removed (0 for upserts).
    pub removed: usize,
    /// Segment rows killed (older versions or deletes): deletions the manifest does not have.
    pub segment_rows_killed: usize,
}

/// Applies a durable write to the memtable and the segments' deletions.
pub(super) fn apply_op(state: &mut State, op: &Op) -> Applied {
    let ids = match op {
        Op::Upsert { ids, .. } | Op::Delete { ids } => ids,
    };
    // Older versions in segments die first (an id is live in at most one place).
    let mut removed = 0;
    let mut changed = false;
    let mut segments: Vec<Arc<SegState>> = state.segments.iter().cloned().collect();
    for s in segments.iter_mut() {
        let mut rows: Vec<u32> = ids
            .iter()
            .filter_map(|&id| s.seg.find(id))
            .filter(|&r| s.live.contains(r))
            .map(|r| r as u32)
            .collect();
        if !rows.is_empty() {
            rows.sort_unstable();
            rows.dedup();
            removed += rows.len();
            *s = Arc::new(s.with_deleted(&rows));
            changed = true;
        }
    }
    let segment_rows_killed = removed;
    if changed {
        state.segments = Arc::new(segments);
    }
    if let Some(f) = &mut state.frozen {
        removed += f.kill(ids);
    }
    let removed = match op {
        Op::Upsert {
            ids,
            rows,
            parts,
            payloads,
        } => {
            state.memtable.append(ids, rows, parts, payloads.as_ref());
            0
        }
        Op::Delete { ids } => removed + state.memtable.remove(ids).len(),
    };
    Applied {
        removed,
        segment_rows_killed,
    }
}

/// What a read may return beyond liveness: an id allow-list and a checked filter.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Restrict<'a> {
    pub allow: Option<&'a RoaringTreemap>,
    pub filter: Option<&'a Filter>,
    /// The schema the filter was checked against (which fields memtable chunks index).
    pub schema: Option<&'a Schema>,
}

impl Restrict<'_> {
    /// True when rows beyond the dead ones are left out.
    pub fn active(&self) -> bool {
        self.allow.is_some() || self.filter.is_some_and(|f| !f.is_empty())
    }
}

/// A segment as a filter reads it: ids, payloads, the field indexes built so far.
pub(super) struct SegRows<'a> {
    seg: &'a Segment,
    ids: &'a [u64],
    payloads: PayloadSlice<'a>,
    indexes: Arc<FieldIndexes>,
}

impl<'a> SegRows<'a> {
    pub fn new(seg: &'a Segment) -> Self {
        SegRows {
            seg,
            ids: seg.columns().ids,
            payloads: seg.payloads(),
            indexes: seg.indexes(),
        }
    }
}

impl RowSource for SegRows<'_> {
    fn rows(&self) -> u32 {
        self.ids.len() as u32
    }
    fn id(&self, row: u32) -> u64 {
        self.ids[row as usize]
    }
    fn row_of(&self, id: u64) -> Option<u32> {
        self.seg.find(id).map(|r| r as u32)
    }
    fn payload(&self, row: u32) -> &[u8] {
        self.payloads.get(row as usize)
    }
    fn index(&self, field: &str) -> Option<&FieldIndex> {
        self.indexes.get(field).map(|ix| &**ix)
    }
}

/// A full memtable chunk as a filter reads it.
struct ChunkRows<'a> {
    ids: &'a [u64],
    payloads: PayloadSlice<'a>,
    indexes: Arc<FieldIndexes>,
}

impl RowSource for ChunkRows<'_> {
    fn rows(&self) -> u32 {
        self.ids.len() as u32
    }
    fn id(&self, row: u32) -> u64 {
        self.ids[row as usize]
    }
    fn row_of(&self, id: u64) -> Option<u32> {
        self.ids.iter().position(|&x| x == id).map(|r| r as u32)
    }
    fn ids_indexed(&self) -> bool {
        false
    }
    fn payload(&self, row: u32) -> &[u8] {
        self.payloads.get(row as usize)
    }
    fn index(&self, field: &str) -> Option<&FieldIndex> {
        self.indexes.get(field).map(|ix| &**ix)
    }
}

impl SegState {
    /// The rows a read restricted by `restrict` may return (`None`: every live row, the
    /// segment's own mask).
    pub fn restricted(&self, restrict: &Restrict<'_>, stats: &mut FilterStats) -> Option<LiveMask> {
        if !restrict.active() {
            return None;
        }
        let mut mask = match restrict.allow {
            Some(a) => self.allowed(a),
            None => self.live.clone(),
        };
        if let Some(f) = restrict.filter.filter(|f| !f.is_empty())
            && !mask.is_empty()
        {
            mask = f.rows_within(&SegRows::new(&self.seg), Some(&mask), stats);
        }
        stats.matched_rows += mask.count() as u64;
        Some(mask)
    }
}

/// The memtable chunks (with their masks and payloads; empty ones left out) and the segment
/// set a read covers, taken under the state read lock: only `Arc`s and masks are copied
/// there, and the filter runs after the lock is released, so a writer never waits for a read.
pub(super) fn sources(
    state: &std::sync::RwLock<State>,
    restrict: &Restrict<'_>,
    stats: &mut FilterStats,
) -> Result<(Chunks, Arc<Vec<Arc<SegState>>>)> {
    let (mut chunks, segments) = {
        let state = state.read().map_err(super::poisoned)?;
        let mut chunks = state.memtable.chunks(restrict.allow);
        if let Some(f) = &state.frozen {
            chunks.extend(f.table.chunks(restrict.allow));
        }
        (chunks, state.segments.clone())
    };
    if let Some(f) = restrict.filter.filter(|f| !f.is_empty()) {
        for (chunk, mask, payloads) in chunks.iter_mut() {
            let view = chunk.view();
            match restrict.schema.and_then(|s| payloads.indexes(s)) {
                // A full chunk, through its indexes (fields without one are scanned; the
                // memtable is not reported among the unindexed sources).
                Some(indexes) => {
                    let src = ChunkRows {
                        ids: view.cols.ids,
                        payloads: payloads.rows.slice(),
                        indexes,
                    };
                    let mut scratch = FilterStats::default();
                    *mask = f.rows_within(&src, Some(mask), &mut scratch);
                    stats.payloads_scanned += scratch.payloads_scanned;
                }
                // The filling chunk: each live row's payload is tested.
                None => {
                    let rows: Vec<usize> = mask.iter().collect();
                    stats.payloads_scanned += rows.len() as u64;
                    for r in rows {
                        if !f.matches(view.cols.ids[r], payloads.rows.slice().get(r)) {
                            mask.kill(r);
                        }
                    }
                }
            }
        }
    }
    chunks.retain(|(_, m, _)| !m.is_empty());
    if restrict.active() {
        stats.matched_rows += chunks.iter().map(|(_, m, _)| m.count() as u64).sum::<u64>();
    }
    Ok((chunks, segments))
}

/// Runs `run` on each segment with the rows a read may return (restricted and live),
/// checking `cancel` first; segments with nothing to return are skipped.
fn each_segment<T>(
    segments: &[Arc<SegState>],
    shape: &Shape,
    restrict: &Restrict<'_>,
    cancel: &Cancel,
    stats: &mut FilterStats,
    out: &mut Vec<T>,
    mut run: impl FnMut(View<'_>, &[u32]) -> T,
) -> Result<()> {
    for s in segments {
        cancel.check()?;
        match s.restricted(restrict, stats) {
            Some(m) if m.is_empty() => continue,
            Some(m) => out.push(run(s.view(shape), m.words())),
            None if s.live.is_empty() => continue,
            None => out.push(run(s.view(shape), s.live.words())),
        }
    }
    Ok(())
}

/// Every source a search covers (see [`sources`]), one by one to `run`. `cancel` is checked
/// before each source.
pub(super) fn walk_sources<T>(
    state: &std::sync::RwLock<State>,
    shape: &Shape,
    restrict: &Restrict<'_>,
    cancel: &Cancel,
    stats: &mut FilterStats,
    mut run: impl FnMut(View<'_>, &[u32]) -> T,
) -> Result<Vec<T>> {
    let (chunks, segments) = sources(state, restrict, stats)?;
    let mut out = Vec::new();
    for (chunk, mask, _) in &chunks {
        cancel.check()?;
        out.push(run(chunk.view(), mask.words()));
    }
    each_segment(&segments, shape, restrict, cancel, stats, &mut out, run)?;
    Ok(out)
}

/// [`walk_sources`] with the memtable's chunks (and a frozen memtable's) handed to `group`
/// together, as one source; segments one by one to `run`.
pub(super) fn walk_grouped<T>(
    state: &std::sync::RwLock<State>,
    shape: &Shape,
    restrict: &Restrict<'_>,
    cancel: &Cancel,
    stats: &mut FilterStats,
    group: impl FnOnce(&[(View<'_>, &[u32])]) -> T,
    run: impl FnMut(View<'_>, &[u32]) -> T,
) -> Result<Vec<T>> {
    let (chunks, segments) = sources(state, restrict, stats)?;
    let mut out = Vec::new();
    if !chunks.is_empty() {
        cancel.check()?;
        let views: Vec<(View<'_>, &[u32])> = chunks
            .iter()
            .map(|(c, m, _)| (c.view(), m.words()))
            .collect();
        out.push(group(&views));
    }
    each_segment(&segments, shape, restrict, cancel, stats, &mut out, run)?;
    Ok(out)
}

/// One source's rows that a read may return, for reads that are not searches (count, scroll,
/// delete by filter): its view, payloads, the rows, and the segment (for its id order).
pub(super) struct Matched<'a> {
    pub view: View<'a>,
    pub payloads: PayloadSlice<'a>,
    pub mask: &'a LiveMask,
    pub segment: Option<&'a Segment>,
}

/// Every source's [`Matched`] rows, one by one to `run`.
pub(super) fn walk_matched(
    state: &std::sync::RwLock<State>,
    shape: &Shape,
    restrict: &Restrict<'_>,
    stats: &mut FilterStats,
    mut run: impl FnMut(Matched<'_>),
) -> Result<()> {
    let (chunks, segments) = sources(state, restrict, stats)?;
    for (chunk, mask, payloads) in &chunks {
        run(Matched {
            view: chunk.view(),
            payloads: payloads.rows.slice(),
            mask,
            segment: None,
        });
    }
    for s in segments.iter() {
        let own;
        let mask = match s.restricted(restrict, stats) {
            Some(m) => {
                own = m;
                &own
            }
            None => &s.live,
        };
        if !mask.is_empty() {
            run(Matched {
                view: s.view(shape),
                payloads: s.seg.payloads(),
                mask,
                segment: Some(&s.seg),
            });
        }
    }
    Ok(())
}

/// New row numbers of rows deleted while their source was being copied (the one remap shared
/// by seal and compaction). Each source is `(copied, late)`: the rows copied, in order, and
/// rows deleted since the copy started. A copied source's rows land after the previous
/// sources' rows, in order.
pub(super) fn remap_late(sources: &[(&[u32], &RoaringBitmap)]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut offset = 0u32;
    for (copied, late) in sources {
        for r in late.iter() {
            if let Ok(i) = copied.binary_search(&r) {
                out.push(offset + i as u32);
            }
        }
        offset += copied.len() as u32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_deletions_land_on_the_merged_rows() {
        let a = [0u32, 2, 3, 7];
        let b = [1u32, 4];
        let late_a: RoaringBitmap = [3u32, 7, 5].into_iter().collect(); // 5 was not copied
        let late_b: RoaringBitmap = [4u32].into_iter().collect();
        assert_eq!(remap_late(&[(&a, &late_a), (&b, &late_b)]), vec![2, 3, 5]);
    }
}
