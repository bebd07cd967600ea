//! Tenants and their credentials in SQLite.

use std::time::Duration;

use crate::tenant_purge::{delete_tenant_rows, CREDENTIAL_TABLES};
use facegate_core::{SightingPurge, StoredCredentials, Tenant, TenantPurge};
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::{scrub_wal, tenant_from_row, SqliteStore};
use crate::error::{to_core, unique_violation, Result, StoreError};
use facegate_core::service::now_unix_ms;

/// Expired signature records each admission deletes at most: more than the one it adds, so the
/// table shrinks back to one window's writes, and few enough that no write waits on a long prune.
const PRUNE_PER_ADMISSION: i64 = 64;

impl SqliteStore {
    /// The tenant a hashed credential belongs to, unless it expired; `sql` selects the tenant row
    /// by `?1`, with `?2` the time now for the expiry.
    pub(super) fn tenant_by_credential(&self, sql: &str, credential_hash: &str) -> Result<Option<Tenant>> {
        let conn = self.reader()?;
        let tenant =
            conn.prepare_cached(sql)?.query_row(params![credential_hash, now_unix_ms()], tenant_from_row).optional()?;
        Ok(tenant)
    }

    fn insert_api_credentials(
        tx: &Transaction<'_>,
        tenant_id: &str,
        api_key_hash: &str,
        access_key_id: &str,
        secret: &str,
    ) -> Result<()> {
        let in_use = |e: rusqlite::Error| match unique_violation(&e) {
            Some(_) => StoreError::Conflict("the API key or access key id is already in use".into()),
            None => e.into(),
        };
        let now = facegate_core::service::now_rfc3339();
        tx.prepare_cached("INSERT INTO tenant_api_keys (api_key_hash, tenant_id, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![api_key_hash, tenant_id, now])
            .map_err(in_use)?;
        tx.prepare_cached(
            "INSERT INTO tenant_access_keys (access_key_id, tenant_id, secret_access_key, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![access_key_id, tenant_id, secret, now])
        .map_err(in_use)?;
        Ok(())
    }

    pub(super) fn insert_tenant(tx: &Transaction<'_>, name: &str) -> Result<Tenant> {
        let tenant = Tenant {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            created_at: facegate_core::service::now_rfc3339(),
        };
        tx.prepare_cached("INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![tenant.id, tenant.name, tenant.created_at])
            .map_err(|e| match unique_violation(&e) {
                Some(_) => StoreError::Conflict(format!("tenant '{name}' already exists")),
                None => e.into(),
            })?;
        Ok(tenant)
    }

    pub(super) fn insert_token(tx: &Transaction<'_>, tenant_id: &str, token_hash: &str) -> Result<()> {
        tx.prepare_cached("INSERT INTO tenant_tokens (token_hash, tenant_id, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![token_hash, tenant_id, facegate_core::service::now_rfc3339()])
            .map_err(|e| match unique_violation(&e) {
                Some(_) => StoreError::Conflict("the token is already in use".into()),
                None => e.into(),
            })?;
        Ok(())
    }
}

impl facegate_core::TenantStore for SqliteStore {
    fn create_tenant(&self, name: &str, token_hash: &str) -> facegate_core::Result<Tenant> {
        Ok(self.write(|tx| {
            let tenant = Self::insert_tenant(tx, name)?;
            Self::insert_token(tx, &tenant.id, token_hash)?;
            Ok(tenant)
        })?)
    }

    fn ensure_tenant(&self, name: &str, token_hash: &str) -> facegate_core::Result<Tenant> {
        Ok(self.write(|tx| {
            let existing = tx
                .prepare_cached("SELECT id, name, created_at FROM tenants WHERE name = ?1")?
                .query_row([name], tenant_from_row)
                .optional()?;
            let tenant = match existing {
                Some(tenant) => tenant,
                None => Self::insert_tenant(tx, name)?,
            };
            let owner: Option<String> = tx
                .prepare_cached("SELECT tenant_id FROM tenant_tokens WHERE token_hash = ?1")?
                .query_row([token_hash], |row| row.get(0))
                .optional()?;
            match owner {
                Some(owner) if owner == tenant.id => {}
                // Never silently let one token open two tenants.
                Some(_) => return Err(StoreError::Conflict("the token is already in use".into())),
                None => Self::insert_token(tx, &tenant.id, token_hash)?,
            }
            Ok(tenant)
        })?)
    }

    fn tenant_by_token_hash(&self, token_hash: &str) -> facegate_core::Result<Option<Tenant>> {
        Ok(self.tenant_by_credential(
            "SELECT t.id, t.name, t.created_at FROM tenant_tokens k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.token_hash = ?1 AND (k.expires_unix_ms IS NULL OR k.expires_unix_ms > ?2)",
            token_hash,
        )?)
    }

    fn list_tenants(&self) -> facegate_core::Result<Vec<Tenant>> {
        let conn = self.reader()?;
        let tenants = conn
            .prepare_cached("SELECT id, name, created_at FROM tenants ORDER BY rowid")
            .and_then(|mut stmt| stmt.query_map([], tenant_from_row)?.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(StoreError::from)?;
        Ok(tenants)
    }

    fn add_api_credentials(
        &self,
        tenant_id: &str,
        api_key_hash: &str,
        access_key_id: &str,
        secret: &str,
    ) -> facegate_core::Result<()> {
        Ok(self.write(|tx| Self::insert_api_credentials(tx, tenant_id, api_key_hash, access_key_id, secret))?)
    }

    fn tenant_by_api_key_hash(&self, api_key_hash: &str) -> facegate_core::Result<Option<Tenant>> {
        Ok(self.tenant_by_credential(
            "SELECT t.id, t.name, t.created_at FROM tenant_api_keys k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.api_key_hash = ?1 AND (k.expires_unix_ms IS NULL OR k.expires_unix_ms > ?2)",
            api_key_hash,
        )?)
    }

    fn access_key_secret(&self, tenant_id: &str, access_key_id: &str) -> facegate_core::Result<Option<String>> {
        let conn = self.reader()?;
        let secret = conn
            .prepare_cached(
                "SELECT secret_access_key FROM tenant_access_keys WHERE access_key_id = ?1 AND tenant_id = ?2 \
                 AND (expires_unix_ms IS NULL OR expires_unix_ms > ?3)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![access_key_id, tenant_id, now_unix_ms()], |row| row.get(0)).optional()
            })
            .map_err(StoreError::from)?;
        Ok(secret)
    }

    fn rotate_credentials(
        &self,
        tenant_id: &str,
        new: &StoredCredentials,
        grace: Duration,
    ) -> facegate_core::Result<u64> {
        to_core(|| {
            self.write(|tx| {
                let exists: bool =
                    tx.query_row("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?1)", [tenant_id], |r| r.get(0))?;
                if !exists {
                    return Err(StoreError::NotFound("tenant"));
                }
                let now = now_unix_ms();
                let until = now.saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
                let mut retired = 0;
                for table in CREDENTIAL_TABLES {
                    // Expired ones no longer open anything; they need not be kept.
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE tenant_id = ?1 AND expires_unix_ms <= ?2"),
                        params![tenant_id, now],
                    )?;
                    retired += if grace.is_zero() {
                        tx.execute(&format!("DELETE FROM {table} WHERE tenant_id = ?1"), [tenant_id])?
                    } else {
                        tx.execute(
                            &format!(
                                "UPDATE {table} SET expires_unix_ms = ?2 \
                                 WHERE tenant_id = ?1 AND (expires_unix_ms IS NULL OR expires_unix_ms > ?2)"
                            ),
                            params![tenant_id, until],
                        )?
                    };
                }
                Self::insert_token(tx, tenant_id, &new.token_hash)?;
                Self::insert_api_credentials(
                    tx,
                    tenant_id,
                    &new.api_key_hash,
                    &new.access_key_id,
                    &new.secret_access_key,
                )?;
                Ok(retired as u64)
            })
        })
    }

    fn admit_signature(&self, digest: &[u8], keep: Duration) -> facegate_core::Result<bool> {
        Ok(self.write(|tx| {
            let now = now_unix_ms();
            let until = now.saturating_add(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            tx.prepare_cached(
                "DELETE FROM used_signatures WHERE digest IN \
                 (SELECT digest FROM used_signatures WHERE expires_unix_ms <= ?1 LIMIT ?2)",
            )?
            .execute(params![now, PRUNE_PER_ADMISSION])?;
            // An expired record of the same digest (kept past its time by a slow prune) is
            // taken over; a live one leaves the row as it is, and no row changes.
            let changed = tx
                .prepare_cached(
                    "INSERT INTO used_signatures (digest, expires_unix_ms) VALUES (?1, ?2) \
                     ON CONFLICT (digest) DO UPDATE SET expires_unix_ms = excluded.expires_unix_ms \
                     WHERE used_signatures.expires_unix_ms <= ?3",
                )?
                .execute(params![digest, until, now])?;
            Ok(changed == 1)
        })?)
    }

    fn forget_signature(&self, digest: &[u8]) -> facegate_core::Result<()> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM used_signatures WHERE digest = ?1")?.execute([digest])?;
            Ok(())
        })?;
        Ok(())
    }

    fn unknown_faces_retention(&self, tenant_id: &str) -> facegate_core::Result<Option<Duration>> {
        let conn = self.reader()?;
        let row: Option<Option<i64>> = conn
            .prepare_cached("SELECT unknown_faces_retention_secs FROM tenants WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([tenant_id], |row| row.get(0)).optional())
            .map_err(StoreError::from)?;
        let secs = row.ok_or(facegate_core::Error::NotFound("tenant"))?;
        Ok(secs.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))))
    }

    fn set_unknown_faces_retention(
        &self,
        tenant_id: &str,
        retention: Option<Duration>,
    ) -> facegate_core::Result<SightingPurge> {
        let secs = retention.map(|keep| i64::try_from(keep.as_secs()).unwrap_or(i64::MAX));
        to_core(|| {
            let purge = self.write(|tx| {
                let changed = tx
                    .prepare_cached("UPDATE tenants SET unknown_faces_retention_secs = ?2 WHERE id = ?1")?
                    .execute(params![tenant_id, secs])?;
                if changed == 0 {
                    return Err(StoreError::NotFound("tenant"));
                }
                match secs {
                    Some(_) => Ok(SightingPurge::default()),
                    None => super::unknown::delete_all_sightings(tx, tenant_id),
                }
            })?;
            if purge.sightings > 0 || purge.unknown_people > 0 {
                scrub_wal(&self.writer.lock());
            }
            Ok(purge)
        })
    }

    /// Deletes the tenant's rows in one transaction (zeroed by `secure_delete`), then its image
    /// folder, then checkpoints the WAL, as deleting a subject does. Image files are written only
    /// by the holder of the directory's lock, which the caller should be.
    fn delete_tenant(&self, tenant_id: &str) -> facegate_core::Result<TenantPurge> {
        to_core(|| {
            let mut conn = self.writer.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?1)", [tenant_id], |r| r.get(0))?;
            if !exists {
                return Err(StoreError::NotFound("tenant"));
            }
            let paths: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT b.path FROM image_blobs b JOIN face_samples s ON s.id = b.sample_id WHERE s.tenant_id = ?1",
                )?;
                let rows = stmt.query_map([tenant_id], |row| row.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let delete = |sql: &str| -> Result<u64> { Ok(tx.execute(sql, [tenant_id])? as u64) };
            let purge = delete_tenant_rows("?1", delete)?;
            tx.commit()?;
            // Still under the writer lock, as for a subject. A file that cannot be removed now has no
            // row and is swept at the next start; the folder also takes any temporary file.
            for path in &paths {
                if let Err(e) = self.blobs.remove(path) {
                    tracing::warn!(%path, error = %e, "could not remove the image of a deleted tenant");
                }
            }
            if let Err(e) = self.blobs.remove_tenant(tenant_id) {
                tracing::warn!(tenant_id, error = %e, "could not remove the image folder of a deleted tenant");
            }
            scrub_wal(&conn);
            Ok(purge)
        })
    }
}
