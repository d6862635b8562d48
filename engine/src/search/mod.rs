//! Search: exact brute force (the oracle every approximate result is judged against) and the
//! bounded top-k structure shared by all search paths.

mod cancel;
mod exact;
pub(crate) mod flat;
mod mask;
mod topk;
pub(crate) mod view;

pub use cancel::Cancel;
pub use exact::{ExactIndex, Neighbor};
pub use flat::{FlatIndex, RerankStorage, SearchParams};
pub use mask::LiveMask;
pub use topk::TopK;
pub use view::STAGED_MIN_DIM;
