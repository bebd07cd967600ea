//! facegate's core: the domain model, the `FaceService` use cases and the ports
//! (`Engine`, `Store`, `Index`) that the adapter crates implement.
//!
//! This crate knows nothing of HTTP, ONNX Runtime or SQL; dependencies point inward to it.

pub mod error;
pub mod grouping;
pub mod jobs;
pub mod model;
pub mod pool;
pub mod ports;
pub mod score;
pub mod service;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Code, Error, Result};
pub use jobs::{
    BulkJob, BulkJobSummary, BulkPage, BulkRecord, BulkRegistration, ImageSource, PendingRecord, SourceError,
};
pub use model::*;
pub use ports::{
    BulkJobStore, Change, ChangeFeed, ChangeKind, Engine, GalleryStore, Index, IndexSnapshots, ReindexStore,
    RestoredSnapshot, SavedSnapshot, Store, TagStore, TenantStore, UnknownFaceStore,
};

/// The store's role traits, for code that calls a concrete store's methods:
/// `use facegate_core::store_roles::*;`.
pub mod store_roles {
    pub use crate::ports::{
        BulkJobStore, ChangeFeed, GalleryStore, ReindexStore, Store, TagStore, TenantStore, UnknownFaceStore,
    };
}
pub use score::Calibration;
pub use service::{BulkConfig, FaceService, ServiceConfig};
