//! `facegate import DIR`: bulk enrollment of many photos, for an operator's first load, either
//! straight into a stopped server's data directory (`--tenant NAME`) or through a running
//! server's miiCloud API (`--url URL --token TOKEN`).
//!
//! Every image goes through enrollment (a person's first image) or update (the rest), in the
//! service itself or over HTTP, so validation, stored names and templates are exactly what the
//! miiCloud API produces.
//!
//! # Resuming
//!
//! A stored image is named `enroll/<sanitized file stem>_<random>.<ext>` (see
//! [`stored_image_name`]). A file counts as already imported when its person (by
//! `customer_person_id`) exists and holds an image with the same sanitized stem. Stems are
//! counted, not just looked up, so that two files whose stems sanitize alike (`a b.jpg` and
//! `ab.png`) are two images: the first N files with a stem are skipped when N images with that
//! stem are stored. Files that failed (no face, not an image, ...) stored nothing, so a re-run
//! tries them again and reports them as failed again. An import killed half-way loses at most the
//! images in flight: each image is stored in its own transaction.

mod destination;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use facegate_core::service::{stored_image_name, TenantAdmin};
use facegate_core::{ImageUpload, Profile};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::{Config, EngineArgs, FileConfig, Flags, StoreArgs};
use crate::runtime::build_service;
use destination::{ApiClient, Destination, Failure};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Folder with one sub-folder per person (the folder name is the `customer_person_id`, every
    /// image in it one enrolled image), or the folder the `--csv` paths are relative to.
    dir: PathBuf,
    /// Tenant to import into, by name, in the data directory; created when it does not exist.
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    tenant: Option<String>,
    /// Comma-separated list of `path,customer_person_id[,first_name,last_name,email,phone]`
    /// lines instead of person folders. Fields are not quoted; a header line starting with
    /// `path,` is skipped.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Import through a running server's miiCloud API at this address (e.g.
    /// `http://127.0.0.1:8080`) instead of into a data directory.
    #[arg(long, requires = "token", conflicts_with = "database_url")]
    url: Option<String>,
    /// The tenant's miiCloud token, with `--url`.
    #[arg(long, env = "FACEGATE_TOKEN", hide_env_values = true, requires = "url")]
    token: Option<String>,
    /// Uploads in flight with `--url` [default: 2 × this machine's cores]
    #[arg(long, requires = "url")]
    concurrency: Option<usize>,
    // The (stopped) server's data directory, or its PostgreSQL database (running nodes see the
    // imported persons through the change log), and its key.
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Image files a person folder may hold.
const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

/// One person to import: who, with which profile, and their image files in order.
struct PersonSource {
    customer_person_id: String,
    profile: Profile,
    files: Vec<PathBuf>,
}

/// A person's images still to import, after leaving out those already stored.
struct PersonWork {
    customer_person_id: String,
    profile: Profile,
    /// The person exists already, so every file is added with `update`.
    exists: bool,
    files: Vec<PathBuf>,
}

/// Counts shared by the import tasks.
#[derive(Default)]
struct Tally {
    imported: usize,
    /// Short reason -> images.
    failures: BTreeMap<String, usize>,
    /// Why the import stopped early, if it did.
    fatal: Option<String>,
}

/// What every import task needs.
struct ImportContext {
    destination: Destination,
    /// Bounds the images in flight so that the service's inference queue never overflows,
    /// while keeping a little more than one job per worker so workers do not wait for the store.
    in_flight: Semaphore,
    tally: Mutex<Tally>,
    progress: ProgressBar,
    /// Set when nothing more can succeed (disk full, credentials refused): the remaining images
    /// are not attempted.
    stop: AtomicBool,
}

pub fn run(args: ImportArgs, file: &FileConfig, log_filter: &str) -> anyhow::Result<()> {
    let people = match &args.csv {
        Some(csv) => read_csv(csv, &args.dir)?,
        None => read_person_folders(&args.dir)?,
    };
    // One thread drives the tasks: they only wait, while inference runs on the service's worker
    // pool (or the server) and the store writes on blocking threads.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let (destination, in_flight) = match (&args.url, &args.tenant) {
        (Some(url), _) => {
            let token = args.token.as_deref().context("--url needs --token (or FACEGATE_TOKEN)")?;
            let cores = std::thread::available_parallelism().map_or(2, usize::from);
            (Destination::Api(ApiClient::new(url, token)?), args.concurrency.unwrap_or(2 * cores).max(1))
        }
        (None, Some(tenant)) => open_data_dir(&args, file, tenant)?,
        (None, None) => anyhow::bail!("give --tenant NAME (a data directory) or --url URL (a running server)"),
    };

    let (mut work, skipped) = runtime.block_on(plan(&destination, people))?;
    // Longest first, so that a person with hundreds of photos does not start last and leave
    // the other workers idle at the end.
    work.sort_by_key(|p| std::cmp::Reverse(p.files.len()));
    let total: usize = work.iter().map(|p| p.files.len()).sum();

    let progress = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} images, {per_sec}, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message("importing");
    let context = Arc::new(ImportContext {
        destination,
        in_flight: Semaphore::new(in_flight),
        tally: Mutex::new(Tally::default()),
        progress,
        stop: AtomicBool::new(false),
    });

    // The service logs every enrollment at info, which would bury the progress bar; the import
    // tasks all run on this thread, so a thread-local subscriber quiets just them. It keeps the
    // audit layer: the audit lines are the server's, whatever the terminal shows.
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let quiet = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(
                    tracing_subscriber::EnvFilter::try_new(format!("{log_filter},facegate_core::service=warn"))
                        .unwrap_or_else(|_| "warn".into()),
                ),
        )
        .with(crate::audit_log::layer());
    let started = Instant::now();
    {
        let _quiet = tracing::subscriber::set_default(quiet);
        let context = context.clone();
        runtime.block_on(async move {
            let mut people = JoinSet::new();
            for person in work {
                people.spawn(import_person(context.clone(), person));
            }
            while let Some(done) = people.join_next().await {
                done.context("an import task failed")?;
            }
            anyhow::Ok(())
        })?;
    }
    let seconds = started.elapsed().as_secs_f64();
    context.progress.finish_and_clear();

    let tally = std::mem::take(&mut *context.tally.lock().unwrap_or_else(|e| e.into_inner()));
    let failed: usize = tally.failures.values().sum();
    let processed = tally.imported + failed;
    let images_per_s = if seconds > 0.0 { processed as f64 / seconds } else { 0.0 };
    if args.json {
        let summary = json!({
            "imported": tally.imported,
            "skipped": skipped,
            "failed": failed,
            "failures": tally.failures,
            "seconds": seconds,
            "images_per_s": images_per_s,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "imported {}, skipped {skipped} (already imported), failed {failed} in {seconds:.1} s \
             ({images_per_s:.1} images/s)",
            tally.imported
        );
        for (reason, count) in &tally.failures {
            println!("  {reason}: {count}");
        }
    }
    if context.stop.load(Ordering::Relaxed) {
        anyhow::bail!("stopped: {}; {} images were not attempted", tally.fatal.unwrap_or_default(), total - processed);
    }
    Ok(())
}

