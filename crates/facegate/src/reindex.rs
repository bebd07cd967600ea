//! `facegate reindex`: re-embeds every stored face image of a stopped server's gallery with the
//! active model pack, after a pack change, so that the subjects enrolled under the old pack can be
//! found again. The work is the core's (`facegate_core::service::Reindexer`); this command holds the
//! gallery alone, loads the engine for throughput, shows progress and prints the summary.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use facegate_core::service::{ReindexConfig, ReindexProgress, ReindexReport, Reindexer, DEFAULT_REINDEX_MIN_IOU};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::config::{Config, EngineArgs, FileConfig, Flags, StoreArgs};
use crate::runtime::{load_engine, open_alone};

#[derive(Args, Debug)]
pub struct ReindexArgs {
    /// Least overlap (intersection over union, 0-1) between a sample's stored face box and a face
    /// the active pack finds in its image for that face to count as the sample's
    /// [default: 0.5: the face detection benchmarks' criterion for the same face; see
    /// docs/ARCHITECTURE.md, "Reindex"]
    #[arg(long, default_value_t = DEFAULT_REINDEX_MIN_IOU, hide_default_value = true)]
    min_iou: f32,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    // The stopped server's data directory or PostgreSQL database, and its key.
    #[command(flatten)]
    store: StoreArgs,
    // The pack to re-embed with (the one the server will run with), and the workers.
    #[command(flatten)]
    engine: EngineArgs,
}

/// Without a terminal (a service's log, a pipe) the bar is not drawn; a progress line is logged
/// instead at this interval at most (and for each tenant's first batch), so that a long run shows
/// it is moving without flooding the log.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub fn run(args: ReindexArgs, file: &FileConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.min_iou > 0.0 && args.min_iou <= 1.0,
        "--min-iou must lie in (0, 1]; 0 would accept a face that does not overlap the stored one at all"
    );
    let config =
        Config::resolve(file, Flags { store: Some(&args.store), engine: Some(&args.engine), ..Flags::default() })?;
    let backend = open_alone(&config)?;
    crate::audit_log::open_in(&config.store.data_dir)?;
    // Throughput over latency: one ONNX Runtime thread per worker, a worker per core.
    let engine = load_engine(&config, 1)?;
    let workers = config.engine.inference_workers.max(1);

    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} faces, {per_sec}, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let logged = Progress::new(bar.is_hidden());
    let on_progress = |event: ReindexProgress<'_>| match event {
        ReindexProgress::Planned { to_do, staged_before } => {
            bar.set_length(to_do);
            if staged_before > 0 {
                bar.suspend(|| {
                    tracing::info!(staged_before, "resuming: outcomes an earlier run staged are kept, not redone")
                });
            }
            bar.suspend(|| tracing::info!(to_do, workers, "re-embedding the stored faces"));
        }
        ReindexProgress::Tenant { tenant, to_do } => {
            bar.set_message(format!("tenant {}", tenant.name));
            logged.tenant_started();
            bar.suspend(|| tracing::info!(tenant = %tenant.name, to_do, "re-embedding a tenant's faces"));
        }
        ReindexProgress::Failed { tenant, sample, failure, detail } => bar.suspend(|| {
            tracing::warn!(
                tenant = %tenant.name,
                subject = %sample.subject_id,
                sample = %sample.id,
                reason = failure.name(),
                "not re-embedded, keeps its old template: {detail}"
            )
        }),
        ReindexProgress::Staged { samples } => {
            bar.inc(samples);
            logged.staged(bar.position(), bar.length().unwrap_or(0));
        }
        ReindexProgress::Swapping => {
            bar.set_message("swapping in");
            bar.suspend(|| tracing::info!("every face has an outcome: swapping the new templates in"));
        }
    };
    let started = Instant::now();
    let report = Reindexer::new(std::sync::Arc::new(engine), backend.store())
        .run(&ReindexConfig { workers, min_iou: args.min_iou }, &on_progress)
        .context("re-embedding the stored faces (run it again to resume)")?;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    backend.checkpoint();
    print_summary(&report, seconds, bar.position(), args.json)
}

/// The progress lines logged when the bar is not drawn.
struct Progress {
    hidden: bool,
    /// When the last line was logged; `None` until a tenant's first batch has been.
    last: Mutex<Option<Instant>>,
}

impl Progress {
    fn new(hidden: bool) -> Self {
        Self { hidden, last: Mutex::new(None) }
    }

    fn tenant_started(&self) {
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn staged(&self, done: u64, total: u64) {
        if !self.hidden {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < PROGRESS_LOG_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        tracing::info!(done, total, "reindex progress: outcomes staged");
    }
}

fn print_summary(report: &ReindexReport, seconds: f64, done_now: u64, as_json: bool) -> anyhow::Result<()> {
    let failures = report.failed();
    let failed: u64 = failures.values().sum();
    let images_per_s = if seconds > 0.0 { done_now as f64 / seconds } else { 0.0 };
    let left = &report.left;
    if as_json {
        let tenants: Vec<serde_json::Value> = report
            .tenants
            .iter()
            .map(|t| {
                json!({
                    "tenant": t.tenant.name,
                    "reembedded": t.tally.reembedded,
                    "failed": t.tally.failed_total(),
                    "failures": t.tally.failed,
                })
            })
            .collect();
        let unsearchable: serde_json::Map<String, serde_json::Value> = left
            .tenants
            .iter()
            .filter(|t| t.unsearchable_subjects > 0)
            .map(|t| (t.tenant_name.clone(), t.unsearchable_subjects.into()))
            .collect();
        let summary = json!({
            "model_id": report.model_id,
            "reembedded": report.reembedded(),
            "failed": failed,
            "failures": failures,
            "resumed": report.staged_before,
            "tenants": tenants,
            "stale_samples_left": left.stale_samples(),
            "unsearchable_subjects": unsearchable,
            "seconds": seconds,
            "images_per_s": images_per_s,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    if report.tenants.is_empty() {
        println!("nothing to re-embed: every stored template is {}'s", report.model_id);
        return Ok(());
    }
    println!(
        "re-embedded {} faces with {}, failed {failed}, in {seconds:.1} s ({images_per_s:.1} images/s){}",
        report.reembedded(),
        report.model_id,
        match report.staged_before {
            0 => String::new(),
            n => format!("; {n} of them staged by an earlier run"),
        }
    );
    for (reason, count) in &failures {
        println!("  {reason}: {count}");
    }
    for t in &report.tenants {
        println!("  tenant {:?}: re-embedded {}, failed {}", t.tenant.name, t.tally.reembedded, t.tally.failed_total());
    }
    if !left.is_empty() {
        println!(
            "{} faces that failed keep their old templates; a later `facegate reindex` tries them again",
            left.stale_samples()
        );
    }
    for t in left.tenants.iter().filter(|t| t.unsearchable_subjects > 0) {
        println!(
            "  tenant {:?}: {} subjects have no face the active pack could re-embed; search cannot find them, and \
             `facegate serve` refuses to start until they are re-enrolled or deleted (or --allow-stale-templates)",
            t.tenant_name, t.unsearchable_subjects
        );
    }
    Ok(())
}
