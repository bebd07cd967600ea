//! `facegate serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use facegate_server::config::{SANDBOX_TENANT, SANDBOX_TOKEN};
use facegate_server::{AppState, Settings};
use facegate_store::BucketSource;

use crate::runtime::{build_service, EngineArgs, KeyFileArg};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML file with any of the settings below; flags and environment variables override it.
    #[arg(long, env = "FACEGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "FACEGATE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./data]
    #[arg(long, env = "FACEGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL database shared by several facegate nodes (postgres://user@host:port/db)
    /// [default: none: SQLite under the data directory]
    #[arg(long, env = "FACEGATE_DATABASE_URL")]
    database_url: Option<String>,
    /// Create the `sandbox` tenant that accepts the miiCloud document's public token (loopback only).
    #[arg(long, env = "FACEGATE_SANDBOX")]
    sandbox: bool,
    /// Largest request body in bytes [default: 10485760]
    #[arg(long, env = "FACEGATE_BODY_LIMIT_BYTES")]
    body_limit_bytes: Option<usize>,
    /// Largest decoded image in pixels [default: 40000000]
    #[arg(long, env = "FACEGATE_MAX_IMAGE_PIXELS")]
    max_image_pixels: Option<u64>,
    /// Score (0-9999) at which a face is "known" [default: 7000, a false-match rate of 1e-4]
    #[arg(long, env = "FACEGATE_KNOWN_THRESHOLD")]
    known_threshold: Option<u32>,
    /// Inference jobs that may wait before requests get 503 [default: 16 per worker]
    #[arg(long, env = "FACEGATE_INFERENCE_QUEUE")]
    inference_queue: Option<usize>,
    /// Long-side cap of the detector input [default: 640]
    #[arg(long, env = "FACEGATE_MAX_DETECTOR_SIDE")]
    max_detector_side: Option<u32>,
    /// Minimum detector confidence [default: 0.5]
    #[arg(long, env = "FACEGATE_DETECTION_THRESHOLD")]
    detection_threshold: Option<f32>,
    /// Minimum faceQualityScore (0-1) for NEC ID registrations [default: 0.5]
    #[arg(long, env = "FACEGATE_MIN_FACE_QUALITY")]
    min_face_quality: Option<f32>,
    /// AWS Signature V4 region NEC ID clients sign for [default: ap-southeast-2]
    #[arg(long, env = "FACEGATE_SIGV4_REGION")]
    sigv4_region: Option<String>,
    /// AWS Signature V4 service NEC ID clients sign for [default: execute-api]
    #[arg(long, env = "FACEGATE_SIGV4_SERVICE")]
    sigv4_service: Option<String>,
    /// Where NEC bulk registration reads files: a directory or s3://bucket/prefix, one
    /// `<tenant name>/` folder per tenant [default: <data-dir>/bucket]
    #[arg(long, env = "FACEGATE_BULK_SOURCE")]
    bulk_source: Option<String>,
    /// S3-compatible endpoint URL for an s3:// bulk source (MinIO, moto, Ceph)
    #[arg(long, env = "FACEGATE_BULK_S3_ENDPOINT")]
    bulk_s3_endpoint: Option<String>,
    /// Tries per bulk file when reading it fails transiently [default: 3]
    #[arg(long, env = "FACEGATE_BULK_MAX_ATTEMPTS")]
    bulk_max_attempts: Option<u32>,
    /// Failed authentications one address may make before it gets 429; 0 turns the limit off [default: 20]
    #[arg(long, env = "FACEGATE_AUTH_FAILURE_BURST")]
    auth_failure_burst: Option<u32>,
    /// Seconds after which a limited address may fail once more [default: 3]
    #[arg(long, env = "FACEGATE_AUTH_FAILURE_REFILL_SECS")]
    auth_failure_refill_secs: Option<u64>,
    /// Largest the database may grow, in bytes; writes beyond it get 507 [default: no cap]
    #[arg(long, env = "FACEGATE_MAX_DATABASE_BYTES")]
    max_database_bytes: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGTERM [default: 30]
    #[arg(long, env = "FACEGATE_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: Option<u64>,
    /// Seconds a client has to send a request's headers [default: 10]
    #[arg(long, env = "FACEGATE_HEADER_READ_TIMEOUT_SECS")]
    header_read_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may wait for its next request [default: 5]
    #[arg(long, env = "FACEGATE_KEEP_ALIVE_IDLE_SECS")]
    keep_alive_idle_secs: Option<u64>,
    /// Seconds a client has to send a request body once the headers are in [default: 120]
    #[arg(long, env = "FACEGATE_REQUEST_BODY_TIMEOUT_SECS")]
    request_body_timeout_secs: Option<u64>,
    /// Connections open at once; beyond it a new one replaces the longest-idle one [default: 1024]
    #[arg(long, env = "FACEGATE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Reverse proxy addresses or CIDRs whose X-Forwarded-For / Forwarded headers are believed
    /// (comma-separated) [default: none]
    #[arg(long, env = "FACEGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<String>>,
    /// /readyz reports not ready below this much free disk space, in bytes [default: 268435456]
    #[arg(long, env = "FACEGATE_MIN_FREE_DISK_BYTES")]
    min_free_disk_bytes: Option<u64>,
    /// Bulk registration records one tenant may have waiting [default: 200000]
    #[arg(long, env = "FACEGATE_BULK_MAX_QUEUED_PER_TENANT")]
    bulk_max_queued_per_tenant: Option<u64>,
    /// Seconds one bulk file may take to read before it counts as a read error [default: 30]
    #[arg(long, env = "FACEGATE_BULK_READ_TIMEOUT_SECS")]
    bulk_read_timeout_secs: Option<u64>,
    /// PostgreSQL: seconds a node's claim on a bulk record holds before others may take it
    /// [default: 120]
    #[arg(long, env = "FACEGATE_BULK_CLAIM_LEASE_SECS")]
    bulk_claim_lease_secs: Option<u64>,
    #[command(flatten)]
    key: KeyFileArg,
    #[command(flatten)]
    engine: EngineArgs,
}

