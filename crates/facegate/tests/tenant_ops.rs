//! The operator's tenant commands and the audit trail around them, run as real processes:
//! `tenant rotate-credentials` beside a running server (both dialects, over HTTP), `tenant set`
//! for unknown faces, `tenant delete` on a stopped server's directory, the audit lines of a direct `import`, and
//! `audit.log` reopened on SIGHUP.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{facegate, http, multipart, root, SandboxServer};

fn yao() -> Vec<u8> {
    std::fs::read(root().join(".facegate/models/buffalo_s/yaoming.jpg")).expect("pack photo: run scripts/setup")
}

fn run_json(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("run facegate");
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn tenant(args: &[&str], data: &Path) -> Command {
    let mut cmd = facegate();
    cmd.arg("tenant").args(args).arg("--data-dir").arg(data);
    cmd
}

fn serve(data: &Path) -> SandboxServer {
    let args: Vec<OsString> = vec!["--data-dir".into(), data.into()];
    SandboxServer::spawn(&args, &[])
}

/// miiCloud: a lookup of a person nobody enrolled answers 404 to a valid token, 401 otherwise.
fn miicloud_status(server: &SandboxServer, creds: &Value, path: &str) -> u16 {
    let auth = format!("Token {}", creds["token"].as_str().expect("token"));
    http(&server.addr, "GET", path, &[("Authorization", auth.as_str())], &[]).0
}

/// NEC ID: a signed request, answered 404 for an unknown subject when the credentials are
/// accepted, 403 otherwise.
fn nec_status(server: &SandboxServer, creds: &Value) -> u16 {
    let key = |name: &str| creds[name].as_str().expect("credential").to_owned();
    let path = "/v1.1/subjects/nobody/events";
    let headers = facegate_testkit::nec_headers(
        "GET",
        "x",
        path,
        b"",
        &key("api_key"),
        &key("access_key_id"),
        &key("secret_access_key"),
    );
    let all: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    http(&server.addr, "GET", path, &all, &[]).0
}

/// Both dialects' answers to `creds`: (miiCloud, NEC ID).
fn answers(server: &SandboxServer, creds: &Value) -> (u16, u16) {
    (miicloud_status(server, creds, "/miicloud/person/nobody"), nec_status(server, creds))
}

fn audit_events(data: &Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn actions(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e["fields"]["action"].as_str().unwrap_or("").to_owned(), e["fields"]["tenant"].to_string()))
        .collect()
}

#[test]
fn rotated_credentials_work_beside_the_new_ones_until_the_grace_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let old = run_json(&mut tenant(&["create", "acme"], data));
    let server = serve(data);
    assert_eq!(answers(&server, &old), (404, 404), "the credentials work");

    let grace = Duration::from_secs(4);
    let rotated_at = Instant::now();
    let new = run_json(&mut tenant(&["rotate-credentials", "acme", "--grace", "4s"], data));
    assert_eq!(new["id"], old["id"]);
    assert_eq!(new["grace_secs"], 4);
    assert_eq!(new["retired_credentials"], 3, "{new}");
    for key in ["token", "api_key", "access_key_id", "secret_access_key"] {
        assert!(new[key].as_str().is_some_and(|v| !v.is_empty()) && new[key] != old[key], "{key}: {new}");
    }
    assert_eq!(answers(&server, &new), (404, 404), "the new ones work at once");
    assert_eq!(answers(&server, &old), (404, 404), "the old ones still work in their grace");

    std::thread::sleep((grace + Duration::from_millis(500)).saturating_sub(rotated_at.elapsed()));
    assert_eq!(answers(&server, &old), (401, 403), "the old ones stop after the grace, as any refused credential");
    assert_eq!(answers(&server, &new), (404, 404), "the new ones go on");

    // `--grace 0` revokes at once.
    let newest = run_json(&mut tenant(&["rotate-credentials", "acme", "--grace", "0"], data));
    assert_eq!(answers(&server, &new), (401, 403));
    assert_eq!(answers(&server, &newest), (404, 404));
    let unknown = tenant(&["rotate-credentials", "nobody"], data).output().expect("run");
    assert!(!unknown.status.success());

    // Audited, without a secret.
    let log = std::fs::read_to_string(data.join("audit.log")).expect("audit.log");
    let events = audit_events(data);
    let rotations: Vec<_> = events.iter().filter(|e| e["fields"]["action"] == "rotate_credentials").collect();
    assert_eq!(rotations.len(), 2, "{log}");
    assert_eq!(rotations[0]["fields"]["tenant"], "acme");
    assert_eq!(rotations[0]["fields"]["input"], "grace_secs=4");
    assert_eq!(rotations[0]["fields"]["outcome"], "ok");
    assert!(rotations[1]["fields"]["output"]
        .as_str()
        .is_some_and(|o| o.contains(newest["access_key_id"].as_str().expect("id"))));
    for creds in [&old, &new, &newest] {
        for key in ["token", "api_key", "secret_access_key"] {
            let secret = creds[key].as_str().expect("secret");
            assert!(!log.contains(secret), "the audit log holds a {key}");
        }
    }
}

