//! Composition root: builds the engine, store, index and service from settings.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use facegate_core::{FaceService, Store};
use facegate_engine::OrtEngine;
use facegate_index::{FlatIndex, SnapshotDir};
use facegate_store::{BucketSource, DataDirLock, DataKey, PgRole, PgStore, SqliteStore};

use crate::config::{self, Config};

/// Where a node keeps its index snapshots, under its data directory: on its own disk, also on
/// PostgreSQL, where each node has its own.
pub const SNAPSHOT_DIR: &str = "index-snapshots";

/// The engine as `config` says, with `intra_threads` ONNX Runtime threads per job unless
/// configured.
pub fn load_engine(config: &Config, intra_threads: usize) -> anyhow::Result<OrtEngine> {
    OrtEngine::load(&config.engine_config(intra_threads)).context("loading the face models")
}

pub fn read_key(path: Option<&Path>) -> anyhow::Result<Option<DataKey>> {
    path.map(|p| DataKey::from_file(p).with_context(|| format!("reading the encryption key {}", p.display())))
        .transpose()
}

/// Opens the store beside the processes that serve it (`tenant` commands): the PostgreSQL
/// database of `database_url`, or the SQLite data directory beside whatever process holds it. A
/// key, if given, is checked against the gallery, never recorded.
pub fn open_store(config: &config::Store) -> anyhow::Result<Arc<dyn Store>> {
    let key = read_key(config.encryption_key_file.as_deref())?;
    if let Some(url) = &config.database_url {
        return Ok(Arc::new(PgStore::connect(url, key, PgRole::Tool).context("connecting to PostgreSQL")?));
    }
    Ok(Arc::new(open_sqlite(config, key, None)?))
}

fn open_sqlite(
    config: &config::Store,
    key: Option<DataKey>,
    lock: Option<&DataDirLock>,
) -> anyhow::Result<SqliteStore> {
    let data_dir = &config.data_dir;
    facegate_store::private_fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let store = match lock {
        Some(lock) => SqliteStore::open_locked(data_dir, key, lock),
        None => SqliteStore::open_with_key(data_dir, key),
    }
    .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    if let Some(bytes) = config.max_database_bytes {
        store.set_max_database_bytes(bytes).context("capping the database size")?;
    }
    store.set_min_free_disk_bytes(config.min_free_disk_bytes);
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

/// The gallery, held as `role` says: the PostgreSQL database of `database_url` (shared with the
/// other nodes, or with every node kept off for [`PgRole::Exclusive`]), or the SQLite data
/// directory, which this process then holds alone until the backend is dropped. The directory's
/// lock is taken before its store is opened: only its holder may change the encryption state or
/// rename tenants.
fn open_backend(config: &Config, role: PgRole) -> anyhow::Result<Backend> {
    let key = read_key(config.store.encryption_key_file.as_deref())?;
    let data_dir = &config.store.data_dir;
    Ok(match &config.store.database_url {
        Some(url) => {
            let store = PgStore::connect(url, key, role).context("connecting to PostgreSQL")?;
            store.set_claim_lease(std::time::Duration::from_secs(config.store.bulk_claim_lease_secs.max(1)));
            Backend::Postgres { store: Arc::new(store) }
        }
        None => {
            facegate_store::private_fs::create_dir_all(data_dir)
                .with_context(|| format!("creating data directory {}", data_dir.display()))?;
            let lock = DataDirLock::acquire(data_dir)?;
            let store = Arc::new(open_sqlite(&config.store, key, Some(&lock))?);
            let swept = store.sweep_orphans_exclusive(&lock).context("sweeping orphan image files")?;
            if swept > 0 {
                tracing::warn!(files = swept, "removed image files left without a row by an earlier crash");
            }
            Backend::Sqlite { store, _lock: lock }
        }
    })
}

/// The gallery for a command that must run with no server on it (`reindex`): the SQLite data
/// directory's lock, or on PostgreSQL every node kept off until the backend is dropped.
pub fn open_alone(config: &Config) -> anyhow::Result<Backend> {
    open_backend(config, PgRole::Exclusive)
}

/// The gallery for `tenant delete`, which removes files a SQLite server may be writing but only
/// rows on PostgreSQL: the SQLite data directory's lock (refused while a server runs on it), or
/// a tool's connection to PostgreSQL beside running nodes, which learn of the delete from the
/// change log.
pub fn open_beside_nodes(config: &Config) -> anyhow::Result<Backend> {
    open_backend(config, PgRole::Tool)
}

/// The full service with its index loaded from the store, with `intra_threads` ONNX Runtime
/// threads per inference job unless configured, over the gallery held as a node holds it
/// ([`open_backend`]).
pub fn build_service(config: &Config, intra_threads: usize) -> anyhow::Result<(Arc<FaceService>, Backend)> {
    let backend = open_backend(config, PgRole::Node)?;
    let engine = Arc::new(load_engine(config, intra_threads)?);
    let index = Arc::new(FlatIndex::with_config(config.index_config()?));
    let mut service = FaceService::new(engine, backend.store(), index.clone(), config.service_config())
        .with_unknown_index(Arc::new(FlatIndex::new()));
    if config.store.encryption_key_file.is_some() {
        // A snapshot holds every template in the clear; the store keeps them sealed. Snapshots
        // from before the gallery was encrypted go.
        tracing::info!("index snapshots are off for an encrypted gallery: the index loads from the store");
        let dir = config.store.data_dir.join(SNAPSHOT_DIR);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the unencrypted index snapshots in {}", dir.display()))?;
            tracing::warn!(dir = %dir.display(), "removed index snapshots written before the gallery was encrypted");
        }
    } else {
        let dir = config.store.data_dir.join(SNAPSHOT_DIR);
        let snapshots = SnapshotDir::open(&dir, index)
            .with_context(|| format!("opening the index snapshot directory {}", dir.display()))?;
        service = service.with_snapshots(Arc::new(snapshots));
    }
    let service = Arc::new(service);
    let started = std::time::Instant::now();
    let templates = service.load_index().context("loading templates into the index")?;
    // Whatever the snapshots missed, before the index serves: a snapshot is never served older
    // than the store.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let position =
        runtime.block_on(service.sync_index()).context("applying the changes made since the index snapshots")?;
    tracing::info!(templates, position, ms = started.elapsed().as_millis() as u64, "index loaded");
    // A node killed right after this start must not load its index from the store again.
    runtime.block_on(service.write_missing_snapshots());
    Ok((service, backend))
}

/// Where NEC bulk registration reads files: `bulk_source` (a folder or `s3://`), else the data
/// directory's `bucket/`. `serve` reads from it, and `tenant create|delete` look after the
/// tenant's folder in it.
pub fn bulk_source(config: &Config) -> anyhow::Result<BucketSource> {
    let source = match config.server.bulk_source.as_deref() {
        Some(url) if url.starts_with("s3://") => BucketSource::s3(url, config.server.bulk_s3_endpoint.as_deref()),
        Some(dir) => BucketSource::local(Path::new(dir)),
        None => BucketSource::local(&config.store.data_dir.join("bucket")),
    };
    source.context("setting up the bulk registration source")
}
