//! Exact brute-force search over full-precision vectors: the ground-truth oracle.

use rayon::prelude::*;

use crate::error::{Error, Result, check_norm, check_rows, check_vector};
use crate::kernels::{dot_f32, squared_l2_f32};
use crate::metric::Metric;
use crate::search::TopK;

/// One search result: a vector's id and its score under the metric (cosine similarity, inner
/// product, or squared L2 distance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    /// The vector's id (its row number for [`ExactIndex`]).
    pub id: u64,
    /// The score: higher is closer for cosine and dot, lower for L2.
    pub score: f32,
}

/// Queries scored together against each data row, so a row loaded into L1 serves all of them.
const QUERY_BLOCK: usize = 8;
/// Rows per parallel task when a single query is split across threads.
const ROW_CHUNK: usize = 4096;

/// Brute-force search over a borrowed row-major `n × dim` matrix; row `i` has id `i`.
#[derive(Debug)]
pub struct ExactIndex<'a> {
    dim: usize,
    metric: Metric,
    data: &'a [f32],
    /// `1/||x||` per row, for cosine.
    inv_norms: Vec<f32>,
}

impl<'a> ExactIndex<'a> {
    /// Wraps `data`; checks every row (finite values, and nonzero for cosine).
    pub fn new(dim: usize, metric: Metric, data: &'a [f32]) -> Result<Self> {
        if dim == 0 {
            return Err(Error::InvalidDimension {
                dim,
                reason: "vectors need at least one component",
            });
        }
        check_rows(data, dim, "data")?;
        let rows: Vec<&[f32]> = data.chunks_exact(dim).collect();
        let inv_norms = rows
            .par_iter()
            .map(|row| {
                check_vector(row, dim)?;
                if metric == Metric::Cosine {
                    Ok((1.0 / check_norm(row, false)?) as f32)
                } else {
                    Ok(1.0)
                }
            })
            .collect::<Result<Vec<f32>>>()?;
        Ok(ExactIndex {
            dim,
            metric,
            data,
            inv_norms,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.inv_norms.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.inv_norms.is_empty()
    }

    fn check_query(&self, q: &[f32], k: usize) -> Result<f32> {
        if k == 0 {
            return Err(Error::invalid_argument("k", "k must be at least 1"));
        }
        check_vector(q, self.dim)?;
        let n = check_norm(q, self.metric == Metric::L2)?;
        if self.metric == Metric::Cosine {
            Ok((1.0 / n) as f32)
        } else {
            Ok(1.0)
        }
    }

    #[inline]
    fn score(&self, q: &[f32], q_inv_norm: f32, row: usize) -> f32 {
        let x = &self.data[row * self.dim..(row + 1) * self.dim];
        match self.metric {
            Metric::Dot => dot_f32(q, x),
            Metric::Cosine => dot_f32(q, x) * q_inv_norm * self.inv_norms[row],
            Metric::L2 => squared_l2_f32(q, x),
        }
    }

    fn finish(&self, top: TopK) -> Vec<Neighbor> {
        top.into_sorted()
            .into_iter()
            .map(|(id, key)| Neighbor {
                id,
                score: self.metric.to_key(key),
            })
            .collect()
    }

    /// The `min(k, n)` nearest rows to `query`, best first, ties by increasing id. The scan of
    /// the rows is split across threads.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbor>> {
        let q_inv = self.check_query(query, k)?;
        let n = self.len();
        let top = (0..n.div_ceil(ROW_CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut top = TopK::new(k);
                for row in c * ROW_CHUNK..((c + 1) * ROW_CHUNK).min(n) {
                    top.push(
                        row as u64,
                        self.metric.to_key(self.score(query, q_inv, row)),
                    );
                }
                top
            })
            .reduce(
                || TopK::new(k),
                |mut a, b| {
                    a.merge(b);
                    a
                },
            );
        Ok(self.finish(top))
    }

    /// [`search`](Self::search) for every row of a row-major `m × dim` query matrix, in
    /// parallel over blocks of queries.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Neighbor>>> {
        check_rows(queries, self.dim, "queries")?;
        let qs: Vec<&[f32]> = queries.chunks_exact(self.dim).collect();
        let inv = qs
            .iter()
            .map(|q| self.check_query(q, k))
            .collect::<Result<Vec<f32>>>()?;
        if qs.len() < 2 * rayon::current_num_threads() {
            return qs.iter().map(|q| self.search(q, k)).collect();
        }
        let blocks: Vec<Vec<Vec<Neighbor>>> = qs
            .par_chunks(QUERY_BLOCK)
            .zip(inv.par_chunks(QUERY_BLOCK))
            .map(|(block, inv)| {
                let mut tops: Vec<TopK> = block.iter().map(|_| TopK::new(k)).collect();
                for row in 0..self.len() {
                    for ((q, &qi), top) in block.iter().zip(inv).zip(tops.iter_mut()) {
                        top.push(row as u64, self.metric.to_key(self.score(q, qi, row)));
                    }
                }
                tops.into_iter().map(|t| self.finish(t)).collect()
            })
            .collect();
        Ok(blocks.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRng;

    fn naive(data: &[f32], dim: usize, q: &[f32], k: usize, metric: Metric) -> Vec<u64> {
        let mut scored: Vec<(u64, f64)> = data
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, x)| {
                let dot: f64 = q
                    .iter()
                    .zip(x)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let nq: f64 = q.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
                let nx: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
                let l2: f64 = q
                    .iter()
                    .zip(x)
                    .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                    .sum();
                let key = match metric {
                    Metric::Dot => dot,
                    Metric::Cosine => dot / (nq * nx),
                    Metric::L2 => -l2,
                };
                (i as u64, key)
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.into_iter().take(k).map(|s| s.0).collect()
    }

    fn random_matrix(rng: &mut SeededRng, rows: usize, dim: usize) -> Vec<f32> {
        (0..rows * dim).map(|_| rng.gaussian() as f32).collect()
    }

    #[test]
    fn agrees_with_naive_f64_search() {
        let mut rng = SeededRng::for_data(11);
        for &(n, dim) in &[(1usize, 3usize), (37, 5), (5000, 17), (9000, 64)] {
            let data = random_matrix(&mut rng, n, dim);
            let queries = random_matrix(&mut rng, 40, dim);
            for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
                let index = ExactIndex::new(dim, metric, &data).unwrap();
                let batch = index.search_batch(&queries, 10).unwrap();
                for (q, got) in queries.chunks_exact(dim).zip(&batch) {
                    let want = naive(&data, dim, q, 10, metric);
                    let ids: Vec<u64> = got.iter().map(|n| n.id).collect();
                    assert_eq!(ids, want, "n={n} dim={dim} {metric:?}");
                    assert_eq!(index.search(q, 10).unwrap(), *got, "single == batch");
                }
            }
        }
    }

    #[test]
    fn ties_break_by_id_and_k_above_n_returns_all() {
        let data = vec![
            1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0,
        ];
        let index = ExactIndex::new(3, Metric::Dot, &data).unwrap();
        let got = index.search(&[1.0, 0.0, 0.0], 10).unwrap();
        let ids: Vec<u64> = got.iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![0, 1, 3, 2]);
        assert_eq!(got[0].score, 1.0);
        let l2 = ExactIndex::new(3, Metric::L2, &data).unwrap();
        let got = l2.search(&[1.0, 0.0, 0.0], 2).unwrap();
        assert_eq!((got[0].id, got[0].score), (0, 0.0));
        assert_eq!((got[1].id, got[1].score), (1, 0.0));
    }

