//! Per-stage timings (decode, detect, align + embed) and whole-pipeline throughput.
//!
//! ```text
//! cargo run --release -p facegate-engine --example stages -- IMAGE... [--rounds N]
//! ```
//! Per-stage numbers are per image, with one worker and one intra-op thread; throughput runs
//! `analyze` on all images from 1 and from `workers` threads. Reads the runtime and pack from
//! `FACEGATE_HOME` (default `.facegate`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use facegate_core::Engine;
use facegate_engine::{decode_image, EngineConfig, OrtEngine};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = v.get(v.len() / 2).copied().unwrap_or_default();
    let min = v.first().copied().unwrap_or_default();
    format!("median {:7.3} ms   min {:7.3} ms", ms(median), ms(min))
}

fn throughput(engine: &OrtEngine, images: &[Vec<u8>], threads: usize) -> (f64, usize) {
    let next = AtomicUsize::new(0);
    let faces = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(bytes) = images.get(i) else { break };
                if let Ok(a) = engine.analyze(bytes) {
                    faces.fetch_add(a.faces.len(), Ordering::Relaxed);
                }
            });
        }
    });
    (images.len() as f64 / started.elapsed().as_secs_f64(), faces.into_inner())
}

fn main() -> Result<(), Error> {
    let mut paths = Vec::new();
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rounds" {
            rounds = args.next().ok_or("--rounds needs a number")?.parse()?;
        } else {
            paths.push(PathBuf::from(a));
        }
    }
    if paths.is_empty() {
        return Err("usage: stages IMAGE... [--rounds N]".into());
    }
    let home = std::env::var_os("FACEGATE_HOME").map_or_else(|| PathBuf::from(".facegate"), PathBuf::from);
    let config = EngineConfig::with_home(&home);
    let workers = config.workers;
    let images: Vec<Vec<u8>> = paths.iter().map(std::fs::read).collect::<Result<_, _>>()?;

    let engine = OrtEngine::load(&EngineConfig { workers: 1, ..config.clone() })?;
    // Warm-up: first runs allocate arenas and pick kernels.
    for bytes in images.iter().take(5) {
        engine.analyze(bytes)?;
    }
    let (mut decode, mut detect, mut embed, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for bytes in &images {
            let t0 = Instant::now();
            let img = decode_image(bytes, engine.decode_limits())?;
            let t1 = Instant::now();
            let dets = engine.detect(&img)?;
            let t2 = Instant::now();
            let _ = engine.embed_faces(&img, &dets)?;
            let t3 = Instant::now();
            decode.push(t1 - t0);
            detect.push(t2 - t1);
            embed.push(t3 - t2);
            total.push(t3 - t0);
        }
    }
    println!("{} images × {rounds} rounds, 1 worker, 1 intra-op thread", images.len());
    println!("  decode           {}", stats(decode));
    println!("  detect           {}", stats(detect));
    println!("  align + embed    {}", stats(embed));
    println!("  total            {}", stats(total));

    let (rate, faces) = throughput(&engine, &images, 1);
    println!("throughput, 1 thread:  {rate:6.1} images/s ({faces} faces)");
    drop(engine);
    let engine = OrtEngine::load(&config)?;
    let _ = throughput(&engine, &images[..images.len().min(8)], workers);
    let (rate, faces) = throughput(&engine, &images, workers);
    println!("throughput, {workers} threads: {rate:6.1} images/s ({faces} faces)");
    Ok(())
}
