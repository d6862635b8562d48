//! Immutable segment files: codes in the scan layout, mapped and searched in place.
//!
//! A segment is written once ([`write`]: temp name, fsync, rename, directory fsync) and never
//! modified; deletions live in the collection's manifest. [`Segment::open`] maps the file and
//! checks the header, section table and footer (cheap, always); [`Segment::verify`] checks every
//! section's crc32c (`gyre verify`, or on open when asked). The byte layout is in
//! `docs/format.md`; the arrays are cast from the map without copying, which is why every
//! section starts on a 64-byte boundary and the host must be little-endian.

#[cfg(target_endian = "big")]
compile_error!(
    "segment files are little-endian and mapped in place: big-endian hosts are not supported"
);

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::fsio::{self, IoContext, u32_at, u64_at};
use crate::metric::Metric;
use crate::quantizer::layout::{BLOCK, BlockedCodes};
use crate::quantizer::{QuantizerConfig, RotationKind, Variant, VectorScalars};
use crate::search::RerankStorage;
use crate::search::view::{Columns, Shape, VectorsRef, View};

/// First bytes of a segment file.
pub const MAGIC: &[u8; 8] = b"GYRESEG1";
/// Last bytes of a segment file.
pub const FOOTER_MAGIC: &[u8; 8] = b"GYREEND1";
/// Current format version.
pub const VERSION: u32 = 1;
const HEADER_BYTES: usize = 128;
const ENTRY_BYTES: usize = 32;
const ALIGN: usize = 64;

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
}

const KINDS: [Kind; 14] = [
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

/// Section lengths in bytes for `rows` rows.
fn lengths(shape: &Shape, rerank: RerankStorage, rows: usize) -> [usize; 14] {
    let q = &shape.quantizer;
    let blocked = shape.blocked.map_or(0, |b| b.bytes_for(rows));
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
    ]
}

fn layout(lengths: &[usize; 14]) -> ([usize; 14], usize) {
    let mut offsets = [0; 14];
    let mut at = HEADER_BYTES + ENTRY_BYTES * KINDS.len();
    for (o, &len) in offsets.iter_mut().zip(lengths) {
        at = at.next_multiple_of(ALIGN);
        *o = at;
        at += len;
    }
    (offsets, at)
}

fn footer_bytes() -> usize {
    (4 * KINDS.len()).next_multiple_of(8) + 24
}

fn header(meta: &SegmentMeta, shape: &Shape, id: u64, rows: usize) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    let c = &meta.config;
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
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
    h[56..60].copy_from_slice(&(KINDS.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c(&h[..124]);
    h[124..128].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Streams sections with a running crc32c.
struct SectionWriter {
    w: BufWriter<File>,
    pos: usize,
    crc: u32,
    path: PathBuf,
}

impl SectionWriter {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.pos += bytes.len();
        self.w.write_all(bytes).at(&self.path)
    }

    fn pad_to(&mut self, at: usize) -> Result<()> {
        let zeros = [0u8; ALIGN];
        let n = at - self.pos;
        self.pos = at;
        self.w.write_all(&zeros[..n]).at(&self.path)
    }
}

/// Rows taken from one source: a view and the rows of it to copy, in order.
pub(crate) type Source<'a> = (View<'a>, Vec<u32>);

