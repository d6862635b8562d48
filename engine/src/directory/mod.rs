//! The storage seam: everything a database or collection does with files goes through a
//! [`Directory`].
//!
//! A directory holds flat file names and named sub-directories. Files are written in two ways
//! only: replaced whole ([`Directory::write_atomic`], or streamed through [`Directory::create`]
//! and made visible by [`FileWriter::finish`]: temp name, fsync, rename, directory fsync), or
//! appended to with explicit syncs ([`Directory::append`], the WAL). Nothing is edited in place.
//!
//! Implementations: [`LocalDirectory`] (the operating system's files, memory-mapped for reads),
//! and [`FaultDirectory`] (in memory, for tests: injects I/O errors at the n-th operation and
//! simulates a power cut that keeps only what was synced).
//!
//! Invariants every implementation keeps:
//! * after `write_atomic` or `FileWriter::finish` returns, the file survives a power cut whole;
//!   before, the name holds the old content (or nothing);
//! * after `AppendFile::sync` returns, the bytes appended so far survive a power cut;
//! * `delete` and `rename_dir` are durable when they return.

mod fault;
mod local;

pub use fault::{Fault, FaultDirectory, FaultStats, Op};
pub use local::LocalDirectory;
// `Imported` and `copy_file` are defined below.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;

/// Read-only bytes of a whole file: a memory map of it (local files) or an anonymous map holding
/// a copy (in-memory directories). Page-aligned either way, so arrays can be cast in place.
pub type FileBytes = memmap2::Mmap;

/// A place that holds files (see the module docs for the contract).
pub trait Directory: Send + Sync + fmt::Debug {
    /// The path used to name `name` in errors and logs.
    fn path_of(&self, name: &str) -> PathBuf;
    /// The file names in this directory (not sub-directories), in no particular order.
    fn list(&self) -> Result<Vec<String>>;
    /// The size of a file in bytes.
    fn file_len(&self, name: &str) -> Result<u64>;
    /// The whole content of a file.
    fn read(&self, name: &str) -> Result<Vec<u8>>;
    /// The whole content of a file, mapped (or copied into an anonymous map).
    fn map(&self, name: &str) -> Result<FileBytes>;
    /// Replaces (or creates) `name` with `bytes`, atomically and durably.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// Starts writing a new file under a temporary name; [`FileWriter::finish`] publishes it as
    /// `name`. Dropping the writer without finishing removes the temporary file.
    fn create(&self, name: &str) -> Result<Box<dyn FileWriter>>;
    /// Opens an existing file for appending (at its end).
    fn append(&self, name: &str) -> Result<Box<dyn AppendFile>>;
    /// Removes a file, durably. Removing a missing file is not an error.
    fn delete(&self, name: &str) -> Result<()>;
    /// Takes the exclusive lock `name` (a lock file) for as long as the guard lives; fails with
    /// [`Error::Locked`](crate::Error::Locked) while another holder has it.
    fn lock(&self, name: &str) -> Result<Box<dyn LockGuard>>;
    /// The sub-directory `name`, created (durably) if missing.
    fn sub(&self, name: &str) -> Result<Arc<dyn Directory>>;
    /// The sub-directories' names.
    fn list_dirs(&self) -> Result<Vec<String>>;
    /// Renames sub-directory `from` to `to` (which must not exist), durably.
    fn rename_dir(&self, from: &str, to: &str) -> Result<()>;
    /// Removes sub-directory `name` and everything in it. Removing a missing one is not an error.
    fn remove_dir(&self, name: &str) -> Result<()>;
    /// Bytes of the mapped files `names` resident in memory, where the platform tells.
    fn resident_bytes(&self, _names: &[&str]) -> Option<u64> {
        None
    }
    /// Where `name` lives on the local file system, for directories that are local files (a
    /// hard link can then share it).
    fn local_path(&self, _name: &str) -> Option<PathBuf> {
        None
    }
    /// Puts `from`'s file `name` here under the same name, durably, and says how: a hard link
    /// where both sides are local files on one file system, else a copy. Only for files that
    /// are never written again (a link shares later writes): segments, deletion files.
    fn import(&self, from: &dyn Directory, name: &str) -> Result<Imported> {
        self.import_as(from, name, name)
    }
    /// [`import`](Self::import) under another name here: `from`'s `name` becomes `to_name`.
    fn import_as(&self, from: &dyn Directory, name: &str, to_name: &str) -> Result<Imported> {
        copy_file_as(from, name, self, to_name)?;
        Ok(Imported::Copied)
    }
}

/// How [`Directory::import`] brought a file over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// A hard link: no bytes moved.
    Linked,
    /// A full copy.
    Copied,
}

/// Copies `from`'s file `name` into `to` under the same name (streamed from a map, written
/// under a temporary name, synced and renamed into place).
pub fn copy_file<D: Directory + ?Sized>(from: &dyn Directory, name: &str, to: &D) -> Result<u64> {
    copy_file_as(from, name, to, name)
}

/// [`copy_file`] under another name in `to`.
pub fn copy_file_as<D: Directory + ?Sized>(
    from: &dyn Directory,
    name: &str,
    to: &D,
    to_name: &str,
) -> Result<u64> {
    if from.file_len(name)? == 0 {
        to.write_atomic(to_name, &[])?;
        return Ok(0);
    }
    let bytes = from.map(name)?;
    let mut w = to.create(to_name)?;
    for chunk in bytes.chunks(8 << 20) {
        w.write(chunk)?;
    }
    w.finish()?;
    Ok(bytes.len() as u64)
}

/// A file being written under a temporary name.
pub trait FileWriter: Send {
    /// Appends bytes.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
    /// Syncs the file, renames it into place and syncs the directory.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A file open for appending, with explicit syncs.
pub trait AppendFile: Send + Sync + fmt::Debug {
    /// Appends bytes (they reach the OS: a process crash keeps them, a power cut may not).
    fn append(&mut self, bytes: &[u8]) -> Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync(&mut self) -> Result<()>;
    /// Cuts the file to `len` bytes (appends continue there); not durable until [`sync`](Self::sync).
    fn truncate(&mut self, len: u64) -> Result<()>;
    /// The file's length.
    fn len(&self) -> u64;
    /// True when the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Holds a [`Directory::lock`] until dropped.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// The temporary name a file is written under before it is published.
pub(crate) fn temp_name(name: &str) -> String {
    format!("{name}.tmp")
}
