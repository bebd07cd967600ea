//! `facegate keys generate|rotate`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use rand::RngCore;

use crate::runtime::read_key;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Print a new random 256-bit key as 64 hex digits, for a key file.
    Generate,
    /// Re-encrypt every template and face image of a stopped server's data directory (or, with
    /// --database-url, of a PostgreSQL gallery whose nodes are all stopped) under a new key, or
    /// encrypt a plaintext one for the first time. Safe to run again if it was interrupted.
    Rotate {
        /// Data directory [default: ./data]
        #[arg(long, env = "FACEGATE_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// A PostgreSQL gallery (postgres://…) instead of a data directory
        #[arg(long, env = "FACEGATE_DATABASE_URL")]
        database_url: Option<String>,
        /// The key the directory is encrypted with now; omit for a plaintext directory
        #[arg(long)]
        old_key_file: Option<PathBuf>,
        /// The key to encrypt with from now on
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate => {
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            writeln!(std::io::stdout(), "{}", hex::encode(key))?;
        }
        KeysCommand::Rotate { data_dir, database_url, old_key_file, new_key_file } => {
            let old = read_key(old_key_file.as_deref())?;
            let new = read_key(Some(&new_key_file))?.context("a new key is required")?;
            let report = match &database_url {
                Some(url) => facegate_store::rotate_key_postgres(url, old.as_ref(), &new)
                    .context("re-encrypting the PostgreSQL gallery")?,
                None => facegate_store::rotate_key(&data_dir, old.as_ref(), &new)
                    .with_context(|| format!("re-encrypting {}", data_dir.display()))?,
            };
            println!(
                "{}",
                serde_json::json!({
                    "key_id": new.id_hex(),
                    "templates": report.templates,
                    "images": report.images,
                    "already_rotated": report.already_rotated,
                })
            );
        }
    }
    Ok(())
}
