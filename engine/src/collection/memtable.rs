//! The memtable: rows written since the last seal, in chunks of [`CHUNK_ROWS`] rows, so that
//! a search scans it without holding the state lock.
//!
//! Each chunk is an `Arc<FlatIndex>` of codes that never change once appended; which rows are
//! live is kept beside it, in one [`LiveMask`] per chunk, and the id → row map at this level.
//! A reader takes, under the state lock, only the chunk `Arc`s and a copy of their masks
//! (a word per 32 rows) and scans after releasing it; a writer appends to the last chunk in
//! place when no reader holds it, and otherwise appends to a copy of that one chunk (at most
//! [`CHUNK_ROWS`] rows, never a scan's worth of waiting). Full chunks are never copied.
//!
//! Invariants: `masks[c].rows() == chunks[c].rows()`; `ids` maps every live id to its one live
//! row; a row is live iff its mask bit is set.

use std::collections::HashMap;
use std::sync::Arc;

use roaring::RoaringTreemap;

use crate::error::Result;
use crate::metric::Metric;
use std::sync::Mutex;

use crate::payload::{FieldIndex, FieldType, Payload, PayloadRows, Schema};
use crate::quantizer::QuantizerConfig;
use crate::search::flat::Encoded;
use crate::search::{FlatIndex, LiveMask, RerankStorage};
use crate::segment::FieldIndexes;

/// Rows per chunk: the size of the copy a writer makes when a reader holds the last chunk.
pub(super) const CHUNK_ROWS: usize = 4096;

/// The memtable (see the module docs).
#[derive(Debug)]
pub(super) struct MemTable {
    config: QuantizerConfig,
    metric: Metric,
    rerank: RerankStorage,
    chunks: Vec<Arc<FlatIndex>>,
    /// Each chunk's rows' encoded payloads (copy-on-write, like the chunk).
    payloads: Vec<Arc<PayloadChunk>>,
    masks: Vec<LiveMask>,
    ids: HashMap<u64, (u32, u32)>,
    rows: usize,
}

/// What a search reads of a memtable: the chunks, their masks and payloads at one moment.
pub(super) type Chunks = Vec<(Arc<FlatIndex>, LiveMask, Arc<PayloadChunk>)>;

/// One chunk's payloads, and the field indexes built for it once it is full: a full chunk
/// never changes, so its indexes are built on the first filtered read that needs them and kept
/// until the memtable is sealed. The last, filling chunk is filtered row by row.
#[derive(Debug, Default)]
pub(super) struct PayloadChunk {
    pub rows: PayloadRows,
    indexes: Mutex<Arc<FieldIndexes>>,
}

impl Clone for PayloadChunk {
    /// A copy for appending to: its indexes start empty (the rows are about to change).
    fn clone(&self) -> Self {
        PayloadChunk {
            rows: self.rows.clone(),
            indexes: Mutex::default(),
        }
    }
}

impl PayloadChunk {
    /// The indexes of `schema`'s indexed fields, built on first use; `None` while the chunk
    /// is still filling.
    pub fn indexes(&self, schema: &Schema) -> Option<Arc<FieldIndexes>> {
        if self.rows.rows() < CHUNK_ROWS {
            return None;
        }
        let mut slot = self.indexes.lock().ok()?;
        let missing: Vec<(&str, FieldType)> = schema
            .indexed()
            .filter(|(f, _)| !slot.contains_key(*f))
            .collect();
        if !missing.is_empty() {
            let mut next = (**slot).clone();
            let rows = self.rows.slice();
            for (field, kind) in missing {
                let ix =
                    FieldIndex::build(kind, field, CHUNK_ROWS as u32, |r| rows.get(r as usize));
                next.insert(field.to_string(), Arc::new(ix));
            }
            *slot = Arc::new(next);
        }
        Some(slot.clone())
    }
}

impl MemTable {
    pub fn new(config: QuantizerConfig, metric: Metric, rerank: RerankStorage) -> Result<Self> {
        // Checks the configuration once.
        FlatIndex::new(config, metric, rerank)?;
        Ok(MemTable {
            config,
            metric,
            rerank,
            chunks: Vec::new(),
            payloads: Vec::new(),
            masks: Vec::new(),
            ids: HashMap::new(),
            rows: 0,
        })
    }

