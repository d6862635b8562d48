//! ann-benchmarks HDF5 files: datasets `train` (n × d f32), `test` (m × d f32), `neighbors`
//! (m × k i32, best first), `distances` (m × k f32, ascending), and root attribute `distance`
//! (`angular`, `euclidean`; Gyre also writes `dot`). Read and written with a pure-Rust HDF5
//! implementation, so no system library is needed.

use std::path::Path;

use hdf5_pure::{AttrValue, File, FileBuilder};

use crate::binio::write_atomically;
use crate::error::{DatasetError, Result};
use crate::matrix::Matrix;

const FORMAT: &str = "ann-benchmarks HDF5";

/// The distance an ann-benchmarks file is ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distance {
    /// `1 - cos(q, x)`.
    Angular,
    /// `||q - x||` (not squared).
    Euclidean,
    /// `-<q, x>` (Gyre's extension for inner-product datasets).
    Dot,
}

impl Distance {
    /// The name stored in the `distance` attribute.
    pub fn name(self) -> &'static str {
        match self {
            Distance::Angular => "angular",
            Distance::Euclidean => "euclidean",
            Distance::Dot => "dot",
        }
    }

    /// Parses an attribute value or a command-line name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "angular" | "cosine" => Some(Distance::Angular),
            "euclidean" | "l2" => Some(Distance::Euclidean),
            "dot" | "ip" | "inner_product" => Some(Distance::Dot),
            _ => None,
        }
    }

    /// The engine metric that ranks like this distance.
    pub fn metric(self) -> gyre::Metric {
        match self {
            Distance::Angular => gyre::Metric::Cosine,
            Distance::Euclidean => gyre::Metric::L2,
            Distance::Dot => gyre::Metric::Dot,
        }
    }

    /// Converts an engine score (cosine similarity, squared L2, inner product) to this distance.
    pub fn from_score(self, score: f32) -> f32 {
        match self {
            Distance::Angular => 1.0 - score,
            Distance::Euclidean => score.max(0.0).sqrt(),
            Distance::Dot => -score,
        }
    }

    /// The exact distance between two vectors, computed in f64.
    pub fn between(self, a: &[f32], b: &[f32]) -> f64 {
        let (mut dot, mut na, mut nb, mut l2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x), f64::from(y));
            dot += x * y;
            na += x * x;
            nb += y * y;
            l2 += (x - y) * (x - y);
        }
        match self {
            Distance::Angular => {
                let denom = (na * nb).sqrt();
                if denom > 0.0 { 1.0 - dot / denom } else { 1.0 }
            }
            Distance::Euclidean => l2.sqrt(),
            Distance::Dot => -dot,
        }
    }
}

/// A whole ann-benchmarks dataset in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnDataset {
    /// Base vectors.
    pub train: Matrix<f32>,
    /// Query vectors.
    pub test: Matrix<f32>,
    /// Ground-truth neighbour ids per query, best first.
    pub neighbors: Matrix<i32>,
    /// Their distances, ascending.
    pub distances: Matrix<f32>,
    /// The ranking distance.
    pub distance: Distance,
}

impl AnnDataset {
    /// Checks the parts against each other; `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| Err(DatasetError::malformed(path, FORMAT, reason));
        if self.train.rows() == 0 || self.test.rows() == 0 {
            return bad(format!(
                "train has {} rows and test {}: both must be non-empty",
                self.train.rows(),
                self.test.rows()
            ));
        }
        if self.train.dim() != self.test.dim() {
            return bad(format!(
                "train has dimension {} but test has {}",
                self.train.dim(),
                self.test.dim()
            ));
        }
        if self.neighbors.rows() != self.test.rows() || self.distances.rows() != self.test.rows() {
            return bad(format!(
                "{} test queries but {} neighbor rows and {} distance rows",
                self.test.rows(),
                self.neighbors.rows(),
                self.distances.rows()
            ));
        }
        if self.neighbors.dim() != self.distances.dim() || self.neighbors.dim() == 0 {
            return bad(format!(
                "neighbors has {} columns, distances {}",
                self.neighbors.dim(),
                self.distances.dim()
            ));
        }
        let n = self.train.rows() as i64;
        if let Some(id) = self
            .neighbors
            .as_slice()
            .iter()
            .find(|&&id| id < 0 || i64::from(id) >= n)
        {
            return bad(format!("neighbor id {id} is outside train's 0..{n}"));
        }
        Ok(())
    }
}

