//! The dense Haar-random rotation: the Q factor of a Gaussian matrix, sign-corrected.
//!
//! O(d²) per vector, so it serves as the reference the fast rotation is tested against and as an
//! option for small `d`. The Gaussian matrix comes from the portable [`SeededRng`]; the QR runs in
//! faer sequentially, so the matrix is the same for a seed across runs and thread counts. faer
//! picks SIMD kernels by CPU at run time, so two different CPUs may differ in the last bits of
//! an entry: use the Hadamard rotation where codes must match across machines to the bit.

use faer::Mat;

use super::check_rotation_dim;
use crate::error::Result;
use crate::random::{SeededRng, domain};

/// A dense random orthogonal matrix `Π`, stored row-major in f32.
#[derive(Debug, Clone)]
pub struct DenseRotation {
    dim: usize,
    matrix: Vec<f32>,
}

impl DenseRotation {
    /// The rotation for `dim ≥ 2` drawn from `seed`.
    pub fn new(dim: usize, seed: u64) -> Result<Self> {
        check_rotation_dim(dim)?;
        let mut rng = SeededRng::new(seed, domain::DENSE);
        // Filled column by column so the draw order is explicit.
        let mut gaussian = Mat::<f64>::zeros(dim, dim);
        for j in 0..dim {
            for i in 0..dim {
                gaussian[(i, j)] = rng.gaussian();
            }
        }
        let qr = gaussian.qr();
        let q = qr.compute_Q();
        let r = qr.R();
        // Haar measure needs diag(R) > 0: flip the columns of Q where R's diagonal is negative.
        let mut matrix = vec![0.0f32; dim * dim];
        for j in 0..dim {
            let flip = if r[(j, j)] < 0.0 { -1.0 } else { 1.0 };
            for i in 0..dim {
                matrix[i * dim + j] = (flip * q[(i, j)]) as f32;
            }
        }
        Ok(DenseRotation { dim, matrix })
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The matrix, row-major: `(Π v)_i = Σ_j m[i·d + j] v_j`.
    pub fn matrix(&self) -> &[f32] {
        &self.matrix
    }

    /// `v ← Π v`.
    pub fn apply(&self, v: &mut [f32], scratch: &mut [f32]) {
        assert!(
            v.len() == self.dim && scratch.len() == self.dim,
            "rotation buffers must hold dim floats"
        );
        for (out, row) in scratch.iter_mut().zip(self.matrix.chunks_exact(self.dim)) {
            *out = crate::kernels::dot_f32(row, v);
        }
        v.copy_from_slice(scratch);
    }

    /// `v ← Πᵀ v`.
    pub fn inverse(&self, v: &mut [f32], scratch: &mut [f32]) {
        assert!(
            v.len() == self.dim && scratch.len() == self.dim,
            "rotation buffers must hold dim floats"
        );
        scratch.fill(0.0);
        for (row, &x) in self.matrix.chunks_exact(self.dim).zip(v.iter()) {
            for (s, &m) in scratch.iter_mut().zip(row) {
                *s += m * x;
            }
        }
        v.copy_from_slice(scratch);
    }
}
