//! A full disk: writes fail with a JSON 507, leave no row and no image behind, reads go on, and
//! writes succeed again once deletes free space.
//!
//! On SQLite the disk is simulated with a database size cap (`max_database_bytes`, SQLite's
//! `max_page_count`). PostgreSQL has no such cap that facegate sets, and its disk is the database
//! server's: there a trigger makes the database answer as a full disk does (SQLSTATE 53100,
//! `disk_full`) once the gallery holds a few samples, so the same test covers how facegate maps
//! that error and what it leaves behind.

mod common;

use base64::Engine;
use common::*;
use serde_json::json;

const PAGE: u64 = 4096;

/// Samples the PostgreSQL gallery takes before its "disk" is full.
const PG_SAMPLES_BEFORE_FULL: usize = 8;

/// Makes the PostgreSQL database at `url` refuse a new sample with `disk_full` while the gallery
/// holds [`PG_SAMPLES_BEFORE_FULL`] samples or more, as a database server whose disk is full does.
async fn fill_the_disk_at(url: String) {
    let sql = format!(
        "CREATE FUNCTION facegate_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF (SELECT COUNT(*) FROM face_samples) >= {PG_SAMPLES_BEFORE_FULL} THEN \
             RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; \
           END IF; \
           RETURN NEW; \
         END $$; \
         CREATE TRIGGER facegate_test_disk_full BEFORE INSERT ON face_samples \
           FOR EACH ROW EXECUTE FUNCTION facegate_test_disk_full();"
    );
    pg_execute(url, sql).await;
}

#[tokio::test]
async fn a_full_database_answers_507_keeps_nothing_partial_and_recovers_after_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = if on_postgres() {
        Setup::default()
    } else {
        // The size of a freshly made store, then room for a few dozen enrollments more.
        drop(SqliteStore::open(dir.path()).expect("open"));
        let empty = std::fs::metadata(dir.path().join("facegate.db")).expect("db").len();
        Setup { max_database_bytes: Some(empty + 12 * PAGE), ..Setup::default() }
    };
    let server = TestServer::start_with(dir.path(), settings).await;
    if let Some(url) = server.database_url() {
        fill_the_disk_at(url).await;
    }
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

    // Nothing of the refused enrollment remains: no person, no image, no stray temp file.
    let (status, _) =
        send(client().get(server.url(&format!("/miicloud/person/{failed_id}"))).header("Authorization", AUTH)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(server.stored_images().await, enrolled.len(), "one image per acknowledged enrollment");
    if !on_postgres() {
        let files = files_under(&dir.path().join("images"));
        assert_eq!(files.len(), enrolled.len(), "and no other file: {files:?}");
    }

    // NEC ID writes get the same 507, in NEC's error shape; reads keep working.
    let face = base64::engine::general_purpose::STANDARD.encode(&photo);
    let register = json!({"face": face});
    let (status, body) =
        send(nec_request(&server, &nec_tenant.credentials, "POST", "/v1.1/subjects", Some(&register))).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body, json!({"message": "storage is full"}));
    assert_eq!(server.stored_images().await, enrolled.len());
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
    assert_eq!(server.stored_images().await, enrolled.len() - 4 + 1);

    if let Some(url) = server.database_url() {
        // PostgreSQL checks its constraints on every write; what is left to see is that the
        // rows agree: one subject per sample, one image per sample.
        let subjects = pg_query_one(url.clone(), "SELECT COUNT(*) FROM subjects").await;
        let samples = pg_query_one(url, "SELECT COUNT(*) FROM face_samples").await;
        assert_eq!((subjects, samples), ((enrolled.len() - 3) as i64, (enrolled.len() - 3) as i64));
        server.stop().await;
        return;
    }
    let data_dir = server.data_dir.clone();
    server.stop().await;
    let store = SqliteStore::open(&data_dir).expect("reopen");
    assert_eq!(store.integrity_check().expect("integrity_check"), "ok");
}
