//! `facegate bench replication`: how long a write on one node takes to reach search on another
//! node of the same PostgreSQL gallery.
//!
//! For each round it enrolls a new person on `--from` (miiCloud `POST /miicloud/person`) and,
//! from the moment that answer arrives, asks `--to` to verify the same photo against that
//! person (`match_faces` 1:1), which answers "known" only once `--to`'s index holds the
//! template. Then it deletes the person on `--from` and times the same way until `--to` no
//! longer finds it. Each wait is measured to the answer that first shows the change, so it
//! includes one `match_faces` call (tens of milliseconds of inference): an upper bound.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use reqwest::{multipart, Client};
use serde_json::{json, Value};

use super::{quantile, sorted};

#[derive(Args, Debug)]
pub struct ReplicationArgs {
    /// A photo with one face.
    image: PathBuf,
    /// The node written to, e.g. `http://127.0.0.1:8081`.
    #[arg(long)]
    from: String,
    /// The node searched, e.g. `http://127.0.0.1:8082`.
    #[arg(long)]
    to: String,
    /// The tenant's miiCloud token.
    #[arg(long, env = "FACEGATE_TOKEN", hide_env_values = true)]
    token: String,
    /// Writes to time.
    #[arg(long, default_value_t = 200)]
    writes: usize,
    /// A change not seen within this many seconds fails the run.
    #[arg(long, default_value_t = 10)]
    timeout_s: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

struct Nodes {
    client: Client,
    from: String,
    to: String,
    authorization: String,
    image: Vec<u8>,
}

impl Nodes {
    fn form(&self, fields: &[(&str, &str)]) -> anyhow::Result<multipart::Form> {
        let mut form = multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        let part = multipart::Part::bytes(self.image.clone()).file_name("probe.jpg").mime_str("image/jpeg")?;
        Ok(form.part("image_path", part))
    }

    async fn enroll(&self, customer_person_id: &str) -> anyhow::Result<()> {
        let res = self
            .client
            .post(format!("{}/miicloud/person", self.from))
            .header("Authorization", &self.authorization)
            .multipart(self.form(&[("customer_person_id", customer_person_id)])?)
            .send()
            .await?;
        let status = res.status();
        anyhow::ensure!(status.is_success(), "enroll on {} answered {status}: {}", self.from, res.text().await?);
        Ok(())
    }

    async fn delete(&self, customer_person_id: &str) -> anyhow::Result<()> {
        let res = self
            .client
            .delete(format!("{}/miicloud/person/{customer_person_id}", self.from))
            .header("Authorization", &self.authorization)
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "delete on {} answered {}", self.from, res.status());
        Ok(())
    }

    /// Whether `--to` knows the photo as `customer_person_id`. A person `--to`'s store already
    /// has but its index does not yet is "unknown"; one its store lacks is a 404.
    async fn known_on_target(&self, customer_person_id: &str) -> anyhow::Result<bool> {
        let res = self
            .client
            .post(format!("{}/miicloud/match_faces", self.to))
            .header("Authorization", &self.authorization)
            .multipart(self.form(&[("customer_person_id", customer_person_id)])?)
            .send()
            .await?;
        if res.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(false);
        }
        anyhow::ensure!(res.status().is_success(), "match_faces on {} answered {}", self.to, res.status());
        let body: Value = res.json().await?;
        Ok(body["faces"][0]["match_status"] == "known")
    }

    /// Milliseconds from now until `--to` answers `known == want`.
    async fn until(&self, customer_person_id: &str, want: bool, timeout: Duration) -> anyhow::Result<f64> {
        let started = Instant::now();
        loop {
            if self.known_on_target(customer_person_id).await? == want {
                return Ok(started.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::ensure!(started.elapsed() < timeout, "{} never showed the change within {timeout:?}", self.to);
        }
    }
}

pub fn run(args: ReplicationArgs) -> anyhow::Result<()> {
    let image = std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let nodes = Nodes {
        client: Client::builder().timeout(Duration::from_secs(30)).build()?,
        from: args.from.trim_end_matches('/').to_owned(),
        to: args.to.trim_end_matches('/').to_owned(),
        authorization: format!("Token {}", args.token),
        image,
    };
    let timeout = Duration::from_secs(args.timeout_s);
    let run_id: String = uuid_like();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let (writes, deletes) = runtime.block_on(async {
        let (mut writes, mut deletes) = (Vec::new(), Vec::new());
        for i in 0..args.writes {
            let id = format!("bench-replication-{run_id}-{i}");
            nodes.enroll(&id).await?;
            writes.push(nodes.until(&id, true, timeout).await?);
            nodes.delete(&id).await?;
            deletes.push(nodes.until(&id, false, timeout).await?);
        }
        anyhow::Ok((writes, deletes))
    })?;
    let (writes, deletes) = (sorted(&writes), sorted(&deletes));
    let summary = |v: &[f64]| json!({"p50_ms": quantile(v, 0.5), "p99_ms": quantile(v, 0.99), "max_ms": quantile(v, 1.0), "n": v.len()});
    let report = json!({"from": nodes.from, "to": nodes.to, "write_visible": summary(&writes),
        "delete_visible": summary(&deletes)});
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} writes on {}, searched on {}", writes.len(), nodes.from, nodes.to);
        for (what, v) in [("enroll visible", &writes), ("delete visible", &deletes)] {
            println!(
                "{what:<15} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
                quantile(v, 0.5),
                quantile(v, 0.99),
                quantile(v, 1.0)
            );
        }
    }
    Ok(())
}

/// A short random id, so that runs never collide on customer ids.
fn uuid_like() -> String {
    use rand::Rng;
    let bytes: [u8; 6] = rand::thread_rng().gen();
    hex::encode(bytes)
}
