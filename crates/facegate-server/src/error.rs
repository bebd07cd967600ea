//! The server's error type. Dialects turn it into their own bodies; this module only holds
//! what is shared by both.

use std::any::Any;

use axum::body::Body;
use axum::http::{header, Response, StatusCode};
use axum::response::IntoResponse;
use facegate_core::Error;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] Error),
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// NEC ID's 403: a missing or unknown API key, or a refused signature.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    UnsupportedContentType(String),
    #[error("no such endpoint")]
    NoRoute,
    #[error("this endpoint does not accept that method")]
    MethodNotAllowed,
    /// The request body did not arrive within `request_body_timeout_secs`.
    #[error("the request body was not received in time")]
    RequestTimeout,
    /// A signed request already accepted once, sent again.
    #[error("this signed request was already accepted once; sign a new one")]
    Replayed,
    /// Too many failed authentications from the caller's address.
    #[error("too many failed authentication attempts from this address; retry later")]
    TooManyAuthFailures { retry_after: std::time::Duration },
}

impl ApiError {
    /// The 429 every dialect sends for `TooManyAuthFailures`, with `body` as its JSON.
    pub fn too_many_auth_failures(
        retry_after: std::time::Duration,
        body: serde_json::Value,
    ) -> axum::response::Response {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut res = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds.max(1)));
        res
    }
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Core(Error::InvalidRequest(message.into()))
    }
}

/// The generic body for routes no dialect owns.
impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let (status, message) = match &self {
            ApiError::Core(e) => (
                StatusCode::from_u16(e.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                e.public_message(),
            ),
            ApiError::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, (*m).to_owned()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            ApiError::UnsupportedContentType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, m.clone()),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, self.to_string()),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, self.to_string()),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, self.to_string()),
            ApiError::Replayed => (StatusCode::FORBIDDEN, self.to_string()),
            ApiError::TooManyAuthFailures { retry_after } => {
                let body = serde_json::json!({"status": "fail", "message": self.to_string()});
                return ApiError::too_many_auth_failures(*retry_after, body);
            }
        };
        (status, axum::Json(serde_json::json!({"status": "fail", "message": message}))).into_response()
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
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}
