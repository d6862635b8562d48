//! Immutable segment files: codes in the scan layout, mapped and searched in place.
//!
//! A segment is written once ([`write`], streamed through a [`Directory`]: temp name, fsync,
//! rename, directory fsync) and never modified; deletions live in the collection's manifest.
//! [`Segment::open`] maps the file and checks the header, section table and footer (cheap,
//! always); [`Segment::verify`] checks every section's crc32c (`gyre verify`, or on open when
//! asked). The byte layout is in `docs/format.md`; the arrays are cast from the map without
//! copying, which is why every section starts on a 64-byte boundary and the host must be
//! little-endian.
//!
//! The file is self-describing (format 2): a table at the end lists every section with its
//! kind, flags, offset, length and crc32c. A reader requires every section kind it knows,
//! skips unknown kinds marked optional and refuses unknown required ones. Format 1 files (a
//! positional table of exactly 14 sections, checksums in the footer) still open.

#[cfg(target_endian = "big")]
compile_error!(
    "segment files are little-endian and mapped in place: big-endian hosts are not supported"
);

use std::path::{Path, PathBuf};

use crate::directory::{Directory, FileBytes, FileWriter};
use crate::error::{Error, Result};
use crate::fsio::{u32_at, u64_at};
use crate::metric::Metric;
use crate::payload::{FieldIndex, PayloadSlice, Schema};
use crate::quantizer::layout::{BLOCK, BlockedCodes};
use crate::quantizer::{QuantizerConfig, RotationKind, Variant, VectorScalars};
use crate::search::RerankStorage;
use crate::search::view::{Columns, Shape, VectorsRef, View};
use std::collections::BTreeMap;
use std::sync::Arc;

/// First bytes of a segment file.
pub const MAGIC: &[u8; 8] = b"GYRESEG1";
/// Last bytes of a segment file.
pub const FOOTER_MAGIC: &[u8; 8] = b"GYREEND1";
/// Current format version (4: a `Payloads` section; 3: 4-bit scalar codes' `Blocked` section
/// in the interleaved arrangement; 2: the section table at the end, with kind, flags and crc).
pub const VERSION: u32 = 4;
/// The first format with a `Payloads` section (older files' rows have no payloads).
const PAYLOADS_SINCE: u32 = 4;
/// The oldest format version this build opens.
pub const OLDEST_VERSION: u32 = 1;
const HEADER_BYTES: usize = 128;
const ENTRY_BYTES: usize = 32;
const ALIGN: usize = 64;
/// Footer of format 2: table offset, file length, table crc, footer crc, magic.
const FOOTER_V2: usize = 32;
/// Section flag: readers that do not know the kind may skip the section.
pub const FLAG_OPTIONAL: u32 = 1;
/// Kind of the optional `Graph` section: the segment's proximity graph and its 4-bit records
/// (`crate::graph`). Written after the required sections, flagged optional, so a reader
/// without graph support scans the segment instead; no format version change.
const GRAPH_KIND: u32 = 16;

/// The sections, in file order; the discriminant is the kind stored in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Kind {
    Ids = 1,
    SortedIds = 2,
    SortedRows = 3,
    Scalars = 4,
    KeyFactor = 5,
    KeyOffset = 6,
    Codes = 7,
    Sketches = 8,
    Blocked = 9,
    Plane = 10,
    PlaneFactor = 11,
    Vectors = 12,
    SketchBlocked = 13,
    SketchFactor = 14,
    Payloads = 15,
}

/// Sections of a format 1 file (the first 14 kinds, positional).
const KINDS_V1: usize = 14;
/// Every section kind this build knows.
const N: usize = 15;

const KINDS: [Kind; N] = [
    Kind::Ids,
    Kind::SortedIds,
    Kind::SortedRows,
    Kind::Scalars,
    Kind::KeyFactor,
    Kind::KeyOffset,
    Kind::Codes,
    Kind::Sketches,
    Kind::Blocked,
    Kind::Plane,
    Kind::PlaneFactor,
    Kind::Vectors,
    Kind::SketchBlocked,
    Kind::SketchFactor,
    Kind::Payloads,
];

/// What a segment's header records about the collection that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    /// The quantizer's configuration.
    pub config: QuantizerConfig,
    /// The metric.
    pub metric: Metric,
    /// Which full-precision copies the segment holds.
    pub rerank: RerankStorage,
}

fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::Dot => 1,
        Metric::L2 => 2,
    }
}

fn rerank_code(r: RerankStorage) -> u8 {
    match r {
        RerankStorage::None => 0,
        RerankStorage::F16 => 1,
        RerankStorage::F32 => 2,
    }
}

fn rerank_width(r: RerankStorage) -> usize {
    match r {
        RerankStorage::None => 0,
        RerankStorage::F16 => 2,
        RerankStorage::F32 => 4,
    }
}

/// crc32c of the codebook's centroids (f32, little-endian): the codebook's identity, so a
/// segment is never scored with different centroids than it was written with.
fn codebook_id(shape: &Shape) -> u32 {
    shape.quantizer.codebook().map_or(0, |cb| {
        crc32c::crc32c(bytemuck::cast_slice::<f32, u8>(cb.centroids_f32()))
    })
}

