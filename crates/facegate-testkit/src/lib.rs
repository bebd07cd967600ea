//! What the tests of every facegate crate share: where the workspace and its test tools are, the
//! Python interpreter the harnesses run under, and [`skip`], which makes a test that could not
//! run visible instead of green.
//!
//! A test whose prerequisite is missing (the shared datasets, the harness Python packages) calls
//! [`skip`] and returns. Under CI (`CI=true`) that fails the test: there, a green run must mean
//! that every test ran. Elsewhere the reason is printed past libtest's output capture and
//! appended to a log that `make test` reads back at the end (`scripts/report-skips`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Whether this run is CI's, where a missing prerequisite is an error rather than a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The file that skips are appended to: `FACEGATE_SKIP_LOG`, else `test-skips.log` in the target
/// directory this test binary was built into.
pub fn skip_log() -> PathBuf {
    if let Some(path) = std::env::var_os("FACEGATE_SKIP_LOG") {
        return PathBuf::from(path);
    }
    // A test binary lives at <target>/<profile>/deps/<name>-<hash>.
    let target = std::env::current_exe().ok().and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf));
    target.unwrap_or_else(|| workspace_root().join("target")).join("test-skips.log")
}

/// The running test, as `binary::test_name`: libtest names each test's thread after the test.
fn current_test() -> String {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unknown test").to_owned();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| stem.rsplit_once('-').map_or(stem.clone(), |(name, _hash)| name.to_owned()))
        .unwrap_or_default();
    if binary.is_empty() {
        test
    } else {
        format!("{binary}::{test}")
    }
}

/// Records that the calling test could not run (all or part of it) for `reason`. Under CI this
/// panics, failing the test. Elsewhere it prints the reason where libtest does not hide it and
/// appends `test: reason` to [`skip_log`]; the caller then returns.
pub fn skip(reason: &str) {
    let test = current_test();
    if in_ci() {
        panic!(
            "{test}: a prerequisite is missing under CI (CI=true), so this test fails instead of skipping: {reason}"
        );
    }
    let line = format!("{test}: {}", reason.replace('\n', " "));
    // Straight to the stream: libtest captures `eprintln!` and shows it only for failed tests.
    let _ = writeln!(std::io::stderr().lock(), "\nSKIPPED {line}");
    let log = skip_log();
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write of one line in append mode, so that tests running in parallel do not interleave.
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = appended {
        let _ = writeln!(std::io::stderr().lock(), "could not append to {}: {e}", log.display());
    }
}

/// The shared directory beside the repository (`../shared`), or `FACEGATE_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("FACEGATE_SHARED_DIR").map_or_else(|| workspace_root().join("../shared"), PathBuf::from)
}

/// `<shared>/datasets`, or `None` after [`skip`] when it is absent.
pub fn shared_datasets() -> Option<PathBuf> {
    let dir = shared_dir().join("datasets");
    if dir.is_dir() {
        Some(dir)
    } else {
        skip(&format!("{} is absent: the tests on the shared datasets did not run", dir.display()));
        None
    }
}

/// Where `scripts/setup-test-tools` installs the harnesses' Python packages:
/// `.facegate/python`, or `FACEGATE_PYTHON_DIR`.
pub fn python_dir() -> PathBuf {
    std::env::var_os("FACEGATE_PYTHON_DIR").map_or_else(|| workspace_root().join(".facegate/python"), PathBuf::from)
}

/// `python3 -S` with `PYTHONPATH` set to [`python_dir`] alone. `-S` leaves out the site module,
/// and with it the system's and the user's site-packages: a harness can import only the pinned
/// packages that `make test` installed, never ones that happen to be installed by hand.
pub fn python() -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg("-S").env("PYTHONPATH", python_dir()).env_remove("PYTHONHOME").env("PYTHONNOUSERSITE", "1");
    cmd
}

/// [`python`], once `modules` import under it; `None` after [`skip`] when one does not.
pub fn python_with(modules: &[&str]) -> Option<Command> {
    let imports = format!("import {}", modules.join(", "));
    let probe = python().args(["-c", &imports]).output();
    let failure = match probe {
        Ok(out) if out.status.success() => return Some(python()),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            stderr.lines().last().unwrap_or("no message").to_owned()
        }
        Err(e) => format!("python3 could not be started: {e}"),
    };
    skip(&format!(
        "`python3 -S` with PYTHONPATH={} cannot `{imports}` ({failure}); `make test` installs them \
         (scripts/setup-test-tools)",
        python_dir().display()
    ));
    None
}

