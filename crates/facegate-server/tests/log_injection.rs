//! Ids, tags and file names a client chose cannot forge or colour lines of the operator's log:
//! every event of a server is captured while such values are sent through both dialects, and
//! no captured line may begin with the forged text or hold a raw escape character.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_values_cannot_forge_log_lines() {
    capture_logs("debug,aws_sigv4=off,aws_smithy_runtime_api=off,aws_credential_types=off,reqwest=off,hyper=off");

    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let http = client();
    let tenant = server.service.create_tenant("acme").await.expect("tenant");
    let creds = &tenant.credentials;
    let token = format!("Token {}", tenant.token);
    let photo = b"face:yao".to_vec(); // the fake engine's one face: no model is loaded
    let red = "\u{1b}[31m";

    // miiCloud: an id with a newline and a colour escape (refused, but audited).
    let id = format!("p1\nFORGED-1 {red}alert");
    let form = person_form(&[("customer_person_id", &id)], Some(("yao.jpg", photo.clone())));
    let (status, body) =
        send(http.post(server.url("/miicloud/person")).header("Authorization", &token).multipart(form)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) =
        send(http.get(server.url("/miicloud/person/p1%0AFORGED-2%1B%5B31m")).header("Authorization", &token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // NEC ID: a tag, a path id and a bulk file name with newlines.
    let face = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &photo);
    let search = json!({"probe": face, "tags": [format!("t\nFORGED-3 {red}")]});
    let (status, body) = send(nec_request(&server, creds, "POST", "/v1.1/face/search", Some(&search))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = send(nec_request(&server, creds, "DELETE", "/v1.1/subjects/x%0AFORGED-4", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let job = json!({"registrations": [{"filename": format!("a\nFORGED-5 {red}.jpg")}]});
    let (status, body) = send(nec_request(&server, creds, "POST", "/v1.1/jobs/bulkregister", Some(&job))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let batch = body["batchId"].as_str().expect("batch").to_owned();
    // Wait for the record to be processed (and logged).
    for _ in 0..100 {
        let (_, page) =
            send(nec_request(&server, creds, "GET", &format!("/v1.1/jobs/bulkregister/{batch}"), None)).await;
        if page["processed"][0]["status"] == "Processed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.stop().await;

    let logs = captured_logs();
    for n in [1, 3, 4, 5] {
        assert!(logs.contains(&format!("FORGED-{n}")), "the value was logged (escaped), so the check bites:\n{logs}");
    }
    let forged: Vec<&str> = logs.lines().filter(|l| l.trim_start().starts_with("FORGED")).collect();
    assert!(forged.is_empty(), "forged log lines:\n{}", forged.join("\n"));
    assert!(!logs.contains('\u{1b}'), "a raw escape character reached the log");
}
