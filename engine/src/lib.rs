//! # Gyre
//!
//! An approximate-nearest-neighbour search engine over TurboQuant codes: vectors are rotated by
//! a seeded random rotation and quantized coordinate by coordinate with the Lloyd-Max codebook of
//! the known coordinate law, so nothing is trained and every vector is indexed on arrival.
//!
//! ```
//! use gyre::{Estimator, Quantizer, QuantizerConfig};
//!
//! # fn main() -> Result<(), gyre::Error> {
//! let quantizer = Quantizer::new(QuantizerConfig::new(64, 4))?;
//! let x: Vec<f32> = (0..64).map(|i| (i as f32).sin()).collect();
//! let codes = quantizer.encode_batch(&x)?;          // 32 bytes of codes + 2 scalars
//! let query = quantizer.prepare_query(&x)?;        // rotated query + lookup tables
//! let estimate = query.inner_product(codes.get(0), Estimator::Renormalized);
//! let exact: f32 = x.iter().map(|v| v * v).sum();
//! assert!((estimate - exact).abs() < 0.05 * exact);
//! # Ok(())
//! # }
//! ```
//!
//! Collections on disk ([`Database`], [`Collection`]): every acknowledged write is in the
//! write-ahead log; sealed segments are memory-mapped and searched in place.
//!
//! ```
//! use gyre::{CollectionConfig, Database, SearchOptions};
//!
//! # fn main() -> Result<(), gyre::Error> {
//! # let dir = std::env::temp_dir().join(format!("gyre-doc-{}", std::process::id()));
//! let db = Database::open(&dir)?;
//! let c = db.create_collection("docs", CollectionConfig::new(8))?;
//! c.upsert(&[1, 2], &[1., 0., 0., 0., 0., 0., 0., 1., 0., 1., 0., 0., 0., 0., 1., 0.])?;
//! c.flush()?;                                            // seal into a segment
//! let hits = c.search(&[1., 0., 0., 0., 0., 0., 0., 1.], 1, &SearchOptions::default())?;
//! assert_eq!(hits[0].id, 1);
//! c.delete(&[1])?;
//! assert_eq!(c.len(), 1);
//! # drop((c, db)); std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! Module map: [`collection`] (database, collections, manifest), [`directory`] (the storage
//! seam: local files, an in-memory fault-injecting store), [`segment`] (immutable mapped
//! files), [`wal`] (write-ahead log), [`quantizer`] (rotation, codebooks, encoding, query tables), [`search`] (exact
//! oracle, top-k), [`kernels`] (arithmetic inner loops), [`random`] (portable seeded randomness).

#![warn(missing_docs)]

pub mod collection;
pub mod directory;
mod error;
mod fsio;
pub mod graph;
pub mod kernels;
mod metric;
pub mod payload;
pub mod quantizer;
pub mod random;
pub mod search;
pub mod segment;
pub mod wal;

pub use collection::{
    Collection, CollectionConfig, CollectionInfo, Database, Durability, Point, Recovery,
    ScrollPage, ScrollRequest, SearchOptions, SearchOutput, SegmentIndex, SegmentInfo,
    SnapshotFile, SnapshotInfo,
};
pub use directory::{Directory, FaultDirectory, LocalDirectory};
pub use error::{Error, ErrorKind, MAX_NORM, MIN_NORM, Result};
pub use metric::Metric;
pub use payload::{Condition, FieldType, Filter, FilterStats, Payload, Range, Schema, Value};
pub use quantizer::{
    CodeRef, EncodedBatch, Encoder, Estimator, Quantizer, QuantizerConfig, QueryLut, RotationKind,
    Variant, VectorScalars,
};
pub use search::{Cancel, ExactIndex, FlatIndex, LiveMask, Neighbor, RerankStorage, SearchParams};
