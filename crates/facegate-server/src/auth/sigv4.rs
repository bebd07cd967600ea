//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`) verification, the server side of the NEC ID
//! dialect's authentication (`Authorization` + `x-amz-date`, region `ap-southeast-2`, service
//! `execute-api`).
//!
//! This module is pure: it knows nothing about tenants or key storage. The middleware parses the
//! header with [`parse_authorization`], looks the access key id up, and calls [`verify`] with the
//! secret and the current time.
//!
//! # Canonicalisation, and why it is what it is
//! NEC's clients sign with whatever SigV4 signer they have: botocore's `SigV4Auth`, the Rust
//! `aws-sigv4` crate, Postman, SDKs built on either. For a non-S3 service those agree on:
//!
//! - **Path: normalised, then encoded once more ("double encoding").** The signer takes the path
//!   exactly as it goes on the wire (already percent-encoded), removes `.`/`..` segments and
//!   empty segments (`//`), then percent-encodes every byte outside the RFC 3986 unreserved set
//!   and `/`. So a received `/v1.1/tags/my%20tag` is signed as `/v1.1/tags/my%2520tag`.
//!   botocore: `quote(remove_dot_segments(path), safe='/~')`; `aws-sigv4`:
//!   `UriPathNormalizationMode::Enabled` + `PercentEncodingMode::Double` (its defaults). We work
//!   on the raw path and never decode it, so `%2F` inside a segment stays a distinct byte
//!   sequence from `/`, and lower-case escapes are re-encoded as they came.
//! - **Query: decoded, re-encoded with the unreserved set, sorted by key then value.** This is
//!   the documented algorithm and what `aws-sigv4` does (`+` decodes to a space, `%20`).
//!   botocore, for a query written into the URL, instead sorts the raw `key=value` pairs without
//!   re-encoding them. The two agree whenever the client encoded its query canonically; where
//!   they do not (`+` for spaces, raw `:` or `,`), [`verify`] accepts a signature over either
//!   form. Both are computed from the bytes received, so neither lets a request be altered.
//! - **Headers:** the names listed in `SignedHeaders` (lower case, sorted), each value trimmed
//!   of spaces with runs of spaces collapsed, repeated headers joined with `,` in arrival order.
//!   botocore collapses every whitespace run, tabs too (`' '.join(value.split())`); its form is
//!   the second one [`verify`] accepts, together with its raw query.
//! - **Payload:** the hex SHA-256 of the body as received. If an `x-amz-content-sha256` header is
//!   present, signers put its value in the canonical request instead; [`verify`] requires that
//!   value to equal the computed hash. `UNSIGNED-PAYLOAD` (and the `STREAMING-*` values) are
//!   refused: those exist for S3 uploads, and here the body (a face image) is exactly what the
//!   signature must bind.
//!
//! Not supported, on purpose: pre-signed URLs (`X-Amz-Signature` in the query), the `Date`
//! header instead of `x-amz-date`, SigV4A, and chunked (streaming) payload signing.
//!
//! Error messages copy AWS's wording, since NEC's clients and their tests expect it. They never
//! contain the canonical request or the string to sign (AWS's own do; those are logged at debug
//! level here, with credential-like header values redacted).

use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName};
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The last element of every credential scope.
const TERMINATOR: &str = "aws4_request";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const X_API_KEY: &str = "x-api-key";
const HOST: &str = "host";

/// Everything except RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded, which is
/// the set both botocore (`quote(..., safe='-_.~')`) and `aws-sigv4` use for query components.
const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// The same, keeping `/` as the segment separator (botocore's `safe='/~'`).
const PATH: &AsciiSet = &QUERY_COMPONENT.remove(b'/');

/// What a deployment accepts. The NEC ID API is served as `execute-api` in `ap-southeast-2`
/// whatever the server's real location, because that is what NEC's clients are configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4Config {
    /// The region a credential scope must name.
    pub region: String,
    /// The service a credential scope must name.
    pub service: String,
    /// How far `x-amz-date` may be from the server's clock, either way. AWS uses 5 minutes;
    /// this bounds how long a captured request can be replayed.
    pub max_skew: Duration,
}

impl Default for SigV4Config {
    fn default() -> Self {
        SigV4Config {
            region: "ap-southeast-2".to_owned(),
            service: "execute-api".to_owned(),
            max_skew: Duration::from_secs(5 * 60),
        }
    }
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/iam/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// The scope's date, `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower case, strictly ascending (sorted, no duplicates), as every signer writes them.
    pub signed_headers: Vec<String>,
    /// 64 hex digits.
    pub signature: String,
}

impl Authorization {
    /// `date/region/service/aws4_request`, as it appears in the string to sign.
    pub fn credential_scope(&self) -> String {
        format!("{}/{}/{}/{TERMINATOR}", self.date, self.region, self.service)
    }
}

/// The parts of a received request that a signature covers.
#[derive(Clone, Copy)]
pub struct SignedRequest<'a> {
    /// As received (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The raw path as received, still percent-encoded; never decoded here.
    pub path: &'a str,
    /// The raw query string as received, without the `?`.
    pub query: Option<&'a str>,
    /// The request's headers. `host` must be among them: for HTTP/2 requests, which carry the
    /// `:authority` pseudo-header instead, the caller should insert `host` from the URI first.
    /// Behind a reverse proxy, the proxy must pass the client's `Host` through unchanged.
    pub headers: &'a HeaderMap,
    /// The complete body as received.
    pub body: &'a [u8],
}

/// Header values and the body are left out: the headers include credentials (`x-api-key`) and
/// the body is a face image.
impl std::fmt::Debug for SignedRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &self.headers.keys().map(HeaderName::as_str).collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SigV4Error {
    /// No `Authorization` header at all.
    #[error("Missing Authentication Token")]
    Missing,
    /// The header or a required part of the request is not well-formed; the message says how.
    #[error("{0}")]
    Malformed(String),
    /// The credential scope names another region or service, or another date than `x-amz-date`.
    #[error("{0}")]
    WrongScope(String),
    /// A header that must be signed is not in `SignedHeaders`.
    #[error("'{0}' must be a 'SignedHeader' in the AWS Authorization.")]
    MissingSignedHeader(String),
    /// `x-amz-date` is more than the allowed skew in the past.
    #[error("Signature expired: {request_time} is now earlier than {earliest} ({server_time} - {skew})")]
    Expired {
        request_time: String,
        /// The server time minus the allowed skew: the oldest acceptable `x-amz-date`.
        earliest: String,
        server_time: String,
        /// The allowed skew as AWS words it, `5 min.`.
        skew: String,
    },
    /// `x-amz-date` is more than the allowed skew in the future.
    #[error("Signature not yet current: {request_time} is still later than {latest} ({server_time} + {skew})")]
    NotYetValid {
        request_time: String,
        /// The server time plus the allowed skew: the newest acceptable `x-amz-date`.
        latest: String,
        server_time: String,
        skew: String,
    },
    /// `x-amz-content-sha256` is not the SHA-256 of the body received.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    PayloadHashMismatch,
    /// `x-amz-content-sha256: UNSIGNED-PAYLOAD` (or a streaming variant): refused, see the module
    /// documentation.
    #[error("Unsigned payloads are not accepted: 'x-amz-content-sha256' must be the SHA-256 of the request body.")]
    UnsignedPayload,
    /// Never returned by this module: for the caller whose key lookup finds nothing, so that the
    /// message is AWS's.
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret \
         Access Key and signing method. Consult the service documentation for details."
    )]
    SignatureMismatch,
}

