//! `facegate reindex`: every stored face re-embedded with the active model, so that the subjects
//! enrolled under an earlier model (whose templates are never compared with the active one's)
//! can be found again.
//!
//! Tenant by tenant, a page of samples at a time: the page is spread over `workers` threads, each
//! reads a sample's stored image, finds its faces with the engine and takes the one whose box
//! overlaps the stored box most ([`matching_face`]). Outcomes are staged in the store in batches,
//! one transaction each ([`ReindexStore::stage_reindexed`]). Only when every sample has an outcome
//! does the store swap the staged templates in, in one transaction
//! ([`ReindexStore::swap_reindexed`]). So:
//!
//! - a run killed at any point changes nothing a search sees, and the next run skips every sample
//!   already staged;
//! - a sample that fails (no face, no face where the stored box is, image gone or damaged) keeps
//!   its old template and is counted by reason; a later run tries it again. The old template is
//!   kept rather than the sample deleted, because the image and its box are still the best record
//!   of the person, and another pack may find the face. `facegate serve` refuses to start while a
//!   subject has no template of the active model, so a failure that leaves a person unsearchable
//!   cannot go unnoticed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::model::{
    AnalyzeOptions, BoundingBox, DetectedFace, FaceSample, ReembeddedFace, ReindexFailure, ReindexOutcome,
    ReindexTally, StagedSample, StaleTemplates, StoredImage, Tenant,
};
use crate::ports::{Engine, Store};

use super::audit;

/// The least overlap (intersection over union) between the stored box of a sample and a face the
/// new detector finds for that face to be taken as the sample's. 0.5 is the criterion face
/// detection benchmarks (WIDER FACE, FDDB) use to call a detection the same face as a labelled
/// box, which is what detectors trained on them (SCRFD, YuNet) are scored against. Measured
/// (docs/ARCHITECTURE.md, "Reindex"): the same face boxed from another view of the image (SCRFD at
/// 320 instead of 640 px) overlaps by 0.87 to 0.94, while distinct faces of one photo do not
/// overlap at all (the 23 of `players.jpg`, the faceapi group photos). Below 0.5 the stored face
/// was missed and another one found: taking it would give the person a stranger's template, a
/// false match later, which is worse than a counted failure that keeps the old template.
pub const DEFAULT_REINDEX_MIN_IOU: f32 = 0.5;

/// Outcomes staged per transaction: a kill loses at most this many inferences (seconds of work),
/// and the commits (an fsync each) stay a small fraction of the inference time.
pub const REINDEX_STAGE_BATCH: usize = 64;

/// Samples fetched at a time. Every sample of a page is staged before the next page is fetched,
/// so the workers idle only while the page's last images finish: 512 keeps that under 1 % of the
/// time, and the fetch small against the page's inference (at a million samples in one SQLite
/// tenant it takes 0.6 to 0.7 s, about 4 % of the page's inference at 30 images/s).
const PAGE: usize = 512;

#[derive(Debug, Clone)]
pub struct ReindexConfig {
    /// Images analysed at once: the engine's worker count, so that every core is busy.
    pub workers: usize,
    /// See [`DEFAULT_REINDEX_MIN_IOU`].
    pub min_iou: f32,
}

/// What a reindex reports as it goes, for a progress bar and the log.
#[derive(Debug)]
pub enum ReindexProgress<'a> {
    /// Before any work: the samples to re-embed in all, and the outcomes an earlier, interrupted
    /// run staged already (not done again).
    Planned { to_do: u64, staged_before: u64 },
    /// A tenant's turn, with its samples to re-embed.
    Tenant { tenant: &'a Tenant, to_do: u64 },
    /// One sample failed; it keeps its old template. `detail` is for the log.
    Failed { tenant: &'a Tenant, sample: &'a FaceSample, failure: ReindexFailure, detail: &'a str },
    /// Outcomes just staged.
    Staged { samples: u64 },
    /// Every sample has an outcome: the staged templates are being swapped in.
    Swapping,
}

/// One tenant's outcomes, as swapped in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantReindex {
    pub tenant: Tenant,
    pub tally: ReindexTally,
}

