//! A proximity graph over a run of rows: the sublinear index of a sealed segment.
//!
//! One layer, fixed out-degree `R`, built by incremental insertion with the α-pruning rule of
//! Vamana/DiskANN ([`build`]); searched best-first from a medoid and a few sampled entry rows
//! ([`search`]), every visited row scored by the TurboQuant estimator (the query's `i8` weights
//! against the row's 4-bit code, `dot4`), the final candidates reranked on the stored vectors
//! by the caller. Nothing is fitted to the data: the graph only links rows; the quantizer stays
//! data-oblivious.
//!
//! The encoded form ([`Graph::bytes`], a segment's `Graph` section, `docs/format.md`):
//!
//! ```text
//! 0   u32 version (1)     4  u32 degree R     8  u32 record stride   12 u32 entries E
//! 16  u32 build ef        20 f32 alpha        24 u64 rows            32 u32 build pool
//! 36..64 zero
//! 64  E × u32 entry rows (the first is the medoid), zero-padded to a multiple of 64 bytes
//!     rows × R × u32 neighbours (each list packed at its front, u32::MAX after its end)
//!     rows × stride bytes of records (4-bit codes: key factor f32, key offset f32, packed code)
//! ```
//!
//! Invariants: every neighbour is a row `< rows` other than its own; entry rows are `< rows`;
//! a list holds no row twice. [`GraphRef::parse`] checks all of it, so a search can index
//! without bounds surprises.

pub mod build;
pub mod search;

use crate::error::{Error, Result};

pub use build::BuildParams;

/// Version of the encoded graph.
pub const GRAPH_VERSION: u32 = 2;
/// Bytes before the entry rows.
const HEADER: usize = 64;
/// The search effort (candidate list length) used when a query leaves `ef` at 0.
pub const DEFAULT_EF: usize = 64;
/// The largest search effort a query may ask for.
pub const MAX_EF: usize = 10_000;
/// An empty neighbour slot.
pub const NONE: u32 = u32::MAX;

/// A graph in its encoded form, owned (built in memory, then written to a segment or kept by
/// an in-memory index). The bytes live in `u64`s so the `u32` arrays can be cast in place.
#[derive(Debug, Clone)]
pub struct Graph {
    words: Vec<u64>,
    len: usize,
}

impl Graph {
    /// Encodes `adjacency` (`rows × degree`, [`NONE`]-padded), `entries` and `records`
    /// (`rows × stride` bytes, or empty with `stride == 0`).
    pub fn encode(
        params: &BuildParams,
        degree: usize,
        entries: &[u32],
        adjacency: &[u32],
        stride: usize,
        records: &[u8],
    ) -> Graph {
        let rows = adjacency.len().checked_div(degree).unwrap_or(0);
        let entries_at = HEADER;
        let adj_at = (entries_at + 4 * entries.len()).next_multiple_of(64);
        let rec_at = (adj_at + 4 * adjacency.len()).next_multiple_of(64);
        let len = rec_at + records.len();
        let mut bytes = vec![0u8; len];
        bytes[0..4].copy_from_slice(&GRAPH_VERSION.to_le_bytes());
        bytes[4..8].copy_from_slice(&(degree as u32).to_le_bytes());
        bytes[8..12].copy_from_slice(&(stride as u32).to_le_bytes());
        bytes[12..16].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        bytes[16..20].copy_from_slice(&(params.build_ef as u32).to_le_bytes());
        bytes[20..24].copy_from_slice(&params.alpha.to_le_bytes());
        bytes[24..32].copy_from_slice(&(rows as u64).to_le_bytes());
        bytes[32..36].copy_from_slice(&(params.pool.max(params.build_ef) as u32).to_le_bytes());
        bytes[entries_at..entries_at + 4 * entries.len()]
            .copy_from_slice(bytemuck::cast_slice(entries));
        bytes[adj_at..adj_at + 4 * adjacency.len()]
            .copy_from_slice(bytemuck::cast_slice(adjacency));
        bytes[rec_at..].copy_from_slice(records);
        let mut words = vec![0u64; len.div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len].copy_from_slice(&bytes);
        Graph { words, len }
    }

