//! NEC ID's handlers: each reads the wire format, calls one core use case, and writes the answer
//! back in NEC's shapes.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use facegate_core::service::{FacePolicy, FaceSelection, NewSubject, Registered, SearchOptions, SubjectKey};
use facegate_core::{BulkRegistration, Error, ImageUpload, Profile, Tenant};

use crate::error::{ApiError, NecErrorType};
use crate::necid::error::NecError;
use crate::necid::wire::{
    attributes_example, decode_image_field, Attributes, BatchCreated, BulkProgress, BulkRegisterRequest, Candidate,
    Empty, EventId, EventList, EventRequest, EventWritten, ExtractRequest, Extracted, ExtractedFace, Failure, Failures,
    NotVerified, RegisterSubject, RenameTag, ScoredEvent, SearchRequest, SearchResult, TagList, Verification,
    VerifyRequest,
};
use crate::state::AppState;

/// NEC ID returns at most this many faces from extract.
const MAX_EXTRACT_FACES: usize = 20;
/// Search's documented defaults and ranges.
const DEFAULT_SEARCH_LIMIT: i64 = 10;
const SEARCH_LIMITS: std::ops::RangeInclusive<i64> = 1..=50;
const SCORES: std::ops::RangeInclusive<i64> = 0..=9999;

type NecResult<T> = Result<T, NecError>;

/// Parses a JSON body into `T`, with NEC's InvalidRequest for anything malformed. An empty body
/// reads as `{}`, so that a missing field is reported by name.
fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

/// The image of an event: NEC sends no file name.
fn event_image(bytes: Vec<u8>) -> ImageUpload {
    ImageUpload { file_name: "event".into(), bytes }
}

fn event_written(done: Registered) -> Result<Json<EventWritten>, NecError> {
    // Registration always measures the face (FacePolicy::SingleOfQuality).
    let attributes =
        done.attributes.ok_or_else(|| Error::Internal("a registered face came without attributes".into()))?;
    Ok(Json(EventWritten { id: done.subject.id, event_id: done.sample.id, attributes: Attributes::from(&attributes) }))
}

/// The core's neutral wording in NEC's terms: samples are events, and the quality is the
/// `faceQualityScore` the reference names.
fn in_event_words(e: Error) -> NecError {
    match e {
        Error::NotFound("face sample") => Error::NotFound("event"),
        Error::PoorQuality(m) => Error::PoorQuality(m.replace("face quality", "faceQualityScore")),
        other => other,
    }
    .into()
}

#[utoipa::path(post, path = "/v1.1/subjects", tag = "Subjects",
    summary = "Register Subject", description = "Registers a new subject from the single face of an image.",
    request_body(content = RegisterSubject, example = json!({"face": "[FACE]", "tags": ["passport"]})),
    responses((status = 201, description = "Subject has been created.", body = EventWritten, example = json!({"id": "necidguid-fcdf-49eb-9182-5a6825ed2a3b", "eventId": "eventguid-caf3-4e0f-92b9-101a9e73a3ee", "attributes": attributes_example()})), Failures))]
pub async fn register_subject(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    body: Bytes,
) -> NecResult<(StatusCode, Json<EventWritten>)> {
    let req: RegisterSubject = parse_json(&body)?;
    let image = decode_image_field("face", req.face.as_deref())?;
    let new = NewSubject {
        customer_id: None,
        profile: Profile::default(),
        tags: req.tags,
        image: event_image(image),
        policy: FacePolicy::SingleOfQuality,
    };
    let done = state.service.create_subject(&tenant, new).await.map_err(in_event_words)?;
    Ok((StatusCode::CREATED, event_written(done)?))
}

/// Adds a new event from the new face and updates the tags.
#[utoipa::path(put, path = "/v1.1/subjects/{subject_id}", tag = "Subjects", params(("subject_id" = String, Path, description = "Subject id.")),
    summary = "Update Subject", description = "Adds an event from the new face, and replaces the subject's tags when given.",
    request_body(content = EventRequest, example = json!({"face": "[FACE]", "tags": ["passport"]})),
    responses((status = 200, description = "Subject has been updated.", body = EventWritten, example = json!({"id": "necidguid-fcdf-49eb-9182-5a6825ed2a3b", "eventId": "eventguid-caf3-4e0f-92b9-101a9e73a3ee", "attributes": attributes_example()})),
        (status = 404, description = "Subject with id not found.", body = Failure), Failures))]
