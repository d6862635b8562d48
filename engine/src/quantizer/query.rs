//! The per-query object: rotated query and float lookup tables, built once, used for every code.
//!
//! For coordinate `j` and cell `k`, `T[j][k] = q'_j · c_k` with `q' = Π q`, so
//! `<q', ĉ> = Σ_j T[j][code_j]`. Estimators (all for the original, unrotated vectors):
//!
//! * `Mse`, renormalised (default): `<q, x> ≈ scale · <q', ĉ>` with `scale = ||x|| / <y, ĉ>`;
//! * `Mse`, plain: `<q, x> ≈ ||x|| · <q', ĉ>` (biased low by the factor `1 - D_mse` on average);
//! * `Prod`: `<q, x> ≈ ||x|| · (<q', ĉ> + γ·√(π/2)/d · <S q', sign(S r)>)`, unbiased.
//!
//! Cosine and squared L2 follow from the inner product and the norms.

use super::{CodeRef, Quantizer, Variant, layout, packing, qjl};
use crate::error::{Result, check_vector};
use crate::kernels::fastscan::NARROW_TOP;
use crate::kernels::squared_norm_f64;

/// Which inner-product estimator to use for `Mse` codes (ignored for `Prod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Estimator {
    /// Multiply by the per-vector length-renormalisation scalar (default).
    #[default]
    Renormalized,
    /// Multiply by the norm alone, as the paper's decoder does.
    Plain,
}

/// A prepared query (see the module docs).
#[derive(Debug, Clone)]
pub struct QueryLut {
    variant: Variant,
    dim: usize,
    bits: u8,
    levels: usize,
    norm: f32,
    rotated: Vec<f32>,
    /// The codebook, for the float table.
    codebook: Option<std::sync::Arc<super::Codebook>>,
    /// Built on first use: a 4-bit scan (`dot4`) and a staged search never read it, and at
    /// d = 768 it is 12,288 products a query.
    table: std::sync::OnceLock<Vec<f32>>,
    projected: Vec<f32>,
    qjl_coefficient: f32,
}

impl QueryLut {
    pub(super) fn new(quantizer: &Quantizer, query: &[f32]) -> Result<Self> {
        let d = quantizer.dim();
        check_vector(query, d)?;
        let mut rotated = query.to_vec();
        let mut scratch = vec![0.0; d];
        quantizer.rotation.apply(&mut rotated, &mut scratch);
        let codebook = quantizer.codebook.clone();
        let bits = codebook.as_ref().map_or(0, |cb| cb.bits());
        let (projected, qjl_coefficient) = match &quantizer.qjl {
            Some(s) => {
                let mut p = vec![0.0; d];
                s.project(&rotated, &mut p);
                (p, s.coefficient())
            }
            None => (Vec::new(), 0.0),
        };
        Ok(QueryLut {
            variant: quantizer.config.variant,
            dim: d,
            bits,
            levels: 1 << bits,
            norm: squared_norm_f64(query).sqrt() as f32,
            rotated,
            codebook,
            table: std::sync::OnceLock::new(),
            projected,
            qjl_coefficient,
        })
    }

    /// `||q||`.
    pub fn norm(&self) -> f32 {
        self.norm
    }

    /// The rotated query `Π q`.
    pub fn rotated(&self) -> &[f32] {
        &self.rotated
    }

    /// The float lookup table, `dim × 2^bits`, row `j` holding `q'_j · c_k`.
    pub fn table(&self) -> &[f32] {
        self.table.get_or_init(|| {
            let c = self
                .codebook
                .as_ref()
                .map_or(&[][..], |cb| cb.centroids_f32());
            let mut table = Vec::with_capacity(self.rotated.len() * c.len());
            for &qj in &self.rotated {
                table.extend(c.iter().map(|&ck| qj * ck));
            }
            table
        })
    }

    /// The u8 nibble tables for the blocked scan (`None` without scalar codes).
    ///
    /// 1-, 2- and 4-bit codes are scanned as they are. Other widths are scanned through their
    /// 4-bit *prefix* ([`layout::prefix_code`]): 3-bit codes one per nibble with exact tables
    /// (8 of 16 entries used); 5- to 8-bit codes by their top 4 bits, each scored with the mean
    /// of the 2^(b-4) centroids that share it, an approximation that stage 2 corrects by
    /// rescoring the candidates with the float table.
    pub fn nibble_lut(&self) -> Option<NibbleLut> {
        let (l, t) = (self.levels, self.table());
        match self.bits {
            1 | 2 | 4 => nibble_tables(self.dim, self.bits, u8::MAX, |coord, code| {
                t[coord * l + code]
            }),
            3 | 5..=8 => {
                let group = 1usize << self.bits.saturating_sub(4);
                nibble_tables(self.dim, 4, u8::MAX, |coord, p| {
                    let lo = p * group;
                    if lo >= l {
                        0.0
                    } else {
                        let row = &t[coord * l + lo..coord * l + lo + group];
                        row.iter().sum::<f32>() / group as f32
                    }
                })
            }
            _ => None,
        }
    }

