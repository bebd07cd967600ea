//! Numbered schema migrations, tracked in `PRAGMA user_version`.
//!
//! Migration `i` (0-based) in [`MIGRATIONS`] takes the schema from version `i` to `i + 1`. Each
//! run applies every pending migration and bumps `user_version` inside one transaction, so a
//! crash mid-upgrade leaves the database at its old version rather than half-migrated. New
//! features append files here; existing files are never edited once released.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Result, StoreError};

pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("0001_initial.sql"),
    include_str!("0002_api_credentials.sql"),
    include_str!("0003_tags.sql"),
    include_str!("0004_subject_tags.sql"),
    include_str!("0005_bulk_jobs.sql"),
    include_str!("0006_template_encoding.sql"),
    include_str!("0007_store_meta.sql"),
    include_str!("0008_reindex_staging.sql"),
    include_str!("0009_credential_expiry.sql"),
    include_str!("0010_used_signatures.sql"),
    include_str!("0011_changes.sql"),
    include_str!("0012_unknown_faces.sql"),
    include_str!("0013_sightings.sql"),
];

/// Brings the schema up to date and returns the version it is at.
pub(crate) fn migrate(conn: &mut Connection) -> Result<usize> {
    apply(conn, MIGRATIONS)
}

pub(crate) fn apply(conn: &mut Connection, migrations: &[&str]) -> Result<usize> {
    // IMMEDIATE takes the write lock before reading the version, so two processes opening the
    // same new database cannot both apply migration 1.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let current =
        usize::try_from(found).map_err(|_| StoreError::SchemaTooNew { found, supported: migrations.len() })?;
    if current > migrations.len() {
        return Err(StoreError::SchemaTooNew { found, supported: migrations.len() });
    }
    for (i, sql) in migrations.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    if current < migrations.len() {
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", migrations.len()))?;
    }
    tx.commit()?;
    Ok(migrations.len())
}

pub(crate) fn version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt =
            conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").expect("prepare");
        let names = stmt.query_map([], |row| row.get(0)).expect("query");
        names.collect::<rusqlite::Result<_>>().expect("names")
    }

    #[test]
    fn fresh_database_gets_every_migration_and_rerunning_is_a_no_op() {
        let mut conn = Connection::open_in_memory().expect("open");
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len());
        assert_eq!(version(&conn).expect("version"), MIGRATIONS.len() as i64);
        let before = tables(&conn);
        assert!(before.contains(&"face_samples".to_owned()), "{before:?}");
        assert_eq!(migrate(&mut conn).expect("again"), MIGRATIONS.len());
        assert_eq!(tables(&conn), before);
    }

    #[test]
    fn database_at_an_older_version_is_upgraded_in_order() {
        let mut conn = Connection::open_in_memory().expect("open");
        apply(&mut conn, &MIGRATIONS[..1]).expect("v1");
        conn.execute_batch("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', 'now');").expect("seed");
        let v2 = "CREATE TABLE tags (tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL);";
        let v3 = "ALTER TABLE tags ADD COLUMN colour TEXT; INSERT INTO tags VALUES ('t1', 'vip', 'gold');";
        let all = [MIGRATIONS[0], v2, v3];
        assert_eq!(apply(&mut conn, &all).expect("upgrade"), 3);
        assert_eq!(version(&conn).expect("version"), 3);
        let colour: String = conn.query_row("SELECT colour FROM tags", [], |r| r.get(0)).expect("row");
        assert_eq!(colour, "gold");
        let name: String = conn.query_row("SELECT name FROM tenants", [], |r| r.get(0)).expect("kept");
        assert_eq!(name, "acme");
        // Already at 3: nothing re-runs (v3's INSERT would duplicate the row).
        apply(&mut conn, &all).expect("idempotent");
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM tags", [], |r| r.get(0)).expect("count");
        assert_eq!(n, 1);
    }

    #[test]
    fn failing_migration_leaves_the_old_version() {
        let mut conn = Connection::open_in_memory().expect("open");
        apply(&mut conn, &MIGRATIONS[..1]).expect("v1");
        let broken = [MIGRATIONS[0], "CREATE TABLE ok_so_far (x INTEGER); THIS IS NOT SQL;"];
        assert!(apply(&mut conn, &broken).is_err());
        assert_eq!(version(&conn).expect("version"), 1);
        assert!(!tables(&conn).contains(&"ok_so_far".to_owned()));
    }

    #[test]
    fn newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("PRAGMA user_version = 99").expect("bump");
        assert!(matches!(migrate(&mut conn), Err(StoreError::SchemaTooNew { found: 99, .. })));
    }
}
