//! An error answered in the dialect of a request that no dialect's handler saw: a body that
//! did not arrive in time, axum's own rejections, a path no route owns, a request hyper could not
//! parse. The one place that knows every dialect's error body; the status and codes still come
//! from the one table (`crate::error::wire`).

use axum::response::{IntoResponse, Response};

use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::miicloud::error::MiiError;
use crate::necid::error::NecError;

/// `error` as `dialect` words it.
pub fn in_dialect(dialect: Dialect, error: ApiError) -> Response {
    match dialect {
        Dialect::MiiCloud => MiiError(error).into_response(),
        Dialect::NecId => NecError::Api(error).into_response(),
        Dialect::Generic => error.into_response(),
    }
}
