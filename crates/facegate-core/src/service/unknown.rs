//! Faces nobody enrolled (issue 29): a search of a tenant that opted in keeps each face it found
//! nobody for as a sighting, grouped at once into an unknown person ([`GroupingPolicy`]); the
//! tenant lists, searches, merges, splits, deletes and promotes them.
//!
//! The sightings' templates are searched in an index of their own (`unknown`), partitioned by
//! tenant like the gallery's, in which the "subject" is the unknown person and the "sample" the
//! sighting. Every write that changes it holds the tenant's unknown-faces lock, so that the index
//! applies writes in the store's order.

use std::time::Duration;

use super::audit::{audited, record};
use super::matching::{Candidate, FaceSearch, SearchOptions, UnknownFace};
use super::state::{blocking, FaceService};
use super::text::{now_rfc3339, now_unix_ms, stored_image_name, validate_name};
use crate::error::{Error, Result};
use crate::grouping::{GroupingPolicy, Neighbour};
use crate::model::{
    BoundingBox, FaceSample, NewSample, NewSighting, Sighting, SightingPurge, Subject, Template, Tenant, UnknownPerson,
};
use crate::telemetry::{SIGHTINGS_KEPT, SIGHTINGS_PURGED};

/// Unknown people a listing returns at most per page: as many as a console page shows, and a
/// bounded read for any client.
pub const MAX_UNKNOWN_PAGE: usize = 100;

/// Sightings a promotion makes faces of, the best first (by quality): several, so that the new
/// person is found from more than one angle, and few, as an enrolled person of miiCloud holds a
/// handful of images.
pub const MAX_PROMOTED_FACES: usize = 5;

/// Unknown people a search back answers per face, best first.
pub const UNKNOWN_MATCHES_PER_FACE: usize = 5;

/// Groups whose best sighting a new one is compared against in full: a sighting that strictly
/// matches more groups than this is rare (grouping never merges), and each costs a pass over its
/// sightings.
const GROUPS_EXAMINED: usize = 8;

/// An unknown person a face matches, with the best score of its sightings.
#[derive(Debug, Clone)]
pub struct UnknownMatch {
    pub person: UnknownPerson,
    /// 0–9999 under the model's calibration.
    pub score: u32,
}

/// One face of a search back: the enrolled subjects and the unknown people it matches.
#[derive(Debug, Clone)]
pub struct UnknownSearch {
    pub bbox: BoundingBox,
    pub detector_score: f32,
    /// The best enrolled subject, whatever its score (as miiCloud's 1:N answers it).
    pub candidates: Vec<Candidate>,
    pub known: bool,
    /// At the known threshold or above, best first.
    pub unknown_people: Vec<UnknownMatch>,
}

impl FaceService {
    /// Searches the sightings' templates too, and keeps what searches find nobody for.
    pub fn with_unknown_index(mut self, index: std::sync::Arc<dyn crate::ports::Index>) -> Self {
        self.unknown = Some(index);
        self
    }

    fn unknown_index(&self) -> Result<&std::sync::Arc<dyn crate::ports::Index>> {
        self.unknown.as_ref().ok_or_else(|| Error::Internal("this service keeps no unknown faces".into()))
    }

    /// Fills the unknown-faces index with every kept sighting of the engine's model.
    pub(super) fn load_sightings(&self, tenant_id: Option<&str>) -> Result<usize> {
        let Some(unknown) = &self.unknown else { return Ok(0) };
        let model_id = self.engine.model_info().model_id.clone();
        let mut count = 0;
        self.store.for_each_sighting_template(tenant_id, &model_id, &mut |template| {
            unknown.insert(template);
            count += 1;
        })?;
        Ok(count)
    }

