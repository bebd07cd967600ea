//! The console's page and its API under `/console/api/`, on the core's fake engine (a fake image
//! is text, `face:<label>` per face) and a real store (SQLite, or PostgreSQL under
//! `FACEGATE_TEST_STORE=postgres`): the page's files and headers, the token, every list's paging
//! and limits, stored face images scoped to their tenant, and errors in miiCloud's body.

mod common;

use std::time::{Duration, Instant};

use common::*;
use facegate_core::{BulkRegistration, Tenant};

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    send(client().get(server.url(path)).header("Authorization", AUTH)).await
}

async fn post_image(server: &TestServer, path: &str, image: &str) -> (StatusCode, Value) {
    let form = person_form(&[], Some(("photo.jpg", image.as_bytes().to_vec())));
    send(client().post(server.url(path)).header("Authorization", AUTH).multipart(form)).await
}

async fn enroll_fake(server: &TestServer, id: &str, label: &str) {
    let form = person_form(&[("customer_person_id", id), ("first_name", label)], Some(("p.jpg", face(label))));
    let (status, body) =
        send(client().post(server.url("/miicloud/person")).header("Authorization", AUTH).multipart(form)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn face(label: &str) -> Vec<u8> {
    format!("face:{label}").into_bytes()
}

async fn sandbox(server: &TestServer) -> Tenant {
    server.service.authenticate_token(SANDBOX_TOKEN).await.expect("auth").expect("sandbox tenant")
}

#[tokio::test]
async fn the_page_is_served_with_its_files_and_a_strict_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let res = client().get(server.url(path)).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        assert!(header("content-security-policy").contains("default-src 'none'"), "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
    let html = client().get(server.url("/console")).send().await.expect("send").text().await.expect("text");
    // Nothing from elsewhere: the page loads only its own files (an SVG namespace is no fetch).
    for remote in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "url(http"] {
        assert!(!html.contains(remote), "the page loads nothing from elsewhere: {remote}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_api_takes_the_miicloud_token_and_answers_in_its_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let (status, body) = send(client().get(server.url("/console/api/session"))).await;
    assert_fail(status, &body, StatusCode::UNAUTHORIZED);
    let (status, body) =
        send(client().get(server.url("/console/api/persons")).header("Authorization", "Token wrong")).await;
    assert_fail(status, &body, StatusCode::UNAUTHORIZED);
    let (status, body) = get(&server, "/console/api/session").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tenant"], SANDBOX_TENANT);
    assert_eq!(body["known_threshold"], 7000);
    assert_eq!(body["limits"]["persons_page"], 100);
    // An unknown route under the API, and an upload without a photo, answer as miiCloud does.
    let (status, body) = get(&server, "/console/api/nothing-here").await;
    assert_fail(status, &body, StatusCode::NOT_FOUND);
    let form = person_form(&[("x", "y")], None);
    let (status, body) =
        send(client().post(server.url("/console/api/detect")).header("Authorization", AUTH).multipart(form)).await;
    assert_fail(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap_or("").contains("image_path"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn no_cache_keeps_the_apis_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    enroll_fake(&server, "emp-001", "ann").await;
    for path in [
        "/console/api/session",
        "/console/api/persons",
        "/console/api/persons/emp-001/faces",
        "/console/api/persons/nobody/faces",
        "/console/api/tags",
        "/console/api/jobs",
    ] {
        let res = client().get(server.url(path)).header("Authorization", AUTH).send().await.expect("send");
        let cache = res.headers().get("cache-control").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(cache.as_deref(), Some("no-store"), "{path}: {}", res.status());
    }
    for path in ["/console/api/detect", "/console/api/search"] {
        let form = person_form(&[], Some(("photo.jpg", face("ann"))));
        let res =
            client().post(server.url(path)).header("Authorization", AUTH).multipart(form).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "{path}");
    }
    // An answer axum makes itself, rewritten into miiCloud's JSON body, keeps it too.
    let res =
        client().delete(server.url("/console/api/persons")).header("Authorization", AUTH).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    server.stop().await;
}

#[tokio::test]
async fn detect_search_persons_faces_tags_and_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let tenant = sandbox(&server).await;

    // Detect: every face with its attributes, the largest marked.
    let (status, body) = post_image(&server, "/console/api/detect", "face:ann\nface:bob").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let faces = body["faces"].as_array().expect("faces");
    assert_eq!(faces.len(), 2);
    assert_eq!(faces[0]["largest"], true);
    assert_eq!(faces[1]["largest"], false);
    assert_eq!(faces[0]["keypoints"].as_array().map(Vec::len), Some(5));
    assert!(faces[0]["quality"].as_f64().is_some() && faces[0]["pose"]["pan"].as_f64().is_some(), "{body}");

    enroll_fake(&server, "emp-001", "ann").await;
    enroll_fake(&server, "emp-002", "bob").await;
    enroll_fake(&server, "x-1", "cy").await;

    // Search: each face's ranked candidates, with the best stored face to show.
    let (status, body) = post_image(&server, "/console/api/search", "face:bob\nface:ann").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = &body["faces"][0];
    assert_eq!(first["match_status"], "known", "{body}");
    assert_eq!(first["candidates"][0]["customer_person_id"], "emp-002");
    assert_eq!(first["candidates"][0]["known"], true);
    assert_eq!(first["candidates"][0]["confidence"], 0.9999);
    let face_id = first["candidates"][0]["best_face"]["face_id"].as_str().expect("face id").to_owned();
    assert!(first["candidates"].as_array().map(Vec::len) <= Some(5));
    // Ranked: best first.
    let scores: Vec<u64> =
        first["candidates"].as_array().expect("candidates").iter().filter_map(|c| c["score"].as_u64()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert_eq!(body["faces"][1]["candidates"][1]["known"], false, "{body}");

    // Persons page by page, by customer_person_id prefix.
    let (_, page) = get(&server, "/console/api/persons?prefix=emp-&limit=1").await;
    assert_eq!(page["persons"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["persons"][0]["customer_person_id"], "emp-001");
    assert_eq!(page["persons"][0]["images"], 1);
    assert!(page["persons"][0]["newest_face"]["face_id"].is_string(), "{page}");
    assert_eq!(page["next"], "emp-001");
    let (_, page) = get(&server, "/console/api/persons?prefix=emp-&limit=1&after=emp-001").await;
    assert_eq!(page["persons"][0]["customer_person_id"], "emp-002", "{page}");
    assert!(page.get("next").is_none(), "the last page: {page}");
    let (_, page) = get(&server, "/console/api/persons?limit=100000").await;
    assert_eq!(page["persons"].as_array().map(Vec::len), Some(3), "a limit past the cap is capped: {page}");
    let (_, page) = get(&server, "/console/api/persons?prefix=nobody").await;
    assert_eq!(page["persons"], serde_json::json!([]));

    // A person's stored faces, and a stored face's image as it was uploaded.
    let (status, faces) = get(&server, "/console/api/persons/emp-002/faces").await;
    assert_eq!(status, StatusCode::OK, "{faces}");
    assert_eq!(faces["faces"][0]["face_id"], face_id.as_str());
    let res = client()
        .get(server.url(&format!("/console/api/faces/{face_id}/image")))
        .header("Authorization", AUTH)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    assert_eq!(res.bytes().await.expect("bytes").as_ref(), face("bob").as_slice());
    let (status, body) = get(&server, "/console/api/persons/nobody/faces").await;
    assert_fail(status, &body, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "person not found");

    // Another tenant sees none of it: the face image is as missing as one that never existed.
    let other = server.create_tenant("other").await.expect("tenant");
    let other_auth = format!("Token {}", other.token);
    for path in [format!("/console/api/faces/{face_id}/image"), "/console/api/faces/no-such-face/image".to_owned()] {
        let (status, body) = send(client().get(server.url(&path)).header("Authorization", &other_auth)).await;
        assert_fail(status, &body, StatusCode::NOT_FOUND);
    }
    let (_, page) = send(client().get(server.url("/console/api/persons")).header("Authorization", &other_auth)).await;
    assert_eq!(page["persons"], serde_json::json!([]));

    // Tags.
    server.service.create_tag(&tenant, "staff").await.expect("tag");
    let (_, tags) = get(&server, "/console/api/tags").await;
    assert_eq!(tags["tags"], serde_json::json!(["staff"]));

    // Bulk jobs with their progress: a file missing from the bucket fails, and is counted.
    let (_, jobs) = get(&server, "/console/api/jobs").await;
    assert_eq!(jobs["jobs"], serde_json::json!([]));
    let files = vec![BulkRegistration { filename: "missing.jpg".into(), tags: vec![] }];
    let batch = server.service.create_bulk_job(&tenant, files).await.expect("job");
    let started = Instant::now();
    let job = loop {
        let (_, jobs) = get(&server, "/console/api/jobs?limit=5").await;
        let job = jobs["jobs"][0].clone();
        if job["processed"] == 1 || started.elapsed() > Duration::from_secs(20) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["batch_id"], batch.as_str(), "{job}");
    assert_eq!((job["records"].as_u64(), job["processed"].as_u64()), (Some(1), Some(1)), "{job}");
    assert_eq!((job["succeeded"].as_u64(), job["failed"].as_u64()), (Some(0), Some(1)), "{job}");
    server.stop().await;
}
