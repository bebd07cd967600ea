//! `FaceService`: the use cases both API dialects are translated into.

use std::sync::Arc;

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::pool::InferencePool;
use crate::{
    AnalyzeOptions, AnalyzedFace, ApiCredentials, AttributedFace, BoundingBox, DetectedFace, Engine, Error, FaceSample,
    ImageAnalysis, ImageUpload, Index, NewSample, Profile, Result, Store, Subject, Template, Tenant,
};

/// Longest accepted `customer_person_id` and profile field, in characters.
pub const MAX_ID_CHARS: usize = 128;
pub const MAX_FIELD_CHARS: usize = 256;
/// NEC ID's documented hard limit of tags per application.
pub const MAX_TAGS: usize = 64;
/// Longest tag name, in characters.
pub const MAX_TAG_CHARS: usize = 64;

mod audit;
mod bulk;
mod follow;

use audit::{audit_candidates, audit_matches, audited};
pub use audit::{escape_controls, AUDIT_TARGET};
pub use bulk::BulkConfig;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// A face is "known" when its score (0–9999) reaches this. 7000 is FMR 1e-4 under the
    /// pack's calibration.
    pub known_threshold: u32,
    /// Concurrent inference jobs; one per core keeps every core busy without oversubscribing.
    pub inference_workers: usize,
    /// Jobs allowed to wait for a worker before requests are refused with 503.
    pub inference_queue: usize,
    /// NEC ID registrations below this `faceQualityScore` are refused with PoorQuality.
    pub min_face_quality: f32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { known_threshold: 7000, inference_workers: cores, inference_queue: cores * 16, min_face_quality: 0.5 }
    }
}

/// The best candidate for one face.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub subject: Subject,
    pub sample_id: String,
    pub similarity: f32,
    pub score: u32,
}

/// One detected face of a probe image with its best candidate, if any.
#[derive(Debug, Clone)]
pub struct FaceMatch {
    pub bbox: BoundingBox,
    pub detector_score: f32,
    pub candidate: Option<Candidate>,
    /// The candidate's score reached the known threshold.
    pub known: bool,
}

/// One subject found by an NEC search.
#[derive(Debug, Clone)]
pub struct SearchCandidate {
    pub subject_id: String,
    /// The best event's score, 0–9999.
    pub score: u32,
    /// (event id, score), best first.
    pub events: Vec<(String, u32)>,
}

#[derive(Debug, Clone)]
pub struct Enrolled {
    pub subject: Subject,
    pub sample: FaceSample,
}

#[derive(Debug, Clone)]
pub struct PersonRecord {
    pub subject: Subject,
    /// Newest first.
    pub samples: Vec<FaceSample>,
    /// The box of the face added by this request, if any.
    pub new_face: Option<BoundingBox>,
}

/// A freshly created tenant with its plaintext credentials, shown once.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub tenant: Tenant,
    /// miiCloud `Authorization: Token …`.
    pub token: String,
    /// NEC ID `x-api-key` and AWS Signature V4 keys.
    pub credentials: ApiCredentials,
}

pub struct FaceService {
    engine: Arc<dyn Engine>,
    store: Arc<dyn Store>,
    index: Arc<dyn Index>,
    pool: InferencePool,
    config: ServiceConfig,
    /// Wakes the bulk runner when a job is created.
    bulk_wakeup: tokio::sync::Notify,
    /// Serialises the store write and the index update of one subject against another write
    /// or a delete of the same subject, so that the index applies them in the store's order:
    /// without it, an enroll's index insert landing after a racing delete would leave a
    /// template of a deleted subject searchable.
    subject_locks: SubjectLocks,
    /// The last change of a shared gallery's log that the index reflects (`follow.rs`).
    applied_change: std::sync::atomic::AtomicU64,
}

/// Striped locks keyed by (tenant, subject). 256 stripes make two unrelated subjects share a
/// lock rarely, and a shared stripe only costs waiting out one store write.
struct SubjectLocks(Vec<tokio::sync::Mutex<()>>);

impl SubjectLocks {
    const STRIPES: usize = 256;

    fn new() -> Self {
        Self((0..Self::STRIPES).map(|_| tokio::sync::Mutex::new(())).collect())
    }

