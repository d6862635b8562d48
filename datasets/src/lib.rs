//! Dataset readers, fetchers and exact ground truth for Gyre's benchmarks.
//!
//! Empty until the recall runner lands: readers for ann-benchmarks HDF5, TEXMEX fvecs/ivecs,
//! big-ann fbin and NumPy files, and the `gyre-datasets` tool, come with it.