    /// The u8 nibble tables of the QJL sign bits (prod codes): bit `i` scores `+(S q')_i` when
    /// set and `-(S q')_i` when clear, so a sketch's sum estimates `Σ_i (S q')_i · sign_i`.
    pub fn sketch_lut(&self) -> Option<NibbleLut> {
        if self.projected.is_empty() {
            return None;
        }
        let p = &self.projected;
        nibble_tables(
            self.dim,
            1,
            u8::MAX,
            |i, bit| {
                if bit == 1 { p[i] } else { -p[i] }
            },
        )
    }

    /// The u8 nibble tables of the 1-bit *sign plane* of the codes: coordinate `j` scores
    /// `q'_j · c` with `c` the 1-bit codebook's centroid of the coordinate's sign (the top bit
    /// of its code). `sign_codebook` is the 1-bit codebook of this dimension.
    ///
    /// Its entries stop at [`NARROW_TOP`] (6 bits), which lets the scan add four columns'
    /// lookups in bytes before widening them. The plane only picks a shortlist, which the full
    /// codes then rank: on docs-minilm-384 and on random unit vectors at d = 768 the recall of
    /// a staged search (shortlists 2 to 8) moved by at most 0.004 against 8-bit tables.
    pub fn sign_plane_lut(&self, sign_codebook: &super::Codebook) -> Option<NibbleLut> {
        let c = sign_codebook.centroids_f32();
        nibble_tables(self.dim, 1, NARROW_TOP, |coord, code| {
            self.rotated[coord] * c[code]
        })
    }