    async fn lock(&self, tenant_id: &str, subject_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
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
        }
    }

    /// Fills the index with every stored template of the engine's model. Returns the count.
    ///
    /// Reading the store and filling the index take about as long as each other (5 and 7.5 s at
    /// a million templates), so one thread reads while this one inserts.
    pub fn load_index(&self) -> Result<usize> {
        const BATCH: usize = 4096;
        // A shared gallery: the index will reflect at least every change up to here, so the
        // change follower starts after it (changes during the load are applied again, harmlessly).
        if let Some(feed) = self.store.change_feed() {
            self.applied_change.store(feed.latest_change()?, std::sync::atomic::Ordering::Release);
        }
        let model_id = self.engine.model_info().model_id.clone();
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Template>>(8);
        let store = self.store.clone();
        let reader = std::thread::Builder::new()
            .name("template-reader".into())
            .spawn(move || -> Result<()> {
                let mut batch = Vec::with_capacity(BATCH);
                store.for_each_template(&model_id, &mut |template| {
                    batch.push(template);
                    if batch.len() == BATCH {
                        // Only fails once the receiver is gone, and then nothing waits for more.
                        let _ = batches.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                    }
                })?;
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
        self.store.for_each_subject_tags(&mut |tenant_id, subject_id, tags| {
            self.index.set_subject_tags(tenant_id, subject_id, &tags);
        })?;
        Ok(count)
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Templates the index holds for a tenant: every stored face sample of the current model.
    pub fn template_count(&self, tenant: &Tenant) -> usize {
        self.index.len(&tenant.id)
    }

    /// The tag labels of a subject.
    pub async fn subject_tags(&self, tenant: &Tenant, subject_id: &str) -> Result<Vec<String>> {
        let (store, tid, sid) = (self.store.clone(), tenant.id.clone(), subject_id.to_owned());
        blocking(move || store.subject_tags(&tid, &sid)).await
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Whether the store answers and has room to write (the models are loaded before a
    /// service exists).
    pub async fn readiness(&self) -> Result<()> {
        let store = self.store.clone();
        blocking(move || store.check_ready()).await
    }

    // ---- tenants and auth -------------------------------------------------------------------

    pub fn create_tenant(&self, name: &str) -> Result<NewTenant> {
        create_tenant(self.store.as_ref(), name)
    }

    /// The tenant an NEC `x-api-key` belongs to.
    pub async fn authenticate_api_key(&self, api_key: &str) -> Result<Option<Tenant>> {
        let store = self.store.clone();
        let hash = hash_secret(api_key);
        blocking(move || store.tenant_by_api_key_hash(&hash)).await
    }

    /// The secret of `access_key_id` when it belongs to `tenant`, for signature verification.
    pub async fn access_key_secret(&self, tenant: &Tenant, access_key_id: &str) -> Result<Option<String>> {
        let store = self.store.clone();
        let (tenant_id, akid) = (tenant.id.clone(), access_key_id.to_owned());
        blocking(move || store.access_key_secret(&tenant_id, &akid)).await
    }

    /// Makes sure `name` exists and accepts `token` (the sandbox's public token).
    pub fn ensure_tenant_with_token(&self, name: &str, token: &str) -> Result<Tenant> {
        self.store.ensure_tenant(name, &hash_secret(token))
    }

    pub fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.store.list_tenants()
    }

    pub async fn authenticate_token(&self, token: &str) -> Result<Option<Tenant>> {
        let store = self.store.clone();
        let hash = hash_secret(token);
        blocking(move || store.tenant_by_token_hash(&hash)).await
    }

    // ---- tags -------------------------------------------------------------------------------

    pub async fn create_tag(&self, tenant: &Tenant, name: &str) -> Result<()> {
        validate_name("tag name", name, MAX_TAG_CHARS)?;
        let (store, tenant_id, name) = (self.store.clone(), tenant.id.clone(), name.to_owned());
        blocking(move || store.create_tag(&tenant_id, &name, MAX_TAGS)).await
    }

    pub async fn rename_tag(&self, tenant: &Tenant, old_name: &str, new_name: &str) -> Result<()> {
        validate_name("newName", new_name, MAX_TAG_CHARS)?;
        let (store, tenant_id) = (self.store.clone(), tenant.id.clone());
        let (old, new) = (old_name.to_owned(), new_name.to_owned());
        blocking(move || store.rename_tag(&tenant_id, &old, &new)).await?;
        self.index.rename_tag(&tenant.id, old_name, new_name);
        Ok(())
    }

    pub async fn delete_tag(&self, tenant: &Tenant, name: &str) -> Result<()> {
        let (store, tenant_id, owned_name) = (self.store.clone(), tenant.id.clone(), name.to_owned());
        // Subjects keep the label of a deleted tag (NEC ID documents this), in the store and so
        // in the index: searching by it is refused until a tag of that name exists again.
        if blocking(move || store.delete_tag(&tenant_id, &owned_name)).await? {
            Ok(())
        } else {
            Err(Error::NotFound("tag"))
        }
    }

    pub async fn list_tags(&self, tenant: &Tenant) -> Result<Vec<String>> {
        let (store, tenant_id) = (self.store.clone(), tenant.id.clone());
        blocking(move || store.list_tags(&tenant_id)).await
    }

    // ---- inference --------------------------------------------------------------------------

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

    /// The largest face of `image`, as miiCloud enrolls it; NoFace when there is none.
    async fn largest_face(&self, image: Vec<u8>) -> Result<DetectedFace> {
        self.analyze(image).await?.faces.into_iter().next().map(|f| f.face).ok_or(Error::NoFace)
    }

    /// The one face of `image` with its attributes: NoFace or MultipleFaces otherwise.
    async fn single_face(&self, image: Vec<u8>) -> Result<AttributedFace> {
        only_face(self.extract(image, 2).await?)
    }

    /// The single face of `image`, refused when its quality is below the registration minimum.
    async fn registrable_face(&self, image: Vec<u8>) -> Result<AttributedFace> {
        self.registrable(self.extract(image, 2).await?)
    }

    /// The one face among `faces` (at least the two largest of an image), if it is good enough
    /// to register.
    fn registrable(&self, faces: Vec<AttributedFace>) -> Result<AttributedFace> {
        let found = only_face(faces)?;
        if found.attributes.quality < self.config.min_face_quality {
            return Err(Error::PoorQuality(format!(
                "faceQualityScore {:.3} is below the minimum {:.3}",
                found.attributes.quality, self.config.min_face_quality
            )));
        }
        Ok(found)
    }

    async fn check_tags_exist(&self, tenant: &Tenant, tags: &[String]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let known = self.list_tags(tenant).await?;
        match tags.iter().find(|t| !known.contains(t)) {
            Some(unknown) => Err(Error::InvalidRequest(format!("tag '{unknown}' does not exist; create it first"))),
            None => Ok(()),
        }
    }

    // ---- NEC ID subjects ----------------------------------------------------------------------

    /// Registers a new subject from the single face of `image`, refusing poor quality.
    pub async fn register_subject(
        &self,
        tenant: &Tenant,
        image: Vec<u8>,
        tags: Vec<String>,
    ) -> Result<(Subject, FaceSample, crate::FaceAttributes)> {
        audited(
            tenant,
            "register_subject",
            format!("tags={}", tags.join(",")),
            |(subject, sample, _)| format!("subject={} event={}", subject.id, sample.id),
            async {
                self.check_tags_exist(tenant, &tags).await?;
                let found = self.registrable_face(image.clone()).await?;
                let now = now_rfc3339();
                let subject = Subject {
                    id: uuid::Uuid::new_v4().to_string(),
                    tenant_id: tenant.id.clone(),
                    customer_person_id: None,
                    profile: Profile::default(),
                    created_at: now.clone(),
                    updated_at: now,
                };
                let new_sample =
                    self.new_sample(&subject, &found.face, ImageUpload { file_name: "event".into(), bytes: image });
                let store = self.store.clone();
                let _subject_lock = self.subject_locks.lock(&tenant.id, &subject.id).await;
                let (subject, new_sample, tags) = {
                    let (subject, new_sample) = (subject.clone(), new_sample);
                    blocking(move || {
                        store.create_tagged_subject(&subject, &new_sample, &tags)?;
                        Ok((subject, new_sample, tags))
                    })
                    .await?
                };
                if !tags.is_empty() {
                    self.index.set_subject_tags(&tenant.id, &subject.id, &tags);
                }
                self.index.insert(template_of(&subject, &new_sample));
                Ok((subject, new_sample.sample, found.attributes))
            },
        )
        .await
    }

    /// Adds an event (a face sample) to a subject from the single face of `image`; replaces the
    /// subject's tags when `tags` is given.
    pub async fn add_event(
        &self,
        tenant: &Tenant,
        subject_id: &str,
        image: Vec<u8>,
        tags: Option<Vec<String>>,
    ) -> Result<(Subject, FaceSample, crate::FaceAttributes)> {
        audited(
            tenant,
            "add_event",
            format!("subject={subject_id}"),
            |(_, sample, _)| format!("event={}", sample.id),
            async { self.write_event(tenant, subject_id, None, image, tags).await },
        )
        .await
    }

    /// Replaces the face of one event, keeping its id; replaces the subject's tags when given.
    pub async fn update_event(
        &self,
        tenant: &Tenant,
        subject_id: &str,
        event_id: &str,
        image: Vec<u8>,
        tags: Option<Vec<String>>,
    ) -> Result<(Subject, FaceSample, crate::FaceAttributes)> {
        audited(
            tenant,
            "update_event",
            format!("subject={subject_id} event={event_id}"),
            |(_, sample, _)| format!("event={}", sample.id),
            async { self.write_event(tenant, subject_id, Some(event_id), image, tags).await },
        )
        .await
    }

    /// Adds a new event, or replaces `replacing` when given, from the single registrable face of
    /// `image`, and the subject's tags with `tags` when given, in one store transaction.
    async fn write_event(
        &self,
        tenant: &Tenant,
        subject_id: &str,
        replacing: Option<&str>,
        image: Vec<u8>,
        tags: Option<Vec<String>>,
    ) -> Result<(Subject, FaceSample, crate::FaceAttributes)> {
        let mut subject = self.subject(tenant, subject_id).await?;
        if let Some(tags) = &tags {
            self.check_tags_exist(tenant, tags).await?;
        }
        let found = self.registrable_face(image.clone()).await?;
        subject.updated_at = now_rfc3339();
        let mut new_sample =
            self.new_sample(&subject, &found.face, ImageUpload { file_name: "event".into(), bytes: image });
        if let Some(event_id) = replacing {
            new_sample.sample.id = event_id.to_owned();
        }
        let replace = replacing.is_some();
        let store = self.store.clone();
        let _subject_lock = self.subject_locks.lock(&subject.tenant_id, &subject.id).await;
        // The sample and the tags in one transaction: a failure leaves neither.
        let (subject, new_sample, tags) = blocking(move || {
            if replace {
                store.replace_sample(&subject, &new_sample, tags.as_deref())?;
            } else {
                store.update_subject(&subject, Some(&new_sample), tags.as_deref())?;
            }
            Ok((subject, new_sample, tags))
        })
        .await?;
        if let Some(tags) = tags {
            self.index.set_subject_tags(&subject.tenant_id, &subject.id, &tags);
        }
        // Inserting under an existing sample id replaces that template.
        self.index.insert(template_of(&subject, &new_sample));
        Ok((subject, new_sample.sample, found.attributes))
    }

    /// Deletes one event of a subject.
    pub async fn delete_event(&self, tenant: &Tenant, subject_id: &str, event_id: &str) -> Result<()> {
        audited(tenant, "delete_event", format!("subject={subject_id} event={event_id}"), |()| String::new(), async {
            let subject = self.subject(tenant, subject_id).await?;
            let store = self.store.clone();
            let (tid, sid, eid) = (subject.tenant_id.clone(), subject.id.clone(), event_id.to_owned());
            let _subject_lock = self.subject_locks.lock(&subject.tenant_id, &subject.id).await;
            if !blocking(move || store.delete_sample(&tid, &sid, &eid)).await? {
                return Err(Error::NotFound("event"));
            }
            self.index.remove_sample(&tenant.id, event_id);
            Ok(())
        })
        .await
    }

    /// 1:N search of the single face of `image`: subjects scoring at least `threshold`, best
    /// first, at most `limit`, optionally only those carrying one of `tags`, each with the
    /// scores of all its events.
    pub async fn search(
        &self,
        tenant: &Tenant,
        image: Vec<u8>,
        threshold: u32,
        limit: usize,
        tags: Vec<String>,
    ) -> Result<(Vec<SearchCandidate>, crate::FaceAttributes)> {
        audited(
            tenant,
            "search",
            format!("threshold={threshold} limit={limit} tags={}", tags.join(",")),
            |(candidates, _)| audit_candidates(candidates.iter().map(|c| (c.subject_id.as_str(), c.score))),
            async {
                self.check_tags_exist(tenant, &tags).await?;
                let found = self.single_face(image).await?;
                let calibration = &self.engine.model_info().calibration;
                let index = self.index.clone();
                let (tenant_id, embedding) = (tenant.id.clone(), found.face.embedding.clone());
                // A scan of a large gallery takes milliseconds: off the async threads.
                let hits = blocking(move || Ok(index.search_tagged(&tenant_id, &embedding, limit, &tags))).await?;
                let mut candidates = Vec::new();
                for hit in hits {
                    let score = calibration.score(hit.similarity);
                    if score < threshold {
                        break;
                    }
                    let events = self
                        .index
                        .subject_samples(&tenant.id, &hit.subject_id, &found.face.embedding)
                        .into_iter()
                        .map(|e| (e.sample_id, calibration.score(e.similarity)))
                        .collect();
                    candidates.push(SearchCandidate { subject_id: hit.subject_id, score, events });
                }
                Ok((candidates, found.attributes))
            },
        )
        .await
    }

    /// A subject by id, `NotFound` if it is not this tenant's.
    pub async fn subject(&self, tenant: &Tenant, subject_id: &str) -> Result<Subject> {
        let store = self.store.clone();
        let (tenant_id, sid) = (tenant.id.clone(), subject_id.to_owned());
        blocking(move || store.subject_by_id(&tenant_id, &sid)).await?.ok_or(Error::NotFound("subject"))
    }

    /// The subject's events (face samples), newest first.
    pub async fn events(&self, tenant: &Tenant, subject_id: &str) -> Result<Vec<FaceSample>> {
        let subject = self.subject(tenant, subject_id).await?;
        self.samples(&subject).await
    }

    /// Deletes a subject (an NEC subject or a miiCloud person) with everything it holds.
    pub async fn delete_subject(&self, tenant: &Tenant, subject_id: &str) -> Result<()> {
        audited(tenant, "delete_subject", format!("subject={subject_id}"), |()| String::new(), async {
            let subject = self.subject(tenant, subject_id).await?;
            self.remove_subject(&subject, "subject").await
        })
        .await
    }

    /// 1:1 score (0–9999) of the single face of `image` against one subject's best event.
    pub async fn verify_subject(&self, tenant: &Tenant, subject_id: &str, image: Vec<u8>) -> Result<u32> {
        audited(tenant, "verify_subject", format!("subject={subject_id}"), |score| format!("score={score}"), async {
            let subject = self.subject(tenant, subject_id).await?;
            let found = self.single_face(image).await?;
            let hit = self.index.best_of_subject(&tenant.id, &subject.id, &found.face.embedding);
            Ok(hit.map_or(0, |h| self.engine.model_info().calibration.score(h.similarity)))
        })
        .await
    }

    // ---- persons ----------------------------------------------------------------------------

    /// Enrolls a new person from the largest face of `image`.
    pub async fn enroll(
        &self,
        tenant: &Tenant,
        customer_person_id: &str,
        profile: Profile,
        image: ImageUpload,
    ) -> Result<Enrolled> {
        audited(
            tenant,
            "enroll",
            format!("customer_person_id={customer_person_id}"),
            |e| format!("subject={} sample={}", e.subject.id, e.sample.id),
            async {
                validate_name("customer_person_id", customer_person_id, MAX_ID_CHARS)?;
                let profile = validate_profile(profile)?;
                if self.person(tenant, customer_person_id).await.is_ok() {
                    return Err(conflict(customer_person_id));
                }
                let face = self.largest_face(image.bytes.clone()).await?;
                let now = now_rfc3339();
                let subject = Subject {
                    id: uuid::Uuid::new_v4().to_string(),
                    tenant_id: tenant.id.clone(),
                    customer_person_id: Some(customer_person_id.to_owned()),
                    profile,
                    created_at: now.clone(),
                    updated_at: now,
                };
                let new_sample = self.new_sample(&subject, &face, image);
                let store = self.store.clone();
                let _subject_lock = self.subject_locks.lock(&subject.tenant_id, &subject.id).await;
                let (subject, new_sample) = {
                    let (subject, new_sample) = (subject.clone(), new_sample);
                    blocking(move || store.create_subject(&subject, Some(&new_sample)).map(|()| (subject, new_sample)))
                        .await?
                };
                self.index.insert(template_of(&subject, &new_sample));
                Ok(Enrolled { subject, sample: new_sample.sample })
            },
        )
        .await
    }

    /// Replaces the profile (blank or missing fields are cleared) and adds the largest face of
    /// `image`, if one is given, to the person's samples.
    pub async fn update(
        &self,
        tenant: &Tenant,
        customer_person_id: &str,
        profile: Profile,
        image: Option<ImageUpload>,
    ) -> Result<PersonRecord> {
        audited(
            tenant,
            "update",
            format!("customer_person_id={customer_person_id}"),
            |r| format!("subject={} added_face={}", r.subject.id, r.new_face.is_some()),
            async {
                let profile = validate_profile(profile)?;
                let mut subject = self.person(tenant, customer_person_id).await?;
                let new_sample = match image {
                    Some(image) => {
                        let face = self.largest_face(image.bytes.clone()).await?;
                        Some(self.new_sample(&subject, &face, image))
                    }
                    None => None,
                };
                subject.profile = profile;
                subject.updated_at = now_rfc3339();
                let store = self.store.clone();
                let subject_lock = self.subject_locks.lock(&subject.tenant_id, &subject.id).await;
                let (subject, new_sample) = blocking(move || {
                    store.update_subject(&subject, new_sample.as_ref(), None).map(|()| (subject, new_sample))
                })
                .await?;
                if let Some(ns) = &new_sample {
                    self.index.insert(template_of(&subject, ns));
                }
                drop(subject_lock);
                let samples = self.samples(&subject).await?;
                Ok(PersonRecord { subject, samples, new_face: new_sample.map(|ns| ns.sample.bbox) })
            },
        )
        .await
    }

    pub async fn get_person(&self, tenant: &Tenant, customer_person_id: &str) -> Result<PersonRecord> {
        let subject = self.person(tenant, customer_person_id).await?;
        let samples = self.samples(&subject).await?;
        Ok(PersonRecord { subject, samples, new_face: None })
    }

    /// Deletes the person, their samples, index entries and image files.
    pub async fn delete_person(&self, tenant: &Tenant, customer_person_id: &str) -> Result<Subject> {
        audited(
            tenant,
            "delete_person",
            format!("customer_person_id={customer_person_id}"),
            |subject| format!("subject={}", subject.id),
            async {
                let subject = self.person(tenant, customer_person_id).await?;
                self.remove_subject(&subject, "person").await?;
                Ok(subject)
            },
        )
        .await
    }

    // ---- matching ---------------------------------------------------------------------------

    /// 1:N: every face of `image` against the tenant's whole gallery.
    pub async fn identify(&self, tenant: &Tenant, image: Vec<u8>) -> Result<Vec<FaceMatch>> {
        audited(tenant, "identify", String::new(), |faces: &Vec<FaceMatch>| audit_matches(faces), async {
            let analysis = self.analyze(image).await?;
            let mut matches = Vec::with_capacity(analysis.faces.len());
            for AnalyzedFace { face, .. } in analysis.faces {
                let (index, tenant_id, embedding) = (self.index.clone(), tenant.id.clone(), face.embedding.clone());
                // A scan of a large gallery takes milliseconds: off the async threads.
                let hit = blocking(move || Ok(index.search(&tenant_id, &embedding, 1))).await?.into_iter().next();
                let candidate = match hit {
                    Some(hit) => self.candidate(tenant, &hit.subject_id, hit.sample_id, hit.similarity).await?,
                    None => None,
                };
                matches.push(self.face_match(&face, candidate));
            }
            Ok(matches)
        })
        .await
    }

    /// 1:1: every face of `image` against one person's samples only.
    pub async fn verify(&self, tenant: &Tenant, customer_person_id: &str, image: Vec<u8>) -> Result<Vec<FaceMatch>> {
        audited(
            tenant,
            "verify",
            format!("customer_person_id={customer_person_id}"),
            |faces: &Vec<FaceMatch>| audit_matches(faces),
            async {
                let subject = self.person(tenant, customer_person_id).await?;
                let analysis = self.analyze(image).await?;
                let calibration = &self.engine.model_info().calibration;
                Ok(analysis
                    .faces
                    .iter()
                    .map(|AnalyzedFace { face, .. }| {
                        let candidate =
                            self.index.best_of_subject(&tenant.id, &subject.id, &face.embedding).map(|hit| Candidate {
                                subject: subject.clone(),
                                sample_id: hit.sample_id,
                                similarity: hit.similarity,
                                score: calibration.score(hit.similarity),
                            });
                        self.face_match(face, candidate)
                    })
                    .collect())
            },
        )
        .await
    }

    // ---- helpers ----------------------------------------------------------------------------

    /// Deletes `subject` from the store and the index; `NotFound(what)` if a concurrent delete
    /// got there first.
    async fn remove_subject(&self, subject: &Subject, what: &'static str) -> Result<()> {
        let store = self.store.clone();
        let (tenant_id, subject_id) = (subject.tenant_id.clone(), subject.id.clone());
        let _subject_lock = self.subject_locks.lock(&subject.tenant_id, &subject.id).await;
        let existed = blocking(move || store.delete_subject(&tenant_id, &subject_id)).await?;
        self.index.remove_subject(&subject.tenant_id, &subject.id);
        if existed {
            Ok(())
        } else {
            Err(Error::NotFound(what))
        }
    }

    async fn person(&self, tenant: &Tenant, customer_person_id: &str) -> Result<Subject> {
        let store = self.store.clone();
        let (tenant_id, cpid) = (tenant.id.clone(), customer_person_id.to_owned());
        blocking(move || store.subject_by_customer_id(&tenant_id, &cpid)).await?.ok_or(Error::NotFound("person"))
    }

    async fn samples(&self, subject: &Subject) -> Result<Vec<FaceSample>> {
        let store = self.store.clone();
        let (tenant_id, subject_id) = (subject.tenant_id.clone(), subject.id.clone());
        blocking(move || store.samples_of(&tenant_id, &subject_id)).await
    }

    async fn candidate(
        &self,
        tenant: &Tenant,
        subject_id: &str,
        sample_id: String,
        similarity: f32,
    ) -> Result<Option<Candidate>> {
        let store = self.store.clone();
        let (tenant_id, sid) = (tenant.id.clone(), subject_id.to_owned());
        // A subject deleted between search and lookup is simply no candidate.
        let subject = blocking(move || store.subject_by_id(&tenant_id, &sid)).await?;
        let score = self.engine.model_info().calibration.score(similarity);
        Ok(subject.map(|subject| Candidate { subject, sample_id, similarity, score }))
    }

    fn face_match(&self, face: &DetectedFace, candidate: Option<Candidate>) -> FaceMatch {
        let known = candidate.as_ref().is_some_and(|c| c.score >= self.config.known_threshold);
        FaceMatch { bbox: face.bbox, detector_score: face.detector_score, candidate, known }
    }

    fn new_sample(&self, subject: &Subject, face: &DetectedFace, image: ImageUpload) -> NewSample {
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

fn template_of(subject: &Subject, ns: &NewSample) -> Template {
    Template {
        tenant_id: subject.tenant_id.clone(),
        subject_id: subject.id.clone(),
        sample_id: ns.sample.id.clone(),
        embedding: ns.embedding.clone(),
    }
}

fn conflict(customer_person_id: &str) -> Error {
    Error::Conflict(format!(
        "a person with customer_person_id '{customer_person_id}' already exists; use PUT to add images"
    ))
}

/// The face of an image that must hold exactly one.
fn only_face(mut faces: Vec<AttributedFace>) -> Result<AttributedFace> {
    match faces.len() {
        0 => Err(Error::NoFace),
        1 => faces.pop().ok_or(Error::NoFace),
        _ => Err(Error::MultipleFaces),
    }
}

async fn blocking<T, F>(job: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(job).await.map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// SHA-256 hex of a token or key; only hashes are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// 40 hex characters, the shape of the document's tokens.
pub fn random_token() -> String {
    let bytes: [u8; 20] = rand::thread_rng().gen();
    hex::encode(bytes)
}

/// Creates a tenant with a miiCloud token and NEC credentials; only their hashes (and the
/// signing secret) are stored. Shared by the service and the `tenant create` command, which
/// works on a data directory without loading models.
pub fn create_tenant(store: &dyn Store, name: &str) -> Result<NewTenant> {
    validate_tenant_name(name)?;
    let token = random_token();
    let tenant = store.create_tenant(name, &hash_secret(&token))?;
    let credentials = random_credentials();
    store.add_api_credentials(
        &tenant.id,
        &hash_secret(&credentials.api_key),
        &credentials.access_key_id,
        &credentials.secret_access_key,
    )?;
    Ok(NewTenant { tenant, token, credentials })
}

/// Fresh NEC credentials, shaped like AWS's: a 20-character `AKIA…` access key id and a
/// 40-character secret; the API key is 40 alphanumerics.
pub fn random_credentials() -> ApiCredentials {
    let mut rng = rand::thread_rng();
    let mut alnum = |n: usize| -> String { (&mut rng).sample_iter(&Alphanumeric).take(n).map(char::from).collect() };
    let api_key = alnum(40);
    let access_key_id = format!("AKIA{}", alnum(16).to_ascii_uppercase());
    let secret_access_key = alnum(40);
    ApiCredentials { api_key, access_key_id, secret_access_key }
}

/// RFC 3339 UTC with microseconds, as the document's `created` values.
pub fn now_rfc3339() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::now_utc().format(&format).unwrap_or_else(|_| OffsetDateTime::now_utc().unix_timestamp().to_string())
}

/// `enroll/<stem>_<7 random letters>.<ext>`, from the client's file name, made safe for a path,
/// with the extension taken from the bytes rather than trusted from the name.
pub fn stored_image_name(file_name: &str, bytes: &[u8]) -> String {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or("");
    let stem = base.rsplit_once('.').map_or(base, |(stem, _)| stem);
    let mut safe: String =
        stem.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')).take(64).collect();
    if safe.is_empty() {
        safe.push_str("image");
    }
    let suffix: String = rand::thread_rng().sample_iter(&Alphanumeric).take(7).map(char::from).collect();
    format!("enroll/{safe}_{suffix}.{}", image_extension(bytes))
}

/// File extension for the image format the bytes start with.
pub fn image_extension(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => "jpg",
        [0x89, b'P', b'N', b'G', ..] => "png",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "webp",
        [b'B', b'M', ..] => "bmp",
        _ => "bin",
    }
}

/// Longest tenant name, in characters.
pub const MAX_TENANT_NAME_CHARS: usize = 64;

/// Tenant names name folders (a tenant's area of the bulk bucket), so they are kept to a safe
/// alphabet: ASCII letters, digits, `.`, `_` and `-`, not starting with a dot. No name can then
/// hold a `/`, be `..`, or be hidden.
pub fn validate_tenant_name(name: &str) -> Result<()> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_TENANT_NAME_CHARS || name.starts_with('.') || !name.chars().all(safe) {
        return Err(Error::InvalidRequest(format!(
            "tenant name must be 1 to {MAX_TENANT_NAME_CHARS} of A-Z a-z 0-9 . _ - and not start with a dot; got {name:?}"
        )));
    }
    Ok(())
}

fn validate_name(what: &str, value: &str, max_chars: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::InvalidRequest(format!("{what} is required")));
    }
    if value.chars().count() > max_chars {
        return Err(Error::InvalidRequest(format!("{what} is longer than {max_chars} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(format!("{what} contains control characters")));
    }
    Ok(())
}

/// Blank fields become `None`; over-long fields or control characters are refused.
fn validate_profile(profile: Profile) -> Result<Profile> {
    let check = |what: &str, v: Option<String>| -> Result<Option<String>> {
        match v {
            Some(v) if !v.trim().is_empty() => {
                validate_name(what, &v, MAX_FIELD_CHARS)?;
                Ok(Some(v))
            }
            _ => Ok(None),
        }
    };
    Ok(Profile {
        first_name: check("first_name", profile.first_name)?,
        last_name: check("last_name", profile.last_name)?,
        email: check("email", profile.email)?,
        phone: check("phone", profile.phone)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_keep_the_stem_and_take_the_extension_from_the_bytes() {
        let name = stored_image_name("input/persons/will_smith/will_smith_001.jpg", &[0xFF, 0xD8, 0xFF, 0xE0]);
        assert!(name.starts_with("enroll/will_smith_001_"), "{name}");
        assert!(name.ends_with(".jpg"));
        assert_eq!(name.len(), "enroll/will_smith_001_Fkkx7eK.jpg".len());
        let hostile = stored_image_name("../../etc/pa ss\u{0}wd.png", b"\x89PNG\r\n");
        assert!(hostile.starts_with("enroll/passwd_") && hostile.ends_with(".png"), "{hostile}");
        assert!(stored_image_name("", b"nope").starts_with("enroll/image_"));
    }

    #[test]
    fn validation_refuses_bad_ids() {
        assert!(validate_name("id", "", 10).is_err());
        assert!(validate_name("id", "a\u{7}b", 10).is_err());
        assert!(validate_name("id", &"x".repeat(11), 10).is_err());
        assert!(validate_name("id", "ok", 10).is_ok());
        let p = validate_profile(Profile { first_name: Some("  ".into()), ..Default::default() }).expect("ok");
        assert_eq!(p.first_name, None);
    }

    #[test]
    fn tenant_names_cannot_name_another_folder() {
        for ok in ["acme", "Acme-2", "a.b_c", "sandbox"] {
            assert!(validate_tenant_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "evil/sub", "..", "evil/..", ".hidden", "a b", "ünï", "a\\b", &"x".repeat(65)] {
            assert!(validate_tenant_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 40);
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), a);
        let c = random_credentials();
        assert_eq!(c.access_key_id.len(), 20);
        assert!(c.access_key_id.starts_with("AKIA"));
        assert_eq!(c.secret_access_key.len(), 40);
        assert_ne!(c.api_key, random_credentials().api_key);
    }
}