pub async fn update_subject(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(subject_id): Path<String>,
    body: Bytes,
) -> NecResult<Json<EventWritten>> {
    let req: EventRequest = parse_json(&body)?;
    let image = decode_image_field("face", req.face.as_deref())?;
    let key = SubjectKey::Id(&subject_id);
    let done = state
        .service
        .add_face(&tenant, key, None, event_image(image), FacePolicy::SingleOfQuality, req.tags)
        .await
        .map_err(in_event_words)?;
    event_written(done)
}

#[utoipa::path(delete, path = "/v1.1/subjects/{subject_id}", tag = "Subjects", params(("subject_id" = String, Path, description = "Subject id.")),
    summary = "Unregister Subject", description = "Unregisters a subject and its events.",
    responses((status = 204, description = "Subject has been unregistered."),
        (status = 404, description = "Subject with id not found.", body = Failure), Failures))]
pub async fn delete_subject(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(subject_id): Path<String>,
) -> NecResult<StatusCode> {
    state.service.delete_subject(&tenant, SubjectKey::Id(&subject_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1.1/subjects/{subject_id}/events", tag = "Events", params(("subject_id" = String, Path, description = "Subject id.")),
    summary = "List Events",
    responses((status = 200, description = "OK.", body = EventList, example = json!({"id": "necidguid-fcdf-49eb-9182-5a6825ed2a3b", "events": [{"id": "eventguid-caf3-4e0f-92b9-101a9e73a3ee"}, {"id": "eventguid-f99a-41dc-8eb1-cd7b1b3dcdec"}]})),
        (status = 404, description = "Subject with id not found.", body = Failure), Failures))]
pub async fn list_events(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(subject_id): Path<String>,
) -> NecResult<Json<EventList>> {
    let record = state.service.subject_record(&tenant, SubjectKey::Id(&subject_id)).await?;
    let events = record.samples.into_iter().map(|e| EventId { id: e.id }).collect();
    Ok(Json(EventList { id: subject_id, events }))
}

#[utoipa::path(post, path = "/v1.1/subjects/{subject_id}/events", tag = "Events", params(("subject_id" = String, Path, description = "Subject id.")),
    summary = "Register Event", description = "Registers a new event for a subject from the single face of an image.",
    request_body(content = EventRequest, example = json!({"face": "[FACE]", "tags": ["passport"]})),
    responses((status = 201, description = "Event has been created.", body = EventWritten, example = json!({"id": "necidguid-fcdf-49eb-9182-5a6825ed2a3b", "eventId": "eventguid-caf3-4e0f-92b9-101a9e73a3ee", "attributes": attributes_example()})),
        (status = 404, description = "Subject with id not found.", body = Failure), Failures))]
pub async fn add_event(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(subject_id): Path<String>,
    body: Bytes,
) -> NecResult<(StatusCode, Json<EventWritten>)> {
    let req: EventRequest = parse_json(&body)?;
    let image = decode_image_field("face", req.face.as_deref())?;
    let key = SubjectKey::Id(&subject_id);
    let done = state
        .service
        .add_face(&tenant, key, None, event_image(image), FacePolicy::SingleOfQuality, req.tags)
        .await
        .map_err(in_event_words)?;
    Ok((StatusCode::CREATED, event_written(done)?))
}

#[utoipa::path(put, path = "/v1.1/subjects/{subject_id}/events/{event_id}", tag = "Events", params(("subject_id" = String, Path, description = "Subject id."), ("event_id" = String, Path, description = "Event id.")),
    summary = "Update Event", description = "Replaces the face of an event, keeping its id.",
    request_body(content = EventRequest, example = json!({"face": "[FACE]", "tags": ["passport"]})),
    responses((status = 200, description = "Event has been updated.", body = EventWritten, example = json!({"id": "necidguid-fcdf-49eb-9182-5a6825ed2a3b", "eventId": "eventguid-caf3-4e0f-92b9-101a9e73a3ee", "attributes": attributes_example()})),
        (status = 404, description = "Subject with id and eventId not found.", body = Failure), Failures))]
