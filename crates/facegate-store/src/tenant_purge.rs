//! The rows a tenant's deletion removes, in one order for both backends.

use facegate_core::TenantPurge;

/// The tables of a tenant's credentials, each with `tenant_id` and an expiry (`expires_unix_ms` in
/// SQLite, `expires_at` in PostgreSQL).
pub(crate) const CREDENTIAL_TABLES: [&str; 3] = ["tenant_tokens", "tenant_api_keys", "tenant_access_keys"];

/// Deletes every row of a tenant through `delete`, which runs one statement inside the caller's
/// transaction and returns the rows it removed; `param` is the backend's placeholder for the
/// tenant id (`?1` in SQLite, `$1` in PostgreSQL).
///
/// Children first and each by name, though most would go by ON DELETE CASCADE: the counts are
/// what went, and no table is left to a cascade someone might drop later.
pub(crate) fn delete_tenant_rows<E>(
    param: &str,
    mut delete: impl FnMut(&str) -> Result<u64, E>,
) -> Result<TenantPurge, E> {
    let mut run = |sql: &str| delete(&sql.replace("{id}", param));
    let mut purge = TenantPurge {
        reindex_staging: run("DELETE FROM reindex_staging WHERE tenant_id = {id}")?,
        subject_tags: run("DELETE FROM subject_tags WHERE tenant_id = {id}")?,
        ..TenantPurge::default()
    };
    purge.images =
        run("DELETE FROM image_blobs WHERE sample_id IN (SELECT id FROM face_samples WHERE tenant_id = {id})")?;
    purge.face_samples = run("DELETE FROM face_samples WHERE tenant_id = {id}")?;
    purge.subjects = run("DELETE FROM subjects WHERE tenant_id = {id}")?;
    purge.tags = run("DELETE FROM tags WHERE tenant_id = {id}")?;
    purge.bulk_records =
        run("DELETE FROM bulk_records WHERE job_id IN (SELECT id FROM bulk_jobs WHERE tenant_id = {id})")?;
    purge.bulk_jobs = run("DELETE FROM bulk_jobs WHERE tenant_id = {id}")?;
    purge.sightings = run("DELETE FROM sightings WHERE tenant_id = {id}")?;
    purge.unknown_people = run("DELETE FROM unknown_people WHERE tenant_id = {id}")?;
    for table in CREDENTIAL_TABLES {
        purge.credentials += run(&format!("DELETE FROM {table} WHERE tenant_id = {{id}}"))?;
    }
    run("DELETE FROM tenants WHERE id = {id}")?;
    Ok(purge)
}
