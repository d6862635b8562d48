//! The collection API's plain types: search options, points, counts and sizes, recovery.

use roaring::RoaringTreemap;

use super::CollectionConfig;
use crate::payload::{Filter, FilterStats, Payload, Schema};
use crate::search::{Cancel, Neighbor, SearchParams};

/// Search options of a collection.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// Scan parameters (oversampling, rescore on stored vectors, staged search).
    pub params: SearchParams,
    /// Brute force on the stored vectors instead of the code scan (needs rerank storage).
    pub exact: bool,
    /// Only these ids may be returned.
    pub allow: Option<RoaringTreemap>,
    /// Only points whose payload passes this filter may be returned.
    pub filter: Option<Filter>,
    /// Stops the search early (checked between sources and between the queries of a batch).
    pub cancel: Cancel,
    /// Scan each query on the calling thread instead of splitting it over the thread pool: for
    /// callers that run many searches at once (a loaded server), where a split costs
    /// hand-offs between threads and gains nothing. Default `false` (split).
    pub sequential: bool,
}

impl SearchOptions {
    /// The recommended parameters for `config` (see [`SearchParams::recommended`]).
    pub fn recommended(config: &CollectionConfig) -> Self {
        SearchOptions {
            params: SearchParams::recommended(config.bits, config.rerank),
            ..Default::default()
        }
    }
}

/// A stored point returned by [`Collection::get`](super::Collection::get).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The id.
    pub id: u64,
    /// The vector, when the collection keeps full-precision copies (f16 copies are widened).
    pub vector: Option<Vec<f32>>,
    /// The payload, when it has one.
    pub payload: Option<Payload>,
}

/// A search's results and what its filter cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOutput {
    /// The results, best first.
    pub hits: Vec<Neighbor>,
    /// The filter's cost: fields without an index, payloads scanned, rows that passed.
    pub filter: FilterStats,
}

/// A page request of [`Collection::scroll`](super::Collection::scroll).
#[derive(Debug, Clone, Default)]
pub struct ScrollRequest {
    /// Start after this id (`None`: from the smallest).
    pub after: Option<u64>,
    /// Points per page (at least 1).
    pub limit: usize,
    /// Only points that pass it.
    pub filter: Option<Filter>,
    /// Return stored vectors.
    pub with_vectors: bool,
    /// Return payloads.
    pub with_payload: bool,
}

/// One page of [`Collection::scroll`](super::Collection::scroll).
#[derive(Debug, Clone, PartialEq)]
pub struct ScrollPage {
    /// Points in id order.
    pub points: Vec<Point>,
    /// The cursor of the next page (its `after`); `None` when this page is the last.
    pub next: Option<u64>,
}

/// Counts and sizes of a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    /// The collection's name.
    pub name: String,
    /// Its configuration.
    pub config: CollectionConfig,
    /// Live points (one per id).
    pub live: u64,
    /// Rows stored that are deleted or replaced but not yet compacted away.
    pub deleted: u64,
    /// Rows in memory: the memtable and a memtable being sealed (live or replaced).
    pub memtable_rows: u64,
    /// Per segment: id, rows, live rows, file bytes.
    pub segments: Vec<SegmentInfo>,
    /// Bytes of every file in the collection's directory.
    pub disk_bytes: u64,
    /// Bytes of the segment files resident in memory (Linux only; `None` elsewhere).
    pub resident_bytes: Option<u64>,
    /// The payload fields: types and indexes.
    pub schema: Schema,
}

impl CollectionInfo {
    /// Bytes of segment files held by deleted or replaced rows: each segment's size in
    /// proportion to its dead rows. What a compaction would give back.
    pub fn dead_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.rows > 0)
            .map(|s| {
                (u128::from(s.bytes) * u128::from(s.rows - s.live) / u128::from(s.rows)) as u64
            })
            .sum()
    }
}

/// One segment in [`CollectionInfo`].
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    /// Segment id.
    pub id: u64,
    /// Rows in the file.
    pub rows: u64,
    /// Live rows.
    pub live: u64,
    /// File size.
    pub bytes: u64,
    /// Bytes of its graph index (0: the segment is scanned).
    pub graph_bytes: u64,
}

/// What opening a collection replayed from its WAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// WAL records applied.
    pub wal_records: u64,
    /// Bytes of a torn tail cut from the newest WAL file (a write interrupted by a crash; it was
    /// never acknowledged).
    pub truncated_bytes: u64,
}
