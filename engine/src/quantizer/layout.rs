//! The blocked FastScan layout of 1-, 2- and 4-bit codes.
//!
//! A vector's packed code (see [`packing`](super::packing)) is a sequence of 4-bit *nibbles*:
//! nibble `m` holds coordinate `m` at 4 bits, coordinates `2m, 2m+1` at 2 bits, `4m..4m+4` at
//! 1 bit. There are `M = ⌈d·b/4⌉` nibbles, padded to an even `M'` with zero nibbles.
//!
//! Vectors are stored in blocks of [`BLOCK`] = 32. A block is `M' × 16` bytes: for nibble
//! column `m`, the 16 bytes at offset `16·m` hold, in byte `j`, vector `j`'s nibble `m` in the low
//! half and vector `j + 16`'s nibble `m` in the high half. One 16-entry table lookup per half
//! (`pshufb`) then scores all 32 vectors of the block for that nibble. Slots past the last
//! vector hold zero nibbles. This byte layout is part of the segment format (docs/format.md).

use crate::error::{Error, Result};

/// Vectors per block.
pub const BLOCK: usize = 32;

/// Bit widths the blocked layout supports.
pub fn supports(bits: u8) -> bool {
    matches!(bits, 1 | 2 | 4)
}

/// The bits per coordinate of the blocked layout that scans `bits`-bit codes: the codes
/// themselves at 1, 2 and 4 bits, their 4-bit [`prefix_code`] at 3 and 5..=8 bits.
pub fn scan_bits(bits: u8) -> Option<u8> {
    match bits {
        1 | 2 | 4 => Some(bits),
        3 | 5..=8 => Some(4),
        _ => None,
    }
}

/// The 4-bit prefix of a `bits`-bit code (3 or 5..=8 bits): the code itself at 3 bits, its top
/// four bits above.
#[inline]
pub fn prefix_code(code: u8, bits: u8) -> u8 {
    if bits <= 4 { code } else { code >> (bits - 4) }
}

/// Packs the 4-bit prefixes of `bits`-bit packed codes (3 or 5..=8 bits) into `out`
/// (`⌈dim/2⌉` bytes); `scratch` holds `dim` bytes.
pub fn pack_prefix(packed: &[u8], bits: u8, dim: usize, scratch: &mut [u8], out: &mut [u8]) {
    super::packing::unpack(packed, bits, &mut scratch[..dim]);
    for c in &mut scratch[..dim] {
        *c = prefix_code(*c, bits);
    }
    super::packing::pack(&scratch[..dim], 4, out);
}

/// Nibbles per vector for `dim` coordinates at `bits` bits, before and after padding to even.
pub fn nibbles(dim: usize, bits: u8) -> (usize, usize) {
    let m = (dim * bits as usize).div_ceil(4);
    (m, m + m % 2)
}

/// How a blocked array orders the codes of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arrangement {
    /// Nibble columns of 16 bytes (FastScan).
    #[default]
    Nibbles,
    /// Rows' 4-byte groups side by side (4-bit codes, `dot4`).
    Interleaved,
}

/// Bytes per block of the interleaved arrangement at `dim`.
pub fn interleaved_block_bytes(dim: usize) -> usize {
    dim.div_ceil(8) * 128
}

/// Byte offset, within its block, of coordinate `j`'s code of row `r` (interleaved), and
/// whether it is the high nibble.
#[inline]
pub fn interleaved_at(r: usize, j: usize) -> (usize, bool) {
    let r = r % BLOCK;
    (
        (j / 8) * 128 + 64 * (r / 16) + 4 * (r % 16) + (j % 8) % 4,
        j % 8 >= 4,
    )
}

/// Row `r`'s packed 4-bit code (see [`packing`](super::packing)) read back from interleaved
/// blocks `bytes` into `out` (`⌈dim/2⌉` bytes).
pub fn interleaved_row(bytes: &[u8], dim: usize, r: usize, out: &mut [u8]) {
    let block = &bytes[(r / BLOCK) * interleaved_block_bytes(dim)..];
    out.fill(0);
    let base = 64 * ((r % BLOCK) / 16) + 4 * (r % 16);
    for g in 0..dim.div_ceil(8) {
        let four = &block[g * 128 + base..g * 128 + base + 4];
        for (k, &byte) in four.iter().enumerate() {
            for (j, nib) in [(8 * g + k, byte & 15), (8 * g + 4 + k, byte >> 4)] {
                if j < dim {
                    out[j / 2] |= nib << (4 * (j % 2));
                }
            }
        }
    }
}

/// Codes of many vectors in the blocked layout.
#[derive(Debug, Clone, Default)]
pub struct BlockedCodes {
    arrangement: Arrangement,
    bits: u8,
    dim: usize,
    nibbles: usize,
    padded: usize,
    len: usize,
    bytes: Vec<u8>,
}

impl BlockedCodes {
    /// An empty store for `dim`-dimensional codes at `bits` ∈ {1, 2, 4}.
    pub fn new(dim: usize, bits: u8) -> Result<Self> {
        if !supports(bits) {
            return Err(Error::InvalidBits { bits });
        }
        let (nibbles, padded) = nibbles(dim, bits);
        Ok(BlockedCodes {
            arrangement: Arrangement::Nibbles,
            bits,
            dim,
            nibbles,
            padded,
            len: 0,
            bytes: Vec::new(),
        })
    }

    /// An empty store of 4-bit codes in the interleaved arrangement.
    pub fn interleaved(dim: usize) -> Self {
        let g = dim.div_ceil(8);
        BlockedCodes {
            arrangement: Arrangement::Interleaved,
            bits: 4,
            dim,
            nibbles: dim,
            // `block_bytes` is `padded · 16`: 8 nibbles of 16 bytes per group.
            padded: 8 * g,
            len: 0,
            bytes: Vec::new(),
        }
    }

