//! `facegate bench search`: the index at gallery sizes no test photo set reaches.
//!
//! # The synthetic gallery
//! Uniform random unit vectors would make search look easier than it is: real face embeddings
//! crowd together by age, sex and ethnicity, and a probe is a new photo of someone enrolled,
//! not a copy of a template. So:
//! - 256 group directions `g`; identity `i` has the centre `normalize(0.5·g + u)`, `u` a random
//!   unit vector, so two identities of one group have a similarity near 0.2 and of different
//!   groups near 0;
//! - a template, and a probe, is `normalize(centre + 0.75·n)`, `n` a random unit vector: mates
//!   score about 0.64, much like ArcFace mates at moderate pose;
//! - every fourth identity has two templates;
//! - each identity holds one of 8 common tags, and one in a thousand also the tag `rare`.
//!
//! Identities are regenerated from their number, so probes need no stored centres.
//! Mated probes come from enrolled identities, non-mated ones from identities never enrolled;
//! a quarter of the probes filter by a common tag and one in twenty by `rare`.

use std::time::Instant;

use clap::Args;
use facegate_core::{Index, SubjectHit, Template};
use facegate_index::{FlatIndex, IndexConfig, IndexKind, SearchTuning};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::export::{ExportedProbe, GalleryExport};
use super::recall::{recall, Compared};
use super::{quantile, resident_bytes, sorted, IvfArgs};

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Templates in the gallery.
    #[arg(long, default_value_t = 100_000)]
    templates: usize,
    /// Embedding length.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Timed searches.
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// Searches also run exactly, for recall (the exact scan is slow at millions).
    #[arg(long, default_value_t = 200)]
    recall_queries: usize,
    /// Results per search.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Tenants up to this many templates are searched exactly.
    #[arg(long, default_value_t = SearchTuning::default().exact_rows)]
    exact_rows: usize,
    /// Candidates the sketch stage keeps, at least.
    #[arg(long, default_value_t = SearchTuning::default().min_candidates)]
    min_candidates: usize,
    /// ... or this fraction of the rows, whichever is more ...
    #[arg(long, default_value_t = SearchTuning::default().candidate_fraction)]
    candidate_fraction: f64,
    /// ... but never more than this many.
    #[arg(long, default_value_t = SearchTuning::default().max_candidates)]
    max_candidates: usize,
    /// Vector search: auto (flat below --partition-rows, inverted lists above), flat or ivf.
    #[arg(long, default_value = "auto")]
    index: IndexKind,
    #[command(flatten)]
    lists: IvfArgs,
    /// Searches at once for the throughput figure (besides 1).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Where the index's snapshot is written and timed, then removed (a temporary folder when
    /// not given).
    #[arg(long)]
    snapshot_dir: Option<std::path::PathBuf>,
    /// Leave out the snapshot timing.
    #[arg(long)]
    no_snapshot: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write the gallery, the probes and the exact scan's answers as raw files into this
    /// folder (`bench/export.rs`), for measuring another index on the same data.
    #[arg(long)]
    export: Option<std::path::PathBuf>,
}

const TENANT: &str = "bench";
const GROUPS: u64 = 256;
const COMMON_TAGS: u64 = 8;
/// Every this many identities, one holds the rare tag.
const RARE_EVERY: u64 = 1_000;

/// The synthetic population; see the module documentation.
struct Population {
    dim: usize,
    groups: Vec<Vec<f32>>,
}

impl Population {
    fn new(dim: usize) -> Self {
        let mut rng = SmallRng::seed_from_u64(0x6a7e);
        Self { dim, groups: (0..GROUPS).map(|_| random_unit(&mut rng, dim)).collect() }
    }

