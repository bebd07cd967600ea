//! Crash safety: `tests/python/crash_kill9.py` enrolls and deletes with concurrent clients,
//! kills `facegate serve` with SIGKILL at random moments, restarts it, and checks that every
//! acknowledged write survived, `PRAGMA integrity_check` passes, the index agrees with the store
//! and no image file is left without its row. A short run here; the full one (25 cycles) is
//! `PYTHONPATH=.facegate/python python3 -S tests/python/crash_kill9.py target/release/facegate --cycles 25`.

use std::time::Duration;

use serde_json::Value;

mod common;
use common::root;

#[test]
fn acknowledged_writes_survive_sigkill_and_store_index_and_files_agree() {
    run_harness(None);
}

/// The same on PostgreSQL: the server's gallery in a throwaway cluster, read back with psql.
#[test]
fn acknowledged_writes_survive_sigkill_on_postgres() {
    let Some(cluster) = facegate_testkit::PgCluster::start() else { return };
    run_harness(Some(cluster.url()));
}

fn run_harness(database_url: Option<&str>) {
    let Some(mut command) = facegate_testkit::python_with(&["requests", "sqlite3"]) else { return };
    let cycles = 3;
    command
        .arg(root().join("tests/python/crash_kill9.py"))
        .arg(env!("CARGO_BIN_EXE_facegate"))
        .args(["--cycles", &cycles.to_string(), "--clients", "4", "--max-delay", "1.5"])
        .current_dir(root());
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    let out = facegate_testkit::output_within(&mut command, Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary json");
    assert_eq!(summary["cycles"], cycles, "{summary}");
    assert_eq!(summary["violations"], 0, "{summary}");
    assert!(summary["acknowledged_enrolls"].as_u64() > Some(0), "the clients got writes through: {summary}");
    // The kills landed mid-write: some operations had no answer at a kill, and deletes were
    // acknowledged before kills, so both kinds of write were checked after a restart.
    assert!(summary["uncertain_ops"].as_u64() > Some(0), "{summary}");
    assert!(summary["acknowledged_deletes"].as_u64() > Some(0), "{summary}");
    assert_eq!(summary["client_exceptions"], 0, "{summary}");
    // The live index was checked against the store before every kill.
    assert_eq!(summary["live_index_checks"], cycles, "{summary}");
    // Per cycle at least the database, store, index (twice) and image checks ran.
    assert!(summary["checks_passed"].as_u64() >= Some(cycles * 6), "{summary}");
}
