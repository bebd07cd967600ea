//! What an outsider could still do before the hardening issue: hold connections open, trickle
//! bodies, read another tenant's bucket through links, block bulk jobs with a pipe, lock out
//! the clients behind a proxy, replay a signed write, and get non-JSON error answers. Each test
//! drives the real server over loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// One face, as the core's fake engine reads images: these tests are about the HTTP layer, so
/// the server runs on the fakes and loads no model.
fn bytes_of_face() -> Vec<u8> {
    b"face:yao".to_vec()
}

/// A connection to `addr` whose reads and writes give up after 10 s, so that no test can hang on
/// a server that neither answers nor closes.
fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    s.set_write_timeout(Some(Duration::from_secs(10))).expect("write timeout");
    s
}

/// Opens `n` connections that send half a request line and then nothing.
fn half_open(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x").expect("half a request");
            s
        })
        .collect()
}

/// Whether the server has closed `stream` (EOF or reset), waiting at most `wait`.
fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        // A close while unread data sits in our send buffer arrives as a reset.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_sent_requests_neither_starve_real_clients_nor_stay_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings =
        Settings { max_connections: 32, header_read_timeout_secs: 2, keep_alive_idle_secs: 1, ..Settings::default() };
    let server = TestServer::start_on_fakes(dir.path(), settings).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    // Far more half-sent requests than the cap allows.
    let idle = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || half_open(&addr, 200)
    })
    .await
    .expect("open");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let health = client().get(server.url("/healthz")).send().await.expect("healthz answers");
    assert_eq!(health.status(), StatusCode::OK);
    let (status, body) = match_faces(&server, bytes_of_face(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered promptly: {:?}", started.elapsed());

    // Once the header timeout has passed, every half-sent request's socket is closed.
    let closed = tokio::task::spawn_blocking(move || {
        let mut idle = idle;
        std::thread::sleep(Duration::from_secs(3));
        idle.iter_mut().map(|s| closed_by_server(s, Duration::from_secs(2))).filter(|closed| *closed).count()
    })
    .await
    .expect("check");
    assert_eq!(closed, 200, "half-open sockets still open after the header timeout");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_alive_connection_closes_after_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings { header_read_timeout_secs: 10, keep_alive_idle_secs: 1, ..Settings::default() };
    let server = TestServer::start_on_fakes(dir.path(), settings).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = connect(&addr);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).expect("answer");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "answered");
        let started = Instant::now();
        let closed = closed_by_server(&mut s, Duration::from_secs(8));
        (closed, started.elapsed())
    })
    .await
    .expect("check");
    assert!(closed.0, "the idle connection stayed open");
    assert!(closed.1 < Duration::from_secs(6), "closed after {:?}, well before the header timeout", closed.1);
    server.stop().await;
}

