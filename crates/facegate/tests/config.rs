//! One configuration for every command: a TOML file given with `--config`, under environment
//! variables, under flags, run as a real process.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{facegate, SandboxServer, SANDBOX_TOKEN};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run facegate")
}

fn stdout_of(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("facegate.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The names of the tenants `tenant list` prints.
fn tenant_names(out: &Output) -> Vec<String> {
    let listed: Value = serde_json::from_str(&stdout_of(out)).expect("json");
    listed.as_array().expect("array").iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect()
}

#[test]
fn tenant_commands_take_the_data_dir_from_the_file_under_variables_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let from_file = dir.path().join("from-file");
    let config = write_config(dir.path(), &format!("data_dir = {:?}\n", from_file.to_str().expect("utf-8 path")));

    stdout_of(&run(facegate().args(["tenant", "create", "acme", "--config"]).arg(&config)));
    assert!(from_file.join("facegate.db").is_file(), "the tenant went to the file's data_dir");
    // The global flag also goes before the command, and FACEGATE_CONFIG names the file too.
    assert_eq!(tenant_names(&run(facegate().arg("--config").arg(&config).args(["tenant", "list"]))), ["acme"]);
    assert_eq!(tenant_names(&run(facegate().args(["tenant", "list"]).env("FACEGATE_CONFIG", &config))), ["acme"]);

    // A variable beats the file, a flag beats both.
    let from_env = dir.path().join("from-env");
    let listed = run(facegate().args(["tenant", "list", "--config"]).arg(&config).env("FACEGATE_DATA_DIR", &from_env));
    assert!(tenant_names(&listed).is_empty());
    assert!(from_env.join("facegate.db").is_file());
    let from_flag = dir.path().join("from-flag");
    let listed = run(facegate()
        .args(["tenant", "list", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&from_flag)
        .env("FACEGATE_DATA_DIR", &from_env));
    assert!(tenant_names(&listed).is_empty());
    assert!(from_flag.join("facegate.db").is_file());
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "data_dir = \"data\"\nknown_treshold = 8000\n");
    for args in [&["tenant", "list"][..], &["serve"], &["keys", "generate"]] {
        let out = run(facegate().args(args).arg("--config").arg(&config));
        assert!(!out.status.success(), "{args:?} accepted a misspelt key");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("known_treshold") && err.contains("facegate.toml"), "{args:?}: {err}");
    }
}

/// `sandbox = true` in the file is refused on a public address; a flag or a variable set to
/// false turns it off, so the same file then gets as far as loading the (missing) models.
#[test]
fn a_flag_or_variable_turns_off_the_files_sandbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &format!(
            "sandbox = true\nlisten = \"0.0.0.0:0\"\nmodel_dir = \"/nonexistent/pack\"\ndata_dir = {:?}\n",
            data.to_str().expect("utf-8 path")
        ),
    );
    let serve = || {
        let mut cmd = facegate();
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    };
    let refused = run(&mut serve());
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("loopback"), "{refused:?}");
    for out in [run(serve().env("FACEGATE_SANDBOX", "false")), run(serve().arg("--sandbox=false"))] {
        assert!(!out.status.success(), "the models are missing");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("loopback") && err.contains("/nonexistent/pack"), "{err}");
    }
}

/// The same with a server that starts: the sandbox token the file's `sandbox = true` would
/// create is refused when `FACEGATE_SANDBOX=false`.
#[test]
fn a_served_file_sandbox_is_off_under_a_false_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config =
        write_config(dir.path(), &format!("sandbox = true\ndata_dir = {:?}\n", data.to_str().expect("utf-8 path")));
    let server = SandboxServer::spawn(&["--config".into(), config.into()], &[("FACEGATE_SANDBOX", "false")]);
    let answer = server.get("/miicloud/person/nobody", Some(&format!("Token {SANDBOX_TOKEN}")));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(data.join("audit.log").is_file(), "the server used the file's data_dir");
}

/// `keys rotate` finds the gallery and its current key in the file: the configured key is the
/// old key, except when it already is the new one (the configuration was switched first).
#[test]
fn keys_rotate_takes_the_gallery_and_its_key_from_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let key = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, stdout_of(&run(facegate().args(["keys", "generate"])))).expect("write key");
        path
    };
    let (first, second) = (key("first.key"), key("second.key"));
    let config_with =
        |key: &Path| write_config(dir.path(), &format!("data_dir = {:?}\nencryption_key_file = {:?}\n", data, key));
    let rotate = |config: &Path, new: &Path| {
        run(facegate().args(["keys", "rotate", "--config"]).arg(config).arg("--new-key-file").arg(new))
    };

    // A plaintext gallery, with the configuration already naming the key it is to get.
    stdout_of(&run(facegate().args(["tenant", "create", "acme", "--data-dir"]).arg(&data)));
    let config = config_with(&first);
    stdout_of(&rotate(&config, &first));
    assert_eq!(tenant_names(&run(facegate().args(["tenant", "list", "--config"]).arg(&config))), ["acme"]);
    // Then on to a second key, the file still naming the first as the current one.
    stdout_of(&rotate(&config, &second));
    let stale = run(facegate().args(["tenant", "list", "--config"]).arg(config_with(&first)));
    assert!(!stale.status.success(), "the gallery is no longer under the first key");
    let listed = run(facegate().args(["tenant", "list", "--config"]).arg(config_with(&second)));
    assert_eq!(tenant_names(&listed), ["acme"]);
}
