//! Fakes of the ports for tests of the service and of the API layers.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::jobs::{BulkJob, BulkJobSummary, BulkRecord, PendingRecord, RecordStatus, RegisterStatus};

use crate::error::{Error, Result};
use crate::model::{
    AnalyzeOptions, AnalyzedFace, BoundingBox, DetectedFace, FaceAttributes, FaceCrop, FaceSample, ImageAnalysis,
    ModelInfo, NewSample, NewSighting, Point, Pose, ReindexOutcome, ReindexTally, Sighting, SightingFace,
    SightingPurge, StagedSample, StaleTemplates, StaleTenant, StoredCredentials, StoredImage, Subject, SubjectHit,
    SubjectSummary, Template, Tenant, TenantPurge, UnknownPerson,
};
use crate::ports::{
    BulkJobStore, Engine, GalleryStore, Index, ReindexStore, Store, TagStore, TenantStore, UnknownFaceStore,
};
use crate::score::Calibration;

/// Reads "images" written as text: `face:<label>` lines. Each label becomes a face whose
/// embedding is a unit vector chosen by the label, so equal labels match and others do not.
pub struct FakeEngine {
    info: ModelInfo,
}

impl Default for FakeEngine {
    fn default() -> Self {
        Self::with_model_id("fake@1")
    }
}

impl FakeEngine {
    /// A fake engine whose templates carry `model_id`: another model, as far as the store can
    /// tell, with the same faces.
    pub fn with_model_id(model_id: &str) -> Self {
        let calibration =
            Calibration::new(vec![(-1.0, 0.0), (0.3, 7000.0), (1.0, 9999.0)]).expect("static knots are valid");
        Self { info: ModelInfo { model_id: model_id.into(), embedding_size: 8, calibration } }
    }
}

impl Engine for FakeEngine {
    fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    fn analyze(&self, image: &[u8], options: AnalyzeOptions) -> Result<ImageAnalysis> {
        let text = std::str::from_utf8(image).map_err(|_| Error::UnsupportedImage("not a fake image".into()))?;
        let faces = text
            .lines()
            .filter_map(|l| l.strip_prefix("face:"))
            .take(options.max_faces)
            .enumerate()
            .map(|(i, label)| {
                let mut embedding = vec![0.0; 8];
                let slot = label.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % 8;
                embedding[slot] = 1.0;
                let size = 100.0 - i as f32;
                let face = DetectedFace {
                    bbox: BoundingBox { left: 0.0, top: 0.0, right: size, bottom: size },
                    landmarks: [[0.0; 2]; 5],
                    detector_score: 0.9,
                    embedding,
                };
                let attributes = options.attributes.then(|| FaceAttributes {
                    face_area: face.bbox,
                    head_area: face.bbox,
                    right_eye_center: Point { x: face.bbox.left + 30.0, y: face.bbox.top + 40.0 },
                    left_eye_center: Point { x: face.bbox.right - 30.0, y: face.bbox.top + 40.0 },
                    face_score: face.detector_score,
                    frontal_face_score: 1.0,
                    pose: Pose::default(),
                    quality: 0.9,
                });
                AnalyzedFace { face, attributes }
            })
            .collect();
        Ok(ImageAnalysis { width: 200, height: 200, faces })
    }

    /// Each crop is a fake image of the face's label (so that it enrolls as the same face) and
    /// names its box; the face fills the crop.
    fn face_crops(&self, image: &[u8], boxes: &[BoundingBox]) -> Result<Vec<FaceCrop>> {
        let analysis = self.analyze(image, AnalyzeOptions::default())?;
        let text = std::str::from_utf8(image).map_err(|_| Error::UnsupportedImage("not a fake image".into()))?;
        let labels: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("face:")).collect();
        boxes
            .iter()
            .map(|b| {
                let label = analysis
                    .faces
                    .iter()
                    .position(|f| f.face.bbox == *b)
                    .and_then(|at| labels.get(at))
                    .ok_or_else(|| Error::InvalidRequest(format!("no face at {b:?}")))?;
                let (w, h) = (b.right - b.left, b.bottom - b.top);
                Ok(FaceCrop {
                    jpeg: format!("face:{label}\ncrop:{},{},{},{}", b.left, b.top, b.right, b.bottom).into_bytes(),
                    face: BoundingBox { left: 0.0, top: 0.0, right: w, bottom: h },
                })
            })
            .collect()
    }
}

#[derive(Default)]
struct MemoryData {
    tenants: Vec<(Tenant, Vec<String>)>,
    /// (tenant id, tag name)
    tags: Vec<(String, String)>,
    /// (tenant id, subject id, tag)
    subject_tags: Vec<(String, String, String)>,
    /// (tenant id, api key hash, access key id, secret)
    credentials: Vec<(String, String, String, String)>,
    /// Signature digest -> when it may be forgotten.
    signatures: HashMap<Vec<u8>, std::time::Instant>,
    /// Tenant id -> how long it keeps unknown faces, for the tenants that opted in.
    unknown_faces_retention: HashMap<String, std::time::Duration>,
    subjects: Vec<Subject>,
    samples: Vec<(FaceSample, Vec<f32>, String)>,
    /// sample id -> image bytes
    images: HashMap<String, Vec<u8>>,
    /// (target model id, outcome)
    staging: Vec<(String, StagedSample)>,
    bulk_jobs: Vec<(BulkJob, Vec<BulkRecord>)>,
    /// (unknown person id, tenant id)
    unknown_people: Vec<(String, String)>,
    /// Kept with their templates as stored.
    sightings: Vec<NewSighting>,
}

impl MemoryData {
    fn has_unknown_person(&self, tenant_id: &str, id: &str) -> bool {
        self.unknown_people.iter().any(|(p, t)| p == id && t == tenant_id)
    }

    /// Deletes the tenant's sightings that `gone` picks, then its unknown people left with none.
    fn purge_sightings(&mut self, tenant_id: &str, gone: impl Fn(&NewSighting) -> bool) -> SightingPurge {
        let before = self.sightings.len();
        self.sightings.retain(|s| s.tenant_id != tenant_id || !gone(s));
        let sightings = (before - self.sightings.len()) as u64;
        let before = self.unknown_people.len();
        let kept: Vec<(String, String)> = std::mem::take(&mut self.unknown_people)
            .into_iter()
            .filter(|(p, t)| t != tenant_id || self.sightings.iter().any(|s| &s.unknown_person_id == p))
            .collect();
        self.unknown_people = kept;
        SightingPurge { sightings, unknown_people: (before - self.unknown_people.len()) as u64 }
    }

