//! `facegate bench http`: `match_faces` against a running server at several concurrencies,
//! the way a load-testing tool would drive it, from this process.
//!
//! Each level runs `concurrency` clients in closed loop (a client sends its next request when
//! the last one is answered) for `--requests` requests in all. Answers are counted by kind:
//! success, 503 (the server's queue was full: it must come fast), other HTTP errors, and
//! transport errors or client timeouts (which a server under load must never cause).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use reqwest::{multipart, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{quantile, sorted};

#[derive(Args, Debug)]
pub struct HttpArgs {
    /// The photo every request sends.
    image: PathBuf,
    /// The server, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    url: String,
    /// The tenant's miiCloud token.
    #[arg(long, env = "FACEGATE_TOKEN", hide_env_values = true)]
    token: String,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Requests per level.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// A request not answered in this many seconds counts as timed out.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// What one level measured.
#[derive(Default)]
struct Outcomes {
    ok_ms: Vec<f64>,
    busy_ms: Vec<f64>,
    other_status: usize,
    transport_errors: usize,
}

pub fn run(args: HttpArgs) -> anyhow::Result<()> {
    let image = std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let file_name = args.image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let endpoint = format!("{}/miicloud/match_faces", args.url.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_s))
        .pool_max_idle_per_host(64)
        .build()
        .context("building the HTTP client")?;
    let request =
        Arc::new(Request { client, endpoint, authorization: format!("Token {}", args.token), image, file_name });

    // One request first: a wrong token or address fails here, not as a column of errors.
    let probe = runtime.block_on(request.send())?;
    anyhow::ensure!(probe.is_success(), "{} answered {probe} to the first request", request.endpoint);

    let mut levels = Vec::new();
    for &concurrency in &args.concurrency {
        let concurrency = concurrency.max(1);
        let started = Instant::now();
        let outcomes = runtime.block_on(run_level(request.clone(), concurrency, args.requests));
        levels.push(summarize(concurrency, &outcomes, started.elapsed()));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json!({ "endpoint": request.endpoint, "levels": levels }))?);
        return Ok(());
    }
    println!("match_faces at {} with {}", request.endpoint, args.image.display());
    println!(
        "  {:>11} {:>9} {:>8} {:>8} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "concurrency", "requests", "ok", "503", "ok/s", "p50 ms", "p99 ms", "503 p99", "errors"
    );
    for l in &levels {
        let f = |k: &str| l[k].as_f64().unwrap_or(0.0);
        let u = |k: &str| l[k].as_u64().unwrap_or(0);
        println!(
            "  {:>11} {:>9} {:>8} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>8.1} {:>8}",
            u("concurrency"),
            u("requests"),
            u("ok"),
            u("busy_503"),
            f("throughput_per_s"),
            f("p50_ms"),
            f("p99_ms"),
            f("busy_p99_ms"),
            u("other_status") + u("transport_errors"),
        );
    }
    Ok(())
}

struct Request {
    client: reqwest::Client,
    endpoint: String,
    authorization: String,
    image: Vec<u8>,
    file_name: String,
}

impl Request {
    async fn send(&self) -> anyhow::Result<StatusCode> {
        let part = multipart::Part::bytes(self.image.clone()).file_name(self.file_name.clone());
        let response = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .multipart(multipart::Form::new().part("image_path", part))
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        Ok(status)
    }
}

async fn run_level(request: Arc<Request>, concurrency: usize, requests: usize) -> Outcomes {
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (request, outcomes, next) = (request.clone(), outcomes.clone(), next.clone());
        clients.spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let started = Instant::now();
                let result = request.send().await;
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let mut o = outcomes.lock().await;
                match result {
                    Ok(s) if s.is_success() => o.ok_ms.push(ms),
                    Ok(StatusCode::SERVICE_UNAVAILABLE) => o.busy_ms.push(ms),
                    Ok(_) => o.other_status += 1,
                    Err(_) => o.transport_errors += 1,
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
    Arc::try_unwrap(outcomes).map(Mutex::into_inner).unwrap_or_default()
}

fn summarize(concurrency: usize, o: &Outcomes, elapsed: Duration) -> Value {
    let (ok, busy) = (sorted(&o.ok_ms), sorted(&o.busy_ms));
    let requests = ok.len() + busy.len() + o.other_status + o.transport_errors;
    json!({
        "concurrency": concurrency,
        "requests": requests,
        "ok": ok.len(),
        "busy_503": busy.len(),
        "other_status": o.other_status,
        "transport_errors": o.transport_errors,
        "seconds": elapsed.as_secs_f64(),
        "throughput_per_s": ok.len() as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        "p50_ms": quantile(&ok, 0.5),
        "p99_ms": quantile(&ok, 0.99),
        "busy_p99_ms": quantile(&busy, 0.99),
    })
}