pub async fn update_event(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((subject_id, event_id)): Path<(String, String)>,
    body: Bytes,
) -> NecResult<Json<EventWritten>> {
    let req: EventRequest = parse_json(&body)?;
    let image = decode_image_field("face", req.face.as_deref())?;
    let key = SubjectKey::Id(&subject_id);
    let done = state
        .service
        .add_face(&tenant, key, Some(&event_id), event_image(image), FacePolicy::SingleOfQuality, req.tags)
        .await
        .map_err(in_event_words)?;
    event_written(done)
}

#[utoipa::path(delete, path = "/v1.1/subjects/{subject_id}/events/{event_id}", tag = "Events", params(("subject_id" = String, Path, description = "Subject id."), ("event_id" = String, Path, description = "Event id.")),
    summary = "Unregister Event",
    responses((status = 204, description = "Event has been unregistered."),
        (status = 404, description = "Subject with id and eventId not found.", body = Failure), Failures))]
pub async fn delete_event(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((subject_id, event_id)): Path<(String, String)>,
) -> NecResult<StatusCode> {
    state.service.delete_face(&tenant, SubjectKey::Id(&subject_id), &event_id).await.map_err(in_event_words)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every face, largest first, up to 20, each with its attributes; 404 when there is none.
#[utoipa::path(post, path = "/v1.1/face/extract", tag = "Face",
    summary = "Extract", description = "Extracts the attributes of every face of an image, largest first, up to 20.",
    request_body(content = ExtractRequest, example = json!({"faces": "[FACES]"})),
    responses((status = 200, description = "Candidates found.", body = Extracted, example = json!({"faces": [{"attributes": attributes_example()}]})),
        (status = 404, description = "Candidates not found: no face in the image.", body = Failure,
            example = json!({"message": "Candidates not found.", "errorCode": 2001, "errorType": "NoFace"})), Failures))]
pub async fn extract(State(state): State<AppState>, body: Bytes) -> NecResult<Json<Extracted>> {
    let req: ExtractRequest = parse_json(&body)?;
    let image = decode_image_field("faces", req.faces.as_deref())?;
    let faces = state.service.extract(image, MAX_EXTRACT_FACES).await?;
    if faces.is_empty() {
        return Err(NecError::CandidatesNotFound(Some(NecErrorType::NoFace)));
    }
    let faces = faces.iter().map(|f| ExtractedFace { attributes: Attributes::from(&f.attributes) }).collect();
    Ok(Json(Extracted { faces }))
}

#[utoipa::path(post, path = "/v1.1/face/search", tag = "Face",
    summary = "Search", description = "Searches for subjects using the single face of a probe image.",
    request_body(content = SearchRequest, example = json!({"probe": "[PROBE]", "threshold": 7500, "limit": 3, "tags": ["passport", "licence"]})),
    responses((status = 200, description = "Candidates found.", body = SearchResult, example = json!({
            "candidates": [{"id": "necidguid-fcdf-49eb-9182-5a6825ed2a3b", "score": 8200, "events": [
                {"id": "eventguid-caf3-4e0f-92b9-101a9e73a3ee", "score": 8200}, {"id": "eventguid-f99a-41dc-8eb1-cd7b1b3dcdec", "score": 8000}]}],
            "attributes": attributes_example()})),
        (status = 404, description = "Candidates not found.", body = Failure, example = json!({"message": "Candidates not found."})), Failures))]
pub async fn search(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    request_id: Option<Extension<tower_http::request_id::RequestId>>,
    body: Bytes,
) -> NecResult<Json<SearchResult>> {
    let req: SearchRequest = parse_json(&body)?;
    let image = decode_image_field("probe", req.probe.as_deref())?;
    // The reference's default threshold is the service's known threshold (7000 out of the box).
    let threshold = req.threshold.unwrap_or(i64::from(state.service.config().known_threshold));
    if !SCORES.contains(&threshold) {
        return Err(ApiError::invalid("threshold must be between 0 and 9999.").into());
    }
    let limit = req.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
    if !SEARCH_LIMITS.contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 50.").into());
    }
    let options = SearchOptions {
        faces: FaceSelection::Single,
        limit: limit as usize,
        min_score: threshold as u32,
        tags: req.tags,
        sample_scores: true,
        with_subjects: false,
        // A probe that matches nobody is kept when the tenant opted in (issue 29).
        keep_unknown: request_id.map(|Extension(id)| crate::request_id::id_of(&id)),
    };
    let found = state.service.find_subjects(&tenant, image, options).await?;
    let Some(face) = found.into_iter().next().filter(|f| !f.candidates.is_empty()) else {
        return Err(NecError::CandidatesNotFound(None));
    };
    let attributes =
        face.attributes.ok_or_else(|| Error::Internal("a single probe face came without attributes".into()))?;
    let candidates = face
        .candidates
        .into_iter()
        .map(|c| Candidate {
            id: c.subject_id,
            score: c.score,
            events: c.samples.into_iter().map(|(id, score)| ScoredEvent { id, score }).collect(),
        })
        .collect();
    Ok(Json(SearchResult { candidates, attributes: Attributes::from(&attributes) }))
}

