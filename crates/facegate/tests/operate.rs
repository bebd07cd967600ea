//! What an operator watches: Prometheus metrics on their own listener, and CORS for browser
//! clients, off by default.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;

use serde_json::Value;

mod common;
use common::{exchange, http, multipart, root, SandboxServer, SANDBOX_TOKEN};

fn yao() -> Vec<u8> {
    std::fs::read(root().join(".facegate/models/buffalo_s/yaoming.jpg")).expect("pack photo: run scripts/setup")
}

/// One sample line of the Prometheus text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text exposition format strictly: every line is a comment (`# HELP`,
/// `# TYPE` with a known type) or a sample with a valid name, quoted labels and a number.
/// Returns the samples and the declared type of each family.
fn parse_exposition(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
    };
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(valid_name(name), "bad family name in {line:?}");
            match kind {
                Some("TYPE") => {
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail), "{line:?}");
                    types.insert(name.to_owned(), tail.to_owned());
                }
                Some("HELP") => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert!(valid_name(&key), "bad label name {key:?} in {line:?}");
                    assert_eq!(chars.next(), Some('"'), "unquoted label in {line:?}");
                    let mut val = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => val.push(chars.next().unwrap_or_else(|| panic!("bad escape in {line:?}"))),
                            Some('"') => break,
                            Some(c) => val.push(c),
                            None => panic!("unterminated label value in {line:?}"),
                        }
                    }
                    labels.insert(key, val);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name, labels)
            }
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    (samples, types)
}

fn metrics_address(server: &SandboxServer) -> String {
    let logs = server.logs();
    logs.lines()
        .find_map(|l| l.split("metrics_listen=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{logs}"))
        .to_owned()
}

#[test]
fn metrics_parse_as_prometheus_text_and_hold_every_family_without_personal_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let created =
        common::facegate().args(["tenant", "create", "nec-co", "--data-dir"]).arg(dir.path()).output().expect("tenant");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let nec_tenant: Value = serde_json::from_slice(&created.stdout).expect("credentials");
    let args: Vec<OsString> = vec![
        "--sandbox".into(),
        "--data-dir".into(),
        dir.path().into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
    ];
    let server = SandboxServer::spawn(&args, &[]);
    let metrics_at = metrics_address(&server);
    // The API's listener does not serve them.
    let (status, _) = http(&server.addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 404);

    let auth = format!("Token {SANDBOX_TOKEN}");
    let photo = yao();
    let (content_type, body) = multipart(
        &[("customer_person_id", "yao-private-id"), ("name", "Yao Private")],
        Some(("image_path", "y.jpg", &photo)),
    );
    let (status, answer) = http(
        &server.addr,
        "POST",
        "/miicloud/person",
        &[("Authorization", &auth), ("Content-Type", &content_type)],
        &body,
    );
    assert_eq!(status, 200, "{answer}");
    let (content_type, body) = multipart(&[], Some(("image_path", "probe.jpg", &photo)));
    let (status, answer) = http(
        &server.addr,
        "POST",
        "/miicloud/match_faces",
        &[("Authorization", &auth), ("Content-Type", &content_type)],
        &body,
    );
    assert_eq!(status, 200, "{answer}");
    // NEC's extract computes the attributes too.
    use base64::Engine as _;
    let body = serde_json::json!({"faces": base64::engine::general_purpose::STANDARD.encode(&photo)}).to_string();
    let key = |name: &str| nec_tenant[name].as_str().expect("credential").to_owned();
    let path = "/v1.1/face/extract";
    let signed = facegate_testkit::nec_headers(
        "POST",
        "x",
        path,
        body.as_bytes(),
        &key("api_key"),
        &key("access_key_id"),
        &key("secret_access_key"),
    );
    let headers: Vec<(&str, &str)> = signed.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let (status, answer) = http(&server.addr, "POST", path, &headers, body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let (status, _) =
        http(&server.addr, "GET", "/miicloud/person/yao-private-id", &[("Authorization", "Token wrong")], b"");
    assert_eq!(status, 401);
    let (status, _) = http(&server.addr, "GET", "/no/such/path/12345", &[], b"");
    assert_eq!(status, 404);

    let (status, text) = http(&metrics_at, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{text}");
    let (samples, types) = parse_exposition(&text);
    for (family, kind) in [
        ("facegate_http_requests_total", "counter"),
        ("facegate_http_request_duration_seconds", "histogram"),
        ("facegate_inference_stage_duration_seconds", "histogram"),
        ("facegate_inference_pool_depth", "gauge"),
        ("facegate_inference_pool_capacity", "gauge"),
        ("facegate_inference_pool_rejections_total", "counter"),
        ("facegate_templates", "gauge"),
        ("facegate_bulk_records_total", "counter"),
        ("facegate_auth_failures_total", "counter"),
        ("facegate_auth_throttled_total", "counter"),
    ] {
        assert_eq!(types.get(family).map(String::as_str), Some(kind), "family {family} in:\n{text}");
    }
    let find = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
    };
    // Requests by route template, dialect and status.
    let matched = [("route", "/miicloud/match_faces"), ("dialect", "miicloud"), ("status", "200")];
    assert_eq!(find("facegate_http_requests_total", &matched).map(|s| s.value), Some(1.0), "{text}");
    let refused = [("route", "/miicloud/person/{customer_person_id}"), ("status", "401")];
    assert!(find("facegate_http_requests_total", &refused).is_some(), "the route template, not the path:\n{text}");
    assert!(find("facegate_http_requests_total", &[("route", "unmatched"), ("status", "404")]).is_some(), "{text}");
    let latency = [("route", "/miicloud/match_faces"), ("le", "+Inf")];
    assert_eq!(find("facegate_http_request_duration_seconds_bucket", &latency).map(|s| s.value), Some(1.0), "{text}");
    for stage in ["decode", "detect", "align", "embed", "attributes"] {
        let count = find("facegate_inference_stage_duration_seconds_count", &[("stage", stage)]);
        assert!(count.is_some_and(|s| s.value >= 1.0), "stage {stage} timed:\n{text}");
    }
    assert!(find("facegate_auth_failures_total", &[("dialect", "miicloud")]).is_some_and(|s| s.value >= 1.0), "{text}");
    assert_eq!(find("facegate_bulk_records_total", &[("status", "Success")]).map(|s| s.value), Some(0.0), "{text}");

    // Templates by tenant id: the sandbox tenant's one template, under its id, not its name.
    let templates: BTreeMap<String, f64> = samples
        .iter()
        .filter(|s| s.name == "facegate_templates")
        .map(|s| (s.labels["tenant_id"].clone(), s.value))
        .collect();
    assert_eq!(templates.get(key("id").as_str()), Some(&0.0), "{text}");
    assert_eq!(templates.len(), 2, "{text}");
    // No biometric or personal data in any label.
    let label_values: BTreeSet<&str> = samples.iter().flat_map(|s| s.labels.values().map(String::as_str)).collect();
    for private in ["sandbox", "nec-co", "yao-private-id", "Yao Private", "y.jpg", "probe.jpg", SANDBOX_TOKEN] {
        assert!(!label_values.iter().any(|v| v.contains(private)), "{private:?} in a label:\n{text}");
    }
    assert!(!text.contains("/no/such/path"), "raw paths never become labels");

    drop(server);
    let out = common::facegate().args(["tenant", "list", "--data-dir"]).arg(dir.path()).output().expect("tenant list");
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    let sandbox = list.as_array().and_then(|l| l.iter().find(|t| t["name"] == "sandbox")).expect("sandbox tenant");
    assert_eq!(templates.get(sandbox["id"].as_str().expect("id")), Some(&1.0), "{text}");
}

