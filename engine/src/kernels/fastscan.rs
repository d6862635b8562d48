//! FastScan: integer sums of u8 table entries selected by the nibbles of 32 vectors at a time.
//!
//! Input: a run of blocks in the [`layout`](crate::quantizer::layout) (each `M' × 16` bytes) and
//! `M' × 16` u8 table entries. Output: for every vector of every block, `Σ_m table[m][nibble_m]`
//! as a u32. [`scan_scalar`] is the reference; [`Kernel::scan`] runs the fastest kernel this CPU
//! has, chosen once by [`Kernel::detect`]. All kernels compute the same integers exactly.
//!
//! The AVX2 kernel looks up 32 nibbles per `vpshufb`, two nibble columns per 256-bit register
//! (one per 128-bit lane); the AVX-512BW kernel four per 512-bit register. Both accumulate the
//! looked-up bytes as u16 words: `words += r` and `high += r >> 8`, so that the even-byte sums
//! are `words - (high << 8)` modulo 2^16, exact while a sum stays below 65536 (256 steps of at
//! most 255); they widen into u32 every 256 steps.
//!
//! [`Kernel::scan_multi`] scores 2 to [`MAX_MULTI`] queries per pass: each register of codes is
//! loaded and split into nibbles once and shuffled against every query's tables, with each
//! query's accumulators in registers (a batch scans 7–11% faster than query by query).
//! It equals the scalar twin exactly, query by query.
//!
//! [`Kernel::scan_top`] (the fused scan: keys and the heap's bound compared in registers) has a
//! third x86 form where the CPU has AVX-512 VBMI and VNNI: a register of codes holds four
//! columns × 16 byte slots; one `vpermb` transposes it so that each 32-bit lane holds one slot's
//! four columns, the nibbles become indices `16c + nibble` into the four columns' 64 table
//! bytes, one `vpermb` per half looks 64 of them up at once, and `vpdpbusd` adds each lane's
//! four bytes into its row's u32: exact for any table, with no u16 words, flushes or final
//! reduction, and two registers of state per query, so 8 queries share each load.

use super::{Rows, Sink};
use crate::quantizer::layout::BLOCK;

/// A scan kernel family, picked once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, the reference.
    Scalar,
    /// x86-64 AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86-64 AVX-512 F + BW.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// x86-64 AVX-512 F + BW + VNNI: the AVX-512 FastScan kernels, and `vpdpbusd` for the
    /// [`dot4`](super::dot4) kernels of 4-bit codes.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// x86-64 AVX-512 F + BW + VNNI + VBMI: the fused FastScan scan looks nibbles up with
    /// `vpermb` in 64-entry tables (four columns at once) after one byte transposition per
    /// register of codes, and sums each row's four columns exactly into a u32 lane with
    /// `vpdpbusd`: no u16 words, no flushes, no reduction at the end of a block.
    #[cfg(target_arch = "x86_64")]
    Avx512Vbmi,
}

