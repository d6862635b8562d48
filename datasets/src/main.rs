//! `gyre-datasets`: inspect, convert, fetch and compute ground truth for benchmark datasets.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gyre_datasets::annb::{read_hdf5, write_hdf5};
use gyre_datasets::groundtruth::exact_neighbors;
use gyre_datasets::{
    AnnDataset, DatasetError, Distance, Matrix, Result, VectorFormat, bigann, npy, read_vectors,
    texmex,
};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "gyre-datasets",
    version,
    about = "Benchmark datasets for Gyre: inspect, convert, fetch, ground truth"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Shape, metric and checksum of a dataset file (.hdf5, .fvecs, .bvecs, .ivecs, .fbin, .u8bin, .i8bin, .ibin, .npy).
    Info {
        /// The file.
        file: PathBuf,
    },
    /// Compute exact top-k ground truth and write an ann-benchmarks HDF5 file (or .ivecs ids).
    Groundtruth {
        #[command(flatten)]
        input: Input,
        /// Neighbours per query.
        #[arg(long, default_value_t = 100)]
        k: usize,
        /// Output: .hdf5 (whole dataset with new ground truth) or .ivecs (ids only).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write any supported input as an ann-benchmarks HDF5 file (ground truth computed unless given).
    Convert {
        #[command(flatten)]
        input: Input,
        /// Ground-truth ids (.ivecs or .ibin), row i for query i; distances are recomputed.
        #[arg(long)]
        neighbors: Option<PathBuf>,
        /// Neighbours per query when computing ground truth.
        #[arg(long, default_value_t = 100)]
        k: usize,
        /// Output .hdf5 file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Download and build a public dataset. Known: glove-50.
    Fetch {
        /// Dataset name.
        name: String,
        /// Directory to write into.
        #[arg(long, default_value = "data")]
        dir: PathBuf,
    },
    /// A large dataset with local structure: each point a random mixture of two vectors of a
    /// base set (an HDF5 file's train split) plus noise, unit length; queries drawn the same
    /// way; exact ground truth; prints the nearest-neighbour distance distribution. E.g.
    /// `mixture --count 1000000 --out data/mix-1m-384.hdf5` (about 3 minutes on 2 cores).
    Mixture {
        /// Base vectors (default: the shared docs-minilm-384-angular set).
        #[arg(long)]
        base: Option<PathBuf>,
        /// Points.
        #[arg(long, default_value_t = 1_000_000)]
        count: usize,
        /// Queries.
        #[arg(long, default_value_t = 1_000)]
        queries: usize,
        /// Expected norm of the noise added to each mixture (before normalising).
        #[arg(long, default_value_t = 0.2)]
        noise: f32,
        /// Neighbours per query in the ground truth.
        #[arg(long, default_value_t = 100)]
        k: usize,
        /// Seed (the queries use seed + 1).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output .hdf5 file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write N seeded random unit vectors (.fvecs, .fbin or .npy by extension).
    Random {
        /// Dimension.
        #[arg(long)]
        dim: usize,
        /// Number of vectors.
        #[arg(long)]
        count: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file.
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct Input {
    /// An ann-benchmarks HDF5 file (its train, test and distance are used).
    #[arg(long, conflicts_with_all = ["train", "test"])]
    dataset: Option<PathBuf>,
    /// Base vectors (any supported vector format).
    #[arg(long, requires = "test")]
    train: Option<PathBuf>,
    /// Query vectors.
    #[arg(long, requires = "train")]
    test: Option<PathBuf>,
    /// Distance: angular, euclidean or dot (required with --train/--test).
    #[arg(long)]
    metric: Option<String>,
}

impl Input {
    fn load(&self) -> Result<(Matrix<f32>, Matrix<f32>, Distance)> {
        let parse = |m: &str| {
            Distance::parse(m).ok_or_else(|| {
                DatasetError::unsupported(
                    Path::new("--metric"),
                    "argument",
                    format!("{m:?}: use angular, euclidean or dot"),
                )
            })
        };
        match (&self.dataset, &self.train, &self.test) {
            (Some(path), _, _) => {
                let ds = read_hdf5(path)?;
                let distance = match &self.metric {
                    Some(m) => parse(m)?,
                    None => ds.distance,
                };
                Ok((ds.train, ds.test, distance))
            }
            (None, Some(train), Some(test)) => {
                let metric = self.metric.as_deref().ok_or_else(|| {
                    DatasetError::unsupported(
                        Path::new("--metric"),
                        "argument",
                        "--metric is required with --train/--test",
                    )
                })?;
                Ok((read_vectors(train)?, read_vectors(test)?, parse(metric)?))
            }
            _ => Err(DatasetError::unsupported(
                Path::new("input"),
                "argument",
                "give --dataset FILE.hdf5, or --train and --test",
            )),
        }
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn ground_truth(
    train: &Matrix<f32>,
    test: &Matrix<f32>,
    distance: Distance,
    k: usize,
) -> Result<(Matrix<i32>, Matrix<f32>)> {
    eprintln!(
        "exact top-{k} by {} distance: {} queries × {} vectors × d = {}",
        distance.name(),
        test.rows(),
        train.rows(),
        train.dim()
    );
    let pb = bar(test.rows(), "groundtruth");
    let out = exact_neighbors(train, test, distance, k, |done| {
        pb.set_position(done as u64)
    });
    pb.finish();
    out
}

fn checksum(values: impl Iterator<Item = [u8; 4]>) -> u32 {
    values.fold(0u32, |crc, b| crc32c::crc32c_append(crc, &b))
}

fn info(path: &Path) -> Result<()> {
    println!("file:      {}", path.display());
    if path.extension().is_some_and(|e| e == "hdf5" || e == "h5") {
        let ds = read_hdf5(path)?;
        println!("format:    ann-benchmarks HDF5");
        println!("distance:  {}", ds.distance.name());
        println!("train:     {} × {}", ds.train.rows(), ds.train.dim());
        println!("test:      {} × {}", ds.test.rows(), ds.test.dim());
        println!(
            "neighbors: {} × {}",
            ds.neighbors.rows(),
            ds.neighbors.dim()
        );
        let crc = checksum(
            ds.train
                .as_slice()
                .iter()
                .chain(ds.test.as_slice())
                .map(|v| v.to_le_bytes()),
        );
        println!("checksum:  crc32c {crc:08x} (train then test f32 values, little-endian)");
        return Ok(());
    }
    let format = VectorFormat::from_path(path)?;
    let m = read_vectors(path)?;
    println!("format:    {format:?}");
    println!("shape:     {} × {}", m.rows(), m.dim());
    println!("distance:  not stored in this format");
    println!(
        "checksum:  crc32c {:08x} (f32 values, little-endian)",
        checksum(m.as_slice().iter().map(|v| v.to_le_bytes()))
    );
    Ok(())
}

fn write_dataset(out: &Path, ds: &AnnDataset) -> Result<()> {
    write_hdf5(out, ds)?;
    eprintln!(
        "wrote {} ({} train, {} test, top-{}, {})",
        out.display(),
        ds.train.rows(),
        ds.test.rows(),
        ds.neighbors.dim(),
        ds.distance.name()
    );
    Ok(())
}

fn fetch(name: &str, dir: &Path) -> Result<()> {
    let pb = bar(0, "groundtruth");
    let out = gyre_datasets::fetch::fetch(
        name,
        dir,
        &|line| pb.suspend(|| eprintln!("{line}")),
        &mut |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    );
    pb.finish_and_clear();
    println!("{}", out?.display());
    Ok(())
}

fn random(dim: usize, count: usize, seed: u64, out: &Path) -> Result<()> {
    if dim == 0 {
        return Err(DatasetError::unsupported(
            out,
            "argument",
            "--dim must be positive",
        ));
    }
    let mut rng = gyre::random::SeededRng::for_data(seed);
    let mut data = vec![0.0f32; dim * count];
    for row in data.chunks_exact_mut(dim) {
        rng.unit_vector(row);
    }
    let m = Matrix::new(count, dim, data);
    match VectorFormat::from_path(out)? {
        VectorFormat::Fvecs => texmex::write_fvecs(out, &m)?,
        VectorFormat::Fbin => bigann::write_fbin(out, &m)?,
        VectorFormat::Npy => npy::write_npy_f32(out, &m)?,
        other => {
            return Err(DatasetError::unsupported(
                out,
                "output",
                format!("random vectors are written as .fvecs, .fbin or .npy, not {other:?}"),
            ));
        }
    }
    eprintln!(
        "wrote {count} random unit vectors of dimension {dim} (seed {seed}) to {}",
        out.display()
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { file } => info(&file),
        Command::Groundtruth { input, k, out } => {
            let (train, test, distance) = input.load()?;
            let (neighbors, distances) = ground_truth(&train, &test, distance, k)?;
            if out.extension().is_some_and(|e| e == "ivecs") {
                texmex::write_ivecs(&out, &neighbors)?;
                eprintln!("wrote {}", out.display());
                Ok(())
            } else {
                write_dataset(
                    &out,
                    &AnnDataset {
                        train,
                        test,
                        neighbors,
                        distances,
                        distance,
                    },
                )
            }
        }
        Command::Convert {
            input,
            neighbors,
            k,
            out,
        } => {
            let (train, test, distance) = input.load()?;
            let (neighbors, distances) = match neighbors {
                Some(path) => {
                    let ids = if path.extension().is_some_and(|e| e == "ibin") {
                        bigann::read_ibin(&path)?
                    } else {
                        texmex::read_ivecs(&path)?
                    };
                    if ids.rows() != test.rows() {
                        return Err(DatasetError::malformed(
                            &path,
                            "ground truth",
                            format!("{} rows for {} queries", ids.rows(), test.rows()),
                        ));
                    }
                    if let Some(&bad) = ids
                        .as_slice()
                        .iter()
                        .find(|&&i| i < 0 || i as usize >= train.rows())
                    {
                        return Err(DatasetError::malformed(
                            &path,
                            "ground truth",
                            format!("id {bad} outside 0..{}", train.rows()),
                        ));
                    }
                    let dists = (0..ids.rows())
                        .flat_map(|q| ids.row(q).iter().map(move |&i| (q, i)))
                        .map(|(q, i)| distance.between(test.row(q), train.row(i as usize)) as f32)
                        .collect();
                    let k = ids.dim();
                    (ids, Matrix::new(test.rows(), k, dists))
                }
                None => ground_truth(&train, &test, distance, k)?,
            };
            write_dataset(
                &out,
                &AnnDataset {
                    train,
                    test,
                    neighbors,
                    distances,
                    distance,
                },
            )
        }
        Command::Fetch { name, dir } => fetch(&name, &dir),
        Command::Mixture {
            base,
            count,
            queries,
            noise,
            k,
            seed,
            out,
        } => {
            let base_path = base.unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../shared/datasets/docs-minilm-384-angular.hdf5")
            });
            let base = read_hdf5(&base_path)?.train;
            if count == 0 || queries == 0 || k == 0 || k > count {
                return Err(DatasetError::unsupported(
                    &out,
                    "argument",
                    "--count, --queries and --k must be positive, with k ≤ count",
                ));
            }
            if !noise.is_finite() || noise < 0.0 {
                return Err(DatasetError::unsupported(
                    &out,
                    "argument",
                    "--noise must be a finite non-negative number",
                ));
            }
            eprintln!(
                "mixtures of pairs of {} base vectors (d = {}) + noise {noise}: {count} points, {queries} queries (seed {seed})",
                base.rows(),
                base.dim()
            );
            let train = gyre_datasets::synth::mixture(&base, count, noise, seed);
            let test = gyre_datasets::synth::mixture(&base, queries, noise, seed.wrapping_add(1));
            let (neighbors, distances) = ground_truth(&train, &test, Distance::Angular, k)?;
            let mut nn: Vec<f32> = (0..test.rows()).map(|q| distances.row(q)[0]).collect();
            let mut tenth: Vec<f32> = (0..test.rows())
                .map(|q| distances.row(q)[9.min(k - 1)])
                .collect();
            let mut last: Vec<f32> = (0..test.rows()).map(|q| distances.row(q)[k - 1]).collect();
            let pct = |v: &mut Vec<f32>| {
                v.sort_by(f32::total_cmp);
                let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
                format!("p10 {:.4}  p50 {:.4}  p90 {:.4}", at(0.1), at(0.5), at(0.9))
            };
            eprintln!("angular distance to the 1st neighbour:   {}", pct(&mut nn));
            eprintln!(
                "angular distance to the {}th neighbour: {}",
                10.min(k),
                pct(&mut tenth)
            );
            eprintln!(
                "angular distance to the {k}th neighbour: {}",
                pct(&mut last)
            );
            write_dataset(
                &out,
                &AnnDataset {
                    train,
                    test,
                    neighbors,
                    distances,
                    distance: Distance::Angular,
                },
            )
        }
        Command::Random {
            dim,
            count,
            seed,
            out,
        } => random(dim, count, seed, &out),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gyre-datasets: {e}");
            ExitCode::FAILURE
        }
    }
}