/// Sends `head` (a request with a Content-Length), then only part of the body, and reads the
/// answer.
fn trickled(addr: &str, head: &str) -> (String, Duration) {
    let mut s = connect(addr);
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(b"{\"a\":").expect("a few bytes of the body");
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_that_does_not_arrive_in_time_gets_a_json_408_in_each_dialect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings { request_body_timeout_secs: 1, ..Settings::default() };
    let server = TestServer::start_on_fakes(dir.path(), settings).await;
    let tenant = server.service.create_tenant("slow").await.expect("tenant");
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mii = format!(
        "POST /miicloud/match_faces HTTP/1.1\r\nHost: x\r\nAuthorization: Token {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
        tenant.token
    );
    let nec = format!(
        "POST /v1.1/face/search HTTP/1.1\r\nHost: x\r\nx-api-key: {}\r\nx-amz-date: 20261130T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={}/20261130/ap-southeast-2/execute-api/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n",
        tenant.credentials.api_key,
        tenant.credentials.access_key_id,
        "0".repeat(64)
    );
    for (dialect, head) in [("miiCloud", mii), ("NEC ID", nec)] {
        let addr = addr.clone();
        let (answer, took) = tokio::task::spawn_blocking(move || trickled(&addr, &head)).await.expect("send");
        assert!(answer.starts_with("HTTP/1.1 408"), "{dialect}: {answer}");
        assert!(answer.contains("application/json"), "{dialect}: {answer}");
        assert!(answer.contains("not received in time"), "{dialect}: {answer}");
        assert!(took < Duration::from_secs(5), "{dialect}: answered after {took:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn every_error_answer_is_json_in_its_dialect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let tenant = server.service.create_tenant("errs").await.expect("tenant");
    let http = client();
    // Wrong method: axum answers 405 with an empty body by itself.
    let res =
        http.delete(server.url("/miicloud/match_faces")).header("Authorization", AUTH).send().await.expect("send");
    assert!(res.headers().get("allow").is_some(), "Allow kept");
    let (status, body) = json_of(res).await;
    assert_fail(status, &body, StatusCode::METHOD_NOT_ALLOWED);
    let (status, body) = send(nec_request(&server, &tenant.credentials, "GET", "/v1.1/face/search", None)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(body["message"].is_string(), "{body}");
    // A path id that is not UTF-8: axum's Path extractor refuses it in plain text by itself.
    let (status, body) = send(http.get(server.url("/miicloud/person/%FF%FE")).header("Authorization", AUTH)).await;
    assert_fail(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = send(nec_request(&server, &tenant.credentials, "DELETE", "/v1.1/subjects/%FF%FE", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errorCode"], 1001, "{body}");
    // Health probes and unknown routes.
    let (status, body) = send(http.post(server.url("/healthz"))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(body["message"].is_string(), "{body}");
    // An unknown route under /v1.1/ answers in NEC's shape, one under /miicloud/ in miiCloud's.
    let (status, body) = send(http.get(server.url("/v1.1/no-such-route"))).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, serde_json::json!({"message": "Not Found"})));
    let (status, body) = send(http.get(server.url("/miicloud/no-such-route"))).await;
    assert_fail(status, &body, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// How long any raw socket read may wait: the server answers these requests at once.
const RAW_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads one answer off `stream`: its head, then the body its `content-length` announces. The
/// head's lines are lower-cased for matching.
fn read_answer(stream: &mut TcpStream) -> (String, String) {
    stream.set_read_timeout(Some(RAW_READ_TIMEOUT)).expect("timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => panic!("no whole answer: {}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    while got.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => panic!("body cut short: {}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    (head, String::from_utf8_lossy(&got[head_end..head_end + length]).into_owned())
}

/// Whether the server closes `stream` after its answer, as it must after a request it could
/// not parse.
fn closes_after_answer(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(RAW_READ_TIMEOUT)).expect("timeout");
    matches!(stream.read(&mut [0u8; 16]), Ok(0))
}

/// Requests hyper cannot parse, with the status it answers each with.
fn unparseable(path: &str) -> Vec<(&'static str, String, u16)> {
    let start = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n");
    let many: String = (0..120).map(|i| format!("X-Pad-{i}: {i}\r\n")).collect();
    vec![
        ("duplicate Content-Length", format!("{start}Content-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400),
        ("bad Transfer-Encoding", format!("{start}Transfer-Encoding: gzip\r\n\r\n"), 400),
        ("Transfer-Encoding in HTTP/1.0", format!("POST {path} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400),
        ("too many headers", format!("{start}Content-Length: 0\r\n{many}\r\n"), 431),
        ("a target over 64 KiB", format!("GET {path}?q={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)), 414),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_parser_refuses_get_json_in_their_paths_dialect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        for (path, dialect) in
            [("/miicloud/match_faces", "miiCloud"), ("/v1.1/face/search", "NEC ID"), ("/healthz", "generic")]
        {
            for (what, request, status) in unparseable(path) {
                let mut s = TcpStream::connect(&addr).expect("connect");
                s.write_all(request.as_bytes()).expect("request");
                let (head, body) = read_answer(&mut s);
                let case = format!("{what} on {path}: {head}{body}");
                assert!(head.starts_with(&format!("http/1.1 {status} ")), "{case}");
                assert!(head.contains("content-type: application/json"), "{case}");
                assert!(head.contains("connection: close"), "{case}");
                let json: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {case}"));
                assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}");
                match dialect {
                    "NEC ID" => {
                        assert_eq!(json["errorCode"], 1001, "{case}");
                        assert_eq!(json["errorType"], "InvalidRequest", "{case}");
                        assert!(json.get("status").is_none(), "{case}");
                    }
                    _ => {
                        assert_eq!(json["status"], "fail", "{case}");
                        assert!(json.get("errorCode").is_none(), "{case}");
                    }
                }
                assert!(closes_after_answer(&mut s), "{case}: the connection stays open");
            }
        }
        // On a kept-alive connection the refused request's own path decides, not the one before.
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.write_all(b"GET /miicloud/no-such-route HTTP/1.1\r\nHost: x\r\n\r\n").expect("first request");
        let (head, _) = read_answer(&mut s);
        assert!(head.starts_with("http/1.1 404 "), "{head}");
        let (_, request, _) = unparseable("/v1.1/subjects").remove(0);
        s.write_all(request.as_bytes()).expect("second request");
        let (head, body) = read_answer(&mut s);
        assert!(head.starts_with("http/1.1 400 "), "{head}");
        let json: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(json["errorCode"], 1001, "{json}");
    })
    .await
    .expect("raw requests");
    // The server still answers.
    let (status, _) = send(client().get(server.url("/healthz"))).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn the_docs_page_and_what_it_loads_carry_a_policy_and_refuse_framing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    for path in [
        "/docs/",
        "/docs/swagger-initializer.js",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/openapi/miicloud.json",
        "/openapi/necid.json",
    ] {
        let res = client().get(server.url(path)).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let policy = header("content-security-policy");
        for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
            assert!(policy.contains(directive), "{path}: {directive} in {policy:?}");
        }
        assert!(!policy.contains("unsafe-"), "{path}: {policy}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
    }
    // Swagger UI's validator badge would load an image from validator.swagger.io.
    let initializer =
        client().get(server.url("/docs/swagger-initializer.js")).send().await.expect("send").text().await.expect("js");
    assert!(initializer.contains("\"validatorUrl\": \"none\""), "{initializer}");
    server.stop().await;
}

/// Debian's browser, which `scripts/setup-test-tools` installs for the console's browser test.
const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_renders_under_its_policy_in_a_real_browser() {
    if !std::path::Path::new(CHROMIUM).is_file() {
        facegate_testkit::skip(&format!(
            "{CHROMIUM} is missing: `make test` installs Debian's chromium (scripts/setup-test-tools)"
        ));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let profile = tempfile::tempdir().expect("browser profile");
    let mut command = std::process::Command::new(CHROMIUM);
    command
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        // Console messages (a refused script, style or fetch among them) go to stderr.
        .args(["--enable-logging=stderr", "--v=0"])
        // Lets the page fetch its document and render before the DOM is printed.
        .arg("--virtual-time-budget=20000")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(server.url("/docs/"));
    // A normal run takes a few seconds; the rest is room for a loaded machine.
    let out =
        tokio::task::spawn_blocking(move || facegate_testkit::output_within(&mut command, Duration::from_secs(120)))
            .await
            .expect("chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    let refused: Vec<&str> =
        log.lines().filter(|l| l.contains("Content Security Policy") || l.contains("Refused to")).collect();
    assert!(refused.is_empty(), "the policy blocked part of the page: {refused:#?}");
    // The miiCloud document (the first) is rendered: its operations are on the page.
    assert!(
        dom.contains("opblock") && dom.contains("/miicloud/match_faces"),
        "Swagger UI did not render:\n{dom}\n{log}"
    );
    server.stop().await;
}

#[tokio::test]
async fn readiness_checks_the_database_and_the_disk_headroom() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let (status, body) = send(client().get(server.url("/readyz"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stale_templates"]["unsearchable_subjects"], 0, "{body}");
    if on_postgres() {
        // The disk headroom is the SQLite store's check (PostgreSQL's disk is the database
        // server's); what applies here is a database that stops answering.
        server.stop_database().await;
        let (status, body) = send(client().get(server.url("/readyz"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["reason"], "the database does not answer", "{body}");
        let (status, _) = send(client().get(server.url("/healthz"))).await;
        assert_eq!(status, StatusCode::OK);
        server.stop().await;
        return;
    }
    server.stop().await;

    // No disk has this much room.
    let settings = Setup { min_free_disk_bytes: u64::MAX, ..Setup::default() };
    let server = TestServer::start_on_fakes(dir.path(), settings).await;
    let (status, body) = send(client().get(server.url("/readyz"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["reason"].as_str().is_some_and(|r| r.contains("disk")), "{body}");
    // Liveness is not readiness.
    let (status, _) = send(client().get(server.url("/healthz"))).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_one_clients_failures_do_not_lock_out_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        auth_failure_burst: 3,
        auth_failure_refill_secs: 600,
        trusted_proxies: vec!["127.0.0.1".into()],
        ..Settings::default()
    };
    let server = TestServer::start_on_fakes(dir.path(), settings).await;
    let tenant = server.service.create_tenant("proxied").await.expect("tenant");
    let good = format!("Token {}", tenant.token);
    let http = client();
    let person = server.url("/miicloud/person/nobody");
    let from = |client: &str| http.get(&person).header("x-forwarded-for", format!("198.51.100.200, {client}"));
    for _ in 0..3 {
        let (status, _) = send(from("203.0.113.5").header("Authorization", "Token wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = send(from("203.0.113.5").header("Authorization", &good)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the attacker is limited");
    let (status, body) = send(from("203.0.113.6").header("Authorization", &good)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another client behind the same proxy is not: {body}");
    // IPv6 clients count by their /64.
    for _ in 0..3 {
        let (status, _) = send(from("2001:db8:1:2::1").header("Authorization", "Token wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = send(from("2001:db8:1:2:ffff::9").header("Authorization", &good)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "same /64");
    let (status, _) = send(from("2001:db8:1:3::1").header("Authorization", &good)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another /64");
    server.stop().await;

    // Without trusted proxies a forged header changes nothing: the socket's address counts.
    let settings = Settings { auth_failure_burst: 3, auth_failure_refill_secs: 600, ..Settings::default() };
    let server = TestServer::start_on_fakes(dir.path(), settings).await;
    for i in 0..3 {
        let res = http
            .get(server.url("/miicloud/person/nobody"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .header("Authorization", "Token wrong")
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = http
        .get(server.url("/miicloud/person/nobody"))
        .header("x-forwarded-for", "203.0.113.99")
        .header("Authorization", &good)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;
}

#[tokio::test]
async fn a_signed_write_is_accepted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let tenant = server.service.create_tenant("replayed").await.expect("tenant");
    let creds = &tenant.credentials;
    let face = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes_of_face());
    let register =
        nec_request(&server, creds, "POST", "/v1.1/subjects", Some(&json!({"face": face}))).build().expect("request");
    let replay = register.try_clone().expect("clone");
    let after_restart = register.try_clone().expect("clone");
    let (status, body) = json_of(client().execute(register).await.expect("send")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = json_of(client().execute(replay).await.expect("send")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("already accepted")), "{body}");
    assert_eq!(server.service.template_count(&tenant.tenant), 1, "one subject, not two");
    // The record is the store's, not the process's: a restarted server refuses it too. (Under
    // FACEGATE_TEST_STORE=postgres each test server has a cluster of its own, dropped with it;
    // the multi-node tests send one signed write to two nodes and again after a restart.)
    let server = if std::env::var("FACEGATE_TEST_STORE").is_ok_and(|v| v == "postgres") {
        server
    } else {
        server.stop().await;
        let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
        let mut again = after_restart;
        // The very bytes sent before, signed Host included, to the restarted server's new port.
        let signed_host = again.url().authority().to_owned();
        *again.url_mut() = reqwest::Url::parse(&server.url("/v1.1/subjects")).expect("url");
        again.headers_mut().insert(reqwest::header::HOST, signed_host.parse().expect("host header"));
        let (status, body) = json_of(client().execute(again).await.expect("send")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "after a restart: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("already accepted")), "{body}");
        assert_eq!(server.service.template_count(&tenant.tenant), 1, "still one subject");
        server
    };
    // Reads may be repeated.
    let read = nec_request(&server, creds, "GET", "/v1.1/tags", None).build().expect("request");
    let again = read.try_clone().expect("clone");
    for req in [read, again] {
        let (status, body) = json_of(client().execute(req).await.expect("send")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn duplicate_filenames_in_one_job_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let tenant = server.service.create_tenant("dups").await.expect("tenant");
    let body = json!({"registrations": [{"filename": "a.jpg"}, {"filename": "b.jpg"}, {"filename": "a.jpg"}]});
    let (status, body) =
        send(nec_request(&server, &tenant.credentials, "POST", "/v1.1/jobs/bulkregister", Some(&body))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errorCode"], 1001, "{body}");
    server.stop().await;
}

/// Polls a job until every record is processed; the records by filename.
async fn finished(
    server: &TestServer,
    tenant: &facegate_core::service::NewTenant,
    batch: &str,
) -> HashMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, page) =
            send(nec_request(server, &tenant.credentials, "GET", &format!("/v1.1/jobs/bulkregister/{batch}"), None))
                .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let records = page["processed"].as_array().cloned().unwrap_or_default();
        if records.iter().all(|r| r["status"] == "Processed") {
            return records.into_iter().map(|r| (r["filename"].as_str().unwrap_or("").to_owned(), r)).collect();
        }
        assert!(Instant::now() < deadline, "job {batch} did not finish: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_reads_stay_in_the_tenants_area_and_a_pipe_blocks_nobody() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let a = server.service.create_tenant("alpha").await.expect("tenant");
    let b = server.service.create_tenant("beta").await.expect("tenant");
    let bucket = dir.path().join("bucket");
    for area in ["alpha", "beta"] {
        std::fs::create_dir_all(bucket.join(area)).expect("area");
    }
    std::fs::write(bucket.join("beta/victim.jpg"), bytes_of_face()).expect("write");
    std::fs::write(bucket.join("alpha/own.jpg"), bytes_of_face()).expect("write");
    symlink(bucket.join("beta/victim.jpg"), bucket.join("alpha/stolen.jpg")).expect("link");
    symlink(bucket.join("beta"), bucket.join("alpha/beta")).expect("folder link");
    symlink("/etc/passwd", bucket.join("alpha/passwd.jpg")).expect("link out");
    symlink(bucket.join("alpha/loop.jpg"), bucket.join("alpha/loop.jpg")).expect("loop");
    let mkfifo = std::process::Command::new("mkfifo").arg(bucket.join("alpha/pipe.png")).status().expect("mkfifo");
    assert!(mkfifo.success());

    let files = ["pipe.png", "stolen.jpg", "beta/victim.jpg", "passwd.jpg", "loop.jpg", "own.jpg"];
    let registrations: Vec<Value> = files.iter().map(|f| json!({"filename": f})).collect();
    let (status, job) = send(nec_request(
        &server,
        &a.credentials,
        "POST",
        "/v1.1/jobs/bulkregister",
        Some(&json!({"registrations": registrations})),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    let (status, other) = send(nec_request(
        &server,
        &b.credentials,
        "POST",
        "/v1.1/jobs/bulkregister",
        Some(&json!({"registrations": [{"filename": "victim.jpg"}]})),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{other}");

    let started = Instant::now();
    let records = finished(&server, &a, job["batchId"].as_str().expect("batch")).await;
    let beta = finished(&server, &b, other["batchId"].as_str().expect("batch")).await;
    assert!(started.elapsed() < Duration::from_secs(30), "a pipe held the jobs up: {:?}", started.elapsed());
    assert_eq!(beta["victim.jpg"]["registerStatus"], "Success", "{beta:?}");
    assert_eq!(records["own.jpg"]["registerStatus"], "Success", "{records:?}");
    for file in ["pipe.png", "stolen.jpg", "beta/victim.jpg", "passwd.jpg", "loop.jpg"] {
        let record = &records[file];
        assert_eq!(record["registerStatus"], "Failed", "{file}: {record}");
        assert_eq!(record["reason"], "not a regular file", "{file}: {record}");
    }
    let root = dir.path().display().to_string();
    let all = serde_json::to_string(&records).expect("json");
    assert!(!all.contains(&root), "a server path leaked: {all}");
    // Alpha cannot find beta's face: nothing of beta's was registered under alpha.
    assert_eq!(server.service.template_count(&a.tenant), 1);
    server.stop().await;
}
