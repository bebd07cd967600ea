//! The service itself: its parts, its configuration, and what every topic shares: the one
//! helper that runs store work on a blocking thread, face finding on the inference pool, and
//! the per-subject write locks.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{
    AnalyzeOptions, AttributedFace, DetectedFace, FaceAttributes, FaceSample, ImageAnalysis, ImageUpload, ModelInfo,
    NewSample, StaleTemplates, Subject, Template, Tenant,
};
use crate::pool::InferencePool;
use crate::ports::{Engine, Index, IndexSnapshots, Store};

use super::text::{now_rfc3339, stored_image_name};

/// The score (0–9999) at which a face is "known" unless configured otherwise. 7000 is a
/// false-match rate of 1e-4 under the pack's calibration (`docs/accuracy.md`): one wrong match
/// in ten thousand comparisons with someone else.
pub const DEFAULT_KNOWN_THRESHOLD: u32 = 7000;

/// The lowest face quality (0–1) a [`FacePolicy::SingleOfQuality`] write needs unless configured
/// otherwise. 0.5 passes 99 % of LFW photos and refuses tiny (~20 px) or heavily blurred faces.
pub const DEFAULT_MIN_FACE_QUALITY: f32 = 0.5;

/// Inference jobs that may wait per worker before requests are refused with 503. 16 per worker
/// bounds the wait at about a second on a 2-core machine: clients get a quick 503 to retry
/// rather than an unbounded wait.
pub const DEFAULT_INFERENCE_QUEUE_PER_WORKER: usize = 16;

/// The largest encoded image the service is handed. 10 MiB holds any reasonable photo (a 12 MP
/// phone JPEG is 3–5 MiB). One constant for the server's request body limit and the engine's
/// input limit, the only crate both depend on: an image the server accepts is never refused by
/// the engine as too large, and the binary passes one setting (`body_limit_bytes`) to both.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 10 << 20;

/// Bulk registration records one tenant may have waiting: two full jobs
/// ([`crate::jobs::MAX_BULK_REGISTRATIONS`] each), so that a tenant can queue its next job while
/// one runs, and no tenant can fill the disk with records.
pub const DEFAULT_MAX_BULK_QUEUED_PER_TENANT: u64 = 2 * crate::jobs::MAX_BULK_REGISTRATIONS as u64;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// A face is "known" when its score (0–9999) reaches this; see [`DEFAULT_KNOWN_THRESHOLD`].
    pub known_threshold: u32,
    /// Concurrent inference jobs; one per core keeps every core busy without oversubscribing.
    pub inference_workers: usize,
    /// Jobs allowed to wait for a worker before requests are refused with 503.
    pub inference_queue: usize,
    /// Writes with [`FacePolicy::SingleOfQuality`] below this quality are refused with PoorQuality.
    pub min_face_quality: f32,
    /// Bulk registration records a tenant may have waiting, over all its jobs; see
    /// [`DEFAULT_MAX_BULK_QUEUED_PER_TENANT`].
    pub max_bulk_queued_per_tenant: u64,
    /// How often the sightings past their tenant's retention are deleted; see
    /// [`DEFAULT_SIGHTING_PURGE_EVERY`].
    pub sighting_purge_every: std::time::Duration,
}

/// A minute between retention purges: retentions are days, so a kept face outlives its
/// retention by at most a minute, and the purge (an indexed delete per opted-in tenant) costs
/// nothing when there is nothing to delete.
pub const DEFAULT_SIGHTING_PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for ServiceConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            known_threshold: DEFAULT_KNOWN_THRESHOLD,
            inference_workers: cores,
            inference_queue: cores * DEFAULT_INFERENCE_QUEUE_PER_WORKER,
            min_face_quality: DEFAULT_MIN_FACE_QUALITY,
            max_bulk_queued_per_tenant: DEFAULT_MAX_BULK_QUEUED_PER_TENANT,
            sighting_purge_every: DEFAULT_SIGHTING_PURGE_EVERY,
        }
    }
}