#[test]
fn cors_is_off_by_default_and_answers_only_the_configured_origins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let preflight = |addr: &str, origin: &str| {
        exchange(
            addr,
            "OPTIONS",
            "/miicloud/match_faces",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization,content-type"),
            ],
            b"",
        )
        .to_ascii_lowercase()
    };
    let plain = SandboxServer::start(dir.path());
    let root_page = exchange(&plain.addr, "GET", "/", &[], b"").to_ascii_lowercase();
    assert!(root_page.starts_with("http/1.1 303") && root_page.contains("location: /console"), "{root_page}");
    let answer = preflight(&plain.addr, "https://app.example.com");
    assert!(!answer.contains("access-control-allow-origin"), "{answer}");
    drop(plain);

    let other = tempfile::tempdir().expect("tempdir");
    let args: Vec<OsString> = vec![
        "--sandbox".into(),
        "--data-dir".into(),
        other.path().into(),
        "--cors-allowed-origins".into(),
        "https://app.example.com,http://localhost:3000".into(),
    ];
    let server = SandboxServer::spawn(&args, &[]);
    let answer = preflight(&server.addr, "https://app.example.com");
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("access-control-allow-origin: https://app.example.com"), "{answer}");
    assert!(answer.contains("access-control-allow-headers"), "{answer}");
    assert!(!answer.contains("access-control-allow-credentials"), "{answer}");
    let refused = preflight(&server.addr, "https://evil.example");
    assert!(!refused.contains("access-control-allow-origin"), "{refused}");

    // An actual call from the page: the answer carries the origin and exposes the request id.
    let auth = format!("Token {SANDBOX_TOKEN}");
    let answer = exchange(
        &server.addr,
        "GET",
        "/miicloud/person/nobody",
        &[("Origin", "http://localhost:3000"), ("Authorization", &auth)],
        b"",
    )
    .to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 404"), "{answer}");
    assert!(answer.contains("access-control-allow-origin: http://localhost:3000"), "{answer}");
    assert!(answer.contains("access-control-expose-headers: x-request-id"), "{answer}");

    // A setting that is no origin stops the start with a clear message.
    let out = common::facegate()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(other.path())
        .args(["--cors-allowed-origins", "app.example.com"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lacks a scheme"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