/// What a completed reindex did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// The model every template was re-embedded with.
    pub model_id: String,
    /// Per tenant, by name: every outcome swapped in, including those an earlier, interrupted run
    /// staged.
    pub tenants: Vec<TenantReindex>,
    /// Outcomes an earlier, interrupted run had staged, which this one did not redo.
    pub staged_before: u64,
    /// The templates of other models left afterwards: those of the samples that failed.
    pub left: StaleTemplates,
}

impl ReindexReport {
    pub fn reembedded(&self) -> u64 {
        self.tenants.iter().map(|t| t.tally.reembedded).sum()
    }

    /// Failures over all tenants, by reason.
    pub fn failed(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (reason, n) in self.tenants.iter().flat_map(|t| &t.tally.failed) {
            *out.entry(reason.clone()).or_default() += n;
        }
        out
    }
}

/// The reindex use case: re-embedding a store's faces with an engine's model. Run by
/// `facegate reindex` with no server on the store, so it holds no index: a server started
/// afterwards loads the swapped-in templates.
#[derive(Clone)]
pub struct Reindexer {
    engine: Arc<dyn Engine>,
    store: Arc<dyn Store>,
}

impl Reindexer {
    pub fn new(engine: Arc<dyn Engine>, store: Arc<dyn Store>) -> Self {
        Self { engine, store }
    }

    /// Re-embeds every stored sample whose template another model than the engine's made, and
    /// swaps the new templates in once all have an outcome (see the module docs). Each tenant's
    /// outcome is audited (`reindex`). Errors of the store abort the run, and leave what was
    /// staged for the next. Blocks for the whole run.
    pub fn run(
        &self,
        config: &ReindexConfig,
        progress: &(dyn Fn(ReindexProgress<'_>) + Sync),
    ) -> Result<ReindexReport> {
        reindex(self.engine.as_ref(), self.store.as_ref(), config, progress)
    }
}

fn reindex(
    engine: &dyn Engine,
    store: &dyn Store,
    config: &ReindexConfig,
    progress: &(dyn Fn(ReindexProgress<'_>) + Sync),
) -> Result<ReindexReport> {
    let model_id = engine.model_info().model_id.clone();
    let stale = store.stale_templates(&model_id)?;
    let staged: HashMap<String, u64> =
        store.staged_reindex(&model_id)?.into_iter().map(|(tenant_id, tally)| (tenant_id, tally.total())).collect();
    let staged_before: u64 = staged.values().sum();
    let left_to_do =
        |tenant_id: &str, stale_samples: u64| stale_samples.saturating_sub(staged.get(tenant_id).copied().unwrap_or(0));
    let to_do = stale.tenants.iter().map(|t| left_to_do(&t.tenant_id, t.stale_samples)).sum();
    progress(ReindexProgress::Planned { to_do, staged_before });
    let tenants: HashMap<String, Tenant> = store.list_tenants()?.into_iter().map(|t| (t.id.clone(), t)).collect();
    let tenant_of = |id: &str, name: &str| {
        tenants.get(id).cloned().unwrap_or_else(|| Tenant {
            id: id.to_owned(),
            name: name.to_owned(),
            created_at: String::new(),
        })
    };
    let job = Job { engine, store, config, model_id: &model_id, progress };
    for stale_tenant in &stale.tenants {
        let tenant = tenant_of(&stale_tenant.tenant_id, &stale_tenant.tenant_name);
        progress(ReindexProgress::Tenant {
            tenant: &tenant,
            to_do: left_to_do(&tenant.id, stale_tenant.stale_samples),
        });
        job.tenant(&tenant)?;
    }
    if stale.is_empty() && staged_before == 0 {
        return Ok(ReindexReport { model_id, tenants: Vec::new(), staged_before, left: stale });
    }
    progress(ReindexProgress::Swapping);
    let mut done: Vec<TenantReindex> = store
        .swap_reindexed(&model_id)?
        .into_iter()
        .map(|(tenant_id, tally)| TenantReindex { tenant: tenant_of(&tenant_id, &tenant_id), tally })
        .collect();
    done.sort_by(|a, b| a.tenant.name.cmp(&b.tenant.name));
    for TenantReindex { tenant, tally } in &done {
        let output = format!("reembedded={} failed={}", tally.reembedded, tally.failed_total());
        audit::record(tenant, "reindex", &format!("model={model_id}"), &output, "ok");
    }
    let left = store.stale_templates(&model_id)?;
    Ok(ReindexReport { model_id, tenants: done, staged_before, left })
}

/// The detected face that is the stored sample's: of the faces whose box overlaps the stored box
/// by at least `min_iou`, the one that overlaps it most. A photo may hold several people; the
/// stored box says which one was enrolled.
pub fn matching_face<'a>(
    stored: &BoundingBox,
    faces: impl IntoIterator<Item = &'a DetectedFace>,
    min_iou: f32,
) -> std::result::Result<&'a DetectedFace, ReindexFailure> {
    let mut any = false;
    let mut best: Option<(f32, &DetectedFace)> = None;
    for face in faces {
        any = true;
        let iou = stored.iou(&face.bbox);
        if best.is_none_or(|(b, _)| iou > b) {
            best = Some((iou, face));
        }
    }
    match best {
        Some((iou, face)) if iou >= min_iou => Ok(face),
        _ if any => Err(ReindexFailure::NoMatchingFace),
        _ => Err(ReindexFailure::NoFace),
    }
}

/// What every page of a run shares.
struct Job<'a> {
    engine: &'a dyn Engine,
    store: &'a dyn Store,
    config: &'a ReindexConfig,
    model_id: &'a str,
    progress: &'a (dyn Fn(ReindexProgress<'_>) + Sync),
}