pub struct FaceService {
    pub(super) engine: Arc<dyn Engine>,
    pub(super) store: Arc<dyn Store>,
    pub(super) index: Arc<dyn Index>,
    pub(super) pool: InferencePool,
    pub(super) config: ServiceConfig,
    /// Wakes the bulk runner when a job is created.
    pub(super) bulk_wakeup: tokio::sync::Notify,
    /// Serialises the store write and the index update of one subject against another write
    /// or a delete of the same subject, so that the index applies them in the store's order:
    /// without it, an enroll's index insert landing after a racing delete would leave a
    /// template of a deleted subject searchable.
    pub(super) subject_locks: SubjectLocks,
    /// The last change of the store's log that the index reflects (`follow.rs`).
    pub(super) applied_change: std::sync::atomic::AtomicU64,
    /// The stored templates of other models, as [`FaceService::check_stale_templates`] last
    /// found them.
    pub(super) stale: parking_lot::RwLock<StaleTemplates>,
    /// Snapshots of the index on local disk (`snapshots.rs`); `None` loads from the store.
    pub(super) snapshots: Option<Arc<dyn IndexSnapshots>>,
    /// The kept sightings' templates (`unknown.rs`); `None` keeps no unknown face.
    pub(super) unknown: Option<Arc<dyn Index>>,
    /// Serialises a tenant's unknown-faces writes with their index updates, as `subject_locks`
    /// does a subject's. A set of its own: a promotion holds one of these and a subject lock.
    pub(super) unknown_locks: SubjectLocks,
}

/// Striped locks keyed by (tenant, subject). 256 stripes make two unrelated subjects share a
/// lock rarely, and a shared stripe only costs waiting out one store write.
pub(super) struct SubjectLocks(Vec<tokio::sync::Mutex<()>>);

impl SubjectLocks {
    const STRIPES: usize = 256;

    fn new() -> Self {
        Self((0..Self::STRIPES).map(|_| tokio::sync::Mutex::new(())).collect())
    }

    /// The lock of a whole tenant (its unknown faces).
    pub(super) async fn lock_tenant(&self, tenant_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock(tenant_id, "").await
    }

    pub(super) async fn lock(&self, tenant_id: &str, subject_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (tenant_id, subject_id).hash(&mut hasher);
        let stripe = (hasher.finish() % Self::STRIPES as u64) as usize;
        self.0[stripe].lock().await
    }
}

impl FaceService {
    pub fn new(engine: Arc<dyn Engine>, store: Arc<dyn Store>, index: Arc<dyn Index>, config: ServiceConfig) -> Self {
        let pool = InferencePool::new(config.inference_workers, config.inference_queue);
        Self {
            engine,
            store,
            index,
            pool,
            config,
            bulk_wakeup: tokio::sync::Notify::new(),
            subject_locks: SubjectLocks::new(),
            applied_change: std::sync::atomic::AtomicU64::new(0),
            stale: parking_lot::RwLock::new(StaleTemplates::default()),
            snapshots: None,
            unknown: None,
            unknown_locks: SubjectLocks::new(),
        }
    }

