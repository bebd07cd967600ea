//! The NEC ID dialect's JSON requests end to end: the first byte picks a route, the rest is the
//! JSON body, which is sent correctly signed (SigV4, `x-api-key`) through the whole router over
//! in-memory fakes. This covers every request type's deserialisation, the base64 image
//! fields, the range checks and the handlers after them. Images are text for the fake engine:
//! base64 of `face:<label>` is one face.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use facegate_fuzz::{amz_now, assert_not_internal, authorization_for, debug, runtime, App};
use facegate_server::auth::sigv4::SignedRequest;
use libfuzzer_sys::fuzz_target;

const REGION: &str = "ap-southeast-2";
const SERVICE: &str = "execute-api";

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    runtime().block_on(async {
        let app = App::new().await;
        let (sid, eid) = (&app.subject_id, &app.event_id);
        let (method, path) = match route % 9 {
            0 => ("POST", "/v1.1/subjects".to_owned()),
            1 => ("PUT", format!("/v1.1/subjects/{sid}")),
            2 => ("POST", format!("/v1.1/subjects/{sid}/events")),
            3 => ("PUT", format!("/v1.1/subjects/{sid}/events/{eid}")),
            4 => ("POST", "/v1.1/face/search".to_owned()),
            5 => ("POST", "/v1.1/face/extract".to_owned()),
            6 => ("POST", "/v1.1/face/verify".to_owned()),
            7 => ("PUT", "/v1.1/tags/passport".to_owned()),
            _ => ("POST", "/v1.1/jobs/bulkregister".to_owned()),
        };
        let creds = &app.tenant.credentials;
        let (_, amz_date) = amz_now();
        let mut req = Request::builder()
            .method(method)
            .uri(&path)
            .header("host", "localhost:8080")
            .header("content-type", "application/json")
            .header("x-amz-date", &amz_date)
            .header("x-api-key", &creds.api_key)
            .body(Body::from(body.to_vec()))
            .expect("request");
        let signed_headers: Vec<String> =
            ["content-type", "host", "x-amz-date", "x-api-key"].map(str::to_owned).to_vec();
        let signed = SignedRequest { method, path: &path, query: None, headers: req.headers(), body };
        let authorization = authorization_for(
            &signed,
            &signed_headers,
            &creds.access_key_id,
            &creds.secret_access_key,
            &amz_date,
            REGION,
            SERVICE,
        )
        .expect("signable");
        req.headers_mut().insert("authorization", authorization.parse().expect("ASCII header"));
        let res = app.send(req).await;
        if debug() {
            eprintln!("{method} {path} -> {}", res.status());
        }
        assert_ne!(res.status().as_u16(), 403, "signature refused for {method} {path}");
        assert_not_internal(&res, &(method, &path, String::from_utf8_lossy(body)));
    });
});
