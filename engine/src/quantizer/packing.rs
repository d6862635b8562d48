//! Portable bit packing of per-coordinate codes.
//!
//! Coordinate `j` of a vector quantized at `b` bits occupies bits `[j·b, (j+1)·b)` of a
//! little-endian bit stream: stream bit `k` is bit `k % 8` (least significant first) of byte
//! `k / 8`. A vector takes exactly `⌈d·b / 8⌉` bytes; unused high bits of the last byte are zero.
//! This is the storage layout of one vector; the blocked scan layout is derived from it.

/// Bytes needed for `dim` codes of `bits` bits.
#[inline]
pub fn packed_len(dim: usize, bits: u8) -> usize {
    (dim * bits as usize).div_ceil(8)
}

/// Packs `codes` (each below `2^bits`) into `out`, which must hold `packed_len` bytes.
pub fn pack(codes: &[u8], bits: u8, out: &mut [u8]) {
    assert_eq!(
        out.len(),
        packed_len(codes.len(), bits),
        "packed buffer size"
    );
    if bits == 0 {
        return;
    }
    let mask = (1u16 << bits) as u64 - 1;
    match bits {
        8 => out.copy_from_slice(codes),
        4 | 2 | 1 => {
            let per_byte = 8 / bits as usize;
            for (o, group) in out.iter_mut().zip(codes.chunks(per_byte)) {
                let mut byte = 0u8;
                for (i, &c) in group.iter().enumerate() {
                    byte |= ((u64::from(c) & mask) as u8) << (i * bits as usize);
                }
                *o = byte;
            }
        }
        _ => {
            let mut acc = 0u64;
            let mut filled = 0u32;
            let mut pos = 0;
            for &c in codes {
                acc |= (u64::from(c) & mask) << filled;
                filled += u32::from(bits);
                while filled >= 8 {
                    out[pos] = acc as u8;
                    pos += 1;
                    acc >>= 8;
                    filled -= 8;
                }
            }
            if filled > 0 {
                out[pos] = acc as u8;
            }
        }
    }
}

/// Unpacks `out.len()` codes of `bits` bits from `packed`.
pub fn unpack(packed: &[u8], bits: u8, out: &mut [u8]) {
    assert_eq!(
        packed.len(),
        packed_len(out.len(), bits),
        "packed buffer size"
    );
    if bits == 0 {
        out.fill(0);
        return;
    }
    let mask = ((1u16 << bits) - 1) as u8;
    match bits {
        8 => out.copy_from_slice(packed),
        4 | 2 | 1 => {
            let per_byte = 8 / bits as usize;
            for (&byte, group) in packed.iter().zip(out.chunks_mut(per_byte)) {
                for (i, o) in group.iter_mut().enumerate() {
                    *o = (byte >> (i * bits as usize)) & mask;
                }
            }
        }
        _ => {
            let mut acc = 0u64;
            let mut filled = 0u32;
            let mut bytes = packed.iter();
            for o in out.iter_mut() {
                while filled < u32::from(bits) {
                    acc |= u64::from(*bytes.next().unwrap_or(&0)) << filled;
                    filled += 8;
                }
                *o = acc as u8 & mask;
                acc >>= bits;
                filled -= u32::from(bits);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(bits in 1u8..=8, raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let codes: Vec<u8> = raw.iter().map(|c| c & ((1u16 << bits) - 1) as u8).collect();
            let mut packed = vec![0xAA; packed_len(codes.len(), bits)];
            pack(&codes, bits, &mut packed);
            let mut back = vec![0xFF; codes.len()];
            unpack(&packed, bits, &mut back);
            prop_assert_eq!(&back, &codes);
            // Padding bits of the last byte are zero.
            let used = codes.len() * bits as usize % 8;
            if used != 0 {
                prop_assert_eq!(packed[packed.len() - 1] >> used, 0);
            }
        }
    }

    #[test]
    fn layout_is_lsb_first() {
        let mut out = [0u8; 2];
        pack(&[1, 2, 3, 4], 3, &mut out);
        // 1 | 2<<3 | 3<<6 | 4<<9 = 1 + 16 + 192 + 2048
        assert_eq!(u16::from_le_bytes(out), 1 + 16 + 192 + 2048);
        let mut out = [0u8; 1];
        pack(&[0xA, 0x5], 4, &mut out);
        assert_eq!(out[0], 0x5A);
    }
}
