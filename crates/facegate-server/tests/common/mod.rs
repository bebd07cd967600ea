//! What the API integration tests share: a real server on a random loopback port (real models,
//! real SQLite in a temporary directory, or PostgreSQL under `FACEGATE_TEST_STORE=postgres`), and
//! clients for both dialects, each with a timeout.

#![allow(dead_code, unused_imports)] // each test binary uses its own part of this module

pub use std::collections::HashMap;
pub use std::net::SocketAddr;
pub use std::path::{Path, PathBuf};
pub use std::sync::{Arc, OnceLock};

pub use facegate_core::service::{BulkRunner, BULK_STOP_GRACE};
pub use facegate_core::{BulkConfig, FaceService, ServiceConfig};
pub use facegate_engine::{EngineConfig, OrtEngine};
pub use facegate_index::FlatIndex;
pub use facegate_server::config::{SANDBOX_TENANT, SANDBOX_TOKEN};
pub use facegate_server::{AppState, Settings};
pub use facegate_store::SqliteStore;
pub use reqwest::multipart::{Form, Part};
pub use reqwest::StatusCode;
pub use serde_json::Value;

pub const AUTH: &str = "Token 0e653da4969a757d21de0ffa6387d5fbd6401131";

pub use facegate_testkit::{files_under, shared_datasets, workspace_root};

pub fn pack_dir() -> PathBuf {
    workspace_root().join(".facegate/models/buffalo_s")
}

pub fn engine() -> Arc<OrtEngine> {
    static ENGINE: OnceLock<Arc<OrtEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let root = workspace_root();
            let config = EngineConfig {
                runtime_library: root.join(".facegate/onnxruntime/libonnxruntime.so"),
                model_dir: pack_dir(),
                ..EngineConfig::default()
            };
            Arc::new(OrtEngine::load(&config).expect("models present: run scripts/setup"))
        })
        .clone()
}

pub fn asset(name: &str) -> Vec<u8> {
    std::fs::read(pack_dir().join(name)).expect("pack image present: run scripts/setup")
}

/// What a test server starts with: the HTTP layer's settings, and what `facegate serve`
/// configures beside them (the service, the bulk runner, the store's limits). A [`Settings`]
/// alone stands for the defaults of the rest.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub settings: Settings,
    pub service: ServiceConfig,
    pub bulk: BulkConfig,
    /// As `--max-database-bytes`: SQLite only.
    pub max_database_bytes: Option<u64>,
    /// As `--min-free-disk-bytes`: SQLite only; 0, the store's own default off, so that a full
    /// test machine does not fail unrelated tests.
    pub min_free_disk_bytes: u64,
}

impl From<Settings> for Setup {
    fn from(settings: Settings) -> Self {
        Setup { settings, ..Setup::default() }
    }
}

