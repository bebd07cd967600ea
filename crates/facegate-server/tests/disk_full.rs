//! A full disk, simulated with a database size cap (`max_database_bytes`, SQLite's
//! `max_page_count`): writes fail with a JSON 507, leave no row and no file behind, reads go on,
//! and writes succeed again once deletes free space.

mod common;

use base64::Engine;
use common::*;
use serde_json::json;

const PAGE: u64 = 4096;

fn image_files(dir: &Path) -> Vec<PathBuf> {
    files_under(&dir.join("images"))
}

#[tokio::test]
async fn a_full_database_answers_507_keeps_nothing_partial_and_recovers_after_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The size of a freshly made store, then room for a few dozen enrollments more.
    drop(SqliteStore::open(dir.path()).expect("open"));
    let empty = std::fs::metadata(dir.path().join("facegate.db")).expect("db").len();
    let settings = Settings { max_database_bytes: Some(empty + 12 * PAGE), ..Settings::default() };
    let server = TestServer::start_with(dir.path(), settings).await;
    let photo = asset("yaoming.jpg");
    let nec_tenant = server.service.create_tenant("nec").await.expect("tenant");

    let mut enrolled = Vec::new();
    let (failed_id, body) = loop {
        let id = format!("p{}", enrolled.len());
        let (status, body) = enroll(&server, &id, "yao.jpg", photo.clone()).await;
        if status == StatusCode::INSUFFICIENT_STORAGE {
            break (id, body);
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        enrolled.push(id);
        assert!(enrolled.len() < 400, "the cap never took effect");
    };
    assert!(enrolled.len() >= 3, "some enrollments fit: {}", enrolled.len());
    assert_fail(StatusCode::INSUFFICIENT_STORAGE, &body, StatusCode::INSUFFICIENT_STORAGE);
    assert!(body["message"].as_str().is_some_and(|m| m.contains("storage is full")), "{body}");

    // Nothing of the refused enrollment remains: no person, no image file, no stray temp file.
    let (status, _) =
        send(client().get(server.url(&format!("/miicloud/person/{failed_id}"))).header("Authorization", AUTH)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let files = image_files(dir.path());
    assert_eq!(files.len(), enrolled.len(), "one image per acknowledged enrollment: {files:?}");

    // NEC ID writes get the same 507, in NEC's error shape; reads keep working.
    let face = base64::engine::general_purpose::STANDARD.encode(&photo);
    let register = json!({"face": face});
    let (status, body) =
        send(nec_request(&server, &nec_tenant.credentials, "POST", "/v1.1/subjects", Some(&register))).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body, json!({"message": "storage is full"}));
    assert_eq!(image_files(dir.path()).len(), enrolled.len());
    let (status, body) = match_faces(&server, photo.clone(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["faces"][0]["match_status"], json!("known"), "{body}");

    // Space returns: deletes free pages, and the next enrollment fits again.
    for id in enrolled.iter().take(4) {
        let (status, body) =
            send(client().delete(server.url(&format!("/miicloud/person/{id}"))).header("Authorization", AUTH)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = enroll(&server, &failed_id, "yao.jpg", photo.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(image_files(dir.path()).len(), enrolled.len() - 4 + 1);

    let data_dir = server.data_dir.clone();
    server.stop().await;
    let store = SqliteStore::open(&data_dir).expect("reopen");
    assert_eq!(store.integrity_check().expect("integrity_check"), "ok");
}