/// Section lengths in bytes for `rows` rows in format `version`; the `Payloads` section's
/// length is `payload_bytes` plus its offsets (checked apart: it varies with the payloads).
fn lengths(
    shape: &Shape,
    rerank: RerankStorage,
    rows: usize,
    version: u32,
    payload_bytes: usize,
) -> [usize; N] {
    let q = &shape.quantizer;
    let blocked = if version < 3 && shape.dot4.is_some() {
        // Nibble columns before format 3.
        rows.div_ceil(BLOCK) * crate::quantizer::layout::nibbles(q.dim(), 4).1 * 16
    } else {
        shape.blocked.map_or(0, |b| b.bytes_for(rows))
    };
    let (plane, plane_factor) = shape
        .plane
        .as_ref()
        .map_or((0, 0), |(p, _)| (p.bytes_for(rows), 4 * rows));
    [
        8 * rows,
        8 * rows,
        4 * rows,
        std::mem::size_of::<VectorScalars>() * rows,
        4 * rows,
        4 * rows,
        q.code_bytes() * rows,
        q.sketch_bytes() * rows,
        blocked,
        plane,
        plane_factor,
        rerank_width(rerank) * q.dim() * rows,
        shape.sketch.map_or(0, |b| b.bytes_for(rows)),
        if shape.sketch.is_some() { 4 * rows } else { 0 },
        if version >= PAYLOADS_SINCE {
            8 * (rows + 1) + payload_bytes
        } else {
            0
        },
    ]
}

/// Section offsets and the end of the last section, starting at `first`.
fn layout(lengths: &[usize], first: usize) -> ([usize; N], usize) {
    let mut offsets = [0; N];
    let mut at = first;
    for (o, &len) in offsets.iter_mut().zip(lengths) {
        at = at.next_multiple_of(ALIGN);
        *o = at;
        at += len;
    }
    (offsets, at)
}

/// Footer of format 1: section crcs, padding, file length, table crc, footer crc, magic.
fn footer_v1_bytes() -> usize {
    (4 * KINDS_V1).next_multiple_of(8) + 24
}

