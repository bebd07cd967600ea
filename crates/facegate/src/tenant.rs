//! `facegate tenant create|list`: works on the data directory directly.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use facegate_core::service::create_tenant;
use facegate_core::Store;
use facegate_server::Settings;

use crate::runtime::{open_store, KeyFileArg};

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant and print its id and token as JSON. The token is shown only once.
    Create {
        name: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List tenants as JSON.
    List {
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(Args, Debug)]
pub struct DataDirArg {
    /// Data directory [default: ./data]
    #[arg(long, env = "FACEGATE_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// PostgreSQL database shared by facegate nodes (postgres://…); the data directory is then
    /// not used
    #[arg(long, env = "FACEGATE_DATABASE_URL")]
    database_url: Option<String>,
    #[command(flatten)]
    key: KeyFileArg,
}

pub fn run(cmd: TenantCommand) -> anyhow::Result<()> {
    match cmd {
        TenantCommand::Create { name, data } => {
            let store = store(&data)?;
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
            let tenants = store(&data)?.list_tenants()?;
            let list: Vec<_> = tenants
                .iter()
                .map(|t| serde_json::json!({"id": t.id, "name": t.name, "created_at": t.created_at}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
    }
    Ok(())
}

fn store(data: &DataDirArg) -> anyhow::Result<Arc<dyn Store>> {
    let settings = Settings {
        data_dir: data.data_dir.clone(),
        database_url: data.database_url.clone(),
        encryption_key_file: data.key.encryption_key_file.clone(),
        ..Settings::default()
    };
    open_store(&settings)
}