/// Imports one person's images: the first that has a face creates the person, one at a time;
/// the rest are then added concurrently.
async fn import_person(context: Arc<ImportContext>, person: PersonWork) {
    let PersonWork { customer_person_id, profile, exists, files } = person;
    let mut files = files.into_iter();
    if !exists {
        let mut enrolled = false;
        for path in files.by_ref() {
            if import_image(&context, &customer_person_id, &profile, &path, false).await {
                enrolled = true;
                break;
            }
        }
        if !enrolled {
            return;
        }
    }
    let (customer_person_id, profile) = (Arc::new(customer_person_id), Arc::new(profile));
    let mut updates = JoinSet::new();
    for path in files {
        let (context, customer_person_id, profile) = (context.clone(), customer_person_id.clone(), profile.clone());
        updates.spawn(async move { import_image(&context, &customer_person_id, &profile, &path, true).await });
    }
    while updates.join_next().await.is_some() {}
}

/// Enrolls (or, with `add`, adds to an existing person) one image and counts the outcome.
/// Returns whether it was imported.
async fn import_image(
    context: &ImportContext,
    customer_person_id: &str,
    profile: &Profile,
    path: &Path,
    add: bool,
) -> bool {
    let Ok(_permit) = context.in_flight.acquire().await else { return false };
    if context.stop.load(Ordering::Relaxed) {
        return false;
    }
    let outcome = match tokio::fs::read(path).await {
        Ok(bytes) => {
            let upload = ImageUpload { file_name: file_name_of(path), bytes };
            context.destination.add_image(customer_person_id, profile, upload, add).await
        }
        Err(e) => Err(Failure { reason: "unreadable file", detail: e.to_string(), fatal: false }),
    };
    let imported = outcome.is_ok();
    {
        let mut tally = context.tally.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => tally.imported += 1,
            Err(Failure { reason, detail, fatal }) => {
                *tally.failures.entry(reason.to_owned()).or_default() += 1;
                if fatal && !context.stop.swap(true, Ordering::Relaxed) {
                    tally.fatal = Some(format!("{reason} ({detail})"));
                }
                context.progress.suspend(|| tracing::warn!(path = %path.display(), reason, "{detail}"));
            }
        }
    }
    context.progress.inc(1);
    imported
}