fn header(
    meta: &SegmentMeta,
    shape: &Shape,
    id: u64,
    rows: usize,
    version: u32,
    sections: usize,
) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    let c = &meta.config;
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
    h[16..20].copy_from_slice(&(c.dim as u32).to_le_bytes());
    h[20] = c.bits;
    h[21] = metric_code(meta.metric);
    h[22] = match c.variant {
        Variant::Mse => 0,
        Variant::Prod => 1,
    };
    h[23] = match c.rotation {
        RotationKind::Hadamard => 0,
        RotationKind::Dense => 1,
    };
    h[24] = rerank_code(meta.rerank);
    h[28..32].copy_from_slice(&codebook_id(shape).to_le_bytes());
    h[32..40].copy_from_slice(&c.seed.to_le_bytes());
    h[40..48].copy_from_slice(&(rows as u64).to_le_bytes());
    h[48..56].copy_from_slice(&id.to_le_bytes());
    h[56..60].copy_from_slice(&(sections as u32).to_le_bytes());
    let crc = crc32c::crc32c(&h[..124]);
    h[124..128].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Streams sections with a running crc32c, buffered (the directory's writer may be unbuffered).
struct SectionWriter {
    w: Box<dyn FileWriter>,
    buf: Vec<u8>,
    pos: usize,
    crc: u32,
}

impl SectionWriter {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.pos += bytes.len();
        if self.buf.len() + bytes.len() > WRITE_BUFFER {
            self.flush()?;
        }
        if bytes.len() >= WRITE_BUFFER {
            return self.w.write(bytes);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.w.write(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn pad_to(&mut self, at: usize) -> Result<()> {
        let zeros = [0u8; ALIGN];
        let n = at - self.pos;
        let crc = self.crc;
        self.put(&zeros[..n])?;
        self.crc = crc;
        Ok(())
    }
}

const WRITE_BUFFER: usize = 1 << 20;

/// Rows taken from one source: a view, the rows of it to copy (in order), their payloads.
pub(crate) type Source<'a> = (View<'a>, Vec<u32>, PayloadSlice<'a>);

/// Writes the rows of `sources` (concatenated in order; their ids must be distinct) as
/// segment `id` in `dir`, durably. Returns the file's size in bytes. On error no file of that
/// name appears (the temporary file is removed).
///
/// With `index`, a graph over the rows is built (before anything is written) and stored as
/// the `Graph` section.
pub(crate) fn write(
    dir: &dyn Directory,
    meta: &SegmentMeta,
    shape: &Shape,
    id: u64,
    sources: &[Source<'_>],
    index: Option<&crate::graph::BuildParams>,
) -> Result<u64> {
    let rows: usize = sources.iter().map(|(_, r, _)| r.len()).sum();
    if rows > u32::MAX as usize {
        return Err(Error::invalid_argument(
            "rows",
            format!("{rows} rows exceed a segment's limit of 2^32 - 1"),
        ));
    }
    let payload_bytes: usize = sources
        .iter()
        .map(|(_, rs, p)| rs.iter().map(|&r| p.get(r as usize).len()).sum::<usize>())
        .sum();
    let lens = lengths(shape, meta.rerank, rows, VERSION, payload_bytes);
    let (offsets, end) = layout(&lens, HEADER_BYTES);
    let graph = match index {
        Some(p) if rows > 1 => {
            p.check()?;
            let all = sources
                .iter()
                .flat_map(|(v, rs, _)| rs.iter().map(move |&r| (v, r as usize)));
            Some(crate::search::build_graph_over(shape, all, p))
        }
        _ => None,
    };
    let mut w = SectionWriter {
        w: dir.create(&file_name(id))?,
        buf: Vec::with_capacity(WRITE_BUFFER),
        pos: 0,
        crc: 0,
    };
    w.put(&header(
        meta,
        shape,
        id,
        rows,
        VERSION,
        KINDS.len() + usize::from(graph.is_some()),
    ))?;
    let mut crcs = [0u32; N];
    let rows_of = || {
        sources
            .iter()
            .flat_map(|(v, rs, _)| rs.iter().map(move |&r| (v, r as usize)))
    };
    // Sealing a memtable with no dead rows copies every array as it is: each source whole and
    // all but the last a whole number of blocks, so even the blocked arrays concatenate.
    let whole: Option<Vec<&View<'_>>> = sources
        .iter()
        .enumerate()
        .map(|(i, (v, rows, _))| {
            let all = rows.len() == v.cols.rows()
                && rows.iter().enumerate().all(|(j, &r)| r as usize == j)
                && (i + 1 == sources.len() || rows.len().is_multiple_of(BLOCK));
            all.then_some(v)
        })
        .collect();
    for (i, kind) in KINDS.iter().enumerate() {
        w.pad_to(offsets[i])?;
        w.crc = 0;
        let q = &shape.quantizer;
        let parts: Option<Vec<&[u8]>> = whole.as_ref().and_then(|vs| {
            vs.iter()
                .map(|v| whole_section(*kind, v, meta.rerank))
                .collect()
        });
        if let Some(parts) = parts {
            for bytes in parts {
                w.put(bytes)?;
            }
            if w.pos != offsets[i] + lens[i] {
                return Err(Error::internal(format!(
                    "section {kind:?} of the source has the wrong size"
                )));
            }
            crcs[i] = w.crc;
            continue;
        }
        match kind {
            Kind::Ids => {
                for (v, r) in rows_of() {
                    w.put(&v.cols.ids[r].to_le_bytes())?;
                }
            }
            Kind::SortedIds | Kind::SortedRows => {
                let mut sorted: Vec<(u64, u32)> = rows_of()
                    .enumerate()
                    .map(|(i, (v, r))| (v.cols.ids[r], i as u32))
                    .collect();
                sorted.sort_unstable();
                if sorted.windows(2).any(|p| p[0].0 == p[1].0) {
                    return Err(Error::invalid_argument(
                        "rows",
                        "a segment cannot hold two rows with the same id",
                    ));
                }
                for (id, row) in sorted {
                    if *kind == Kind::SortedIds {
                        w.put(&id.to_le_bytes())?;
                    } else {
                        w.put(&row.to_le_bytes())?;
                    }
                }
            }
            Kind::Scalars => {
                for (v, r) in rows_of() {
                    w.put(bytemuck::bytes_of(&v.cols.scalars[r]))?;
                }
            }
            Kind::KeyFactor | Kind::KeyOffset | Kind::PlaneFactor | Kind::SketchFactor => {
                let absent = (*kind == Kind::PlaneFactor && shape.plane.is_none())
                    || (*kind == Kind::SketchFactor && shape.sketch.is_none());
                if !absent {
                    for (v, r) in rows_of() {
                        let x = match kind {
                            Kind::KeyFactor => v.cols.key_factor[r],
                            Kind::KeyOffset => v.cols.key_offset[r],
                            Kind::PlaneFactor => v.cols.plane_factor[r],
                            _ => v.cols.sketch_factor[r],
                        };
                        w.put(&x.to_le_bytes())?;
                    }
                }
            }
            Kind::Codes => {
                let cb = q.code_bytes();
                for (v, r) in rows_of() {
                    w.put(&v.cols.codes[r * cb..(r + 1) * cb])?;
                }
            }
            Kind::Sketches => {
                let sb = q.sketch_bytes();
                if sb > 0 {
                    for (v, r) in rows_of() {
                        w.put(&v.cols.sketches[r * sb..(r + 1) * sb])?;
                    }
                }
            }
            Kind::Blocked | Kind::Plane | Kind::SketchBlocked => {
                let present = match kind {
                    Kind::Blocked => shape.blocked.is_some(),
                    Kind::Plane => shape.plane.is_some(),
                    _ => shape.sketch.is_some(),
                };
                if present {
                    write_blocked(&mut w, shape, *kind, rows_of())?;
                }
            }
            Kind::Payloads => {
                // Row r's payload is bytes[offsets[r]..offsets[r + 1]], offsets from the
                // section's payload bytes (just after the offsets).
                let mut at = 0u64;
                w.put(&at.to_le_bytes())?;
                for (_, rs, p) in sources {
                    for &r in rs {
                        at += p.get(r as usize).len() as u64;
                        w.put(&at.to_le_bytes())?;
                    }
                }
                for (_, rs, p) in sources {
                    for &r in rs {
                        w.put(p.get(r as usize))?;
                    }
                }
            }
            Kind::Vectors => {
                let d = q.dim();
                for (v, r) in rows_of() {
                    match (meta.rerank, v.cols.vectors) {
                        (RerankStorage::None, _) => break,
                        (RerankStorage::F32, VectorsRef::F32(x)) => {
                            w.put(bytemuck::cast_slice(&x[r * d..(r + 1) * d]))?
                        }
                        (RerankStorage::F16, VectorsRef::F16(x)) => {
                            w.put(bytemuck::cast_slice(&x[r * d..(r + 1) * d]))?
                        }
                        _ => {
                            return Err(Error::invalid_argument(
                                "rerank",
                                "source rows do not carry the segment's vector storage",
                            ));
                        }
                    }
                }
            }
        }
        if w.pos != offsets[i] + lens[i] {
            return Err(Error::internal(format!(
                "section {kind:?} came out {} bytes, expected {}",
                w.pos - offsets[i],
                lens[i]
            )));
        }
        crcs[i] = w.crc;
    }
    let mut entries = known_entries(&offsets, &lens, N, |i| crcs[i]);
    let mut end = end;
    if let Some(g) = &graph {
        let at = end.next_multiple_of(ALIGN);
        w.pad_to(at)?;
        w.crc = 0;
        w.put(g.bytes())?;
        entries.push(Entry {
            kind: GRAPH_KIND,
            flags: FLAG_OPTIONAL,
            offset: at as u64,
            len: g.bytes().len() as u64,
            crc: w.crc,
        });
        end = at + g.bytes().len();
    }
    // The table, then the footer: table offset, file length, table crc, footer crc, magic.
    let table_at = end.next_multiple_of(8);
    w.pad_to(table_at)?;
    let table = encode_table(&entries);
    let total = table_at + table.len() + FOOTER_V2;
    let mut footer = Vec::with_capacity(FOOTER_V2);
    footer.extend_from_slice(&(table_at as u64).to_le_bytes());
    footer.extend_from_slice(&(total as u64).to_le_bytes());
    footer.extend_from_slice(&crc32c::crc32c(&table).to_le_bytes());
    let fcrc = crc32c::crc32c(&footer);
    footer.extend_from_slice(&fcrc.to_le_bytes());
    footer.extend_from_slice(FOOTER_MAGIC);
    w.put(&table)?;
    w.put(&footer)?;
    w.flush()?;
    w.w.finish()?;
    Ok(total as u64)
}

/// One entry of the section table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    kind: u32,
    flags: u32,
    offset: u64,
    len: u64,
    crc: u32,
}

/// Table entries of the known sections, in kind order (all required).
fn known_entries(
    offsets: &[usize; N],
    lens: &[usize; N],
    count: usize,
    crc: impl Fn(usize) -> u32,
) -> Vec<Entry> {
    KINDS[..count]
        .iter()
        .enumerate()
        .map(|(i, &kind)| Entry {
            kind: kind as u32,
            flags: 0,
            offset: offsets[i] as u64,
            len: lens[i] as u64,
            crc: crc(i),
        })
        .collect()
}

fn encode_table(entries: &[Entry]) -> Vec<u8> {
    let mut t = Vec::with_capacity(ENTRY_BYTES * entries.len());
    for e in entries {
        t.extend_from_slice(&e.kind.to_le_bytes());
        t.extend_from_slice(&e.flags.to_le_bytes());
        t.extend_from_slice(&e.offset.to_le_bytes());
        t.extend_from_slice(&e.len.to_le_bytes());
        t.extend_from_slice(&e.crc.to_le_bytes());
        t.extend_from_slice(&[0u8; 4]);
    }
    t
}

fn decode_table(t: &[u8]) -> Vec<Entry> {
    t.chunks_exact(ENTRY_BYTES)
        .map(|e| Entry {
            kind: u32_at(e, 0),
            flags: u32_at(e, 4),
            offset: u64_at(e, 8),
            len: u64_at(e, 16),
            crc: u32_at(e, 24),
        })
        .collect()
}

/// A section's bytes when the source's rows are written unchanged (`None` for the sorted id
/// index, which is computed, and for absent sections).
fn whole_section<'a>(kind: Kind, v: &View<'a>, rerank: RerankStorage) -> Option<&'a [u8]> {
    let c = &v.cols;
    Some(match kind {
        Kind::Ids => bytemuck::cast_slice(c.ids),
        Kind::SortedIds | Kind::SortedRows | Kind::Payloads => return None,
        Kind::Scalars => bytemuck::cast_slice(c.scalars),
        Kind::KeyFactor => bytemuck::cast_slice(c.key_factor),
        Kind::KeyOffset => bytemuck::cast_slice(c.key_offset),
        Kind::Codes => c.codes,
        Kind::Sketches => c.sketches,
        Kind::Blocked => c.blocked,
        Kind::Plane => c.plane,
        Kind::PlaneFactor => bytemuck::cast_slice(c.plane_factor),
        Kind::SketchBlocked => c.sketch_blocked,
        Kind::SketchFactor => bytemuck::cast_slice(c.sketch_factor),
        Kind::Vectors => match (rerank, c.vectors) {
            (RerankStorage::None, _) => &[],
            (RerankStorage::F32, VectorsRef::F32(x)) => bytemuck::cast_slice(x),
            (RerankStorage::F16, VectorsRef::F16(x)) => bytemuck::cast_slice(x),
            _ => return None,
        },
    })
}

/// The positional table of format 1.
fn table_v1_bytes(offsets: &[usize; N], lens: &[usize; N]) -> Vec<u8> {
    let mut t = Vec::with_capacity(ENTRY_BYTES * KINDS_V1);
    for ((kind, &off), &len) in KINDS[..KINDS_V1].iter().zip(offsets).zip(lens) {
        let mut e = [0u8; ENTRY_BYTES];
        e[0..4].copy_from_slice(&(*kind as u32).to_le_bytes());
        e[8..16].copy_from_slice(&(off as u64).to_le_bytes());
        e[16..24].copy_from_slice(&(len as u64).to_le_bytes());
        t.extend_from_slice(&e);
    }
    t
}

/// Re-blocks the rows' codes, sign planes or QJL sign bits (by `kind`) 32 at a time.
fn write_blocked<'a>(
    w: &mut SectionWriter,
    shape: &Shape,
    kind: Kind,
    rows: impl Iterator<Item = (&'a View<'a>, usize)>,
) -> Result<()> {
    let dim = shape.quantizer.dim();
    let (bits, block_bytes) = match kind {
        Kind::Plane => (1, shape.plane.as_ref().expect("plane").0.block_bytes),
        Kind::SketchBlocked => (1, shape.sketch.expect("sketch").block_bytes),
        _ => (
            crate::quantizer::layout::scan_bits(shape.quantizer.config().mse_bits())
                .expect("blocked"),
            shape.blocked.expect("blocked").block_bytes,
        ),
    };
    let interleaved = kind == Kind::Blocked && shape.dot4.is_some();
    let fresh = || {
        if interleaved {
            Ok(BlockedCodes::interleaved(dim))
        } else {
            BlockedCodes::new(dim, bits)
        }
    };
    let mut block = fresh()?;
    let mut n = 0;
    let mut packed = vec![0u8; (dim * bits as usize).div_ceil(8)];
    for (v, r) in rows {
        // Copy the row's 32-lane slot out of its source block.
        let src = match kind {
            Kind::Plane => v.cols.plane,
            Kind::SketchBlocked => v.cols.sketch_blocked,
            _ => v.cols.blocked,
        };
        if interleaved {
            crate::quantizer::layout::interleaved_row(src, dim, r, &mut packed);
        } else {
            let src_block = &src[(r / BLOCK) * block_bytes..][..block_bytes];
            packed = unblock(src_block, r % BLOCK, bits, dim);
        }
        block.push(&packed);
        n += 1;
        if n == BLOCK {
            w.put(block.as_bytes())?;
            block = fresh()?;
            n = 0;
        }
    }
    if n > 0 {
        w.put(block.as_bytes())?;
    }
    Ok(())
}

