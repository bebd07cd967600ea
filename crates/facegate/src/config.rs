//! The one configuration of the binary, in five sections: `server` (HTTP), `engine` (models and
//! inference), `service` (matching), `index` (in-memory search) and `store` (where the gallery
//! lives).
//!
//! Each field is declared once, in the [`config!`] invocation below: its flag (`--field-name`),
//! environment variable, TOML key (`field_name`), type, default and, in its doc comment, what it
//! does and why the default is what it is. Defaults are the owning crate's constants. A value
//! comes from the first of:
//!
//! 1. the command-line flag,
//! 2. the environment variable (clap reads both, the flag first),
//! 3. the TOML file given with `--config` (one flat table of `key = value`; an unknown key is an
//!    error naming it),
//! 4. the default.
//!
//! A flag or variable can turn a file's boolean off (`--sandbox=false`, `FACEGATE_SANDBOX=false`).
//! Every command that opens a store or loads models reads the file, so that a `data_dir` there
//! means the same to `serve`, `tenant`, `import` and `keys`. A command takes the flags of the
//! sections it uses; [`Config::resolve`] still reads the environment variables and the file for
//! a section whose flags it does not take (the request body limit that `import`'s engine obeys).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use facegate_core::service::{
    DEFAULT_INFERENCE_QUEUE_PER_WORKER, DEFAULT_KNOWN_THRESHOLD, DEFAULT_MAX_BULK_QUEUED_PER_TENANT,
    DEFAULT_MIN_FACE_QUALITY,
};
use facegate_core::{BulkConfig, ServiceConfig};
use facegate_engine::{EngineConfig, DEFAULT_HOME, DEFAULT_MAX_DETECTOR_SIDE, DEFAULT_MAX_PIXELS, DEFAULT_PACK};
use facegate_index::{IndexConfig, IndexKind, IvfTuning, DEFAULT_PARTITION_ROWS};
use facegate_server::auth::sigv4::SigV4Config;
use facegate_server::config::{
    DEFAULT_AUTH_FAILURE_BURST, DEFAULT_AUTH_FAILURE_REFILL_SECS, DEFAULT_BODY_LIMIT_BYTES,
    DEFAULT_HEADER_READ_TIMEOUT_SECS, DEFAULT_KEEP_ALIVE_IDLE_SECS, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_BODY_TIMEOUT_SECS, DEFAULT_SHUTDOWN_GRACE_SECS,
};
use facegate_server::Settings;
use facegate_store::{DEFAULT_CLAIM_LEASE, DEFAULT_DATA_DIR, DEFAULT_MIN_FREE_DISK_BYTES};

/// ONNX Runtime threads inside one inference job of the server. 2 lets a lone request use two
/// cores (match_faces p50 26 ms instead of 36 ms on a 640×480 photo, 2-core machine) and costs
/// about 7 % of throughput at saturation, since the threads do not spin. Capped at the core count.
pub const DEFAULT_INTRA_OP_THREADS: usize = 2;

/// The type a field resolves to: its own when it has a default, else `Option` of it.
macro_rules! resolved_type {
    ($ty:ty) => { Option<$ty> };
    ($ty:ty, $default:expr) => { $ty };
}

/// A field's value: the one given, else its default when it has one.
macro_rules! resolved_value {
    ($given:expr) => {
        $given
    };
    ($given:expr, $default:expr) => {
        match $given {
            Some(value) => value,
            None => $default,
        }
    };
}

/// A field's default as `--help` shows it, when it has one.
macro_rules! shown_default {
    () => {
        None
    };
    ($default:expr) => {
        Some(Shown::shown(&$default))
    };
}

