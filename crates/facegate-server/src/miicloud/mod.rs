//! The miiCloud dialect: persons keyed by `customer_person_id`, multipart uploads, and
//! `match_faces`. Shapes follow the miiCloud API reference field for field.

pub mod auth;
pub mod error;
pub mod form;
pub mod handlers;
pub mod wire;

use axum::routing::{get, post};
use axum::{middleware, Router};

use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    use handlers::*;
    Router::new()
        .route("/miicloud/person", post(enroll).put(update_by_form))
        .route("/miicloud/person/", post(enroll).put(update_by_form))
        .route("/miicloud/person/{customer_person_id}", get(get_person).put(update_by_path).delete(delete_person))
        .route("/miicloud/match_faces", post(match_faces))
        .route("/miicloud/match_faces/", post(match_faces))
        .route_layer(middleware::from_fn_with_state(state, auth::require_token))
}
