//! `facegate bench unknown-faces IMAGES…`: what keeping the faces nobody enrolled (issue 29)
//! adds to a 1:N search, with a tenant already holding `--sightings` of them.
//!
//! One service, in this process, on a temporary SQLite directory with the configured model
//! pack, and two tenants with empty galleries: one keeps no unknown faces, the other opted in and
//! holds `--sightings` synthetic sightings in its unknown-faces index (random unit templates,
//! two to a person: none of them matches a real face, so each search's faces are kept, grouped
//! against all of them). Every photo is searched as miiCloud's `match_faces` does, once for each
//! tenant in turn, one request at a time, so that the difference is the keeping: the quality
//! measure of every face, the grouping scan over the sightings, the crop, and the durable write.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use facegate_core::service::SearchOptions;
use facegate_core::store_roles::*;
use facegate_core::{FaceService, Index, Template};
use facegate_index::FlatIndex;
use facegate_store::SqliteStore;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::json;

use super::search::random_unit;
use super::{quantile, sorted};
use crate::config::{Config, EngineArgs, FileConfig, Flags};

#[derive(Args, Debug)]
pub struct UnknownArgs {
    /// Photos to search, of people nobody enrolled.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Sightings the opted-in tenant holds before the first search.
    #[arg(long, default_value_t = 100_000)]
    sightings: usize,
    /// Passes over the photos.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(args: UnknownArgs, file: &FileConfig) -> anyhow::Result<()> {
    let config = Config::resolve(file, Flags { engine: Some(&args.engine), ..Flags::default() })?;
    let images: Vec<Vec<u8>> = args
        .images
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<_>>()?;
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let store = Arc::new(SqliteStore::open(dir.path()).context("opening the store")?);
    let engine = Arc::new(crate::runtime::load_engine(&config, 1)?);
    let dim = facegate_core::Engine::model_info(engine.as_ref()).embedding_size;
    let unknown = Arc::new(FlatIndex::new());
    let service = Arc::new(
        FaceService::new(engine, store.clone(), Arc::new(FlatIndex::new()), config.service_config())
            .with_unknown_index(unknown.clone()),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let plain = runtime.block_on(service.create_tenant("plain"))?.tenant;
    let keeping = runtime.block_on(service.create_tenant("keeping"))?.tenant;
    store.set_unknown_faces_retention(&keeping.id, Some(Duration::from_secs(30 * 86_400)))?;

    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(29);
    for i in 0..args.sightings {
        unknown.insert(Template {
            tenant_id: keeping.id.clone(),
            subject_id: format!("synthetic-person-{}", i / 2),
            sample_id: format!("synthetic-sighting-{i}"),
            embedding: random_unit(&mut rng, dim),
        });
    }
    let fill_s = started.elapsed().as_secs_f64();

    let search = |tenant: &facegate_core::Tenant, image: &[u8], n: usize| -> anyhow::Result<f64> {
        let options = SearchOptions { keep_unknown: Some(format!("bench-{n}")), ..SearchOptions::best_of_every_face() };
        let started = Instant::now();
        runtime.block_on(service.find_subjects(tenant, image.to_vec(), options))?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    // A warm-up pass, unmeasured: the first inference of each shape is slower.
    for (n, image) in images.iter().take(4).enumerate() {
        search(&plain, image, n)?;
    }
    let (mut off_ms, mut on_ms) = (Vec::new(), Vec::new());
    let mut n = 0;
    for _ in 0..args.rounds.max(1) {
        for image in &images {
            off_ms.push(search(&plain, image, n)?);
            on_ms.push(search(&keeping, image, n)?);
            n += 1;
        }
    }
    let kept = unknown.len(&keeping.id) - args.sightings;
    let people = runtime.block_on(async {
        let mut count = 0;
        let mut after = None;
        loop {
            let page = service.unknown_people(&keeping, after.clone(), 100).await?;
            count += page.len();
            match page.last() {
                Some(last) if page.len() == 100 => after = Some(last.id.clone()),
                _ => break anyhow::Ok(count),
            }
        }
    })?;
    let (off, on) = (sorted(&off_ms), sorted(&on_ms));
    let summary = json!({
        "photos": images.len(),
        "rounds": args.rounds.max(1),
        "sightings_before": args.sightings,
        "fill_s": fill_s,
        "sightings_kept": kept,
        "unknown_people_stored": people,
        "not_opted_in_ms": { "p50": quantile(&off, 0.5), "p99": quantile(&off, 0.99) },
        "opted_in_ms": { "p50": quantile(&on, 0.5), "p99": quantile(&on, 0.99) },
        "added_ms_p50": quantile(&on, 0.5) - quantile(&off, 0.5),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "searches of {} photos × {} rounds, one at a time, with {} sightings held",
        images.len(),
        args.rounds.max(1),
        args.sightings
    );
    println!("{:<22} {:>9} {:>9}", "tenant", "p50 ms", "p99 ms");
    println!("{:<22} {:>9.1} {:>9.1}", "not opted in", quantile(&off, 0.5), quantile(&off, 0.99));
    println!("{:<22} {:>9.1} {:>9.1}", "opted in (keeps)", quantile(&on, 0.5), quantile(&on, 0.99));
    println!(
        "added at p50: {:.1} ms; {kept} sightings kept in {people} unknown people",
        quantile(&on, 0.5) - quantile(&off, 0.5)
    );
    Ok(())
}
