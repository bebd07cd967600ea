//! `facegate serve` as a process: SIGTERM lets in-flight requests finish within the grace
//! period and checkpoints the database; the audit log records who did what without biometric
//! data.

use std::ffi::OsString;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{exchange, http, multipart, read_response, request_head, root, SandboxServer, SANDBOX_TOKEN};

fn yao() -> Vec<u8> {
    std::fs::read(root().join(".facegate/models/buffalo_s/yaoming.jpg")).expect("pack photo: run scripts/setup")
}

fn auth() -> String {
    format!("Token {SANDBOX_TOKEN}")
}

fn serve(data_dir: &Path, grace_secs: u64) -> SandboxServer {
    let args: Vec<OsString> = vec![
        "--sandbox".into(),
        "--data-dir".into(),
        data_dir.into(),
        "--shutdown-grace-secs".into(),
        grace_secs.to_string().into(),
    ];
    SandboxServer::spawn(&args, &[])
}

/// A match_faces request whose head and first half of body are sent; the rest is returned.
fn start_match_faces(server: &SandboxServer) -> (TcpStream, Vec<u8>) {
    let (content_type, body) = multipart(&[], Some(("image_path", "probe.jpg", &yao())));
    let auth = auth();
    let head = request_head(
        "POST",
        "/miicloud/match_faces",
        &[("Authorization", &auth), ("Content-Type", &content_type)],
        body.len(),
    );
    let mut conn = common::connect(&server.addr);
    conn.write_all(head.as_bytes()).expect("head");
    let half = body.len() / 2;
    conn.write_all(&body[..half]).expect("first half");
    conn.flush().expect("flush");
    (conn, body[half..].to_vec())
}

/// Enrolls `yaoming.jpg` as miiCloud person `yao`.
fn enroll_yao(server: &SandboxServer) {
    let (content_type, body) = multipart(&[("customer_person_id", "yao")], Some(("image_path", "yao.jpg", &yao())));
    let headers = [("Authorization", auth()), ("Content-Type", content_type)];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, answer) = http(&server.addr, "POST", "/miicloud/person", &headers, &body);
    assert_eq!(status, 200, "{answer}");
}

/// `GET /miicloud/person/yao` answers the enrolled person, and a search with the same photo finds
/// him: the store and the index both came back.
fn assert_knows_yao(server: &SandboxServer) {
    let auth = auth();
    let (status, person) = http(&server.addr, "GET", "/miicloud/person/yao", &[("Authorization", &auth)], &[]);
    assert_eq!(status, 200, "{person}");
    let person: Value = serde_json::from_str(&person).expect("json");
    assert_eq!(person["customer_person_id"], "yao", "{person}");
    assert_eq!(person["images"].as_array().map(Vec::len), Some(1), "{person}");
    let (content_type, body) = multipart(&[], Some(("image_path", "probe.jpg", &yao())));
    let headers = [("Authorization", auth.as_str()), ("Content-Type", content_type.as_str())];
    let (status, answer) = http(&server.addr, "POST", "/miicloud/match_faces", &headers, &body);
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["faces"][0]["customer_person_id"], "yao", "{answer}");
}

#[test]
fn sigterm_finishes_in_flight_requests_then_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = serve(dir.path(), 30);
    enroll_yao(&server);
    let wal = dir.path().join("facegate.db-wal");
    let before = std::fs::metadata(&wal).expect("a WAL-mode database has its WAL while the server runs").len();
    assert!(before > 0, "the enrollment is in the WAL until a checkpoint");

    let (mut in_flight, rest) = start_match_faces(&server);
    std::thread::sleep(Duration::from_millis(300));
    server.terminate();
    std::thread::sleep(Duration::from_millis(300));
    in_flight.write_all(&rest).expect("the in-flight request may still send its body");
    let (status, answer) = read_response(&mut in_flight);
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["faces"][0]["match_status"], "known", "{answer}");

    let exit = server.wait_exit(Duration::from_secs(20)).expect("exits after SIGTERM");
    assert!(exit.success(), "{exit:?}\n{}", server.logs());
    let logs = server.logs();
    for line in ["shutdown signal received", "database checkpointed", "shut down"] {
        assert!(logs.contains(line), "missing '{line}':\n{logs}");
    }
    // A checkpoint with TRUNCATE leaves the WAL empty; SQLite deletes it when the last connection
    // closes. Either way nothing is left in it.
    match std::fs::metadata(&wal) {
        Ok(m) => assert_eq!(m.len(), 0, "the WAL is folded into the database at shutdown"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{}: {e}", wal.display()),
    }

    // The proof that the checkpoint happened: the database file alone, without the WAL and its
    // shared memory, holds the enrollment. A copy of the directory without them is served afresh.
    let copy = tempfile::tempdir().expect("tempdir");
    for file in facegate_testkit::files_under(dir.path()) {
        let rel = file.strip_prefix(dir.path()).expect("under the data directory");
        let name = rel.to_string_lossy();
        if name.ends_with("-wal") || name.ends_with("-shm") || name == "facegate.lock" {
            continue;
        }
        let to = copy.path().join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&file, &to).expect("copy");
    }
    let reopened = serve(copy.path(), 30);
    assert_knows_yao(&reopened);
    drop(reopened);
    // And the data directory itself restarts with it.
    let restarted = serve(dir.path(), 30);
    assert_knows_yao(&restarted);
}

