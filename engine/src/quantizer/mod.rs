//! TurboQuant: data-oblivious vector quantization.
//!
//! A vector `x` is stored as its norm `n`, the codes of its rotated direction `y = Π x / n`
//! (one Lloyd-Max cell index per coordinate, [`Codebook`]), a length-renormalisation scalar, and
//! for [`Variant::Prod`] a 1-bit QJL sketch of the residual ([`QjlSketch`]). Nothing is trained:
//! the quantizer is fixed by its [`QuantizerConfig`], so every vector is encodable on arrival.
//!
//! This module is pure computation: no I/O, no threads (callers parallelise over vectors).
//! Encoding is separate from storage layout: codes come out bit-packed per vector
//! ([`packing`]); the blocked scan layout is built from them elsewhere.

mod codebook;
pub mod layout;
pub mod packing;
mod qjl;
mod query;
mod rotation;

pub use codebook::{Cdf, Codebook, CoordinateLaw, MIN_DIM};
pub use qjl::QjlSketch;
pub use query::{Estimator, NibbleLut, QueryLut};
pub use rotation::{DenseRotation, HadamardRotation, Rotation, RotationKind, default_rounds};

use std::sync::Arc;

use crate::error::{Error, Result, check_norm, check_rows, check_vector};
use crate::kernels::squared_norm_f64;

/// Largest dimension for the O(d²) options (dense rotation, QJL sketch): their matrices take
/// `4·d²` bytes.
pub const MAX_DENSE_DIM: usize = 8192;

/// Largest supported dimension.
pub const MAX_DIM: usize = 1 << 16;

/// Which TurboQuant estimator the codes are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Variant {
    /// All `b` bits to the MSE-optimal scalar quantizer (default: ranks best).
    #[default]
    Mse,
    /// `b - 1` bits MSE + a 1-bit QJL sketch of the residual: unbiased inner products.
    Prod,
}

impl Variant {
    /// The name used on command lines and in files.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Mse => "mse",
            Variant::Prod => "prod",
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mse" => Ok(Variant::Mse),
            "prod" => Ok(Variant::Prod),
            other => Err(Error::invalid_argument(
                "variant",
                format!("unknown variant {other:?}: use \"mse\" or \"prod\""),
            )),
        }
    }
}

/// Everything that fixes a quantizer. Two quantizers with equal configs produce identical codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuantizerConfig {
    /// Vector dimension (3..=65536; at most 8192 with the dense rotation or `Prod`).
    pub dim: usize,
    /// Total bits per coordinate, 1..=8 (for `Prod`, one of them is the sketch bit).
    pub bits: u8,
    /// Estimator family.
    pub variant: Variant,
    /// Rotation kind.
    pub rotation: RotationKind,
    /// Seed of the rotation and the sketch.
    pub seed: u64,
}

impl QuantizerConfig {
    /// A config with the defaults: MSE variant, Hadamard rotation, seed 0.
    pub fn new(dim: usize, bits: u8) -> Self {
        QuantizerConfig {
            dim,
            bits,
            variant: Variant::Mse,
            rotation: RotationKind::Hadamard,
            seed: 0,
        }
    }

    /// Bits per coordinate given to the scalar quantizer.
    pub fn mse_bits(&self) -> u8 {
        match self.variant {
            Variant::Mse => self.bits,
            Variant::Prod => self.bits - 1,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(1..=8).contains(&self.bits) {
            return Err(Error::InvalidBits { bits: self.bits });
        }
        if self.dim < MIN_DIM {
            return Err(Error::InvalidDimension {
                dim: self.dim,
                reason: "TurboQuant needs at least 3 dimensions",
            });
        }
        if self.dim > MAX_DIM {
            return Err(Error::InvalidDimension {
                dim: self.dim,
                reason: "dimensions above 65536 are not supported",
            });
        }
        let dense = self.rotation == RotationKind::Dense || self.variant == Variant::Prod;
        if dense && self.dim > MAX_DENSE_DIM {
            return Err(Error::InvalidDimension {
                dim: self.dim,
                reason: "the dense rotation and the prod variant store d×d matrices and stop at d = 8192; use the hadamard rotation with the mse variant",
            });
        }
        Ok(())
    }
}

/// Per-vector scalars stored beside the codes (12 bytes, `repr(C)`: segments map them directly).
#[derive(Debug, Clone, Copy, PartialEq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct VectorScalars {
    /// `||x||`.
    pub norm: f32,
    /// Length renormalisation, `||x|| / <y, ĉ>`: multiplying `<q', ĉ>` by it instead of by the
    /// norm removes the shrinkage bias of the reconstruction (`||ĉ|| < 1`). Equal to `norm` for
    /// `Prod`, whose estimator is unbiased without it.
    pub scale: f32,
    /// `||y - ĉ||`, the residual norm the QJL sketch is scaled by (`Prod` only, else 0).
    pub residual_norm: f32,
}

