//! Request ids: the one a client or proxy sent in `x-request-id` when it is fit to log, else a
//! new UUID. It is echoed on every response and carried by the request's span, so every log line
//! and audit line of the request names it.

use axum::extract::Request;
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id kept. Tracing systems' ids are 16 to 36 characters (W3C trace ids are 32 hex
/// digits, UUIDs 36); 128 leaves room for a proxy's prefix without letting a client fill log
/// lines.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's id can go into logs as it is: 1 to 128 of `A-Z a-z 0-9 - _ . : / + =`
/// (UUIDs, hex and base64 ids, `proxy:id` forms), nothing that could break a log line or a
/// header.
pub fn is_fit(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
}

/// The request's id as `SetRequestIdLayer` gave it (a fit client id or a UUID), for the use
/// cases that record it (a kept sighting names the search that produced it).
pub fn id_of(id: &tower_http::request_id::RequestId) -> String {
    id.header_value().to_str().unwrap_or_default().to_owned()
}

/// Drops an `x-request-id` that is not fit, so that a new one is made for the request.
pub async fn drop_unfit(mut request: Request, next: Next) -> Response {
    let headers = request.headers_mut();
    let unfit = headers.get_all(&X_REQUEST_ID).iter().count() > 1
        || headers.get(&X_REQUEST_ID).is_some_and(|id| !is_fit(id.as_bytes()));
    if unfit {
        headers.remove(&X_REQUEST_ID);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_fit_for_logs_are_kept_and_others_are_not() {
        for id in ["0f8fad5b-d9cb-469f-a165-70867728950e", "abc", "lb-1:42", "YWJj+/=", "a.b_c"] {
            assert!(is_fit(id.as_bytes()), "{id}");
        }
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for id in ["", "has space", "new\nline", "quote\"", "{json}", long.as_str(), "é"] {
            assert!(!is_fit(id.as_bytes()), "{id:?}");
        }
    }
}
