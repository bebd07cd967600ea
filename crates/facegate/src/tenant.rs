//! `facegate tenant create|list`: works on the data directory directly.

use std::sync::Arc;

use clap::Subcommand;
use facegate_core::service::create_tenant;
use facegate_core::Store;

use crate::config::{FileConfig, StoreArgs};
use crate::runtime::open_store;

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
    }
    Ok(())
}

fn store(flags: &StoreArgs, file: &FileConfig) -> anyhow::Result<Arc<dyn Store>> {
    open_store(&flags.resolve(file))
}