    fn add_sample(&mut self, ns: &NewSample, tenant_id: &str) {
        self.images.insert(ns.sample.id.clone(), ns.image.clone());
        self.staging.retain(|(_, s)| s.sample_id != ns.sample.id);
        self.samples.push((ns.sample.clone(), as_stored(&ns.embedding), tenant_id.to_owned()));
    }

    /// What the real stores refuse of a new sample before they write anything: one for another
    /// subject, an image name that could leave the tenant's folder, an id already taken.
    fn check_new_sample(&self, subject: &Subject, ns: &NewSample, replacing: bool) -> Result<()> {
        if ns.sample.subject_id != subject.id {
            return Err(Error::Storage(format!("sample {} is for another subject", ns.sample.id)));
        }
        check_image_name(&subject.tenant_id, &ns.sample.image_name)?;
        if !replacing && self.samples.iter().any(|(s, _, _)| s.id == ns.sample.id) {
            return Err(Error::Conflict(format!("a sample with id '{}' already exists", ns.sample.id)));
        }
        Ok(())
    }

    /// A subject's labels must each name one of its tenant's tags when written.
    fn check_tags(&self, tenant_id: &str, tags: &[String]) -> Result<()> {
        match tags.iter().find(|tag| !self.tags.iter().any(|(t, n)| t == tenant_id && n == *tag)) {
            Some(unknown) => Err(Error::InvalidRequest(format!("unknown tag '{unknown}'"))),
            None => Ok(()),
        }
    }

    /// As the stores' `subjects` table: ids are unique over all tenants, customer ids within one.
    fn check_new_subject(&self, subject: &Subject) -> Result<()> {
        if self.subjects.iter().any(|s| s.id == subject.id) {
            return Err(Error::Conflict(format!("subject '{}' exists", subject.id)));
        }
        if subject.customer_person_id.is_some()
            && self
                .subjects
                .iter()
                .any(|s| s.tenant_id == subject.tenant_id && s.customer_person_id == subject.customer_person_id)
        {
            return Err(Error::Conflict("customer_person_id exists".into()));
        }
        Ok(())
    }

    /// Drops the images and staged outcomes of samples that are gone.
    fn forget_removed(&mut self) {
        let live: std::collections::HashSet<String> = self.samples.iter().map(|(s, _, _)| s.id.clone()).collect();
        self.images.retain(|id, _| live.contains(id));
        self.staging.retain(|(_, s)| live.contains(&s.sample_id));
    }
}

/// A store in memory with the real one's conflict rules.
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<MemoryData>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored image of the tenant's sample named `image_name`, as the store conformance
    /// suite reads a real store's files or rows.
    pub fn image(&self, tenant_id: &str, image_name: &str) -> Option<Vec<u8>> {
        let d = self.lock();
        let (sample, _, _) = d.samples.iter().find(|(s, _, t)| t == tenant_id && s.image_name == image_name)?;
        d.images.get(&sample.id).cloned()
    }

    /// How many images are stored, over all tenants.
    pub fn image_count(&self) -> usize {
        self.lock().images.len()
    }
}

impl TenantStore for MemoryStore {
    fn create_tenant(&self, name: &str, token_hash: &str) -> Result<Tenant> {
        let mut d = self.lock();
        if d.tenants.iter().any(|(t, _)| t.name == name) {
            return Err(Error::Conflict(format!("tenant '{name}' exists")));
        }
        if d.tenants.iter().any(|(_, tokens)| tokens.iter().any(|h| h == token_hash)) {
            return Err(Error::Conflict("token exists".into()));
        }
        let t = Tenant { id: uuid::Uuid::new_v4().to_string(), name: name.into(), created_at: now_rfc3339() };
        d.tenants.push((t.clone(), vec![token_hash.into()]));
        Ok(t)
    }

    fn ensure_tenant(&self, name: &str, token_hash: &str) -> Result<Tenant> {
        let mut d = self.lock();
        // A token of one tenant never becomes another's.
        if d.tenants.iter().any(|(t, tokens)| t.name != name && tokens.iter().any(|h| h == token_hash)) {
            return Err(Error::Conflict("token exists".into()));
        }
        if let Some((t, tokens)) = d.tenants.iter_mut().find(|(t, _)| t.name == name) {
            if !tokens.iter().any(|h| h == token_hash) {
                tokens.push(token_hash.into());
            }
            return Ok(t.clone());
        }
        drop(d);
        self.create_tenant(name, token_hash)
    }

    fn tenant_by_token_hash(&self, token_hash: &str) -> Result<Option<Tenant>> {
        Ok(self.lock().tenants.iter().find(|(_, h)| h.iter().any(|h| h == token_hash)).map(|(t, _)| t.clone()))
    }

    fn list_tenants(&self) -> Result<Vec<Tenant>> {
        Ok(self.lock().tenants.iter().map(|(t, _)| t.clone()).collect())
    }

    fn add_api_credentials(
        &self,
        tenant_id: &str,
        api_key_hash: &str,
        access_key_id: &str,
        secret: &str,
    ) -> Result<()> {
        let mut d = self.lock();
        if d.credentials.iter().any(|c| c.1 == api_key_hash || c.2 == access_key_id) {
            return Err(Error::Conflict("credentials exist".into()));
        }
        d.credentials.push((tenant_id.into(), api_key_hash.into(), access_key_id.into(), secret.into()));
        Ok(())
    }

    fn tenant_by_api_key_hash(&self, api_key_hash: &str) -> Result<Option<Tenant>> {
        let d = self.lock();
        let Some(tenant_id) = d.credentials.iter().find(|c| c.1 == api_key_hash).map(|c| c.0.clone()) else {
            return Ok(None);
        };
        Ok(d.tenants.iter().find(|(t, _)| t.id == tenant_id).map(|(t, _)| t.clone()))
    }

    fn access_key_secret(&self, tenant_id: &str, access_key_id: &str) -> Result<Option<String>> {
        Ok(self.lock().credentials.iter().find(|c| c.0 == tenant_id && c.2 == access_key_id).map(|c| c.3.clone()))
    }

