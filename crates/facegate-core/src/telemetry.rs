//! The Prometheus metric families facegate records, named once here.
//!
//! Code records through the `metrics` facade where things happen (the pool, the bulk runner,
//! the engine, the HTTP layer); without an installed recorder every call is a no-op, so the
//! commands that do not serve pay nothing. The binary installs the Prometheus recorder and the
//! server renders it at `/metrics`.
//!
//! Labels never carry biometric or personal data: no names, person ids, file names or scores.
//! Tenants appear by their random id only.

/// HTTP requests, by `route` (the route template, never the raw path), `dialect` and `status`.
pub const HTTP_REQUESTS: &str = "facegate_http_requests_total";
/// Seconds from a request's head to its response head, by `route` and `dialect`.
pub const HTTP_DURATION: &str = "facegate_http_request_duration_seconds";
/// Seconds spent in one inference stage of one image, by `stage`.
pub const INFERENCE_STAGE: &str = "facegate_inference_stage_duration_seconds";
/// Interactive inference jobs admitted and not finished (running and waiting).
pub const POOL_DEPTH: &str = "facegate_inference_pool_depth";
/// The most interactive inference jobs admitted at once (workers + queue).
pub const POOL_CAPACITY: &str = "facegate_inference_pool_capacity";
/// Interactive inference jobs refused because the pool was full (answered 503).
pub const POOL_REJECTIONS: &str = "facegate_inference_pool_rejections_total";
/// Templates in this node's index, by `tenant_id`.
pub const TEMPLATES: &str = "facegate_templates";
/// Bulk registration records finished, by `status` (`Success`, `Failed`: NEC's words).
pub const BULK_RECORDS: &str = "facegate_bulk_records_total";
/// Requests refused for their credentials, by `dialect`.
pub const AUTH_FAILURES: &str = "facegate_auth_failures_total";
/// Requests refused because their address failed authentication too often, by `dialect`.
pub const AUTH_THROTTLED: &str = "facegate_auth_throttled_total";

/// Faces that searches found nobody for, kept as sightings (tenants that opt in), by `tenant_id`.
pub const SIGHTINGS_KEPT: &str = "facegate_sightings_kept_total";
/// Sightings deleted, by `reason`: `expired` (the tenant's retention) or `deleted` (an unknown
/// person deleted by a client).
pub const SIGHTINGS_PURGED: &str = "facegate_sightings_purged_total";
/// Unknown people in the store, by `tenant_id`, for the tenants that opt in.
pub const UNKNOWN_PEOPLE: &str = "facegate_unknown_people";

/// The inference stages [`INFERENCE_STAGE`] is labelled with.
pub mod stage {
    pub const DECODE: &str = "decode";
    pub const DETECT: &str = "detect";
    pub const ALIGN: &str = "align";
    pub const EMBED: &str = "embed";
    pub const ATTRIBUTES: &str = "attributes";
}

/// Bucket bounds (seconds) of every duration histogram: from 1 ms, the cost of a small image's
/// decode, to 10 s, past the request timeouts a client would wait; roughly ×2.5 apart, so a
/// p50 or p99 read from them is within one step.
pub const DURATION_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Help texts and units, shown on `/metrics` beside each family.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route template, dialect and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency to the response head");
    describe_histogram!(INFERENCE_STAGE, Unit::Seconds, "Time per image in each inference stage");
    describe_gauge!(POOL_DEPTH, "Interactive inference jobs admitted and not finished");
    describe_gauge!(POOL_CAPACITY, "Interactive inference jobs admitted at most (workers + queue)");
    describe_counter!(POOL_REJECTIONS, "Inference jobs refused with 503 because the pool was full");
    describe_gauge!(TEMPLATES, "Templates in this node's index, by tenant id");
    describe_counter!(BULK_RECORDS, "Bulk registration records finished, by status");
    describe_counter!(AUTH_FAILURES, "Requests refused for their credentials, by dialect");
    describe_counter!(SIGHTINGS_KEPT, "Faces searches found nobody for, kept as sightings, by tenant id");
    describe_counter!(SIGHTINGS_PURGED, "Sightings deleted, by reason (expired, deleted)");
    describe_gauge!(UNKNOWN_PEOPLE, "Unknown people kept, by tenant id");
    describe_counter!(AUTH_THROTTLED, "Requests refused after too many failed authentications, by dialect");
}

/// Runs `work` and records its duration as inference stage `stage`.
pub fn time_stage<T>(stage: &'static str, work: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = work();
    metrics::histogram!(INFERENCE_STAGE, "stage" => stage).record(started.elapsed().as_secs_f64());
    out
}