    /// Indexes a sighting kept by any process (the change log's `SightingKept`), in the person
    /// the store has it in now; nothing when it is gone or of another model.
    pub(super) async fn index_sighting(&self, tenant_id: &str, sighting_id: &str) -> Result<()> {
        let Some(unknown) = self.unknown.clone() else { return Ok(()) };
        let _lock = self.unknown_locks.lock_tenant(tenant_id).await;
        let (tid, sid, model_id) =
            (tenant_id.to_owned(), sighting_id.to_owned(), self.engine.model_info().model_id.clone());
        let template = self
            .with_store(move |store| {
                let Some(face) = store.sighting_face(&tid, &sid)? else { return Ok(None) };
                if face.model_id != model_id {
                    return Ok(None);
                }
                // The person it is in now: a merge since moved it, and a reload follows.
                Ok(Some(Template {
                    tenant_id: tid,
                    subject_id: face.unknown_person_id,
                    sample_id: sid,
                    embedding: face.embedding,
                }))
            })
            .await?;
        if let Some(template) = template {
            unknown.remove_sample(tenant_id, sighting_id);
            unknown.insert(template);
        }
        Ok(())
    }

    /// Loads the tenant's sightings anew into the unknown-faces index, after writes of any
    /// process that changed many at once (the change log's `UnknownPeopleChanged`).
    pub(super) async fn reload_sightings(&self, tenant_id: &str) -> Result<()> {
        let Some(unknown) = self.unknown.clone() else { return Ok(()) };
        let _lock = self.unknown_locks.lock_tenant(tenant_id).await;
        let (store, tid, model_id) =
            (self.store.clone(), tenant_id.to_owned(), self.engine.model_info().model_id.clone());
        let templates = blocking(move || {
            let mut templates = Vec::new();
            store.for_each_sighting_template(Some(&tid), &model_id, &mut |t| templates.push(t))?;
            Ok(templates)
        })
        .await?;
        unknown.remove_tenant(tenant_id);
        templates.into_iter().for_each(|t| unknown.insert(t));
        Ok(())
    }

    /// How long the tenant keeps unknown faces, `None` when it keeps none. Read from the store at
    /// each search, so that a setting turned off (by `facegate tenant set`, or on another node)
    /// takes effect at once; the index then forgets what it held of the tenant.
    pub(super) async fn unknown_retention(&self, tenant: &Tenant) -> Result<Option<Duration>> {
        let Some(unknown) = &self.unknown else { return Ok(None) };
        let tenant_id = tenant.id.clone();
        let retention = self.with_store(move |store| store.unknown_faces_retention(&tenant_id)).await?;
        if retention.is_none() && unknown.len(&tenant.id) > 0 {
            unknown.remove_tenant(&tenant.id);
        }
        Ok(retention)
    }

