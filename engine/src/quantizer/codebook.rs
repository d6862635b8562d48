//! Lloyd-Max codebooks for the coordinate law of a randomly rotated unit vector.
//!
//! After a random rotation, each coordinate of a unit vector in `d` dimensions has density
//! `f_d(t) ∝ (1 - t²)^((d-3)/2)` on [-1, 1] ([`CoordinateLaw`]). The optimal scalar quantizer for
//! that law (Lloyd-Max: centroids are conditional means of their cells, boundaries are midpoints)
//! depends only on `(d, b)`, so it is computed once, by quadrature, and memoised.
//!
//! Invariants: codebooks are exactly symmetric (`c[i] = -c[2^b-1-i]`), strictly increasing, and
//! computed with IEEE basic operations only (integer powers and `sqrt`), so every platform derives
//! bit-identical centroids and boundaries for the same `(d, b)`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};

/// Smallest dimension with a usable law: for d = 2 the coordinate law is the arcsine law, whose
/// density is unbounded at ±1; Gyre refuses it rather than quantizing it badly.
pub const MIN_DIM: usize = 3;

/// Grid intervals over the half-support used for the cumulative integrals.
const GRID: usize = 1 << 15;

/// Support is truncated at this many standard deviations (1/√d); the mass beyond is below 1e-80.
const TAIL_SIGMAS: f64 = 20.0;

/// The law of one coordinate of a uniformly random unit vector in `dim` dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinateLaw {
    dim: usize,
}

impl CoordinateLaw {
    /// The law for `dim ≥ 3`.
    pub fn new(dim: usize) -> Result<Self> {
        if dim < MIN_DIM {
            return Err(Error::InvalidDimension {
                dim,
                reason: "TurboQuant needs at least 3 dimensions (in 2 the coordinate law is the arcsine law, unbounded at ±1)",
            });
        }
        Ok(CoordinateLaw { dim })
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Unnormalised density `(1 - t²)^((d-3)/2)`, with IEEE basic operations only.
    pub fn unnormalized_density(&self, t: f64) -> f64 {
        let s = 1.0 - t * t;
        let twice_exponent = self.dim - 3;
        if s <= 0.0 {
            return if twice_exponent == 0 { 1.0 } else { 0.0 };
        }
        let mut value = int_pow(s, (twice_exponent / 2) as u32);
        if twice_exponent % 2 == 1 {
            value *= s.sqrt();
        }
        value
    }

    /// Where the tabulated support ends: mass beyond it is negligible.
    fn half_support(&self) -> f64 {
        (TAIL_SIGMAS / (self.dim as f64).sqrt()).min(1.0)
    }

    /// The cumulative distribution function, tabulated once by quadrature (tests, diagnostics).
    pub fn cdf(&self) -> Cdf {
        let table = CumulativeTable::new(*self);
        let half_mass = table.mass(table.end());
        Cdf { table, half_mass }
    }
}

/// A tabulated cumulative distribution function of a [`CoordinateLaw`].
pub struct Cdf {
    table: CumulativeTable,
    half_mass: f64,
}

impl std::fmt::Debug for Cdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cdf")
            .field("dim", &self.table.law.dim)
            .finish()
    }
}

impl Cdf {
    /// `P(Y ≤ t)`.
    pub fn at(&self, t: f64) -> f64 {
        let m = self.table.mass(t.abs().min(self.table.end())) / self.half_mass;
        if t >= 0.0 {
            0.5 + 0.5 * m
        } else {
            0.5 - 0.5 * m
        }
    }
}

fn int_pow(mut base: f64, mut exp: u32) -> f64 {
    let mut acc = 1.0;
    while exp > 0 {
        if exp & 1 == 1 {
            acc *= base;
        }
        base *= base;
        exp >>= 1;
    }
    acc
}

/// Cumulative integrals of `f`, `t·f` and `t²·f` over [0, x] on a fine grid, with exact
/// Simpson completion between grid points.
struct CumulativeTable {
    law: CoordinateLaw,
    step: f64,
    /// `[∫f, ∫t f, ∫t² f]` from 0 to grid point i.
    cumulative: Vec<[f64; 3]>,
}

