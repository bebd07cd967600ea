//! `facegate keys generate|rotate`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use rand::RngCore;

use crate::config::{FileConfig, StoreArgs};
use crate::runtime::read_key;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Print a new random 256-bit key as 64 hex digits, for a key file.
    Generate,
    /// Re-encrypt every template and face image of a stopped server's data directory (or, with
    /// --database-url, of a PostgreSQL gallery whose nodes are all stopped) under a new key, or
    /// encrypt a plaintext one for the first time. Safe to run again if it was interrupted.
    Rotate {
        /// The key the directory is encrypted with now [default: the configured
        /// encryption_key_file; none for a plaintext directory]
        #[arg(long)]
        old_key_file: Option<PathBuf>,
        /// The key to encrypt with from now on
        #[arg(long)]
        new_key_file: PathBuf,
        // Where the gallery is (`data_dir` or `database_url`) and its current key
        // (`encryption_key_file`), as for `serve`.
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub fn run(cmd: KeysCommand, file: &FileConfig) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate => {
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            writeln!(std::io::stdout(), "{}", hex::encode(key))?;
        }
        KeysCommand::Rotate { old_key_file, new_key_file, store } => {
            let store = store.resolve(file);
            let new = read_key(Some(&new_key_file))?.context("a new key is required")?;
            let old = match old_key_file {
                Some(path) => read_key(Some(&path))?,
                // The configured key is the one the servers run with: the old key, until the
                // configuration is switched to the new one. Once it has been, it names the new
                // key, and the gallery is either plaintext (first encryption) or partly under
                // the new key already (a re-run): no old key in both cases.
                None => read_key(store.encryption_key_file.as_deref())?.filter(|key| key.id_hex() != new.id_hex()),
            };
            let report = match &store.database_url {
                Some(url) => facegate_store::rotate_key_postgres(url, old.as_ref(), &new)
                    .context("re-encrypting the PostgreSQL gallery")?,
                None => facegate_store::rotate_key(&store.data_dir, old.as_ref(), &new)
                    .with_context(|| format!("re-encrypting {}", store.data_dir.display()))?,
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
