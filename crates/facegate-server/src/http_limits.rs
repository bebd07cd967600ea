//! Request-level guards shared by every route: a deadline for receiving the request body, and a
//! JSON body in the caller's dialect for every error answer, including those axum makes itself
//! (405, a path that is not UTF-8, a body it could not read).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::answer::in_dialect;
use crate::dialect::Dialect;
use crate::error::ApiError;

/// The error a request body yields once its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within the time allowed")]
pub struct BodyTimedOut;

/// A request body that fails with [`BodyTimedOut`] once `deadline` passes, however the bytes
/// trickle in: a per-read timeout would let a client send one byte every few seconds forever.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    fired: Arc<AtomicBool>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.fired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: the body must arrive within `timeout` of the request head. When it does not, the
/// answer is a 408 in the caller's dialect, whatever the handler made of the failed read.
pub async fn body_deadline(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let dialect = Dialect::of(req.uri().path());
    let fired = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(DeadlineBody { inner, deadline: Box::pin(tokio::time::sleep(timeout)), fired: fired.clone() })
    });
    let response = next.run(req).await;
    if fired.load(Ordering::Acquire) {
        tracing::info!(timeout_secs = timeout.as_secs(), "request body not received in time; answered 408");
        return in_dialect(dialect, ApiError::RequestTimeout);
    }
    response
}

/// Longest text of axum's own rejection carried into the JSON message.
const MAX_REJECTION_TEXT: usize = 512;

/// Middleware: an error answer that is not JSON (axum's plain-text rejections, an empty 405) is
/// rewritten into the dialect's JSON error with the same status and `Allow`/`Retry-After`, and
/// the `Cache-Control` a route set (the console API's `no-store`).
pub async fn json_error_bodies(req: Request, next: Next) -> Response {
    let dialect = Dialect::of(req.uri().path());
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_TEXT)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NoRoute,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout,
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::Core(facegate_core::Error::TooLarge("request body is larger than the configured limit".into()))
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedContentType(text.unwrap_or_else(|| "unsupported Content-Type".into()))
        }
        s if s.is_client_error() => ApiError::invalid(text.unwrap_or_else(|| "invalid request".into())),
        _ => ApiError::Core(facegate_core::Error::Internal(text.unwrap_or_else(|| status.to_string()))),
    };
    let mut rewritten = in_dialect(dialect, error);
    *rewritten.status_mut() = status;
    for name in [ALLOW, RETRY_AFTER, CACHE_CONTROL] {
        if let Some(value) = parts.headers.get(&name) {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One byte, then nothing, ever.
    struct Stalled {
        sent: bool,
    }

    impl HttpBody for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let this = self.get_mut();
            if this.sent {
                Poll::Pending
            } else {
                this.sent = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
            }
        }
    }

    #[tokio::test]
    async fn a_stalled_body_fails_at_the_deadline() {
        let fired = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody {
            inner: Body::new(Stalled { sent: false }),
            deadline: Box::pin(tokio::time::sleep(Duration::from_millis(50))),
            fired: fired.clone(),
        };
        let err = http_body_util::BodyExt::collect(body).await.expect_err("the deadline passed before the end");
        assert!(std::error::Error::source(&err).is_some_and(|s| s.is::<BodyTimedOut>()), "{err:?}");
        assert!(fired.load(Ordering::Acquire));
    }
}
