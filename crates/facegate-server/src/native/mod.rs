//! facegate's own small API under `/facegate/v1/`, for what neither reference API has: the
//! faces searches found nobody for, grouped into unknown people (issue 29). Either dialect's
//! credentials authenticate it: miiCloud's token, or NEC's `x-api-key` with an AWS Signature V4
//! (whose signed writes pass the replay guard, as NEC's do). Errors take the generic body
//! (`{"status":"fail","message":…}`) with the statuses of the one table's miiCloud column, and
//! the core's code in `x-facegate-error-code`.

pub mod handlers;
pub mod wire;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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
        title = "facegate: unknown people",
        description = "facegate's own API for the faces searches found nobody for. A tenant that turns it on \
(`facegate tenant set NAME --unknown-faces on --unknown-retention 30d`) keeps each face of a 1:N search (miiCloud \
`match_faces`, NEC `face/search`) that matches nobody as a sighting, grouped into unknown people as it arrives, for \
its retention. Authenticated by either dialect's credentials: `Authorization: Token <token>`, or `x-api-key` with an \
AWS Signature V4.",
    ),
    modifiers(&Security),
    security(("token" = []), ("api_key" = [], "sigv4" = [])),
    tags((name = "Unknown people", description = "List, search back, merge, split, delete and promote unknown people.")),
)]
struct NativeApi;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut OpenApiDocument) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "miiCloud's `Token <token>`.",
            ))),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "An NEC application's API key, with `sigv4`.",
            ))),
        );
        components.add_security_scheme(
            "sigv4",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "AWS Signature Version 4 (service execute-api) made with one of the application's access keys.",
            ))),
        );
    }
}

fn documented() -> OpenApiRouter<AppState> {
    use handlers::*;
    OpenApiRouter::with_openapi(NativeApi::openapi())
        .routes(routes!(list))
        .routes(routes!(search))
        .routes(routes!(sightings))
        .routes(routes!(crop))
        .routes(routes!(merge))
        .routes(routes!(split))
        .routes(routes!(promote))
        .routes(routes!(delete))
}

/// The API's OpenAPI 3.1 document, from the same route definitions [`router`] serves.
pub fn openapi() -> OpenApiDocument {
    documented().into_openapi()
}

pub fn router(state: AppState) -> Router<AppState> {
    let (routes, _) = documented().split_for_parts();
    routes
        .route_layer(middleware::from_fn_with_state(state.clone(), once_if_signed))
        .route_layer(middleware::from_fn_with_state(state, either_credential))
}

/// NEC's credentials when the request carries an `x-api-key`, miiCloud's token otherwise; a
/// refusal answers in the body of the dialect whose credentials were presented.
async fn either_credential(state: State<AppState>, req: Request, next: Next) -> Response {
    if req.headers().contains_key("x-api-key") {
        crate::necid::auth::require_signed_request(state, req, next).await.into_response()
    } else {
        crate::miicloud::auth::require_token(state, req, next).await.into_response()
    }
}

/// A signed write is carried out once, as NEC's are; a token's writes, as miiCloud's, may repeat.
async fn once_if_signed(state: State<AppState>, req: Request, next: Next) -> Response {
    if req.extensions().get::<crate::necid::auth::Signature>().is_some() {
        crate::necid::auth::refuse_replays(state, req, next).await.into_response()
    } else {
        next.run(req).await
    }
}