/// The `Authorization` header of `headers`, parsed: [`SigV4Error::Missing`] when there is none.
pub fn authorization_from_headers(headers: &HeaderMap) -> Result<Authorization, SigV4Error> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(SigV4Error::Missing)?;
    if values.next().is_some() {
        return Err(malformed("Multiple 'Authorization' headers."));
    }
    let value = value.to_str().map_err(|_| malformed("The Authorization header is not valid ASCII."))?;
    parse_authorization(value)
}

/// Parses `AWS4-HMAC-SHA256 Credential=.../aws4_request, SignedHeaders=a;b, Signature=hex`.
/// The three parameters may come in any order, with or without spaces after the commas.
pub fn parse_authorization(header_value: &str) -> Result<Authorization, SigV4Error> {
    let value = header_value.trim();
    if value.is_empty() {
        return Err(SigV4Error::Missing);
    }
    let (algorithm, params) = value.split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        // The value is not echoed: under another scheme it may well be a bearer secret.
        return Err(malformed(format!("Unsupported Authorization Type: the algorithm must be '{ALGORITHM}'.")));
    }

    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for param in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, val) = param
            .split_once('=')
            .ok_or_else(|| malformed("Invalid key=value pair (missing equal-sign) in Authorization header."))?;
        let slot = match key.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(malformed(
                    "Authorization header has an unknown parameter; expected only 'Credential', 'SignedHeaders' \
                     and 'Signature'.",
                ))
            }
        };
        if slot.replace(val.trim()).is_some() {
            return Err(malformed(format!("Authorization header has more than one '{}' parameter.", key.trim())));
        }
    }
    // AWS lists every missing parameter at once.
    let missing: String = [
        ("Credential", credential.is_none()),
        ("Signature", signature.is_none()),
        ("SignedHeaders", signed_headers.is_none()),
    ]
    .iter()
    .filter(|(_, absent)| *absent)
    .map(|(name, _)| format!("Authorization header requires '{name}' parameter. "))
    .collect();
    let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
        return Err(malformed(missing.trim_end()));
    };

    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts[..] else {
        return Err(malformed(
            "Credential is malformed; expected '<access key id>/<YYYYMMDD>/<region>/<service>/aws4_request'.",
        ));
    };
    if access_key_id.is_empty() || region.is_empty() || service.is_empty() {
        return Err(malformed("Credential has an empty access key id, region or service."));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("Credential date must be in the form YYYYMMDD, not '{date}'.")));
    }
    if terminator != TERMINATOR {
        return Err(malformed(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'."
        )));
    }

    let signed_headers = parse_signed_headers(signed_headers)?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("Signature must be 64 hexadecimal digits."));
    }

    Ok(Authorization {
        access_key_id: access_key_id.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: signature.to_owned(),
    })
}

/// Signers always emit lower-case names in ascending order. Insisting on that (rather than
/// sorting for the client) keeps one request from having two canonical forms.
fn parse_signed_headers(list: &str) -> Result<Vec<String>, SigV4Error> {
    let names: Vec<String> = list.split(';').map(str::to_owned).collect();
    for name in &names {
        let valid = HeaderName::from_bytes(name.as_bytes()).is_ok_and(|h| h.as_str() == name);
        if !valid {
            return Err(malformed(format!("SignedHeaders has an invalid or non-lower-case header name: '{name}'.")));
        }
    }
    if names.windows(2).any(|w| w[0] >= w[1]) {
        return Err(malformed("SignedHeaders must be sorted and without duplicates."));
    }
    Ok(names)
}

/// The canonical request for `req` over `signed_headers`, with the query canonicalised the
/// documented way (decoded, re-encoded, sorted). The payload line is `x-amz-content-sha256`'s
/// value when that header is present, as every signer does, otherwise the body's SHA-256;
/// [`verify`] checks that the two agree.
pub fn canonical_request(req: &SignedRequest, signed_headers: &[String]) -> Result<String, SigV4Error> {
    let body_hash = hex::encode(Sha256::digest(req.body));
    let payload = single_header(req.headers, X_AMZ_CONTENT_SHA256)?.unwrap_or(&body_hash);
    build_canonical_request(req, signed_headers, &canonical_query(req.query), payload, Collapse::Spaces)
}

/// Which whitespace runs in a header value become one space.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Collapse {
    /// Spaces only, as `aws-sigv4` and the AWS test suite do.
    Spaces,
    /// Every whitespace run (tabs too), as botocore does (`' '.join(value.split())`).
    Whitespace,
}

/// The canonical request with the query line and payload line given: [`verify`] tries two query
/// forms and hashes the (possibly large) body only once.
fn build_canonical_request(
    req: &SignedRequest,
    signed_headers: &[String],
    query: &str,
    payload: &str,
    collapse: Collapse,
) -> Result<String, SigV4Error> {
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_uri(req.path));
    out.push('\n');
    out.push_str(query);
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        out.push_str(&canonical_header_value(req.headers, name, collapse)?);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload);
    Ok(out)
}

/// `AWS4-HMAC-SHA256\n<amz_date>\n<scope>\n<hex sha256 of the canonical request>`.
pub fn string_to_sign(canonical_request: &str, amz_date: &str, scope: &str) -> String {
    let hash = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

/// The derived key: `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, TERMINATOR.as_bytes())
}

