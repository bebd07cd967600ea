//! The NEC ID v1.1 dialect: JSON bodies with base64 images, 0–9999 scores, tags, and
//! `{message, errorCode, errorType}` errors. Authenticated by `x-api-key` plus AWS Signature V4
//! (`crate::auth::necid`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Extension, Json, Router};
use facegate_core::jobs::MAX_BULK_REGISTRATIONS;
use facegate_core::service::MAX_TAGS;
use facegate_core::{Code, Tenant};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

mod wire;

/// NEC ID returns at most this many faces from extract.
const MAX_EXTRACT_FACES: usize = 20;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1.1/subjects", post(register_subject))
        .route("/v1.1/subjects/{subject_id}", axum::routing::put(update_subject).delete(delete_subject))
        .route("/v1.1/subjects/{subject_id}/events", get(list_events).post(add_event))
        .route("/v1.1/subjects/{subject_id}/events/{event_id}", axum::routing::put(update_event).delete(delete_event))
        .route("/v1.1/face/search", post(search))
        .route("/v1.1/face/extract", post(extract))
        .route("/v1.1/face/verify", post(verify))
        .route("/v1.1/tags", get(list_tags))
        .route("/v1.1/tags/{name}", post(create_tag).put(rename_tag).delete(delete_tag))
        .route("/v1.1/tags/{old_name}/{new_name}", post(rename_tag_by_path).put(rename_tag_by_path))
        .route("/v1.1/jobs/bulkregister", post(create_bulk_job))
        .route("/v1.1/jobs/bulkregister/{batch_id}", get(bulk_job_first_page))
        .route("/v1.1/jobs/bulkregister/{batch_id}/{paging_id}", get(bulk_job_page))
        .route_layer(middleware::from_fn_with_state(state, crate::auth::necid::require_signed_request))
}

/// Every NEC ID failure. Client errors carry the documented `errorCode` and `errorType`;
/// the rest carry only a `message`, as the API gateway in front of NEC ID does.
#[derive(Debug)]
pub struct NecError(pub ApiError);

impl<E: Into<ApiError>> From<E> for NecError {
    fn from(e: E) -> Self {
        NecError(e.into())
    }
}

/// The documented error codes.
fn documented(code: Code) -> Option<(u16, &'static str)> {
    match code {
        Code::InvalidRequest | Code::Conflict | Code::UnsupportedMediaType | Code::InvalidImage => {
            Some((1001, "InvalidRequest"))
        }
        Code::NoFace => Some((2001, "NoFace")),
        Code::PoorQuality => Some((2002, "PoorQuality")),
        Code::MultipleFaces => Some((2003, "MultipleFaces")),
        Code::NotFound | Code::PayloadTooLarge | Code::Overloaded | Code::InsufficientStorage | Code::Internal => None,
    }
}

fn status_of(code: Code) -> StatusCode {
    match code {
        Code::InvalidRequest
        | Code::Conflict
        | Code::UnsupportedMediaType
        | Code::InvalidImage
        | Code::NoFace
        | Code::PoorQuality
        | Code::MultipleFaces => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        Code::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for NecError {
    fn into_response(self) -> Response {
        match &self.0 {
            ApiError::Core(e) => {
                let code = e.code();
                if code == Code::Internal {
                    tracing::error!(error = ?e.to_string(), "request failed");
                }
                let message = e.public_message();
                let body = match documented(code) {
                    Some((number, name)) => json!({"message": message, "errorCode": number, "errorType": name}),
                    None => json!({"message": message}),
                };
                let mut res = (status_of(code), Json(body)).into_response();
                if code == Code::Overloaded {
                    res.headers_mut()
                        .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
                }
                res
            }
            // NEC ID answers every authentication failure with 403.
            ApiError::Unauthenticated(m) => (StatusCode::FORBIDDEN, Json(json!({"message": m}))).into_response(),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, Json(json!({"message": m}))).into_response(),
            ApiError::UnsupportedContentType(m) => {
                (StatusCode::BAD_REQUEST, Json(json!({"message": m, "errorCode": 1001, "errorType": "InvalidRequest"})))
                    .into_response()
            }
            ApiError::NoRoute => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response(),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"message": self.0.to_string()}))).into_response()
            }
            ApiError::RequestTimeout => {
                (StatusCode::REQUEST_TIMEOUT, Json(json!({"message": self.0.to_string()}))).into_response()
            }
            ApiError::Replayed => (StatusCode::FORBIDDEN, Json(json!({"message": self.0.to_string()}))).into_response(),
            ApiError::TooManyAuthFailures { retry_after } => {
                ApiError::too_many_auth_failures(*retry_after, json!({"message": self.0.to_string()}))
            }
        }
    }
}

type NecResult<T> = Result<T, NecError>;

