//! `gyre-bench churn`: a steady upsert-and-delete load over a fixed set of live ids, to see
//! whether deleted rows pile up and what the merge policy writes.
//!
//! Every step upserts a batch of new ids and deletes as many of the oldest, so the live count
//! stays at `--live`. After each step it reads the collection's info: live and deleted rows,
//! bytes on disk, and every segment id not seen before (a newly written segment, by a seal or
//! a merge) adds its file size to the bytes written. Write amplification is segment bytes
//! written over the segment bytes the upserted rows need once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clap::Args;
use gyre::random::SeededRng;
use gyre::{CollectionConfig, Database, Durability};

/// Arguments of `gyre-bench churn`.
#[derive(Debug, Args)]
pub struct ChurnArgs {
    /// Live ids kept.
    #[arg(long, default_value_t = 50_000)]
    live: usize,
    /// Ids upserted (and as many deleted) per step.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Vector dimension.
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Rows per segment.
    #[arg(long, default_value_t = 100_000)]
    segment_rows: usize,
    /// Data directory (its `churn` collection is replaced).
    #[arg(long, default_value = "gyre-bench-churn")]
    data_dir: std::path::PathBuf,
    /// Only upsert (a growing collection): measures the merge policy's write amplification
    /// over a long ingest.
    #[arg(long)]
    no_delete: bool,
    /// Threads searching the collection without pause meanwhile (upsert latency under reads).
    #[arg(long, default_value_t = 0)]
    searchers: usize,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

use crate::common::rss_bytes;

/// Runs the churn load and prints its figures.
pub fn run(a: &ChurnArgs) -> Result<(), String> {
    let err = |e: gyre::Error| e.to_string();
    let db = Database::open(&a.data_dir).map_err(err)?;
    if db.collection("churn").is_ok() {
        db.drop_collection("churn").map_err(err)?;
    }
    let config = CollectionConfig {
        segment_rows: a.segment_rows,
        durability: Durability::Fsync,
        ..CollectionConfig::new(a.dim)
    };
    let c = db.create_collection("churn", config).map_err(err)?;
    let mut rng = SeededRng::for_data(7);
    let mut rows =
        |n: usize| -> Vec<f32> { (0..n * a.dim).map(|_| rng.gaussian() as f32).collect() };
    let ids: Vec<u64> = (0..a.live as u64).collect();
    for chunk in ids.chunks(a.batch.max(1)) {
        c.upsert(chunk, &rows(chunk.len())).map_err(err)?;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let searches = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let searchers: Vec<_> = (0..a.searchers)
        .map(|t| {
            let (c, stop, searches) = (c.clone(), stop.clone(), searches.clone());
            let dim = a.dim;
            std::thread::spawn(move || {
                let mut rng = SeededRng::for_data(100 + t as u64);
                let opts = gyre::SearchOptions::recommended(c.config());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let q: Vec<f32> = (0..dim).map(|_| rng.gaussian() as f32).collect();
                    let _ = c.search(&q, 10, &opts);
                    searches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut latencies: Vec<f64> = Vec::new();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut written = 0u64;
    let mut upserted = a.live as u64;
    let mut next = a.live as u64;
    let mut oldest = 0u64;
    let start = Instant::now();
    let mut peak_deleted = 0;
    let mut peak_disk = 0;
    let mut peak_rss = 0;
    let mut steps = 0u64;
    while start.elapsed() < Duration::from_secs(a.seconds) {
        let new: Vec<u64> = (next..next + a.batch as u64).collect();
        next += a.batch as u64;
        let batch = rows(new.len());
        let t = Instant::now();
        c.upsert(&new, &batch).map_err(err)?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        if !a.no_delete {
            let old: Vec<u64> = (oldest..oldest + a.batch as u64).collect();
            oldest += a.batch as u64;
            c.delete(&old).map_err(err)?;
        }
        upserted += a.batch as u64;
        steps += 1;
        let info = c.info().map_err(err)?;
        for s in &info.segments {
            if seen.insert(s.id) {
                written += s.bytes;
            }
        }
        peak_deleted = peak_deleted.max(info.deleted);
        peak_disk = peak_disk.max(info.disk_bytes);
        peak_rss = peak_rss.max(rss_bytes().unwrap_or(0));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in searchers {
        let _ = h.join();
    }
    latencies.sort_by(f64::total_cmp);
    let p = |q| crate::common::percentile(&latencies, q);
    let (p50, p99, max) = (p(0.5), p(0.99), p(1.0));
    let searches = searches.load(std::sync::atomic::Ordering::Relaxed);
    c.close().map_err(err)?;
    let info = c.info().map_err(err)?;
    let per_row = info
        .segments
        .iter()
        .map(|s| s.bytes as f64 / s.rows.max(1) as f64)
        .next()
        .unwrap_or(0.0);
    let amplification = written as f64 / (upserted as f64 * per_row).max(1.0);
    let secs = start.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "live": info.live,
        "deleted_end": info.deleted,
        "deleted_peak": peak_deleted,
        "disk_bytes_end": info.disk_bytes,
        "disk_bytes_peak": peak_disk,
        "rss_peak": peak_rss,
        "segments_end": info.segments.len(),
        "segment_bytes_written": written,
        "rows_upserted": upserted,
        "write_amplification": amplification,
        "steps": steps,
        "seconds": secs,
        "upserts_per_s": (steps * a.batch as u64) as f64 / secs,
        "upsert_ms_p50": p50,
        "upsert_ms_p99": p99,
        "upsert_ms_max": max,
        "searchers": a.searchers,
        "searches_per_s": searches as f64 / secs,
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "churn: {} live, deleted rows end {} (peak {}), disk {:.1} MB end (peak {:.1} MB), peak RSS {:.0} MiB, {} segments, write amplification {:.2} over {} upserted rows, {:.0} upserts/s for {:.0} s; upsert of {} rows p50 {:.2} ms p99 {:.2} ms max {:.2} ms with {} searchers ({:.0} searches/s)",
            info.live,
            info.deleted,
            peak_deleted,
            info.disk_bytes as f64 / 1e6,
            peak_disk as f64 / 1e6,
            peak_rss as f64 / (1 << 20) as f64,
            info.segments.len(),
            amplification,
            upserted,
            (steps * a.batch as u64) as f64 / secs,
            secs,
            a.batch,
            p50,
            p99,
            max,
            a.searchers,
            searches as f64 / secs
        );
    }
    Ok(())
}
