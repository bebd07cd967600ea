//! `facegate eval pairs|calibrate`: accuracy and score calibration on labelled photos, through
//! the same engine code path as the server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use clap::{Args, Subcommand};
use facegate_core::score::{score_for_fmr, FIT_FMRS};
use facegate_core::{Calibration, Engine};
use facegate_server::Settings;
use serde_json::json;

use crate::runtime::{load_engine, EngineArgs};

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// LFW-style verification: N-fold accuracy with held-out thresholds, TAR@FAR, and the
    /// error rates at the service's default threshold.
    Pairs(PairsArgs),
    /// Measure impostor and genuine similarity distributions over every pair of a folder of
    /// people (one sub-folder each) and print calibration knots for the pack manifest.
    Calibrate(CalibrateArgs),
}

#[derive(Args, Debug)]
pub struct PairsArgs {
    /// Pairs file in the LFW `pairs.txt` format.
    #[arg(long)]
    pairs: PathBuf,
    /// Folder with one sub-folder per person holding `<Name>_<NNNN>.jpg`.
    #[arg(long)]
    images: PathBuf,
    /// Known threshold to report error rates at [default: 7000]
    #[arg(long, default_value_t = 7000)]
    known_threshold: u32,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Folder with one sub-folder per person.
    #[arg(long)]
    images: PathBuf,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Pairs(args) => pairs(args),
        EvalCommand::Calibrate(args) => calibrate(args),
    }
}

struct PairList {
    folds: usize,
    per_fold: usize,
    /// (image a, image b, same person)
    pairs: Vec<(PathBuf, PathBuf, bool)>,
}

fn read_pairs(file: &Path, images: &Path) -> anyhow::Result<PairList> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut lines = text.lines();
    let header: Vec<usize> = lines
        .next()
        .context("empty pairs file")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("pairs header must be `<folds> <pairs per class per fold>`")?;
    let (folds, per_class) = match header[..] {
        [f, p] => (f, p),
        _ => anyhow::bail!("pairs header must be `<folds> <pairs per class per fold>`"),
    };
    let path = |name: &str, n: &str| -> anyhow::Result<PathBuf> {
        let n: u32 = n.parse().with_context(|| format!("bad image number {n:?}"))?;
        Ok(images.join(name).join(format!("{name}_{n:04}.jpg")))
    };
    let mut pairs = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            [name, a, b] => pairs.push((path(name, a)?, path(name, b)?, true)),
            [n1, a, n2, b] => pairs.push((path(n1, a)?, path(n2, b)?, false)),
            _ => anyhow::bail!("bad pairs line: {line:?}"),
        }
    }
    anyhow::ensure!(
        pairs.len() == folds * per_class * 2,
        "expected {} pairs, found {}",
        folds * per_class * 2,
        pairs.len()
    );
    Ok(PairList { folds, per_fold: per_class * 2, pairs })
}

