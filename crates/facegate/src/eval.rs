//! `facegate eval pairs|identify|calibrate|registration|index-recall|grouping`: accuracy, score
//! calibration and the grouping of unknown faces on labelled photos, through the same engine code
//! path as the server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use clap::{Args, Subcommand};
use facegate_core::score::{score_for_fmr, FIT_FMRS};
use facegate_core::{AnalyzeOptions, Calibration, DetectedFace, Engine};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{Config, EngineArgs, FileConfig, Flags};
use crate::runtime::load_engine;

mod grouping;
mod index_recall;

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// LFW-style verification: N-fold accuracy with held-out thresholds, TAR@FAR, and the
    /// error rates at the service's default threshold.
    Pairs(PairsArgs),
    /// 1:N identification: enroll one photo of every person, search with the others, and report
    /// rank-1, FNIR at FPIR 0.01 and 0.003 (NIST FRTE 1:N), and the gallery size.
    Identify(IdentifyArgs),
    /// Measure impostor and genuine similarity distributions over every pair of a folder of
    /// people (one sub-folder each) and print calibration knots for the pack manifest.
    Calibrate(CalibrateArgs),
    /// Which faces count for a registration: over the first photos of a folder of people, how
    /// many register, and how many are refused as MultipleFaces, PoorQuality or NoFace, under
    /// the old rule (any second face refuses) and under rival-size ratios; and how often the
    /// registered face is not the labelled person's (its box misses the image centre).
    Registration(RegistrationArgs),
    /// The index's recall against the exact scan on real embeddings: every photo of a folder
    /// of people with mirrored, shifted and scaled copies as the gallery (100,000+ rows from
    /// LFW), some photos and people held out as mated and non-mated probes. Prints JSON.
    IndexRecall(index_recall::IndexRecallArgs),
    /// Unknown faces grouped into unknown people: every photo of a folder of people fed as a
    /// sighting in a random order, grouped one at a time, and the groups scored against the true
    /// identities (pairwise and BCubed precision and recall, people split, groups mixed), over a
    /// grid of grouping scores and neighbour counts.
    Grouping(grouping::GroupingArgs),
}

#[derive(Args, Debug)]
pub struct RegistrationArgs {
    /// Folder with one sub-folder per person, read in name order.
    #[arg(long)]
    images: PathBuf,
    /// Photos read, from the first person on.
    #[arg(long, default_value_t = 2000)]
    limit: usize,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct PairsArgs {
    /// Pairs file in the LFW `pairs.txt` format.
    #[arg(long)]
    pairs: PathBuf,
    /// Folder with one sub-folder per person holding `<Name>_<NNNN>.jpg`.
    #[arg(long)]
    images: PathBuf,
    /// Known threshold to report error rates at
    #[arg(long, default_value_t = facegate_core::service::DEFAULT_KNOWN_THRESHOLD)]
    known_threshold: u32,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    embed: EmbedArgs,
}

#[derive(Args, Debug)]
pub struct IdentifyArgs {
    /// Folder with one sub-folder per person.
    #[arg(long)]
    images: PathBuf,
    /// Photos enrolled per person. People with more photos than this are searched for with the
    /// rest; people with fewer are enrolled whole and serve as distractors.
    #[arg(long, default_value_t = 1)]
    enroll: usize,
    /// How a subject's samples make one score: `max` (what the service does) or `mean`.
    #[arg(long, value_enum, default_value_t = Aggregate::Max)]
    aggregate: Aggregate,
    /// Skip enrollment photos whose face quality (0–1, as NEC reports it) is below this; the
    /// person's next photo is tried instead. 0 disables the gate (and the landmark model).
    #[arg(long, default_value_t = 0.0)]
    min_quality: f32,
    /// Known threshold to report error rates at
    #[arg(long, default_value_t = facegate_core::service::DEFAULT_KNOWN_THRESHOLD)]
    known_threshold: u32,
    /// A file naming people (folder names, one per line, `#` comments) to leave out: known
    /// label noise, such as one person filed under two spellings.
    #[arg(long)]
    exclude_people: Option<PathBuf>,
    /// Also list the N probes with the highest non-mated scores and the N lowest mated ones:
    /// where label noise and hard cases are.
    #[arg(long, default_value_t = 0)]
    show_worst: usize,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    embed: EmbedArgs,
}

/// How photos become templates, shared by every eval command.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Which face of a photo with several is the labelled person's.
    #[arg(long, value_enum, default_value_t = FaceChoice::Center)]
    face: FaceChoice,
    /// Keep templates in this file and reuse them on the next run with the same model and face
    /// choice, so that trying report options does not embed every photo again.
    #[arg(long)]
    embeddings_cache: Option<PathBuf>,
    /// Round every template to this precision before scoring: `f16` measures what storing
    /// templates as half floats (as the index holds them) would cost in accuracy.
    #[arg(long, value_enum, default_value_t = TemplatePrecision::F32)]
    template_precision: TemplatePrecision,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplatePrecision {
    /// As the model returns them.
    F32,
    /// IEEE half precision, 2 bytes a value.
    F16,
}

impl TemplatePrecision {
    fn apply(self, embedding: &mut [f32]) {
        if self == TemplatePrecision::F16 {
            embedding.iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32());
        }
    }
}