#[test]
fn a_request_that_never_finishes_does_not_hold_shutdown_past_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = serve(dir.path(), 1);
    let (_stalled, _never_sent) = start_match_faces(&server);
    std::thread::sleep(Duration::from_millis(300));
    let signalled = std::time::Instant::now();
    server.terminate();
    let exit = server.wait_exit(Duration::from_secs(15)).expect("exits after the grace period");
    assert!(exit.success(), "{exit:?}\n{}", server.logs());
    assert!(signalled.elapsed() >= Duration::from_secs(1), "it waited for the request first");
    let logs = server.logs();
    assert!(logs.contains("did not finish within the shutdown grace period"), "{logs}");
    assert!(logs.contains("database checkpointed"), "{logs}");
}

#[test]
fn the_audit_log_records_writes_searches_and_verifications_without_biometric_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = serve(dir.path(), 30);
    let auth = auth();
    let photo = yao();
    let enroll = multipart(
        &[("customer_person_id", "yao-1"), ("first_name", "Ming"), ("last_name", "Yao"), ("email", "yao@example.com")],
        Some(("image_path", "yao.jpg", &photo)),
    );
    let probe = multipart(&[], Some(("image_path", "probe.jpg", &photo)));
    let verify = multipart(&[("customer_person_id", "yao-1")], Some(("image_path", "probe.jpg", &photo)));
    let send = |method: &str, path: &str, form: Option<&(String, Vec<u8>)>| {
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some((content_type, _)) = form {
            headers.push(("Content-Type", content_type.as_str()));
        }
        http(&server.addr, method, path, &headers, form.map_or(&[][..], |(_, body)| body)).0
    };
    assert_eq!(send("POST", "/miicloud/person", Some(&enroll)), 200);
    assert_eq!(send("POST", "/miicloud/person", Some(&enroll)), 409);
    assert_eq!(send("POST", "/miicloud/match_faces", Some(&probe)), 200);
    assert_eq!(send("POST", "/miicloud/match_faces", Some(&verify)), 200);
    assert_eq!(send("DELETE", "/miicloud/person/yao-1", None), 200);
    assert_eq!(send("DELETE", "/miicloud/person/yao-1", None), 404);
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.logs());

    let log = std::fs::read_to_string(dir.path().join("audit.log")).expect("audit.log");
    let events: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["fields"]["action"].as_str().unwrap_or("").to_owned(),
                e["fields"]["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("create_subject", "ok"),
        ("create_subject", "Conflict"),
        ("find_subjects", "ok"),
        ("compare", "ok"),
        ("delete_subject", "ok"),
        ("delete_subject", "NotFound"),
    ];
    assert_eq!(summary, expected.map(|(a, o)| (a.to_owned(), o.to_owned())), "{log}");

    let subject = events[0]["fields"]["output"].as_str().and_then(|o| o.split_whitespace().next()).expect("output");
    assert!(subject.starts_with("subject=") && subject.len() == "subject=".len() + 36, "{subject}");
    let subject = &subject["subject=".len()..];
    for e in &events {
        assert_eq!(e["fields"]["tenant"], "sandbox", "{e}");
        assert!(e["timestamp"].as_str().is_some_and(|t| t.starts_with("20")), "{e}");
    }
    assert_eq!(events[0]["fields"]["input"], "customer_id=yao-1");
    assert!(events[2]["fields"]["output"].as_str().is_some_and(|o| o.contains(subject)), "who was identified: {log}");
    assert!(events[3]["fields"]["output"].as_str().is_some_and(|o| o.contains(subject)), "{log}");
    assert!(events[4]["fields"]["output"].as_str().is_some_and(|o| o.contains(subject)), "{log}");
    // Ids and scores only: no image bytes (raw or base64), no template, no profile.
    for needle in ["JFIF", "/9j/", "Ming", "yao@example.com", "embedding"] {
        assert!(!log.contains(needle), "'{needle}' in the audit log:\n{log}");
    }
    assert!(log.lines().all(|l| l.len() < 600), "{log}");
}

