//! JSON bodies for the requests hyper refuses by itself.
//!
//! A request hyper cannot parse (a conflicting `Content-Length`, a `Transfer-Encoding` that does
//! not end in `chunked`, more than 100 headers, a head larger than its read buffer, a bad method,
//! target or header line) never reaches a service: hyper writes `400`, `414` or `431` with an
//! empty body itself (`on_parse_error` in hyper 1.x's `proto/h1/conn.rs`), then closes the
//! connection. No setting turns that answer off or lets a caller supply its own. So the socket is
//! wrapped: [`Rewriting`] remembers the first bytes of the request being read, recognises hyper's
//! own answer when it is written, and writes the dialect's JSON error in its place, with the same
//! status line.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::answer::in_dialect;
use crate::dialect::Dialect;
use crate::error::ApiError;

/// The statuses hyper answers a parse error with, and what each means to the client.
const REFUSALS: [(StatusCode, &str); 3] = [
    (
        StatusCode::BAD_REQUEST,
        "the request could not be parsed: a malformed request line or header, conflicting \
         Content-Length headers, or a Transfer-Encoding other than chunked",
    ),
    (StatusCode::URI_TOO_LONG, "the request target is too long"),
    (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "the request has too many headers, or headers too large"),
];

const DIALECTS: [Dialect; 3] = [Dialect::MiiCloud, Dialect::NecId, Dialect::Generic];

/// hyper's own answer is a status line and three headers (`connection`, `content-length: 0`,
/// `date`): about 100 bytes. Writes longer than this are never it, and are passed on unread.
const MAX_OWN_ANSWER: usize = 256;

/// How much of a request's start is kept to find its path. The dialect needs only the path's
/// first segment; the rest covers the method and an absolute-form target's scheme and host.
const REQUEST_START: usize = 512;

/// The JSON body of each dialect for each status of [`REFUSALS`], rendered once by each
/// dialect's own error type so that the bodies are the ones its other errors have.
pub struct Refusals {
    bodies: Vec<(Dialect, StatusCode, Vec<u8>)>,
}

impl Refusals {
    pub async fn render() -> Self {
        let mut bodies = Vec::with_capacity(DIALECTS.len() * REFUSALS.len());
        for dialect in DIALECTS {
            for (status, message) in REFUSALS {
                let response = in_dialect(dialect, ApiError::invalid(message));
                // The body is an in-memory JSON buffer a few hundred bytes long.
                let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
                bodies.push((dialect, status, body.to_vec()));
            }
        }
        Self { bodies }
    }

    fn body(&self, dialect: Dialect, status: StatusCode) -> &[u8] {
        self.bodies.iter().find(|(d, s, _)| *d == dialect && *s == status).map_or(&[], |(_, _, body)| body)
    }

    /// The whole answer that replaces hyper's: its status line and `date`, a JSON body, and
    /// `connection: close`, since hyper closes the connection after it.
    fn answer(&self, own: &OwnAnswer<'_>, dialect: Dialect) -> Vec<u8> {
        let body = self.body(dialect, own.status);
        let mut out = Vec::with_capacity(MAX_OWN_ANSWER + body.len());
        out.extend_from_slice(own.status_line);
        out.extend_from_slice(b"\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(date) = own.date_line {
            out.extend_from_slice(date);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }
}

/// hyper's own answer to a parse error, as written.
#[derive(Debug, PartialEq, Eq)]
struct OwnAnswer<'a> {
    status: StatusCode,
    status_line: &'a [u8],
    date_line: Option<&'a [u8]>,
}

/// `bytes` when they are exactly hyper's own answer to a parse error: one of the statuses of
/// [`REFUSALS`], no header but `connection`, `content-length: 0` and `date`, and nothing after
/// the head. The router never answers so (its error answers carry a JSON body), so a match is
/// always hyper's.
fn own_answer(bytes: &[u8]) -> Option<OwnAnswer<'_>> {
    if bytes.len() > MAX_OWN_ANSWER {
        return None;
    }
    let head = bytes.strip_suffix(b"\r\n\r\n")?;
    let mut lines = head.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let status_line = lines.next()?;
    let code = status_line.strip_prefix(b"HTTP/1.1 ").or_else(|| status_line.strip_prefix(b"HTTP/1.0 "))?;
    let status = StatusCode::from_bytes(code.get(..3)?).ok()?;
    if !REFUSALS.iter().any(|(s, _)| *s == status) || code.get(3) != Some(&b' ') {
        return None;
    }
    let mut date_line = None;
    for line in lines {
        let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
        let value = value[1..].trim_ascii();
        match name {
            b"connection" => {}
            b"content-length" if value == b"0" => {}
            b"date" => date_line = Some(line),
            _ => return None,
        }
    }
    Some(OwnAnswer { status, status_line, date_line })
}

