//! `facegate detect` and `facegate compare`: the engine from the command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use facegate_core::{AnalyzeOptions, AnalyzedFace, Engine};
use facegate_server::Settings;
use serde_json::json;

use crate::runtime::{load_engine, EngineArgs};

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
    /// Score (0-9999) at which the two are the same person [default: 7000]
    #[arg(long, env = "FACEGATE_KNOWN_THRESHOLD", default_value_t = 7000)]
    known_threshold: u32,
    #[command(flatten)]
    engine: EngineArgs,
}

fn engine(args: &EngineArgs) -> anyhow::Result<facegate_engine::OrtEngine> {
    let mut settings = Settings { inference_workers: 1, ..Settings::default() };
    args.apply(&mut settings);
    load_engine(&settings)
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

pub fn detect(args: DetectArgs) -> anyhow::Result<()> {
    let engine = engine(&args.engine)?;
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

pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let engine = engine(&args.engine)?;
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
        "threshold": args.known_threshold,
        "same_person": score >= args.known_threshold,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