/// Every byte under the data directory, file by file.
fn raw_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    facegate_testkit::files_under(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read");
            (path, bytes)
        })
        .collect()
}

#[test]
fn serve_with_a_key_file_keeps_faces_sealed_and_refuses_to_start_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let key_file = common::generate_key_file(&dir.path().join("data.key"));

    let args: Vec<OsString> = vec![
        "--sandbox".into(),
        "--data-dir".into(),
        data.clone().into(),
        "--encryption-key-file".into(),
        key_file.clone().into(),
    ];
    let mut server = SandboxServer::spawn(&args, &[]);
    let photo = yao();
    enroll_yao(&server);
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.logs());
    assert!(!server.logs().contains("stored unencrypted"), "{}", server.logs());

    let files = raw_files(&data);
    assert!(files.iter().any(|(p, _)| p.starts_with(data.join("images"))), "the image was stored");
    for (path, bytes) in &files {
        for marker in [&b"\xff\xd8\xff"[..], b"JFIF", b"Exif", &photo[..64]] {
            assert!(!bytes.windows(marker.len()).any(|w| w == marker), "{} holds JPEG data", path.display());
        }
    }

    let without_key = common::facegate()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run serve");
    assert!(!without_key.status.success());
    let stderr = String::from_utf8_lossy(&without_key.stderr);
    assert!(stderr.contains("key"), "the refusal names the key: {stderr}");

    // With the key it starts again and still knows the person.
    let server = SandboxServer::spawn(&args, &[]);
    let (status, answer) = http(&server.addr, "GET", "/miicloud/person/yao", &[("Authorization", &auth())], &[]);
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_data_directory_is_served_by_one_process_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(dir.path(), 30);
    let second = common::facegate()
        .args(["serve", "--sandbox", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run a second serve");
    assert!(!second.status.success(), "a second server on the same data directory must not start");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another facegate serve, import or keys rotate is using"), "{stderr}");
    let key_file = dir.path().join("k");
    std::fs::write(&key_file, "00".repeat(32)).expect("key");
    let rotate = common::facegate()
        .args(["keys", "rotate", "--data-dir"])
        .arg(dir.path())
        .arg("--new-key-file")
        .arg(&key_file)
        .output()
        .expect("run keys rotate");
    assert!(!rotate.status.success(), "no rotation under a running server");
    let (status, _) = http(&server.addr, "GET", "/miicloud/person/nobody", &[("Authorization", &auth())], &[]);
    assert_eq!(status, 404, "the first server is unaffected");
}

/// The `x-request-id` of a response's head.
fn request_id_of(response: &str) -> String {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .find_map(|l| l.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("x-request-id")))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_else(|| panic!("no x-request-id in:\n{head}"))
}

/// A fit `x-request-id` is echoed and carried by the audit line of its request; an unfit one
/// (spaces, over-long) is replaced; without one a UUID is made, echoed, and in the server's log.
#[test]
fn request_ids_are_echoed_and_carried_by_log_and_audit_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = serve(dir.path(), 30);
    let auth = auth();
    let photo = yao();
    let (content_type, body) = multipart(&[("customer_person_id", "yao-rid")], Some(("image_path", "yao.jpg", &photo)));
    let headers =
        [("Authorization", auth.as_str()), ("Content-Type", content_type.as_str()), ("X-Request-Id", "client:42-a")];
    let enrolled = exchange(&server.addr, "POST", "/miicloud/person", &headers, &body);
    assert!(enrolled.starts_with("HTTP/1.1 200"), "{enrolled}");
    assert_eq!(request_id_of(&enrolled), "client:42-a");

    let long = "x".repeat(200);
    for unfit in ["has space", long.as_str()] {
        let answer = exchange(&server.addr, "GET", "/healthz", &[("X-Request-Id", unfit)], b"");
        let id = request_id_of(&answer);
        assert!(id != unfit && id.len() == 36, "{unfit:?} replaced by a UUID, got {id:?}");
    }

    // An error answer, made without a client id, still carries one, and the log names it.
    let missing = exchange(&server.addr, "GET", "/miicloud/person/nobody", &[("Authorization", auth.as_str())], b"");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let generated = request_id_of(&missing);
    assert_eq!(generated.len(), 36, "{generated}");
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.logs());
    let logs = server.logs();
    assert!(logs.contains(&format!("request_id={generated}")), "the generated id is in the log:\n{logs}");

    let audit = std::fs::read_to_string(dir.path().join("audit.log")).expect("audit.log");
    let events: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let enroll = events.iter().find(|e| e["fields"]["action"] == "create_subject").expect("the enrollment");
    assert_eq!(enroll["span"]["request_id"], "client:42-a", "{enroll}");
}
