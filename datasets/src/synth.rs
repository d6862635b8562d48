//! Synthetic datasets with the local structure of real embeddings, at any size.
//!
//! [`mixture`] draws each point as a random convex mixture of two vectors of a real base set
//! plus Gaussian noise, normalised: points cluster where the base set does and fill the
//! segments between base points, so nearest-neighbour distances spread like a real set's (unlike
//! uniform random vectors, whose neighbours are all nearly orthogonal). Seeded and pure:
//! the same base, size and seed give the same points on every machine.

use crate::Matrix;
use gyre::random::SeededRng;

/// `count` points of `base.dim()` dimensions: `normalise(a·u + (1 − a)·v + σ·g)` with `u`, `v`
/// two base rows drawn uniformly, `a` uniform in [0, 1], `g` standard Gaussian and
/// `σ = noise / √d` (so `noise` is the noise's expected norm).
pub fn mixture(base: &Matrix<f32>, count: usize, noise: f32, seed: u64) -> Matrix<f32> {
    let d = base.dim();
    let n = base.rows() as u64;
    let mut out = vec![0.0f32; count * d];
    if n == 0 || d == 0 {
        return Matrix::new(count, d, out);
    }
    let mut rng = SeededRng::new(seed, 0x6d69_7874);
    let sigma = noise / (d as f32).sqrt();
    for row in out.chunks_exact_mut(d) {
        let (u, v) = (
            base.row(rng.below(n) as usize),
            base.row(rng.below(n) as usize),
        );
        let a = rng.open01() as f32;
        let mut norm = 0.0f64;
        for ((o, &x), &y) in row.iter_mut().zip(u).zip(v) {
            *o = a * x + (1.0 - a) * y + sigma * rng.gaussian() as f32;
            norm += f64::from(*o) * f64::from(*o);
        }
        let norm = norm.sqrt() as f32;
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Matrix::new(count, d, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixtures_are_seeded_unit_vectors_near_their_base() {
        let mut rng = SeededRng::for_data(5);
        let mut b = vec![0.0f32; 50 * 16];
        for r in b.chunks_exact_mut(16) {
            rng.unit_vector(r);
        }
        let base = Matrix::new(50, 16, b);
        let x = mixture(&base, 200, 0.1, 7);
        assert_eq!(x.as_slice(), mixture(&base, 200, 0.1, 7).as_slice());
        assert_ne!(x.as_slice(), mixture(&base, 200, 0.1, 8).as_slice());
        for i in 0..x.rows() {
            let r = x.row(i);
            let n: f32 = r.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-4);
            // Every point lies near the segment between two base points: its best cosine
            // with the base set is well above the ~0 of an unrelated direction at d = 16.
            let best = (0..50)
                .map(|j| r.iter().zip(base.row(j)).map(|(a, b)| a * b).sum::<f32>())
                .fold(f32::MIN, f32::max);
            assert!(best > 0.5, "{best}");
        }
    }
}