/// `facegate tenant set`: unknown faces are off for every tenant until one is turned on with a
/// retention; turning them off needs `--yes`; each change is an audit line.
#[test]
fn unknown_faces_are_off_until_a_tenant_sets_them_on_with_a_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    run_json(&mut tenant(&["create", "acme"], data));
    run_json(&mut tenant(&["create", "globex"], data));
    let shown = run_json(&mut tenant(&["set", "acme"], data));
    assert_eq!((shown["unknown_faces"].as_str(), shown["unknown_retention_secs"].as_u64()), (Some("off"), None));

    let refused = |args: &[&str], why: &str| {
        let out = tenant(args, data).output().expect("run facegate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(why), "{args:?}: {stderr}");
    };
    refused(&["set", "acme", "--unknown-faces", "on"], "needs --unknown-retention");
    refused(&["set", "acme", "--unknown-faces", "on", "--unknown-retention", "366d"], "1 second to 365 days");
    refused(&["set", "acme", "--unknown-faces", "on", "--unknown-retention", "0"], "1 second to 365 days");
    refused(&["set", "acme", "--unknown-faces", "on", "--unknown-retention", "30 days"], "unit of s, m, h or d");
    refused(&["set", "nobody", "--unknown-faces", "on", "--unknown-retention", "30d"], "nobody");

    let on = run_json(&mut tenant(&["set", "acme", "--unknown-faces", "on", "--unknown-retention", "30d"], data));
    assert_eq!((on["unknown_faces"].as_str(), on["unknown_retention_secs"].as_u64()), (Some("on"), Some(30 * 86_400)));
    let listed = run_json(&mut tenant(&["list"], data));
    let state: Vec<(&str, &str)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| (t["name"].as_str().unwrap_or(""), t["unknown_faces"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(state, [("acme", "on"), ("globex", "off")]);

    refused(&["set", "acme", "--unknown-faces", "off"], "add --yes");
    assert_eq!(
        run_json(&mut tenant(&["set", "acme"], data))["unknown_faces"],
        "on",
        "a refused change changes nothing"
    );
    let off = run_json(&mut tenant(&["set", "acme", "--unknown-faces", "off", "--yes"], data));
    assert_eq!((off["unknown_faces"].as_str(), off["unknown_retention_secs"].as_u64()), (Some("off"), None));

    let audited: Vec<(String, String)> = audit_events(data)
        .iter()
        .filter(|e| e["fields"]["action"] == "set_unknown_faces")
        .map(|e| (e["fields"]["input"].as_str().unwrap_or("").to_owned(), e["fields"]["outcome"].to_string()))
        .collect();
    assert_eq!(
        audited,
        [("on retention_secs=2592000".to_owned(), "\"ok\"".to_owned()), ("off".to_owned(), "\"ok\"".to_owned())],
        "the refused ones never reached the store"
    );
}

#[test]
fn tenant_delete_removes_a_stopped_servers_tenant_and_keeps_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let a = run_json(&mut tenant(&["create", "a"], data));
    let b = run_json(&mut tenant(&["create", "b"], data));
    let mut server = serve(data);
    let (content_type, body) = multipart(&[("customer_person_id", "yao")], Some(("image_path", "yao.jpg", &yao())));
    for creds in [&a, &b] {
        let auth = format!("Token {}", creds["token"].as_str().expect("token"));
        let headers = [("Authorization", auth.as_str()), ("Content-Type", content_type.as_str())];
        let (status, answer) = http(&server.addr, "POST", "/miicloud/person", &headers, &body);
        assert_eq!(status, 200, "{answer}");
    }
    let refused = tenant(&["delete", "a", "--yes"], data).output().expect("run");
    assert!(!refused.status.success(), "refused while the server holds the directory");
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.logs());

    let unconfirmed = tenant(&["delete", "a"], data).output().expect("run");
    assert!(!unconfirmed.status.success());
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));
    let a_id = a["id"].as_str().expect("id");
    let images = data.join("images");
    assert_eq!(facegate_testkit::files_under(&images.join(a_id)).len(), 1, "nothing deleted without --yes");

    // Photos staged for the tenant's bulk jobs in the default source go with it; b's stay.
    for name in ["a", "b"] {
        std::fs::create_dir_all(data.join("bucket").join(name)).expect("mkdir");
        std::fs::write(data.join("bucket").join(name).join("staged.jpg"), yao()).expect("stage");
    }
    let summary = run_json(&mut tenant(&["delete", "a", "--yes"], data));
    assert_eq!(summary["id"], a["id"]);
    assert_eq!(summary["bulk_source_folder_removed"], true, "{summary}");
    assert!(!data.join("bucket/a").exists() && data.join("bucket/b/staged.jpg").exists());
    let removed = &summary["removed"];
    assert_eq!((removed["subjects"].as_u64(), removed["face_samples"].as_u64()), (Some(1), Some(1)), "{summary}");
    assert_eq!((removed["images"].as_u64(), removed["credentials"].as_u64()), (Some(1), Some(3)), "{summary}");
    assert!(!images.join(a_id).exists(), "the tenant's image folder is gone");
    assert_eq!(facegate_testkit::files_under(&images.join(b["id"].as_str().expect("id"))).len(), 1);
    let listed = run_json(&mut tenant(&["list"], data));
    assert_eq!(
        listed.as_array().map(|l| l.iter().map(|t| t["name"].clone()).collect::<Vec<_>>()),
        Some(vec![Value::from("b")])
    );
    let again = tenant(&["delete", "a", "--yes"], data).output().expect("run");
    assert!(!again.status.success(), "an unknown tenant is an error");

    let events = audit_events(data);
    let deleted: Vec<_> = events.iter().filter(|e| e["fields"]["action"] == "delete_tenant").collect();
    assert_eq!(deleted.len(), 1, "{events:?}");
    assert_eq!((&deleted[0]["fields"]["tenant"], &deleted[0]["fields"]["tenant_id"]), (&Value::from("a"), &a["id"]));
    assert!(deleted[0]["fields"]["output"].as_str().is_some_and(|o| o.contains("subjects=1 face_samples=1 images=1")));

    let server = serve(data);
    assert_eq!(miicloud_status(&server, &a, "/miicloud/person/yao"), 401, "the deleted tenant's token opens nothing");
    assert_eq!(miicloud_status(&server, &b, "/miicloud/person/yao"), 200, "the other tenant keeps its person");
}