/// The interleaved arrangement of the 4-bit codes a format 1 or 2 file stores in nibble
/// columns.
fn rearrange_v2(blocked: &[u8], rows: usize, shape: &Shape) -> Vec<u8> {
    let dim = shape.quantizer.dim();
    let old = crate::quantizer::layout::nibbles(dim, 4).1 * 16;
    let mut out = BlockedCodes::interleaved(dim);
    for r in 0..rows {
        let src = &blocked[(r / BLOCK) * old..][..old];
        out.push(&unblock(src, r % BLOCK, 4, dim));
    }
    out.as_bytes().to_vec()
}

/// The packed code of lane `lane` of one block.
fn unblock(block: &[u8], lane: usize, bits: u8, dim: usize) -> Vec<u8> {
    let (m, _) = crate::quantizer::layout::nibbles(dim, bits);
    let mut packed = vec![0u8; (dim * bits as usize).div_ceil(8)];
    for i in 0..m {
        let byte = block[i * 16 + lane % 16];
        let nib = if lane >= 16 { byte >> 4 } else { byte & 0x0f };
        packed[i / 2] |= nib << (4 * (i % 2));
    }
    packed
}

/// A mapped, checked segment file. The file is removed by the collection's garbage
/// collection once no manifest and no live snapshot uses it, never by the segment itself.
#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    name: String,
    id: u64,
    rows: usize,
    version: u32,
    map: FileBytes,
    /// Offset, length and crc32c of each known section, by `kind - 1`.
    sections: [(usize, usize, u32); N],
    rerank: RerankStorage,
    /// 4-bit codes of a file older than format 3, re-arranged in memory for the `dot4`
    /// kernels (the file's `Blocked` section holds them in nibble columns).
    rearranged: Option<Vec<u8>>,
    /// Offset, length and crc32c of the `Graph` section, when the segment has one (checked
    /// on open by `GraphRef::parse`), and the stride of its records.
    graph: Option<(usize, usize, u32)>,
    graph_stride: usize,
    /// Indexes of the collection's indexed payload fields, built from the `Payloads` section
    /// (derived data, never stored); replaced whole when a field is added.
    indexes: std::sync::RwLock<Arc<FieldIndexes>>,
}

