//! What the measuring tools share: where the shared dataset is, latency percentiles, and the
//! process's resident memory. Depends on nothing else in the crate.

use std::path::PathBuf;

/// Where the shared development dataset lives, relative to the repository.
pub const SHARED_DATASET: &str = "../shared/datasets/docs-minilm-384-angular.hdf5";

/// The shared dataset's path, resolved from this crate's directory (so it is found whatever
/// the working directory).
pub fn shared_dataset() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(SHARED_DATASET)
}

/// The `p` quantile of sorted values (NaN when there are none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Resident set size in bytes, when the platform tells (Linux).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}
