//! [`FaultDirectory`]: an in-memory file system for tests that fails on purpose.
//!
//! It keeps two states of everything: what a running process sees (file bytes as written,
//! names as renamed) and what would survive a power cut (file bytes as of their last sync,
//! names as of their directory's last sync). Every operation that can fail on a real disk is a
//! numbered *fault point*; a [`Fault`] makes point `n` fail with EIO or ENOSPC (a failing write
//! first writes half its bytes, as a full disk can), and [`FaultDirectory::power_cut`] returns
//! the file system a machine would find after losing power now.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AppendFile, Directory, FileBytes, FileWriter, LockGuard, temp_name};
use crate::error::{Error, Result};

/// What a fault point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Reading a file.
    Read,
    /// Writing or appending bytes.
    Write,
    /// Syncing a file or a directory.
    Sync,
    /// Renaming a file or directory into place.
    Rename,
    /// Removing a file or directory.
    Delete,
}

/// A fault to inject: fault point `at` (counted from 0 since the plan was set, over the
/// operations in `ops`, every operation when empty) fails with `errno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Which fault point fails.
    pub at: u64,
    /// The operating-system error number returned (5 = EIO, 28 = ENOSPC).
    pub errno: i32,
    /// The operations counted (all when empty).
    pub ops: Vec<Op>,
    /// Keep failing every later matching point too (a disk that stays full).
    pub sticky: bool,
}

/// Counters of a [`FaultDirectory`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Fault points passed since the directory was made (or the stats reset).
    pub points: u64,
    /// Faults injected.
    pub injected: u64,
    /// Bytes written or appended.
    pub bytes_written: u64,
    /// Syncs (file and directory).
    pub syncs: u64,
}

