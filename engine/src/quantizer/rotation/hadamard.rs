//! The randomized Hadamard rotation.
//!
//! One round is `x ← H_B · D · P · x`: a random permutation `P`, random signs `D`, then the
//! normalised Walsh-Hadamard transform `H_B` applied blockwise. Rounds repeat with fresh
//! permutations and signs (the permutation before the first round spreads inputs whose energy
//! sits in the first coordinates, as matryoshka embeddings do).
//!
//! Dimensions that are not a power of two: with `P = 2^⌊log2 d⌋`, `H_B` is the transform on the
//! first `P` coordinates followed by the transform on the last `P` coordinates. The two blocks
//! overlap by `2P - d` coordinates, so every coordinate is mixed with at least `P ≥ d/2` others in
//! every round; no padding is needed, codes keep exactly `d` coordinates (zero extra bits), and a
//! round costs at most twice a power-of-two transform. Everything is f32 additions and exact
//! scalings in a fixed order, so the result is bit-identical on every platform.

use super::check_rotation_dim;
use crate::error::Result;
use crate::random::{SeededRng, domain};

/// Rounds used by [`HadamardRotation::new`]: 3 when the block is at least 256 wide, else 4.
///
/// Measured with the KS tests in `rotation/tests.rs` (distance to `f_d` of pooled coordinates):
/// two rounds leave a one-hot input on a coarse lattice (KS 0.02-0.05 at d = 64..1536) and
/// inputs with 4 nonzero coordinates visibly off (0.025 at d = 384); three rounds bring
/// everything to ≤ 0.008 for d ≥ 256 but leave 0.02 for a one-hot input at d = 64, which a
/// fourth round (cheap at that size) brings to 0.008.
pub fn default_rounds(dim: usize) -> usize {
    if dim >= 256 { 3 } else { 4 }
}

#[derive(Debug, Clone)]
struct Round {
    /// Gather indices: round input `i` is `x[perm[i]]`.
    perm: Vec<u32>,
    /// `±1/√P` for coordinates inside the first block, `±1` after it (the normalisation of the
    /// first block is folded into the signs; see `apply`).
    signs: Vec<f32>,
}

/// A seeded randomized Hadamard rotation (see the module docs).
#[derive(Debug, Clone)]
pub struct HadamardRotation {
    dim: usize,
    block: usize,
    scale: f32,
    rounds: Vec<Round>,
}

impl HadamardRotation {
    /// The rotation for `dim ≥ 2` with [`default_rounds`] rounds.
    pub fn new(dim: usize, seed: u64) -> Result<Self> {
        Self::with_rounds(dim, seed, default_rounds(dim))
    }

    /// The rotation with an explicit number of rounds (at least 1).
    pub fn with_rounds(dim: usize, seed: u64, rounds: usize) -> Result<Self> {
        check_rotation_dim(dim)?;
        let rounds = rounds.max(1);
        let block = 1usize << (usize::BITS - 1 - dim.leading_zeros());
        // 1/√P is exact for even powers and correctly rounded otherwise (sqrt is IEEE-exact).
        let scale = (1.0 / (block as f64).sqrt()) as f32;
        let mut rng = SeededRng::new(seed, domain::HADAMARD);
        let rounds = (0..rounds)
            .map(|_| {
                let perm = rng.permutation(dim);
                let signs = (0..dim)
                    .map(|i| {
                        let magnitude = if i < block { scale } else { 1.0 };
                        if rng.coin() { magnitude } else { -magnitude }
                    })
                    .collect();
                Round { perm, signs }
            })
            .collect();
        Ok(HadamardRotation {
            dim,
            block,
            scale,
            rounds,
        })
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rounds.
    pub fn rounds(&self) -> usize {
        self.rounds.len()
    }

    /// `v ← Π v`; `scratch` holds `dim` floats.
    pub fn apply(&self, v: &mut [f32], scratch: &mut [f32]) {
        let (d, p) = (self.dim, self.block);
        assert!(
            v.len() == d && scratch.len() == d,
            "rotation buffers must hold dim floats"
        );
        for round in &self.rounds {
            for ((s, &j), &sign) in scratch.iter_mut().zip(&round.perm).zip(&round.signs) {
                *s = v[j as usize] * sign;
            }
            // First block: its 1/√P already sits in the signs.
            fwht(&mut scratch[..p]);
            if p < d {
                let tail = &mut scratch[d - p..];
                fwht(tail);
                tail.iter_mut().for_each(|x| *x *= self.scale);
            }
            v.copy_from_slice(scratch);
        }
    }

    /// `v ← Πᵀ v`; `scratch` holds `dim` floats.
    pub fn inverse(&self, v: &mut [f32], scratch: &mut [f32]) {
        let (d, p) = (self.dim, self.block);
        assert!(
            v.len() == d && scratch.len() == d,
            "rotation buffers must hold dim floats"
        );
        for round in self.rounds.iter().rev() {
            if p < d {
                let tail = &mut v[d - p..];
                fwht(tail);
                tail.iter_mut().for_each(|x| *x *= self.scale);
            }
            // The unnormalised transform is its own inverse up to 1/P; with the 1/√P carried by
            // the signs, `signs · H` undoes `H · signs` exactly.
            fwht(&mut v[..p]);
            for ((x, &j), &sign) in v.iter().zip(&round.perm).zip(&round.signs) {
                scratch[j as usize] = x * sign;
            }
            v.copy_from_slice(scratch);
        }
    }
}

/// Unnormalised fast Walsh-Hadamard transform, in place; `x.len()` is a power of two.
#[inline]
pub(crate) fn fwht(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two());
    let mut h = 1;
    // The first three stages inside groups of 8, so that later stages run on long contiguous
    // halves the compiler vectorises.
    if n >= 8 {
        for c in x.chunks_exact_mut(8) {
            let a = [
                c[0] + c[1],
                c[0] - c[1],
                c[2] + c[3],
                c[2] - c[3],
                c[4] + c[5],
                c[4] - c[5],
                c[6] + c[7],
                c[6] - c[7],
            ];
            let b = [
                a[0] + a[2],
                a[1] + a[3],
                a[0] - a[2],
                a[1] - a[3],
                a[4] + a[6],
                a[5] + a[7],
                a[4] - a[6],
                a[5] - a[7],
            ];
            c[0] = b[0] + b[4];
            c[1] = b[1] + b[5];
            c[2] = b[2] + b[6];
            c[3] = b[3] + b[7];
            c[4] = b[0] - b[4];
            c[5] = b[1] - b[5];
            c[6] = b[2] - b[6];
            c[7] = b[3] - b[7];
        }
        h = 8;
    }
    while h < n {
        for chunk in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = chunk.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (s, t) = (*a + *b, *a - *b);
                *a = s;
                *b = t;
            }
        }
        h *= 2;
    }
}
