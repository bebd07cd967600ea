//! Matching: find the subjects for the faces of an image (1:N), compare an image with one subject
//! (1:1), and extract the attributes of every face.

use super::audit::audited;
use super::gallery::SubjectKey;
use super::state::{blocking, only_face, FaceService};
use crate::error::Result;
use crate::model::{AttributedFace, BoundingBox, DetectedFace, FaceAttributes, Subject, Tenant};

/// Which faces of a probe image are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceSelection {
    /// Every face, largest first.
    Every,
    /// The image must hold exactly one face (NoFace or MultipleFaces otherwise); its attributes
    /// come with the result.
    Single,
}

/// How a 1:N search runs.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub faces: FaceSelection,
    /// Subjects returned per face, best first.
    pub limit: usize,
    /// Candidates scoring below this (0–9999) are left out.
    pub min_score: u32,
    /// Only subjects carrying one of these tags, which must exist; empty for all.
    pub tags: Vec<String>,
    /// Whether each candidate lists the scores of all its samples.
    pub sample_scores: bool,
    /// Whether each candidate carries its subject's record (one store read each; a subject
    /// deleted between the search and the read is then left out). Without, the search reads
    /// the index only.
    pub with_subjects: bool,
    /// The id of the request, when the faces it finds nobody for are to be kept as sightings
    /// should the tenant opt in (issue 29): a 1:N search of a client's. `None` for every other
    /// search (the console's, a search back), which keeps nothing.
    pub keep_unknown: Option<String>,
}

impl SearchOptions {
    /// The best subject of every face, with its record, whatever its score: 1:N as a client that
    /// reads `known` against the service's threshold wants it.
    pub fn best_of_every_face() -> Self {
        SearchOptions {
            faces: FaceSelection::Every,
            limit: 1,
            min_score: 0,
            tags: Vec::new(),
            sample_scores: false,
            with_subjects: true,
            keep_unknown: None,
        }
    }
}

/// One subject found for a face.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub subject_id: String,
    /// With [`SearchOptions::with_subjects`], and always from [`FaceService::compare`].
    pub subject: Option<Subject>,
    /// The best-scoring sample.
    pub sample_id: String,
    pub similarity: f32,
    /// 0–9999 under the model's calibration.
    pub score: u32,
    /// (sample id, score) of every sample, best first, when asked for.
    pub samples: Vec<(String, u32)>,
}

/// One face of a probe that a search found nobody for, to be kept (`unknown.rs`).
pub(super) struct UnknownFace {
    pub bbox: BoundingBox,
    pub embedding: Vec<f32>,
    pub quality: f32,
}

/// One face of a probe with the subjects found for it.
#[derive(Debug, Clone)]
pub struct FaceSearch {
    pub bbox: BoundingBox,
    pub detector_score: f32,
    /// With [`FaceSelection::Single`].
    pub attributes: Option<FaceAttributes>,
    /// Best first.
    pub candidates: Vec<Candidate>,
    /// The best candidate's score reaches the service's known threshold.
    pub known: bool,
    /// The face's template, for a use case that searches on with it.
    pub(crate) embedding: Vec<f32>,
}