/// Parses a JSON body into `T`, with NEC's InvalidRequest for anything malformed.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return serde_json::from_slice(b"{}").map_err(|e| ApiError::invalid(format!("request body is required: {e}")));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

// Lists are bounded while they are parsed (`wire::at_most`): a tenant holds at most
// `MAX_TAGS` tags and a job at most `MAX_BULK_REGISTRATIONS` records, so a longer list is
// refused before a body of millions of tiny items is built in memory.
fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    wire::at_most(d, MAX_TAGS, "tags")
}

fn some_tags<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    wire::optional_at_most(d, MAX_TAGS, "tags")
}

fn registrations<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    wire::optional_at_most(d, MAX_BULK_REGISTRATIONS, "registrations")
}

#[derive(Deserialize)]
struct FaceRequest {
    face: Option<String>,
    #[serde(default, deserialize_with = "tags")]
    tags: Vec<String>,
}

async fn register_subject(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    body: Bytes,
) -> NecResult<(StatusCode, Json<Value>)> {
    let req: FaceRequest = parse_json(&body)?;
    let image = wire::decode_image_field("face", req.face.as_deref())?;
    let (subject, sample, attributes) = state.service.register_subject(&tenant, image, req.tags).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": subject.id, "eventId": sample.id, "attributes": wire::attributes(&attributes)})),
    ))
}

#[derive(Deserialize)]
struct EventRequest {
    face: Option<String>,
    #[serde(default, deserialize_with = "some_tags")]
    tags: Option<Vec<String>>,
}

fn event_body(
    subject: &facegate_core::Subject,
    sample: &facegate_core::FaceSample,
    a: &facegate_core::FaceAttributes,
) -> Value {
    json!({"id": subject.id, "eventId": sample.id, "attributes": wire::attributes(a)})
}

/// Adds a new event from the new face and updates the tags.
async fn update_subject(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(subject_id): Path<String>,
    body: Bytes,
) -> NecResult<Json<Value>> {
    let req: EventRequest = parse_json(&body)?;
    let image = wire::decode_image_field("face", req.face.as_deref())?;
    let (subject, sample, attributes) = state.service.add_event(&tenant, &subject_id, image, req.tags).await?;
    Ok(Json(event_body(&subject, &sample, &attributes)))
}

async fn add_event(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(subject_id): Path<String>,
    body: Bytes,
) -> NecResult<(StatusCode, Json<Value>)> {
    let req: EventRequest = parse_json(&body)?;
    let image = wire::decode_image_field("face", req.face.as_deref())?;
    let (subject, sample, attributes) = state.service.add_event(&tenant, &subject_id, image, req.tags).await?;
    Ok((StatusCode::CREATED, Json(event_body(&subject, &sample, &attributes))))
}

async fn update_event(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((subject_id, event_id)): Path<(String, String)>,
    body: Bytes,
) -> NecResult<Json<Value>> {
    let req: EventRequest = parse_json(&body)?;
    let image = wire::decode_image_field("face", req.face.as_deref())?;
    let (subject, sample, attributes) =
        state.service.update_event(&tenant, &subject_id, &event_id, image, req.tags).await?;
    Ok(Json(event_body(&subject, &sample, &attributes)))
}

