//! Numbered schema migrations for PostgreSQL, tracked in `facegate_schema`. Nodes starting
//! together migrate once: the first takes an advisory lock, the others wait for it and then find
//! nothing left to do. Each migration and its version bump commit together.

use postgres::Client;

use crate::error::{Result, StoreError};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_reindex_staging.sql"),
    include_str!("migrations/0003_credential_expiry.sql"),
    include_str!("migrations/0004_used_signatures.sql"),
    include_str!("migrations/0005_unknown_faces.sql"),
    include_str!("migrations/0006_sightings.sql"),
];

/// Serialises schema changes between nodes (an arbitrary, fixed 64-bit key: "facegate").
const MIGRATION_LOCK: i64 = 0x6661_6365_6761_7465;

/// Brings the schema up to date and returns the version it is at.
pub(super) fn migrate(conn: &mut Client) -> Result<usize> {
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = apply(conn);
    // Session-level lock: released whatever happened, or at disconnect if this fails too.
    let _ = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result
}

fn apply(conn: &mut Client) -> Result<usize> {
    conn.batch_execute("CREATE TABLE IF NOT EXISTS facegate_schema (version BIGINT NOT NULL)")?;
    let found = version(conn)?;
    let current =
        usize::try_from(found).map_err(|_| StoreError::SchemaTooNew { found, supported: MIGRATIONS.len() })?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew { found, supported: MIGRATIONS.len() });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let mut tx = conn.transaction()?;
        tx.batch_execute(sql)?;
        tx.execute("DELETE FROM facegate_schema", &[])?;
        tx.execute("INSERT INTO facegate_schema (version) VALUES ($1)", &[&((i + 1) as i64)])?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied PostgreSQL schema migration");
    }
    Ok(MIGRATIONS.len())
}

pub(super) fn version(conn: &mut Client) -> Result<i64> {
    let row = conn.query_opt("SELECT version FROM facegate_schema", &[])?;
    Ok(row.map_or(0, |r| r.get(0)))
}
