//! Sealing: the memtable is frozen, a new WAL file takes the writes that follow, a background
//! thread writes the frozen rows as a segment, and a manifest edit installs it.
//!
//! Invariants:
//! * Before a new WAL file exists, the current one is healed and synced: replay treats damage
//!   in any WAL file but the newest as corruption.
//! * The frozen memtable stays searchable until its segment is installed, and its WAL files
//!   stay until a durable manifest covers them. A failed segment write or manifest edit keeps
//!   both and is retried (the next full memtable, `flush`, `close`); writes carry on meanwhile.

use std::sync::{Arc, MutexGuard};
use std::thread::JoinHandle;

use roaring::RoaringBitmap;

use super::commit::Writer;
use super::memtable::PayloadChunk;
use super::publish::{Edit, publish};
use super::snapshot::{Frozen, SegState, remap_late};
use super::{Collection, poisoned};
use crate::error::{Error, Result};
use crate::search::FlatIndex;
use crate::segment::{self, Segment};
use crate::wal::WalWriter;

/// A memtable being sealed.
#[derive(Debug)]
pub(super) struct Sealing {
    /// The segment's id.
    id: u64,
    /// The WAL file started at the freeze: the manifest's `wal_seq` once installed.
    wal_seq: u64,
    /// The background write, while it runs.
    handle: Option<JoinHandle<Result<Arc<Segment>>>>,
    /// The written segment, once the write succeeded (an edit that failed retries with it).
    written: Option<Arc<Segment>>,
}

impl Collection {
    /// Seals the memtable into a segment and persists deletions; returns when durable.
    pub fn flush(&self) -> Result<()> {
        let mut writer = self.inner.writer.lock().map_err(poisoned)?;
        self.finish_seal(&mut writer, true)?;
        self.freeze(&mut writer)?;
        self.finish_seal(&mut writer, true)?;
        drop(writer);
        self.maybe_compact();
        Ok(())
    }

    /// Installs a seal in flight: with `wait`, waits for its write (or redoes a failed one);
    /// without, only installs one that has finished.
    pub(super) fn finish_seal(
        &self,
        writer: &mut MutexGuard<'_, Writer>,
        wait: bool,
    ) -> Result<()> {
        let Some(sealing) = writer.sealing.as_mut() else {
            return Ok(());
        };
        if let Some(handle) = sealing.handle.take_if(|h| wait || h.is_finished()) {
            let written = handle
                .join()
                .unwrap_or_else(|_| Err(Error::internal("the seal thread panicked")));
            sealing.written = Some(written?);
        }
        if sealing.handle.is_some() {
            return Ok(());
        }
        if sealing.written.is_none() {
            if !wait {
                return Ok(());
            }
            // An earlier write failed: write the frozen rows again, here.
            let (chunks, rows) = {
                let state = self.inner.state.read().map_err(poisoned)?;
                let f = state
                    .frozen
                    .as_ref()
                    .ok_or_else(|| Error::internal("a seal without frozen rows"))?;
                (f.table.chunk_sources(), f.copied.clone())
            };
            sealing.written = Some(write_segment(self, sealing.id, &chunks, &rows)?);
        }
        let seg = sealing.written.clone().expect("written above");
        let wal_seq = sealing.wal_seq;
        let inner = &self.inner;
        let (segments, late) = {
            let state = inner.state.read().map_err(poisoned)?;
            let frozen = state
                .frozen
                .as_ref()
                .ok_or_else(|| Error::internal("a seal without frozen rows"))?;
            let pairs: Vec<(&[u32], &RoaringBitmap)> = frozen
                .copied
                .iter()
                .map(Vec::as_slice)
                .zip(frozen.late.iter())
                .collect();
            (
                state.segments.iter().cloned().collect::<Vec<_>>(),
                remap_late(&pairs),
            )
        };
        let mut new_state = SegState::new(seg, RoaringBitmap::new(), 0, 0);
        if !late.is_empty() {
            new_state = new_state.with_deleted(&late);
        }
        let mut segments = segments;
        segments.push(Arc::new(new_state));
        let edit = Edit {
            segments,
            wal_seq: Some(wal_seq),
            removed: Vec::new(),
        };
        publish(inner, writer, edit, |state| state.frozen = None)?;
        writer.sealing = None;
        // A new segment may fill a size tier.
        self.maybe_compact();
        Ok(())
    }

