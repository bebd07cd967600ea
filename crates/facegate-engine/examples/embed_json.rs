//! Prints the largest face's embedding of an image as a JSON array (or `null`), like the
//! Python peer's `embed` mode, so that the two pipelines can be compared. Its five keypoints
//! go to stderr as JSON, to compare alignment and embedding on identical keypoints.
//!
//! `cargo run --release -p facegate-engine --example embed_json -- IMAGE`
//! Reads the runtime and pack from `FACEGATE_HOME` (default `.facegate`).

use std::path::PathBuf;

use facegate_core::{AnalyzeOptions, Engine};
use facegate_engine::{EngineConfig, OrtEngine};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let image = std::env::args().nth(1).ok_or("usage: embed_json IMAGE")?;
    let home = std::env::var_os("FACEGATE_HOME").map_or_else(|| PathBuf::from(".facegate"), PathBuf::from);
    let engine = OrtEngine::load(&EngineConfig { workers: 1, ..EngineConfig::with_home(&home) })?;
    let analysis = engine.analyze(&std::fs::read(&image)?, AnalyzeOptions::default())?;
    match analysis.faces.first().map(|f| &f.face) {
        Some(face) => {
            let points: Vec<String> = face.landmarks.iter().map(|p| format!("[{:.4}, {:.4}]", p[0], p[1])).collect();
            eprintln!("[{}]", points.join(", "));
            let values: Vec<String> = face.embedding.iter().map(|v| format!("{v:.6}")).collect();
            println!("[{}]", values.join(", "));
        }
        None => println!("null"),
    }
    Ok(())
}
