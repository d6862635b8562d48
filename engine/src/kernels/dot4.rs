//! Dot4: exact integer inner products of 4-bit codes with an 8-bit query, 32 rows at a time.
//!
//! The codes are in the *interleaved* layout ([`layout`](crate::quantizer::layout), `Dot4`): a
//! block of 32 rows is `G = ⌈d/8⌉` groups of 128 bytes; in group `g`, the 4 bytes at
//! `64·h + 4·v` belong to row `16·h + v`, byte `i` holding the codes of coordinates `8g + i`
//! (low nibble) and `8g + 4 + i` (high nibble). A row's 4 bytes are one 32-bit lane, so one
//! 512-bit register holds 16 rows.
//!
//! The score of a row is `S = Σ_j w_j · L[c_j]`: `L` the codebook's 16 centroids rounded to
//! `i8` on one step ([`Levels`]), `w` the rotated query rounded to `i8` on one step
//! ([`Query`]). The map from nibble to level is the same for every query, so a kernel turns
//! codes into levels once per load (`vpshufb`) and every query only multiplies and adds
//! (`vpdpbusd` on AVX-512 VNNI; sign/`pmaddubsw`/`pmaddwd` on AVX2): no per-query tables, and
//! sums accumulate exactly in i32 (`|S| ≤ 127² · 65536 < 2³¹`).
//!
//! [`Kernel::dot4_sums`] writes the sums; [`Kernel::dot4_top`] keeps them in registers, turns
//! them into keys `factor[r] · (scale · S) + offset[r]` and hands only the live rows whose key
//! reaches the sink's bound to the sink, in row order. Both equal their scalar twins exactly,
//! and the keys are computed with the same IEEE operations in the same order (no FMA), so the
//! same rows reach the sink in the same order.

use super::fastscan::Kernel;
pub use super::{Rows, Sink};

/// Rows per block.
pub const BLOCK: usize = 32;
/// Coordinates per group (4 bytes of a row).
pub const GROUP_DIMS: usize = 8;
/// Bytes of one group of one block.
pub const GROUP_BYTES: usize = 128;

/// Groups of `dim` coordinates.
pub fn groups(dim: usize) -> usize {
    dim.div_ceil(GROUP_DIMS)
}

/// The 16 centroids of a 4-bit codebook rounded to `i8` on one step: `c_k ≈ step · levels[k]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    /// `round(c_k / step)`, in `[-127, 127]`.
    pub levels: [i8; 16],
    /// The largest centroid magnitude over 127.
    pub step: f32,
}

impl Levels {
    /// Levels of `centroids` (16 values), the largest magnitude at ±127.
    pub fn new(centroids: &[f32]) -> Levels {
        let max = centroids.iter().fold(0.0f32, |m, &c| m.max(c.abs()));
        let step = if max > 0.0 { max / 127.0 } else { 1.0 };
        let mut levels = [0i8; 16];
        for (l, &c) in levels.iter_mut().zip(centroids) {
            *l = (c / step).round().clamp(-127.0, 127.0) as i8;
        }
        Levels { levels, step }
    }
}

/// A query rounded to `i8` on one step, in the order the kernels read it: for group `g`, the
/// weights of coordinates `8g..8g+4` then `8g+4..8g+8` (zero past the dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `round(q_j / step)`, in `[-127, 127]`, `8·G` of them.
    pub weights: Vec<i8>,
    /// `-128 · Σ w`: cancels the `+128` that puts levels in `vpdpbusd`'s unsigned operand.
    pub zero: i32,
    /// `q_j ≈ step · w_j`.
    pub step: f32,
    /// The weights in the order of a packed row (see [`row_sum_packed`]): for each 64 bytes
    /// of packed codes, the 64 even coordinates (low nibbles) then the 64 odd ones.
    pub packed: Vec<i8>,
}

impl Query {
    /// Rounds the rotated query `q` (the largest magnitude to ±127).
    pub fn new(q: &[f32]) -> Query {
        let max = q.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
        let step = max / 127.0;
        let (step, inv) = if step >= f32::MIN_POSITIVE {
            (step, 1.0 / step)
        } else {
            (0.0, 0.0)
        };
        let g = groups(q.len());
        let mut weights = vec![0i8; g * GROUP_DIMS];
        for (j, &v) in q.iter().enumerate() {
            weights[j] = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
        let sum: i32 = weights.iter().map(|&w| i32::from(w)).sum();
        let chunks = q.len().div_ceil(128);
        let mut packed = vec![0i8; chunks * 128];
        for (j, &w) in weights.iter().enumerate().take(q.len()) {
            let (c, r) = (j / 128, j % 128);
            packed[c * 128 + (r % 2) * 64 + r / 2] = w;
        }
        Query {
            weights,
            zero: -128 * sum,
            step,
            packed,
        }
    }

    fn groups(&self) -> usize {
        self.weights.len() / GROUP_DIMS
    }
}

/// Most queries one call scores per load of codes.
pub const MAX_QUERIES: usize = 8;

impl Kernel {
    /// Queries a [`dot4_top`](Self::dot4_top) pass of this kernel scores together (its
    /// accumulators fill the registers).
    pub fn dot4_width(self) -> usize {
        match self {
            Kernel::Scalar => 1,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 => 2,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni | Kernel::Avx512Vbmi => MAX_QUERIES,
        }
    }

