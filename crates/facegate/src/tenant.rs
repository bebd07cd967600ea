//! `facegate tenant create|list|set|rotate-credentials|delete`: works on the data directory or the
//! PostgreSQL database directly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use facegate_core::service::{
    validate_tenant_name, TenantAdmin, DEFAULT_CREDENTIAL_GRACE, MAX_UNKNOWN_FACES_RETENTION,
};
use facegate_core::Store;

use crate::config::{Config, FileConfig, Flags, StoreArgs};
use facegate_store::BucketSource;

use crate::runtime::{open_beside_nodes, open_store};

/// Where the servers read bulk registration files, as `serve` takes it, so that `tenant create`
/// and `delete` look after the same folder the servers read.
#[derive(clap::Args, Debug)]
pub struct BulkFolderArgs {
    /// The servers' bulk source: a folder or s3://bucket/prefix, one `<tenant name>/` folder per
    /// tenant [default: the `bulk_source` of the environment or config file, else <data-dir>/bucket]
    #[arg(long, env = "FACEGATE_BULK_SOURCE")]
    bulk_source: Option<String>,
    /// S3-compatible endpoint URL for an s3:// bulk source
    #[arg(long, env = "FACEGATE_BULK_S3_ENDPOINT")]
    bulk_s3_endpoint: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant and print its id and token as JSON. The token is shown only once. Refused
    /// when the tenant's folder of the bulk source already holds files (left by an earlier
    /// tenant of that name, say), unless --adopt-bulk-folder says they are the new tenant's.
    Create {
        name: String,
        #[command(flatten)]
        bulk: BulkFolderArgs,
        /// Create the tenant although its bulk folder already holds files, which then become its
        /// own to register
        #[arg(long)]
        adopt_bulk_folder: bool,
        #[command(flatten)]
        data: StoreArgs,
    },
    /// List tenants as JSON.
    List {
        #[command(flatten)]
        data: StoreArgs,
    },
    /// Change a tenant's settings, or with no setting show them, and print them as JSON. Works
    /// beside a running server; on PostgreSQL every node reads the same settings.
    Set {
        name: String,
        /// Keep the faces the tenant's searches find nobody for (`on`, with --unknown-retention),
        /// to group them into unknown people, or not (`off`, the default for every tenant, with
        /// --yes: it deletes what was kept)
        #[arg(long, value_enum)]
        unknown_faces: Option<Switch>,
        /// How long a kept face lives before it is deleted: a number with s, m, h or d, at most
        /// 365d. Required with --unknown-faces on
        #[arg(long, value_parser = parse_period)]
        unknown_retention: Option<Duration>,
        /// Confirms --unknown-faces off, which deletes every face kept for the tenant
        #[arg(long)]
        yes: bool,
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
        #[arg(long, value_parser = parse_period)]
        grace: Option<Duration>,
        #[command(flatten)]
        data: StoreArgs,
    },
    /// Delete a tenant and everything stored under it (people, face images, templates, tags,
    /// bulk jobs, credentials, and its folder `<name>/` of the bulk source: `--bulk-source`, a
    /// shared folder or S3, else `<data-dir>/bucket`), for good, and print what was removed as
    /// JSON. On SQLite the server must be stopped; PostgreSQL nodes may run (they drop the tenant
    /// at once).
    Delete {
        name: String,
        /// Confirms the deletion; nothing is deleted without it.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        bulk: BulkFolderArgs,
        /// Leave the tenant's bulk folder as it is (its photos are kept elsewhere, say); a tenant
        /// created later under the same name is then refused until the folder is cleared
        #[arg(long)]
        keep_bulk_folder: bool,
        #[command(flatten)]
        data: StoreArgs,
    },
}

/// A setting's two states on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

/// What `tenant set` and `tenant list` say of a tenant's keeping of unknown faces: `on` or `off`,
/// and the retention in seconds when on.
fn unknown_faces_shown(retention: Option<Duration>) -> (&'static str, Option<u64>) {
    (if retention.is_some() { "on" } else { "off" }, retention.map(|keep| keep.as_secs()))
}

