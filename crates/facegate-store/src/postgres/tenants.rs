//! Tenants and their credentials in PostgreSQL.

use std::time::Duration;

use crate::tenant_purge::{delete_tenant_rows, CREDENTIAL_TABLES};
use facegate_core::{SightingPurge, StoredCredentials, Tenant, TenantPurge};
use postgres::Transaction;

use super::changes::{self, Change, Kind};
use super::{tenant_from_row, PgStore};
use crate::error::{pg_unique_violation, to_core, Result, StoreError};

fn insert_api_credentials(
    tx: &mut Transaction<'_>,
    tenant_id: &str,
    api_key_hash: &str,
    access_key_id: &str,
    secret: &str,
) -> Result<()> {
    let in_use = |e: postgres::Error| match pg_unique_violation(&e) {
        true => StoreError::Conflict("the API key or access key id is already in use".into()),
        false => e.into(),
    };
    let now = facegate_core::service::now_rfc3339();
    tx.execute(
        "INSERT INTO tenant_api_keys (api_key_hash, tenant_id, created_at) VALUES ($1, $2, $3)",
        &[&api_key_hash, &tenant_id, &now],
    )
    .map_err(in_use)?;
    tx.execute(
        "INSERT INTO tenant_access_keys (access_key_id, tenant_id, secret_access_key, created_at) \
         VALUES ($1, $2, $3, $4)",
        &[&access_key_id, &tenant_id, &secret, &now],
    )
    .map_err(in_use)?;
    Ok(())
}

/// Locks the tenant's row until `tx` ends: writes that reference the tenant (they take a key
/// share lock on it) finish first, and later ones wait. `NotFound` when it does not exist.
fn lock_tenant(tx: &mut Transaction<'_>, tenant_id: &str) -> Result<()> {
    match tx.query_opt("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&tenant_id])? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound("tenant")),
    }
}

fn insert_tenant(tx: &mut Transaction<'_>, name: &str) -> Result<Tenant> {
    let tenant = Tenant {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        created_at: facegate_core::service::now_rfc3339(),
    };
    tx.execute(
        "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
        &[&tenant.id, &tenant.name, &tenant.created_at],
    )
    .map_err(|e| match pg_unique_violation(&e) {
        true => StoreError::Conflict(format!("tenant '{name}' already exists")),
        false => e.into(),
    })?;
    Ok(tenant)
}

fn insert_token(tx: &mut Transaction<'_>, tenant_id: &str, token_hash: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO tenant_tokens (token_hash, tenant_id, created_at) VALUES ($1, $2, $3)",
        &[&token_hash, &tenant_id, &facegate_core::service::now_rfc3339()],
    )
    .map_err(|e| match pg_unique_violation(&e) {
        true => StoreError::Conflict("the token is already in use".into()),
        false => e.into(),
    })?;
    Ok(())
}

impl PgStore {
    /// The tenant a hashed credential belongs to; `sql` selects the tenant row by `$1` (and leaves
    /// out expired credentials).
    fn tenant_by_credential(&self, sql: &str, credential_hash: &str) -> Result<Option<Tenant>> {
        Ok(self.conn()?.query_opt(sql, &[&credential_hash])?.map(|row| tenant_from_row(&row)))
    }
}

/// Expired signature records each admission deletes at most: more than the one it adds, so the
/// table shrinks back to one window's writes, and few enough that no write waits on a long prune.
const PRUNE_PER_ADMISSION: i64 = 64;

