//! The published contract, enforced: schemathesis generates requests from the three OpenAPI
//! documents the live server publishes (`/openapi/miicloud.json`, `/openapi/necid.json`, and
//! facegate's own `/openapi/facegate.json`) and
//! checks every answer against them: no 5xx, and each response a status, media type and body
//! shape the document lists. The run is `tests/python/schemathesis_run.py`, with a fixed seed and
//! a bounded number of examples per operation, so that it repeats and fits the test budget.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{facegate, root, SandboxServer};

/// The seed the run is pinned to; a failure it finds is found again by the same command.
const SEED: &str = "16";
/// Examples per operation and phase: enough to reach each operation's validation paths, few
/// enough that both documents run in about a minute on two cores.
const MAX_EXAMPLES: &str = "10";

/// The document at `path` on `server`, once it is served as OpenAPI 3.1 JSON.
fn served_document(server: &SandboxServer, path: &str) -> Value {
    let answer = server.get(path, None);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: expected the OpenAPI document, got\n{head}");
    let doc: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}):\n{body}"));
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "GET {path}: openapi is {:?}, expected 3.1.x", doc["openapi"]);
    doc
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_outside_the_documents() {
    let Some(mut python) = facegate_testkit::python_with(&["schemathesis", "botocore", "requests"]) else { return };

    // A fresh tenant: its miiCloud token and its NEC ID key and SigV4 credentials, as printed once
    // by `tenant create`. The server is not in sandbox mode, so these are the only credentials.
    let dir = tempfile::tempdir().expect("tempdir");
    let out =
        facegate().args(["tenant", "create", "schemathesis", "--data-dir"]).arg(dir.path()).output().expect("run");
    assert!(out.status.success(), "tenant create: {}", String::from_utf8_lossy(&out.stderr));
    let tenant: Value = serde_json::from_slice(&out.stdout).expect("tenant create prints JSON");
    let credential = |name: &str| tenant[name].as_str().unwrap_or_else(|| panic!("no {name} in {tenant}")).to_owned();
    // Opted in, so that the unknown-people routes keep and answer something.
    let out = facegate()
        .args(["tenant", "set", "schemathesis", "--unknown-faces", "on", "--unknown-retention", "1d", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "tenant set: {}", String::from_utf8_lossy(&out.stderr));

    let args: Vec<OsString> = vec!["--data-dir".into(), dir.path().into()];
    let server = SandboxServer::spawn(&args, &[]);
    // Served, and OpenAPI 3.1, before schemathesis is pointed at them: a missing document is then
    // named as such rather than as a schemathesis load error.
    for path in ["/openapi/miicloud.json", "/openapi/necid.json", "/openapi/facegate.json"] {
        served_document(&server, path);
    }

    let base = server.url();
    let started = std::time::Instant::now();
    let out = facegate_testkit::output_within(
        python
            .arg(root().join("tests/python/schemathesis_run.py"))
            .args(["--base-url", &base])
            .args(["--spec-miicloud", &format!("{base}/openapi/miicloud.json")])
            .args(["--spec-necid", &format!("{base}/openapi/necid.json")])
            .args(["--spec-native", &format!("{base}/openapi/facegate.json")])
            .args(["--token", &credential("token")])
            .args(["--api-key", &credential("api_key")])
            .args(["--access-key-id", &credential("access_key_id")])
            .args(["--secret-access-key", &credential("secret_access_key")])
            .args(["--region", "ap-southeast-2"])
            .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
            .current_dir(root()),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {SEED}); rerun the same command to reproduce\n{stdout}\n{stderr}\n\
         --- server log ---\n{}",
        server.logs()
    );
    // Every document ran to the end: a harness that ran none would also exit 0.
    for name in ["miiCloud", "NEC ID v1.1", "facegate (unknown people)"] {
        assert!(stdout.contains(&format!("{name}: passed")), "{name} did not run:\n{stdout}\n{stderr}");
    }
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "the server panicked under schemathesis:\n{logs}");
    eprintln!("schemathesis: the three documents passed in {:?}", started.elapsed());
}