/// The dialect of the request that starts `start`: its target's path, as the router would see
/// it, or the generic dialect when the bytes do not begin with a request line.
fn dialect_of_request(start: &[u8]) -> Dialect {
    // hyper skips empty lines before a request line, as RFC 9112 §2.2 allows.
    let start = match start.iter().position(|&b| b != b'\r' && b != b'\n') {
        Some(at) => &start[at..],
        None => return Dialect::Generic,
    };
    let Some(space) = start.iter().position(|&b| b == b' ') else { return Dialect::Generic };
    let (method, rest) = (&start[..space], &start[space + 1..]);
    // A method is a token (RFC 9110 §5.6.2); anything else is not the start of a request.
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if method.is_empty() || !method.iter().all(tchar) {
        return Dialect::Generic;
    }
    let target = rest.split(|&b| b == b' ' || b == b'\r' || b == b'\n').next().unwrap_or(rest);
    // An absolute-form target (`http://host/path`) names its path after the host.
    let path = match target.windows(3).position(|w| w == b"://") {
        Some(at) if !target.starts_with(b"/") => {
            let after_scheme = &target[at + 3..];
            after_scheme.iter().position(|&b| b == b'/').map_or(&b""[..], |slash| &after_scheme[slash..])
        }
        _ => target,
    };
    Dialect::of(&String::from_utf8_lossy(path))
}

/// A connection's socket as hyper sees it, with hyper's own answers to parse errors replaced by
/// JSON ones (see the module's documentation).
///
/// The request's path comes from the bytes read since the last answer was written: the start of
/// the next request when the client waits for each answer before it sends the next, as HTTP
/// clients do. A request pipelined behind another was read before that answer, so its path is
/// unknown and it gets the generic body; one whose predecessor's body was still being read gets
/// the generic body too.
pub struct Rewriting<S> {
    inner: S,
    refusals: std::sync::Arc<Refusals>,
    /// The first bytes read since the last write, at most [`REQUEST_START`].
    request_start: Vec<u8>,
    /// The replacement answer, and how much of it is written.
    pending: Vec<u8>,
    sent: usize,
}

impl<S> Rewriting<S> {
    pub fn new(inner: S, refusals: std::sync::Arc<Refusals>) -> Self {
        Self { inner, refusals, request_start: Vec::new(), pending: Vec::new(), sent: 0 }
    }
}

impl<S: AsyncWrite + Unpin> Rewriting<S> {
    /// Writes what is left of the replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        Poll::Ready(Ok(()))
    }

    /// When `bytes` are hyper's own answer, queues the replacement and reports them written.
    fn replace(&mut self, bytes: &[u8]) -> bool {
        let Some(own) = own_answer(bytes) else { return false };
        let dialect = dialect_of_request(&self.request_start);
        tracing::debug!(status = own.status.as_u16(), dialect = dialect.label(), "request refused by the HTTP parser");
        self.pending = self.refusals.answer(&own, dialect);
        self.sent = 0;
        true
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewriting<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let room = REQUEST_START.saturating_sub(this.request_start.len());
        let new = &buf.filled()[before..];
        this.request_start.extend_from_slice(&new[..new.len().min(room)]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewriting<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.replace(buf) {
            // Written as far as the socket takes it now; flush and shutdown write the rest.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.request_start.clear();
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total <= MAX_OWN_ANSWER {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if this.replace(&joined) {
                if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(total));
            }
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.request_start.clear();
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPERS_400: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 00:00:00 GMT\r\n\r\n";

    #[test]
    fn only_hypers_own_empty_refusals_are_recognised() {
        let own = own_answer(HYPERS_400).expect("hyper's 400");
        assert_eq!(own.status, StatusCode::BAD_REQUEST);
        assert_eq!(own.status_line, b"HTTP/1.1 400 Bad Request");
        assert_eq!(own.date_line, Some(&b"date: Mon, 30 Nov 2026 00:00:00 GMT"[..]));
        let too_many = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(own_answer(too_many).map(|o| o.status), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        // The router's answers: a body, another header, another status.
        assert!(own_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}").is_none());
        assert!(own_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\r\n").is_none());
        assert!(own_answer(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(own_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(own_answer(b"0\r\n\r\n").is_none());
    }

    #[test]
    fn the_dialect_comes_from_the_request_line() {
        assert_eq!(dialect_of_request(b"POST /v1.1/subjects HTTP/1.1\r\nHost: x"), Dialect::NecId);
        assert_eq!(dialect_of_request(b"\r\nGET /miicloud/person/1 HTTP/1.1\r\n"), Dialect::MiiCloud);
        assert_eq!(dialect_of_request(b"GET http://h:8080/v1.1/tags HTTP/1.1\r\n"), Dialect::NecId);
        // Cut off after the dialect's prefix: enough.
        assert_eq!(dialect_of_request(b"GET /miicloud/aaaaaaaa"), Dialect::MiiCloud);
        assert_eq!(dialect_of_request(b"GET /healthz HTTP/1.1\r\n"), Dialect::Generic);
        assert_eq!(dialect_of_request(b"{\"a\":1}GET /v1.1 HTTP/1.1"), Dialect::Generic);
        assert_eq!(dialect_of_request(b""), Dialect::Generic);
    }

    #[tokio::test]
    async fn the_replacement_keeps_the_status_line_and_carries_the_dialects_body() {
        let refusals = Refusals::render().await;
        let own = own_answer(HYPERS_400).expect("hyper's 400");
        let answer = String::from_utf8(refusals.answer(&own, Dialect::NecId)).expect("text");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        assert!(head.contains("date: Mon, 30 Nov 2026"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(json["errorCode"], 1001, "{json}");
        let mii: serde_json::Value =
            serde_json::from_slice(refusals.body(Dialect::MiiCloud, StatusCode::BAD_REQUEST)).expect("JSON");
        assert_eq!(mii["status"], "fail", "{mii}");
    }
}