    /// The fake keeps no expiry: old credentials stay valid after a rotation with a grace, and go
    /// at once with a zero grace.
    fn rotate_credentials(&self, tenant_id: &str, new: &StoredCredentials, grace: std::time::Duration) -> Result<u64> {
        let mut d = self.lock();
        if d.credentials.iter().any(|c| c.1 == new.api_key_hash || c.2 == new.access_key_id)
            || d.tenants.iter().any(|(_, tokens)| tokens.contains(&new.token_hash))
        {
            return Err(Error::Conflict("credentials exist".into()));
        }
        let Some((_, tokens)) = d.tenants.iter_mut().find(|(t, _)| t.id == tenant_id) else {
            return Err(Error::NotFound("tenant"));
        };
        let mut retired = tokens.len() as u64;
        if grace.is_zero() {
            tokens.clear();
        }
        tokens.push(new.token_hash.clone());
        retired += d.credentials.iter().filter(|c| c.0 == tenant_id).count() as u64 * 2;
        if grace.is_zero() {
            d.credentials.retain(|c| c.0 != tenant_id);
        }
        d.credentials.push((
            tenant_id.into(),
            new.api_key_hash.clone(),
            new.access_key_id.clone(),
            new.secret_access_key.clone(),
        ));
        Ok(retired)
    }

    fn admit_signature(&self, digest: &[u8], keep: std::time::Duration) -> Result<bool> {
        let now = std::time::Instant::now();
        let mut d = self.lock();
        d.signatures.retain(|_, until| *until > now);
        if d.signatures.contains_key(digest) {
            return Ok(false);
        }
        d.signatures.insert(digest.to_vec(), now + keep);
        Ok(true)
    }

    fn forget_signature(&self, digest: &[u8]) -> Result<()> {
        self.lock().signatures.remove(digest);
        Ok(())
    }

    fn unknown_faces_retention(&self, tenant_id: &str) -> Result<Option<std::time::Duration>> {
        let d = self.lock();
        if !d.tenants.iter().any(|(t, _)| t.id == tenant_id) {
            return Err(Error::NotFound("tenant"));
        }
        Ok(d.unknown_faces_retention.get(tenant_id).copied())
    }

    fn set_unknown_faces_retention(
        &self,
        tenant_id: &str,
        retention: Option<std::time::Duration>,
    ) -> Result<SightingPurge> {
        let mut d = self.lock();
        if !d.tenants.iter().any(|(t, _)| t.id == tenant_id) {
            return Err(Error::NotFound("tenant"));
        }
        Ok(match retention {
            Some(keep) => {
                d.unknown_faces_retention.insert(tenant_id.to_owned(), keep);
                SightingPurge::default()
            }
            None => {
                d.unknown_faces_retention.remove(tenant_id);
                d.purge_sightings(tenant_id, |_| true)
            }
        })
    }

    fn delete_tenant(&self, tenant_id: &str) -> Result<TenantPurge> {
        let mut d = self.lock();
        let Some(at) = d.tenants.iter().position(|(t, _)| t.id == tenant_id) else {
            return Err(Error::NotFound("tenant"));
        };
        let (_, tokens) = d.tenants.remove(at);
        d.unknown_faces_retention.remove(tenant_id);
        let sightings = d.purge_sightings(tenant_id, |_| true);
        let mut purge = TenantPurge {
            credentials: tokens.len() as u64,
            sightings: sightings.sightings,
            unknown_people: sightings.unknown_people,
            ..TenantPurge::default()
        };
        let count = |before: usize, after: usize| (before - after) as u64;
        let n = d.credentials.len();
        d.credentials.retain(|c| c.0 != tenant_id);
        purge.credentials += 2 * count(n, d.credentials.len());
        let n = d.subjects.len();
        d.subjects.retain(|s| s.tenant_id != tenant_id);
        purge.subjects = count(n, d.subjects.len());
        let n = d.samples.len();
        d.samples.retain(|(_, _, t)| t != tenant_id);
        purge.face_samples = count(n, d.samples.len());
        let n = d.images.len();
        d.forget_removed();
        purge.images = count(n, d.images.len());
        let n = d.tags.len();
        d.tags.retain(|(t, _)| t != tenant_id);
        purge.tags = count(n, d.tags.len());
        let n = d.subject_tags.len();
        d.subject_tags.retain(|(t, _, _)| t != tenant_id);
        purge.subject_tags = count(n, d.subject_tags.len());
        purge.bulk_jobs = d.bulk_jobs.iter().filter(|(j, _)| j.tenant_id == tenant_id).count() as u64;
        purge.bulk_records =
            d.bulk_jobs.iter().filter(|(j, _)| j.tenant_id == tenant_id).map(|(_, r)| r.len() as u64).sum();
        d.bulk_jobs.retain(|(j, _)| j.tenant_id != tenant_id);
        Ok(purge)
    }
}

impl GalleryStore for MemoryStore {
    fn create_subject(&self, subject: &Subject, first_sample: Option<&NewSample>) -> Result<()> {
        let mut d = self.lock();
        d.check_new_subject(subject)?;
        if let Some(ns) = first_sample {
            d.check_new_sample(subject, ns, false)?;
        }
        d.subjects.push(subject.clone());
        if let Some(ns) = first_sample {
            d.add_sample(ns, &subject.tenant_id);
        }
        Ok(())
    }

    fn subject_by_id(&self, tenant_id: &str, subject_id: &str) -> Result<Option<Subject>> {
        Ok(self.lock().subjects.iter().find(|s| s.tenant_id == tenant_id && s.id == subject_id).cloned())
    }

    fn subject_by_customer_id(&self, tenant_id: &str, cpid: &str) -> Result<Option<Subject>> {
        Ok(self
            .lock()
            .subjects
            .iter()
            .find(|s| s.tenant_id == tenant_id && s.customer_person_id.as_deref() == Some(cpid))
            .cloned())
    }

    fn update_subject(&self, subject: &Subject, new_sample: Option<&NewSample>, tags: Option<&[String]>) -> Result<()> {
        let mut d = self.lock();
        // Everything is checked before anything changes, as the real stores' one transaction.
        if !d.subjects.iter().any(|s| s.tenant_id == subject.tenant_id && s.id == subject.id) {
            return Err(Error::NotFound("subject"));
        }
        if let Some(ns) = new_sample {
            d.check_new_sample(subject, ns, false)?;
        }
        d.check_tags(&subject.tenant_id, tags.unwrap_or_default())?;
        let slot = d
            .subjects
            .iter_mut()
            .find(|s| s.tenant_id == subject.tenant_id && s.id == subject.id)
            .ok_or(Error::NotFound("subject"))?;
        *slot = subject.clone();
        if let Some(ns) = new_sample {
            d.add_sample(ns, &subject.tenant_id);
        }
        if let Some(tags) = tags {
            replace_tags(&mut d, &subject.tenant_id, &subject.id, tags);
        }
        Ok(())
    }