/// Declares the sections. Per section it makes the resolved struct (`$Section`), the clap flags
/// (`$Args`, every field an `Option` with `long` and `env`) and their merge with the file; over
/// all sections, the TOML file's struct ([`FileConfig`]), [`Config`] and [`Flags`].
///
/// A field is `/// summary` (one line: the flag's short help), `/// more` (what it does and why
/// the default; with the summary, the long help), optionally `#[arg(...)]` for clap, then
/// `name: Type = default, env "FACEGATE_NAME";`, or without `= default` for a field that may stay
/// unset (its summary then says what unset means).
macro_rules! config {
    ($(
        $(#[doc = $section_doc:literal])*
        $section:ident: $Section:ident, $Args:ident {
            $(
                #[doc = $summary:literal]
                $(#[doc = $doc:literal])*
                $(#[arg($($arg:tt)*)])?
                $field:ident: $ty:ty $(= $default:expr)?, env $env:literal;
            )*
        }
    )*) => {
        $(
            $(#[doc = $section_doc])*
            #[derive(Debug, Clone)]
            pub struct $Section {
                $(
                    #[doc = $summary]
                    $(#[doc = $doc])*
                    pub $field: resolved_type!($ty $(, $default)?),
                )*
            }

            #[doc = concat!("The flags and environment variables of [`", stringify!($Section), "`].")]
            #[derive(clap::Args, Debug, Clone, Default)]
            pub struct $Args {
                $(
                    #[arg(
                        long,
                        env = $env,
                        help = help($summary, shown_default!($($default)?)),
                        long_help = long_help(&[$summary $(, $doc)*], shown_default!($($default)?)),
                    )]
                    $(#[arg($($arg)*)])?
                    pub $field: Option<$ty>,
                )*
            }

            impl $Args {
                /// The section from these flags (or their variables), else the file, else the
                /// defaults.
                pub fn resolve(&self, file: &FileConfig) -> $Section {
                    $Section {
                        $(
                            $field: resolved_value!(
                                self.$field.clone().or_else(|| file.$field.clone()) $(, $default)?
                            ),
                        )*
                    }
                }

                /// The environment variables alone, for a command that takes none of these flags.
                fn from_env() -> Result<Self, clap::Error> {
                    let command = <Self as clap::Args>::augment_args(clap::Command::new("facegate").no_binary_name(true));
                    let matches = command.try_get_matches_from(std::iter::empty::<std::ffi::OsString>())?;
                    <Self as clap::FromArgMatches>::from_arg_matches(&matches)
                }
            }
        )*

        /// The TOML file given with `--config`: every field of every section, in one flat table.
        #[derive(serde::Deserialize, Debug, Default)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $($(pub $field: Option<$ty>,)*)*
        }

        /// The whole resolved configuration.
        #[derive(Debug, Clone)]
        pub struct Config {
            $(pub $section: $Section,)*
        }

        /// The flags a command takes, by section; `None` for a section it takes none of.
        #[derive(Default, Clone, Copy)]
        pub struct Flags<'a> {
            $(pub $section: Option<&'a $Args>,)*
        }

        impl Config {
            /// Every section from its flags (or, where the command has none, its environment
            /// variables), the file and the defaults.
            pub fn resolve(file: &FileConfig, flags: Flags<'_>) -> anyhow::Result<Self> {
                Ok(Self {
                    $($section: match flags.$section {
                        Some(args) => args.resolve(file),
                        None => $Args::from_env()
                            .context("reading the FACEGATE_* environment variables")?
                            .resolve(file),
                    },)*
                })
            }
        }
    };
}

config! {
    /// The HTTP server: listening, request limits, authentication, NEC bulk registration, and
    /// whether it may start with subjects it cannot search.
    server: Server, ServerArgs {
        /// Address to listen on
        ///
        /// Loopback by default, so that a fresh install is not exposed.
        listen: SocketAddr = DEFAULT_LISTEN, env "FACEGATE_LISTEN";
        /// Create the `sandbox` tenant that accepts the miiCloud document's public token (loopback only)
        ///
        /// Off by default: the token is public. `--sandbox=false` or `FACEGATE_SANDBOX=false` turns
        /// off a `sandbox = true` of the file.
        #[arg(
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "true",
            value_parser = clap::builder::BoolishValueParser::new(),
        )]
        sandbox: bool = false, env "FACEGATE_SANDBOX";
        /// Largest request body in bytes, and so the largest image decoded
        ///
        /// 10 MiB holds any reasonable photo; larger bodies get 413. The engine's input limit is
        /// set to it too, so that one setting governs both.
        body_limit_bytes: usize = DEFAULT_BODY_LIMIT_BYTES, env "FACEGATE_BODY_LIMIT_BYTES";
        /// AWS Signature V4 region NEC ID clients sign for
        ///
        /// NEC's SDKs and documentation use `ap-southeast-2`, so existing clients work unchanged.
        sigv4_region: String = SigV4Config::default().region, env "FACEGATE_SIGV4_REGION";
        /// AWS Signature V4 service NEC ID clients sign for
        ///
        /// NEC's SDKs and documentation use `execute-api`, so existing clients work unchanged.
        sigv4_service: String = SigV4Config::default().service, env "FACEGATE_SIGV4_SERVICE";
        /// Failed authentications one address may make before it gets 429; 0 turns the limit off
        ///
        /// Enough for any client misconfiguration to show itself, far too few to guess a
        /// credential. Behind a reverse proxy every caller shares the proxy's address: set
        /// `trusted_proxies` so that each client counts.
        auth_failure_burst: u32 = DEFAULT_AUTH_FAILURE_BURST, env "FACEGATE_AUTH_FAILURE_BURST";
        /// Seconds after which a limited address may fail once more
        ///
        /// 3 s: 20 failures a minute.
        auth_failure_refill_secs: u64 = DEFAULT_AUTH_FAILURE_REFILL_SECS, env "FACEGATE_AUTH_FAILURE_REFILL_SECS";
        /// Seconds in-flight requests get to finish after SIGTERM
        ///
        /// More than any one request takes, and within the 30 s systemd and Kubernetes wait
        /// before they kill.
        shutdown_grace_secs: u64 = DEFAULT_SHUTDOWN_GRACE_SECS, env "FACEGATE_SHUTDOWN_GRACE_SECS";
        /// Seconds a client has to send a request's headers
        ///
        /// Counted from when the connection is ready for a request (accepted, or the previous
        /// answer sent). Ample for any real client, also over a slow link, and a half-sent
        /// request's socket is freed quickly.
        header_read_timeout_secs: u64 = DEFAULT_HEADER_READ_TIMEOUT_SECS, env "FACEGATE_HEADER_READ_TIMEOUT_SECS";
        /// Seconds a kept-alive connection may wait for its next request
        ///
        /// As Apache's KeepAliveTimeout: long enough for a client's next call in a burst, short
        /// enough that idle sockets do not pile up. At most `header_read_timeout_secs`, whose
        /// timer also runs between requests.
        keep_alive_idle_secs: u64 = DEFAULT_KEEP_ALIVE_IDLE_SECS, env "FACEGATE_KEEP_ALIVE_IDLE_SECS";
        /// Seconds a client has to send a request body once the headers are in
        ///
        /// A 10 MiB upload takes 84 s at 1 Mbit/s; a client slower than that is holding a
        /// connection, not uploading (408).
        request_body_timeout_secs: u64 = DEFAULT_REQUEST_BODY_TIMEOUT_SECS, env "FACEGATE_REQUEST_BODY_TIMEOUT_SECS";
        /// Connections open at once; beyond it a new one replaces the longest-idle one
        ///
        /// Far more than the inference pool serves at a time, and well within the usual file
        /// limit; lowered at start when the process's file limit leaves less room.
        max_connections: usize = DEFAULT_MAX_CONNECTIONS, env "FACEGATE_MAX_CONNECTIONS";
        /// Reverse proxy addresses or CIDRs whose X-Forwarded-For / Forwarded headers are believed (comma-separated)
        ///
        /// None by default: every caller is its socket's address, and no header is believed.
        #[arg(value_delimiter = ',')]
        trusted_proxies: Vec<String> = Vec::new(), env "FACEGATE_TRUSTED_PROXIES";
        /// Origins whose web pages may call the APIs from a browser, e.g. https://app.example.com (comma-separated; `*` for any)
        ///
        /// None by default: CORS is off and browsers keep other sites' pages from calling the
        /// APIs. Only pages you serve and trust belong here.
        #[arg(value_delimiter = ',')]
        cors_allowed_origins: Vec<String> = Vec::new(), env "FACEGATE_CORS_ALLOWED_ORIGINS";
        /// Address to serve Prometheus metrics on, at /metrics [default: none, no metrics]
        ///
        /// A listener of its own, apart from the API's: /metrics takes no credential, so it
        /// belongs on an address only the monitoring network reaches (loopback, a private
        /// interface), never behind the public proxy.
        metrics_listen: SocketAddr, env "FACEGATE_METRICS_LISTEN";
        /// Where NEC bulk registration reads files: a directory or s3://bucket/prefix, one `<tenant name>/` folder per tenant [default: <data-dir>/bucket]
        ///
        /// An `s3://` source takes its credentials and region from the `AWS_*` variables.
        bulk_source: String, env "FACEGATE_BULK_SOURCE";
        /// S3-compatible endpoint URL for an s3:// bulk source (MinIO, moto, Ceph) [default: AWS]
        bulk_s3_endpoint: String, env "FACEGATE_BULK_S3_ENDPOINT";
        /// Tries per bulk file when reading it fails transiently
        ///
        /// The core's bulk runner default: a second and third try, with backoff, ride out a
        /// flaky share or S3 hiccup without holding up a job for long.
        bulk_max_attempts: u32 = BulkConfig::default().max_attempts, env "FACEGATE_BULK_MAX_ATTEMPTS";
        /// Bulk registration records one tenant may have waiting
        ///
        /// Two full jobs (the core's default): a tenant can queue the next job while one runs,
        /// and no tenant can fill the disk with records.
        bulk_max_queued_per_tenant: u64 = DEFAULT_MAX_BULK_QUEUED_PER_TENANT,
            env "FACEGATE_BULK_MAX_QUEUED_PER_TENANT";
        /// Seconds one bulk file may take to read before it counts as a read error
        ///
        /// The core's default: reads a 10 MiB file over a slow link, while a stalled read (a
        /// hung network share, a pipe) no longer holds up the records after it.
        bulk_read_timeout_secs: u64 = BulkConfig::default().read_timeout.as_secs(), env "FACEGATE_BULK_READ_TIMEOUT_SECS";
        /// Serve even though some subjects have only templates of another model, which search cannot find
        ///
        /// Off: after a model pack change, `serve` refuses to start while any subject has no
        /// template of the active model, naming the tenants and how many subjects each would
        /// lose, so that people do not silently stop being found; `facegate reindex` re-embeds
        /// them. On, it starts with a warning, and `/readyz` counts the stale templates.
        /// `--allow-stale-templates=false` or `FACEGATE_ALLOW_STALE_TEMPLATES=false` turns off a
        /// file's `allow_stale_templates = true`.
        #[arg(
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "true",
            value_parser = clap::builder::BoolishValueParser::new(),
        )]
        allow_stale_templates: bool = false, env "FACEGATE_ALLOW_STALE_TEMPLATES";
    }

    /// The face engine: where the runtime and models are, and how inference runs.
    engine: Engine, EngineArgs {
        /// ONNX Runtime shared library
        ///
        /// Where `scripts/setup` puts it, relative to the working directory.
        runtime_library: PathBuf = EngineConfig::default().runtime_library, env "FACEGATE_RUNTIME_LIBRARY";
        /// Model pack by name, one of those `facegate packs` lists
        ///
        /// yunet_sface (YuNet, SFace and dlib's ResNet: MIT, Apache-2.0 and CC0 weights), the
        /// default, and yunet_sface_fast (float SFace without dlib's ResNet: the default's model
        /// id before 2026-12-07, half the template, misses more) are for
        /// commercial use; buffalo_s (InsightFace's weights, non-commercial research only) misses
        /// fewer genuine pairs on LFW. `scripts/setup` fetches all three; docs/accuracy.md compares them.
        pack: String = DEFAULT_PACK.to_owned(), env "FACEGATE_PACK";
        /// A pack directory of your own with manifest.toml, instead of `pack` [default: <home>/models/<pack>]
        model_dir: PathBuf, env "FACEGATE_MODEL_DIR";
        /// Inference workers
        ///
        /// One per core keeps every core busy without oversubscribing.
        inference_workers: usize = facegate_engine::default_workers(), env "FACEGATE_INFERENCE_WORKERS";
        /// ONNX Runtime threads per inference job [default: 2 for serve, detect, compare and eval (1 on one core); 1 for import, reindex and bench]
        ///
        /// 2 lets a lone request use two cores (lower latency); 1 gives the most throughput,
        /// which is what a bulk load wants.
        intra_op_threads: usize, env "FACEGATE_INTRA_OP_THREADS";
        /// Long-side cap of the detector input
        ///
        /// SCRFD's training size; it finds faces down to ~15 px, and photos are never upscaled.
        max_detector_side: u32 = DEFAULT_MAX_DETECTOR_SIDE, env "FACEGATE_MAX_DETECTOR_SIDE";
        /// Minimum detector confidence [default: the pack's own, measured for its detector]
        ///
        /// Scores of different detectors are not on one scale, so each pack's manifest names the
        /// threshold it was measured at.
        detection_threshold: f32, env "FACEGATE_DETECTION_THRESHOLD";
        /// Largest decoded image in pixels
        ///
        /// 40 MP covers current phone cameras and stops decompression bombs before they
        /// allocate.
        max_image_pixels: u64 = DEFAULT_MAX_PIXELS, env "FACEGATE_MAX_IMAGE_PIXELS";
    }

    /// Matching and admission: when a face is known, how much work may wait.
    service: Service, ServiceArgs {
        /// Score (0-9999) at which a face is "known"
        ///
        /// A false-match rate of 1e-4 under the pack's calibration (`docs/accuracy.md`).
        known_threshold: u32 = DEFAULT_KNOWN_THRESHOLD, env "FACEGATE_KNOWN_THRESHOLD";
        /// Inference jobs that may wait before requests get 503 [default: 16 per inference worker]
        ///
        /// Bounds the wait at about a second: beyond it a client gets a quick 503 to retry
        /// instead of waiting unboundedly.
        inference_queue: usize, env "FACEGATE_INFERENCE_QUEUE";
        /// Minimum faceQualityScore (0-1) for NEC ID registrations
        ///
        /// Passes 99 % of LFW photos and refuses tiny (~20 px) or heavily blurred faces.
        min_face_quality: f32 = DEFAULT_MIN_FACE_QUALITY, env "FACEGATE_MIN_FACE_QUALITY";
    }

    /// The in-memory search index: which vector search a tenant gets, and how widely it looks.
    index: IndexSection, IndexArgs {
        /// Vector search per tenant: auto, flat or ivf
        ///
        /// auto scans a tenant's templates (exactly up to 32,768, in two stages above) until it
        /// holds `index_partition_rows`, then partitions them into inverted lists, learnt in
        /// the background, whose search cost stays flat as the gallery grows. flat always
        /// scans; ivf partitions every tenant large enough to learn lists from.
        index_kind: String = IndexKind::default().name().to_owned(), env "FACEGATE_INDEX_KIND";
        /// Templates from which `auto` partitions a tenant into inverted lists
        ///
        /// Where the scan and the lists cost about the same (2 ms on two cores at 512 values,
        /// docs/benchmarks.md); below it a search stays exact or nearly so, with no training.
        index_partition_rows: usize = DEFAULT_PARTITION_ROWS, env "FACEGATE_INDEX_PARTITION_ROWS";
        /// Lists a partitioned search reads (at 512 values; 4x at 128)
        ///
        /// The rows of one cluster of similar faces spread over several lists; 64 reads all of
        /// them on the synthetic gallery of `facegate bench search` up to 10M templates of 512
        /// values (recall on mated probes 0.99), and shorter templates spread wider. More finds
        /// more non-mated neighbours, at a cost in step.
        index_probes: usize = IvfTuning::default().probes, env "FACEGATE_INDEX_PROBES";
        /// Templates a partitioned search scores exactly, at least
        ///
        /// Chosen by their sign-sketch distance among the rows read; 4,096 holds recall@10
        /// against the exact scan at 0.95 at a million templates.
        index_rerank: usize = IvfTuning::default().min_rerank, env "FACEGATE_INDEX_RERANK";
    }

    /// The gallery: a SQLite data directory, or a PostgreSQL database shared by several nodes.
    store: Store, StoreArgs {
        /// Data directory
        ///
        /// Beside the working directory, so that a trial run keeps everything in one place. With
        /// `database_url` it keeps only this node's audit log and bulk bucket.
        data_dir: PathBuf = PathBuf::from(DEFAULT_DATA_DIR), env "FACEGATE_DATA_DIR";
        /// PostgreSQL database shared by several facegate nodes (postgres://user@host:port/db) [default: none: SQLite under the data directory]
        database_url: String, env "FACEGATE_DATABASE_URL";
        /// File with the 256-bit key (32 bytes, 64 hex digits or base64) that templates and face images are encrypted with; `facegate keys generate` makes one [default: none: stored in the clear]
        encryption_key_file: PathBuf, env "FACEGATE_ENCRYPTION_KEY_FILE";
        /// Largest the database may grow, in bytes; writes beyond it get 507 [default: no cap]
        max_database_bytes: u64, env "FACEGATE_MAX_DATABASE_BYTES";
        /// /readyz reports not ready below this much free disk space, in bytes
        ///
        /// 256 MiB leaves room for the WAL and a checkpoint after the alarm goes off.
        min_free_disk_bytes: u64 = DEFAULT_MIN_FREE_DISK_BYTES, env "FACEGATE_MIN_FREE_DISK_BYTES";
        /// PostgreSQL: seconds a node's claim on a bulk record holds before others may take it
        ///
        /// Outlasts one record's reads and retries with room to spare; a dead node's records go
        /// to the others after it.
        bulk_claim_lease_secs: u64 = DEFAULT_CLAIM_LEASE.as_secs(), env "FACEGATE_BULK_CLAIM_LEASE_SECS";
    }
}

