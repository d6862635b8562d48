//! Operations on a data directory without a server.

use std::path::PathBuf;

use gyre::{CollectionConfig, Database, Metric, RerankStorage, SearchOptions, Variant};
use indicatif::{ProgressBar, ProgressStyle};

/// The data directory.
#[derive(clap::Args)]
pub struct DirArgs {
    /// Data directory.
    #[arg(long, default_value = "gyre-data", global = true)]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Collection to load into (created with the options below if absent).
    #[arg(long)]
    collection: String,
    /// Vectors: ann-benchmarks HDF5 (its train set), .fvecs, .fbin, .npy, ...
    #[arg(long)]
    dataset: PathBuf,
    /// Metric of a new collection (default: the HDF5 file's, else cosine).
    #[arg(long)]
    metric: Option<Metric>,
    /// Bits per coordinate of a new collection.
    #[arg(long, default_value_t = 4)]
    bits: u8,
    /// Estimator of a new collection: mse or prod.
    #[arg(long, default_value = "mse")]
    variant: Variant,
    /// Full-precision copies of a new collection: none, f16, f32.
    #[arg(long, default_value = "f32")]
    rerank: RerankStorage,
    /// Vectors per durable batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Id of the first vector (ids are consecutive).
    #[arg(long, default_value_t = 0)]
    first_id: u64,
}

#[derive(clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Collection.
    #[arg(long)]
    collection: String,
    /// The query: comma-separated floats.
    #[arg(long, allow_hyphen_values = true)]
    vector: String,
    /// Results.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Candidates kept, as a multiple of k (default: recommended for the bit width).
    #[arg(long)]
    oversampling: Option<usize>,
    /// Graph search effort on indexed segments (default 64).
    #[arg(long)]
    ef: Option<usize>,
    /// Brute force on the stored vectors.
    #[arg(long)]
    exact: bool,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// One collection (default: all).
    #[arg(long)]
    collection: Option<String>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct CompactArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Collection (default: all).
    #[arg(long)]
    collection: Option<String>,
}

fn open(dir: &DirArgs) -> Result<Database, String> {
    if !dir.data_dir.join("collections").is_dir() {
        return Err(format!(
            "{} is not a Gyre data directory (no collections/ inside)",
            dir.data_dir.display()
        ));
    }
    Database::open(&dir.data_dir).map_err(|e| e.to_string())
}

pub fn import(a: &ImportArgs) -> Result<(), String> {
    let err = |e: gyre::Error| e.to_string();
    if a.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    let is_h5 = a
        .dataset
        .extension()
        .is_some_and(|e| e == "hdf5" || e == "h5");
    let (data, dim, file_metric) = if is_h5 {
        let ds = gyre_datasets::annb::read_hdf5(&a.dataset).map_err(|e| e.to_string())?;
        let d = ds.train.dim();
        (ds.train.as_slice().to_vec(), d, Some(ds.distance.metric()))
    } else {
        let m = gyre_datasets::read_vectors(&a.dataset).map_err(|e| e.to_string())?;
        let d = m.dim();
        (m.as_slice().to_vec(), d, None)
    };
    std::fs::create_dir_all(&a.dir.data_dir).map_err(|e| e.to_string())?;
    let db = Database::open(&a.dir.data_dir).map_err(err)?;
    let c = match db.collection(&a.collection) {
        Ok(c) => c,
        Err(_) => db
            .create_collection(
                &a.collection,
                CollectionConfig {
                    metric: a.metric.or(file_metric).unwrap_or(Metric::Cosine),
                    bits: a.bits,
                    variant: a.variant,
                    rerank: a.rerank,
                    ..CollectionConfig::new(dim)
                },
            )
            .map_err(err)?,
    };
    if c.config().dim != dim {
        return Err(format!(
            "{} has dimension {dim}, collection {} has {}",
            a.dataset.display(),
            a.collection,
            c.config().dim
        ));
    }
    let n = data.len() / dim;
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "import [{bar:30}] {pos}/{len} vectors ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let t = std::time::Instant::now();
    for (i, rows) in data.chunks(a.batch * dim).enumerate() {
        let first = a.first_id + (i * a.batch) as u64;
        let ids: Vec<u64> = (first..first + (rows.len() / dim) as u64).collect();
        c.upsert(&ids, rows).map_err(err)?;
        bar.inc(ids.len() as u64);
    }
    c.flush().map_err(err)?;
    bar.finish_and_clear();
    println!(
        "imported {n} vectors of dimension {dim} into {} in {:.1} s ({} live points)",
        a.collection,
        t.elapsed().as_secs_f64(),
        c.len()
    );
    Ok(())
}

