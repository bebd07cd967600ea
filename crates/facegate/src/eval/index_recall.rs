//! `facegate eval index-recall`: the index's recall against the exact scan on real face
//! embeddings, where `bench search` has only its synthetic population.
//!
//! # The gallery
//! A labelled folder (one sub-folder per person, such as LFW) holds far fewer photos than a
//! gallery worth partitioning, so each gallery photo is enrolled as [`VARIANTS`]: the photo,
//! its mirror image, crops that move the face off the frame's centre, and a downscale, each of
//! the plain and the mirrored photo. Every variant goes through the engine (detection included)
//! as an upload would, and is its own row of its person's subject: the best sample ranks the
//! subject, as in the product.
//!
//! # The probes ([`split`])
//! - mated: the first photo of every person with two photos or more. None of that photo's
//!   variants is enrolled, so its mates are the person's other photos, as for a new photo of
//!   someone enrolled;
//! - non-mated: every `--non-mated-every`-th person with a single photo, left out of the
//!   gallery entirely;
//! - every other photo is enrolled, with all its variants.
//!
//! Probes are the photos as they are (no variant). With LFW's 6,922 photos of 3,554 people,
//! that is 826 mated and 682 non-mated probes and 5,414 gallery photos: 108,280 rows.
//!
//! # The comparison
//! The gallery is indexed twice: exactly (the flat scan scoring every row) and as configured
//! (`--index`, inverted lists by default), inserted in one shuffled order and loaded as a
//! node's start-up loads a gallery ([`Index::loading`]: one training on every row, so that runs
//! repeat), or with `--grow` as a gallery grows, retrained in the background as it does. Recall is the agreement of the configured index with the exact
//! one on the top subject and the overlap of their top ten subjects (`crate::bench::recall`),
//! beside the rank-1 identification rate of each on the mated probes.

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use facegate_core::{AnalyzeOptions, Engine, Index, SubjectHit, Template};
use facegate_engine::OrtEngine;
use facegate_index::{FlatIndex, IndexConfig, IndexKind, SearchTuning};
use image::imageops::FilterType;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;

use super::{pick, read_people, EmbedArgs, FaceChoice};
use crate::bench::recall::{recall, Compared};
use crate::bench::{quantile, sorted, IvfArgs};
use crate::config::{Config, FileConfig, Flags};
use crate::runtime::load_engine;

#[derive(Args, Debug)]
pub struct IndexRecallArgs {
    /// Folder with one sub-folder per person.
    #[arg(long)]
    images: PathBuf,
    /// Only the first N people, in name order (a quick run); 0 for all.
    #[arg(long, default_value_t = 0)]
    people: usize,
    /// Variants enrolled per gallery photo: the first N of the fixed list (1 to 20).
    #[arg(long, default_value_t = VARIANTS.len())]
    variants: usize,
    /// Every N-th person with a single photo is a non-mated probe, left out of the gallery; 0
    /// for none.
    #[arg(long, default_value_t = 4)]
    non_mated_every: usize,
    /// Subjects per search.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Vector search compared with the exact scan: auto (flat below --partition-rows), flat or
    /// ivf.
    #[arg(long, default_value = "ivf")]
    index: IndexKind,
    #[command(flatten)]
    lists: IvfArgs,
    /// Insert as a gallery grows, lists learnt in the background as it does (their count then
    /// depends on how far the inserts got while each training ran), instead of as a node's
    /// start-up loads one: every row first, then one training on all of them.
    #[arg(long)]
    grow: bool,
    /// Also list the probes whose top subject differs between the index and the exact scan.
    #[arg(long)]
    show_misses: bool,
    // `--embeddings-cache` is a binary file here (JSON would be 600 MB at 512 values), written as
    // the templates are made, so that an interrupted run resumes.
    #[command(flatten)]
    embed: EmbedArgs,
}

