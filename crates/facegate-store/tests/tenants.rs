//! A tenant's end of life, on both backends: `delete_tenant` leaves no row, template or image of
//! it (every table is read back) while another tenant keeps everything, and nodes following a
//! PostgreSQL gallery drop it; rotated credentials work beside the new ones until their grace
//! ends, then stop.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{sample, subject, templates};
use facegate_core::jobs::RecordStatus;
use facegate_core::service::hash_secret;
use facegate_core::store_roles::*;
use facegate_core::testing::{BruteForceIndex, FakeEngine};
use facegate_core::{
    BulkJob, BulkRecord, FaceService, Index, ReindexFailure, ReindexOutcome, ServiceConfig, StagedSample,
    StoredCredentials, Tenant, TenantPurge,
};
use facegate_store::{PgRole, PgStore, SqliteStore};
use facegate_testkit::PgCluster;

/// The plaintext credentials a tenant was given.
struct Plain {
    token: String,
    api_key: String,
    access_key_id: String,
    secret: String,
}

impl Plain {
    fn new(tag: &str) -> Plain {
        let n = uuid_like();
        Plain {
            token: format!("token-{tag}-{n}"),
            api_key: format!("api-key-{tag}-{n}"),
            access_key_id: format!("AKIA{}{n}", tag.to_ascii_uppercase()),
            secret: format!("secret-{tag}-{n}"),
        }
    }

    fn stored(&self) -> StoredCredentials {
        StoredCredentials {
            token_hash: hash_secret(&self.token),
            api_key_hash: hash_secret(&self.api_key),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret.clone(),
        }
    }

    /// Which of the three open `tenant`: (token, API key, access key secret).
    fn opens(&self, store: &dyn Store, tenant: &Tenant) -> (bool, bool, bool) {
        let by_token = store.tenant_by_token_hash(&hash_secret(&self.token)).expect("token lookup");
        let by_key = store.tenant_by_api_key_hash(&hash_secret(&self.api_key)).expect("key lookup");
        let secret = store.access_key_secret(&tenant.id, &self.access_key_id).expect("secret lookup");
        (
            by_token.is_some_and(|t| t.id == tenant.id),
            by_key.is_some_and(|t| t.id == tenant.id),
            secret.as_deref() == Some(self.secret.as_str()),
        )
    }
}

fn uuid_like() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos())
}

/// A tenant created with `creds`.
fn tenant_with(store: &dyn Store, name: &str, creds: &Plain) -> Tenant {
    let tenant = store.create_tenant(name, &hash_secret(&creds.token)).expect("tenant");
    store
        .add_api_credentials(&tenant.id, &hash_secret(&creds.api_key), &creds.access_key_id, &creds.secret)
        .expect("credentials");
    tenant
}