    fn samples_of(&self, tenant_id: &str, subject_id: &str) -> Result<Vec<FaceSample>> {
        let d = self.lock();
        let mut v: Vec<_> = d
            .samples
            .iter()
            .filter(|(s, _, t)| t == tenant_id && s.subject_id == subject_id)
            .map(|(s, _, _)| s.clone())
            .collect();
        // Newest first; of two at the same time, the later written (the stores' rowid order).
        v.reverse();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(v)
    }

    fn replace_sample(&self, subject: &Subject, sample: &NewSample, tags: Option<&[String]>) -> Result<()> {
        let mut d = self.lock();
        d.check_new_sample(subject, sample, true)?;
        d.check_tags(&subject.tenant_id, tags.unwrap_or_default())?;
        let slot = d
            .samples
            .iter_mut()
            .find(|(s, _, t)| *t == subject.tenant_id && s.subject_id == subject.id && s.id == sample.sample.id)
            .ok_or(Error::NotFound("event"))?;
        *slot = (sample.sample.clone(), as_stored(&sample.embedding), subject.tenant_id.clone());
        if let Some(stored) = d.subjects.iter_mut().find(|s| s.tenant_id == subject.tenant_id && s.id == subject.id) {
            stored.updated_at.clone_from(&subject.updated_at);
        }
        d.images.insert(sample.sample.id.clone(), sample.image.clone());
        d.staging.retain(|(_, s)| s.sample_id != sample.sample.id);
        if let Some(tags) = tags {
            replace_tags(&mut d, &subject.tenant_id, &subject.id, tags);
        }
        Ok(())
    }

    fn delete_sample(&self, tenant_id: &str, subject_id: &str, sample_id: &str) -> Result<bool> {
        let mut d = self.lock();
        let before = d.samples.len();
        d.samples.retain(|(s, _, t)| !(t == tenant_id && s.subject_id == subject_id && s.id == sample_id));
        d.forget_removed();
        Ok(d.samples.len() != before)
    }

    fn delete_subject(&self, tenant_id: &str, subject_id: &str) -> Result<bool> {
        let mut d = self.lock();
        let before = d.subjects.len();
        d.subjects.retain(|s| !(s.tenant_id == tenant_id && s.id == subject_id));
        d.samples.retain(|(s, _, t)| !(t == tenant_id && s.subject_id == subject_id));
        d.forget_removed();
        Ok(d.subjects.len() != before)
    }

    fn create_tagged_subject(&self, subject: &Subject, first_sample: &NewSample, tags: &[String]) -> Result<()> {
        let mut d = self.lock();
        d.check_tags(&subject.tenant_id, tags)?;
        d.check_new_subject(subject)?;
        d.check_new_sample(subject, first_sample, false)?;
        d.subjects.push(subject.clone());
        d.add_sample(first_sample, &subject.tenant_id);
        replace_tags(&mut d, &subject.tenant_id, &subject.id, tags);
        Ok(())
    }

    fn list_subjects(
        &self,
        tenant_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubjectSummary>> {
        let d = self.lock();
        let mut listed: Vec<&Subject> = d
            .subjects
            .iter()
            .filter(|s| s.tenant_id == tenant_id)
            .filter(|s| {
                s.customer_person_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(prefix) && after.is_none_or(|after| id > after))
            })
            .collect();
        listed.sort_by(|a, b| a.customer_person_id.cmp(&b.customer_person_id));
        Ok(listed
            .into_iter()
            .take(limit)
            .map(|subject| {
                let samples: Vec<&FaceSample> = d
                    .samples
                    .iter()
                    .filter(|(s, _, t)| t == tenant_id && s.subject_id == subject.id)
                    .map(|(s, _, _)| s)
                    .collect();
                // The newest by time; of two at the same time, the later written.
                let newest = samples.iter().rev().max_by(|a, b| a.created_at.cmp(&b.created_at));
                SubjectSummary {
                    subject: subject.clone(),
                    samples: samples.len() as u64,
                    newest_sample: newest.map(|s| (*s).clone()),
                }
            })
            .collect())
    }

    fn for_each_template(&self, model_id: &str, visit: &mut dyn FnMut(Template)) -> Result<()> {
        let d = self.lock();
        for (s, e, t) in d.samples.iter().filter(|(s, _, _)| s.model_id == model_id) {
            visit(Template {
                tenant_id: t.clone(),
                subject_id: s.subject_id.clone(),
                sample_id: s.id.clone(),
                embedding: e.clone(),
            });
        }
        Ok(())
    }
}

impl TagStore for MemoryStore {
    fn create_tag(&self, tenant_id: &str, name: &str, max_tags: usize) -> Result<()> {
        let mut d = self.lock();
        if d.tags.iter().any(|(t, n)| t == tenant_id && n == name) {
            return Err(Error::Conflict(format!("tag '{name}' exists")));
        }
        if d.tags.iter().filter(|(t, _)| t == tenant_id).count() >= max_tags {
            return Err(Error::InvalidRequest("tag limit reached".into()));
        }
        d.tags.push((tenant_id.into(), name.into()));
        Ok(())
    }

    fn rename_tag(&self, tenant_id: &str, old_name: &str, new_name: &str) -> Result<()> {
        let mut d = self.lock();
        if d.tags.iter().any(|(t, n)| t == tenant_id && n == new_name) {
            return Err(Error::Conflict(format!("tag '{new_name}' exists")));
        }
        let tag = d.tags.iter_mut().find(|(t, n)| t == tenant_id && n == old_name).ok_or(Error::NotFound("tag"))?;
        tag.1 = new_name.into();
        // A subject that already carries the new name keeps both labels, as the stores'
        // `UPDATE OR IGNORE` does.
        let carrying_new: Vec<String> = d
            .subject_tags
            .iter()
            .filter(|(t, _, label)| t == tenant_id && label == new_name)
            .map(|(_, s, _)| s.clone())
            .collect();
        for (t, subject, label) in d.subject_tags.iter_mut() {
            if t == tenant_id && label == old_name && !carrying_new.contains(subject) {
                *label = new_name.into();
            }
        }
        Ok(())
    }

    fn delete_tag(&self, tenant_id: &str, name: &str) -> Result<bool> {
        let mut d = self.lock();
        let before = d.tags.len();
        d.tags.retain(|(t, n)| !(t == tenant_id && n == name));
        Ok(d.tags.len() != before)
    }

    fn list_tags(&self, tenant_id: &str) -> Result<Vec<String>> {
        Ok(self.lock().tags.iter().filter(|(t, _)| t == tenant_id).map(|(_, n)| n.clone()).collect())
    }