pub fn run(cmd: TenantCommand, file: &FileConfig) -> anyhow::Result<()> {
    match cmd {
        TenantCommand::Create { name, bulk, adopt_bulk_folder, data } => {
            let config = Config::resolve(file, Flags { store: Some(&data), ..Flags::default() })?;
            let source = bulk_source(&config, bulk)?;
            if !adopt_bulk_folder && validate_tenant_name(&name).is_ok() {
                let holds = block_on(source.area_holds_files(&name))?
                    .with_context(|| format!("looking at the bulk folder of {name:?} in {}", source.location()))?;
                anyhow::ensure!(
                    !holds,
                    "the bulk folder {name}/ of {} already holds files, perhaps those of an earlier tenant of this \
                     name; a new tenant would bulk-register them as its own. Clear that folder first, or add \
                     --adopt-bulk-folder if they are meant for this tenant",
                    source.location()
                );
            }
            let store = open_store(&config.store)?;
            let created = TenantAdmin::new(store).create_tenant(&name)?;
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
            let store = store(&data, file)?;
            let mut list = Vec::new();
            for t in store.list_tenants()? {
                let (unknown_faces, retention_secs) = unknown_faces_shown(store.unknown_faces_retention(&t.id)?);
                list.push(serde_json::json!({
                    "id": t.id,
                    "name": t.name,
                    "created_at": t.created_at,
                    "unknown_faces": unknown_faces,
                    "unknown_retention_secs": retention_secs,
                }));
            }
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        TenantCommand::Set { name, unknown_faces, unknown_retention, yes, data } => {
            let max_days = MAX_UNKNOWN_FACES_RETENTION.as_secs() / 86_400;
            let change = match (unknown_faces, unknown_retention) {
                (None, None) => None,
                (None, Some(_)) => anyhow::bail!("--unknown-retention goes with --unknown-faces on"),
                (Some(Switch::On), None) => {
                    anyhow::bail!("--unknown-faces on needs --unknown-retention, how long a kept face lives (at most {max_days}d)")
                }
                (Some(Switch::On), Some(keep)) => Some(Some(keep)),
                (Some(Switch::Off), Some(_)) => {
                    anyhow::bail!("--unknown-retention goes with --unknown-faces on, not off")
                }
                (Some(Switch::Off), None) => {
                    anyhow::ensure!(
                        yes,
                        "turning unknown faces off deletes every face kept for tenant {name:?} and the unknown people \
                         grouped from them, for good; add --yes to confirm"
                    );
                    Some(None)
                }
            };
            let config = Config::resolve(file, Flags { store: Some(&data), ..Flags::default() })?;
            let admin = TenantAdmin::new(open_store(&config.store)?);
            let mut deleted = None;
            if let Some(retention) = change {
                crate::audit_log::open_in(&config.store.data_dir)?;
                let (_, purge) = admin
                    .set_unknown_faces(&name, retention)
                    .with_context(|| format!("changing the settings of tenant {name:?}"))?;
                deleted = retention.is_none().then_some(purge);
            }
            let (tenant, retention) = admin.unknown_faces(&name).with_context(|| format!("tenant {name:?}"))?;
            let (unknown_faces, retention_secs) = unknown_faces_shown(retention);
            println!(
                "{}",
                serde_json::json!({
                    "id": tenant.id,
                    "name": tenant.name,
                    "unknown_faces": unknown_faces,
                    "unknown_retention_secs": retention_secs,
                    "deleted": deleted,
                })
            );
        }
        TenantCommand::RotateCredentials { name, grace, data } => {
            let config = Config::resolve(file, Flags { store: Some(&data), ..Flags::default() })?;
            // Beside a running server, like `create`: rotating is for a tenant in service.
            let store = open_store(&config.store)?;
            crate::audit_log::open_in(&config.store.data_dir)?;
            let grace = grace.unwrap_or(DEFAULT_CREDENTIAL_GRACE);
            let rotated = TenantAdmin::new(store)
                .rotate_credentials(&name, grace)
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
        TenantCommand::Delete { name, yes, bulk, keep_bulk_folder, data } => {
            anyhow::ensure!(
                yes,
                "deleting tenant {name:?} removes all its people, face images, templates, tags, bulk jobs, \
                 credentials and its bulk folder for good; add --yes to confirm"
            );
            let config = Config::resolve(file, Flags { store: Some(&data), ..Flags::default() })?;
            // Set up before anything is deleted, so that a bulk source that cannot be reached
            // stops the command while the tenant is still whole.
            let source = bulk_source(&config, bulk)?;
            let backend = open_beside_nodes(&config)?;
            crate::audit_log::open_in(&config.store.data_dir)?;
            let store = backend.store();
            let (tenant, removed) =
                TenantAdmin::new(store).delete_tenant(&name).with_context(|| format!("deleting tenant {name:?}"))?;
            // This directory's index snapshot of the tenant goes now, not at the next start (a
            // PostgreSQL node removes its own when it applies the delete).
            let snapshots = config.store.data_dir.join(crate::runtime::SNAPSHOT_DIR);
            facegate_index::remove_tenant_snapshot(&snapshots, &tenant.id).with_context(|| {
                format!(
                    "tenant {name:?} is deleted, but its index snapshot in {} could not be removed",
                    snapshots.display()
                )
            })?;
            // The tenant's bulk folder goes too: left behind, a tenant created later under the
            // same name would register the deleted one's photos.
            let bulk_files_removed = if keep_bulk_folder {
                tracing::warn!(folder = %format!("{}/{}", source.location(), tenant.name),
                    "kept the deleted tenant's bulk folder (--keep-bulk-folder)");
                None
            } else {
                let files = block_on(source.remove_area(&tenant.name))?.with_context(|| {
                    format!(
                        "tenant {name:?} is deleted, but its bulk folder {}/ of {} could not be removed; remove it \
                         by hand",
                        tenant.name,
                        source.location()
                    )
                })?;
                Some(files)
            };
            println!(
                "{}",
                serde_json::json!({
                    "id": tenant.id,
                    "name": tenant.name,
                    "removed": removed,
                    "bulk_source": source.location(),
                    "bulk_source_folder_removed": bulk_files_removed.is_some(),
                    "bulk_source_files_removed": bulk_files_removed.unwrap_or(0),
                })
            );
        }
    }
    Ok(())
}

/// The bulk source as `serve` resolves it, with this command's flags first.
fn bulk_source(config: &Config, bulk: BulkFolderArgs) -> anyhow::Result<BucketSource> {
    let mut config = config.clone();
    if bulk.bulk_source.is_some() {
        config.server.bulk_source = bulk.bulk_source;
    }
    if bulk.bulk_s3_endpoint.is_some() {
        config.server.bulk_s3_endpoint = bulk.bulk_s3_endpoint;
    }
    crate::runtime::bulk_source(&config)
}

/// Runs one bulk-source call (S3 is asynchronous) on a runtime of its own: the tenant commands
/// have no other.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    Ok(runtime.block_on(work))
}

fn store(flags: &StoreArgs, file: &FileConfig) -> anyhow::Result<Arc<dyn Store>> {
    open_store(&flags.resolve(file))
}

/// `0`, or a whole number with `s`, `m`, `h` or `d`: a grace period or a retention.
fn parse_period(text: &str) -> Result<Duration, String> {
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
        assert_eq!(parse_period("0"), Ok(Duration::ZERO));
        assert_eq!(parse_period("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_period("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_period("24h"), Ok(DEFAULT_CREDENTIAL_GRACE));
        assert_eq!(parse_period("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "10", "h", "1.5h", "-1h", "1w", "99999999999999999999d"] {
            assert!(parse_period(bad).is_err(), "{bad:?}");
        }
    }
}