impl CumulativeTable {
    fn new(law: CoordinateLaw) -> Self {
        let end = law.half_support();
        let step = end / GRID as f64;
        let mut cumulative = Vec::with_capacity(GRID + 1);
        let mut acc = [0.0f64; 3];
        cumulative.push(acc);
        for i in 0..GRID {
            let a = i as f64 * step;
            let b = (i + 1) as f64 * step;
            let piece = simpson(&law, a, b);
            for (s, p) in acc.iter_mut().zip(piece) {
                *s += p;
            }
            cumulative.push(acc);
        }
        CumulativeTable {
            law,
            step,
            cumulative,
        }
    }

    fn end(&self) -> f64 {
        self.step * GRID as f64
    }

    /// `[∫f, ∫t f, ∫t² f]` over [0, x], x in [0, end].
    fn moments(&self, x: f64) -> [f64; 3] {
        let x = x.clamp(0.0, self.end());
        let i = ((x / self.step) as usize).min(GRID);
        let base = i as f64 * self.step;
        let mut m = self.cumulative[i];
        if x > base {
            let piece = simpson(&self.law, base, x);
            for (s, p) in m.iter_mut().zip(piece) {
                *s += p;
            }
        }
        m
    }

    fn mass(&self, x: f64) -> f64 {
        self.moments(x)[0]
    }
}

fn simpson(law: &CoordinateLaw, a: f64, b: f64) -> [f64; 3] {
    let m = 0.5 * (a + b);
    let (fa, fm, fb) = (
        law.unnormalized_density(a),
        law.unnormalized_density(m),
        law.unnormalized_density(b),
    );
    let w = (b - a) / 6.0;
    [
        w * (fa + 4.0 * fm + fb),
        w * (a * fa + 4.0 * m * fm + b * fb),
        w * (a * a * fa + 4.0 * m * m * fm + b * b * fb),
    ]
}

/// A Lloyd-Max codebook for `(dim, bits)`.
#[derive(Debug, Clone)]
pub struct Codebook {
    dim: usize,
    bits: u8,
    centroids: Vec<f64>,
    boundaries: Vec<f64>,
    centroids_f32: Vec<f32>,
    boundaries_f32: Vec<f32>,
    /// `boundaries_f32` padded with +inf to 256 entries, for the branch-free searches.
    padded: Box<[f32; 256]>,
    mse: f64,
    iterations: usize,
}

