//! NEC ID's failure body, `{message, errorCode, errorType}`, with the status and error code from
//! the one table (`crate::error::wire`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::{status, wire, with_error_headers, ApiError, ErrorKind, NecErrorType};
use crate::necid::wire::Failure;

#[derive(Debug)]
pub enum NecError {
    Api(ApiError),
    /// The 404 the reference documents for a face search or extract that found nothing, with
    /// the error type that says why when there is one (extract: no face in the image).
    CandidatesNotFound(Option<NecErrorType>),
}

impl<E: Into<ApiError>> From<E> for NecError {
    fn from(e: E) -> Self {
        NecError::Api(e.into())
    }
}

/// The message NEC's gateway sends for a path it does not know, and for a missing API key.
pub const NOT_FOUND: &str = "Not Found";
pub const CANDIDATES_NOT_FOUND: &str = "Candidates not found.";

impl IntoResponse for NecError {
    fn into_response(self) -> Response {
        let error = match self {
            NecError::CandidatesNotFound(error_type) => {
                return (StatusCode::NOT_FOUND, Json(Failure::new(CANDIDATES_NOT_FOUND.into(), error_type)))
                    .into_response()
            }
            NecError::Api(error) => error,
        };
        error.log_if_internal();
        let row = wire(error.kind());
        let message = match error.kind() {
            ErrorKind::NoRoute => NOT_FOUND.to_owned(),
            _ => error.public_message(),
        };
        with_error_headers((status(row.necid), Json(Failure::new(message, row.necid_error))).into_response(), &error)
    }
}
