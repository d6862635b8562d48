//! `gyre-bench recall`: the ann-benchmarks-style runner.
//!
//! Builds an index per configuration, runs the dataset's queries in batch mode (all queries in
//! one call) or single mode (one call per query), and reports recall computed exactly as
//! ann-benchmarks does (distances of the returned ids are recomputed; a hit is within the true
//! k-th distance + 1e-3), recall@1@k, QPS (best of runs), latency percentiles (single mode),
//! build time and index size.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gyre::{
    ExactIndex, FlatIndex, Neighbor, QuantizerConfig, RerankStorage, RotationKind, SearchParams,
    Variant,
};
use gyre_datasets::annb::read_hdf5;
use gyre_datasets::{AnnDataset, Distance};
use indicatif::{ProgressBar, ProgressStyle};

use crate::report::{self, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// All queries in one call.
    Batch,
    /// One query per call.
    Single,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IndexKind {
    /// Scan every code (FastScan / dot4 kernels), then rerank.
    Flat,
    /// Walk a proximity graph over the codes (`gyre::graph`): rows scored by the TurboQuant
    /// estimator on their 4-bit records, the best `k × oversample` reranked; effort `--ef`.
    Graph,
}

impl IndexKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            IndexKind::Flat => "flat",
            IndexKind::Graph => "graph",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// An in-memory `FlatIndex`.
    Memory,
    /// An on-disk collection (ingest in durable 1,000-vector batches, flush, reopen; searched
    /// from the mapped segments).
    Disk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    /// Gyre's flat index over TurboQuant codes.
    Gyre,
    /// Brute force on full vectors (the oracle; recall must be 1).
    Exact,
}

#[derive(clap::Args)]
pub struct Args {
    /// ann-benchmarks HDF5 file, or `glove-50` (downloaded and built under data/ on first use).
    /// Default: the shared docs-minilm-384-angular set.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Override the file's distance: angular, euclidean or dot.
    #[arg(long)]
    metric: Option<String>,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Algorithms to run.
    #[arg(long, value_delimiter = ',', default_value = "gyre,exact")]
    algorithm: Vec<Algorithm>,
    /// Bits per coordinate (gyre).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub bits: Vec<u8>,
    /// Candidates kept by the first (integer) stage, as multiples of k (gyre).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub oversample: Vec<usize>,
    /// Staged search for 4-bit indexes: sign-plane shortlist factors to try (0 = a plain scan
    /// of the full codes), e.g. 0,8,16.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub staged: Vec<usize>,
    /// With rerank: target recalls for the bound-based candidate count (0 = rerank every
    /// candidate of k × oversample), e.g. 0,0.99.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    target_recall: Vec<f32>,
    /// Gyre index kinds to build: flat (scan every code), graph (a proximity graph over the
    /// codes, built after the codes; its build seconds, resident bytes per vector and an
    /// `--ef` sweep are reported), e.g. flat,graph.
    #[arg(long, value_delimiter = ',', default_value = "flat")]
    pub index: Vec<IndexKind>,
    /// Graph search effort: candidate list lengths to sweep (at least k × oversample is used).
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    pub ef: Vec<usize>,
    /// Graph out-degree (default: 28 below 128 dimensions, 32 from 128).
    #[arg(long)]
    pub degree: Option<usize>,
    /// Graph build candidate list length.
    #[arg(long, default_value_t = 64)]
    pub build_ef: usize,
    /// Graph pruning factor α (≥ 1).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f32,
    /// Graph build pruning pool: each list is pruned from this many of the nearest rows its
    /// insertion search scored (at least the build ef)
    #[arg(long, default_value_t = 128)]
    pub pool: usize,
    /// Keep built graphs in this folder and load them on later runs with the same data,
    /// bits and graph parameters (for query-side experiments; a change to the build code
    /// needs a fresh folder)
    #[arg(long)]
    pub graph_cache: Option<std::path::PathBuf>,
    /// Full-precision copies for reranking: none, f16, f32 (gyre).
    #[arg(long, value_delimiter = ',', default_value = "none")]
    pub rerank: Vec<RerankStorage>,
    /// Where gyre's index lives: memory (FlatIndex) or disk (a collection; see --data-dir).
    #[arg(long, default_value = "memory")]
    storage: Storage,
    /// Measure a running server instead: grpc://HOST:PORT. Each gyre configuration is loaded
    /// into collection `recall-<bits>-<rerank>` through `UpsertStream` (1,000-vector durable
    /// batches; the rate is printed), then searched with `SearchBatch` (batch mode) or
    /// `Search` (single mode).
    #[arg(long)]
    target: Option<String>,
    /// Data directory for --storage disk (its `recall-*` collections are replaced).
    #[arg(long, default_value = "gyre-bench-data")]
    pub data_dir: PathBuf,
    /// Quantizer variant (gyre).
    #[arg(long, default_value = "mse")]
    pub variant: Variant,
    /// Rotation (gyre).
    #[arg(long, default_value = "hadamard")]
    pub rotation: RotationKind,
    /// Quantizer seed (gyre).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Thread counts to run with.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// batch, single, or both.
    #[arg(long, value_delimiter = ',', default_value = "batch")]
    pub mode: Vec<Mode>,
    /// Timed runs per configuration (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Use only the first N queries.
    #[arg(long)]
    queries: Option<usize>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Directory for CSV, JSON Lines, Markdown and charts.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// File stem of the outputs (default: `<dataset>-gyre`).
    #[arg(long)]
    name: Option<String>,
    /// Filtered search instead (on-disk collections): synthetic keyword and integer payloads
    /// from fixed seeds, filters passing these fractions of the points (e.g.
    /// 0.5,0.1,0.01,0.001), recall against the exact filtered neighbours; rows carry
    /// `filter_selectivity` and `filter_kind`. An unfiltered run comes first for reference.
    #[arg(long, value_delimiter = ',')]
    pub filter_selectivity: Vec<f64>,
}

