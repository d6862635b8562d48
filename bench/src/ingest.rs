//! `gyre-bench ingest`: durable ingest into an on-disk collection, then open time, first-query
//! latency and memory (resident vs mapped bytes of the segments).

use std::path::PathBuf;
use std::time::Instant;

use gyre::random::SeededRng;
use gyre::{CollectionConfig, Database, Durability, Metric, RerankStorage, SearchOptions};
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::percentile;

#[derive(clap::Args)]
pub struct Args {
    /// ann-benchmarks HDF5 file or vector file (.fvecs, .fbin, .npy, ...). Default: the shared
    /// docs-minilm-384 set. Ignored with --random.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Ingest N seeded random unit vectors instead of a dataset.
    #[arg(long)]
    random: Option<usize>,
    /// Dimension of --random vectors.
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Bits per coordinate.
    #[arg(long, default_value_t = 4)]
    bits: u8,
    /// Vectors per upsert call (each is one durable write).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Full-precision copies: none, f16, f32.
    #[arg(long, default_value = "f32")]
    rerank: RerankStorage,
    /// Rows per segment.
    #[arg(long, default_value_t = 100_000)]
    segment_rows: usize,
    /// fsync (per batch) or periodic:MS.
    #[arg(long, default_value = "fsync")]
    durability: Durability,
    /// Data directory (its `ingest` collection is replaced).
    #[arg(long, default_value = "gyre-bench-data")]
    data_dir: PathBuf,
    /// Queries timed after reopening (taken from the data).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// Skip ingest: open the existing `ingest` collection in --data-dir and time --queries
    /// single searches with random queries (for memory-limited runs, see bench/memory-limit.sh).
    #[arg(long)]
    search_only: bool,
}

