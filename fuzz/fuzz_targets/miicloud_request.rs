//! The miiCloud dialect's requests end to end: the first byte picks a route, the next line is
//! the `Content-Type` value and the rest is the body (multipart, URL-encoded or JSON), sent
//! with the tenant's token through the whole router over in-memory fakes. Images are text for
//! the fake engine: `face:<label>` is one face.
#![no_main]

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::Request;
use facegate_fuzz::{assert_not_internal, debug, runtime, App};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&route, rest)) = data.split_first() else { return };
    let (content_type, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let content_type = content_type.strip_suffix(b"\r").unwrap_or(content_type);
    runtime().block_on(async {
        let app = App::new().await;
        let (method, path) = match route % 5 {
            0 => ("POST", "/miicloud/person"),
            1 => ("PUT", "/miicloud/person"),
            2 => ("PUT", "/miicloud/person/cpid-1"),
            3 => ("POST", "/miicloud/match_faces"),
            _ => ("POST", "/miicloud/match_faces/"),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(AUTHORIZATION, format!("Token {}", app.tenant.token))
            .header(CONTENT_LENGTH, body.len());
        if !content_type.is_empty() {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        // A Content-Type that is not a valid header value never reaches the server.
        let Ok(req) = builder.body(Body::from(body.to_vec())) else { return };
        let res = app.send(req).await;
        if debug() {
            eprintln!("{method} {path} -> {}", res.status());
        }
        assert_not_internal(&res, &(method, path, String::from_utf8_lossy(data)));
    });
});
