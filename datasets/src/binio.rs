//! Little-endian element types shared by the binary formats, and file access.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{DatasetError, Result};

/// A fixed-size little-endian element.
pub trait Element: Copy + Default + Send + Sync + 'static {
    /// Bytes per element.
    const SIZE: usize;
    /// Decodes one element from exactly `SIZE` bytes.
    fn decode_le(bytes: &[u8]) -> Self;
    /// Appends the element's little-endian bytes.
    fn put_le(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty) => {
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn decode_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("element size"))
            }
            #[inline]
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
element!(f32);
element!(i32);
element!(u32);
element!(u8);
element!(i8);

/// Decodes a little-endian element slice.
pub(crate) fn decode<T: Element>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::decode_le).collect()
}

/// Memory-maps a file for reading (an empty file maps to an empty slice).
pub(crate) fn map(path: &Path) -> Result<MappedFile> {
    let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| DatasetError::io(path, e))?
        .len();
    if len == 0 {
        return Ok(MappedFile(None));
    }
    // SAFETY: the map is read-only and private to this process; dataset files are inputs that
    // nobody rewrites while a benchmark reads them (a concurrent truncation would be a SIGBUS,
    // the documented hazard of reading through mmap).
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| DatasetError::io(path, e))?;
    Ok(MappedFile(Some(mmap)))
}

/// A read-only mapping of a whole file.
pub(crate) struct MappedFile(Option<Mmap>);

impl MappedFile {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename, so a reader never sees a
/// half-written dataset.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut f = File::create(&tmp).map_err(|e| DatasetError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| DatasetError::io(&tmp, e))?;
    f.sync_all().map_err(|e| DatasetError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DatasetError::io(path, e))?;
    Ok(())
}
