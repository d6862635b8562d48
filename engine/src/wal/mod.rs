//! The write-ahead log: every acknowledged write, in order, until a segment holds it.
//!
//! A WAL file is a header (magic, version, a random crc seed, dim, sequence number) followed by
//! records, each `[len][body crc][header crc][pad]` + body padded to 8 bytes (byte layout in
//! `docs/format.md`). Checksums are seeded with the file's random seed, so bytes left over from
//! another file never validate.
//!
//! Replay ([`replay`]) applies records in order and stops at the first record that fails its
//! checks. If no valid record follows (scanning every later 8-byte offset), that record is a
//! torn tail: the file is truncated there. If a valid record does follow, the damage is before
//! the tail and replay fails with an error naming the file and offset: acknowledged writes may
//! be behind it, so nothing is skipped silently.

use crate::directory::{AppendFile, Directory};
use crate::error::{Error, Result};
use crate::fsio::{u32_at, u64_at};
use crate::payload::PayloadRows;

/// First bytes of a WAL file.
pub const MAGIC: &[u8; 8] = b"GYREWAL1";
/// Current format version (2: upsert records may carry payloads).
pub const VERSION: u32 = 2;
/// The oldest format version this build replays.
pub const OLDEST_VERSION: u32 = 1;
const HEADER_BYTES: usize = 32;
const RECORD_HEADER: usize = 16;
const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;
/// Upsert flag (body byte 1): per-row payloads follow the vectors.
const FLAG_PAYLOADS: u8 = 1;

/// One logged operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Rows to insert or replace (`ids.len() × dim` values).
    Upsert {
        /// The ids.
        ids: Vec<u64>,
        /// The vectors, row-major.
        rows: Vec<f32>,
        /// The rows' encoded payloads (`None`: no row has one).
        payloads: Option<PayloadRows>,
    },
    /// Ids to delete.
    Delete {
        /// The ids.
        ids: Vec<u64>,
    },
}

/// The file name of WAL file `seq`.
pub fn file_name(seq: u64) -> String {
    format!("wal-{seq:016x}.log")
}

/// Parses [`file_name`].
pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    u64::from_str_radix(hex, 16).ok()
}

/// Encodes an upsert record's body; with payloads, one `u32` length per row and the encoded
/// payloads follow the vectors.
pub(crate) fn upsert_body(ids: &[u64], rows: &[f32], payloads: Option<&PayloadRows>) -> Vec<u8> {
    let extra = payloads.map_or(0, |p| 4 * ids.len() + p.slice().parts().1.len());
    let mut b = Vec::with_capacity(8 + 8 * ids.len() + 4 * rows.len() + extra);
    let flags = if payloads.is_some() { FLAG_PAYLOADS } else { 0 };
    b.extend_from_slice(&[OP_UPSERT, flags, 0, 0]);
    b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes());
    }
    b.extend_from_slice(bytemuck::cast_slice(rows));
    if let Some(p) = payloads {
        let (offsets, bytes) = p.slice().parts();
        for w in offsets.windows(2) {
            b.extend_from_slice(&((w[1] - w[0]) as u32).to_le_bytes());
        }
        b.extend_from_slice(bytes);
    }
    b
}

/// Encodes a delete record's body.
pub(crate) fn delete_body(ids: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 8 * ids.len());
    b.extend_from_slice(&[OP_DELETE, 0, 0, 0]);
    b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes());
    }
    b
}

fn decode(body: &[u8], dim: usize) -> Option<Record> {
    if body.len() < 8 {
        return None;
    }
    let n = u32_at(body, 4) as usize;
    let ids_end = 8usize.checked_add(n.checked_mul(8)?)?;
    if body.len() < ids_end {
        return None;
    }
    let ids: Vec<u64> = (0..n).map(|i| u64_at(body, 8 + 8 * i)).collect();
    match body[0] {
        OP_UPSERT => {
            let rest = &body[ids_end..];
            let row_bytes = n.checked_mul(dim)?.checked_mul(4)?;
            let with_payloads = body[1] & FLAG_PAYLOADS != 0;
            if body[1] & !FLAG_PAYLOADS != 0
                || (!with_payloads && rest.len() != row_bytes)
                || rest.len() < row_bytes
            {
                return None;
            }
            let rows = rest[..row_bytes]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            let payloads = if with_payloads {
                let tail = &rest[row_bytes..];
                let lens_end = n.checked_mul(4)?;
                let lengths: Vec<u32> = tail
                    .get(..lens_end)?
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                Some(PayloadRows::from_lengths(&lengths, &tail[lens_end..])?)
            } else {
                None
            };
            Some(Record::Upsert {
                ids,
                rows,
                payloads,
            })
        }
        OP_DELETE if body.len() == ids_end => Some(Record::Delete { ids }),
        _ => None,
    }
}

