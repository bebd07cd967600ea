//! What the binary's integration tests share: the command as `make run` starts it, and a
//! `facegate serve --sandbox` process on a random loopback port.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The token the miiCloud document's examples use; `serve --sandbox` creates a tenant with it.
pub const SANDBOX_TOKEN: &str = "0e653da4969a757d21de0ffa6387d5fbd6401131";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn facegate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facegate"));
    // Defaults point into .facegate/ relative to the working directory, as for `make run`.
    cmd.current_dir(root());
    cmd.env_remove("FACEGATE_DATA_DIR").env_remove("FACEGATE_LISTEN").env_remove("FACEGATE_TOKEN");
    cmd
}

/// A running `facegate serve --sandbox`, killed on drop.
pub struct SandboxServer {
    child: Child,
    pub addr: String,
}

impl SandboxServer {
    /// Starts the server on `data_dir` and waits until `/readyz` answers 200.
    pub fn start(data_dir: &Path) -> Self {
        let mut child = facegate()
            .args(["serve", "--sandbox", "--listen", "127.0.0.1:0", "--inference-workers", "2", "--data-dir"])
            .arg(data_dir)
            .env("FACEGATE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn facegate serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("addr=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server logs its address");
        let server = Self { child, addr };
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

    /// A raw HTTP/1.1 GET, answered as text with the status line.
    pub fn get(&self, path: &str, authorization: Option<&str>) -> String {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
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
