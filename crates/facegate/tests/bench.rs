//! The bench commands' contract: they run, and their JSON carries the documented keys with
//! sane values. Speed itself is measured by hand and written to docs/benchmarks.md, never
//! asserted here.

use serde_json::Value;

mod common;
use common::{facegate, root, SandboxServer, SANDBOX_TOKEN};

fn bench_json(args: &[&str]) -> Value {
    let out = facegate().arg("bench").args(args).arg("--json").output().expect("run facegate bench");
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn sample_photo(name: &str) -> String {
    root().join(".facegate/models/buffalo_s").join(name).to_string_lossy().into_owned()
}

#[test]
fn bench_search_reports_latency_memory_and_recall() {
    // Above the exact-search size, so the two-stage path and its recall are measured.
    let report = bench_json(&["search", "--templates", "40000", "--queries", "60", "--recall-queries", "60"]);
    assert_eq!(report["search"], "two-stage", "{report}");
    for key in ["p50_ms", "p99_ms", "build_s", "recall_at_1", "recall_at_10"] {
        assert!(report[key].as_f64().is_some_and(|v| v >= 0.0), "{key} in {report}");
    }
    assert!(report["vector_bytes"].as_u64().is_some_and(|b| b >= 40_000 * 1024), "{report}");
    // Mated probes sit far inside the candidates: the search must find what exact search finds.
    assert_eq!(report["recall_at_1_mated"], 1.0, "{report}");
    assert!(report["recall_at_1"].as_f64().is_some_and(|r| r >= 0.95), "{report}");
}

#[test]
fn bench_search_measures_the_inverted_lists_when_asked() {
    // Small lists, so that 30,000 templates make a real partition that a search reads part of
    // (about half: at this size the 256 groups of the synthetic gallery outnumber the lists,
    // which is the hard case; docs/benchmarks.md has the figures at the sizes that matter).
    let report = bench_json(&[
        "search",
        "--templates",
        "30000",
        "--dim",
        "128",
        "--index",
        "ivf",
        "--rows-per-list",
        "200",
        "--probes",
        "64",
        "--queries",
        "80",
        "--recall-queries",
        "80",
    ]);
    assert_eq!(report["search"], "ivf", "{report}");
    assert!(report["lists"].as_u64().is_some_and(|l| l > 50), "{report}");
    for key in ["qps", "qps_concurrent", "rebuild_wait_s", "build_s"] {
        assert!(report[key].as_f64().is_some_and(|v| v >= 0.0), "{key} in {report}");
    }
    assert!(report["recall_at_1_mated"].as_f64().is_some_and(|r| r >= 0.9), "{report}");
    assert!(report["recall_at_1_filtered"].as_f64().is_some_and(|r| r >= 0.9), "{report}");
}

#[test]
fn bench_pipeline_reports_stages_and_rates() {
    let photos = [sample_photo("yaoming.jpg"), sample_photo("gdp.jpg")];
    let report = bench_json(&["pipeline", &photos[0], &photos[1], "--rounds", "1", "--inference-workers", "2"]);
    for stage in ["decode", "detect", "align", "embed", "total"] {
        assert!(report["stage_median_ms"][stage].as_f64().is_some_and(|v| v > 0.0), "{stage} in {report}");
    }
    assert!(report["images_per_s"].as_f64().is_some_and(|v| v > 0.0), "{report}");
    assert!(report["faces_per_s"].as_f64().is_some_and(|v| v > 0.0), "{report}");
    assert_eq!(report["workers"], 2);
}

#[test]
fn bench_http_drives_match_faces_and_counts_every_answer() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = SandboxServer::start(data.path());
    let report = bench_json(&[
        "http",
        &sample_photo("yaoming.jpg"),
        "--url",
        &server.url(),
        "--token",
        SANDBOX_TOKEN,
        "--concurrency",
        "1,3",
        "--requests",
        "9",
    ]);
    let levels = report["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 2, "{report}");
    for level in levels {
        assert_eq!(level["requests"], 9, "{level}");
        assert_eq!(level["transport_errors"], 0, "{level}");
        assert_eq!(level["other_status"], 0, "{level}");
        let answered = level["ok"].as_u64().unwrap_or(0) + level["busy_503"].as_u64().unwrap_or(0);
        assert_eq!(answered, 9, "{level}");
        assert!(level["p50_ms"].as_f64().is_some_and(|v| v > 0.0), "{level}");
    }
}
