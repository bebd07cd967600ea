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

/// `backup --to` naming the live database, by any path that resolves to the data directory (a
/// `..` detour, a link to the folder, a link to the file), a hard link of it outside, or the
/// key file, is refused before anything is written, while the server keeps serving; the
/// database opens after a restart with everything enrolled after the refused backups.
#[test]
fn a_backup_is_never_written_over_a_file_the_store_uses() {
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
    let photo = yao();
    let server = SandboxServer::spawn(&args, &[]);
    assert_eq!(enroll(&server.addr, "before", &photo), 200);

    let outside = dir.path().join("elsewhere");
    std::fs::create_dir(&outside).expect("mkdir");
    std::os::unix::fs::symlink(&data, outside.join("data-link")).expect("folder link");
    std::os::unix::fs::symlink(data.join("facegate.db"), outside.join("db-link")).expect("file link");
    std::fs::hard_link(data.join("facegate.db"), outside.join("db-hardlink")).expect("hard link");
    let db_before = std::fs::read(data.join("facegate.db")).expect("db");
    let targets = [
        data.join("facegate.db"),
        data.join("facegate.db-wal"),
        data.join("new.fgbackup"),
        data.join("images/new.fgbackup"),
        outside.join("../data/facegate.db"),
        outside.join("data-link/facegate.db"),
        outside.join("db-link"),
        outside.join("db-hardlink"),
        key_file.clone(),
    ];
    for target in &targets {
        let out = run(&[
            "backup".as_ref(),
            "--to".as_ref(),
            target.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--encryption-key-file".as_ref(),
            key_file.as_os_str(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a backup to {} was written", target.display());
        assert!(stderr.contains("refusing to write the backup"), "{}: {stderr}", target.display());
    }
    assert!(std::fs::read(data.join("facegate.db")).expect("db").len() >= db_before.len());
    assert!(!data.join("new.fgbackup").exists() && !data.join("images/new.fgbackup").exists());
    assert!(!std::fs::read(&key_file).expect("key").is_empty(), "the key file is untouched");

    // The server went on, and so does the database after a restart.
    assert_eq!(enroll(&server.addr, "after", &photo), 200);
    drop(server);
    assert_integrity(&data);
    let server = SandboxServer::spawn(&args, &[]);
    assert_known(&server, "before");
    assert_known(&server, "after");
    // A backup beside the data directory is still written.
    let beside = outside.join("ok.fgbackup");
    backup(&data, &beside, Some(&key_file));
    assert!(beside.is_file());
}

/// `restore` says how many credentials it brings back (a revoked one comes back with its
/// backup), and `--revoke-credentials` restores with none: the old token opens nothing until the
/// tenant is given new credentials.
#[test]
fn restore_counts_the_credentials_it_brings_back_and_can_revoke_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = run(&["tenant".as_ref(), "create".as_ref(), "acme".as_ref(), "--data-dir".as_ref(), data.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tenant: Value = serde_json::from_slice(&out.stdout).expect("tenant json");
    let token = format!("Token {}", tenant["token"].as_str().expect("token"));
    let file = dir.path().join("creds.fgbackup");
    backup(&data, &file, None);

    let restore_with = |into: &Path, revoke: bool| -> Value {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["restore".as_ref(), "--from".as_ref(), file.as_os_str(), "--data-dir".as_ref(), into.as_os_str()];
        if revoke {
            args.push("--revoke-credentials".as_ref());
        }
        let out = run(&args);
        assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("restore summary json")
    };
    // The sandbox tenant is created by `serve`, not here: acme's token, API key and access key.
    let plain = dir.path().join("plain");
    let answer = restore_with(&plain, false);
    assert_eq!(answer["summary"]["credentials_restored"], 3, "{answer}");
    assert_eq!(answer["summary"]["credentials_revoked"], 0, "{answer}");
    let server = SandboxServer::spawn(&["--data-dir".into(), plain.clone().into()], &[]);
    let (status, body) = http(&server.addr, "GET", "/miicloud/person/nobody", &[("Authorization", &token)], &[]);
    assert_eq!(status, 404, "the restored token works: {body}");
    drop(server);

    let revoked = dir.path().join("revoked");
    let answer = restore_with(&revoked, true);
    assert_eq!(answer["summary"]["credentials_restored"], 0, "{answer}");
    assert_eq!(answer["summary"]["credentials_revoked"], 3, "{answer}");
    let server = SandboxServer::spawn(&["--data-dir".into(), revoked.clone().into()], &[]);
    let (status, body) = http(&server.addr, "GET", "/miicloud/person/nobody", &[("Authorization", &token)], &[]);
    assert_eq!(status, 401, "the backup's token opens nothing: {body}");
    drop(server);
    let out = run(&[
        "tenant".as_ref(),
        "rotate-credentials".as_ref(),
        "acme".as_ref(),
        "--data-dir".as_ref(),
        revoked.as_os_str(),
    ]);
    assert!(out.status.success(), "new credentials after the restore: {}", String::from_utf8_lossy(&out.stderr));
}
