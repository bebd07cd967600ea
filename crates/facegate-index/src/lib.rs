//! In-memory vector search for facegate, partitioned by tenant.
//!
//! [`FlatIndex`] keeps each tenant's templates as f16 rows with sign sketches, scores small
//! tenants exactly and large ones in two stages (sketch scan, then exact scoring of the
//! closest candidates); `facegate bench search` measures its latency and recall against
//! [`FlatIndex::search_exact`].

mod flat;
mod kernels;

pub use flat::{FlatIndex, SearchTuning};
pub use kernels::dot;
