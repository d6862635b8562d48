//! [`LocalDirectory`]: the operating system's files.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{AppendFile, Directory, FileBytes, FileWriter, LockGuard, temp_name};
use crate::error::{Error, Result};
use crate::fsio::IoContext;

/// A directory on the local file system. Reads of large files are memory maps.
#[derive(Debug, Clone)]
pub struct LocalDirectory {
    root: PathBuf,
}

impl LocalDirectory {
    /// The directory at `root`, created if missing.
    pub fn open(root: impl AsRef<Path>) -> Result<LocalDirectory> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).at(&root)?;
        Ok(LocalDirectory { root })
    }

    /// The directory's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The names of the files (or, with `dirs`, the sub-directories) directly inside.
    fn entries(&self, dirs: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).at(&self.root)? {
            let entry = entry.at(&self.root)?;
            let kind = entry.file_type().at(&entry.path())?;
            if (if dirs { kind.is_dir() } else { kind.is_file() })
                && let Some(name) = entry.file_name().to_str()
            {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    fn sync_self(&self) -> Result<()> {
        sync_dir(&self.root)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

impl Directory for LocalDirectory {
    fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn list(&self) -> Result<Vec<String>> {
        self.entries(false)
    }

    fn file_len(&self, name: &str) -> Result<u64> {
        let path = self.path_of(name);
        Ok(fs::metadata(&path).at(&path)?.len())
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path_of(name);
        fs::read(&path).at(&path)
    }

    fn map(&self, name: &str) -> Result<FileBytes> {
        let path = self.path_of(name);
        let file = File::open(&path).at(&path)?;
        // SAFETY: Gyre maps only files it published whole and never opens for writing again;
        // they are removed only after the last map of them is dropped. Another process
        // truncating the file would be outside the storage contract (as for any mmap).
        unsafe { memmap2::Mmap::map(&file) }.at(&path)
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut w = self.create(name)?;
        w.write(bytes)?;
        w.finish()
    }

    fn create(&self, name: &str) -> Result<Box<dyn FileWriter>> {
        let tmp = self.path_of(&temp_name(name));
        let file = File::create(&tmp).at(&tmp)?;
        Ok(Box::new(LocalWriter {
            w: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            path: self.path_of(name),
            dir: self.root.clone(),
        }))
    }

    fn append(&self, name: &str) -> Result<Box<dyn AppendFile>> {
        let path = self.path_of(name);
        let mut file = OpenOptions::new().write(true).open(&path).at(&path)?;
        let len = file.seek(std::io::SeekFrom::End(0)).at(&path)?;
        Ok(Box::new(LocalAppend { file, path, len }))
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path_of(name);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_self(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn lock(&self, name: &str) -> Result<Box<dyn LockGuard>> {
        let path = self.path_of(name);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        if lock.try_lock().is_err() {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            return Err(Error::Locked {
                path: path.display().to_string(),
                holder: if holder.trim().is_empty() {
                    "unknown holder".into()
                } else {
                    holder.trim().to_string()
                },
            });
        }
        lock.set_len(0).at(&path)?;
        lock.rewind().at(&path)?;
        writeln!(lock, "pid {}", std::process::id()).at(&path)?;
        Ok(Box::new(LocalLock { _file: lock }))
    }

    fn sub(&self, name: &str) -> Result<Arc<dyn Directory>> {
        let path = self.path_of(name);
        if !path.is_dir() {
            fs::create_dir_all(&path).at(&path)?;
            self.sync_self()?;
        }
        Ok(Arc::new(LocalDirectory { root: path }))
    }

    fn list_dirs(&self) -> Result<Vec<String>> {
        self.entries(true)
    }

    fn rename_dir(&self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (self.path_of(from), self.path_of(to));
        fs::rename(&a, &b).at(&a)?;
        self.sync_self()
    }

    fn resident_bytes(&self, names: &[&str]) -> Option<u64> {
        let paths: Vec<PathBuf> = names.iter().map(|n| self.path_of(n)).collect();
        resident_bytes(&paths)
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.path_of(name))
    }

    fn import_as(
        &self,
        from: &dyn Directory,
        name: &str,
        to_name: &str,
    ) -> Result<super::Imported> {
        if let Some(src) = from.local_path(name) {
            let dst = self.path_of(to_name);
            // A link fails across file systems (and on some that have none): then copy.
            if fs::hard_link(&src, &dst).is_ok() {
                self.sync_self()?;
                return Ok(super::Imported::Linked);
            }
        }
        super::copy_file_as(from, name, self, to_name)?;
        Ok(super::Imported::Copied)
    }

    fn remove_dir(&self, name: &str) -> Result<()> {
        let path = self.path_of(name);
        match fs::remove_dir_all(&path) {
            Ok(()) => self.sync_self(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

struct LocalWriter {
    w: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
}

impl FileWriter for LocalWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.w {
            Some(w) => w.write_all(bytes).at(&self.tmp),
            None => Err(Error::internal("write after finish")),
        }
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let w = self
            .w
            .take()
            .ok_or_else(|| Error::internal("finish twice"))?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().at(&self.tmp)?;
        drop(file);
        fs::rename(&self.tmp, &self.path).at(&self.path)?;
        sync_dir(&self.dir)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.w.take().is_some() {
            // Not finished: the temporary file is garbage.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[derive(Debug)]
struct LocalAppend {
    file: File,
    path: PathBuf,
    len: u64,
}

impl AppendFile for LocalAppend {
    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let r = self.file.write_all(bytes).at(&self.path);
        if r.is_err() {
            // Part of it may have been written: learn where the file really ends.
            self.len = self
                .file
                .seek(std::io::SeekFrom::End(0))
                .unwrap_or(self.len);
        } else {
            self.len += bytes.len() as u64;
        }
        r
    }

    fn sync(&mut self) -> Result<()> {
        self.file.sync_data().at(&self.path)
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        self.file.set_len(len).at(&self.path)?;
        self.file
            .seek(std::io::SeekFrom::Start(len))
            .at(&self.path)?;
        self.len = len;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }
}

#[derive(Debug)]
struct LocalLock {
    _file: File,
}

impl LockGuard for LocalLock {}

/// Resident bytes of the mappings of `paths`, from `/proc/self/smaps` (Linux).
fn resident_bytes(paths: &[PathBuf]) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let names: Vec<String> = paths
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .map(|p| p.display().to_string())
        .collect();
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = names.iter().any(|n| line.ends_with(n.as_str()));
        } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
            total += kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()?
                * 1024;
        }
    }
    Some(total)
}