impl Codebook {
    /// The memoised codebook for `(dim, bits)`; computed on first use (milliseconds).
    pub fn get(dim: usize, bits: u8) -> Result<Arc<Codebook>> {
        type Memo = Mutex<HashMap<(usize, u8), Arc<Codebook>>>;
        static CACHE: OnceLock<Memo> = OnceLock::new();
        if !(1..=8).contains(&bits) {
            return Err(Error::InvalidBits { bits });
        }
        let law = CoordinateLaw::new(dim)?;
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(cb) = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(dim, bits))
        {
            return Ok(Arc::clone(cb));
        }
        // Computed outside the lock so that other (d, b) pairs are not held up.
        let cb = Arc::new(Self::compute(law, bits));
        let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(guard.entry((dim, bits)).or_insert(cb)))
    }

    fn compute(law: CoordinateLaw, bits: u8) -> Codebook {
        let table = CumulativeTable::new(law);
        let end = table.end();
        let half = 1usize << (bits - 1);

        // Start from the high-resolution optimum (point density ∝ f^(1/3), Panter-Dite), whose
        // quantiles we read off a coarse cumulative of f^(1/3); Lloyd iterations then converge
        // in far fewer steps than from a uniform start.
        let mut centroids = panter_dite_start(&law, end, half);
        let mut bounds = vec![0.0f64; half + 1];
        bounds[half] = end;
        let tolerance = 1e-14 / (law.dim as f64).sqrt();
        let mut iterations = 0;
        let mut prev = table.moments(0.0);
        let mut cells = vec![[0.0f64; 3]; half];
        loop {
            iterations += 1;
            for i in 1..half {
                bounds[i] = 0.5 * (centroids[i - 1] + centroids[i]);
            }
            let mut moved = 0.0f64;
            for i in 0..half {
                let hi = table.moments(bounds[i + 1]);
                let cell = [hi[0] - prev[0], hi[1] - prev[1], hi[2] - prev[2]];
                prev = hi;
                cells[i] = cell;
                let c = if cell[0] > 0.0 {
                    cell[1] / cell[0]
                } else {
                    0.5 * (bounds[i] + bounds[i + 1])
                };
                moved = moved.max((c - centroids[i]).abs());
                centroids[i] = c;
            }
            prev = table.moments(0.0);
            if moved <= tolerance || iterations >= 200_000 {
                break;
            }
        }
        for i in 1..half {
            bounds[i] = 0.5 * (centroids[i - 1] + centroids[i]);
        }

        // D_mse = d · E[(y - Q(y))²] for one coordinate; the half-line carries half the mass.
        let total = table.mass(end);
        let mut err = 0.0;
        for i in 0..half {
            let lo = table.moments(bounds[i]);
            let hi = table.moments(bounds[i + 1]);
            let c = centroids[i];
            err += (hi[2] - lo[2]) - 2.0 * c * (hi[1] - lo[1]) + c * c * (hi[0] - lo[0]);
        }
        let mse = law.dim as f64 * err / total;

        let mut full_c = Vec::with_capacity(2 * half);
        full_c.extend(centroids.iter().rev().map(|c| -c));
        full_c.extend(centroids.iter().copied());
        let mut full_b = Vec::with_capacity(2 * half - 1);
        full_b.extend(bounds[1..half].iter().rev().map(|b| -b));
        full_b.push(0.0);
        full_b.extend(bounds[1..half].iter().copied());

        let mut padded = Box::new([f32::INFINITY; 256]);
        for (p, &b) in padded.iter_mut().zip(&full_b) {
            *p = b as f32;
        }
        Codebook {
            dim: law.dim,
            bits,
            padded,
            centroids_f32: full_c.iter().map(|&c| c as f32).collect(),
            boundaries_f32: full_b.iter().map(|&b| b as f32).collect(),
            centroids: full_c,
            boundaries: full_b,
            mse,
            iterations,
        }
    }

    /// The dimension this codebook is for.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bits per coordinate.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The `2^b` centroids, increasing, in the coordinate's own units (not scaled by √d).
    pub fn centroids(&self) -> &[f64] {
        &self.centroids
    }

    /// The `2^b - 1` cell boundaries (midpoints of adjacent centroids), increasing.
    pub fn boundaries(&self) -> &[f64] {
        &self.boundaries
    }

    /// The centroids rounded to f32, as the encoder and the lookup tables use them.
    pub fn centroids_f32(&self) -> &[f32] {
        &self.centroids_f32
    }

    /// The boundaries rounded to f32, as the encoder uses them.
    pub fn boundaries_f32(&self) -> &[f32] {
        &self.boundaries_f32
    }

    /// The expected squared error per unit vector, `D_mse = E||u - û||²`, under the exact law.
    pub fn expected_mse(&self) -> f64 {
        self.mse
    }

    /// Lloyd iterations the computation took (a diagnostic).
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// The index of the cell holding `y`: the number of boundaries strictly below it.
    #[inline]
    pub fn quantize(&self, y: f32) -> u8 {
        let mut out = [0u8];
        self.quantize_all(&[y], &mut out);
        out[0]
    }

    /// Quantizes every element of `ys` into `out` (same length). Branch-free: a linear count of
    /// boundaries below `y` for b ≤ 4 (vectorises across coordinates), a branch-free binary search
    /// over boundaries padded to 256 entries above that.
    pub fn quantize_all(&self, ys: &[f32], out: &mut [u8]) {
        assert_eq!(ys.len(), out.len());
        match self.bits {
            1 => count_below::<1>(&self.padded, ys, out),
            2 => count_below::<3>(&self.padded, ys, out),
            3 => count_below::<7>(&self.padded, ys, out),
            4 => count_below::<15>(&self.padded, ys, out),
            bits => {
                let b = &self.padded;
                for (o, &y) in out.iter_mut().zip(ys) {
                    let mut idx = 0usize;
                    let mut step = 1usize << (bits - 1);
                    while step > 0 {
                        idx += step * usize::from(y > b[(idx + step - 1) & 0xff]);
                        step >>= 1;
                    }
                    *o = idx as u8;
                }
            }
        }
    }
}

#[inline]
fn count_below<const N: usize>(padded: &[f32; 256], ys: &[f32], out: &mut [u8]) {
    let bounds: [f32; N] = std::array::from_fn(|k| padded[k]);
    for (o, &y) in out.iter_mut().zip(ys) {
        let mut c = 0u8;
        for &b in &bounds {
            c += u8::from(y > b);
        }
        *o = c;
    }
}