    fn set_subject_tags(&self, tenant_id: &str, subject_id: &str, tags: &[String]) -> Result<()> {
        let mut d = self.lock();
        if !d.subjects.iter().any(|s| s.tenant_id == tenant_id && s.id == subject_id) {
            return Err(Error::NotFound("subject"));
        }
        d.check_tags(tenant_id, tags)?;
        replace_tags(&mut d, tenant_id, subject_id, tags);
        Ok(())
    }

    fn subject_tags(&self, tenant_id: &str, subject_id: &str) -> Result<Vec<String>> {
        Ok(self
            .lock()
            .subject_tags
            .iter()
            .filter(|(t, s, _)| t == tenant_id && s == subject_id)
            .map(|(_, _, tag)| tag.clone())
            .collect())
    }

    fn for_each_subject_tags(&self, visit: &mut dyn FnMut(&str, &str, Vec<String>)) -> Result<()> {
        let d = self.lock();
        let mut grouped: Vec<((String, String), Vec<String>)> = Vec::new();
        for (tenant, subject, tag) in &d.subject_tags {
            match grouped.iter_mut().find(|((t, s), _)| t == tenant && s == subject) {
                Some((_, tags)) => tags.push(tag.clone()),
                None => grouped.push(((tenant.clone(), subject.clone()), vec![tag.clone()])),
            }
        }
        // The stores' order: by tenant, then subject.
        grouped.sort_by(|a, b| a.0.cmp(&b.0));
        for ((tenant, subject), tags) in grouped {
            visit(&tenant, &subject, tags);
        }
        Ok(())
    }
}

impl BulkJobStore for MemoryStore {
    fn create_bulk_job(&self, job: &BulkJob, records: &[BulkRecord]) -> Result<()> {
        self.lock().bulk_jobs.push((job.clone(), records.to_vec()));
        Ok(())
    }

    fn bulk_job(&self, tenant_id: &str, job_id: &str) -> Result<Option<BulkJob>> {
        Ok(self.lock().bulk_jobs.iter().map(|(j, _)| j).find(|j| j.id == job_id && j.tenant_id == tenant_id).cloned())
    }

    fn bulk_records(&self, job_id: &str, after: Option<u64>, limit: usize) -> Result<Vec<BulkRecord>> {
        let d = self.lock();
        let records = d.bulk_jobs.iter().find(|(j, _)| j.id == job_id).map(|(_, r)| r.as_slice()).unwrap_or(&[]);
        Ok(records.iter().filter(|r| after.is_none_or(|a| r.seq > a)).take(limit).cloned().collect())
    }

    fn pending_bulk_records(&self, per_tenant: usize) -> Result<Vec<PendingRecord>> {
        let d = self.lock();
        let mut out: Vec<PendingRecord> = Vec::new();
        // Jobs are kept in creation order.
        for (job, records) in &d.bulk_jobs {
            let Some((tenant, _)) = d.tenants.iter().find(|(t, _)| t.id == job.tenant_id) else { continue };
            let taken = out.iter().filter(|p| p.tenant.id == tenant.id).count();
            for r in records.iter().filter(|r| r.status == RecordStatus::New).take(per_tenant.saturating_sub(taken)) {
                out.push(PendingRecord { tenant: tenant.clone(), job_id: job.id.clone(), record: r.clone() });
            }
        }
        out.sort_by(|a, b| a.tenant.id.cmp(&b.tenant.id));
        Ok(out)
    }

    fn queued_bulk_records(&self, tenant_id: &str) -> Result<u64> {
        let d = self.lock();
        let queued = d
            .bulk_jobs
            .iter()
            .filter(|(j, _)| j.tenant_id == tenant_id)
            .flat_map(|(_, records)| records)
            .filter(|r| r.status == RecordStatus::New)
            .count();
        Ok(queued as u64)
    }

    fn list_bulk_jobs(&self, tenant_id: &str, limit: usize) -> Result<Vec<BulkJobSummary>> {
        let d = self.lock();
        // Jobs are kept in creation order: newest last.
        Ok(d.bulk_jobs
            .iter()
            .rev()
            .filter(|(j, _)| j.tenant_id == tenant_id)
            .take(limit)
            .map(|(job, records)| {
                let outcome = |status| {
                    let done =
                        |r: &&BulkRecord| r.status == RecordStatus::Processed && r.register_status == Some(status);
                    records.iter().filter(done).count() as u64
                };
                BulkJobSummary {
                    job: job.clone(),
                    records: records.len() as u64,
                    processed: records.iter().filter(|r| r.status == RecordStatus::Processed).count() as u64,
                    succeeded: outcome(RegisterStatus::Success),
                    failed: outcome(RegisterStatus::Failed),
                }
            })
            .collect())
    }

    fn save_bulk_record(&self, job_id: &str, record: &BulkRecord) -> Result<()> {
        let mut d = self.lock();
        let records =
            d.bulk_jobs.iter_mut().find(|(j, _)| j.id == job_id).map(|(_, r)| r).ok_or(Error::NotFound("batch"))?;
        let slot = records.iter_mut().find(|r| r.seq == record.seq).ok_or(Error::NotFound("record"))?;
        *slot = record.clone();
        Ok(())
    }

    fn register_bulk_record(
        &self,
        subject: &Subject,
        sample: &NewSample,
        tags: &[String],
        job_id: &str,
        record: &BulkRecord,
    ) -> Result<()> {
        // All or nothing, as the stores' one transaction: the record must exist before the
        // subject is written.
        let known = self
            .lock()
            .bulk_jobs
            .iter()
            .any(|(j, records)| j.id == job_id && records.iter().any(|r| r.seq == record.seq));
        if !known {
            return Err(Error::NotFound("record"));
        }
        self.create_tagged_subject(subject, sample, tags)?;
        self.save_bulk_record(job_id, record)
    }
}

impl ReindexStore for MemoryStore {
    fn stale_templates(&self, model_id: &str) -> Result<StaleTemplates> {
        let d = self.lock();
        let mut models: Vec<String> =
            d.samples.iter().map(|(s, _, _)| s.model_id.clone()).filter(|m| m != model_id).collect();
        models.sort();
        models.dedup();
        let mut tenants = Vec::new();
        for (tenant, _) in &d.tenants {
            let of_tenant: Vec<&FaceSample> =
                d.samples.iter().filter(|(_, _, t)| *t == tenant.id).map(|(s, _, _)| s).collect();
            let stale_samples = of_tenant.iter().filter(|s| s.model_id != model_id).count() as u64;
            if stale_samples == 0 {
                continue;
            }
            let mut subjects: Vec<&str> = of_tenant.iter().map(|s| s.subject_id.as_str()).collect();
            subjects.sort();
            subjects.dedup();
            let unsearchable_subjects = subjects
                .iter()
                .filter(|&&subject| !of_tenant.iter().any(|s| s.subject_id == subject && s.model_id == model_id))
                .count() as u64;
            tenants.push(StaleTenant {
                tenant_id: tenant.id.clone(),
                tenant_name: tenant.name.clone(),
                stale_samples,
                unsearchable_subjects,
            });
        }
        tenants.sort_by(|a, b| a.tenant_name.cmp(&b.tenant_name));
        Ok(StaleTemplates { models, tenants })
    }

