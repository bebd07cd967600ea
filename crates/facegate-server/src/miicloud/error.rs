//! miiCloud's failure body, `{"status":"fail","message":…}`, with the status from the one table
//! (`crate::error::wire`).

use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::{status, wire, with_error_headers, ApiError};
use crate::miicloud::wire::Failure;

#[derive(Debug)]
pub struct MiiError(pub ApiError);

impl<E: Into<ApiError>> From<E> for MiiError {
    fn from(e: E) -> Self {
        MiiError(e.into())
    }
}

impl IntoResponse for MiiError {
    fn into_response(self) -> Response {
        let error = self.0;
        error.log_if_internal();
        let body = Failure { status: "fail", message: error.public_message() };
        with_error_headers((status(wire(error.kind()).miicloud), Json(body)).into_response(), &error)
    }
}