/// 200 `{id, score}` at or above the known threshold; 404 with the score otherwise.
#[utoipa::path(post, path = "/v1.1/face/verify", tag = "Face",
    summary = "Verify", description = "Verifies a subject against the single face of a probe image.",
    request_body(content = VerifyRequest, example = json!({"probe": "[PROBE]", "id": "necidguid-fcdf-49eb-9182-5a6825ed2a3b"})),
    responses((status = 200, description = "Subject verified.", body = Verification, example = json!({"id": "necidguid-fcdf-49eb-9182-5a6825ed2a3b", "score": 8200})),
        (status = 404, description = "Subject not verified (with its score), or no such subject.", body = NotVerified,
            example = json!({"id": "necidguid-fcdf-49eb-9182-5a6825ed2a3b", "score": 3100, "message": "Subject not verified"})), Failures))]
pub async fn verify(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    body: Bytes,
) -> NecResult<(StatusCode, Json<Verification>)> {
    let req: VerifyRequest = parse_json(&body)?;
    let image = decode_image_field("probe", req.probe.as_deref())?;
    let id = req.id.filter(|i| !i.is_empty()).ok_or_else(|| ApiError::invalid("id property must be provided."))?;
    let faces = state.service.compare(&tenant, image, SubjectKey::Id(&id), FaceSelection::Single).await?;
    let score = faces.first().and_then(|f| f.candidates.first()).map_or(0, |c| c.score);
    if score >= state.service.config().known_threshold {
        Ok((StatusCode::OK, Json(Verification { id, score, message: None })))
    } else {
        Ok((StatusCode::NOT_FOUND, Json(Verification { id, score, message: Some("Subject not verified".into()) })))
    }
}

#[utoipa::path(get, path = "/v1.1/tags", tag = "Tags", summary = "List Tags",
    responses((status = 200, description = "The tenant's tags.", body = TagList, example = json!({"tags": ["passport", "staff"]})), Failures))]
pub async fn list_tags(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
) -> NecResult<Json<TagList>> {
    let tags = state.service.list_tags(&tenant).await?;
    Ok(Json(TagList { tags }))
}

#[utoipa::path(post, path = "/v1.1/tags/{name}", tag = "Tags",
    params(("name" = String, Path, description = "The tag name. Tag name must not be empty and must be unique.")),
    summary = "Create Tag", description = "Creates a tag. Each application holds at most 64.",
    responses((status = 200, description = "Tag created.", body = Empty), Failures))]
pub async fn create_tag(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(name): Path<String>,
) -> NecResult<Json<Empty>> {
    state.service.create_tag(&tenant, &name).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(put, path = "/v1.1/tags/{name}", tag = "Tags",
    params(("name" = String, Path, description = "The tag's current name.")),
    summary = "Update Tag", request_body(content = RenameTag, example = json!({"newName": "employee"})),
    responses((status = 200, description = "Tag updated.", body = Empty),
        (status = 404, description = "No tag of that name.", body = Failure), Failures))]
pub async fn rename_tag(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(old_name): Path<String>,
    body: Bytes,
) -> NecResult<Json<Empty>> {
    let req: RenameTag = parse_json(&body)?;
    let new_name = req.new_name.ok_or_else(|| ApiError::invalid("newName property must be provided."))?;
    state.service.rename_tag(&tenant, &old_name, &new_name).await?;
    Ok(Json(Empty {}))
}

