//! The replication loop of `gyre serve --store`: a writer seals (on its flush interval),
//! publishes every collection whose manifest moved and collects garbage now and then; a query
//! node follows the newest published versions. Runs on its own thread; the engine is blocking.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use gyre::Database;
use gyre_objstore::ObjectDirectory;
use gyre_objstore::replica::{Follower, Publisher};

use crate::serve::StoreSettings;

/// How long a writer's lease lasts without renewal (renewed every sync interval).
const LEASE: Duration = Duration::from_secs(30);
/// Objects unnamed by the newest versions live this long, so that a query node that has just
/// read an older version can still fetch its files.
const GRACE: Duration = Duration::from_secs(600);
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
}

/// Opens the store and runs the first round: a writer takes every collection's lease (a
/// second writer is refused here) and publishes; a query node downloads the newest versions.
pub fn start(db: Arc<Database>, st: &StoreSettings) -> Result<Replicator, String> {
    let store = ObjectDirectory::open(&st.url, &st.options).map_err(|e| e.to_string())?;
    let mode = if st.query_node {
        let f = Follower::new(store, &st.cache_dir, st.cache_bytes).map_err(|e| e.to_string())?;
        Mode::Query(f)
    } else {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gyre".into());
        let id = format!("{host}-{}", std::process::id());
        Mode::Writer(Publisher::new(store, &id, LEASE))
    };
    let r = Replicator {
        db,
        mode,
        url: st.url.clone(),
        interval: st.sync_interval,
        flush_interval: st.flush_interval,
        last_flush: Instant::now(),
        last_gc: Instant::now(),
    };
    match &r.mode {
        Mode::Writer(p) => {
            for name in r.db.list().map_err(|e| e.to_string())? {
                let v = p.publish(&r.db, &name).map_err(|e| e.to_string())?;
                if let Some(v) = v {
                    tracing::info!(collection = %name, version = v, "published");
                }
            }
            println!("gyre: writer publishing to {}", r.url);
        }
        Mode::Query(f) => {
            let rep = f.sync(&r.db).map_err(|e| e.to_string())?;
            println!(
                "gyre: query node following {} ({} collections, {} bytes downloaded, cache {} bytes)",
                r.url,
                rep.updated.len(),
                rep.downloaded,
                f.cache_bytes().unwrap_or(0)
            );
        }
    }
    Ok(r)
}

impl Replicator {
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
                let gc = self.last_gc.elapsed() >= GRACE / 10;
                if gc {
                    self.last_gc = Instant::now();
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
                    match p.publish(&self.db, &name) {
                        Ok(Some(v)) => {
                            tracing::info!(collection = %name, version = v, "published");
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(collection = %name, error = %e, "publish failed");
                        }
                    }
                    if gc {
                        match p.collect_garbage(&name, KEEP, GRACE) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(collection = %name, removed = n, "store GC"),
                            Err(e) => tracing::warn!(collection = %name, error = %e, "store GC"),
                        }
                    }
                }
            }
            Mode::Query(f) => match f.sync(&self.db) {
                Ok(rep) => {
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
                Err(e) => tracing::error!(store = %self.url, error = %e, "sync failed"),
            },
        }
    }
}
