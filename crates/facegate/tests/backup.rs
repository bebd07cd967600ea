//! `facegate backup` beside a running server that keeps enrolling, and `facegate restore`: every
//! enrollment acknowledged before the backup started is in the restored gallery; a corrupted
//! file or a non-empty directory is refused; encrypted data stays sealed in the backup file.

use std::ffi::OsString;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{http, match_faces, multipart, root, SandboxServer, SANDBOX_TOKEN};

fn yao() -> Vec<u8> {
    std::fs::read(root().join(".facegate/models/buffalo_s/yaoming.jpg")).expect("pack photo: run scripts/setup")
}

fn auth() -> String {
    format!("Token {SANDBOX_TOKEN}")
}

/// Enrolls the pack photo as miiCloud person `id`; the status code.
fn enroll(addr: &str, id: &str, photo: &[u8]) -> u16 {
    let (content_type, body) = multipart(&[("customer_person_id", id)], Some(("image_path", "p.jpg", photo)));
    let auth = auth();
    let headers = [("Authorization", auth.as_str()), ("Content-Type", content_type.as_str())];
    http(addr, "POST", "/miicloud/person", &headers, &body).0
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    common::facegate().args(args).output().expect("run facegate")
}

fn backup(data: &Path, to: &Path, key: Option<&Path>) -> Value {
    let mut args: Vec<&std::ffi::OsStr> = vec!["backup".as_ref(), "--to".as_ref(), to.as_ref()];
    args.extend(["--data-dir".as_ref(), data.as_os_str()]);
    if let Some(key) = key {
        args.extend(["--encryption-key-file".as_ref(), key.as_os_str()]);
    }
    let out = run(&args);
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("backup summary json")
}

fn restore(from: &Path, into: &Path) -> Output {
    run(&["restore".as_ref(), "--from".as_ref(), from.as_os_str(), "--data-dir".as_ref(), into.as_os_str()])
}

/// The person answers, and a search with the photo finds someone.
fn assert_known(server: &SandboxServer, id: &str) {
    let auth = auth();
    let (status, person) =
        http(&server.addr, "GET", &format!("/miicloud/person/{id}"), &[("Authorization", &auth)], &[]);
    assert_eq!(status, 200, "{id}: {person}");
}

fn assert_integrity(data: &Path) {
    let db = facegate_store::inspect_database(&data.join("facegate.db")).expect("inspect");
    assert_eq!(db.integrity, "ok");
}

