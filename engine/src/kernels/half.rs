//! IEEE binary16 (half) points and the squared Euclidean distance over them: the graph
//! build's working copy of the vectors, half the bytes of f32, so a build that waits on
//! memory (every candidate row a cache miss) moves half as many lines.
//!
//! Invariants: [`f32_to_f16`] rounds to nearest, ties to even (as `vcvtps2ph` with
//! round-to-nearest does); widening is exact; [`squared_l2_f16`] widens and then sums in the
//! lane order of [`super::squared_l2_wide`], so it returns the same bits on every ISA.

/// `x` rounded to the nearest binary16, ties to even; beyond ±65504 (after rounding) ±inf;
/// NaN stays NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let a = bits & 0x7fff_ffff;
    if a > 0x7f80_0000 {
        return sign | 0x7e00;
    }
    // 65520 (0x477ff000) and above round to infinity.
    if a >= 0x477f_f000 {
        return sign | 0x7c00;
    }
    if a < 0x3880_0000 {
        // Below 2^-14: a subnormal (or zero). Scaling by 2^24 is exact, so one rounding.
        let m = (f32::from_bits(a) * 16_777_216.0).round_ties_even() as u16;
        // m == 1024 is the smallest normal's encoding, which is right.
        return sign | m;
    }
    // Rebias the exponent (127 → 15) and round the 13 dropped mantissa bits to even; a
    // carry runs into the exponent, as it should.
    let r = a - (112 << 23);
    let h = (r + 0x0fff + ((r >> 13) & 1)) >> 13;
    sign | h as u16
}

/// The exact f32 value of binary16 `h`.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x03ff);
    let mag = match exp {
        0 => (man as f32 * (1.0 / 16_777_216.0)).to_bits(),
        31 => 0x7f80_0000 | (man << 13),
        e => ((e + 112) << 23) | (man << 13),
    };
    f32::from_bits(sign | mag)
}

/// `x` into binary16, element by element (`out.len() == x.len()`).
pub fn to_f16_slice(x: &[f32], out: &mut [u16]) {
    debug_assert_eq!(x.len(), out.len());
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f32_to_f16(v);
    }
}

/// The lane structure of [`super::squared_l2_wide`] over widened halves: 32 lanes over chunks
/// of 32, then lanes 0..8 by chunks of 8, then one by one; the same reduction tree.
#[inline(always)]
fn l2_f16_lanes32(a: &[u16], b: &[u16]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; 32];
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..32 {
            let d = f16_to_f32(x[i]) - f16_to_f32(y[i]);
            lanes[i] += d * d;
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut c8a = ra.chunks_exact(8);
    let mut c8b = rb.chunks_exact(8);
    for (x, y) in (&mut c8a).zip(&mut c8b) {
        for i in 0..8 {
            let d = f16_to_f32(x[i]) - f16_to_f32(y[i]);
            lanes[i] += d * d;
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in c8a.remainder().iter().zip(c8b.remainder()) {
        let d = f16_to_f32(*x) - f16_to_f32(*y);
        tail += d * d;
    }
    let mut l16 = [0.0f32; 16];
    for i in 0..16 {
        l16[i] = lanes[i] + lanes[i + 16];
    }
    let mut l8 = [0.0f32; 8];
    for i in 0..8 {
        l8[i] = l16[i] + l16[i + 8];
    }
    super::reduce8(l8) + tail
}

/// The scalar reference (and the fallback where no wider ISA is present).
fn l2_f16_portable(a: &[u16], b: &[u16]) -> f32 {
    l2_f16_lanes32(a, b)
}

/// [`l2_f16_lanes32`] with F16C widening in four AVX2 registers; no FMA, same order, same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
fn l2_f16_avx2(a: &[u16], b: &[u16]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let wide = |h: &[u16]| {
        let h = &h[..8];
        // SAFETY: `h` holds 8 halves (16 bytes); the load is unaligned.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast::<__m128i>())) }
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for (j, acc) in acc.iter_mut().enumerate() {
            let d = _mm256_sub_ps(wide(&x[8 * j..]), wide(&y[8 * j..]));
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(d, d));
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut c8a = ra.chunks_exact(8);
    let mut c8b = rb.chunks_exact(8);
    for (x, y) in (&mut c8a).zip(&mut c8b) {
        let d = _mm256_sub_ps(wide(x), wide(y));
        acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(d, d));
    }
    let mut tail = 0.0f32;
    for (x, y) in c8a.remainder().iter().zip(c8b.remainder()) {
        let d = f16_to_f32(*x) - f16_to_f32(*y);
        tail += d * d;
    }
    let l8 = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), l8) };
    super::reduce8(out) + tail
}