    fn samples_to_reindex(
        &self,
        tenant_id: &str,
        model_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FaceSample>> {
        let d = self.lock();
        let staged = |id: &str| d.staging.iter().any(|(m, s)| m == model_id && s.sample_id == id);
        let mut out: Vec<FaceSample> = d
            .samples
            .iter()
            .filter(|(s, _, t)| t == tenant_id && s.model_id != model_id && after.is_none_or(|a| s.id.as_str() > a))
            .filter(|(s, _, _)| !staged(&s.id))
            .map(|(s, _, _)| s.clone())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.truncate(limit);
        Ok(out)
    }

    fn sample_image(&self, tenant_id: &str, sample_id: &str) -> Result<StoredImage> {
        let d = self.lock();
        if !d.samples.iter().any(|(s, _, t)| t == tenant_id && s.id == sample_id) {
            return Ok(StoredImage::Missing);
        }
        Ok(d.images.get(sample_id).cloned().map_or(StoredImage::Missing, StoredImage::Bytes))
    }

    fn stage_reindexed(&self, model_id: &str, staged: &[StagedSample]) -> Result<()> {
        let mut d = self.lock();
        for s in staged {
            let exists = d.samples.iter().any(|(x, _, t)| *t == s.tenant_id && x.id == s.sample_id);
            d.staging.retain(|(m, x)| !(m == model_id && x.sample_id == s.sample_id));
            if exists {
                d.staging.push((model_id.to_owned(), s.clone()));
            }
        }
        Ok(())
    }

    fn staged_reindex(&self, model_id: &str) -> Result<Vec<(String, ReindexTally)>> {
        Ok(tally(self.lock().staging.iter().filter(|(m, _)| m == model_id).map(|(_, s)| s)))
    }

    fn swap_reindexed(&self, model_id: &str) -> Result<Vec<(String, ReindexTally)>> {
        let mut d = self.lock();
        let staged: Vec<StagedSample> =
            d.staging.iter().filter(|(m, _)| m == model_id).map(|(_, s)| s.clone()).collect();
        let unstaged = d
            .samples
            .iter()
            .filter(|(s, _, _)| s.model_id != model_id && !staged.iter().any(|x| x.sample_id == s.id))
            .count();
        if unstaged > 0 {
            return Err(Error::Conflict(format!("{unstaged} samples have no outcome staged for {model_id}")));
        }
        for s in &staged {
            let ReindexOutcome::Reembedded(face) = &s.outcome else { continue };
            if let Some((sample, embedding, _)) = d.samples.iter_mut().find(|(x, _, _)| x.id == s.sample_id) {
                sample.model_id = model_id.to_owned();
                sample.bbox = face.bbox;
                sample.detector_score = face.detector_score;
                *embedding = as_stored(&face.embedding);
            }
        }
        d.staging.clear();
        Ok(tally(staged.iter()))
    }
}

/// Staged outcomes counted per tenant id.
fn tally<'a>(staged: impl Iterator<Item = &'a StagedSample>) -> Vec<(String, ReindexTally)> {
    let mut out: std::collections::BTreeMap<String, ReindexTally> = std::collections::BTreeMap::new();
    for s in staged {
        let entry = out.entry(s.tenant_id.clone()).or_default();
        match &s.outcome {
            ReindexOutcome::Reembedded(_) => entry.reembedded += 1,
            ReindexOutcome::Failed(failure) => *entry.failed.entry(failure.name().to_owned()).or_default() += 1,
        }
    }
    out.into_iter().collect()
}

impl UnknownFaceStore for MemoryStore {
    fn keep_sighting(&self, sighting: &NewSighting, new_person: bool) -> Result<bool> {
        let mut d = self.lock();
        if !d.tenants.iter().any(|(t, _)| t.id == sighting.tenant_id) {
            return Err(Error::NotFound("tenant"));
        }
        if !d.unknown_faces_retention.contains_key(&sighting.tenant_id) {
            return Ok(false);
        }
        if d.sightings.iter().any(|s| s.id == sighting.id) {
            return Err(Error::Conflict(format!("a sighting with id '{}' already exists", sighting.id)));
        }
        let person = &sighting.unknown_person_id;
        if new_person {
            if d.unknown_people.iter().any(|(p, _)| p == person) {
                return Err(Error::Conflict(format!("an unknown person with id '{person}' already exists")));
            }
            d.unknown_people.push((person.clone(), sighting.tenant_id.clone()));
        } else if !d.has_unknown_person(&sighting.tenant_id, person) {
            return Err(Error::NotFound("unknown person"));
        }
        d.sightings.push(NewSighting { embedding: as_stored(&sighting.embedding), ..sighting.clone() });
        Ok(true)
    }

    fn for_each_sighting_template(
        &self,
        tenant_id: Option<&str>,
        model_id: &str,
        visit: &mut dyn FnMut(Template),
    ) -> Result<()> {
        let templates: Vec<Template> = self
            .lock()
            .sightings
            .iter()
            .filter(|s| s.model_id == model_id && tenant_id.is_none_or(|t| t == s.tenant_id))
            .map(|s| Template {
                tenant_id: s.tenant_id.clone(),
                subject_id: s.unknown_person_id.clone(),
                sample_id: s.id.clone(),
                embedding: s.embedding.clone(),
            })
            .collect();
        templates.into_iter().for_each(visit);
        Ok(())
    }