impl Job<'_> {
    /// Stages an outcome for every sample of `tenant` that has none yet.
    fn tenant(&self, tenant: &Tenant) -> Result<()> {
        let mut after: Option<String> = None;
        loop {
            let page = self.store.samples_to_reindex(&tenant.id, self.model_id, after.as_deref(), PAGE)?;
            let Some(last) = page.last() else { return Ok(()) };
            after = Some(last.id.clone());
            self.page(tenant, &page)?;
            if page.len() < PAGE {
                return Ok(());
            }
        }
    }

    /// Re-embeds `page` on the workers while this thread stages their outcomes in batches.
    fn page(&self, tenant: &Tenant, page: &[FaceSample]) -> Result<()> {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let fail = |e: Error| {
            stop.store(true, Ordering::Relaxed);
            failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
        };
        let (done_tx, done_rx) = mpsc::channel::<StagedSample>();
        std::thread::scope(|scope| {
            for _ in 0..self.config.workers.clamp(1, page.len().max(1)) {
                let done_tx = done_tx.clone();
                let (next, stop, fail) = (&next, &stop, &fail);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(sample) = page.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
                        match self.reembed(tenant, sample) {
                            Ok(outcome) => {
                                let staged = StagedSample {
                                    tenant_id: tenant.id.clone(),
                                    subject_id: sample.subject_id.clone(),
                                    sample_id: sample.id.clone(),
                                    outcome,
                                };
                                if done_tx.send(staged).is_err() {
                                    break;
                                }
                            }
                            Err(e) => fail(e),
                        }
                    }
                });
            }
            drop(done_tx);
            let mut batch = Vec::with_capacity(REINDEX_STAGE_BATCH);
            // Ends once every worker has stopped. After a failure the rest is drained, not staged.
            for staged in done_rx {
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                batch.push(staged);
                if batch.len() >= REINDEX_STAGE_BATCH {
                    if let Err(e) = self.stage(&mut batch) {
                        fail(e);
                    }
                }
            }
            if !stop.load(Ordering::Relaxed) {
                if let Err(e) = self.stage(&mut batch) {
                    fail(e);
                }
            }
        });
        match failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn stage(&self, batch: &mut Vec<StagedSample>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.store.stage_reindexed(self.model_id, batch)?;
        (self.progress)(ReindexProgress::Staged { samples: batch.len() as u64 });
        batch.clear();
        Ok(())
    }

    /// One sample's outcome. `Err` only for what no other sample would escape either: the store
    /// failing, or the engine giving templates of the wrong size.
    fn reembed(&self, tenant: &Tenant, sample: &FaceSample) -> Result<ReindexOutcome> {
        let failed = |failure: ReindexFailure, detail: &str| {
            (self.progress)(ReindexProgress::Failed { tenant, sample, failure, detail });
            Ok(ReindexOutcome::Failed(failure))
        };
        let image = match self.store.sample_image(&tenant.id, &sample.id)? {
            StoredImage::Bytes(bytes) => bytes,
            StoredImage::Missing => return failed(ReindexFailure::ImageMissing, "no image is stored"),
            StoredImage::Unreadable(why) => return failed(ReindexFailure::ImageUnreadable, &why),
        };
        let analysis = match self.engine.analyze(&image, AnalyzeOptions::default()) {
            Ok(analysis) => analysis,
            Err(e) => {
                let failure = match e {
                    Error::TooLarge(_) => ReindexFailure::ImageTooLarge,
                    Error::UnsupportedImage(_) | Error::InvalidImage(_) => ReindexFailure::ImageUnreadable,
                    _ => ReindexFailure::InferenceError,
                };
                return failed(failure, &e.to_string());
            }
        };
        let face = match matching_face(&sample.bbox, analysis.faces.iter().map(|f| &f.face), self.config.min_iou) {
            Ok(face) => face,
            Err(failure) => {
                let detail = format!("{} faces found, none overlapping the stored box enough", analysis.faces.len());
                return failed(failure, &detail);
            }
        };
        let size = self.engine.model_info().embedding_size;
        if face.embedding.len() != size {
            return Err(Error::Engine(format!(
                "the engine made a {}-value template; its model's are {size}",
                face.embedding.len()
            )));
        }
        Ok(ReindexOutcome::Reembedded(ReembeddedFace {
            bbox: face.bbox,
            detector_score: face.detector_score,
            embedding: face.embedding.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NewSample, Profile, Subject};
    use crate::ports::{GalleryStore, ReindexStore, TenantStore};
    use crate::testing::{FakeEngine, MemoryStore};

    /// A subject of `tenant` with one sample per image, made by `model`, its box where the fake
    /// engine puts the largest face.
    fn enroll(store: &MemoryStore, tenant: &Tenant, subject_id: &str, images: &[&[u8]], model: &str) {
        let subject = Subject {
            id: subject_id.into(),
            tenant_id: tenant.id.clone(),
            customer_person_id: Some(subject_id.into()),
            profile: Profile::default(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        store.create_subject(&subject, None).expect("subject");
        for (i, image) in images.iter().enumerate() {
            let sample = NewSample {
                sample: FaceSample {
                    id: format!("{subject_id}-{i}"),
                    subject_id: subject_id.into(),
                    image_name: format!("enroll/{subject_id}-{i}.jpg"),
                    bbox: BoundingBox { left: 0.0, top: 0.0, right: 100.0, bottom: 100.0 },
                    detector_score: 0.9,
                    model_id: model.into(),
                    created_at: String::new(),
                },
                embedding: vec![0.0; 4],
                image: image.to_vec(),
            };
            store.update_subject(&subject, Some(&sample), None).expect("sample");
        }
    }

    fn run(engine: &Arc<FakeEngine>, store: &Arc<MemoryStore>) -> ReindexReport {
        let config = ReindexConfig { workers: 3, min_iou: DEFAULT_REINDEX_MIN_IOU };
        Reindexer::new(engine.clone(), store.clone()).run(&config, &|_| {}).expect("reindex")
    }

    #[test]
    fn every_stored_face_gets_a_template_of_the_new_model_and_failures_keep_theirs() {
        let store = Arc::new(MemoryStore::default());
        let acme = store.create_tenant("acme", "h1").expect("tenant");
        let beta = store.create_tenant("beta", "h2").expect("tenant");
        enroll(&store, &acme, "alice", &[b"face:alice", b"face:alice\nface:bob"], "old@1");
        enroll(&store, &acme, "carol", &[b"no face here"], "old@1");
        enroll(&store, &beta, "dave", &[b"face:dave", b"\xff not text"], "old@1");
        let engine = Arc::new(FakeEngine::with_model_id("new@1"));
        let before = store.stale_templates("new@1").expect("stale");
        assert_eq!((before.stale_samples(), before.unsearchable_subjects()), (5, 3));

        let report = run(&engine, &store);
        assert_eq!(report.reembedded(), 3, "{report:?}");
        let failed = report.failed();
        assert_eq!(failed.get("no face"), Some(&1), "{failed:?}");
        assert_eq!(failed.get("image unreadable"), Some(&1), "{failed:?}");
        assert_eq!(report.tenants.iter().map(|t| t.tenant.name.as_str()).collect::<Vec<_>>(), ["acme", "beta"]);
        let mut new: Vec<String> = Vec::new();
        store.for_each_template("new@1", &mut |t| new.push(t.sample_id)).expect("templates");
        new.sort();
        assert_eq!(new, ["alice-0", "alice-1", "dave-0"]);
        // carol's only sample failed: she is left unsearchable, and counted; dave keeps his
        // unreadable sample's old template but is found by the other.
        assert_eq!(report.left.unsearchable_subjects(), 1, "{:?}", report.left);
        assert_eq!(report.left.stale_samples(), 2, "{:?}", report.left);
        assert!(store.staged_reindex("new@1").expect("staged").is_empty(), "the staging is emptied");

        // A second run tries the failures again, and changes nothing else.
        let again = run(&engine, &store);
        assert_eq!((again.reembedded(), again.failed().values().sum::<u64>()), (0, 2), "{again:?}");
    }

    #[test]
    fn outcomes_staged_by_an_interrupted_run_are_not_redone() {
        let store = Arc::new(MemoryStore::default());
        let acme = store.create_tenant("acme", "h1").expect("tenant");
        enroll(&store, &acme, "alice", &[b"face:alice", b"face:alice"], "old@1");
        // What a run killed after its first batch left: one outcome, made up here so that
        // redoing it would show.
        let left_by_kill = StagedSample {
            tenant_id: acme.id.clone(),
            subject_id: "alice".into(),
            sample_id: "alice-0".into(),
            outcome: ReindexOutcome::Failed(ReindexFailure::NoFace),
        };
        store.stage_reindexed("new@1", &[left_by_kill]).expect("stage");
        let report = run(&Arc::new(FakeEngine::with_model_id("new@1")), &store);
        assert_eq!(report.staged_before, 1);
        assert_eq!(report.reembedded(), 1);
        assert_eq!(report.failed().get("no face"), Some(&1), "the staged outcome was kept: {report:?}");
    }

    #[test]
    fn nothing_stale_is_nothing_to_do() {
        let store = Arc::new(MemoryStore::default());
        let acme = store.create_tenant("acme", "h1").expect("tenant");
        enroll(&store, &acme, "alice", &[b"face:alice"], "new@1");
        let report = run(&Arc::new(FakeEngine::with_model_id("new@1")), &store);
        assert!(report.tenants.is_empty() && report.left.is_empty(), "{report:?}");
    }

    fn face(left: f32, top: f32, side: f32) -> DetectedFace {
        DetectedFace {
            bbox: BoundingBox { left, top, right: left + side, bottom: top + side },
            landmarks: [[0.0; 2]; 5],
            detector_score: 0.9,
            embedding: vec![left],
        }
    }

    #[test]
    fn the_face_where_the_stored_box_is_is_taken_among_several() {
        let stored = BoundingBox { left: 100.0, top: 0.0, right: 200.0, bottom: 100.0 };
        let faces = [face(0.0, 0.0, 100.0), face(105.0, 5.0, 95.0), face(300.0, 0.0, 100.0)];
        assert_eq!(matching_face(&stored, &faces, 0.5).map(|f| f.bbox.left), Ok(105.0));
        // Only a neighbour, overlapping by a third: the stored face was missed.
        let neighbour = [face(150.0, 0.0, 100.0)];
        assert!(stored.iou(&neighbour[0].bbox) < 0.5);
        assert_eq!(matching_face(&stored, &neighbour, 0.5), Err(ReindexFailure::NoMatchingFace));
        assert_eq!(matching_face(&stored, &[], 0.5), Err(ReindexFailure::NoFace));
    }
}