/// Resident set size in bytes, when the platform tells.
fn rss_bytes() -> Option<i64> {
    crate::common::rss_bytes().map(|b| b as i64)
}

pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn dataset_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(p) = &args.dataset {
        // A known dataset name (glove-50) that is not a file: build it under data/ once.
        let name = p.to_string_lossy();
        if !p.exists() && gyre_datasets::fetch::KNOWN.contains(&name.as_ref()) {
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb.set_message("groundtruth");
            let out = gyre_datasets::fetch::fetch(
                &name,
                Path::new("data"),
                &|l| pb.suspend(|| eprintln!("{l}")),
                &mut |done, total| {
                    pb.set_length(total as u64);
                    pb.set_position(done as u64);
                },
            );
            pb.finish_and_clear();
            return out.map_err(|e| e.to_string());
        }
        return Ok(p.clone());
    }
    let shared = crate::common::shared_dataset();
    if shared.exists() {
        return Ok(shared);
    }
    Err("no --dataset given and the shared docs-minilm-384-angular.hdf5 is not present; fetch one with `cargo run --release -p gyre-datasets -- fetch glove-50`".into())
}

/// ann-benchmarks recall and recall@1@k of `results` against the dataset's ground truth.
pub fn recall(
    ds: &AnnDataset,
    distance: Distance,
    k: usize,
    results: &[Vec<Neighbor>],
) -> (f64, f64) {
    let mut hits = 0usize;
    let mut top1 = 0usize;
    for (q, found) in results.iter().enumerate() {
        let query = ds.test.row(q);
        let gt = ds.distances.row(q);
        let threshold = f64::from(gt[k - 1]) + 1e-3;
        let best = f64::from(gt[0]) + 1e-6;
        let dists: Vec<f64> = found
            .iter()
            .take(k)
            .map(|n| distance.between(query, ds.train.row(n.id as usize)))
            .collect();
        hits += dists.iter().filter(|&&d| d <= threshold).count();
        top1 += usize::from(dists.iter().any(|&d| d <= best));
    }
    let n = results.len() as f64;
    (hits as f64 / (n * k as f64), top1 as f64 / n)
}

use crate::common::percentile;

/// Runs one configuration `runs` times and keeps the best timing.
pub(crate) struct Timing {
    pub qps: f64,
    pub latencies_ms: Option<Vec<f64>>,
    pub results: Vec<Vec<Neighbor>>,
}

