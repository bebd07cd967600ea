//! Server settings. Every field can come from a TOML file (`--config`), an environment
//! variable `FACEGATE_<FIELD>` or a command-line flag, the later overriding the earlier; the
//! binary does the layering, this module owns the fields and their defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The public token printed in the miiCloud document, accepted by `serve --sandbox`.
pub const SANDBOX_TOKEN: &str = "0e653da4969a757d21de0ffa6387d5fbd6401131";
pub const SANDBOX_TENANT: &str = "sandbox";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on. Loopback by default so a fresh install is not exposed.
    pub listen: SocketAddr,
    /// Database, image files and everything else that must survive a restart.
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://user@host:port/db`) that several facegate nodes share;
    /// the gallery then lives there, and `data_dir` keeps only this node's audit log and bulk
    /// bucket. Unset: SQLite under `data_dir`, one process at a time.
    pub database_url: Option<String>,
    /// Create the `sandbox` tenant with the document's public token. Loopback only.
    pub sandbox: bool,
    /// Largest request body. 10 MiB holds any reasonable photo; larger bodies get 413.
    pub body_limit_bytes: usize,
    /// Largest decoded image, in pixels. 40 MP covers current phone cameras and stops
    /// decompression bombs before they allocate.
    pub max_image_pixels: u64,
    /// The ONNX Runtime shared library (fetched by `scripts/setup`).
    pub runtime_library: PathBuf,
    /// The model pack directory holding `manifest.toml`.
    pub model_dir: PathBuf,
    /// A face is "known" at or above this score (0–9999). 7000 is a false-match rate of 1e-4
    /// under the pack's calibration.
    pub known_threshold: u32,
    /// Concurrent inference jobs; one per core keeps every core busy without oversubscribing.
    pub inference_workers: usize,
    /// ONNX Runtime threads inside one inference job. 2 lets a lone request use two cores
    /// (match_faces p50 26 ms instead of 36 ms on a 640×480 photo, 2-core machine) and costs
    /// about 7 % of throughput at saturation, since the threads do not spin; `facegate import`
    /// uses 1, for throughput.
    pub intra_op_threads: usize,
    /// Jobs that may wait for a worker before requests are refused with 503. A queue of
    /// 16 per worker bounds the wait at about a second on this class of machine.
    pub inference_queue: usize,
    /// Long side cap of the detector input. SCRFD at 640 finds faces down to ~15 px.
    pub max_detector_side: u32,
    /// Minimum detector confidence; 0.5 is InsightFace's default.
    pub detection_threshold: f32,
    /// NEC ID registrations with a `faceQualityScore` below this are refused (PoorQuality).
    /// 0.5 passes 99 % of LFW photos and refuses tiny (~20 px) or heavily blurred faces.
    pub min_face_quality: f32,
    /// AWS Signature V4 scope NEC ID clients sign for. NEC's SDKs and documentation use
    /// `ap-southeast-2` and `execute-api`, so existing clients work unchanged.
    pub sigv4_region: String,
    pub sigv4_service: String,
    /// Where NEC bulk registration reads `filename`s, per tenant under `<tenant name>/`: a
    /// directory, or `s3://bucket/prefix` for an S3-compatible store (credentials and region
    /// from the `AWS_*` variables). Unset: `<data_dir>/bucket`.
    pub bulk_source: Option<String>,
    /// An S3-compatible endpoint (MinIO, moto, Ceph) for an `s3://` bulk source.
    pub bulk_s3_endpoint: Option<String>,
    /// Tries per file when reading it fails in a way worth retrying.
    pub bulk_max_attempts: u32,
    /// A file holding the 256-bit key that templates and image files are encrypted with
    /// (AES-256-GCM). Unset: they are stored in the clear.
    pub encryption_key_file: Option<PathBuf>,
    /// Failed authentications one address may make in a burst before it gets 429; 0 turns
    /// the limit off. Behind a reverse proxy every caller shares the proxy's address, so raise
    /// it there.
    pub auth_failure_burst: u32,
    /// Seconds after which an address may fail once more (20 a minute at 3).
    pub auth_failure_refill_secs: u64,
    /// Largest the database may grow, in bytes; writes beyond it fail with 507 as on a full
    /// disk. Unset: as large as the disk allows.
    pub max_database_bytes: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGTERM before the server stops anyway.
    pub shutdown_grace_secs: u64,
    /// Seconds a client has to send a request's line and headers, counted from when the
    /// connection is ready for one (accepted, or the previous answer sent). 10 s is ample for
    /// any real client, also over a slow link, and frees a half-sent request's socket quickly.
    pub header_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may sit with no request before it is closed. 5 s, as
    /// Apache's KeepAliveTimeout: long enough for a client's next call in a burst, short enough
    /// that idle sockets do not pile up. Must not exceed `header_read_timeout_secs`, whose timer
    /// also runs between requests.
    pub keep_alive_idle_secs: u64,
    /// Seconds a client has to send a request body once its headers are in. 120 s lets a
    /// 10 MiB upload through at 1 Mbit/s (84 s); a client slower than that is holding a
    /// connection, not uploading.
    pub request_body_timeout_secs: u64,
    /// Connections open at once. 1,024 is far more than the inference pool can serve at a time
    /// and well within the usual file limit; beyond it a new connection replaces the one idle
    /// the longest. Lowered at start when the process's file limit leaves less room.
    pub max_connections: usize,
    /// Addresses or CIDR blocks of reverse proxies whose `X-Forwarded-For` / `Forwarded`
    /// headers are believed, for the auth failure limit. Empty: every caller is its socket's
    /// address, and no header is believed.
    pub trusted_proxies: Vec<String>,
    /// `/readyz` reports not ready when the data directory's disk has less free space than
    /// this. 256 MiB leaves room for the WAL and a checkpoint after the alarm goes off.
    pub min_free_disk_bytes: u64,
    /// Bulk registration records a tenant may have waiting at once, over all its jobs; a job
    /// that would go past it is refused. Two full jobs (200,000): a tenant can queue the next
    /// job while one runs, and no tenant can fill the disk with records.
    pub bulk_max_queued_per_tenant: u64,
    /// Seconds one bulk file may take to read from the source before the attempt counts as a
    /// read error. 30 s reads a 10 MiB file over a slow link; a stalled read (a hung network
    /// share, a pipe) no longer holds up the records after it.
    pub bulk_read_timeout_secs: u64,
    /// PostgreSQL only: seconds a node's claim on a bulk record holds. A node renews its claims
    /// each time it reads its queue; the records of a node that died are taken over by the
    /// others after this. 120 s outlasts one record's reads and retries with room to spare.
    pub bulk_claim_lease_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            sandbox: false,
            body_limit_bytes: 10 * 1024 * 1024,
            max_image_pixels: 40_000_000,
            runtime_library: PathBuf::from(".facegate/onnxruntime/libonnxruntime.so"),
            model_dir: PathBuf::from(".facegate/models/buffalo_s"),
            known_threshold: 7000,
            inference_workers: cores,
            intra_op_threads: cores.min(2),
            inference_queue: cores * 16,
            max_detector_side: 640,
            detection_threshold: 0.5,
            min_face_quality: 0.5,
            sigv4_region: "ap-southeast-2".into(),
            sigv4_service: "execute-api".into(),
            bulk_source: None,
            bulk_s3_endpoint: None,
            bulk_max_attempts: 3,
            encryption_key_file: None,
            auth_failure_burst: 20,
            auth_failure_refill_secs: 3,
            max_database_bytes: None,
            shutdown_grace_secs: 30,
            header_read_timeout_secs: 10,
            keep_alive_idle_secs: 5,
            request_body_timeout_secs: 120,
            max_connections: 1024,
            trusted_proxies: Vec::new(),
            min_free_disk_bytes: 256 << 20,
            bulk_max_queued_per_tenant: 200_000,
            bulk_read_timeout_secs: 30,
            bulk_claim_lease_secs: 120,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
    }

    /// The signature verifier's settings; the allowed clock skew is AWS's five minutes.
    pub fn sigv4(&self) -> crate::auth::sigv4::SigV4Config {
        crate::auth::sigv4::SigV4Config {
            region: self.sigv4_region.clone(),
            service: self.sigv4_service.clone(),
            ..Default::default()
        }
    }

    /// How connections are limited.
    pub fn connection_limits(&self) -> crate::listener::ConnectionLimits {
        crate::listener::ConnectionLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            keep_alive_idle: std::time::Duration::from_secs(self.keep_alive_idle_secs),
            max_connections: self.max_connections,
        }
    }

    /// The bulk runner's settings: as many files at once as inference workers, or one worker
    /// fewer when each job runs several ONNX Runtime threads (they fill the cores already, and a
    /// request then finds a free worker at once).
    pub fn bulk(&self) -> facegate_core::BulkConfig {
        let workers = self.inference_workers.max(1);
        facegate_core::BulkConfig {
            concurrency: if self.intra_op_threads > 1 { (workers - 1).max(1) } else { workers },
            max_attempts: self.bulk_max_attempts.max(1),
            max_file_bytes: self.body_limit_bytes as u64,
            read_timeout: std::time::Duration::from_secs(self.bulk_read_timeout_secs.max(1)),
            max_queued_per_tenant: self.bulk_max_queued_per_tenant,
            ..Default::default()
        }
    }

    /// Checks combinations that no single field can.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sandbox && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "--sandbox accepts a public token, so it only listens on loopback; {} is not loopback",
                self.listen
            )));
        }
        if self.known_threshold > facegate_core::score::MAX_SCORE {
            return Err(ConfigError::Invalid("known_threshold must be within 0..=9999".into()));
        }
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::Invalid("body_limit_bytes must be at least 1024".into()));
        }
        for (name, secs) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("keep_alive_idle_secs", self.keep_alive_idle_secs),
            ("request_body_timeout_secs", self.request_body_timeout_secs),
        ] {
            if secs == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if self.keep_alive_idle_secs > self.header_read_timeout_secs {
            return Err(ConfigError::Invalid(format!(
                "keep_alive_idle_secs ({}) must not exceed header_read_timeout_secs ({}): the header timer also runs \
                 while a kept-alive connection waits for its next request",
                self.keep_alive_idle_secs, self.header_read_timeout_secs
            )));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid("max_connections must be at least 1".into()));
        }
        crate::auth::forwarded::TrustedProxies::parse(&self.trusted_proxies).map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_refuses_public_addresses() {
        let s = Settings { sandbox: true, listen: "0.0.0.0:8080".parse().expect("addr"), ..Default::default() };
        assert!(s.validate().is_err());
        let s = Settings { sandbox: true, ..Default::default() };
        assert!(s.validate().is_ok());
    }

    #[test]
    fn toml_fills_missing_fields_with_defaults() {
        let s: Settings = toml::from_str("known_threshold = 8000\nlisten = \"127.0.0.1:9000\"").expect("parse");
        assert_eq!(s.known_threshold, 8000);
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.body_limit_bytes, 10 * 1024 * 1024);
        assert!(toml::from_str::<Settings>("no_such_field = 1").is_err());
    }
}