/// Opens an existing collection and times single searches (rescore on stored vectors when the
/// collection keeps them), reporting what stays resident.
fn search_only(args: &Args) -> Result<(), String> {
    let err = |e: gyre::Error| e.to_string();
    let t = Instant::now();
    let db = Database::open(&args.data_dir).map_err(err)?;
    let c = db.collection("ingest").map_err(err)?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let config = *c.config();
    let d = config.dim;
    let mut rng = SeededRng::for_data(99);
    let mut queries = vec![0.0f32; args.queries.max(1) * d];
    for q in queries.chunks_exact_mut(d) {
        rng.unit_vector(q);
    }
    let opts = SearchOptions::recommended(&config);
    let mut lat = Vec::with_capacity(args.queries);
    let t = Instant::now();
    for q in queries.chunks_exact(d) {
        let s = Instant::now();
        c.search(q, 10, &opts).map_err(err)?;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let qps = lat.len() as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let info = c.info().map_err(err)?;
    let mapped: u64 = info.segments.iter().map(|s| s.bytes).sum();
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory/gyre-bench/memory.limit_in_bytes")
        .ok()
        .map(|s| s.trim().to_string());
    let row = serde_json::json!({
        "live": info.live,
        "dim": d,
        "rerank": config.rerank.name(),
        "open_ms": open_ms,
        "queries": lat.len(),
        "single_query_qps": qps,
        "p50_ms": percentile(&lat, 0.5),
        "p99_ms": percentile(&lat, 0.99),
        "segment_file_bytes": mapped,
        "segment_resident_bytes": info.resident_bytes,
        "rss_bytes": rss_bytes(),
        "cgroup_limit_bytes": limit,
    });
    if args.json {
        println!("{row}");
    } else {
        let mb = |b: u64| b as f64 / 1048576.0;
        println!(
            "{} points, d = {d}, rerank {}: open {open_ms:.1} ms; {} single searches: {qps:.0} QPS, p50 {:.2} ms, p99 {:.2} ms",
            info.live,
            config.rerank.name(),
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        println!(
            "  segments mapped {:.1} MiB, resident {:.1} MiB; process RSS {:.1} MiB",
            mb(mapped),
            info.resident_bytes.map_or(f64::NAN, mb),
            rss_bytes().map_or(f64::NAN, mb)
        );
    }
    Ok(())
}

use crate::common::rss_bytes;

pub fn run(args: &Args) -> Result<(), String> {
    if args.search_only {
        return search_only(args);
    }
    let err = |e: gyre::Error| e.to_string();
    let (data, d, metric, name) = match args.random {
        Some(n) => {
            eprintln!(
                "generating {n} random unit vectors of dimension {}",
                args.dim
            );
            let mut rng = SeededRng::for_data(7);
            let mut v = vec![0.0f32; n * args.dim];
            for row in v.chunks_exact_mut(args.dim) {
                rng.unit_vector(row);
            }
            (
                v,
                args.dim,
                Metric::Cosine,
                format!("random-{n}x{}", args.dim),
            )
        }
        None => {
            let path = args
                .dataset
                .clone()
                .unwrap_or_else(crate::common::shared_dataset);
            let is_h5 = path.extension().is_some_and(|e| e == "hdf5" || e == "h5");
            let stem = path
                .file_stem()
                .map_or("dataset".into(), |s| s.to_string_lossy().into_owned());
            if is_h5 {
                let ds = gyre_datasets::annb::read_hdf5(&path).map_err(|e| e.to_string())?;
                let d = ds.train.dim();
                (ds.train.as_slice().to_vec(), d, ds.distance.metric(), stem)
            } else {
                let m = gyre_datasets::read_vectors(&path).map_err(|e| e.to_string())?;
                let d = m.dim();
                (m.as_slice().to_vec(), d, Metric::Cosine, stem)
            }
        }
    };
    let n = data.len() / d;
    let config = CollectionConfig {
        metric,
        bits: args.bits,
        rerank: args.rerank,
        segment_rows: args.segment_rows,
        durability: args.durability,
        ..CollectionConfig::new(d)
    };
    std::fs::create_dir_all(&args.data_dir).map_err(|e| e.to_string())?;
    let db = Database::open(&args.data_dir).map_err(err)?;
    if db.collection("ingest").is_ok() {
        db.drop_collection("ingest").map_err(err)?;
    }
    let c = db.create_collection("ingest", config).map_err(err)?;
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "ingest [{bar:30}] {pos}/{len} vectors ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let ids: Vec<u64> = (0..n as u64).collect();
    let t = Instant::now();
    for (chunk_ids, rows) in ids.chunks(args.batch).zip(data.chunks(args.batch * d)) {
        c.upsert(chunk_ids, rows).map_err(err)?;
        bar.inc(chunk_ids.len() as u64);
    }
    let ingest_s = t.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let t = Instant::now();
    c.flush().map_err(err)?;
    let flush_s = t.elapsed().as_secs_f64();
    let info = c.info().map_err(err)?;
    drop(c);
    drop(db);

    // Reopen with a warm page cache: mapping and header checks only.
    let t = Instant::now();
    let db = Database::open(&args.data_dir).map_err(err)?;
    let c = db.collection("ingest").map_err(err)?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_open = rss_bytes();
    let opts = SearchOptions::recommended(&config);
    let nq = args.queries.min(n).max(1);
    let t = Instant::now();
    c.search(&data[..d], 10, &opts).map_err(err)?;
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    for q in 0..nq {
        c.search(&data[q * d..(q + 1) * d], 10, &opts)
            .map_err(err)?;
    }
    let single_qps = nq as f64 / t.elapsed().as_secs_f64();
    let after = c.info().map_err(err)?;
    let rss_search = rss_bytes();
    let vector_bytes = match args.rerank {
        RerankStorage::None => 0,
        RerankStorage::F16 => 2 * d * n,
        RerankStorage::F32 => 4 * d * n,
    } as u64;
    let row = serde_json::json!({
        "dataset": name,
        "vectors": n,
        "dim": d,
        "bits": args.bits,
        "rerank": args.rerank.name(),
        "batch": args.batch,
        "durability": args.durability.to_string(),
        "ingest_s": ingest_s,
        "ingest_vectors_per_s": n as f64 / ingest_s,
        "flush_s": flush_s,
        "ingest_with_flush_vectors_per_s": n as f64 / (ingest_s + flush_s),
        "disk_bytes": info.disk_bytes,
        "disk_bytes_per_vector": info.disk_bytes as f64 / n as f64,
        "segments": info.segments.len(),
        "open_ms": open_ms,
        "first_query_ms": first_ms,
        "single_query_qps": single_qps,
        "segment_file_bytes": after.segments.iter().map(|s| s.bytes).sum::<u64>(),
        "segment_vector_bytes": vector_bytes,
        "segment_resident_bytes_after_search": after.resident_bytes,
        "rss_after_open": rss_open,
        "rss_after_search": rss_search,
    });
    if args.json {
        println!("{row}");
    } else {
        let mb = |b: u64| b as f64 / 1048576.0;
        println!(
            "{name}: {n} × {d}, {} bits, rerank {}, batches of {} ({})",
            args.bits,
            args.rerank.name(),
            args.batch,
            args.durability
        );
        println!(
            "  ingest        {:>10.0} vectors/s ({ingest_s:.2} s), flush {flush_s:.2} s → {:.0} vectors/s overall",
            n as f64 / ingest_s,
            n as f64 / (ingest_s + flush_s)
        );
        println!(
            "  on disk       {:>10.1} MiB, {:.0} bytes/vector, {} segments",
            mb(info.disk_bytes),
            info.disk_bytes as f64 / n as f64,
            info.segments.len()
        );
        println!(
            "  open          {open_ms:>10.2} ms (warm page cache); first query {first_ms:.2} ms; {single_qps:.0} single queries/s"
        );
        println!(
            "  memory        segments mapped {:.1} MiB (vectors {:.1} MiB), resident after {nq} searches {:.1} MiB; process RSS {:.1} MiB",
            mb(after.segments.iter().map(|s| s.bytes).sum()),
            mb(vector_bytes),
            after.resident_bytes.map_or(f64::NAN, mb),
            rss_search.map_or(f64::NAN, mb)
        );
    }
    Ok(())
}
