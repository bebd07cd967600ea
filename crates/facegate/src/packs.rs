//! `facegate packs`: the model packs `scripts/setup` installed, with their licences.

use std::path::Path;

use clap::Args;
use facegate_engine::{list_packs, DEFAULT_HOME, DEFAULT_PACK};

use crate::config::{Config, EngineArgs, FileConfig, Flags};

#[derive(Args, Debug)]
pub struct PacksArgs {
    // `--pack` / `--model-dir`: which one is active.
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(args: PacksArgs, file: &FileConfig) -> anyhow::Result<()> {
    let config = Config::resolve(file, Flags { engine: Some(&args.engine), ..Flags::default() })?;
    let active = config.engine.pack_dir();
    let packs_dir = Path::new(DEFAULT_HOME).join("models");
    let packs = list_packs(&packs_dir)?;
    if packs.is_empty() {
        println!("no packs under {}: run `make setup`", packs_dir.display());
    }
    for pack in &packs {
        let marker = if same_dir(&pack.dir, &active) { "* " } else { "  " };
        let default = if pack.name == DEFAULT_PACK { " (default)" } else { "" };
        println!("{marker}{}{default}", pack.name);
        match &pack.manifest {
            Ok(m) => {
                println!("    model_id:   {}", m.model_id);
                println!("    template:   {} values", m.template_size());
                println!("    licence:    {}", m.license.as_deref().unwrap_or("not stated"));
                println!("    accuracy:   {}", m.accuracy.as_deref().unwrap_or("not measured"));
                for (role, file, provenance) in m.model_files() {
                    let licence = provenance.license.as_deref().unwrap_or("licence not stated");
                    let source = provenance.source.as_deref().unwrap_or("a source not stated");
                    println!("    {role}: {file}");
                    println!("      licence {licence}; from {source}");
                }
                if let Some(data) = &m.trained_on {
                    println!("    trained on: {data}");
                }
                if m.commercial_use == Some(false) {
                    println!("    commercial use: not allowed by the weights' licence");
                }
                if !pack.missing.is_empty() {
                    println!("    missing:    {} (run `make setup`)", pack.missing.join(", "));
                }
            }
            Err(e) => println!("    unreadable manifest: {e}"),
        }
    }
    if !packs.iter().any(|p| same_dir(&p.dir, &active)) {
        println!("* active: {} (--model-dir)", active.display());
    }
    println!();
    println!("A licence on the weights is not legal advice about the data they were trained on.");
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
