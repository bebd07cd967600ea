//! Where facegate keeps its gallery (tenants and their credentials, subjects, face samples with
//! their templates and images, tags, bulk jobs), on either of two backends, and where bulk
//! registration reads its photos.
//!
//! - [`SqliteStore`]: the embedded default, one SQLite file in WAL mode with the image files
//!   beside it, in a data directory that one process holds ([`DataDirLock`]). The holder opens it
//!   with [`SqliteStore::open_locked`] and calls [`SqliteStore::sweep_orphans_exclusive`] once at
//!   start-up to remove image files that a crash left without a row.
//! - [`PgStore`]: PostgreSQL, shared by several nodes, images in the database.
//! - [`BucketSource`]: the bulk image source, a local folder or an S3-compatible bucket; it is
//!   read, never written, and holds no gallery data.
//!
//! Both stores implement [`facegate_core::Store`] and pass one conformance suite
//! (`tests/conformance.rs`), which holds the core's `MemoryStore` to the same contract.
//!
//! Layout:
//! - `sqlite/`: SQLite alone. `mod.rs` (the store and its connections), a file per role
//!   (`tenants`, `gallery`, `tags`, `bulk`, `reindex`), `blobs.rs` (the image files), `lock.rs`
//!   (the data-directory lock), `migrations/`, `rotate.rs` (key rotation), `backup.rs` (the
//!   snapshot `facegate backup` takes).
//! - `postgres/`: PostgreSQL alone. `mod.rs` (pool, node lock), a file per role, `changes.rs`
//!   (the change log other nodes follow), `images.rs`, `migrations/`, `rotate.rs`, `sql.rs`.
//! - At the root, what both backends share: `error.rs` (and `to_core`, the role traits' one
//!   error conversion), `crypto.rs` (encryption at rest), `templates.rs` (the template codec),
//!   `image_path.rs` (the checked key of an image), `stored_attributes.rs`, `staging.rs`
//!   (reindex staging), `tag_rows.rs`, `listing.rs`, `tenant_purge.rs`, `private_fs.rs`
//!   (0700/0600 files); and `bulk_source.rs`, the bulk image source.

mod bulk_source;
mod change_kinds;
pub mod crypto;
pub mod error;
mod image_path;
mod listing;
mod postgres;
pub mod private_fs;
mod sightings;
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
