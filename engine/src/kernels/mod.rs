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

/// Hints the CPU to start loading the cache lines of `bytes` (up to `lines` of them): a graph
/// search asks for every neighbour's record before scoring the first, so the misses overlap.
#[inline(always)]
pub fn prefetch(bytes: &[u8], lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for i in 0..lines {
        let Some(b) = bytes.get(i * 64) else { break };
        // SAFETY: a prefetch is a hint that never faults, and the address is inside `bytes`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (b as *const u8).cast::<i8>(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, lines);
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
    fn squared_norm_does_not_overflow() {
        let v = vec![f32::MAX; 16];
        assert!(squared_norm_f64(&v).is_finite());
    }
}
