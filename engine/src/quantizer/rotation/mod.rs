//! Random orthogonal rotations, fixed by a seed.
//!
//! Two kinds: [`HadamardRotation`] (the default: O(d log d), portable to the bit) and
//! [`DenseRotation`] (a Haar-random matrix, the reference for tests and small `d`). Both map unit
//! vectors to vectors whose coordinates follow [`CoordinateLaw`](super::CoordinateLaw), which is
//! what the codebooks are built for.
//!
//! Invariants: `inverse(apply(x)) == x` up to f32 rounding; the same `(kind, dim, seed)` gives
//! the same rotation in every process. Rotations work in place with a caller-provided scratch
//! buffer of `dim` floats, so the per-vector path does not allocate.

mod dense;
mod hadamard;

pub use dense::DenseRotation;
pub use hadamard::{HadamardRotation, default_rounds};

use crate::error::{Error, Result, check_rows};

/// Which rotation a quantizer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RotationKind {
    /// Random permutations and signs around normalised Walsh-Hadamard transforms (default).
    #[default]
    Hadamard,
    /// A dense Haar-random orthogonal matrix (QR of a Gaussian matrix).
    Dense,
}

impl RotationKind {
    /// The name used on command lines and in files.
    pub fn name(self) -> &'static str {
        match self {
            RotationKind::Hadamard => "hadamard",
            RotationKind::Dense => "dense",
        }
    }
}

impl std::str::FromStr for RotationKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hadamard" => Ok(RotationKind::Hadamard),
            "dense" => Ok(RotationKind::Dense),
            other => Err(Error::invalid_argument(
                "rotation",
                format!("unknown rotation {other:?}: use \"hadamard\" or \"dense\""),
            )),
        }
    }
}

/// A seeded random rotation of `R^dim`.
#[derive(Debug, Clone)]
pub enum Rotation {
    /// See [`HadamardRotation`].
    Hadamard(HadamardRotation),
    /// See [`DenseRotation`].
    Dense(DenseRotation),
}

impl Rotation {
    /// Builds the rotation of `kind` for `dim` dimensions from `seed`.
    pub fn new(kind: RotationKind, dim: usize, seed: u64) -> Result<Self> {
        Ok(match kind {
            RotationKind::Hadamard => Rotation::Hadamard(HadamardRotation::new(dim, seed)?),
            RotationKind::Dense => Rotation::Dense(DenseRotation::new(dim, seed)?),
        })
    }

    /// The kind of rotation.
    pub fn kind(&self) -> RotationKind {
        match self {
            Rotation::Hadamard(_) => RotationKind::Hadamard,
            Rotation::Dense(_) => RotationKind::Dense,
        }
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        match self {
            Rotation::Hadamard(r) => r.dim(),
            Rotation::Dense(r) => r.dim(),
        }
    }

    /// The law each coordinate of a rotated uniformly random unit vector follows,
    /// `f_d(t) ∝ (1 - t²)^((d-3)/2)` (needs `d ≥ 3`).
    pub fn coordinate_law(&self) -> Result<super::CoordinateLaw> {
        super::CoordinateLaw::new(self.dim())
    }

    /// `v ← Π v`. `v` and `scratch` must both have `dim` elements.
    #[inline]
    pub fn apply(&self, v: &mut [f32], scratch: &mut [f32]) {
        match self {
            Rotation::Hadamard(r) => r.apply(v, scratch),
            Rotation::Dense(r) => r.apply(v, scratch),
        }
    }

    /// `v ← Πᵀ v`, the inverse.
    #[inline]
    pub fn inverse(&self, v: &mut [f32], scratch: &mut [f32]) {
        match self {
            Rotation::Hadamard(r) => r.inverse(v, scratch),
            Rotation::Dense(r) => r.inverse(v, scratch),
        }
    }

    /// Rotates every row of a row-major `rows × dim` matrix in place.
    pub fn apply_batch(&self, rows: &mut [f32]) -> Result<()> {
        self.batch(rows, Self::apply)
    }

    /// Inverse-rotates every row of a row-major `rows × dim` matrix in place.
    pub fn inverse_batch(&self, rows: &mut [f32]) -> Result<()> {
        self.batch(rows, Self::inverse)
    }

    fn batch(&self, rows: &mut [f32], f: fn(&Self, &mut [f32], &mut [f32])) -> Result<()> {
        let dim = self.dim();
        check_rows(rows, dim, "rows")?;
        let mut scratch = vec![0.0f32; dim];
        for row in rows.chunks_exact_mut(dim) {
            f(self, row, &mut scratch);
        }
        Ok(())
    }
}

pub(crate) fn check_rotation_dim(dim: usize) -> Result<()> {
    if dim < 2 {
        return Err(Error::InvalidDimension {
            dim,
            reason: "a rotation needs at least 2 dimensions",
        });
    }
    if dim > u32::MAX as usize {
        return Err(Error::InvalidDimension {
            dim,
            reason: "dimensions above 2^32 - 1 are not supported",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
