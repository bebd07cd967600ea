//! The store's half of `facegate backup` and `restore`: a consistent copy of a live database
//! through SQLite's online backup API, and what a database copy holds (the image files it
//! references, its counts, the key it is encrypted under), so that the command can pack and
//! check exactly the files of that snapshot.
//!
//! The copy never takes the data directory's lock: the server holds it, and a backup must run
//! beside the server. It reads through a read-only connection, which in WAL mode neither blocks
//! the server's writer nor is blocked by it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::migrations;
use super::recorded_key_id;
use crate::error::{Result, StoreError};
use crate::tenant_purge::CREDENTIAL_TABLES;

/// The database file's name in a data directory.
pub const DATABASE_FILE: &str = "facegate.db";
/// The image folder's name in a data directory.
pub const IMAGES_DIR: &str = "images";

/// As the store's own connections: long enough to ride out a checkpoint of the server's.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
/// A backup step answered "busy" (the server is recovering its WAL, or checkpointing in a way
/// that excludes readers) is retried this many times, a pause apart, before giving up; together
/// about the busy timeout again.
const BUSY_RETRIES: u32 = 50;
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// An image file a database references: its `image_blobs` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Relative to the images folder: `<tenant id>/<image name>`, validated.
    pub rel_path: String,
    /// Of the bytes on disk (sealed ones when the directory is encrypted).
    pub sha256: String,
    pub bytes: u64,
}

/// What a database file holds, for a backup's manifest and a restore's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSummary {
    pub schema_version: i64,
    pub tenants: u64,
    pub subjects: u64,
    pub samples: u64,
    /// Credentials (tokens, API keys, access keys) that have not expired: what a restore of this
    /// database brings back into service, revoked ones included when they were still in their
    /// grace period at the snapshot.
    pub credentials: u64,
    /// Sorted by path.
    pub images: Vec<ImageEntry>,
    /// The id of the key templates and images are sealed with; `None` when stored in the clear.
    pub encryption_key_id: Option<String>,
    /// SQLite's `PRAGMA integrity_check`: "ok", or the problems it found.
    pub integrity: String,
}

/// Copies `<data_dir>/facegate.db` to `dest` (a new file, created 0600) as one consistent
/// snapshot, while a server may keep writing.
///
/// The whole copy is one backup step: the API restarts a stepwise copy whenever another
/// connection writes the source, which under steady writes could restart forever, while a
/// single step holds one read transaction and so copies exactly one committed state. The copy is
/// left in rollback-journal mode, a single self-contained file.
pub fn snapshot_database(data_dir: &Path, dest: &Path) -> Result<()> {
    let source_path = data_dir.join(DATABASE_FILE);
    if !source_path.is_file() {
        return Err(StoreError::NotFound("database (facegate.db in the data directory)"));
    }
    let source = Connection::open_with_flags(
        &source_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    source.busy_timeout(BUSY_TIMEOUT)?;
    crate::private_fs::file_options()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| StoreError::io(format!("create {}", dest.display()), e))?;
    let mut copy = Connection::open(dest)?;
    {
        let backup = Backup::new(&source, &mut copy)?;
        let mut busy = 0;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::Busy | StepResult::Locked if busy < BUSY_RETRIES => {
                    busy += 1;
                    std::thread::sleep(BUSY_PAUSE);
                }
                other => {
                    return Err(StoreError::Conflict(format!("the database stayed busy during the backup ({other:?})")))
                }
            }
        }
    }
    let mode: String = copy.pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(StoreError::Inconsistent(format!("the snapshot stayed in journal mode {mode}")));
    }
    copy.close().map_err(|(_, e)| StoreError::Sqlite(e))?;
    Ok(())
}

