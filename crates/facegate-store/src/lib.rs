//! SQLite storage for facegate: tenants, subjects, face samples with their templates, and the
//! image files beside the database.
//!
//! [`SqliteStore`] implements [`facegate_core::Store`]. Open it with [`SqliteStore::open`] and
//! call [`SqliteStore::sweep_orphans`] once at start-up to remove image files that a crash left
//! without a row.

mod bulk_source;
pub mod crypto;
pub mod error;
mod image_path;
mod listing;
mod postgres;
pub mod private_fs;
mod sqlite;
mod staging;
mod stored_attributes;
mod tag_rows;
mod templates;
mod tenant_purge;

pub use bulk_source::BucketSource;
pub use crypto::{DataKey, RotationReport};
pub use error::{Result, StoreError};
pub use postgres::images::{ImageStore, InDatabase};
pub use postgres::rotate::rotate_key_postgres;
pub use postgres::{PgRole, PgStore, DEFAULT_CLAIM_LEASE};
pub use sqlite::backup::{
    check_image_path, image_file, inspect_database, revoke_all_credentials, snapshot_database, DatabaseSummary,
    ImageEntry, DATABASE_FILE, IMAGES_DIR,
};
pub use sqlite::lock::DataDirLock;
pub use sqlite::rotate::rotate_key;
pub use sqlite::SqliteStore;

/// The data directory when none is configured: `./data`, beside the working directory, so that a
/// trial run keeps everything in one place that is easy to find, back up or delete.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Free space on the data directory's disk below which the store reports itself not ready when
/// none is configured. 256 MiB leaves room for the WAL and a checkpoint after the alarm goes off.
pub const DEFAULT_MIN_FREE_DISK_BYTES: u64 = 256 << 20;
