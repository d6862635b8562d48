//! The 1-bit QJL sketch of a residual (TurboQuant_prod).
//!
//! `S` is a `d × d` matrix of i.i.d. N(0, 1) entries drawn from the seed. A residual `r` is stored
//! as the signs of `S r` (bit set = non-negative) and its norm `γ`. For a query `q'`,
//! `γ · √(π/2) / d · <S q', sign(S r)>` is an unbiased estimate of `<q', r>`.

use crate::kernels::dot_f32;
use crate::random::{SeededRng, domain};

/// The seeded Gaussian sketching matrix.
#[derive(Debug, Clone)]
pub struct QjlSketch {
    dim: usize,
    /// Row-major `d × d`.
    matrix: Vec<f32>,
}

impl QjlSketch {
    /// Draws `S` for `dim` from `seed`.
    pub fn new(dim: usize, seed: u64) -> Self {
        let mut rng = SeededRng::new(seed, domain::QJL);
        let matrix = (0..dim * dim).map(|_| rng.gaussian() as f32).collect();
        QjlSketch { dim, matrix }
    }

    /// Bytes of one sketch: one bit per coordinate.
    pub fn bytes(&self) -> usize {
        self.dim.div_ceil(8)
    }

    /// `√(π/2) / d`, the estimator's constant.
    pub fn coefficient(&self) -> f32 {
        ((std::f64::consts::PI / 2.0).sqrt() / self.dim as f64) as f32
    }

    /// Writes the sign bits of `S r` into `out` (LSB-first, bit set = non-negative).
    pub fn sketch(&self, residual: &[f32], out: &mut [u8]) {
        out.fill(0);
        for (i, row) in self.matrix.chunks_exact(self.dim).enumerate() {
            if dot_f32(row, residual) >= 0.0 {
                out[i / 8] |= 1 << (i % 8);
            }
        }
    }

    /// `out ← S q`.
    pub fn project(&self, q: &[f32], out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(self.matrix.chunks_exact(self.dim)) {
            *o = dot_f32(row, q);
        }
    }

    /// `out += coeff · Sᵀ sign`: adds the sketch's reconstruction, scaled, to `out`.
    pub fn add_reconstruction(&self, sketch: &[u8], coeff: f32, out: &mut [f32]) {
        for (i, row) in self.matrix.chunks_exact(self.dim).enumerate() {
            let s = if sketch[i / 8] >> (i % 8) & 1 == 1 {
                coeff
            } else {
                -coeff
            };
            for (o, &m) in out.iter_mut().zip(row) {
                *o += s * m;
            }
        }
    }
}

/// `Σ_i v_i · sign_i` with `sign_i = ±1` from the sketch bits.
#[inline]
pub fn signed_sum(v: &[f32], sketch: &[u8]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (chunk, &byte) in v.chunks(8).zip(sketch) {
        for (i, &x) in chunk.iter().enumerate() {
            lanes[i] += if byte >> i & 1 == 1 { x } else { -x };
        }
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}
