//! `miicloud::form::read_form`, the miiCloud body reader (multipart, URL-encoded or JSON), on an
//! axum request made from the input: the first line is the `Content-Type` value (none when the
//! line is empty), the rest is the body.
//!
//! The body is read twice, once in one chunk and once split into small chunks as a slow client
//! sends it; the two reads must agree.
#![no_main]

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::Request;
use facegate_fuzz::runtime;
use facegate_server::miicloud::form::{read_form, FormData};
use libfuzzer_sys::fuzz_target;

/// The miiCloud image part.
const IMAGE_FIELD: &str = "image_path";

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let content_type = content_type.strip_suffix(b"\r").unwrap_or(content_type);
    let whole = runtime().block_on(read_form(request(content_type, body, None), IMAGE_FIELD));
    if let Ok(form) = &whole {
        assert!(form.fields.len() <= 32, "{} fields", form.fields.len());
        assert!(form.fields.values().all(|v| v.len() <= 4096));
    }
    if body.len() <= 8192 {
        let chunk = 1 + body.len() % 13;
        let chunked = runtime().block_on(read_form(request(content_type, body, Some(chunk)), IMAGE_FIELD));
        assert_eq!(summary(&whole), summary(&chunked), "chunks of {chunk} bytes read differently");
    }
});

fn request(content_type: &[u8], body: &[u8], chunk: Option<usize>) -> Request<Body> {
    let mut builder = Request::builder().method("POST").uri("/miicloud/person").header(CONTENT_LENGTH, body.len());
    if !content_type.is_empty() {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    let body = match chunk {
        None => Body::from(body.to_vec()),
        Some(n) => {
            let chunks: Vec<Result<Bytes, Infallible>> =
                body.chunks(n).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            Body::from_stream(futures_util::stream::iter(chunks))
        }
    };
    // An invalid Content-Type value is refused by the builder; such a request never arrives.
    builder.body(body).unwrap_or_else(|_| Request::new(Body::empty()))
}

/// Fields sorted, the image, or that it failed (messages may name the chunk that failed).
fn summary<E>(r: &Result<FormData, E>) -> Option<(Vec<(String, String)>, Option<(String, Vec<u8>)>)> {
    let form = r.as_ref().ok()?;
    let mut fields: Vec<(String, String)> = form.fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    fields.sort();
    Some((fields, form.image.as_ref().map(|i| (i.file_name.clone(), i.bytes.clone()))))
}