/// The document's example renames with `/v1.1/tags/{old}/{new}`; accepted too.
#[utoipa::path(post, path = "/v1.1/tags/{old_name}/{new_name}", tag = "Tags",
    params(("old_name" = String, Path, description = "The tag's current name."), ("new_name" = String, Path, description = "The tag's new name.")),
    summary = "Update Tag (the reference's example form)",
    responses((status = 200, description = "Tag updated.", body = Empty),
        (status = 404, description = "No tag of that name.", body = Failure), Failures))]
pub async fn rename_tag_by_path(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((old_name, new_name)): Path<(String, String)>,
) -> NecResult<Json<Empty>> {
    state.service.rename_tag(&tenant, &old_name, &new_name).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(put, path = "/v1.1/tags/{old_name}/{new_name}", tag = "Tags",
    params(("old_name" = String, Path, description = "The tag's current name."), ("new_name" = String, Path, description = "The tag's new name.")),
    summary = "Update Tag (the path form, with PUT)",
    responses((status = 200, description = "Tag updated.", body = Empty),
        (status = 404, description = "No tag of that name.", body = Failure), Failures))]
pub async fn rename_tag_by_path_put(
    state: State<AppState>,
    tenant: Extension<Tenant>,
    names: Path<(String, String)>,
) -> NecResult<Json<Empty>> {
    rename_tag_by_path(state, tenant, names).await
}

#[utoipa::path(delete, path = "/v1.1/tags/{name}", tag = "Tags",
    params(("name" = String, Path, description = "The name of the tag to delete.")),
    summary = "Delete Tag", description = "Deletes a tag. Subjects keep the label.",
    responses((status = 200, description = "Tag deleted.", body = Empty),
        (status = 404, description = "No tag of that name.", body = Failure), Failures))]
pub async fn delete_tag(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(name): Path<String>,
) -> NecResult<Json<Empty>> {
    state.service.delete_tag(&tenant, &name).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(post, path = "/v1.1/jobs/bulkregister", tag = "Jobs",
    summary = "Bulk Register", description = "Creates a job registering one subject per file of the application's bucket area.",
    request_body(content = BulkRegisterRequest, example = json!({"registrations": [{"filename": "1.jpg", "tags": ["passport"]}, {"filename": "2.jpg", "tags": ["passport"]}]})),
    responses((status = 200, description = "Job created.", body = BatchCreated, example = json!({"batchId": "batchguid-eec5-440a-89fc-60817f5546c8"})), Failures))]
pub async fn create_bulk_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    body: Bytes,
) -> NecResult<Json<BatchCreated>> {
    let req: BulkRegisterRequest = parse_json(&body)?;
    let entries = req.registrations.ok_or_else(|| ApiError::invalid("registrations is required"))?;
    let registrations = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let filename =
                e.filename.ok_or_else(|| ApiError::invalid(format!("registrations[{i}].filename is required")))?;
            Ok(BulkRegistration { filename, tags: e.tags })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let batch_id = state.service.create_bulk_job(&tenant, registrations).await?;
    Ok(Json(BatchCreated { batch_id }))
}

#[utoipa::path(get, path = "/v1.1/jobs/bulkregister/{batch_id}", tag = "Jobs",
    params(("batch_id" = String, Path, description = "The batchId of the job.")),
    summary = "Bulk Register Progress", description = "The first page (1000 records) of a job's progress.",
    responses((status = 200, description = "OK", body = BulkProgress),
        (status = 404, description = "No such job.", body = Failure), Failures))]
pub async fn bulk_job_first_page(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(batch_id): Path<String>,
) -> NecResult<Json<BulkProgress>> {
    let page = state.service.bulk_job_page(&tenant, &batch_id, None).await?;
    Ok(Json(BulkProgress::from(&page)))
}

#[utoipa::path(get, path = "/v1.1/jobs/bulkregister/{batch_id}/{paging_id}", tag = "Jobs",
    params(("batch_id" = String, Path, description = "The batchId of the job."),
        ("paging_id" = String, Path, description = "The lastEvaluatedKey from the previous page.")),
    summary = "Bulk Register Progress, next page",
    responses((status = 200, description = "OK", body = BulkProgress),
        (status = 404, description = "No such job or page.", body = Failure), Failures))]
pub async fn bulk_job_page(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((batch_id, paging_id)): Path<(String, String)>,
) -> NecResult<Json<BulkProgress>> {
    let page = state.service.bulk_job_page(&tenant, &batch_id, Some(&paging_id)).await?;
    Ok(Json(BulkProgress::from(&page)))
}