impl FaceService {
    /// 1:N: the subjects of the tenant's gallery that best match each selected face of `image`.
    pub async fn find_subjects(
        &self,
        tenant: &Tenant,
        image: Vec<u8>,
        options: SearchOptions,
    ) -> Result<Vec<FaceSearch>> {
        let input = format!("limit={} min_score={} tags={}", options.limit, options.min_score, options.tags.join(","));
        audited(tenant, "find_subjects", input, |faces: &Vec<FaceSearch>| audit_faces(faces), async {
            let tags = self.known_tags(tenant, &options.tags).await?;
            let keep_as = match &options.keep_unknown {
                Some(request_id) => self.unknown_retention(tenant).await?.map(|_| request_id.clone()),
                None => None,
            };
            // Kept faces need their quality, which only attributes measure, and the image to crop.
            let kept_image = keep_as.as_ref().map(|_| image.clone());
            let probes = match (options.faces, &keep_as) {
                (FaceSelection::Every, Some(_)) => {
                    self.extract(image, usize::MAX).await?.into_iter().map(|f| (f.face, Some(f.attributes))).collect()
                }
                _ => self.probe_faces(image, options.faces).await?,
            };
            let mut found = Vec::new();
            let mut unknown = Vec::new();
            for (face, attributes) in probes {
                let (index, tenant_id, embedding) = (self.index.clone(), tenant.id.clone(), face.embedding.clone());
                let (limit, tags) = (options.limit, tags.clone());
                // A scan of a large gallery takes milliseconds: off the async threads.
                let hits = blocking(move || Ok(index.search_tagged(&tenant_id, &embedding, limit, &tags))).await?;
                let calibration = &self.engine.model_info().calibration;
                let mut candidates = Vec::new();
                for hit in hits {
                    let score = calibration.score(hit.similarity);
                    if score < options.min_score {
                        break;
                    }
                    let subject = if options.with_subjects {
                        // A subject deleted between the search and here is simply no candidate.
                        let Some(subject) = self.find_subject_by_id(tenant, &hit.subject_id).await? else { continue };
                        Some(subject)
                    } else {
                        None
                    };
                    let samples = if options.sample_scores {
                        self.index
                            .subject_samples(&tenant.id, &hit.subject_id, &face.embedding)
                            .into_iter()
                            .map(|s| (s.sample_id, calibration.score(s.similarity)))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    candidates.push(Candidate {
                        subject_id: hit.subject_id,
                        subject,
                        sample_id: hit.sample_id,
                        similarity: hit.similarity,
                        score,
                        samples,
                    });
                }
                let mut searched = self.face_search(&face, attributes, candidates);
                if keep_as.is_some() {
                    let quality = searched.attributes.as_ref().map_or(0.0, |a| a.quality);
                    if quality >= self.config.min_face_quality
                        && !self.known_anywhere(tenant, &searched, &options).await?
                    {
                        unknown.push(UnknownFace { bbox: face.bbox, embedding: face.embedding.clone(), quality });
                    }
                    if options.faces == FaceSelection::Every {
                        searched.attributes = None;
                    }
                }
                found.push(searched);
            }
            if let (Some(request_id), Some(image)) = (keep_as, kept_image) {
                self.keep_sightings(tenant, image, unknown, &request_id).await;
            }
            Ok(found)
        })
        .await
    }

    /// Whether a face matches an enrolled subject at the known threshold, in the whole gallery:
    /// a search narrowed by tags or by a minimum score above the threshold may not show it.
    async fn known_anywhere(&self, tenant: &Tenant, face: &FaceSearch, options: &SearchOptions) -> Result<bool> {
        if face.known || (options.tags.is_empty() && options.min_score <= self.config.known_threshold) {
            return Ok(face.known);
        }
        let (index, tenant_id, embedding) = (self.index.clone(), tenant.id.clone(), face.embedding.clone());
        let best = blocking(move || Ok(index.search(&tenant_id, &embedding, 1))).await?;
        let calibration = &self.engine.model_info().calibration;
        Ok(best.first().is_some_and(|hit| calibration.score(hit.similarity) >= self.config.known_threshold))
    }

    /// 1:1: each selected face of `image` against one subject's samples only; the subject is
    /// each face's candidate when it has a sample to compare with.
    pub async fn compare(
        &self,
        tenant: &Tenant,
        image: Vec<u8>,
        key: SubjectKey<'_>,
        faces: FaceSelection,
    ) -> Result<Vec<FaceSearch>> {
        let input = match key {
            SubjectKey::Id(id) => format!("subject={id}"),
            SubjectKey::CustomerId(id) => format!("customer_id={id}"),
        };
        audited(tenant, "compare", input, |faces: &Vec<FaceSearch>| audit_faces(faces), async {
            let subject = self.subject(tenant, key).await?;
            let probes = self.probe_faces(image, faces).await?;
            let calibration = &self.engine.model_info().calibration;
            Ok(probes
                .into_iter()
                .map(|(face, attributes)| {
                    let best = self.index.best_of_subject(&tenant.id, &subject.id, &face.embedding);
                    let candidates = best
                        .map(|hit| Candidate {
                            subject_id: subject.id.clone(),
                            subject: Some(subject.clone()),
                            sample_id: hit.sample_id,
                            similarity: hit.similarity,
                            score: calibration.score(hit.similarity),
                            samples: Vec::new(),
                        })
                        .into_iter()
                        .collect();
                    self.face_search(&face, attributes, candidates)
                })
                .collect())
        })
        .await
    }

    /// The faces of `image` that `selection` takes, with attributes for a single face.
    async fn probe_faces(
        &self,
        image: Vec<u8>,
        selection: FaceSelection,
    ) -> Result<Vec<(DetectedFace, Option<FaceAttributes>)>> {
        Ok(match selection {
            FaceSelection::Every => self.analyze(image).await?.faces.into_iter().map(|f| (f.face, None)).collect(),
            FaceSelection::Single => {
                let AttributedFace { face, attributes } = only_face(self.extract(image, 2).await?)?;
                vec![(face, Some(attributes))]
            }
        })
    }

    async fn find_subject_by_id(&self, tenant: &Tenant, subject_id: &str) -> Result<Option<Subject>> {
        let (tenant_id, subject_id) = (tenant.id.clone(), subject_id.to_owned());
        self.with_store(move |store| store.subject_by_id(&tenant_id, &subject_id)).await
    }

    fn face_search(
        &self,
        face: &DetectedFace,
        attributes: Option<FaceAttributes>,
        candidates: Vec<Candidate>,
    ) -> FaceSearch {
        let known = candidates.first().is_some_and(|c| c.score >= self.config.known_threshold);
        FaceSearch {
            bbox: face.bbox,
            detector_score: face.detector_score,
            attributes,
            candidates,
            known,
            embedding: face.embedding.clone(),
        }
    }
}

/// For each face of a probe: its candidates and scores, or `-` when it had none.
fn audit_faces(faces: &[FaceSearch]) -> String {
    let listed: Vec<String> = faces
        .iter()
        .map(|f| {
            if f.candidates.is_empty() {
                return "-".to_owned();
            }
            let found: Vec<String> = f.candidates.iter().map(|c| format!("{}:{}", c.subject_id, c.score)).collect();
            format!("{}{}", found.join("+"), if f.known { "" } else { "(unknown)" })
        })
        .collect();
    format!("faces={} matches={}", faces.len(), listed.join(","))
}