/// Writes the rows of `sources` (concatenated in order; their ids must be distinct) as
/// segment `id` at `path`, durably. Returns the file's size in bytes.
pub(crate) fn write(
    path: &Path,
    meta: &SegmentMeta,
    shape: &Shape,
    id: u64,
    sources: &[Source<'_>],
) -> Result<u64> {
    let rows: usize = sources.iter().map(|(_, r)| r.len()).sum();
    if rows > u32::MAX as usize {
        return Err(Error::invalid_argument(
            "rows",
            format!("{rows} rows exceed a segment's limit of 2^32 - 1"),
        ));
    }
    let lens = lengths(shape, meta.rerank, rows);
    let (offsets, end) = layout(&lens);
    let tmp = fsio::temp_path(path);
    let file = File::create(&tmp).at(&tmp)?;
    let mut w = SectionWriter {
        w: BufWriter::with_capacity(1 << 20, file),
        pos: 0,
        crc: 0,
        path: tmp.clone(),
    };
    w.put(&header(meta, shape, id, rows))?;
    for ((kind, &off), &len) in KINDS.iter().zip(&offsets).zip(&lens) {
        let mut e = [0u8; ENTRY_BYTES];
        e[0..4].copy_from_slice(&(*kind as u32).to_le_bytes());
        e[8..16].copy_from_slice(&(off as u64).to_le_bytes());
        e[16..24].copy_from_slice(&(len as u64).to_le_bytes());
        w.put(&e)?;
    }
    let mut crcs = [0u32; 14];
    let rows_of = || {
        sources
            .iter()
            .flat_map(|(v, rs)| rs.iter().map(move |&r| (v, r as usize)))
    };
    // Sealing a memtable with no dead rows copies every array as it is.
    let whole = match sources {
        [(v, rows)] if rows.len() == v.cols.rows() => rows
            .iter()
            .enumerate()
            .all(|(i, &r)| r as usize == i)
            .then_some(v),
        _ => None,
    };
    for (i, kind) in KINDS.iter().enumerate() {
        w.pad_to(offsets[i])?;
        w.crc = 0;
        let q = &shape.quantizer;
        if let Some(bytes) = whole.and_then(|v| whole_section(*kind, v, meta.rerank)) {
            w.put(bytes)?;
            if w.pos != offsets[i] + lens[i] {
                return Err(Error::invalid_argument(
                    "rows",
                    format!("section {kind:?} of the source has the wrong size"),
                ));
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
            return Err(Error::invalid_argument(
                "rows",
                format!(
                    "section {kind:?} came out {} bytes, expected {}",
                    w.pos - offsets[i],
                    lens[i]
                ),
            ));
        }
        crcs[i] = w.crc;
    }
    // Footer: section crcs, padding, file length, table crc, footer crc, magic.
    let mut footer = Vec::with_capacity(footer_bytes());
    for c in crcs {
        footer.extend_from_slice(&c.to_le_bytes());
    }
    footer.resize((4 * KINDS.len()).next_multiple_of(8), 0);
    let total = end + footer_bytes();
    footer.extend_from_slice(&(total as u64).to_le_bytes());
    footer.extend_from_slice(&table_crc_of(&offsets, &lens).to_le_bytes());
    let fcrc = crc32c::crc32c(&footer);
    footer.extend_from_slice(&fcrc.to_le_bytes());
    footer.extend_from_slice(FOOTER_MAGIC);
    w.put(&footer)?;
    let file =
        w.w.into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
    file.sync_all().at(&tmp)?;
    drop(file);
    fsio::publish(path)?;
    Ok(total as u64)
}

/// A section's bytes when the source's rows are written unchanged (`None` for the sorted id
/// index, which is computed, and for absent sections).
fn whole_section<'a>(kind: Kind, v: &View<'a>, rerank: RerankStorage) -> Option<&'a [u8]> {
    let c = &v.cols;
    Some(match kind {
        Kind::Ids => bytemuck::cast_slice(c.ids),
        Kind::SortedIds | Kind::SortedRows => return None,
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

fn table_bytes(offsets: &[usize; 14], lens: &[usize; 14]) -> Vec<u8> {
    let mut t = Vec::with_capacity(ENTRY_BYTES * KINDS.len());
    for ((kind, &off), &len) in KINDS.iter().zip(offsets).zip(lens) {
        let mut e = [0u8; ENTRY_BYTES];
        e[0..4].copy_from_slice(&(*kind as u32).to_le_bytes());
        e[8..16].copy_from_slice(&(off as u64).to_le_bytes());
        e[16..24].copy_from_slice(&(len as u64).to_le_bytes());
        t.extend_from_slice(&e);
    }
    t
}

fn table_crc_of(offsets: &[usize; 14], lens: &[usize; 14]) -> u32 {
    crc32c::crc32c(&table_bytes(offsets, lens))
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
    let mut block = BlockedCodes::new(dim, bits)?;
    let mut n = 0;
    for (v, r) in rows {
        // Copy the row's 32-lane slot out of its source block: nibble m of row r sits in byte
        // `m·16 + r%16` of its block, high or low half by `r%32 ≥ 16`.
        let src = match kind {
            Kind::Plane => v.cols.plane,
            Kind::SketchBlocked => v.cols.sketch_blocked,
            _ => v.cols.blocked,
        };
        let src_block = &src[(r / BLOCK) * block_bytes..][..block_bytes];
        let packed = unblock(src_block, r % BLOCK, bits, dim);
        block.push(&packed);
        n += 1;
        if n == BLOCK {
            w.put(block.as_bytes())?;
            block = BlockedCodes::new(dim, bits)?;
            n = 0;
        }
    }
    if n > 0 {
        w.put(block.as_bytes())?;
    }
    Ok(())
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

/// A mapped, checked segment file.
#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    id: u64,
    rows: usize,
    map: memmap2::Mmap,
    sections: [(usize, usize); 14],
    crcs: [u32; 14],
    rerank: RerankStorage,
    /// Set when the segment left the manifest: the file is removed when the last reader drops it.
    obsolete: AtomicBool,
}

impl Segment {
    /// Maps and checks the segment at `path` against the collection's `meta`; with `verify`,
    /// also checks every section's crc32c.
    pub(crate) fn open(
        path: &Path,
        meta: &SegmentMeta,
        shape: &Shape,
        verify: bool,
    ) -> Result<Segment> {
        let bad = |reason: String| Error::corrupt(path, reason);
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len() as usize;
        if len < HEADER_BYTES + ENTRY_BYTES * KINDS.len() + footer_bytes() {
            return Err(bad(format!("{len} bytes is too short for a segment")));
        }
        // SAFETY: segment files are immutable once renamed into place: Gyre never opens them
        // for writing again, and removes them only after the last map is dropped. Another
        // process truncating the file would be outside the storage contract (as for any mmap).
        let map = unsafe { memmap2::Mmap::map(&file) }.at(path)?;
        let h = &map[..HEADER_BYTES];
        if &h[0..8] != MAGIC {
            return Err(bad("not a Gyre segment (bad magic)".into()));
        }
        if crc32c::crc32c(&h[..124]) != u32_at(h, 124) {
            return Err(bad("header checksum mismatch".into()));
        }
        let version = u32_at(h, 8);
        if version != VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads {VERSION}"
            )));
        }
        if u32_at(h, 56) as usize != KINDS.len() {
            return Err(bad(format!(
                "{} sections, this build's format has {}",
                u32_at(h, 56),
                KINDS.len()
            )));
        }
        let rows = u64_at(h, 40) as usize;
        let id = u64_at(h, 48);
        let expected = header(meta, shape, id, rows);
        if h[..60] != expected[..60] {
            return Err(bad(
                "header does not match the collection's configuration (dim, bits, metric, variant, rotation, rerank, seed or codebook)"
                    .into(),
            ));
        }
        let f = &map[len - footer_bytes()..];
        if &f[f.len() - 8..] != FOOTER_MAGIC {
            return Err(bad("footer magic missing (truncated file?)".into()));
        }
        let fc = f.len() - 12;
        if crc32c::crc32c(&f[..fc]) != u32_at(f, fc) {
            return Err(bad("footer checksum mismatch".into()));
        }
        let pad = (4 * KINDS.len()).next_multiple_of(8);
        if u64_at(f, pad) as usize != len {
            return Err(bad(format!(
                "file is {len} bytes, footer says {}",
                u64_at(f, pad)
            )));
        }
        let lens = lengths(shape, meta.rerank, rows);
        let (offsets, end) = layout(&lens);
        let table = &map[HEADER_BYTES..HEADER_BYTES + ENTRY_BYTES * KINDS.len()];
        if crc32c::crc32c(table) != u32_at(f, pad + 8) || table != table_bytes(&offsets, &lens) {
            return Err(bad("section table checksum or layout mismatch".into()));
        }
        if end + footer_bytes() != len {
            return Err(bad("sections do not fill the file".into()));
        }
        let mut sections = [(0, 0); 14];
        let mut crcs = [0; 14];
        for i in 0..KINDS.len() {
            sections[i] = (offsets[i], lens[i]);
            crcs[i] = u32_at(f, 4 * i);
        }
        let seg = Segment {
            path: path.to_path_buf(),
            id,
            rows,
            map,
            sections,
            crcs,
            rerank: meta.rerank,
            obsolete: AtomicBool::new(false),
        };
        if verify {
            seg.verify()?;
        }
        // Rerank reads a few scattered rows of the vectors: read-ahead would pull in
        // neighbours nobody asked for and crowd the codes out of memory. Advice only.
        let (off, len) = seg.sections[Kind::Vectors as usize - 1];
        if len > 0 {
            let _ = seg.map.advise_range(memmap2::Advice::Random, off, len);
        }
        Ok(seg)
    }

    /// Checks every section's crc32c and that the id index is sorted and covers every row.
    pub fn verify(&self) -> Result<()> {
        for (i, kind) in KINDS.iter().enumerate() {
            if crc32c::crc32c(self.bytes(*kind)) != self.crcs[i] {
                return Err(Error::corrupt(
                    &self.path,
                    format!("section {kind:?} checksum mismatch"),
                ));
            }
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
        let (off, len) = self.sections[kind as usize - 1];
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

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
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
            blocked: self.bytes(Kind::Blocked),
            plane: self.bytes(Kind::Plane),
            plane_factor: bytemuck::cast_slice(self.bytes(Kind::PlaneFactor)),
            key_factor: bytemuck::cast_slice(self.bytes(Kind::KeyFactor)),
            key_offset: bytemuck::cast_slice(self.bytes(Kind::KeyOffset)),
            sketch_blocked: self.bytes(Kind::SketchBlocked),
            sketch_factor: bytemuck::cast_slice(self.bytes(Kind::SketchFactor)),
            vectors,
        }
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

    /// Marks the file for removal once the last reader lets go of it.
    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            // Best effort: a file left behind is not in the manifest and is removed on open.
            let _ = std::fs::remove_file(&self.path);
        }
    }
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
