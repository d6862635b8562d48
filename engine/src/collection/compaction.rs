//! Compaction: merging segments into one, dropping deleted rows, without blocking readers or
//! writers. The background compaction merges what the [`MergePolicy`] picks; `compact()` merges
//! everything.
//!
//! Invariants: the merged segment is written from a snapshot with no lock held; only the
//! manifest edit takes the writer lock, and it carries over the deletions made meanwhile
//! ([`remap_late`]). At most one compaction runs at a time.

use std::sync::Arc;

use roaring::RoaringBitmap;

use super::merge_policy::{MergePolicy, SegmentStat};
use super::publish::{Edit, publish};
use super::snapshot::{SegState, remap_late};
use super::{Collection, poisoned};
use crate::error::{Error, Result};
use crate::segment;

impl Collection {
    fn policy(&self) -> MergePolicy {
        let c = &self.inner.config;
        MergePolicy::new(c.segment_rows, c.compact_segments)
    }

    /// Starts a background compaction when the merge policy picks something and none runs.
    pub(super) fn maybe_compact(&self) {
        let stats: Vec<SegmentStat> = match self.inner.state.read() {
            Ok(s) => s
                .segments
                .iter()
                .map(|g| SegmentStat {
                    rows: g.seg.rows(),
                    live: g.live.count(),
                })
                .collect(),
            Err(_) => return,
        };
        if self.policy().pick(&stats).is_none() {
            return;
        }
        let Ok(mut slot) = self.inner.background.lock() else {
            return;
        };
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let me = self.clone();
        // A failed background compaction leaves the segments as they were; the next trigger
        // or an explicit `compact()` tries again and reports the error.
        *slot = std::thread::Builder::new()
            .name("gyre-compact".into())
            .spawn(move || {
                let policy = me.policy();
                // Merges cascade (a merged segment may fill the next tier).
                while let Ok(true) = me.merge_with(|stats| policy.pick(stats)) {}
            })
            .ok();
    }

    /// Merges all segments into one, dropping deleted rows. Writers and readers continue
    /// meanwhile; only the final swap takes the writer lock. Returns false when another
    /// compaction was running or there was nothing to do.
    pub fn compact(&self) -> Result<bool> {
        self.merge_with(|stats| match stats {
            [] => None,
            [one] if one.live == one.rows => None,
            all => Some((0..all.len()).collect()),
        })
    }

    /// Merges the segments `pick` chooses from the current ones (indices, ascending). Returns
    /// false when another compaction was running or `pick` chose nothing.
    fn merge_with(&self, pick: impl Fn(&[SegmentStat]) -> Option<Vec<usize>>) -> Result<bool> {
        let inner = &self.inner;
        let Ok(_guard) = inner.compacting.try_lock() else {
            return Ok(false);
        };
        let all = inner.state.read().map_err(poisoned)?.segments.clone();
        let stats: Vec<SegmentStat> = all
            .iter()
            .map(|g| SegmentStat {
                rows: g.seg.rows(),
                live: g.live.count(),
            })
            .collect();
        let Some(chosen) = pick(&stats) else {
            return Ok(false);
        };
        if chosen.is_empty() || chosen.iter().any(|&i| i >= all.len()) {
            return Err(Error::internal("the merge policy chose no valid segment"));
        }
        let start: Vec<Arc<SegState>> = chosen.iter().map(|&i| all[i].clone()).collect();
        let id = {
            let mut w = inner.writer.lock().map_err(poisoned)?;
            let id = w.manifest.next_segment;
            w.manifest.next_segment += 1;
            id
        };
        let copied: Vec<Vec<u32>> = start.iter().map(|s| s.live_rows()).collect();
        let sources: Vec<segment::Source<'_>> = start
            .iter()
            .zip(&copied)
            .map(|(s, rows)| (s.view(&inner.shape), rows.clone(), s.seg.payloads()))
            .collect();
        let merged = super::seal::write_and_open(self, id, &sources)?;
        drop(sources);
        let mut writer = inner.writer.lock().map_err(poisoned)?;
        let now = inner.state.read().map_err(poisoned)?.segments.clone();
        // Deletions made while we merged, renumbered as in the merged segment.
        let mut late_sets = Vec::with_capacity(start.len());
        for old in &start {
            let cur = now
                .iter()
                .find(|s| Arc::ptr_eq(&s.seg, &old.seg))
                .ok_or_else(|| Error::internal("a merged segment left the manifest meanwhile"))?;
            late_sets.push(&cur.deleted - &old.deleted);
        }
        let pairs: Vec<(&[u32], &RoaringBitmap)> = copied
            .iter()
            .map(Vec::as_slice)
            .zip(late_sets.iter())
            .collect();
        let late = remap_late(&pairs);
        let mut merged_state = SegState::new(merged, RoaringBitmap::new(), 0, 0);
        if !late.is_empty() {
            merged_state = merged_state.with_deleted(&late);
        }
        let is_merged = |s: &Arc<SegState>| start.iter().any(|o| Arc::ptr_eq(&o.seg, &s.seg));
        let first = now.iter().position(is_merged).unwrap_or(0);
        let mut segments: Vec<Arc<SegState>> =
            now.iter().filter(|s| !is_merged(s)).cloned().collect();
        segments.insert(first.min(segments.len()), Arc::new(merged_state));
        let removed: Vec<Arc<SegState>> = now.iter().filter(|s| is_merged(s)).cloned().collect();
        let edit = Edit {
            segments,
            wal_seq: None,
            removed,
        };
        publish(inner, &mut writer, edit, |_| {})?;
        Ok(true)
    }
}