    /// Keeps `faces` of `image` as sightings of `request_id`, each grouped as it arrives. A face
    /// that cannot be kept is logged and skipped: the search it came from has its answer.
    pub(super) async fn keep_sightings(
        &self,
        tenant: &Tenant,
        image: Vec<u8>,
        faces: Vec<UnknownFace>,
        request_id: &str,
    ) {
        if faces.is_empty() {
            return;
        }
        let engine = self.engine.clone();
        let boxes: Vec<BoundingBox> = faces.iter().map(|f| f.bbox).collect();
        let crops = match self.pool.run(move || engine.face_crops(&image, &boxes)).await {
            Ok(crops) => crops,
            Err(e) => {
                tracing::warn!(error = %e, "could not crop the unknown faces of a search; none kept");
                return;
            }
        };
        for (face, crop) in faces.into_iter().zip(crops) {
            let sighting = NewSighting {
                id: uuid::Uuid::new_v4().to_string(),
                tenant_id: tenant.id.clone(),
                unknown_person_id: String::new(),
                model_id: self.engine.model_info().model_id.clone(),
                embedding: face.embedding,
                crop: crop.jpeg,
                crop_face: crop.face,
                quality: face.quality,
                seen_unix_ms: now_unix_ms(),
                request_id: request_id.to_owned(),
            };
            match self.keep_sighting(tenant, sighting).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "could not keep an unknown face"),
            }
        }
    }

    /// Groups and keeps one sighting; `false` when the tenant turned the setting off meanwhile.
    async fn keep_sighting(&self, tenant: &Tenant, mut sighting: NewSighting) -> Result<bool> {
        let unknown = self.unknown_index()?.clone();
        let _lock = self.unknown_locks.lock_tenant(&tenant.id).await;
        let placed = self.place(&tenant.id, &sighting.embedding);
        // A person chosen from the index may be gone from the store (deleted by another node):
        // then the sighting starts a person of its own.
        for existing in [placed, None] {
            let new_person = existing.is_none();
            sighting.unknown_person_id = existing.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let kept = {
                let sighting = sighting.clone();
                self.with_store(move |store| store.keep_sighting(&sighting, new_person)).await
            };
            let input = format!("request={}", sighting.request_id);
            let output =
                format!("sighting={} unknown_person={} new={new_person}", sighting.id, sighting.unknown_person_id);
            match kept {
                Ok(true) => {
                    record(tenant, "keep_sighting", &input, &output, "ok");
                    metrics::counter!(SIGHTINGS_KEPT, "tenant_id" => tenant.id.clone()).increment(1);
                    unknown.insert(Template {
                        tenant_id: tenant.id.clone(),
                        subject_id: sighting.unknown_person_id.clone(),
                        sample_id: sighting.id.clone(),
                        embedding: sighting.embedding.clone(),
                    });
                    return Ok(true);
                }
                Ok(false) => {
                    unknown.remove_tenant(&tenant.id);
                    return Ok(false);
                }
                Err(Error::NotFound("unknown person")) if !new_person => {
                    unknown.remove_subject(&tenant.id, &sighting.unknown_person_id);
                }
                Err(e) => {
                    record(tenant, "keep_sighting", &input, "", e.code().name());
                    return Err(e);
                }
            }
        }
        Err(Error::Internal("a sighting found no unknown person to join".into()))
    }

    /// The unknown person [`GroupingPolicy::DEFAULT`] puts a sighting with `embedding` in, or
    /// `None` for a new one.
    fn place(&self, tenant_id: &str, embedding: &[f32]) -> Option<String> {
        let unknown = self.unknown.as_ref()?;
        let policy = GroupingPolicy::DEFAULT;
        let calibration = &self.engine.model_info().calibration;
        let mut neighbours = Vec::new();
        let mut sizes = std::collections::HashMap::new();
        let groups: Vec<String> = unknown
            .search(tenant_id, embedding, GROUPS_EXAMINED)
            .into_iter()
            .take_while(|hit| calibration.score(hit.similarity) >= policy.min_score)
            .map(|hit| hit.subject_id)
            .collect();
        for (at, person) in groups.iter().enumerate() {
            let sightings = unknown.subject_samples(tenant_id, person, embedding);
            sizes.insert(at, sightings.len());
            neighbours
                .extend(sightings.iter().map(|s| Neighbour { group: at, score: calibration.score(s.similarity) }));
        }
        policy.place(&neighbours, |at| sizes.get(&at).copied().unwrap_or(0)).and_then(|at| groups.get(at).cloned())
    }

    /// A page of the tenant's unknown people, in id order after `after`.
    pub async fn unknown_people(
        &self,
        tenant: &Tenant,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<UnknownPerson>> {
        if limit == 0 || limit > MAX_UNKNOWN_PAGE {
            return Err(Error::InvalidRequest(format!("limit must be 1 to {MAX_UNKNOWN_PAGE}")));
        }
        let tenant_id = tenant.id.clone();
        self.with_store(move |store| store.list_unknown_people(&tenant_id, after.as_deref(), limit)).await
    }

    /// One unknown person and its sightings, oldest first; `NotFound` when it is gone.
    pub async fn unknown_person(&self, tenant: &Tenant, id: &str) -> Result<(UnknownPerson, Vec<Sighting>)> {
        let (tenant_id, id) = (tenant.id.clone(), id.to_owned());
        self.with_store(move |store| {
            let person = store.unknown_person(&tenant_id, &id)?.ok_or(Error::NotFound("unknown person"))?;
            let sightings = store.sightings_of(&tenant_id, &id)?;
            Ok((person, sightings))
        })
        .await
    }

    /// A sighting's face crop (JPEG); `NotFound` when it is gone.
    pub async fn sighting_crop(&self, tenant: &Tenant, sighting_id: &str) -> Result<Vec<u8>> {
        let (tenant_id, id) = (tenant.id.clone(), sighting_id.to_owned());
        let face = self.with_store(move |store| store.sighting_face(&tenant_id, &id)).await?;
        Ok(face.ok_or(Error::NotFound("sighting"))?.crop.jpeg)
    }

    /// Moves every sighting of `from` into `into`, and deletes `from`. Audited as
    /// `merge_unknown_people`.
    pub async fn merge_unknown_people(&self, tenant: &Tenant, into: &str, from: &str) -> Result<UnknownPerson> {
        let input = format!("into={into} from={from}");
        audited(
            tenant,
            "merge_unknown_people",
            input,
            |p: &UnknownPerson| format!("sightings={}", p.sightings),
            async {
                let unknown = self.unknown_index()?.clone();
                let _lock = self.unknown_locks.lock_tenant(&tenant.id).await;
                let (tenant_id, into, from_id) = (tenant.id.clone(), into.to_owned(), from.to_owned());
                let model_id = self.engine.model_info().model_id.clone();
                let (person, moved) = self
                    .with_store(move |store| {
                        let moving = store.sightings_of(&tenant_id, &from_id)?;
                        store.merge_unknown_people(&tenant_id, &into, &from_id)?;
                        let person =
                            store.unknown_person(&tenant_id, &into)?.ok_or(Error::NotFound("unknown person"))?;
                        let moved = reread_templates(store, &tenant_id, &model_id, &into, &moving)?;
                        Ok((person, moved))
                    })
                    .await?;
                unknown.remove_subject(&tenant.id, from);
                moved.into_iter().for_each(|template| unknown.insert(template));
                Ok(person)
            },
        )
        .await
    }

    /// Moves the given sightings of `from` to a new unknown person, which it returns. Audited
    /// as `split_unknown_person`.
    pub async fn split_unknown_person(
        &self,
        tenant: &Tenant,
        from: &str,
        sighting_ids: Vec<String>,
    ) -> Result<UnknownPerson> {
        let input = format!("from={from} sightings={}", sighting_ids.join(","));
        audited(tenant, "split_unknown_person", input, |p: &UnknownPerson| format!("unknown_person={}", p.id), async {
            let unknown = self.unknown_index()?.clone();
            let _lock = self.unknown_locks.lock_tenant(&tenant.id).await;
            let (tenant_id, from) = (tenant.id.clone(), from.to_owned());
            let model_id = self.engine.model_info().model_id.clone();
            let new_id = uuid::Uuid::new_v4().to_string();
            let (person, moved) = self
                .with_store(move |store| {
                    store.split_sightings(&tenant_id, &from, &sighting_ids, &new_id)?;
                    let person = store.unknown_person(&tenant_id, &new_id)?.ok_or(Error::NotFound("unknown person"))?;
                    let moving = store.sightings_of(&tenant_id, &new_id)?;
                    let moved = reread_templates(store, &tenant_id, &model_id, &new_id, &moving)?;
                    Ok((person, moved))
                })
                .await?;
            for template in moved {
                unknown.remove_sample(&tenant.id, &template.sample_id);
                unknown.insert(template);
            }
            Ok(person)
        })
        .await
    }

    /// Deletes an unknown person and its sightings. Audited as `delete_unknown_person`.
    pub async fn delete_unknown_person(&self, tenant: &Tenant, id: &str) -> Result<SightingPurge> {
        let input = format!("unknown_person={id}");
        audited(
            tenant,
            "delete_unknown_person",
            input,
            |p: &SightingPurge| format!("sightings={}", p.sightings),
            async {
                let unknown = self.unknown_index()?.clone();
                let _lock = self.unknown_locks.lock_tenant(&tenant.id).await;
                let (tenant_id, person_id) = (tenant.id.clone(), id.to_owned());
                let purge = self.with_store(move |store| store.delete_unknown_person(&tenant_id, &person_id)).await?;
                let purge = purge.ok_or(Error::NotFound("unknown person"))?;
                unknown.remove_subject(&tenant.id, id);
                metrics::counter!(SIGHTINGS_PURGED, "reason" => "deleted").increment(purge.sightings);
                Ok(purge)
            },
        )
        .await
    }
}

