//! The NEC ID v1.1 dialect: JSON bodies with base64 images, 0–9999 scores, tags, and
//! `{message, errorCode, errorType}` errors. Authenticated by `x-api-key` plus AWS Signature V4.

pub mod auth;
pub mod error;
pub mod handlers;
pub mod wire;

use axum::{middleware, Router};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDocument;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "facegate: NEC ID v1.1",
        description = "NEC ID v1.1 served by facegate: subjects, events, face extract/search/verify, tags and bulk \
registration jobs. Every request carries the application's `x-api-key` and an AWS Signature Version 4 \
(service `execute-api`) over the whole request, body included; a signed write is accepted once.",
    ),
    modifiers(&Security),
    security(("api_key" = [], "sigv4" = [])),
    tags(
        (name = "Subjects", description = "Manage subjects for search and verification matching."),
        (name = "Events", description = "Several biometric events (face images) per subject."),
        (name = "Face", description = "Extract faces, search and verify probe images against registered subjects."),
        (name = "Tags", description = "Labels on subjects that searches can filter by; at most 64 per application."),
        (name = "Jobs", description = "Bulk registration from the application's area of the bucket."),
    )
)]
struct NecIdApi;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut OpenApiDocument) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "The application's API key.",
            ))),
        );
        components.add_security_scheme(
            "sigv4",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "AWS Signature Version 4 (AWS4-HMAC-SHA256, service execute-api) made with one of the application's \
access keys, with the x-amz-date header it covers.",
            ))),
        );
    }
}

/// The routes that change the gallery; they pass the replay guard.
fn writes() -> OpenApiRouter<AppState> {
    use handlers::*;
    OpenApiRouter::new()
        .routes(routes!(register_subject))
        .routes(routes!(update_subject, delete_subject))
        .routes(routes!(list_events, add_event))
        .routes(routes!(update_event, delete_event))
        .routes(routes!(list_tags))
        .routes(routes!(create_tag, rename_tag, delete_tag))
        .routes(routes!(rename_tag_by_path, rename_tag_by_path_put))
        .routes(routes!(create_bulk_job))
        .routes(routes!(bulk_job_first_page))
        .routes(routes!(bulk_job_page))
}

/// Face search, verify and extract: POSTs that only read, so repeating one changes nothing.
fn reads() -> OpenApiRouter<AppState> {
    use handlers::*;
    OpenApiRouter::new().routes(routes!(extract)).routes(routes!(search)).routes(routes!(verify))
}

/// The dialect's OpenAPI 3.1 document, from the same route definitions [`router`] serves.
pub fn openapi() -> OpenApiDocument {
    OpenApiRouter::with_openapi(NecIdApi::openapi()).merge(writes()).merge(reads()).into_openapi()
}

pub fn router(state: AppState) -> Router<AppState> {
    let (writes, _) = writes().split_for_parts();
    let (reads, _) = reads().split_for_parts();
    writes
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::refuse_replays))
        .merge(reads)
        .route_layer(middleware::from_fn_with_state(state, auth::require_signed_request))
}