    fn centre(&self, identity: u64) -> Vec<f32> {
        let mut rng = SmallRng::seed_from_u64(identity.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
        let own = random_unit(&mut rng, self.dim);
        let group = &self.groups[(identity % GROUPS) as usize];
        normalized(own.iter().zip(group).map(|(u, g)| u + 0.5 * g).collect())
    }

    /// A photo of `identity`: its centre plus noise.
    fn sample(&self, centre: &[f32], rng: &mut SmallRng) -> Vec<f32> {
        let noise = random_unit(rng, self.dim);
        normalized(centre.iter().zip(&noise).map(|(c, n)| c + 0.75 * n).collect())
    }

    fn templates_of(identity: u64) -> usize {
        if identity.is_multiple_of(4) {
            2
        } else {
            1
        }
    }

    fn tags_of(identity: u64) -> Vec<String> {
        let mut tags = vec![format!("group-{}", identity % COMMON_TAGS)];
        if identity % RARE_EVERY == 7 {
            tags.push("rare".to_owned());
        }
        tags
    }
}

pub(crate) fn random_unit(rng: &mut SmallRng, dim: usize) -> Vec<f32> {
    // Box–Muller: a Gaussian vector has a uniformly random direction.
    let gaussian: Vec<f32> = (0..dim)
        .map(|_| {
            let (u1, u2): (f32, f32) = (rng.gen_range(f32::EPSILON..1.0), rng.gen());
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect();
    normalized(gaussian)
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

struct Probe {
    embedding: Vec<f32>,
    tags: Vec<String>,
    mated: bool,
    /// The subject it is a photo of: enrolled when mated.
    subject_id: String,
}

pub fn run(args: SearchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.templates > 0 && args.dim > 0 && args.queries > 0, "templates, dim and queries must be > 0");
    let tuning = SearchTuning {
        exact_rows: args.exact_rows,
        min_candidates: args.min_candidates,
        candidate_fraction: args.candidate_fraction,
        max_candidates: args.max_candidates,
        ..SearchTuning::default()
    };
    let ivf = args.lists.tuning();
    let config = IndexConfig { kind: args.index, partition_rows: args.lists.partition_rows, flat: tuning, ivf };
    let index = FlatIndex::with_config(config);
    let population = Population::new(args.dim);
    let rss_before = resident_bytes();
    let mut export = args.export.as_deref().map(GalleryExport::create).transpose()?;

    // Build: generation is not timed, inserts are.
    let mut rng = SmallRng::seed_from_u64(1);
    let (mut inserted, mut identities, mut insert_seconds) = (0usize, 0u64, 0.0f64);
    while inserted < args.templates {
        let identity = identities;
        identities += 1;
        let centre = population.centre(identity);
        let subject_id = format!("subject-{identity}");
        let templates: Vec<Template> = (0..Population::templates_of(identity).min(args.templates - inserted))
            .map(|k| Template {
                tenant_id: TENANT.to_owned(),
                subject_id: subject_id.clone(),
                sample_id: format!("sample-{identity}-{k}"),
                embedding: population.sample(&centre, &mut rng),
            })
            .collect();
        inserted += templates.len();
        if let Some(export) = export.as_mut() {
            for t in &templates {
                export.row(identity, &t.embedding)?;
            }
        }
        let tags = Population::tags_of(identity);
        let started = Instant::now();
        index.set_subject_tags(TENANT, &subject_id, &tags);
        for t in templates {
            index.insert(t);
        }
        insert_seconds += started.elapsed().as_secs_f64();
    }
    // Background rebuilds (partitioning, retraining) are part of building the index searched.
    let started = Instant::now();
    index.wait_for_rebuilds();
    let rebuild_wait_seconds = started.elapsed().as_secs_f64();
    let rss_after = resident_bytes();
    let partition = index.partition(TENANT).filter(|p| p.trained_rows > 0);

    // Probes: 70% mated; a quarter filtered by a common tag, one in twenty by `rare`.
    let probes: Vec<Probe> = (0..args.queries)
        .map(|q| {
            let mated = rng.gen_bool(0.7);
            let identity = if mated { rng.gen_range(0..identities) } else { identities + rng.gen_range(0..1u64 << 40) };
            let embedding = population.sample(&population.centre(identity), &mut rng);
            let tags = match q % 20 {
                0 => vec!["rare".to_owned()],
                1..=5 => vec![format!("group-{}", identity % COMMON_TAGS)],
                _ => Vec::new(),
            };
            Probe { embedding, tags, mated, subject_id: format!("subject-{identity}") }
        })
        .collect();

    let mut latencies_ms = Vec::with_capacity(probes.len());
    let mut results: Vec<Vec<SubjectHit>> = Vec::with_capacity(probes.len());
    for probe in &probes {
        let started = Instant::now();
        let hits = index.search_tagged(TENANT, &probe.embedding, args.limit, &probe.tags);
        latencies_ms.push(started.elapsed().as_secs_f64() * 1e3);
        results.push(hits);
    }
    let sorted = sorted(&latencies_ms);
    let qps_1 = probes.len() as f64 / (latencies_ms.iter().sum::<f64>() / 1e3).max(1e-9);
    let qps_concurrent = throughput(&index, &probes, args.limit, args.concurrency.max(1));

    let exact = partition.is_none() && args.templates <= args.exact_rows;
    // How often the mate ranks first among the mated probes without a filter (those with one
    // may filter the mate out), by the exact scan and by the index: where the exact scan puts
    // an impostor first, the population itself is ambiguous and recall against it says little.
    let mut mate_first = (0usize, 0usize, 0usize);
    let recall = (!exact).then(|| {
        let queries = args.recall_queries.min(probes.len());
        let want: Vec<Vec<SubjectHit>> =
            probes[..queries].iter().map(|p| index.search_exact(TENANT, &p.embedding, args.limit, &p.tags)).collect();
        for ((probe, got), exact) in probes.iter().zip(&results).zip(&want) {
            if probe.mated && probe.tags.is_empty() {
                let first = |hits: &[SubjectHit]| hits.first().is_some_and(|h| h.subject_id == probe.subject_id);
                mate_first = (
                    mate_first.0 + 1,
                    mate_first.1 + usize::from(first(exact)),
                    mate_first.2 + usize::from(first(got)),
                );
            }
        }
        recall(probes.iter().zip(&results).zip(&want).map(|((probe, got), exact)| Compared {
            exact,
            got,
            mated: probe.mated,
            filtered: !probe.tags.is_empty(),
        }))
    });

    if let Some(export) = export {
        let exported: Vec<ExportedProbe<'_>> =
            probes.iter().map(|p| ExportedProbe { embedding: &p.embedding, mated: p.mated }).collect();
        // Unfiltered: a peer's filters are not facegate's tags.
        let exact_tops: Vec<u64> = probes[..args.recall_queries.min(probes.len())]
            .iter()
            .map(|p| {
                let hits = index.search_exact(TENANT, &p.embedding, 1, &[]);
                hits.first().and_then(|h| h.subject_id.strip_prefix("subject-")?.parse().ok()).unwrap_or(u64::MAX)
            })
            .collect();
        export.finish(args.dim, &exported, &exact_tops)?;
    }
    let row_bytes = index.row_bytes();
    let memory = rss_after.zip(rss_before).map(|(a, b)| a.saturating_sub(b));
    let snapshot = if args.no_snapshot {
        None
    } else {
        Some(snapshot_round_trip(index, config, &probes, args.limit, args.snapshot_dir.as_deref())?)
    };
    let summary = json!({
        "templates": args.templates,
        "subjects": identities,
        "dim": args.dim,
        "queries": probes.len(),
        "limit": args.limit,
        "search": match (&partition, exact) {
            (Some(_), _) => "ivf",
            (None, true) => "exact",
            (None, false) => "two-stage",
        },
        "candidates": match (&partition, exact) {
            (Some(_), _) => None,
            (None, true) => Some(args.templates),
            (None, false) => Some(tuning.candidates(args.templates, args.dim)),
        },
        "index": args.index.name(),
        "lists": partition.map(|p| p.lists),
        "probes": partition.map(|_| ivf.probes_at(args.dim)),
        "build_s": insert_seconds + rebuild_wait_seconds,
        "rebuild_wait_s": rebuild_wait_seconds,
        "memory_bytes": memory,
        "vector_bytes": row_bytes,
        "p50_ms": quantile(&sorted, 0.5),
        "p99_ms": quantile(&sorted, 0.99),
        "max_ms": sorted.last().copied().unwrap_or(0.0),
        "qps": qps_1,
        "concurrency": args.concurrency.max(1),
        "qps_concurrent": qps_concurrent,
        "recall_at_1": recall.as_ref().map(|r| r.at_1),
        "recall_at_10": recall.as_ref().map(|r| r.at_10),
        "recall_at_1_mated": recall.as_ref().map(|r| r.at_1_mated),
        "recall_at_1_filtered": recall.as_ref().map(|r| r.at_1_filtered),
        "recall_queries": recall.as_ref().map(|r| r.queries),
        "mate_first_exact": (mate_first.0 > 0).then(|| mate_first.1 as f64 / mate_first.0 as f64),
        "mate_first": (mate_first.0 > 0).then(|| mate_first.2 as f64 / mate_first.0 as f64),
        "snapshot_bytes": snapshot.as_ref().map(|s| s.bytes),
        "snapshot_write_s": snapshot.as_ref().map(|s| s.write_s),
        "snapshot_load_s": snapshot.as_ref().map(|s| s.load_s),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "search bench: {} templates of {} subjects, dim {}, top-{}",
        args.templates, identities, args.dim, args.limit
    );
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!("  {:<28} {}", "search", summary["search"].as_str().unwrap_or(""));
    println!("  {:<28} {:.1} s (inserts {:.1} s)", "build", insert_seconds + rebuild_wait_seconds, insert_seconds);
    if let Some(p) = partition {
        println!("  {:<28} {} lists, {} probed", "partition", p.lists, ivf.probes_at(args.dim));
    }
    println!("  {:<28} {:.0} MiB", "index rows", mib(row_bytes as u64));
    if let Some(m) = memory {
        println!("  {:<28} {:.0} MiB", "resident growth", mib(m));
    }
    println!("  {:<28} {:.2} ms / {:.2} ms", "latency p50 / p99", quantile(&sorted, 0.5), quantile(&sorted, 0.99));
    println!("  {:<28} {:.0} /s at 1, {:.0} /s at {}", "searches", qps_1, qps_concurrent, args.concurrency.max(1));
    match recall {
        Some(r) => println!(
            "  {:<28} @1 {:.4}  @10 {:.4}  (mated @1 {:.4}, filtered @1 {:.4}; {} queries)",
            "recall vs exact", r.at_1, r.at_10, r.at_1_mated, r.at_1_filtered, r.queries
        ),
        None => println!("  {:<28} 1 (exact search)", "recall vs exact"),
    }
    if let Some(s) = snapshot {
        println!(
            "  {:<28} {:.0} MiB, written in {:.1} s, loaded in {:.1} s",
            "snapshot",
            mib(s.bytes),
            s.write_s,
            s.load_s
        );
    }
    Ok(())
}

struct SnapshotTiming {
    bytes: u64,
    write_s: f64,
    load_s: f64,
}

/// Writes the index's snapshot to a file, drops the index (two copies of a 10M gallery would
/// not fit), loads the snapshot into a new one, and checks that it answers the probes as the
/// first did: the time a restarting node spends on its snapshot.
fn snapshot_round_trip(
    index: FlatIndex,
    config: IndexConfig,
    probes: &[Probe],
    limit: usize,
    dir: Option<&std::path::Path>,
) -> anyhow::Result<SnapshotTiming> {
    let temp;
    let dir = match dir {
        Some(dir) => dir,
        None => {
            temp = tempfile::tempdir()?;
            temp.path()
        }
    };
    let path = dir.join("bench-search.snap");
    let checked: Vec<&Probe> = probes.iter().take(20).collect();
    let before: Vec<Vec<SubjectHit>> =
        checked.iter().map(|p| index.search_tagged(TENANT, &p.embedding, limit, &p.tags)).collect();
    let started = Instant::now();
    {
        let mut out = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(&path)?);
        index.write_snapshot(TENANT, "bench@1", 0, &mut out)?;
        std::io::Write::flush(&mut out)?;
        out.get_ref().sync_all()?;
    }
    let write_s = started.elapsed().as_secs_f64();
    drop(index);
    let bytes = std::fs::metadata(&path)?.len();
    let restored = FlatIndex::with_config(config);
    let started = Instant::now();
    restored.read_snapshot(&mut std::fs::File::open(&path)?, bytes, &|_| true)?;
    let load_s = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    let after: Vec<Vec<SubjectHit>> =
        checked.iter().map(|p| restored.search_tagged(TENANT, &p.embedding, limit, &p.tags)).collect();
    let top =
        |hits: &Vec<Vec<SubjectHit>>| hits.iter().map(|h| h.first().map(|h| h.subject_id.clone())).collect::<Vec<_>>();
    anyhow::ensure!(top(&before) == top(&after), "the restored index answers differently");
    Ok(SnapshotTiming { bytes, write_s, load_s })
}

/// Searches per second with `concurrency` threads searching at once, each through the probes.
fn throughput(index: &FlatIndex, probes: &[Probe], limit: usize, concurrency: usize) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..concurrency {
            scope.spawn(move || {
                for probe in probes.iter().skip(worker).step_by(concurrency) {
                    std::hint::black_box(index.search_tagged(TENANT, &probe.embedding, limit, &probe.tags));
                }
            });
        }
    });
    probes.len() as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use facegate_index::dot;

    #[test]
    fn the_population_looks_like_face_embeddings() {
        let population = Population::new(512);
        let mut rng = SmallRng::seed_from_u64(3);
        let centre = population.centre(42);
        let (a, b) = (population.sample(&centre, &mut rng), population.sample(&centre, &mut rng));
        let mate = dot(&a, &b);
        assert!((0.5..0.8).contains(&mate), "mates score {mate}");
        let same_group = dot(&a, &population.sample(&population.centre(42 + GROUPS), &mut rng));
        let other_group = dot(&a, &population.sample(&population.centre(43), &mut rng));
        assert!(same_group > other_group && same_group < 0.3, "{same_group} {other_group}");
        assert_eq!(population.centre(42), centre, "identities regenerate from their number");
    }
}
