//! The miiCloud dialect: persons keyed by `customer_person_id`, multipart uploads, and
//! `match_faces`. Shapes follow the miiCloud API reference field for field.

pub mod auth;
pub mod error;
pub mod form;
pub mod handlers;
pub mod wire;

use axum::routing::post;
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
        title = "facegate: miiCloud",
        description = "miiCloud's persons and match_faces served by facegate. Every request carries \
`Authorization: Token <token>`. Forms are multipart/form-data as in the reference's examples; URL-encoded and \
JSON bodies with the same fields are read too.",
    ),
    modifiers(&Security),
    security(("token" = [])),
    tags(
        (name = "Persons", description = "Enroll, update, read and delete persons."),
        (name = "Matching", description = "Find or verify the persons in a photo."),
    )
)]
struct MiiCloudApi;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut OpenApiDocument) {
        doc.components.get_or_insert_with(Default::default).add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <token>` (`Bearer <token>` is accepted too).",
            ))),
        );
    }
}

fn documented() -> OpenApiRouter<AppState> {
    use handlers::*;
    OpenApiRouter::with_openapi(MiiCloudApi::openapi())
        .routes(routes!(enroll, update_by_form, get_person_by_query, delete_person_by_query))
        .routes(routes!(get_person, update_by_path, delete_person))
        .routes(routes!(match_faces))
}

/// The dialect's OpenAPI 3.1 document, from the same route definitions [`router`] serves.
pub fn openapi() -> OpenApiDocument {
    documented().into_openapi()
}

pub fn router(state: AppState) -> Router<AppState> {
    use handlers::*;
    let (documented, _) = documented().split_for_parts();
    // Trailing-slash spellings some clients send; the same handlers, left out of the contract.
    documented
        .route("/miicloud/person/", post(enroll).put(update_by_form))
        .route("/miicloud/match_faces/", post(match_faces))
        .route_layer(middleware::from_fn_with_state(state, auth::require_token))
}