    /// Loads the index from `snapshots` where it can, and keeps them up to date.
    pub fn with_snapshots(mut self, snapshots: Arc<dyn IndexSnapshots>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// Looks up the stored templates that other models than the engine's made, which the index
    /// leaves out, and keeps what it found for [`Self::stale_templates`]. Called at start-up: the
    /// count only changes when a subject is deleted or `facegate reindex` runs (with the server
    /// stopped), and the query reads every sample, too much for each readiness probe.
    pub fn check_stale_templates(&self) -> Result<StaleTemplates> {
        let found = self.store.stale_templates(&self.engine.model_info().model_id)?;
        *self.stale.write() = found.clone();
        Ok(found)
    }

    /// The stale templates as [`Self::check_stale_templates`] last found them; none before.
    pub fn stale_templates(&self) -> StaleTemplates {
        self.stale.read().clone()
    }

    /// Fills the index with every stored template of the engine's model: each tenant from its
    /// snapshot where one is usable (`snapshots.rs`), the others from the store. Returns the
    /// count. A snapshot is older than the store: [`FaceService::sync_index`] must run before
    /// the index serves, to apply the changes since.
    pub fn load_index(&self) -> Result<usize> {
        self.index.loading(true);
        let loaded = self.load_index_inner();
        self.index.loading(false);
        if let Some(unknown) = &self.unknown {
            unknown.clear();
            let sightings = self.load_sightings(None)?;
            tracing::info!(sightings, "loaded the kept sightings of unknown faces");
        }
        loaded
    }

    fn load_index_inner(&self) -> Result<usize> {
        let model_id = self.engine.model_info().model_id.clone();
        // The index will reflect at least every change up to `latest` (changes during the load
        // are applied again, harmlessly), so the follower starts after it, or after the oldest
        // snapshot's position.
        let feed = self.store.change_feed();
        let latest = feed.map(|f| f.latest_change()).transpose()?.unwrap_or(0);
        let mut restored = std::collections::HashMap::new();
        if let (Some(snapshots), Some(feed)) = (&self.snapshots, feed) {
            let usable = feed.pruned_through()?..=latest;
            for snapshot in snapshots.restore(&model_id, usable)? {
                restored.insert(snapshot.tenant_id, snapshot.position);
            }
        }
        let tenants = if restored.is_empty() { Vec::new() } else { self.store.list_tenants()? };
        if !restored.is_empty() {
            // A tenant deleted since its snapshot (by a command with no server running) is gone
            // from the store: its faces must not come back from the snapshot.
            restored.retain(|tenant_id, _| {
                let kept = tenants.iter().any(|t| &t.id == tenant_id);
                if !kept {
                    self.index.remove_tenant(tenant_id);
                    self.forget_snapshot(tenant_id);
                }
                kept
            });
        }
        let applied = restored.values().copied().min().unwrap_or(latest).min(latest);
        self.applied_change.store(applied, std::sync::atomic::Ordering::Release);
        let mut count = 0usize;
        if restored.is_empty() {
            count = self.load_templates(&model_id, None)?;
        } else {
            for tenant in &tenants {
                if restored.contains_key(&tenant.id) {
                    count += self.index.len(&tenant.id);
                } else {
                    count += self.load_templates(&model_id, Some(&tenant.id))?;
                }
            }
        }
        self.store.for_each_subject_tags(&mut |tenant_id, subject_id, tags| {
            if !restored.contains_key(tenant_id) {
                self.index.set_subject_tags(tenant_id, subject_id, &tags);
            }
        })?;
        Ok(count)
    }

    /// Inserts every stored template of `model_id` (of one tenant, or of all) into the index.
    ///
    /// Reading the store and filling the index take about as long as each other (5 and 7.5 s at
    /// a million templates), so one thread reads while this one inserts.
    fn load_templates(&self, model_id: &str, tenant_id: Option<&str>) -> Result<usize> {
        const BATCH: usize = 4096;
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Template>>(8);
        let store = self.store.clone();
        let (model_id, tenant_id) = (model_id.to_owned(), tenant_id.map(str::to_owned));
        let reader = std::thread::Builder::new()
            .name("template-reader".into())
            .spawn(move || -> Result<()> {
                let mut batch = Vec::with_capacity(BATCH);
                let mut visit = |template| {
                    batch.push(template);
                    if batch.len() == BATCH {
                        // Only fails once the receiver is gone, and then nothing waits for more.
                        let _ = batches.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                    }
                };
                match &tenant_id {
                    Some(tenant_id) => store.for_each_tenant_template(tenant_id, &model_id, &mut visit)?,
                    None => store.for_each_template(&model_id, &mut visit)?,
                }
                if !batch.is_empty() {
                    let _ = batches.send(batch);
                }
                Ok(())
            })
            .map_err(|e| Error::Internal(format!("cannot start the template reader: {e}")))?;
        let mut count = 0usize;
        for batch in received {
            count += batch.len();
            batch.into_iter().for_each(|template| self.index.insert(template));
        }
        reader.join().map_err(|_| Error::Internal("the template reader panicked".into()))??;
        Ok(count)
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Templates the index holds for a tenant: every stored face sample of the current model.
    pub fn template_count(&self, tenant: &Tenant) -> usize {
        self.index.len(&tenant.id)
    }

    /// Sets the gauges read at a scrape: templates per tenant (by id) and the inference pool's
    /// depth and capacity. Gauges are sampled here rather than kept in step with every write,
    /// so a tenant's count costs nothing between scrapes.
    pub async fn publish_gauges(&self) -> Result<()> {
        use crate::telemetry::{POOL_CAPACITY, POOL_DEPTH, TEMPLATES};
        metrics::gauge!(POOL_DEPTH).set(self.pool.depth() as f64);
        metrics::gauge!(POOL_CAPACITY).set(self.pool.capacity() as f64);
        for tenant in self.list_tenants().await? {
            metrics::gauge!(TEMPLATES, "tenant_id" => tenant.id.clone()).set(self.index.len(&tenant.id) as f64);
            // Only the tenants whose sightings this node holds: one count each, none for the rest.
            if self.unknown.as_ref().is_some_and(|u| u.len(&tenant.id) > 0) {
                let tenant_id = tenant.id.clone();
                let people = self.with_store(move |store| store.count_unknown_people(&tenant_id)).await?;
                metrics::gauge!(crate::telemetry::UNKNOWN_PEOPLE, "tenant_id" => tenant.id.clone()).set(people as f64);
            }
        }
        Ok(())
    }

    /// The active model pack: its id (which every template records), dimensions and score
    /// calibration.
    pub fn model_info(&self) -> &ModelInfo {
        self.engine.model_info()
    }

    /// Whether the store answers and has room to write (the models are loaded before a
    /// service exists).
    pub async fn readiness(&self) -> Result<()> {
        self.with_store(|store| store.check_ready()).await
    }

    /// Runs `work` on the store on a blocking thread: every store call may block (PostgreSQL's
    /// client most of all), and none may run on the async threads.
    pub(crate) async fn with_store<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&dyn Store) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        blocking(move || work(store.as_ref())).await
    }

