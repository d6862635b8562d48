//! FastScan: integer sums of u8 table entries selected by the nibbles of 32 vectors at a time.
//!
//! Input: a run of blocks in the [`layout`](crate::quantizer::layout) (each `M' × 16` bytes) and
//! `M' × 16` u8 table entries. Output: for every vector of every block, `Σ_m table[m][nibble_m]`
//! as a u32. [`scan_scalar`] is the reference; [`Kernel::scan`] runs the fastest kernel this CPU
//! has, chosen once by [`Kernel::detect`]. All kernels compute the same integers exactly.
//!
//! The AVX2 kernel looks up 32 nibbles per `vpshufb`, two nibble columns per 256-bit register
//! (one per 128-bit lane), and accumulates in u16 lanes split by even/odd byte position, which
//! cannot overflow for 256 column pairs (256 · 255 < 65536); it widens into u32 every 256 pairs.

use crate::quantizer::layout::BLOCK;

/// A scan kernel family, picked once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, the reference.
    Scalar,
    /// x86-64 AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The best kernel for this CPU (detected once).
    pub fn detect() -> Kernel {
        static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2")
                && std::env::var_os("GYRE_FORCE_SCALAR").is_none()
            {
                return Kernel::Avx2;
            }
            Kernel::Scalar
        })
    }

    /// Every kernel this CPU can run (for parity tests).
    pub fn available() -> Vec<Kernel> {
        let mut v = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            v.push(Kernel::Avx2);
        }
        v
    }

    /// The name reported in benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "portable",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
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
            codes.len().is_multiple_of(block_bytes) && out.len() == codes.len() / block_bytes * BLOCK,
            "buffer sizes"
        );
        match self {
            Kernel::Scalar => scan_scalar(codes, columns, tables, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only constructed after `is_x86_feature_detected!("avx2")`, and
            // the sizes the kernel reads and writes were checked above.
            Kernel::Avx2 => unsafe { avx2::scan(codes, columns, tables, out) },
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
        let low_bytes = _mm256_set1_epi16(0x00ff);
        for (block, sums) in codes
            .chunks_exact(block_bytes)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let mut wide = [0u32; BLOCK];
            let pairs = columns / 2;
            let mut start = 0;
            while start < pairs {
                let end = (start + FLUSH_PAIRS).min(pairs);
                let mut lo_even = _mm256_setzero_si256();
                let mut lo_odd = _mm256_setzero_si256();
                let mut hi_even = _mm256_setzero_si256();
                let mut hi_odd = _mm256_setzero_si256();
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
                    lo_even = _mm256_add_epi16(lo_even, _mm256_and_si256(rlo, low_bytes));
                    lo_odd = _mm256_add_epi16(lo_odd, _mm256_srli_epi16(rlo, 8));
                    hi_even = _mm256_add_epi16(hi_even, _mm256_and_si256(rhi, low_bytes));
                    hi_odd = _mm256_add_epi16(hi_odd, _mm256_srli_epi16(rhi, 8));
                }
                widen(lo_even, &mut wide[..16], 0);
                widen(lo_odd, &mut wide[..16], 1);
                widen(hi_even, &mut wide[16..], 0);
                widen(hi_odd, &mut wide[16..], 1);
                start = end;
            }
            sums.copy_from_slice(&wide);
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