/// Which face of a photo with several stands for the labelled person.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaceChoice {
    /// The face whose box centre is nearest the image centre: how LFW and most face datasets
    /// are made (each photo is cropped around the labelled person).
    Center,
    /// The largest face: the rule miiCloud enrollment follows.
    Largest,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// The best sample's similarity.
    Max,
    /// The mean of the samples' similarities.
    Mean,
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Folder with one sub-folder per person.
    #[arg(long)]
    images: PathBuf,
    /// A file naming people (folder names, one per line, `#` comments) to leave out: known
    /// label noise, such as one person filed under two spellings.
    #[arg(long)]
    exclude_people: Option<PathBuf>,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    embed: EmbedArgs,
}

pub fn run(cmd: EvalCommand, file: &FileConfig) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Pairs(args) => pairs(args, file),
        EvalCommand::Identify(args) => identify(args, file),
        EvalCommand::Calibrate(args) => calibrate(args, file),
        EvalCommand::Registration(args) => registration(args, file),
        EvalCommand::IndexRecall(args) => index_recall::run(args, file),
        EvalCommand::Grouping(args) => grouping::run(args, file),
    }
}

/// Rival-size ratios `eval registration` compares with the old rule. 0 counts every good face.
const RIVAL_RATIOS: [f32; 4] = [0.0, 0.11, 0.25, 0.5];

