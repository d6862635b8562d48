//! Dataset readers and writers for Gyre's benchmarks.
//!
//! Every reader validates sizes against the file before decoding and returns a
//! [`DatasetError`] naming the file on truncated, inconsistent or malformed input: never a panic,
//! never silently short data. Files are memory-mapped and decoded little-endian.
//!
//! Formats: TEXMEX `.fvecs`/`.ivecs`/`.bvecs` ([`texmex`]), big-ann-benchmarks
//! `.fbin`/`.u8bin`/`.i8bin`/`.ibin` and ground truth ([`bigann`]), NumPy `.npy` float32
//! ([`npy`]), ann-benchmarks HDF5 ([`annb`]); exact ground truth ([`groundtruth`]) and the
//! GloVe fetcher's data steps ([`fetch`]).

pub mod annb;
pub mod bigann;
mod binio;
mod error;
pub mod fetch;
pub mod groundtruth;
mod matrix;
pub mod npy;
pub mod synth;
pub mod texmex;

pub use annb::{AnnDataset, Distance};
pub use binio::Element;
pub use error::{DatasetError, EngineError, Result};
pub use matrix::Matrix;

use std::path::Path;

/// A vector file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorFormat {
    /// TEXMEX float vectors.
    Fvecs,
    /// TEXMEX byte vectors.
    Bvecs,
    /// TEXMEX int vectors (ids, not vectors, but readable as a matrix).
    Ivecs,
    /// big-ann float32.
    Fbin,
    /// big-ann uint8.
    U8bin,
    /// big-ann int8.
    I8bin,
    /// big-ann int32.
    Ibin,
    /// NumPy float32.
    Npy,
}

impl VectorFormat {
    /// Guesses the format from the file extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "fvecs" => VectorFormat::Fvecs,
            "bvecs" => VectorFormat::Bvecs,
            "ivecs" => VectorFormat::Ivecs,
            "fbin" => VectorFormat::Fbin,
            "u8bin" => VectorFormat::U8bin,
            "i8bin" => VectorFormat::I8bin,
            "ibin" => VectorFormat::Ibin,
            "npy" => VectorFormat::Npy,
            _ => {
                return Err(DatasetError::unsupported(
                    path,
                    "dataset",
                    "unknown extension: expected .fvecs, .bvecs, .ivecs, .fbin, .u8bin, .i8bin, .ibin or .npy",
                ));
            }
        })
    }
}

/// Reads any supported vector file as f32 rows (integers converted exactly up to 2^24).
pub fn read_vectors(path: &Path) -> Result<Matrix<f32>> {
    Ok(match VectorFormat::from_path(path)? {
        VectorFormat::Fvecs => texmex::read_fvecs(path)?,
        VectorFormat::Bvecs => texmex::read_bvecs(path)?.map(f32::from),
        VectorFormat::Ivecs => texmex::read_ivecs(path)?.map(|v| v as f32),
        VectorFormat::Fbin => bigann::read_fbin(path)?,
        VectorFormat::U8bin => bigann::read_u8bin(path)?.map(f32::from),
        VectorFormat::I8bin => bigann::read_i8bin(path)?.map(f32::from),
        VectorFormat::Ibin => bigann::read_ibin(path)?.map(|v| v as f32),
        VectorFormat::Npy => npy::read_npy_f32(path)?,
    })
}

#[cfg(test)]
mod tests;
