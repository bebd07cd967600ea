//! Repeated authentication failures from one address are refused with 429 in both dialects. No
//! real face is needed, so the server runs on the core's fake engine.

mod common;

use common::*;
use facegate_core::ApiCredentials;

/// A refill of several seconds: each step below must land before the bucket refills, and on a
/// busy 2-core machine a request can take most of a second. The refill arithmetic itself is
/// tested on an injected clock (`auth::throttle`'s unit tests).
const REFILL_SECS: u64 = 3;

fn limited() -> Settings {
    Settings { auth_failure_burst: 4, auth_failure_refill_secs: REFILL_SECS, ..Settings::default() }
}

#[tokio::test]
async fn repeated_failures_from_one_address_get_429_until_the_bucket_refills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), limited()).await;
    let http = client();
    let tenant = server.service.create_tenant("acme").await.expect("tenant");
    let good = format!("Token {}", tenant.token);
    let person = server.url("/miicloud/person/nobody");

    // Successes cost nothing.
    for _ in 0..10 {
        let (status, _) = send(http.get(&person).header("Authorization", &good)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    // Four failures of any kind are answered normally, in both dialects...
    let (status, _) = send(http.get(&person).header("Authorization", "Token wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(http.get(&person).header("Authorization", "Basic d3Jvbmc6d3Jvbmc=")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let forged = ApiCredentials { secret_access_key: "not the secret".into(), ..tenant.credentials.clone() };
    let (status, _) = send(nec_request(&server, &forged, "GET", "/v1.1/subjects/nobody/events", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let unknown_key = ApiCredentials { api_key: "guess".into(), ..tenant.credentials.clone() };
    let (status, _) = send(nec_request(&server, &unknown_key, "GET", "/v1.1/subjects/nobody/events", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // ...then the address is refused before its credentials are looked at, valid ones included.
    let res = http.get(&person).header("Authorization", &good).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=REFILL_SECS).contains(&retry_after), "{retry_after}");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], "fail", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("too many")), "{body}");
    let res = nec_request(&server, &tenant.credentials, "GET", "/v1.1/subjects/nobody/events", None)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.expect("json");
    assert!(body["message"].is_string(), "NEC-style body: {body}");

    // One refill later, one more try is allowed; the health probes were never limited.
    let (status, _) = send(http.get(server.url("/healthz"))).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(REFILL_SECS * 1000 + 100)).await;
    let (status, _) = send(http.get(&person).header("Authorization", &good)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(http.get(&person).header("Authorization", "Token wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(http.get(&person).header("Authorization", &good)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;
}

#[tokio::test]
async fn a_zero_burst_turns_the_limit_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings { auth_failure_burst: 0, ..Settings::default() };
    let server = TestServer::start_on_fakes(dir.path(), settings).await;
    let http = client();
    for _ in 0..50 {
        let (status, _) = send(http.get(server.url("/miicloud/person/x")).header("Authorization", "Token no")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    server.stop().await;
}

#[tokio::test]
async fn requests_without_a_credential_never_lock_out_an_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), limited()).await;
    let http = client();
    let tenant = server.service.create_tenant("acme").await.expect("tenant");
    // What any web page can make its visitor's browser send: POSTs with no credential at all,
    // many times the burst, in both dialects. Each gets its own 401/403, never 429.
    for _ in 0..22 {
        let (status, body) = send(http.post(server.url("/miicloud/person")).body("x")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = send(http.post(server.url("/v1.1/subjects")).body("{}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    // The real clients behind that address still get in, in both dialects.
    let good = format!("Token {}", tenant.token);
    let (status, _) = send(http.get(server.url("/miicloud/person/nobody")).header("Authorization", &good)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        send(nec_request(&server, &tenant.credentials, "GET", "/v1.1/subjects/nobody/events", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A wrong credential still counts: four of them, and the address is limited.
    for _ in 0..4 {
        let (status, _) = send(http.get(server.url("/miicloud/person/x")).header("Authorization", "Token no")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = send(http.get(server.url("/miicloud/person/nobody")).header("Authorization", &good)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;
}
