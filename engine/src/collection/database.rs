//! A data directory of named collections.
//!
//! Layout: `DIR/LOCK` (held with an exclusive file lock while open; names the holder's pid),
//! `DIR/collections/NAME/` (one directory per collection). Creating and dropping rename a
//! directory into or out of place, so a crash leaves a collection whole or absent.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{Collection, CollectionConfig, CollectionInfo};
use crate::error::{Error, Result};
use crate::fsio::{self, IoContext};

const CREATING: &str = ".creating-";
const DROPPING: &str = ".dropping-";

/// An open data directory.
#[derive(Debug)]
pub struct Database {
    dir: PathBuf,
    collections: RwLock<BTreeMap<String, Collection>>,
    /// The exclusive lock; collections share it, so it is held while any handle lives.
    lock: Arc<File>,
}

impl Drop for Database {
    /// Waits for background seals and compactions, so that files are complete when the
    /// directory is next opened. Errors are not lost: their writes are in the WAL.
    fn drop(&mut self) {
        if let Ok(map) = self.collections.read() {
            for c in map.values() {
                let _ = c.close();
            }
        }
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::invalid_argument("database", "an earlier panic left the database unusable")
}

/// Checks a collection name: 1 to 64 of `A-Z a-z 0-9 _ -`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            "name",
            format!(
                "{name:?} is not a valid collection name: use 1 to 64 letters, digits, '_' or '-'"
            ),
        ))
    }
}

impl Database {
    /// Opens (creating if needed) the data directory `dir` and every collection in it.
    /// Fails with [`Error::Locked`] while another process has it open.
    pub fn open(dir: impl AsRef<Path>) -> Result<Database> {
        let dir = dir.as_ref().to_path_buf();
        let root = dir.join("collections");
        fs::create_dir_all(&root).at(&root)?;
        let lock_path = dir.join("LOCK");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .at(&lock_path)?;
        if lock.try_lock().is_err() {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            return Err(Error::Locked {
                path: lock_path.display().to_string(),
                holder: if holder.trim().is_empty() {
                    "unknown holder".into()
                } else {
                    holder.trim().to_string()
                },
            });
        }
        lock.set_len(0).at(&lock_path)?;
        lock.rewind().at(&lock_path)?;
        writeln!(lock, "pid {}", std::process::id()).at(&lock_path)?;
        let lock = Arc::new(lock);
        let mut collections = BTreeMap::new();
        for entry in fs::read_dir(&root).at(&root)? {
            let entry = entry.at(&root)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(CREATING) || name.starts_with(DROPPING) {
                fs::remove_dir_all(&path).at(&path)?;
                continue;
            }
            if check_name(&name).is_err() || !path.is_dir() {
                continue;
            }
            collections.insert(
                name.clone(),
                Collection::open(&name, &path, Some(lock.clone()))?,
            );
        }
        Ok(Database {
            dir,
            collections: RwLock::new(collections),
            lock,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a collection. A collection with that name must not exist.
    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<Collection> {
        check_name(name)?;
        config.validate()?;
        let mut map = self.collections.write().map_err(poisoned)?;
        if let Some(existing) = map.get(name) {
            let detail = if existing.config().same_data_layout(&config) {
                String::new()
            } else {
                " with a different configuration".into()
            };
            return Err(Error::CollectionExists {
                name: name.into(),
                detail,
            });
        }
        let root = self.dir.join("collections");
        let staging = root.join(format!("{CREATING}{name}"));
        let _ = fs::remove_dir_all(&staging);
        Collection::create(&staging, config)?;
        let path = root.join(name);
        fs::rename(&staging, &path).at(&path)?;
        fsio::sync_dir(&root)?;
        let collection = Collection::open(name, &path, Some(self.lock.clone()))?;
        map.insert(name.into(), collection.clone());
        Ok(collection)
    }

    /// The collection called `name`.
    pub fn collection(&self, name: &str) -> Result<Collection> {
        self.collections
            .read()
            .map_err(poisoned)?
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound { name: name.into() })
    }

    /// Removes a collection and its files. Handles still held keep working on their open
    /// files until dropped.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let mut map = self.collections.write().map_err(poisoned)?;
        let Some(collection) = map.remove(name) else {
            return Err(Error::CollectionNotFound { name: name.into() });
        };
        collection.close()?;
        let root = self.dir.join("collections");
        let from = root.join(name);
        let to = root.join(format!("{DROPPING}{name}"));
        let _ = fs::remove_dir_all(&to);
        fs::rename(&from, &to).at(&from)?;
        fsio::sync_dir(&root)?;
        fs::remove_dir_all(&to).at(&to)
    }

    /// The collections' names, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(self
            .collections
            .read()
            .map_err(poisoned)?
            .keys()
            .cloned()
            .collect())
    }

    /// Counts and sizes of a collection.
    pub fn info(&self, name: &str) -> Result<CollectionInfo> {
        self.collection(name)?.info()
    }
}