/// Everything a tenant can hold: two subjects (three samples, with images), tags and tag labels,
/// a bulk job with two records, a staged reindex outcome, and rotated (expiring) credentials.
/// Returns the strings that name its data, which no table may hold after it is deleted.
fn populate(store: &dyn Store, tenant: &Tenant, tag: &str) -> Vec<String> {
    let (s1, s2) = (format!("{tag}-subject-1"), format!("{tag}-subject-2"));
    let (x1, x2, x3) = (format!("{tag}-sample-1"), format!("{tag}-sample-2"), format!("{tag}-sample-3"));
    let customer = format!("{tag}-customer");
    let one = subject(tenant, &s1, Some(&customer));
    store.create_tag(&tenant.id, &format!("{tag}-vip"), 64).expect("tag");
    store.create_tagged_subject(&one, &sample(&s1, &x1, "1", "m", 0.25), &[format!("{tag}-vip")]).expect("subject 1");
    store.update_subject(&one, Some(&sample(&s1, &x2, "2", "m", 0.5)), None).expect("second sample");
    let two = subject(tenant, &s2, None);
    store.create_subject(&two, Some(&sample(&s2, &x3, "3", "m", 0.75))).expect("subject 2");
    let job = BulkJob { id: format!("{tag}-job"), tenant_id: tenant.id.clone(), created_at: "1".into() };
    let records: Vec<BulkRecord> = (0..2)
        .map(|seq| BulkRecord {
            seq,
            id: format!("{tag}-op-{seq}"),
            filename: format!("{tag}-{seq}.jpg"),
            tags: vec![format!("{tag}-vip")],
            subject_id: format!("{tag}-bulk-subject-{seq}"),
            attempts: 0,
            status: RecordStatus::New,
            register_status: None,
            reason: String::new(),
            event_id: None,
            attributes: None,
        })
        .collect();
    store.create_bulk_job(&job, &records).expect("bulk job");
    let staged = StagedSample {
        tenant_id: tenant.id.clone(),
        subject_id: s2.clone(),
        sample_id: x3.clone(),
        outcome: ReindexOutcome::Failed(ReindexFailure::NoFace),
    };
    store.stage_reindexed("other-model", &[staged]).expect("stage");
    store.set_unknown_faces_retention(&tenant.id, Some(Duration::from_secs(3600))).expect("unknown faces on");
    let seen = facegate_core::NewSighting {
        id: format!("{tag}-sighting"),
        tenant_id: tenant.id.clone(),
        unknown_person_id: format!("{tag}-unknown-person"),
        model_id: "m".into(),
        embedding: vec![0.5, -0.5, 0.25],
        crop: format!("{tag}-crop-bytes").into_bytes(),
        crop_face: facegate_core::BoundingBox { left: 4.0, top: 5.0, right: 60.0, bottom: 70.0 },
        quality: 0.9,
        seen_unix_ms: 1,
        request_id: format!("{tag}-request"),
    };
    assert!(store.keep_sighting(&seen, true).expect("sighting"));
    let rotated = Plain::new(&format!("{tag}r"));
    store.rotate_credentials(&tenant.id, &rotated.stored(), Duration::from_secs(3600)).expect("rotate");
    vec![
        tenant.id.clone(),
        s1,
        s2,
        x1,
        x2,
        x3,
        customer,
        job.id,
        seen.id,
        seen.unknown_person_id,
        format!("{tag}-request"),
        format!("{tag}-op-0"),
        format!("{tag}-vip"),
        rotated.access_key_id,
        hash_secret(&rotated.token),
        hash_secret(&rotated.api_key),
    ]
}

/// What deleting a tenant made by [`populate`] removes.
fn populated_purge() -> TenantPurge {
    TenantPurge {
        subjects: 2,
        face_samples: 3,
        images: 3,
        tags: 1,
        subject_tags: 1,
        bulk_jobs: 1,
        bulk_records: 2,
        // The first token, API key and access key, and the rotated three.
        credentials: 6,
        reindex_staging: 1,
        sightings: 1,
        unknown_people: 1,
    }
}

/// Every row of every table of the SQLite database, as text.
fn sqlite_rows(dir: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(dir.join("facegate.db")).expect("open db");
    let tables: Vec<String> = {
        let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").expect("tables");
        stmt.query_map([], |r| r.get(0)).expect("query").collect::<rusqlite::Result<_>>().expect("names")
    };
    assert!(tables.len() >= 12, "{tables:?}");
    let mut out = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).expect("select");
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            let mut text = String::new();
            for i in 0..columns {
                match row.get_ref(i).expect("value") {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        text.push_str(&String::from_utf8_lossy(t));
                    }
                    other => text.push_str(&format!("{other:?}")),
                }
                text.push('|');
            }
            out.push((table.clone(), text));
        }
    }
    out
}

/// Every row of every table of the PostgreSQL database at `url`, as text. (The synchronous
/// client runs its own runtime: call it off the async threads.)
fn pg_rows(url: &str) -> Vec<(String, String)> {
    let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).expect("connect");
    let tables: Vec<String> = client
        .query("SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = 'public'", &[])
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 13, "{tables:?}");
    let mut out = Vec::new();
    for table in tables {
        for row in client.query(&format!("SELECT t::TEXT FROM \"{table}\" t"), &[]).expect("select") {
            out.push((table.clone(), row.get::<_, String>(0)));
        }
    }
    out
}

/// No row holds anything of the deleted tenant but what `allowed` lets through; the other
/// tenant's markers are all still there, so the search could have found them.
fn assert_only_the_other_tenant_left(rows: &[(String, String)], gone: &[String], kept: &[String], allowed: &str) {
    for (table, row) in rows {
        if !allowed.is_empty() && row.contains(allowed) {
            continue;
        }
        for marker in gone {
            assert!(!row.contains(marker.as_str()), "{table} still holds {marker:?}: {row}");
        }
    }
    for marker in kept {
        assert!(rows.iter().any(|(_, row)| row.contains(marker.as_str())), "the other tenant lost {marker:?}");
    }
}