    // ---- finding faces ---------------------------------------------------------------------

    /// Detects and embeds every face, on the bounded inference pool.
    pub async fn analyze(&self, image: Vec<u8>) -> Result<ImageAnalysis> {
        let engine = self.engine.clone();
        self.pool.run(move || engine.analyze(&image, AnalyzeOptions::default())).await
    }

    /// Every face of `image` (at most `max_faces`, largest first) with its attributes.
    pub async fn extract(&self, image: Vec<u8>, max_faces: usize) -> Result<Vec<AttributedFace>> {
        let engine = self.engine.clone();
        let options = AnalyzeOptions::with_attributes(max_faces);
        self.pool.run(move || engine.analyze(&image, options)).await?.into_attributed()
    }

    /// The face of `image` that `policy` picks.
    pub(super) async fn face_by_policy(&self, image: Vec<u8>, policy: FacePolicy) -> Result<FoundFace> {
        match policy {
            FacePolicy::Largest => {
                let face = self.analyze(image).await?.faces.into_iter().next().map(|f| f.face).ok_or(Error::NoFace)?;
                Ok(FoundFace { face, attributes: None })
            }
            FacePolicy::SingleOfQuality => {
                let found = self.of_quality(self.extract(image, REGISTRATION_FACES_EXAMINED).await?)?;
                Ok(FoundFace { face: found.face, attributes: Some(found.attributes) })
            }
        }
    }

    /// The face a registration takes among `faces` (the largest [`REGISTRATION_FACES_EXAMINED`]
    /// of an image): see [`registrable_face`].
    pub(super) fn of_quality(&self, faces: Vec<AttributedFace>) -> Result<AttributedFace> {
        registrable_face(faces, self.config.min_face_quality, RIVAL_MIN_AREA_RATIO)
    }

    /// A new sample of `subject` made from `face` of `image`.
    pub(super) fn new_sample(&self, subject: &Subject, face: &DetectedFace, image: ImageUpload) -> NewSample {
        NewSample {
            sample: FaceSample {
                id: uuid::Uuid::new_v4().to_string(),
                subject_id: subject.id.clone(),
                image_name: stored_image_name(&image.file_name, &image.bytes),
                bbox: face.bbox,
                detector_score: face.detector_score,
                model_id: self.engine.model_info().model_id.clone(),
                created_at: now_rfc3339(),
            },
            embedding: face.embedding.clone(),
            image: image.bytes,
        }
    }
}

/// Which face of an image a write takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FacePolicy {
    /// The largest face; any others are ignored.
    Largest,
    /// Exactly one face (NoFace or MultipleFaces otherwise), whose quality reaches
    /// `ServiceConfig::min_face_quality` (PoorQuality otherwise). Its attributes come with it.
    SingleOfQuality,
}

/// A face picked by a [`FacePolicy`], with its attributes when the policy measured them.
pub(super) struct FoundFace {
    pub face: DetectedFace,
    pub attributes: Option<FaceAttributes>,
}

/// Faces of an image a registration looks at, largest first. Attributes cost a landmark run per
/// face, so a crowd costs no more than 8; a rival hidden behind 7 larger faces that are not
/// rivals (all poor) is unlikely enough to leave unexamined.
pub const REGISTRATION_FACES_EXAMINED: usize = 8;

/// How large, as a share of the largest face's area, another face must be to make a registration
/// photo ambiguous: 0.5, about 70 % of its width, so two people side by side at a similar distance
/// are still refused. Measured on the first 2,000 LFW photos (`facegate eval registration`,
/// `docs/accuracy.md`, "Which faces count"): 1,908 register against 1,678 when any second face
/// refused, 1,894 at 0.25 and 0.11; under every ratio no registered face missed the labelled
/// person at the photo's centre.
pub const RIVAL_MIN_AREA_RATIO: f32 = 0.5;