/// Embeds the largest face of each image on all cores; `None` where no face was found.
fn embed_all(engine: &dyn Engine, paths: &[PathBuf], workers: usize) -> HashMap<PathBuf, Option<Vec<f32>>> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let results = std::sync::Mutex::new(HashMap::with_capacity(paths.len()));
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let embedding = std::fs::read(path)
                    .ok()
                    .and_then(|bytes| engine.analyze(&bytes).ok())
                    .and_then(|a| a.faces.into_iter().next())
                    .map(|f| f.embedding);
                if embedding.is_none() {
                    tracing::warn!(path = %path.display(), "no face");
                }
                results.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone(), embedding);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(500) || n == paths.len() {
                    let rate = n as f64 / started.elapsed().as_secs_f64();
                    eprintln!("embedded {n}/{} images ({rate:.1} images/s)", paths.len());
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Accuracy of `sims >= t` against labels.
fn accuracy(items: &[(f32, bool)], t: f32) -> f64 {
    items.iter().filter(|&&(s, same)| (s >= t) == same).count() as f64 / items.len().max(1) as f64
}

fn best_threshold(items: &[(f32, bool)]) -> (f32, f64) {
    let mut best = (0.0, 0.0);
    for i in -200..=900 {
        let t = i as f32 / 1000.0;
        let a = accuracy(items, t);
        if a > best.1 {
            best = (t, a);
        }
    }
    best
}

fn pairs(args: PairsArgs) -> anyhow::Result<()> {
    let mut settings = Settings::default();
    args.engine.apply(&mut settings);
    let engine = load_engine(&settings)?;
    let list = read_pairs(&args.pairs, &args.images)?;
    let mut unique: Vec<PathBuf> = list.pairs.iter().flat_map(|(a, b, _)| [a.clone(), b.clone()]).collect();
    unique.sort();
    unique.dedup();
    let embeddings = embed_all(&engine, &unique, settings.inference_workers);
    let no_face = embeddings.values().filter(|e| e.is_none()).count();
    let items: Vec<(f32, bool)> = list
        .pairs
        .iter()
        .map(|(a, b, same)| {
            let sim = match (embeddings.get(a).and_then(Option::as_ref), embeddings.get(b).and_then(Option::as_ref)) {
                (Some(x), Some(y)) => dot(x, y),
                _ => -1.0,
            };
            (sim, *same)
        })
        .collect();

    let mut fold_acc = Vec::with_capacity(list.folds);
    for f in 0..list.folds {
        let range = f * list.per_fold..(f + 1) * list.per_fold;
        let train: Vec<_> = items.iter().enumerate().filter(|(i, _)| !range.contains(i)).map(|(_, p)| *p).collect();
        let (t, _) = best_threshold(&train);
        fold_acc.push(accuracy(&items[range], t));
    }
    let mean = fold_acc.iter().sum::<f64>() / fold_acc.len() as f64;
    let std = (fold_acc.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / fold_acc.len() as f64).sqrt();
    let (best_t, best_acc) = best_threshold(&items);

    let mut impostors: Vec<f32> = items.iter().filter(|p| !p.1).map(|p| p.0).collect();
    impostors.sort_by(|a, b| b.total_cmp(a));
    let genuine: Vec<f32> = items.iter().filter(|p| p.1).map(|p| p.0).collect();
    // TAR at FAR 1e-3: the threshold lets through at most 0.1% of impostors.
    let allowed = (impostors.len() as f64 * 1e-3).floor() as usize;
    let far_t = impostors.get(allowed).map_or(f32::MIN, |s| s + f32::EPSILON);
    let tar = genuine.iter().filter(|&&s| s >= far_t).count() as f64 / genuine.len().max(1) as f64;

    let calibration = &engine.model_info().calibration;
    let known = |s: f32| calibration.score(s) >= args.known_threshold;
    let fmr = impostors.iter().filter(|&&s| known(s)).count() as f64 / impostors.len().max(1) as f64;
    let fnmr = genuine.iter().filter(|&&s| !known(s)).count() as f64 / genuine.len().max(1) as f64;
    let at_default = items.iter().filter(|&&(s, same)| known(s) == same).count() as f64 / items.len() as f64;

    let report = json!({
        "pairs": items.len(),
        "folds": list.folds,
        "images": unique.len(),
        "images_without_face": no_face,
        "accuracy": mean,
        "accuracy_std": std,
        "best_threshold_accuracy": best_acc,
        "best_threshold_similarity": best_t,
        "tar_at_far_1e_3": tar,
        "default_threshold": args.known_threshold,
        "accuracy_at_default_threshold": at_default,
        "fmr_at_default_threshold": fmr,
        "fnmr_at_default_threshold": fnmr,
        "model_id": engine.model_info().model_id,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("pairs {} ({} folds), {} images, {no_face} without a face", items.len(), list.folds, unique.len());
        println!("{}-fold accuracy         {:.4} ± {:.4}", list.folds, mean, std);
        println!("best-threshold accuracy  {best_acc:.4} at similarity {best_t:.3}");
        println!("TAR @ FAR 1e-3           {tar:.4}");
        println!("at score {}: accuracy {at_default:.4}, FMR {fmr:.5}, FNMR {fnmr:.4}", args.known_threshold);
    }
    Ok(())
}

fn calibrate(args: CalibrateArgs) -> anyhow::Result<()> {
    let mut settings = Settings::default();
    args.engine.apply(&mut settings);
    let engine = load_engine(&settings)?;
    let mut people: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for dir in std::fs::read_dir(&args.images).with_context(|| format!("reading {}", args.images.display()))? {
        let dir = dir?.path();
        if !dir.is_dir() {
            continue;
        }
        let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("png")))
            .collect();
        photos.sort();
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        people.push((name, photos));
    }
    people.sort();
    let all: Vec<PathBuf> = people.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
    let embeddings = embed_all(&engine, &all, settings.inference_workers);
    let mut owners: Vec<usize> = Vec::new();
    let mut vectors: Vec<&[f32]> = Vec::new();
    for (person, (_, photos)) in people.iter().enumerate() {
        for p in photos {
            if let Some(Some(e)) = embeddings.get(p) {
                owners.push(person);
                vectors.push(e);
            }
        }
    }
    let mut impostors = Vec::with_capacity(vectors.len() * vectors.len() / 2);
    let mut genuine = Vec::new();
    for i in 0..vectors.len() {
        for j in i + 1..vectors.len() {
            let s = dot(vectors[i], vectors[j]);
            if owners[i] == owners[j] {
                genuine.push(s);
            } else {
                impostors.push(s);
            }
        }
    }
    let calibration = Calibration::fit(&impostors).map_err(anyhow::Error::msg)?;
    let fmr_of = |t: f32| impostors.iter().filter(|&&s| s >= t).count() as f64 / impostors.len() as f64;
    let fnmr_of = |t: f32| genuine.iter().filter(|&&s| s < t).count() as f64 / genuine.len().max(1) as f64;
    let mut table = Vec::new();
    for score in [4000u32, 5000, 6000, 7000, 8000] {
        let t = lowest_similarity_with_score(&calibration, score);
        table.push(json!({"score": score, "similarity": t, "fmr": fmr_of(t), "fnmr": fnmr_of(t)}));
    }
    let report = json!({
        "people": people.len(),
        "images": all.len(),
        "embedded": vectors.len(),
        "impostor_pairs": impostors.len(),
        "genuine_pairs": genuine.len(),
        "target_fmrs": FIT_FMRS.iter().map(|&f| json!({"fmr": f, "score": score_for_fmr(f).round()})).collect::<Vec<_>>(),
        "knots": calibration.knots,
        "table": table,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} impostor and {} genuine pairs from {} images", impostors.len(), genuine.len(), vectors.len());
        println!("[calibration]\nknots = [");
        for (s, v) in &calibration.knots {
            println!("  [{s:.5}, {v:.1}],");
        }
        println!("]\n\nscore  similarity  FMR        FNMR");
        for row in &table {
            println!(
                "{:<6} {:<11.4} {:<10.2e} {:.4}",
                row["score"],
                row["similarity"].as_f64().unwrap_or(0.0),
                row["fmr"].as_f64().unwrap_or(0.0),
                row["fnmr"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

/// Lowest similarity (to 1e-5) whose score reaches `score`.
fn lowest_similarity_with_score(c: &Calibration, score: u32) -> f32 {
    let (mut lo, mut hi) = (-1.0f32, 1.0f32);
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if c.score(mid) >= score {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}
