//! Several `facegate serve` processes over one PostgreSQL database (a throwaway cluster from
//! `scripts/postgres`): a write on one node is found on the others within a second, a delete is
//! gone everywhere, a restarted node catches up, and a node killed in the middle of a bulk job
//! leaves its records to the others, with every file registered exactly once.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use facegate_testkit::PgCluster;
use serde_json::{json, Value};

mod common;
use common::{bulk_records, http, match_faces, multipart, nec, root, tenant_create, SandboxServer, SANDBOX_TOKEN};

fn yao() -> Vec<u8> {
    std::fs::read(root().join(".facegate/models/buffalo_s/yaoming.jpg")).expect("pack photo: run scripts/setup")
}

fn auth() -> String {
    format!("Token {SANDBOX_TOKEN}")
}

/// `facegate serve --sandbox` on the shared database, with its own data directory (audit log)
/// and the shared bulk bucket.
fn node(url: &str, data: &Path, bucket: &Path, extra: &[&str]) -> SandboxServer {
    let mut args: Vec<OsString> = vec![
        "--sandbox".into(),
        "--database-url".into(),
        url.into(),
        "--data-dir".into(),
        data.into(),
        "--bulk-source".into(),
        bucket.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    SandboxServer::spawn(&args, &[])
}

fn enroll(node: &SandboxServer, customer_person_id: &str) {
    let (content_type, body) =
        multipart(&[("customer_person_id", customer_person_id)], Some(("image_path", "yao.jpg", &yao())));
    let auth = auth();
    let (status, answer) = http(
        &node.addr,
        "POST",
        "/miicloud/person",
        &[("Authorization", &auth), ("Content-Type", &content_type)],
        &body,
    );
    assert_eq!(status, 200, "{answer}");
}

/// The match status of the photo's face on `node`: "known" or "unknown".
fn match_status(node: &SandboxServer) -> String {
    match_faces(node, &yao(), &[])["faces"][0]["match_status"].as_str().unwrap_or_default().to_owned()
}

/// How long until `node` answers `want`, at most `limit`.
fn until(node: &SandboxServer, want: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if match_status(node) == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "node {} never answered {want} within {limit:?}", node.addr);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_nodes_serve_one_gallery() {
    let Some(pg) = PgCluster::start() else { return };
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let bucket = dirs[3].path();
    let mut nodes: Vec<SandboxServer> = (0..3).map(|i| node(pg.url(), dirs[i].path(), bucket, &[])).collect();

    // A write on node 1 is found on nodes 2 and 3 within a second.
    enroll(&nodes[0], "yao");
    assert_eq!(match_status(&nodes[0]), "known", "the writer sees its own write at once");
    for n in &nodes[1..] {
        let took = until(n, "known", Duration::from_secs(1));
        eprintln!("visible on {} after {took:?}", n.addr);
    }
    // A delete on node 2 is gone everywhere.
    let auth = auth();
    let (status, answer) = http(&nodes[1].addr, "DELETE", "/miicloud/person/yao", &[("Authorization", &auth)], &[]);
    assert_eq!(status, 200, "{answer}");
    for n in [&nodes[0], &nodes[2]] {
        until(n, "unknown", Duration::from_secs(1));
    }

    // A node that was down while others wrote catches up when it comes back.
    nodes[2].terminate();
    assert!(nodes[2].wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    enroll(&nodes[0], "yao-again");
    let restarted = node(pg.url(), dirs[2].path(), bucket, &[]);
    assert_eq!(match_status(&restarted), "known", "the restarted node loaded the write it missed");
    let (status, _) = http(&nodes[1].addr, "DELETE", "/miicloud/person/yao-again", &[("Authorization", &auth)], &[]);
    assert_eq!(status, 200);
    until(&restarted, "unknown", Duration::from_secs(1));
    nodes[2] = restarted;

    // The NEC ID dialect, whose search answers from each node's index alone: subjects, tags and
    // their renames travel between nodes too.
    let creds = tenant_create(pg.url(), "nec-app");
    let face = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, yao());
    let (status, body) = nec(&nodes[0].addr, &creds, "POST", "/v1.1/tags/vip", None);
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        nec(&nodes[0].addr, &creds, "POST", "/v1.1/subjects", Some(&json!({"face": face, "tags": ["vip"]})));
    assert_eq!(status, 201, "{body}");
    let subject = body["id"].as_str().expect("id").to_owned();
    let search = |node: &SandboxServer, tag: &str| {
        let (status, body) =
            nec(&node.addr, &creds, "POST", "/v1.1/face/search", Some(&json!({"probe": face, "tags": [tag]})));
        (status, body["candidates"][0]["id"].as_str().unwrap_or_default().to_owned())
    };
    let within = |node: &SandboxServer, tag: &str, want: (u16, &str)| {
        let started = Instant::now();
        loop {
            let (status, id) = search(node, tag);
            if (status, id.as_str()) == want {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(1), "{} answered {status} {id}, not {want:?}", node.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for n in &nodes[1..] {
        within(n, "vip", (200, &subject));
    }
    let (status, body) = nec(&nodes[1].addr, &creds, "PUT", "/v1.1/tags/vip", Some(&json!({"newName": "gold"})));
    assert_eq!(status, 200, "{body}");
    within(&nodes[2], "gold", (200, &subject));
    let (status, body) = nec(&nodes[2].addr, &creds, "DELETE", &format!("/v1.1/subjects/{subject}"), None);
    assert_eq!(status, 204, "{body}");
    for n in &nodes[..2] {
        within(n, "gold", (404, ""));
    }
}

fn processed(records: &Value) -> usize {
    records.as_array().map_or(0, |r| r.iter().filter(|r| r["status"] == "Processed").count())
}

#[test]
fn a_node_killed_mid_bulk_job_leaves_its_records_to_the_others() {
    let Some(pg) = PgCluster::start() else { return };
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let bucket = dirs[3].path();
    let creds = tenant_create(pg.url(), "bulk");

    // Several hundred files: good photos and a few that fail.
    let area = bucket.join("bulk");
    std::fs::create_dir_all(&area).expect("area");
    let good = 240;
    for i in 0..good {
        std::fs::write(area.join(format!("{i}.jpg")), yao()).expect("write");
    }
    std::fs::write(area.join("notes.jpg"), b"not an image").expect("write");
    let mut entries: Vec<Value> = (0..good).map(|i| json!({"filename": format!("{i}.jpg")})).collect();
    entries.push(json!({"filename": "notes.jpg"}));
    entries.push(json!({"filename": "missing.jpg"}));
    let total = entries.len();

    // A short lease, so that the dead node's records are taken over within the test.
    let lease = ["--bulk-claim-lease-secs", "5"];
    let mut nodes: Vec<SandboxServer> = (0..3).map(|i| node(pg.url(), dirs[i].path(), bucket, &lease)).collect();
    let (status, job) =
        nec(&nodes[0].addr, &creds, "POST", "/v1.1/jobs/bulkregister", Some(&json!({"registrations": entries})));
    assert_eq!(status, 200, "{job}");
    let batch = job["batchId"].as_str().expect("batchId").to_owned();

    // Kill node 3 once the job is under way.
    let started = Instant::now();
    while processed(&Value::Array(bulk_records(&nodes[1].addr, &creds, &batch))) < 20 {
        assert!(started.elapsed() < Duration::from_secs(120), "the job never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    nodes[2].kill();
    let done_at_kill = processed(&Value::Array(bulk_records(&nodes[1].addr, &creds, &batch)));
    assert!(done_at_kill < total, "the job finished before the kill");

    // The others finish it.
    let all = loop {
        let all = bulk_records(&nodes[0].addr, &creds, &batch);
        if processed(&Value::Array(all.clone())) == total {
            break all;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the job never finished");
        std::thread::sleep(Duration::from_millis(250));
    };
    let succeeded: Vec<&Value> = all.iter().filter(|r| r["registerStatus"] == "Success").collect();
    assert_eq!(succeeded.len(), good, "every good file registered");
    for bad in ["notes.jpg", "missing.jpg"] {
        let record = all.iter().find(|r| r["filename"] == bad).expect("record");
        assert_eq!(record["registerStatus"], "Failed", "{record}");
    }
    // Exactly once: one subject per successful record, each the record's own.
    let mut db = postgres::Client::connect(pg.url(), postgres::NoTls).expect("connect");
    let tenant_id = creds["id"].as_str().expect("id");
    let subjects: i64 =
        db.query_one("SELECT COUNT(*) FROM subjects WHERE tenant_id = $1", &[&tenant_id]).expect("count").get(0);
    let samples: i64 =
        db.query_one("SELECT COUNT(*) FROM face_samples WHERE tenant_id = $1", &[&tenant_id]).expect("count").get(0);
    assert_eq!((subjects, samples), (good as i64, good as i64), "a file registered twice, or lost");
    for record in succeeded {
        let id = record["subjectId"].as_str().expect("subjectId");
        let found = db.query_opt("SELECT 1 FROM subjects WHERE id = $1", &[&id]).expect("query");
        assert!(found.is_some(), "{record}");
    }
    eprintln!("{done_at_kill} of {total} records were processed when node 3 was killed");
}

/// One signed NEC ID write, sent byte for byte to two nodes of one database, creates one subject:
/// the second node refuses it as a replay, and so does the first after a restart.
#[test]
fn a_signed_write_is_carried_out_once_on_any_node_and_after_a_restart() {
    let Some(pg) = PgCluster::start() else { return };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let bucket = dirs[2].path();
    let mut nodes: Vec<SandboxServer> = (0..2).map(|i| node(pg.url(), dirs[i].path(), bucket, &[])).collect();
    let creds = tenant_create(pg.url(), "replayed");
    let key = |name: &str| creds[name].as_str().expect("credential").to_owned();
    let face = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, yao());
    let body = json!({"face": face}).to_string().into_bytes();
    // Signed once, for `Host: x` (what `common::http` sends), then sent as is.
    let headers = facegate_testkit::nec_headers(
        "POST",
        "x",
        "/v1.1/subjects",
        &body,
        &key("api_key"),
        &key("access_key_id"),
        &key("secret_access_key"),
    );
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let send = |node: &SandboxServer| http(&node.addr, "POST", "/v1.1/subjects", &headers, &body);

    let (status, answer) = send(&nodes[0]);
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = send(&nodes[1]);
    assert_eq!(status, 403, "the second node refuses the replay: {answer}");
    assert!(answer.contains("already accepted"), "{answer}");
    nodes[0].terminate();
    assert!(nodes[0].wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    nodes[0] = node(pg.url(), dirs[0].path(), bucket, &[]);
    let (status, answer) = send(&nodes[0]);
    assert_eq!(status, 403, "the restarted node refuses the replay: {answer}");

    let mut db = postgres::Client::connect(pg.url(), postgres::NoTls).expect("connect");
    let tenant_id = creds["id"].as_str().expect("id");
    let subjects: i64 =
        db.query_one("SELECT COUNT(*) FROM subjects WHERE tenant_id = $1", &[&tenant_id]).expect("count").get(0);
    assert_eq!(subjects, 1, "one signed write, one subject");
}

/// A free loopback port for a node's metrics listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `facegate_templates{tenant_id=…}` leaves every node's /metrics once the tenant is deleted.
#[test]
fn every_node_drops_a_deleted_tenants_gauge() {
    let Some(pg) = PgCluster::start() else { return };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let bucket = dirs[2].path();
    let metrics: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let nodes: Vec<SandboxServer> =
        (0..2).map(|i| node(pg.url(), dirs[i].path(), bucket, &["--metrics-listen", &metrics[i]])).collect();
    let creds = tenant_create(pg.url(), "gone-soon");
    let tenant_id = creds["id"].as_str().expect("id").to_owned();
    let face = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, yao());
    let (status, body) = nec(&nodes[0].addr, &creds, "POST", "/v1.1/subjects", Some(&json!({"face": face})));
    assert_eq!(status, 201, "{body}");
    let series = format!("facegate_templates{{tenant_id=\"{tenant_id}\"}}");
    let scrape = |at: &str| http(at, "GET", "/metrics", &[], &[]).1;
    let within = |at: &str, line: &str, want: bool| {
        let started = Instant::now();
        loop {
            let page = scrape(at);
            if page.contains(line) == want {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{at}: {line} present = {}:\n{page}", !want);
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // One template on every node, once the change log has reached it.
    for at in &metrics {
        within(at, &format!("{series} 1"), true);
    }
    let out = common::facegate()
        .args(["tenant", "delete", "gone-soon", "--yes", "--database-url", pg.url(), "--data-dir"])
        .arg(dirs[0].path())
        .output()
        .expect("tenant delete");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The gauge is read afresh for each page, so the series is gone from the next one after
    // the delete reached the node, and never comes back.
    for at in &metrics {
        within(at, &series, false);
    }
    std::thread::sleep(Duration::from_millis(1500));
    for at in &metrics {
        assert!(!scrape(at).contains(&series), "{at} shows the deleted tenant again");
    }
    drop(nodes);
}