/// Checks a request against its parsed `Authorization` header and the access key's secret.
///
/// In order: the scope names the configured region and service; `host`, `x-amz-date` and (when
/// the request has one) `x-api-key` are signed; `x-amz-date` is well-formed, on the scope's date
/// and within `max_skew` of `now`; `x-amz-content-sha256`, if sent, is the body's hash; and the
/// signature matches, compared in constant time.
pub fn verify(
    req: &SignedRequest,
    auth: &Authorization,
    secret_access_key: &str,
    now: OffsetDateTime,
    config: &SigV4Config,
) -> Result<(), SigV4Error> {
    if auth.region != config.region {
        return Err(SigV4Error::WrongScope(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            auth.region
        )));
    }
    if auth.service != config.service {
        return Err(SigV4Error::WrongScope(format!(
            "Credential should be scoped to correct service: '{}'.",
            config.service
        )));
    }

    // The host binds the signature to this service, the date bounds replay, and the API key
    // selects the application: none of them may be swapped under an otherwise valid signature.
    let is_signed = |name: &str| auth.signed_headers.iter().any(|h| h == name);
    let mut required = vec![HOST, X_AMZ_DATE];
    if req.headers.contains_key(X_API_KEY) {
        required.push(X_API_KEY);
    }
    if let Some(name) = required.into_iter().find(|name| !is_signed(name)) {
        return Err(SigV4Error::MissingSignedHeader(name.to_owned()));
    }

    let amz_date = single_header(req.headers, X_AMZ_DATE)?
        .ok_or_else(|| malformed("Authorization header requires existence of a 'X-Amz-Date' header."))?;
    let request_time = parse_amz_date(amz_date).ok_or_else(|| {
        malformed(format!("Invalid X-Amz-Date '{amz_date}': it must be in the form YYYYMMDD'T'HHMMSS'Z'."))
    })?;
    // 16 ASCII bytes, as parse_amz_date has just checked.
    let amz_day = &amz_date[..8];
    if amz_day != auth.date {
        return Err(SigV4Error::WrongScope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != \
             '{}', from 'X-Amz-Date'.",
            auth.date, amz_day
        )));
    }
    check_skew(request_time, now, config.max_skew)?;

    // The server hashes the body itself; a declared hash only has to agree with it. Signers put
    // the declared value in the canonical request verbatim, so that is what is used there.
    let body_hash = hex::encode(Sha256::digest(req.body));
    let payload = match single_header(req.headers, X_AMZ_CONTENT_SHA256)? {
        Some(declared) if declared == "UNSIGNED-PAYLOAD" || declared.starts_with("STREAMING-") => {
            return Err(SigV4Error::UnsignedPayload)
        }
        Some(declared) if !declared.eq_ignore_ascii_case(&body_hash) => return Err(SigV4Error::PayloadHashMismatch),
        Some(declared) => declared,
        None => &body_hash,
    };

    let provided = decode_signature(&auth.signature)?;
    let key = signing_key(secret_access_key, &auth.date, &auth.region, &auth.service);
    let scope = auth.credential_scope();

    let canonical_query = canonical_query(req.query);
    let canonical = build_canonical_request(req, &auth.signed_headers, &canonical_query, payload, Collapse::Spaces)?;
    let to_sign = string_to_sign(&canonical, amz_date, &scope);
    let mut matched = signature_matches(&key, &to_sign, &provided);

    // botocore's form, where it differs: the query as raw pairs, sorted, and every whitespace
    // run of a header value collapsed (tabs too).
    let raw_query = raw_sorted_query(req.query);
    let alternative = build_canonical_request(req, &auth.signed_headers, &raw_query, payload, Collapse::Whitespace)?;
    if alternative != canonical {
        let alternative_to_sign = string_to_sign(&alternative, amz_date, &scope);
        // No short cut on the first result: both comparisons run either way.
        matched |= signature_matches(&key, &alternative_to_sign, &provided);
    }

    if bool::from(matched) {
        Ok(())
    } else {
        // For operators debugging a client's signer. Never at a higher level, and never the
        // secret; header values that act as credentials are masked.
        tracing::debug!(
            access_key_id = %auth.access_key_id,
            canonical_request = %redact(&canonical),
            string_to_sign = %to_sign,
            "SigV4 signature mismatch"
        );
        Err(SigV4Error::SignatureMismatch)
    }
}

fn signature_matches(key: &[u8; 32], string_to_sign: &str, provided: &[u8; 32]) -> subtle::Choice {
    hmac_sha256(key, string_to_sign.as_bytes()).ct_eq(provided)
}

fn decode_signature(signature: &str) -> Result<[u8; 32], SigV4Error> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(signature, &mut out).map_err(|_| malformed("Signature must be 64 hexadecimal digits."))?;
    Ok(out)
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn malformed(message: impl Into<String>) -> SigV4Error {
    SigV4Error::Malformed(message.into())
}

/// The value of a header that may appear at most once, as a string.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, SigV4Error> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(malformed(format!("Multiple '{name}' headers.")));
    }
    let value = value.to_str().map_err(|_| malformed(format!("The '{name}' header is not valid ASCII.")))?;
    Ok(Some(value.trim()))
}

/// All values of a signed header joined with `,`, each trimmed with whitespace runs collapsed
/// as `collapse` says. Values are taken as UTF-8, as signers hash them.
fn canonical_header_value(headers: &HeaderMap, name: &str, collapse: Collapse) -> Result<String, SigV4Error> {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Err(malformed(format!("Signed header '{name}' is not present in the request.")));
    }
    let mut joined = String::new();
    for (i, value) in values.enumerate() {
        let value = std::str::from_utf8(value.as_bytes())
            .map_err(|_| malformed(format!("Signed header '{name}' has a value that is not valid UTF-8.")))?;
        if i > 0 {
            joined.push(',');
        }
        let words: Box<dyn Iterator<Item = &str>> = match collapse {
            Collapse::Spaces => Box::new(value.split(' ')),
            Collapse::Whitespace => Box::new(value.split(|c: char| c.is_ascii_whitespace())),
        };
        for (j, word) in words.filter(|w| !w.is_empty()).enumerate() {
            if j > 0 {
                joined.push(' ');
            }
            joined.push_str(word);
        }
    }
    Ok(joined)
}

/// The path normalised (RFC 3986 §5.2.4 dot segments, empty segments dropped, a trailing slash
/// kept) and then percent-encoded: the second encoding of an already encoded path.
fn canonical_uri(raw_path: &str) -> String {
    utf8_percent_encode(&normalize_path(raw_path), PATH).to_string()
}

/// Works on the still-encoded path, like both signers: `%2E%2E` is not a dot segment.
/// Follows `aws-sigv4` (and the AWS test suite) where botocore differs, which is only for a
/// path ending in `/.` or `/..`; no facegate route looks like that.
fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    if !path.contains('.') && !path.contains("//") && path.starts_with('/') {
        return path.to_owned();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    out.push('/');
    out.push_str(&segments.join("/"));
    let trailing = ["/", "/.", "/..", "/./", "/../"].iter().any(|s| path.ends_with(s));
    if trailing && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The documented canonical query: every pair decoded (`+` as a space), re-encoded with the
/// unreserved set, sorted by encoded key and then value; a key without `=` gets an empty value.
fn canonical_query(query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| {
            (utf8_percent_encode(&k, QUERY_COMPONENT).to_string(), utf8_percent_encode(&v, QUERY_COMPONENT).to_string())
        })
        .collect();
    pairs.sort();
    join_pairs(&pairs)
}

/// botocore's canonical query for a query written into the URL: the raw pairs, split at the
/// first `=`, sorted, not re-encoded.
fn raw_sorted_query(query: Option<&str>) -> String {
    let query = query.unwrap_or_default();
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(&str, &str)> =
        query.split('&').map(|pair| pair.split_once('=').unwrap_or((pair, ""))).collect();
    pairs.sort_unstable();
    join_pairs(&pairs)
}

fn join_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k.as_ref());
        out.push('=');
        out.push_str(v.as_ref());
    }
    out
}

/// `YYYYMMDD'T'HHMMSS'Z'`, exactly, in UTC.
fn parse_amz_date(value: &str) -> Option<OffsetDateTime> {
    let b = value.as_bytes();
    let digits_ok =
        b.len() == 16 && b[8] == b'T' && b[15] == b'Z' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !digits_ok {
        return None;
    }
    let num = |range: std::ops::Range<usize>| value[range].parse::<u32>().ok();
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let day = u8::try_from(num(6..8)?).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    Some(date.with_time(time).assume_utc())
}

/// Formats a time the way `x-amz-date` is written.
pub fn format_amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Bounds are inclusive: a request exactly `max_skew` old is still accepted.
fn check_skew(request_time: OffsetDateTime, now: OffsetDateTime, max_skew: Duration) -> Result<(), SigV4Error> {
    // An absurd configured skew (beyond time's range) simply means "no bound" on that side.
    let skew = time::Duration::try_from(max_skew).unwrap_or(time::Duration::MAX);
    let now = now.to_offset(UtcOffset::UTC);
    if let Some(earliest) = now.checked_sub(skew) {
        if request_time < earliest {
            return Err(SigV4Error::Expired {
                request_time: format_amz_date(request_time),
                earliest: format_amz_date(earliest),
                server_time: format_amz_date(now),
                skew: describe_skew(max_skew),
            });
        }
    }
    if let Some(latest) = now.checked_add(skew) {
        if request_time > latest {
            return Err(SigV4Error::NotYetValid {
                request_time: format_amz_date(request_time),
                latest: format_amz_date(latest),
                server_time: format_amz_date(now),
                skew: describe_skew(max_skew),
            });
        }
    }
    Ok(())
}

