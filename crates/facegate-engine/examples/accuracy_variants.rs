//! LFW pairs accuracy under eight pipeline variants at once: detector at native size or 2×
//! upscaled, the largest or the most central face, with and without the flip test.
//!
//! ```text
//! cargo run --release -p facegate-engine --example accuracy_variants -- \
//!     ../shared/datasets/lfw/pairs_dev.txt ../shared/datasets/lfw/images
//! ```
//! Prints, per variant, the N-fold accuracy with held-out thresholds, the best-threshold
//! accuracy and the index and similarity of every pair it gets wrong. The figures in
//! `docs/accuracy.md` ("What was tried") come from this; the service itself runs
//! `native-largest` (miiCloud enrollment) and `facegate eval` runs `native-center`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use facegate_engine::embed::cosine;
use facegate_engine::{decode_image, Detection, EngineConfig, OrtEngine};
use image::imageops;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Mirror image of a detection in a photo `w` wide: boxes and keypoints flipped, and the
/// left/right keypoints swapped so that index 0 is still the subject's right eye.
fn mirror(d: &Detection, w: f32) -> Detection {
    let mut out = d.clone();
    out.bbox.left = w - d.bbox.right;
    out.bbox.right = w - d.bbox.left;
    let m = |p: [f32; 2]| [w - p[0], p[1]];
    let l = d.landmarks;
    out.landmarks = [m(l[1]), m(l[0]), m(l[2]), m(l[4]), m(l[3])];
    out
}

fn norm(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

const NAMES: [&str; 8] = [
    "native-largest",
    "native-largest-flip",
    "native-center",
    "native-center-flip",
    "up2-largest",
    "up2-largest-flip",
    "up2-center",
    "up2-center-flip",
];

/// Templates of `p` in the order of `NAMES`.
fn variants(engine: &OrtEngine, p: &Path) -> Result<Vec<Option<Vec<f32>>>, Error> {
    let img = decode_image(&std::fs::read(p)?, engine.decode_limits())?;
    let (w, h) = (img.width() as f32, img.height() as f32);
    let flipped = imageops::flip_horizontal(&img);
    let up = imageops::resize(&img, img.width() * 2, img.height() * 2, imageops::FilterType::Triangle);
    let native = engine.detect(&img)?;
    let upd: Vec<Detection> = engine
        .detect(&up)?
        .into_iter()
        .map(|mut d| {
            d.bbox.left /= 2.0;
            d.bbox.right /= 2.0;
            d.bbox.top /= 2.0;
            d.bbox.bottom /= 2.0;
            for l in &mut d.landmarks {
                l[0] /= 2.0;
                l[1] /= 2.0;
            }
            d
        })
        .collect();
    let center = |ds: &[Detection]| -> Option<Detection> {
        ds.iter()
            .min_by(|a, b| {
                let da = ((a.bbox.left + a.bbox.right) / 2.0 - w / 2.0).powi(2)
                    + ((a.bbox.top + a.bbox.bottom) / 2.0 - h / 2.0).powi(2);
                let db = ((b.bbox.left + b.bbox.right) / 2.0 - w / 2.0).powi(2)
                    + ((b.bbox.top + b.bbox.bottom) / 2.0 - h / 2.0).powi(2);
                da.total_cmp(&db)
            })
            .cloned()
    };
    let picks = [native.first().cloned(), center(&native), upd.first().cloned(), center(&upd)];
    let mut out = Vec::new();
    for pick in picks {
        match pick {
            None => {
                out.push(None);
                out.push(None);
            }
            Some(d) => {
                let e = engine.embed_faces(&img, std::slice::from_ref(&d))?.remove(0);
                let f = engine.embed_faces(&flipped, &[mirror(&d, w)])?.remove(0);
                let s: Vec<f32> = e.iter().zip(&f).map(|(a, b)| a + b).collect();
                out.push(Some(e));
                out.push(Some(norm(s)));
            }
        }
    }
    Ok(out)
}

fn acc(items: &[(f32, bool)], t: f32) -> f64 {
    items.iter().filter(|&&(s, same)| (s >= t) == same).count() as f64 / items.len() as f64
}
fn best(items: &[(f32, bool)]) -> (f32, f64) {
    let mut b = (0.0, 0.0);
    for i in -200..=900 {
        let t = i as f32 / 1000.0;
        let a = acc(items, t);
        if a > b.1 {
            b = (t, a);
        }
    }
    b
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(pairs_file), Some(images)) = (args.first(), args.get(1)) else {
        return Err("usage: accuracy_variants PAIRS_FILE IMAGES_DIR".into());
    };
    let config = EngineConfig::default();
    let engine = OrtEngine::load(&config)?;
    let path = |name: &str, n: &str| -> Result<PathBuf, Error> {
        let n: u32 = n.trim().parse()?;
        Ok(Path::new(images).join(name).join(format!("{name}_{n:04}.jpg")))
    };
    let mut pairs = Vec::new();
    for line in std::fs::read_to_string(pairs_file)?.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            [name, a, b] => pairs.push((path(name, a)?, path(name, b)?, true)),
            [na, a, nb, b] => pairs.push((path(na, a)?, path(nb, b)?, false)),
            _ => {}
        }
    }
    let mut unique: Vec<PathBuf> = pairs.iter().flat_map(|(a, b, _)| [a.clone(), b.clone()]).collect();
    unique.sort();
    unique.dedup();
    let next = AtomicUsize::new(0);
    let results: Mutex<HashMap<PathBuf, Vec<Option<Vec<f32>>>>> = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for _ in 0..config.workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = unique.get(i) else { break };
                let v = variants(&engine, p).unwrap_or_else(|_| vec![None; 8]);
                results.lock().unwrap_or_else(|e| e.into_inner()).insert(p.clone(), v);
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    for (v, name) in NAMES.iter().enumerate() {
        let items: Vec<(f32, bool)> = pairs
            .iter()
            .map(|(a, b, same)| {
                let s = match (results[a][v].as_ref(), results[b][v].as_ref()) {
                    (Some(x), Some(y)) => cosine(x, y),
                    _ => -1.0,
                };
                (s, *same)
            })
            .collect();
        let folds = 5;
        let per = items.len() / folds;
        let mut fa = Vec::new();
        for f in 0..folds {
            let r = f * per..(f + 1) * per;
            let train: Vec<_> = items.iter().enumerate().filter(|(i, _)| !r.contains(i)).map(|(_, p)| *p).collect();
            fa.push(acc(&items[r], best(&train).0));
        }
        let mean = fa.iter().sum::<f64>() / folds as f64;
        let (bt, ba) = best(&items);
        let errs: Vec<String> = items
            .iter()
            .enumerate()
            .filter(|(_, &(s, same))| (s >= bt) != same)
            .map(|(i, &(s, _))| format!("{i}:{s:.3}"))
            .collect();
        println!("{name:22} {mean:.4} best {ba:.4} @{bt:.3} errors {}", errs.join(" "));
    }
    Ok(())
}
