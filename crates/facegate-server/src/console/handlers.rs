//! The console API: what the page needs that miiCloud's routes do not give (a photo's faces with
//! their attributes, ranked candidates, persons page by page, stored face images, tags, bulk
//! jobs). Each handler reads its input, calls one `FaceService` use case and writes the answer
//! in `wire`'s shapes; failures answer in miiCloud's body, from the one error table.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::{Extension, Json};
use facegate_core::model::{FaceSample, Subject, Tenant};
use facegate_core::service::{FaceSelection, SearchOptions, SubjectKey, MAX_JOBS_LISTED, MAX_SUBJECT_PAGE};
use serde::Deserialize;

use crate::console::wire::{
    Detected, Job, Jobs, Limits, PersonFaces, PersonPage, PersonSummary, SearchCandidate, Searched, SearchedFace,
    Session, StoredFace, Tags,
};
use crate::error::ApiError;
use crate::miicloud::error::MiiError;
use crate::miicloud::form::read_form;
use crate::state::AppState;

type ConsoleResult<T> = Result<Json<T>, MiiError>;

/// The form field of the photo, as in miiCloud's forms, so that one upload helper serves both.
const IMAGE_FIELD: &str = "image_path";

/// Faces of one photo the detect view analyses. Each costs a landmark model run for its
/// attributes; 64 covers a team photo or a small crowd (players.jpg has about 22) and bounds one
/// request to well under a second of inference.
pub const MAX_DETECT_FACES: usize = 64;

/// Candidates shown per searched face: a ranked short list to judge by eye; past five the scores
/// are far below any threshold.
pub const SEARCH_CANDIDATES: usize = 5;

/// Persons per gallery page when the page does not ask: four rows of a laptop-width grid.
const DEFAULT_PERSON_PAGE: usize = 24;

/// Jobs listed when the page does not ask.
const DEFAULT_JOBS: usize = 20;

/// `GET /console/api/session`: whether the token is good, and for which tenant.
pub async fn session(State(state): State<AppState>, Extension(tenant): Extension<Tenant>) -> ConsoleResult<Session> {
    let service = &state.service;
    Ok(Json(Session {
        tenant: tenant.name.clone(),
        known_threshold: service.config().known_threshold,
        model_id: service.model_info().model_id.clone(),
        templates: service.template_count(&tenant),
        limits: Limits {
            detect_faces: MAX_DETECT_FACES,
            search_candidates: SEARCH_CANDIDATES,
            persons_page: MAX_SUBJECT_PAGE,
            jobs: MAX_JOBS_LISTED,
            image_bytes: state.settings.body_limit_bytes,
        },
    }))
}

/// `POST /console/api/detect` (multipart `image_path`): every face with its attributes.
pub async fn detect(State(state): State<AppState>, req: Request) -> ConsoleResult<Detected> {
    let image = uploaded_image(req).await?;
    let faces = state.service.extract(image, MAX_DETECT_FACES).await?;
    Ok(Json(Detected::new(&faces)))
}

/// `POST /console/api/search` (multipart `image_path`): each face's ranked candidates.
pub async fn search(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    req: Request,
) -> ConsoleResult<Searched> {
    let image = uploaded_image(req).await?;
    let options = SearchOptions {
        faces: FaceSelection::Every,
        limit: SEARCH_CANDIDATES,
        min_score: 0,
        tags: Vec::new(),
        sample_scores: false,
        with_subjects: true,
        // The console's searches are an operator's look, not a client's sighting.
        keep_unknown: None,
    };
    let found = state.service.find_subjects(&tenant, image, options).await?;
    let threshold = state.service.config().known_threshold;
    // The page shows each candidate's best face cropped from its stored image, so it needs the
    // face's box: one read per candidate subject, shared by every face that found it.
    let mut samples: HashMap<String, Vec<FaceSample>> = HashMap::new();
    let mut faces = Vec::with_capacity(found.len());
    for face in &found {
        let mut candidates = Vec::with_capacity(face.candidates.len());
        for candidate in &face.candidates {
            let Some(subject) = &candidate.subject else { continue };
            if !samples.contains_key(&subject.id) {
                let record = state.service.subject_record(&tenant, SubjectKey::Id(&subject.id)).await;
                // A subject deleted since the search has nothing to show: it is left out.
                let Ok(record) = record else { continue };
                samples.insert(subject.id.clone(), record.samples);
            }
            let best = samples.get(&subject.id).and_then(|s| s.iter().find(|s| s.id == candidate.sample_id));
            candidates.push(SearchCandidate::new(candidate, subject, best, threshold));
        }
        faces.push(SearchedFace {
            face_box: (&face.bbox).into(),
            match_status: if face.known { "known" } else { "unknown" },
            candidates,
        });
    }
    Ok(Json(Searched { known_threshold: threshold, faces }))
}