impl FileConfig {
    /// The file at `path`, or an empty one (every field unset) without a path.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

impl Config {
    /// Checks what `serve` needs beyond each value's type: combinations, ranges, and the HTTP
    /// layer's own limits.
    pub fn validate_for_serving(&self) -> anyhow::Result<()> {
        if self.server.sandbox && !self.server.listen.ip().is_loopback() {
            anyhow::bail!(
                "--sandbox accepts a public token, so it only listens on loopback; {} is not loopback",
                self.server.listen
            );
        }
        if self.service.known_threshold > facegate_core::score::MAX_SCORE {
            anyhow::bail!("known_threshold must be within 0..=9999");
        }
        self.index_config()?;
        self.settings().validate()?;
        Ok(())
    }

    /// What the HTTP layer reads at run time.
    pub fn settings(&self) -> Settings {
        let server = &self.server;
        Settings {
            body_limit_bytes: server.body_limit_bytes,
            request_body_timeout_secs: server.request_body_timeout_secs,
            header_read_timeout_secs: server.header_read_timeout_secs,
            keep_alive_idle_secs: server.keep_alive_idle_secs,
            max_connections: server.max_connections,
            trusted_proxies: server
                .trusted_proxies
                .iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
            cors_allowed_origins: server
                .cors_allowed_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            auth_failure_burst: server.auth_failure_burst,
            auth_failure_refill_secs: server.auth_failure_refill_secs,
            sigv4_region: server.sigv4_region.clone(),
            sigv4_service: server.sigv4_service.clone(),
        }
    }

