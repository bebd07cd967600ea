//! The server's error type and the one table that says how each error goes out in each dialect.
//! Dialects render the body in their own shape (`miicloud::error`, `necid::error`) but take the
//! status, the NEC error code and whether `Retry-After` applies from [`wire`] only.

use std::any::Any;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use facegate_core::{Code, Error};

use crate::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    UnsupportedContentType(String),
    #[error("no such endpoint")]
    NoRoute,
    #[error("this endpoint does not accept that method")]
    MethodNotAllowed,
    /// The request body did not arrive within `request_body_timeout_secs`.
    #[error("the request body was not received in time")]
    RequestTimeout,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Core(Error::InvalidRequest(message.into()))
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::Core(e) => ErrorKind::Core(e.code()),
            ApiError::Auth(AuthError::Refused(_)) => ErrorKind::AuthRefused,
            ApiError::Auth(AuthError::Throttled { .. }) => ErrorKind::AuthThrottled,
            ApiError::Auth(AuthError::Replayed) => ErrorKind::Replayed,
            ApiError::Auth(AuthError::Core(e)) => ErrorKind::Core(e.code()),
            ApiError::UnsupportedContentType(_) => ErrorKind::UnsupportedContentType,
            ApiError::NoRoute => ErrorKind::NoRoute,
            ApiError::MethodNotAllowed => ErrorKind::MethodNotAllowed,
            ApiError::RequestTimeout => ErrorKind::RequestTimeout,
        }
    }

    /// The message a client may see: internal details stay in the logs.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Core(e) | ApiError::Auth(AuthError::Core(e)) => e.public_message(),
            other => other.to_string(),
        }
    }

    /// The `Retry-After` value, in whole seconds, when [`wire`] says one applies.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        let seconds = match wire(self.kind()).retry_after {
            RetryAfter::No => return None,
            // The queue drains within a second or two under a burst; a client that waits one
            // second and retries has a fair chance, and one that does not is no worse off.
            RetryAfter::OneSecond => 1,
            RetryAfter::UntilUnthrottled => match self {
                ApiError::Auth(AuthError::Throttled { retry_after }) => whole_seconds(*retry_after),
                _ => 1,
            },
        };
        Some(HeaderValue::from(seconds))
    }

    /// Logs what a client is not told: an internal error's detail.
    pub fn log_if_internal(&self) {
        if self.kind() == ErrorKind::Core(Code::Internal) {
            tracing::error!(error = ?self.to_string(), "request failed");
        }
    }
}

fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// What went wrong, as the table below knows it: each core [`Code`] plus what only the HTTP
/// layer can get wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Core(Code),
    /// Credentials missing, malformed or wrong.
    AuthRefused,
    /// Too many failed authentications from the caller's address.
    AuthThrottled,
    /// A signed write already accepted once, sent again.
    Replayed,
    UnsupportedContentType,
    NoRoute,
    MethodNotAllowed,
    RequestTimeout,
}

/// NEC ID's documented error types, with their numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NecErrorType {
    InvalidRequest,
    NoFace,
    PoorQuality,
    MultipleFaces,
}