fn file_name_of(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The part of a stored image name that comes from the uploaded file name: what a re-run
/// compares to recognise a file it has imported before. Derived through `stored_image_name`
/// itself, so it sanitizes exactly as enrollment did.
fn stored_stem(stored_name: &str) -> &str {
    let without_ext = stored_name.rsplit_once('.').map_or(stored_name, |(stem, _)| stem);
    // `<stem>_<7 random letters>`
    without_ext.rsplit_once('_').map_or(without_ext, |(stem, _)| stem)
}

fn stem_of_file(path: &Path) -> String {
    stored_stem(&stored_image_name(&file_name_of(path), &[])).to_owned()
}

/// Opens the data directory's service and finds (or creates) the tenant; returns the
/// destination and how many images to keep in flight.
fn open_data_dir(args: &ImportArgs, file: &FileConfig, tenant_name: &str) -> anyhow::Result<(Destination, usize)> {
    let mut config =
        Config::resolve(file, Flags { store: Some(&args.store), engine: Some(&args.engine), ..Flags::default() })?;
    let in_flight = config.engine.inference_workers.max(1) * 2;
    // Every image in flight may wait for a worker at once: the queue must hold them all.
    config.service.inference_queue = Some(config.service_config().inference_queue.max(in_flight));
    // A bulk load wants throughput: one ONNX Runtime thread per worker, unless asked otherwise.
    let (service, backend) = build_service(&config, 1)?;
    // The enrollments below are the service's own, audited as the server audits them; the lines
    // go where the server writes its own (on PostgreSQL, the data directory of this machine).
    crate::audit_log::open_in(&config.store.data_dir)?;
    let store = backend.store();
    let tenant = match store.list_tenants()?.into_iter().find(|t| t.name == tenant_name) {
        Some(tenant) => tenant,
        None => {
            let created = TenantAdmin::new(store.clone())
                .create_tenant(tenant_name)
                .with_context(|| format!("creating tenant {tenant_name:?}"))?;
            // Shown once, as `tenant create` does: only hashes are stored.
            let c = &created.credentials;
            eprintln!(
                "created tenant {:?} (id {}); its credentials, shown only now: token {} api_key {} \
                 access_key_id {} secret_access_key {}",
                created.tenant.name, created.tenant.id, created.token, c.api_key, c.access_key_id, c.secret_access_key
            );
            created.tenant
        }
    };
    Ok((Destination::DataDir { service, _backend: backend, tenant }, in_flight))
}

/// Leaves out the files already imported (see the module docs); returns the work left and the
/// number of files skipped.
async fn plan(destination: &Destination, people: Vec<PersonSource>) -> anyhow::Result<(Vec<PersonWork>, usize)> {
    let mut work = Vec::with_capacity(people.len());
    let mut skipped = 0usize;
    for person in people {
        let Some(stored_person) = destination.stored_person(&person.customer_person_id).await? else {
            work.push(PersonWork {
                customer_person_id: person.customer_person_id,
                profile: person.profile,
                exists: false,
                files: person.files,
            });
            continue;
        };
        let mut stored: HashMap<String, usize> = HashMap::new();
        for name in &stored_person.image_names {
            *stored.entry(stored_stem(name).to_owned()).or_default() += 1;
        }
        let mut files = Vec::new();
        for file in person.files {
            match stored.get_mut(&stem_of_file(&file)) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    skipped += 1;
                }
                _ => files.push(file),
            }
        }
        // `update` replaces the profile: keep the stored one unless the CSV gives one.
        let profile = if person.profile == Profile::default() { stored_person.profile } else { person.profile };
        if !files.is_empty() {
            work.push(PersonWork { customer_person_id: person.customer_person_id, profile, exists: true, files });
        }
    }
    Ok((work, skipped))
}

