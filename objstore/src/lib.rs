//! Gyre on S3-compatible object storage, behind the engine's [`Directory`] seam.
//!
//! [`ObjectDirectory`] maps a directory onto a key prefix (`s3://bucket/prefix/NAME`, a
//! sub-directory is a longer prefix). What object storage gives, it keeps: a put is atomic and
//! durable when it returns, so [`Directory::write_atomic`] is one put (overwriting) and a
//! [`Directory::create`]d file is written once (`PutMode::Create`, or a multipart upload for
//! large files, checked absent first): writing a name twice is a
//! [`Conflict`](gyre::Error::Conflict), never an overwrite. What it lacks, it refuses with a
//! clear error: appends (the WAL stays on local disk), directory renames and locks.
//!
//! The engine is synchronous; each call runs its request on the directory's own small tokio
//! runtime and waits for it, so it works from plain threads and from `spawn_blocking` alike.
//!
//! Invariants: keys are `prefix/name` with `/` only between parts; nothing here caches, so
//! every read sees the store's latest state (S3 is strongly consistent for reads after puts
//! and lists).

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub mod replica;

use futures::TryStreamExt;
use gyre::directory::{AppendFile, FileBytes, FileWriter, LockGuard};
use gyre::{Directory, Error, Result};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};

/// Files up to this size are one put; larger ones are uploaded in parts of this size.
const PART: usize = 16 << 20;