/// A segment's field indexes by field name.
pub type FieldIndexes = BTreeMap<String, Arc<FieldIndex>>;

impl Segment {
    /// Maps segment `id` of `dir` and checks it against the collection's `meta`; with
    /// `verify`, also checks every section's crc32c.
    pub(crate) fn open(
        dir: &dyn Directory,
        id: u64,
        meta: &SegmentMeta,
        shape: &Shape,
        verify: bool,
    ) -> Result<Segment> {
        let name = file_name(id);
        let path = dir.path_of(&name);
        let map = dir.map(&name)?;
        Segment::from_bytes(&path, name, map, meta, shape, verify)
    }

    fn from_bytes(
        path: &Path,
        name: String,
        map: FileBytes,
        meta: &SegmentMeta,
        shape: &Shape,
        verify: bool,
    ) -> Result<Segment> {
        let bad = |reason: String| Error::corrupt(path, reason);
        let len = map.len();
        if len < HEADER_BYTES + FOOTER_V2 {
            return Err(bad(format!("{len} bytes is too short for a segment")));
        }
        let h = &map[..HEADER_BYTES];
        if &h[0..8] != MAGIC {
            return Err(bad("not a Gyre segment (bad magic)".into()));
        }
        if crc32c::crc32c(&h[..124]) != u32_at(h, 124) {
            return Err(bad("header checksum mismatch".into()));
        }
        let version = u32_at(h, 8);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(bad(format!(
                "format version {version}, this build reads {OLDEST_VERSION} to {VERSION}"
            )));
        }
        let count = u32_at(h, 56) as usize;
        let rows = u64_at(h, 40) as usize;
        let id = u64_at(h, 48);
        let expected = header(meta, shape, id, rows, version, count);
        if h[..60] != expected[..60] {
            return Err(bad(
                "header does not match the collection's configuration (dim, bits, metric, variant, rotation, rerank, seed or codebook)"
                    .into(),
            ));
        }
        let lens = lengths(shape, meta.rerank, rows, version, 0);
        let entries = if version == 1 {
            read_table_v1(&map, count, &lens).map_err(bad)?
        } else {
            read_table_v2(&map, count).map_err(bad)?
        };
        let mut sections = [(0, 0, 0); N];
        let mut graph = None;
        let mut seen = [false; N];
        let mut prev_end = HEADER_BYTES;
        for e in &entries {
            let (off, n) = (e.offset as usize, e.len as usize);
            if !off.is_multiple_of(ALIGN)
                || off < prev_end
                || off.checked_add(n).is_none_or(|end| end > len)
            {
                return Err(bad(format!(
                    "section kind {} at {off} (+{n}) is misplaced",
                    e.kind
                )));
            }
            prev_end = off + n;
            if e.kind == GRAPH_KIND && version >= 2 {
                if graph.is_some() {
                    return Err(bad("the graph section appears twice".into()));
                }
                // A graph of another version is derived data this build cannot walk: the
                // segment is scanned instead until a compaction writes it anew.
                if n >= 4 && crate::fsio::u32_at(&map[off..], 0) == crate::graph::GRAPH_VERSION {
                    graph = Some((off, n, e.crc));
                }
                continue;
            }
            match KINDS.iter().position(|k| *k as u32 == e.kind) {
                Some(i) => {
                    if seen[i] {
                        return Err(bad(format!("section {:?} appears twice", KINDS[i])));
                    }
                    let payloads = KINDS[i] == Kind::Payloads;
                    if (payloads && n < lens[i]) || (!payloads && n != lens[i]) {
                        return Err(bad(format!(
                            "section {:?} is {n} bytes, {rows} rows need {}",
                            KINDS[i], lens[i]
                        )));
                    }
                    seen[i] = true;
                    sections[i] = (off, n, e.crc);
                }
                None if e.flags & FLAG_OPTIONAL != 0 => {}
                None => {
                    return Err(bad(format!(
                        "required section kind {} is unknown to this build (written by a newer Gyre?)",
                        e.kind
                    )));
                }
            }
        }
        if version < PAYLOADS_SINCE {
            seen[Kind::Payloads as usize - 1] = true;
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(bad(format!("required section {:?} is missing", KINDS[i])));
        }
        let seg = Segment {
            path: path.to_path_buf(),
            name,
            id,
            rows,
            version,
            map,
            sections,
            rerank: meta.rerank,
            rearranged: None,
            graph,
            graph_stride: crate::search::graph_record_stride(shape),
            indexes: std::sync::RwLock::new(Arc::new(BTreeMap::new())),
        };
        if verify {
            seg.verify()?;
        }
        seg.check_payloads()?;
        if let Some((off, len, _)) = seg.graph {
            crate::graph::GraphRef::parse(&seg.map[off..off + len], rows, seg.graph_stride)
                .map_err(|r| bad(format!("graph section: {r}")))?;
        }
        let mut seg = seg;
        if version < 3 && shape.dot4.is_some() {
            seg.rearranged = Some(rearrange_v2(seg.bytes(Kind::Blocked), rows, shape));
        }
        // Rerank reads a few scattered rows of the vectors: read-ahead would pull in
        // neighbours nobody asked for and crowd the codes out of memory. Advice only.
        let (off, len, _) = seg.sections[Kind::Vectors as usize - 1];
        if len > 0 {
            let _ = seg.map.advise_range(memmap2::Advice::Random, off, len);
        }
        Ok(seg)
    }

    /// Checks every section's crc32c and that the id index is sorted and covers every row.
    pub fn verify(&self) -> Result<()> {
        for (i, kind) in KINDS.iter().enumerate() {
            if crc32c::crc32c(self.bytes(*kind)) != self.sections[i].2 {
                return Err(Error::corrupt(
                    &self.path,
                    format!("section {kind:?} checksum mismatch"),
                ));
            }
        }
        if let Some((off, len, crc)) = self.graph
            && crc32c::crc32c(&self.map[off..off + len]) != crc
        {
            return Err(Error::corrupt(
                &self.path,
                "section Graph checksum mismatch",
            ));
        }
        let cols = self.columns();
        let sorted: &[u64] = bytemuck::cast_slice(self.bytes(Kind::SortedIds));
        let rows: &[u32] = bytemuck::cast_slice(self.bytes(Kind::SortedRows));
        if sorted.windows(2).any(|p| p[0] >= p[1])
            || sorted
                .iter()
                .zip(rows)
                .any(|(&id, &r)| cols.ids.get(r as usize) != Some(&id))
        {
            return Err(Error::corrupt(
                &self.path,
                "id index is inconsistent with the ids",
            ));
        }
        Ok(())
    }

    fn bytes(&self, kind: Kind) -> &[u8] {
        let (off, len, _) = self.sections[kind as usize - 1];
        &self.map[off..off + len]
    }

    /// The segment's number (its file name is derived from it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Rows stored (live and deleted).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The file's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's name in its directory.
    pub fn file_name(&self) -> &str {
        &self.name
    }

    /// The format version the file was written in.
    pub fn format_version(&self) -> u32 {
        self.version
    }

    /// True when the segment carries a graph (searches walk it instead of scanning).
    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Bytes of the `Graph` section (0 without one).
    pub fn graph_bytes(&self) -> u64 {
        self.graph.map_or(0, |g| g.1 as u64)
    }

    /// File size in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// The mapped arrays. Open checked sizes and 64-byte alignment, so the casts cannot fail.
    pub(crate) fn columns(&self) -> Columns<'_> {
        let vectors = match self.rerank {
            RerankStorage::None => VectorsRef::None,
            RerankStorage::F32 => VectorsRef::F32(bytemuck::cast_slice(self.bytes(Kind::Vectors))),
            RerankStorage::F16 => VectorsRef::F16(bytemuck::cast_slice(self.bytes(Kind::Vectors))),
        };
        Columns {
            ids: bytemuck::cast_slice(self.bytes(Kind::Ids)),
            codes: self.bytes(Kind::Codes),
            sketches: self.bytes(Kind::Sketches),
            scalars: bytemuck::cast_slice(self.bytes(Kind::Scalars)),
            blocked: self
                .rearranged
                .as_deref()
                .unwrap_or_else(|| self.bytes(Kind::Blocked)),
            plane: self.bytes(Kind::Plane),
            plane_factor: bytemuck::cast_slice(self.bytes(Kind::PlaneFactor)),
            key_factor: bytemuck::cast_slice(self.bytes(Kind::KeyFactor)),
            key_offset: bytemuck::cast_slice(self.bytes(Kind::KeyOffset)),
            sketch_blocked: self.bytes(Kind::SketchBlocked),
            sketch_factor: bytemuck::cast_slice(self.bytes(Kind::SketchFactor)),
            vectors,
            graph: self.graph.and_then(|(off, len, _)| {
                crate::graph::GraphRef::layout(
                    &self.map[off..off + len],
                    self.rows,
                    self.graph_stride,
                )
                .ok()
            }),
        }
    }

    /// The rows' encoded payloads (empty for every row of a file older than format 4).
    pub fn payloads(&self) -> PayloadSlice<'_> {
        let b = self.bytes(Kind::Payloads);
        if b.is_empty() {
            return PayloadSlice::EMPTY;
        }
        let (offsets, bytes) = b.split_at(8 * (self.rows + 1));
        PayloadSlice::new(bytemuck::cast_slice(offsets), bytes)
    }

    /// Checks the `Payloads` section's structure (offsets increasing, ending at the section's
    /// end, every payload well formed): after it, reads of payloads cannot go wrong.
    fn check_payloads(&self) -> Result<()> {
        let b = self.bytes(Kind::Payloads);
        if b.is_empty() {
            return Ok(());
        }
        let (offsets, bytes) = b.split_at(8 * (self.rows + 1));
        let offsets: &[u64] = bytemuck::cast_slice(offsets);
        let bad = |r: &str| Err(Error::corrupt(&self.path, format!("payload section: {r}")));
        if offsets[0] != 0 || offsets[self.rows] != bytes.len() as u64 {
            return bad("offsets do not span the section");
        }
        if offsets.windows(2).any(|w| w[0] > w[1]) {
            return bad("offsets decrease");
        }
        for w in offsets.windows(2) {
            if !crate::payload::check_encoded(&bytes[w[0] as usize..w[1] as usize]) {
                return bad("a payload is malformed");
            }
        }
        Ok(())
    }

    /// Builds the indexes of `schema`'s indexed fields this segment lacks.
    pub(crate) fn ensure_indexes(&self, schema: &Schema) {
        let have = self.indexes();
        let missing: Vec<_> = schema
            .indexed()
            .filter(|(f, _)| !have.contains_key(*f))
            .collect();
        if missing.is_empty() {
            return;
        }
        let payloads = self.payloads();
        let mut next = (*have).clone();
        for (field, kind) in missing {
            let ix = FieldIndex::build(kind, field, self.rows as u32, |r| payloads.get(r as usize));
            next.insert(field.to_string(), Arc::new(ix));
        }
        if let Ok(mut slot) = self.indexes.write() {
            *slot = Arc::new(next);
        }
    }

    /// The field indexes built so far.
    pub fn indexes(&self) -> Arc<FieldIndexes> {
        self.indexes
            .read()
            .map_or_else(|_| Arc::new(BTreeMap::new()), |g| g.clone())
    }

    /// `(id, row)` in id order, from the first id greater than `after` (every id when `None`).
    pub(crate) fn ids_after(&self, after: Option<u64>) -> impl Iterator<Item = (u64, usize)> + '_ {
        let sorted: &[u64] = bytemuck::cast_slice(self.bytes(Kind::SortedIds));
        let rows: &[u32] = bytemuck::cast_slice(self.bytes(Kind::SortedRows));
        let start = after.map_or(0, |a| sorted.partition_point(|&id| id <= a));
        sorted[start..]
            .iter()
            .zip(&rows[start..])
            .map(|(&id, &r)| (id, r as usize))
    }

    /// The row holding `id`, by binary search in the sorted id index. The row is checked
    /// against the ids section, so a damaged index yields "not found", never a wrong row.
    pub(crate) fn find(&self, id: u64) -> Option<usize> {
        let sorted: &[u64] = bytemuck::cast_slice(self.bytes(Kind::SortedIds));
        let rows: &[u32] = bytemuck::cast_slice(self.bytes(Kind::SortedRows));
        let ids: &[u64] = bytemuck::cast_slice(self.bytes(Kind::Ids));
        let row = rows[sorted.binary_search(&id).ok()?] as usize;
        (ids.get(row) == Some(&id)).then_some(row)
    }
}

