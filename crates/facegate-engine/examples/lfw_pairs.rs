//! LFW verification accuracy at the best threshold, as the Python peer measures it.
//!
//! ```text
//! cargo run --release -p facegate-engine --example lfw_pairs -- \
//!     ../shared/datasets/lfw/pairs_dev.txt ../shared/datasets/lfw/images [--impostors]
//! ```
//! Each image is embedded once (largest face); a pair whose image has no face scores −1.
//! `--impostors` also scores every pair of embedded images of different people and prints the
//! similarity at false-match rates 1e-1 … 1e-6: the raw material of a pack's calibration.
//! Reads the runtime and pack from `FACEGATE_HOME` (default `.facegate`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use facegate_core::{AnalyzeOptions, Engine};
use facegate_engine::embed::cosine;
use facegate_engine::{EngineConfig, OrtEngine};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(pairs_file), Some(images)) = (args.first(), args.get(1)) else {
        return Err("usage: lfw_pairs PAIRS_FILE IMAGES_DIR [--impostors]".into());
    };
    let impostors = args.iter().any(|a| a == "--impostors");
    let home = std::env::var_os("FACEGATE_HOME").map_or_else(|| PathBuf::from(".facegate"), PathBuf::from);
    let config = EngineConfig::with_home(&home);
    let workers = config.workers;
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

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<HashMap<PathBuf, Option<Vec<f32>>>> = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = unique.get(i) else { break };
                let embedding = std::fs::read(p)
                    .ok()
                    .and_then(|bytes| engine.analyze(&bytes, AnalyzeOptions::default()).ok())
                    .and_then(|a| a.faces.into_iter().next())
                    .map(|f| f.face.embedding);
                results.lock().unwrap_or_else(|e| e.into_inner()).insert(p.clone(), embedding);
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let no_face = results.values().filter(|e| e.is_none()).count();

    let scored: Vec<(f32, bool)> = pairs
        .iter()
        .map(|(a, b, same)| {
            let s = match (results.get(a).and_then(Option::as_ref), results.get(b).and_then(Option::as_ref)) {
                (Some(x), Some(y)) => cosine(x, y),
                _ => -1.0,
            };
            (s, *same)
        })
        .collect();
    let (mut best, mut best_t) = (0.0f64, 0.0f32);
    for step in 0..440 {
        let t = -0.2 + 0.0025 * step as f32;
        let correct = scored.iter().filter(|(s, same)| (*s >= t) == *same).count();
        let acc = correct as f64 / scored.len() as f64;
        if acc > best {
            (best, best_t) = (acc, t);
        }
    }
    println!(
        "{{\"pairs\": {}, \"images\": {}, \"no_face\": {no_face}, \"best_threshold_accuracy\": {best:.4}, \
         \"threshold\": {best_t:.4}, \"seconds\": {elapsed:.1}, \"images_per_s\": {:.1}}}",
        scored.len(),
        unique.len(),
        unique.len() as f64 / elapsed
    );

    if impostors {
        let person = |p: &Path| p.parent().and_then(|d| d.file_name()).map(|n| n.to_owned());
        let embedded: Vec<(_, &Vec<f32>)> =
            results.iter().filter_map(|(p, e)| e.as_ref().map(|e| (person(p), e))).collect();
        let mut sims = Vec::new();
        for (i, (pa, ea)) in embedded.iter().enumerate() {
            for (pb, eb) in &embedded[i + 1..] {
                if pa != pb {
                    sims.push(cosine(ea, eb));
                }
            }
        }
        sims.sort_by(|a, b| b.total_cmp(a));
        println!("impostor pairs: {}", sims.len());
        // Similarity at each false-match rate with at least 10 impostors above it, and its
        // score on the `3000 + 1000 · log10(1 / FMR)` scale: a pack's `[calibration]` knots.
        let mut knots = Vec::new();
        if let Some(lowest) = sims.last() {
            knots.push(format!("[{lowest:.4}, 3000.0]"));
        }
        for fmr in [0.5, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6] {
            let above = sims.len() as f64 * fmr;
            if above < 10.0 {
                println!("FMR {fmr:e}: too few impostor pairs");
                continue;
            }
            let sim = sims[(above as usize).min(sims.len() - 1)];
            let score = 3000.0 + 1000.0 * (1.0 / fmr).log10();
            println!("FMR {fmr:e}: similarity {sim:.4} (score {score:.0})");
            knots.push(format!("[{sim:.4}, {score:.1}]"));
        }
        println!("knots = [{}]", knots.join(", "));
    }
    Ok(())
}