/// AWS writes the window as `5 min.`; other windows are written the same way when they are
/// whole minutes.
fn describe_skew(skew: Duration) -> String {
    // Written without `is_multiple_of`, which is newer than the workspace's rust-version.
    let secs = skew.as_secs();
    match (secs / 60, secs % 60) {
        (minutes, 0) => format!("{minutes} min."),
        _ => format!("{secs} sec."),
    }
}

/// The canonical request with the values of credential-like headers masked, for logging.
fn redact(canonical: &str) -> String {
    const SENSITIVE: [&str; 2] = ["x-api-key:", "x-amz-security-token:"];
    canonical
        .split('\n')
        .map(|line| match SENSITIVE.iter().find(|p| line.starts_with(*p)) {
            Some(prefix) => format!("{prefix}<redacted>"),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::SystemTime;

    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;
    use axum::http::HeaderValue;
    use time::macros::datetime;

    use super::*;

    const AK: &str = "AKIAFACEGATEEXAMPLE";
    const SK: &str = "fgSecret/K7MDENG+bPxRfiCYEXAMPLEKEY0123";
    const HOST_NAME: &str = "api.facegate.test";
    const T0: OffsetDateTime = datetime!(2019-01-01 00:00:00 UTC);
    const SUBJECT: &str = "3f1c2a9e-5b7d-4c1e-9a2b-0d8e7f6a5b4c";
    const EVENT: &str = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d";
    const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your \
                            AWS Secret Access Key and signing method. Consult the service documentation for details.";

    /// A request as it arrives at the server, owned so that tests can tamper with it.
    #[derive(Debug, Clone)]
    struct Wire {
        method: String,
        path: String,
        query: Option<String>,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Wire {
        fn as_signed(&self) -> SignedRequest<'_> {
            SignedRequest {
                method: &self.method,
                path: &self.path,
                query: self.query.as_deref(),
                headers: &self.headers,
                body: &self.body,
            }
        }

        fn amz_date(&self) -> OffsetDateTime {
            let value = self.headers.get(X_AMZ_DATE).expect("x-amz-date").to_str().expect("ascii");
            parse_amz_date(value).expect("well-formed x-amz-date")
        }

        fn verify_with(&self, secret: &str, now: OffsetDateTime, config: &SigV4Config) -> Result<(), SigV4Error> {
            let auth = authorization_from_headers(&self.headers)?;
            verify(&self.as_signed(), &auth, secret, now, config)
        }

        fn verify_at(&self, now: OffsetDateTime) -> Result<(), SigV4Error> {
            self.verify_with(SK, now, &SigV4Config::default())
        }

        fn set(&mut self, name: &'static str, value: &str) {
            self.headers.insert(name, HeaderValue::from_str(value).expect("header value"));
        }

        /// Rewrites the `Authorization` header's text.
        fn edit_authorization(&mut self, from: &str, to: &str) {
            let value = self.headers.get(AUTHORIZATION).expect("authorization").to_str().expect("ascii");
            assert!(value.contains(from), "{value} lacks {from}");
            let edited = value.replace(from, to);
            self.set("authorization", &edited);
        }
    }

    /// What a client means to send, before signing.
    struct Spec {
        method: &'static str,
        path: String,
        query: Option<&'static str>,
        headers: Vec<(&'static str, &'static str)>,
        body: Vec<u8>,
    }

    fn client(method: &'static str, path: impl Into<String>) -> Spec {
        Spec { method, path: path.into(), query: None, headers: vec![("x-api-key", "app-key-1")], body: Vec::new() }
    }

    impl Spec {
        fn query(mut self, query: &'static str) -> Self {
            self.query = Some(query);
            self
        }
        fn header(mut self, name: &'static str, value: &'static str) -> Self {
            self.headers.push((name, value));
            self
        }
        fn json(mut self, body: &str) -> Self {
            self.headers.push(("content-type", "application/json"));
            self.body = body.as_bytes().to_vec();
            self
        }
    }

    /// Signs `spec` with the `aws-sigv4` crate, as a Rust client would, and returns what the
    /// server then receives: the client's headers, `host`, and the signer's additions.
    fn sign_with(spec: &Spec, at: OffsetDateTime, region: &str, service: &str, settings: SigningSettings) -> Wire {
        sign_body(spec, at, region, service, settings, SignableBody::Bytes(&spec.body))
    }

    fn sign_body(
        spec: &Spec,
        at: OffsetDateTime,
        region: &str,
        service: &str,
        settings: SigningSettings,
        body: SignableBody<'_>,
    ) -> Wire {
        let identity: Identity = Credentials::new(AK, SK, None, None, "facegate-tests").into();
        let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(SystemTime::from(at))
            .settings(settings)
            .build()
            .expect("signing params")
            .into();
        let uri = match spec.query {
            Some(q) => format!("https://{HOST_NAME}{}?{q}", spec.path),
            None => format!("https://{HOST_NAME}{}", spec.path),
        };
        let signable = SignableRequest::new(spec.method, uri, spec.headers.iter().copied(), body).expect("signable");
        let (instructions, _signature) = sign(signable, &params).expect("sign").into_parts();

        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static(HOST_NAME));
        for (name, value) in &spec.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        for (name, value) in instructions.headers() {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        Wire {
            method: spec.method.to_owned(),
            path: spec.path.clone(),
            query: spec.query.map(str::to_owned),
            headers,
            body: spec.body.clone(),
        }
    }

    /// botocore collapses every whitespace run of a header value, tabs too; `aws-sigv4` only
    /// spaces. A request carrying a tab verifies in either signer's form, and in no other.
    #[test]
    fn a_tab_in_a_signed_header_verifies_in_either_signers_form() {
        let spec = client("GET", "/v1.1/tags").header("x-note", "one\t two");
        let wire = sign_default(&spec, T0);
        wire.verify_at(T0).expect("aws-sigv4's form: spaces collapsed, the tab kept");

        // The same request as botocore signs it.
        let auth = authorization_from_headers(&wire.headers).expect("auth");
        let payload = hex::encode(Sha256::digest(&wire.body));
        let canonical = build_canonical_request(
            &wire.as_signed(),
            &auth.signed_headers,
            &raw_sorted_query(None),
            &payload,
            Collapse::Whitespace,
        )
        .expect("canonical");
        assert!(canonical.contains("x-note:one two\n"), "{canonical}");
        let amz_date = wire.headers.get(X_AMZ_DATE).expect("date").to_str().expect("ascii").to_owned();
        let key = signing_key(SK, &auth.date, &auth.region, &auth.service);
        let botocore_signature =
            hex::encode(hmac_sha256(&key, string_to_sign(&canonical, &amz_date, &auth.credential_scope()).as_bytes()));
        let mut botocore = wire.clone();
        botocore.edit_authorization(&auth.signature, &botocore_signature);
        botocore.verify_at(T0).expect("botocore's form: the tab collapsed too");

        let mut tampered = botocore.clone();
        tampered.set("x-note", "one\t three");
        assert!(tampered.verify_at(T0).is_err());
    }

    fn sign_default(spec: &Spec, at: OffsetDateTime) -> Wire {
        sign_with(spec, at, "ap-southeast-2", "execute-api", SigningSettings::default())
    }

    fn excluding(names: &[&'static str]) -> SigningSettings {
        let mut settings = SigningSettings::default();
        let excluded = settings.excluded_headers.get_or_insert_with(Vec::new);
        excluded.extend(names.iter().map(|n| std::borrow::Cow::Borrowed(*n)));
        settings
    }

    fn varied_requests() -> Vec<Spec> {
        let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let mut binary_post = client("POST", "/v1.1/face/extract").header("content-type", "application/octet-stream");
        binary_post.body = binary;
        vec![
            client("GET", format!("/v1.1/subjects/{SUBJECT}")).header("accept", "application/json"),
            client("POST", "/v1.1/subjects").json(r#"{"face":"/9j/4AAQSkZJRg==","tags":["passport"]}"#),
            client("PUT", format!("/v1.1/subjects/{SUBJECT}")).json(r#"{"face":"iVBORw0KGgo=","tags":[]}"#),
            client("DELETE", format!("/v1.1/subjects/{SUBJECT}")),
            client("GET", format!("/v1.1/subjects/{SUBJECT}/events")),
            client("POST", format!("/v1.1/subjects/{SUBJECT}/events")).json(r#"{"face":"AAAA"}"#),
            client("PUT", format!("/v1.1/subjects/{SUBJECT}/events/{EVENT}")).json(r#"{"face":"AAAA"}"#),
            client("DELETE", format!("/v1.1/subjects/{SUBJECT}/events/{EVENT}")),
            client("POST", "/v1.1/face/search").json(r#"{"face":"AAAA","tags":["café","日本"],"maxResults":5}"#),
            client("POST", "/v1.1/face/verify").json(""),
            client("POST", "/v1.1/tags/my%20tag"),
            client("PUT", "/v1.1/tags/caf%C3%A9%20%E6%97%A5%E6%9C%AC").json(r#"{"name":"new name"}"#),
            client("DELETE", "/v1.1/tags/a%2Fb"),
            // Lower-case escapes are legal on the wire and must be re-encoded as they came.
            client("POST", "/v1.1/tags/caf%c3%a9"),
            client("POST", "/v1.1/tags/it's%20(50%25)%20@home"),
            client("POST", "/v1.1/jobs/bulkregister").json(r#"{"subjects":[{"face":"AAAA"}]}"#),
            client("GET", "/v1.1/jobs/bulkregister/b7e2f0c4-1d2a-4b3c-8d9e-0f1a2b3c4d5e"),
            client("GET", "/v1.1/jobs/bulkregister/b7e2f0c4-1d2a-4b3c-8d9e-0f1a2b3c4d5e/eyJpZCI6IjEyMyJ9%3D%3D"),
            client("GET", "/v1.1/subjects").query("tag=b&tag=a&tag=a&limit=10"),
            client("GET", "/v1.1/subjects")
                .query("q=a%20b&q=a+b&plus=%2B&tilde=~x&star=%2A&utf=%E2%9C%93&empty=&flag&%C3%A9=1"),
            // Reserved characters a client may leave raw in a query; canonically they are encoded.
            client("GET", "/v1.1/subjects").query("from=2019-01-01T00:00:00Z&list=a,b&path=/x/y"),
            // user-agent is signed by neither signer; the spacing is collapsed in the canonical form.
            client("POST", format!("/v1.1/subjects/{SUBJECT}/events"))
                .header("user-agent", "nec-sdk/1.0")
                .header("x-custom", "  a   b  c ")
                .json(r#"{"face":"AAAA"}"#),
            client("GET", format!("/v1.1/subjects/{SUBJECT}")).header("x-multi", "one").header("x-multi", "two"),
            // NEC's documented example signs content-length and content-type.
            client("POST", "/v1.1/subjects").header("content-length", "14").json(r#"{"face":"AA="}"#),
            binary_post,
        ]
    }

    #[test]
    fn accepts_requests_signed_by_the_aws_sigv4_crate() {
        let requests = varied_requests();
        assert!(requests.len() >= 20);
        for spec in &requests {
            let mut wire = sign_default(spec, T0);
            // Headers a client or proxy adds after signing are not covered and must not matter.
            wire.set("x-forwarded-for", "203.0.113.7");
            wire.set("accept-encoding", "gzip");
            if let Err(e) = wire.verify_at(T0) {
                panic!("{} {} {:?}: {e}", spec.method, spec.path, spec.query);
            }
        }
    }

    #[test]
    fn accepts_a_signed_x_amz_content_sha256() {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let spec = client("POST", "/v1.1/subjects").json(r#"{"face":"AAAA"}"#);
        let wire = sign_with(&spec, T0, "ap-southeast-2", "execute-api", settings);
        assert!(wire.headers.contains_key(X_AMZ_CONTENT_SHA256));
        wire.verify_at(T0).expect("valid");
    }

    fn base_request() -> Wire {
        let spec = client("POST", format!("/v1.1/subjects/{SUBJECT}/events"))
            .query("mode=fast&tag=a")
            .json(r#"{"face":"AAAA","tags":["passport"]}"#);
        let wire = sign_default(&spec, T0);
        wire.verify_at(T0).expect("the unmodified request is valid");
        wire
    }

    fn assert_mismatch(wire: &Wire, what: &str) {
        match wire.verify_at(T0) {
            Err(e @ SigV4Error::SignatureMismatch) => assert_eq!(e.to_string(), MISMATCH),
            other => panic!("{what}: expected a signature mismatch, got {other:?}"),
        }
    }

    #[test]
    fn rejects_single_mutations() {
        let base = base_request();

        let mut w = base.clone();
        w.set("x-api-key", "app-key-2");
        assert_mismatch(&w, "x-api-key");

        let mut w = base.clone();
        w.set("content-type", "text/plain");
        assert_mismatch(&w, "content-type");

        let mut w = base.clone();
        w.set("host", "evil.example");
        assert_mismatch(&w, "host");

        let mut w = base.clone();
        w.body = br#"{"face":"AAAB","tags":["passport"]}"#.to_vec();
        assert_mismatch(&w, "body");

        let mut w = base.clone();
        w.body.clear();
        assert_mismatch(&w, "empty body");

        let mut w = base.clone();
        w.path = format!("/v1.1/subjects/{SUBJECT}/events/{EVENT}");
        assert_mismatch(&w, "path");

        let mut w = base.clone();
        w.path = w.path.replace("subjects", "subject%73");
        assert_mismatch(&w, "path spelled with an escape");

        let mut w = base.clone();
        w.query = Some("mode=slow&tag=a".to_owned());
        assert_mismatch(&w, "query value");

        let mut w = base.clone();
        w.query = Some("mode=fast&tag=a&tag=b".to_owned());
        assert_mismatch(&w, "query pair added");

        let mut w = base.clone();
        w.query = None;
        assert_mismatch(&w, "query removed");

        let mut w = base.clone();
        w.method = "PUT".to_owned();
        assert_mismatch(&w, "method");

        let mut w = base.clone();
        w.set("x-amz-date", "20190101T000001Z");
        assert_mismatch(&w, "x-amz-date");

        let mut w = base.clone();
        let sig = authorization_from_headers(&w.headers).expect("auth").signature;
        let (first, rest) = sig.split_at(1);
        let flipped = format!("{}{rest}", if first == "0" { "1" } else { "0" });
        w.edit_authorization(&sig, &flipped);
        assert_mismatch(&w, "signature");

        match base.verify_with("wrong-secret", T0, &SigV4Config::default()) {
            Err(SigV4Error::SignatureMismatch) => {}
            other => panic!("wrong secret: {other:?}"),
        }
    }

    #[test]
    fn rejects_a_date_outside_the_credential_scope() {
        let mut w = base_request();
        w.set("x-amz-date", "20190102T000000Z");
        let err = w.verify_at(datetime!(2019-01-02 00:00:00 UTC)).expect_err("other day");
        assert!(matches!(err, SigV4Error::WrongScope(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20190101' != \
             '20190102', from 'X-Amz-Date'."
        );
    }

    #[test]
    fn rejects_the_wrong_region_or_service() {
        let spec = client("GET", format!("/v1.1/subjects/{SUBJECT}"));
        let w = sign_with(&spec, T0, "us-east-1", "execute-api", SigningSettings::default());
        let err = w.verify_at(T0).expect_err("region");
        assert!(matches!(err, SigV4Error::WrongScope(_)));
        assert_eq!(err.to_string(), "Credential should be scoped to a valid region, not 'us-east-1'.");

        let w = sign_with(&spec, T0, "ap-southeast-2", "iam", SigningSettings::default());
        let err = w.verify_at(T0).expect_err("service");
        assert!(matches!(err, SigV4Error::WrongScope(_)));
        assert_eq!(err.to_string(), "Credential should be scoped to correct service: 'execute-api'.");

        // Editing the scope of a correct signature is no better.
        let mut w = base_request();
        w.edit_authorization("/ap-southeast-2/", "/us-west-2/");
        assert!(matches!(w.verify_at(T0), Err(SigV4Error::WrongScope(_))));
    }

    #[test]
    fn requires_host_date_and_api_key_to_be_signed() {
        let spec = client("POST", "/v1.1/subjects").json(r#"{"face":"AAAA"}"#);
        for name in ["host", "x-amz-date", "x-api-key"] {
            // A genuine signature that simply does not cover the header...
            let w = sign_with(&spec, T0, "ap-southeast-2", "execute-api", excluding(&[name]));
            match w.verify_at(T0) {
                Err(e @ SigV4Error::MissingSignedHeader(_)) => {
                    assert_eq!(e.to_string(), format!("'{name}' must be a 'SignedHeader' in the AWS Authorization."))
                }
                other => panic!("{name} unsigned: {other:?}"),
            }
            // ...and a SignedHeaders list edited to drop it.
            let mut w = sign_default(&spec, T0);
            let auth = authorization_from_headers(&w.headers).expect("auth");
            let list = auth.signed_headers.join(";");
            let without: Vec<&str> = auth.signed_headers.iter().map(String::as_str).filter(|h| *h != name).collect();
            w.edit_authorization(&format!("SignedHeaders={list}"), &format!("SignedHeaders={}", without.join(";")));
            assert!(matches!(w.verify_at(T0), Err(SigV4Error::MissingSignedHeader(n)) if n == name));
        }

        // An x-api-key added after signing is not covered either.
        let mut spec_without_key = client("GET", format!("/v1.1/subjects/{SUBJECT}"));
        spec_without_key.headers.clear();
        let mut w = sign_default(&spec_without_key, T0);
        w.verify_at(T0).expect("no api key, nothing to cover");
        w.set("x-api-key", "app-key-1");
        assert!(matches!(w.verify_at(T0), Err(SigV4Error::MissingSignedHeader(n)) if n == "x-api-key"));
    }

    #[test]
    fn payload_hash_header_must_match_the_body() {
        let mut w = base_request();
        w.set("x-amz-content-sha256", &hex::encode(Sha256::digest(b"something else")));
        assert!(matches!(w.verify_at(T0), Err(SigV4Error::PayloadHashMismatch)));

        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let spec = client("POST", "/v1.1/subjects").json(r#"{"face":"AAAA"}"#);
        let w = sign_body(&spec, T0, "ap-southeast-2", "execute-api", settings, SignableBody::UnsignedPayload);
        assert_eq!(w.headers.get(X_AMZ_CONTENT_SHA256).map(|v| v.as_bytes()), Some(&b"UNSIGNED-PAYLOAD"[..]));
        assert!(matches!(w.verify_at(T0), Err(SigV4Error::UnsignedPayload)));
    }

    #[test]
    fn missing_or_malformed_headers() {
        let mut w = base_request();
        w.headers.remove(AUTHORIZATION);
        let err = w.verify_at(T0).expect_err("no authorization");
        assert!(matches!(err, SigV4Error::Missing));
        assert_eq!(err.to_string(), "Missing Authentication Token");

        let mut w = base_request();
        w.headers.remove(X_AMZ_DATE);
        assert!(matches!(w.verify_at(T0), Err(SigV4Error::Malformed(_))));

        for bad in
            ["2019-01-01T00:00:00Z", "20190101T000000", "20191301T000000Z", "20190101T246000Z", "2019010IT000000Z"]
        {
            let mut w = base_request();
            w.set("x-amz-date", bad);
            assert!(matches!(w.verify_at(T0), Err(SigV4Error::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn clock_skew_window() {
        let w = sign_default(&client("GET", format!("/v1.1/subjects/{SUBJECT}")), T0);
        for offset in [-5 * 60, -4 * 60, 0, 4 * 60, 5 * 60] {
            w.verify_at(T0 + time::Duration::seconds(offset)).unwrap_or_else(|e| panic!("{offset} s: {e}"));
        }

        let err = w.verify_at(T0 + time::Duration::minutes(6)).expect_err("6 min old");
        assert!(matches!(err, SigV4Error::Expired { .. }));
        assert_eq!(
            err.to_string(),
            "Signature expired: 20190101T000000Z is now earlier than 20190101T000100Z (20190101T000600Z - 5 min.)"
        );
        let err = w.verify_at(T0 + time::Duration::minutes(11)).expect_err("11 min old");
        assert_eq!(
            err.to_string(),
            "Signature expired: 20190101T000000Z is now earlier than 20190101T000600Z (20190101T001100Z - 5 min.)"
        );
        let err = w.verify_at(T0 + time::Duration::seconds(301)).expect_err("just too old");
        assert!(matches!(err, SigV4Error::Expired { .. }));

        let err = w.verify_at(T0 - time::Duration::minutes(6)).expect_err("6 min ahead");
        assert!(matches!(err, SigV4Error::NotYetValid { .. }));
        assert_eq!(
            err.to_string(),
            "Signature not yet current: 20190101T000000Z is still later than 20181231T235900Z \
             (20181231T235400Z + 5 min.)"
        );

        // The server's clock may be in any offset; only the instant matters.
        let local = (T0 + time::Duration::minutes(6)).to_offset(time::macros::offset!(+10));
        assert_eq!(
            w.verify_at(local).expect_err("6 min old").to_string(),
            "Signature expired: 20190101T000000Z is now earlier than 20190101T000100Z (20190101T000600Z - 5 min.)"
        );
    }

    #[test]
    fn the_spec_example_message() {
        // docs: necid-api.rst shows exactly this body for a stale request.
        let err = check_skew(
            datetime!(2018-08-16 03:20:46 UTC),
            datetime!(2018-08-16 04:08:29 UTC),
            Duration::from_secs(300),
        )
        .expect_err("stale");
        assert_eq!(
            err.to_string(),
            "Signature expired: 20180816T032046Z is now earlier than 20180816T040329Z (20180816T040829Z - 5 min.)"
        );
    }

    #[test]
    fn parses_authorization_headers() {
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        )
        .expect("valid");
        assert_eq!(
            auth,
            Authorization {
                access_key_id: "AKIDEXAMPLE".into(),
                date: "20150830".into(),
                region: "us-east-1".into(),
                service: "iam".into(),
                signed_headers: vec!["content-type".into(), "host".into(), "x-amz-date".into()],
                signature: "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7".into(),
            }
        );
        assert_eq!(auth.credential_scope(), "20150830/us-east-1/iam/aws4_request");

        // No spaces after commas, and another order, are fine too.
        let compact = parse_authorization(
            "AWS4-HMAC-SHA256 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7,\
             Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request,SignedHeaders=content-type;host;x-amz-date",
        )
        .expect("valid");
        assert_eq!(compact, auth);

        let sig = "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
        let cred = "Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request";
        let malformed = [
            format!("AWS4-HMAC-SHA1 {cred}, SignedHeaders=host, {sig}"),
            format!("Token {cred}, SignedHeaders=host, {sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, {sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, SignedHeaders=host, {sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, {sig}, Extra=1"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature=abc"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date;host, {sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=Host;x-amz-date, {sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;host, {sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;;x-amz-date, {sig}"),
            format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam, SignedHeaders=host, {sig}"),
            format!("AWS4-HMAC-SHA256 Credential=AKID/2015083/us-east-1/iam/aws4_request, SignedHeaders=host, {sig}"),
            format!("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/iam/aws5_request, SignedHeaders=host, {sig}"),
            format!("AWS4-HMAC-SHA256 Credential=/20150830/us-east-1/iam/aws4_request, SignedHeaders=host, {sig}"),
            format!("AWS4-HMAC-SHA256 {cred} SignedHeaders=host {sig}"),
        ];
        for value in &malformed {
            assert!(matches!(parse_authorization(value), Err(SigV4Error::Malformed(_))), "{value}");
        }
        assert_eq!(
            parse_authorization("AWS4-HMAC-SHA256 ").expect_err("empty").to_string(),
            "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' \
             parameter. Authorization header requires 'SignedHeaders' parameter."
        );
        assert!(matches!(parse_authorization("  "), Err(SigV4Error::Missing)));
        assert!(matches!(authorization_from_headers(&HeaderMap::new()), Err(SigV4Error::Missing)));
    }

    #[test]
    fn errors_never_carry_the_canonical_request() {
        let mut w = base_request();
        w.body = b"tampered".to_vec();
        let err = w.verify_at(T0).expect_err("tampered");
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("x-api-key") && !text.contains("app-key-1") && !text.contains(SK) && !text.contains('\n')
        );
    }

    #[test]
    fn path_normalisation() {
        for (raw, want) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/./", "/"),
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("/./example", "/example"),
            ("//example//", "/example/"),
            ("/a/b/.", "/a/b/"),
            ("/v1.1/subjects/", "/v1.1/subjects/"),
            ("/v1.1/tags/%2E%2E", "/v1.1/tags/%2E%2E"),
            ("relative/path", "/relative/path"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw:?}");
        }
        assert_eq!(canonical_uri("/v1.1/tags/my%20tag"), "/v1.1/tags/my%2520tag");
        assert_eq!(canonical_uri("/v1.1/tags/a%2Fb"), "/v1.1/tags/a%252Fb");
        assert_eq!(canonical_uri("/test/@connections/JBDvjfGEIAMCERw%3D"), "/test/%40connections/JBDvjfGEIAMCERw%253D");
        assert_eq!(canonical_uri("/-._~AZaz09"), "/-._~AZaz09");
    }

    #[test]
    fn query_canonicalisation() {
        assert_eq!(canonical_query(None), "");
        assert_eq!(canonical_query(Some("")), "");
        assert_eq!(canonical_query(Some("b=2&a=1&a=0")), "a=0&a=1&b=2");
        assert_eq!(canonical_query(Some("q=a+b&r=a%20b&flag&e=")), "e=&flag=&q=a%20b&r=a%20b");
        assert_eq!(canonical_query(Some("t=2019-01-01T00:00:00Z&l=a,b")), "l=a%2Cb&t=2019-01-01T00%3A00%3A00Z");
        assert_eq!(canonical_query(Some("k=%7e&%c3%a9=x")), "%C3%A9=x&k=~");
        assert_eq!(raw_sorted_query(Some("q=a+b&b&a=%7e")), "a=%7e&b=&q=a+b");
    }

    /// botocore's `SigV4Auth`, the signer NEC's Python SDK and most tooling use. The script signs
    /// requests as a client would (path already percent-encoded in the URL), records botocore's
    /// own canonical request, and prints what goes on the wire.
    #[test]
    fn accepts_requests_signed_by_botocore() {
        // The pinned botocore that `make test` installs, not whatever the system's Python has.
        let Some(mut python) = facegate_testkit::python_with(&["botocore"]) else { return };
        const SCRIPT: &str = r#"
import hashlib, json, sys
from urllib.parse import quote
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

class Capturing(SigV4Auth):
    def canonical_request(self, request):
        self.captured = super().canonical_request(request)
        return self.captured

ak, sk, host, subject, event = sys.argv[1:6]
seg = lambda s: quote(s, safe="")
search = json.dumps({"face": "AAAA", "tags": ["caf\u00e9"]}).encode()
cases = [
    ("POST", "/v1.1/subjects", None, {"Content-Type": "application/json"}, b'{"face":"AAAA","tags":["passport"]}'),
    ("PUT", f"/v1.1/subjects/{subject}/events/{event}", None, {"Content-Type": "application/json"}, b'{"face":"AAAA"}'),
    ("DELETE", f"/v1.1/subjects/{subject}/events/{event}", None, {}, b""),
    ("POST", "/v1.1/tags/" + seg("my tag"), None, {}, b""),
    ("PUT", "/v1.1/tags/" + seg("caf\u00e9 \u65e5\u672c"), None, {"Content-Type": "application/json"},
     b'{"name":"x y"}'),
    ("DELETE", "/v1.1/tags/" + seg("a/b"), None, {}, b""),
    ("GET", "/v1.1/jobs/bulkregister/" + subject + "/" + seg("eyJpZCI6IjEyMyJ9=="), None, {}, b""),
    ("POST", "/v1.1/face/search", None,
     {"Content-Type": "application/json", "X-Amz-Content-SHA256": hashlib.sha256(search).hexdigest()}, search),
    ("GET", "/v1.1/subjects?tag=b&tag=a&limit=10", None, {}, b""),
    # A query left raw in the URL: botocore signs it without re-encoding.
    ("GET", "/v1.1/subjects?name=a+b&at=2019-01-01T00:00:00Z&z=%7e", None, {}, b""),
    # Parameters given separately: botocore signs them encoded, the wire carries urlencode()'s '+'.
    ("GET", "/v1.1/subjects", {"name": "a b", "sym": "~*!"}, {}, b""),
]
out = []
for method, path, params, headers, body in cases:
    headers = dict(headers, **{"x-api-key": "app-key-1"})
    req = AWSRequest(method=method, url=f"https://{host}{path}", params=params, headers=headers, data=body)
    signer = Capturing(Credentials(ak, sk), "execute-api", "ap-southeast-2")
    signer.add_auth(req)
    prepared = req.prepare()
    out.append({
        "method": prepared.method,
        "url": prepared.url,
        "headers": [[k, v] for k, v in prepared.headers.items()],
        "body": (prepared.body or b"").hex(),
        "canonical": signer.captured,
    })
print(json.dumps(out))
"#;
        let output = facegate_testkit::output_within(
            python.args(["-c", SCRIPT, AK, SK, HOST_NAME, SUBJECT, EVENT]),
            std::time::Duration::from_secs(120),
        );
        assert!(output.status.success(), "botocore script failed: {}", String::from_utf8_lossy(&output.stderr));
        let cases: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("botocore script output");
        assert_eq!(cases.len(), 11);

        let mut raw_query_fallbacks = 0;
        for case in &cases {
            let url = case["url"].as_str().expect("url");
            let target = url.strip_prefix(&format!("https://{HOST_NAME}")).expect("url on the test host");
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                None => (target.to_owned(), None),
            };
            let mut headers = HeaderMap::new();
            headers.insert("host", HeaderValue::from_static(HOST_NAME));
            for pair in case["headers"].as_array().expect("headers") {
                let (name, value) = (pair[0].as_str().expect("name"), pair[1].as_str().expect("value"));
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_str(value).expect("value"),
                );
            }
            let wire = Wire {
                method: case["method"].as_str().expect("method").to_owned(),
                path,
                query,
                headers,
                body: hex::decode(case["body"].as_str().expect("body")).expect("hex body"),
            };
            let label = format!("{} {url}", wire.method);

            // botocore's clock is the real one: verify "then".
            wire.verify_at(wire.amz_date()).unwrap_or_else(|e| panic!("{label}: {e}"));

            // The canonical request is byte for byte botocore's, in one of the two query forms.
            let auth = authorization_from_headers(&wire.headers).expect("auth");
            let botocore = case["canonical"].as_str().expect("canonical");
            let ours = canonical_request(&wire.as_signed(), &auth.signed_headers).expect("canonical");
            if ours != botocore {
                let raw = raw_sorted_query(wire.query.as_deref());
                let payload = ours.rsplit('\n').next().expect("payload line");
                let alternative = build_canonical_request(
                    &wire.as_signed(),
                    &auth.signed_headers,
                    &raw,
                    payload,
                    Collapse::Whitespace,
                )
                .expect("raw");
                assert_eq!(alternative, botocore, "{label}");
                raw_query_fallbacks += 1;
            }
            // A tampered body fails for botocore's requests too.
            let mut tampered = wire.clone();
            tampered.body.extend_from_slice(b" ");
            assert!(tampered.verify_at(wire.amz_date()).is_err(), "{label}");
        }
        assert_eq!(raw_query_fallbacks, 1, "only the raw '+' query needs botocore's form");
    }

    /// The AWS SigV4 test suite (from aws-c-auth, as shipped in the `aws-sigv4` crate), header
    /// variants only: facegate does not accept pre-signed URLs, so the `query-*` files are not
    /// copied. Cases left out on purpose (see the folder's README):
    /// - `get-space-normalized`: expects an already-encoded `%20` to stay single-encoded, which is
    ///   S3's rule; for `execute-api` both botocore and `aws-sigv4` encode it again (`%2520`).
    /// - `get-*-unnormalized` with dot or empty segments: they sign the path without normalising
    ///   it, again S3's rule; every `execute-api` signer normalises. (`get-space-unnormalized`,
    ///   whose canonical path is the same either way, is kept.)
    /// - `get-header-value-multiline`: an obs-folded header, which HTTP servers (hyper) reject and
    ///   a `HeaderValue` cannot hold.
    ///
    /// `get-utf8`, `get-space-unnormalized` and `get-vanilla-utf8-query` put raw non-ASCII bytes
    /// or a raw space in the request line. No HTTP server hands those over, but they check that
    /// raw characters are encoded once, which is the encoding step of the double encoding.
    #[test]
    fn aws_signing_test_suite() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/aws-sig-v4-test-suite");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .expect("test suite folder")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        assert!(dirs.len() >= 30, "only {} cases under {}", dirs.len(), root.display());

        let config =
            SigV4Config { region: "us-east-1".into(), service: "service".into(), max_skew: Duration::from_secs(300) };
        let read = |dir: &Path, name: &str| -> Option<String> {
            std::fs::read_to_string(dir.join(name)).ok().map(|s| s.replace("\r\n", "\n").trim_end().to_owned())
        };
        let mut full = 0;
        for dir in &dirs {
            let name = dir.file_name().and_then(|n| n.to_str()).expect("case name").to_owned();
            let wire = parse_test_request(&read(dir, "header-signed-request.txt").expect("header-signed-request.txt"));
            let auth = authorization_from_headers(&wire.headers).unwrap_or_else(|e| panic!("{name}: {e}"));
            let canonical = canonical_request(&wire.as_signed(), &auth.signed_headers).expect("canonical");
            let expected_canonical = read(dir, "header-canonical-request.txt").expect("canonical file");

            if name == "double-encode-path" {
                // Its canonical request was written for another date than its request carries;
                // the path line is what the case is about.
                assert_eq!(canonical.lines().nth(1), expected_canonical.lines().nth(1), "{name}");
                continue;
            }
            assert_eq!(canonical, expected_canonical, "{name}: canonical request");

            let amz_date = wire.headers.get(X_AMZ_DATE).expect("date").to_str().expect("ascii").to_owned();
            let to_sign = string_to_sign(&canonical, &amz_date, &auth.credential_scope());
            assert_eq!(Some(to_sign.clone()), read(dir, "header-string-to-sign.txt"), "{name}: string to sign");

            // Cases with a context.json use the suite's credentials and publish the signature.
            let Some(expected_signature) = read(dir, "header-signature.txt") else { continue };
            let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &auth.date, &auth.region, &auth.service);
            assert_eq!(hex::encode(hmac_sha256(&key, to_sign.as_bytes())), expected_signature, "{name}: signature");
            assert_eq!(auth.signature, expected_signature, "{name}");
            wire.verify_with("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", wire.amz_date(), &config)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            full += 1;
        }
        assert!(full >= 28, "only {full} cases were checked end to end");
    }

    /// Reads the suite's `header-signed-request.txt`: a request line, `Name:value` headers, a
    /// blank line and the body. Header values lose surrounding whitespace as an HTTP server's
    /// parser would strip it.
    fn parse_test_request(text: &str) -> Wire {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().expect("request line");
        let (method, rest) = request_line.split_once(' ').expect("method");
        let target = rest.rsplit_once(" HTTP/").map_or(rest, |(t, _)| t);
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').expect("header line");
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).expect("name"),
                HeaderValue::from_str(value.trim_matches([' ', '\t'])).expect("value"),
            );
        }
        Wire { method: method.to_owned(), path, query, headers, body: body.as_bytes().to_vec() }
    }
}