    fn list_unknown_people(&self, tenant_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<UnknownPerson>> {
        let d = self.lock();
        let mut ids: Vec<&String> = d
            .unknown_people
            .iter()
            .filter(|(p, t)| t == tenant_id && after.is_none_or(|a| p.as_str() > a))
            .map(|(p, _)| p)
            .collect();
        ids.sort();
        Ok(ids.into_iter().take(limit).filter_map(|id| unknown_person_of(&d, tenant_id, id)).collect())
    }

    fn unknown_person(&self, tenant_id: &str, unknown_person_id: &str) -> Result<Option<UnknownPerson>> {
        Ok(unknown_person_of(&self.lock(), tenant_id, unknown_person_id))
    }

    fn count_unknown_people(&self, tenant_id: &str) -> Result<u64> {
        Ok(self.lock().unknown_people.iter().filter(|(_, t)| t == tenant_id).count() as u64)
    }

    fn sightings_of(&self, tenant_id: &str, unknown_person_id: &str) -> Result<Vec<Sighting>> {
        let d = self.lock();
        let mut found: Vec<Sighting> = d
            .sightings
            .iter()
            .filter(|s| s.tenant_id == tenant_id && s.unknown_person_id == unknown_person_id)
            .map(|s| Sighting {
                id: s.id.clone(),
                unknown_person_id: s.unknown_person_id.clone(),
                model_id: s.model_id.clone(),
                quality: s.quality,
                seen_unix_ms: s.seen_unix_ms,
                request_id: s.request_id.clone(),
            })
            .collect();
        found.sort_by(|a, b| (a.seen_unix_ms, &a.id).cmp(&(b.seen_unix_ms, &b.id)));
        Ok(found)
    }

    fn sighting_face(&self, tenant_id: &str, sighting_id: &str) -> Result<Option<SightingFace>> {
        let d = self.lock();
        Ok(d.sightings.iter().find(|s| s.tenant_id == tenant_id && s.id == sighting_id).map(|s| SightingFace {
            unknown_person_id: s.unknown_person_id.clone(),
            crop: FaceCrop { jpeg: s.crop.clone(), face: s.crop_face },
            model_id: s.model_id.clone(),
            embedding: s.embedding.clone(),
        }))
    }

    fn merge_unknown_people(&self, tenant_id: &str, into: &str, from: &str) -> Result<u64> {
        let mut d = self.lock();
        if !d.has_unknown_person(tenant_id, into) || !d.has_unknown_person(tenant_id, from) {
            return Err(Error::NotFound("unknown person"));
        }
        if into == from {
            return Err(Error::InvalidRequest("an unknown person cannot be merged into itself".into()));
        }
        let mut moved = 0;
        for s in d.sightings.iter_mut().filter(|s| s.tenant_id == tenant_id && s.unknown_person_id == from) {
            s.unknown_person_id = into.to_owned();
            moved += 1;
        }
        d.unknown_people.retain(|(p, _)| p != from);
        Ok(moved)
    }

    fn split_sightings(&self, tenant_id: &str, from: &str, sighting_ids: &[String], new_person_id: &str) -> Result<()> {
        let mut d = self.lock();
        if !d.has_unknown_person(tenant_id, from) {
            return Err(Error::NotFound("unknown person"));
        }
        let of_from = |d: &MemoryData, id: &str| {
            d.sightings.iter().any(|s| s.tenant_id == tenant_id && s.unknown_person_id == from && s.id == id)
        };
        if sighting_ids.iter().any(|id| !of_from(&d, id)) {
            return Err(Error::NotFound("sighting"));
        }
        let wanted: std::collections::HashSet<&str> = sighting_ids.iter().map(String::as_str).collect();
        let total = d.sightings.iter().filter(|s| s.tenant_id == tenant_id && s.unknown_person_id == from).count();
        if wanted.is_empty() || wanted.len() == total {
            return Err(Error::InvalidRequest("a split must leave some sightings, and take some".into()));
        }
        if d.unknown_people.iter().any(|(p, _)| p == new_person_id) {
            return Err(Error::Conflict(format!("an unknown person with id '{new_person_id}' already exists")));
        }
        d.unknown_people.push((new_person_id.to_owned(), tenant_id.to_owned()));
        for s in d.sightings.iter_mut().filter(|s| s.tenant_id == tenant_id && wanted.contains(s.id.as_str())) {
            s.unknown_person_id = new_person_id.to_owned();
        }
        Ok(())
    }

    fn delete_unknown_person(&self, tenant_id: &str, unknown_person_id: &str) -> Result<Option<SightingPurge>> {
        let mut d = self.lock();
        if !d.has_unknown_person(tenant_id, unknown_person_id) {
            return Ok(None);
        }
        Ok(Some(d.purge_sightings(tenant_id, |s| s.unknown_person_id == unknown_person_id)))
    }

    fn promote_unknown_person(
        &self,
        tenant_id: &str,
        unknown_person_id: &str,
        subject: &Subject,
        samples: &[NewSample],
    ) -> Result<()> {
        let mut d = self.lock();
        if subject.tenant_id != tenant_id || !d.has_unknown_person(tenant_id, unknown_person_id) {
            return Err(Error::NotFound("unknown person"));
        }
        d.check_new_subject(subject)?;
        for ns in samples {
            d.check_new_sample(subject, ns, false)?;
        }
        d.subjects.push(subject.clone());
        for ns in samples {
            d.add_sample(ns, tenant_id);
        }
        d.purge_sightings(tenant_id, |s| s.unknown_person_id == unknown_person_id);
        Ok(())
    }

    fn purge_expired_sightings(&self, now_unix_ms: i64) -> Result<Vec<(String, SightingPurge)>> {
        let mut d = self.lock();
        let retention: Vec<(String, std::time::Duration)> =
            d.unknown_faces_retention.iter().map(|(t, r)| (t.clone(), *r)).collect();
        let mut purged = Vec::new();
        for (tenant_id, keep) in retention {
            let cutoff = now_unix_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            let purge = d.purge_sightings(&tenant_id, |s| s.seen_unix_ms < cutoff);
            if purge.sightings > 0 {
                purged.push((tenant_id, purge));
            }
        }
        purged.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(purged)
    }
}

fn unknown_person_of(d: &MemoryData, tenant_id: &str, id: &str) -> Option<UnknownPerson> {
    if !d.has_unknown_person(tenant_id, id) {
        return None;
    }
    let seen: Vec<i64> = d.sightings.iter().filter(|s| s.unknown_person_id == id).map(|s| s.seen_unix_ms).collect();
    Some(UnknownPerson {
        id: id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        sightings: seen.len() as u64,
        first_seen_unix_ms: seen.iter().copied().min().unwrap_or(0),
        last_seen_unix_ms: seen.iter().copied().max().unwrap_or(0),
    })
}

impl Store for MemoryStore {
    fn check_ready(&self) -> Result<()> {
        Ok(())
    }
}

/// Replaces a subject's labels; repeated names are kept once.
fn replace_tags(d: &mut MemoryData, tenant_id: &str, subject_id: &str, tags: &[String]) {
    d.subject_tags.retain(|(t, s, _)| !(t == tenant_id && s == subject_id));
    for tag in tags {
        let label = (tenant_id.to_owned(), subject_id.to_owned(), tag.clone());
        if !d.subject_tags.contains(&label) {
            d.subject_tags.push(label);
        }
    }
}

/// The stores' creation time: RFC 3339 UTC with microseconds, as `service::now_rfc3339` makes it
/// (not called from here, so that the fakes import nothing of the service they are used to test).
fn now_rfc3339() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    let at = time::OffsetDateTime::now_utc();
    at.format(&format).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// The stores key an image by `<tenant id>/<image name>` and refuse one that could leave the
/// tenant's folder: no empty, `.`, `..` or hidden component, no leading `/`, no NUL or backslash.
fn check_image_name(tenant_id: &str, image_name: &str) -> Result<()> {
    let plain = |name: &str| {
        !name.is_empty()
            && !name.contains(['\0', '\\'])
            && !name.contains("..")
            && name.split('/').all(|c| !c.is_empty() && !c.starts_with('.'))
    };
    if tenant_id.contains('/') || !plain(tenant_id) || !plain(image_name) {
        return Err(Error::InvalidRequest(format!("invalid image name: {tenant_id}/{image_name}")));
    }
    Ok(())
}

/// A template as the stores keep it: each value rounded to half precision (IEEE binary16, to
/// nearest, ties to even), so that what the fake gives back is what a real store would.
fn as_stored(embedding: &[f32]) -> Vec<f32> {
    embedding.iter().map(|&x| to_half_precision(x)).collect()
}

fn to_half_precision(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    // binary16 keeps 10 fraction bits; below its smallest normal (2^-14) the step stays 2^-24.
    let exponent = ((x.to_bits() >> 23) & 0xff) as i32 - 127;
    let step = 2f32.powi(exponent.max(-14) - 10);
    // Both exact: `step` is a power of two.
    let rounded = (x / step).round_ties_even() * step;
    if rounded.abs() > 65504.0 {
        f32::INFINITY.copysign(x)
    } else {
        rounded
    }
}

/// Brute-force index over a vector of templates.
#[derive(Default)]
pub struct BruteForceIndex {
    templates: Mutex<Vec<Template>>,
    /// (tenant, subject) -> tags.
    tags: Mutex<HashMap<(String, String), Vec<String>>>,
}

impl BruteForceIndex {
    fn hits(&self, tenant_id: &str, query: &[f32], subject: Option<&str>) -> Vec<SubjectHit> {
        let templates = self.templates.lock().unwrap_or_else(|e| e.into_inner());
        let mut best: HashMap<String, SubjectHit> = HashMap::new();
        for t in templates.iter().filter(|t| t.tenant_id == tenant_id && subject.is_none_or(|s| s == t.subject_id)) {
            let similarity = t.embedding.iter().zip(query).map(|(a, b)| a * b).sum::<f32>();
            let entry = best.entry(t.subject_id.clone()).or_insert_with(|| SubjectHit {
                subject_id: t.subject_id.clone(),
                sample_id: t.sample_id.clone(),
                similarity: f32::MIN,
            });
            if similarity > entry.similarity {
                entry.similarity = similarity;
                entry.sample_id = t.sample_id.clone();
            }
        }
        let mut v: Vec<_> = best.into_values().collect();
        v.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        v
    }
}

impl Index for BruteForceIndex {
    fn clear(&self) {
        self.templates.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.tags.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn remove_tenant(&self, tenant_id: &str) {
        self.templates.lock().unwrap_or_else(|e| e.into_inner()).retain(|t| t.tenant_id != tenant_id);
        self.tags.lock().unwrap_or_else(|e| e.into_inner()).retain(|(t, _), _| t != tenant_id);
    }

    fn insert(&self, template: Template) {
        self.templates.lock().unwrap_or_else(|e| e.into_inner()).push(template);
    }

    fn remove_subject(&self, tenant_id: &str, subject_id: &str) {
        self.tags.lock().unwrap_or_else(|e| e.into_inner()).remove(&(tenant_id.to_owned(), subject_id.to_owned()));
        self.templates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| !(t.tenant_id == tenant_id && t.subject_id == subject_id));
    }

