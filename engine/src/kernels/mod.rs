//! Scoring kernels.
//!
//! This module owns the arithmetic inner loops: the f32 kernels of the exact oracle and the dense
//! rotation (here), and the code-domain [`fastscan`] kernels with their scalar twins and runtime
//! dispatch.
//!
//! Invariant: every kernel sums in a fixed order, written out in the code (eight independent
//! lanes, then a fixed reduction tree), so the compiler may vectorise it without changing a bit
//! of the result.

pub mod dot4;
pub mod fastscan;
pub mod half;

/// Rows per block of every blocked layout.
const BLOCK: usize = 32;

/// Receives the candidates of a fused scan ([`Kernel::dot4_top`](fastscan::Kernel::dot4_top),
/// [`Kernel::scan_top`](fastscan::Kernel::scan_top)).
pub trait Sink {
    /// Keys below the bound are not offered.
    fn bound(&self) -> f32;
    /// A live row (relative to the scan's first row) whose key reached the bound.
    fn offer(&mut self, row: usize, key: f32);
}

/// The per-row terms and the live mask of a fused scan; `rows` may end inside
/// the last block.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The per-row factor of the key, one per row scanned.
    pub factor: &'a [f32],
    /// The per-row offset of the key.
    pub offset: &'a [f32],
    /// One bit per row, one word per block.
    pub masks: &'a [u32],
}

/// The live rows of block `b` among the first `n` rows.
#[inline(always)]
pub(crate) fn live(rows: &Rows<'_>, b: usize, n: usize) -> u32 {
    let left = n - b * BLOCK;
    let tail = if left >= BLOCK {
        u32::MAX
    } else {
        (1u32 << left) - 1
    };
    rows.masks[b] & tail
}

/// Offers the rows of `hits` (a bit per lane of block `b`) whose key still reaches the bound.
#[inline(always)]
pub(crate) fn offer_hits<S: Sink>(sink: &mut S, mut hits: u32, b: usize, keys: &[f32; BLOCK]) {
    while hits != 0 {
        let j = hits.trailing_zeros() as usize;
        hits &= hits - 1;
        if keys[j] >= sink.bound() {
            sink.offer(b * BLOCK + j, keys[j]);
        }
    }
}

/// The factor and offset of block `b`'s 32 lanes as two registers each (zero past `n`), read
/// with masked loads: no copy through the stack.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn block_terms_512(
    rows: &Rows<'_>,
    b: usize,
    n: usize,
) -> [std::arch::x86_64::__m512; 4] {
    use std::arch::x86_64::_mm512_maskz_loadu_ps;
    let base = b * BLOCK;
    let m = (n - base).min(BLOCK);
    let k0 = if m >= 16 {
        0xffff
    } else {
        ((1u32 << m) - 1) as u16
    };
    let k1 = if m >= 32 {
        0xffff
    } else if m > 16 {
        ((1u32 << (m - 16)) - 1) as u16
    } else {
        0
    };
    let (f, o) = (rows.factor.as_ptr(), rows.offset.as_ptr());
    // SAFETY: the masks cover only lanes `< m`, which lie inside both slices (`base + m ≤ n`);
    // masked-off lanes are not read (AVX-512 masked loads suppress their faults), and the
    // addresses are formed with `wrapping_add`, so none is out of bounds as a pointer.
    unsafe {
        [
            _mm512_maskz_loadu_ps(k0, f.wrapping_add(base)),
            _mm512_maskz_loadu_ps(k1, f.wrapping_add(base + 16)),
            _mm512_maskz_loadu_ps(k0, o.wrapping_add(base)),
            _mm512_maskz_loadu_ps(k1, o.wrapping_add(base + 16)),
        ]
    }
}