    /// The arrangement of the blocks.
    pub fn arrangement(&self) -> Arrangement {
        self.arrangement
    }

    /// Bits per coordinate.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Nibble columns per block (even).
    pub fn nibble_columns(&self) -> usize {
        self.padded
    }

    /// Bytes of one block.
    pub fn block_bytes(&self) -> usize {
        self.padded * 16
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of blocks (the last may be partial).
    pub fn blocks(&self) -> usize {
        self.len.div_ceil(BLOCK)
    }

    /// The raw blocked bytes, `blocks() × block_bytes()`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends one vector given its packed code (`⌈d·b/8⌉` bytes).
    pub fn push(&mut self, packed: &[u8]) {
        assert_eq!(
            packed.len(),
            (self.dim * self.bits as usize).div_ceil(8),
            "packed code size"
        );
        let i = self.len;
        if i.is_multiple_of(BLOCK) {
            self.bytes.resize(self.bytes.len() + self.block_bytes(), 0);
        }
        let block = &mut self.bytes[(i / BLOCK) * self.padded * 16..][..self.padded * 16];
        if self.arrangement == Arrangement::Interleaved {
            for j in 0..self.dim {
                let nib = (packed[j / 2] >> (4 * (j % 2))) & 0x0f;
                let (at, high) = interleaved_at(i, j);
                block[at] |= if high { nib << 4 } else { nib };
            }
            self.len += 1;
            return;
        }
        let (slot, high) = (i % 16, (i % BLOCK) >= 16);
        for m in 0..self.nibbles {
            let nib = (packed[m / 2] >> (4 * (m % 2))) & 0x0f;
            let b = &mut block[m * 16 + slot];
            *b = if high {
                (*b & 0x0f) | (nib << 4)
            } else {
                (*b & 0xf0) | nib
            };
        }
        self.len += 1;
    }

    /// Nibble `m` of vector `i` (for tests and the scalar paths; interleaved: coordinate `m`).
    pub fn nibble(&self, i: usize, m: usize) -> u8 {
        if self.arrangement == Arrangement::Interleaved {
            let (at, high) = interleaved_at(i, m);
            let byte = self.bytes[(i / BLOCK) * self.block_bytes() + at];
            return if high { byte >> 4 } else { byte & 0x0f };
        }
        let byte = self.bytes[(i / BLOCK) * self.padded * 16 + m * 16 + i % 16];
        if i % BLOCK >= 16 {
            byte >> 4
        } else {
            byte & 0x0f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantizer::packing::{pack, packed_len};
    use crate::random::SeededRng;

    #[test]
    fn every_nibble_lands_where_the_layout_says() {
        let mut rng = SeededRng::for_data(1);
        for bits in [1u8, 2, 4] {
            for dim in (1..=80).chain([383, 384, 1536]) {
                let n = 70;
                let mut store = BlockedCodes::new(dim, bits).unwrap();
                let mut packed_all = Vec::new();
                for _ in 0..n {
                    let codes: Vec<u8> = (0..dim).map(|_| rng.below(1 << bits) as u8).collect();
                    let mut packed = vec![0u8; packed_len(dim, bits)];
                    pack(&codes, bits, &mut packed);
                    store.push(&packed);
                    packed_all.push(packed);
                }
                assert_eq!(store.len(), n);
                assert_eq!(store.as_bytes().len(), store.blocks() * store.block_bytes());
                let (m, mp) = nibbles(dim, bits);
                for (i, packed) in packed_all.iter().enumerate() {
                    for k in 0..mp {
                        let want = if k < m {
                            (packed[k / 2] >> (4 * (k % 2))) & 15
                        } else {
                            0
                        };
                        assert_eq!(
                            store.nibble(i, k),
                            want,
                            "bits={bits} dim={dim} i={i} m={k}"
                        );
                    }
                }
                // Empty slots of the last block are zero.
                for i in n..store.blocks() * BLOCK {
                    for k in 0..mp {
                        assert_eq!(store.nibble(i, k), 0);
                    }
                }
            }
        }
        assert!(BlockedCodes::new(8, 3).is_err());
    }

    #[test]
    fn interleaved_rows_read_back_as_packed() {
        let mut rng = SeededRng::for_data(2);
        for dim in (1..=40).chain([383, 384, 1536]) {
            let mut store = BlockedCodes::interleaved(dim);
            let mut all = Vec::new();
            for _ in 0..70 {
                let codes: Vec<u8> = (0..dim).map(|_| rng.below(16) as u8).collect();
                let mut packed = vec![0u8; packed_len(dim, 4)];
                pack(&codes, 4, &mut packed);
                store.push(&packed);
                all.push((codes, packed));
            }
            assert_eq!(store.block_bytes(), interleaved_block_bytes(dim));
            assert_eq!(store.as_bytes().len(), store.blocks() * store.block_bytes());
            let mut back = vec![0u8; packed_len(dim, 4)];
            for (i, (codes, packed)) in all.iter().enumerate() {
                interleaved_row(store.as_bytes(), dim, i, &mut back);
                assert_eq!(&back, packed, "dim={dim} row={i}");
                for (j, &c) in codes.iter().enumerate() {
                    assert_eq!(store.nibble(i, j), c);
                }
            }
            // Padding coordinates and empty slots are zero.
            for i in 70..store.blocks() * BLOCK {
                for j in 0..8 * dim.div_ceil(8) {
                    assert_eq!(store.nibble(i, j), 0);
                }
            }
        }
    }
}