fn hdf5_error(path: &Path, e: impl std::fmt::Display) -> DatasetError {
    DatasetError::malformed(path, FORMAT, e.to_string())
}

fn read_matrix<T: hdf5_pure::H5Element>(path: &Path, file: &File, name: &str) -> Result<Matrix<T>> {
    let ds = file
        .dataset(name)
        .map_err(|e| DatasetError::malformed(path, FORMAT, format!("no dataset `{name}`: {e}")))?;
    let shape = ds.shape().map_err(|e| hdf5_error(path, e))?;
    let [rows, dim] = shape[..] else {
        return Err(DatasetError::malformed(
            path,
            FORMAT,
            format!("`{name}` has shape {shape:?}; expected 2 dimensions"),
        ));
    };
    let data = ds
        .read::<T>()
        .map_err(|e| DatasetError::malformed(path, FORMAT, format!("reading `{name}`: {e}")))?;
    let (rows, dim) = (rows as usize, dim as usize);
    if data.len() != rows * dim {
        return Err(DatasetError::malformed(
            path,
            FORMAT,
            format!(
                "`{name}` declares {rows} × {dim} but holds {} values",
                data.len()
            ),
        ));
    }
    Ok(Matrix::new(rows, dim, data))
}

/// Reads and validates an ann-benchmarks HDF5 file.
pub fn read_hdf5(path: &Path) -> Result<AnnDataset> {
    let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
    // The HDF5 parser works on untrusted bytes; a malformed file must become an error naming
    // the file even if the parser's own checks miss a case and panic.
    let parsed = std::panic::catch_unwind(|| -> Result<AnnDataset> {
        let file = File::from_bytes(bytes).map_err(|e| hdf5_error(path, e))?;
        let attrs = file.root().attrs().map_err(|e| hdf5_error(path, e))?;
        let distance = match attrs.get("distance") {
            Some(AttrValue::VarLenString(s) | AttrValue::String(s) | AttrValue::AsciiString(s)) => {
                Distance::parse(s.trim_end_matches('\0')).ok_or_else(|| {
                    DatasetError::unsupported(
                        path,
                        FORMAT,
                        format!("distance {s:?}: Gyre reads angular, euclidean and dot"),
                    )
                })?
            }
            Some(other) => {
                return Err(DatasetError::malformed(
                    path,
                    FORMAT,
                    format!("attribute `distance` is {other:?}, not a string"),
                ));
            }
            None => {
                return Err(DatasetError::malformed(
                    path,
                    FORMAT,
                    "no root attribute `distance`",
                ));
            }
        };
        Ok(AnnDataset {
            train: read_matrix(path, &file, "train")?,
            test: read_matrix(path, &file, "test")?,
            neighbors: read_matrix(path, &file, "neighbors")?,
            distances: read_matrix(path, &file, "distances")?,
            distance,
        })
    });
    let ds = parsed.map_err(|_| {
        DatasetError::malformed(path, FORMAT, "the HDF5 parser failed on this file")
    })??;
    ds.validate(path)?;
    Ok(ds)
}

/// Writes an ann-benchmarks HDF5 file (validated first; temp file, fsync, rename).
pub fn write_hdf5(path: &Path, ds: &AnnDataset) -> Result<()> {
    ds.validate(path)?;
    let mut b = FileBuilder::new();
    let shape = |m_rows: usize, m_dim: usize| [m_rows as u64, m_dim as u64];
    b.create_dataset("train")
        .with_f32_data(ds.train.as_slice())
        .with_shape(&shape(ds.train.rows(), ds.train.dim()));
    b.create_dataset("test")
        .with_f32_data(ds.test.as_slice())
        .with_shape(&shape(ds.test.rows(), ds.test.dim()));
    b.create_dataset("neighbors")
        .with_i32_data(ds.neighbors.as_slice())
        .with_shape(&shape(ds.neighbors.rows(), ds.neighbors.dim()));
    b.create_dataset("distances")
        .with_f32_data(ds.distances.as_slice())
        .with_shape(&shape(ds.distances.rows(), ds.distances.dim()));
    b.set_attr(
        "distance",
        AttrValue::VarLenString(ds.distance.name().into()),
    );
    b.set_attr("dimension", AttrValue::I64(ds.train.dim() as i64));
    b.set_attr("point_type", AttrValue::VarLenString("float".into()));
    b.set_attr("type", AttrValue::VarLenString("dense".into()));
    let bytes = b.finish().map_err(|e| hdf5_error(path, e))?;
    write_atomically(path, &bytes)
}
