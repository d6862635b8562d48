//! Search: exact brute force (the oracle every approximate result is judged against) and the
//! bounded top-k structure shared by all search paths.

mod exact;
mod flat;
mod topk;

pub use exact::{ExactIndex, Neighbor};
pub use flat::{FlatIndex, RerankStorage, STAGED_MIN_DIM, SearchParams};
pub use topk::TopK;