impl FaceService {
    /// Makes an unknown person an enrolled subject, with `customer_id` (miiCloud) or without
    /// (an NEC subject), whose faces are its best [`MAX_PROMOTED_FACES`] sightings of the active
    /// model; the unknown person and all its sightings go in the same transaction. From then on
    /// a search finds the subject. Returns it with how many faces it got. Audited as
    /// `promote_unknown_person`.
    pub async fn promote_unknown_person(
        &self,
        tenant: &Tenant,
        id: &str,
        customer_id: Option<String>,
    ) -> Result<(Subject, usize)> {
        let input = format!("unknown_person={id} customer_id={}", customer_id.as_deref().unwrap_or("-"));
        let output = |(s, faces): &(Subject, usize)| format!("subject={} faces={faces}", s.id);
        audited(tenant, "promote_unknown_person", input, output, async {
            if let Some(customer_id) = &customer_id {
                validate_name("customer id", customer_id, super::gallery::MAX_ID_CHARS)?;
            }
            let unknown = self.unknown_index()?.clone();
            let _lock = self.unknown_locks.lock_tenant(&tenant.id).await;
            let now = now_rfc3339();
            let subject = Subject {
                id: uuid::Uuid::new_v4().to_string(),
                tenant_id: tenant.id.clone(),
                customer_person_id: customer_id,
                profile: Default::default(),
                created_at: now.clone(),
                updated_at: now.clone(),
            };
            let _subject_lock = self.subject_locks.lock(&tenant.id, &subject.id).await;
            let (tenant_id, person_id, model_id) =
                (tenant.id.clone(), id.to_owned(), self.engine.model_info().model_id.clone());
            let promoted = subject.clone();
            let samples = self
                .with_store(move |store| {
                    let mut sightings = store.sightings_of(&tenant_id, &person_id)?;
                    if sightings.is_empty() {
                        return Err(Error::NotFound("unknown person"));
                    }
                    sightings.retain(|s| s.model_id == model_id);
                    sightings.sort_by(|a, b| b.quality.total_cmp(&a.quality).then(b.seen_unix_ms.cmp(&a.seen_unix_ms)));
                    let mut samples = Vec::new();
                    for sighting in sightings.iter().take(MAX_PROMOTED_FACES) {
                        let Some(face) = store.sighting_face(&tenant_id, &sighting.id)? else { continue };
                        let image_name = stored_image_name(&format!("unknown-{}.jpg", sighting.id), &face.crop.jpeg);
                        samples.push(NewSample {
                            sample: FaceSample {
                                id: uuid::Uuid::new_v4().to_string(),
                                subject_id: promoted.id.clone(),
                                image_name,
                                bbox: face.crop.face,
                                detector_score: sighting.quality,
                                model_id: face.model_id,
                                created_at: now.clone(),
                            },
                            embedding: face.embedding,
                            image: face.crop.jpeg,
                        });
                    }
                    if samples.is_empty() {
                        return Err(Error::InvalidRequest(
                            "the unknown person has no sighting of the active model to enroll".into(),
                        ));
                    }
                    store.promote_unknown_person(&tenant_id, &person_id, &promoted, &samples)?;
                    Ok(samples)
                })
                .await?;
            unknown.remove_subject(&tenant.id, id);
            for sample in &samples {
                self.index.insert(super::state::template_of(&subject, sample));
            }
            Ok((subject, samples.len()))
        })
        .await
    }

