//! facegate's HTTP layer: authentication and the API dialects, translating each wire format
//! into `facegate_core::FaceService` calls and back.

pub mod answer;
pub mod auth;
pub mod config;
pub mod console;
pub mod cors;
pub mod dialect;
pub mod docs;
pub mod error;
pub mod health;
pub mod http_limits;
pub mod listener;
pub mod metrics;
pub mod miicloud;
pub mod native;
pub mod necid;
pub mod parse_errors;
pub mod request_id;
pub mod state;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{Request, Response};
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

pub use config::Settings;
pub use state::AppState;

/// The name of each HTTP request's span, which carries its `request_id`.
pub const REQUEST_SPAN: &str = "request";

/// The whole HTTP surface: health probes plus every API dialect.
pub fn build_router(state: AppState) -> Router {
    let body_limit = state.settings.body_limit_bytes;
    let body_timeout = Duration::from_secs(state.settings.request_body_timeout_secs);
    Router::new()
        // Someone who opens the server's address in a browser lands on the console.
        .route("/", get(|| async { axum::response::Redirect::to("/console") }))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(miicloud::router(state.clone()))
        .merge(necid::router(state.clone()))
        .merge(native::router(state.clone()))
        .merge(console::router(state.clone()))
        .merge(docs::router())
        .fallback(health::not_found)
        // Innermost, so that the matched route is known; everything below it is timed.
        .layer(axum::middleware::from_fn(metrics::record_request))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(body_timeout, http_limits::body_deadline))
        .layer(axum::middleware::from_fn(http_limits::json_error_bodies))
        .layer(CatchPanicLayer::custom(error::panic_response))
        // Off unless `cors_allowed_origins` names origins; outside authentication, since a
        // browser's preflight carries no credentials.
        .layer(tower::util::option_layer(cors::layer(&state.settings.cors_allowed_origins)))
        // Outermost last: an unfit client id is dropped, an id is set, the span takes it, and
        // every response (errors and panics included) echoes it.
        .layer(PropagateRequestIdLayer::new(request_id::X_REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok());
                    // Debug formatting escapes whatever a client put in the path.
                    tracing::info_span!(
                        REQUEST_SPAN,
                        // Fit ids only (`request_id::is_fit`) or UUIDs: safe to log as they are.
                        request_id = %id.unwrap_or(""),
                        method = %req.method(),
                        path = ?req.uri().path(),
                        tenant = tracing::field::Empty
                    )
                })
                .on_request(())
                .on_response(|res: &Response<_>, latency: Duration, _span: &Span| {
                    tracing::info!(status = res.status().as_u16(), latency_ms = latency.as_secs_f64() * 1e3, "served");
                }),
        )
        .layer(SetRequestIdLayer::new(request_id::X_REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::from_fn(request_id::drop_unfit))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` completes, then lets in-flight requests finish.
/// Connections are limited as `listener::serve_connections` describes. Only HTTP: the service's
/// background work (`FaceService::start_background_work`) is the caller's to start and stop.
/// `metrics`, when given, serves `/metrics` (see [`metrics`]) under the same connection limits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Option<tokio::net::TcpListener>,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut limits = listener::ConnectionLimits::of(&state.settings);
    limits.max_connections = listener::effective_max_connections(limits.max_connections);
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout_secs = limits.header_read_timeout.as_secs(),
        keep_alive_idle_secs = limits.keep_alive_idle.as_secs(),
        "connection limits"
    );
    let (stop_accepting, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_accepting.send(true);
    });
    let scrapes = metrics.map(|metrics_listener| {
        let router = metrics::router(state.clone(), metrics::recorder());
        tokio::spawn(listener::serve_connections(metrics_listener, router, limits.clone(), stopped.clone()))
    });
    let served = listener::serve_connections(listener, build_router(state), limits, stopped).await;
    if let Some(scrapes) = scrapes {
        scrapes.abort();
    }
    served
}
