//! In-memory vector search for facegate, partitioned by tenant.
//!
//! [`FlatIndex`] is exact: every query is scored against every template of the tenant, with a
//! dot product written so that the compiler vectorises it ([`dot`]). Quantized and graph
//! indexes may follow, but only with measured recall against this one.

mod flat;

pub use flat::{dot, FlatIndex};