impl facegate_core::TenantStore for PgStore {
    fn create_tenant(&self, name: &str, token_hash: &str) -> facegate_core::Result<Tenant> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(StoreError::from)?;
        let tenant = insert_tenant(&mut tx, name)?;
        insert_token(&mut tx, &tenant.id, token_hash)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(tenant)
    }

    fn ensure_tenant(&self, name: &str, token_hash: &str) -> facegate_core::Result<Tenant> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // Nodes starting together all ensure the sandbox tenant: one at a time.
            tx.execute("LOCK TABLE tenants IN SHARE ROW EXCLUSIVE MODE", &[])?;
            let existing = tx
                .query_opt("SELECT id, name, created_at FROM tenants WHERE name = $1", &[&name])?
                .map(|r| tenant_from_row(&r));
            let tenant = match existing {
                Some(tenant) => tenant,
                None => insert_tenant(&mut tx, name)?,
            };
            let owner: Option<String> = tx
                .query_opt("SELECT tenant_id FROM tenant_tokens WHERE token_hash = $1", &[&token_hash])?
                .map(|r| r.get(0));
            match owner {
                Some(owner) if owner == tenant.id => {}
                // Never silently let one token open two tenants.
                Some(_) => return Err(StoreError::Conflict("the token is already in use".into())),
                None => insert_token(&mut tx, &tenant.id, token_hash)?,
            }
            tx.commit()?;
            Ok(tenant)
        })
    }

    fn tenant_by_token_hash(&self, token_hash: &str) -> facegate_core::Result<Option<Tenant>> {
        Ok(self.tenant_by_credential(
            "SELECT t.id, t.name, t.created_at FROM tenant_tokens k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.token_hash = $1 AND (k.expires_at IS NULL OR k.expires_at > now())",
            token_hash,
        )?)
    }

    fn list_tenants(&self) -> facegate_core::Result<Vec<Tenant>> {
        let rows = self
            .conn()?
            .query("SELECT id, name, created_at FROM tenants ORDER BY created_at, id", &[])
            .map_err(StoreError::from)?;
        Ok(rows.iter().map(tenant_from_row).collect())
    }

    fn add_api_credentials(
        &self,
        tenant_id: &str,
        api_key_hash: &str,
        access_key_id: &str,
        secret: &str,
    ) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            insert_api_credentials(&mut tx, tenant_id, api_key_hash, access_key_id, secret)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn tenant_by_api_key_hash(&self, api_key_hash: &str) -> facegate_core::Result<Option<Tenant>> {
        Ok(self.tenant_by_credential(
            "SELECT t.id, t.name, t.created_at FROM tenant_api_keys k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.api_key_hash = $1 AND (k.expires_at IS NULL OR k.expires_at > now())",
            api_key_hash,
        )?)
    }

    fn access_key_secret(&self, tenant_id: &str, access_key_id: &str) -> facegate_core::Result<Option<String>> {
        let row = self
            .conn()?
            .query_opt(
                "SELECT secret_access_key FROM tenant_access_keys WHERE access_key_id = $1 AND tenant_id = $2 \
                 AND (expires_at IS NULL OR expires_at > now())",
                &[&access_key_id, &tenant_id],
            )
            .map_err(StoreError::from)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn rotate_credentials(
        &self,
        tenant_id: &str,
        new: &StoredCredentials,
        grace: Duration,
    ) -> facegate_core::Result<u64> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // Two rotations of one tenant run one after the other.
            lock_tenant(&mut tx, tenant_id)?;
            let grace_secs = grace.as_secs_f64();
            let mut retired = 0;
            for table in CREDENTIAL_TABLES {
                // Expired ones no longer open anything; they need not be kept.
                tx.execute(
                    &format!("DELETE FROM {table} WHERE tenant_id = $1 AND expires_at <= now()"),
                    &[&tenant_id],
                )?;
                retired += if grace.is_zero() {
                    tx.execute(&format!("DELETE FROM {table} WHERE tenant_id = $1"), &[&tenant_id])?
                } else {
                    tx.execute(
                        &format!(
                            "UPDATE {table} SET expires_at = now() + make_interval(secs => $2) \
                             WHERE tenant_id = $1 AND (expires_at IS NULL OR expires_at > now() + make_interval(secs => $2))"
                        ),
                        &[&tenant_id, &grace_secs],
                    )?
                };
            }
            insert_token(&mut tx, tenant_id, &new.token_hash)?;
            insert_api_credentials(&mut tx, tenant_id, &new.api_key_hash, &new.access_key_id, &new.secret_access_key)?;
            tx.commit()?;
            Ok(retired)
        })
    }

    fn admit_signature(&self, digest: &[u8], keep: Duration) -> facegate_core::Result<bool> {
        to_core(|| {
            let mut conn = self.conn()?;
            // Rows another node is pruning at the same time are skipped rather than waited for.
            conn.execute(
                "DELETE FROM used_signatures WHERE digest IN (SELECT digest FROM used_signatures \
                 WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)",
                &[&PRUNE_PER_ADMISSION],
            )?;
            // A second node inserting the same digest waits for the first's commit, then finds
            // the row live and changes nothing; an expired record of it is taken over.
            let changed = conn.execute(
                "INSERT INTO used_signatures (digest, expires_at) \
                 VALUES ($1, now() + make_interval(secs => $2::float8)) \
                 ON CONFLICT (digest) DO UPDATE SET expires_at = EXCLUDED.expires_at \
                 WHERE used_signatures.expires_at <= now()",
                &[&digest, &keep.as_secs_f64()],
            )?;
            Ok(changed == 1)
        })
    }

    fn forget_signature(&self, digest: &[u8]) -> facegate_core::Result<()> {
        self.conn()?.execute("DELETE FROM used_signatures WHERE digest = $1", &[&digest]).map_err(StoreError::from)?;
        Ok(())
    }

    fn unknown_faces_retention(&self, tenant_id: &str) -> facegate_core::Result<Option<Duration>> {
        let row = self
            .conn()?
            .query_opt("SELECT unknown_faces_retention_secs FROM tenants WHERE id = $1", &[&tenant_id])
            .map_err(StoreError::from)?;
        let secs: Option<i64> = row.ok_or(facegate_core::Error::NotFound("tenant"))?.get(0);
        Ok(secs.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))))
    }

    /// Off deletes in the same transaction; the UPDATE's row lock makes a keep that began before
    /// it finish first (its `FOR SHARE`), so nothing it keeps outlives the deletion.
    fn set_unknown_faces_retention(
        &self,
        tenant_id: &str,
        retention: Option<Duration>,
    ) -> facegate_core::Result<SightingPurge> {
        let secs = retention.map(|keep| i64::try_from(keep.as_secs()).unwrap_or(i64::MAX));
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let changed =
                tx.execute("UPDATE tenants SET unknown_faces_retention_secs = $2 WHERE id = $1", &[&tenant_id, &secs])?;
            if changed == 0 {
                return Err(StoreError::NotFound("tenant"));
            }
            let purge = match secs {
                Some(_) => SightingPurge::default(),
                None => super::unknown::delete_all_sightings(&mut tx, tenant_id)?,
            };
            let log = if purge == SightingPurge::default() { vec![] } else { vec![super::unknown::changed(tenant_id)] };
            changes::commit_with(tx, &log)?;
            Ok(purge)
        })
    }

    /// Deletes the tenant's rows in one transaction, with its earlier change-log rows, and
    /// appends one `tenant_removed` change, on which every node drops the tenant's index.
    fn delete_tenant(&self, tenant_id: &str) -> facegate_core::Result<TenantPurge> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            lock_tenant(&mut tx, tenant_id)?;
            let paths: Vec<String> = tx
                .query(
                    "SELECT b.path FROM image_blobs b JOIN face_samples s ON s.id = b.sample_id WHERE s.tenant_id = $1",
                    &[&tenant_id],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let mut delete = |sql: &str| -> Result<u64> { Ok(tx.execute(sql, &[&tenant_id])?) };
            let purge = delete_tenant_rows("$1", &mut delete)?;
            // The log's earlier rows name the tenant's subjects and samples; the one appended below
            // makes them moot for every node, behind or not.
            delete("DELETE FROM changes WHERE tenant_id = $1")?;
            changes::commit_with(tx, &[(Kind::TenantRemoved, Change { tenant_id, ..Change::default() })])?;
            self.images.forget(&paths);
            Ok(purge)
        })
    }
}