/// Where the store is and how to reach it; unset fields come from the usual `AWS_*`
/// environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`).
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// An S3-compatible endpoint such as `http://127.0.0.1:9000` (default: AWS).
    pub endpoint: Option<String>,
    /// The region (default: `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Allow plain HTTP (implied by an `http://` endpoint).
    pub allow_http: bool,
    /// Access key id and secret (default: the environment's).
    pub credentials: Option<(String, String)>,
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`, for naming keys in errors.
    base: String,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Dropping a runtime blocks; inside another runtime's task that panics.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A [`Directory`] over an object-store prefix (see the module docs).
#[derive(Clone)]
pub struct ObjectDirectory {
    shared: Arc<Shared>,
    /// The key prefix, without leading or trailing `/`; empty for the bucket's root.
    prefix: String,
}

impl fmt::Debug for ObjectDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectDirectory({})", self.url())
    }
}

fn io_err(kind: io::ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

/// Splits `s3://bucket/some/prefix` into the bucket and the prefix.
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let bad = |why: &str| Error::io(url.as_ref(), io_err(io::ErrorKind::InvalidInput, why));
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("a store is named s3://BUCKET[/PREFIX]"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("the bucket name is empty"));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(bad("the prefix holds a . or .. part"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

impl ObjectDirectory {
    /// Opens `s3://bucket/prefix` (nothing is created: prefixes exist once a key is under them).
    pub fn open(url: &str, opts: &StoreOptions) -> Result<ObjectDirectory> {
        let (bucket, prefix) = parse_url(url)?;
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        let endpoint = opts.endpoint.clone().or_else(|| {
            ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .iter()
                .find_map(|v| std::env::var(v).ok())
        });
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e.as_str());
            if e.starts_with("http://") {
                b = b.with_allow_http(true);
            }
        }
        if let Some((id, secret)) = &opts.credentials {
            b = b
                .with_access_key_id(id.as_str())
                .with_secret_access_key(secret.as_str());
        }
        if opts.allow_http {
            b = b.with_allow_http(true);
        }
        let region = opts
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        b = b.with_region(region).with_retry(object_store::RetryConfig {
            // A store that is down is reported within seconds, not after the default three
            // minutes of retries (a query node then serves its local copies meanwhile).
            max_retries: 4,
            retry_timeout: std::time::Duration::from_secs(15),
            ..Default::default()
        });
        let store = b.build().map_err(|e| {
            Error::io(
                url.as_ref(),
                io_err(io::ErrorKind::InvalidInput, e.to_string()),
            )
        })?;
        Self::with_store(Arc::new(store), &format!("s3://{bucket}"), &prefix)
    }

    /// A directory over any [`ObjectStore`] (tests use the in-memory one); `base` names the
    /// store in errors.
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        base: &str,
        prefix: &str,
    ) -> Result<ObjectDirectory> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gyre-objstore")
            .enable_all()
            .build()
            .map_err(|e| Error::io(base.as_ref(), e))?;
        Ok(ObjectDirectory {
            shared: Arc::new(Shared {
                store,
                base: base.trim_end_matches('/').to_string(),
                rt: Some(rt),
            }),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The sub-directory `name` as an object directory.
    pub fn sub_dir(&self, name: &str) -> ObjectDirectory {
        ObjectDirectory {
            shared: self.shared.clone(),
            prefix: if self.prefix.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", self.prefix)
            },
        }
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            self.shared.base.clone()
        } else {
            format!("{}/{}", self.shared.base, self.prefix)
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.shared.store
    }

    fn key(&self, name: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(name)
        } else {
            Key::from(format!("{}/{name}", self.prefix))
        }
    }

    fn prefix_key(&self) -> Option<Key> {
        (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()))
    }

    /// Runs `fut` on the directory's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self.shared.rt.as_ref().ok_or_else(gone)?;
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().unwrap_or_else(|_| Err(gone()))
    }

    /// The engine error for a failed request on `name`.
    fn error(&self, name: &str, e: object_store::Error) -> Error {
        let path = self.path_of(name);
        match e {
            object_store::Error::AlreadyExists { .. } => Error::Conflict {
                key: path.display().to_string(),
                detail: "the object exists already (it is written once)".into(),
            },
            object_store::Error::Precondition { .. } => Error::Conflict {
                key: path.display().to_string(),
                detail: "the object changed since it was read (another writer committed)".into(),
            },
            object_store::Error::NotFound { .. } => Error::io(
                &path,
                io_err(io::ErrorKind::NotFound, "no such object in the store"),
            ),
            other => Error::io(&path, io_err(io::ErrorKind::Other, other.to_string())),
        }
    }

    fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<object_store::PutResult> {
        let (store, key) = (self.shared.store.clone(), self.key(name));
        let payload = PutPayload::from(bytes.to_vec());
        self.run(async move { store.put_opts(&key, payload, PutOptions::from(mode)).await })
            .map_err(|e| self.error(name, e))
    }

    /// Writes `name` only if it does not exist (the commit point of a manifest version):
    /// [`Conflict`](Error::Conflict) when another writer got there first.
    pub fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<Version> {
        self.put(name, bytes, PutMode::Create).map(Version::from)
    }

    /// Replaces `name` only if it is still at `version` (as read or written last):
    /// [`Conflict`](Error::Conflict) when someone else replaced it in between.
    pub fn put_if_match(&self, name: &str, bytes: &[u8], version: &Version) -> Result<Version> {
        let v = UpdateVersion {
            e_tag: version.e_tag.clone(),
            version: version.version.clone(),
        };
        self.put(name, bytes, PutMode::Update(v)).map(Version::from)
    }

    /// Reads `name` with its version, or `None` where it does not exist.
    pub fn read_versioned(&self, name: &str) -> Result<Option<(Vec<u8>, Version)>> {
        let (store, key) = (self.shared.store.clone(), self.key(name));
        let got = self.run(async move {
            let r = store.get(&key).await?;
            let v = Version {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            Ok((r.bytes().await?.to_vec(), v))
        });
        match got {
            Ok(x) => Ok(Some(x)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// Every key under this directory (recursively), relative to it, with sizes and
    /// modification times in Unix milliseconds.
    pub fn list_all(&self) -> Result<Vec<(String, u64, i64)>> {
        let (store, prefix) = (self.shared.store.clone(), self.prefix_key());
        let metas = self
            .run(async move { store.list(prefix.as_ref()).try_collect::<Vec<_>>().await })
            .map_err(|e| self.error("", e))?;
        let skip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        Ok(metas
            .into_iter()
            .map(|m| {
                let k = m.location.to_string();
                let rel = k.get(skip..).unwrap_or("").to_string();
                (rel, m.size, m.last_modified.timestamp_millis())
            })
            .collect())
    }

    /// One level of this directory: its objects and its sub-prefixes.
    fn listing(&self) -> Result<object_store::ListResult> {
        let (store, prefix) = (self.shared.store.clone(), self.prefix_key());
        self.run(async move { store.list_with_delimiter(prefix.as_ref()).await })
            .map_err(|e| self.error("", e))
    }

    /// Deletes one key relative to this directory (missing is fine).
    pub fn delete_key(&self, rel: &str) -> Result<()> {
        self.delete(rel)
    }
}

fn gone() -> object_store::Error {
    object_store::Error::Generic {
        store: "gyre-objstore",
        source: "the store's runtime has stopped".into(),
    }
}

/// An object's version for a conditional replace (its ETag, and the store's version id where
/// it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The ETag.
    pub e_tag: Option<String>,
    /// The version id.
    pub version: Option<String>,
}

impl From<object_store::PutResult> for Version {
    fn from(r: object_store::PutResult) -> Self {
        Version {
            e_tag: r.e_tag,
            version: r.version,
        }
    }
}

fn unsupported(path: PathBuf, what: &str) -> Error {
    Error::io(
        &path,
        io_err(
            io::ErrorKind::Unsupported,
            format!("object storage cannot {what}"),
        ),
    )
}

impl Directory for ObjectDirectory {
    fn path_of(&self, name: &str) -> PathBuf {
        let url = self.url();
        if name.is_empty() {
            PathBuf::from(url)
        } else {
            PathBuf::from(format!("{url}/{name}"))
        }
    }

    fn list(&self) -> Result<Vec<String>> {
        Ok(self
            .listing()?
            .objects
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }

    fn file_len(&self, name: &str) -> Result<u64> {
        let (store, key) = (self.shared.store.clone(), self.key(name));
        self.run(async move { store.head(&key).await })
            .map(|m| m.size)
            .map_err(|e| self.error(name, e))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let (store, key) = (self.shared.store.clone(), self.key(name));
        self.run(async move { Ok(store.get(&key).await?.bytes().await?.to_vec()) })
            .map_err(|e| self.error(name, e))
    }

    fn map(&self, name: &str) -> Result<FileBytes> {
        let bytes = self.read(name)?;
        if bytes.is_empty() {
            // An anonymous map cannot be empty; every reader refuses an empty file anyway.
            return Err(Error::corrupt(&self.path_of(name), "the object is empty"));
        }
        let mut map = memmap2::MmapMut::map_anon(bytes.len())
            .map_err(|e| Error::io(&self.path_of(name), e))?;
        map.copy_from_slice(&bytes);
        map.make_read_only()
            .map_err(|e| Error::io(&self.path_of(name), e))
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.put(name, bytes, PutMode::Overwrite).map(|_| ())
    }

    fn create(&self, name: &str) -> Result<Box<dyn FileWriter>> {
        Ok(Box::new(ObjectWriter {
            dir: self.clone(),
            name: name.to_string(),
            buf: Vec::new(),
            upload: None,
        }))
    }

    fn append(&self, name: &str) -> Result<Box<dyn AppendFile>> {
        Err(unsupported(
            self.path_of(name),
            "append to a file (the WAL stays on local disk)",
        ))
    }

    fn delete(&self, name: &str) -> Result<()> {
        let (store, key) = (self.shared.store.clone(), self.key(name));
        match self.run(async move { store.delete(&key).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(name, e)),
        }
    }

    fn lock(&self, name: &str) -> Result<Box<dyn LockGuard>> {
        Err(unsupported(
            self.path_of(name),
            "hold a file lock (writers hold a lease object instead)",
        ))
    }

    fn sub(&self, name: &str) -> Result<Arc<dyn Directory>> {
        Ok(Arc::new(self.sub_dir(name)))
    }

    fn list_dirs(&self) -> Result<Vec<String>> {
        Ok(self
            .listing()?
            .common_prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    fn rename_dir(&self, from: &str, _to: &str) -> Result<()> {
        Err(unsupported(self.path_of(from), "rename a directory"))
    }

    fn remove_dir(&self, name: &str) -> Result<()> {
        let sub = self.sub_dir(name);
        for (rel, _, _) in sub.list_all()? {
            sub.delete(&rel)?;
        }
        Ok(())
    }
}

/// A file written once: buffered and put with `PutMode::Create`, or (past [`PART`] bytes) a
/// multipart upload that is completed by `finish` and aborted when dropped unfinished.
struct ObjectWriter {
    dir: ObjectDirectory,
    name: String,
    buf: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
}

impl ObjectWriter {
    fn send_part(&mut self) -> Result<()> {
        if self.upload.is_none() {
            // Multipart uploads cannot be conditional: check the name is free first (a race
            // with another writer of the same name is left to the names being unique).
            match self.dir.file_len(&self.name) {
                Ok(_) => {
                    return Err(Error::Conflict {
                        key: self.dir.path_of(&self.name).display().to_string(),
                        detail: "the object exists already (it is written once)".into(),
                    });
                }
                Err(e) if e.kind() == gyre::ErrorKind::Io && is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
            let (store, key) = (self.dir.shared.store.clone(), self.dir.key(&self.name));
            let up = self
                .dir
                .run(async move { store.put_multipart(&key).await })
                .map_err(|e| self.dir.error(&self.name, e))?;
            self.upload = Some(up);
        }
        let data = PutPayload::from(std::mem::take(&mut self.buf));
        let part = self.upload.as_mut().map(|u| u.put_part(data));
        if let Some(part) = part {
            self.dir
                .run(part)
                .map_err(|e| self.dir.error(&self.name, e))?;
        }
        Ok(())
    }
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { io_kind, .. } if *io_kind == io::ErrorKind::NotFound)
}

impl FileWriter for ObjectWriter {
    fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = PART - self.buf.len();
            let n = room.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() == PART && !bytes.is_empty() {
                self.send_part()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        if self.upload.is_none() {
            let buf = std::mem::take(&mut self.buf);
            return self.dir.put(&self.name, &buf, PutMode::Create).map(|_| ());
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        let Some(mut up) = self.upload.take() else {
            return Ok(());
        };
        self.dir
            .run(async move { up.complete().await })
            .map(|_| ())
            .map_err(|e| self.dir.error(&self.name, e))
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if let Some(mut up) = self.upload.take() {
            let _ = self.dir.run(async move { up.abort().await });
        }
    }
}
