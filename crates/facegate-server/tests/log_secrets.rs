//! Tokens and secrets never reach the logs: every event the server emits, at trace level and
//! from every crate, is captured while valid and invalid credentials of both dialects are used,
//! then searched for each secret.

mod common;

use common::*;
use facegate_core::ApiCredentials;
use serde_json::json;

#[tokio::test]
async fn no_token_api_key_secret_or_signature_is_logged() {
    // Everything at trace level but the test's own client, which signs requests in-process.
    capture_logs("trace,aws_sigv4=off,aws_smithy_runtime_api=off,aws_credential_types=off,reqwest=off");

    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let http = client();
    let tenant = server.service.create_tenant("acme").await.expect("tenant");
    let creds = &tenant.credentials;
    let token = format!("Token {}", tenant.token);
    let photo = b"face:yao".to_vec(); // the fake engine's one face: no model is loaded

    // miiCloud: good token, wrong token, garbage header.
    let form = person_form(&[("customer_person_id", "p1"), ("first_name", "Yao")], Some(("yao.jpg", photo.clone())));
    let (status, body) =
        send(http.post(server.url("/miicloud/person")).header("Authorization", &token).multipart(form)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let wrong_token = "Token 1111111111222222222233333333334444444444";
    let (status, _) = send(http.get(server.url("/miicloud/person/p1")).header("Authorization", wrong_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) =
        send(http.get(server.url("/miicloud/person/p1")).header("Authorization", "Basic c2VjcmV0LXBhc3N3b3Jk")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // NEC ID: a signed search, a wrong secret, an unknown key.
    let face = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &photo);
    let (status, body) =
        send(nec_request(&server, creds, "POST", "/v1.1/face/search", Some(&json!({"probe": face})))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let forged =
        ApiCredentials { secret_access_key: "forgedSecretValue0123456789abcdefghijklm".into(), ..creds.clone() };
    let (status, _) = send(nec_request(&server, &forged, "GET", "/v1.1/subjects/x/events", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let guessed = ApiCredentials { api_key: "guessedApiKey0123456789abcdefghijklmnop".into(), ..creds.clone() };
    let (status, _) = send(nec_request(&server, &guessed, "GET", "/v1.1/subjects/x/events", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The signature of a request, to look for in the log.
    let signed = nec_request(&server, creds, "GET", "/v1.1/subjects/x/events", None).build().expect("request");
    let authorization = signed.headers()["authorization"].to_str().expect("ascii").to_owned();
    let signature = authorization.rsplit("Signature=").next().expect("signature").to_owned();
    let res = http.execute(signed).await.expect("send");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    server.stop().await;

    let logs = captured_logs();
    assert!(logs.contains("signature refused"), "the refusals were logged, so the capture works:\n{logs}");
    assert!(logs.contains("served"), "{logs}");
    let secrets = [
        ("token", tenant.token.as_str()),
        ("wrong token", "1111111111222222222233333333334444444444"),
        ("basic credentials", "c2VjcmV0LXBhc3N3b3Jk"),
        ("api key", creds.api_key.as_str()),
        ("secret access key", creds.secret_access_key.as_str()),
        ("forged secret", "forgedSecretValue0123456789abcdefghijklm"),
        ("guessed api key", "guessedApiKey0123456789abcdefghijklmnop"),
        ("signature", signature.as_str()),
    ];
    for (what, secret) in secrets {
        let leaks: Vec<&str> = logs.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "the {what} appears in the log:\n{}", leaks.join("\n"));
    }
}