#[derive(Debug, Deserialize)]
pub struct PersonsQuery {
    /// Only persons whose customer_person_id starts with this.
    #[serde(default)]
    pub prefix: String,
    /// The previous page's `next`.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /console/api/persons?prefix=&after=&limit=`: a page of persons, by customer_person_id.
pub async fn persons(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Query(query): Query<PersonsQuery>,
) -> ConsoleResult<PersonPage> {
    let limit = query.limit.unwrap_or(DEFAULT_PERSON_PAGE).clamp(1, MAX_SUBJECT_PAGE);
    let after = query.after.as_deref().filter(|a| !a.is_empty());
    let page = state.service.list_subjects(&tenant, &query.prefix, after, limit).await?;
    Ok(Json(PersonPage { persons: page.subjects.iter().map(PersonSummary::from).collect(), next: page.next }))
}

/// `GET /console/api/persons/{customer_person_id}/faces`: the person's stored faces.
pub async fn person_faces(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(customer_person_id): Path<String>,
) -> ConsoleResult<PersonFaces> {
    let record = state
        .service
        .subject_record(&tenant, SubjectKey::CustomerId(&customer_person_id))
        .await
        .map_err(in_person_words)?;
    let subject: &Subject = &record.subject;
    Ok(Json(PersonFaces { person: subject.into(), faces: record.samples.iter().map(StoredFace::from).collect() }))
}

/// `GET /console/api/faces/{face_id}/image`: a stored face image of the tenant, as uploaded.
pub async fn face_image(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(face_id): Path<String>,
) -> Result<Response, MiiError> {
    let bytes = state.service.face_image(&tenant, &face_id).await?;
    let content_type = image_type(&bytes);
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A face is biometric data: no cache along the way keeps a copy.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /console/api/tags`.
pub async fn tags(State(state): State<AppState>, Extension(tenant): Extension<Tenant>) -> ConsoleResult<Tags> {
    Ok(Json(Tags { tags: state.service.list_tags(&tenant).await? }))
}

#[derive(Debug, Deserialize)]
pub struct JobsQuery {
    pub limit: Option<usize>,
}

/// `GET /console/api/jobs?limit=`: the tenant's newest bulk jobs with their progress.
pub async fn jobs(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Query(query): Query<JobsQuery>,
) -> ConsoleResult<Jobs> {
    let limit = query.limit.unwrap_or(DEFAULT_JOBS);
    let jobs = state.service.list_bulk_jobs(&tenant, limit).await?;
    Ok(Json(Jobs { jobs: jobs.iter().map(Job::from).collect() }))
}

/// The bytes of the uploaded photo.
async fn uploaded_image(req: Request) -> Result<Vec<u8>, ApiError> {
    let form = read_form(req, IMAGE_FIELD).await?;
    match form.image {
        Some(image) if !image.bytes.is_empty() => Ok(image.bytes),
        Some(_) => Err(ApiError::invalid("the uploaded image_path file is empty")),
        None => Err(ApiError::invalid("image_path is required: upload the image file")),
    }
}

/// The media type of a stored image, from its first bytes: the engine accepted it, so it is one
/// of the formats it decodes.
fn image_type(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [b'B', b'M', ..] => "image/bmp",
        _ => "application/octet-stream",
    }
}

/// The core's neutral wording in miiCloud's terms, as miiCloud's own handlers put it.
fn in_person_words(e: facegate_core::Error) -> facegate_core::Error {
    match e {
        facegate_core::Error::NotFound("subject") => facegate_core::Error::NotFound("person"),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::image_type;

    #[test]
    fn stored_images_are_served_with_their_type() {
        assert_eq!(image_type(&[0xFF, 0xD8, 0xFF, 0xE0]), "image/jpeg");
        assert_eq!(image_type(b"\x89PNG\r\n"), "image/png");
        assert_eq!(image_type(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(image_type(b"face:a"), "application/octet-stream");
    }
}
