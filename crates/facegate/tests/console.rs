//! The web console in a real browser: `tests/python/console_browser.py` drives headless Chromium
//! (Debian's `chromium` and `chromium-driver`, which `scripts/setup-test-tools` installs) through
//! Selenium against `facegate serve --sandbox`: it signs in, checks the boxes drawn on
//! players.jpg against the API's face count, enrolls a face, finds that person with another of
//! their photos, and deletes them. The sandbox tenant keeps unknown faces (`facegate tenant set`
//! beside the server), so the script's 1:N searches with photos of people nobody enrolled leave
//! unknown people, which the Unknown people page shows with their crops, merges, promotes and
//! deletes. With `FACEGATE_CONSOLE_SCREENSHOTS=DIR` it also saves the main screens there
//! (`docs/console/` holds the committed ones).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{facegate, root, SandboxServer, SANDBOX_TOKEN};

/// Debian's browser and its driver, given to Selenium by path so that it never fetches one.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The faceapi identity whose two photos the test enrolls and searches with, and the others it
/// enrolls for the screenshots.
const PERSON: &str = "amy";
const OTHERS: [&str; 7] = ["bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart"];

/// Photos of people nobody has enrolled when the script searches with them: two of one person,
/// to be kept as one unknown person, and one each of two more, for a merge, a promotion and a
/// deletion.
const UNKNOWN: [(&str, u32); 4] = [("howard", 2), ("howard", 4), ("raj", 2), ("sheldon", 2)];

/// The tenant `serve --sandbox` creates.
const SANDBOX_TENANT: &str = "sandbox";

#[test]
fn the_console_detects_enrolls_finds_and_deletes_in_a_real_browser() {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(tool).is_file() {
            facegate_testkit::skip(&format!(
                "{tool} is missing: `make test` installs Debian's chromium and chromium-driver (scripts/setup-test-tools)"
            ));
            return;
        }
    }
    let players = root().join(".facegate/models/buffalo_s/players.jpg");
    if !players.is_file() {
        facegate_testkit::skip(&format!("{} is missing: run `make setup`", players.display()));
        return;
    }
    let Some(datasets) = facegate_testkit::shared_datasets() else { return };
    let identities = datasets.join("faceapi/identities");
    let photo = |who: &str, n: u32| identities.join(who).join(format!("{who}{n}.png"));
    let Some(mut command) = facegate_testkit::python_with(&["selenium", "requests"]) else { return };

    let data = tempfile::tempdir().expect("tempdir");
    let server = SandboxServer::start(data.path());
    // Beside the running server, as an operator would: each search reads the setting.
    let opted_in = facegate()
        .args(["tenant", "set", SANDBOX_TENANT, "--unknown-faces", "on", "--unknown-retention", "1d", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("facegate tenant set");
    assert!(opted_in.status.success(), "tenant set: {}", String::from_utf8_lossy(&opted_in.stderr));
    command
        .arg(root().join("tests/python/console_browser.py"))
        .args([
            "--url",
            &server.url(),
            "--token",
            SANDBOX_TOKEN,
            "--chromium",
            CHROMIUM,
            "--chromedriver",
            CHROMEDRIVER,
        ])
        .arg("--group")
        .arg(&players)
        .arg("--enroll")
        .arg(photo(PERSON, 1))
        .arg("--probe")
        .arg(photo(PERSON, 3))
        .current_dir(root());
    for (who, n) in UNKNOWN {
        command.arg("--unknown").arg(photo(who, n));
    }
    if let Some(dir) = std::env::var_os("FACEGATE_CONSOLE_SCREENSHOTS") {
        command.arg("--screenshots").arg(root().join(dir));
        for other in OTHERS {
            command.arg("--extra").arg(photo(other, 1));
        }
    }
    // A normal run takes about 15 s; the rest is room for a loaded machine.
    let out = facegate_testkit::output_within(&mut command, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}\nserver log:\n{}", server.logs());
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary json");
    let faces = summary["faces_api"].as_u64().unwrap_or(0);
    assert!(faces >= 15, "players.jpg has about 20 faces: {summary}");
    assert_eq!(summary["faces_drawn"], summary["faces_api"], "{summary}");
    assert_eq!(summary["match"]["verdict"], "Known", "{summary}");
    assert_eq!(summary["deleted"], true, "{summary}");
    let unknown = &summary["unknown"];
    assert_eq!(unknown["sightings"], UNKNOWN.len(), "one face per photo is kept: {summary}");
    assert_eq!(unknown["groups"], 3, "howard's two photos are one unknown person: {summary}");
    assert_eq!(unknown["largest"], 2, "{summary}");
    assert!(unknown["merged"].as_u64().unwrap_or(0) >= 2, "{summary}");
    assert_eq!(unknown["left"], 0, "{summary}");
}
