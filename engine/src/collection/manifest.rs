//! The manifest (which segments are live, from which WAL file to replay) and the deletion
//! bitmap files it points to. Both are replaced, never edited: write a new file, fsync, rename,
//! fsync the directory. Byte layouts in `docs/format.md`.

use std::path::Path;

use roaring::RoaringBitmap;

use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::fsio::{u32_at, u64_at};

/// First bytes of the manifest.
pub const MAGIC: &[u8; 8] = b"GYREMAN1";
/// First bytes of a deletion bitmap file.
pub const DEL_MAGIC: &[u8; 8] = b"GYREDEL1";
const VERSION: u32 = 1;
const HEADER: usize = 48;
const ENTRY: usize = 40;

/// The manifest's file name.
pub const FILE: &str = "MANIFEST";

/// One live segment and its persisted deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Segment id.
    pub segment: u64,
    /// Rows in the segment file.
    pub rows: u64,
    /// Generation of its deletion file (0: no deletions).
    pub del_gen: u64,
    /// Deleted rows recorded in that file.
    pub del_count: u64,
    /// crc32c of that file's bitmap bytes.
    pub del_crc: u32,
}

/// The decoded manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Incremented by every write.
    pub generation: u64,
    /// WAL files numbered below this are covered by segments and may be removed.
    pub wal_seq: u64,
    /// The next segment id to hand out.
    pub next_segment: u64,
    /// The live segments.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Encodes the manifest.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + ENTRY * self.entries.len() + 8);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.wal_seq.to_le_bytes());
        b.extend_from_slice(&self.next_segment.to_le_bytes());
        b.extend_from_slice(&[0u8; 8]);
        for e in &self.entries {
            b.extend_from_slice(&e.segment.to_le_bytes());
            b.extend_from_slice(&e.rows.to_le_bytes());
            b.extend_from_slice(&e.del_gen.to_le_bytes());
            b.extend_from_slice(&e.del_count.to_le_bytes());
            b.extend_from_slice(&e.del_crc.to_le_bytes());
            b.extend_from_slice(&[0u8; 4]);
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(&[0u8; 4]);
        b
    }

    /// Decodes and checks a manifest read from `path`.
    pub fn decode(path: &Path, b: &[u8]) -> Result<Manifest> {
        let bad = |r: &str| Error::corrupt(path, r.to_string());
        if b.len() < HEADER + 8 || &b[..8] != MAGIC {
            return Err(bad("not a Gyre manifest (bad magic or too short)"));
        }
        let n = u32_at(b, 12) as usize;
        let body = HEADER + ENTRY * n;
        if b.len() != body + 8 {
            return Err(bad("length does not match the entry count (truncated?)"));
        }
        if crc32c::crc32c(&b[..body]) != u32_at(b, body) {
            return Err(bad("checksum mismatch"));
        }
        if u32_at(b, 8) != VERSION {
            return Err(bad("unknown manifest version"));
        }
        let entries = (0..n)
            .map(|i| {
                let e = &b[HEADER + ENTRY * i..];
                Entry {
                    segment: u64_at(e, 0),
                    rows: u64_at(e, 8),
                    del_gen: u64_at(e, 16),
                    del_count: u64_at(e, 24),
                    del_crc: u32_at(e, 32),
                }
            })
            .collect();
        Ok(Manifest {
            generation: u64_at(b, 16),
            wal_seq: u64_at(b, 24),
            next_segment: u64_at(b, 32),
            entries,
        })
    }

    /// Reads and checks the manifest in `dir`.
    pub fn load(dir: &dyn Directory) -> Result<Manifest> {
        Manifest::decode(&dir.path_of(FILE), &dir.read(FILE)?)
    }

    /// Replaces the manifest in `dir` atomically and durably.
    pub fn store(&self, dir: &dyn Directory) -> Result<()> {
        dir.write_atomic(FILE, &self.encode())
    }
}

/// The file name of segment `segment`'s deletion bitmap, generation `generation`.
pub fn del_file_name(segment: u64, generation: u64) -> String {
    format!("seg-{segment:016x}.del-{generation:016x}")
}

/// Parses [`del_file_name`].
pub fn parse_del_file_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("seg-")?;
    let (seg, generation) = rest.split_once(".del-")?;
    Some((
        u64::from_str_radix(seg, 16).ok()?,
        u64::from_str_radix(generation, 16).ok()?,
    ))
}

/// Writes a deletion bitmap file durably; returns the bitmap bytes' crc32c.
pub fn store_deletions(
    dir: &dyn Directory,
    segment: u64,
    generation: u64,
    deleted: &RoaringBitmap,
) -> Result<u32> {
    let mut bitmap = Vec::with_capacity(deleted.serialized_size());
    deleted
        .serialize_into(&mut bitmap)
        .map_err(|e| Error::io(&dir.path_of(FILE), e))?;
    let crc = crc32c::crc32c(&bitmap);
    let mut b = Vec::with_capacity(bitmap.len() + 40);
    b.extend_from_slice(DEL_MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(&segment.to_le_bytes());
    b.extend_from_slice(&deleted.len().to_le_bytes());
    b.extend_from_slice(&(bitmap.len() as u64).to_le_bytes());
    b.extend_from_slice(&bitmap);
    let all = crc32c::crc32c(&b);
    b.extend_from_slice(&all.to_le_bytes());
    dir.write_atomic(&del_file_name(segment, generation), &b)?;
    Ok(crc)
}

/// Reads and checks the deletion bitmap the manifest entry `e` points to.
pub fn load_deletions(dir: &dyn Directory, e: &Entry) -> Result<RoaringBitmap> {
    if e.del_gen == 0 {
        return Ok(RoaringBitmap::new());
    }
    let name = del_file_name(e.segment, e.del_gen);
    let path = dir.path_of(&name);
    let b = dir.read(&name)?;
    let bad = |r: &str| Error::corrupt(&path, r.to_string());
    if b.len() < 44 || &b[..8] != DEL_MAGIC {
        return Err(bad("not a Gyre deletion bitmap (bad magic or too short)"));
    }
    let len = u64_at(&b, 32) as usize;
    if b.len() != 40 + len + 4 {
        return Err(bad("length does not match (truncated?)"));
    }
    if crc32c::crc32c(&b[..40 + len]) != u32_at(&b, 40 + len) {
        return Err(bad("checksum mismatch"));
    }
    if u64_at(&b, 16) != e.segment || u32_at(&b, 12) != e.del_crc || u64_at(&b, 24) != e.del_count {
        return Err(bad("does not match its manifest entry"));
    }
    let deleted = RoaringBitmap::deserialize_from(&b[40..40 + len])
        .map_err(|err| bad(&format!("bitmap does not decode: {err}")))?;
    if deleted.len() != e.del_count || deleted.max().is_some_and(|m| u64::from(m) >= e.rows) {
        return Err(bad("bitmap does not fit its segment"));
    }
    Ok(deleted)
}