    /// `<q', ĉ> = Σ_j T[j][code_j]` for packed codes.
    pub fn code_dot(&self, codes: &[u8]) -> f32 {
        if self.bits == 0 {
            return 0.0;
        }
        let l = self.levels;
        let t = self.table();
        let mut lanes = [0.0f32; 4];
        match self.bits {
            8 => {
                for (j, &c) in codes.iter().enumerate() {
                    lanes[j % 4] += t[j * l + c as usize];
                }
            }
            4 => {
                // Two coordinates per byte; four sums in registers hide the add latency.
                let full = self.dim / 2;
                let (mut a0, mut a1, mut a2, mut a3) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
                let mut pairs = codes[..full].chunks_exact(2);
                let mut rows = t.chunks_exact(64);
                for (two, row) in (&mut pairs).zip(&mut rows) {
                    a0 += row[usize::from(two[0] & 15)];
                    a1 += row[16 + usize::from(two[0] >> 4)];
                    a2 += row[32 + usize::from(two[1] & 15)];
                    a3 += row[48 + usize::from(two[1] >> 4)];
                }
                if let [byte] = pairs.remainder() {
                    let at = (full - 1) * 32;
                    a0 += t[at + usize::from(byte & 15)];
                    a1 += t[at + 16 + usize::from(byte >> 4)];
                }
                if self.dim % 2 == 1 {
                    a2 += t[full * 32 + usize::from(codes[full] & 15)];
                }
                lanes = [a0, a1, a2, a3];
            }
            2 | 1 => {
                let per_byte = 8 / self.bits as usize;
                let mask = (l - 1) as u8;
                for (i, &byte) in codes.iter().enumerate() {
                    let first = i * per_byte;
                    let count = per_byte.min(self.dim - first.min(self.dim));
                    for k in 0..count {
                        let c = (byte >> (k * self.bits as usize)) & mask;
                        lanes[k % 4] += t[(first + k) * l + c as usize];
                    }
                }
            }
            _ => {
                let mut idx = [0u8; 64];
                let chunk_bytes = self.bits as usize * 8; // 64 codes
                for (n, bytes) in codes.chunks(chunk_bytes).enumerate() {
                    let first = n * 64;
                    let count = 64.min(self.dim - first);
                    packing::unpack(
                        &bytes[..packing::packed_len(count, self.bits)],
                        self.bits,
                        &mut idx[..count],
                    );
                    for (k, &c) in idx[..count].iter().enumerate() {
                        lanes[k % 4] += t[(first + k) * l + c as usize];
                    }
                }
            }
        }
        (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    }

    /// Estimated `<q, x>`.
    pub fn inner_product(&self, code: CodeRef<'_>, estimator: Estimator) -> f32 {
        let s = code.scalars;
        match self.variant {
            Variant::Mse => {
                let factor = match estimator {
                    Estimator::Renormalized => s.scale,
                    Estimator::Plain => s.norm,
                };
                factor * self.code_dot(code.codes)
            }
            Variant::Prod => {
                let sketch = qjl::signed_sum(&self.projected, code.sketch);
                s.norm
                    * (self.code_dot(code.codes) + s.residual_norm * self.qjl_coefficient * sketch)
            }
        }
    }

    /// Estimated cosine similarity (0 when the query is zero).
    pub fn cosine(&self, code: CodeRef<'_>, estimator: Estimator) -> f32 {
        let denom = self.norm * code.scalars.norm;
        if denom > 0.0 {
            self.inner_product(code, estimator) / denom
        } else {
            0.0
        }
    }

    /// Estimated squared Euclidean distance, `||q||² + ||x||² - 2<q, x>` (clamped at 0).
    pub fn squared_l2(&self, code: CodeRef<'_>, estimator: Estimator) -> f32 {
        let n = code.scalars.norm;
        (self.norm * self.norm + n * n - 2.0 * self.inner_product(code, estimator)).max(0.0)
    }
}

/// Builds u8 nibble tables for `bits`-bit codes from `entry(coordinate, code)`: each nibble's
/// float table is the sum of its coordinates' entries, then every table is offset to start at 0
/// and all share one step, sized by the widest table, so that the widest spans `0..=top`.
fn nibble_tables(
    dim: usize,
    bits: u8,
    top: u8,
    entry: impl Fn(usize, usize) -> f32,
) -> Option<NibbleLut> {
    if !layout::supports(bits) {
        return None;
    }
    let (m, padded) = layout::nibbles(dim, bits);
    let per_nibble = 4 / bits as usize;
    let levels = 1usize << bits;
    let mut float = vec![0.0f32; padded * 16];
    let mut mins = vec![0.0f32; padded];
    let mut bias = 0.0f64;
    let mut widest = 0.0f32;
    let mut next = [0.0f32; 16];
    for (nib, (table, lo)) in float
        .chunks_exact_mut(16)
        .zip(&mut mins)
        .enumerate()
        .take(m)
    {
        // Coordinate by coordinate: entry `v + k·size` extends entry `v` of the coordinates so
        // far by code `k` of the next one (so each sum is still taken in coordinate order).
        table[0] = 0.0;
        let mut size = 1;
        for t in 0..per_nibble {
            let coord = nib * per_nibble + t;
            for k in 0..levels {
                let e = if coord < dim { entry(coord, k) } else { 0.0 };
                for v in 0..size {
                    next[k * size + v] = table[v] + e;
                }
            }
            size *= levels;
            table[..size].copy_from_slice(&next[..size]);
        }
        let (l, h) = table
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
                (l.min(x), h.max(x))
            });
        widest = widest.max(h - l);
        bias += f64::from(l);
        *lo = l;
    }
    let top_f = f32::from(top);
    let delta = if widest > 0.0 { widest / top_f } else { 1.0 };
    let inv = 1.0 / delta;
    // Entries round to nearest by `+ 0.5` then truncation (the values are non-negative).
    let mut tables = vec![0u8; padded * 16];
    for ((out, t), &lo) in tables
        .chunks_exact_mut(16)
        .zip(float.chunks_exact(16))
        .zip(&mins)
    {
        for (o, &x) in out.iter_mut().zip(t) {
            *o = ((x - lo) * inv + 0.5).clamp(0.0, top_f) as u8;
        }
    }
    Some(NibbleLut {
        tables,
        delta,
        bias: bias as f32,
    })
}

/// Per-query u8 tables for the blocked scan: nibble column `m`'s 16 entries at `16·m`.
///
/// `<q', ĉ> ≈ delta · S + bias` where `S` is the integer sum of the entries a vector's nibbles
/// select. Each entry is within `delta / 2` of the float table (after its per-table offset), so
/// the estimate is within `M · delta / 2` of the float estimate; survivors are rescored exactly.
#[derive(Debug, Clone)]
pub struct NibbleLut {
    /// `M' × 16` entries.
    pub tables: Vec<u8>,
    /// The quantization step.
    pub delta: f32,
    /// The sum of the per-table offsets.
    pub bias: f32,
}

impl NibbleLut {
    /// The float estimate of `<q', ĉ>` for an integer sum.
    #[inline]
    pub fn estimate(&self, sum: u32) -> f32 {
        self.delta * sum as f32 + self.bias
    }
}