/// Deletes `a` and checks what the store still answers for both tenants.
fn delete_and_check_answers(store: &dyn Store, a: &Tenant, b: &Tenant, a_creds: &Plain, b_creds: &Plain) {
    assert_eq!(store.delete_tenant(&a.id).expect("delete"), populated_purge());
    assert!(matches!(store.delete_tenant(&a.id), Err(facegate_core::Error::NotFound("tenant"))));
    assert_eq!(store.list_tenants().expect("list").iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["b"]);
    assert_eq!(a_creds.opens(store, a), (false, false, false), "the deleted tenant's credentials open nothing");
    assert_eq!(b_creds.opens(store, b), (true, true, true), "the other tenant's old credentials are in their grace");
    let left = templates(store, "m");
    assert!(left.iter().all(|t| t.tenant_id == b.id) && left.len() == 3, "{left:?}");
    assert!(store.subject_by_id(&a.id, "a-subject-1").expect("lookup").is_none());
    assert!(store.bulk_job(&a.id, "a-job").expect("job").is_none());
    assert!(store.bulk_job(&b.id, "b-job").expect("job").is_some());
    assert_eq!(store.list_tags(&b.id).expect("tags"), ["b-vip"]);
    assert_eq!(store.queued_bulk_records(&b.id).expect("queued"), 2);
    assert_eq!(store.staged_reindex("other-model").expect("staged").len(), 1, "only b's staged outcome is left");
}

#[test]
fn deleting_a_sqlite_tenant_leaves_no_row_template_or_image_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let (a_creds, b_creds) = (Plain::new("a"), Plain::new("b"));
    let a = tenant_with(&store, "a", &a_creds);
    let b = tenant_with(&store, "b", &b_creds);
    let gone = populate(&store, &a, "a");
    let kept = populate(&store, &b, "b");
    let images = dir.path().join("images");
    assert!(images.join(&a.id).is_dir());

    delete_and_check_answers(&store, &a, &b, &a_creds, &b_creds);

    assert_only_the_other_tenant_left(&sqlite_rows(dir.path()), &gone, &kept, "");
    assert!(!images.join(&a.id).exists(), "the tenant's image folder is gone");
    let left: Vec<_> = std::fs::read_dir(&images).expect("images").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from(&b.id)]);
    assert_eq!(facegate_testkit::files_under(&images.join(&b.id)).len(), 3, "the other tenant keeps its images");
    // The freed pages were zeroed and the WAL checkpointed: not even the raw files name it.
    let mut raw = std::fs::read(dir.path().join("facegate.db")).expect("db");
    raw.extend(std::fs::read(dir.path().join("facegate.db-wal")).unwrap_or_default());
    for marker in [&a.id, &gone[6], &"jpeg bytes of a-".to_owned()] {
        assert!(!raw.windows(marker.len()).any(|w| w == marker.as_bytes()), "the raw files still hold {marker:?}");
    }
    assert!(raw.windows(b.id.len()).any(|w| w == b.id.as_bytes()), "the grep can find the other tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_postgres_tenant_leaves_no_row_of_it_and_following_nodes_drop_it() {
    let Some(cluster) = PgCluster::start() else { return };
    let url = cluster.url().to_owned();
    // A tool beside the nodes, and a running node whose index holds both tenants.
    let index = Arc::new(BruteForceIndex::default());
    let node_index = index.clone();
    let (tool, node, a, b, gone, kept) = tokio::task::spawn_blocking(move || {
        let tool = Arc::new(PgStore::connect(&url, None, PgRole::Tool).expect("connect"));
        let (a_creds, b_creds) = (Plain::new("a"), Plain::new("b"));
        let a = tenant_with(tool.as_ref(), "a", &a_creds);
        let b = tenant_with(tool.as_ref(), "b", &b_creds);
        let gone = populate(tool.as_ref(), &a, "a");
        let kept = populate(tool.as_ref(), &b, "b");
        let store = Arc::new(PgStore::connect(&url, None, PgRole::Node).expect("connect"));
        let node = Arc::new(FaceService::new(
            Arc::new(FakeEngine::with_model_id("m")),
            store,
            node_index,
            ServiceConfig::default(),
        ));
        node.load_index().expect("load");
        delete_and_check_answers(tool.as_ref(), &a, &b, &a_creds, &b_creds);
        (tool, node, a, b, gone, kept)
    })
    .await
    .expect("populate and delete");
    assert_eq!(index.len(&b.id), 3);

    node.sync_index().await.expect("follow");
    assert_eq!(index.len(&a.id), 0, "the node dropped the deleted tenant");
    assert_eq!(index.len(&b.id), 3, "and kept the other");

    let url = cluster.url().to_owned();
    let rows = tokio::task::spawn_blocking(move || pg_rows(&url)).await.expect("rows");
    // The one row left naming the tenant is the change that tells lagging nodes to drop it, by
    // its id alone; it is pruned with the rest of the log, after a day.
    let tombstone = "tenant_removed";
    let naming: Vec<_> = rows.iter().filter(|(_, r)| r.contains(&a.id)).collect();
    assert!(naming.len() == 1 && naming[0].0 == "changes" && naming[0].1.contains(tombstone), "{naming:?}");
    assert_only_the_other_tenant_left(&rows, &gone, &kept, tombstone);
    // Their connections close with them, which blocks.
    tokio::task::spawn_blocking(move || drop((tool, node))).await.expect("close");
}