/// Reads the format-2 table: the footer points at it, crc-checked.
fn read_table_v2(map: &[u8], count: usize) -> std::result::Result<Vec<Entry>, String> {
    let len = map.len();
    let f = &map[len - FOOTER_V2..];
    if &f[24..32] != FOOTER_MAGIC {
        return Err("footer magic missing (truncated file?)".into());
    }
    if crc32c::crc32c(&f[..20]) != u32_at(f, 20) {
        return Err("footer checksum mismatch".into());
    }
    if u64_at(f, 8) as usize != len {
        return Err(format!("file is {len} bytes, footer says {}", u64_at(f, 8)));
    }
    let at = u64_at(f, 0) as usize;
    let end = count
        .checked_mul(ENTRY_BYTES)
        .and_then(|n| n.checked_add(at))
        .filter(|&e| e == len - FOOTER_V2 && at >= HEADER_BYTES)
        .ok_or("section table does not end at the footer")?;
    let table = &map[at..end];
    if crc32c::crc32c(table) != u32_at(f, 16) {
        return Err("section table checksum mismatch".into());
    }
    let entries = decode_table(table);
    if entries
        .iter()
        .any(|e| e.offset.saturating_add(e.len) > at as u64)
    {
        return Err("a section overlaps the table".into());
    }
    Ok(entries)
}

