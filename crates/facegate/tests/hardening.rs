//! The hardening issue, tried on the real binary: a low file limit under a flood of half-sent
//! requests, a side process that would change a live directory's encryption, tenant names that
//! could name another tenant's folder, and the modes of what the server writes.

use std::ffi::OsString;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{http, multipart, root, SandboxServer, SANDBOX_TOKEN};

fn yao() -> Vec<u8> {
    std::fs::read(root().join(".facegate/models/buffalo_s/yaoming.jpg")).expect("pack photo: run scripts/setup")
}

fn auth() -> String {
    format!("Token {SANDBOX_TOKEN}")
}

fn post_photo(server: &SandboxServer, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let (content_type, body) = multipart(fields, Some(("image_path", "yao.jpg", &yao())));
    let auth = auth();
    http(&server.addr, "POST", path, &[("Authorization", &auth), ("Content-Type", &content_type)], &body)
}

#[test]
fn a_flood_of_half_sent_requests_under_a_low_file_limit_leaves_the_server_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The server's soft and hard file limit both 256: before the connection cap, a few hundred
    // idle sockets made every accept fail with "Too many open files".
    let mut cmd = Command::new("sh");
    cmd.current_dir(root())
        .arg("-c")
        .arg(r#"ulimit -n 256 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_facegate"))
        .args(["serve", "--sandbox", "--listen", "127.0.0.1:0", "--inference-workers", "2", "--data-dir"])
        .arg(dir.path())
        .args(["--header-read-timeout-secs", "3", "--keep-alive-idle-secs", "2"])
        .env("FACEGATE_LOG", "info");
    let server = SandboxServer::spawn_command(cmd);
    let idle: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut s = common::connect(&server.addr);
            s.write_all(b"POST /miicloud/match_faces HTTP/1.1\r\nHost: x").expect("half a request");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert!(server.get("/healthz", None).starts_with("HTTP/1.1 200"), "{}", server.logs());
    let (status, answer) = post_photo(&server, "/miicloud/match_faces", &[]);
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered after {:?}", started.elapsed());
    drop(idle);
    let logs = server.logs();
    assert!(!logs.contains("Too many open files"), "{logs}");
    assert!(logs.contains("max_connections=128"), "the cap follows the file limit: {logs}");
}

fn facegate(args: &[&str], data: &Path, key: Option<&Path>) -> std::process::Output {
    let mut cmd = common::facegate();
    cmd.args(args).arg("--data-dir").arg(data);
    if let Some(key) = key {
        cmd.arg("--encryption-key-file").arg(key);
    }
    cmd.output().expect("run facegate")
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            let bytes = std::fs::read(&path).expect("read");
            out.push((path, bytes));
        }
    }
    out
}

fn image_files(data: &Path) -> Vec<Vec<u8>> {
    files(&data.join("images")).into_iter().map(|(_, bytes)| bytes).collect()
}

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\xff\xd8\xff")
}

#[test]
fn only_the_lock_holder_changes_a_directorys_encryption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let key = common::generate_key_file(&dir.path().join("data.key"));

    // A plaintext server is running; a side process offers a key.
    let args: Vec<OsString> = vec!["--sandbox".into(), "--data-dir".into(), data.clone().into()];
    let mut server = SandboxServer::spawn(&args, &[]);
    let side = facegate(&["tenant", "create", "side"], &data, Some(&key));
    assert!(!side.status.success(), "a key for a plaintext directory is an error");
    let stderr = String::from_utf8_lossy(&side.stderr);
    assert!(stderr.contains("not encrypted"), "{stderr}");
    let rotate = facegate(&["keys", "rotate", "--new-key-file", key.to_str().expect("path")], &data, None);
    assert!(!rotate.status.success(), "no rotation beside the running server");
    // Without a key, tenant commands beside the server keep working.
    let beside = facegate(&["tenant", "create", "beside"], &data, None);
    assert!(beside.status.success(), "{}", String::from_utf8_lossy(&beside.stderr));
    let (status, answer) = post_photo(&server, "/miicloud/person", &[("customer_person_id", "yao")]);
    assert_eq!(status, 200, "{answer}");
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    // Fully plaintext: the image is a JPEG and the directory opens without a key.
    let images = image_files(&data);
    assert!(!images.is_empty() && images.iter().all(|b| is_jpeg(b)), "plaintext images expected");
    assert!(facegate(&["tenant", "list"], &data, None).status.success(), "no key was recorded");

    // The stopped directory is encrypted by the one process allowed to: keys rotate.
    let rotate = facegate(&["keys", "rotate", "--new-key-file", key.to_str().expect("path")], &data, None);
    assert!(rotate.status.success(), "{}", String::from_utf8_lossy(&rotate.stderr));
    let images = image_files(&data);
    assert!(!images.is_empty() && images.iter().all(|b| !is_jpeg(b)), "every image sealed");
    assert!(!facegate(&["tenant", "list"], &data, None).status.success(), "the key is now required");
    let mut with_key = args.clone();
    with_key.extend(["--encryption-key-file".into(), key.clone().into()]);
    let server = SandboxServer::spawn(&with_key, &[]);
    // Beside an encrypted server, a side process with the right key works.
    let side = facegate(&["tenant", "create", "sealed-side"], &data, Some(&key));
    assert!(side.status.success(), "{}", String::from_utf8_lossy(&side.stderr));
    let (status, answer) = http(&server.addr, "GET", "/miicloud/person/yao", &[("Authorization", &auth())], &[]);
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn tenant_names_cannot_name_another_tenants_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["evil/sub", "..", "evil/..", ".hidden", "a b"] {
        let out = facegate(&["tenant", "create", bad], dir.path(), None);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("tenant name"), "{bad:?}");
    }
    let ok = facegate(&["tenant", "create", "evil"], dir.path(), None);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn what_the_server_writes_only_its_user_can_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // The usual umask, which alone would leave files world-readable.
    let mut cmd = Command::new("sh");
    cmd.current_dir(root())
        .arg("-c")
        .arg(r#"umask 022 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_facegate"))
        .args(["serve", "--sandbox", "--listen", "127.0.0.1:0", "--inference-workers", "2", "--data-dir"])
        .arg(&data)
        .env("FACEGATE_LOG", "info");
    let server = SandboxServer::spawn_command(cmd);
    let (status, answer) = post_photo(&server, "/miicloud/person", &[("customer_person_id", "yao")]);
    assert_eq!(status, 200, "{answer}");
    let mut checked = 0;
    let mut stack = vec![data.clone()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            stack.extend(std::fs::read_dir(&path).expect("dir").flatten().map(|e| e.path()));
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        checked += 1;
    }
    for expected in ["facegate.db", "facegate.lock", "audit.log", "images", "bucket"] {
        assert!(data.join(expected).exists(), "{expected} was checked");
    }
    assert!(checked >= 8, "{checked} paths checked");
}
