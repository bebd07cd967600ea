//! A node restarting from its index snapshots: the snapshot is brought up to date from the
//! store's change log (writes and deletes made after it, by this node or, on PostgreSQL, by
//! another), one whose changes the log no longer holds is not trusted, and one a kill left
//! half-written is ignored. On the core's fake engine, SQLite and a real PostgreSQL.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use facegate_core::service::{FacePolicy, NewSubject, SubjectKey};
use facegate_core::testing::FakeEngine;
use facegate_core::{FaceService, ImageUpload, Index, IndexSnapshots, ServiceConfig, Store, Template, Tenant};
use facegate_index::{FlatIndex, SnapshotDir};
use facegate_store::{PgRole, PgStore, SqliteStore};
use facegate_testkit::PgCluster;

const MODEL: &str = "fake@1";

struct Node {
    service: Arc<FaceService>,
    index: Arc<FlatIndex>,
    snapshots: Arc<SnapshotDir>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// A node as `facegate serve` starts one: snapshots in `dir`, the index loaded from them and
/// the store, then brought up to date from the log before it serves.
async fn start(store: Arc<dyn Store>, dir: &Path) -> Node {
    let index = Arc::new(FlatIndex::new());
    let snapshots = Arc::new(SnapshotDir::open(&dir.join("index-snapshots"), index.clone()).expect("snapshot dir"));
    let service = FaceService::new(Arc::new(FakeEngine::default()), store, index.clone(), ServiceConfig::default());
    let service = Arc::new(service.with_snapshots(snapshots.clone()));
    let loading = service.clone();
    blocking(move || loading.load_index().expect("load")).await;
    service.sync_index().await.expect("catch up");
    Node { service, index, snapshots }
}

async fn enroll(node: &FaceService, tenant: &Tenant, name: &str, label: &str) -> String {
    let new = NewSubject {
        customer_id: Some(name.into()),
        profile: Default::default(),
        tags: Vec::new(),
        image: ImageUpload { file_name: "p.jpg".into(), bytes: format!("face:{label}").into_bytes() },
        policy: FacePolicy::Largest,
    };
    node.create_subject(tenant, new).await.expect("enroll").subject.id
}

async fn delete(node: &FaceService, tenant: &Tenant, name: &str) {
    node.delete_subject(tenant, SubjectKey::CustomerId(name)).await.expect("delete");
}

/// Every subject the index finds for the tenant, by searching along each axis of the fake
/// engine's 8-value templates.
fn indexed(index: &FlatIndex, tenant: &Tenant) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for axis in 0..8 {
        let mut query = vec![0.0; 8];
        query[axis] = 1.0;
        found.extend(index.search(&tenant.id, &query, 1_000).into_iter().map(|h| h.subject_id));
    }
    found
}

/// A template only the index holds, never stored: found after a restart only when the index
/// came from the snapshot rather than the store.
fn plant_ghost(index: &FlatIndex, tenant: &Tenant) {
    let mut embedding = vec![0.0; 8];
    embedding[3] = 1.0;
    index.insert(Template {
        tenant_id: tenant.id.clone(),
        subject_id: "ghost".into(),
        sample_id: "ghost-sample".into(),
        embedding,
    });
}