async fn delete_event(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((subject_id, event_id)): Path<(String, String)>,
) -> NecResult<StatusCode> {
    state.service.delete_event(&tenant, &subject_id, &event_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct SearchRequest {
    probe: Option<String>,
    threshold: Option<i64>,
    limit: Option<i64>,
    #[serde(default, deserialize_with = "tags")]
    tags: Vec<String>,
}

async fn search(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    body: Bytes,
) -> NecResult<Json<Value>> {
    let req: SearchRequest = parse_json(&body)?;
    let image = wire::decode_image_field("probe", req.probe.as_deref())?;
    let threshold = req.threshold.unwrap_or(7000);
    if !(0..=9999).contains(&threshold) {
        return Err(ApiError::invalid("threshold must be between 0 and 9999.").into());
    }
    let limit = req.limit.unwrap_or(10);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 50.").into());
    }
    let (candidates, attributes) =
        state.service.search(&tenant, image, threshold as u32, limit as usize, req.tags).await?;
    if candidates.is_empty() {
        return Err(facegate_core::Error::NotFound("candidate").into());
    }
    let candidates: Vec<Value> = candidates
        .iter()
        .map(|c| {
            let events: Vec<Value> = c.events.iter().map(|(id, score)| json!({"id": id, "score": score})).collect();
            json!({"id": c.subject_id, "score": c.score, "events": events})
        })
        .collect();
    Ok(Json(json!({"candidates": candidates, "attributes": wire::attributes(&attributes)})))
}

async fn delete_subject(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(subject_id): Path<String>,
) -> NecResult<StatusCode> {
    state.service.delete_subject(&tenant, &subject_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_events(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(subject_id): Path<String>,
) -> NecResult<Json<Value>> {
    let events = state.service.events(&tenant, &subject_id).await?;
    let events: Vec<Value> = events.iter().map(|e| json!({"id": e.id})).collect();
    Ok(Json(json!({"id": subject_id, "events": events})))
}

#[derive(Deserialize)]
struct VerifyRequest {
    probe: Option<String>,
    id: Option<String>,
}

/// 200 `{id, score}` at or above the known threshold; 404 with the score otherwise.
async fn verify(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    body: Bytes,
) -> NecResult<(StatusCode, Json<Value>)> {
    let req: VerifyRequest = parse_json(&body)?;
    let image = wire::decode_image_field("probe", req.probe.as_deref())?;
    let id = req.id.filter(|i| !i.is_empty()).ok_or_else(|| ApiError::invalid("id property must be provided."))?;
    let score = state.service.verify_subject(&tenant, &id, image).await?;
    if score >= state.service.config().known_threshold {
        Ok((StatusCode::OK, Json(json!({"id": id, "score": score}))))
    } else {
        Ok((StatusCode::NOT_FOUND, Json(json!({"id": id, "score": score, "message": "Subject not verified"}))))
    }
}

#[derive(Deserialize)]
struct ExtractRequest {
    faces: Option<String>,
}

/// Every face, largest first, up to 20, each with its attributes.
async fn extract(State(state): State<AppState>, body: Bytes) -> NecResult<Json<Value>> {
    let req: ExtractRequest = parse_json(&body)?;
    let image = wire::decode_image_field("faces", req.faces.as_deref())?;
    let faces = state.service.extract(image, MAX_EXTRACT_FACES).await?;
    if faces.is_empty() {
        return Err(facegate_core::Error::NoFace.into());
    }
    let faces: Vec<Value> = faces.iter().map(|f| json!({"attributes": wire::attributes(&f.attributes)})).collect();
    Ok(Json(json!({"faces": faces})))
}

#[derive(Deserialize)]
struct BulkRegisterRequest {
    #[serde(default, deserialize_with = "registrations")]
    registrations: Option<Vec<BulkRegistrationEntry>>,
}

#[derive(Deserialize)]
struct BulkRegistrationEntry {
    filename: Option<String>,
    #[serde(default, deserialize_with = "tags")]
    tags: Vec<String>,
}

async fn create_bulk_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    body: Bytes,
) -> NecResult<Json<Value>> {
    let req: BulkRegisterRequest = parse_json(&body)?;
    let entries = req.registrations.ok_or_else(|| ApiError::invalid("registrations is required"))?;
    let registrations = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let filename =
                e.filename.ok_or_else(|| ApiError::invalid(format!("registrations[{i}].filename is required")))?;
            Ok(facegate_core::BulkRegistration { filename, tags: e.tags })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let batch_id =
        state.service.create_bulk_job(&tenant, registrations, state.settings.bulk_max_queued_per_tenant).await?;
    Ok(Json(json!({"batchId": batch_id})))
}

async fn bulk_job_first_page(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(batch_id): Path<String>,
) -> NecResult<Json<Value>> {
    let page = state.service.bulk_job_page(&tenant, &batch_id, None).await?;
    Ok(Json(wire::bulk_page(&page)))
}

async fn bulk_job_page(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((batch_id, paging_id)): Path<(String, String)>,
) -> NecResult<Json<Value>> {
    let page = state.service.bulk_job_page(&tenant, &batch_id, Some(&paging_id)).await?;
    Ok(Json(wire::bulk_page(&page)))
}

async fn list_tags(State(state): State<AppState>, Extension(tenant): Extension<Tenant>) -> NecResult<Json<Value>> {
    let tags = state.service.list_tags(&tenant).await?;
    Ok(Json(json!({"tags": tags})))
}

async fn create_tag(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(name): Path<String>,
) -> NecResult<Json<Value>> {
    state.service.create_tag(&tenant, &name).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct RenameTag {
    #[serde(rename = "newName")]
    new_name: Option<String>,
}

async fn rename_tag(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(old_name): Path<String>,
    body: Bytes,
) -> NecResult<Json<Value>> {
    let req: RenameTag = parse_json(&body)?;
    let new_name = req.new_name.ok_or_else(|| ApiError::invalid("newName property must be provided."))?;
    state.service.rename_tag(&tenant, &old_name, &new_name).await?;
    Ok(Json(json!({})))
}

/// The document's example renames with `/v1.1/tags/{old}/{new}`; accepted too.
async fn rename_tag_by_path(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((old_name, new_name)): Path<(String, String)>,
) -> NecResult<Json<Value>> {
    state.service.rename_tag(&tenant, &old_name, &new_name).await?;
    Ok(Json(json!({})))
}

async fn delete_tag(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(name): Path<String>,
) -> NecResult<Json<Value>> {
    state.service.delete_tag(&tenant, &name).await?;
    Ok(Json(json!({})))
}
