//! Replication through object storage: one writer publishes versions of a collection, any
//! number of query nodes follow them.
//!
//! Layout under `PREFIX/COLLECTION/` (the names start with a dot, which no collection, snapshot
//! or backup name may, so backups kept under the same prefix never collide with them):
//! * `.files/NAME.CRC`: segments and deletion files under their names and CRC-32C (8 hex
//!   digits; immutable, written once),
//!   and each version's copies of the mutable files as `.files/VVVVVVVVVVVV.NAME` (`MANIFEST`,
//!   `config.json`, `schema.json`);
//! * `.versions/VVVVVVVVVVVV.json`: the commit point of version V, a [`VersionRecord`] naming
//!   every file with its length and CRC-32C, put only if absent: of two writers committing the
//!   same version exactly one wins, the other gets a [`Conflict`](Error::Conflict);
//! * `.lease.json`: which writer may publish, until when; taken and renewed by conditional puts.
//!
//! A version holds sealed state only (segments and deletions, not the WAL tail): a query node
//! sees a write once the writer has sealed it and published. Invariants: every file a version
//! names was uploaded before the version was committed; files are never rewritten; the garbage
//! collector removes only objects that no kept version names and that are older than the grace
//! period, so a query node that has just read a version can still fetch its files.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gyre::collection::{copy_verified, copy_with_crc, immutable_file};
use gyre::directory::Directory;
use gyre::{Database, Error, LocalDirectory, Result, SnapshotFile, SnapshotInfo};
use serde::{Deserialize, Serialize};

use crate::{ObjectDirectory, Version};

const VERSIONS: &str = ".versions";
const FILES: &str = ".files";
const LEASE: &str = ".lease.json";
/// The mutable files a version carries (the WAL stays with the writer).
const MUTABLE: [&str; 3] = ["MANIFEST", "config.json", "schema.json"];

/// One published version of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Record format (1).
    pub format: u32,
    /// The collection.
    pub collection: String,
    /// The version number (1, 2, ...).
    pub version: u64,
    /// The writer's manifest generation it holds.
    pub generation: u64,
    /// When it was committed, Unix milliseconds.
    pub created_unix_ms: u64,
    /// The writer that committed it.
    pub writer: String,
    /// Live points at the writer when it was published, the unsealed tail included (the tail
    /// is not shipped: a query node serves the sealed ones).
    pub points: u64,
    /// Its files.
    pub files: Vec<VersionFile>,
    /// The collection was dropped on the writer (no files): query nodes drop it too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
}

/// A file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionFile {
    /// The name in the collection's folder.
    pub name: String,
    /// The object's name under `.files/`.
    pub key: String,
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32C.
    pub crc32c: u32,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn version_name(v: u64) -> String {
    format!("{v:012}.json")
}

/// The versions in `coll` (a collection's prefix), ascending.
fn versions(coll: &dyn Directory) -> Result<Vec<u64>> {
    let mut v: Vec<u64> = coll
        .sub(VERSIONS)?
        .list()?
        .iter()
        .filter_map(|n| n.strip_suffix(".json")?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

fn read_record(coll: &dyn Directory, v: u64) -> Result<VersionRecord> {
    let dir = coll.sub(VERSIONS)?;
    let name = version_name(v);
    let bytes = dir.read(&name)?;
    let r: VersionRecord = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(&dir.path_of(&name), format!("not a version record: {e}")))?;
    if r.format != 1 || r.version != v {
        return Err(Error::corrupt(
            &dir.path_of(&name),
            format!(
                "format {} version {} (expected 1, {v})",
                r.format, r.version
            ),
        ));
    }
    Ok(r)
}

/// The newest published version of every collection under `store`, as `(collection, version)`.
pub fn published(store: &ObjectDirectory) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for c in store.list_dirs()? {
        if let Some(&v) = versions(&*store.sub(&c)?)?.last() {
            out.push((c, v));
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Serialize, Deserialize)]
struct LeaseBody {
    writer: String,
    expires_unix_ms: u64,
}

#[derive(Default)]
struct Published {
    version: u64,
    generation: u64,
    /// Objects under `.files/` known to be whole, with their CRC-32C.
    uploaded: HashMap<String, (u64, u32)>,
    /// CRC-32C of local immutable files by name and [`identity`]: a file is read for its
    /// checksum once per process, and a collection dropped and created again (whose new
    /// files reuse the old names, and may get a freed inode back) is never mistaken for the
    /// old one.
    local: HashMap<(String, FileId), u32>,
    /// What the newest version ships, as (name, CRC-32C) pairs in order.
    shipped: Option<Vec<(String, u32)>>,
    /// The collection last published (a re-created namesake is another instance).
    instance: Option<u64>,
    /// The newest version is a drop.
    dropped: bool,
    lease: Option<Version>,
}

/// What a version ships, for telling whether anything changed.
fn fingerprint(files: &[VersionFile]) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = files.iter().map(|f| (f.name.clone(), f.crc32c)).collect();
    v.sort();
    v
}

