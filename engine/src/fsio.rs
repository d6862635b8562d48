//! Small helpers shared by the file-format modules: I/O errors with their path, and
//! little-endian field readers. Durable writes live behind the [`Directory`](crate::directory)
//! seam.

use std::path::Path;

use crate::error::{Error, Result};

/// Wraps an `io::Result` with the path it concerns.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// Little-endian field readers over a byte slice whose length the caller checked.
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
