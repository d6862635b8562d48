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
}

impl Kernel {
    /// The best kernel for this CPU, detected once. `GYRE_KERNEL=portable|avx2|avx512|avx512vnni` picks a
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
            Kernel::Avx512 | Kernel::Avx512Vnni => unsafe {
                avx512::scan(codes, columns, tables, out)
            },
        }
    }
}

/// Most queries [`Kernel::scan_multi`] scores per pass.
pub const MAX_MULTI: usize = 4;

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
            Kernel::Avx512 | Kernel::Avx512Vnni => unsafe { fixed!(avx512) },
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