/// [`l2_f16_lanes32`] in two AVX-512 registers (lanes 0..16 and 16..32), the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn l2_f16_avx512(a: &[u16], b: &[u16]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let wide16 = |h: &[u16]| {
        let h = &h[..16];
        // SAFETY: `h` holds 16 halves (32 bytes); the load is unaligned.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(h.as_ptr().cast::<__m256i>())) }
    };
    let wide8 = |h: &[u16]| {
        let h = &h[..8];
        // SAFETY: `h` holds 8 halves (16 bytes); the load is unaligned.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast::<__m128i>())) }
    };
    let (mut z0, mut z1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let d0 = _mm512_sub_ps(wide16(x), wide16(y));
        let d1 = _mm512_sub_ps(wide16(&x[16..]), wide16(&y[16..]));
        z0 = _mm512_add_ps(z0, _mm512_mul_ps(d0, d0));
        z1 = _mm512_add_ps(z1, _mm512_mul_ps(d1, d1));
    }
    let hi = |z: __m512| _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(z)));
    let (mut a0, a1) = (_mm512_castps512_ps256(z0), hi(z0));
    let (a2, a3) = (_mm512_castps512_ps256(z1), hi(z1));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut c8a = ra.chunks_exact(8);
    let mut c8b = rb.chunks_exact(8);
    for (x, y) in (&mut c8a).zip(&mut c8b) {
        let d = _mm256_sub_ps(wide8(x), wide8(y));
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(d, d));
    }
    let mut tail = 0.0f32;
    for (x, y) in c8a.remainder().iter().zip(c8b.remainder()) {
        let d = f16_to_f32(*x) - f16_to_f32(*y);
        tail += d * d;
    }
    let l8 = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), l8) };
    super::reduce8(out) + tail
}

#[cfg(target_arch = "x86_64")]
fn l2_f16_avx2_entry(a: &[u16], b: &[u16]) -> f32 {
    // SAFETY: selected only after `is_x86_feature_detected!` for avx2 and f16c.
    unsafe { l2_f16_avx2(a, b) }
}

#[cfg(target_arch = "x86_64")]
fn l2_f16_avx512_entry(a: &[u16], b: &[u16]) -> f32 {
    // SAFETY: selected only after `is_x86_feature_detected!("avx512f")`.
    unsafe { l2_f16_avx512(a, b) }
}

/// A distance kernel over two equal-length half slices.
pub type HalfDistanceFn = fn(&[u16], &[u16]) -> f32;

/// The widest build of the half distance this CPU runs, chosen once: callers in a loop keep
/// the pointer instead of asking per call.
pub fn squared_l2_f16_fn() -> HalfDistanceFn {
    static F: std::sync::OnceLock<HalfDistanceFn> = std::sync::OnceLock::new();
    *F.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return l2_f16_avx512_entry;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c") {
                return l2_f16_avx2_entry;
            }
        }
        l2_f16_portable
    })
}