pub fn search(a: &SearchArgs) -> Result<(), String> {
    let db = open(&a.dir)?;
    let c = db.collection(&a.collection).map_err(|e| e.to_string())?;
    let q: Vec<f32> = a
        .vector
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .map_err(|_| format!("--vector: {v:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    let mut opts = SearchOptions::recommended(c.config());
    if let Some(o) = a.oversampling {
        opts.params.oversample = o;
    }
    if let Some(ef) = a.ef {
        opts.params.ef = ef;
    }
    opts.exact = a.exact;
    let hits = c.search(&q, a.k, &opts).map_err(|e| e.to_string())?;
    for h in hits {
        println!("{}\t{}", h.id, h.score);
    }
    Ok(())
}

pub fn info(a: &InfoArgs) -> Result<(), String> {
    let db = open(&a.dir)?;
    let names = match &a.collection {
        Some(c) => vec![c.clone()],
        None => db.list().map_err(|e| e.to_string())?,
    };
    for name in names {
        let i = db.info(&name).map_err(|e| e.to_string())?;
        let c = &i.config;
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "name": i.name, "dim": c.dim, "metric": c.metric.name(), "bits": c.bits,
                    "variant": c.variant.name(), "rerank": c.rerank.name(), "seed": c.seed,
                    "points": i.live, "deleted": i.deleted, "memtable_rows": i.memtable_rows,
                    "segments": i.segments.iter().map(|s| serde_json::json!({
                        "id": s.id, "rows": s.rows, "live": s.live, "bytes": s.bytes})).collect::<Vec<_>>(),
                    "disk_bytes": i.disk_bytes,
                })
            );
        } else {
            println!(
                "{}: dim {} {} {}-bit {} rerank {}; {} points, {} deleted rows, {} in memtable, {} segments, {} bytes on disk",
                i.name,
                c.dim,
                c.metric.name(),
                c.bits,
                c.variant.name(),
                c.rerank.name(),
                i.live,
                i.deleted,
                i.memtable_rows,
                i.segments.len(),
                i.disk_bytes
            );
            for s in &i.segments {
                println!(
                    "  segment {}: {} rows, {} live, {} bytes",
                    s.id, s.rows, s.live, s.bytes
                );
            }
        }
    }
    Ok(())
}

