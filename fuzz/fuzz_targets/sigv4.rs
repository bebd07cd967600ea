//! The SigV4 parser and canonicaliser on raw HTTP requests (the AWS SigV4 test suite's
//! `request.txt` format): `parse_authorization` on every `Authorization` value,
//! `authorization_from_headers`, `canonical_request` and `verify`.
//!
//! Besides "no panic", two properties are checked: a parsed header written back the way
//! signers write it parses to the same value, and a signature computed over
//! `canonical_request` for the request's own signed headers is never a `SignatureMismatch`.
#![no_main]

use std::time::Duration;

use facegate_fuzz::{authorization_for, debug, parse_request};
use facegate_server::auth::sigv4::{
    authorization_from_headers, canonical_request, parse_authorization, verify, Authorization, SigV4Config, SigV4Error,
    SignedRequest,
};
use libfuzzer_sys::fuzz_target;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// The AWS test suite's secret, so that its signed requests verify.
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_parse(text);
    }
    let Some(raw) = parse_request(data) else { return };
    for (name, value) in &raw.raw_headers {
        if name.eq_ignore_ascii_case("authorization") {
            if let Ok(value) = std::str::from_utf8(value) {
                check_parse(value);
            }
        }
    }
    let req =
        SignedRequest { method: raw.method, path: raw.path, query: raw.query, headers: &raw.headers, body: raw.body };
    // Every header present, sorted, as a client signing all of them would list them.
    let mut all: Vec<String> = raw.headers.keys().map(|k| k.as_str().to_owned()).collect();
    all.dedup();
    all.sort();
    let _ = canonical_request(&req, &all);

    let Ok(auth) = authorization_from_headers(&raw.headers) else { return };
    let _ = canonical_request(&req, &auth.signed_headers);
    let amz_date = raw.headers.get("x-amz-date").and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or("");
    let now = parse_amz_date(amz_date).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let config =
        SigV4Config { region: auth.region.clone(), service: auth.service.clone(), max_skew: Duration::from_secs(300) };
    let verified = verify(&req, &auth, SECRET, now, &config);
    if debug() {
        eprintln!("{} {}: {verified:?}", raw.method, raw.path);
    }

    // The same request signed correctly must not fail on its signature.
    let Some(header) = authorization_for(
        &req,
        &auth.signed_headers,
        &auth.access_key_id,
        SECRET,
        amz_date,
        &auth.region,
        &auth.service,
    ) else {
        return;
    };
    let Ok(signed) = parse_authorization(&header) else { return };
    match verify(&req, &signed, SECRET, now, &config) {
        Err(SigV4Error::SignatureMismatch) => {
            panic!("a signature over canonical_request was refused: {header}\n{req:?}")
        }
        Ok(()) | Err(_) => {}
    }
});

/// Parses `value`; what parses must survive being written back and parsed again.
fn check_parse(value: &str) {
    let Ok(auth) = parse_authorization(value) else { return };
    let again = format_authorization(&auth);
    match parse_authorization(&again) {
        Ok(reparsed) => assert_eq!(auth, reparsed, "{value:?} → {again:?}"),
        Err(e) => panic!("{value:?} parsed, but its rewrite {again:?} does not: {e}"),
    }
}

fn format_authorization(a: &Authorization) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={}",
        a.access_key_id,
        a.credential_scope(),
        a.signed_headers.join(";"),
        a.signature
    )
}

fn parse_amz_date(value: &str) -> Option<OffsetDateTime> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    PrimitiveDateTime::parse(value, &format).ok().map(PrimitiveDateTime::assume_utc)
}