/// One encoded vector, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct CodeRef<'a> {
    /// Bit-packed scalar-quantizer codes ([`packing`] layout).
    pub codes: &'a [u8],
    /// QJL sign bits (empty for `Mse`).
    pub sketch: &'a [u8],
    /// The vector's scalars.
    pub scalars: VectorScalars,
}

/// A TurboQuant quantizer: rotation, codebook and optional sketch, fixed by a config.
#[derive(Debug, Clone)]
pub struct Quantizer {
    config: QuantizerConfig,
    rotation: Arc<Rotation>,
    codebook: Option<Arc<Codebook>>,
    qjl: Option<Arc<QjlSketch>>,
}

impl Quantizer {
    /// Builds the quantizer (codebook from the memo, rotation and sketch from the seed).
    pub fn new(config: QuantizerConfig) -> Result<Self> {
        config.validate()?;
        let rotation = Arc::new(Rotation::new(config.rotation, config.dim, config.seed)?);
        let mse_bits = config.mse_bits();
        let codebook = if mse_bits > 0 {
            Some(Codebook::get(config.dim, mse_bits)?)
        } else {
            None
        };
        let qjl = match config.variant {
            Variant::Mse => None,
            Variant::Prod => Some(Arc::new(QjlSketch::new(config.dim, config.seed))),
        };
        Ok(Quantizer {
            config,
            rotation,
            codebook,
            qjl,
        })
    }

    /// The config.
    pub fn config(&self) -> &QuantizerConfig {
        &self.config
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.config.dim
    }

    /// The rotation.
    pub fn rotation(&self) -> &Rotation {
        &self.rotation
    }

    /// The scalar codebook (`None` for `Prod` at 1 bit, which is all sketch).
    pub fn codebook(&self) -> Option<&Codebook> {
        self.codebook.as_deref()
    }

    /// The law the rotated coordinates follow, which the codebook is built for.
    pub fn coordinate_law(&self) -> CoordinateLaw {
        CoordinateLaw::new(self.config.dim).expect("dimension validated at construction")
    }

    /// Bytes of packed codes per vector.
    pub fn code_bytes(&self) -> usize {
        packing::packed_len(self.config.dim, self.config.mse_bits())
    }

    /// The QJL estimator's constant `√(π/2)/d` (`None` for `Mse`).
    pub fn qjl_coefficient(&self) -> Option<f32> {
        self.qjl.as_ref().map(|q| q.coefficient())
    }

    /// Bytes of one QJL sketch (0 for `Mse`).
    pub fn sketch_bytes(&self) -> usize {
        self.qjl.as_ref().map_or(0, |q| q.bytes())
    }