/// Ways a gallery photo is enrolled, before detection; see [`Variant::apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// The photo, or its mirror image, as it is.
    Plain { mirror: bool },
    /// A crop that leaves the face `dx` pixels right of and `dy` below the frame's centre: the
    /// frame loses `2·|dx|` columns and `2·|dy|` rows on the side the face moves to.
    Shift { mirror: bool, dx: i32, dy: i32 },
    /// Resized to this percentage of each side (Catmull-Rom).
    Scale { mirror: bool, percent: u32 },
}

/// The variants of a gallery photo, in the order `--variants` takes them: 20, so that the 5,414
/// gallery photos of LFW make over 100,000 rows.
const VARIANTS: [Variant; 20] = {
    const fn shift(mirror: bool, dx: i32, dy: i32) -> Variant {
        Variant::Shift { mirror, dx, dy }
    }
    [
        Variant::Plain { mirror: false },
        Variant::Plain { mirror: true },
        shift(false, 10, 0),
        shift(true, -10, 0),
        shift(false, 0, 10),
        shift(true, 0, -10),
        shift(false, -10, 0),
        shift(true, 10, 0),
        shift(false, 0, -10),
        shift(true, 0, 10),
        shift(false, 8, 8),
        shift(true, -8, -8),
        shift(false, -8, 8),
        shift(true, 8, -8),
        shift(false, 8, -8),
        shift(true, -8, 8),
        shift(false, -8, -8),
        shift(true, 8, 8),
        Variant::Scale { mirror: false, percent: 80 },
        Variant::Scale { mirror: true, percent: 80 },
    ]
};

impl Variant {
    /// A stable name: the key of the variant's template in the cache.
    fn name(self) -> String {
        let m = |mirror: bool| if mirror { "mirror-" } else { "" };
        match self {
            Self::Plain { mirror: false } => "plain".to_owned(),
            Self::Plain { mirror: true } => "mirror".to_owned(),
            Self::Shift { mirror, dx, dy } => format!("{}shift{dx:+}{dy:+}", m(mirror)),
            Self::Scale { mirror, percent } => format!("{}scale{percent}", m(mirror)),
        }
    }

    fn apply(self, img: &RgbImage) -> RgbImage {
        let mirror = match self {
            Self::Plain { mirror } | Self::Shift { mirror, .. } | Self::Scale { mirror, .. } => mirror,
        };
        let img = if mirror { image::imageops::flip_horizontal(img) } else { img.clone() };
        match self {
            Self::Plain { .. } => img,
            Self::Shift { dx, dy, .. } => {
                let (w, h) = img.dimensions();
                let (cut_x, cut_y) = ((2 * dx.unsigned_abs()).min(w - 1), (2 * dy.unsigned_abs()).min(h - 1));
                // The face moves right when the frame loses columns on the right.
                let x = if dx < 0 { cut_x } else { 0 };
                let y = if dy < 0 { cut_y } else { 0 };
                image::imageops::crop_imm(&img, x, y, w - cut_x, h - cut_y).to_image()
            }
            Self::Scale { percent, .. } => {
                let side = |s: u32| (s * percent / 100).max(1);
                image::imageops::resize(&img, side(img.width()), side(img.height()), FilterType::CatmullRom)
            }
        }
    }
}

/// Which photos are probes and which are enrolled; each a (person, photo) pair of indices.
#[derive(Debug, Default, PartialEq, Eq)]
struct Split {
    gallery: Vec<(usize, usize)>,
    mated: Vec<(usize, usize)>,
    non_mated: Vec<(usize, usize)>,
}

/// See the module documentation; `photos[p]` is how many photos person `p` has.
fn split(photos: &[usize], non_mated_every: usize) -> Split {
    let mut out = Split::default();
    let mut singles = 0usize;
    for (person, &n) in photos.iter().enumerate() {
        match n {
            0 => {}
            1 => {
                let probe = non_mated_every > 0 && singles.is_multiple_of(non_mated_every);
                singles += 1;
                if probe { &mut out.non_mated } else { &mut out.gallery }.push((person, 0));
            }
            _ => {
                out.mated.push((person, 0));
                out.gallery.extend((1..n).map(|photo| (person, photo)));
            }
        }
    }
    out
}

