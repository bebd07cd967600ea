//! SQLite storage for facegate: tenants, subjects, face samples with their templates, and the
//! image files beside the database.
//!
//! [`SqliteStore`] implements [`facegate_core::Store`]. Open it with [`SqliteStore::open`] and
//! call [`SqliteStore::sweep_orphans`] once at start-up to remove image files that a crash left
//! without a row.

mod blobs;
mod bucket;
pub mod crypto;
pub mod error;
mod lock;
mod migrations;
mod postgres;
pub mod private_fs;
mod rotate;
mod sqlite;
mod stored_attributes;
mod tag_rows;
mod templates;

pub use bucket::BucketSource;
pub use crypto::DataKey;
pub use error::{Result, StoreError};
pub use lock::DataDirLock;
pub use postgres::{rotate_key_postgres, ImageStore, InDatabase, PgRole, PgStore};
pub use rotate::{rotate_key, RotationReport};
pub use sqlite::SqliteStore;