fn panter_dite_start(law: &CoordinateLaw, end: f64, half: usize) -> Vec<f64> {
    const STEPS: usize = 4096;
    let step = end / STEPS as f64;
    let cube_root_density = |t: f64| cbrt(law.unnormalized_density(t));
    let mut cum = Vec::with_capacity(STEPS + 1);
    let mut acc = 0.0;
    cum.push(0.0);
    let mut prev = cube_root_density(0.0);
    for i in 1..=STEPS {
        let f = cube_root_density(i as f64 * step);
        acc += 0.5 * (prev + f) * step;
        prev = f;
        cum.push(acc);
    }
    let mut out = Vec::with_capacity(half);
    let mut j = 0;
    for i in 0..half {
        let target = acc * (i as f64 + 0.5) / half as f64;
        while j + 1 < STEPS && cum[j + 1] < target {
            j += 1;
        }
        let span = cum[j + 1] - cum[j];
        let frac = if span > 0.0 {
            (target - cum[j]) / span
        } else {
            0.5
        };
        out.push((j as f64 + frac) * step);
    }
    out
}

/// Cube root by Newton's method from a bit-level estimate: basic operations only.
fn cbrt(x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let mut y = f64::from_bits(x.to_bits() / 3 + 0x2a9f_7893_782d_a1ce);
    for _ in 0..6 {
        y = (2.0 * y + x / (y * y)) / 3.0;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gaussian-limit positive centroids × √d and D_mse, from TURBOQUANT.md.
    const GAUSSIAN_TABLE: [(&[f64], f64); 4] = [
        (&[0.7979], 0.3634),
        (&[0.4528, 1.5104], 0.1175),
        (&[0.2451, 0.7560, 1.3439, 2.1519], 0.03455),
        (
            &[
                0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326,
            ],
            0.00950,
        ),
    ];

    #[test]
    fn large_dimension_matches_gaussian_limit() {
        let d = 4096;
        for (b, (positive, mse)) in GAUSSIAN_TABLE.iter().enumerate() {
            let cb = Codebook::get(d, b as u8 + 1).unwrap();
            let half = positive.len();
            for (i, want) in positive.iter().enumerate() {
                let got = cb.centroids()[half + i] * (d as f64).sqrt();
                assert!(
                    (got - want).abs() / want < 0.005,
                    "b={} centroid {i}: {got} vs {want}",
                    b + 1
                );
            }
            let rel = (cb.expected_mse() - mse).abs() / mse;
            assert!(
                rel < 0.005,
                "b={} mse {} vs {mse}",
                b + 1,
                cb.expected_mse()
            );
        }
    }

    #[test]
    fn small_dimensions_have_known_codebooks() {
        // d = 3: the law is uniform on [-1, 1], so Lloyd-Max is the uniform quantizer.
        for b in 1..=8u8 {
            let cb = Codebook::get(3, b).unwrap();
            let n = 1usize << b;
            for (i, c) in cb.centroids().iter().enumerate() {
                let want = -1.0 + (2 * i + 1) as f64 / n as f64;
                assert!((c - want).abs() < 1e-9, "b={b} i={i}: {c} vs {want}");
            }
            // Uniform quantizer error: step²/12 per coordinate, times d = 3.
            let step = 2.0 / n as f64;
            assert!((cb.expected_mse() - 3.0 * step * step / 12.0).abs() < 1e-9);
        }
    }

    #[test]
    fn codebooks_are_lloyd_max_fixed_points() {
        for &d in &[3usize, 4, 5, 8, 17, 64, 384, 1536] {
            let law = CoordinateLaw::new(d).unwrap();
            for b in 1..=8u8 {
                let cb = Codebook::get(d, b).unwrap();
                check_fixed_point(&law, &cb);
            }
        }
    }

    /// Independent check by direct Simpson integration of each cell (not the cumulative table).
    fn check_fixed_point(law: &CoordinateLaw, cb: &Codebook) {
        let c = cb.centroids();
        let bnd = cb.boundaries();
        let n = c.len();
        assert_eq!(bnd.len(), n - 1);
        assert!(c.windows(2).all(|w| w[0] < w[1]), "sorted");
        for i in 0..n {
            assert_eq!(c[i], -c[n - 1 - i], "symmetric");
            if i + 1 < n {
                assert!((bnd[i] - 0.5 * (c[i] + c[i + 1])).abs() < 1e-15, "midpoint");
            }
        }
        let end = law.half_support();
        let scale = (law.dim as f64).sqrt();
        for i in n / 2..n {
            let lo = if i == n / 2 { 0.0 } else { bnd[i - 1] };
            let hi = if i + 1 == n { end } else { bnd[i] };
            let steps = 20_000;
            let h = (hi - lo) / steps as f64;
            let (mut m0, mut m1) = (0.0, 0.0);
            for s in 0..steps {
                let p = simpson(law, lo + s as f64 * h, lo + (s + 1) as f64 * h);
                m0 += p[0];
                m1 += p[1];
            }
            let mean = m1 / m0;
            assert!(
                ((mean - c[i]) * scale).abs() < 1e-7,
                "d={} b={} cell {i}: conditional mean {mean} vs centroid {}",
                law.dim,
                cb.bits,
                c[i]
            );
        }
    }

    #[test]
    fn mse_decreases_with_bits_and_respects_bounds() {
        for &d in &[16usize, 128, 768] {
            let mut prev = f64::INFINITY;
            for b in 1..=8u8 {
                let mse = Codebook::get(d, b).unwrap().expected_mse();
                assert!(mse < prev);
                // Upper bound of the paper (√3·π/2)·4^-b, lower bound 4^-b / e-ish: stay between.
                assert!(mse <= 2.73 * 4f64.powi(-(b as i32)), "d={d} b={b}: {mse}");
                prev = mse;
            }
        }
    }

    #[test]
    fn quantize_returns_cell_index() {
        let cb = Codebook::get(64, 3).unwrap();
        let b = cb.boundaries_f32();
        assert_eq!(cb.quantize(-1.0), 0);
        assert_eq!(cb.quantize(1.0), 7);
        for (i, &x) in b.iter().enumerate() {
            assert_eq!(
                cb.quantize(x),
                i as u8,
                "a boundary belongs to the lower cell"
            );
            assert_eq!(cb.quantize(x.next_up()), i as u8 + 1);
        }
    }

    #[test]
    fn quantize_all_counts_boundaries_below_for_every_width() {
        let mut rng = crate::random::SeededRng::for_data(4);
        for b in 1..=8u8 {
            let cb = Codebook::get(100, b).unwrap();
            let bounds = cb.boundaries_f32();
            let mut ys: Vec<f32> = (0..2000).map(|_| (rng.gaussian() * 0.15) as f32).collect();
            // Every boundary, its neighbours, and the extremes.
            for &x in bounds {
                ys.extend([x, x.next_up(), x.next_down()]);
            }
            ys.extend([-1.0, 1.0, 0.0, -0.0, f32::MAX, f32::MIN, 1e-30, -1e-30]);
            let mut got = vec![0u8; ys.len()];
            cb.quantize_all(&ys, &mut got);
            for (&y, &g) in ys.iter().zip(&got) {
                let want = bounds.iter().filter(|&&x| y > x).count();
                assert_eq!(usize::from(g), want, "b={b} y={y}");
            }
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(matches!(
            Codebook::get(64, 0),
            Err(Error::InvalidBits { bits: 0 })
        ));
        assert!(matches!(
            Codebook::get(64, 9),
            Err(Error::InvalidBits { bits: 9 })
        ));
        assert!(matches!(
            Codebook::get(2, 4),
            Err(Error::InvalidDimension { dim: 2, .. })
        ));
        assert!(matches!(
            Codebook::get(0, 4),
            Err(Error::InvalidDimension { dim: 0, .. })
        ));
    }

    #[test]
    fn cbrt_is_accurate() {
        for &x in &[1e-300, 1e-10, 0.001, 0.5, 1.0, 8.0, 1e10] {
            assert!((cbrt(x) - f64::cbrt(x)).abs() <= 1e-14 * f64::cbrt(x));
        }
    }

    #[test]
    fn cdf_is_a_distribution() {
        let cdf = CoordinateLaw::new(3).unwrap().cdf();
        assert!((cdf.at(0.5) - 0.75).abs() < 1e-12);
        let cdf = CoordinateLaw::new(384).unwrap().cdf();
        assert!((cdf.at(0.0) - 0.5).abs() < 1e-15);
        assert!((cdf.at(1.0) - 1.0).abs() < 1e-12);
        assert!(cdf.at(-1.0).abs() < 1e-12);
        // ≈ Φ(1) at one standard deviation.
        assert!((cdf.at(1.0 / 384f64.sqrt()) - 0.8413).abs() < 2e-3);
    }
}