pub fn verify(a: &DirArgs) -> Result<(), String> {
    let db = open(a)?;
    let mut bad = 0;
    for (name, e) in db.unavailable() {
        println!("{name}: does not open: {e}");
        bad += 1;
    }
    for name in db.list().map_err(|e| e.to_string())? {
        let c = db.collection(&name).map_err(|e| e.to_string())?;
        match c.verify() {
            Ok(()) => println!(
                "{name}: ok ({} segments)",
                c.info().map_or(0, |i| i.segments.len())
            ),
            Err(e) => {
                println!("{name}: {e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        return Err(format!("{bad} collection(s) failed verification"));
    }
    Ok(())
}

pub fn compact(a: &CompactArgs) -> Result<(), String> {
    let db = open(&a.dir)?;
    let names = match &a.collection {
        Some(c) => vec![c.clone()],
        None => db.list().map_err(|e| e.to_string())?,
    };
    for name in names {
        let c = db.collection(&name).map_err(|e| e.to_string())?;
        c.flush().map_err(|e| e.to_string())?;
        let merged = c.compact().map_err(|e| e.to_string())?;
        let i = c.info().map_err(|e| e.to_string())?;
        println!(
            "{name}: {} ({} segments, {} points, {} bytes on disk)",
            if merged {
                "compacted"
            } else {
                "nothing to compact"
            },
            i.segments.len(),
            i.live,
            i.disk_bytes
        );
    }
    Ok(())
}

/// `gyre snapshot`: snapshots of collections in a data directory.
#[derive(clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    dir: DirArgs,
    #[command(subcommand)]
    action: SnapshotAction,
}

#[derive(clap::Subcommand)]
enum SnapshotAction {
    /// Take a snapshot of a collection (hard links to its segments, a copy of its WAL tail).
    Create {
        /// The collection.
        #[arg(long)]
        collection: String,
        /// The snapshot's name (default: snap-<unix ms>).
        #[arg(long)]
        name: Option<String>,
    },
    /// List snapshots (also those of dropped collections), oldest first.
    List {
        /// One collection's (default: all).
        #[arg(long)]
        collection: Option<String>,
        /// JSON output, one object per line.
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot as a collection, after checking every file.
    Restore(RestoreArgs),
    /// Remove a snapshot.
    Delete {
        /// The collection.
        #[arg(long)]
        collection: String,
        /// The snapshot.
        #[arg(long)]
        name: String,
    },
}

/// Which snapshot (or backup) to restore, and where.
#[derive(clap::Args)]
struct RestoreArgs {
    /// The collection it was taken of.
    #[arg(long)]
    collection: String,
    /// The snapshot's (or backup's) name.
    #[arg(long)]
    name: String,
    /// The collection to restore into (default: --collection).
    #[arg(long)]
    target: Option<String>,
    /// Replace the target if it exists.
    #[arg(long)]
    replace: bool,
}

/// One snapshot (or backup) as a JSON line.
fn snapshot_json(i: &gyre::SnapshotInfo) -> serde_json::Value {
    serde_json::json!({
        "collection": i.collection, "name": i.name,
        "created_unix_ms": i.created_unix_ms, "generation": i.generation,
        "points": i.points, "files": i.files.len(), "bytes": i.bytes(),
        "copied_bytes": i.copied_bytes,
    })
}

fn snapshot_line(i: &gyre::SnapshotInfo) -> String {
    format!(
        "{}/{}: {} points, generation {}, {} files, {} bytes ({} copied), taken at {} ms",
        i.collection,
        i.name,
        i.points,
        i.generation,
        i.files.len(),
        i.bytes(),
        i.copied_bytes,
        i.created_unix_ms
    )
}

pub fn snapshot(a: &SnapshotArgs) -> Result<(), String> {
    let db = open(&a.dir)?;
    let err = |e: gyre::Error| e.to_string();
    match &a.action {
        SnapshotAction::Create { collection, name } => {
            let t = std::time::Instant::now();
            let i = db
                .create_snapshot(collection, name.as_deref())
                .map_err(err)?;
            println!(
                "created {} in {:.2} s",
                snapshot_line(&i),
                t.elapsed().as_secs_f64()
            );
        }
        SnapshotAction::List { collection, json } => {
            for i in db.list_snapshots(collection.as_deref()).map_err(err)? {
                if *json {
                    println!("{}", snapshot_json(&i));
                } else {
                    println!("{}", snapshot_line(&i));
                }
            }
        }
        SnapshotAction::Restore(RestoreArgs {
            collection,
            name,
            target,
            replace,
        }) => {
            let c = db
                .restore_snapshot(collection, name, target.as_deref(), *replace)
                .map_err(err)?;
            println!(
                "restored {collection}/{name} as {} ({} points)",
                c.name(),
                c.len()
            );
        }
        SnapshotAction::Delete { collection, name } => {
            db.delete_snapshot(collection, name).map_err(err)?;
            println!("deleted {collection}/{name}");
        }
    }
    Ok(())
}

/// `gyre backup`: backups of collections in an object store (`s3://bucket/prefix`), restored
/// onto this or another machine.
#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// S3-compatible endpoint [default: AWS_ENDPOINT_URL, else AWS].
    #[arg(long, global = true)]
    store_endpoint: Option<String>,
    /// Region [default: AWS_REGION, else us-east-1].
    #[arg(long, global = true)]
    store_region: Option<String>,
    #[command(subcommand)]
    action: BackupAction,
}

#[derive(clap::Subcommand)]
enum BackupAction {
    /// Upload a collection's snapshot (taken now, or an existing one by --snapshot), every
    /// file with its CRC-32C; a backup name is written once.
    Create {
        /// The collection.
        #[arg(long)]
        collection: String,
        /// The store, s3://bucket/prefix.
        #[arg(long)]
        to: String,
        /// The snapshot to upload, or the name of one to take now [default: snap-<unix ms>].
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// List the complete backups in a store, oldest first.
    List {
        /// The store, s3://bucket/prefix.
        #[arg(long)]
        from: String,
        /// JSON output, one object per line.
        #[arg(long)]
        json: bool,
    },
    /// Download a backup (each object checked), keep it as a local snapshot and restore the
    /// collection from it; the data directory is created if missing.
    Restore {
        /// The store, s3://bucket/prefix.
        #[arg(long)]
        from: String,
        #[command(flatten)]
        what: RestoreArgs,
    },
}

pub fn backup(a: &BackupArgs) -> Result<(), String> {
    let opts = gyre_objstore::StoreOptions {
        endpoint: a.store_endpoint.clone(),
        region: a.store_region.clone(),
        ..Default::default()
    };
    let err = |e: gyre::Error| e.to_string();
    let store = |url: &str| gyre_objstore::ObjectDirectory::open(url, &opts).map_err(err);
    let t = std::time::Instant::now();
    let mut moved = 0u64;
    let mut progress = |f: &gyre::SnapshotFile| {
        moved += f.bytes;
        eprintln!("  {} ({} bytes)", f.name, f.bytes);
    };
    match &a.action {
        BackupAction::Create {
            collection,
            to,
            snapshot,
        } => {
            let db = open(&a.dir)?;
            let s = store(to)?;
            let i = db
                .backup_to(collection, snapshot.as_deref(), &s, &mut progress)
                .map_err(err)?;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "backed up {} to {to} in {secs:.2} s ({:.1} MB/s)",
                snapshot_line(&i),
                moved as f64 / 1e6 / secs.max(1e-9)
            );
        }
        BackupAction::List { from, json } => {
            for i in Database::list_backups(&store(from)?).map_err(err)? {
                if *json {
                    println!("{}", snapshot_json(&i));
                } else {
                    println!("{}", snapshot_line(&i));
                }
            }
        }
        BackupAction::Restore {
            from,
            what:
                RestoreArgs {
                    collection,
                    name,
                    target,
                    replace,
                },
        } => {
            let s = store(from)?;
            let db = Database::open(&a.dir.data_dir).map_err(err)?;
            let c = db
                .restore_backup(
                    &s,
                    collection,
                    name,
                    target.as_deref(),
                    *replace,
                    &mut progress,
                )
                .map_err(err)?;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "restored {collection}/{name} from {from} as {} ({} points) in {secs:.2} s ({:.1} MB/s)",
                c.name(),
                c.len(),
                moved as f64 / 1e6 / secs.max(1e-9)
            );
        }
    }
    Ok(())
}
