//! Cross-origin requests for browser clients of the APIs: off unless origins are configured.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer: 10 minutes saves a preflight before
/// nearly every call of a page, and a changed setting reaches browsers soon after a restart.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The request headers the two dialects read: miiCloud's token, NEC's key and SigV4 headers,
/// and the request id.
const ALLOWED_HEADERS: [HeaderName; 7] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("x-amz-date"),
    HeaderName::from_static("x-amz-content-sha256"),
    HeaderName::from_static("x-amz-security-token"),
    HeaderName::from_static("x-request-id"),
];

/// The CORS layer for `origins` (exact origins such as `https://app.example.com`, or `*` for
/// any); `None` when the list is empty, and then no CORS header is ever sent.
///
/// Credentials mode stays off: the APIs authenticate with headers the page sets, never with
/// cookies, so no browser-held credential can ride along on another site's request.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // `Settings::validate` refuses origins that are not header values.
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers(ALLOWED_HEADERS)
            .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// Why `origin` cannot be an allowed origin, if it cannot: `*`, or `scheme://host[:port]`
/// with nothing after it, as browsers send it.
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(format!("CORS origin '{origin}' lacks a scheme; write it as https://host[:port]"));
    };
    let fits = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains('/')
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if fits {
        Ok(())
    } else {
        Err(format!("CORS origin '{origin}' is not an origin; write it as https://host[:port], without a path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_as_browsers_send_them() {
        assert!(check_origin("https://app.example.com").is_ok());
        assert!(check_origin("http://localhost:3000").is_ok());
        assert!(check_origin("*").is_ok());
        assert!(check_origin("app.example.com").is_err());
        assert!(check_origin("https://app.example.com/").is_err());
        assert!(check_origin("ftp://x").is_err());
        assert!(check_origin("https://a b").is_err());
    }

    #[test]
    fn no_origins_no_layer() {
        assert!(layer(&[]).is_none());
        assert!(layer(&["https://a.example".to_owned()]).is_some());
    }
}