    /// A copy of encoded bytes (as [`bytes`](Self::bytes) gave them); checked when viewed.
    pub fn from_bytes(bytes: &[u8]) -> Graph {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Graph {
            words,
            len: bytes.len(),
        }
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    /// The parsed view (the encoder's output always parses).
    pub fn view(&self, rows: usize, stride: usize) -> Result<GraphRef<'_>> {
        GraphRef::layout(self.bytes(), rows, stride).map_err(Error::internal)
    }
}

/// A parsed, checked graph borrowed from its encoded bytes (a mapped segment or a [`Graph`]).
#[derive(Debug, Clone, Copy)]
pub struct GraphRef<'a> {
    /// Out-degree bound `R`.
    pub degree: usize,
    /// Entry rows (the medoid first).
    pub entries: &'a [u32],
    /// `rows × degree` neighbours.
    pub adjacency: &'a [u32],
    /// `rows × stride` record bytes (empty when `stride == 0`).
    pub records: &'a [u8],
    /// Bytes per record.
    pub stride: usize,
    /// The build's candidate list size.
    pub build_ef: usize,
    /// The build's pruning factor.
    pub alpha: f32,
    /// The build's pruning pool (0 in graphs written before it was recorded).
    pub pool: usize,
}

impl<'a> GraphRef<'a> {
    /// Parses and checks encoded bytes for `rows` rows with records of `stride` bytes (what the
    /// segment's shape expects): the header, the sizes and every neighbour list (`O(rows · R)`,
    /// done once when a segment opens). The bytes must start 4-byte aligned.
    pub fn parse(
        bytes: &'a [u8],
        rows: usize,
        stride: usize,
    ) -> std::result::Result<GraphRef<'a>, String> {
        let g = GraphRef::layout(bytes, rows, stride)?;
        let (degree, adjacency) = (g.degree, g.adjacency);
        for (r, list) in adjacency.chunks_exact(degree).enumerate() {
            let len = list.iter().position(|&x| x == NONE).unwrap_or(degree);
            if list[len..].iter().any(|&x| x != NONE) {
                return Err(format!("row {r}'s neighbour list has a hole"));
            }
            for (i, &x) in list[..len].iter().enumerate() {
                if x as usize >= rows || x as usize == r || list[..i].contains(&x) {
                    return Err(format!("row {r}'s neighbour list is malformed"));
                }
            }
        }
        Ok(g)
    }

    /// The header and size checks of [`parse`](Self::parse) alone (`O(1)`), for bytes that
    /// were parsed before (a segment's graph on each search) or just encoded.
    pub fn layout(
        bytes: &'a [u8],
        rows: usize,
        stride: usize,
    ) -> std::result::Result<GraphRef<'a>, String> {
        use crate::fsio::{u32_at, u64_at};
        if bytes.len() < HEADER {
            return Err(format!(
                "graph section of {} bytes is too short",
                bytes.len()
            ));
        }
        if !(bytes.as_ptr() as usize).is_multiple_of(4) {
            return Err("graph section is not 4-byte aligned".into());
        }
        let version = u32_at(bytes, 0);
        if version != GRAPH_VERSION {
            return Err(format!(
                "graph version {version}, this build reads {GRAPH_VERSION}"
            ));
        }
        let degree = u32_at(bytes, 4) as usize;
        let got_stride = u32_at(bytes, 8) as usize;
        let n_entries = u32_at(bytes, 12) as usize;
        let build_ef = u32_at(bytes, 16) as usize;
        let alpha = f32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
        let got_rows = u64_at(bytes, 24) as usize;
        let pool = u32_at(bytes, 32) as usize;
        if got_rows != rows {
            return Err(format!(
                "graph covers {got_rows} rows, the segment has {rows}"
            ));
        }
        if got_stride != stride {
            return Err(format!(
                "graph records are {got_stride} bytes, the segment's codes need {stride}"
            ));
        }
        if degree == 0 || degree > 1024 || (rows > 0 && n_entries == 0) || n_entries > rows {
            return Err(format!(
                "graph degree {degree} or entry count {n_entries} out of range"
            ));
        }
        let adj_at = (HEADER + 4 * n_entries).next_multiple_of(64);
        let adj_len = rows
            .checked_mul(degree)
            .and_then(|n| n.checked_mul(4))
            .ok_or("graph size overflows")?;
        let rec_at = (adj_at + adj_len).next_multiple_of(64);
        let rec_len = rows.checked_mul(stride).ok_or("graph size overflows")?;
        if bytes.len() != rec_at + rec_len {
            return Err(format!(
                "graph section is {} bytes, {rows} rows of degree {degree} need {}",
                bytes.len(),
                rec_at + rec_len
            ));
        }
        let entries: &[u32] = bytemuck::cast_slice(&bytes[HEADER..HEADER + 4 * n_entries]);
        let adjacency: &[u32] = bytemuck::cast_slice(&bytes[adj_at..adj_at + adj_len]);
        if entries.iter().any(|&e| e as usize >= rows) {
            return Err("a graph entry row is out of range".into());
        }
        Ok(GraphRef {
            degree,
            entries,
            adjacency,
            records: &bytes[rec_at..],
            stride,
            build_ef,
            alpha,
            pool,
        })
    }

    /// Rows covered.
    pub fn rows(&self) -> usize {
        self.adjacency.len() / self.degree.max(1)
    }

    /// The neighbours of `row` (its list up to the first empty slot).
    #[inline]
    pub fn neighbors(&self, row: u32) -> &'a [u32] {
        let list = &self.adjacency[row as usize * self.degree..][..self.degree];
        let len = list.iter().position(|&x| x == NONE).unwrap_or(self.degree);
        &list[..len]
    }

    /// Starts loading `row`'s list.
    #[inline]
    pub fn prefetch_list(&self, row: u32) {
        let list = &self.adjacency[row as usize * self.degree..][..self.degree];
        crate::kernels::prefetch(
            bytemuck::cast_slice(list),
            crate::kernels::lines_spanned(4 * self.degree),
        );
    }

    /// Mean out-degree (for reports).
    pub fn mean_degree(&self) -> f64 {
        let live = self.adjacency.iter().filter(|&&x| x != NONE).count();
        live as f64 / self.rows().max(1) as f64
    }
}

