//! The native API's handlers: each translates its request into one `FaceService` use case of
//! `unknown.rs` and the answer back, as the dialects do.

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use facegate_core::Tenant;

use super::wire::{
    Deleted, Failure, Failures, MergeRequest, PageQuery, PromoteRequest, Promoted, SearchAnswer, SearchForm,
    SearchedFace, SightingsView, SplitRequest, UnknownPeoplePage, UnknownPersonView,
};
use crate::error::ApiError;
use crate::miicloud::form::read_form;
use crate::miicloud::handlers::{image_of, IMAGE_FIELD};
use crate::state::AppState;

type NativeResult<T> = Result<Json<T>, ApiError>;

/// A listing's page when the client names none: a console page's worth.
const DEFAULT_PAGE: u32 = 50;

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("the JSON body is not valid: {e}")))
}

#[utoipa::path(get, path = "/facegate/v1/unknown-people", tag = "Unknown people",
    summary = "List unknown people", description = "A page of the tenant's unknown people, in id order.",
    params(PageQuery),
    responses((status = 200, description = "A page.", body = UnknownPeoplePage),
        Failures))]
pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Query(query): Query<PageQuery>,
) -> NativeResult<UnknownPeoplePage> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE) as usize;
    let people = state.service.unknown_people(&tenant, query.after, limit).await?;
    let next_after = (people.len() == limit).then(|| people.last().map(|p| p.id.clone())).flatten();
    Ok(Json(UnknownPeoplePage { unknown_people: people.iter().map(Into::into).collect(), next_after }))
}

#[utoipa::path(get, path = "/facegate/v1/unknown-people/{id}/sightings", tag = "Unknown people",
    summary = "An unknown person's sightings", description = "Each kept face, oldest first, with the request that kept it.",
    params(("id" = String, Path, description = "The unknown person's id.")),
    responses((status = 200, description = "The person and its sightings.", body = SightingsView),
        (status = 404, description = "No such unknown person.", body = Failure), Failures))]
pub async fn sightings(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> NativeResult<SightingsView> {
    let (person, sightings) = state.service.unknown_person(&tenant, &id).await?;
    Ok(Json(SightingsView { unknown_person: (&person).into(), sightings: sightings.iter().map(Into::into).collect() }))
}

#[utoipa::path(get, path = "/facegate/v1/sightings/{id}/crop", tag = "Unknown people",
    summary = "A sighting's face crop", description = "The face's region of the search's image, as a JPEG.",
    params(("id" = String, Path, description = "The sighting's id.")),
    responses((status = 200, description = "The crop.", content_type = "image/jpeg"),
        (status = 404, description = "No such sighting.", body = Failure), Failures))]
pub async fn crop(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let jpeg = state.service.sighting_crop(&tenant, &id).await?;
    Ok(([(CONTENT_TYPE, "image/jpeg")], jpeg).into_response())
}

#[utoipa::path(post, path = "/facegate/v1/unknown-people/{id}/merge", tag = "Unknown people",
    summary = "Merge", description = "Moves every sighting of `from` into this unknown person and deletes `from`.",
    params(("id" = String, Path, description = "The unknown person that stays.")),
    request_body = MergeRequest,
    responses((status = 200, description = "The merged person.", body = UnknownPersonView),
        (status = 404, description = "Either person is missing.", body = Failure), Failures))]
pub async fn merge(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
    body: Bytes,
) -> NativeResult<UnknownPersonView> {
    let req: MergeRequest = parse_json(&body)?;
    let person = state.service.merge_unknown_people(&tenant, &id, &req.from).await?;
    Ok(Json((&person).into()))
}

#[utoipa::path(post, path = "/facegate/v1/unknown-people/{id}/split", tag = "Unknown people",
    summary = "Split", description = "Moves the given sightings of this unknown person to a new one.",
    params(("id" = String, Path, description = "The unknown person to split.")),
    request_body = SplitRequest,
    responses((status = 200, description = "The new person.", body = UnknownPersonView),
        (status = 404, description = "No such person, or a sighting not of it.", body = Failure), Failures))]
pub async fn split(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
    body: Bytes,
) -> NativeResult<UnknownPersonView> {
    let req: SplitRequest = parse_json(&body)?;
    let person = state.service.split_unknown_person(&tenant, &id, req.sightings).await?;
    Ok(Json((&person).into()))
}

#[utoipa::path(post, path = "/facegate/v1/unknown-people/{id}/promote", tag = "Unknown people",
    summary = "Promote", description = "Enrolls the unknown person, with its best sightings as its faces: as a miiCloud \
person when `customer_person_id` is given, else as an NEC subject. Its sightings are deleted; searches find the person \
from then on.",
    params(("id" = String, Path, description = "The unknown person to enroll.")),
    request_body = PromoteRequest,
    responses((status = 200, description = "The new person.", body = Promoted),
        (status = 404, description = "No such unknown person.", body = Failure),
        (status = 409, description = "The customer_person_id is taken.", body = Failure), Failures))]
pub async fn promote(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
    body: Bytes,
) -> NativeResult<Promoted> {
    let req: PromoteRequest = if body.is_empty() { PromoteRequest::default() } else { parse_json(&body)? };
    let (subject, faces) = state.service.promote_unknown_person(&tenant, &id, req.customer_person_id).await?;
    Ok(Json(Promoted { person_id: subject.id, customer_person_id: subject.customer_person_id, faces }))
}

#[utoipa::path(delete, path = "/facegate/v1/unknown-people/{id}", tag = "Unknown people",
    summary = "Delete", description = "Deletes the unknown person and every sighting of it.",
    params(("id" = String, Path, description = "The unknown person to delete.")),
    responses((status = 200, description = "Deleted.", body = Deleted),
        (status = 404, description = "No such unknown person.", body = Failure), Failures))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> NativeResult<Deleted> {
    let purge = state.service.delete_unknown_person(&tenant, &id).await?;
    Ok(Json(Deleted { status: "ok", deleted_sightings: purge.sightings }))
}

#[utoipa::path(post, path = "/facegate/v1/unknown-people/search", tag = "Unknown people",
    summary = "Search back", description = "For each face of the image: the best enrolled person, and the unknown people \
it matches at the service's threshold. Keeps nothing.",
    request_body(content = SearchForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "One entry per face, largest first.", body = SearchAnswer),
        (status = 422, description = "An image that cannot be read.", body = Failure), Failures))]
pub async fn search(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    req: Request,
) -> NativeResult<SearchAnswer> {
    let form = read_form(req, IMAGE_FIELD).await?;
    let image = image_of(&form)?.ok_or_else(|| ApiError::invalid("image_path is required: upload the image file"))?;
    let found = state.service.search_unknown_people(&tenant, image.bytes).await?;
    let faces = found
        .iter()
        .map(|face| {
            let best = face.candidates.first();
            SearchedFace {
                bounding_box: (&face.bbox).into(),
                match_status: if face.known { "known" } else { "unknown" },
                person_id: best.map(|c| c.subject_id.clone()),
                customer_person_id: best.and_then(|c| c.subject.as_ref()).and_then(|s| s.customer_person_id.clone()),
                score: best.map(|c| c.score),
                unknown_people: face.unknown_people.iter().map(Into::into).collect(),
            }
        })
        .collect();
    Ok(Json(SearchAnswer { faces }))
}