fn registration(args: RegistrationArgs, file: &FileConfig) -> anyhow::Result<()> {
    use facegate_core::service::{registrable_face, REGISTRATION_FACES_EXAMINED};
    let (config, engine) = engine(&args.engine, file)?;
    let min_quality = config.service.min_face_quality;
    let mut paths = Vec::new();
    let mut people: Vec<PathBuf> = std::fs::read_dir(&args.images)
        .with_context(|| format!("reading {}", args.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    people.sort();
    for person in people {
        let mut photos: Vec<PathBuf> = std::fs::read_dir(&person)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        photos.sort();
        paths.extend(photos);
        if paths.len() >= args.limit {
            break;
        }
    }
    paths.truncate(args.limit);
    // Per rule: outcome name -> count, and registrations whose face misses the image centre.
    let rules = 1 + RIVAL_RATIOS.len();
    let tallies = std::sync::Mutex::new(vec![(HashMap::<&'static str, usize>::new(), 0usize); rules]);
    let next = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..config.engine.inference_workers.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let options = AnalyzeOptions::with_attributes(REGISTRATION_FACES_EXAMINED);
                let analysis = std::fs::read(path).ok().and_then(|bytes| engine.analyze(&bytes, options).ok());
                let Some(analysis) = analysis else { continue };
                let centre = (analysis.width as f32 / 2.0, analysis.height as f32 / 2.0);
                let Ok(faces) = analysis.into_attributed() else { continue };
                let mut outcomes = Vec::with_capacity(rules);
                // The old rule: any second face refuses.
                outcomes.push(if faces.len() > 1 {
                    Err(facegate_core::Error::MultipleFaces)
                } else {
                    registrable_face(faces.clone(), min_quality, 0.0)
                });
                for ratio in RIVAL_RATIOS {
                    outcomes.push(registrable_face(faces.clone(), min_quality, ratio));
                }
                let mut tallies = tallies.lock().unwrap_or_else(|e| e.into_inner());
                for (tally, outcome) in tallies.iter_mut().zip(outcomes) {
                    let name = match &outcome {
                        Ok(_) => "registered",
                        Err(e) => e.code().name(),
                    };
                    *tally.0.entry(name).or_default() += 1;
                    if let Ok(face) = outcome {
                        let b = face.face.bbox;
                        if !(b.left..=b.right).contains(&centre.0) || !(b.top..=b.bottom).contains(&centre.1) {
                            tally.1 += 1;
                        }
                    }
                }
            });
        }
    });
    let tallies = tallies.into_inner().unwrap_or_else(|e| e.into_inner());
    let names = std::iter::once("any second face".to_owned())
        .chain(RIVAL_RATIOS.iter().map(|r| format!("rival area >= {r} of the largest")));
    let report: Vec<serde_json::Value> = names
        .zip(&tallies)
        .map(|(rule, (counts, off_centre))| {
            json!({"rule": rule, "outcomes": counts, "registered_face_off_centre": off_centre})
        })
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", json!({"photos": paths.len(), "min_face_quality": min_quality, "rules": report}));
    } else {
        println!("{} photos in {elapsed:.0} s, min face quality {min_quality}", paths.len());
        for r in &report {
            println!(
                "{}: {} | registered face off centre: {}",
                r["rule"], r["outcomes"], r["registered_face_off_centre"]
            );
        }
    }
    Ok(())
}