/// Bytes of a row's record for 4-bit codes of `code_bytes` bytes: the key factor (f32), the
/// key offset (f32) only when the metric has one (`offset`: L2), then the packed code, rounded
/// up to 16 bytes. Without the offset a 4-bit record at d ≤ 56 fits one cache line.
pub fn record_stride(code_bytes: usize, offset: bool) -> usize {
    (4 + 4 * usize::from(offset) + code_bytes).next_multiple_of(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_graphs_parse_and_damage_is_refused() {
        let p = BuildParams::default();
        let adjacency = vec![1, 2, NONE, 0, NONE, NONE, 0, 1, NONE];
        let records = vec![7u8; 3 * 16];
        let g = Graph::encode(&p, 3, &[0], &adjacency, 16, &records);
        let v = g.view(3, 16).unwrap();
        assert_eq!(v.neighbors(0), &[1, 2]);
        assert_eq!(v.neighbors(1), &[0]);
        assert_eq!(v.records.len(), 48);
        assert!(GraphRef::parse(g.bytes(), 4, 16).is_err(), "wrong rows");
        assert!(GraphRef::parse(g.bytes(), 3, 32).is_err(), "wrong stride");
        for bad in [
            vec![1, 1, NONE, 0, NONE, NONE, 0, 1, NONE], // duplicate
            vec![0, 2, NONE, 0, NONE, NONE, 0, 1, NONE], // self loop
            vec![1, 9, NONE, 0, NONE, NONE, 0, 1, NONE], // out of range
            vec![1, NONE, 2, 0, NONE, NONE, 0, 1, NONE], // hole
        ] {
            let g = Graph::encode(&p, 3, &[0], &bad, 16, &records);
            assert!(GraphRef::parse(g.bytes(), 3, 16).is_err(), "{bad:?}");
        }
        let g = Graph::encode(&p, 3, &[5], &adjacency, 16, &records);
        assert!(g.view(3, 16).is_err(), "entry out of range");
    }
}
