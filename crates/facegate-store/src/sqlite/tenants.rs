//! Tenants and their credentials in SQLite.

use facegate_core::Tenant;
use rusqlite::{params, OptionalExtension, Transaction};

use super::{tenant_from_row, SqliteStore};
use crate::error::{unique_violation, Result, StoreError};

impl SqliteStore {
    /// The tenant a hashed credential belongs to; `sql` selects the tenant row by `?1`.
    pub(super) fn tenant_by_credential(&self, sql: &str, credential_hash: &str) -> Result<Option<Tenant>> {
        let conn = self.reader()?;
        let tenant = conn.prepare_cached(sql)?.query_row([credential_hash], tenant_from_row).optional()?;
        Ok(tenant)
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
             WHERE k.token_hash = ?1",
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
        let in_use = |e: rusqlite::Error| match unique_violation(&e) {
            Some(_) => StoreError::Conflict("the API key or access key id is already in use".into()),
            None => e.into(),
        };
        Ok(self.write(|tx| {
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
        })?)
    }

    fn tenant_by_api_key_hash(&self, api_key_hash: &str) -> facegate_core::Result<Option<Tenant>> {
        Ok(self.tenant_by_credential(
            "SELECT t.id, t.name, t.created_at FROM tenant_api_keys k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.api_key_hash = ?1",
            api_key_hash,
        )?)
    }

    fn access_key_secret(&self, tenant_id: &str, access_key_id: &str) -> facegate_core::Result<Option<String>> {
        let conn = self.reader()?;
        let secret = conn
            .prepare_cached(
                "SELECT secret_access_key FROM tenant_access_keys WHERE access_key_id = ?1 AND tenant_id = ?2",
            )
            .and_then(|mut stmt| stmt.query_row([access_key_id, tenant_id], |row| row.get(0)).optional())
            .map_err(StoreError::from)?;
        Ok(secret)
    }
}