/// A local file's device, inode, length and modification time in nanoseconds.
type FileId = (u64, u64, u64, i64, i64);

/// The identity of a local file (`None` off Unix or off local disk). The modification time
/// tells a new file from a deleted one whose inode it reuses; hard links (snapshots) leave
/// it alone.
fn identity(dir: &dyn Directory, name: &str) -> Option<FileId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir.local_path(name)?).ok()?;
        Some((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, name);
        None
    }
}

/// The CRC-32C of `dir`'s file `name`, read whole.
fn file_crc(dir: &dyn Directory, name: &str) -> Result<u32> {
    if dir.file_len(name)? == 0 {
        return Ok(crc32c::crc32c(&[]));
    }
    Ok(crc32c::crc32c(&dir.map(name)?))
}

/// The writer's side: publishes a collection's sealed state as a new version when its
/// manifest moved, holding the collection's lease.
#[derive(Debug)]
pub struct Publisher {
    store: ObjectDirectory,
    writer: String,
    lease_ttl: Duration,
    state: Mutex<HashMap<String, PublishedState>>,
    before_commit: Option<Hook>,
}

/// Runs after a version's files are uploaded and before it is committed, with the collection,
/// the version and the keys uploaded for it (crash tests stop the process there).
pub struct Hook(pub Box<HookFn>);

/// What a [`Hook`] runs.
pub type HookFn = dyn Fn(&str, u64, &[String]) + Send + Sync;

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// One collection's publishing state; `Debug` by hand (the upload set is large).
struct PublishedState(Published);

impl std::fmt::Debug for PublishedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "version {}", self.0.version)
    }
}

impl Publisher {
    /// A publisher named `writer` (shown to a second writer that is refused) into `store`.
    pub fn new(store: ObjectDirectory, writer: &str, lease_ttl: Duration) -> Publisher {
        Publisher {
            store,
            writer: writer.to_string(),
            lease_ttl,
            state: Mutex::new(HashMap::new()),
            before_commit: None,
        }
    }

    /// Sets the hook run between a version's uploads and its commit.
    pub fn before_commit(mut self, hook: Hook) -> Publisher {
        self.before_commit = Some(hook);
        self
    }

    /// The collections this publisher has published in this process and not seen dropped.
    pub fn known(&self) -> Vec<String> {
        let Ok(all) = self.state.lock() else {
            return Vec::new();
        };
        let mut v: Vec<String> = all
            .iter()
            .filter(|(_, s)| s.0.version > 0 && !s.0.dropped)
            .map(|(c, _)| c.clone())
            .collect();
        v.sort();
        v
    }

