//! The replication loop of `gyre serve --store`: a writer seals (on its flush interval),
//! publishes every collection whose manifest moved and collects garbage now and then; a query
//! node follows the newest published versions. Runs on its own thread; the engine is blocking.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use gyre::Database;
use gyre_objstore::ObjectDirectory;
use gyre_objstore::replica::{Follower, Hook, Publisher};

use crate::metrics::{CollectionLabels, Replica};
use crate::serve::StoreSettings;

/// How long a writer's lease lasts without renewal (renewed every sync interval).
const LEASE: Duration = Duration::from_secs(30);
/// Versions kept besides those younger than the grace period.
const KEEP: usize = 3;

enum Mode {
    Writer(Publisher),
    Query(Follower),
}

/// A started replicator (the first publish or sync has run).
pub struct Replicator {
    db: Arc<Database>,
    mode: Mode,
    url: String,
    interval: Duration,
    flush_interval: Option<Duration>,
    last_flush: Instant,
    last_gc: Instant,
    gc_grace: Duration,
    gauges: Replica,
}

/// The writer's name in leases: kept in the data directory, so that a writer restarted on the
/// same directory (after a crash, say) takes its own lease back at once, while another
/// directory's writer waits for it to expire.
fn writer_id(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join("writer-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gyre".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!("{host}-{:x}", nanos ^ u128::from(std::process::id()) << 64);
    let tmp = data_dir.join("writer-id.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(id)
}

/// Opens the store and runs the first round: a writer takes every collection's lease (a
/// second writer is refused here) and publishes; a query node downloads the newest versions.
pub fn start(
    db: Arc<Database>,
    data_dir: &Path,
    st: &StoreSettings,
    gauges: Replica,
) -> Result<Replicator, String> {
    let store = ObjectDirectory::open(&st.url, &st.options).map_err(|e| e.to_string())?;
    let mode = if st.query_node {
        let f = Follower::new(store, &st.cache_dir, st.cache_bytes).map_err(|e| e.to_string())?;
        Mode::Query(f)
    } else {
        let mut p = Publisher::new(store, &writer_id(data_dir)?, LEASE);
        // For crash tests: die between the upload of a new segment and its version's commit.
        if std::env::var_os("GYRE_TEST_CRASH_BEFORE_COMMIT").is_some() {
            p = p.before_commit(Hook(Box::new(|c, v, fresh| {
                if fresh.iter().any(|k| k.contains(".gseg.")) {
                    eprintln!("gyre: GYRE_TEST_CRASH_BEFORE_COMMIT: aborting before {c} v{v}");
                    std::process::abort();
                }
            })));
        }
        Mode::Writer(p)
    };
    let r = Replicator {
        db,
        mode,
        url: st.url.clone(),
        interval: st.sync_interval,
        flush_interval: st.flush_interval,
        last_flush: Instant::now(),
        last_gc: Instant::now(),
        gc_grace: st.gc_grace,
        gauges,
    };
    match &r.mode {
        Mode::Writer(p) => {
            for name in r.db.list().map_err(|e| e.to_string())? {
                let v = p.publish(&r.db, &name).map_err(|e| e.to_string())?;
                if let Some(v) = v {
                    tracing::info!(collection = %name, version = v, "published");
                }
                r.set_version(&name, p.published_version(&name));
            }
            println!("gyre: writer publishing to {}", r.url);
        }
        Mode::Query(f) => match f.sync(&r.db) {
            Ok(rep) => {
                r.follow_gauges(f);
                r.report_failures(&rep);
                println!(
                    "gyre: query node following {} ({} collections, {} bytes downloaded, cache {} bytes)",
                    r.url,
                    rep.updated.len(),
                    rep.downloaded,
                    f.cache_bytes().unwrap_or(0)
                )
            }
            // Serve what the data directory holds (the last versions followed) and keep
            // trying: a query node must come back even while the store is unreachable.
            Err(e) => {
                r.gauges.failures.inc();
                tracing::error!(store = %r.url, error = %e, "first sync failed; serving local copies");
                println!(
                    "gyre: query node following {} (store unreachable: {e}; serving {} local collections)",
                    r.url,
                    r.db.list().map_or(0, |l| l.len())
                );
            }
        },
    }
    Ok(r)
}

impl Replicator {
    fn set_version(&self, collection: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.gauges
                .version
                .get_or_create(&CollectionLabels {
                    collection: collection.to_string(),
                })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    /// Logs and counts one publish (or drop) round of `collection`.
    fn published(&self, collection: &str, what: &str, result: gyre::Result<Option<u64>>) {
        match result {
            Ok(Some(v)) => {
                tracing::info!(collection = %collection, version = v, "{what}");
                self.set_version(collection, Some(v));
            }
            Ok(None) => {}
            Err(e) => {
                self.gauges.failures.inc();
                tracing::error!(collection = %collection, error = %e, "publish failed");
            }
        }
    }

    fn report_failures(&self, rep: &gyre_objstore::replica::SyncReport) {
        for (c, _, e) in &rep.failed {
            self.gauges.failures.inc();
            tracing::error!(collection = %c, error = %e, "sync failed; serving the version it had");
        }
    }

    fn follow_gauges(&self, f: &Follower) {
        for name in self.db.list().unwrap_or_default() {
            self.set_version(&name, f.served(&name));
        }
        self.gauges
            .cache_bytes
            .set(i64::try_from(f.cache_bytes().unwrap_or(0)).unwrap_or(i64::MAX));
    }

    /// Rounds every sync interval until `stop` says so (or its sender is gone); a writer seals
    /// and publishes once more on the way out.
    pub fn run(mut self, stop: &Receiver<()>) {
        while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(self.interval) {
            self.round(false);
        }
        if matches!(self.mode, Mode::Writer(_)) {
            self.round(true);
        }
    }

    fn round(&mut self, last: bool) {
        let names = self.db.list().unwrap_or_default();
        match &self.mode {
            Mode::Writer(p) => {
                let flush = last
                    || self
                        .flush_interval
                        .is_some_and(|d| self.last_flush.elapsed() >= d);
                if flush {
                    self.last_flush = Instant::now();
                }
                let gc = self.last_gc.elapsed() >= (self.gc_grace / 10).max(self.interval);
                if gc {
                    self.last_gc = Instant::now();
                }
                for gone in p.known() {
                    if !names.contains(&gone) {
                        self.published(&gone, "published drop", p.publish_drop(&self.db, &gone));
                    }
                }
                for name in names {
                    let Ok(c) = self.db.collection(&name) else {
                        continue;
                    };
                    if flush
                        && c.info().is_ok_and(|i| i.memtable_rows > 0)
                        && let Err(e) = c.flush()
                    {
                        tracing::error!(collection = %name, error = %e, "flush failed");
                    }
                    self.published(&name, "published", p.publish(&self.db, &name));
                    if gc {
                        match p.collect_garbage(&name, KEEP, self.gc_grace) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(collection = %name, removed = n, "store GC"),
                            Err(e) => {
                                self.gauges.failures.inc();
                                tracing::warn!(collection = %name, error = %e, "store GC");
                            }
                        }
                    }
                }
            }
            Mode::Query(f) => match f.sync(&self.db) {
                Ok(rep) => {
                    self.follow_gauges(f);
                    self.report_failures(&rep);
                    for (c, v) in &rep.updated {
                        tracing::info!(
                            collection = %c,
                            version = v,
                            downloaded = rep.downloaded,
                            cache_bytes = f.cache_bytes().unwrap_or(0),
                            "following"
                        );
                    }
                }
                Err(e) => {
                    self.gauges.failures.inc();
                    tracing::error!(store = %self.url, error = %e, "sync failed");
                }
            },
        }
    }
}