impl Kernel {
    /// The best kernel for this CPU, detected once. `GYRE_KERNEL=portable|avx2|avx512|avx512vnni|avx512vbmi` picks a
    /// slower one for comparisons (an unavailable choice falls back to the best).
    pub fn detect() -> Kernel {
        static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| {
            let available = Kernel::available();
            let wanted = std::env::var("GYRE_KERNEL").ok();
            available
                .iter()
                .copied()
                .find(|k| wanted.as_deref() == Some(k.name()))
                .unwrap_or(
                    *available
                        .last()
                        .expect("the portable kernel is always there"),
                )
        })
    }

    /// Every kernel this CPU can run, slowest first (for parity tests).
    pub fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut v = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                v.push(Kernel::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
            {
                v.push(Kernel::Avx512);
                if std::is_x86_feature_detected!("avx512vnni") {
                    v.push(Kernel::Avx512Vnni);
                    if std::is_x86_feature_detected!("avx512vbmi") {
                        v.push(Kernel::Avx512Vbmi);
                    }
                }
            }
        }
        v
    }

    /// The name reported in benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "portable",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => "avx512vnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vbmi => "avx512vbmi",
        }
    }

    /// Scores `codes.len() / (columns · 16)` whole blocks into `out` (32 sums per block).
    ///
    /// `columns` is the even number of nibble columns; `tables` holds `columns × 16` entries.
    #[inline]
    pub fn scan(self, codes: &[u8], columns: usize, tables: &[u8], out: &mut [u32]) {
        let block_bytes = columns * 16;
        assert!(
            columns.is_multiple_of(2) && tables.len() == block_bytes,
            "tables must cover every column"
        );
        assert!(
            codes.len().is_multiple_of(block_bytes)
                && out.len() == codes.len() / block_bytes * BLOCK,
            "buffer sizes"
        );
        match self {
            Kernel::Scalar => scan_scalar(codes, columns, tables, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only constructed after `is_x86_feature_detected!("avx2")`, and
            // the sizes the kernel reads and writes were checked above.
            Kernel::Avx2 => unsafe { avx2::scan(codes, columns, tables, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512` is only constructed after detecting AVX-512 F and BW, and the
            // sizes the kernel reads and writes were checked above.
            Kernel::Avx512 | Kernel::Avx512Vnni | Kernel::Avx512Vbmi => unsafe {
                avx512::scan(codes, columns, tables, out)
            },
        }
    }
}

/// Most queries [`Kernel::scan_multi`] scores per pass.
pub const MAX_MULTI: usize = 4;

/// Most queries [`Kernel::scan_top`] takes per pass; [`Kernel::top_width`] is how many a kernel
/// scores per load of the codes.
pub const MAX_TOP: usize = 8;

impl Kernel {
    /// [`scan`](Self::scan) for up to [`MAX_MULTI`] queries at once: each 64-byte row of codes
    /// is loaded and split into nibbles once, then looked up in every query's tables, so the
    /// load and split are shared. `outs[q]` receives query `q`'s sums; results equal `scan`'s.
    pub fn scan_multi(
        self,
        codes: &[u8],
        columns: usize,
        tables: &[&[u8]],
        outs: &mut [&mut [u32]],
    ) {
        let block_bytes = columns * 16;
        assert!(
            tables.len() == outs.len() && tables.len() <= MAX_MULTI,
            "one output per table, at most MAX_MULTI"
        );
        assert!(
            columns.is_multiple_of(2) && tables.iter().all(|t| t.len() == block_bytes),
            "tables must cover every column"
        );
        assert!(
            codes.len().is_multiple_of(block_bytes)
                && outs
                    .iter()
                    .all(|o| o.len() == codes.len() / block_bytes * BLOCK),
            "buffer sizes"
        );
        macro_rules! fixed {
            ($m:ident) => {
                // (0 queries: nothing to do; 1 returned above; at most MAX_MULTI, asserted.)
                match tables.len() {
                    2 => $m::scan_multi::<2>(codes, columns, tables, outs),
                    3 => $m::scan_multi::<3>(codes, columns, tables, outs),
                    4 => $m::scan_multi::<4>(codes, columns, tables, outs),
                    _ => {}
                }
            };
        }
        if let ([table], [out]) = (tables, &mut *outs) {
            // One query: the single-query kernel (measured faster than the generic one at Q = 1).
            return self.scan(codes, columns, table, out);
        }
        match self {
            Kernel::Scalar => {
                for (t, o) in tables.iter().zip(outs.iter_mut()) {
                    scan_scalar(codes, columns, t, o);
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only constructed after `is_x86_feature_detected!("avx2")`; the
            // sizes the kernel reads and writes were checked above.
            Kernel::Avx2 => unsafe { fixed!(avx2) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512` is only constructed after detecting AVX-512 F and BW; the sizes
            // were checked above.
            Kernel::Avx512 | Kernel::Avx512Vnni | Kernel::Avx512Vbmi => unsafe { fixed!(avx512) },
        }
    }
}

/// One query of a fused scan ([`Kernel::scan_top`]): its u8 tables and the terms of its
/// estimate `delta · S + bias`.
#[derive(Debug, Clone, Copy)]
pub struct TopQuery<'a> {
    /// `columns × 16` u8 entries.
    pub tables: &'a [u8],
    /// The step of the entries.
    pub delta: f32,
    /// The sum of the tables' offsets.
    pub bias: f32,
}

/// The key of a row in a fused scan: the one formula every kernel uses.
#[inline(always)]
pub fn top_key(sum: u32, q: &TopQuery<'_>, factor: f32, offset: f32) -> f32 {
    offset + factor * (q.delta * sum as f32 + q.bias)
}

impl Kernel {
    /// Queries [`scan_top`](Self::scan_top) scores per load of the codes: 8 for the VBMI
    /// kernel (its accumulators are two registers per query), [`MAX_MULTI`] for the others
    /// (more queries are taken in groups of that many).
    pub fn top_width(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vbmi => MAX_TOP,
            _ => MAX_MULTI,
        }
    }

    /// Scores rows `0..rows.factor.len()` of `codes` (whole blocks covering them) for up to
    /// [`MAX_TOP`] queries and offers each query's sink every live row whose key
    /// [`top_key`] reaches the sink's bound when reached, in row order. The AVX-512 kernels
    /// keep the sums in registers (widened there, not through memory) and compare the keys
    /// with the bound in registers; the others score blocks with [`scan_multi`](Self::scan_multi)
    /// and compare one by one. Every kernel offers exactly what [`top_scalar`] offers.
    pub fn scan_top<S: Sink>(
        self,
        codes: &[u8],
        columns: usize,
        queries: &[TopQuery<'_>],
        rows: Rows<'_>,
        sinks: &mut [S],
    ) {
        let n = rows.factor.len();
        let block_bytes = columns * 16;
        assert!(
            !queries.is_empty() && queries.len() <= MAX_TOP && sinks.len() == queries.len(),
            "one sink per query, at most MAX_TOP"
        );
        assert!(
            columns.is_multiple_of(2)
                && columns > 0
                && queries.iter().all(|q| q.tables.len() == block_bytes),
            "tables must cover every column"
        );
        assert!(
            codes.len() >= n.div_ceil(BLOCK) * block_bytes
                && rows.offset.len() == n
                && rows.masks.len() >= n.div_ceil(BLOCK),
            "buffer sizes"
        );
        let width = self.top_width();
        if queries.len() > width {
            let (qa, qb) = queries.split_at(width);
            let (sa, sb) = sinks.split_at_mut(width);
            self.scan_top(codes, columns, qa, rows, sa);
            return self.scan_top(codes, columns, qb, rows, sb);
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512` and `Avx512Vnni` are only constructed after detecting AVX-512 F
            // and BW; the sizes were checked above.
            Kernel::Avx512 | Kernel::Avx512Vnni => unsafe {
                // A scan of 1.5 KB of tables (d = 384) against one of the rows: free.
                let narrow = queries.iter().all(|q| is_narrow(q.tables));
                match (queries.len(), narrow) {
                    (1, false) => avx512::top::<1, false, S>(codes, columns, queries, rows, sinks),
                    (2, false) => avx512::top::<2, false, S>(codes, columns, queries, rows, sinks),
                    (3, false) => avx512::top::<3, false, S>(codes, columns, queries, rows, sinks),
                    (_, false) => avx512::top::<4, false, S>(codes, columns, queries, rows, sinks),
                    (1, true) => avx512::top::<1, true, S>(codes, columns, queries, rows, sinks),
                    (2, true) => avx512::top::<2, true, S>(codes, columns, queries, rows, sinks),
                    (3, true) => avx512::top::<3, true, S>(codes, columns, queries, rows, sinks),
                    (_, true) => avx512::top::<4, true, S>(codes, columns, queries, rows, sinks),
                }
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Vbmi` is only constructed after detecting AVX-512 F, BW, VNNI and
            // VBMI; the sizes were checked above.
            Kernel::Avx512Vbmi => unsafe {
                let narrow = queries.iter().all(|q| is_narrow(q.tables));
                // Independent accumulator pairs per query (`C`), so that one query's chain of
                // `vpdpbusd` (latency ≈ 4–5 cycles) does not stall the loop: the narrow loop
                // issues one per four quads, the wide one one per quad.
                macro_rules! by_width {
                    ($narrow:literal, $c1:literal, $c2:literal) => {
                        match queries.len() {
                            1 => vbmi::top::<1, $c1, $narrow, S>(
                                codes, columns, queries, rows, sinks,
                            ),
                            2 => vbmi::top::<2, $c2, $narrow, S>(
                                codes, columns, queries, rows, sinks,
                            ),
                            3 => {
                                vbmi::top::<3, 1, $narrow, S>(codes, columns, queries, rows, sinks)
                            }
                            4 => {
                                vbmi::top::<4, 1, $narrow, S>(codes, columns, queries, rows, sinks)
                            }
                            5 => {
                                vbmi::top::<5, 1, $narrow, S>(codes, columns, queries, rows, sinks)
                            }
                            6 => {
                                vbmi::top::<6, 1, $narrow, S>(codes, columns, queries, rows, sinks)
                            }
                            7 => {
                                vbmi::top::<7, 1, $narrow, S>(codes, columns, queries, rows, sinks)
                            }
                            _ => {
                                vbmi::top::<8, 1, $narrow, S>(codes, columns, queries, rows, sinks)
                            }
                        }
                    };
                }
                if narrow {
                    by_width!(true, 2, 1)
                } else {
                    by_width!(false, 4, 2)
                }
            },
            _ => top_by_blocks(self, codes, columns, queries, rows, sinks),
        }
    }
}

/// The keys of block `b`'s two halves of u32 sums (`[top_key]`'s formula, lane by lane, in
/// its order of operations) offered to `sink`: the AVX-512 fused scans' common tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn offer_sums_512<S: Sink>(
    sink: &mut S,
    sums: [std::arch::x86_64::__m512i; 2],
    q: &TopQuery<'_>,
    terms: &[std::arch::x86_64::__m512; 4],
    live: u32,
    b: usize,
) {
    use std::arch::x86_64::*;
    let (delta, bias) = (_mm512_set1_ps(q.delta), _mm512_set1_ps(q.bias));
    let key = |s: __m512i, f: __m512, o: __m512| {
        _mm512_add_ps(
            o,
            _mm512_mul_ps(
                f,
                _mm512_add_ps(_mm512_mul_ps(delta, _mm512_cvtepu32_ps(s)), bias),
            ),
        )
    };
    let [f0, f1, o0, o1] = *terms;
    let (k0, k1) = (key(sums[0], f0, o0), key(sums[1], f1, o1));
    super::offer_block_512(sink, k0, k1, live, b);
}