    /// The engine's configuration, with `intra_threads` ONNX Runtime threads per job unless
    /// configured. The request body limit is also the engine's input limit: one setting, so
    /// that an image that got through the server is never refused by the engine as too large.
    pub fn engine_config(&self, intra_threads: usize) -> EngineConfig {
        let engine = &self.engine;
        EngineConfig {
            runtime_library: engine.runtime_library.clone(),
            model_dir: engine.pack_dir(),
            max_detector_side: engine.max_detector_side,
            detection_threshold: engine.detection_threshold,
            max_pixels: engine.max_image_pixels,
            max_input_bytes: self.server.body_limit_bytes,
            workers: engine.inference_workers.max(1),
            intra_threads: engine.intra_op_threads.unwrap_or(intra_threads).max(1),
            ..EngineConfig::default()
        }
    }

    /// The service's configuration; the queue defaults to a number of jobs per worker.
    pub fn service_config(&self) -> ServiceConfig {
        let workers = self.engine.inference_workers.max(1);
        ServiceConfig {
            known_threshold: self.service.known_threshold,
            inference_workers: workers,
            inference_queue: self.service.inference_queue.unwrap_or(workers * DEFAULT_INFERENCE_QUEUE_PER_WORKER),
            min_face_quality: self.service.min_face_quality,
            max_bulk_queued_per_tenant: self.server.bulk_max_queued_per_tenant,
            ..ServiceConfig::default()
        }
    }

