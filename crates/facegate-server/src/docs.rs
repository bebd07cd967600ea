//! The published contract: each dialect's OpenAPI 3.1 document, built from the route
//! definitions that serve it, at `/openapi/{miicloud,necid}.json`, and Swagger UI at `/docs`
//! (assets compiled into the binary; nothing is fetched at run time).

use axum::Router;
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;
use crate::{miicloud, necid};

pub const MIICLOUD_DOCUMENT: &str = "/openapi/miicloud.json";
pub const NECID_DOCUMENT: &str = "/openapi/necid.json";

pub fn router() -> Router<AppState> {
    Router::new().merge(
        SwaggerUi::new("/docs").url(MIICLOUD_DOCUMENT, miicloud::openapi()).url(NECID_DOCUMENT, necid::openapi()),
    )
}
