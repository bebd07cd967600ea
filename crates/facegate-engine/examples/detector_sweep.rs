//! How many photos have no face at each detector threshold, with and without the padded retry:
//! the measurement behind a pack's `detector.threshold` (docs/accuracy.md).
//!
//! `cargo run --release -p facegate-engine --example detector_sweep -- PACK_DIR LIST_FILE`
//! where LIST_FILE holds one image path per line. Reads the runtime from `FACEGATE_HOME`
//! (default `.facegate`). Detection runs once at a floor of 0.3 on the photo and once on the
//! photo inside the retry's margin; a photo has a face at threshold T when either pass found one
//! scoring at least T, which is what the engine's two passes do at T.

use std::path::PathBuf;

use facegate_engine::{decode_image, EngineConfig, OrtEngine, RETRY_PAD};
use image::RgbImage;

const FLOOR: f32 = 0.3;
const THRESHOLDS: [f32; 7] = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// `img` in the middle of a black margin of `pad` × its size on each side.
fn padded(img: &RgbImage, pad: f32) -> RgbImage {
    let (px, py) = ((img.width() as f32 * pad).round() as u32, (img.height() as f32 * pad).round() as u32);
    let mut out = RgbImage::new(img.width() + 2 * px, img.height() + 2 * py);
    image::imageops::overlay(&mut out, img, i64::from(px), i64::from(py));
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pack, list] = args.as_slice() else {
        return Err("usage: detector_sweep PACK_DIR LIST_FILE".into());
    };
    let home = std::env::var_os("FACEGATE_HOME").map_or_else(|| PathBuf::from(".facegate"), PathBuf::from);
    let config = EngineConfig {
        workers: 1,
        model_dir: PathBuf::from(pack),
        detection_threshold: Some(FLOOR),
        ..EngineConfig::with_home(&home)
    };
    let engine = OrtEngine::load(&config)?;
    let best = |img: &RgbImage| -> Result<f32, Box<dyn std::error::Error>> {
        Ok(engine.detect(img)?.iter().map(|d| d.score).fold(0.0, f32::max))
    };
    let mut scores = Vec::new();
    for path in std::fs::read_to_string(list)?.lines().filter(|l| !l.trim().is_empty()) {
        let img = decode_image(&std::fs::read(path)?, engine.decode_limits())?;
        scores.push((best(&img)?, best(&padded(&img, RETRY_PAD))?));
    }
    println!("{} photos", scores.len());
    println!("threshold | no face, one pass | no face, with the padded retry");
    for t in THRESHOLDS {
        let first = scores.iter().filter(|(a, _)| *a < t).count();
        let both = scores.iter().filter(|(a, b)| *a < t && *b < t).count();
        println!("{t:.1} | {first} | {both}");
    }
    Ok(())
}