    /// For each face of `image`: its best enrolled subject, and the unknown people it matches at
    /// the known threshold or above. Keeps nothing. Audited as `search_unknown_people`.
    pub async fn search_unknown_people(&self, tenant: &Tenant, image: Vec<u8>) -> Result<Vec<UnknownSearch>> {
        let found = self.find_subjects(tenant, image, SearchOptions::best_of_every_face()).await?;
        audited(
            tenant,
            "search_unknown_people",
            String::new(),
            |faces: &Vec<UnknownSearch>| audit_matches(faces),
            async {
                let unknown = self.unknown_index()?.clone();
                if self.unknown_retention(tenant).await?.is_none() {
                    return Ok(found.into_iter().map(|f| unknown_search(f, Vec::new())).collect());
                }
                let calibration = &self.engine.model_info().calibration;
                let mut answered = Vec::with_capacity(found.len());
                for face in found {
                    let (index, tenant_id, embedding) = (unknown.clone(), tenant.id.clone(), face.embedding.clone());
                    let hits =
                        blocking(move || Ok(index.search(&tenant_id, &embedding, UNKNOWN_MATCHES_PER_FACE))).await?;
                    let mut matches = Vec::new();
                    for hit in hits {
                        let score = calibration.score(hit.similarity);
                        if score < self.config.known_threshold {
                            break;
                        }
                        let (tenant_id, person_id) = (tenant.id.clone(), hit.subject_id.clone());
                        // One that is gone since (deleted on another node) is no match.
                        if let Some(person) = self.with_store(move |s| s.unknown_person(&tenant_id, &person_id)).await?
                        {
                            matches.push(UnknownMatch { person, score });
                        }
                    }
                    answered.push(unknown_search(face, matches));
                }
                Ok(answered)
            },
        )
        .await
    }

