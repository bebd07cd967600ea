//! The published contract: each dialect's OpenAPI 3.1 document, built from the route
//! definitions that serve it, at `/openapi/{miicloud,necid}.json`, and facegate's own (unknown
//! people) at `/openapi/facegate.json`, and Swagger UI at `/docs`
//! (assets compiled into the binary; nothing is fetched at run time).

use axum::http::header::{CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::Router;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::state::AppState;
use crate::{miicloud, native, necid};

pub const MIICLOUD_DOCUMENT: &str = "/openapi/miicloud.json";
pub const NECID_DOCUMENT: &str = "/openapi/necid.json";
pub const NATIVE_DOCUMENT: &str = "/openapi/facegate.json";

/// What Swagger UI 5 needs, and nothing more: its page loads only its own scripts and
/// stylesheets (no inline script), React sets element styles through the DOM (allowed without
/// `'unsafe-inline'`), its stylesheet draws icons from `data:` images, and it fetches the
/// documents and "Try it out" requests from this origin. The one inline style is the `<style>`
/// element of the top bar's logo (`.logo_small_svg__cls-2{fill:#fff}…` in
/// swagger-ui-standalone-preset.js), allowed by its hash alone; a newer Swagger UI that changes
/// it fails `swagger_ui_renders_under_its_policy_in_a_real_browser`.
const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    // Swagger UI's default shows a badge from validator.swagger.io, which would send the
    // document's address to a third party; the policy above would block it anyway.
    let config = Config::default().validator_url("none");
    Router::new()
        .merge(
            SwaggerUi::new("/docs")
                .config(config)
                .url(MIICLOUD_DOCUMENT, miicloud::openapi())
                .url(NECID_DOCUMENT, necid::openapi())
                .url(NATIVE_DOCUMENT, native::openapi()),
        )
        .layer(axum::middleware::map_response(security_headers))
}

/// The page and everything it loads: no script or style from elsewhere, no sniffing a type
/// other than the one declared, and no framing by another site (clickjacking).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