/// Reads the format-1 table: exactly the 14 sections in their fixed order, crcs in the footer.
fn read_table_v1(
    map: &[u8],
    count: usize,
    lens: &[usize; N],
) -> std::result::Result<Vec<Entry>, String> {
    let len = map.len();
    if count != KINDS_V1 {
        return Err(format!("{count} sections, format 1 has {KINDS_V1}"));
    }
    if len < HEADER_BYTES + ENTRY_BYTES * KINDS_V1 + footer_v1_bytes() {
        return Err(format!("{len} bytes is too short for a segment"));
    }
    let f = &map[len - footer_v1_bytes()..];
    if &f[f.len() - 8..] != FOOTER_MAGIC {
        return Err("footer magic missing (truncated file?)".into());
    }
    let fc = f.len() - 12;
    if crc32c::crc32c(&f[..fc]) != u32_at(f, fc) {
        return Err("footer checksum mismatch".into());
    }
    let pad = (4 * KINDS_V1).next_multiple_of(8);
    if u64_at(f, pad) as usize != len {
        return Err(format!(
            "file is {len} bytes, footer says {}",
            u64_at(f, pad)
        ));
    }
    let (offsets, end) = layout(&lens[..KINDS_V1], HEADER_BYTES + ENTRY_BYTES * KINDS_V1);
    let table = &map[HEADER_BYTES..HEADER_BYTES + ENTRY_BYTES * KINDS_V1];
    if crc32c::crc32c(table) != u32_at(f, pad + 8) || table != table_v1_bytes(&offsets, lens) {
        return Err("section table checksum or layout mismatch".into());
    }
    if end + footer_v1_bytes() != len {
        return Err("sections do not fill the file".into());
    }
    Ok(known_entries(&offsets, lens, KINDS_V1, |i| {
        u32_at(f, 4 * i)
    }))
}