/// Rotation on one backend: both sets work during the grace, only the new one after it, and a
/// zero grace revokes at once.
fn rotation_honours_the_grace(store: &dyn Store) {
    let first = Plain::new("first");
    let tenant = tenant_with(store, "acme", &first);
    let other_creds = Plain::new("other");
    let other = tenant_with(store, "other", &other_creds);
    let second = Plain::new("second");
    assert_eq!(store.rotate_credentials(&tenant.id, &second.stored(), Duration::from_secs(2)).expect("rotate"), 3);
    assert_eq!(first.opens(store, &tenant), (true, true, true), "old ones work during the grace");
    assert_eq!(second.opens(store, &tenant), (true, true, true), "new ones work at once");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(first.opens(store, &tenant), (false, false, false), "old ones stop after the grace");
    assert_eq!(second.opens(store, &tenant), (true, true, true));
    assert_eq!(other_creds.opens(store, &other), (true, true, true), "another tenant's are untouched");

    let third = Plain::new("third");
    // The expired first set is removed, the second revoked at once.
    assert_eq!(store.rotate_credentials(&tenant.id, &third.stored(), Duration::ZERO).expect("revoke"), 3);
    assert_eq!(second.opens(store, &tenant), (false, false, false), "a zero grace revokes at once");
    assert_eq!(third.opens(store, &tenant), (true, true, true));
    // A credential in use elsewhere is refused, changing nothing.
    let clash = Plain { access_key_id: other_creds.access_key_id.clone(), ..Plain::new("clash") };
    assert!(matches!(
        store.rotate_credentials(&tenant.id, &clash.stored(), Duration::ZERO),
        Err(facegate_core::Error::Conflict(_))
    ));
    assert_eq!(third.opens(store, &tenant), (true, true, true));
    assert!(matches!(
        store.rotate_credentials("no-such-tenant", &Plain::new("x").stored(), Duration::ZERO),
        Err(facegate_core::Error::NotFound("tenant"))
    ));
}

#[test]
fn sqlite_rotated_credentials_work_until_the_grace_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    rotation_honours_the_grace(&store);
    // Secrets at rest as before: the token and API key only hashed.
    let raw = sqlite_rows(dir.path());
    assert!(!raw.iter().any(|(_, row)| row.contains("token-third") || row.contains("api-key-third")));
}

#[test]
fn postgres_rotated_credentials_work_until_the_grace_ends() {
    let Some(cluster) = PgCluster::start() else { return };
    let store = PgStore::connect(cluster.url(), None, PgRole::Tool).expect("connect");
    rotation_honours_the_grace(&store);
    let raw = pg_rows(cluster.url());
    assert!(!raw.iter().any(|(_, row)| row.contains("token-third") || row.contains("api-key-third")));
}
