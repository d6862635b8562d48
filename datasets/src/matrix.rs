//! A dense row-major matrix, the in-memory shape of every dataset part.

/// `rows × dim` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    rows: usize,
    dim: usize,
    data: Vec<T>,
}

impl<T> Matrix<T> {
    /// Wraps `data`; `data.len()` must equal `rows × dim`.
    pub fn new(rows: usize, dim: usize, data: Vec<T>) -> Self {
        assert_eq!(data.len(), rows * dim, "matrix data length");
        Matrix { rows, dim, data }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// The values, row-major.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }

    /// Converts every value.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Matrix<U> {
        Matrix {
            rows: self.rows,
            dim: self.dim,
            data: self.data.into_iter().map(f).collect(),
        }
    }
}
