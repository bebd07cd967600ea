//! `facegate import`: bulk enrollment from person folders or a CSV list, resumable, run as a
//! real process against the model pack's sample photos.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{facegate, root, SandboxServer, SANDBOX_TOKEN};

fn sample_photo(name: &str) -> PathBuf {
    root().join(".facegate/models/buffalo_s").join(name)
}

/// Runs `facegate import` with `args` into `data_dir`, expecting success, and returns its JSON
/// summary.
fn import(args: &[&str], data_dir: &Path) -> Value {
    let mut cmd = facegate();
    cmd.arg("import").args(args).arg("--data-dir").arg(data_dir).args(["--inference-workers", "2"]);
    summary_of(&mut cmd)
}

fn summary_of(cmd: &mut Command) -> Value {
    let out = cmd.arg("--json").output().expect("run facegate");
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON summary")
}

/// `yao/` with two photos, `gdp/` with one, `bad/` with a text file named like a photo and
/// `blank/` with an all-grey picture.
fn person_folders(base: &Path) {
    let folder = |name: &str| {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    };
    let yao = folder("yao");
    std::fs::copy(sample_photo("yaoming.jpg"), yao.join("yao_1.jpg")).expect("copy");
    std::fs::copy(sample_photo("yaoming.jpg"), yao.join("yao_2.jpg")).expect("copy");
    std::fs::copy(sample_photo("gdp.jpg"), folder("gdp").join("gdp.jpg")).expect("copy");
    std::fs::write(folder("bad").join("bad.jpg"), "this is not a photo").expect("write");
    image::RgbImage::from_pixel(160, 160, image::Rgb([128, 128, 128]))
        .save(folder("blank").join("grey.png"))
        .expect("save png");
    // Not an image by its name: ignored, not counted.
    std::fs::write(yao.join("notes.txt"), "ignored").expect("write");
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {summary}"))
}

#[test]
fn person_folders_import_once_and_a_rerun_skips_them() {
    let photos = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    person_folders(photos.path());
    let dir = photos.path().to_str().expect("path");

    let first = import(&[dir, "--tenant", "acme"], data.path());
    assert_eq!(count(&first, "imported"), 3, "{first}");
    assert_eq!(count(&first, "skipped"), 0, "{first}");
    assert_eq!(count(&first, "failed"), 2, "{first}");
    assert_eq!(first["failures"]["no face"], 1, "the grey picture: {first}");
    let failures = first["failures"].as_object().expect("failures");
    assert_eq!(failures.values().filter_map(Value::as_u64).sum::<u64>(), 2, "{first}");
    assert!(first["seconds"].as_f64().is_some() && first["images_per_s"].as_f64().is_some(), "{first}");

    let second = import(&[dir, "--tenant", "acme"], data.path());
    assert_eq!(count(&second, "imported"), 0, "{second}");
    assert_eq!(count(&second, "skipped"), 3, "{second}");
    assert_eq!(count(&second, "failed"), 2, "failures stored nothing and are tried again: {second}");

    // A third photo for an existing person is the only thing a later run adds.
    std::fs::copy(sample_photo("yaoming.jpg"), photos.path().join("yao/yao_3.jpg")).expect("copy");
    let third = import(&[dir, "--tenant", "acme"], data.path());
    assert_eq!((count(&third, "imported"), count(&third, "skipped")), (1, 3), "{third}");

    let tenants = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args(["tenant", "list", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run");
    let tenants: Value = serde_json::from_slice(&tenants.stdout).expect("json");
    assert_eq!(tenants.as_array().map(Vec::len), Some(1), "the tenant was created once: {tenants}");
}

#[test]
fn a_csv_list_imports_with_profiles_and_resumes() {
    let photos = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    person_folders(photos.path());
    let csv = photos.path().join("people.csv");
    std::fs::write(
        &csv,
        "path,customer_person_id,first_name,last_name,email,phone\n\
         yao/yao_1.jpg,p-yao,Yao,Ming,yao@example.com,\n\
         yao/yao_2.jpg,p-yao\n\
         gdp/gdp.jpg,p-gdp\n\
         bad/bad.jpg,p-bad\n\
         missing/nothing.jpg,p-missing\n",
    )
    .expect("write csv");
    let dir = photos.path().to_str().expect("path");
    let csv = csv.to_str().expect("path");

    let first = import(&[dir, "--tenant", "csv", "--csv", csv], data.path());
    assert_eq!(count(&first, "imported"), 3, "{first}");
    assert_eq!(count(&first, "failed"), 2, "{first}");
    assert_eq!(first["failures"]["unreadable file"], 1, "{first}");

    let second = import(&[dir, "--tenant", "csv", "--csv", csv], data.path());
    assert_eq!((count(&second, "imported"), count(&second, "skipped")), (0, 3), "{second}");
}

/// `--url`: the same folders through a running server's miiCloud API, with the same counts and
/// the same resuming, and the people then answer a miiCloud GET.
#[test]
fn import_through_a_running_server_api_resumes_too() {
    let photos = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    person_folders(photos.path());
    let server = SandboxServer::start(data.path());
    let dir = photos.path().to_str().expect("path");
    let url = server.url();
    let over_http = || {
        let mut cmd = facegate();
        cmd.args(["import", dir, "--url", &url, "--concurrency", "3"]).env("FACEGATE_TOKEN", SANDBOX_TOKEN);
        summary_of(&mut cmd)
    };

    let first = over_http();
    assert_eq!((count(&first, "imported"), count(&first, "failed")), (3, 2), "{first}");
    assert_eq!(first["failures"]["no face"], 1, "the grey picture: {first}");
    assert_eq!(first["failures"]["unsupported image"], 1, "the text file: {first}");
    let yao = server.get("/miicloud/person/yao", Some(&format!("Token {SANDBOX_TOKEN}")));
    assert!(yao.starts_with("HTTP/1.1 200") && yao.matches("enroll/yao_").count() == 2, "{yao}");

    let second = over_http();
    assert_eq!((count(&second, "imported"), count(&second, "skipped")), (0, 3), "{second}");

    let refused = facegate()
        .args(["import", dir, "--url", &url, "--token", "not-a-token", "--json"])
        .output()
        .expect("run facegate");
    assert!(!refused.status.success(), "a wrong token stops the import");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"), "{}", String::from_utf8_lossy(&refused.stderr));
}

/// The same into a PostgreSQL gallery (`--database-url`): imported once, skipped on a re-run.
#[test]
fn person_folders_import_into_postgres_and_a_rerun_skips_them() {
    let Some(cluster) = facegate_testkit::PgCluster::start() else { return };
    let photos = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    person_folders(photos.path());
    let dir = photos.path().to_str().expect("path");
    let args = [dir, "--tenant", "acme", "--database-url", cluster.url()];
    let first = import(&args, data.path());
    assert_eq!((count(&first, "imported"), count(&first, "failed")), (3, 2), "{first}");
    let second = import(&args, data.path());
    assert_eq!((count(&second, "imported"), count(&second, "skipped")), (0, 3), "{second}");
}