/// The file name of segment `id`.
pub fn file_name(id: u64) -> String {
    format!("seg-{id:016x}.gseg")
}

/// Parses [`file_name`].
pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".gseg")?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;
    use crate::quantizer::QuantizerConfig;
    use crate::quantizer::layout::{BlockedCodes, interleaved_row};
    use crate::quantizer::packing::{pack, packed_len};
    use crate::random::SeededRng;

    /// Format 1 and 2 files keep 4-bit codes in nibble columns; opening re-arranges them into
    /// exactly the interleaved bytes the current writer produces, at every dimension
    /// (multiples of 8 or not) and with a partial last block.
    #[test]
    fn older_4_bit_blocks_rearrange_to_the_interleaved_layout() {
        let mut rng = SeededRng::for_data(5);
        for dim in [3usize, 7, 8, 50, 255, 256, 383, 384] {
            let shape = Shape::new(QuantizerConfig::new(dim, 4), Metric::Cosine).unwrap();
            assert!(shape.dot4.is_some());
            let rows = 70;
            let (mut old, mut new) = (
                BlockedCodes::new(dim, 4).unwrap(),
                BlockedCodes::interleaved(dim),
            );
            let mut packed_rows = Vec::new();
            for _ in 0..rows {
                let codes: Vec<u8> = (0..dim).map(|_| rng.below(16) as u8).collect();
                let mut p = vec![0u8; packed_len(dim, 4)];
                pack(&codes, 4, &mut p);
                old.push(&p);
                new.push(&p);
                packed_rows.push(p);
            }
            assert_eq!(
                old.as_bytes().len(),
                lengths(&shape, RerankStorage::None, rows, 2, 0)[Kind::Blocked as usize - 1],
                "dim={dim}"
            );
            assert_eq!(
                new.as_bytes().len(),
                lengths(&shape, RerankStorage::None, rows, VERSION, 0)[Kind::Blocked as usize - 1]
            );
            let got = rearrange_v2(old.as_bytes(), rows, &shape);
            assert_eq!(got, new.as_bytes(), "dim={dim}");
            let mut back = vec![0u8; packed_len(dim, 4)];
            for (r, p) in packed_rows.iter().enumerate() {
                interleaved_row(&got, dim, r, &mut back);
                assert_eq!(&back, p);
            }
        }
    }
}