pub(crate) fn time_queries(
    pool: &rayon::ThreadPool,
    mode: Mode,
    runs: usize,
    nq: usize,
    bar: &ProgressBar,
    batch: &(dyn Fn() -> Result<Vec<Vec<Neighbor>>, gyre::Error> + Sync),
    single: &(dyn Fn(usize) -> Result<Vec<Neighbor>, gyre::Error> + Sync),
) -> Result<Timing, gyre::Error> {
    let mut best: Option<Timing> = None;
    for _ in 0..runs {
        let timing = pool.install(|| -> Result<Timing, gyre::Error> {
            match mode {
                Mode::Batch => {
                    let t = Instant::now();
                    let results = batch()?;
                    let secs = t.elapsed().as_secs_f64();
                    bar.inc(nq as u64);
                    Ok(Timing {
                        qps: nq as f64 / secs,
                        latencies_ms: None,
                        results,
                    })
                }
                Mode::Single => {
                    let mut lat = Vec::with_capacity(nq);
                    let mut results = Vec::with_capacity(nq);
                    let t = Instant::now();
                    for q in 0..nq {
                        let s = Instant::now();
                        results.push(single(q)?);
                        lat.push(s.elapsed().as_secs_f64() * 1e3);
                        if q % 64 == 63 {
                            bar.inc(64);
                        }
                    }
                    let secs = t.elapsed().as_secs_f64();
                    bar.inc((nq % 64) as u64);
                    lat.sort_by(f64::total_cmp);
                    Ok(Timing {
                        qps: nq as f64 / secs,
                        latencies_ms: Some(lat),
                        results,
                    })
                }
            }
        })?;
        if best.as_ref().is_none_or(|b| timing.qps > b.qps) {
            best = Some(timing);
        }
    }
    Ok(best.expect("runs ≥ 1"))
}

struct Built<'a> {
    algorithm: &'static str,
    /// `flat` or `graph` (gyre), none for the exact oracle.
    index_kind: Option<&'static str>,
    /// Graph efforts to sweep (`[0]` for scans).
    efs: Vec<usize>,
    params: String,
    build_s: f64,
    index_bytes: u64,
    rss_delta: Option<i64>,
    oversample: Vec<usize>,
    staged: Vec<Option<usize>>,
    isa: &'static str,
    index: Index<'a>,
}

enum Index<'a> {
    Exact(ExactIndex<'a>),
    Gyre(Box<FlatIndex>),
    Disk(Box<(gyre::Database, gyre::Collection)>),
    Remote(Box<(crate::grpc::Remote, String)>),
}

/// Builds the on-disk collection `recall-<bits>-<rerank>` through the embedded API: durable
/// 1,000-vector upserts, flush, close, reopen (so searches run on freshly mapped segments).
fn build_disk(
    args: &Args,
    config: QuantizerConfig,
    metric: gyre::Metric,
    rerank: RerankStorage,
    ids: &[u64],
    data: &[f32],
) -> Result<(gyre::Database, gyre::Collection), gyre::Error> {
    let name = format!("recall-{}-{}", config.bits, rerank.name());
    let cfg = gyre::CollectionConfig {
        metric,
        bits: config.bits,
        variant: config.variant,
        rotation: config.rotation,
        seed: config.seed,
        rerank,
        segment_rows: ids.len().max(1),
        ..gyre::CollectionConfig::new(config.dim)
    };
    {
        let db = gyre::Database::open(&args.data_dir)?;
        if db.collection(&name).is_ok() {
            db.drop_collection(&name)?;
        }
        let c = db.create_collection(&name, cfg)?;
        for (chunk, rows) in ids.chunks(1000).zip(data.chunks(1000 * config.dim)) {
            c.upsert(chunk, rows)?;
        }
        c.flush()?;
    }
    let db = gyre::Database::open(&args.data_dir)?;
    let c = db.collection(&name)?;
    Ok((db, c))
}

