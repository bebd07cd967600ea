//! Prometheus metrics: the HTTP families, recorded by a middleware, and the `/metrics` page,
//! served on a listener of its own (`--metrics-listen`).
//!
//! Why a listener of its own rather than a route of the API's: `/metrics` needs no credential
//! (scrapers rarely carry one) but tells who is busy, so it belongs on an address only the
//! monitoring network reaches, while the API's listener faces clients through the TLS proxy.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use facegate_core::jobs::RegisterStatus;
use facegate_core::telemetry::{
    self, AUTH_FAILURES, AUTH_THROTTLED, BULK_RECORDS, DURATION_BUCKETS, HTTP_DURATION, HTTP_REQUESTS, POOL_REJECTIONS,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::dialect::Dialect;
use crate::state::AppState;

/// The route label of requests no route matched: one value, so that scanners probing random
/// paths cannot grow the label set.
const UNMATCHED_ROUTE: &str = "unmatched";

/// How long a gauge that was not set again stays on the page. Every gauge is set afresh just
/// before each page is rendered (`FaceService::publish_gauges`), so a gauge older than this
/// belongs to something gone, such as a deleted tenant's `facegate_templates` series, and
/// dropping it is what keeps a node from showing the tenant for ever. A second is far longer
/// than setting the gauges takes, and far shorter than any scrape interval.
const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// The process's Prometheus recorder, installed on first use: the `metrics` facade takes one
/// global recorder, and a test process starts many servers.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(DURATION_BUCKETS)
                .expect("the duration buckets are a fixed, non-empty list")
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed already; then that one records,
            // and this page stays empty rather than the server failing.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed already; /metrics will be empty");
            }
            telemetry::describe();
            // Counters a quiet server has not touched yet still show, at 0, so that a dashboard
            // and a `rate()` see every family from the first scrape.
            for status in [RegisterStatus::Success, RegisterStatus::Failed] {
                metrics::counter!(BULK_RECORDS, "status" => RegisterStatus::name(Some(status))).absolute(0);
            }
            for dialect in [Dialect::MiiCloud, Dialect::NecId] {
                metrics::counter!(AUTH_FAILURES, "dialect" => dialect.label()).absolute(0);
                metrics::counter!(AUTH_THROTTLED, "dialect" => dialect.label()).absolute(0);
            }
            metrics::counter!(POOL_REJECTIONS).absolute(0);
            handle
        })
        .clone()
}

/// Middleware: counts each request by route template, dialect and status, and times it to
/// the response head. Sits inside the router, where the matched route is known.
pub async fn record_request(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let dialect = Dialect::of(req.uri().path()).label();
    let started = Instant::now();
    let response = next.run(req).await;
    let route = route.unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "dialect" => dialect, "status" => status).increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route, "dialect" => dialect).record(started.elapsed().as_secs_f64());
    response
}

/// The router of the metrics listener: `GET /metrics` in Prometheus' text format.
pub fn router(state: AppState, handle: PrometheusHandle) -> Router {
    Router::new().route("/metrics", get(render)).with_state((state, handle))
}

async fn render(State((state, handle)): State<(AppState, PrometheusHandle)>) -> Response {
    // Gauges that cannot be read now are left out (their last value would be a guess); the rest
    // of the page is still worth serving.
    if let Err(e) = state.service.publish_gauges().await {
        tracing::warn!(error = %e, "reading the gauges for /metrics failed");
    }
    let text = handle.render();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
