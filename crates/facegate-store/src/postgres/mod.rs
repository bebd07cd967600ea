//! [`PgStore`]: the gallery in PostgreSQL, shared by every facegate node that points at the same
//! database. Each role of the store lives in a file of its own, as for SQLite.
//!
//! The client is the synchronous `postgres` crate with `r2d2`'s pool: the store's ports are
//! synchronous and the service already runs them on blocking threads, so an async client
//! (tokio-postgres with deadpool, sqlx) would only be driven back to blocking calls here; `sqlx`
//! without its compile-time macros would add a second SQL layer for nothing. `postgres` is the
//! same maintained code as tokio-postgres, and needs no database at build time.
//!
//! Every write appends its changes to the `changes` table in its own transaction
//! (`changes.rs`), which is how the other nodes learn of it.

mod bulk;
mod changes;
mod gallery;
pub mod images;
mod migrations;
mod reindex;
pub mod rotate;
mod sql;
mod tags;
mod tenants;
mod unknown;

use std::time::Duration;

use facegate_core::Tenant;
use postgres::NoTls;
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;

use self::images::{ImageStore, InDatabase};
pub(crate) use self::sql::{to_i64, to_u64};
use self::sql::{Conn, Manager};

use crate::crypto::DataKey;
use crate::error::{Result, StoreError};

/// Connections one node keeps at most. Requests hold one only for the length of a query or a
/// transaction: 16 covers the inference workers, the bulk runner and the auth lookups of a busy
/// node, and leaves room for several nodes under PostgreSQL's default of 100 connections.
const POOL_SIZE: u32 = 16;
/// How long a request waits for a free connection before failing, instead of hanging.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// A facegate gallery in PostgreSQL.
pub struct PgStore {
    pool: Pool<Manager>,
    /// For connections outside the pool (the change listener).
    config: postgres::Config,
    /// Seals templates and images when the gallery is encrypted.
    key: Option<DataKey>,
    /// Where the face images are kept.
    images: Box<dyn ImageStore>,
    /// This process, in the bulk records it claims.
    node_id: String,
    /// The connection that LISTENs for changes, opened on first use.
    listener: parking_lot::Mutex<Option<postgres::Client>>,
    /// How long this node's claim on a bulk record holds, in milliseconds.
    claim_lease_ms: std::sync::atomic::AtomicU64,
    /// A node's connection holding [`NODES_LOCK`] shared while the node runs, so that
    /// `facegate keys rotate` can tell that no node is writing with the old key; or a
    /// `facegate reindex`'s holding it exclusively, so that no node starts meanwhile.
    _presence: Option<parking_lot::Mutex<postgres::Client>>,
}

/// Held shared by every node for as long as it runs, and exclusively by a key rotation or a
/// reindex ("facegate" + 2).
pub(crate) const NODES_LOCK: i64 = 0x6661_6365_6761_7467;

/// A connection of its own holding [`NODES_LOCK`] shared; refused while a key rotation or a
/// reindex runs.
fn announce_node(config: &postgres::Config) -> Result<postgres::Client> {
    let mut client = config.connect(NoTls)?;
    let taken: bool = client.query_one("SELECT pg_try_advisory_lock_shared($1)", &[&NODES_LOCK])?.get(0);
    if !taken {
        return Err(StoreError::Locked(
            "a key rotation or a reindex is running on this database; start the node after it".into(),
        ));
    }
    Ok(client)
}

/// A connection of its own holding [`NODES_LOCK`] exclusively; refused while any node runs.
fn exclude_nodes(config: &postgres::Config) -> Result<postgres::Client> {
    let mut client = config.connect(NoTls)?;
    let taken: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&NODES_LOCK])?.get(0);
    if !taken {
        return Err(StoreError::Locked(
            "facegate nodes, a key rotation or another reindex are running on this database; stop them first".into(),
        ));
    }
    Ok(client)
}

/// How long a claim on a bulk record holds by default. A runner renews its claims each time it
/// reads its queue (seconds apart), and one record takes well under a minute even with its
/// retries; a dead node's records are taken over by the others after this.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(120);

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("node_id", &self.node_id).field("encrypted", &self.key.is_some()).finish()
    }
}