/// Compares block `b`'s 32 keys (two registers) with the sink's bound and offers the live
/// lanes that reach it, in row order: the epilogue every AVX-512 fused kernel shares.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn offer_block_512<S: Sink>(
    sink: &mut S,
    k0: std::arch::x86_64::__m512,
    k1: std::arch::x86_64::__m512,
    live: u32,
    b: usize,
) {
    use std::arch::x86_64::*;
    let bound = _mm512_set1_ps(sink.bound());
    let ge = u32::from(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(k0, bound))
        | (u32::from(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(k1, bound)) << 16);
    let hits = ge & live;
    if hits != 0 {
        let mut keys = [0.0f32; BLOCK];
        // SAFETY: two 16-float stores into a 32-float array.
        unsafe {
            _mm512_storeu_ps(keys.as_mut_ptr(), k0);
            _mm512_storeu_ps(keys.as_mut_ptr().add(16), k1);
        }
        offer_hits(sink, hits, b, &keys);
    }
}

/// The factor and offset of block `b`'s lanes, padded with zeros past `n`.
#[inline(always)]
pub(crate) fn block_terms(rows: &Rows<'_>, b: usize, n: usize) -> ([f32; BLOCK], [f32; BLOCK]) {
    let (mut f, mut o) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
    let m = (n - b * BLOCK).min(BLOCK);
    f[..m].copy_from_slice(&rows.factor[b * BLOCK..b * BLOCK + m]);
    o[..m].copy_from_slice(&rows.offset[b * BLOCK..b * BLOCK + m]);
    (f, o)
}

/// Inner product of two equal-length f32 slices.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    reduce8(lanes) + tail
}

/// Squared Euclidean distance between two equal-length f32 slices.
#[inline]
pub fn squared_l2_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            lanes[i] += d * d;
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += (x - y) * (x - y);
    }
    reduce8(lanes) + tail
}

/// The summation of [`squared_l2_wide`]: 32 independent lanes over chunks of 32, the rest in
/// lanes 0..8 by chunks of 8, then one by one; a fixed reduction tree. Written once and
/// compiled per ISA, so every ISA returns the same bits.
#[inline(always)]
fn l2_lanes32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; 32];
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..32 {
            let d = x[i] - y[i];
            lanes[i] += d * d;
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut c8a = ra.chunks_exact(8);
    let mut c8b = rb.chunks_exact(8);
    for (x, y) in (&mut c8a).zip(&mut c8b) {
        for i in 0..8 {
            let d = x[i] - y[i];
            lanes[i] += d * d;
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in c8a.remainder().iter().zip(c8b.remainder()) {
        tail += (x - y) * (x - y);
    }
    let mut l16 = [0.0f32; 16];
    for i in 0..16 {
        l16[i] = lanes[i] + lanes[i + 16];
    }
    let mut l8 = [0.0f32; 8];
    for i in 0..8 {
        l8[i] = l16[i] + l16[i + 8];
    }
    reduce8(l8) + tail
}

/// [`l2_lanes32`] in four AVX2 registers: register `j` holds lanes `8j..8j + 8`, and every
/// lane sees the same operations in the same order (no FMA), so the result is bit-identical.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn l2_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `x` and `y` hold 32 floats; lanes 8j..8j + 8 are in bounds.
            let d = unsafe {
                _mm256_sub_ps(
                    _mm256_loadu_ps(x.as_ptr().add(8 * j)),
                    _mm256_loadu_ps(y.as_ptr().add(8 * j)),
                )
            };
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(d, d));
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut c8a = ra.chunks_exact(8);
    let mut c8b = rb.chunks_exact(8);
    for (x, y) in (&mut c8a).zip(&mut c8b) {
        // SAFETY: `x` and `y` hold 8 floats.
        let d = unsafe { _mm256_sub_ps(_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr())) };
        acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(d, d));
    }
    let mut tail = 0.0f32;
    for (x, y) in c8a.remainder().iter().zip(c8b.remainder()) {
        tail += (x - y) * (x - y);
    }
    let l8 = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), l8) };
    reduce8(out) + tail
}

