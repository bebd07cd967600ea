//! Helpers shared by the fuzz targets: a lenient HTTP/1.1 request reader (the seed corpora are
//! written as raw requests, like the AWS SigV4 test suite), a fresh in-memory facegate app for
//! the router targets, and a SigV4 signer built from the verifier's own public pieces.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use facegate_core::service::{FacePolicy, NewSubject, NewTenant};
use facegate_core::testing::{BruteForceIndex, FakeEngine, MemoryStore};
use facegate_core::{FaceService, ImageUpload, Profile, ServiceConfig, Tenant};
use facegate_server::auth::sigv4::{self, SignedRequest};
use facegate_server::{AppState, Settings};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use tower::ServiceExt;

/// A request as written on the wire, split leniently: invalid header lines are dropped.
#[derive(Debug, Default)]
pub struct RawRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: HeaderMap,
    /// Header values as written, including those `HeaderValue` refuses.
    pub raw_headers: Vec<(&'a str, &'a [u8])>,
    pub body: &'a [u8],
}

/// Reads `METHOD target HTTP/1.1`, header lines and, after the first empty line, the body.
/// Lines may end in `\n` or `\r\n`. Returns `None` only when the request line is not UTF-8.
pub fn parse_request(data: &[u8]) -> Option<RawRequest<'_>> {
    let (head, body) = split_head(data);
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = std::str::from_utf8(lines.next()?).ok()?;
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or("");
    // The AWS suite writes targets with spaces in them (`/example space/`): everything up to
    // the last word, which is the protocol.
    let rest: Vec<&str> = words.collect();
    let target = match rest.len() {
        0 => "",
        1 => rest[0],
        n => {
            let start = method.len() + 1;
            let end = request_line.len() - rest[n - 1].len() - 1;
            request_line.get(start..end).unwrap_or("")
        }
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut req = RawRequest { method, path, query, body, ..Default::default() };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let Ok(name_str) = std::str::from_utf8(name) else { continue };
        req.raw_headers.push((name_str, value));
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            req.headers.append(n, v);
        }
    }
    Some(req)
}

fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    for (i, w) in data.windows(2).enumerate() {
        if w == b"\n\n" {
            return (&data[..i], &data[i + 2..]);
        }
        if w == b"\n\r" && data.get(i + 2) == Some(&b'\n') {
            return (&data[..i], &data[i + 3..]);
        }
    }
    (data, &[])
}

/// `HMAC-SHA256(key, message)`, the last step of signing (the verifier's own is private).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The `Authorization` header a correct signer would send for `req`, or `None` when the
/// request cannot be canonicalised (e.g. a signed header is missing).
pub fn authorization_for(
    req: &SignedRequest,
    signed_headers: &[String],
    access_key_id: &str,
    secret: &str,
    amz_date: &str,
    region: &str,
    service: &str,
) -> Option<String> {
    let canonical = sigv4::canonical_request(req, signed_headers).ok()?;
    let date = amz_date.get(..8)?;
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = sigv4::string_to_sign(&canonical, amz_date, &scope);
    let signature = hex::encode(hmac_sha256(&sigv4::signing_key(secret, date, region, service), to_sign.as_bytes()));
    Some(format!(
        "{} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={signature}",
        sigv4::ALGORITHM,
        signed_headers.join(";")
    ))
}

/// A current-thread runtime for one fuzz process; `spawn_blocking` (the service's store calls)
/// still has its own small pool.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime"))
}

/// A fresh facegate app over the in-memory fakes (`FakeEngine` reads `face:<label>` lines as
/// faces), with one tenant holding an NEC subject (`face:alice`, tag `passport`) and a miiCloud
/// person (`cpid-1`, `face:bob`), so that the update, event and verify routes get past "not
/// found". Built per input, so that one input's writes never change how the next one runs.
pub struct App {
    pub router: axum::Router,
    pub tenant: NewTenant,
    pub subject_id: String,
    pub event_id: String,
}

impl App {
    pub async fn new() -> App {
        let service = Arc::new(FaceService::new(
            Arc::new(FakeEngine::default()),
            Arc::new(MemoryStore::default()),
            Arc::new(BruteForceIndex::default()),
            ServiceConfig { inference_workers: 1, inference_queue: 4, ..ServiceConfig::default() },
        ));
        let tenant = service.create_tenant("fuzz").await.expect("tenant");
        let t: &Tenant = &tenant.tenant;
        service.create_tag(t, "passport").await.expect("tag");
        let alice = NewSubject {
            customer_id: None,
            profile: Profile::default(),
            tags: vec!["passport".into()],
            image: ImageUpload { file_name: "event".into(), bytes: b"face:alice".to_vec() },
            policy: FacePolicy::SingleOfQuality,
        };
        let alice = service.create_subject(t, alice).await.expect("seed subject");
        let bob = NewSubject {
            customer_id: Some("cpid-1".into()),
            profile: Profile::default(),
            tags: Vec::new(),
            image: ImageUpload { file_name: "bob.jpg".into(), bytes: b"face:bob".to_vec() },
            policy: FacePolicy::Largest,
        };
        service.create_subject(t, bob).await.expect("seed person");
        let state = AppState::new(service, Settings::default());
        let (subject_id, event_id) = (alice.subject.id, alice.sample.id);
        App { router: facegate_server::build_router(state), tenant, subject_id, event_id }
    }

    /// Sends `req` through the whole router (auth middleware, body limit, handlers).
    pub async fn send(&self, req: Request<Body>) -> Response<Body> {
        match self.router.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    }
}

/// The 500 the router's `CatchPanicLayer` or an internal error turns into: with the in-memory
/// fakes nothing a client sends should get one.
pub fn assert_not_internal(res: &Response<Body>, what: &dyn std::fmt::Debug) {
    assert_ne!(res.status().as_u16(), 500, "internal error for {what:?}");
}

/// Whether to describe each run on stderr (`FUZZ_DEBUG=1`), to see how far the seeds get.
pub fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

/// `x-amz-date` for now.
pub fn amz_now() -> (OffsetDateTime, String) {
    let now = OffsetDateTime::now_utc();
    (now, sigv4::format_amz_date(now))
}
