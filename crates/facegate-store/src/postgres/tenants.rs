//! Tenants and their credentials in PostgreSQL.

use facegate_core::Tenant;
use postgres::Transaction;

use super::{tenant_from_row, PgStore};
use crate::error::{pg_unique_violation, Result, StoreError};

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
    /// The tenant a hashed credential belongs to; `sql` selects the tenant row by `$1`.
    fn tenant_by_credential(&self, sql: &str, credential_hash: &str) -> Result<Option<Tenant>> {
        Ok(self.conn()?.query_opt(sql, &[&credential_hash])?.map(|row| tenant_from_row(&row)))
    }
}

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
        let run = || -> Result<Tenant> {
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
        };
        Ok(run()?)
    }

    fn tenant_by_token_hash(&self, token_hash: &str) -> facegate_core::Result<Option<Tenant>> {
        Ok(self.tenant_by_credential(
            "SELECT t.id, t.name, t.created_at FROM tenant_tokens k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.token_hash = $1",
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
        let in_use = |e: postgres::Error| match pg_unique_violation(&e) {
            true => StoreError::Conflict("the API key or access key id is already in use".into()),
            false => e.into(),
        };
        let run = || -> Result<()> {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
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
            tx.commit()?;
            Ok(())
        };
        Ok(run()?)
    }

    fn tenant_by_api_key_hash(&self, api_key_hash: &str) -> facegate_core::Result<Option<Tenant>> {
        Ok(self.tenant_by_credential(
            "SELECT t.id, t.name, t.created_at FROM tenant_api_keys k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.api_key_hash = $1",
            api_key_hash,
        )?)
    }

    fn access_key_secret(&self, tenant_id: &str, access_key_id: &str) -> facegate_core::Result<Option<String>> {
        let row = self
            .conn()?
            .query_opt(
                "SELECT secret_access_key FROM tenant_access_keys WHERE access_key_id = $1 AND tenant_id = $2",
                &[&access_key_id, &tenant_id],
            )
            .map_err(StoreError::from)?;
        Ok(row.map(|r| r.get(0)))
    }
}
