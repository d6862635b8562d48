//! The one way the collection's durable state changes: a manifest edit ([`publish`]), and the
//! garbage collection of files that no manifest or snapshot uses any more.
//!
//! Invariants:
//! * Edits are serialised by the writer lock. An edit writes the deletion files it needs, then
//!   the manifest (atomic replace): the manifest is the single commit point.
//! * Generations are never reused, even after a failed edit, so a deletion file written for a
//!   failed edit can never be mistaken for one a later manifest names.
//! * A file is deleted only after a durable manifest stopped naming it and (for segments) the
//!   last snapshot holding it was dropped. A failed edit deletes nothing: its manifest may have
//!   reached the disk. Files that no manifest names are also removed when the collection opens.

use std::sync::Arc;

use super::manifest::{self, Manifest};
use super::snapshot::{SegState, State};
use super::{Inner, Writer, poisoned};
use crate::error::Result;
use crate::segment::Segment;
use crate::wal;

/// A file waiting to be deleted.
#[derive(Debug)]
pub(super) enum Garbage {
    /// A segment out of the manifest; deleted once no snapshot holds it.
    Segment(Arc<Segment>),
    /// Any other file out of the manifest.
    File(String),
}

/// A manifest edit: the new segment list (segments with unpersisted deletions get deletion
/// files), and optionally the first WAL file to replay from now on.
#[derive(Debug, Default)]
pub(super) struct Edit {
    pub segments: Vec<Arc<SegState>>,
    pub wal_seq: Option<u64>,
    /// Segments the edit removes from the manifest.
    pub removed: Vec<Arc<SegState>>,
}

/// Publishes `edit`: deletion files, then the manifest; then installs the segment list (and
/// whatever `install` changes) under the state lock and queues what became garbage.
pub(super) fn publish(
    inner: &Inner,
    writer: &mut Writer,
    edit: Edit,
    install: impl FnOnce(&mut State),
) -> Result<()> {
    let dir = &*inner.dir;
    let generation = writer.manifest.generation + 1;
    // Burn the number first: a failed edit must not leave a deletion file a later edit of the
    // same generation could be confused with.
    writer.manifest.generation = generation;
    let mut garbage = Vec::new();
    let mut segments = Vec::with_capacity(edit.segments.len());
    for s in edit.segments {
        if !s.dirty {
            segments.push(s);
            continue;
        }
        let crc = manifest::store_deletions(dir, s.seg.id(), generation, &s.deleted)?;
        if s.del_gen != 0 {
            garbage.push(Garbage::File(manifest::del_file_name(
                s.seg.id(),
                s.del_gen,
            )));
        }
        let mut next = (*s).clone();
        next.dirty = false;
        next.del_gen = generation;
        next.del_crc = crc;
        segments.push(Arc::new(next));
    }
    let next = Manifest {
        generation,
        wal_seq: edit.wal_seq.unwrap_or(writer.manifest.wal_seq),
        next_segment: writer.manifest.next_segment,
        entries: entries(&segments),
    };
    next.store(dir)?;
    {
        let mut state = inner.state.write().map_err(poisoned)?;
        state.segments = Arc::new(segments);
        install(&mut state);
    }
    for s in edit.removed {
        if s.del_gen != 0 {
            garbage.push(Garbage::File(manifest::del_file_name(
                s.seg.id(),
                s.del_gen,
            )));
        }
        garbage.push(Garbage::Segment(s.seg.clone()));
    }
    for seq in writer.wal_floor..next.wal_seq {
        garbage.push(Garbage::File(wal::file_name(seq)));
    }
    writer.wal_floor = writer.wal_floor.max(next.wal_seq);
    writer.manifest = next;
    inner.garbage.lock().map_err(poisoned)?.extend(garbage);
    collect_garbage(inner);
    Ok(())
}

/// Deletes queued garbage that nothing uses any more; what fails to delete stays queued (and
/// is swept on the next open at the latest).
pub(super) fn collect_garbage(inner: &Inner) {
    let Ok(mut queue) = inner.garbage.try_lock() else {
        return;
    };
    queue.retain(|g| match g {
        // Only the queue holds it: no snapshot can read the file any more.
        Garbage::Segment(seg) if Arc::strong_count(seg) == 1 => {
            inner.dir.delete(seg.file_name()).is_err()
        }
        Garbage::Segment(_) => true,
        Garbage::File(name) => inner.dir.delete(name).is_err(),
    });
}

pub(super) fn entries(segments: &[Arc<SegState>]) -> Vec<manifest::Entry> {
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