impl NecErrorType {
    pub fn code(self) -> u16 {
        match self {
            NecErrorType::InvalidRequest => 1001,
            NecErrorType::NoFace => 2001,
            NecErrorType::PoorQuality => 2002,
            NecErrorType::MultipleFaces => 2003,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NecErrorType::InvalidRequest => "InvalidRequest",
            NecErrorType::NoFace => "NoFace",
            NecErrorType::PoorQuality => "PoorQuality",
            NecErrorType::MultipleFaces => "MultipleFaces",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    No,
    OneSecond,
    /// Until the caller's address may try credentials again.
    UntilUnthrottled,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    /// miiCloud's status; also the status of routes no dialect owns.
    pub miicloud: u16,
    pub necid: u16,
    /// `errorCode`/`errorType` in NEC's body. NEC ID documents them for client errors only;
    /// the rest carry only a `message`, as the API gateway in front of NEC ID does.
    pub necid_error: Option<NecErrorType>,
    pub retry_after: RetryAfter,
}

/// The table: every error's status in each dialect, NEC's error code, and `Retry-After`.
///
/// miiCloud keeps HTTP's own distinctions (422 for an image without a usable face, 409 for a
/// duplicate). NEC ID answers every client error 400 with an `errorCode`, every credential
/// failure 403, and a missing resource 404, as its reference does.
pub const fn wire(kind: ErrorKind) -> Wire {
    use ErrorKind as K;
    use NecErrorType as T;
    use RetryAfter::{No, OneSecond, UntilUnthrottled};
    let (miicloud, necid, necid_error, retry_after) = match kind {
        K::Core(Code::InvalidRequest) => (400, 400, Some(T::InvalidRequest), No),
        K::Core(Code::NotFound) => (404, 404, None, No),
        K::Core(Code::Conflict) => (409, 400, Some(T::InvalidRequest), No),
        K::Core(Code::PayloadTooLarge) => (413, 413, None, No),
        K::Core(Code::UnsupportedMediaType) => (415, 400, Some(T::InvalidRequest), No),
        K::Core(Code::InvalidImage) => (422, 400, Some(T::InvalidRequest), No),
        K::Core(Code::NoFace) => (422, 400, Some(T::NoFace), No),
        K::Core(Code::PoorQuality) => (422, 400, Some(T::PoorQuality), No),
        K::Core(Code::MultipleFaces) => (422, 400, Some(T::MultipleFaces), No),
        K::Core(Code::Overloaded) => (503, 503, None, OneSecond),
        K::Core(Code::InsufficientStorage) => (507, 507, None, No),
        K::Core(Code::Internal) => (500, 500, None, No),
        K::AuthRefused => (401, 403, None, No),
        K::AuthThrottled => (429, 429, None, UntilUnthrottled),
        K::Replayed => (403, 403, None, No),
        K::UnsupportedContentType => (415, 400, Some(T::InvalidRequest), No),
        K::NoRoute => (404, 404, None, No),
        K::MethodNotAllowed => (405, 405, None, No),
        K::RequestTimeout => (408, 408, None, No),
    };
    Wire { miicloud, necid, necid_error, retry_after }
}

/// A status from the table; the table holds only valid ones (a test reads them all).
pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The response header that names the core's error code (`facegate_core::Code::name`) on every
/// error answer that has one, in every dialect. miiCloud's failure body holds only a message, and
/// a client that acts on the kind of failure (`facegate import --to`) must not have to recognise
/// it by the message's wording. Not part of either reference API, so neither OpenAPI document
/// lists it.
pub const ERROR_CODE_HEADER: &str = "x-facegate-error-code";

/// Adds the headers every error answer carries: `Retry-After` when the table says so, and the
/// core's code in [`ERROR_CODE_HEADER`] when the error has one.
pub fn with_error_headers(mut response: axum::response::Response, error: &ApiError) -> axum::response::Response {
    if let Some(value) = error.retry_after() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if let ErrorKind::Core(code) = error.kind() {
        response.headers_mut().insert(ERROR_CODE_HEADER, HeaderValue::from_static(code.name()));
    }
    response
}

/// The generic body, for routes no dialect owns (health probes, unknown paths).
impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        self.log_if_internal();
        let body = serde_json::json!({"status": "fail", "message": self.public_message()});
        let response = (status(wire(self.kind()).miicloud), axum::Json(body)).into_response();
        with_error_headers(response, &self)
    }
}

/// A panic in a handler becomes a JSON 500 without internals; the panic itself is logged.
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    let body = serde_json::json!({"status": "fail", "message": "internal server error"}).to_string();
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_holds_real_statuses_and_nec_codes_only_on_client_errors() {
        let transport = [
            ErrorKind::AuthRefused,
            ErrorKind::AuthThrottled,
            ErrorKind::Replayed,
            ErrorKind::UnsupportedContentType,
            ErrorKind::NoRoute,
            ErrorKind::MethodNotAllowed,
            ErrorKind::RequestTimeout,
        ];
        for kind in Code::ALL.map(ErrorKind::Core).into_iter().chain(transport) {
            let row = wire(kind);
            for code in [row.miicloud, row.necid] {
                assert!(StatusCode::from_u16(code).is_ok_and(|s| s.is_client_error() || s.is_server_error()));
            }
            if row.necid_error.is_some() {
                assert_eq!(row.necid, 400, "{kind:?}");
            }
        }
    }

    #[test]
    fn retry_after_is_set_where_waiting_helps() {
        assert_eq!(ApiError::Core(Error::Overloaded).retry_after(), Some(HeaderValue::from(1u64)));
        let throttled = ApiError::Auth(AuthError::Throttled { retry_after: Duration::from_millis(2500) });
        assert_eq!(throttled.retry_after(), Some(HeaderValue::from(3u64)));
        assert_eq!(ApiError::Core(Error::NoFace).retry_after(), None);
    }
}