pub fn run(args: &Args) -> Result<(), String> {
    if args.k == 0 || args.runs == 0 {
        return Err("--k and --runs must be at least 1".into());
    }
    if args.threads.contains(&0) {
        return Err("--threads values must be at least 1".into());
    }
    let path = dataset_path(args)?;
    eprintln!("loading {}", path.display());
    let mut ds = read_hdf5(&path).map_err(|e| e.to_string())?;
    let distance = match &args.metric {
        Some(m) => Distance::parse(m)
            .ok_or_else(|| format!("unknown --metric {m:?}: use angular, euclidean or dot"))?,
        None => ds.distance,
    };
    if args.k > ds.neighbors.dim() {
        return Err(format!(
            "--k {} exceeds the {} ground-truth neighbours in the file",
            args.k,
            ds.neighbors.dim()
        ));
    }
    if let Some(limit) = args.queries {
        let limit = limit.min(ds.test.rows()).max(1);
        let d = ds.test.dim();
        let kk = ds.neighbors.dim();
        ds.test = gyre_datasets::Matrix::new(limit, d, ds.test.as_slice()[..limit * d].to_vec());
        ds.neighbors =
            gyre_datasets::Matrix::new(limit, kk, ds.neighbors.as_slice()[..limit * kk].to_vec());
        ds.distances =
            gyre_datasets::Matrix::new(limit, kk, ds.distances.as_slice()[..limit * kk].to_vec());
    }
    let dataset_name = path
        .file_stem()
        .map_or("dataset".into(), |s| s.to_string_lossy().into_owned());
    let (n, d, nq) = (ds.train.rows(), ds.train.dim(), ds.test.rows());
    eprintln!(
        "{dataset_name}: {n} × {d} train, {nq} queries, {} distance, k = {}",
        distance.name(),
        args.k
    );
    if !args.filter_selectivity.is_empty() {
        let rows = crate::filtered::run(args, &ds, distance, &dataset_name)?;
        return write_outputs(args, &dataset_name, &rows, "filtered");
    }
    let cpu = cpu_name();
    let metric = distance.metric();
    let max_threads = args.threads.iter().copied().max().unwrap_or(1);
    let build_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(max_threads)
        .build()
        .map_err(|e| e.to_string())?;
    let ids: Vec<u64> = (0..n as u64).collect();

    // Every index to measure, built one at a time so the RSS delta belongs to it.
    let mut specs: Vec<(Algorithm, u8, RerankStorage, IndexKind)> = Vec::new();
    for &a in &args.algorithm {
        match a {
            Algorithm::Exact => specs.push((a, 0, RerankStorage::None, IndexKind::Flat)),
            Algorithm::Gyre => {
                for &kind in &args.index {
                    for &b in &args.bits {
                        for &r in &args.rerank {
                            specs.push((a, b, r, kind));
                        }
                    }
                }
            }
        }
    }
    if args.index.contains(&IndexKind::Graph)
        && (args.storage == Storage::Disk || args.target.is_some())
    {
        return Err("--index graph runs on the in-memory index; on-disk collections build their graphs when segments seal (CollectionConfig::index)".into());
    }
    let total_runs: usize = specs
        .iter()
        .map(|(a, _, r, kind)| {
            let os = if *a == Algorithm::Gyre && *r != RerankStorage::None {
                args.oversample.len()
            } else {
                1
            };
            let efs = if *kind == IndexKind::Graph {
                args.ef.len()
            } else {
                1
            };
            os * efs * args.threads.len() * args.mode.len() * args.runs * nq
        })
        .sum();
    let bar = ProgressBar::new(total_runs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>30} [{bar:30}] {pos}/{len} queries ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );

    let mut rows = Vec::new();
    for (algorithm, bits, rerank, kind) in specs {
        let rss0 = rss_bytes();
        let t = Instant::now();
        let built = match algorithm {
            Algorithm::Exact => {
                bar.set_message("building exact");
                let index = build_pool
                    .install(|| ExactIndex::new(d, metric, ds.train.as_slice()))
                    .map_err(|e| e.to_string())?;
                Built {
                    algorithm: "exact",
                    index_kind: None,
                    efs: vec![0],
                    params: "brute-force f32".into(),
                    build_s: t.elapsed().as_secs_f64(),
                    index_bytes: (n * d * 4) as u64,
                    rss_delta: None,
                    oversample: vec![1],
                    staged: vec![None],
                    isa: "portable",
                    index: Index::Exact(index),
                }
            }
            Algorithm::Gyre => {
                bar.set_message(format!("building gyre {bits}-bit"));
                let config = QuantizerConfig {
                    dim: d,
                    bits,
                    variant: args.variant,
                    rotation: args.rotation,
                    seed: args.seed,
                };
                let mut index =
                    FlatIndex::new(config, metric, rerank).map_err(|e| e.to_string())?;
                let label = |place: &str| {
                    format!(
                        "bits={bits} variant={} rotation={} rerank={}{place}",
                        args.variant.name(),
                        args.rotation.name(),
                        rerank.name()
                    )
                };
                // Shortlist factors to try; only indexes with a sign plane have a staged search.
                let staged: Vec<Option<usize>> = if index.staged_available() {
                    args.staged.iter().map(|&f| (f > 0).then_some(f)).collect()
                } else {
                    vec![None]
                };
                if let Some(target) = &args.target {
                    let remote = crate::grpc::Remote::connect(target)?;
                    let name = format!("recall-{bits}-{}", rerank.name());
                    let secs =
                        remote.load(&name, d, metric, bits, rerank, ds.train.as_slice(), 1000)?;
                    bar.suspend(|| {
                        eprintln!(
                            "{name}: streamed {n} vectors in {secs:.2} s ({:.0} vectors/s, durable 1,000-vector batches)",
                            n as f64 / secs
                        )
                    });
                    Built {
                        algorithm: "gyre",
                        index_kind: Some("flat"),
                        efs: vec![0],
                        params: label(" target=grpc"),
                        build_s: t.elapsed().as_secs_f64(),
                        index_bytes: 0,
                        rss_delta: None,
                        oversample: args.oversample.clone(),
                        staged: vec![None],
                        isa: "grpc",
                        index: Index::Remote(Box::new((remote, name))),
                    }
                } else if args.storage == Storage::Disk {
                    let (db, c) = build_pool
                        .install(|| {
                            build_disk(args, config, metric, rerank, &ids, ds.train.as_slice())
                        })
                        .map_err(|e| e.to_string())?;
                    let info = c.info().map_err(|e| e.to_string())?;
                    let isa = index.kernel();
                    drop(index);
                    Built {
                        algorithm: "gyre",
                        index_kind: Some("flat"),
                        efs: vec![0],
                        params: label(" storage=disk"),
                        build_s: t.elapsed().as_secs_f64(),
                        index_bytes: info.disk_bytes,
                        rss_delta: rss_bytes().zip(rss0).map(|(a, b)| a - b),
                        oversample: args.oversample.clone(),
                        staged,
                        isa,
                        index: Index::Disk(Box::new((db, c))),
                    }
                } else {
                    build_pool
                        .install(|| index.add(&ids, ds.train.as_slice()))
                        .map_err(|e| e.to_string())?;
                    let mut efs = vec![0];
                    let mut params = label("");
                    if kind == IndexKind::Graph {
                        let mut gp = gyre::graph::BuildParams::for_dim(d);
                        if let Some(r) = args.degree {
                            gp.degree = r;
                        }
                        gp.build_ef = args.build_ef;
                        gp.alpha = args.alpha;
                        gp.pool = args.pool;
                        bar.set_message(format!("graph {bits}-bit R={}", gp.degree));
                        let g0 = Instant::now();
                        let cached = args.graph_cache.as_ref().map(|dir| {
                            dir.join(format!(
                                "{dataset_name}-{n}-b{bits}-{}-R{}-ef{}-p{}-a{}-s{:x}.graph",
                                rerank.name(),
                                gp.degree,
                                gp.build_ef,
                                gp.pool,
                                gp.alpha,
                                gp.seed
                            ))
                        });
                        let loaded = cached.as_ref().is_some_and(|f| {
                            std::fs::read(f)
                                .ok()
                                .is_some_and(|b| index.load_graph(&b).is_ok())
                        });
                        if !loaded {
                            build_pool
                                .install(|| index.build_graph(&gp, &|_| {}))
                                .map_err(|e| e.to_string())?;
                            if let (Some(f), Some(b)) = (&cached, index.graph_encoded()) {
                                std::fs::create_dir_all(f.parent().unwrap_or(f))
                                    .and_then(|()| std::fs::write(f, b))
                                    .map_err(|e| format!("{}: {e}", f.display()))?;
                            }
                        }
                        let graph_s = g0.elapsed().as_secs_f64();
                        if loaded {
                            bar.suspend(|| eprintln!("graph: loaded from the cache in {graph_s:.1} s (build seconds are not measured)"));
                        }
                        bar.suspend(|| {
                            if loaded {
                                return;
                            }
                            eprintln!(
                                "graph: {n} rows linked in {graph_s:.1} s on {max_threads} thread(s) (R={}, build ef={}, pool={}, α={})",
                                gp.degree, gp.build_ef, gp.pool, gp.alpha
                            )
                        });
                        efs = args.ef.clone();
                        params = format!(
                            "{params} R={} build_ef={} pool={} alpha={}",
                            gp.degree, gp.build_ef, gp.pool, gp.alpha
                        );
                    }
                    let build_s = t.elapsed().as_secs_f64();
                    Built {
                        algorithm: "gyre",
                        index_kind: Some(kind.name()),
                        efs,
                        params,
                        build_s,
                        index_bytes: index.memory_bytes() as u64,
                        rss_delta: rss_bytes().zip(rss0).map(|(a, b)| a - b),
                        oversample: args.oversample.clone(),
                        staged,
                        isa: index.kernel(),
                        index: Index::Gyre(Box::new(index)),
                    }
                }
            }
        };
        let targets: Vec<Option<f32>> = if built.params.contains("rerank=none") {
            vec![None]
        } else {
            args.target_recall
                .iter()
                .map(|&t| (t > 0.0).then_some(t))
                .collect()
        };
        let resident = match &built.index {
            Index::Gyre(ix) => ix.graph_bytes().map(|b| b as f64 / n.max(1) as f64),
            _ => None,
        };
        let staged_list = if built.index_kind == Some("graph") {
            vec![None]
        } else {
            built.staged.clone()
        };
        for (((&oversample, staged), target), &ef) in built
            .oversample
            .iter()
            .flat_map(|o| staged_list.iter().map(move |&s| (o, s)))
            .flat_map(|p| targets.iter().map(move |&t| (p, t)))
            .flat_map(|p| built.efs.iter().map(move |e| (p, e)))
        {
            // `staged` is the sign-plane shortlist factor, or None for a plain scan.
            let params = SearchParams {
                oversample,
                rescore: true,
                staged: staged.is_some(),
                shortlist: staged.unwrap_or(1),
                target_recall: target,
                ef,
            };
            let label = match built.index {
                Index::Exact(_) => built.params.clone(),
                Index::Gyre(_) | Index::Disk(_) | Index::Remote(_) => format!(
                    "{} oversample={oversample}{}{}{}",
                    built.params,
                    if ef > 0 {
                        format!(" ef={ef}")
                    } else {
                        String::new()
                    },
                    staged.map_or(String::new(), |f| format!(" staged shortlist={f}")),
                    target.map_or(String::new(), |t| format!(" target_recall={t}"))
                ),
            };
            for &threads in &args.threads {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| e.to_string())?;
                for &mode in &args.mode {
                    bar.set_message(format!(
                        "{} {}b {:?} {threads}t",
                        built.algorithm, bits, mode
                    ));
                    let queries = ds.test.as_slice();
                    let k = args.k;
                    let timing = match &built.index {
                        Index::Exact(ix) => time_queries(
                            &pool,
                            mode,
                            args.runs,
                            nq,
                            &bar,
                            &|| ix.search_batch(queries, k),
                            &|q| ix.search(ds.test.row(q), k),
                        ),
                        Index::Gyre(ix) => time_queries(
                            &pool,
                            mode,
                            args.runs,
                            nq,
                            &bar,
                            &|| ix.search_batch(queries, k, &params),
                            &|q| ix.search(ds.test.row(q), k, &params),
                        ),
                        Index::Remote(rn) => {
                            let (remote, name) = (&rn.0, &rn.1);
                            let to_err = |e: String| gyre::Error::InvalidArgument {
                                name: "target",
                                reason: e,
                            };
                            time_queries(
                                &pool,
                                mode,
                                args.runs,
                                nq,
                                &bar,
                                &|| {
                                    remote
                                        .search_batch(name, queries, k, &params)
                                        .map_err(to_err)
                                },
                                &|q| {
                                    remote
                                        .search(name, ds.test.row(q), k, &params)
                                        .map_err(to_err)
                                },
                            )
                        }
                        Index::Disk(dc) => {
                            let opts = gyre::SearchOptions {
                                params,
                                ..Default::default()
                            };
                            let c = &dc.1;
                            time_queries(
                                &pool,
                                mode,
                                args.runs,
                                nq,
                                &bar,
                                &|| c.search_batch(queries, k, &opts),
                                &|q| c.search(ds.test.row(q), k, &opts),
                            )
                        }
                    }
                    .map_err(|e| e.to_string())?;
                    let (rec, rec1) = recall(&ds, distance, k, &timing.results);
                    let lat = timing.latencies_ms.as_deref();
                    let row = Row {
                        dataset: dataset_name.clone(),
                        algorithm: built.algorithm.into(),
                        params: label.clone(),
                        k,
                        recall: rec,
                        recall_1_at_k: rec1,
                        qps: timing.qps,
                        p50_ms: lat.map(|l| percentile(l, 0.50)),
                        p95_ms: lat.map(|l| percentile(l, 0.95)),
                        p99_ms: lat.map(|l| percentile(l, 0.99)),
                        build_s: built.build_s,
                        index_bytes: built.index_bytes,
                        rss_delta_bytes: built.rss_delta,
                        threads,
                        mode: format!("{mode:?}").to_lowercase(),
                        cpu: cpu.clone(),
                        isa: built.isa.into(),
                        queries: nq,
                        runs: args.runs,
                        filter_selectivity: None,
                        filter_kind: None,
                        index: built.index_kind.map(str::to_string),
                        ef: (ef > 0).then_some(ef),
                        resident_bytes_per_vector: resident,
                    };
                    if args.json {
                        bar.suspend(|| {
                            println!("{}", serde_json::to_string(&row).expect("rows serialise"))
                        });
                    } else {
                        bar.suspend(|| {
                            println!(
                                "{:<6} {:<58} {}t {:<6} recall {:.4} r@1@k {:.4} {:>9.1} QPS{}",
                                row.algorithm,
                                row.params,
                                row.threads,
                                row.mode,
                                row.recall,
                                row.recall_1_at_k,
                                row.qps,
                                row.p50_ms.map_or(String::new(), |p| format!(
                                    "  p50 {p:.2} ms p99 {:.2} ms",
                                    row.p99_ms.unwrap_or(f64::NAN)
                                ))
                            )
                        });
                    }
                    rows.push(row);
                }
            }
        }
    }
    bar.finish_and_clear();
    write_outputs(args, &dataset_name, &rows, "gyre")
}

