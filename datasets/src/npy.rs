//! NumPy `.npy` files holding a 2-D little-endian float32 array (C or Fortran order).
//!
//! Layout: magic `\x93NUMPY`, version (major, minor), header length (u16 for 1.x, u32 for 2.x and
//! 3.x), an ASCII Python dict literal with `descr`, `fortran_order` and `shape`, padding, data.

use std::path::Path;

use crate::binio::{decode, map, write_atomically};
use crate::error::{DatasetError, Result};
use crate::matrix::Matrix;

const FORMAT: &str = "npy";
const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads a `(rows, dim)` float32 array.
pub fn read_npy_f32(path: &Path) -> Result<Matrix<f32>> {
    let file = map(path)?;
    parse_npy_f32(path, file.bytes())
}

/// Parses a `(rows, dim)` float32 array from the bytes of an `.npy` file; `path` names it in
/// errors (it may be a member of an archive).
pub fn parse_npy_f32(path: &Path, bytes: &[u8]) -> Result<Matrix<f32>> {
    let bad = |reason: String| DatasetError::malformed(path, FORMAT, reason);
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("missing the \\x93NUMPY magic".into()));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header length".into()));
            }
            (
                u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
                12,
            )
        }
        v => {
            return Err(DatasetError::unsupported(
                path,
                FORMAT,
                format!("format version {v}"),
            ));
        }
    };
    let end = start + header_len;
    if bytes.len() < end {
        return Err(bad(format!(
            "header of {header_len} bytes runs past the end of the file"
        )));
    }
    let header =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text".into()))?;
    let descr = dict_value(header, "descr").ok_or_else(|| bad("header has no 'descr'".into()))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    if descr != "<f4" && descr != "f4" {
        return Err(DatasetError::unsupported(
            path,
            FORMAT,
            format!(
                "dtype {descr:?}: Gyre reads little-endian float32 ('<f4'); convert with arr.astype('<f4')"
            ),
        ));
    }
    let fortran = match dict_value(header, "fortran_order").map(str::trim) {
        Some("False") => false,
        Some("True") => true,
        _ => return Err(bad("header has no boolean 'fortran_order'".into())),
    };
    let shape = dict_value(header, "shape").ok_or_else(|| bad("header has no 'shape'".into()))?;
    let dims: Vec<usize> = shape
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("shape entry {s:?} is not a number")))
        })
        .collect::<Result<_>>()?;
    let [rows, dim] = dims[..] else {
        return Err(DatasetError::unsupported(
            path,
            FORMAT,
            format!("a {}-dimensional array; need (rows, dim)", dims.len()),
        ));
    };
    if dim == 0 {
        return Err(bad("shape has dimension 0".into()));
    }
    let data = &bytes[end..];
    let want = rows
        .checked_mul(dim)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| bad("shape overflows".into()))?;
    if data.len() != want {
        return Err(bad(format!(
            "shape ({rows}, {dim}) needs {want} data bytes, the file has {}",
            data.len()
        )));
    }
    let values: Vec<f32> = decode(data);
    if !fortran {
        return Ok(Matrix::new(rows, dim, values));
    }
    // Column-major on disk: element (i, j) sits at j·rows + i.
    let mut c_order = vec![0.0f32; values.len()];
    for (j, column) in values.chunks_exact(rows.max(1)).enumerate() {
        for (i, &v) in column.iter().enumerate() {
            c_order[i * dim + j] = v;
        }
    }
    Ok(Matrix::new(rows, dim, c_order))
}

/// The text of `key`'s value in a Python dict literal (up to the next top-level comma).
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

/// Writes a `(rows, dim)` float32 array as `.npy` version 1.0 (atomically).
pub fn write_npy_f32(path: &Path, m: &Matrix<f32>) -> Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        m.rows(),
        m.dim()
    );
    // Total header (magic + version + length + dict) padded to a multiple of 64, ending in '\n'.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * m.as_slice().len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    let len = u16::try_from(header.len()).expect("short header");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in m.as_slice() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    write_atomically(path, &out)
}
