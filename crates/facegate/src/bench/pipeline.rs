//! `facegate bench pipeline IMAGES…`: where the time of one photo goes, and images/s end to end.
//!
//! Stage times are medians over every image and round, from one worker with one intra-op
//! thread: decode, detect (SCRFD at native resolution), align (the similarity warp of each face
//! to the recognizer's input), embed (the recognizer on the aligned crops). Throughput runs the
//! whole pipeline (`Engine::analyze`) over all images from 1 thread and from N workers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use facegate_core::{AnalyzeOptions, Engine};
use facegate_engine::{decode_image, EngineConfig, OrtEngine};
use serde_json::json;

use super::{quantile, sorted};
use crate::config::{Config, EngineArgs, FileConfig, Flags};

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Photos to run (JPEG, PNG, WebP, BMP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Passes over the images for the stage times.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Stage timings in milliseconds, one entry per image and round.
#[derive(Default)]
struct Stages {
    decode: Vec<f64>,
    detect: Vec<f64>,
    align: Vec<f64>,
    embed: Vec<f64>,
    total: Vec<f64>,
}

pub fn run(args: PipelineArgs, file: &FileConfig) -> anyhow::Result<()> {
    let config = Config::resolve(file, Flags { engine: Some(&args.engine), ..Flags::default() })?;
    let workers = config.engine.inference_workers.max(1);
    let images: Vec<Vec<u8>> = args
        .images
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<_>>()?;
    // Throughput configuration unless asked otherwise: one ONNX Runtime thread per worker.
    let engine_config = |workers: usize| EngineConfig { workers, ..config.engine_config(1) };

    let single = OrtEngine::load(&engine_config(1)).context("loading the face models")?;
    let stages = time_stages(&single, &images, args.rounds.max(1))?;
    let one = throughput(&single, &images, 1);
    drop(single);
    let pool = OrtEngine::load(&engine_config(workers)).context("loading the face models")?;
    throughput(&pool, &images[..images.len().min(8)], workers); // warm every worker
    let many = throughput(&pool, &images, workers);

    let median = |v: &[f64]| quantile(&sorted(v), 0.5);
    let summary = json!({
        "images": images.len(),
        "rounds": args.rounds,
        "stage_median_ms": {
            "decode": median(&stages.decode),
            "detect": median(&stages.detect),
            "align": median(&stages.align),
            "embed": median(&stages.embed),
            "total": median(&stages.total),
        },
        "threads_1": { "images_per_s": one.images_per_s, "faces_per_s": one.faces_per_s },
        "workers": workers,
        "images_per_s": many.images_per_s,
        "faces_per_s": many.faces_per_s,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!("pipeline bench: {} images × {} rounds; stages on 1 worker, 1 intra-op thread", images.len(), args.rounds);
    for (name, values) in [
        ("decode", &stages.decode),
        ("detect", &stages.detect),
        ("align", &stages.align),
        ("embed", &stages.embed),
        ("total", &stages.total),
    ] {
        println!("  {name:<10} median {:8.2} ms per image", median(values));
    }
    println!("  {:<10} {:8.1} images/s  {:8.1} faces/s", "1 thread", one.images_per_s, one.faces_per_s);
    println!(
        "  {:<10} {:8.1} images/s  {:8.1} faces/s",
        format!("{workers} workers"),
        many.images_per_s,
        many.faces_per_s
    );
    Ok(())
}

fn time_stages(engine: &OrtEngine, images: &[Vec<u8>], rounds: usize) -> anyhow::Result<Stages> {
    // Warm-up: the first runs allocate arenas and pick kernels.
    for bytes in images.iter().take(5) {
        let _ = engine.analyze(bytes, AnalyzeOptions::default());
    }
    let mut stages = Stages::default();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for _ in 0..rounds {
        for bytes in images {
            let t0 = Instant::now();
            let Ok(img) = decode_image(bytes, engine.decode_limits()) else { continue };
            let t1 = Instant::now();
            let faces = engine.detect(&img)?;
            let t2 = Instant::now();
            let aligned = engine.align(&img, &faces);
            let t3 = Instant::now();
            engine.embed(&img, &aligned)?;
            let t4 = Instant::now();
            stages.decode.push(ms(t1 - t0));
            stages.detect.push(ms(t2 - t1));
            stages.align.push(ms(t3 - t2));
            stages.embed.push(ms(t4 - t3));
            stages.total.push(ms(t4 - t0));
        }
    }
    Ok(stages)
}

struct Throughput {
    images_per_s: f64,
    faces_per_s: f64,
}

/// Runs the whole pipeline over `images` from `threads` threads sharing one queue.
fn throughput(engine: &OrtEngine, images: &[Vec<u8>], threads: usize) -> Throughput {
    let next = AtomicUsize::new(0);
    let faces = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(bytes) = images.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Ok(analysis) = engine.analyze(bytes, AnalyzeOptions::default()) {
                        faces.fetch_add(analysis.faces.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    Throughput { images_per_s: images.len() as f64 / seconds, faces_per_s: faces.into_inner() as f64 / seconds }
}