    fn search(&self, tenant_id: &str, query: &[f32], limit: usize) -> Vec<SubjectHit> {
        let mut v = self.hits(tenant_id, query, None);
        v.truncate(limit);
        v
    }

    fn search_tagged(&self, tenant_id: &str, query: &[f32], limit: usize, tags: &[String]) -> Vec<SubjectHit> {
        if tags.is_empty() {
            return self.search(tenant_id, query, limit);
        }
        let held = self.tags.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut v = self.hits(tenant_id, query, None);
        v.retain(|hit| {
            held.get(&(tenant_id.to_owned(), hit.subject_id.clone()))
                .is_some_and(|t| t.iter().any(|x| tags.contains(x)))
        });
        v.truncate(limit);
        v
    }

    fn set_subject_tags(&self, tenant_id: &str, subject_id: &str, tags: &[String]) {
        self.tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((tenant_id.into(), subject_id.into()), tags.to_vec());
    }

    fn rename_tag(&self, tenant_id: &str, old_name: &str, new_name: &str) {
        let mut held = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        for ((tenant, _), tags) in held.iter_mut() {
            if tenant == tenant_id {
                tags.iter_mut().filter(|t| *t == old_name).for_each(|t| *t = new_name.to_owned());
            }
        }
    }

    fn best_of_subject(&self, tenant_id: &str, subject_id: &str, query: &[f32]) -> Option<SubjectHit> {
        self.hits(tenant_id, query, Some(subject_id)).into_iter().next()
    }

    fn subject_samples(&self, tenant_id: &str, subject_id: &str, query: &[f32]) -> Vec<SubjectHit> {
        let templates = self.templates.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<SubjectHit> = templates
            .iter()
            .filter(|t| t.tenant_id == tenant_id && t.subject_id == subject_id)
            .map(|t| SubjectHit {
                subject_id: t.subject_id.clone(),
                sample_id: t.sample_id.clone(),
                similarity: t.embedding.iter().zip(query).map(|(a, b)| a * b).sum(),
            })
            .collect();
        v.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        v
    }

    fn remove_sample(&self, tenant_id: &str, sample_id: &str) {
        self.templates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| !(t.tenant_id == tenant_id && t.sample_id == sample_id));
    }

    fn len(&self, tenant_id: &str) -> usize {
        self.templates.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|t| t.tenant_id == tenant_id).count()
    }
}
