//! A data directory of named collections.
//!
//! Layout: `DIR/LOCK` (held with an exclusive file lock while open; names the holder's pid),
//! `DIR/collections/NAME/` (one directory per collection), `DIR/snapshots/NAME/SNAP/`
//! (`backup.rs`). Creating, dropping and restoring rename a directory into or out of place, so
//! a crash leaves a collection whole or absent.
//!
//! A collection that fails to open (a damaged file, an I/O error) does not keep the others
//! down: it is listed by [`Database::unavailable`], and every call naming it returns the error
//! it failed with, until it is dropped or the database reopened.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{Collection, CollectionConfig, CollectionInfo};
use crate::directory::{Directory, LocalDirectory, LockGuard};
use crate::error::{Error, Result};
use crate::payload::Schema;

pub(super) const CREATING: &str = ".creating-";
pub(super) const DROPPING: &str = ".dropping-";

/// An open data directory.
#[derive(Debug)]
pub struct Database {
    dir: PathBuf,
    /// `DIR`.
    pub(super) top: Arc<dyn Directory>,
    /// `DIR/collections`.
    pub(super) root: Arc<dyn Directory>,
    pub(super) collections: RwLock<BTreeMap<String, Collection>>,
    /// Collections that failed to open, with the error.
    pub(super) failed: RwLock<BTreeMap<String, Error>>,
    /// The exclusive lock; collections share it, so it is held while any handle lives.
    pub(super) lock: Arc<dyn LockGuard>,
    /// Serialises snapshot creation, restore and removal (their staging names).
    pub(super) snapshots: std::sync::Mutex<()>,
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

pub(super) fn poisoned<T>(_: T) -> Error {
    Error::internal("an earlier panic left the database's collection map unusable")
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
                "{} is not a valid collection name: use 1 to 64 letters, digits, '_' or '-'",
                crate::error::clip(name)
            ),
        ))
    }
}

impl Database {
    /// Opens (creating if needed) the data directory `dir` and every collection in it.
    /// Fails with [`Error::Locked`] while another process has it open. A collection that
    /// cannot be opened is reported by [`unavailable`](Self::unavailable), not here.
    pub fn open(dir: impl AsRef<Path>) -> Result<Database> {
        let local = LocalDirectory::open(dir.as_ref())?;
        Database::open_in(Arc::new(local), dir.as_ref().to_path_buf())
    }

    /// [`open`](Self::open) on any [`Directory`] (`path` names it in messages).
    pub fn open_in(top: Arc<dyn Directory>, path: PathBuf) -> Result<Database> {
        let lock: Arc<dyn LockGuard> = Arc::from(top.lock("LOCK")?);
        let root = top.sub("collections")?;
        // Finish or undo a restore a crash interrupted (`backup::RESTORING`).
        let dirs = root.list_dirs()?;
        for name in &dirs {
            let Some(target) = name.strip_prefix(super::backup::RESTORING) else {
                continue;
            };
            let ready = root
                .sub(name)?
                .list()?
                .iter()
                .any(|f| f == super::backup::READY);
            if ready && check_name(target).is_ok() && !dirs.iter().any(|d| d == target) {
                root.rename_dir(name, target)?;
            } else {
                root.remove_dir(name)?;
            }
        }
        let mut collections = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for name in root.list_dirs()? {
            if name.starts_with(CREATING) || name.starts_with(DROPPING) {
                root.remove_dir(&name)?;
                continue;
            }
            if check_name(&name).is_err() {
                continue;
            }
            let opened = root
                .sub(&name)
                .and_then(|d| Collection::open(&name, d, Some(lock.clone())));
            match opened {
                Ok(c) => {
                    collections.insert(name, c);
                }
                Err(e) => {
                    failed.insert(name, e);
                }
            }
        }
        Ok(Database {
            dir: path,
            top,
            root,
            collections: RwLock::new(collections),
            failed: RwLock::new(failed),
            lock,
            snapshots: std::sync::Mutex::new(()),
        })
    }

    /// Collections that failed to open, with their errors (a damaged file names itself).
    pub fn unavailable(&self) -> Vec<(String, Error)> {
        self.failed
            .read()
            .map(|m| m.iter().map(|(n, e)| (n.clone(), e.clone())).collect())
            .unwrap_or_default()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a collection. A collection with that name must not exist.
    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<Collection> {
        self.create_collection_with_schema(name, config, &Schema::default())
    }

    /// Creates a collection with declared payload fields (their types, and which are indexed):
    /// the schema is in place before the collection appears.
    pub fn create_collection_with_schema(
        &self,
        name: &str,
        config: CollectionConfig,
        schema: &Schema,
    ) -> Result<Collection> {
        check_name(name)?;
        config.validate()?;
        for field in schema.fields.keys() {
            crate::payload::check_name(field)?;
        }
        let mut map = self.collections.write().map_err(poisoned)?;
        if let Some(e) = self.failed.read().map_err(poisoned)?.get(name) {
            return Err(e.clone());
        }
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
        let staging = format!("{CREATING}{name}");
        self.root.remove_dir(&staging)?;
        let created = self
            .root
            .sub(&staging)
            .and_then(|d| Collection::create(&*d, config, schema));
        if let Err(e) = created {
            let _ = self.root.remove_dir(&staging);
            return Err(e);
        }
        self.root.rename_dir(&staging, name)?;
        let collection = Collection::open(name, self.root.sub(name)?, Some(self.lock.clone()))?;
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
            .ok_or_else(|| {
                self.failed
                    .read()
                    .ok()
                    .and_then(|f| f.get(name).cloned())
                    .unwrap_or_else(|| Error::CollectionNotFound { name: name.into() })
            })
    }

    /// Removes a collection and its files (also one that failed to open). Handles still held
    /// keep working on their open files until dropped.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let mut map = self.collections.write().map_err(poisoned)?;
        let was_failed = self
            .failed
            .write()
            .map_err(poisoned)?
            .remove(name)
            .is_some();
        match map.remove(name) {
            Some(collection) => collection.close()?,
            None if was_failed => {}
            None => return Err(Error::CollectionNotFound { name: name.into() }),
        }
        let to = format!("{DROPPING}{name}");
        self.root.remove_dir(&to)?;
        self.root.rename_dir(name, &to)?;
        self.root.remove_dir(&to)
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
