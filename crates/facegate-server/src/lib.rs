//! facegate's HTTP layer: authentication and the API dialects, translating each wire format
//! into `facegate_core::FaceService` calls and back.

pub mod api;
pub mod auth;
pub mod config;
pub mod error;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, Response};
use axum::routing::get;
use axum::{Json, Router};
use facegate_core::FaceService;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

pub use config::Settings;

/// How long shutdown waits for bulk records being registered to be saved.
const BULK_STOP_GRACE: Duration = Duration::from_secs(10);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<FaceService>,
    pub settings: Arc<Settings>,
    /// Where bulk registration jobs read files; `serve` runs the job runner when present.
    pub bulk_source: Option<Arc<dyn facegate_core::ImageSource>>,
    pub auth_throttle: Arc<auth::throttle::AuthFailureThrottle>,
}

impl AppState {
    pub fn new(
        service: Arc<FaceService>,
        settings: Settings,
        bulk_source: Option<Arc<dyn facegate_core::ImageSource>>,
    ) -> Self {
        let auth_throttle = Arc::new(auth::throttle::AuthFailureThrottle::new(
            settings.auth_failure_burst,
            Duration::from_secs(settings.auth_failure_refill_secs),
        ));
        Self { service, settings: Arc::new(settings), bulk_source, auth_throttle }
    }
}

/// The whole HTTP surface: health probes plus every API dialect.
pub fn build_router(state: AppState) -> Router {
    let body_limit = state.settings.body_limit_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api::miicloud::router(state.clone()))
        .merge(api::necid::router(state.clone()))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), tenant = tracing::field::Empty)
                })
                .on_request(())
                .on_response(|res: &Response<_>, latency: Duration, _span: &Span| {
                    tracing::info!(status = res.status().as_u16(), latency_ms = latency.as_secs_f64() * 1e3, "served");
                }),
        )
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` completes, then lets in-flight requests finish.
///
/// TCP_NODELAY is set on every connection: clients such as Python's `requests` write a request's
/// headers and body separately, and with Nagle's algorithm each small write can wait out a
/// 40 ms delayed ACK, which would double the latency of a 35 ms match.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Jobs left unfinished by an earlier run resume here; the runner stops with the server.
    let (stop_runner, runner_stop) = tokio::sync::watch::channel(false);
    let runner = state
        .bulk_source
        .clone()
        .map(|source| tokio::spawn(state.service.clone().run_bulk_jobs(source, state.settings.bulk(), runner_stop)));
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let served =
        axum::serve(listener, build_router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await;
    if let Some(mut runner) = runner {
        // Records in progress finish and are saved; the rest wait for the next start. One that
        // takes too long is abandoned unsaved and redone then.
        let _ = stop_runner.send(true);
        if tokio::time::timeout(BULK_STOP_GRACE, &mut runner).await.is_err() {
            tracing::warn!("bulk records still in progress at shutdown are left for the next start");
            runner.abort();
        }
    }
    served
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready once the models are loaded, which happens before the listener opens.
async fn readyz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let info = state.service.engine().model_info();
    Json(json!({"status": "ready", "model_id": info.model_id}))
}

async fn not_found() -> error::ApiError {
    error::ApiError::NoRoute
}
