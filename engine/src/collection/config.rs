//! A collection's configuration and its file, `config.json` (written once, at creation).

use serde::{Deserialize, Serialize};

use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::metric::Metric;
use crate::quantizer::{QuantizerConfig, RotationKind, Variant};
use crate::search::RerankStorage;
use crate::segment::SegmentMeta;

/// The configuration's file name in a collection's directory.
pub const FILE: &str = "config.json";

/// When an acknowledged write reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync` before every write batch is acknowledged (default): survives power loss.
    #[default]
    Fsync,
    /// The WAL is written (page cache) before acknowledging, and synced by a background thread
    /// every this many milliseconds: survives a process crash, may lose about that window on
    /// power loss.
    Periodic(u32),
}

impl std::fmt::Display for Durability {
    /// `fsync` or `periodic:MS`, as in config files and on command lines.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Fsync => f.write_str("fsync"),
            Durability::Periodic(ms) => write!(f, "periodic:{ms}"),
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "fsync" {
            return Ok(Durability::Fsync);
        }
        s.strip_prefix("periodic:")
            .and_then(|ms| ms.parse().ok())
            .map(Durability::Periodic)
            .ok_or_else(|| {
                Error::invalid_argument(
                    "durability",
                    format!("unknown durability {s:?}: use fsync or periodic:MS"),
                )
            })
    }
}

/// The index each sealed segment gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SegmentIndex {
    /// None: every search scans the segment's codes.
    Flat,
    /// A proximity graph over the codes (`crate::graph`), built when a segment of at least
    /// `index_min_rows` rows is sealed or compacted (in the background); searches walk it.
    #[default]
    Graph,
}

impl SegmentIndex {
    /// `flat` or `graph`, as in config files and on command lines.
    pub fn name(self) -> &'static str {
        match self {
            SegmentIndex::Flat => "flat",
            SegmentIndex::Graph => "graph",
        }
    }
}

impl std::str::FromStr for SegmentIndex {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "flat" => Ok(SegmentIndex::Flat),
            "graph" => Ok(SegmentIndex::Graph),
            other => Err(Error::invalid_argument(
                "index",
                format!("unknown index {other:?}: use flat or graph"),
            )),
        }
    }
}

/// Segments below this many rows are scanned (measured on docs-minilm: a 4-bit scan of
/// 20,000 rows costs about what a graph search at ef = 64 does).
pub const DEFAULT_INDEX_MIN_ROWS: usize = 20_000;

/// Everything that fixes a collection. `dim`, `metric`, the quantizer fields and `rerank` are
/// permanent; `segment_rows`, `compact_segments`, `durability` and `verify_on_open` are
/// operating choices stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectionConfig {
    /// Vector dimension.
    pub dim: usize,
    /// Similarity metric.
    pub metric: Metric,
    /// Bits per coordinate (1..=8).
    pub bits: u8,
    /// Estimator family.
    pub variant: Variant,
    /// Rotation kind.
    pub rotation: RotationKind,
    /// Seed of the rotation (and sketch).
    pub seed: u64,
    /// Full-precision copies kept for rescoring and `get`.
    pub rerank: RerankStorage,
    /// Rows the memtable holds before it is sealed into a segment.
    pub segment_rows: usize,
    /// Background compaction merges segments once there are more than this many.
    pub compact_segments: usize,
    /// When writes are durable.
    pub durability: Durability,
    /// Check every section checksum when segments are opened (slower open).
    pub verify_on_open: bool,
    /// The index sealed segments get.
    pub index: SegmentIndex,
    /// Segments with fewer rows get no index (they are scanned).
    pub index_min_rows: usize,
}

impl CollectionConfig {
    /// Defaults: cosine, 4-bit MSE codes, Hadamard rotation, seed 0, f32 rerank copies,
    /// 100,000-row segments, compaction beyond 16 segments, fsync per write batch, a graph
    /// index on segments of 20,000 rows or more.
    pub fn new(dim: usize) -> Self {
        CollectionConfig {
            dim,
            metric: Metric::Cosine,
            bits: 4,
            variant: Variant::Mse,
            rotation: RotationKind::Hadamard,
            seed: 0,
            rerank: RerankStorage::F32,
            segment_rows: 100_000,
            compact_segments: 16,
            durability: Durability::Fsync,
            verify_on_open: false,
            index: SegmentIndex::Graph,
            index_min_rows: DEFAULT_INDEX_MIN_ROWS,
        }
    }