/// The largest entry of a *narrow* table (the sign plane's, `QueryLut::sign_plane_lut`): four
/// of them sum within a byte.
pub const NARROW_TOP: u8 = 63;

/// Whether every entry of `tables` is at most [`NARROW_TOP`]: then four columns' lookups add
/// in a byte without overflow, and the AVX-512 kernel widens once per four columns instead of
/// once per column (the sign plane's tables are built so).
#[inline]
pub fn is_narrow(tables: &[u8]) -> bool {
    tables.iter().fold(0u8, |m, &t| m.max(t)) <= NARROW_TOP
}

/// The reference of [`Kernel::scan_top`].
pub fn top_scalar<S: Sink>(
    codes: &[u8],
    columns: usize,
    queries: &[TopQuery<'_>],
    rows: Rows<'_>,
    sinks: &mut [S],
) {
    for (qs, ss) in queries.chunks(MAX_MULTI).zip(sinks.chunks_mut(MAX_MULTI)) {
        top_by_blocks(Kernel::Scalar, codes, columns, qs, rows, ss);
    }
}

/// [`Kernel::scan_top`] from a kernel's block sums, compared one by one.
fn top_by_blocks<S: Sink>(
    kernel: Kernel,
    codes: &[u8],
    columns: usize,
    queries: &[TopQuery<'_>],
    rows: Rows<'_>,
    sinks: &mut [S],
) {
    let n = rows.factor.len();
    let bb = columns * 16;
    let mut sums = [[0u32; BLOCK]; MAX_MULTI];
    let tables: [&[u8]; MAX_MULTI] =
        std::array::from_fn(|i| queries.get(i).map_or(&[][..], |q| q.tables));
    for b in 0..n.div_ceil(BLOCK) {
        let live = super::live(&rows, b, n);
        if live == 0 {
            continue;
        }
        let block = &codes[b * bb..(b + 1) * bb];
        {
            let mut outs: [&mut [u32]; MAX_MULTI] = {
                let mut it = sums.iter_mut();
                std::array::from_fn(|_| it.next().map_or(&mut [][..], |s| &mut s[..]))
            };
            kernel.scan_multi(
                block,
                columns,
                &tables[..queries.len()],
                &mut outs[..queries.len()],
            );
        }
        for ((q, s), sink) in queries.iter().zip(&sums).zip(sinks.iter_mut()) {
            let mut bits = live;
            while bits != 0 {
                let j = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let r = b * BLOCK + j;
                let key = top_key(s[j], q, rows.factor[r], rows.offset[r]);
                if key >= sink.bound() {
                    sink.offer(r, key);
                }
            }
        }
    }
}

/// The reference kernel.
pub fn scan_scalar(codes: &[u8], columns: usize, tables: &[u8], out: &mut [u32]) {
    let block_bytes = columns * 16;
    for (block, sums) in codes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        sums.fill(0);
        for (col, table) in block.chunks_exact(16).zip(tables.chunks_exact(16)) {
            for (j, &byte) in col.iter().enumerate() {
                sums[j] += u32::from(table[usize::from(byte & 0x0f)]);
                sums[j + 16] += u32::from(table[usize::from(byte >> 4)]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// Column pairs accumulated in u16 before widening: 256 · 255 = 65280 < 65536.
    const FLUSH_PAIRS: usize = 256;

    /// # Safety
    /// The CPU must support AVX2; `codes` holds whole blocks of `columns · 16` bytes, `tables`
    /// `columns · 16` bytes, `out` 32 sums per block, `columns` is even.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan(codes: &[u8], columns: usize, tables: &[u8], out: &mut [u32]) {
        let block_bytes = columns * 16;
        let low_nibbles = _mm256_set1_epi8(0x0f);
        for (block, sums) in codes
            .chunks_exact(block_bytes)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let mut wide = [0u32; BLOCK];
            let pairs = columns / 2;
            let mut start = 0;
            while start < pairs {
                let end = (start + FLUSH_PAIRS).min(pairs);
                let mut lo_words = _mm256_setzero_si256();
                let mut lo_high = _mm256_setzero_si256();
                let mut hi_words = _mm256_setzero_si256();
                let mut hi_high = _mm256_setzero_si256();
                for p in start..end {
                    // SAFETY: pair `p < columns / 2` covers bytes [32p, 32p + 32) of the block
                    // and of the tables, both `columns · 16` bytes long.
                    let (x, t) = unsafe {
                        (
                            _mm256_loadu_si256(block.as_ptr().add(32 * p).cast()),
                            _mm256_loadu_si256(tables.as_ptr().add(32 * p).cast()),
                        )
                    };
                    let lo = _mm256_and_si256(x, low_nibbles);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles);
                    let rlo = _mm256_shuffle_epi8(t, lo);
                    let rhi = _mm256_shuffle_epi8(t, hi);
                    lo_words = _mm256_add_epi16(lo_words, rlo);
                    lo_high = _mm256_add_epi16(lo_high, _mm256_srli_epi16(rlo, 8));
                    hi_words = _mm256_add_epi16(hi_words, rhi);
                    hi_high = _mm256_add_epi16(hi_high, _mm256_srli_epi16(rhi, 8));
                }
                let lo_even = _mm256_sub_epi16(lo_words, _mm256_slli_epi16(lo_high, 8));
                let hi_even = _mm256_sub_epi16(hi_words, _mm256_slli_epi16(hi_high, 8));
                widen(lo_even, &mut wide[..16], 0);
                widen(lo_high, &mut wide[..16], 1);
                widen(hi_even, &mut wide[16..], 0);
                widen(hi_high, &mut wide[16..], 1);
                start = end;
            }
            sums.copy_from_slice(&wide);
        }
    }

    /// `scan` for `Q` queries sharing each load and nibble split.
    ///
    /// # Safety
    /// As [`scan`], for every table and output (the caller checked `Q` tables and outputs).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan_multi<const Q: usize>(
        codes: &[u8],
        columns: usize,
        tables: &[&[u8]],
        outs: &mut [&mut [u32]],
    ) {
        let block_bytes = columns * 16;
        let low_nibbles = _mm256_set1_epi8(0x0f);
        let pairs = columns / 2;
        // A fixed-size array, so the per-query loop unrolls and the accumulators stay in
        // registers.
        let tables: [*const u8; Q] = std::array::from_fn(|i| tables[i].as_ptr());
        for (b, block) in codes.chunks_exact(block_bytes).enumerate() {
            let mut wide = [[0u32; BLOCK]; Q];
            let mut start = 0;
            while start < pairs {
                let end = (start + FLUSH_PAIRS).min(pairs);
                let zero = _mm256_setzero_si256();
                let mut acc = [[zero; 4]; Q];
                for p in start..end {
                    // SAFETY: pair `p < columns / 2` covers bytes [32p, 32p + 32) of the block.
                    let x = unsafe { _mm256_loadu_si256(block.as_ptr().add(32 * p).cast()) };
                    let lo = _mm256_and_si256(x, low_nibbles);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles);
                    for i in 0..Q {
                        let a = &mut acc[i];
                        // SAFETY: every table is `columns · 16` bytes (checked by the caller).
                        let t = unsafe { _mm256_loadu_si256(tables[i].add(32 * p).cast()) };
                        let rlo = _mm256_shuffle_epi8(t, lo);
                        let rhi = _mm256_shuffle_epi8(t, hi);
                        a[0] = _mm256_add_epi16(a[0], rlo);
                        a[1] = _mm256_add_epi16(a[1], _mm256_srli_epi16(rlo, 8));
                        a[2] = _mm256_add_epi16(a[2], rhi);
                        a[3] = _mm256_add_epi16(a[3], _mm256_srli_epi16(rhi, 8));
                    }
                }
                for (a, w) in acc.iter().zip(wide.iter_mut()) {
                    let lo_even = _mm256_sub_epi16(a[0], _mm256_slli_epi16(a[1], 8));
                    let hi_even = _mm256_sub_epi16(a[2], _mm256_slli_epi16(a[3], 8));
                    widen(lo_even, &mut w[..16], 0);
                    widen(a[1], &mut w[..16], 1);
                    widen(hi_even, &mut w[16..], 0);
                    widen(a[3], &mut w[16..], 1);
                }
                start = end;
            }
            for (w, out) in wide.iter().zip(outs.iter_mut()) {
                out[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(w);
            }
        }
    }

    /// Adds the 16 u16 lanes of `acc` (8 per 128-bit lane, one per even or odd byte slot, the two
    /// lanes holding the two columns of a pair) into vectors `2w + parity` of `half`.
    #[inline(always)]
    fn widen(acc: __m256i, half: &mut [u32], parity: usize) {
        let mut words = [0u16; 16];
        // SAFETY: `words` is 32 bytes, the size of one unaligned 256-bit store.
        unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), acc) };
        for w in 0..8 {
            half[2 * w + parity] += u32::from(words[w]) + u32::from(words[8 + w]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// Steps accumulated in u16 before widening: 256 · 255 = 65280 < 65536.
    const FLUSH_STEPS: usize = 256;

    /// # Safety
    /// The CPU must support AVX-512 F and BW (and so AVX2); `codes` holds whole blocks of
    /// `columns · 16` bytes, `tables` `columns · 16` bytes, `out` 32 sums per block, `columns`
    /// is even.
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    pub(super) unsafe fn scan(codes: &[u8], columns: usize, tables: &[u8], out: &mut [u32]) {
        let block_bytes = columns * 16;
        let quads = columns / 4;
        let low_nibbles = _mm512_set1_epi8(0x0f);
        let low_nibbles_256 = _mm256_set1_epi8(0x0f);
        for (block, sums) in codes
            .chunks_exact(block_bytes)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let mut wide = [0u32; BLOCK];
            let mut start = 0;
            while start < quads {
                let end = (start + FLUSH_STEPS).min(quads);
                let mut lo_words = _mm512_setzero_si512();
                let mut lo_high = _mm512_setzero_si512();
                let mut hi_words = _mm512_setzero_si512();
                let mut hi_high = _mm512_setzero_si512();
                for q in start..end {
                    // SAFETY: quad `q < columns / 4` covers bytes [64q, 64q + 64) of the block and
                    // of the tables, both `columns · 16` bytes long.
                    let (x, t) = unsafe {
                        (
                            _mm512_loadu_si512(block.as_ptr().add(64 * q).cast()),
                            _mm512_loadu_si512(tables.as_ptr().add(64 * q).cast()),
                        )
                    };
                    let lo = _mm512_and_si512(x, low_nibbles);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), low_nibbles);
                    let rlo = _mm512_shuffle_epi8(t, lo);
                    let rhi = _mm512_shuffle_epi8(t, hi);
                    lo_words = _mm512_add_epi16(lo_words, rlo);
                    lo_high = _mm512_add_epi16(lo_high, _mm512_srli_epi16(rlo, 8));
                    hi_words = _mm512_add_epi16(hi_words, rhi);
                    hi_high = _mm512_add_epi16(hi_high, _mm512_srli_epi16(rhi, 8));
                }
                let lo_even = _mm512_sub_epi16(lo_words, _mm512_slli_epi16(lo_high, 8));
                let hi_even = _mm512_sub_epi16(hi_words, _mm512_slli_epi16(hi_high, 8));
                widen(lo_even, &mut wide[..16], 0);
                widen(lo_high, &mut wide[..16], 1);
                widen(hi_even, &mut wide[16..], 0);
                widen(hi_high, &mut wide[16..], 1);
                start = end;
            }
            if columns % 4 == 2 {
                // The last pair of columns, at 256 bits (one step: no overflow concern).
                let at = 64 * quads;
                // SAFETY: the last pair covers bytes [64·quads, 64·quads + 32) = the final 32
                // bytes of the block and of the tables.
                let (x, t) = unsafe {
                    (
                        _mm256_loadu_si256(block.as_ptr().add(at).cast()),
                        _mm256_loadu_si256(tables.as_ptr().add(at).cast()),
                    )
                };
                let lo = _mm256_and_si256(x, low_nibbles_256);
                let hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles_256);
                let rlo = _mm256_shuffle_epi8(t, lo);
                let rhi = _mm256_shuffle_epi8(t, hi);
                let mut bytes = [0u8; 64];
                // SAFETY: `bytes` holds two 32-byte stores.
                unsafe {
                    _mm256_storeu_si256(bytes.as_mut_ptr().cast(), rlo);
                    _mm256_storeu_si256(bytes.as_mut_ptr().add(32).cast(), rhi);
                }
                for j in 0..16 {
                    wide[j] += u32::from(bytes[j]) + u32::from(bytes[16 + j]);
                    wide[16 + j] += u32::from(bytes[32 + j]) + u32::from(bytes[48 + j]);
                }
            }
            sums.copy_from_slice(&wide);
        }
    }

    /// `scan` for `Q` queries sharing each load and nibble split.
    ///
    /// # Safety
    /// As [`scan`], for every table and output (the caller checked `Q` tables and outputs).
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    pub(super) unsafe fn scan_multi<const Q: usize>(
        codes: &[u8],
        columns: usize,
        tables: &[&[u8]],
        outs: &mut [&mut [u32]],
    ) {
        let block_bytes = columns * 16;
        let quads = columns / 4;
        let low_nibbles = _mm512_set1_epi8(0x0f);
        let low_nibbles_256 = _mm256_set1_epi8(0x0f);
        // A fixed-size array, so the per-query loop unrolls and the accumulators stay in
        // registers.
        let tables: [*const u8; Q] = std::array::from_fn(|i| tables[i].as_ptr());
        for (b, block) in codes.chunks_exact(block_bytes).enumerate() {
            let mut wide = [[0u32; BLOCK]; Q];
            let mut start = 0;
            while start < quads {
                let end = (start + FLUSH_STEPS).min(quads);
                let zero = _mm512_setzero_si512();
                let mut acc = [[zero; 4]; Q];
                for q in start..end {
                    // SAFETY: quad `q < columns / 4` covers bytes [64q, 64q + 64) of the block.
                    let x = unsafe { _mm512_loadu_si512(block.as_ptr().add(64 * q).cast()) };
                    let lo = _mm512_and_si512(x, low_nibbles);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), low_nibbles);
                    for i in 0..Q {
                        let a = &mut acc[i];
                        // SAFETY: every table is `columns · 16` bytes (checked by the caller).
                        let t = unsafe { _mm512_loadu_si512(tables[i].add(64 * q).cast()) };
                        let rlo = _mm512_shuffle_epi8(t, lo);
                        let rhi = _mm512_shuffle_epi8(t, hi);
                        a[0] = _mm512_add_epi16(a[0], rlo);
                        a[1] = _mm512_add_epi16(a[1], _mm512_srli_epi16(rlo, 8));
                        a[2] = _mm512_add_epi16(a[2], rhi);
                        a[3] = _mm512_add_epi16(a[3], _mm512_srli_epi16(rhi, 8));
                    }
                }
                for (a, w) in acc.iter().zip(wide.iter_mut()) {
                    let lo_even = _mm512_sub_epi16(a[0], _mm512_slli_epi16(a[1], 8));
                    let hi_even = _mm512_sub_epi16(a[2], _mm512_slli_epi16(a[3], 8));
                    widen(lo_even, &mut w[..16], 0);
                    widen(a[1], &mut w[..16], 1);
                    widen(hi_even, &mut w[16..], 0);
                    widen(a[3], &mut w[16..], 1);
                }
                start = end;
            }
            if columns % 4 == 2 {
                let at = 64 * quads;
                // SAFETY: the last pair covers the final 32 bytes of the block and the tables.
                let x = unsafe { _mm256_loadu_si256(block.as_ptr().add(at).cast()) };
                let lo = _mm256_and_si256(x, low_nibbles_256);
                let hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles_256);
                for (w, table) in wide.iter_mut().zip(tables) {
                    // SAFETY: as above, for this query's table.
                    let t = unsafe { _mm256_loadu_si256(table.add(at).cast()) };
                    let rlo = _mm256_shuffle_epi8(t, lo);
                    let rhi = _mm256_shuffle_epi8(t, hi);
                    let mut bytes = [0u8; 64];
                    // SAFETY: `bytes` holds two 32-byte stores.
                    unsafe {
                        _mm256_storeu_si256(bytes.as_mut_ptr().cast(), rlo);
                        _mm256_storeu_si256(bytes.as_mut_ptr().add(32).cast(), rhi);
                    }
                    for j in 0..16 {
                        w[j] += u32::from(bytes[j]) + u32::from(bytes[16 + j]);
                        w[16 + j] += u32::from(bytes[32 + j]) + u32::from(bytes[48 + j]);
                    }
                }
            }
            for (w, out) in wide.iter().zip(outs.iter_mut()) {
                out[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(w);
            }
        }
    }

    /// Adds the 32 u16 lanes of `acc` (8 per 128-bit lane, one per even or odd byte slot; the four
    /// lanes hold four columns) into vectors `2w + parity` of `half`.
    #[inline(always)]
    fn widen(acc: __m512i, half: &mut [u32], parity: usize) {
        let mut words = [0u16; 32];
        // SAFETY: `words` is 64 bytes, the size of one unaligned 512-bit store.
        unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), acc) };
        for w in 0..8 {
            half[2 * w + parity] += u32::from(words[w])
                + u32::from(words[8 + w])
                + u32::from(words[16 + w])
                + u32::from(words[24 + w]);
        }
    }

    /// Sums of 4 columns' u16 lanes folded to 8 u32: `Σ_k x[k][w]` for the 8 slots `w`.
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    #[inline]
    fn fold(x: __m512i) -> __m256i {
        let a = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(x));
        let b = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(x));
        let c = _mm512_add_epi32(a, b);
        _mm256_add_epi32(_mm512_castsi512_si256(c), _mm512_extracti64x4_epi64::<1>(c))
    }

    /// The u32 sums of vectors 0..16 and 16..32 from one flush of accumulators (`words`,
    /// `high` of the low and high nibbles), in row order.
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    #[inline]
    fn reduce(acc: &[__m512i; 4]) -> (__m512i, __m512i) {
        let idx = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
        let lo_even = fold(_mm512_sub_epi16(acc[0], _mm512_slli_epi16(acc[1], 8)));
        let hi_even = fold(_mm512_sub_epi16(acc[2], _mm512_slli_epi16(acc[3], 8)));
        let (lo_odd, hi_odd) = (fold(acc[1]), fold(acc[3]));
        let lo = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo_even), lo_odd);
        let hi = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(hi_even), hi_odd);
        (
            _mm512_permutexvar_epi32(idx, lo),
            _mm512_permutexvar_epi32(idx, hi),
        )
    }

    /// The fused scan of `Q` queries (see `Kernel::scan_top`). With `NARROW` (every table
    /// entry ≤ `NARROW_TOP`), four quads' lookups are added in bytes (at most 4 · 63 = 252)
    /// before the u16 accumulation, which then takes a quarter of the shifts and adds.
    ///
    /// # Safety
    /// AVX-512 F and BW; sizes as checked by `Kernel::scan_top`, `Q` queries and sinks; with
    /// `NARROW`, no table entry above `NARROW_TOP`.
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    pub(super) unsafe fn top<const Q: usize, const NARROW: bool, S: super::Sink>(
        codes: &[u8],
        columns: usize,
        queries: &[super::TopQuery<'_>],
        rows: super::Rows<'_>,
        sinks: &mut [S],
    ) {
        let n = rows.factor.len();
        let block_bytes = columns * 16;
        let quads = columns / 4;
        let tail = columns % 4 == 2;
        let m = _mm512_set1_epi8(0x0f);
        let m256 = _mm256_set1_epi8(0x0f);
        let tables: [*const u8; Q] = std::array::from_fn(|i| queries[i].tables.as_ptr());
        let zero = _mm512_setzero_si512();
        let limit = codes.as_ptr_range().end;
        // A fixed distance ahead of each load (measured: 512–1024 bytes best on docs-minilm's
        // sign plane, single query).
        let ahead = 1024;
        for b in 0..n.div_ceil(BLOCK) {
            let live = crate::kernels::live(&rows, b, n);
            if live == 0 {
                continue;
            }
            // SAFETY: block `b` is whole inside `codes` (checked by the caller).
            let block = unsafe { codes.as_ptr().add(b * block_bytes) };
            let mut tot = [[zero; 2]; Q];
            let mut start = 0;
            loop {
                // 256 steps of at most 255 per u16 lane, plus the tail pair: 257 · 255 < 2¹⁶.
                let end = (start + FLUSH_STEPS).min(quads);
                let mut acc = [[zero; 4]; Q];
                let mut qd = start;
                if NARROW {
                    while qd + 4 <= end {
                        let mut lo = [zero; 4];
                        let mut hi = [zero; 4];
                        for u in 0..4 {
                            let pf = block.wrapping_add(64 * (qd + u) + ahead);
                            if pf < limit {
                                _mm_prefetch::<_MM_HINT_T0>(pf.cast());
                            }
                            // SAFETY: quad `qd + u < end ≤ columns / 4` is inside the block.
                            let x = unsafe { _mm512_loadu_si512(block.add(64 * (qd + u)).cast()) };
                            lo[u] = _mm512_and_si512(x, m);
                            hi[u] = _mm512_and_si512(_mm512_srli_epi16(x, 4), m);
                        }
                        for i in 0..Q {
                            let mut rlo = zero;
                            let mut rhi = zero;
                            for u in 0..4 {
                                // SAFETY: every table is `columns · 16` bytes (checked by the
                                // caller); quad `qd + u` is inside it.
                                let t = unsafe {
                                    _mm512_loadu_si512(tables[i].add(64 * (qd + u)).cast())
                                };
                                // Entries ≤ 63: four of them stay below 256.
                                rlo = _mm512_add_epi8(rlo, _mm512_shuffle_epi8(t, lo[u]));
                                rhi = _mm512_add_epi8(rhi, _mm512_shuffle_epi8(t, hi[u]));
                            }
                            let a = &mut acc[i];
                            a[0] = _mm512_add_epi16(a[0], rlo);
                            a[1] = _mm512_add_epi16(a[1], _mm512_srli_epi16(rlo, 8));
                            a[2] = _mm512_add_epi16(a[2], rhi);
                            a[3] = _mm512_add_epi16(a[3], _mm512_srli_epi16(rhi, 8));
                        }
                        qd += 4;
                    }
                }
                for qd in qd..end {
                    // Only the address is formed (wrapping) and prefetched inside the codes.
                    let pf = block.wrapping_add(64 * qd + ahead);
                    if pf < limit {
                        _mm_prefetch::<_MM_HINT_T0>(pf.cast());
                    }
                    // SAFETY: quad `qd < columns / 4` covers bytes [64qd, 64qd + 64) of the block.
                    let x = unsafe { _mm512_loadu_si512(block.add(64 * qd).cast()) };
                    let lo = _mm512_and_si512(x, m);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), m);
                    for i in 0..Q {
                        // SAFETY: every table is `columns · 16` bytes (checked by the caller).
                        let t = unsafe { _mm512_loadu_si512(tables[i].add(64 * qd).cast()) };
                        let rlo = _mm512_shuffle_epi8(t, lo);
                        let rhi = _mm512_shuffle_epi8(t, hi);
                        let a = &mut acc[i];
                        a[0] = _mm512_add_epi16(a[0], rlo);
                        a[1] = _mm512_add_epi16(a[1], _mm512_srli_epi16(rlo, 8));
                        a[2] = _mm512_add_epi16(a[2], rhi);
                        a[3] = _mm512_add_epi16(a[3], _mm512_srli_epi16(rhi, 8));
                    }
                }
                if end == quads && tail {
                    let at = 64 * quads;
                    // SAFETY: the last pair covers the final 32 bytes of the block.
                    let x = unsafe { _mm256_loadu_si256(block.add(at).cast()) };
                    let lo = _mm256_and_si256(x, m256);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m256);
                    for i in 0..Q {
                        // SAFETY: as above, for this query's table.
                        let t = unsafe { _mm256_loadu_si256(tables[i].add(at).cast()) };
                        let rlo = _mm512_zextsi256_si512(_mm256_shuffle_epi8(t, lo));
                        let rhi = _mm512_zextsi256_si512(_mm256_shuffle_epi8(t, hi));
                        let a = &mut acc[i];
                        a[0] = _mm512_add_epi16(a[0], rlo);
                        a[1] = _mm512_add_epi16(a[1], _mm512_srli_epi16(rlo, 8));
                        a[2] = _mm512_add_epi16(a[2], rhi);
                        a[3] = _mm512_add_epi16(a[3], _mm512_srli_epi16(rhi, 8));
                    }
                }
                for i in 0..Q {
                    let (l, h) = reduce(&acc[i]);
                    tot[i][0] = _mm512_add_epi32(tot[i][0], l);
                    tot[i][1] = _mm512_add_epi32(tot[i][1], h);
                }
                start = end;
                if start >= quads {
                    break;
                }
            }
            let terms = crate::kernels::block_terms_512(&rows, b, n);
            for i in 0..Q {
                super::offer_sums_512(&mut sinks[i], tot[i], &queries[i], &terms, live, b);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vbmi {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// `y[4j + c] = x[16c + j]`: a register of four columns × 16 byte slots becomes 16 u32
    /// lanes, lane `j` holding slot `j` of the four columns (rows `j` and `j + 16`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    #[inline]
    fn transpose_index() -> __m512i {
        let mut idx = [0u8; 64];
        for (p, v) in idx.iter_mut().enumerate() {
            *v = (16 * (p % 4) + p / 4) as u8;
        }
        // SAFETY: 64 bytes, one unaligned 512-bit load.
        unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
    }

    /// The lookup indices of one register of codes `x` (four columns × 16 byte slots): bytes
    /// transposed by `tr` so that lane `j` holds slot `j` of the four columns, then
    /// `16c + nibble` from the low nibbles (rows 0..16) and from the high ones (rows 16..32).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    #[inline]
    fn indices(x: __m512i, tr: __m512i, nib: __m512i, colsel: __m512i) -> (__m512i, __m512i) {
        // (a & b) | c
        const AND_OR: i32 = 0xEA;
        let y = _mm512_permutexvar_epi8(tr, x);
        (
            _mm512_ternarylogic_epi32::<AND_OR>(y, nib, colsel),
            _mm512_ternarylogic_epi32::<AND_OR>(_mm512_srli_epi16(y, 4), nib, colsel),
        )
    }

    /// Looks the indices up in the four columns' table bytes `t` and adds each lane's four
    /// entries into the row sums `acc` (rows 0..16, 16..32).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
    #[inline]
    fn look(acc: &mut [__m512i; 2], lo: __m512i, hi: __m512i, t: __m512i, ones: __m512i) {
        acc[0] = _mm512_dpbusd_epi32(acc[0], _mm512_permutexvar_epi8(lo, t), ones);
        acc[1] = _mm512_dpbusd_epi32(acc[1], _mm512_permutexvar_epi8(hi, t), ones);
    }

    /// The fused scan of `Q` queries (see `Kernel::scan_top`), exact in u32 for any tables.
    ///
    /// Per register of codes (four nibble columns of 32 rows): one `vpermb` moves each slot's
    /// four columns into one u32 lane, two `vpternlogd` form the indices `16c + nibble` (low
    /// nibbles: rows 0..16, high: rows 16..32); per query, two `vpermb` look the indices up
    /// in the four columns' 64 table bytes and two `vpdpbusd` add each lane's four bytes into
    /// its row's u32.
    ///
    /// # Safety
    /// AVX-512 F, BW, VNNI and VBMI; sizes as checked by `Kernel::scan_top`, `Q` queries and
    /// sinks.
    // The chain index is a loop counter over a constant range on purpose: unrolled, it is a
    // constant, and the accumulators stay in registers.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx2")]
    pub(super) unsafe fn top<const Q: usize, const C: usize, const NARROW: bool, S: super::Sink>(
        codes: &[u8],
        columns: usize,
        queries: &[super::TopQuery<'_>],
        rows: super::Rows<'_>,
        sinks: &mut [S],
    ) {
        let n = rows.factor.len();
        let block_bytes = columns * 16;
        let quads = columns / 4;
        let tail = columns % 4 == 2;
        let nib = _mm512_set1_epi8(0x0f);
        let ones = _mm512_set1_epi8(1);
        let colsel = _mm512_set1_epi32(0x3020_1000);
        let tr = transpose_index();
        let tables: [*const u8; Q] = std::array::from_fn(|i| queries[i].tables.as_ptr());
        let zero = _mm512_setzero_si512();
        let limit = codes.as_ptr_range().end;
        let ahead = 1024;
        for b in 0..n.div_ceil(BLOCK) {
            let live = crate::kernels::live(&rows, b, n);
            if live == 0 {
                continue;
            }
            // SAFETY: block `b` is whole inside `codes` (checked by the caller).
            let block = unsafe { codes.as_ptr().add(b * block_bytes) };
            // acc[i][c][h]: query i, chain c, rows 16h..16h+16.
            let mut acc = [[[zero; 2]; C]; Q];
            // One quad into chain `c` of every query.
            macro_rules! quad {
                ($qd:expr, $c:expr) => {{
                    let qd = $qd;
                    let pf = block.wrapping_add(64 * qd + ahead);
                    if pf < limit {
                        _mm_prefetch::<_MM_HINT_T0>(pf.cast());
                    }
                    // SAFETY: quad `qd < columns / 4` covers bytes [64qd, 64qd + 64) of the
                    // block.
                    let x = unsafe { _mm512_loadu_si512(block.add(64 * qd).cast()) };
                    let (lo, hi) = indices(x, tr, nib, colsel);
                    for i in 0..Q {
                        // SAFETY: every table is `columns · 16` bytes (checked by the caller);
                        // quad `qd` is inside it.
                        let t = unsafe { _mm512_loadu_si512(tables[i].add(64 * qd).cast()) };
                        look(&mut acc[i][$c], lo, hi, t, ones);
                    }
                }};
            }
            let mut qd = 0;
            if NARROW {
                // Four quads' entries (each ≤ 63) add up in bytes; one `vpdpbusd` per four
                // quads and half then widens them, taking load off the ports `vpermb` needs.
                macro_rules! four {
                    ($qd:expr, $c:expr) => {{
                        let qd = $qd;
                        let mut lo = [zero; 4];
                        let mut hi = [zero; 4];
                        for v in 0..4 {
                            let pf = block.wrapping_add(64 * (qd + v) + ahead);
                            if pf < limit {
                                _mm_prefetch::<_MM_HINT_T0>(pf.cast());
                            }
                            // SAFETY: quad `qd + v < columns / 4` is inside the block.
                            let x = unsafe { _mm512_loadu_si512(block.add(64 * (qd + v)).cast()) };
                            (lo[v], hi[v]) = indices(x, tr, nib, colsel);
                        }
                        for i in 0..Q {
                            let mut rlo = zero;
                            let mut rhi = zero;
                            for v in 0..4 {
                                // SAFETY: every table is `columns · 16` bytes (checked by the
                                // caller); quad `qd + v` is inside it.
                                let t = unsafe {
                                    _mm512_loadu_si512(tables[i].add(64 * (qd + v)).cast())
                                };
                                rlo = _mm512_add_epi8(rlo, _mm512_permutexvar_epi8(lo[v], t));
                                rhi = _mm512_add_epi8(rhi, _mm512_permutexvar_epi8(hi[v], t));
                            }
                            let a = &mut acc[i][$c];
                            a[0] = _mm512_dpbusd_epi32(a[0], rlo, ones);
                            a[1] = _mm512_dpbusd_epi32(a[1], rhi, ones);
                        }
                    }};
                }
                while qd + 4 * C <= quads {
                    for c in 0..C {
                        four!(qd + 4 * c, c);
                    }
                    qd += 4 * C;
                }
                while qd + 4 <= quads {
                    four!(qd, 0);
                    qd += 4;
                }
            }
            while qd + C <= quads {
                for c in 0..C {
                    quad!(qd + c, c);
                }
                qd += C;
            }
            while qd < quads {
                quad!(qd, 0);
                qd += 1;
            }
            if tail {
                let at = 64 * quads;
                // SAFETY: the last pair covers the final 32 bytes of the block and of every
                // table; the masked loads read only those (the upper half is zero, and so are
                // the looked-up entries of the two missing columns).
                let x = unsafe { _mm512_maskz_loadu_epi8(0xffff_ffff, block.add(at).cast()) };
                let (lo, hi) = indices(x, tr, nib, colsel);
                for i in 0..Q {
                    // SAFETY: as above, for this query's table.
                    let t =
                        unsafe { _mm512_maskz_loadu_epi8(0xffff_ffff, tables[i].add(at).cast()) };
                    look(&mut acc[i][0], lo, hi, t, ones);
                }
            }
            let terms = crate::kernels::block_terms_512(&rows, b, n);
            for i in 0..Q {
                let mut s0 = acc[i][0][0];
                let mut s1 = acc[i][0][1];
                for a in &acc[i][1..] {
                    s0 = _mm512_add_epi32(s0, a[0]);
                    s1 = _mm512_add_epi32(s1, a[1]);
                }
                super::offer_sums_512(&mut sinks[i], [s0, s1], &queries[i], &terms, live, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRng;

    fn random_bytes(rng: &mut SeededRng, n: usize) -> Vec<u8> {
        (0..n).map(|_| rng.next_u64() as u8).collect()
    }

    fn check(codes: &[u8], columns: usize, tables: &[u8]) {
        let blocks = codes.len() / (columns * 16);
        let mut want = vec![0u32; blocks * BLOCK];
        scan_scalar(codes, columns, tables, &mut want);
        for k in Kernel::available() {
            let mut got = vec![u32::MAX; blocks * BLOCK];
            k.scan(codes, columns, tables, &mut got);
            assert_eq!(got, want, "{k:?} columns={columns} blocks={blocks}");
        }
    }

    #[test]
    fn kernels_match_the_scalar_twin_on_random_inputs() {
        let mut rng = SeededRng::for_data(9);
        // Every even column count up to 160 (dims 1..=160 at 4 bits, 1..=320 at 2 bits), and
        // large ones that cross the u16 flush boundary (512 columns = 256 pairs).
        let columns: Vec<usize> = (1..=80)
            .map(|c| 2 * c)
            .chain([510, 512, 514, 1536, 3072])
            .collect();
        for c in columns {
            for blocks in [1usize, 2, 5] {
                let codes = random_bytes(&mut rng, blocks * c * 16);
                let tables = random_bytes(&mut rng, c * 16);
                check(&codes, c, &tables);
            }
        }
    }

    /// The multi-query kernels equal the scalar twin query by query, for 1 to 4 queries,
    /// every even column count up to 160, across the flush boundary, and on extreme tables.
    #[test]
    fn multi_query_kernels_match_the_scalar_twin() {
        let mut rng = SeededRng::for_data(11);
        let columns: Vec<usize> = (1..=80)
            .map(|c| 2 * c)
            .chain([510, 512, 514, 1538])
            .collect();
        for c in columns {
            for blocks in [1usize, 3] {
                for q in 1..=MAX_MULTI {
                    let codes = random_bytes(&mut rng, blocks * c * 16);
                    let mut tables: Vec<Vec<u8>> =
                        (0..q).map(|_| random_bytes(&mut rng, c * 16)).collect();
                    if c == 514 {
                        tables[0] = vec![255; c * 16];
                    }
                    let want: Vec<Vec<u32>> = tables
                        .iter()
                        .map(|t| {
                            let mut w = vec![0u32; blocks * BLOCK];
                            scan_scalar(&codes, c, t, &mut w);
                            w
                        })
                        .collect();
                    let refs: Vec<&[u8]> = tables.iter().map(Vec::as_slice).collect();
                    for k in Kernel::available() {
                        let mut got = vec![vec![u32::MAX; blocks * BLOCK]; q];
                        let mut outs: Vec<&mut [u32]> =
                            got.iter_mut().map(Vec::as_mut_slice).collect();
                        k.scan_multi(&codes, c, &refs, &mut outs);
                        assert_eq!(got, want, "{k:?} columns={c} blocks={blocks} queries={q}");
                    }
                }
            }
        }
    }

    #[test]
    fn kernels_match_on_extreme_values() {
        for c in [2usize, 512, 514, 3072] {
            // Every entry 255 and every nibble selecting it: the largest possible sums.
            check(&vec![0xff; 3 * c * 16], c, &vec![255; c * 16]);
            check(&vec![0x00; c * 16], c, &vec![255; c * 16]);
            check(
                &vec![0xf0; c * 16],
                c,
                &(0..c * 16)
                    .map(|i| if i % 16 == 15 { 255 } else { 0 })
                    .collect::<Vec<_>>(),
            );
            check(&vec![0x0f; c * 16], c, &vec![0; c * 16]);
        }
        let mut out = vec![0u32; BLOCK];
        Kernel::detect().scan(
            &vec![0xff; 3072 * 16],
            3072,
            &vec![255; 3072 * 16],
            &mut out,
        );
        assert!(
            out.iter().all(|&s| s == 3072 * 255),
            "no overflow at 3072 columns"
        );
    }

    use crate::kernels::Record;

    /// The fused kernels offer exactly what the scalar twin offers, in the same order: every
    /// even column count up to 160, across the flush boundary (with and without the tail
    /// pair), 1 to 8 queries, partial last blocks, dead rows and blocks, saturated tables.
    #[test]
    fn fused_kernels_offer_what_the_scalar_twin_offers() {
        let mut rng = SeededRng::for_data(13);
        let columns: Vec<usize> = (1..=80)
            .map(|c| 2 * c)
            .chain([1022, 1024, 1026, 1538])
            .collect();
        for c in columns {
            for rows in [1usize, 33, 100] {
                let blocks = rows.div_ceil(BLOCK);
                let codes = random_bytes(&mut rng, blocks * c * 16);
                let factor: Vec<f32> = (0..rows).map(|_| 0.5 + rng.open01() as f32).collect();
                let offset: Vec<f32> = (0..rows).map(|_| rng.gaussian() as f32).collect();
                let mut masks: Vec<u32> = (0..blocks).map(|_| rng.next_u64() as u32 | 2).collect();
                if blocks > 2 {
                    masks[1] = 0;
                }
                let r = Rows {
                    factor: &factor,
                    offset: &offset,
                    masks: &masks,
                };
                let q = 1 + (c / 2) % MAX_TOP;
                // Wide tables (any byte), then narrow ones (the sign plane's: ≤ NARROW_TOP,
                // which the AVX-512 kernel sums in bytes four columns at a time).
                for narrow in [false, true] {
                    let top = if narrow { NARROW_TOP } else { u8::MAX };
                    let mut tables: Vec<Vec<u8>> = (0..q)
                        .map(|_| {
                            let t = random_bytes(&mut rng, c * 16);
                            t.into_iter()
                                .map(|b| if narrow { b % (NARROW_TOP + 1) } else { b })
                                .collect()
                        })
                        .collect();
                    if c == 1026 || c == 1538 || (narrow && (c == 160 || c == 8)) {
                        tables[0] = vec![top; c * 16];
                    }
                    assert_eq!(is_narrow(&tables[0]), narrow || c == 0);
                    let qs: Vec<TopQuery<'_>> = tables
                        .iter()
                        .map(|t| TopQuery {
                            tables: t,
                            delta: 0.01 + rng.open01() as f32,
                            bias: rng.gaussian() as f32,
                        })
                        .collect();
                    for keep in [1usize, 7, 1000] {
                        let mut want: Vec<Record> = (0..q).map(|_| Record::new(keep)).collect();
                        top_scalar(&codes, c, &qs, r, &mut want);
                        for k in Kernel::available() {
                            let mut got: Vec<Record> = (0..q).map(|_| Record::new(keep)).collect();
                            k.scan_top(&codes, c, &qs, r, &mut got);
                            for (g, w) in got.iter().zip(&want) {
                                assert_eq!(
                                    g.offers, w.offers,
                                    "{k:?} columns={c} rows={rows} q={q}"
                                );
                            }
                        }
                        if keep == 1000 {
                            let live = (0..rows)
                                .filter(|&i| masks[i / BLOCK] >> (i % BLOCK) & 1 == 1)
                                .count();
                            assert_eq!(want[0].offers.len(), live);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fused_bound_edges() {
        let mut rng = SeededRng::for_data(17);
        let (c, rows) = (96usize, 64usize);
        let codes = random_bytes(&mut rng, 2 * c * 16);
        let tables = random_bytes(&mut rng, c * 16);
        let q = TopQuery {
            tables: &tables,
            delta: 0.37,
            bias: -1.5,
        };
        let mut sums = vec![0u32; rows];
        scan_scalar(&codes, c, &tables, &mut sums);
        let (factor, offset, masks) = (vec![1.25f32; rows], vec![0.5f32; rows], vec![u32::MAX; 2]);
        let target = top_key(sums[40], &q, 1.25, 0.5);
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
                let r = Rows {
                    factor: &factor,
                    offset: &offset,
                    masks: &masks,
                };
                k.scan_top(&codes, c, &[q], r, &mut sink);
                assert_eq!(sink[0].1.contains(&40), admits, "{k:?}");
                let want: Vec<usize> = (0..rows)
                    .filter(|&i| top_key(sums[i], &q, 1.25, 0.5) >= bound)
                    .collect();
                assert_eq!(sink[0].1, want, "{k:?}");
            }
        }
    }

    #[test]
    fn reports_which_kernels_ran() {
        let names: Vec<&str> = Kernel::available().iter().map(|k| k.name()).collect();
        #[allow(clippy::print_stderr)]
        {
            eprintln!("fastscan kernels tested on this CPU: {names:?}");
        }
        assert!(names.contains(&"portable"));
    }
}