/// The face a registration takes: the largest, if no other face could itself be registered
/// (quality at least `min_quality`, or at least the largest's when that is lower, and area at least
/// `rival_area_ratio` of the largest's), and if its own quality reaches `min_quality`. NoFace,
/// MultipleFaces or PoorQuality otherwise.
pub fn registrable_face(
    mut faces: Vec<AttributedFace>,
    min_quality: f32,
    rival_area_ratio: f32,
) -> Result<AttributedFace> {
    if faces.is_empty() {
        return Err(Error::NoFace);
    }
    let largest = faces.swap_remove(0);
    let largest_area = largest.face.bbox.area();
    // When the largest face is itself too poor, a similar face as good as it makes the photo
    // ambiguous before it makes it poor: a group photo is MultipleFaces, not PoorQuality.
    let bar = min_quality.min(largest.attributes.quality);
    let rival =
        |f: &AttributedFace| f.attributes.quality >= bar && f.face.bbox.area() >= rival_area_ratio * largest_area;
    if faces.iter().any(rival) {
        return Err(Error::MultipleFaces);
    }
    if largest.attributes.quality < min_quality {
        return Err(Error::PoorQuality(format!(
            "face quality {:.3} is below the minimum {min_quality:.3}",
            largest.attributes.quality
        )));
    }
    Ok(largest)
}

/// The face of an image that must hold exactly one.
pub(super) fn only_face(mut faces: Vec<AttributedFace>) -> Result<AttributedFace> {
    match faces.len() {
        0 => Err(Error::NoFace),
        1 => faces.pop().ok_or(Error::NoFace),
        _ => Err(Error::MultipleFaces),
    }
}

pub(super) fn template_of(subject: &Subject, ns: &NewSample) -> Template {
    Template {
        tenant_id: subject.tenant_id.clone(),
        subject_id: subject.id.clone(),
        sample_id: ns.sample.id.clone(),
        embedding: ns.embedding.clone(),
    }
}

/// Runs `job` on a blocking thread.
pub(super) async fn blocking<T, F>(job: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(job).await.map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BoundingBox, Point, Pose};

    /// A face `side` pixels square with `quality`.
    fn face(side: f32, quality: f32) -> AttributedFace {
        let bbox = BoundingBox { left: 0.0, top: 0.0, right: side, bottom: side };
        AttributedFace {
            face: DetectedFace { bbox, landmarks: [[0.0; 2]; 5], detector_score: 0.9, embedding: vec![1.0] },
            attributes: FaceAttributes {
                face_area: bbox,
                head_area: bbox,
                right_eye_center: Point::default(),
                left_eye_center: Point::default(),
                face_score: 0.9,
                frontal_face_score: 1.0,
                pose: Pose::default(),
                quality,
            },
        }
    }

    fn outcome(faces: Vec<AttributedFace>) -> &'static str {
        match registrable_face(faces, 0.5, RIVAL_MIN_AREA_RATIO) {
            Ok(_) => "ok",
            Err(e) => e.code().name(),
        }
    }

    #[test]
    fn only_a_face_that_could_itself_register_is_a_rival() {
        assert_eq!(outcome(vec![]), "NoFace");
        assert_eq!(outcome(vec![face(100.0, 0.8)]), "ok");
        // A small or a poor bystander does not count.
        assert_eq!(outcome(vec![face(100.0, 0.8), face(40.0, 0.9)]), "ok");
        assert_eq!(outcome(vec![face(100.0, 0.8), face(90.0, 0.3)]), "ok");
        assert_eq!(outcome(vec![face(100.0, 0.8), face(70.0, 0.9)]), "ok", "under half the area");
        // Two people of similar size, both good: ambiguous, whichever is larger.
        assert_eq!(outcome(vec![face(100.0, 0.8), face(75.0, 0.6)]), "MultipleFaces");
        // A rival anywhere among the examined faces counts.
        assert_eq!(outcome(vec![face(100.0, 0.8), face(90.0, 0.2), face(80.0, 0.7)]), "MultipleFaces");
        // The person's own face must be good enough.
        assert_eq!(outcome(vec![face(100.0, 0.3), face(30.0, 0.9)]), "PoorQuality");
        assert_eq!(outcome(vec![face(100.0, 0.3), face(90.0, 0.2)]), "PoorQuality");
        // A group of similar poor faces is ambiguous before it is poor.
        assert_eq!(outcome(vec![face(100.0, 0.3), face(90.0, 0.35)]), "MultipleFaces");
    }
}
