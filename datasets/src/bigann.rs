//! big-ann-benchmarks binaries: `.fbin`, `.u8bin`, `.i8bin`, `.ibin` are a little-endian header
//! `u32 rows, u32 dim` followed by `rows × dim` elements (f32, u8, i8, i32). Ground-truth files
//! are `u32 rows, u32 k`, then `rows × k` u32 ids, then `rows × k` f32 distances.

use std::path::Path;

use crate::binio::{Element, decode, map, write_atomically};
use crate::error::{DatasetError, Result};
use crate::matrix::Matrix;

fn header(path: &Path, bytes: &[u8], format: &'static str) -> Result<(usize, usize)> {
    if bytes.len() < 8 {
        return Err(DatasetError::malformed(
            path,
            format,
            format!("{} bytes is shorter than the 8-byte header", bytes.len()),
        ));
    }
    let rows = u32::decode_le(&bytes[..4]) as usize;
    let dim = u32::decode_le(&bytes[4..8]) as usize;
    if dim == 0 {
        return Err(DatasetError::malformed(
            path,
            format,
            "header says dimension 0",
        ));
    }
    Ok((rows, dim))
}

fn read<T: Element>(path: &Path, format: &'static str) -> Result<Matrix<T>> {
    let file = map(path)?;
    let bytes = file.bytes();
    let (rows, dim) = header(path, bytes, format)?;
    let want = rows
        .checked_mul(dim)
        .and_then(|n| n.checked_mul(T::SIZE))
        .and_then(|n| n.checked_add(8))
        .ok_or_else(|| DatasetError::malformed(path, format, "header sizes overflow"))?;
    if bytes.len() != want {
        return Err(DatasetError::malformed(
            path,
            format,
            format!(
                "header says {rows} × {dim} elements ({want} bytes with the header) but the file has {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(Matrix::new(rows, dim, decode(&bytes[8..])))
}

fn write<T: Element>(path: &Path, m: &Matrix<T>) -> Result<()> {
    let too_big = || DatasetError::unsupported(path, "bin", "more than u32::MAX rows or columns");
    let rows = u32::try_from(m.rows()).map_err(|_| too_big())?;
    let dim = u32::try_from(m.dim()).map_err(|_| too_big())?;
    let mut out = Vec::with_capacity(8 + m.as_slice().len() * T::SIZE);
    rows.put_le(&mut out);
    dim.put_le(&mut out);
    for &v in m.as_slice() {
        v.put_le(&mut out);
    }
    write_atomically(path, &out)
}

/// Reads an `.fbin` file.
pub fn read_fbin(path: &Path) -> Result<Matrix<f32>> {
    read(path, "fbin")
}
/// Reads a `.u8bin` file.
pub fn read_u8bin(path: &Path) -> Result<Matrix<u8>> {
    read(path, "u8bin")
}
/// Reads an `.i8bin` file.
pub fn read_i8bin(path: &Path) -> Result<Matrix<i8>> {
    read(path, "i8bin")
}
/// Reads an `.ibin` file.
pub fn read_ibin(path: &Path) -> Result<Matrix<i32>> {
    read(path, "ibin")
}
/// Writes an `.fbin` file (atomically).
pub fn write_fbin(path: &Path, m: &Matrix<f32>) -> Result<()> {
    write(path, m)
}
/// Writes an `.ibin` file (atomically).
pub fn write_ibin(path: &Path, m: &Matrix<i32>) -> Result<()> {
    write(path, m)
}

/// A big-ann ground-truth file: neighbour ids and their distances, `rows × k` each.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    /// Neighbour ids, best first.
    pub ids: Matrix<u32>,
    /// Their distances.
    pub distances: Matrix<f32>,
}

/// Reads a big-ann ground-truth file.
pub fn read_groundtruth(path: &Path) -> Result<GroundTruth> {
    const FORMAT: &str = "big-ann ground truth";
    let file = map(path)?;
    let bytes = file.bytes();
    let (rows, k) = header(path, bytes, FORMAT)?;
    let block = rows
        .checked_mul(k)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| DatasetError::malformed(path, FORMAT, "header sizes overflow"))?;
    if bytes.len() != 8 + 2 * block {
        return Err(DatasetError::malformed(
            path,
            FORMAT,
            format!(
                "header says {rows} × {k} ids and distances ({} bytes) but the file has {} bytes",
                8 + 2 * block,
                bytes.len()
            ),
        ));
    }
    Ok(GroundTruth {
        ids: Matrix::new(rows, k, decode(&bytes[8..8 + block])),
        distances: Matrix::new(rows, k, decode(&bytes[8 + block..])),
    })
}

/// Writes a big-ann ground-truth file (atomically).
pub fn write_groundtruth(path: &Path, gt: &GroundTruth) -> Result<()> {
    assert_eq!(
        (gt.ids.rows(), gt.ids.dim()),
        (gt.distances.rows(), gt.distances.dim())
    );
    let too_big = || {
        DatasetError::unsupported(
            path,
            "big-ann ground truth",
            "more than u32::MAX rows or columns",
        )
    };
    let mut out = Vec::with_capacity(8 + 8 * gt.ids.as_slice().len());
    u32::try_from(gt.ids.rows())
        .map_err(|_| too_big())?
        .put_le(&mut out);
    u32::try_from(gt.ids.dim())
        .map_err(|_| too_big())?
        .put_le(&mut out);
    for &v in gt.ids.as_slice() {
        v.put_le(&mut out);
    }
    for &v in gt.distances.as_slice() {
        v.put_le(&mut out);
    }
    write_atomically(path, &out)
}