/// An open WAL file being appended to.
///
/// It knows where the last whole write ended (`good_len`). A failed write or sync may leave a
/// torn record past that point; [`heal`](Self::heal) cuts it off (and syncs) before anything
/// else is appended or the log rotates, so a torn record can only ever be the newest file's
/// tail, which replay cuts.
#[derive(Debug)]
pub(crate) struct WalWriter {
    file: Box<dyn AppendFile>,
    seq: u64,
    seed: u32,
    buf: Vec<u8>,
    /// End of the last write that completed (and, in fsync mode, was synced).
    good_len: u64,
    /// Bytes past `good_len` may exist (a failed write or sync).
    torn: bool,
    /// Written bytes not yet synced.
    unsynced: bool,
}

fn header(seq: u64, seed: u32, dim: usize) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&seed.to_le_bytes());
    h[16..20].copy_from_slice(&(dim as u32).to_le_bytes());
    h[20..28].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A crc seed that differs between files: the clock and the process id, mixed.
fn fresh_seed(seq: u64) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = t ^ (u64::from(std::process::id()) << 32) ^ seq.rotate_left(17);
    // SplitMix64 finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    (x ^ (x >> 31)) as u32
}

impl WalWriter {
    /// Creates WAL file `seq` in `dir`, durably. The header is written under a temporary
    /// name and renamed into place, so a WAL file never exists without a whole header.
    pub fn create(dir: &dyn Directory, seq: u64, dim: usize) -> Result<WalWriter> {
        let name = file_name(seq);
        let seed = fresh_seed(seq);
        dir.write_atomic(&name, &header(seq, seed, dim))?;
        let file = dir.append(&name)?;
        Ok(WalWriter {
            file,
            seq,
            seed,
            buf: Vec::new(),
            good_len: HEADER_BYTES as u64,
            torn: false,
            unsynced: false,
        })
    }

    /// Reopens a replayed file for appending after its last valid record.
    fn reopen(dir: &dyn Directory, seq: u64, seed: u32, valid_len: u64) -> Result<WalWriter> {
        let name = file_name(seq);
        let mut file = dir.append(&name)?;
        if file.len() != valid_len {
            file.truncate(valid_len)?;
            file.sync()?;
        }
        Ok(WalWriter {
            file,
            seq,
            seed,
            buf: Vec::new(),
            good_len: valid_len,
            torn: false,
            unsynced: false,
        })
    }

    /// This file's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Stages a record; [`write`](Self::write) sends staged records to the file.
    pub fn stage(&mut self, body: &[u8]) {
        let len = body.len() as u32;
        let body_crc = crc32c::crc32c_append(self.seed, body);
        let mut h = [0u8; RECORD_HEADER];
        h[0..4].copy_from_slice(&len.to_le_bytes());
        h[4..8].copy_from_slice(&body_crc.to_le_bytes());
        let hcrc = crc32c::crc32c_append(self.seed, &h[0..8]);
        h[8..12].copy_from_slice(&hcrc.to_le_bytes());
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(body);
        self.buf.resize(self.buf.len().next_multiple_of(8), 0);
    }