/// [`l2_lanes32`] in two AVX-512 registers (lanes 0..16 and 16..32), bit-identical likewise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn l2_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (mut z0, mut z1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        // SAFETY: `x` and `y` hold 32 floats.
        let (d0, d1) = unsafe {
            (
                _mm512_sub_ps(_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(y.as_ptr())),
                _mm512_sub_ps(
                    _mm512_loadu_ps(x.as_ptr().add(16)),
                    _mm512_loadu_ps(y.as_ptr().add(16)),
                ),
            )
        };
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
        // SAFETY: `x` and `y` hold 8 floats.
        let d = unsafe { _mm256_sub_ps(_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr())) };
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(d, d));
    }
    let mut tail = 0.0f32;
    for (x, y) in c8a.remainder().iter().zip(c8b.remainder()) {
        tail += (x - y) * (x - y);
    }
    let l8 = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), l8) };
    reduce8(out) + tail
}

fn l2_portable(a: &[f32], b: &[f32]) -> f32 {
    l2_lanes32(a, b)
}

#[cfg(target_arch = "x86_64")]
fn l2_avx2_entry(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: selected only after `is_x86_feature_detected!("avx2")`.
    unsafe { l2_avx2(a, b) }
}

#[cfg(target_arch = "x86_64")]
fn l2_avx512_entry(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: selected only after `is_x86_feature_detected!("avx512f")`.
    unsafe { l2_avx512(a, b) }
}

/// A distance kernel over two equal-length slices.
type DistanceFn = fn(&[f32], &[f32]) -> f32;

/// The widest build of [`l2_lanes32`] this CPU runs, chosen once.
fn l2_wide_fn() -> DistanceFn {
    static F: std::sync::OnceLock<DistanceFn> = std::sync::OnceLock::new();
    *F.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return l2_avx512_entry;
            }
            if std::is_x86_feature_detected!("avx2") {
                return l2_avx2_entry;
            }
        }
        l2_portable
    })
}

/// Squared Euclidean distance with 32 independent lanes (four AVX2 or two AVX-512 registers
/// of partial sums, where [`squared_l2_f32`]'s eight lanes wait on one add chain): the graph
/// build's distance. Its bits are the same on every ISA, not those of `squared_l2_f32`.
#[inline]
pub fn squared_l2_wide(a: &[f32], b: &[f32]) -> f32 {
    l2_wide_fn()(a, b)
}

