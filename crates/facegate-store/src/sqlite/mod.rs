//! [`SqliteStore`]: the embedded default [`Store`], one SQLite file in WAL mode plus the image
//! files beside it.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use facegate_core::{NewSample, Subject, Tenant};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior};

pub(crate) mod backup;
mod blobs;
mod bulk;
mod changes;
mod gallery;
pub(crate) mod lock;
mod migrations;
mod reindex;
pub(crate) mod rotate;
mod tags;
mod tenants;
mod unknown;

use self::blobs::{BlobInfo, BlobStore, StagedBlob};
use self::lock::DataDirLock;
use crate::crypto::DataKey;
use crate::error::{Result, StoreError};
use crate::private_fs;

/// Long enough to ride out another process's checkpoint, short enough that a stuck lock
/// surfaces as an error instead of a hung request.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
/// Idle reader connections kept open; more are opened on demand under load and closed after.
const MAX_IDLE_READERS: usize = 4;
/// A temporary image file older than this cannot belong to a write still in progress.
const TMP_GRACE: Duration = Duration::from_secs(3600);

/// SQLite storage under one data directory: `facegate.db` and `images/`.
///
/// Every write goes through a single connection behind a mutex, so concurrent writers queue in
/// the process instead of failing with "database is locked"; reads use a small pool of separate
/// connections, which WAL lets run alongside the writer.
pub struct SqliteStore {
    db_path: PathBuf,
    blobs: BlobStore,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Seals templates and image files when the data directory is encrypted.
    key: Option<DataKey>,
    renamed_tenants: Vec<(String, String)>,
    min_free_disk_bytes: std::sync::atomic::AtomicU64,
    /// Wakes the change follower at each commit (`changes.rs`).
    commits: changes::Commits,
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/facegate.db` and `data_dir/images/`, and applies
    /// any pending schema migrations. The data directory must not be encrypted.
    pub fn open(data_dir: &Path) -> Result<SqliteStore> {
        Self::open_with_key(data_dir, None)
    }

    /// Opens the store beside the process that holds the data directory (say, `tenant create`
    /// next to a running server), with templates and images encrypted under `key`, or in the
    /// clear when `None`. The key is only checked: a directory encrypted under another key, or
    /// opened without its key, is refused, and so is a key given for a plaintext directory.
    /// Only the holder of the directory's lock changes its encryption ([`Self::open_locked`]).
    pub fn open_with_key(data_dir: &Path, key: Option<DataKey>) -> Result<SqliteStore> {
        Self::open_inner(data_dir, key, None)
    }

    /// Opens the store as the one process holding `lock`: as [`Self::open_with_key`], but a key
    /// given for a directory without faces marks it encrypted, and tenant names from before the
    /// safe alphabet are renamed (see [`Self::renamed_tenants`]).
    pub fn open_locked(data_dir: &Path, key: Option<DataKey>, lock: &DataDirLock) -> Result<SqliteStore> {
        Self::open_inner(data_dir, key, Some(lock))
    }

    fn open_inner(data_dir: &Path, key: Option<DataKey>, owner: Option<&DataDirLock>) -> Result<SqliteStore> {
        private_fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io(format!("create {}", data_dir.display()), e))?;
        let db_path = data_dir.join("facegate.db");
        make_private(data_dir, &db_path)?;
        let mut writer = Connection::open(&db_path)?;
        configure(&writer)?;
        let mode: String = writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Still correct (the busy timeout covers the reader/writer overlap), only slower.
            tracing::warn!(%mode, path = %db_path.display(), "SQLite refused WAL mode");
        }
        let version = migrations::migrate(&mut writer)?;
        check_key(&writer, key.as_ref(), owner.is_some())?;
        let renamed_tenants = match owner {
            Some(_) => rename_unsafe_tenants(&mut writer)?,
            None => Vec::new(),
        };
        let blobs = BlobStore::open(data_dir.join("images"))?;
        tracing::debug!(path = %db_path.display(), version, encrypted = key.is_some(), "opened SQLite store");
        Ok(SqliteStore {
            db_path,
            blobs,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            key,
            renamed_tenants,
            min_free_disk_bytes: std::sync::atomic::AtomicU64::new(0),
            commits: changes::Commits::default(),
        })
    }

    /// Tenants renamed at this open because their names did not fit the safe alphabet, as
    /// (old name, new name).
    pub fn renamed_tenants(&self) -> &[(String, String)] {
        &self.renamed_tenants
    }

    /// Below this many free bytes on the data directory's disk, [`Store::check_ready`] reports
    /// the store not ready.
    pub fn set_min_free_disk_bytes(&self, bytes: u64) {
        self.min_free_disk_bytes.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Removes image files that have no row (left by a crash between writing a file and
    /// committing its row, or before removing the files of a deleted subject) and stale
    /// temporary files. Call once at start-up; returns how many files were removed.
    pub fn sweep_orphans(&self) -> Result<usize> {
        self.sweep_with_grace(TMP_GRACE)
    }

    /// As [`Self::sweep_orphans`], but every temporary file goes, however young: holding
    /// `_lock` proves no other process can be writing one.
    pub fn sweep_orphans_exclusive(&self, _lock: &DataDirLock) -> Result<usize> {
        self.sweep_with_grace(Duration::ZERO)
    }

    fn sweep_with_grace(&self, tmp_grace: Duration) -> Result<usize> {
        // Holding the writer lock means no file is between publish and commit while we look.
        let conn = self.writer.lock();
        let mut stmt = conn.prepare_cached("SELECT 1 FROM image_blobs WHERE path = ?1")?;
        let removed = self.blobs.sweep(tmp_grace, &mut |rel| Ok(stmt.exists([rel])?))?;
        if removed > 0 {
            tracing::info!(removed, "swept orphaned image files");
        }
        Ok(removed)
    }

    /// Caps the database at about `bytes` (SQLite's `max_page_count`): writes that would grow it
    /// further fail as on a full disk, and succeed again once deletes free pages. The cap never
    /// falls below the current size. Returns the cap in effect, in bytes.
    pub fn set_max_database_bytes(&self, bytes: u64) -> Result<u64> {
        let conn = self.writer.lock();
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let wanted = i64::try_from(bytes / page_size.max(1) as u64).unwrap_or(i64::MAX).max(1);
        let pages: i64 = conn.query_row(&format!("PRAGMA max_page_count = {wanted}"), [], |row| row.get(0))?;
        let cap = u64::try_from(pages.saturating_mul(page_size)).unwrap_or(u64::MAX);
        tracing::info!(cap_bytes = cap, "database size capped");
        Ok(cap)
    }

    /// Where the image of a sample lives on disk.
    pub fn image_path(&self, tenant_id: &str, image_name: &str) -> Result<PathBuf> {
        Ok(self.blobs.path_of(&crate::image_path::rel_path(tenant_id, image_name)?))
    }

    /// Copies the WAL into the database file and empties it, waiting out readers for up to the
    /// busy timeout. Called at shutdown, so the data directory is one self-contained file plus
    /// images. Returns whether the WAL was fully checkpointed.
    pub fn checkpoint(&self) -> Result<bool> {
        let conn = self.writer.lock();
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
        Ok(busy == 0)
    }

    /// SQLite's `PRAGMA integrity_check`: "ok", or the problems it found.
    pub fn integrity_check(&self) -> Result<String> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let lines = stmt.query_map([], |row| row.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(lines.join("\n"))
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64> {
        let conn = self.reader()?;
        migrations::version(&conn)
    }

    pub(crate) fn reader(&self) -> Result<Reader<'_>> {
        let pooled = self.readers.lock().pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.db_path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
                )?;
                configure(&conn)?;
                // Reads only: a bug that writes through a reader would bypass the writer lock.
                conn.pragma_update(None, "query_only", "ON")?;
                conn
            }
        };
        Ok(Reader { pool: &self.readers, conn: Some(conn) })
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.write_with_image(None, |tx, _| f(tx))
    }

    /// Runs `f` in a write transaction, with the staged image (if any) moved into place first so
    /// that the row never commits without its file; the file is removed again if `f` or the
    /// commit fails.
    fn write_with_image<T>(
        &self,
        image: Option<StagedBlob>,
        f: impl FnOnce(&Transaction<'_>, Option<&BlobInfo>) -> Result<T>,
    ) -> Result<T> {
        self.write_with_images(image.into_iter().collect(), |tx, blobs| f(tx, blobs.first()))
    }

    /// As [`Self::write_with_image`], with any number of images.
    fn write_with_images<T>(
        &self,
        images: Vec<StagedBlob>,
        f: impl FnOnce(&Transaction<'_>, &[BlobInfo]) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.writer.lock();
        let published = images.into_iter().map(StagedBlob::publish).collect::<Result<Vec<_>>>()?;
        let infos: Vec<BlobInfo> = published.iter().map(|p| p.info().clone()).collect();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx, &infos)?;
        tx.commit()?;
        self.commits.committed();
        published.into_iter().for_each(|p| p.keep());
        Ok(out)
    }

    /// Writes the sample's image to a temporary file, before any lock is taken.
    fn stage(&self, subject: &Subject, sample: Option<&NewSample>) -> Result<Option<StagedBlob>> {
        let Some(ns) = sample else { return Ok(None) };
        if ns.sample.subject_id != subject.id {
            return Err(StoreError::Inconsistent(format!(
                "sample {} is for subject {}, not {}",
                ns.sample.id, ns.sample.subject_id, subject.id
            )));
        }
        let rel = crate::image_path::rel_path(&subject.tenant_id, &ns.sample.image_name)?;
        match &self.key {
            Some(key) => self.blobs.stage(&rel, &key.seal(&ns.image, subject.id.as_bytes())?).map(Some),
            None => self.blobs.stage(&rel, &ns.image).map(Some),
        }
    }
}

impl facegate_core::Store for SqliteStore {
    fn check_ready(&self) -> facegate_core::Result<()> {
        let answered: rusqlite::Result<i64> =
            self.reader().map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e))).and_then(|conn| {
                // Reads the schema cookie from the file, so a database that cannot be read fails.
                conn.query_row("PRAGMA schema_version", [], |row| row.get(0))
            });
        if let Err(e) = answered {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            return Err(facegate_core::Error::Storage("the database does not answer".into()));
        }
        let min_free = self.min_free_disk_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let dir = self.db_path.parent().unwrap_or(Path::new("."));
        match rustix::fs::statvfs(dir) {
            Ok(stats) => {
                let free = stats.f_bavail.saturating_mul(stats.f_frsize);
                if free < min_free {
                    tracing::warn!(free_bytes = free, min_free_disk_bytes = min_free, "readiness: disk nearly full");
                    return Err(facegate_core::Error::StorageFull);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "readiness: cannot read the free disk space");
                Err(facegate_core::Error::Storage("cannot read the free disk space".into()))
            }
        }
    }

    /// Its own change log: the index follows it as on PostgreSQL (this process's writes come back
    /// once more, harmlessly, as do an import's beside it), and a snapshot of the index records
    /// the last change it reflects.
    fn change_feed(&self) -> Option<&dyn facegate_core::ChangeFeed> {
        Some(self)
    }
}

/// A pooled read connection, handed back on drop.
pub(crate) struct Reader<'a> {
    pool: &'a Mutex<Vec<Connection>>,
    conn: Option<Connection>,
}

impl Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Only `drop` takes the connection out.
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("reader used after drop"),
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut pool = self.pool.lock();
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
        }
    }
}

/// Creates the database file 0600 before SQLite does (SQLite gives its WAL and shared-memory
/// files the database's mode), and takes group and world access away from an older directory.
fn make_private(data_dir: &Path, db_path: &Path) -> Result<()> {
    let io = |what: &Path, e| StoreError::io(format!("restricting access to {}", what.display()), e);
    private_fs::restrict(data_dir, private_fs::DIR_MODE).map_err(|e| io(data_dir, e))?;
    if !db_path.exists() {
        private_fs::file_options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(db_path)
            .map_err(|e| io(db_path, e))?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db_path.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        private_fs::restrict(&path, private_fs::FILE_MODE).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// Renames tenants whose names predate the safe alphabet (`facegate_core::service::
/// validate_tenant_name`): a name holding `/`, `..` or a leading dot could name another tenant's
/// bulk folder. Each character outside the alphabet becomes `-`, leading dots become `-`, and a
/// number is added when the result is taken. Returns (old, new) for each rename.
fn rename_unsafe_tenants(conn: &mut Connection) -> Result<Vec<(String, String)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let names: Vec<(String, String)> = {
        let mut stmt = tx.prepare("SELECT id, name FROM tenants ORDER BY rowid")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut taken: std::collections::HashSet<String> = names.iter().map(|(_, n)| n.clone()).collect();
    let mut renamed = Vec::new();
    for (id, name) in names {
        if facegate_core::service::validate_tenant_name(&name).is_ok() {
            continue;
        }
        let base = safe_tenant_name(&name);
        let mut candidate = base.clone();
        let mut n = 2;
        while taken.contains(&candidate) {
            candidate = format!("{base}-{n}");
            n += 1;
        }
        tx.execute("UPDATE tenants SET name = ?2 WHERE id = ?1", params![id, candidate])?;
        tracing::warn!(old = ?name, new = %candidate, "renamed a tenant whose name did not fit the safe alphabet");
        taken.insert(candidate.clone());
        renamed.push((name, candidate));
    }
    tx.commit()?;
    Ok(renamed)
}

/// `name` in the safe tenant alphabet.
fn safe_tenant_name(name: &str) -> String {
    let mut safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .take(facegate_core::service::MAX_TENANT_NAME_CHARS - 4)
        .collect();
    let dots = safe.len() - safe.trim_start_matches('.').len();
    safe.replace_range(..dots, &"-".repeat(dots));
    if safe.is_empty() {
        safe.push_str("tenant");
    }
    safe
}

/// Settings that are per connection, so every connection needs them.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // FULL: an acknowledged write survives power loss, not only a process crash (NORMAL in WAL
    // mode may lose the last transactions).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted biometric data is overwritten with zeros rather than left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

/// Deleted rows are zeroed in the database file, but older copies of their pages can stay in the
/// WAL until it is reset. Checkpoint and truncate it now, without waiting: if a reader holds an
/// old snapshot the checkpoint stops short, and the next one finishes the job.
fn scrub_wal(conn: &Connection) {
    if let Err(e) = conn.busy_timeout(Duration::ZERO) {
        tracing::debug!(error = %e, "could not clear the busy timeout for a checkpoint");
        return;
    }
    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0));
    match result {
        Ok(0) => {}
        Ok(_) => tracing::debug!("WAL checkpoint after delete was blocked by a reader; deferred"),
        Err(e) => tracing::debug!(error = %e, "WAL checkpoint after delete failed; deferred"),
    }
    if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "could not restore the writer's busy timeout");
    }
}

