//! The store's error type and its mapping onto the core's [`facegate_core::Error`].

use std::io;

use rusqlite::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// No PostgreSQL connection could be had from the pool in time.
    #[error("postgres connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// An image name that could escape the tenant's image folder or is otherwise unsafe.
    #[error("invalid image name {0:?}")]
    InvalidImageName(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the database is at schema version {found}, newer than the {supported} this build knows")]
    SchemaTooNew { found: i64, supported: usize },
    #[error("inconsistent request: {0}")]
    Inconsistent(String),
    /// A missing, wrong or unusable encryption key, or a value that fails authentication.
    #[error("encryption: {0}")]
    Key(String),
    /// Another process holds the data directory (see `DataDirLock`).
    #[error("{0}")]
    Locked(String),
    /// A per-tenant limit (such as the number of tags) would be exceeded.
    #[error("{0}")]
    LimitReached(String),
    /// A subject's new tag labels name a tag the tenant does not have (any more).
    #[error("tag '{0}' does not exist; create it first")]
    UnknownTag(String),
    /// A request the data refuses, such as merging an unknown person into itself.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io { context: context.into(), source }
    }

    /// Whether the failure means the disk (or the user's quota) is full, which clients see as
    /// 507 and operators must act on, rather than as a generic 500.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => {
                e.sqlite_error_code() == Some(ErrorCode::DiskFull)
                    || matches!(e, rusqlite::Error::SqliteFailure(_, Some(msg)) if msg.contains("disk is full"))
            }
            StoreError::Io { source, .. } => io_is_full(source),
            StoreError::Postgres(e) => e.code() == Some(&postgres::error::SqlState::DISK_FULL),
            _ => false,
        }
    }
}

fn io_is_full(e: &io::Error) -> bool {
    // ENOSPC and EDQUOT on Linux; the ErrorKinds cover the other platforms.
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(28) | Some(122))
}

/// The unique-index violation SQLite reports for a UNIQUE constraint or a PRIMARY KEY, if that
/// is what `e` is.
pub(crate) fn unique_violation(e: &rusqlite::Error) -> Option<UniqueKind> {
    match e {
        rusqlite::Error::SqliteFailure(err, _) if err.code == ErrorCode::ConstraintViolation => {
            match err.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => Some(UniqueKind::Unique),
                rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => Some(UniqueKind::PrimaryKey),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether PostgreSQL refused `e` for a UNIQUE or PRIMARY KEY violation.
pub(crate) fn pg_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Whether PostgreSQL refused `e` for a FOREIGN KEY violation.
pub(crate) fn pg_foreign_key_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UniqueKind {
    Unique,
    PrimaryKey,
}

impl From<StoreError> for facegate_core::Error {
    fn from(e: StoreError) -> Self {
        if e.is_storage_full() {
            tracing::error!(error = %e, "write refused: the disk or the database size cap is full");
            return facegate_core::Error::StorageFull;
        }
        match e {
            StoreError::Conflict(msg) => facegate_core::Error::Conflict(msg),
            StoreError::NotFound(what) => facegate_core::Error::NotFound(what),
            StoreError::InvalidImageName(_)
            | StoreError::LimitReached(_)
            | StoreError::UnknownTag(_)
            | StoreError::Invalid(_) => facegate_core::Error::InvalidRequest(e.to_string()),
            StoreError::Sqlite(_)
            | StoreError::Postgres(_)
            | StoreError::Pool(_)
            | StoreError::Io { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::Inconsistent(_)
            | StoreError::Key(_)
            | StoreError::Locked(_) => facegate_core::Error::Storage(e.to_string()),
        }
    }
}

/// Runs the body of a role-trait method (`facegate_core::TenantStore` and the others) and hands
/// back the core's error. The body is written against the store's own [`Result`], because `?`
/// can turn a driver's error into a [`StoreError`] but not into the core's error (neither type
/// is ours to join by `From`); the one conversion here then maps it as the impl above says. So
/// each operation is written once, in its trait method, with no inherent twin to forward to.
pub(crate) fn to_core<T>(body: impl FnOnce() -> Result<T>) -> facegate_core::Result<T> {
    Ok(body()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_maps_to_storage_full() {
        let sqlite_full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        assert!(matches!(facegate_core::Error::from(StoreError::from(sqlite_full)), facegate_core::Error::StorageFull));
        let enospc = StoreError::io("write image", io::Error::from_raw_os_error(28));
        assert!(matches!(facegate_core::Error::from(enospc), facegate_core::Error::StorageFull));
        let other = StoreError::io("write image", io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(facegate_core::Error::from(other), facegate_core::Error::Storage(_)));
    }

    #[test]
    fn unique_violations_are_recognised() {
        let unique = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE),
            Some("UNIQUE constraint failed".into()),
        );
        assert_eq!(unique_violation(&unique), Some(UniqueKind::Unique));
        let fk = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
            None,
        );
        assert_eq!(unique_violation(&fk), None);
        assert!(matches!(
            facegate_core::Error::from(StoreError::InvalidImageName("../x".into())),
            facegate_core::Error::InvalidRequest(_)
        ));
    }
}