    /// A reusable encoder holding the per-vector scratch buffers.
    pub fn encoder(&self) -> Encoder<'_> {
        let d = self.config.dim;
        Encoder {
            quantizer: self,
            rotated: vec![0.0; d],
            scratch: vec![0.0; d],
            indices: vec![0; d],
        }
    }

    /// Encodes every row of a row-major `n × dim` matrix (sequentially; callers parallelise
    /// over chunks and [`EncodedBatch::append`] the results).
    pub fn encode_batch(&self, rows: &[f32]) -> Result<EncodedBatch> {
        let d = self.config.dim;
        check_rows(rows, d, "rows")?;
        let mut batch = EncodedBatch::new(self);
        batch.reserve(rows.len() / d);
        let mut encoder = self.encoder();
        for row in rows.chunks_exact(d) {
            batch.push(&mut encoder, row)?;
        }
        Ok(batch)
    }

    /// Reconstructs `x̂` into `out` (`dim` floats): `n · Πᵀ ĉ` for `Mse`, plus the sketch's
    /// reconstruction `γ·√(π/2)/d · Sᵀ sign` for `Prod`.
    pub fn decode(&self, code: CodeRef<'_>, out: &mut [f32]) -> Result<()> {
        let d = self.config.dim;
        if out.len() != d {
            return Err(Error::DimensionMismatch {
                expected: d,
                actual: out.len(),
            });
        }
        self.check_code(code)?;
        match &self.codebook {
            Some(cb) => {
                let mut idx = vec![0u8; d];
                packing::unpack(code.codes, cb.bits(), &mut idx);
                let c = cb.centroids_f32();
                for (o, &i) in out.iter_mut().zip(&idx) {
                    *o = c[i as usize];
                }
            }
            None => out.fill(0.0),
        }
        if let Some(qjl) = &self.qjl {
            let coeff = code.scalars.residual_norm * qjl.coefficient();
            qjl.add_reconstruction(code.sketch, coeff, out);
        }
        let mut scratch = vec![0.0; d];
        self.rotation.inverse(out, &mut scratch);
        for o in out.iter_mut() {
            *o *= code.scalars.norm;
        }
        Ok(())
    }

    fn check_code(&self, code: CodeRef<'_>) -> Result<()> {
        if code.codes.len() != self.code_bytes() || code.sketch.len() != self.sketch_bytes() {
            return Err(Error::invalid_argument(
                "code",
                format!(
                    "expected {} code bytes and {} sketch bytes, got {} and {}",
                    self.code_bytes(),
                    self.sketch_bytes(),
                    code.codes.len(),
                    code.sketch.len()
                ),
            ));
        }
        Ok(())
    }

    /// Prepares a query for scoring many codes: rotation and lookup tables, built once.
    pub fn prepare_query(&self, query: &[f32]) -> Result<QueryLut> {
        QueryLut::new(self, query)
    }
}

/// Scratch space for encoding one vector at a time without allocating.
#[derive(Debug)]
pub struct Encoder<'q> {
    quantizer: &'q Quantizer,
    rotated: Vec<f32>,
    scratch: Vec<f32>,
    indices: Vec<u8>,
}

impl Encoder<'_> {
    /// Encodes `x` into `codes` (`code_bytes`) and `sketch` (`sketch_bytes`) and returns its
    /// scalars. Refuses wrong lengths, NaN or infinite components and zero vectors.
    pub fn encode_into(
        &mut self,
        x: &[f32],
        codes: &mut [u8],
        sketch: &mut [u8],
    ) -> Result<VectorScalars> {
        let q = self.quantizer;
        let d = q.config.dim;
        check_vector(x, d)?;
        if codes.len() != q.code_bytes() || sketch.len() != q.sketch_bytes() {
            return Err(Error::invalid_argument(
                "codes",
                "output buffers must hold code_bytes() and sketch_bytes() bytes",
            ));
        }
        let norm = check_norm(x, false)?;
        let norm_f32 = norm as f32;
        let inv = 1.0 / norm;
        for (r, &v) in self.rotated.iter_mut().zip(x) {
            *r = (f64::from(v) * inv) as f32;
        }
        q.rotation.apply(&mut self.rotated, &mut self.scratch);
        let y = &mut self.rotated;

        // Scalar quantization; `y` becomes the residual y - ĉ as we go.
        let mut y_dot_c = [0.0f32; 4];
        match &q.codebook {
            Some(cb) => {
                cb.quantize_all(y, &mut self.indices);
                let c = cb.centroids_f32();
                for (i, (&idx, yj)) in self.indices.iter().zip(y.iter_mut()).enumerate() {
                    let cj = c[usize::from(idx)];
                    y_dot_c[i % 4] += *yj * cj;
                    *yj -= cj;
                }
                packing::pack(&self.indices, cb.bits(), codes);
            }
            None => self.indices.fill(0),
        }
        let y_dot_c = (y_dot_c[0] + y_dot_c[1]) + (y_dot_c[2] + y_dot_c[3]);

        match &q.qjl {
            None => Ok(VectorScalars {
                norm: norm_f32,
                // <y, ĉ> > 0 for any nonzero y: each term y_j·c(y_j) is ≥ 0 because 0 is a cell
                // boundary, and the largest |y_j| ≥ 1/√d lands in a cell with nonzero centroid.
                scale: if y_dot_c > 0.0 {
                    (norm / f64::from(y_dot_c)) as f32
                } else {
                    norm_f32
                },
                residual_norm: 0.0,
            }),
            Some(qjl) => {
                let residual_norm = squared_norm_f64(y).sqrt() as f32;
                qjl.sketch(y, sketch);
                Ok(VectorScalars {
                    norm: norm_f32,
                    scale: norm_f32,
                    residual_norm,
                })
            }
        }
    }
}