/// People from `dir/<customer_person_id>/<image>`, both sorted so that runs are repeatable.
fn read_person_folders(dir: &Path) -> anyhow::Result<Vec<PersonSource>> {
    let mut people = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let folder = entry?.path();
        if !folder.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .with_context(|| format!("reading {}", folder.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        files.sort();
        let customer_person_id = file_name_of(&folder);
        if !files.is_empty() {
            people.push(PersonSource { customer_person_id, profile: Profile::default(), files });
        }
    }
    people.sort_by(|a, b| a.customer_person_id.cmp(&b.customer_person_id));
    anyhow::ensure!(!people.is_empty(), "{} holds no person folders with images", dir.display());
    Ok(people)
}

fn is_image_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| IMAGE_EXTENSIONS.iter().any(|e| x.eq_ignore_ascii_case(e)))
}

/// People from a `path,customer_person_id[,first_name,last_name,email,phone]` file, in the order
/// they first appear. A person's profile is the first non-empty one given on their lines.
fn read_csv(csv: &Path, dir: &Path) -> anyhow::Result<Vec<PersonSource>> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let mut people: Vec<PersonSource> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (number == 0 && line.starts_with("path,")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (path, customer_person_id) = match fields[..] {
            [path, id, ..] if !path.is_empty() && !id.is_empty() => (path, id),
            _ => anyhow::bail!(
                "{} line {}: expected `path,customer_person_id[,first_name,last_name,email,phone]`",
                csv.display(),
                number + 1
            ),
        };
        anyhow::ensure!(fields.len() <= 6, "{} line {}: more than 6 fields", csv.display(), number + 1);
        let field = |i: usize| fields.get(i).filter(|v| !v.is_empty()).map(|v| (*v).to_owned());
        let profile = Profile { first_name: field(2), last_name: field(3), email: field(4), phone: field(5) };
        let index = *position.entry(customer_person_id.to_owned()).or_insert_with(|| {
            people.push(PersonSource {
                customer_person_id: customer_person_id.to_owned(),
                profile: Profile::default(),
                files: Vec::new(),
            });
            people.len() - 1
        });
        let person = &mut people[index];
        if person.profile == Profile::default() {
            person.profile = profile;
        }
        person.files.push(dir.join(path));
    }
    anyhow::ensure!(!people.is_empty(), "{} lists no images", csv.display());
    Ok(people)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_match_what_enrollment_stores() {
        let stored = stored_image_name("Aaron Peirsol_0001.jpg", &[0xFF, 0xD8, 0xFF]);
        assert_eq!(stored_stem(&stored), stem_of_file(Path::new("/x/Aaron Peirsol_0001.jpg")));
        assert_eq!(stem_of_file(Path::new("a/b_c.png")), "enroll/b_c");
        assert_ne!(stem_of_file(Path::new("b_c.png")), stem_of_file(Path::new("b_d.png")));
    }

    #[test]
    fn csv_lines_group_by_person_and_skip_the_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("people.csv");
        std::fs::write(&csv, "path,customer_person_id,first_name\na.jpg,p1\nb.jpg, p2 ,Bo,,b@x\nc.jpg,p1,Al\n\n")
            .expect("write");
        let people = read_csv(&csv, Path::new("/img")).expect("parse");
        assert_eq!(people.len(), 2);
        assert_eq!(people[0].customer_person_id, "p1");
        assert_eq!(people[0].files, [PathBuf::from("/img/a.jpg"), PathBuf::from("/img/c.jpg")]);
        assert_eq!(people[0].profile.first_name.as_deref(), Some("Al"));
        assert_eq!(people[1].profile.email.as_deref(), Some("b@x"));
        assert_eq!(people[1].profile.last_name, None);
        std::fs::write(&csv, "a.jpg\n").expect("write");
        assert!(read_csv(&csv, Path::new("/img")).is_err(), "a line without an id is refused");
    }
}
