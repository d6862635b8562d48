//! TEXMEX `.fvecs`, `.ivecs` and `.bvecs`: each vector is a little-endian `i32` dimension `d`
//! followed by `d` elements (f32, i32 or u8). All vectors of a file must share `d`.

use std::path::Path;

use crate::binio::{Element, decode, map, write_atomically};
use crate::error::{DatasetError, Result};
use crate::matrix::Matrix;

fn read<T: Element>(path: &Path, format: &'static str) -> Result<Matrix<T>> {
    let file = map(path)?;
    let bytes = file.bytes();
    if bytes.is_empty() {
        return Err(DatasetError::malformed(path, format, "the file is empty"));
    }
    if bytes.len() < 4 {
        return Err(DatasetError::malformed(
            path,
            format,
            format!("{} bytes is shorter than one header", bytes.len()),
        ));
    }
    let dim = i32::decode_le(&bytes[..4]);
    if dim <= 0 {
        return Err(DatasetError::malformed(
            path,
            format,
            format!("first vector has dimension {dim}"),
        ));
    }
    let dim = dim as usize;
    let record = 4 + dim * T::SIZE;
    if bytes.len() % record != 0 {
        return Err(DatasetError::malformed(
            path,
            format,
            format!(
                "{} bytes is not a whole number of {record}-byte records (dimension {dim}): the file is truncated or mixes dimensions",
                bytes.len()
            ),
        ));
    }
    let rows = bytes.len() / record;
    let mut data = Vec::with_capacity(rows * dim);
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let d = i32::decode_le(&rec[..4]);
        if d as usize != dim || d <= 0 {
            return Err(DatasetError::malformed(
                path,
                format,
                format!(
                    "vector {i} (byte offset {}) has dimension {d}, the first has {dim}",
                    i * record
                ),
            ));
        }
        data.extend(decode::<T>(&rec[4..]));
    }
    Ok(Matrix::new(rows, dim, data))
}

fn write<T: Element>(path: &Path, m: &Matrix<T>) -> Result<()> {
    let dim = i32::try_from(m.dim())
        .map_err(|_| DatasetError::unsupported(path, "vecs", "dimension above i32::MAX"))?;
    let mut out = Vec::with_capacity(m.rows() * (4 + m.dim() * T::SIZE));
    for i in 0..m.rows() {
        dim.put_le(&mut out);
        for &v in m.row(i) {
            v.put_le(&mut out);
        }
    }
    write_atomically(path, &out)
}

/// Reads an `.fvecs` file.
pub fn read_fvecs(path: &Path) -> Result<Matrix<f32>> {
    read(path, "fvecs")
}

/// Reads an `.ivecs` file (ground-truth neighbour ids).
pub fn read_ivecs(path: &Path) -> Result<Matrix<i32>> {
    read(path, "ivecs")
}

/// Reads a `.bvecs` file (u8 components).
pub fn read_bvecs(path: &Path) -> Result<Matrix<u8>> {
    read(path, "bvecs")
}

/// Writes an `.fvecs` file (atomically).
pub fn write_fvecs(path: &Path, m: &Matrix<f32>) -> Result<()> {
    write(path, m)
}

/// Writes an `.ivecs` file (atomically).
pub fn write_ivecs(path: &Path, m: &Matrix<i32>) -> Result<()> {
    write(path, m)
}

/// Writes a `.bvecs` file (atomically).
pub fn write_bvecs(path: &Path, m: &Matrix<u8>) -> Result<()> {
    write(path, m)
}