#[test]
fn a_direct_import_writes_the_audit_lines_the_server_would() {
    let photos = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let person = photos.path().join("yao");
    std::fs::create_dir_all(&person).expect("mkdir");
    std::fs::write(person.join("yao_1.jpg"), yao()).expect("copy");
    std::fs::write(person.join("yao_2.jpg"), yao()).expect("copy");
    let out = facegate()
        .arg("import")
        .arg(photos.path())
        .args(["--tenant", "acme", "--inference-workers", "2", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The same enrollments through a server, for the lines to compare with.
    let served = tempfile::tempdir().expect("tempdir");
    let creds = run_json(&mut tenant(&["create", "acme"], served.path()));
    let mut server = serve(served.path());
    let auth = format!("Token {}", creds["token"].as_str().expect("token"));
    for (method, path) in [("POST", "/miicloud/person"), ("PUT", "/miicloud/person/yao")] {
        let (content_type, body) =
            multipart(&[("customer_person_id", "yao")], Some(("image_path", "yao_1.jpg", &yao())));
        let headers = [("Authorization", auth.as_str()), ("Content-Type", content_type.as_str())];
        let (status, answer) = http(&server.addr, method, path, &headers, &body);
        assert_eq!(status, 200, "{method} {path}: {answer}");
    }
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.logs());

    let imported = audit_events(data.path());
    let by_server = audit_events(served.path());
    assert_eq!(actions(&imported), actions(&by_server), "imported: {imported:?}\nserved: {by_server:?}");
    assert_eq!(actions(&imported).len(), 2);
    for (i, s) in imported.iter().zip(&by_server) {
        let keys = |e: &Value| e["fields"].as_object().map(|f| f.keys().cloned().collect::<Vec<_>>());
        assert_eq!(keys(i), keys(s), "the same fields");
        assert_eq!((&i["target"], &i["fields"]["outcome"]), (&s["target"], &s["fields"]["outcome"]));
        assert_eq!(
            (&i["fields"]["input"], &s["fields"]["input"]),
            (&Value::from("customer_id=yao"), &s["fields"]["input"])
        );
    }
}

#[test]
fn sighup_reopens_the_audit_log_for_logrotate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let server = SandboxServer::start(data);
    let auth = format!("Token {}", common::SANDBOX_TOKEN);
    let delete = |id: &str| {
        let (status, _) =
            http(&server.addr, "DELETE", &format!("/miicloud/person/{id}"), &[("Authorization", auth.as_str())], &[]);
        assert_eq!(status, 404, "an audited refusal");
    };
    delete("before-rotation");
    std::fs::rename(data.join("audit.log"), data.join("audit.log.1")).expect("rotate");
    let hup = Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().expect("kill");
    assert!(hup.success());
    let started = Instant::now();
    while !server.logs().contains("reopened the audit log") {
        assert!(started.elapsed() < Duration::from_secs(10), "never reopened: {}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    delete("after-rotation");
    assert_eq!(server.get("/readyz", None).lines().next(), Some("HTTP/1.1 200 OK"), "SIGHUP did not stop the server");

    let old = std::fs::read_to_string(data.join("audit.log.1")).expect("old file");
    let new = std::fs::read_to_string(data.join("audit.log")).expect("a new audit.log");
    assert_eq!(old.lines().count(), 1, "{old}");
    assert!(old.contains("before-rotation") && !old.contains("after-rotation"), "{old}");
    assert_eq!(new.lines().count(), 1, "{new}");
    assert!(new.contains("after-rotation"), "{new}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("audit.log")).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the new file is private too");
}

/// With the bulk source in a shared folder outside the data directory (`--bulk-source`, as
/// docs/deployment.md sets up), `tenant delete` removes the tenant's folder there too (or keeps
/// it when told), and `tenant create` refuses a name whose folder still holds files, unless
/// told they are the new tenant's: a re-created tenant never bulk-registers a deleted one's photos.
#[test]
fn a_deleted_tenants_shared_bulk_folder_goes_with_it_and_a_new_namesake_is_warned() {
    let data = tempfile::tempdir().expect("tempdir");
    let shared = tempfile::tempdir().expect("tempdir");
    let data = data.path();
    let source = shared.path().to_str().expect("utf-8 path").to_owned();
    let stage = |name: &str| {
        std::fs::create_dir_all(shared.path().join(name).join("sub")).expect("mkdir");
        std::fs::write(shared.path().join(name).join("sub/staged.jpg"), yao()).expect("stage");
    };

    run_json(&mut tenant(&["create", "acme", "--bulk-source", &source], data));
    stage("acme");
    stage("other");
    let summary = run_json(&mut tenant(&["delete", "acme", "--yes", "--bulk-source", &source], data));
    assert_eq!(summary["bulk_source_folder_removed"], true, "{summary}");
    assert_eq!(summary["bulk_source_files_removed"], 1, "{summary}");
    assert!(!shared.path().join("acme").exists(), "the deleted tenant's folder is gone");
    assert!(shared.path().join("other/sub/staged.jpg").is_file(), "another tenant's folder stays");
    run_json(&mut tenant(&["create", "acme", "--bulk-source", &source], data));

    // Files left in a name's folder: refused, unless adopted. The environment names the source
    // as well as the flag does.
    stage("globex");
    let refused = tenant(&["create", "globex"], data).env("FACEGATE_BULK_SOURCE", &source).output().expect("run");
    assert!(!refused.status.success(), "a name whose bulk folder holds files is refused");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("already holds files") && stderr.contains("--adopt-bulk-folder"), "{stderr}");
    let listed = run_json(&mut tenant(&["list"], data));
    assert!(!listed.to_string().contains("globex"), "nothing was created: {listed}");
    run_json(&mut tenant(&["create", "globex", "--adopt-bulk-folder", "--bulk-source", &source], data));

    // Kept on request, and then a namesake is refused again.
    let summary =
        run_json(&mut tenant(&["delete", "globex", "--yes", "--keep-bulk-folder", "--bulk-source", &source], data));
    assert_eq!(summary["bulk_source_folder_removed"], false, "{summary}");
    assert!(shared.path().join("globex/sub/staged.jpg").is_file());
    let refused = tenant(&["create", "globex", "--bulk-source", &source], data).output().expect("run");
    assert!(!refused.status.success());
}
