//! What the binary's integration tests share: the command as `make run` starts it, and a
//! `facegate serve --sandbox` process on a random loopback port.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The token the miiCloud document's examples use; `serve --sandbox` creates a tenant with it.
pub const SANDBOX_TOKEN: &str = "0e653da4969a757d21de0ffa6387d5fbd6401131";

pub fn root() -> PathBuf {
    facegate_testkit::workspace_root()
}

pub fn facegate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facegate"));
    // Defaults point into .facegate/ relative to the working directory, as for `make run`.
    cmd.current_dir(root());
    cmd.env_remove("FACEGATE_DATA_DIR").env_remove("FACEGATE_LISTEN").env_remove("FACEGATE_TOKEN");
    // A configuration file or sandbox setting of the developer's shell is not the test's.
    cmd.env_remove("FACEGATE_CONFIG").env_remove("FACEGATE_SANDBOX").env_remove("FACEGATE_PACK");
    cmd.env_remove("FACEGATE_LOG_FORMAT")
        .env_remove("FACEGATE_METRICS_LISTEN")
        .env_remove("FACEGATE_CORS_ALLOWED_ORIGINS");
    cmd
}

/// A new encryption key from `facegate keys generate`, written to `path`.
pub fn generate_key_file(path: &Path) -> PathBuf {
    let generated = facegate().args(["keys", "generate"]).output().expect("keys generate");
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    std::fs::write(path, &generated.stdout).expect("key file");
    path.to_path_buf()
}

/// A running `facegate serve`, killed on drop, with its log lines kept.
pub struct SandboxServer {
    child: Child,
    pub addr: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl SandboxServer {
    /// `facegate serve --sandbox` on `data_dir`, once `/readyz` answers 200.
    pub fn start(data_dir: &Path) -> Self {
        let args: Vec<OsString> = vec!["--sandbox".into(), "--data-dir".into(), data_dir.into()];
        Self::spawn(&args, &[("FACEGATE_LOG", "info")])
    }

    /// `facegate serve <args>` on a random loopback port with two inference workers, once
    /// `/readyz` answers 200.
    pub fn spawn(args: &[OsString], envs: &[(&str, &str)]) -> Self {
        let mut cmd = facegate();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--inference-workers", "2"]).args(args);
        cmd.env("FACEGATE_LOG", "info");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Self::spawn_command(cmd)
    }

    /// Runs `cmd`, which must end in a `facegate serve` that logs its address, and waits until
    /// `/readyz` answers 200.
    pub fn spawn_command(mut cmd: Command) -> Self {
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn facegate serve");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("addr=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
                kept.lock().expect("logs").push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("server never logged its address:\n{}", logs.lock().expect("logs").join("\n"));
            }
        };
        let server = Self { child, addr, logs };
        let started = Instant::now();
        loop {
            let ready = server.get("/readyz", None);
            if ready.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "never ready: {ready}");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the server has logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The reader thread may still be draining the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A raw HTTP/1.1 GET, answered as text with the status line.
    pub fn get(&self, path: &str, authorization: Option<&str>) -> String {
        let mut s = connect(&self.addr);
        let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `multipart/form-data` body: text fields, then an optional file; returns its content type.
pub fn multipart(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "facegate-test-boundary-7d1f0c";
    let mut body = Vec::new();
    for (name, value) in fields {
        write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
            .expect("write");
    }
    if let Some((name, file_name, bytes)) = file {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: image/jpeg\r\n\r\n"
        )
        .expect("write");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").expect("write");
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The head of an HTTP/1.1 request with a body of `content_length` bytes.
pub fn request_head(method: &str, path: &str, headers: &[(&str, &str)], content_length: usize) -> String {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {content_length}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Sends one request and returns the status code and the body.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = send(addr, method, path, headers, body);
    read_response(&mut s)
}

/// The whole response of one request, head and body, as text (for tests of headers).
pub fn exchange(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
    let mut out = String::new();
    send(addr, method, path, headers, body).read_to_string(&mut out).expect("read");
    out
}

/// How long a test waits on one socket read or write: well past a real model's inference on a
/// busy 2-core machine, so that only a server that hangs fails by it, and in bounded time.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(120);

/// A connection to `addr` whose every read and write gives up after [`SOCKET_TIMEOUT`].
pub fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(SOCKET_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(SOCKET_TIMEOUT)).expect("write timeout");
    s
}

fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(request_head(method, path, headers, body.len()).as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    s
}

/// miiCloud `match_faces` on `photo` as the sandbox tenant, with `fields` (a
/// `customer_person_id` makes it 1:1); the answer's JSON, after checking the 200.
pub fn match_faces(server: &SandboxServer, photo: &[u8], fields: &[(&str, &str)]) -> serde_json::Value {
    let (content_type, body) = multipart(fields, Some(("image_path", "probe.jpg", photo)));
    let auth = format!("Token {SANDBOX_TOKEN}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", content_type.as_str())];
    let (status, answer) = http(&server.addr, "POST", "/miicloud/match_faces", &headers, &body);
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str(&answer).expect("json")
}

/// Reads a `Connection: close` response: the status code and the body.
pub fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `facegate tenant create NAME --database-url URL`: the tenant's credentials, as printed.
pub fn tenant_create(url: &str, name: &str) -> serde_json::Value {
    let created = facegate().args(["tenant", "create", name, "--database-url", url]).output().expect("tenant create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    serde_json::from_slice(&created.stdout).expect("credentials")
}

/// A request to the NEC dialect signed with AWS Signature V4 with `creds` (as `tenant create`
/// prints them), as a Rust NEC client signs it.
pub fn nec(
    addr: &str,
    creds: &serde_json::Value,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let key = |name: &str| creds[name].as_str().expect("credential").to_owned();
    // `http` sends `Host: x`; the signature covers the host the request names.
    let headers = facegate_testkit::nec_headers(
        method,
        "x",
        path,
        &body,
        &key("api_key"),
        &key("access_key_id"),
        &key("secret_access_key"),
    );
    let all: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let (status, text) = http(addr, method, path, &all, &body);
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// Every record of an NEC bulk registration job, from all its pages.
pub fn bulk_records(addr: &str, creds: &serde_json::Value, batch: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut path = format!("/v1.1/jobs/bulkregister/{batch}");
    loop {
        let (status, page) = nec(addr, creds, "GET", &path, None);
        assert_eq!(status, 200, "{page}");
        out.extend(page["processed"].as_array().cloned().unwrap_or_default());
        match page["lastEvaluatedKey"].as_str() {
            Some(key) if !key.is_empty() => path = format!("/v1.1/jobs/bulkregister/{batch}/{key}"),
            _ => return out,
        }
    }
}