    /// The index configuration; refused for an unknown kind.
    pub fn index_config(&self) -> anyhow::Result<IndexConfig> {
        let index = &self.index;
        let kind: IndexKind = index.index_kind.parse().map_err(|e: String| anyhow::anyhow!("index_kind: {e}"))?;
        let defaults = IndexConfig::default();
        Ok(IndexConfig {
            kind,
            partition_rows: index.index_partition_rows,
            ivf: IvfTuning { probes: index.index_probes.max(1), min_rerank: index.index_rerank, ..defaults.ivf },
            ..defaults
        })
    }

    /// How `serve`'s bulk runner works: as many files at once as inference workers, or one
    /// worker fewer when each job runs several ONNX Runtime threads (they fill the cores
    /// already, and a request then finds a free worker at once). A bulk file may be as large as
    /// an uploaded image.
    pub fn bulk_config(&self) -> BulkConfig {
        let workers = self.engine.inference_workers.max(1);
        let intra_threads = self.engine.serve_intra_op_threads();
        BulkConfig {
            concurrency: if intra_threads > 1 { (workers - 1).max(1) } else { workers },
            max_attempts: self.server.bulk_max_attempts.max(1),
            max_file_bytes: self.server.body_limit_bytes as u64,
            read_timeout: std::time::Duration::from_secs(self.server.bulk_read_timeout_secs.max(1)),
            ..BulkConfig::default()
        }
    }
}

impl Engine {
    /// The pack directory: `model_dir` when given, else the named pack where `scripts/setup`
    /// puts it.
    pub fn pack_dir(&self) -> PathBuf {
        match &self.model_dir {
            Some(dir) => dir.clone(),
            None => facegate_engine::pack_dir(Path::new(DEFAULT_HOME), &self.pack),
        }
    }