const TENANT: &str = "lfw";

pub fn run(args: IndexRecallArgs, file: &FileConfig) -> anyhow::Result<()> {
    anyhow::ensure!((1..=VARIANTS.len()).contains(&args.variants), "--variants must be 1 to {}", VARIANTS.len());
    let config = Config::resolve(file, Flags { engine: Some(&args.embed.engine), ..Flags::default() })?;
    // Throughput: one ONNX Runtime thread per worker unless --intra-op-threads says otherwise.
    let engine = load_engine(&config, 1)?;
    let mut people = read_people(&args.images, None)?;
    if args.people > 0 {
        people.truncate(args.people);
    }
    let counts: Vec<usize> = people.iter().map(|(_, p)| p.len()).collect();
    let split = split(&counts, args.non_mated_every);
    let variants = &VARIANTS[..args.variants];

    // What to embed: every variant of a gallery photo, the probes as they are.
    let path = |&(person, photo): &(usize, usize)| people[person].1[photo].clone();
    let mut work: Vec<(PathBuf, Vec<Variant>)> = split.gallery.iter().map(|p| (path(p), variants.to_vec())).collect();
    work.extend(split.mated.iter().chain(&split.non_mated).map(|p| (path(p), vec![VARIANTS[0]])));
    let embeddings = embed_variants(&engine, &work, config.engine.inference_workers, &args.embed)?;
    let embedding = |photo: &Path, variant: Variant| -> Option<Vec<f32>> {
        let mut e = embeddings.get(&(canonical(photo), variant.name())).cloned().flatten()?;
        args.embed.template_precision.apply(&mut e);
        Some(e)
    };

    // The gallery, inserted in one shuffled order into both indexes.
    let mut rows: Vec<Template> = Vec::new();
    let mut variants_without_face = 0usize;
    for p @ &(person, photo) in &split.gallery {
        let file = path(p);
        for &variant in variants {
            let Some(e) = embedding(&file, variant) else {
                variants_without_face += 1;
                continue;
            };
            rows.push(Template {
                tenant_id: TENANT.to_owned(),
                subject_id: people[person].0.clone(),
                sample_id: format!("{}#{}", people[person].1[photo].display(), variant.name()),
                embedding: e,
            });
        }
    }
    anyhow::ensure!(!rows.is_empty(), "no gallery photo has a face");
    let dim = rows[0].embedding.len();
    rows.shuffle(&mut SmallRng::seed_from_u64(27));
    let gallery_subjects: std::collections::HashSet<String> = rows.iter().map(|t| t.subject_id.clone()).collect();
    let exact_config = IndexConfig {
        kind: IndexKind::Flat,
        flat: SearchTuning { exact_rows: usize::MAX, ..SearchTuning::default() },
        ..IndexConfig::default()
    };
    let ivf = args.lists.tuning();
    let tested_config =
        IndexConfig { kind: args.index, partition_rows: args.lists.partition_rows, flat: SearchTuning::default(), ivf };
    let (exact, tested) = (FlatIndex::with_config(exact_config), FlatIndex::with_config(tested_config));
    let started = Instant::now();
    let loading = !args.grow;
    for index in [&exact, &tested] {
        index.loading(loading);
    }
    for t in &rows {
        exact.insert(t.clone());
    }
    let gallery_templates = rows.len();
    for t in rows {
        tested.insert(t);
    }
    for index in [&exact, &tested] {
        index.loading(false);
    }
    tested.wait_for_rebuilds();
    let build_s = started.elapsed().as_secs_f64();
    let partition = tested.partition(TENANT).filter(|p| p.trained_rows > 0);
    eprintln!("indexed {gallery_templates} rows twice in {build_s:.1} s");

    // The probes: (person, photo path, embedding, mated).
    let mut probes: Vec<(usize, PathBuf, Vec<f32>, bool)> = Vec::new();
    let mut probes_without_face = 0usize;
    for (list, listed_as_mated) in [(&split.mated, true), (&split.non_mated, false)] {
        for p in list {
            let file = path(p);
            match embedding(&file, VARIANTS[0]) {
                // A person whose other photos have no face has no mate in the gallery.
                Some(e) => probes.push((p.0, file, e, listed_as_mated && gallery_subjects.contains(&people[p.0].0))),
                None => probes_without_face += 1,
            }
        }
    }
    let limit = args.limit.max(1);
    let mut latencies_ms = Vec::with_capacity(probes.len());
    let got: Vec<Vec<SubjectHit>> = probes
        .iter()
        .map(|(_, _, q, _)| {
            let started = Instant::now();
            let hits = tested.search(TENANT, q, limit);
            latencies_ms.push(started.elapsed().as_secs_f64() * 1e3);
            hits
        })
        .collect();
    let want = in_parallel(&probes, |(_, _, q, _)| exact.search(TENANT, q, limit));
    let own_exact = in_parallel(&probes, |(_, _, q, _)| tested.search_exact(TENANT, q, limit, &[]));
    let compared = |exact: &[Vec<SubjectHit>]| {
        recall(probes.iter().zip(&got).zip(exact).map(|((probe, got), exact)| Compared {
            exact,
            got,
            mated: probe.3,
            filtered: false,
        }))
    };
    let (r, own) = (compared(&want), compared(&own_exact));
    let mated = probes.iter().filter(|p| p.3).count();
    let rank1 = |results: &[Vec<SubjectHit>]| {
        let hits = probes
            .iter()
            .zip(results)
            .filter(|(p, hits)| p.3 && hits.first().is_some_and(|h| h.subject_id == people[p.0].0))
            .count();
        hits as f64 / mated.max(1) as f64
    };
    let latencies = sorted(&latencies_ms);

    let report = json!({
        "model_id": engine.model_info().model_id,
        "dim": dim,
        "face": format!("{:?}", args.embed.face).to_lowercase(),
        "people": people.len(),
        "photos": counts.iter().sum::<usize>(),
        "variants": variants.iter().map(|v| v.name()).collect::<Vec<_>>(),
        "gallery_photos": split.gallery.len(),
        "gallery_subjects": gallery_subjects.len(),
        "gallery_templates": gallery_templates,
        "variants_without_face": variants_without_face,
        "queries": probes.len(),
        "mated_queries": mated,
        "non_mated_queries": probes.len() - mated,
        "probes_without_face": probes_without_face,
        "limit": limit,
        "index": args.index.name(),
        "lists": partition.map(|p| p.lists),
        "probes": partition.map(|_| ivf.probes),
        "rows_per_list": partition.map(|_| ivf.rows_per_list),
        "rerank": partition.map(|_| ivf.min_rerank),
        "build_s": build_s,
        "grow": args.grow,
        "p50_ms": quantile(&latencies, 0.5),
        "p99_ms": quantile(&latencies, 0.99),
        "recall_at_1": r.at_1,
        "recall_at_1_mated": r.at_1_mated,
        "recall_at_1_non_mated": r.at_1_non_mated,
        "recall_at_10": r.at_10,
        "own_exact_scan_recall_at_1": own.at_1,
        "own_exact_scan_recall_at_10": own.at_10,
        "rank1_exact": rank1(&want),
        "rank1_index": rank1(&got),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if args.show_misses {
        eprintln!("probes whose top subject differs (probe: exact → index):");
        for ((probe, exact), got) in probes.iter().zip(&want).zip(&got) {
            let (e, g) = (exact.first(), got.first());
            if e.map(|h| &h.subject_id) != g.map(|h| &h.subject_id) {
                let show = |h: Option<&SubjectHit>| {
                    h.map_or("-".to_owned(), |h| format!("{} {:.3}", h.subject_id, h.similarity))
                };
                let kind = if probe.3 { "mated" } else { "non-mated" };
                eprintln!("  {} ({kind}): {} → {}", probe.1.display(), show(e), show(g));
            }
        }
    }
    Ok(())
}

/// `f` of every item, on every core, in order.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            items.chunks(chunk).map(|c| scope.spawn(|| c.iter().map(&f).collect::<Vec<R>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// Templates by (canonical photo path, variant name); `None` where no face was found.
type Embeddings = HashMap<(PathBuf, String), Option<Vec<f32>>>;

/// The cache file's first line; the second is a JSON object naming the model and face choice.
const CACHE_MAGIC: &str = "facegate variant embeddings 1";

/// Embeds each photo's variants on all cores, reusing and extending `--embeddings-cache`.
fn embed_variants(
    engine: &OrtEngine,
    work: &[(PathBuf, Vec<Variant>)],
    workers: usize,
    args: &EmbedArgs,
) -> anyhow::Result<Embeddings> {
    let header = json!({"model_id": engine.model_info().model_id, "face": format!("{:?}", args.face).to_lowercase()});
    let mut done = match &args.embeddings_cache {
        Some(file) if file.exists() => read_cache(file, &header)?,
        _ => Embeddings::new(),
    };
    let mut cache = match &args.embeddings_cache {
        Some(file) => {
            let fresh = done.is_empty();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(!fresh)
                .write(true)
                .truncate(fresh)
                .open(file)
                .with_context(|| format!("opening {}", file.display()))?;
            if fresh {
                writeln!(f, "{CACHE_MAGIC}\n{header}")?;
            }
            Some(BufWriter::new(f))
        }
        None => None,
    };
    let todo: Vec<(PathBuf, PathBuf, Vec<Variant>)> = work
        .iter()
        .filter_map(|(path, variants)| {
            let key = canonical(path);
            let missing: Vec<Variant> =
                variants.iter().copied().filter(|v| !done.contains_key(&(key.clone(), v.name()))).collect();
            (!missing.is_empty()).then(|| (path.clone(), key, missing))
        })
        .collect();
    let total: usize = todo.iter().map(|t| t.2.len()).sum();
    if total == 0 {
        return Ok(done);
    }
    eprintln!("embedding {total} variants of {} photos ({} templates cached)", todo.len(), done.len());
    let progress = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} templates, {per_sec}, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message("embedding");
    let next = AtomicUsize::new(0);
    let (send, receive) = std::sync::mpsc::channel::<(PathBuf, String, Option<Vec<f32>>)>();
    let choice = args.face;
    let written: anyhow::Result<()> = std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            let send = send.clone();
            let (next, todo) = (&next, &todo);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((path, key, variants)) = todo.get(i) else { break };
                let img = std::fs::read(path)
                    .ok()
                    .and_then(|b| facegate_engine::decode_image(&b, engine.decode_limits()).ok());
                for &variant in variants {
                    let embedding = img.as_ref().and_then(|img| embed_one(engine, &variant.apply(img), choice));
                    if send.send((key.clone(), variant.name(), embedding)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(send);
        for (key, variant, embedding) in receive {
            if let Some(out) = &mut cache {
                write_record(out, &key, &variant, embedding.as_deref())?;
            }
            done.insert((key, variant), embedding);
            progress.inc(1);
            // Without a terminal the bar is hidden: a line every 5,000 templates instead.
            let n = progress.position();
            if progress.is_hidden() && n.is_multiple_of(5_000) {
                let rate = n as f64 / progress.elapsed().as_secs_f64().max(1e-9);
                let left = (total as u64 - n) as f64 / rate.max(1e-9) / 60.0;
                eprintln!("embedded {n}/{total} templates, {rate:.1}/s, {left:.0} min left");
            }
        }
        Ok(())
    });
    written?;
    if let Some(mut out) = cache {
        out.flush()?;
    }
    progress.finish_and_clear();
    let elapsed = progress.elapsed().as_secs_f64();
    eprintln!("embedded {total} templates in {elapsed:.1} s ({:.1} templates/s)", total as f64 / elapsed);
    Ok(done)
}

/// The chosen face's template of a decoded image, if it has a face.
fn embed_one(engine: &OrtEngine, img: &RgbImage, choice: FaceChoice) -> Option<Vec<f32>> {
    let analysis = engine.analyze_image(img, AnalyzeOptions::default()).ok()?.analysis;
    let i = pick(analysis.faces.iter().map(|f| &f.face), analysis.width, analysis.height, choice)?;
    analysis.faces.into_iter().nth(i).map(|f| f.face.embedding)
}

/// A record: key length (u32 LE), key (`path\tvariant`, UTF-8), dim (u32 LE, 0 for no face),
/// the template (f32 LE).
fn write_record(out: &mut impl Write, path: &Path, variant: &str, embedding: Option<&[f32]>) -> std::io::Result<()> {
    let key = format!("{}\t{variant}", path.display());
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key.as_bytes())?;
    let embedding = embedding.unwrap_or_default();
    out.write_all(&(embedding.len() as u32).to_le_bytes())?;
    embedding.iter().try_for_each(|x| out.write_all(&x.to_le_bytes()))
}

