//! Search: exact brute force (the oracle every approximate result is judged against) and the
//! bounded top-k structure shared by all search paths.

mod cancel;
mod exact;
pub(crate) mod flat;
mod graph;
mod mask;
mod topk;
pub(crate) mod view;

pub use cancel::Cancel;
pub use exact::{ExactIndex, Neighbor};
pub use flat::{FlatIndex, RerankStorage, SearchParams};
pub(crate) use graph::{effort as graph_effort, record_stride_for as graph_record_stride};
pub use mask::LiveMask;
pub use topk::TopK;
pub use view::STAGED_MIN_DIM;

/// [`graph::build_over`] without progress reports.
pub(crate) fn build_graph_over<'a, 'v: 'a, I>(
    shape: &view::Shape,
    rows: I,
    params: &crate::graph::BuildParams,
) -> crate::graph::Graph
where
    I: Iterator<Item = (&'a view::View<'v>, usize)> + Clone,
{
    graph::build_over(shape, rows, params, &|_| {})
}