/// Reads a database file that no server is using (a snapshot, or a restored copy): its integrity,
/// counts, key id and the image files it references. Refuses a database newer than this build.
pub fn inspect_database(path: &Path) -> Result<DatabaseSummary> {
    if !path.is_file() {
        return Err(StoreError::NotFound("database file"));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let integrity = {
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let lines = stmt.query_map([], |row| row.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        lines.join("\n")
    };
    if integrity != "ok" {
        // The tables below may not be readable; report what SQLite found.
        return Ok(DatabaseSummary {
            schema_version: 0,
            tenants: 0,
            subjects: 0,
            samples: 0,
            credentials: 0,
            images: Vec::new(),
            encryption_key_id: None,
            integrity,
        });
    }
    let schema_version = migrations::version(&conn)?;
    let supported = migrations::MIGRATIONS.len();
    if usize::try_from(schema_version).map_or(true, |v| v > supported) {
        return Err(StoreError::SchemaTooNew { found: schema_version, supported });
    }
    let count = |table: &str| -> Result<u64> {
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| row.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let mut images = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT path, sha256, bytes FROM image_blobs ORDER BY path")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let rel_path: String = row.get(0)?;
            check_image_path(&rel_path)?;
            let bytes: i64 = row.get(2)?;
            let bytes = u64::try_from(bytes)
                .map_err(|_| StoreError::Inconsistent(format!("image {rel_path} has a negative size")))?;
            images.push(ImageEntry { rel_path, sha256: row.get(1)?, bytes });
        }
    }
    Ok(DatabaseSummary {
        schema_version,
        tenants: count("tenants")?,
        subjects: count("subjects")?,
        samples: count("face_samples")?,
        credentials: live_credentials(&conn, schema_version)?,
        images,
        encryption_key_id: recorded_key_id(&conn)?,
        integrity,
    })
}

/// The schema version from which credentials carry an expiry (`0009_credential_expiry.sql`).
const CREDENTIAL_EXPIRY_SCHEMA: i64 = 9;

/// Credentials not yet expired, in every tenant.
fn live_credentials(conn: &Connection, schema_version: i64) -> Result<u64> {
    let now = facegate_core::service::now_unix_ms();
    let mut live = 0u64;
    for table in CREDENTIAL_TABLES {
        let sql = if schema_version >= CREDENTIAL_EXPIRY_SCHEMA {
            format!("SELECT COUNT(*) FROM {table} WHERE expires_unix_ms IS NULL OR expires_unix_ms > ?1")
        } else {
            format!("SELECT COUNT(*) FROM {table} WHERE ?1 IS NOT NULL")
        };
        let n: i64 = conn.query_row(&sql, [now], |row| row.get(0))?;
        live += u64::try_from(n).unwrap_or(0);
    }
    Ok(live)
}

/// Removes every credential of every tenant from the database file at `path` (a restored copy,
/// not yet served), as `facegate tenant rotate-credentials --grace 0` does for one tenant, and
/// returns how many were live. For restoring after a compromise: the backup may hold
/// credentials that were revoked since, or leaked; each tenant then gets new ones by rotation.
pub fn revoke_all_credentials(path: &Path) -> Result<u64> {
    let mut conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let schema_version = migrations::version(&conn)?;
    let live = live_credentials(&conn, schema_version)?;
    // secure_delete, as every delete of the store: the rows' bytes do not linger in free pages.
    conn.pragma_update(None, "secure_delete", true)?;
    let tx = conn.transaction()?;
    for table in CREDENTIAL_TABLES {
        tx.execute(&format!("DELETE FROM {table}"), [])?;
    }
    tx.commit()?;
    Ok(live)
}

/// Refuses an image path that could leave its tenant's folder: `<tenant id>/<image name>`, where
/// the name may hold folders (`enroll/...`) but no `..`, no hidden or empty part. Backup files
/// are input, so restore checks every path with this.
pub fn check_image_path(rel_path: &str) -> Result<()> {
    match rel_path.split_once('/') {
        Some((tenant, name)) => crate::image_path::rel_path(tenant, name).map(|_| ()),
        None => Err(StoreError::InvalidImageName(rel_path.to_owned())),
    }
}

/// Where an image of `data_dir` lives; `rel_path` is checked with [`check_image_path`].
pub fn image_file(data_dir: &Path, rel_path: &str) -> Result<PathBuf> {
    check_image_path(rel_path)?;
    let mut path = data_dir.join(IMAGES_DIR);
    path.extend(rel_path.split('/'));
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_stay_inside_their_tenant_folder() {
        check_image_path("tenant-1/abc.jpg").expect("plain");
        check_image_path("tenant-1/enroll/abc.jpg").expect("in a folder");
        for bad in ["abc.jpg", "t/../x", "../t/x", "t/x//y", "/t/x", "t/.x", ".t/x", "t/", "/x", "t\\x/y"] {
            assert!(check_image_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_snapshot_of_a_live_store_is_a_whole_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::sqlite::SqliteStore::open(dir.path()).expect("open");
        store.write(|tx| Ok(tx.execute("INSERT INTO store_meta (name, value) VALUES ('x', 'y')", [])?)).expect("write");
        let dest = dir.path().join("snap.db");
        snapshot_database(dir.path(), &dest).expect("snapshot");
        let summary = inspect_database(&dest).expect("inspect");
        assert_eq!(summary.integrity, "ok");
        assert_eq!(summary.tenants, 0);
        assert!(summary.images.is_empty());
        assert!(snapshot_database(dir.path(), &dest).is_err(), "never overwrites");
        drop(store);
    }
}
