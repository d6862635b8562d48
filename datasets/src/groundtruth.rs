//! Exact ground truth: the true top-k of every query, by brute force with the engine's oracle.

use crate::annb::Distance;
use crate::error::{DatasetError, Result};
use crate::matrix::Matrix;

/// Queries per call to the oracle (one progress step).
pub const CHUNK: usize = 256;

/// The exact top-`k` neighbours of every row of `test` among the rows of `train`, best first, as
/// ids and distances (recomputed in f64 from the vectors). `progress` is called with the number
/// of queries done after each chunk.
pub fn exact_neighbors(
    train: &Matrix<f32>,
    test: &Matrix<f32>,
    distance: Distance,
    k: usize,
    mut progress: impl FnMut(usize),
) -> Result<(Matrix<i32>, Matrix<f32>)> {
    if train.rows() > i32::MAX as usize {
        return Err(DatasetError::engine(
            "ground truth",
            gyre::Error::InvalidArgument {
                name: "train",
                reason: "ids above i32::MAX do not fit ann-benchmarks files".into(),
            },
        ));
    }
    let k = k.min(train.rows());
    let index = gyre::ExactIndex::new(train.dim(), distance.metric(), train.as_slice())
        .map_err(|e| DatasetError::engine("indexing the train vectors", e))?;
    let mut ids = Vec::with_capacity(test.rows() * k);
    let mut dists = Vec::with_capacity(test.rows() * k);
    let dim = test.dim();
    for (c, chunk) in test.as_slice().chunks(CHUNK * dim).enumerate() {
        let results = index.search_batch(chunk, k).map_err(|e| {
            DatasetError::engine(format!("searching queries from row {}", c * CHUNK), e)
        })?;
        for (q, found) in chunk.chunks_exact(dim).zip(results) {
            let mut row: Vec<(f64, i32)> = found
                .iter()
                .map(|n| (distance.between(q, train.row(n.id as usize)), n.id as i32))
                .collect();
            // The oracle ranks in f32; order by the f64 distances, ties by id.
            row.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            ids.extend(row.iter().map(|r| r.1));
            dists.extend(row.iter().map(|r| r.0 as f32));
        }
        progress(((c + 1) * CHUNK).min(test.rows()));
    }
    Ok((
        Matrix::new(test.rows(), k, ids),
        Matrix::new(test.rows(), k, dists),
    ))
}
