//! `facegate tenant create|list`: works on the data directory directly.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use facegate_core::service::{hash_secret, random_token};
use facegate_core::Store;
use facegate_server::Settings;

use crate::runtime::open_store;

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
}

pub fn run(cmd: TenantCommand) -> anyhow::Result<()> {
    match cmd {
        TenantCommand::Create { name, data } => {
            let store = store(&data)?;
            if name.trim().is_empty() || name.chars().any(char::is_control) || name.chars().count() > 128 {
                anyhow::bail!("tenant name must be 1-128 printable characters");
            }
            let token = random_token();
            let tenant = store.create_tenant(&name, &hash_secret(&token))?;
            println!(
                "{}",
                serde_json::json!({"id": tenant.id, "name": tenant.name, "token": token, "created_at": tenant.created_at})
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
    let settings = Settings { data_dir: data.data_dir.clone(), ..Settings::default() };
    Ok(Arc::new(open_store(&settings)?))
}