    /// How to build the graph of a segment of `rows` rows, or `None` when it gets none.
    pub(crate) fn graph_params(&self, rows: usize) -> Option<crate::graph::BuildParams> {
        (self.index == SegmentIndex::Graph && rows >= self.index_min_rows.max(2))
            .then(|| crate::graph::BuildParams::for_dim(self.dim))
    }

    /// The quantizer part.
    pub fn quantizer(&self) -> QuantizerConfig {
        QuantizerConfig {
            dim: self.dim,
            bits: self.bits,
            variant: self.variant,
            rotation: self.rotation,
            seed: self.seed,
        }
    }

    pub(crate) fn segment_meta(&self) -> SegmentMeta {
        SegmentMeta {
            config: self.quantizer(),
            metric: self.metric,
            rerank: self.rerank,
        }
    }

    /// True when `other` stores data the same way (operating choices may differ).
    pub fn same_data_layout(&self, other: &CollectionConfig) -> bool {
        self.segment_meta() == other.segment_meta()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        crate::quantizer::Quantizer::new(self.quantizer())?;
        if self.segment_rows == 0 || self.segment_rows > u32::MAX as usize {
            return Err(Error::invalid_argument(
                "segment_rows",
                "must be between 1 and 2^32 - 1",
            ));
        }
        if self.compact_segments < 2 {
            return Err(Error::invalid_argument(
                "compact_segments",
                "must be at least 2",
            ));
        }
        Ok(())
    }

    pub(crate) fn store(&self, dir: &dyn Directory) -> Result<()> {
        let file = ConfigFile {
            format: 1,
            dim: self.dim,
            metric: self.metric.name().into(),
            bits: self.bits,
            variant: self.variant.name().into(),
            rotation: self.rotation.name().into(),
            seed: self.seed,
            rerank: self.rerank.name().into(),
            segment_rows: self.segment_rows,
            compact_segments: self.compact_segments,
            durability: self.durability.to_string(),
            verify_on_open: self.verify_on_open,
            index: self.index.name().into(),
            index_min_rows: self.index_min_rows,
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("a config serialises");
        bytes.push(b'\n');
        dir.write_atomic(FILE, &bytes)
    }

    pub(crate) fn load(dir: &dyn Directory) -> Result<CollectionConfig> {
        let bytes = dir.read(FILE)?;
        let path = &dir.path_of(FILE);
        let bad = |r: String| Error::corrupt(path, r);
        let f: ConfigFile =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a valid config: {e}")))?;
        if f.format != 1 {
            return Err(bad(format!("config format {} is unknown", f.format)));
        }
        let field = |e: Error| bad(e.to_string());
        let durability: Durability = f.durability.parse().map_err(field)?;
        let config = CollectionConfig {
            dim: f.dim,
            metric: f.metric.parse().map_err(field)?,
            bits: f.bits,
            variant: f.variant.parse().map_err(field)?,
            rotation: f.rotation.parse().map_err(field)?,
            seed: f.seed,
            rerank: f.rerank.parse().map_err(field)?,
            segment_rows: f.segment_rows,
            compact_segments: f.compact_segments,
            durability,
            verify_on_open: f.verify_on_open,
            index: f.index.parse().map_err(field)?,
            index_min_rows: f.index_min_rows,
        };
        config.validate().map_err(field)?;
        Ok(config)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ConfigFile {
    format: u32,
    dim: usize,
    metric: String,
    bits: u8,
    variant: String,
    rotation: String,
    seed: u64,
    rerank: String,
    segment_rows: usize,
    compact_segments: usize,
    durability: String,
    verify_on_open: bool,
    /// Absent in files written before graphs: those collections keep scanning.
    #[serde(default = "flat_name")]
    index: String,
    #[serde(default = "default_min_rows")]
    index_min_rows: usize,
}

fn flat_name() -> String {
    SegmentIndex::Flat.name().into()
}

fn default_min_rows() -> usize {
    DEFAULT_INDEX_MIN_ROWS
}