    /// Cuts a torn record left by a failed write or sync, and syncs the cut. Until it succeeds
    /// nothing else may be appended and the log must not rotate.
    pub fn heal(&mut self) -> Result<()> {
        if self.torn {
            self.file.truncate(self.good_len)?;
            self.file.sync()?;
            self.torn = false;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Writes the staged records with one call (they reach the OS: a process crash no longer
    /// loses them; [`sync`](Self::sync) makes them survive power loss). With `commit`, the
    /// records count as whole once written (periodic durability); otherwise only once synced
    /// by [`commit_synced`](Self::commit_synced).
    pub fn write(&mut self, commit: bool) -> Result<()> {
        let staged = std::mem::take(&mut self.buf);
        if let Err(e) = self.heal() {
            self.buf = staged;
            self.buf.clear();
            return Err(e);
        }
        let r = self.file.append(&staged);
        self.buf = staged;
        self.buf.clear();
        match r {
            Ok(()) => {
                self.unsynced = true;
                if commit {
                    self.good_len = self.file.len();
                } else {
                    self.torn = true;
                }
                Ok(())
            }
            Err(e) => {
                self.torn = true;
                Err(e)
            }
        }
    }

    /// fdatasync. On failure the state of unsynced bytes is unknown (the kernel may have
    /// dropped them): [`write`](Self::write) calls after an uncommitted write are cut off.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync()?;
        self.unsynced = false;
        Ok(())
    }

    /// Syncs, then counts everything written as whole (fsync durability).
    pub fn commit_synced(&mut self) -> Result<()> {
        self.sync()?;
        self.good_len = self.file.len();
        self.torn = false;
        Ok(())
    }

    /// True when written bytes are not yet synced.
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }
}

/// What [`replay`] found.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// Records applied.
    pub records: usize,
    /// Bytes cut from a torn tail.
    pub truncated: u64,
}

/// Replays WAL file `path` into `apply`, in order. With `last` (the newest file), a torn tail
/// is truncated and the file is returned open for appending; in an older file any damage is an
/// error (nothing was appended to it after the next file was created).
pub(crate) fn replay(
    dir: &dyn Directory,
    seq_of_name: u64,
    dim: usize,
    last: bool,
    mut apply: impl FnMut(Record) -> Result<()>,
) -> Result<(Replayed, Option<WalWriter>)> {
    let name = file_name(seq_of_name);
    let path = &dir.path_of(&name);
    let bytes = dir.read(&name)?;
    let bad = |reason: String| Error::corrupt(path, reason);
    if bytes.len() < HEADER_BYTES {
        return Err(bad(format!(
            "{} bytes is too short for a WAL header",
            bytes.len()
        )));
    }
    let h = &bytes[..HEADER_BYTES];
    if &h[..8] != MAGIC {
        return Err(bad("not a Gyre WAL file (bad magic)".into()));
    }
    if crc32c::crc32c(&h[..28]) != u32_at(h, 28) {
        return Err(bad("WAL header checksum mismatch".into()));
    }
    if !(OLDEST_VERSION..=VERSION).contains(&u32_at(h, 8)) {
        return Err(bad(format!(
            "WAL version {}, this build reads {OLDEST_VERSION} to {VERSION}",
            u32_at(h, 8)
        )));
    }
    if u32_at(h, 16) as usize != dim {
        return Err(bad(format!(
            "WAL written for dim {}, collection has {dim}",
            u32_at(h, 16)
        )));
    }
    let seed = u32_at(h, 12);
    let seq = u64_at(h, 20);
    if seq != seq_of_name {
        return Err(bad(format!(
            "WAL header says sequence {seq}, the name says {seq_of_name}"
        )));
    }
    let mut at = HEADER_BYTES;
    let mut records = 0;
    while at < bytes.len() {
        match record_at(&bytes, at, seed, dim) {
            Some((record, next)) => {
                apply(record)?;
                records += 1;
                at = next;
            }
            None => {
                // Damage: a tail only if nothing valid follows.
                let mut probe = at + 8;
                while probe + RECORD_HEADER <= bytes.len() {
                    if record_at(&bytes, probe, seed, dim).is_some() {
                        return Err(bad(format!(
                            "damaged record at byte {at} with valid records after it (at byte {probe}): acknowledged writes may be lost; restore the file or remove it knowingly"
                        )));
                    }
                    probe += 8;
                }
                if !last {
                    return Err(bad(format!(
                        "torn record at byte {at} in a WAL file that is not the newest"
                    )));
                }
                break;
            }
        }
    }
    let truncated = (bytes.len() - at) as u64;
    let writer = if last {
        Some(WalWriter::reopen(dir, seq, seed, at as u64)?)
    } else {
        None
    };
    Ok((Replayed { records, truncated }, writer))
}