/// Many encoded vectors, stored column-wise (codes, sketches, scalars).
#[derive(Debug, Clone, Default)]
pub struct EncodedBatch {
    code_bytes: usize,
    sketch_bytes: usize,
    codes: Vec<u8>,
    sketches: Vec<u8>,
    scalars: Vec<VectorScalars>,
}

impl EncodedBatch {
    /// An empty batch shaped for `quantizer`.
    pub fn new(quantizer: &Quantizer) -> Self {
        EncodedBatch {
            code_bytes: quantizer.code_bytes(),
            sketch_bytes: quantizer.sketch_bytes(),
            ..Default::default()
        }
    }

    /// Reserves room for `n` more vectors.
    pub fn reserve(&mut self, n: usize) {
        self.codes.reserve(n * self.code_bytes);
        self.sketches.reserve(n * self.sketch_bytes);
        self.scalars.reserve(n);
    }

    /// Encodes and appends one vector. On error nothing is appended.
    pub fn push(&mut self, encoder: &mut Encoder<'_>, x: &[f32]) -> Result<()> {
        let (c0, s0) = (self.codes.len(), self.sketches.len());
        self.codes.resize(c0 + self.code_bytes, 0);
        self.sketches.resize(s0 + self.sketch_bytes, 0);
        match encoder.encode_into(x, &mut self.codes[c0..], &mut self.sketches[s0..]) {
            Ok(scalars) => {
                self.scalars.push(scalars);
                Ok(())
            }
            Err(e) => {
                self.codes.truncate(c0);
                self.sketches.truncate(s0);
                Err(e)
            }
        }
    }

    /// Appends one encoded vector of the same shape.
    pub fn push_code(&mut self, code: CodeRef<'_>) {
        self.codes.extend_from_slice(code.codes);
        self.sketches.extend_from_slice(code.sketch);
        self.scalars.push(code.scalars);
    }

    /// Appends another batch of the same shape.
    pub fn append(&mut self, other: &EncodedBatch) {
        assert_eq!(
            (self.code_bytes, self.sketch_bytes),
            (other.code_bytes, other.sketch_bytes),
            "batches from different quantizers"
        );
        self.codes.extend_from_slice(&other.codes);
        self.sketches.extend_from_slice(&other.sketches);
        self.scalars.extend_from_slice(&other.scalars);
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.scalars.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.scalars.is_empty()
    }

    /// The `i`-th vector.
    pub fn get(&self, i: usize) -> CodeRef<'_> {
        CodeRef {
            codes: &self.codes[i * self.code_bytes..(i + 1) * self.code_bytes],
            sketch: &self.sketches[i * self.sketch_bytes..(i + 1) * self.sketch_bytes],
            scalars: self.scalars[i],
        }
    }

    /// All packed codes, `len × code_bytes`.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// All sketches, `len × sketch_bytes`.
    pub fn sketches(&self) -> &[u8] {
        &self.sketches
    }

    /// All scalars.
    pub fn scalars(&self) -> &[VectorScalars] {
        &self.scalars
    }
}

#[cfg(test)]
mod tests;
