//! Creating and opening a collection: the config, the manifest, the segments it names with
//! their deletions, a sweep of files nothing names, and the replay of the WAL.
//!
//! Invariants:
//! * Open never changes what an acknowledged write left: it only cuts a torn WAL tail (never
//!   acknowledged) and removes files no manifest names (leftovers of an interrupted seal,
//!   compaction or edit).
//! * WAL files at or after the manifest's `wal_seq` are replayed in order; damage in a file
//!   followed by a file holding records is corruption (acknowledged writes may be behind it).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use super::commit::Writer;
use super::manifest::{self, Manifest};
use super::memtable::MemTable;
use super::schema as schema_file;
use super::snapshot::{Op, SegState, State, apply_op};
use super::{Collection, CollectionConfig, Durability, Inner, Recovery};
use crate::directory::{Directory, LockGuard};
use crate::error::{Error, Result};
use crate::payload::Schema;
use crate::search::flat::encode_rows;
use crate::search::view::Shape;
use crate::segment::{self, Segment};
use crate::wal::{self, Record, WalWriter};

/// Bytes of a WAL file holding only its header.
const WAL_HEADER_BYTES: u64 = 32;

impl Collection {
    /// Creates the files of a new collection in `dir` (empty).
    pub(crate) fn create(
        dir: &dyn Directory,
        config: CollectionConfig,
        schema: &Schema,
    ) -> Result<()> {
        config.validate()?;
        config.store(dir)?;
        if !schema.fields.is_empty() {
            schema_file::store(dir, schema)?;
        }
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
        dir: Arc<dyn Directory>,
        lock: Option<Arc<dyn LockGuard>>,
    ) -> Result<Collection> {
        let config = CollectionConfig::load(&*dir)?;
        let shape = Shape::new(config.quantizer(), config.metric)?;
        let manifest = Manifest::load(&*dir)?;
        let mut schema = schema_file::load(&*dir)?;
        let meta = config.segment_meta();
        let mut segments = Vec::with_capacity(manifest.entries.len());
        for e in &manifest.entries {
            let seg = Segment::open(&*dir, e.segment, &meta, &shape, config.verify_on_open)?;
            if seg.rows() as u64 != e.rows || seg.id() != e.segment {
                return Err(Error::corrupt(
                    seg.path(),
                    "does not match its manifest entry",
                ));
            }
            seg.ensure_indexes(&schema);
            let deleted = manifest::load_deletions(&*dir, e)?;
            segments.push(Arc::new(SegState::new(
                Arc::new(seg),
                deleted,
                e.del_gen,
                e.del_crc,
            )));
        }
        let wal_files = sweep(&*dir, &manifest)?;
        let memtable = MemTable::new(config.quantizer(), config.metric, config.rerank)?;
        let mut state = State {
            memtable,
            frozen: None,
            segments: Arc::new(segments),
        };
        let mut wal = None;
        let mut recovery = Recovery::default();
        // A file is the log's end when no later file holds a record: a seal that failed after
        // starting the next file can leave one with only its header.
        let mut lens = Vec::with_capacity(wal_files.len());
        for &seq in &wal_files {
            lens.push(dir.file_len(&wal::file_name(seq))?);
        }
        for (i, &seq) in wal_files.iter().enumerate() {
            let last = lens[i + 1..].iter().all(|&l| l <= WAL_HEADER_BYTES);
            let (replayed, w) = wal::replay(&*dir, seq, config.dim, last, |r| {
                apply_record(&shape, &mut state, &mut schema, r)
            })?;
            recovery.wal_records += replayed.records as u64;
            recovery.truncated_bytes += replayed.truncated;
            if let Some(w) = w {
                wal = Some(w);
            }
        }
        let wal = match wal {
            Some(w) => w,
            None => WalWriter::create(&*dir, manifest.wal_seq, config.dim)?,
        };
        let wal_floor = wal_files.first().copied().unwrap_or(manifest.wal_seq);
        let collection = Collection {
            inner: Arc::new(Inner {
                instance: {
                    static NEXT: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(1);
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                },
                name: name.to_string(),
                path: dir.path_of(""),
                dir,
                config,
                shape,
                state: RwLock::new(state),
                schema: RwLock::new(schema),
                writer: Mutex::new(Writer {
                    wal,
                    manifest,
                    wal_floor,
                    last_sync: Instant::now(),
                    sealing: None,
                }),
                queue: Mutex::new(VecDeque::new()),
                queue_cv: Condvar::new(),
                compacting: Mutex::new(()),
                recovery,
                background: Mutex::new(None),
                garbage: Mutex::new(Vec::new()),
                _lock: lock,
            }),
        };
        if let Durability::Periodic(ms) = config.durability {
            collection.start_periodic_sync(ms);
        }
        Ok(collection)
    }
}

/// Removes files no manifest names (leftovers of an interrupted seal, compaction or write);
/// returns the WAL files to replay, in order.
fn sweep(dir: &dyn Directory, manifest: &Manifest) -> Result<Vec<u64>> {
    let mut wal_files = Vec::new();
    for fname in dir.list()? {
        let stale = if let Some(id) = segment::parse_file_name(&fname) {
            !manifest.entries.iter().any(|e| e.segment == id)
        } else if let Some((id, generation)) = manifest::parse_del_file_name(&fname) {
            !manifest
                .entries
                .iter()
                .any(|e| e.segment == id && e.del_gen == generation)
        } else if let Some(seq) = wal::parse_file_name(&fname) {
            if seq >= manifest.wal_seq {
                wal_files.push(seq);
            }
            seq < manifest.wal_seq
        } else {
            // A restore's marker left by a crash right after the restore moved into place.
            fname.ends_with(".tmp") || fname == super::backup::READY
        };
        if stale {
            // Best effort: a leftover that cannot be removed now is removed next time.
            let _ = dir.delete(&fname);
        }
    }
    wal_files.sort_unstable();
    Ok(wal_files)
}

/// Applies one replayed WAL record (learning the types of payload fields the schema file
/// lacks).
fn apply_record(
    shape: &Shape,
    state: &mut State,
    schema: &mut Schema,
    record: Record,
) -> Result<()> {
    let op = match record {
        Record::Upsert {
            ids,
            rows,
            payloads,
        } => {
            let parts = encode_rows(shape, &ids, &rows)?;
            if let Some(p) = &payloads {
                for r in 0..p.rows() {
                    if let Some(decoded) = p.slice().decode(r) {
                        schema.learn(&decoded);
                    }
                }
            }
            Op::Upsert {
                ids,
                rows,
                parts,
                payloads,
            }
        }
        Record::Delete { ids } => Op::Delete { ids },
    };
    apply_op(state, &op);
    Ok(())
}