impl ServeArgs {
    fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = match &self.config {
            Some(path) => Settings::from_toml_file(path)?,
            None => Settings::default(),
        };
        if let Some(v) = self.listen {
            s.listen = v;
        }
        if let Some(v) = &self.data_dir {
            s.data_dir = v.clone();
        }
        if let Some(v) = &self.database_url {
            s.database_url = Some(v.clone());
        }
        s.sandbox |= self.sandbox;
        if let Some(v) = self.body_limit_bytes {
            s.body_limit_bytes = v;
        }
        if let Some(v) = self.max_image_pixels {
            s.max_image_pixels = v;
        }
        if let Some(v) = self.known_threshold {
            s.known_threshold = v;
        }
        if let Some(v) = self.inference_queue {
            s.inference_queue = v;
        }
        if let Some(v) = self.max_detector_side {
            s.max_detector_side = v;
        }
        if let Some(v) = self.detection_threshold {
            s.detection_threshold = v;
        }
        if let Some(v) = self.min_face_quality {
            s.min_face_quality = v;
        }
        if let Some(v) = &self.sigv4_region {
            s.sigv4_region = v.clone();
        }
        if let Some(v) = &self.sigv4_service {
            s.sigv4_service = v.clone();
        }
        if let Some(v) = &self.bulk_source {
            s.bulk_source = Some(v.clone());
        }
        if let Some(v) = &self.bulk_s3_endpoint {
            s.bulk_s3_endpoint = Some(v.clone());
        }
        if let Some(v) = self.bulk_max_attempts {
            s.bulk_max_attempts = v;
        }
        if let Some(v) = self.auth_failure_burst {
            s.auth_failure_burst = v;
        }
        if let Some(v) = self.auth_failure_refill_secs {
            s.auth_failure_refill_secs = v;
        }
        if let Some(v) = self.max_database_bytes {
            s.max_database_bytes = Some(v);
        }
        if let Some(v) = self.shutdown_grace_secs {
            s.shutdown_grace_secs = v;
        }
        if let Some(v) = self.header_read_timeout_secs {
            s.header_read_timeout_secs = v;
        }
        if let Some(v) = self.keep_alive_idle_secs {
            s.keep_alive_idle_secs = v;
        }
        if let Some(v) = self.request_body_timeout_secs {
            s.request_body_timeout_secs = v;
        }
        if let Some(v) = self.max_connections {
            s.max_connections = v;
        }
        if let Some(v) = &self.trusted_proxies {
            s.trusted_proxies = v.iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
        }
        if let Some(v) = self.min_free_disk_bytes {
            s.min_free_disk_bytes = v;
        }
        if let Some(v) = self.bulk_max_queued_per_tenant {
            s.bulk_max_queued_per_tenant = v;
        }
        if let Some(v) = self.bulk_read_timeout_secs {
            s.bulk_read_timeout_secs = v;
        }
        if let Some(v) = self.bulk_claim_lease_secs {
            s.bulk_claim_lease_secs = v;
        }
        if let Some(v) = &self.key.encryption_key_file {
            s.encryption_key_file = Some(v.clone());
        }
        self.engine.apply(&mut s);
        s.validate()?;
        Ok(s)
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let (service, backend) = build_service(&settings)?;
    crate::audit_log::open(&settings.data_dir.join("audit.log"))?;
    if settings.encryption_key_file.is_none() {
        tracing::warn!("templates and face images are stored unencrypted; see --encryption-key-file");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if settings.sandbox {
        runtime
            .block_on(service.ensure_tenant_with_token(SANDBOX_TENANT, SANDBOX_TOKEN))
            .context("creating the sandbox tenant")?;
        tracing::warn!(
            tenant = SANDBOX_TENANT,
            "sandbox tenant enabled with the miiCloud document's public example token; for local trials only"
        );
    }
    let renamed_tenants = backend.renamed_tenants();
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let bucket = bulk_source(&settings)?;
        tracing::info!(source = bucket.location(), "bulk registration source");
        bucket.move_renamed_areas(&renamed_tenants);
        let state = AppState::new(service, settings, Some(std::sync::Arc::new(bucket)));
        tracing::info!(%addr, "facegate listening");
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown_signal().await;
            let _ = signalled_tx.send(());
        };
        let deadline = async move {
            if signalled_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            served = facegate_server::serve(listener, state, shutdown) => served.context("serving")?,
            () = deadline => tracing::warn!(
                grace_secs = grace.as_secs(),
                "in-flight requests did not finish within the shutdown grace period; stopping anyway"
            ),
        }
        anyhow::Ok(())
    });
    // Past the deadline, work still running (a long inference, the bulk runner) is abandoned
    // rather than waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
    backend.checkpoint();
    tracing::info!("shut down");
    Ok(())
}

fn bulk_source(settings: &Settings) -> anyhow::Result<BucketSource> {
    let source = match settings.bulk_source.as_deref() {
        Some(url) if url.starts_with("s3://") => BucketSource::s3(url, settings.bulk_s3_endpoint.as_deref()),
        Some(dir) => BucketSource::local(std::path::Path::new(dir)),
        None => BucketSource::local(&settings.data_dir.join("bucket")),
    };
    source.context("setting up the bulk registration source")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
