//! `facegate tenant create|list|rotate-credentials|delete`: works on the data directory or the
//! PostgreSQL database directly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use facegate_core::service::{create_tenant, delete_tenant, rotate_credentials, DEFAULT_CREDENTIAL_GRACE};
use facegate_core::Store;

use crate::config::{Config, FileConfig, Flags, StoreArgs};
use crate::runtime::{open_beside_nodes, open_store};

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant and print its id and token as JSON. The token is shown only once.
    Create {
        name: String,
        #[command(flatten)]
        data: StoreArgs,
    },
    /// List tenants as JSON.
    List {
        #[command(flatten)]
        data: StoreArgs,
    },
    /// Issue a tenant new credentials (miiCloud token, NEC API key, access key id and secret) and
    /// print them once as JSON. The old ones keep working for the grace period, then stop. Works
    /// beside a running server.
    RotateCredentials {
        name: String,
        /// How long the old credentials keep working: `0` (revoked at once, for a leaked one),
        /// or a number with `s`, `m`, `h` or `d` (`90s`, `30m`, `24h`, `7d`) [default: 24h: a
        /// day for every client of the tenant to switch over, and no longer for a leaked
        /// credential to stay good]
        #[arg(long, value_parser = parse_grace)]
        grace: Option<Duration>,
        #[command(flatten)]
        data: StoreArgs,
    },
    /// Delete a tenant and everything stored under it (people, face images, templates, tags,
    /// bulk jobs, credentials, its folder of the default bulk source `<data-dir>/bucket/<name>/`),
    /// for good, and print what was removed as JSON. On SQLite the server must be stopped;
    /// PostgreSQL nodes may run (they drop the tenant at once). A bulk source elsewhere
    /// (`--bulk-source`, S3) is the operator's to clear.
    Delete {
        name: String,
        /// Confirms the deletion; nothing is deleted without it.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        data: StoreArgs,
    },
}

pub fn run(cmd: TenantCommand, file: &FileConfig) -> anyhow::Result<()> {
    match cmd {
        TenantCommand::Create { name, data } => {
            let store = store(&data, file)?;
            let created = create_tenant(store.as_ref(), &name)?;
            let c = &created.credentials;
            println!(
                "{}",
                serde_json::json!({
                    "id": created.tenant.id,
                    "name": created.tenant.name,
                    "created_at": created.tenant.created_at,
                    "token": created.token,
                    "api_key": c.api_key,
                    "access_key_id": c.access_key_id,
                    "secret_access_key": c.secret_access_key,
                })
            );
        }
        TenantCommand::List { data } => {
            let tenants = store(&data, file)?.list_tenants()?;
            let list: Vec<_> = tenants
                .iter()
                .map(|t| serde_json::json!({"id": t.id, "name": t.name, "created_at": t.created_at}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        TenantCommand::RotateCredentials { name, grace, data } => {
            let config = Config::resolve(file, Flags { store: Some(&data), ..Flags::default() })?;
            // Beside a running server, like `create`: rotating is for a tenant in service.
            let store = open_store(&config.store)?;
            crate::audit_log::open_in(&config.store.data_dir)?;
            let grace = grace.unwrap_or(DEFAULT_CREDENTIAL_GRACE);
            let rotated = rotate_credentials(store.as_ref(), &name, grace)
                .with_context(|| format!("rotating the credentials of tenant {name:?}"))?;
            let c = &rotated.credentials;
            println!(
                "{}",
                serde_json::json!({
                    "id": rotated.tenant.id,
                    "name": rotated.tenant.name,
                    "token": rotated.token,
                    "api_key": c.api_key,
                    "access_key_id": c.access_key_id,
                    "secret_access_key": c.secret_access_key,
                    "retired_credentials": rotated.retired,
                    "grace_secs": grace.as_secs(),
                    "old_credentials_expire_at": rotated.old_expire_at,
                })
            );
        }
        TenantCommand::Delete { name, yes, data } => {
            anyhow::ensure!(
                yes,
                "deleting tenant {name:?} removes all its people, face images, templates, tags, bulk jobs and \
                 credentials for good; add --yes to confirm"
            );
            let config = Config::resolve(file, Flags { store: Some(&data), ..Flags::default() })?;
            let backend = open_beside_nodes(&config)?;
            crate::audit_log::open_in(&config.store.data_dir)?;
            let store = backend.store();
            let (tenant, removed) =
                delete_tenant(store.as_ref(), &name).with_context(|| format!("deleting tenant {name:?}"))?;
            // The default bulk source's folder is the tenant's too: left behind, a tenant created
            // later under the same name could register the old one's photos. A source elsewhere
            // (`--bulk-source`, S3) is the operator's storage and is left to them.
            let staged = config.store.data_dir.join("bucket").join(&tenant.name);
            let bulk_folder_removed = staged.is_dir();
            if bulk_folder_removed {
                std::fs::remove_dir_all(&staged).with_context(|| format!("removing {}", staged.display()))?;
            }
            println!(
                "{}",
                serde_json::json!({
                    "id": tenant.id,
                    "name": tenant.name,
                    "removed": removed,
                    "bulk_source_folder_removed": bulk_folder_removed,
                })
            );
        }
    }
    Ok(())
}

fn store(flags: &StoreArgs, file: &FileConfig) -> anyhow::Result<Arc<dyn Store>> {
    open_store(&flags.resolve(file))
}

/// `0`, or a whole number with `s`, `m`, `h` or `d`.
fn parse_grace(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("expected 0 or a number with s, m, h or d; got {text:?}"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("expected a unit of s, m, h or d after {n}; got {text:?}")),
    };
    n.checked_mul(scale).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_read_as_operators_write_them() {
        assert_eq!(parse_grace("0"), Ok(Duration::ZERO));
        assert_eq!(parse_grace("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_grace("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_grace("24h"), Ok(DEFAULT_CREDENTIAL_GRACE));
        assert_eq!(parse_grace("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "10", "h", "1.5h", "-1h", "1w", "99999999999999999999d"] {
            assert!(parse_grace(bad).is_err(), "{bad:?}");
        }
    }
}