    /// ONNX Runtime threads per job in the server: the configured number, else the server's
    /// default for latency, at most one per core.
    pub fn serve_intra_op_threads(&self) -> usize {
        self.intra_op_threads.unwrap_or_else(|| facegate_engine::default_workers().min(DEFAULT_INTRA_OP_THREADS)).max(1)
    }
}

/// A default as `--help` shows it.
trait Shown {
    fn shown(&self) -> String;
}

macro_rules! shown_by_display {
    ($($ty:ty),*) => {
        $(impl Shown for $ty {
            fn shown(&self) -> String {
                self.to_string()
            }
        })*
    };
}
shown_by_display!(SocketAddr, String, bool, u32, u64, usize, f32);

impl Shown for PathBuf {
    fn shown(&self) -> String {
        self.display().to_string()
    }
}

impl Shown for Vec<String> {
    fn shown(&self) -> String {
        if self.is_empty() {
            "none".to_owned()
        } else {
            self.join(",")
        }
    }
}

/// The short help: the summary and the default, as clap shows defaults.
fn help(summary: &str, default: Option<String>) -> String {
    match default {
        Some(default) => format!("{} [default: {default}]", summary.trim()),
        None => summary.trim().to_owned(),
    }
}

/// The long help: the doc comment's paragraphs, and the default.
fn long_help(lines: &[&str], default: Option<String>) -> String {
    let mut paragraphs: Vec<String> = vec![String::new()];
    for line in lines.iter().map(|l| l.trim()) {
        match paragraphs.last_mut() {
            _ if line.is_empty() => paragraphs.push(String::new()),
            Some(last) if last.is_empty() => last.push_str(line),
            Some(last) => {
                last.push(' ');
                last.push_str(line);
            }
            None => paragraphs.push(line.to_owned()),
        }
    }
    paragraphs.retain(|p| !p.is_empty());
    if let Some(default) = default {
        paragraphs.push(format!("[default: {default}]"));
    }
    paragraphs.join("\n\n")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        store: StoreArgs,
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("facegate").chain(args.iter().copied())).expect("valid flags")
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).expect("valid file")
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let file = file("listen = \"127.0.0.1:9000\"\nknown_threshold = 8000\nmax_connections = 7");
        let cli = parse(&["--max-connections", "9"]);
        let server = cli.server.resolve(&file);
        assert_eq!(server.listen.port(), 9000);
        assert_eq!(server.max_connections, 9);
        assert_eq!(server.body_limit_bytes, DEFAULT_BODY_LIMIT_BYTES);
        assert_eq!(cli.store.resolve(&file).data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn a_flag_turns_off_the_files_sandbox() {
        let file = file("sandbox = true");
        assert!(parse(&[]).server.resolve(&file).sandbox);
        assert!(parse(&["--sandbox"]).server.resolve(&FileConfig::default()).sandbox);
        assert!(!parse(&["--sandbox=false"]).server.resolve(&file).sandbox);
        assert!(!parse(&["--sandbox=no"]).server.resolve(&file).sandbox);
    }

    #[test]
    fn stale_templates_are_allowed_only_when_asked_and_a_flag_takes_the_files_back() {
        assert!(!parse(&[]).server.resolve(&FileConfig::default()).allow_stale_templates);
        assert!(parse(&["--allow-stale-templates"]).server.resolve(&FileConfig::default()).allow_stale_templates);
        let file = file("allow_stale_templates = true");
        assert!(parse(&[]).server.resolve(&file).allow_stale_templates);
        assert!(!parse(&["--allow-stale-templates=false"]).server.resolve(&file).allow_stale_templates);
    }

    #[test]
    fn unset_fields_stay_unset_and_lists_split_on_commas() {
        let cli = parse(&["--trusted-proxies", "10.0.0.1, 10.0.0.0/8"]);
        let server = cli.server.resolve(&FileConfig::default());
        assert_eq!(server.bulk_source, None);
        let config = Config {
            server,
            engine: EngineArgs::default().resolve(&FileConfig::default()),
            service: ServiceArgs::default().resolve(&FileConfig::default()),
            index: IndexArgs::default().resolve(&FileConfig::default()),
            store: cli.store.resolve(&file("max_database_bytes = 4096")),
        };
        assert_eq!(config.settings().trusted_proxies, ["10.0.0.1", "10.0.0.0/8"]);
        assert_eq!(config.store.max_database_bytes, Some(4096));
        assert_eq!(config.store.database_url, None);
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nno_such_key = 1").expect_err("refused");
        assert!(err.to_string().contains("no_such_key"), "{err}");
    }

    #[test]
    fn serving_checks_keep_their_messages() {
        let mut config = Config {
            server: parse(&["--sandbox", "--listen", "0.0.0.0:8080"]).server.resolve(&FileConfig::default()),
            engine: EngineArgs::default().resolve(&FileConfig::default()),
            service: ServiceArgs::default().resolve(&FileConfig::default()),
            index: IndexArgs::default().resolve(&FileConfig::default()),
            store: StoreArgs::default().resolve(&FileConfig::default()),
        };
        let err = config.validate_for_serving().expect_err("public sandbox");
        assert!(err.to_string().contains("only listens on loopback"), "{err}");
        config.server.sandbox = false;
        assert!(config.validate_for_serving().is_ok());
        config.service.known_threshold = 10_000;
        assert!(config.validate_for_serving().is_err());
        config.service.known_threshold = 7_000;
        config.index.index_kind = "hnsw".into();
        let err = config.validate_for_serving().expect_err("unknown index kind");
        assert!(err.to_string().contains("auto, flat, ivf"), "{err}");
    }

    #[test]
    fn the_engine_reads_the_body_limit() {
        let file = file("body_limit_bytes = 2048\nintra_op_threads = 3");
        let config = Config {
            server: ServerArgs::default().resolve(&file),
            engine: EngineArgs::default().resolve(&file),
            service: ServiceArgs::default().resolve(&file),
            index: IndexArgs::default().resolve(&file),
            store: StoreArgs::default().resolve(&file),
        };
        let engine = config.engine_config(1);
        assert_eq!(engine.max_input_bytes, 2048);
        assert_eq!(engine.intra_threads, 3);
        assert_eq!(config.engine.serve_intra_op_threads(), 3);
    }

    #[test]
    fn long_help_joins_lines_into_paragraphs() {
        let text = long_help(&[" Summary", "", " one", " two"], Some("5".into()));
        assert_eq!(text, "Summary\n\none two\n\n[default: 5]");
    }
}