/// Runs `cmd` to completion as [`Command::output`] does, with no standard input, but for at most
/// `limit`: past it the process is killed and the test fails with what it printed so far. A
/// harness that hangs then fails in bounded time instead of holding the whole run.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    let drain = |stream: Option<Box<dyn Read + Send>>| {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sink = kept.clone();
        let reader = std::thread::spawn(move || {
            let Some(mut stream) = stream else { return };
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("output buffer").extend_from_slice(&buf[..n]);
            }
        });
        (kept, reader)
    };
    let (stdout, out_reader) = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let (stderr, err_reader) = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let text = |kept: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&kept.lock().expect("output buffer")).into_owned();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} was still running after {limit:?} and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                text(&stdout),
                text(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The pipes close when the process exits, unless it left a child holding them: wait only a
    // little for the rest of its output.
    let until = Instant::now() + Duration::from_secs(5);
    while !(out_reader.is_finished() && err_reader.is_finished()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stdout = stdout.lock().expect("output buffer").clone();
    let stderr = stderr.lock().expect("output buffer").clone();
    Output { status, stdout, stderr }
}

/// Every file under `dir`, recursively, sorted. A `dir` that does not exist holds none (a test
/// that needs it to exist says so); any other error reading the tree fails the test.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("list {}: {e}", d.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("list {}: {e}", d.display())).path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A throwaway PostgreSQL cluster from `scripts/postgres`, stopped and removed on drop.
pub struct PgCluster {
    url: String,
}

impl PgCluster {
    /// Starts a fresh cluster, or records a skip (a failure under CI) and returns `None` when
    /// PostgreSQL cannot be started here.
    pub fn start() -> Option<PgCluster> {
        let script = workspace_root().join("scripts/postgres");
        let out = output_within(Command::new("bash").arg(&script).arg("start"), Duration::from_secs(120));
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && url.starts_with("postgres://") {
            return Some(PgCluster { url });
        }
        skip(&format!(
            "PostgreSQL could not be started (scripts/postgres start): {} {}",
            url,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        None
    }

    /// The cluster's `postgres://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let script = workspace_root().join("scripts/postgres");
        let _ = output_within(Command::new("bash").arg(&script).arg("stop").arg(&self.url), Duration::from_secs(60));
    }
}

/// The headers an NEC ID client adds to a request: `x-api-key`, `content-type`, and the AWS
/// Signature V4 ones (`x-amz-date`, `authorization`, …) for region `ap-southeast-2` and service
/// `execute-api`, signed now, over `host` (the `Host` header the request will carry).
pub fn nec_headers(
    method: &str,
    host: &str,
    path: &str,
    body: &[u8],
    api_key: &str,
    access_key_id: &str,
    secret_access_key: &str,
) -> Vec<(String, String)> {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;

    let identity: Identity = Credentials::new(access_key_id, secret_access_key, None, None, "facegate-tests").into();
    let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region("ap-southeast-2")
        .name("execute-api")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let url = format!("http://{host}{path}");
    let signed = [("host", host), ("x-api-key", api_key), ("content-type", "application/json")];
    let signable =
        SignableRequest::new(method, url, signed.iter().copied(), SignableBody::Bytes(body)).expect("signable");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    let mut headers =
        vec![("x-api-key".to_owned(), api_key.to_owned()), ("content-type".into(), "application/json".into())];
    headers.extend(instructions.headers().map(|(n, v)| (n.to_owned(), v.to_owned())));
    headers
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Set in the child runs of [`skip_fails_under_ci_and_is_logged_elsewhere`].
    const PROBE: &str = "FACEGATE_TESTKIT_SKIP_PROBE";

    /// A test that skips, when run as the probe; otherwise it has nothing to do.
    #[test]
    fn probe_that_skips() {
        if std::env::var_os(PROBE).is_some() {
            super::skip("the probe's prerequisite is missing");
        }
    }

    fn run_probe(ci: &str, log: &std::path::Path) -> std::process::Output {
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "tests::probe_that_skips", "--test-threads", "1"])
            .env(PROBE, "1")
            .env("CI", ci)
            .env("FACEGATE_SKIP_LOG", log)
            .output()
            .expect("run the probe")
    }

    #[test]
    fn skip_fails_under_ci_and_is_logged_elsewhere() {
        let dir = std::env::temp_dir().join(format!("facegate-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("skips.log");

        for ci in ["true", "1", "TRUE"] {
            let out = run_probe(ci, &log);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(!out.status.success(), "CI={ci}: a skip must fail the test\n{stdout}");
            assert!(stdout.contains("prerequisite is missing under CI"), "{stdout}");
        }
        assert!(!log.exists(), "a failed test is no skip");

        for ci in ["", "false"] {
            let out = run_probe(ci, &log);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "CI={ci:?}: a skip passes\n{stderr}");
            assert!(stderr.contains("SKIPPED") && stderr.contains("the probe's prerequisite"), "shown: {stderr}");
        }
        let logged = std::fs::read_to_string(&log).expect("skip log");
        let lines: Vec<&str> = logged.lines().collect();
        assert_eq!(lines.len(), 2, "{logged}");
        assert!(
            lines.iter().all(|l| l.contains("tests::probe_that_skips: the probe's prerequisite is missing")),
            "{logged}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