/// CSV, JSON Lines, Markdown and charts of `rows` under `--out`, named `--name` or
/// `<dataset>-<what>`.
fn write_outputs(args: &Args, dataset_name: &str, rows: &[Row], what: &str) -> Result<(), String> {
    let rows = rows.to_vec();
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let stem = args.out.join(
        args.name
            .clone()
            .unwrap_or_else(|| format!("{dataset_name}-{what}")),
    );
    let csv = stem.with_extension("csv");
    report::write_csv(&csv, &rows)?;
    report::write_jsonl(&stem.with_extension("jsonl"), &rows)?;
    let md = stem.with_extension("md");
    std::fs::write(&md, report::markdown(&rows)).map_err(|e| format!("{}: {e}", md.display()))?;
    let (charts, note) = report::chart(&stem, &rows)?;
    eprintln!(
        "wrote {}, {}, {}",
        csv.display(),
        stem.with_extension("jsonl").display(),
        md.display()
    );
    for c in charts {
        eprintln!("wrote {}", c.display());
    }
    if let Some(note) = note {
        eprintln!("{note}");
    }
    Ok(())
}

/// `gyre-bench plot`: one chart from several CSV files (Gyre's and the baselines').
#[derive(clap::Args)]
pub struct PlotArgs {
    /// CSV files in the runner's schema.
    #[arg(required = true)]
    csv: Vec<PathBuf>,
    /// Output stem (writes STEM.svg and STEM.png).
    #[arg(long, default_value = "results/chart")]
    out: PathBuf,
}

pub fn plot(args: &PlotArgs) -> Result<(), String> {
    let mut rows = Vec::new();
    for p in &args.csv {
        rows.extend(report::read_csv(p)?);
    }
    if rows.is_empty() {
        return Err("the CSV files hold no rows".into());
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let (charts, note) = report::chart(&args.out, &rows)?;
    std::fs::write(args.out.with_extension("md"), report::markdown(&rows))
        .map_err(|e| e.to_string())?;
    for c in charts {
        println!("{}", c.display());
    }
    if let Some(note) = note {
        eprintln!("{note}");
    }
    Ok(())
}