/// The cache's records when its header is `header`; none (it is started afresh) when not. A
/// record cut short by an interrupted run is dropped.
fn read_cache(file: &Path, header: &serde_json::Value) -> anyhow::Result<Embeddings> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut lines = bytes.splitn(3, |&b| b == b'\n');
    let (magic, head, mut rest) = (lines.next(), lines.next(), lines.next().unwrap_or_default());
    let head: Option<serde_json::Value> = head.and_then(|h| serde_json::from_slice(h).ok());
    if magic != Some(CACHE_MAGIC.as_bytes()) || head.as_ref() != Some(header) {
        eprintln!("{}: made with another model or face choice, or not a cache; starting afresh", file.display());
        return Ok(Embeddings::new());
    }
    let mut out = Embeddings::new();
    let u32_of = |r: &mut &[u8]| -> Option<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).ok()?;
        Some(u32::from_le_bytes(b))
    };
    while let Some(len) = u32_of(&mut rest) {
        let Some((key, tail)) = rest.split_at_checked(len as usize) else { break };
        rest = tail;
        let Some(dim) = u32_of(&mut rest) else { break };
        let Some((values, tail)) = rest.split_at_checked(dim as usize * 4) else { break };
        rest = tail;
        let key = String::from_utf8_lossy(key);
        let Some((path, variant)) = key.rsplit_once('\t') else { break };
        let embedding = values.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        out.insert((PathBuf::from(path), variant.to_owned()), (dim > 0).then_some(embedding));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 40×30 image whose pixel (x, y) is (x, y, 0).
    fn gradient() -> RgbImage {
        RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, 0]))
    }

    #[test]
    fn variants_mirror_shift_and_scale_as_named() {
        let img = gradient();
        let names: std::collections::HashSet<String> = VARIANTS.iter().map(|v| v.name()).collect();
        assert_eq!(names.len(), VARIANTS.len(), "every variant has its own cache key");
        assert_eq!(Variant::Plain { mirror: false }.apply(&img), img);
        let mirror = Variant::Plain { mirror: true }.apply(&img);
        assert_eq!(mirror.get_pixel(0, 5).0, [39, 5, 0]);

        // The face (at the old centre, x 20) ends 4 px right of the new centre: columns go on
        // the right.
        let right = Variant::Shift { mirror: false, dx: 4, dy: 0 }.apply(&img);
        assert_eq!(right.dimensions(), (32, 30));
        assert_eq!(right.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(20 - right.width() / 2, 4);
        // Up and left: rows and columns go on the top and left.
        let up_left = Variant::Shift { mirror: false, dx: -3, dy: -2 }.apply(&img);
        assert_eq!(up_left.dimensions(), (34, 26));
        assert_eq!(up_left.get_pixel(0, 0).0, [6, 4, 0]);
        // Mirrored first, then shifted.
        let mirrored_shift = Variant::Shift { mirror: true, dx: -3, dy: 0 }.apply(&img);
        assert_eq!(mirrored_shift.get_pixel(0, 0).0, [39 - 6, 0, 0]);

        let scaled = Variant::Scale { mirror: false, percent: 80 }.apply(&img);
        assert_eq!(scaled.dimensions(), (32, 24));
    }

    #[test]
    fn split_holds_each_probe_photo_and_each_non_mated_person_out_of_the_gallery() {
        // Persons: 3 photos, 1, 2, 1, 1, 0, 1.
        let s = split(&[3, 1, 2, 1, 1, 0, 1], 2);
        assert_eq!(s.mated, [(0, 0), (2, 0)]);
        assert_eq!(s.non_mated, [(1, 0), (4, 0)], "every second single-photo person");
        assert_eq!(s.gallery, [(0, 1), (0, 2), (2, 1), (3, 0), (6, 0)]);
        for probe in s.mated.iter().chain(&s.non_mated) {
            assert!(!s.gallery.contains(probe), "{probe:?} is a probe and enrolled");
        }
        for &(person, _) in &s.mated {
            assert!(s.gallery.iter().any(|g| g.0 == person), "mated probe {person} has a mate");
        }
        for &(person, _) in &s.non_mated {
            assert!(s.gallery.iter().all(|g| g.0 != person), "non-mated person {person} is enrolled");
        }
        assert!(split(&[1, 1], 0).non_mated.is_empty(), "0: no non-mated probes");
    }

    #[test]
    fn the_cache_reads_back_what_it_wrote_and_drops_a_cut_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cache.bin");
        let header = json!({"model_id": "m", "face": "center"});
        let mut bytes = format!("{CACHE_MAGIC}\n{header}\n").into_bytes();
        write_record(&mut bytes, Path::new("/a/b.jpg"), "plain", Some(&[0.5, -1.0])).expect("write");
        write_record(&mut bytes, Path::new("/a/c.jpg"), "mirror", None).expect("write");
        let whole = bytes.len();
        write_record(&mut bytes, Path::new("/a/d.jpg"), "plain", Some(&[1.0; 4])).expect("write");
        bytes.truncate(whole + 10);
        std::fs::write(&file, &bytes).expect("write");
        let read = read_cache(&file, &header).expect("read");
        assert_eq!(read.len(), 2);
        assert_eq!(read[&(PathBuf::from("/a/b.jpg"), "plain".to_owned())], Some(vec![0.5, -1.0]));
        assert_eq!(read[&(PathBuf::from("/a/c.jpg"), "mirror".to_owned())], None);
        assert!(read_cache(&file, &json!({"model_id": "other", "face": "center"})).expect("read").is_empty());
    }

    #[test]
    fn lfw_makes_a_gallery_of_100k_rows() {
        let Some(datasets) = facegate_testkit::shared_datasets() else { return };
        let images = datasets.join("lfw/images");
        if !images.is_dir() {
            facegate_testkit::skip(&format!("{} is absent: the LFW gallery size was not checked", images.display()));
            return;
        }
        let people = read_people(&images, None).expect("people");
        let counts: Vec<usize> = people.iter().map(|(_, p)| p.len()).collect();
        let s = split(&counts, 4);
        assert!(s.gallery.len() * VARIANTS.len() >= 100_000, "{} gallery photos", s.gallery.len());
        assert!(s.mated.len() + s.non_mated.len() >= 1_000, "{} probes", s.mated.len() + s.non_mated.len());
    }
}