/// The configuration with these flags, and the engine it describes, as the server runs it.
fn engine(flags: &EngineArgs, file: &FileConfig) -> anyhow::Result<(Config, facegate_engine::OrtEngine)> {
    let config = Config::resolve(file, Flags { engine: Some(flags), ..Flags::default() })?;
    let engine = load_engine(&config, config.engine.serve_intra_op_threads())?;
    Ok((config, engine))
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

/// What `embed_all` keeps of an image's chosen face.
#[derive(Clone, Serialize, Deserialize)]
struct Embedded {
    embedding: Vec<f32>,
    /// Present only when qualities were asked for.
    quality: Option<f32>,
}

/// The `--embeddings-cache` file: templates by image path, valid for one model and face choice.
#[derive(Default, Serialize, Deserialize)]
struct EmbeddingCache {
    model_id: String,
    face: String,
    entries: HashMap<PathBuf, Option<Embedded>>,
}

/// Embeds the chosen face of each image on all cores, with a progress bar; `None` where no
/// face was found. With `qualities`, also runs the landmark model for the face quality.
fn embed_all(
    engine: &dyn Engine,
    paths: &[PathBuf],
    workers: usize,
    args: &EmbedArgs,
    qualities: bool,
) -> anyhow::Result<HashMap<PathBuf, Option<Embedded>>> {
    let model_id = engine.model_info().model_id.clone();
    let face = format!("{:?}", args.face).to_lowercase();
    let mut cache = match &args.embeddings_cache {
        Some(file) if file.exists() => {
            let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let cache: EmbeddingCache = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not an embeddings cache", file.display()))?;
            if cache.model_id == model_id && cache.face == face {
                let entries =
                    cache.entries.into_iter().map(|(k, v)| (std::fs::canonicalize(&k).unwrap_or(k), v)).collect();
                EmbeddingCache { entries, ..cache }
            } else {
                eprintln!("{}: made with another model or face choice; starting afresh", file.display());
                EmbeddingCache { model_id, face, ..EmbeddingCache::default() }
            }
        }
        _ => EmbeddingCache { model_id, face, ..EmbeddingCache::default() },
    };
    // Keyed by the real path, so that a tree of links to the same photos hits the cache.
    let keys: Vec<PathBuf> = paths.iter().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect();
    let cached = |key: &PathBuf| {
        cache.entries.get(key).is_some_and(|e| !qualities || e.as_ref().is_none_or(|e| e.quality.is_some()))
    };
    let todo: Vec<&PathBuf> = keys.iter().filter(|k| !cached(k)).collect();
    if !todo.is_empty() {
        let fresh = embed_paths(engine, &todo, workers, args.face, qualities);
        cache.entries.extend(fresh);
        if let Some(file) = &args.embeddings_cache {
            std::fs::write(file, serde_json::to_vec(&cache)?).with_context(|| format!("writing {}", file.display()))?;
        }
    }
    let precision = args.template_precision;
    Ok(paths
        .iter()
        .zip(&keys)
        .map(|(p, key)| {
            let mut embedded = cache.entries.get(key).cloned().flatten();
            if let Some(e) = &mut embedded {
                precision.apply(&mut e.embedding);
            }
            (p.clone(), embedded)
        })
        .collect())
}

fn embed_paths(
    engine: &dyn Engine,
    paths: &[&PathBuf],
    workers: usize,
    choice: FaceChoice,
    qualities: bool,
) -> HashMap<PathBuf, Option<Embedded>> {
    let next = AtomicUsize::new(0);
    let progress = ProgressBar::new(paths.len() as u64).with_style(
        ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} images, {per_sec}, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message("embedding");
    let results = std::sync::Mutex::new(HashMap::with_capacity(paths.len()));
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&path) = paths.get(i) else { break };
                let embedded =
                    std::fs::read(path).ok().and_then(|bytes| chosen_face(engine, &bytes, choice, qualities));
                if embedded.is_none() {
                    progress.suspend(|| tracing::warn!(path = %path.display(), "no face"));
                }
                results.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone(), embedded);
                progress.inc(1);
            });
        }
    });
    progress.finish_and_clear();
    let elapsed = progress.elapsed().as_secs_f64();
    eprintln!("embedded {} images in {elapsed:.1} s ({:.1} images/s)", paths.len(), paths.len() as f64 / elapsed);
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn chosen_face(engine: &dyn Engine, bytes: &[u8], choice: FaceChoice, quality: bool) -> Option<Embedded> {
    let options = if quality {
        // Attributes cost a landmark run per face: the largest face needs only its own.
        AnalyzeOptions::with_attributes(if choice == FaceChoice::Largest { 1 } else { usize::MAX })
    } else {
        AnalyzeOptions::default()
    };
    let analysis = engine.analyze(bytes, options).ok()?;
    let i = pick(analysis.faces.iter().map(|f| &f.face), analysis.width, analysis.height, choice)?;
    let face = analysis.faces.into_iter().nth(i)?;
    Some(Embedded { embedding: face.face.embedding, quality: face.attributes.map(|a| a.quality) })
}

