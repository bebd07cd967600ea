//! In-memory vector search for facegate, partitioned by tenant.
//!
//! [`FlatIndex`] is the shell behind the core's `Index` port: per tenant it owns subjects,
//! sample slots and tag bits, and hands the vectors to a [`VectorSearch`]. [`FlatScan`], the
//! one implementation today, keeps f16 rows with sign sketches, scores small tenants exactly and
//! large ones in two stages (sketch scan, then exact scoring of the closest candidates);
//! `facegate bench search` measures its latency and recall against [`FlatIndex::search_exact`].

mod config;
mod flat;
mod flat_scan;
mod ids;
mod ivf;
mod kernels;
mod quantizer;
mod rebuild;
mod snapshot;
mod vectors;

pub use config::{IndexConfig, IndexKind, DEFAULT_PARTITION_ROWS};
pub use flat::FlatIndex;
pub use flat_scan::{FlatScan, SearchTuning};
pub use ivf::{IvfSearch, IvfTuning};
pub use kernels::dot;
pub use snapshot::{remove_tenant_snapshot, SnapshotDir, SnapshotHeader};
pub use vectors::{Partition, RowCopy, ScoredRow, VectorSearch};
