//! Health probes, and the answer for paths no dialect owns.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::Json;
use serde_json::json;

use crate::answer::in_dialect;
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the models are loaded (before the listener opens), the database answers, and its
/// disk has the configured headroom; 503 with the reason otherwise.
///
/// A ready answer also counts the stored templates that other models made, as found at start:
/// the server only starts with subjects it cannot find when told to (`--allow-stale-templates`),
/// and a probe should see that it did. Counts only, no tenant names: this route answers anyone.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let info = state.service.model_info();
    match state.service.readiness().await {
        Ok(()) => {
            let stale = state.service.stale_templates();
            let body = json!({
                "status": "ready",
                "model_id": info.model_id,
                "stale_templates": {
                    "samples": stale.stale_samples(),
                    "unsearchable_subjects": stale.unsearchable_subjects(),
                    "models": stale.models,
                },
            });
            (StatusCode::OK, Json(body))
        }
        Err(e) => {
            let reason = match e {
                facegate_core::Error::StorageFull => "free disk space is below min_free_disk_bytes",
                _ => "the database does not answer",
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not ready", "reason": reason})))
        }
    }
}

/// A path no route owns answers in the body of the dialect its prefix names: NEC's
/// `{"message": "Not Found"}` under `/v1.1/`, miiCloud's failure under `/miicloud/`.
pub async fn not_found(uri: Uri) -> Response {
    in_dialect(Dialect::of(uri.path()), ApiError::NoRoute)
}