    /// Deletes the sightings older than their tenant's retention, and the unknown people left
    /// with none; the index forgets them. Returns how many sightings went. Run in the background.
    pub async fn purge_expired_sightings(&self) -> Result<u64> {
        let now = now_unix_ms();
        let purged = self.with_store(move |store| store.purge_expired_sightings(now)).await?;
        let mut total = 0;
        for (tenant_id, purge) in purged {
            total += purge.sightings;
            metrics::counter!(SIGHTINGS_PURGED, "reason" => "expired").increment(purge.sightings);
            let tenant = Tenant { id: tenant_id.clone(), name: String::new(), created_at: String::new() };
            let output = format!("sightings={} unknown_people={}", purge.sightings, purge.unknown_people);
            record(&tenant, "purge_expired_sightings", "", &output, "ok");
            // A store with a change log logged the purge: the follower loads the tenant anew.
            if self.store.change_feed().is_none() {
                self.reload_sightings(&tenant_id).await?;
            }
        }
        Ok(total)
    }
}

fn unknown_search(face: FaceSearch, unknown_people: Vec<UnknownMatch>) -> UnknownSearch {
    UnknownSearch {
        bbox: face.bbox,
        detector_score: face.detector_score,
        candidates: face.candidates,
        known: face.known,
        unknown_people,
    }
}

fn audit_matches(faces: &[UnknownSearch]) -> String {
    let listed: Vec<String> = faces
        .iter()
        .map(|f| {
            let found: Vec<String> = f.unknown_people.iter().map(|m| format!("{}:{}", m.person.id, m.score)).collect();
            if found.is_empty() {
                "-".to_owned()
            } else {
                found.join("+")
            }
        })
        .collect();
    format!("faces={} unknown_people={}", faces.len(), listed.join(","))
}

/// The templates of `sightings` of `model_id`, now of `person`, read back from the store.
fn reread_templates(
    store: &dyn crate::ports::Store,
    tenant_id: &str,
    model_id: &str,
    person: &str,
    sightings: &[Sighting],
) -> Result<Vec<Template>> {
    let mut templates = Vec::with_capacity(sightings.len());
    for sighting in sightings.iter().filter(|s| s.model_id == model_id) {
        if let Some(face) = store.sighting_face(tenant_id, &sighting.id)? {
            templates.push(Template {
                tenant_id: tenant_id.to_owned(),
                subject_id: person.to_owned(),
                sample_id: sighting.id.clone(),
                embedding: face.embedding,
            });
        }
    }
    Ok(templates)
}