    /// Freezes the memtable and seals it into a segment on a background thread (installed by
    /// [`finish_seal`](Self::finish_seal)); writes continue into a new memtable and WAL file.
    /// With no live rows to seal, persists the deletions instead.
    pub(super) fn freeze(&self, writer: &mut MutexGuard<'_, Writer>) -> Result<()> {
        let inner = &self.inner;
        let dir = &*inner.dir;
        if writer.sealing.is_some() {
            return Err(Error::internal("freeze while a seal is in flight"));
        }
        let (live, dirty, mt_rows) = {
            let state = inner.state.read().map_err(poisoned)?;
            let mt = &state.memtable;
            (mt.len(), state.segments.iter().any(|s| s.dirty), mt.rows())
        };
        if live == 0 && !dirty && mt_rows == 0 {
            return Ok(());
        }
        // Everything in the current WAL must be whole and durable before a newer file exists.
        writer.wal.heal()?;
        if writer.wal.unsynced() {
            writer.wal.sync()?;
        }
        let fresh = inner.state.read().map_err(poisoned)?.memtable.fresh();
        let old_wal = writer.wal.seq();
        // From here on the new WAL takes every write, whatever happens to the edit: if the
        // edit reached the disk, replay starts at the new file.
        writer.wal = WalWriter::create(dir, old_wal + 1, inner.config.dim)?;
        writer.last_sync = std::time::Instant::now();
        if live == 0 {
            let segments: Vec<Arc<SegState>> = inner
                .state
                .read()
                .map_err(poisoned)?
                .segments
                .iter()
                .cloned()
                .collect();
            let edit = Edit {
                segments,
                wal_seq: Some(old_wal + 1),
                removed: Vec::new(),
            };
            return publish(inner, writer, edit, |state| state.memtable = fresh);
        }
        let (chunks, rows) = {
            let mut state = inner.state.write().map_err(poisoned)?;
            let frozen = Frozen::new(std::mem::replace(&mut state.memtable, fresh));
            let taken = (frozen.table.chunk_sources(), frozen.copied.clone());
            state.frozen = Some(frozen);
            taken
        };
        let id = writer.manifest.next_segment;
        writer.manifest.next_segment += 1;
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name("gyre-seal".into())
            .spawn(move || write_segment(&me, id, &chunks, &rows))
            .map_err(|e| Error::io(&dir.path_of(""), e))?;
        writer.sealing = Some(Sealing {
            id,
            wal_seq: old_wal + 1,
            handle: Some(handle),
            written: None,
        });
        Ok(())
    }
}

/// Writes `rows[c]` of each memtable chunk `c` as segment `id` and maps it.
fn write_segment(
    c: &Collection,
    id: u64,
    chunks: &[(Arc<FlatIndex>, Arc<PayloadChunk>)],
    rows: &[Vec<u32>],
) -> Result<Arc<Segment>> {
    let sources: Vec<segment::Source<'_>> = chunks
        .iter()
        .zip(rows)
        .filter(|(_, r)| !r.is_empty())
        .map(|((c, p), r)| (c.view(), r.clone(), p.rows.slice()))
        .collect();
    write_and_open(c, id, &sources)
}

/// Writes `sources` as segment `id` (with a graph when the configuration asks for one at
/// that size), maps it and builds its field indexes; on a failed open the file is removed.
/// Shared by sealing and compaction.
pub(super) fn write_and_open(
    c: &Collection,
    id: u64,
    sources: &[segment::Source<'_>],
) -> Result<Arc<Segment>> {
    let inner = &c.inner;
    let meta = inner.config.segment_meta();
    let rows: usize = sources.iter().map(|s| s.1.len()).sum();
    let index = inner.config.graph_params(rows);
    segment::write(
        &*inner.dir,
        &meta,
        &inner.shape,
        id,
        sources,
        index.as_ref(),
    )?;
    match Segment::open(&*inner.dir, id, &meta, &inner.shape, false) {
        Ok(seg) => {
            seg.ensure_indexes(&inner.schema()?);
            Ok(Arc::new(seg))
        }
        Err(e) => {
            let _ = inner.dir.delete(&segment::file_name(id));
            Err(e)
        }
    }
}
