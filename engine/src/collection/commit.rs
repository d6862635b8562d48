//! Group commit: concurrent writers queue their WAL records; the one at the head writes the
//! whole group with one write and one sync, applies it in order, and wakes the others. Also the
//! periodic WAL sync thread.
//!
//! Invariants:
//! * A write is acknowledged only after its record is written (and synced, with
//!   `Durability::Fsync`); it is applied after that, in WAL order, so replay rebuilds the
//!   acknowledged state exactly.
//! * A failed WAL write or sync fails the whole group, applies nothing, and leaves the WAL
//!   to be healed (the torn bytes cut) before the next write: the collection takes writes
//!   again as soon as the disk does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::manifest::Manifest;
use super::seal::Sealing;
use super::snapshot::{Op, apply_op};
use super::{Collection, Durability, poisoned};
use crate::error::{Error, Result};
use crate::wal::WalWriter;

/// Most bytes of WAL records one group commit writes.
const GROUP_BYTES: usize = 32 << 20;

/// What the single writer owns: the WAL and the manifest's counters.
#[derive(Debug)]
pub(super) struct Writer {
    pub wal: WalWriter,
    pub manifest: Manifest,
    /// The lowest WAL sequence whose file may still exist.
    pub wal_floor: u64,
    pub last_sync: Instant,
    /// A memtable being sealed (at most one).
    pub sealing: Option<Sealing>,
}

/// A write waiting in the group-commit queue.
#[derive(Debug)]
pub(super) struct Request {
    pub op: Op,
    pub body: Vec<u8>,
    pub result: Mutex<Option<Result<usize>>>,
}

/// The queue of writes waiting for the leader.
pub(super) type Queue = Mutex<VecDeque<Arc<Request>>>;

impl Collection {
    /// Queues a write and returns once it is durable and applied (or failed).
    pub(super) fn submit(&self, op: Op, body: Vec<u8>) -> Result<usize> {
        let inner = &self.inner;
        let req = Arc::new(Request {
            op,
            body,
            result: Mutex::new(None),
        });
        let mut queue = inner.queue.lock().map_err(poisoned)?;
        queue.push_back(req.clone());
        loop {
            if let Some(r) = req.result.lock().map_err(poisoned)?.take() {
                return r;
            }
            if queue.front().is_some_and(|f| Arc::ptr_eq(f, &req)) {
                break;
            }
            queue = inner.queue_cv.wait(queue).map_err(poisoned)?;
        }
        // Leader: take a group off the queue's front (they stay queued so followers wait).
        let mut group = Vec::new();
        let mut bytes = 0;
        for r in queue.iter() {
            if !group.is_empty() && bytes + r.body.len() > GROUP_BYTES {
                break;
            }
            bytes += r.body.len();
            group.push(r.clone());
        }
        drop(queue);
        let outcome = self.commit_group(&group);
        let mut queue = inner.queue.lock().map_err(poisoned)?;
        for (i, r) in group.iter().enumerate() {
            let res = match &outcome {
                Ok(counts) => Ok(counts[i]),
                Err(e) => Err(e.clone()),
            };
            *r.result.lock().map_err(poisoned)? = Some(res);
            queue.pop_front();
        }
        inner.queue_cv.notify_all();
        drop(queue);
        let result = req.result.lock().map_err(poisoned)?.take();
        result.unwrap_or_else(|| Err(Error::internal("a queued write lost its result")))
    }

    fn commit_group(&self, group: &[Arc<Request>]) -> Result<Vec<usize>> {
        let inner = &self.inner;
        let mut writer = inner.writer.lock().map_err(poisoned)?;
        // A seal that finished meanwhile is installed first (its errors are for flush()).
        let _ = self.finish_seal(&mut writer, false);
        for r in group {
            writer.wal.stage(&r.body);
        }
        let durability = inner.config.durability;
        writer
            .wal
            .write(matches!(durability, Durability::Periodic(_)))?;
        match durability {
            Durability::Fsync => writer.wal.commit_synced()?,
            Durability::Periodic(ms) => {
                // Acknowledged once written; a failed sync here is retried by the next one.
                if writer.last_sync.elapsed().as_millis() >= u128::from(ms)
                    && writer.wal.sync().is_ok()
                {
                    writer.last_sync = Instant::now();
                }
            }
        }
        let mut counts = Vec::with_capacity(group.len());
        let mut killed = 0;
        let full = {
            let mut state = inner.state.write().map_err(poisoned)?;
            for r in group {
                let applied = apply_op(&mut state, &r.op);
                counts.push(applied.removed);
                killed += applied.segment_rows_killed;
            }
            state.memtable.rows() >= inner.config.segment_rows
        };
        if full {
            // The group is durable and applied whatever happens here; a failed seal is
            // retried by the next full memtable and reported by `flush()`. At most one seal
            // runs: a full memtable waits for the previous one (backpressure).
            if self.finish_seal(&mut writer, true).is_ok() {
                let _ = self.freeze(&mut writer);
            }
        }
        drop(writer);
        if killed > 0 {
            self.maybe_compact();
        }
        super::publish::collect_garbage(inner);
        Ok(counts)
    }

    /// Periodic durability: a thread syncs the WAL every `ms` milliseconds while writes are
    /// unsynced, and stops when the collection is gone.
    pub(super) fn start_periodic_sync(&self, ms: u32) {
        let weak = Arc::downgrade(&self.inner);
        let period = std::time::Duration::from_millis(u64::from(ms.max(1)));
        let _ = std::thread::Builder::new()
            .name("gyre-wal-sync".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(period);
                    let Some(inner) = weak.upgrade() else { return };
                    if let Ok(mut w) = inner.writer.lock()
                        && w.wal.unsynced()
                        && w.wal.sync().is_ok()
                    {
                        w.last_sync = Instant::now();
                    }
                }
            });
    }
}