/// `store_meta` row naming the key the data directory is encrypted under.
pub(crate) const META_KEY_ID: &str = "encryption_key_id";

pub(crate) fn recorded_key_id(conn: &Connection) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT value FROM store_meta WHERE name = ?1", [META_KEY_ID], |row| row.get(0)).optional()?)
}

/// Checks `key` against the directory's recorded key, recording it when
/// [`crate::crypto::check_key_state`] says so.
fn check_key(conn: &Connection, key: Option<&DataKey>, may_record: bool) -> Result<()> {
    let has_samples = || -> Result<bool> {
        Ok(conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM face_samples) OR EXISTS (SELECT 1 FROM sightings)",
            [],
            |r| r.get(0),
        )?)
    };
    if crate::crypto::check_key_state(recorded_key_id(conn)?, key, may_record, &has_samples)? {
        if let Some(key) = key {
            conn.execute("INSERT INTO store_meta (name, value) VALUES (?1, ?2)", params![META_KEY_ID, key.id_hex()])?;
            tracing::info!(key_id = %key.id_hex(), "data directory set to encrypt templates and images");
        }
    }
    Ok(())
}

fn tenant_from_row(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant { id: row.get(0)?, name: row.get(1)?, created_at: row.get(2)? })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use facegate_core::store_roles::*;
    use facegate_core::{BoundingBox, FaceSample, Profile};

    use super::*;

    fn pragma(conn: &Connection, name: &str) -> String {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, rusqlite::types::Value>(0))
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .expect("pragma")
    }

    #[test]
    fn every_connection_is_durable_and_scrubs_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let reader = store.reader().expect("reader");
        for conn in [&*store.writer.lock(), &*reader] {
            assert_eq!(pragma(conn, "journal_mode"), "wal");
            assert_eq!(pragma(conn, "synchronous"), "2", "FULL");
            assert_eq!(pragma(conn, "foreign_keys"), "1");
            assert_eq!(pragma(conn, "secure_delete"), "1");
            assert_eq!(pragma(conn, "busy_timeout"), "5000");
        }
        assert_eq!(pragma(&reader, "query_only"), "1");
        assert!(reader.execute_batch("DELETE FROM tenants").is_err(), "readers must not write");
    }

    #[test]
    fn unsafe_tenant_names_are_renamed_by_the_lock_holder_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteStore::open(dir.path()).expect("open");
            store
                .write(|tx| {
                    for (id, name) in [("1", "evil/sub"), ("2", ".."), ("3", "evil/.."), ("4", "evil-sub"), ("5", "ok")]
                    {
                        tx.execute("INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, '')", [id, name])?;
                    }
                    Ok(())
                })
                .expect("seed");
        }
        let side = SqliteStore::open(dir.path()).expect("side process");
        assert!(side.renamed_tenants().is_empty(), "only the lock holder renames");
        drop(side);
        let lock = DataDirLock::acquire(dir.path()).expect("lock");
        let store = SqliteStore::open_locked(dir.path(), None, &lock).expect("open locked");
        let renamed: Vec<(&str, &str)> =
            store.renamed_tenants().iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(renamed, vec![("evil/sub", "evil-sub-2"), ("..", "--"), ("evil/..", "evil-..")]);
        for t in store.list_tenants().expect("list") {
            assert!(facegate_core::service::validate_tenant_name(&t.name).is_ok(), "{}", t.name);
        }
        drop(store);
        let again = SqliteStore::open_locked(dir.path(), None, &lock).expect("reopen");
        assert!(again.renamed_tenants().is_empty(), "nothing left to rename");
    }

    #[test]
    fn files_and_folders_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let store = SqliteStore::open(&data).expect("open");
        store.create_tenant("t", "h").expect("write");
        for path in [data.clone(), data.join("images")] {
            let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
        for name in ["facegate.db", "facegate.db-wal", "facegate.db-shm"] {
            let mode = fs::metadata(data.join(name)).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        // An older, world-readable directory is tightened at open.
        drop(store);
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::set_permissions(data.join("facegate.db"), fs::Permissions::from_mode(0o644)).expect("chmod");
        drop(SqliteStore::open(&data).expect("reopen"));
        assert_eq!(fs::metadata(&data).expect("meta").permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(data.join("facegate.db")).expect("meta").permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn reader_pool_keeps_a_bounded_number_of_idle_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let many: Vec<_> = (0..MAX_IDLE_READERS + 3).map(|_| store.reader().expect("reader")).collect();
        assert!(store.readers.lock().is_empty());
        drop(many);
        assert_eq!(store.readers.lock().len(), MAX_IDLE_READERS);
        let _again = store.reader().expect("reuse");
        assert_eq!(store.readers.lock().len(), MAX_IDLE_READERS - 1);
    }

    #[test]
    fn ragged_templates_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let tenant = store.create_tenant("t", "h").expect("tenant");
        store
            .write(|tx| {
                tx.execute_batch(&format!(
                    "INSERT INTO subjects (id, tenant_id, created_at, updated_at) VALUES ('s', '{0}', '', '');
                     INSERT INTO face_samples (id, tenant_id, subject_id, image_name, bbox_left, bbox_top,
                         bbox_right, bbox_bottom, detector_score, model_id, embedding, created_at)
                     VALUES ('bad', '{0}', 's', 'enroll/x.jpg', 0, 0, 0, 0, 0, 'm', x'0102030405', ''),
                            ('good', '{0}', 's', 'enroll/y.jpg', 0, 0, 0, 0, 0, 'm', x'0000803f', '');",
                    tenant.id
                ))?;
                Ok(())
            })
            .expect("seed");
        let mut seen = Vec::new();
        store.for_each_template("m", &mut |t| seen.push((t.sample_id, t.embedding))).expect("stream");
        assert_eq!(seen, vec![("good".to_owned(), vec![1.0])]);
    }

    fn sample_of(subject: &Subject, id: &str) -> NewSample {
        NewSample {
            sample: FaceSample {
                id: id.into(),
                subject_id: subject.id.clone(),
                image_name: format!("enroll/{id}.jpg"),
                bbox: BoundingBox::default(),
                detector_score: 0.9,
                model_id: "m".into(),
                created_at: String::new(),
            },
            embedding: vec![1.0, 0.0],
            image: id.as_bytes().to_vec(),
        }
    }

    #[test]
    fn an_event_and_its_tags_commit_together_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let tenant = store.create_tenant("t", "h").expect("tenant");
        let subject = Subject {
            id: "s".into(),
            tenant_id: tenant.id.clone(),
            customer_person_id: None,
            profile: Profile::default(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        for tag in ["a", "b", "boom"] {
            store.create_tag(&tenant.id, tag, 64).expect("tag");
        }
        store.create_tagged_subject(&subject, &sample_of(&subject, "e1"), &["a".into()]).expect("subject");
        // A tag write that fails, after the event's rows in the same transaction.
        store
            .write(|tx| {
                tx.execute_batch(
                    "CREATE TRIGGER boom BEFORE INSERT ON subject_tags WHEN NEW.tag = 'boom' \
                     BEGIN SELECT RAISE(ABORT, 'boom'); END;",
                )?;
                Ok(())
            })
            .expect("trigger");
        let boom = ["boom".to_owned()];
        assert!(store.update_subject(&subject, Some(&sample_of(&subject, "e2")), Some(&boom)).is_err());
        let mut replacement = sample_of(&subject, "e1");
        replacement.sample.image_name = "enroll/e1-new.jpg".into();
        assert!(store.replace_sample(&subject, &replacement, Some(&boom)).is_err());
        let samples = store.samples_of(&tenant.id, "s").expect("samples");
        assert_eq!(samples.len(), 1, "the added event was rolled back with its tags");
        assert_eq!(samples[0].image_name, "enroll/e1.jpg", "the replaced event was rolled back with its tags");
        assert_eq!(store.subject_tags(&tenant.id, "s").expect("tags"), vec!["a".to_owned()]);
        let images = fs::read_dir(dir.path().join("images").join(&tenant.id).join("enroll")).expect("dir").count();
        assert_eq!(images, 1, "no image file left by the failed writes");

        store.update_subject(&subject, Some(&sample_of(&subject, "e3")), Some(&["b".into()])).expect("update");
        assert_eq!(store.subject_tags(&tenant.id, "s").expect("tags"), vec!["b".to_owned()]);
        assert_eq!(store.samples_of(&tenant.id, "s").expect("samples").len(), 2);
    }

    #[test]
    fn a_failed_commit_removes_the_image_it_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        // No such tenant: the foreign key fails after the file was moved into place.
        let subject = Subject {
            id: "s".into(),
            tenant_id: "no-such-tenant".into(),
            customer_person_id: None,
            profile: Profile::default(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        let ns = NewSample {
            sample: FaceSample {
                id: "x".into(),
                subject_id: "s".into(),
                image_name: "enroll/x.jpg".into(),
                bbox: BoundingBox::default(),
                detector_score: 0.0,
                model_id: "m".into(),
                created_at: String::new(),
            },
            embedding: vec![1.0],
            image: b"img".to_vec(),
        };
        let err = store.create_subject(&subject, Some(&ns)).expect_err("no tenant");
        assert!(matches!(err, facegate_core::Error::NotFound("tenant")), "{err:?}");
        let dir_of_image = dir.path().join("images/no-such-tenant/enroll");
        assert_eq!(fs::read_dir(&dir_of_image).expect("dir").count(), 0, "file or temporary left behind");
    }
}
