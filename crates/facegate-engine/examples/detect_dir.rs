//! Prints the faces found in each image given on the command line (files or directories).
//!
//! `cargo run --release -p facegate-engine --example detect_dir -- IMAGE_OR_DIR...`
//! Reads the runtime and pack from `FACEGATE_HOME` (default `.facegate`).

use std::path::{Path, PathBuf};

use facegate_engine::{decode_image, EngineConfig, OrtEngine};

fn files(arg: &Path, out: &mut Vec<PathBuf>) {
    if arg.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(arg).into_iter().flatten().flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            files(&e, out);
        }
    } else {
        out.push(arg.to_path_buf());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let home = std::env::var_os("FACEGATE_HOME").map_or_else(|| PathBuf::from(".facegate"), PathBuf::from);
    let engine = OrtEngine::load(&EngineConfig { workers: 1, ..EngineConfig::with_home(&home) })?;
    let mut paths = Vec::new();
    for a in std::env::args_os().skip(1) {
        files(Path::new(&a), &mut paths);
    }
    let (mut images, mut with_face) = (0, 0);
    for p in paths {
        let bytes = std::fs::read(&p)?;
        let img = match decode_image(&bytes, engine.decode_limits()) {
            Ok(img) => img,
            Err(e) => {
                println!("{}: {e}", p.display());
                continue;
            }
        };
        let dets = engine.detect(&img)?;
        images += 1;
        with_face += usize::from(!dets.is_empty());
        let boxes: Vec<String> = dets
            .iter()
            .map(|d| {
                format!(
                    "[{:.0},{:.0},{:.0},{:.0} s={:.2}]",
                    d.bbox.left, d.bbox.top, d.bbox.right, d.bbox.bottom, d.score
                )
            })
            .collect();
        println!("{} {}x{}: {} faces {}", p.display(), img.width(), img.height(), dets.len(), boxes.join(" "));
    }
    println!("{with_face}/{images} images with at least one face");
    Ok(())
}