/// Index of the chosen face among `faces` (largest first, as the engine returns them).
fn pick<'a>(
    mut faces: impl Iterator<Item = &'a DetectedFace>,
    width: u32,
    height: u32,
    choice: FaceChoice,
) -> Option<usize> {
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let offset = |f: &DetectedFace| {
        let b = &f.bbox;
        ((b.left + b.right) / 2.0 - cx).powi(2) + ((b.top + b.bottom) / 2.0 - cy).powi(2)
    };
    match choice {
        FaceChoice::Largest => faces.next().map(|_| 0),
        FaceChoice::Center => faces.enumerate().min_by(|a, b| offset(a.1).total_cmp(&offset(b.1))).map(|(i, _)| i),
    }
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

fn pairs(args: PairsArgs, file: &FileConfig) -> anyhow::Result<()> {
    let (config, engine) = engine(&args.embed.engine, file)?;
    let list = read_pairs(&args.pairs, &args.images)?;
    let mut unique: Vec<PathBuf> = list.pairs.iter().flat_map(|(a, b, _)| [a.clone(), b.clone()]).collect();
    unique.sort();
    unique.dedup();
    let embeddings = embed_all(&engine, &unique, config.engine.inference_workers, &args.embed, false)?;
    let no_face = embeddings.values().filter(|e| e.is_none()).count();
    let items: Vec<(f32, bool)> = list
        .pairs
        .iter()
        .map(|(a, b, same)| {
            let sim = match (embeddings.get(a).and_then(Option::as_ref), embeddings.get(b).and_then(Option::as_ref)) {
                (Some(x), Some(y)) => dot(&x.embedding, &y.embedding),
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
        "face": format!("{:?}", args.embed.face).to_lowercase(),
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

fn calibrate(args: CalibrateArgs, file: &FileConfig) -> anyhow::Result<()> {
    let (config, engine) = engine(&args.embed.engine, file)?;
    let people = read_people(&args.images, args.exclude_people.as_deref())?;
    let all: Vec<PathBuf> = people.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
    let embeddings = embed_all(&engine, &all, config.engine.inference_workers, &args.embed, false)?;
    let mut owners: Vec<usize> = Vec::new();
    let mut vectors: Vec<&[f32]> = Vec::new();
    for (person, (_, photos)) in people.iter().enumerate() {
        for p in photos {
            if let Some(Some(e)) = embeddings.get(p) {
                owners.push(person);
                vectors.push(&e.embedding);
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
    // The same table under the pack's shipped calibration: on photos it was not fitted on, this
    // is the held-out check of what its scores mean.
    let shipped = &engine.model_info().calibration;
    let mut shipped_table = Vec::new();
    for score in [4000u32, 5000, 6000, 7000, 8000] {
        let t = lowest_similarity_with_score(shipped, score);
        let target = 10f64.powf(-(f64::from(score) - 3000.0) / 1000.0);
        let fmr = fmr_of(t);
        shipped_table.push(json!({"score": score, "similarity": t, "target_fmr": target, "fmr": fmr,
            "fmr_over_target": fmr / target, "fnmr": fnmr_of(t)}));
    }
    let report = json!({
        "people": people.len(),
        "images": all.len(),
        "embedded": vectors.len(),
        "impostor_pairs": impostors.len(),
        "genuine_pairs": genuine.len(),
        "target_fmrs": FIT_FMRS.iter().map(|&f| json!({"fmr": f, "score": score_for_fmr(f).round()})).collect::<Vec<_>>(),
        "knots": calibration.knots,
        "face": format!("{:?}", args.embed.face).to_lowercase(),
        "model_id": engine.model_info().model_id,
        "table": table,
        "shipped_calibration_table": shipped_table,
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
        println!("\nwith the pack's shipped calibration ({}):", engine.model_info().model_id);
        println!("score  similarity  target FMR  FMR        FMR/target  FNMR");
        for row in &shipped_table {
            let f = |k: &str| row[k].as_f64().unwrap_or(0.0);
            println!(
                "{:<6} {:<11.4} {:<11.0e} {:<10.2e} {:<11.2} {:.4}",
                row["score"],
                f("similarity"),
                f("target_fmr"),
                f("fmr"),
                f("fmr_over_target"),
                f("fnmr")
            );
        }
    }
    Ok(())
}

/// Image files a person folder may hold.
const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

/// People (sub-folder name) and their photos, both sorted so that runs are repeatable.
fn read_people(images: &Path, exclude: Option<&Path>) -> anyhow::Result<Vec<(String, Vec<PathBuf>)>> {
    let excluded: Vec<String> = match exclude {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))?
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        None => Vec::new(),
    };
    let mut people = Vec::new();
    for dir in std::fs::read_dir(images).with_context(|| format!("reading {}", images.display()))? {
        let dir = dir?.path();
        if !dir.is_dir() {
            continue;
        }
        let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| IMAGE_EXTENSIONS.iter().any(|e| x.eq_ignore_ascii_case(e))))
            .collect();
        photos.sort();
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !excluded.contains(&name) {
            people.push((name, photos));
        }
    }
    people.sort();
    anyhow::ensure!(!people.is_empty(), "{} holds no person folders", images.display());
    Ok(people)
}

/// One mated search: where the probe's own subject landed, and the best other subject.
struct MatedSearch {
    /// Index into the probe list.
    probe: usize,
    mate: f32,
    best_non_mate: f32,
    /// The person the best non-mated score belongs to.
    non_mate: usize,
}

impl MatedSearch {
    /// Found at rank 1 with a score at or over `t` (NIST's FNIR at rank 1 counts the rest).
    fn hit(&self, t: f32) -> bool {
        self.mate >= t && self.mate > self.best_non_mate
    }
}

fn identify(args: IdentifyArgs, file: &FileConfig) -> anyhow::Result<()> {
    anyhow::ensure!(args.enroll >= 1, "--enroll must be at least 1");
    let (config, engine) = engine(&args.embed.engine, file)?;
    let people = read_people(&args.images, args.exclude_people.as_deref())?;
    let all: Vec<PathBuf> = people.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
    let gate = args.min_quality > 0.0;
    let embeddings = embed_all(&engine, &all, config.engine.inference_workers, &args.embed, gate)?;

    // Gallery: up to `enroll` photos per person that have a face and pass the quality gate, in
    // file order. Probes: every other photo with a face of a person who has a gallery entry.
    let mut gallery: Vec<(usize, &[f32])> = Vec::new();
    let mut probes: Vec<(usize, &[f32], &Path)> = Vec::new();
    let mut gated_out_people = 0usize;
    let mut gallery_people = 0usize;
    for (person, (_, photos)) in people.iter().enumerate() {
        let faces: Vec<(&Embedded, &Path)> = photos
            .iter()
            .filter_map(|p| embeddings.get(p).and_then(Option::as_ref).map(|e| (e, p.as_path())))
            .collect();
        let passes = |e: &Embedded| e.quality.is_none_or(|q| q >= args.min_quality);
        let enrolled: Vec<usize> = (0..faces.len()).filter(|&i| passes(faces[i].0)).take(args.enroll).collect();
        if enrolled.is_empty() {
            if !faces.is_empty() {
                gated_out_people += 1;
            }
            continue;
        }
        gallery_people += 1;
        for (i, &(face, path)) in faces.iter().enumerate() {
            if enrolled.contains(&i) {
                gallery.push((person, &face.embedding));
            } else if faces.len() > args.enroll {
                probes.push((person, &face.embedding, path));
            }
        }
    }
    anyhow::ensure!(!probes.is_empty(), "no person has more than {} photo(s) with a face", args.enroll);

    let searches = search_all(&gallery, &probes, people.len(), args.aggregate);
    let n = searches.len() as f64;
    let rank1 = searches.iter().filter(|s| s.mate > s.best_non_mate).count() as f64 / n;
    let mut non_mates: Vec<f32> = searches.iter().map(|s| s.best_non_mate).collect();
    non_mates.sort_by(|a, b| b.total_cmp(a));
    // The lowest threshold at which at most `fpir` of non-mated searches return a candidate.
    let threshold_at = |fpir: f64| {
        let allowed = (n * fpir).floor() as usize;
        non_mates.get(allowed).map_or(f32::MIN, |s| s.next_up())
    };
    let fnir_at = |t: f32| searches.iter().filter(|s| !s.hit(t)).count() as f64 / n;
    let fpir_at = |t: f32| searches.iter().filter(|s| s.best_non_mate >= t).count() as f64 / n;
    let (t_01, t_003) = (threshold_at(0.01), threshold_at(0.003));
    let calibration = &engine.model_info().calibration;
    let known = lowest_similarity_with_score(calibration, args.known_threshold);

    let report = json!({
        "people": people.len(),
        "images": all.len(),
        "gallery_size": gallery_people,
        "gallery_templates": gallery.len(),
        "mated_searches": searches.len(),
        "people_without_enrollable_photo": gated_out_people,
        "enroll_per_person": args.enroll,
        "aggregate": format!("{:?}", args.aggregate).to_lowercase(),
        "min_quality": args.min_quality,
        "rank1": rank1,
        "fnir_at_fpir_0_01": fnir_at(t_01),
        "threshold_at_fpir_0_01": t_01,
        "fnir_at_fpir_0_003": fnir_at(t_003),
        "threshold_at_fpir_0_003": t_003,
        "default_threshold": args.known_threshold,
        "fnir_at_default_threshold": fnir_at(known),
        "fpir_at_default_threshold": fpir_at(known),
        "face": format!("{:?}", args.embed.face).to_lowercase(),
        "model_id": engine.model_info().model_id,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "gallery {gallery_people} people ({} templates), {} mated searches, {} images",
            gallery.len(),
            searches.len(),
            all.len()
        );
        println!("rank-1 identification    {rank1:.4}");
        println!("FNIR @ FPIR 0.01         {:.4} (similarity {t_01:.3})", fnir_at(t_01));
        println!("FNIR @ FPIR 0.003        {:.4} (similarity {t_003:.3})", fnir_at(t_003));
        println!("at score {}: FNIR {:.4}, FPIR {:.4}", args.known_threshold, fnir_at(known), fpir_at(known));
    }
    if args.show_worst > 0 {
        let mut by_non_mate: Vec<&MatedSearch> = searches.iter().collect();
        by_non_mate.sort_by(|a, b| b.best_non_mate.total_cmp(&a.best_non_mate));
        eprintln!("highest non-mated scores (probe → other person):");
        for s in by_non_mate.iter().take(args.show_worst) {
            let other = people.get(s.non_mate).map_or("?", |p| p.0.as_str());
            eprintln!("  {:.3}  {} → {other}", s.best_non_mate, probes[s.probe].2.display());
        }
        by_non_mate.sort_by(|a, b| a.mate.total_cmp(&b.mate));
        eprintln!("lowest mated scores:");
        for s in by_non_mate.iter().take(args.show_worst) {
            eprintln!("  {:.3}  {}", s.mate, probes[s.probe].2.display());
        }
    }
    Ok(())
}

/// Scores every probe against the whole gallery. The non-mated search of a probe is the same
/// search with its own subject left out, so every probe is also a non-mated search against a
/// gallery one person smaller: the usual way to get FPIR from a closed set.
fn search_all(
    gallery: &[(usize, &[f32])],
    probes: &[(usize, &[f32], &Path)],
    people: usize,
    aggregate: Aggregate,
) -> Vec<MatedSearch> {
    let next = AtomicUsize::new(0);
    let out = std::sync::Mutex::new(Vec::with_capacity(probes.len()));
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut sum = vec![0f32; people];
                let mut count = vec![0u32; people];
                let mut local = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(owner, probe, _)) = probes.get(i) else { break };
                    sum.fill(match aggregate {
                        Aggregate::Max => f32::MIN,
                        Aggregate::Mean => 0.0,
                    });
                    count.fill(0);
                    for &(person, template) in gallery {
                        let s = facegate_index::dot(probe, template);
                        match aggregate {
                            Aggregate::Max => sum[person] = sum[person].max(s),
                            Aggregate::Mean => sum[person] += s,
                        }
                        count[person] += 1;
                    }
                    let score = |p: usize| match aggregate {
                        Aggregate::Max => sum[p],
                        Aggregate::Mean => sum[p] / count[p] as f32,
                    };
                    let (non_mate, best_non_mate) = (0..people)
                        .filter(|&p| p != owner && count[p] > 0)
                        .map(|p| (p, score(p)))
                        .fold((usize::MAX, f32::MIN), |best, x| if x.1 > best.1 { x } else { best });
                    local.push(MatedSearch { probe: i, mate: score(owner), best_non_mate, non_mate });
                }
                out.lock().unwrap_or_else(|e| e.into_inner()).extend(local);
            });
        }
    });
    out.into_inner().unwrap_or_else(|e| e.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;
    use facegate_core::BoundingBox;

    fn face(left: f32, top: f32, side: f32) -> DetectedFace {
        DetectedFace {
            bbox: BoundingBox { left, top, right: left + side, bottom: top + side },
            landmarks: [[0.0; 2]; 5],
            detector_score: 0.9,
            embedding: Vec::new(),
        }
    }

    #[test]
    fn center_choice_takes_the_face_nearest_the_middle_not_the_largest() {
        // Largest first, as the engine orders them: a big face in a corner, a smaller one centred.
        let faces = [face(0.0, 0.0, 120.0), face(80.0, 80.0, 90.0)];
        assert_eq!(pick(faces.iter(), 250, 250, FaceChoice::Largest), Some(0));
        assert_eq!(pick(faces.iter(), 250, 250, FaceChoice::Center), Some(1));
        assert_eq!(pick([].iter(), 250, 250, FaceChoice::Center), None);
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn searches_score_the_mate_and_the_best_other_subject() {
        let a = unit(&[1.0, 0.0, 0.0]);
        let a2 = unit(&[0.9, 0.1, 0.0]);
        let b = unit(&[0.0, 1.0, 0.0]);
        let b_near_a = unit(&[0.8, 0.2, 0.0]);
        let c = unit(&[0.0, 0.0, 1.0]);
        let gallery: Vec<(usize, &[f32])> = vec![(0, &a), (0, &a2), (1, &b), (1, &b_near_a), (2, &c)];
        let probe = unit(&[1.0, 0.05, 0.0]);
        let probes = vec![(0usize, probe.as_slice(), Path::new("p"))];

        let max = search_all(&gallery, &probes, 3, Aggregate::Max);
        let s = &max[0];
        assert!((s.mate - dot(&probe, &a)).abs() < 1e-6);
        assert_eq!(s.non_mate, 1);
        assert!((s.best_non_mate - dot(&probe, &b_near_a)).abs() < 1e-6);
        assert!(s.hit(0.5) && !s.hit(0.9999));

        let mean = search_all(&gallery, &probes, 3, Aggregate::Mean);
        let expected = (dot(&probe, &b) + dot(&probe, &b_near_a)) / 2.0;
        assert!((mean[0].best_non_mate - expected).abs() < 1e-6);
    }

    #[test]
    fn a_mate_outscored_by_another_subject_is_a_miss_at_any_threshold() {
        let s = MatedSearch { probe: 0, mate: 0.6, best_non_mate: 0.7, non_mate: 1 };
        assert!(!s.hit(0.0) && !s.hit(0.65));
    }

    #[test]
    fn pairs_files_are_read_fold_by_fold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pairs.txt");
        std::fs::write(&file, "1\t1\nAl\t1\t2\nAl\t1\tBo\t3\n").expect("write");
        let list = read_pairs(&file, Path::new("/img")).expect("parse");
        assert_eq!((list.folds, list.per_fold), (1, 2));
        assert_eq!(list.pairs[0], (PathBuf::from("/img/Al/Al_0001.jpg"), PathBuf::from("/img/Al/Al_0002.jpg"), true));
        assert_eq!(list.pairs[1].1, PathBuf::from("/img/Bo/Bo_0003.jpg"));
        std::fs::write(&file, "2\t1\nAl\t1\t2\n").expect("write");
        assert!(read_pairs(&file, Path::new("/img")).is_err(), "a short file is refused");
    }
}
