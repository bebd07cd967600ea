//! The web console at `/console`: a page to try the service by hand (detect, enroll, search,
//! browse the gallery), and the small JSON API under `/console/api/` it needs beside miiCloud's
//! routes. The API sits behind miiCloud's token middleware and answers errors in miiCloud's
//! body; it is not part of the published contract (no OpenAPI document), since only the page
//! calls it.

pub mod assets;
pub mod handlers;
pub mod wire;

use axum::http::header::CACHE_CONTROL;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{middleware, Router};

use crate::miicloud::auth::require_token;
use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route("/console/api/session", get(handlers::session))
        .route("/console/api/detect", post(handlers::detect))
        .route("/console/api/search", post(handlers::search))
        .route("/console/api/persons", get(handlers::persons))
        .route("/console/api/persons/{customer_person_id}/faces", get(handlers::person_faces))
        .route("/console/api/faces/{face_id}/image", get(handlers::face_image))
        .route("/console/api/tags", get(handlers::tags))
        .route("/console/api/jobs", get(handlers::jobs))
        .route_layer(middleware::from_fn_with_state(state, require_token))
        .layer(middleware::map_response(no_store));
    Router::new()
        .route("/console", get(assets::index))
        .route("/console/", get(assets::index))
        .route("/console/app.css", get(assets::stylesheet))
        .route("/console/app.js", get(assets::script))
        .merge(api)
}

/// The API's answers hold personal data (names, ids, face images, search results): no browser
/// or proxy cache may keep a copy after the tab is closed.
async fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