    /// The sum `S` of one row given its packed 4-bit code (`⌈d/2⌉` bytes, see
    /// [`packing`](crate::quantizer::packing)): what [`dot4_sums`](Self::dot4_sums) gives the
    /// same row in the interleaved layout. For refining a shortlist, row by row.
    #[inline]
    pub fn dot4_row(self, packed: &[u8], levels: &Levels, query: &Query) -> i32 {
        assert!(
            packed.len().div_ceil(64) * 128 == query.packed.len(),
            "the row and the query have one dimension"
        );
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Vnni` and `Avx512Vbmi` are only constructed after detecting AVX-512
            // F, BW and VNNI; the weights cover every 64-byte chunk of the row (checked above).
            Kernel::Avx512Vnni | Kernel::Avx512Vbmi => unsafe { vnni::row(packed, levels, query) },
            _ => row_sum_packed(packed, levels, query),
        }
    }

    /// The sums `S` of every row of whole blocks `codes` for one query (32 per block).
    pub fn dot4_sums(self, codes: &[u8], levels: &Levels, query: &Query, out: &mut [i32]) {
        let bb = query.groups() * GROUP_BYTES;
        assert!(
            bb > 0 && codes.len().is_multiple_of(bb) && out.len() == codes.len() / bb * BLOCK,
            "buffer sizes"
        );
        match self {
            Kernel::Scalar => sums_scalar(codes, levels, query, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` and `Avx512` are only constructed after detecting AVX2; the sizes
            // were checked above.
            Kernel::Avx2 | Kernel::Avx512 => unsafe { avx2::sums(codes, levels, query, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Vnni` and `Avx512Vbmi` are only constructed after detecting AVX-512
            // F, BW and VNNI; the sizes were checked above.
            Kernel::Avx512Vnni | Kernel::Avx512Vbmi => unsafe {
                vnni::sums(codes, levels, query, out)
            },
        }
    }

    /// Scores rows `0..rows.factor.len()` of `codes` (whole blocks covering them) for up to
    /// [`dot4_width`](Self::dot4_width) queries, offering each query's sink every live row
    /// whose key `factor · (scales[q] · S) + offset` is at least the sink's bound when reached.
    pub fn dot4_top<S: Sink>(
        self,
        codes: &[u8],
        levels: &Levels,
        queries: &[&Query],
        scales: &[f32],
        rows: Rows<'_>,
        sinks: &mut [S],
    ) {
        let n = rows.factor.len();
        assert!(
            !queries.is_empty()
                && queries.len() <= self.dot4_width()
                && scales.len() == queries.len()
                && sinks.len() == queries.len(),
            "one scale and one sink per query, at most dot4_width"
        );
        let g = queries[0].groups();
        assert!(
            g > 0 && queries.iter().all(|q| q.groups() == g),
            "one dimension"
        );
        let blocks = n.div_ceil(BLOCK);
        assert!(
            codes.len() >= blocks * g * GROUP_BYTES
                && rows.offset.len() == n
                && rows.masks.len() >= blocks,
            "buffer sizes"
        );
        match self {
            Kernel::Scalar => top_scalar(codes, levels, queries, scales, rows, sinks),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` and `Avx512` are only constructed after detecting AVX2; the sizes
            // were checked above.
            Kernel::Avx2 | Kernel::Avx512 => unsafe {
                match queries.len() {
                    1 => avx2::top::<1, S>(codes, levels, queries, scales, rows, sinks),
                    _ => avx2::top::<2, S>(codes, levels, queries, scales, rows, sinks),
                }
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Vnni` and `Avx512Vbmi` are only constructed after detecting AVX-512
            // F, BW and VNNI; the sizes were checked above.
            Kernel::Avx512Vnni | Kernel::Avx512Vbmi => unsafe {
                macro_rules! width {
                    ($($n:literal)*) => {
                        match queries.len() {
                            $($n => vnni::top::<$n, S>(codes, levels, queries, scales, rows, sinks),)*
                            _ => unreachable!("checked above"),
                        }
                    };
                }
                width!(1 2 3 4 5 6 7 8)
            },
        }
    }
}

/// The reference: `S` of each row of whole blocks.
pub fn sums_scalar(codes: &[u8], levels: &Levels, query: &Query, out: &mut [i32]) {
    let g = query.groups();
    for (block, sums) in codes
        .chunks_exact(g * GROUP_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        for (r, s) in sums.iter_mut().enumerate() {
            *s = row_sum(block, r, levels, query);
        }
    }
}

fn row_sum(block: &[u8], r: usize, levels: &Levels, query: &Query) -> i32 {
    let at = 64 * (r / 16) + 4 * (r % 16);
    let mut s = 0i32;
    for (group, w) in block
        .chunks_exact(GROUP_BYTES)
        .zip(query.weights.chunks_exact(GROUP_DIMS))
    {
        for i in 0..4 {
            let byte = group[at + i];
            s += i32::from(w[i]) * i32::from(levels.levels[usize::from(byte & 15)]);
            s += i32::from(w[4 + i]) * i32::from(levels.levels[usize::from(byte >> 4)]);
        }
    }
    s
}

/// The reference of [`Kernel::dot4_row`].
pub fn row_sum_packed(packed: &[u8], levels: &Levels, query: &Query) -> i32 {
    let mut s = 0i32;
    for (i, &byte) in packed.iter().enumerate() {
        let (c, r) = (i / 64, i % 64);
        let w = &query.packed[c * 128..];
        s += i32::from(w[r]) * i32::from(levels.levels[usize::from(byte & 15)]);
        s += i32::from(w[64 + r]) * i32::from(levels.levels[usize::from(byte >> 4)]);
    }
    s
}

/// The key of a row from its sum: the one formula every kernel uses.
#[inline(always)]
pub fn key(sum: i32, scale: f32, factor: f32, offset: f32) -> f32 {
    factor * (scale * sum as f32) + offset
}

/// The reference of [`Kernel::dot4_top`].
pub fn top_scalar<S: Sink>(
    codes: &[u8],
    levels: &Levels,
    queries: &[&Query],
    scales: &[f32],
    rows: Rows<'_>,
    sinks: &mut [S],
) {
    let g = queries[0].groups();
    for r in 0..rows.factor.len() {
        if rows.masks[r / BLOCK] >> (r % BLOCK) & 1 == 0 {
            continue;
        }
        let block = &codes[(r / BLOCK) * g * GROUP_BYTES..][..g * GROUP_BYTES];
        for ((q, &scale), sink) in queries.iter().zip(scales).zip(sinks.iter_mut()) {
            let k = key(
                row_sum(block, r % BLOCK, levels, q),
                scale,
                rows.factor[r],
                rows.offset[r],
            );
            if k >= sink.bound() {
                sink.offer(r, k);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
// The lane index drives pointer offsets and several arrays at once.
#[allow(clippy::needless_range_loop)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, GROUP_BYTES, Levels, Query, Rows, Sink};

    /// The accumulators of one block for `Q` queries: `acc[q][i]` holds rows `8i..8i+8`.
    ///
    /// # Safety
    /// AVX2 (the sums are exact without the VNNI kernel's bias); `block` points at `groups · 128` readable bytes and each weight pointer at
    /// `groups · 8` bytes.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn block<const Q: usize>(
        block: *const u8,
        groups: usize,
        levels: __m256i,
        weights: &[*const i8; Q],
    ) -> [[__m256i; 4]; Q] {
        let m = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); 4]; Q];
        for g in 0..groups {
            let w: [(__m256i, __m256i); Q] = std::array::from_fn(|q| {
                // SAFETY: group `g < groups` has 8 weights at `8g`.
                let p = unsafe { weights[q].add(8 * g) };
                // SAFETY: as above; unaligned 4-byte reads.
                unsafe {
                    (
                        _mm256_set1_epi32(p.cast::<i32>().read_unaligned()),
                        _mm256_set1_epi32(p.add(4).cast::<i32>().read_unaligned()),
                    )
                }
            });
            for i in 0..4 {
                // SAFETY: 32 bytes at `128g + 32i` lie inside the block's group `g`.
                let c = unsafe { _mm256_loadu_si256(block.add(GROUP_BYTES * g + 32 * i).cast()) };
                let lo = _mm256_shuffle_epi8(levels, _mm256_and_si256(c, m));
                let hi = _mm256_shuffle_epi8(levels, _mm256_and_si256(_mm256_srli_epi16(c, 4), m));
                let (alo, ahi) = (_mm256_abs_epi8(lo), _mm256_abs_epi8(hi));
                for q in 0..Q {
                    // |L| · (w · sign L) = L · w; pairs stay within i16 (2 · 127² < 2¹⁵).
                    let plo = _mm256_maddubs_epi16(alo, _mm256_sign_epi8(w[q].0, lo));
                    let phi = _mm256_maddubs_epi16(ahi, _mm256_sign_epi8(w[q].1, hi));
                    let s = _mm256_add_epi32(
                        _mm256_madd_epi16(plo, ones),
                        _mm256_madd_epi16(phi, ones),
                    );
                    acc[q][i] = _mm256_add_epi32(acc[q][i], s);
                }
            }
        }
        acc
    }

    /// # Safety
    /// AVX2; sizes as checked by `Kernel::dot4_sums`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sums(codes: &[u8], levels: &Levels, query: &Query, out: &mut [i32]) {
        let groups = query.groups();
        let lv = levels_reg(levels);
        for (b, sums) in out.chunks_exact_mut(BLOCK).enumerate() {
            // SAFETY: block `b` is whole inside `codes` (checked by the caller).
            let acc = unsafe {
                block::<1>(
                    codes.as_ptr().add(b * groups * GROUP_BYTES),
                    groups,
                    lv,
                    &[query.weights.as_ptr()],
                )
            };
            for (i, a) in acc[0].iter().enumerate() {
                // SAFETY: 8 i32 fit at `8i` of the block's 32 sums.
                unsafe { _mm256_storeu_si256(sums.as_mut_ptr().add(8 * i).cast(), *a) };
            }
        }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn levels_reg(levels: &Levels) -> __m256i {
        // SAFETY: 16 bytes read from a 16-byte array.
        let l = unsafe { _mm_loadu_si128(levels.levels.as_ptr().cast()) };
        _mm256_broadcastsi128_si256(l)
    }

    /// # Safety
    /// AVX2; sizes as checked by `Kernel::dot4_top`, `Q` queries, scales and sinks.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn top<const Q: usize, S: Sink>(
        codes: &[u8],
        levels: &Levels,
        queries: &[&Query],
        scales: &[f32],
        rows: Rows<'_>,
        sinks: &mut [S],
    ) {
        let n = rows.factor.len();
        let groups = queries[0].groups();
        let lv = levels_reg(levels);
        let weights: [*const i8; Q] = std::array::from_fn(|q| queries[q].weights.as_ptr());
        for b in 0..n.div_ceil(BLOCK) {
            let live = super::super::live(&rows, b, n);
            if live == 0 {
                continue;
            }
            // SAFETY: block `b` is whole inside `codes` (checked by the caller).
            let acc = unsafe {
                block::<Q>(
                    codes.as_ptr().add(b * groups * GROUP_BYTES),
                    groups,
                    lv,
                    &weights,
                )
            };
            let (f, o) = super::super::block_terms(&rows, b, n);
            for q in 0..Q {
                let vs = _mm256_set1_ps(scales[q]);
                let bound = _mm256_set1_ps(sinks[q].bound());
                let mut keys = [0.0f32; BLOCK];
                let mut hits = 0u32;
                for i in 0..4 {
                    // SAFETY: 8 floats at `8i` of 32-element arrays.
                    let (vf, vo) = unsafe {
                        (
                            _mm256_loadu_ps(f.as_ptr().add(8 * i)),
                            _mm256_loadu_ps(o.as_ptr().add(8 * i)),
                        )
                    };
                    let k = _mm256_add_ps(
                        _mm256_mul_ps(vf, _mm256_mul_ps(vs, _mm256_cvtepi32_ps(acc[q][i]))),
                        vo,
                    );
                    // SAFETY: as above.
                    unsafe { _mm256_storeu_ps(keys.as_mut_ptr().add(8 * i), k) };
                    let ge = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(k, bound)) as u32;
                    hits |= ge << (8 * i);
                }
                super::super::offer_hits(&mut sinks[q], hits & live, b, &keys);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{BLOCK, GROUP_BYTES, Levels, Query, Rows, Sink};

    /// The accumulators of `B` consecutive blocks for `Q` queries: `acc[b][q][h]` holds rows
    /// `16h..16h+16` of block `b`. Several blocks give a single query several independent
    /// streams of loads (one stream leaves the core waiting on one chain of misses).
    ///
    /// # Safety
    /// AVX-512 F, BW, VNNI; `first` points at `B` blocks of `groups · 128` readable bytes and
    /// each weight pointer at `groups · 8` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    #[inline]
    unsafe fn blocks<const Q: usize, const B: usize>(
        first: *const u8,
        groups: usize,
        levels: __m512i,
        weights: &[*const i8; Q],
        zero: &[i32; Q],
        ahead: usize,
        limit: *const u8,
    ) -> [[[__m512i; 2]; Q]; B] {
        let m = _mm512_set1_epi8(0x0f);
        let bb = groups * GROUP_BYTES;
        let mut acc: [[[__m512i; 2]; Q]; B] =
            std::array::from_fn(|_| std::array::from_fn(|q| [_mm512_set1_epi32(zero[q]); 2]));
        for g in 0..groups {
            for h in 0..2 {
                for (b, acc) in acc.iter_mut().enumerate() {
                    let at = b * bb + GROUP_BYTES * g + 64 * h;
                    // A fixed distance ahead in each stream: the loads of a block are a chain
                    // the hardware prefetcher alone does not run far enough ahead of.
                    // SAFETY: only the address is formed (wrapping), and only prefetched when
                    // it lies before `limit`, the end of the codes.
                    let pf = first.wrapping_add(at + ahead);
                    if pf < limit {
                        _mm_prefetch::<_MM_HINT_T0>(pf.cast());
                    }
                    // SAFETY: 64 bytes at `128g + 64h` lie inside group `g` of block `b`.
                    let c = unsafe { _mm512_loadu_si512(first.add(at).cast()) };
                    let lo = _mm512_shuffle_epi8(levels, _mm512_and_si512(c, m));
                    let hi =
                        _mm512_shuffle_epi8(levels, _mm512_and_si512(_mm512_srli_epi16(c, 4), m));
                    for q in 0..Q {
                        // SAFETY: group `g < groups` has 8 weights at `8g`; unaligned reads.
                        let (wlo, whi) = unsafe {
                            let p = weights[q].add(8 * g);
                            (
                                _mm512_set1_epi32(p.cast::<i32>().read_unaligned()),
                                _mm512_set1_epi32(p.add(4).cast::<i32>().read_unaligned()),
                            )
                        };
                        acc[q][h] = _mm512_dpbusd_epi32(acc[q][h], lo, wlo);
                        acc[q][h] = _mm512_dpbusd_epi32(acc[q][h], hi, whi);
                    }
                }
            }
        }
        acc
    }

    /// `S` of one packed row: per 64 bytes, the low nibbles (even coordinates) and the high
    /// ones (odd) against their 64 weights each, into two accumulators (a row is one chain of
    /// `vpdpbusd` otherwise, 5 cycles each); the last chunk loaded under a mask. The `+128`
    /// bias of the levels is cancelled by the query's `zero` (the row covers all its weights).
    ///
    /// # Safety
    /// AVX-512 F, BW, VNNI; `query.packed` holds the weights of exactly `packed`'s 64-byte
    /// chunks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    pub(super) unsafe fn row(packed: &[u8], levels: &Levels, query: &Query) -> i32 {
        let lv = levels_reg(levels);
        let m = _mm512_set1_epi8(0x0f);
        let mut acc = [_mm512_setzero_si512(); 2];
        let w = query.packed.as_ptr();
        let look = |x: __m512i, c: usize, acc: &mut [__m512i; 2]| {
            // SAFETY: the weights hold 128 bytes for chunk `c` (checked by the caller).
            let (wlo, whi) = unsafe {
                (
                    _mm512_loadu_si512(w.add(128 * c).cast()),
                    _mm512_loadu_si512(w.add(128 * c + 64).cast()),
                )
            };
            let lo = _mm512_shuffle_epi8(lv, _mm512_and_si512(x, m));
            let hi = _mm512_shuffle_epi8(lv, _mm512_and_si512(_mm512_srli_epi16(x, 4), m));
            acc[0] = _mm512_dpbusd_epi32(acc[0], lo, wlo);
            acc[1] = _mm512_dpbusd_epi32(acc[1], hi, whi);
        };
        let mut chunks = packed.chunks_exact(64);
        let mut c = 0;
        for chunk in &mut chunks {
            // SAFETY: a whole 64-byte chunk of `packed`.
            let x = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
            look(x, c, &mut acc);
            c += 1;
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let k = (1u64 << tail.len()) - 1;
            // SAFETY: the mask limits the load to the tail's bytes.
            let x = unsafe { _mm512_maskz_loadu_epi8(k, tail.as_ptr().cast()) };
            look(x, c, &mut acc);
            c += 1;
        }
        // Masked-off bytes lie past the row, where the weights are 0.
        debug_assert_eq!(128 * c, query.packed.len());
        _mm512_reduce_add_epi32(_mm512_add_epi32(acc[0], acc[1])) + query.zero
    }

    /// The levels biased into u8 (`L + 128`), in all four 128-bit lanes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    #[inline]
    fn levels_reg(levels: &Levels) -> __m512i {
        // SAFETY: 16 bytes read from a 16-byte array.
        let l = unsafe { _mm_loadu_si128(levels.levels.as_ptr().cast()) };
        _mm512_xor_si512(_mm512_broadcast_i32x4(l), _mm512_set1_epi8(0x80u8 as i8))
    }

    /// # Safety
    /// AVX-512 F, BW, VNNI; sizes as checked by `Kernel::dot4_sums`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    pub(super) unsafe fn sums(codes: &[u8], levels: &Levels, query: &Query, out: &mut [i32]) {
        let groups = query.groups();
        let lv = levels_reg(levels);
        for (b, sums) in out.chunks_exact_mut(BLOCK).enumerate() {
            // SAFETY: block `b` is whole inside `codes` (checked by the caller).
            let [acc] = unsafe {
                blocks::<1, 1>(
                    codes.as_ptr().add(b * groups * GROUP_BYTES),
                    groups,
                    lv,
                    &[query.weights.as_ptr()],
                    &[query.zero],
                    1024,
                    codes.as_ptr_range().end,
                )
            };
            for (h, a) in acc[0].iter().enumerate() {
                // SAFETY: 16 i32 fit at `16h` of the block's 32 sums.
                unsafe { _mm512_storeu_si512(sums.as_mut_ptr().add(16 * h).cast(), *a) };
            }
        }
    }

    /// # Safety
    /// AVX-512 F, BW, VNNI; sizes as checked by `Kernel::dot4_top`, `Q` queries, scales and
    /// sinks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    pub(super) unsafe fn top<const Q: usize, S: Sink>(
        codes: &[u8],
        levels: &Levels,
        queries: &[&Query],
        scales: &[f32],
        rows: Rows<'_>,
        sinks: &mut [S],
    ) {
        let n = rows.factor.len();
        let groups = queries[0].groups();
        let lv = levels_reg(levels);
        let weights: [*const i8; Q] = std::array::from_fn(|q| queries[q].weights.as_ptr());
        let zero: [i32; Q] = std::array::from_fn(|q| queries[q].zero);
        let bb = groups * GROUP_BYTES;
        let nblocks = n.div_ceil(BLOCK);
        let limit = codes.as_ptr_range().end;
        // Few queries leave registers for several blocks at once (independent streams of
        // loads); a short lookahead suits them, a long one the batch kernels (measured).
        let ahead = if Q <= 2 { 1024 } else { 4096 };
        macro_rules! run {
            ($blk:literal) => {{
                let mut b = 0;
                while b + $blk <= nblocks {
                    let live: [u32; $blk] =
                        std::array::from_fn(|i| super::super::live(&rows, b + i, n));
                    if live.iter().any(|&l| l != 0) {
                        // SAFETY: blocks `b..b + $blk` are whole inside `codes` (checked by
                        // the caller).
                        let acc = unsafe {
                            blocks::<Q, $blk>(
                                codes.as_ptr().add(b * bb),
                                groups,
                                lv,
                                &weights,
                                &zero,
                                ahead,
                                limit,
                            )
                        };
                        for (i, a) in acc.iter().enumerate() {
                            epilogue::<Q, S>(a, b + i, live[i], &rows, n, scales, sinks);
                        }
                    }
                    b += $blk;
                }
                b
            }};
        }
        let done = match Q {
            1 => run!(8),
            2 => run!(4),
            3 | 4 => run!(2),
            _ => 0,
        };
        for b in done..nblocks {
            let live = super::super::live(&rows, b, n);
            if live != 0 {
                // SAFETY: block `b` is whole inside `codes` (checked by the caller).
                let [a] = unsafe {
                    blocks::<Q, 1>(
                        codes.as_ptr().add(b * bb),
                        groups,
                        lv,
                        &weights,
                        &zero,
                        ahead,
                        limit,
                    )
                };
                epilogue::<Q, S>(&a, b, live, &rows, n, scales, sinks);
            }
        }
    }

    /// Keys of one block's accumulators, compared with each sink's bound in registers; only
    /// the live lanes that reach it are offered.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    #[inline]
    fn epilogue<const Q: usize, S: Sink>(
        acc: &[[__m512i; 2]; Q],
        b: usize,
        live: u32,
        rows: &Rows<'_>,
        n: usize,
        scales: &[f32],
        sinks: &mut [S],
    ) {
        if live == 0 {
            return;
        }
        let [f0, f1, o0, o1] = crate::kernels::block_terms_512(rows, b, n);
        for q in 0..Q {
            let vs = _mm512_set1_ps(scales[q]);
            let k0 = _mm512_add_ps(
                _mm512_mul_ps(f0, _mm512_mul_ps(vs, _mm512_cvtepi32_ps(acc[q][0]))),
                o0,
            );
            let k1 = _mm512_add_ps(
                _mm512_mul_ps(f1, _mm512_mul_ps(vs, _mm512_cvtepi32_ps(acc[q][1]))),
                o1,
            );
            crate::kernels::offer_block_512(&mut sinks[q], k0, k1, live, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRng;

    /// Interleaves random 4-bit codes of `rows` rows at `dim` into whole blocks.
    fn random_codes(rng: &mut SeededRng, rows: usize, dim: usize, all: Option<u8>) -> Vec<u8> {
        let g = groups(dim);
        let mut bytes = vec![0u8; rows.div_ceil(BLOCK) * g * GROUP_BYTES];
        for r in 0..rows {
            for j in 0..dim {
                let c = all.unwrap_or_else(|| rng.below(16) as u8);
                let (gi, k) = (j / 8, j % 8);
                let at = (r / BLOCK) * g * GROUP_BYTES
                    + gi * GROUP_BYTES
                    + 64 * ((r % BLOCK) / 16)
                    + 4 * (r % 16)
                    + k % 4;
                bytes[at] |= if k < 4 { c } else { c << 4 };
            }
        }
        bytes
    }

    fn random_query(rng: &mut SeededRng, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| rng.gaussian() as f32).collect()
    }

    fn codebook_levels(rng: &mut SeededRng) -> Levels {
        let mut c: Vec<f32> = (0..16).map(|_| rng.gaussian() as f32).collect();
        c.sort_by(f32::total_cmp);
        Levels::new(&c)
    }

    use crate::kernels::Record;

    #[test]
    fn sums_match_the_scalar_twin_and_the_definition() {
        let mut rng = SeededRng::for_data(21);
        for dim in (1..=160).chain([383, 384, 768, 1536]) {
            for blocks in [1usize, 3] {
                let codes = random_codes(&mut rng, blocks * BLOCK, dim, None);
                let levels = codebook_levels(&mut rng);
                let query = Query::new(&random_query(&mut rng, dim));
                let mut want = vec![0i32; blocks * BLOCK];
                sums_scalar(&codes, &levels, &query, &mut want);
                for k in Kernel::available() {
                    let mut got = vec![i32::MAX; blocks * BLOCK];
                    k.dot4_sums(&codes, &levels, &query, &mut got);
                    assert_eq!(got, want, "{k:?} dim={dim} blocks={blocks}");
                }
            }
        }
    }

    #[test]
    fn packed_rows_match_the_interleaved_sums() {
        use crate::quantizer::layout::BlockedCodes;
        use crate::quantizer::packing::{pack, packed_len};
        let mut rng = SeededRng::for_data(22);
        for dim in (1..=160).chain([255, 256, 257, 383, 384, 768, 1536]) {
            let levels = codebook_levels(&mut rng);
            let query = Query::new(&random_query(&mut rng, dim));
            let mut store = BlockedCodes::interleaved(dim);
            let mut rows = Vec::new();
            for r in 0..BLOCK {
                // Row 0 all 15s, row 1 all 0s: the extremes of the levels.
                let codes: Vec<u8> = (0..dim)
                    .map(|_| match r {
                        0 => 15,
                        1 => 0,
                        _ => rng.below(16) as u8,
                    })
                    .collect();
                let mut p = vec![0u8; packed_len(dim, 4)];
                pack(&codes, 4, &mut p);
                store.push(&p);
                rows.push(p);
            }
            let mut want = vec![0i32; BLOCK];
            sums_scalar(store.as_bytes(), &levels, &query, &mut want);
            for (r, p) in rows.iter().enumerate() {
                assert_eq!(
                    row_sum_packed(p, &levels, &query),
                    want[r],
                    "dim={dim} row={r}"
                );
                for k in Kernel::available() {
                    assert_eq!(
                        k.dot4_row(p, &levels, &query),
                        want[r],
                        "{k:?} dim={dim} row={r}"
                    );
                }
            }
        }
    }

    #[test]
    fn sums_are_exact_at_the_extremes() {
        // Every level and weight at ±127, at the largest dimension: the widest sums.
        let dim = crate::quantizer::MAX_DIM;
        for (code, sign) in [(15u8, 1.0f32), (0, -1.0), (15, -1.0)] {
            let codes = random_codes(&mut SeededRng::for_data(1), BLOCK, dim, Some(code));
            let mut c = [0.0f32; 16];
            c[0] = -1.0;
            c[15] = 1.0;
            let levels = Levels::new(&c);
            assert_eq!((levels.levels[0], levels.levels[15]), (-127, 127));
            let query = Query::new(&vec![sign; dim]);
            let want = (if code == 15 { 127 } else { -127 }) * (sign as i32) * 127 * dim as i32;
            for k in Kernel::available() {
                let mut got = vec![0i32; BLOCK];
                k.dot4_sums(&codes, &levels, &query, &mut got);
                assert!(got.iter().all(|&s| s == want), "{k:?} {code} {sign}");
            }
        }
    }

    #[test]
    fn top_offers_what_the_scalar_twin_offers() {
        let mut rng = SeededRng::for_data(23);
        for dim in [1usize, 7, 8, 9, 31, 64, 100, 160, 384] {
            // Partial last blocks, dead rows, whole dead blocks.
            // (8 blocks and more: the several-block kernels, then their tails.)
            for rows in [1usize, 31, 32, 33, 95, 200, 300, 530] {
                let codes = random_codes(&mut rng, rows, dim, None);
                let levels = codebook_levels(&mut rng);
                let factor: Vec<f32> = (0..rows).map(|_| 0.5 + rng.open01() as f32).collect();
                let offset: Vec<f32> = (0..rows).map(|_| rng.gaussian() as f32).collect();
                let mut masks: Vec<u32> = (0..rows.div_ceil(BLOCK))
                    .map(|_| rng.next_u64() as u32 | 1)
                    .collect();
                if masks.len() > 2 {
                    masks[1] = 0;
                }
                let rows_ref = Rows {
                    factor: &factor,
                    offset: &offset,
                    masks: &masks,
                };
                for k in Kernel::available() {
                    for nq in 1..=k.dot4_width() {
                        let qs: Vec<Query> = (0..nq)
                            .map(|_| Query::new(&random_query(&mut rng, dim)))
                            .collect();
                        let refs: Vec<&Query> = qs.iter().collect();
                        let scales: Vec<f32> = (0..nq).map(|_| rng.open01() as f32 + 0.1).collect();
                        for keep in [1usize, 5, 1000] {
                            let mut want: Vec<Record> =
                                (0..nq).map(|_| Record::new(keep)).collect();
                            top_scalar(&codes, &levels, &refs, &scales, rows_ref, &mut want);
                            let mut got: Vec<Record> = (0..nq).map(|_| Record::new(keep)).collect();
                            k.dot4_top(&codes, &levels, &refs, &scales, rows_ref, &mut got);
                            for (g, w) in got.iter().zip(&want) {
                                assert_eq!(
                                    g.offers, w.offers,
                                    "{k:?} dim={dim} rows={rows} nq={nq}"
                                );
                                for &(r, _) in &g.offers {
                                    assert!(masks[r / BLOCK] >> (r % BLOCK) & 1 == 1 && r < rows);
                                }
                            }
                            if keep == 1000 {
                                // Nothing is filtered: every live row is offered.
                                let live: usize = (0..rows)
                                    .filter(|&r| masks[r / BLOCK] >> (r % BLOCK) & 1 == 1)
                                    .count();
                                assert_eq!(got[0].offers.len(), live);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_bound_at_a_key_admits_it_and_above_excludes_it() {
        let mut rng = SeededRng::for_data(29);
        let (dim, rows) = (64, 64);
        let codes = random_codes(&mut rng, rows, dim, None);
        let levels = codebook_levels(&mut rng);
        let q = Query::new(&random_query(&mut rng, dim));
        let mut sums = vec![0i32; rows];
        sums_scalar(&codes, &levels, &q, &mut sums);
        let (factor, offset, masks) = (vec![1.0f32; rows], vec![0.0f32; rows], vec![u32::MAX; 2]);
        let keys: Vec<f32> = sums.iter().map(|&s| key(s, 1.0, 1.0, 0.0)).collect();
        let target = keys[17];
        struct Fixed(f32, Vec<usize>);
        impl Sink for Fixed {
            fn bound(&self) -> f32 {
                self.0
            }
            fn offer(&mut self, row: usize, _key: f32) {
                self.1.push(row);
            }
        }
        for k in Kernel::available() {
            for (bound, admits) in [(target, true), (target.next_up(), false)] {
                let mut sink = [Fixed(bound, Vec::new())];
                let rows_ref = Rows {
                    factor: &factor,
                    offset: &offset,
                    masks: &masks,
                };
                k.dot4_top(&codes, &levels, &[&q], &[1.0], rows_ref, &mut sink);
                assert_eq!(sink[0].1.contains(&17), admits, "{k:?} bound={bound}");
                let want: Vec<usize> = (0..rows).filter(|&r| keys[r] >= bound).collect();
                assert_eq!(sink[0].1, want, "{k:?}");
            }
        }
    }

    #[test]
    fn quantization_keeps_scores_close() {
        let mut rng = SeededRng::for_data(31);
        let dim = 384;
        let mut c: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 4.0).collect();
        c[0] = -2.7;
        let levels = Levels::new(&c);
        let q = random_query(&mut rng, dim);
        let query = Query::new(&q);
        let codes = random_codes(&mut rng, BLOCK, dim, None);
        let mut sums = vec![0i32; BLOCK];
        sums_scalar(&codes, &levels, &query, &mut sums);
        for (r, &s) in sums.iter().enumerate() {
            let (mut exact, mut norm) = (0.0f64, 0.0f64);
            let at = 64 * (r / 16) + 4 * (r % 16);
            for j in 0..dim {
                let byte = codes[(j / 8) * GROUP_BYTES + at + (j % 8) % 4];
                let code = if j % 8 < 4 { byte & 15 } else { byte >> 4 };
                let cj = f64::from(c[usize::from(code)]);
                exact += f64::from(q[j]) * cj;
                norm += cj * cj;
            }
            let q_norm: f64 = q.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            let approx = f64::from(levels.step * query.step) * f64::from(s);
            // Within 0.2% of |q|·|ĉ| (the error of u8 FastScan tables is about twice this).
            assert!(
                (approx - exact).abs() < 0.002 * q_norm * norm.sqrt(),
                "{approx} {exact}"
            );
        }
    }
}
