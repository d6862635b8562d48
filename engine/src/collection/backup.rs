//! Snapshots: a collection's durable state at one moment, kept beside the data, listed and
//! restored (also after the collection is dropped).
//!
//! Layout: `DIR/snapshots/COLLECTION/NAME/` holds the files of one manifest version: the
//! segments and deletion files it names (hard links where the file system has them: no bytes
//! move, and the collection deleting its own name later leaves the snapshot's), copies of the
//! WAL files it replays from, of `MANIFEST`, `config.json` and `schema.json`, and last
//! `SNAPSHOT.json` (what the snapshot holds). A snapshot is built under `.creating-NAME` and
//! renamed into place, so it is whole or absent.
//!
//! Invariants:
//! * A snapshot holds every write acknowledged before it started and none acknowledged after
//!   it returned: it is taken under the collection's writer lock, which every WAL append and
//!   manifest edit holds, so the manifest, the files it names and the WAL agree.
//! * Snapshot files are never written after the rename; a restore links or copies them out
//!   (WAL files always copied: the restored collection appends to them).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::database::{CREATING, DROPPING, check_name, poisoned as db_poisoned};

/// The staging folder of a restore into collection `TARGET` is `.restoring-TARGET`: on open,
/// one holding [`READY`] while `TARGET` is absent is renamed into place (the restore was
/// verified and had begun replacing), any other is removed.
pub(super) const RESTORING: &str = ".restoring-";
/// Written into a restore's staging folder once it is verified.
pub(super) const READY: &str = "RESTORE-READY";
use super::manifest::{self, Manifest};
use super::{Collection, Database, config, poisoned, schema};
use crate::directory::{Directory, Imported, copy_file};
use crate::error::{Error, Result};
use crate::segment;
use crate::wal;

/// The snapshots' folder in a data directory.
const SNAPSHOTS: &str = "snapshots";
/// What a snapshot holds, written last.
const META: &str = "SNAPSHOT.json";

/// One snapshot, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The collection it was taken of.
    pub collection: String,
    /// Its name (unique per collection).
    pub name: String,
    /// When it was taken, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The manifest generation it holds.
    pub generation: u64,
    /// Live points when it was taken.
    pub points: u64,
    /// Its files and their sizes.
    pub files: Vec<SnapshotFile>,
    /// Bytes copied when it was taken (the rest are hard links to the collection's files).
    pub copied_bytes: u64,
}

impl SnapshotInfo {
    /// Bytes of all its files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// A file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// The file's name.
    pub name: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// Its CRC-32C, recorded by backups (local snapshots trust the file system and skip it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct MetaFile {
    format: u32,
    #[serde(flatten)]
    info: SnapshotInfo,
}

/// Segments and deletion files are immutable (linked, uploaded once under their own name); the
/// rest (`MANIFEST`, `config.json`, `schema.json`, WAL files) change in place.
pub fn immutable(name: &str) -> bool {
    segment::parse_file_name(name).is_some() || manifest::parse_del_file_name(name).is_some()
}

/// Brings `name` from `from` into `to`: linked when immutable, else copied. Returns the bytes
/// copied.
fn bring(from: &dyn Directory, to: &dyn Directory, name: &str) -> Result<u64> {
    if immutable(name) {
        let len = from.file_len(name)?;
        return Ok(match to.import(from, name)? {
            Imported::Linked => 0,
            Imported::Copied => len,
        });
    }
    copy_file(from, name, to)
}

impl Collection {
    /// Writes this collection's durable state into `dest` (an empty directory) and returns its
    /// files, the manifest generation and the bytes copied. Writes wait while it runs: linking
    /// costs a directory entry per segment, copying the WAL is bounded by the memtable.
    fn checkpoint_into(&self, dest: &dyn Directory) -> Result<Checkpoint> {
        let inner = &self.inner;
        let _writer = inner.writer.lock().map_err(poisoned)?;
        let points = self.len() as u64;
        let dir = &*inner.dir;
        // The manifest on disk (not the writer's copy, which a failed edit may have moved on).
        let bytes = dir.read(manifest::FILE)?;
        let m = Manifest::decode(&dir.path_of(manifest::FILE), &bytes)?;
        let mut names = Vec::new();
        for e in &m.entries {
            names.push(segment::file_name(e.segment));
            if e.del_gen != 0 {
                names.push(manifest::del_file_name(e.segment, e.del_gen));
            }
        }
        let listed = dir.list()?;
        let mut wals: Vec<(u64, &String)> = listed
            .iter()
            .filter_map(|n| wal::parse_file_name(n).map(|s| (s, n)))
            .filter(|&(s, _)| s >= m.wal_seq)
            .collect();
        wals.sort();
        names.extend(wals.into_iter().map(|(_, n)| n.clone()));
        for f in [config::FILE, schema::FILE] {
            if listed.iter().any(|n| n == f) {
                names.push(f.to_string());
            }
        }
        let mut files = Vec::with_capacity(names.len() + 1);
        let mut copied = 0;
        for n in names {
            copied += bring(dir, dest, &n)?;
            files.push(SnapshotFile {
                bytes: dest.file_len(&n)?,
                name: n,
                crc32c: None,
            });
        }
        dest.write_atomic(manifest::FILE, &bytes)?;
        copied += bytes.len() as u64;
        files.push(SnapshotFile {
            name: manifest::FILE.into(),
            bytes: bytes.len() as u64,
            crc32c: None,
        });
        Ok(Checkpoint {
            files,
            generation: m.generation,
            copied,
            points,
        })
    }
}