pub struct TestServer {
    pub base: String,
    /// The PostgreSQL cluster the server's store lives in, under `FACEGATE_TEST_STORE=postgres`;
    /// removed when the server is dropped.
    cluster: Option<facegate_testkit::PgCluster>,
    pub service: Arc<FaceService>,
    pub data_dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, Settings::default()).await
    }

    pub async fn start_with(data_dir: &Path, settings: impl Into<Setup>) -> Self {
        let bucket = facegate_store::BucketSource::local(&data_dir.join("bucket")).expect("bucket");
        Self::start_with_source(data_dir, settings, Arc::new(bucket)).await
    }

    pub async fn start_with_source(
        data_dir: &Path,
        settings: impl Into<Setup>,
        bulk_source: Arc<dyn facegate_core::ImageSource>,
    ) -> Self {
        Self::start_on(data_dir, settings.into(), bulk_source, engine(), KeptStore::default()).await
    }

    /// A server on the store a stopped one left ([`TestServer::stop_keeping_store`]): a restart.
    pub async fn restart(data_dir: &Path, kept: KeptStore) -> Self {
        let bucket = facegate_store::BucketSource::local(&data_dir.join("bucket")).expect("bucket");
        Self::start_on(data_dir, Setup::default(), Arc::new(bucket), engine(), kept).await
    }

    /// A server on the core's fake engine (`facegate_core::testing::FakeEngine`): for tests of
    /// the HTTP surface that need no real face, so they load no model.
    pub async fn start_on_fakes(data_dir: &Path, settings: impl Into<Setup>) -> Self {
        let bucket = facegate_store::BucketSource::local(&data_dir.join("bucket")).expect("bucket");
        let engine: Arc<dyn facegate_core::Engine> = Arc::new(facegate_core::testing::FakeEngine::default());
        Self::start_on(data_dir, settings.into(), Arc::new(bucket), engine, KeptStore::default()).await
    }

    /// The service as `facegate serve` composes it, its background work included, behind the
    /// HTTP layer.
    async fn start_on(
        data_dir: &Path,
        setup: Setup,
        bulk_source: Arc<dyn facegate_core::ImageSource>,
        engine: Arc<dyn facegate_core::Engine>,
        kept: KeptStore,
    ) -> Self {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let Setup { settings, service: config, bulk, max_database_bytes, min_free_disk_bytes } = setup;
        // Store calls block (PostgreSQL's client most of all): off the async threads.
        let dir = data_dir.to_owned();
        let (service, cluster) = tokio::task::spawn_blocking(move || {
            let (store, cluster) = open_store(&dir, max_database_bytes, min_free_disk_bytes, kept.cluster);
            let service = Arc::new(
                FaceService::new(engine, store, Arc::new(FlatIndex::new()), config)
                    .with_unknown_index(Arc::new(FlatIndex::new())),
            );
            service.load_index().expect("load index");
            (service, cluster)
        })
        .await
        .expect("set up the store");
        service.ensure_tenant_with_token(SANDBOX_TENANT, SANDBOX_TOKEN).await.expect("sandbox tenant");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let background = service.start_background_work(Some(BulkRunner { source: bulk_source, config: bulk }));
        let state = AppState::new(service.clone(), settings);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            facegate_server::serve(listener, None, state, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
            background.stop(BULK_STOP_GRACE).await;
        });
        Self {
            cluster,
            base: format!("http://{addr}"),
            service,
            data_dir: data_dir.to_owned(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Creates a tenant as `facegate tenant create` does.
    pub async fn create_tenant(&self, name: &str) -> facegate_core::Result<facegate_core::service::NewTenant> {
        self.service.create_tenant(name).await
    }

    /// The gallery as a command beside the server opens it (`facegate tenant set`): a second
    /// store on the same SQLite directory or PostgreSQL database.
    pub fn side_store(&self) -> Arc<dyn facegate_core::Store> {
        match &self.cluster {
            Some(cluster) => Arc::new(
                facegate_store::PgStore::connect(cluster.url(), None, facegate_store::PgRole::Tool)
                    .expect("open the PostgreSQL store beside the server"),
            ),
            None => Arc::new(SqliteStore::open(&self.data_dir).expect("open the store beside the server")),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The PostgreSQL database the store lives in; `None` on SQLite.
    pub fn database_url(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.url().to_owned())
    }

    /// How many face images the store holds: the files under `images/` on SQLite, the
    /// `image_blobs` rows on PostgreSQL, where the images live in the database.
    pub async fn stored_images(&self) -> usize {
        match self.database_url() {
            None => files_under(&self.data_dir.join("images")).len(),
            Some(url) => {
                let count = pg_query_one(url, "SELECT COUNT(*) FROM image_blobs").await;
                usize::try_from(count).expect("a count")
            }
        }
    }

    /// Stops and removes the PostgreSQL cluster under the running server, as a database outage
    /// would. Does nothing on SQLite.
    pub async fn stop_database(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            tokio::task::spawn_blocking(move || drop(cluster)).await.expect("stop the cluster");
        }
    }

    /// Stops the server and hands back its store, for [`TestServer::restart`] on the same data
    /// directory: on PostgreSQL the cluster would otherwise be removed with the server.
    pub async fn stop_keeping_store(mut self) -> KeptStore {
        let cluster = self.cluster.take();
        self.stop().await;
        KeptStore { cluster }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        // The store's last owner may be this: a PostgreSQL client closes its connections by
        // blocking, which must not happen on an async thread.
        tokio::task::spawn_blocking(move || drop(self)).await.expect("drop the server");
    }
}

/// What a stopped server leaves for the next one: on PostgreSQL its cluster, where the gallery
/// is; on SQLite nothing, the data directory being the store.
#[derive(Default)]
pub struct KeptStore {
    cluster: Option<facegate_testkit::PgCluster>,
}

/// Whether the test servers of this run keep their store in PostgreSQL (`FACEGATE_TEST_STORE`,
/// which `scripts/test-on-postgres` sets), rather than SQLite.
pub fn on_postgres() -> bool {
    std::env::var("FACEGATE_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// Runs `sql` on the database at `url` (off the async threads, as the client blocks) and returns
/// the first column of its one row.
pub async fn pg_query_one(url: String, sql: &'static str) -> i64 {
    tokio::task::spawn_blocking(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect to the test database");
        db.query_one(sql, &[]).expect(sql).get(0)
    })
    .await
    .expect("query")
}

/// Runs `sql` (statements, no rows) on the database at `url`, off the async threads.
pub async fn pg_execute(url: String, sql: String) {
    tokio::task::spawn_blocking(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect to the test database");
        db.batch_execute(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
    .await
    .expect("execute");
}

/// The store a test server runs on: SQLite in `data_dir`, or, when [`on_postgres`], a PostgreSQL
/// store on a throwaway cluster (the one `kept` names, after a restart), so that the same suites
/// run against both backends.
fn open_store(
    data_dir: &Path,
    max_database_bytes: Option<u64>,
    min_free_disk_bytes: u64,
    kept: Option<facegate_testkit::PgCluster>,
) -> (Arc<dyn facegate_core::Store>, Option<facegate_testkit::PgCluster>) {
    if on_postgres() {
        let cluster = kept
            .or_else(facegate_testkit::PgCluster::start)
            .expect("FACEGATE_TEST_STORE=postgres, and no PostgreSQL cluster could be started");
        let store = facegate_store::PgStore::connect(cluster.url(), None, facegate_store::PgRole::Node)
            .expect("open the PostgreSQL store");
        return (Arc::new(store), Some(cluster));
    }
    let store = SqliteStore::open(data_dir).expect("open store");
    if let Some(bytes) = max_database_bytes {
        store.set_max_database_bytes(bytes).expect("cap the database");
    }
    store.set_min_free_disk_bytes(min_free_disk_bytes);
    (Arc::new(store), None)
}

/// How long any one request of a test may take: well past a real model's inference on a busy
/// 2-core machine, so that only a server that hangs fails by it, and in bounded time.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("HTTP client")
}

/// A multipart body as Python `requests` builds it from `data=` and `files=`.
pub fn person_form(fields: &[(&str, &str)], image: Option<(&str, Vec<u8>)>) -> Form {
    let mut form = Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    if let Some((name, bytes)) = image {
        let part = Part::bytes(bytes).file_name(name.to_string()).mime_str("multipart/form-data").expect("mime");
        form = form.part("image_path", part);
    }
    form
}

pub async fn json_of(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let text = res.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

/// Sends a request and reads its JSON answer.
pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    json_of(req.send().await.expect("send")).await
}

pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

pub fn assert_fail(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], "fail", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

pub async fn enroll(server: &TestServer, id: &str, name: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let form = person_form(
        &[("customer_person_id", id), ("first_name", "John"), ("last_name", "Doe"), ("email", "test@domain.com")],
        Some((name, bytes)),
    );
    send(client().post(server.url("/miicloud/person")).header("Authorization", AUTH).multipart(form)).await
}

pub async fn match_faces(server: &TestServer, bytes: Vec<u8>, customer_person_id: Option<&str>) -> (StatusCode, Value) {
    let mut fields = vec![("image_path", "input/test_images/test_001.jpg")];
    if let Some(id) = customer_person_id {
        fields.push(("customer_person_id", id));
    }
    let form = person_form(&fields, Some(("test_001.jpg", bytes)));
    send(client().post(server.url("/miicloud/match_faces")).header("Authorization", AUTH).multipart(form)).await
}

/// A request to the NEC dialect signed with AWS Signature V4 by the `aws-sigv4` crate, as a
/// Rust NEC client signs it.
pub fn nec_request(
    server: &TestServer,
    creds: &facegate_core::ApiCredentials,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    nec_request_bytes(server, creds, method, path, body)
}

/// As [`nec_request`], with a body of any bytes (not necessarily JSON).
pub fn nec_request_bytes(
    server: &TestServer,
    creds: &facegate_core::ApiCredentials,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let url = server.url(path);
    let host = url.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned();
    let headers = facegate_testkit::nec_headers(
        method,
        &host,
        path,
        &body,
        &creds.api_key,
        &creds.access_key_id,
        &creds.secret_access_key,
    );
    let mut req = client().request(method.parse().expect("method"), &url).body(body);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    req
}

static CAPTURED_LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogCapture;

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED_LOGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every event that `filter` lets through, as the server's text log writes it, to a
/// buffer that [`captured_logs`] reads. Once per test binary.
pub fn capture_logs(filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogCapture)
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber in this test binary");
}

/// Everything logged since [`capture_logs`].
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&CAPTURED_LOGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
}