fn record_at(bytes: &[u8], at: usize, seed: u32, dim: usize) -> Option<(Record, usize)> {
    if at + RECORD_HEADER > bytes.len() {
        return None;
    }
    let h = &bytes[at..at + RECORD_HEADER];
    if crc32c::crc32c_append(seed, &h[0..8]) != u32_at(h, 8) {
        return None;
    }
    let len = u32_at(h, 0) as usize;
    let start = at + RECORD_HEADER;
    let end = start.checked_add(len)?;
    if end > bytes.len() {
        return None;
    }
    let body = &bytes[start..end];
    if crc32c::crc32c_append(seed, body) != u32_at(h, 4) {
        return None;
    }
    let record = decode(body, dim)?;
    Some((record, end.next_multiple_of(8).min(bytes.len()).max(end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn write_some(dir: &Path, n: usize) -> PathBuf {
        let d = crate::directory::LocalDirectory::open(dir).unwrap();
        let mut w = WalWriter::create(&d, 1, 3).unwrap();
        for i in 0..n {
            let ids = [i as u64, 100 + i as u64];
            let rows = [i as f32, 1.0, 2.0, 3.0, 4.0, 5.0];
            let payloads = (i % 2 == 1).then(|| {
                PayloadRows::encode(&[
                    crate::payload::Payload::new().with("i", i as i64),
                    crate::payload::Payload::new(),
                ])
            });
            w.stage(&upsert_body(&ids, &rows, payloads.as_ref()));
            if i % 3 == 2 {
                w.stage(&delete_body(&[i as u64]));
            }
            w.write(false).unwrap();
            w.commit_synced().unwrap();
        }
        dir.join(file_name(1))
    }

    fn replay_all(path: &Path) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let d = crate::directory::LocalDirectory::open(path.parent().unwrap()).unwrap();
        replay(&d, 1, 3, true, |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn round_trips_records_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_some(dir.path(), 10);
        let got = replay_all(&path).unwrap();
        assert_eq!(got.len(), 13);
        assert_eq!(
            got[0],
            Record::Upsert {
                ids: vec![0, 100],
                rows: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                payloads: None,
            }
        );
        let Record::Upsert {
            payloads: Some(p), ..
        } = &got[1]
        else {
            panic!("{:?}", got[1]);
        };
        assert_eq!(
            p.slice().decode(0),
            Some(crate::payload::Payload::new().with("i", 1i64))
        );
        assert_eq!(p.slice().decode(1), None);
        assert_eq!(got[3], Record::Delete { ids: vec![2] });
    }

    #[test]
    fn torn_tail_is_truncated_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_some(dir.path(), 4);
        let full = std::fs::read(&path).unwrap();
        let whole = replay_all(&path).unwrap();
        for cut in HEADER_BYTES..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let got = replay_all(&path).unwrap();
            // Every record replays only once its body is whole: what is cut off then is at most
            // the last record's padding.
            assert!(
                got.len() < whole.len() || full[cut..].iter().all(|&b| b == 0),
                "cut {cut}"
            );
            assert_eq!(got[..], whole[..got.len()], "cut {cut}");
            // Truncated to the last whole record, then appendable.
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            assert!(len <= cut);
        }
    }

    #[test]
    fn damage_before_the_tail_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_some(dir.path(), 6);
        let full = std::fs::read(&path).unwrap();
        // A flipped byte in the first record's body: valid records follow.
        let mut bad = full.clone();
        bad[HEADER_BYTES + RECORD_HEADER + 9] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let err = replay_all(&path).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corruption);
        assert!(err.to_string().contains("wal-"), "{err}");
        // The header too.
        let mut bad = full.clone();
        bad[3] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(
            replay_all(&path).unwrap_err().kind(),
            crate::ErrorKind::Corruption
        );
        // A flipped byte in the last record: a torn tail, dropped.
        let mut bad = full.clone();
        let n = bad.len();
        bad[n - 5] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let got = replay_all(&path).unwrap();
        assert_eq!(got.len(), 8 - 1);
    }
}