/// Squared Euclidean distance between two equal-length binary16 slices, computed in f32.
#[inline]
pub fn squared_l2_f16(a: &[u16], b: &[u16]) -> f32 {
    squared_l2_f16_fn()(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRng;

    /// f64 reference rounding: the nearest binary16 by exhaustive neighbour search.
    fn nearest_f16(x: f32) -> u16 {
        let x = f64::from(x);
        let mag = x.abs();
        let sign: u16 = if x.is_sign_negative() { 0x8000 } else { 0 };
        if mag >= 65520.0 {
            return sign | 0x7c00;
        }
        // Finite magnitudes 0..=0x7bff are ordered like their encodings.
        let (mut lo, mut hi) = (0u16, 0x7bffu16);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if f64::from(f16_to_f32(mid)) <= mag {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let below = lo;
        if f64::from(f16_to_f32(below)) == mag || below == 0x7bff {
            return sign | below;
        }
        let above = below + 1;
        let (db, da) = (
            mag - f64::from(f16_to_f32(below)),
            f64::from(f16_to_f32(above)) - mag,
        );
        let pick = if db < da || (db == da && below & 1 == 0) {
            below
        } else {
            above
        };
        sign | pick
    }

    #[test]
    fn every_half_round_trips_and_widening_is_exact() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                assert!(f32_to_f16(f) & 0x7fff > 0x7c00, "{h:#x}");
                continue;
            }
            assert_eq!(f32_to_f16(f), h, "{h:#x} -> {f}");
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
    }

    #[test]
    fn rounding_is_nearest_ties_to_even() {
        let mut rng = SeededRng::for_data(11);
        let mut xs: Vec<f32> = Vec::new();
        for e in -30..18 {
            for _ in 0..200 {
                xs.push((rng.gaussian() as f32) * 2f32.powi(e));
            }
        }
        // Ties and the edges: halfway between neighbours, the overflow threshold, zeros.
        for h in [0u16, 1, 2, 0x3ff, 0x400, 0x3c00, 0x3c01, 0x7bfe, 0x7bff] {
            let (a, b) = (f16_to_f32(h), f16_to_f32(h + 1));
            xs.push((a + b) / 2.0);
            xs.push(-(a + b) / 2.0);
        }
        xs.extend([
            0.0,
            -0.0,
            65519.99,
            65520.0,
            1e30,
            -1e30,
            f32::MIN_POSITIVE,
            3e-8,
        ]);
        for &x in &xs {
            assert_eq!(f32_to_f16(x), nearest_f16(x), "{x:e}");
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("f16c") {
            for &x in &xs {
                // SAFETY: f16c is present (checked above).
                let hw = unsafe { hw_round(x) };
                assert_eq!(f32_to_f16(x), hw, "{x:e} vs vcvtps2ph");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "f16c")]
    fn hw_round(x: f32) -> u16 {
        use std::arch::x86_64::*;
        let v = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set1_ps(x));
        _mm_extract_epi16::<0>(v) as u16
    }

    fn halves(n: usize, scale: f32, rng: &mut SeededRng) -> Vec<u16> {
        (0..n)
            .map(|_| f32_to_f16(scale * rng.gaussian() as f32))
            .collect()
    }

    #[test]
    fn half_l2_is_the_same_on_every_isa_and_matches_f64() {
        let mut rng = SeededRng::for_data(12);
        for n in 0..=200 {
            for scale in [1.0f32, 1e-3, 300.0] {
                let a = halves(n, scale, &mut rng);
                let b = halves(n, 2.0 * scale, &mut rng);
                let want: f64 = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (f64::from(f16_to_f32(*x)) - f64::from(f16_to_f32(*y))).powi(2))
                    .sum();
                let got = squared_l2_f16(&a, &b);
                assert_eq!(got.to_bits(), l2_f16_portable(&a, &b).to_bits(), "n={n}");
                #[cfg(target_arch = "x86_64")]
                {
                    if std::is_x86_feature_detected!("avx2")
                        && std::is_x86_feature_detected!("f16c")
                    {
                        assert_eq!(got.to_bits(), l2_f16_avx2_entry(&a, &b).to_bits(), "n={n}");
                    }
                    if std::is_x86_feature_detected!("avx512f") {
                        assert_eq!(
                            got.to_bits(),
                            l2_f16_avx512_entry(&a, &b).to_bits(),
                            "n={n}"
                        );
                    }
                }
                assert!(
                    (f64::from(got) - want).abs() <= 1e-5 * want.max(1e-30),
                    "n={n} got {got} want {want}"
                );
            }
        }
        // Extremes: the largest halves stay finite in f32; infinities give inf; equal is 0.
        let big = vec![0x7bffu16; 40];
        let neg = vec![0xfbffu16; 40];
        let d = squared_l2_f16(&big, &neg);
        assert!(d.is_finite() && d > 0.0);
        assert_eq!(squared_l2_f16(&big, &big), 0.0);
        let inf = vec![0x7c00u16; 33];
        assert_eq!(squared_l2_f16(&inf, &neg[..33]), f32::INFINITY);
    }
}