    #[test]
    fn bad_input_is_refused() {
        let data = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let index = ExactIndex::new(3, Metric::Cosine, &data).unwrap();
        assert!(matches!(
            index.search(&[1.0, 2.0], 1),
            Err(Error::DimensionMismatch {
                expected: 3,
                actual: 2
            })
        ));
        assert!(matches!(
            index.search(&[1.0, f32::NAN, 0.0], 1),
            Err(Error::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            index.search(&[0.0, 0.0, 0.0], 1),
            Err(Error::ZeroVector)
        ));
        assert!(matches!(
            index.search(&[1.0, 0.0, 0.0], 0),
            Err(Error::InvalidArgument { name: "k", .. })
        ));
        assert!(matches!(
            ExactIndex::new(3, Metric::Dot, &data[..5]),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            ExactIndex::new(3, Metric::Cosine, &[0.0; 3]),
            Err(Error::ZeroVector)
        ));
        assert!(matches!(
            ExactIndex::new(3, Metric::Dot, &[0.0, f32::INFINITY, 0.0]),
            Err(Error::NonFinite { .. })
        ));
        let empty = ExactIndex::new(3, Metric::Dot, &[]).unwrap();
        assert!(empty.search(&[1.0, 0.0, 0.0], 5).unwrap().is_empty());
    }
}
