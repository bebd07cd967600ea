//! Pan, tilt, roll and quality of the central face of each photo, one line per photo: how the
//! measurement of pose between two packs in docs/accuracy.md was made.
//!
//! `cargo run --release -p facegate-engine --example pose_dump -- PACK_DIR LIST_FILE`
//! where LIST_FILE holds one image path per line; the runtime comes from `.facegate`.

use facegate_engine::{decode_image, EngineConfig, OrtEngine};
use std::path::PathBuf;
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pack, list] = args.as_slice() else {
        return Err("usage: pose_dump PACK_DIR LIST_FILE".into());
    };
    let home = PathBuf::from(".facegate");
    let engine = OrtEngine::load(&EngineConfig {
        workers: 1,
        model_dir: PathBuf::from(pack),
        ..EngineConfig::with_home(&home)
    })?;
    for path in std::fs::read_to_string(list)?.lines() {
        let img = decode_image(&std::fs::read(path)?, engine.decode_limits())?;
        let dets = engine.detect(&img)?;
        let (w, h) = (img.width() as f32 / 2.0, img.height() as f32 / 2.0);
        let best = dets.iter().min_by(|a, b| {
            let d = |x: &facegate_engine::Detection| {
                ((x.bbox.left + x.bbox.right) / 2.0 - w).hypot((x.bbox.top + x.bbox.bottom) / 2.0 - h)
            };
            d(a).total_cmp(&d(b))
        });
        match best {
            Some(d) => {
                let a = engine.attributes(&img, &engine.align(&img, std::slice::from_ref(d)))?;
                let p = a[0].attributes.pose;
                println!("{path} {} {} {} {}", p.pan, p.tilt, p.roll, a[0].attributes.quality)
            }
            None => println!("{path}"),
        }
    }
    Ok(())
}
