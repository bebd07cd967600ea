//! `facegate detect` and `facegate compare`: the engine from the command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use facegate_core::{AnalyzeOptions, AnalyzedFace, Engine};
use serde_json::json;

use crate::config::{Config, EngineArgs, FileConfig, Flags, ServiceArgs};
use crate::runtime::load_engine;

#[derive(Args, Debug)]
pub struct DetectArgs {
    image: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    a: PathBuf,
    b: PathBuf,
    // `--known-threshold`: the score at which the two are the same person.
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The configuration with these flags. One image at a time needs one inference worker, unless
/// the command line or the environment asks for more (a file's number is meant for `serve`).
fn config(file: &FileConfig, flags: Flags<'_>) -> anyhow::Result<Config> {
    let mut config = Config::resolve(file, flags)?;
    if flags.engine.is_some_and(|e| e.inference_workers.is_none()) {
        config.engine.inference_workers = 1;
    }
    Ok(config)
}

/// The engine with the latency setting `serve` uses: one image at a time.
fn engine(config: &Config) -> anyhow::Result<facegate_engine::OrtEngine> {
    load_engine(config, config.engine.serve_intra_op_threads())
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

pub fn detect(args: DetectArgs, file: &FileConfig) -> anyhow::Result<()> {
    let engine = engine(&config(file, Flags { engine: Some(&args.engine), ..Flags::default() })?)?;
    let analysis = engine.analyze(&read(&args.image)?, AnalyzeOptions::default())?;
    let faces: Vec<_> = analysis
        .faces
        .iter()
        .map(|AnalyzedFace { face: f, .. }| {
            json!({
                "bounding_box": {"left_x": f.bbox.left.round(), "left_y": f.bbox.top.round(),
                                 "right_x": f.bbox.right.round(), "right_y": f.bbox.bottom.round()},
                "detector_score": f.detector_score,
                "landmarks": f.landmarks,
            })
        })
        .collect();
    let out = json!({"image": args.image, "width": analysis.width, "height": analysis.height, "faces": faces});
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn compare(args: CompareArgs, file: &FileConfig) -> anyhow::Result<()> {
    let config = config(file, Flags { engine: Some(&args.engine), service: Some(&args.service), ..Flags::default() })?;
    let engine = engine(&config)?;
    let known_threshold = config.service.known_threshold;
    let largest = |path: &PathBuf| -> anyhow::Result<Vec<f32>> {
        let analysis = engine.analyze(&read(path)?, AnalyzeOptions::default())?;
        let face = analysis.faces.into_iter().next().with_context(|| format!("no face found in {}", path.display()))?;
        Ok(face.face.embedding)
    };
    let (a, b) = (largest(&args.a)?, largest(&args.b)?);
    let similarity: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let score = engine.model_info().calibration.score(similarity);
    let out = json!({
        "similarity": similarity,
        "score": score,
        "match_confidence": f64::from(score) / 10_000.0,
        "threshold": known_threshold,
        "same_person": score >= known_threshold,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