/// Hints the CPU to start loading the cache lines `bytes` touches (up to `lines` of them,
/// counted from the line of its first byte, so a record that straddles a line boundary gets
/// both): a graph search asks for every neighbour's record before scoring the first, so the
/// misses overlap.
#[inline(always)]
pub fn prefetch(bytes: &[u8], lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        // Offsets inside `bytes` of its first byte and of each later line start.
        let first_boundary = 64 - (bytes.as_ptr() as usize & 63);
        for i in 0..lines {
            let at = if i == 0 {
                0
            } else {
                first_boundary + (i - 1) * 64
            };
            let Some(b) = bytes.get(at) else { break };
            // SAFETY: a prefetch is a hint that never faults, and the address is inside `bytes`.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    (b as *const u8).cast::<i8>(),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, lines);
}

/// Cache lines a run of `len` bytes can touch at any alignment.
#[inline]
pub fn lines_spanned(len: usize) -> usize {
    if len == 0 { 0 } else { (len + 63).div_ceil(64) }
}

/// Squared L2 norm of a slice, accumulated in f64 (norms feed divisions; they must not
/// overflow for finite f32 input).
#[inline]
pub fn squared_norm_f64(a: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 4];
    let mut chunks = a.chunks_exact(4);
    for x in &mut chunks {
        for i in 0..4 {
            lanes[i] += f64::from(x[i]) * f64::from(x[i]);
        }
    }
    let mut tail = 0.0f64;
    for &x in chunks.remainder() {
        tail += f64::from(x) * f64::from(x);
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}

#[inline(always)]
fn reduce8(l: [f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// A test sink: records every offer; its bound is the k-th best key offered so far.
#[cfg(test)]
pub(crate) struct Record {
    pub k: usize,
    pub offers: Vec<(usize, f32)>,
    best: Vec<f32>,
}

#[cfg(test)]
impl Record {
    pub fn new(k: usize) -> Self {
        Record {
            k,
            offers: Vec::new(),
            best: Vec::new(),
        }
    }
}

#[cfg(test)]
impl Sink for Record {
    fn bound(&self) -> f32 {
        if self.best.len() < self.k {
            f32::MIN
        } else {
            self.best[self.k - 1]
        }
    }
    fn offer(&mut self, row: usize, key: f32) {
        self.offers.push((row, key));
        self.best.push(key);
        self.best.sort_by(|a, b| b.total_cmp(a));
        self.best.truncate(self.k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRng;

    #[test]
    fn dot_matches_f64_reference_for_every_length() {
        let mut rng = SeededRng::for_data(1);
        for n in 0..=80 {
            let a: Vec<f32> = (0..n).map(|_| rng.gaussian() as f32).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.gaussian() as f32).collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let got = dot_f32(&a, &b);
            assert!(
                (f64::from(got) - want).abs() < 1e-5 * (n as f64 + 1.0),
                "n={n}"
            );
            let norm: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
            assert!((squared_norm_f64(&a) - norm).abs() <= 1e-12 * norm.max(1.0));
        }
    }

    #[test]
    fn wide_l2_is_the_same_on_every_isa_and_matches_f64() {
        let mut rng = SeededRng::for_data(2);
        for n in 0..=200 {
            let a: Vec<f32> = (0..n).map(|_| rng.gaussian() as f32).collect();
            let b: Vec<f32> = (0..n).map(|_| 1e3 * rng.gaussian() as f32).collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum();
            let got = squared_l2_wide(&a, &b);
            assert_eq!(got.to_bits(), l2_portable(&a, &b).to_bits(), "n={n}");
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") {
                    assert_eq!(got.to_bits(), l2_avx2_entry(&a, &b).to_bits(), "n={n}");
                }
                if std::is_x86_feature_detected!("avx512f") {
                    assert_eq!(got.to_bits(), l2_avx512_entry(&a, &b).to_bits(), "n={n}");
                }
            }
            assert!(
                (f64::from(got) - want).abs() <= 1e-5 * want.max(1.0),
                "n={n}"
            );
        }
        // Extremes: huge components overflow to inf, never to NaN; equal inputs give 0.
        let big = vec![f32::MAX; 40];
        let small = vec![-f32::MAX; 40];
        assert_eq!(squared_l2_wide(&big, &small), f32::INFINITY);
        assert_eq!(squared_l2_wide(&big, &big), 0.0);
    }

    #[test]
    fn squared_norm_does_not_overflow() {
        let v = vec![f32::MAX; 16];
        assert!(squared_norm_f64(&v).is_finite());
    }
}

#[cfg(test)]
mod span_tests {
    use super::*;

    /// `lines_spanned` is the most lines a run touches at any alignment, and a prefetch over
    /// any sub-slice stays inside it (no panic at any length or offset).
    #[test]
    fn lines_spanned_is_the_worst_alignment() {
        assert_eq!(lines_spanned(0), 0);
        for len in 1..300usize {
            let worst = (0..64).map(|a| (a + len - 1) / 64 + 1).max().unwrap();
            assert_eq!(lines_spanned(len), worst, "len {len}");
        }
        let buf = vec![7u8; 512];
        for at in 0..64 {
            for len in 0..200 {
                prefetch(&buf[at..at + len], lines_spanned(len));
                prefetch(&buf[at..at + len], 100);
            }
        }
    }
}