#[test]
fn a_backup_under_writes_restores_every_write_acknowledged_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = SandboxServer::start(&data);
    let photo = Arc::new(yao());

    // Enrolls until told to stop, recording when each 200 came back.
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addr, photo, acked, stop) = (server.addr.clone(), photo.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("p{i}");
                if enroll(&addr, &id, &photo) == 200 {
                    acked.lock().expect("acked").push((id, Instant::now()));
                }
                i += 1;
            }
        })
    };
    let started = Instant::now();
    while acked.lock().expect("acked").len() < 4 {
        assert!(started.elapsed() < Duration::from_secs(120), "the writer never got going:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }

    let file = dir.path().join("gallery.fgbackup");
    let backup_started = Instant::now();
    let summary = backup(&data, &file, None);
    let backup_ended = Instant::now();
    // Writes go on after the backup too, so that it ran in the middle of them.
    while acked.lock().expect("acked").iter().filter(|(_, at)| *at > backup_ended).count() < 2 {
        assert!(backup_ended.elapsed() < Duration::from_secs(120), "no writes after the backup");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    drop(server);

    let before: Vec<String> =
        acked.lock().expect("acked").iter().filter(|(_, at)| *at < backup_started).map(|(id, _)| id.clone()).collect();
    assert!(before.len() >= 4, "{before:?}");
    let s = &summary["summary"];
    assert!(s["samples"].as_u64().is_some_and(|n| n >= before.len() as u64), "{summary}");
    assert_eq!(s["images"], s["samples"], "{summary}");
    assert_eq!(s["encrypted"], false, "{summary}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).expect("backup file").permissions());
    assert_eq!(mode & 0o777, 0o600, "the backup holds faces and secrets");
    let audit = std::fs::read_to_string(data.join("audit.log")).expect("audit log");
    assert!(audit.lines().any(|l| l.contains("\"action\":\"backup\"") && l.contains("\"outcome\":\"ok\"")), "{audit}");

    // A directory that holds anything is refused, and left as it was.
    let out = restore(&file, &data);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"), "{}", String::from_utf8_lossy(&out.stderr));

    // A flipped byte anywhere is found, and nothing of the failed restore is left.
    let mut bytes = std::fs::read(&file).expect("read backup");
    for at in [bytes.len() / 2, bytes.len() - 1, 40] {
        bytes[at] ^= 0x20;
        let corrupt = dir.path().join("corrupt.fgbackup");
        std::fs::write(&corrupt, &bytes).expect("write corrupt");
        bytes[at] ^= 0x20;
        let target = dir.path().join("from-corrupt");
        let out = restore(&corrupt, &target);
        assert!(!out.status.success(), "a byte flipped at {at} went unnoticed");
        assert!(!target.exists(), "a failed restore leaves nothing behind");
    }

    let restored = dir.path().join("restored");
    let out = restore(&file, &restored);
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("restore summary json");
    assert_eq!(answer["summary"]["samples"], s["samples"], "{answer}");
    assert!(restored.join("audit.log").is_file(), "the restore is audited in its directory");

    let mut server = SandboxServer::start(&restored);
    for id in &before {
        assert_known(&server, id);
    }
    let found = match_faces(&server, &photo, &[]);
    let who = found["faces"][0]["customer_person_id"].as_str().unwrap_or_default().to_owned();
    assert!(who.starts_with('p'), "a search finds a restored person: {found}");
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.logs());
    assert_integrity(&restored);
}

#[test]
fn an_encrypted_gallery_stays_sealed_in_its_backup_and_restores_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let key_file = common::generate_key_file(&dir.path().join("data.key"));
    let args = |data: &Path| -> Vec<OsString> {
        vec![
            "--sandbox".into(),
            "--data-dir".into(),
            data.into(),
            "--encryption-key-file".into(),
            key_file.clone().into(),
        ]
    };
    let photo = yao();
    let server = SandboxServer::spawn(&args(&data), &[]);
    for id in ["sealed-1", "sealed-2"] {
        assert_eq!(enroll(&server.addr, id, &photo), 200);
    }
    // Beside the running server, and without the key: the backup never decrypts.
    let file = dir.path().join("sealed.fgbackup");
    let summary = backup(&data, &file, None);
    drop(server);
    assert_eq!(summary["summary"]["encrypted"], true, "{summary}");
    assert!(summary["summary"]["encryption_key_id"].is_string(), "{summary}");
    assert_eq!(summary["summary"]["images"], 2, "{summary}");
    let bytes = std::fs::read(&file).expect("backup");
    let middle = photo.len() / 2;
    for marker in [&b"JFIF"[..], b"Exif", &photo[..64], &photo[middle..middle + 64]] {
        assert!(!bytes.windows(marker.len()).any(|w| w == marker), "the backup holds JPEG data");
    }

    let restored = dir.path().join("restored");
    let out = restore(&file, &restored);
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    let server = SandboxServer::spawn(&args(&restored), &[]);
    assert_known(&server, "sealed-1");
    assert_known(&server, "sealed-2");
    let found = match_faces(&server, &photo, &[]);
    let who = found["faces"][0]["customer_person_id"].as_str().unwrap_or_default().to_owned();
    assert!(who.starts_with("sealed-"), "{found}");
}

#[test]
fn a_postgres_gallery_is_pointed_to_pg_dump() {
    let dir = tempfile::tempdir().expect("tempdir");
    let to = dir.path().join("x");
    let out = run(&[
        "backup".as_ref(),
        "--to".as_ref(),
        to.as_os_str(),
        "--database-url".as_ref(),
        "postgres://facegate@127.0.0.1:1/facegate".as_ref(),
        "--data-dir".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!to.exists());
}