async fn save(node: &Node, tenant: &Tenant) {
    node.service.sync_index().await.expect("catch up");
    let (snapshots, id, position) = (node.snapshots.clone(), tenant.id.clone(), node.service.applied_change());
    blocking(move || snapshots.save(&id, MODEL, position).expect("save").expect("tenant held")).await;
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn snapshot_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> =
        std::fs::read_dir(dir.join("index-snapshots")).expect("list").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_brought_up_to_date_from_the_log_and_never_trusted_past_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || Arc::new(SqliteStore::open(dir.path()).expect("open")) as Arc<dyn Store>;
    let node = start(open(), dir.path()).await;
    let tenant = node.service.create_tenant("t").await.expect("tenant").tenant;
    let a = enroll(&node.service, &tenant, "a", "ann").await;
    let b = enroll(&node.service, &tenant, "b", "bob").await;
    plant_ghost(&node.index, &tenant);
    save(&node, &tenant).await;
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&files[0]).expect("stat").permissions());
    assert_eq!(mode & 0o777, 0o600, "a snapshot holds faces: private");
    // After the snapshot: a write and a delete.
    let c = enroll(&node.service, &tenant, "c", "cat").await;
    delete(&node.service, &tenant, "a").await;
    drop(node);

    // Restarted (as after SIGKILL: nothing was written at stop): from the snapshot, caught up.
    let node = start(open(), dir.path()).await;
    assert_eq!(indexed(&node.index, &tenant), set(&[&b, &c, "ghost"]), "ghost: the snapshot was used; a gone, c back");
    assert!(!indexed(&node.index, &tenant).contains(&a));
    drop(node);

    // A kill while writing the next snapshot leaves a temporary file: removed, the last whole
    // snapshot used.
    let tmp = files[0].with_extension("tmp");
    std::fs::write(&tmp, &std::fs::read(&files[0]).expect("read")[..100]).expect("half-written");
    let node = start(open(), dir.path()).await;
    assert!(!tmp.exists(), "the half-written snapshot is removed at start");
    assert!(indexed(&node.index, &tenant).contains("ghost"));
    drop(node);

    // Changes the snapshot missed pruned from the log: the snapshot is removed, the index loaded
    // from the store.
    let store = open();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let pruned = store.change_feed().expect("sqlite keeps a log").prune_changes(Duration::ZERO).expect("prune");
    assert!(pruned > 0);
    let node = start(store, dir.path()).await;
    assert_eq!(indexed(&node.index, &tenant), set(&[&b, &c]));
    assert!(snapshot_files(dir.path()).is_empty(), "the untrusted snapshot was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cut_short_is_refused_and_the_index_loads_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || Arc::new(SqliteStore::open(dir.path()).expect("open")) as Arc<dyn Store>;
    let node = start(open(), dir.path()).await;
    let tenant = node.service.create_tenant("t").await.expect("tenant").tenant;
    let a = enroll(&node.service, &tenant, "a", "ann").await;
    plant_ghost(&node.index, &tenant);
    save(&node, &tenant).await;
    drop(node);
    let file = snapshot_files(dir.path()).remove(0);
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() - 3]).expect("cut");
    let node = start(open(), dir.path()).await;
    assert_eq!(indexed(&node.index, &tenant), set(&[&a]));
    assert!(!file.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_node_restarted_from_its_snapshot_catches_up_with_the_other_nodes() {
    let Some(cluster) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = cluster.url().to_owned();
    let connect = move || -> Arc<dyn Store> { Arc::new(PgStore::connect(&url, None, PgRole::Node).expect("connect")) };
    let store = {
        let c = connect.clone();
        blocking(c).await
    };
    let node = start(store, dir.path()).await;
    let tenant = node.service.create_tenant("t").await.expect("tenant").tenant;
    let a = enroll(&node.service, &tenant, "a", "ann").await;
    let b = enroll(&node.service, &tenant, "b", "bob").await;
    plant_ghost(&node.index, &tenant);
    save(&node, &tenant).await;
    stop(node).await;

    // While it is down, another node enrolls and deletes.
    let other_store = {
        let c = connect.clone();
        blocking(c).await
    };
    let other = start(other_store, tempfile::tempdir().expect("other dir").path()).await;
    let c = enroll(&other.service, &tenant, "c", "cat").await;
    delete(&other.service, &tenant, "b").await;

    let store = {
        let c = connect.clone();
        blocking(c).await
    };
    let node = start(store, dir.path()).await;
    assert_eq!(indexed(&node.index, &tenant), set(&[&a, &c, "ghost"]), "b deleted elsewhere, c enrolled elsewhere");
    assert!(!indexed(&node.index, &tenant).contains(&b));
    stop(node).await;
    stop(other).await;
}

/// The PostgreSQL client blocks: its connections close off the async threads.
async fn stop(node: Node) {
    blocking(move || drop(node)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deleted_while_the_node_was_down_does_not_come_back_from_its_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || Arc::new(SqliteStore::open(dir.path()).expect("open")) as Arc<dyn Store>;
    let node = start(open(), dir.path()).await;
    let tenant = node.service.create_tenant("t").await.expect("tenant").tenant;
    enroll(&node.service, &tenant, "a", "ann").await;
    save(&node, &tenant).await;
    drop(node);
    // Deleted with no server running, and its snapshot left behind (a removal that failed).
    let store = open();
    store.delete_tenant(&tenant.id).expect("delete");
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    let node = start(store, dir.path()).await;
    assert!(indexed(&node.index, &tenant).is_empty(), "the deleted tenant's faces came back");
    assert!(snapshot_files(dir.path()).is_empty(), "its snapshot is removed");
}
