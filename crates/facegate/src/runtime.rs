//! Composition root: builds the engine, store, index and service from settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use facegate_core::{FaceService, ServiceConfig, Store};
use facegate_engine::{EngineConfig, OrtEngine};
use facegate_index::FlatIndex;
use facegate_server::Settings;
use facegate_store::{DataDirLock, DataKey, PgRole, PgStore, SqliteStore};

/// Where the models and runtime are; shared by every command that runs inference.
#[derive(Args, Clone, Debug, Default)]
pub struct EngineArgs {
    /// ONNX Runtime shared library [default: .facegate/onnxruntime/libonnxruntime.so]
    #[arg(long, env = "FACEGATE_RUNTIME_LIBRARY")]
    pub runtime_library: Option<PathBuf>,
    /// Model pack directory with manifest.toml [default: .facegate/models/buffalo_s]
    #[arg(long, env = "FACEGATE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Inference workers [default: number of cores]
    #[arg(long, env = "FACEGATE_INFERENCE_WORKERS")]
    pub inference_workers: Option<usize>,
    /// ONNX Runtime threads per inference job [default: 2 for serve (1 on one core), 1 for import]
    #[arg(long, env = "FACEGATE_INTRA_OP_THREADS")]
    pub intra_op_threads: Option<usize>,
}

impl EngineArgs {
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(v) = &self.runtime_library {
            settings.runtime_library = v.clone();
        }
        if let Some(v) = &self.model_dir {
            settings.model_dir = v.clone();
        }
        if let Some(v) = self.inference_workers {
            settings.inference_workers = v;
        }
        if let Some(v) = self.intra_op_threads {
            settings.intra_op_threads = v;
        }
    }
}

pub fn load_engine(settings: &Settings) -> anyhow::Result<OrtEngine> {
    OrtEngine::load(&engine_config(settings)).context("loading the face models")
}

/// The engine's configuration from the settings.
pub fn engine_config(settings: &Settings) -> EngineConfig {
    EngineConfig {
        runtime_library: settings.runtime_library.clone(),
        model_dir: settings.model_dir.clone(),
        max_detector_side: settings.max_detector_side,
        detection_threshold: settings.detection_threshold,
        max_pixels: settings.max_image_pixels,
        max_input_bytes: settings.body_limit_bytes,
        workers: settings.inference_workers.max(1),
        intra_threads: settings.intra_op_threads.max(1),
        ..EngineConfig::default()
    }
}

/// The data key of an encrypted data directory.
#[derive(Args, Clone, Debug, Default)]
pub struct KeyFileArg {
    /// File with the 256-bit key (32 bytes, 64 hex digits or base64) that templates and face
    /// images are encrypted with; `facegate keys generate` makes one
    #[arg(long, env = "FACEGATE_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
}

pub fn read_key(path: Option<&Path>) -> anyhow::Result<Option<DataKey>> {
    path.map(|p| DataKey::from_file(p).with_context(|| format!("reading the encryption key {}", p.display())))
        .transpose()
}

/// Opens the store beside the processes that serve it (`tenant` commands): the PostgreSQL
/// database of `database_url`, or the SQLite data directory beside whatever process holds it. A
/// key, if given, is checked against the gallery, never recorded.
pub fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let key = read_key(settings.encryption_key_file.as_deref())?;
    if let Some(url) = &settings.database_url {
        return Ok(Arc::new(PgStore::connect(url, key, PgRole::Tool).context("connecting to PostgreSQL")?));
    }
    Ok(Arc::new(open_sqlite(settings, key, None)?))
}

fn open_sqlite(settings: &Settings, key: Option<DataKey>, lock: Option<&DataDirLock>) -> anyhow::Result<SqliteStore> {
    facegate_store::private_fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let store = match lock {
        Some(lock) => SqliteStore::open_locked(&settings.data_dir, key, lock),
        None => SqliteStore::open_with_key(&settings.data_dir, key),
    }
    .with_context(|| format!("opening the store in {}", settings.data_dir.display()))?;
    if let Some(bytes) = settings.max_database_bytes {
        store.set_max_database_bytes(bytes).context("capping the database size")?;
    }
    store.set_min_free_disk_bytes(settings.min_free_disk_bytes);
    Ok(store)
}

/// The store a service runs on, with what only its backend does.
pub enum Backend {
    /// One process per data directory: this one holds its lock until the backend is dropped.
    Sqlite { store: Arc<SqliteStore>, _lock: DataDirLock },
    /// Shared with other nodes.
    Postgres { store: Arc<PgStore> },
}

impl Backend {
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite { store, .. } => store.clone(),
            Backend::Postgres { store } => store.clone(),
        }
    }

    /// Tenants renamed at open because their names did not fit the safe alphabet.
    pub fn renamed_tenants(&self) -> Vec<(String, String)> {
        match self {
            Backend::Sqlite { store, .. } => store.renamed_tenants().to_vec(),
            Backend::Postgres { .. } => Vec::new(),
        }
    }

    /// At shutdown: folds SQLite's WAL into the database file, so a backup of the stopped
    /// directory needs no WAL. Acknowledged writes are durable either way.
    pub fn checkpoint(&self) {
        let Backend::Sqlite { store, .. } = self else { return };
        match store.checkpoint() {
            Ok(true) => tracing::info!("database checkpointed"),
            Ok(false) => tracing::warn!("database checkpoint incomplete; the WAL is replayed on the next start"),
            Err(e) => tracing::warn!(error = %e, "database checkpoint failed; the WAL is replayed on the next start"),
        }
    }
}

/// The full service with its index loaded from the store: the PostgreSQL database of
/// `database_url`, shared with other nodes, or the SQLite data directory, which this process then
/// holds alone until the backend is dropped. The directory's lock is taken before its store is
/// opened: only its holder may change the encryption state or rename tenants.
pub fn build_service(settings: &Settings) -> anyhow::Result<(Arc<FaceService>, Backend)> {
    let key = read_key(settings.encryption_key_file.as_deref())?;
    let backend = match &settings.database_url {
        Some(url) => {
            let store = PgStore::connect(url, key, PgRole::Node).context("connecting to PostgreSQL")?;
            store.set_claim_lease(std::time::Duration::from_secs(settings.bulk_claim_lease_secs.max(1)));
            Backend::Postgres { store: Arc::new(store) }
        }
        None => {
            facegate_store::private_fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
            let lock = DataDirLock::acquire(&settings.data_dir)?;
            let store = Arc::new(open_sqlite(settings, key, Some(&lock))?);
            let swept = store.sweep_orphans_exclusive(&lock).context("sweeping orphan image files")?;
            if swept > 0 {
                tracing::warn!(files = swept, "removed image files left without a row by an earlier crash");
            }
            Backend::Sqlite { store, _lock: lock }
        }
    };
    let engine = Arc::new(load_engine(settings)?);
    let index = Arc::new(FlatIndex::new());
    let config = ServiceConfig {
        known_threshold: settings.known_threshold,
        inference_workers: settings.inference_workers.max(1),
        inference_queue: settings.inference_queue,
        min_face_quality: settings.min_face_quality,
    };
    let service = Arc::new(FaceService::new(engine, backend.store(), index, config));
    let started = std::time::Instant::now();
    let templates = service.load_index().context("loading templates into the index")?;
    tracing::info!(templates, ms = started.elapsed().as_millis() as u64, "index loaded");
    Ok((service, backend))
}