    /// An empty memtable of the same configuration.
    pub fn fresh(&self) -> MemTable {
        MemTable {
            chunks: Vec::new(),
            payloads: Vec::new(),
            masks: Vec::new(),
            ids: HashMap::new(),
            rows: 0,
            ..*self
        }
    }

    /// Rows stored (live or not).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Appends encoded rows with their payloads; an id already present is replaced.
    pub fn append(
        &mut self,
        ids: &[u64],
        rows: &[f32],
        parts: &[Encoded],
        payloads: Option<&PayloadRows>,
    ) {
        let mut at = 0;
        while at < ids.len() {
            if self.chunks.last().is_none_or(|c| c.rows() >= CHUNK_ROWS) {
                let Ok(chunk) = FlatIndex::new(self.config, self.metric, self.rerank) else {
                    // Checked in `new`; cannot fail for the same configuration.
                    return;
                };
                self.chunks.push(Arc::new(chunk));
                self.payloads.push(Arc::new(PayloadChunk::default()));
                self.masks.push(LiveMask::default());
            }
            let c = self.chunks.len() - 1;
            let room = CHUNK_ROWS - self.chunks[c].rows();
            let end = (at + room).min(ids.len());
            // In place when no reader holds the chunk; else a copy of this one chunk.
            let chunk = Arc::make_mut(&mut self.chunks[c]);
            let first = chunk.rows();
            chunk.append_range(ids, rows, parts, at..end, false);
            let stored = &mut Arc::make_mut(&mut self.payloads[c]).rows;
            for i in at..end {
                stored.push(payloads.map_or(&[][..], |p| p.slice().get(i)));
            }
            for (i, &id) in ids[at..end].iter().enumerate() {
                let row = first + i;
                self.masks[c].push();
                if let Some((oc, or)) = self.ids.insert(id, (c as u32, row as u32)) {
                    self.masks[oc as usize].kill(or as usize);
                }
            }
            self.rows += end - at;
            at = end;
        }
    }

    /// Kills the live rows of `ids`; returns them as (chunk, row).
    pub fn remove(&mut self, ids: &[u64]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for id in ids {
            if let Some((c, r)) = self.ids.remove(id) {
                let (c, r) = (c as usize, r as usize);
                self.masks[c].kill(r);
                out.push((c, r));
            }
        }
        out
    }

    /// The live row of `id`, as (chunk, row).
    pub fn row_of(&self, id: u64) -> Option<(usize, usize)> {
        self.ids.get(&id).map(|&(c, r)| (c as usize, r as usize))
    }

    /// The stored vector of (chunk, row).
    pub fn vector(&self, (c, r): (usize, usize)) -> Option<Vec<f32>> {
        self.chunks[c].view().vector(r)
    }

    /// The stored payload of (chunk, row).
    pub fn payload(&self, (c, r): (usize, usize)) -> Option<Payload> {
        self.payloads[c].rows.slice().decode(r)
    }

    /// The chunks and masks of the live rows (restricted to `allow`).
    pub fn chunks(&self, allow: Option<&RoaringTreemap>) -> Chunks {
        let mut out: Chunks = self
            .chunks
            .iter()
            .zip(&self.masks)
            .zip(&self.payloads)
            .map(|((c, m), p)| (c.clone(), m.clone(), p.clone()))
            .collect();
        if let Some(allow) = allow {
            for m in out.iter_mut().map(|(_, m, _)| m) {
                *m = LiveMask::none(m.rows());
            }
            // The id map holds live rows only.
            if allow.len() as usize <= self.ids.len() {
                for id in allow.iter() {
                    if let Some((c, r)) = self.row_of(id) {
                        out[c].1.set(r);
                    }
                }
            } else {
                for (&id, &(c, r)) in &self.ids {
                    if allow.contains(id) {
                        out[c as usize].1.set(r as usize);
                    }
                }
            }
        }
        out
    }

    /// The live rows of each chunk, in order.
    pub fn live_rows(&self) -> Vec<Vec<u32>> {
        self.masks
            .iter()
            .map(|m| m.iter().map(|r| r as u32).collect())
            .collect()
    }

    /// The chunks and their payloads, for writing a segment.
    pub fn chunk_sources(&self) -> Vec<(Arc<FlatIndex>, Arc<PayloadChunk>)> {
        self.chunks
            .iter()
            .cloned()
            .zip(self.payloads.iter().cloned())
            .collect()
    }
}