    /// Commits a version saying `collection` was dropped (call it once the collection is gone
    /// from the writer's database): query nodes following it drop it too. Only for a collection
    /// this publisher published in this process (see [`known`](Self::known)), so that a writer
    /// started on an empty data directory never withdraws what it did not see.
    pub fn publish_drop(&self, db: &Database, collection: &str) -> Result<Option<u64>> {
        if db.collection(collection).is_ok() {
            return Ok(None);
        }
        let coll = self.store.sub_dir(collection);
        let mut all = self
            .state
            .lock()
            .map_err(|_| Error::internal("publisher state poisoned"))?;
        let Some(PublishedState(st)) = all.get_mut(collection) else {
            return Ok(None);
        };
        if st.version == 0 || st.dropped {
            return Ok(None);
        }
        self.lease(&coll, st)?;
        let v = st.version + 1;
        let record = VersionRecord {
            format: 1,
            collection: collection.to_string(),
            version: v,
            generation: 0,
            created_unix_ms: now_ms(),
            writer: self.writer.clone(),
            points: 0,
            files: Vec::new(),
            dropped: true,
        };
        let mut bytes =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::internal(e.to_string()))?;
        bytes.push(b'\n');
        coll.sub_dir(VERSIONS)
            .put_if_absent(&version_name(v), &bytes)?;
        st.version = v;
        st.dropped = true;
        st.shipped = Some(Vec::new());
        st.instance = None;
        Ok(Some(v))
    }

    /// The newest version of `collection` this publisher committed or found in the store.
    pub fn published_version(&self, collection: &str) -> Option<u64> {
        let all = self.state.lock().ok()?;
        all.get(collection).map(|s| s.0.version).filter(|&v| v > 0)
    }

    /// Takes or renews the lease on `collection`: refused with a conflict while another
    /// writer's lease has not expired.
    fn lease(&self, coll: &ObjectDirectory, st: &mut Published) -> Result<()> {
        let body = serde_json::to_vec(&LeaseBody {
            writer: self.writer.clone(),
            expires_unix_ms: now_ms() + self.lease_ttl.as_millis() as u64,
        })
        .map_err(|e| Error::internal(e.to_string()))?;
        let current = match &st.lease {
            Some(v) => Some(v.clone()),
            None => match coll.read_versioned(LEASE)? {
                None => None,
                Some((bytes, v)) => {
                    let held: LeaseBody = serde_json::from_slice(&bytes).map_err(|e| {
                        Error::corrupt(&coll.path_of(LEASE), format!("not a lease: {e}"))
                    })?;
                    if held.writer != self.writer && held.expires_unix_ms > now_ms() {
                        return Err(Error::Conflict {
                            key: coll.path_of(LEASE).display().to_string(),
                            detail: format!(
                                "collection is held by writer {:?} for {} ms more",
                                held.writer,
                                held.expires_unix_ms - now_ms()
                            ),
                        });
                    }
                    Some(v)
                }
            },
        };
        let next = match current {
            None => coll.put_if_absent(LEASE, &body),
            Some(v) => coll.put_if_match(LEASE, &body, &v),
        };
        match next {
            Ok(v) => {
                st.lease = Some(v);
                Ok(())
            }
            Err(e) => {
                st.lease = None;
                Err(e)
            }
        }
    }

    /// Publishes `collection` if its manifest moved since the last version (or it was never
    /// published by this process). Returns the new version, or `None` when nothing changed.
    pub fn publish(&self, db: &Database, collection: &str) -> Result<Option<u64>> {
        let c = db.collection(collection)?;
        let coll = self.store.sub_dir(collection);
        let mut all = self
            .state
            .lock()
            .map_err(|_| Error::internal("publisher state poisoned"))?;
        let st = &mut all
            .entry(collection.to_string())
            .or_insert_with(|| PublishedState(Published::default()))
            .0;
        self.lease(&coll, st)?;
        let generation = c.durable_generation()?;
        // The cheap test: this very collection (not a re-created namesake), manifest unmoved.
        if st.instance == Some(c.instance()) && st.generation == generation {
            return Ok(None);
        }
        if st.version == 0 {
            // First call in this process: continue after the newest version in the store.
            if let Some(&v) = versions(&coll)?.last() {
                let r = read_record(&coll, v)?;
                st.version = v;
                st.dropped = r.dropped;
                st.shipped = Some(fingerprint(&r.files));
                for f in r.files {
                    st.uploaded.insert(f.key, (f.bytes, f.crc32c));
                }
            }
        }
        let v = st.version + 1;
        let snap = format!("publish-{}", now_ms());
        let info = db.create_snapshot(collection, Some(&snap))?;
        let result = self.upload(db, &coll, st, &info, v);
        let _ = db.delete_snapshot(collection, &snap);
        let Some((record, fresh)) = result? else {
            // The same files as the newest version (a restart, or a manifest edit that
            // changed nothing shipped): nothing to commit.
            st.generation = info.generation;
            st.instance = Some(c.instance());
            return Ok(None);
        };
        let mut bytes =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::internal(e.to_string()))?;
        bytes.push(b'\n');
        if let Some(h) = &self.before_commit {
            (h.0)(collection, v, &fresh);
        }
        coll.sub_dir(VERSIONS)
            .put_if_absent(&version_name(v), &bytes)?;
        st.version = v;
        st.generation = info.generation;
        st.shipped = Some(fingerprint(&record.files));
        st.instance = Some(c.instance());
        st.dropped = false;
        Ok(Some(v))
    }

    /// The record of version `v` for snapshot `info`, its files uploaded (and the keys
    /// uploaded now), or `None` when it would ship exactly what the newest version does.
    fn upload(
        &self,
        db: &Database,
        coll: &ObjectDirectory,
        st: &mut Published,
        info: &SnapshotInfo,
        v: u64,
    ) -> Result<Option<(VersionRecord, Vec<String>)>> {
        let src = db.snapshot_directory(&info.collection, &info.name)?;
        // What would ship, each file with its CRC-32C (immutable ones read once per process).
        let mut ship = Vec::new();
        for f in &info.files {
            let crc = if immutable_file(&f.name) {
                let id = identity(&*src, &f.name).map(|id| (f.name.clone(), id));
                match id.as_ref().and_then(|id| st.local.get(id)) {
                    Some(&c) => c,
                    None => {
                        let c = file_crc(&*src, &f.name)?;
                        if let Some(id) = id {
                            st.local.insert(id, c);
                        }
                        c
                    }
                }
            } else if MUTABLE.contains(&f.name.as_str()) {
                file_crc(&*src, &f.name)?
            } else {
                continue; // the WAL tail stays with the writer
            };
            ship.push(VersionFile {
                name: f.name.clone(),
                // Immutable files are named by their content too (`NAME.CRC`): a name reused
                // by a dropped and re-created collection is another object.
                key: if immutable_file(&f.name) {
                    format!("{}.{crc:08x}", f.name)
                } else {
                    format!("{v:012}.{}", f.name)
                },
                bytes: f.bytes,
                crc32c: crc,
            });
        }
        if st.shipped.as_ref() == Some(&fingerprint(&ship)) {
            return Ok(None);
        }
        let files_dir = coll.sub_dir(FILES);
        let mut fresh = Vec::new();
        for f in &ship {
            if st.uploaded.contains_key(&f.key) {
                continue;
            }
            match copy_with_crc(&*src, &f.name, &files_dir, &f.key) {
                Ok((len, crc)) if (len, crc) == (f.bytes, f.crc32c) => {}
                Ok(_) => {
                    return Err(Error::internal(format!(
                        "{} changed while it was uploaded",
                        src.path_of(&f.name).display()
                    )));
                }
                // Uploaded before a crash, or by another writer, but never committed: the
                // same bytes are fine (the key names them), other bytes under a version's
                // MANIFEST key are another writer's commit in progress.
                Err(e) if e.kind() == gyre::ErrorKind::Conflict => {
                    let theirs = files_dir.read(&f.key)?;
                    if crc32c::crc32c(&theirs) != f.crc32c {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            st.uploaded.insert(f.key.clone(), (f.bytes, f.crc32c));
            fresh.push(f.key.clone());
        }
        let record = VersionRecord {
            format: 1,
            collection: info.collection.clone(),
            version: v,
            generation: info.generation,
            created_unix_ms: now_ms(),
            writer: self.writer.clone(),
            points: info.points,
            files: ship,
            dropped: false,
        };
        Ok(Some((record, fresh)))
    }

    /// Removes objects of `collection` that no kept version names: versions other than the
    /// newest `keep` and older than `grace` are dropped, then every file under `.files/` that no
    /// remaining version names and that is older than `grace`. Returns the objects removed.
    pub fn collect_garbage(&self, collection: &str, keep: usize, grace: Duration) -> Result<usize> {
        collect_garbage(&self.store.sub_dir(collection), keep.max(1), grace)
    }
}

fn collect_garbage(coll: &ObjectDirectory, keep: usize, grace: Duration) -> Result<usize> {
    let cutoff = now_ms().saturating_sub(grace.as_millis() as u64) as i64;
    let vs = versions(coll)?;
    let vdir = coll.sub_dir(VERSIONS);
    let mut named = HashSet::new();
    let mut removed = 0;
    let times: HashMap<String, i64> = vdir
        .list_all()?
        .into_iter()
        .map(|(k, _, t)| (k, t))
        .collect();
    for (i, &v) in vs.iter().enumerate() {
        let name = version_name(v);
        let old = times.get(&name).is_some_and(|&t| t < cutoff);
        if i + keep < vs.len() && old {
            vdir.delete_key(&name)?;
            removed += 1;
        } else {
            for f in read_record(coll, v)?.files {
                named.insert(f.key);
            }
        }
    }
    let fdir = coll.sub_dir(FILES);
    for (key, _, t) in fdir.list_all()? {
        if !named.contains(&key) && t < cutoff {
            fdir.delete_key(&key)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A query node's side: downloads new versions into a local cache bounded in bytes (least
/// recently used files go first, never those of a version being served) and serves them as
/// local collections, replaced atomically when a newer version arrives.
#[derive(Debug)]
pub struct Follower {
    store: ObjectDirectory,
    cache: Arc<LocalDirectory>,
    bound: u64,
    state: Mutex<FollowState>,
}

#[derive(Debug, Default)]
struct FollowState {
    served: HashMap<String, u64>,
    in_use: HashMap<String, HashSet<String>>,
    used: HashMap<(String, String), u64>,
    tick: u64,
}

/// What one [`Follower::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Collections moved to a new version, with it.
    pub updated: Vec<(String, u64)>,
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Files evicted from the cache.
    pub evicted: usize,
    /// Collections that could not move to their newest version (they keep serving the one
    /// they had), with the error's kind and message; the others moved regardless.
    pub failed: Vec<(String, gyre::ErrorKind, String)>,
}

impl Follower {
    /// Follows `store`, caching files under `cache_dir` up to `cache_bytes` (the versions
    /// being served are kept even past the bound).
    pub fn new(
        store: ObjectDirectory,
        cache_dir: &std::path::Path,
        cache_bytes: u64,
    ) -> Result<Self> {
        Ok(Follower {
            store,
            cache: Arc::new(LocalDirectory::open(cache_dir)?),
            bound: cache_bytes,
            state: Mutex::new(FollowState::default()),
        })
    }

    /// Brings every published collection in `db` to its newest version; one that fails (a
    /// damaged object, say) is reported in [`SyncReport::failed`] and does not hold the others
    /// back. Only a store that cannot be listed fails the whole call.
    pub fn sync(&self, db: &Database) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        for (c, v) in published(&self.store)? {
            if gyre::collection::check_name(&c).is_err() {
                continue;
            }
            match self.sync_one(db, &c, v) {
                Ok(Some(d)) => {
                    report.downloaded += d;
                    report.updated.push((c, v));
                }
                Ok(None) => {}
                Err(e) => report.failed.push((c, e.kind(), e.to_string())),
            }
        }
        report.evicted = self.evict()?;
        Ok(report)
    }

    /// The version of `collection` being served, if any.
    pub fn served(&self, collection: &str) -> Option<u64> {
        self.state.lock().ok()?.served.get(collection).copied()
    }

    /// Bytes of the files in the cache.
    pub fn cache_bytes(&self) -> Result<u64> {
        let mut n = 0;
        for c in self.cache.list_dirs()? {
            let d = self.cache.sub(&c)?;
            for f in d.list()? {
                n += d.file_len(&f).unwrap_or(0);
            }
        }
        Ok(n)
    }

    fn sync_one(&self, db: &Database, collection: &str, v: u64) -> Result<Option<u64>> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| Error::internal("follower state poisoned"))?;
        if st.served.get(collection) == Some(&v) {
            return Ok(None);
        }
        let coll = self.store.sub_dir(collection);
        let r = read_record(&coll, v)?;
        if r.dropped {
            if db.collection(collection).is_ok() {
                db.drop_collection(collection)?;
            }
            st.in_use.remove(collection);
            st.served.insert(collection.to_string(), v);
            return Ok(Some(0));
        }
        let files_dir = coll.sub_dir(FILES);
        let cache = self.cache.sub(collection)?;
        let name = format!("v{v:012}");
        let info = SnapshotInfo {
            collection: collection.to_string(),
            name: name.clone(),
            created_unix_ms: r.created_unix_ms,
            generation: r.generation,
            points: r.points,
            files: r
                .files
                .iter()
                .map(|f| SnapshotFile {
                    name: f.name.clone(),
                    bytes: f.bytes,
                    crc32c: Some(f.crc32c),
                })
                .collect(),
            copied_bytes: 0,
        };
        // A snapshot left by a crash mid-sync is stale.
        let _ = db.delete_snapshot(collection, &name);
        let mut downloaded = 0;
        let mut names = HashSet::new();
        db.import_snapshot(&info, &mut |f, dest| {
            let vf = &r.files[info
                .files
                .iter()
                .position(|x| x.name == f.name)
                .unwrap_or(0)];
            if !immutable_file(&f.name) {
                downloaded += f.bytes;
                return copy_verified(&files_dir, &vf.key, dest, &f.name, f);
            }
            // Cached under the object's key, which names the content.
            if cache.file_len(&vf.key).ok() != Some(f.bytes) {
                cache.delete(&vf.key)?;
                copy_verified(&files_dir, &vf.key, &*cache, &vf.key, f)?;
                downloaded += f.bytes;
            }
            names.insert(vf.key.clone());
            dest.import_as(&*cache, &vf.key, &f.name).map(|_| ())
        })?;
        // Every file's CRC-32C was checked when it was fetched (cached ones when they were):
        // no second full read of the segments before the swap.
        let restored = db.restore_snapshot_verified(collection, &name, None, true, false);
        let _ = db.delete_snapshot(collection, &name);
        restored?;
        st.tick += 1;
        let tick = st.tick;
        for n in &names {
            st.used.insert((collection.to_string(), n.clone()), tick);
        }
        st.in_use.insert(collection.to_string(), names);
        st.served.insert(collection.to_string(), v);
        Ok(Some(downloaded))
    }

    /// Drops least recently used cache files not being served until the cache fits.
    fn evict(&self) -> Result<usize> {
        let st = self
            .state
            .lock()
            .map_err(|_| Error::internal("follower state poisoned"))?;
        let mut files = Vec::new();
        let mut total = 0;
        for c in self.cache.list_dirs()? {
            let d = self.cache.sub(&c)?;
            for f in d.list()? {
                let len = d.file_len(&f).unwrap_or(0);
                total += len;
                let busy = st.in_use.get(&c).is_some_and(|s| s.contains(&f));
                if !busy {
                    let used = st.used.get(&(c.clone(), f.clone())).copied().unwrap_or(0);
                    files.push((used, c.clone(), f, len));
                }
            }
        }
        files.sort();
        let mut evicted = 0;
        for (_, c, f, len) in files {
            if total <= self.bound {
                break;
            }
            self.cache.sub(&c)?.delete(&f)?;
            total -= len;
            evicted += 1;
        }
        Ok(evicted)
    }
}