/// How a process opens the gallery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgRole {
    /// A `facegate serve` node or a direct import: may mark a gallery without faces encrypted.
    Node,
    /// A tool beside the nodes (`tenant`): checks a key it is given, never records one.
    Tool,
    /// A tool that must run alone (`reindex`): refused while any node runs, and no node starts
    /// until it is done. Checks a key it is given, never records one.
    Exclusive,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), creates or upgrades the schema (one
    /// node at a time, under an advisory lock), and checks `key` against the gallery's.
    pub fn connect(url: &str, key: Option<DataKey>, role: PgRole) -> Result<PgStore> {
        let config: postgres::Config =
            url.parse().map_err(|e| StoreError::Inconsistent(format!("invalid database URL: {e}")))?;
        let pool = Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(POOL_WAIT)
            .build(PostgresConnectionManager::new(config.clone(), NoTls))?;
        let mut conn = pool.get()?;
        let version = migrations::migrate(&mut conn)?;
        let presence = match role {
            PgRole::Node => Some(announce_node(&config)?),
            PgRole::Exclusive => Some(exclude_nodes(&config)?),
            PgRole::Tool => None,
        };
        check_key(&mut conn, key.as_ref(), role == PgRole::Node)?;
        drop(conn);
        tracing::debug!(version, encrypted = key.is_some(), "opened PostgreSQL store");
        Ok(PgStore {
            pool,
            config,
            key,
            images: Box::new(InDatabase),
            node_id: uuid::Uuid::new_v4().to_string(),
            listener: parking_lot::Mutex::new(None),
            _presence: presence.map(parking_lot::Mutex::new),
            claim_lease_ms: std::sync::atomic::AtomicU64::new(DEFAULT_CLAIM_LEASE.as_millis() as u64),
        })
    }

    /// How long this node's claims on bulk records hold before another node may take them.
    pub fn set_claim_lease(&self, lease: Duration) {
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        self.claim_lease_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn claim_lease_secs(&self) -> f64 {
        self.claim_lease_ms.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0
    }

    pub(crate) fn conn(&self) -> Result<Conn> {
        Ok(self.pool.get()?)
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64> {
        migrations::version(&mut *self.conn()?)
    }

    /// The stored bytes of one sample's image (sealed when the gallery is encrypted).
    pub fn image_bytes(&self, tenant_id: &str, image_name: &str) -> Result<Option<Vec<u8>>> {
        let path = crate::image_path::rel_path(tenant_id, image_name)?;
        self.images.load(&mut self.conn()?, &path)
    }
}

/// `store_meta` row naming the key the gallery is encrypted under.
const META_KEY_ID: &str = "encryption_key_id";
/// Serialises the first recording of a key between nodes starting together.
const KEY_LOCK: i64 = 0x6661_6365_6b65_7901;

fn check_key(conn: &mut Conn, key: Option<&DataKey>, may_record: bool) -> Result<()> {
    let mut tx = conn.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEY_LOCK])?;
    let recorded: Option<String> =
        tx.query_opt("SELECT value FROM store_meta WHERE name = $1", &[&META_KEY_ID])?.map(|row| row.get(0));
    let has_samples: bool =
        tx.query_one("SELECT EXISTS (SELECT 1 FROM face_samples) OR EXISTS (SELECT 1 FROM sightings)", &[])?.get(0);
    let record = crate::crypto::check_key_state(recorded, key, may_record, &|| Ok(has_samples))?;
    if let (true, Some(key)) = (record, key) {
        tx.execute("INSERT INTO store_meta (name, value) VALUES ($1, $2)", &[&META_KEY_ID, &key.id_hex()])?;
        tracing::info!(key_id = %key.id_hex(), "gallery set to encrypt templates and images");
    }
    tx.commit()?;
    Ok(())
}

fn tenant_from_row(row: &postgres::Row) -> Tenant {
    Tenant { id: row.get(0), name: row.get(1), created_at: row.get(2) }
}

impl facegate_core::Store for PgStore {
    fn check_ready(&self) -> facegate_core::Result<()> {
        let answered = self.conn().and_then(|mut c| Ok(c.query_one("SELECT 1", &[])?));
        if let Err(e) = answered {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            return Err(facegate_core::Error::Storage("the database does not answer".into()));
        }
        Ok(())
    }

    fn change_feed(&self) -> Option<&dyn facegate_core::ChangeFeed> {
        Some(self)
    }
}