/// What [`Collection::checkpoint_into`] wrote.
struct Checkpoint {
    files: Vec<SnapshotFile>,
    generation: u64,
    copied: u64,
    points: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Orders snapshots by time taken, then collection and name.
fn oldest_first(list: &mut [SnapshotInfo]) {
    list.sort_by(|a, b| {
        (a.created_unix_ms, &a.collection, &a.name).cmp(&(
            b.created_unix_ms,
            &b.collection,
            &b.name,
        ))
    });
}

fn encode_meta(info: &SnapshotInfo) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(&MetaFile {
        format: 1,
        info: info.clone(),
    })
    .map_err(|e| Error::internal(format!("snapshot description: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn read_meta(dir: &dyn Directory) -> Result<SnapshotInfo> {
    let path = dir.path_of(META);
    let bytes = dir.read(META)?;
    let m: MetaFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(&path, format!("not a snapshot description: {e}")))?;
    if m.format != 1 {
        return Err(Error::corrupt(
            &path,
            format!("snapshot format {} is not supported (1 is)", m.format),
        ));
    }
    Ok(m.info)
}

/// Checks that every file the description names is there at its length (a truncated or
/// missing file is named).
fn check_files(dir: &dyn Directory, info: &SnapshotInfo) -> Result<()> {
    for f in &info.files {
        let len = dir.file_len(&f.name).map_err(|_| {
            Error::corrupt(
                &dir.path_of(&f.name),
                "missing from the snapshot".to_string(),
            )
        })?;
        if len != f.bytes {
            return Err(Error::corrupt(
                &dir.path_of(&f.name),
                format!("{len} bytes where the snapshot recorded {}", f.bytes),
            ));
        }
    }
    Ok(())
}

impl Database {
    fn snapshot_root(&self, collection: &str) -> Result<std::sync::Arc<dyn Directory>> {
        self.top.sub(SNAPSHOTS)?.sub(collection)
    }

    fn snapshot_dir(&self, collection: &str, name: &str) -> Result<std::sync::Arc<dyn Directory>> {
        check_name(collection)?;
        check_name(name)?;
        let root = self.snapshot_root(collection)?;
        if !root.list_dirs()?.iter().any(|d| d == name) {
            return Err(Error::SnapshotNotFound {
                collection: collection.into(),
                name: name.into(),
            });
        }
        root.sub(name)
    }

    /// Takes a snapshot of `collection` online (writes wait only while its files are linked
    /// and its WAL copied), named `name` or `snap-<unix ms>`.
    pub fn create_snapshot(&self, collection: &str, name: Option<&str>) -> Result<SnapshotInfo> {
        let c = self.collection(collection)?;
        let name = name.map_or_else(|| format!("snap-{}", now_ms()), str::to_string);
        check_name(&name)?;
        let _guard = self.snapshots.lock().map_err(db_poisoned)?;
        let root = self.snapshot_root(collection)?;
        if root.list_dirs()?.contains(&name) {
            return Err(Error::SnapshotExists {
                collection: collection.into(),
                name,
            });
        }
        let staging = format!("{CREATING}{name}");
        root.remove_dir(&staging)?;
        let made = root.sub(&staging).and_then(|dest| {
            let created_unix_ms = now_ms();
            let cp = c.checkpoint_into(&*dest)?;
            let info = SnapshotInfo {
                collection: collection.into(),
                name: name.clone(),
                created_unix_ms,
                generation: cp.generation,
                points: cp.points,
                files: cp.files,
                copied_bytes: cp.copied,
            };
            dest.write_atomic(META, &encode_meta(&info)?)?;
            Ok(info)
        });
        let renamed = made.and_then(|info| root.rename_dir(&staging, &name).map(|()| info));
        if renamed.is_err() {
            // Whichever name the folder has now (a rename whose directory sync failed may have
            // happened): the caller was told it failed, so it must not be listed.
            let _ = root.remove_dir(&staging);
            let _ = root.remove_dir(&name);
        }
        renamed
    }

    /// The snapshots of `collection` (or of every collection, also dropped ones), oldest
    /// first.
    pub fn list_snapshots(&self, collection: Option<&str>) -> Result<Vec<SnapshotInfo>> {
        let all = self.top.sub(SNAPSHOTS)?;
        let present = all.list_dirs()?;
        let collections = match collection {
            Some(c) => {
                check_name(c)?;
                vec![c.to_string()]
            }
            None => present.clone(),
        };
        let mut out = Vec::new();
        for c in collections {
            if check_name(&c).is_err() || !present.contains(&c) {
                continue;
            }
            let root = all.sub(&c)?;
            for name in root.list_dirs()? {
                if name.starts_with('.') {
                    continue;
                }
                out.push(read_meta(&*root.sub(&name)?)?);
            }
        }
        oldest_first(&mut out);
        Ok(out)
    }

    /// Removes a snapshot.
    pub fn delete_snapshot(&self, collection: &str, name: &str) -> Result<()> {
        let _guard = self.snapshots.lock().map_err(db_poisoned)?;
        self.snapshot_dir(collection, name)?;
        let root = self.snapshot_root(collection)?;
        let to = format!("{DROPPING}{name}");
        root.remove_dir(&to)?;
        root.rename_dir(name, &to)?;
        root.remove_dir(&to)
    }

    /// Restores snapshot `name` of `collection` as collection `target` (default: the
    /// collection itself). An existing `target` is replaced only with `replace`; its open
    /// handles keep working on their files until dropped. The restored collection holds
    /// exactly the snapshot's state; the snapshot stays.
    pub fn restore_snapshot(
        &self,
        collection: &str,
        name: &str,
        target: Option<&str>,
        replace: bool,
    ) -> Result<Collection> {
        self.restore_snapshot_verified(collection, name, target, replace, true)
    }

    /// [`restore_snapshot`](Self::restore_snapshot), with the full read of every segment's
    /// checksums before the swap only when `verify` (the files' headers, tables and footers
    /// are checked either way, when the restored collection opens). Without it, for callers
    /// that checked every file's CRC-32C as they fetched it (a query node's new version).
    pub fn restore_snapshot_verified(
        &self,
        collection: &str,
        name: &str,
        target: Option<&str>,
        replace: bool,
        verify: bool,
    ) -> Result<Collection> {
        let target = target.unwrap_or(collection);
        check_name(target)?;
        let _guard = self.snapshots.lock().map_err(db_poisoned)?;
        let src = self.snapshot_dir(collection, name)?;
        let info = read_meta(&*src)?;
        check_files(&*src, &info)?;
        let mut map = self.collections.write().map_err(db_poisoned)?;
        let exists = map.contains_key(target)
            || self
                .failed
                .read()
                .map_err(db_poisoned)?
                .contains_key(target);
        if exists && !replace {
            return Err(Error::CollectionExists {
                name: target.into(),
                detail: " (restore with replace to overwrite it)".into(),
            });
        }
        let staging = format!("{RESTORING}{target}");
        self.root.remove_dir(&staging)?;
        let filled = self.root.sub(&staging).and_then(|dest| {
            for f in &info.files {
                bring(&*src, &*dest, &f.name)?;
            }
            // Open and verify every checksum where it is: a damaged snapshot fails here,
            // before anything is replaced.
            let c = Collection::open(target, dest.clone(), None)?;
            if verify {
                c.verify()?;
            }
            c.close()?;
            drop(c);
            dest.write_atomic(READY, b"verified\n")
        });
        if let Err(e) = filled {
            let _ = self.root.remove_dir(&staging);
            return Err(e);
        }
        // From here a crash completes the restore on the next open (see `RESTORING`).
        if exists {
            if let Some(old) = map.remove(target) {
                old.close()?;
            }
            self.failed.write().map_err(db_poisoned)?.remove(target);
            let to = format!("{DROPPING}{target}");
            self.root.remove_dir(&to)?;
            self.root.rename_dir(target, &to)?;
            self.root.rename_dir(&staging, target)?;
            self.root.remove_dir(&to)?;
        } else {
            self.root.rename_dir(&staging, target)?;
        }
        let c = Collection::open(target, self.root.sub(target)?, Some(self.lock.clone()))?;
        map.insert(target.into(), c.clone());
        Ok(c)
    }
}

/// Copies `name` from `from` to `to` through a streamed, write-once [`Directory::create`] and
/// returns its length and CRC-32C; with `expect`, the bytes read must match it first (a
/// download: a damaged or truncated object is named by its key and nothing is written).
fn copy_checked(
    from: &dyn Directory,
    name: &str,
    to: &dyn Directory,
    to_name: &str,
    expect: Option<&SnapshotFile>,
) -> Result<(u64, u32)> {
    let len = from.file_len(name)?;
    let mut w = to.create(to_name)?;
    let crc = if len == 0 {
        crc32c::crc32c(&[])
    } else {
        let bytes = from.map(name)?;
        let crc = crc32c::crc32c(&bytes);
        if let Some(f) = expect {
            if bytes.len() as u64 != f.bytes {
                return Err(Error::corrupt(
                    &from.path_of(name),
                    format!(
                        "{} bytes where the backup recorded {}",
                        bytes.len(),
                        f.bytes
                    ),
                ));
            }
            if f.crc32c.is_some_and(|c| c != crc) {
                return Err(Error::corrupt(
                    &from.path_of(name),
                    format!(
                        "crc32c {crc:08x} where the backup recorded {:08x}",
                        f.crc32c.unwrap_or(0)
                    ),
                ));
            }
        }
        for chunk in bytes.chunks(8 << 20) {
            w.write(chunk)?;
        }
        crc
    };
    if let Some(f) = expect
        && len != f.bytes
    {
        return Err(Error::corrupt(
            &from.path_of(name),
            format!("{len} bytes where the backup recorded {}", f.bytes),
        ));
    }
    w.finish()?;
    Ok((len, crc))
}

/// Backups: a snapshot copied file by file into another [`Directory`] (an object store
/// prefix, another disk) as `COLLECTION/NAME/`, each file with its CRC-32C, `SNAPSHOT.json`
/// last, every file written once (a second backup under the same name is a conflict, never an
/// overwrite). A backup without its `SNAPSHOT.json` is incomplete and is not listed.
impl Database {
    /// Backs `collection` up into `dest` as snapshot `snapshot` (an existing local snapshot
    /// is uploaded as it is; a missing one is taken first and removed after the upload).
    /// `progress` hears of each file once it is written.
    pub fn backup_to(
        &self,
        collection: &str,
        snapshot: Option<&str>,
        dest: &dyn Directory,
        progress: &mut dyn FnMut(&SnapshotFile),
    ) -> Result<SnapshotInfo> {
        check_name(collection)?;
        let existing = match snapshot {
            Some(n) => self
                .list_snapshots(Some(collection))?
                .into_iter()
                .find(|i| i.name == n),
            None => None,
        };
        let temporary = existing.is_none();
        let mut info = match existing {
            Some(i) => i,
            None => self.create_snapshot(collection, snapshot)?,
        };
        let result = (|| {
            let root = dest.sub(collection)?;
            if root.list_dirs()?.contains(&info.name)
                && root.sub(&info.name)?.file_len(META).is_ok()
            {
                return Err(Error::SnapshotExists {
                    collection: collection.into(),
                    name: format!("{} (in the backup store)", info.name),
                });
            }
            let to = root.sub(&info.name)?;
            let src = self.snapshot_dir(collection, &info.name)?;
            let mut copied = 0;
            for f in &mut info.files {
                let (len, crc) = copy_checked(&*src, &f.name, &*to, &f.name, None)?;
                f.bytes = len;
                f.crc32c = Some(crc);
                copied += len;
                progress(f);
            }
            info.copied_bytes = copied;
            let meta = encode_meta(&info)?;
            let mut w = to.create(META)?;
            w.write(&meta)?;
            w.finish()?;
            Ok(info.clone())
        })();
        if temporary {
            let name = info.name.clone();
            if let Err(e) = self.delete_snapshot(collection, &name)
                && result.is_ok()
            {
                return Err(e);
            }
        }
        result
    }

    /// The complete backups in `from`, oldest first.
    pub fn list_backups(from: &dyn Directory) -> Result<Vec<SnapshotInfo>> {
        let mut out = Vec::new();
        for c in from.list_dirs()? {
            if check_name(&c).is_err() {
                continue;
            }
            let root = from.sub(&c)?;
            for name in root.list_dirs()? {
                let dir = root.sub(&name)?;
                if check_name(&name).is_err() || dir.file_len(META).is_err() {
                    continue;
                }
                out.push(read_meta(&*dir)?);
            }
        }
        oldest_first(&mut out);
        Ok(out)
    }

    /// Restores backup `name` of `collection` from `from` as collection `target` (default:
    /// the collection itself; an existing one only with `replace`). Every file is checked
    /// against its recorded length and CRC-32C as it is downloaded, into a local snapshot of
    /// the same name (which stays), and the collection is restored from that snapshot as
    /// [`Database::restore_snapshot`] does.
    pub fn restore_backup(
        &self,
        from: &dyn Directory,
        collection: &str,
        name: &str,
        target: Option<&str>,
        replace: bool,
        progress: &mut dyn FnMut(&SnapshotFile),
    ) -> Result<Collection> {
        check_name(collection)?;
        check_name(name)?;
        let not_found = || Error::SnapshotNotFound {
            collection: collection.into(),
            name: format!("{name} (in the backup store)"),
        };
        let croot = from.sub(collection)?;
        if !croot.list_dirs()?.iter().any(|d| d == name) {
            return Err(not_found());
        }
        let src = croot.sub(name)?;
        if src.file_len(META).is_err() {
            return Err(not_found());
        }
        let info = read_meta(&*src)?;
        if info.collection != collection || info.name != name {
            return Err(Error::corrupt(
                &src.path_of(META),
                format!(
                    "describes snapshot {}/{}, not {collection}/{name}",
                    info.collection, info.name
                ),
            ));
        }
        self.import_snapshot(&info, &mut |f, dest| {
            copy_checked(&*src, &f.name, dest, &f.name, Some(f))?;
            progress(f);
            Ok(())
        })?;
        self.restore_snapshot(collection, name, target, replace)
    }

    /// Makes `info` a local snapshot (of `info.collection`, named `info.name`), its files
    /// written into the staging folder by `fetch` (one call per file, which must write it
    /// under its name); their lengths are checked, then the snapshot is published whole. A
    /// failure leaves nothing behind.
    pub fn import_snapshot(
        &self,
        info: &SnapshotInfo,
        fetch: &mut dyn FnMut(&SnapshotFile, &dyn Directory) -> Result<()>,
    ) -> Result<()> {
        let (collection, name) = (info.collection.as_str(), info.name.as_str());
        check_name(collection)?;
        check_name(name)?;
        let _guard = self.snapshots.lock().map_err(db_poisoned)?;
        let root = self.snapshot_root(collection)?;
        if root.list_dirs()?.iter().any(|d| d == name) {
            return Err(Error::SnapshotExists {
                collection: collection.into(),
                name: format!("{name} (locally: restore it with restore_snapshot, or delete it)"),
            });
        }
        let staging = format!("{CREATING}{name}");
        root.remove_dir(&staging)?;
        let filled = root.sub(&staging).and_then(|dest| {
            for f in &info.files {
                fetch(f, &*dest)?;
            }
            check_files(&*dest, info)?;
            dest.write_atomic(META, &encode_meta(info)?)?;
            root.rename_dir(&staging, name)
        });
        if let Err(e) = filled {
            let _ = root.remove_dir(&staging);
            return Err(e);
        }
        Ok(())
    }

    /// The folder of local snapshot `name` of `collection` (read it, never write it).
    pub fn snapshot_directory(
        &self,
        collection: &str,
        name: &str,
    ) -> Result<std::sync::Arc<dyn Directory>> {
        self.snapshot_dir(collection, name)
    }
}

/// Copies `name` from `from` into `to` as `to_name` (write-once), checked against `f`'s length and CRC-32C
/// as read: a damaged source is named and nothing is written. For replicas and restores
/// outside the engine.
pub fn copy_verified(
    from: &dyn Directory,
    name: &str,
    to: &dyn Directory,
    to_name: &str,
    f: &SnapshotFile,
) -> Result<()> {
    copy_checked(from, name, to, to_name, Some(f)).map(|_| ())
}

/// Copies `name` from `from` into `to` as `to_name` (write-once) and returns its length and
/// CRC-32C.
pub fn copy_with_crc(
    from: &dyn Directory,
    name: &str,
    to: &dyn Directory,
    to_name: &str,
) -> Result<(u64, u32)> {
    copy_checked(from, name, to, to_name, None)
}
