//! Which segments a background compaction merges: size tiers in the spirit of a log merge
//! policy, plus a rewrite of segments that carry many deleted rows. Pure: counts in, a choice
//! out.
//!
//! Tiers: a segment's tier is `floor(log_f(live / base))` for merge factor `f` and base size
//! `base` (the memtable size), so a tier spans a factor `f` of sizes. When a tier holds `f`
//! segments, its smallest `f` are merged (into a segment of the next tier), as many as fit in
//! `max_merge_rows`. Each row is therefore rewritten about once per tier it climbs:
//! `log_f(n / base)` times over an ingest of `n` rows. A segment whose deleted rows reach
//! `deleted_ratio` (a third) of its rows is rewritten first (merged with the others of its tier when
//! they fit), so deleted rows stay a bounded share of the disk.

/// Counts of one segment, in manifest order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentStat {
    pub rows: usize,
    pub live: usize,
}

/// The knobs of the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MergePolicy {
    /// Segments of one tier merged together (≥ 2).
    pub merge_factor: usize,
    /// The size of tier 0 (rows).
    pub base_rows: usize,
    /// Most live rows one merge writes.
    pub max_merge_rows: usize,
    /// A segment with at least this share of deleted rows is rewritten.
    pub deleted_ratio: f64,
}

impl MergePolicy {
    /// The policy of a collection: merge factor `compact_segments`, base `segment_rows`.
    pub fn new(segment_rows: usize, compact_segments: usize) -> MergePolicy {
        let f = compact_segments.max(2);
        MergePolicy {
            merge_factor: f,
            base_rows: segment_rows.max(1),
            max_merge_rows: segment_rows
                .saturating_mul(f)
                .saturating_mul(f)
                .min(u32::MAX as usize),
            deleted_ratio: 1.0 / 3.0,
        }
    }

    fn tier(&self, live: usize) -> u32 {
        let mut t = 0;
        let mut size = self.base_rows;
        while live >= size.saturating_mul(self.merge_factor)
            && size < usize::MAX / self.merge_factor
        {
            size *= self.merge_factor;
            t += 1;
        }
        t
    }

    /// The segments to merge next (indices into `segs`, ascending), or `None`.
    pub fn pick(&self, segs: &[SegmentStat]) -> Option<Vec<usize>> {
        // Deleted rows first: the segment with the most of them past the ratio.
        let heavy = segs
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                let dead = s.rows - s.live;
                dead > 0 && dead as f64 >= self.deleted_ratio * s.rows as f64
            })
            .max_by_key(|(_, s)| s.rows - s.live);
        if let Some((i, s)) = heavy {
            let tier = self.tier(s.live);
            let mut pick = vec![i];
            let mut total = s.live;
            let mut mates: Vec<usize> = (0..segs.len())
                .filter(|&j| j != i && self.tier(segs[j].live) == tier)
                .collect();
            mates.sort_by_key(|&j| segs[j].live);
            for j in mates.into_iter().take(self.merge_factor - 1) {
                if total + segs[j].live > self.max_merge_rows {
                    break;
                }
                total += segs[j].live;
                pick.push(j);
            }
            pick.sort_unstable();
            return Some(pick);
        }
        let mut tiers: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
        for (i, s) in segs.iter().enumerate() {
            tiers.entry(self.tier(s.live)).or_default().push(i);
        }
        for (_, mut members) in tiers {
            if members.len() < self.merge_factor {
                continue;
            }
            members.sort_by_key(|&j| segs[j].live);
            let mut pick = Vec::new();
            let mut total = 0;
            for j in members.into_iter().take(self.merge_factor) {
                if !pick.is_empty() && total + segs[j].live > self.max_merge_rows {
                    break;
                }
                total += segs[j].live;
                pick.push(j);
            }
            if pick.len() >= 2 {
                pick.sort_unstable();
                return Some(pick);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(rows: usize, live: usize) -> SegmentStat {
        SegmentStat { rows, live }
    }

    #[test]
    fn a_full_tier_merges_and_bigger_tiers_wait() {
        let p = MergePolicy::new(100, 4);
        let mut segs = vec![
            stat(1000, 1000),
            stat(100, 100),
            stat(100, 100),
            stat(90, 90),
        ];
        assert_eq!(p.pick(&segs), None, "3 of tier 0 and one of tier 1");
        segs.push(stat(100, 100));
        assert_eq!(p.pick(&segs), Some(vec![1, 2, 3, 4]));
    }

    #[test]
    fn deleted_rows_trigger_a_rewrite() {
        let p = MergePolicy::new(100, 4);
        let segs = vec![stat(10_000, 10_000), stat(1000, 600), stat(100, 99)];
        assert_eq!(p.pick(&segs), Some(vec![1]));
        let segs = vec![stat(100, 60), stat(100, 100)];
        assert_eq!(p.pick(&segs), Some(vec![0, 1]), "with its tier mates");
    }

    #[test]
    fn write_amplification_is_logarithmic() {
        // Simulate an ingest of 4096 base-size segments with merge factor 4.
        let p = MergePolicy {
            max_merge_rows: usize::MAX,
            ..MergePolicy::new(1, 4)
        };
        let mut segs: Vec<SegmentStat> = Vec::new();
        let mut written = 0usize;
        let n = 4096;
        for _ in 0..n {
            segs.push(stat(1, 1));
            written += 1;
            while let Some(pick) = p.pick(&segs) {
                let live: usize = pick.iter().map(|&i| segs[i].live).sum();
                written += live;
                for &i in pick.iter().rev() {
                    segs.remove(i);
                }
                segs.push(stat(live, live));
            }
        }
        let amplification = written as f64 / n as f64;
        // log_4(4096) = 6 tiers climbed, plus the first write.
        assert!(amplification <= 7.0, "{amplification}");
        assert!(segs.len() <= 4 * 6, "{} segments", segs.len());
    }
}