#[derive(Debug, Clone, Default)]
struct Node {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct Fs {
    nodes: BTreeMap<u64, Node>,
    next: u64,
    /// Full path → node, as the process sees it.
    names: BTreeMap<String, u64>,
    /// Full path → node, as a power cut would leave it.
    durable: BTreeMap<String, u64>,
    dirs: BTreeSet<String>,
    durable_dirs: BTreeSet<String>,
    locks: BTreeSet<String>,
    plan: Option<Fault>,
    /// Matching points seen since the plan was set.
    seen: u64,
    stats: FaultStats,
    /// Take a power-cut image when `stats.points` reaches this.
    cut_at: Option<u64>,
    cut: Option<Box<Fs>>,
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl Fs {
    /// Counts a fault point; `Err` when the plan says it fails.
    fn point(&mut self, op: Op, path: &str) -> Result<()> {
        if self.cut_at == Some(self.stats.points) {
            self.cut = Some(Box::new(self.after_power_cut()));
            self.cut_at = None;
        }
        self.stats.points += 1;
        let Some(plan) = &self.plan else {
            return Ok(());
        };
        if !plan.ops.is_empty() && !plan.ops.contains(&op) {
            return Ok(());
        }
        let n = self.seen;
        self.seen += 1;
        if n == plan.at || (plan.sticky && n > plan.at) {
            self.stats.injected += 1;
            let errno = plan.errno;
            if !plan.sticky {
                self.plan = None;
            }
            return Err(Error::io(
                &PathBuf::from(format!("fault:/{path}")),
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        Ok(())
    }

    fn node(&self, path: &str) -> Result<u64> {
        self.names.get(path).copied().ok_or_else(|| {
            Error::io(
                &PathBuf::from(format!("fault:/{path}")),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }

    /// A directory sync: the names directly inside `dir` become durable as they are.
    fn sync_dir(&mut self, dir: &str) {
        self.stats.syncs += 1;
        let inside = |p: &String| parent(p) == dir;
        self.durable.retain(|p, _| !inside(p));
        for (p, &id) in &self.names {
            if inside(p) {
                self.durable.insert(p.clone(), id);
            }
        }
        let sub = |p: &String| parent(p) == dir;
        self.durable_dirs.retain(|p| !sub(p));
        for d in &self.dirs {
            if sub(d) {
                self.durable_dirs.insert(d.clone());
            }
        }
    }

    fn new_node(&mut self) -> u64 {
        self.next += 1;
        self.nodes.insert(self.next, Node::default());
        self.next
    }

    /// Writes `bytes` at the end of node `id`; a failing write writes half of them first.
    fn write(&mut self, id: u64, path: &str, bytes: &[u8]) -> Result<()> {
        let fault = self.point(Op::Write, path);
        let n = if fault.is_ok() {
            bytes.len()
        } else {
            bytes.len() / 2
        };
        self.stats.bytes_written += n as u64;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.data.extend_from_slice(&bytes[..n]);
        }
        fault
    }

    fn sync_node(&mut self, id: u64, path: &str) -> Result<()> {
        self.point(Op::Sync, path)?;
        self.stats.syncs += 1;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.synced = node.data.clone();
        }
        Ok(())
    }

    /// What a machine finds after a power cut: durable names, synced bytes.
    fn after_power_cut(&self) -> Fs {
        let mut nodes = BTreeMap::new();
        for &id in self.durable.values() {
            if let Some(n) = self.nodes.get(&id) {
                nodes.insert(
                    id,
                    Node {
                        data: n.synced.clone(),
                        synced: n.synced.clone(),
                    },
                );
            }
        }
        // A durable name inside a directory whose own entry is not durable is lost with it.
        let reachable = |p: &str| {
            let mut d = parent(p);
            while !d.is_empty() {
                if !self.durable_dirs.contains(d) {
                    return false;
                }
                d = parent(d);
            }
            true
        };
        let durable: BTreeMap<String, u64> = self
            .durable
            .iter()
            .filter(|(p, _)| reachable(p))
            .map(|(p, &id)| (p.clone(), id))
            .collect();
        let dirs: BTreeSet<String> = self
            .durable_dirs
            .iter()
            .filter(|d| reachable(d))
            .cloned()
            .collect();
        Fs {
            nodes,
            next: self.next,
            names: durable.clone(),
            durable,
            dirs: dirs.clone(),
            durable_dirs: dirs,
            ..Fs::default()
        }
    }
}

/// An in-memory directory tree that injects faults (see the module docs). Clones share the
/// same file system; sub-directories are views of it.
#[derive(Debug, Clone)]
pub struct FaultDirectory {
    fs: Arc<Mutex<Fs>>,
    prefix: String,
}

impl Default for FaultDirectory {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultDirectory {
    /// An empty file system.
    pub fn new() -> FaultDirectory {
        FaultDirectory {
            fs: Arc::new(Mutex::new(Fs::default())),
            prefix: String::new(),
        }
    }

    fn fs(&self) -> MutexGuard<'_, Fs> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.fs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn full(&self, name: &str) -> String {
        join(&self.prefix, name)
    }

    /// Arms `fault` (replacing any earlier one); points are counted from now.
    pub fn inject(&self, fault: Fault) {
        let mut fs = self.fs();
        fs.plan = Some(fault);
        fs.seen = 0;
    }

    /// Disarms any fault.
    pub fn heal(&self) {
        self.fs().plan = None;
    }

    /// Counters so far.
    pub fn stats(&self) -> FaultStats {
        self.fs().stats
    }

    /// An independent copy of the file system as it is now (as the process sees it).
    pub fn snapshot(&self) -> FaultDirectory {
        let mut copy = self.fs().clone();
        copy.plan = None;
        copy.seen = 0;
        copy.locks.clear();
        copy.stats = FaultStats::default();
        FaultDirectory {
            fs: Arc::new(Mutex::new(copy)),
            prefix: self.prefix.clone(),
        }
    }

    /// An independent file system holding what a power cut now would leave: every file as of
    /// its last sync, every name as of its directory's last sync.
    pub fn power_cut(&self) -> FaultDirectory {
        let cut = self.fs().after_power_cut();
        FaultDirectory {
            fs: Arc::new(Mutex::new(cut)),
            prefix: self.prefix.clone(),
        }
    }

    /// Arms a power cut: when fault point `point` (counted by [`stats`](Self::stats)`.points`)
    /// is reached, before it runs, the file system a power cut would leave is kept; get it with
    /// [`take_cut`](Self::take_cut). The process carries on unaware.
    pub fn cut_at(&self, point: u64) {
        let mut fs = self.fs();
        fs.cut_at = Some(point);
        fs.cut = None;
    }

    /// The image [`cut_at`](Self::cut_at) took, if its point was reached.
    pub fn take_cut(&self) -> Option<FaultDirectory> {
        let cut = self.fs().cut.take()?;
        Some(FaultDirectory {
            fs: Arc::new(Mutex::new(*cut)),
            prefix: self.prefix.clone(),
        })
    }

    /// Every file's full path and length, sorted (for test diagnostics).
    pub fn files(&self) -> Vec<(String, usize)> {
        let fs = self.fs();
        fs.names
            .iter()
            .map(|(p, id)| (p.clone(), fs.nodes.get(id).map_or(0, |n| n.data.len())))
            .collect()
    }
}

impl Directory for FaultDirectory {
    fn path_of(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("fault:/{}", self.full(name)))
    }

    fn list(&self) -> Result<Vec<String>> {
        let fs = self.fs();
        Ok(fs
            .names
            .keys()
            .filter(|p| parent(p) == self.prefix)
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect())
    }

    fn file_len(&self, name: &str) -> Result<u64> {
        let fs = self.fs();
        let id = fs.node(&self.full(name))?;
        Ok(fs.nodes.get(&id).map_or(0, |n| n.data.len() as u64))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.full(name);
        let mut fs = self.fs();
        let id = fs.node(&path)?;
        fs.point(Op::Read, &path)?;
        Ok(fs
            .nodes
            .get(&id)
            .map(|n| n.data.clone())
            .unwrap_or_default())
    }

    fn map(&self, name: &str) -> Result<FileBytes> {
        let bytes = self.read(name)?;
        let mut map = memmap2::MmapMut::map_anon(bytes.len().max(1))
            .map_err(|e| Error::io(&self.path_of(name), e))?;
        map[..bytes.len()].copy_from_slice(&bytes);
        let map = map
            .make_read_only()
            .map_err(|e| Error::io(&self.path_of(name), e))?;
        if bytes.is_empty() {
            // An anonymous map cannot be empty; an empty file is refused by every reader anyway.
            return Err(Error::corrupt(&self.path_of(name), "the file is empty"));
        }
        Ok(map)
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut w = self.create(name)?;
        w.write(bytes)?;
        w.finish()
    }

    fn create(&self, name: &str) -> Result<Box<dyn FileWriter>> {
        let tmp = self.full(&temp_name(name));
        let mut fs = self.fs();
        fs.point(Op::Write, &tmp)?;
        let id = fs.new_node();
        fs.names.insert(tmp.clone(), id);
        Ok(Box::new(FaultWriter {
            dir: self.clone(),
            id,
            tmp,
            path: self.full(name),
            done: false,
        }))
    }

    fn append(&self, name: &str) -> Result<Box<dyn AppendFile>> {
        let path = self.full(name);
        let id = self.fs().node(&path)?;
        Ok(Box::new(FaultAppend {
            dir: self.clone(),
            id,
            path,
        }))
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.full(name);
        let mut fs = self.fs();
        if !fs.names.contains_key(&path) {
            return Ok(());
        }
        fs.point(Op::Delete, &path)?;
        fs.names.remove(&path);
        fs.point(Op::Sync, &self.prefix)?;
        fs.sync_dir(&self.prefix);
        Ok(())
    }

    fn lock(&self, name: &str) -> Result<Box<dyn LockGuard>> {
        let path = self.full(name);
        let mut fs = self.fs();
        if !fs.locks.insert(path.clone()) {
            return Err(Error::Locked {
                path: format!("fault:/{path}"),
                holder: "another handle of this file system".into(),
            });
        }
        Ok(Box::new(FaultLock {
            dir: self.clone(),
            path,
        }))
    }

    fn sub(&self, name: &str) -> Result<Arc<dyn Directory>> {
        let path = self.full(name);
        let mut fs = self.fs();
        if fs.names.contains_key(&path) {
            return Err(Error::invalid_argument("name", "a file has that name"));
        }
        if !fs.dirs.contains(&path) {
            fs.point(Op::Sync, &path)?;
            fs.dirs.insert(path.clone());
            fs.sync_dir(&self.prefix);
        }
        Ok(Arc::new(FaultDirectory {
            fs: self.fs.clone(),
            prefix: path,
        }))
    }

    fn list_dirs(&self) -> Result<Vec<String>> {
        let fs = self.fs();
        Ok(fs
            .dirs
            .iter()
            .filter(|p| parent(p) == self.prefix)
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect())
    }

    fn rename_dir(&self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (self.full(from), self.full(to));
        let mut fs = self.fs();
        if !fs.dirs.contains(&a) || fs.dirs.contains(&b) {
            return Err(Error::io(
                &self.path_of(from),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        fs.point(Op::Rename, &a)?;
        let moved = |p: &str| {
            (p == a || p.starts_with(&format!("{a}/"))).then(|| format!("{b}{}", &p[a.len()..]))
        };
        let rename_all = |m: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
            m.iter()
                .map(|(p, &id)| (moved(p).unwrap_or_else(|| p.clone()), id))
                .collect()
        };
        let rename_set = |s: &BTreeSet<String>| -> BTreeSet<String> {
            s.iter()
                .map(|p| moved(p).unwrap_or_else(|| p.clone()))
                .collect()
        };
        // The directory's whole subtree moves with it, durably once the parent is synced.
        fs.names = rename_all(&fs.names);
        fs.durable = rename_all(&fs.durable);
        fs.dirs = rename_set(&fs.dirs);
        fs.durable_dirs = rename_set(&fs.durable_dirs);
        // Renaming the durable subtree is exact only if the old entry was durable; a
        // non-durable one is simply not in `durable_dirs`, so the cut loses it as it should.
        fs.point(Op::Sync, &self.prefix)?;
        fs.sync_dir(&self.prefix);
        Ok(())
    }

    fn remove_dir(&self, name: &str) -> Result<()> {
        let path = self.full(name);
        let mut fs = self.fs();
        if !fs.dirs.contains(&path) {
            return Ok(());
        }
        fs.point(Op::Delete, &path)?;
        let inside = |p: &String| p == &path || p.starts_with(&format!("{path}/"));
        fs.names.retain(|p, _| !inside(p));
        fs.durable.retain(|p, _| !inside(p));
        fs.dirs.retain(|p| !inside(p));
        fs.durable_dirs.retain(|p| !inside(p));
        fs.point(Op::Sync, &self.prefix)?;
        fs.sync_dir(&self.prefix);
        Ok(())
    }
}

struct FaultWriter {
    dir: FaultDirectory,
    id: u64,
    tmp: String,
    path: String,
    done: bool,
}

impl FileWriter for FaultWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.dir.fs().write(self.id, &self.tmp, bytes)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let mut fs = self.dir.fs();
        fs.sync_node(self.id, &self.tmp)?;
        fs.point(Op::Rename, &self.path)?;
        fs.names.remove(&self.tmp);
        if let Some(old) = fs.names.insert(self.path.clone(), self.id)
            && !fs.durable.values().any(|&v| v == old)
        {
            fs.nodes.remove(&old);
        }
        self.done = true;
        fs.point(Op::Sync, &self.dir.prefix)?;
        let prefix = self.dir.prefix.clone();
        fs.sync_dir(&prefix);
        Ok(())
    }
}

impl Drop for FaultWriter {
    fn drop(&mut self) {
        if !self.done {
            let mut fs = self.dir.fs();
            if fs.names.get(&self.tmp) == Some(&self.id) {
                fs.names.remove(&self.tmp);
            }
        }
    }
}

#[derive(Debug)]
struct FaultAppend {
    dir: FaultDirectory,
    id: u64,
    path: String,
}

impl AppendFile for FaultAppend {
    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.dir.fs().write(self.id, &self.path, bytes)
    }

    fn sync(&mut self) -> Result<()> {
        self.dir.fs().sync_node(self.id, &self.path)
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        let mut fs = self.dir.fs();
        fs.point(Op::Write, &self.path)?;
        if let Some(n) = fs.nodes.get_mut(&self.id) {
            n.data.truncate(len as usize);
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        let fs = self.dir.fs();
        fs.nodes.get(&self.id).map_or(0, |n| n.data.len() as u64)
    }
}

#[derive(Debug)]
struct FaultLock {
    dir: FaultDirectory,
    path: String,
}

impl LockGuard for FaultLock {}

impl Drop for FaultLock {
    fn drop(&mut self) {
        self.dir.fs().locks.remove(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_cut_keeps_only_synced_bytes_and_names() {
        let d = FaultDirectory::new();
        let c = d.sub("c").unwrap();
        c.write_atomic("a", b"one").unwrap();
        let mut w = c.create("b").unwrap();
        w.write(b"unsynced").unwrap();
        c.write_atomic("log", b"h").unwrap();
        let mut log = c.append("log").unwrap();
        log.append(b"12").unwrap();
        log.sync().unwrap();
        log.append(b"34").unwrap();
        let cut = d.power_cut();
        let c2 = cut.sub("c").unwrap();
        assert_eq!(c2.read("a").unwrap(), b"one");
        assert_eq!(c2.read("log").unwrap(), b"h12");
        // The temp name became durable with a later directory sync; its bytes never synced.
        assert!(c2.read("b").is_err());
        assert_eq!(c2.read("b.tmp").unwrap(), b"");
        drop(w);
        assert!(!c.list().unwrap().contains(&"b.tmp".to_string()));
    }

    #[test]
    fn a_fault_fails_the_nth_point_once_and_a_failed_write_is_torn() {
        let d = FaultDirectory::new();
        d.write_atomic("log", b"").unwrap();
        let mut log = d.append("log").unwrap();
        d.inject(Fault {
            at: 1,
            errno: 28,
            ops: vec![Op::Write],
            sticky: false,
        });
        log.append(b"aaaa").unwrap();
        let e = log.append(b"bbbb").unwrap_err();
        assert!(e.to_string().contains("No space"), "{e}");
        log.append(b"cc").unwrap();
        assert_eq!(d.read("log").unwrap(), b"aaaabbcc");
        assert_eq!(d.stats().injected, 1);
    }
}
