//! SqliteStore through the core's `Store` trait, on a temporary data directory.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use facegate_core::store_roles::*;
use facegate_core::{BoundingBox, Error, FaceSample, NewSample, Profile, Subject, Template, Tenant};
use facegate_store::SqliteStore;

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir).expect("open store")
}

fn subject(tenant: &Tenant, id: &str, customer: Option<&str>) -> Subject {
    Subject {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        customer_person_id: customer.map(Into::into),
        profile: Profile { first_name: Some("Will".into()), last_name: Some("Smith".into()), email: None, phone: None },
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        updated_at: "2024-01-01T00:00:00.000000Z".into(),
    }
}

fn sample(subject_id: &str, id: &str, created_at: &str, model: &str, seed: f32) -> NewSample {
    NewSample {
        sample: FaceSample {
            id: id.into(),
            subject_id: subject_id.into(),
            image_name: format!("enroll/{id}_Fkkx7eK.jpg"),
            bbox: BoundingBox { left: 1.5, top: 2.25, right: 100.0, bottom: 120.75 },
            detector_score: 0.875,
            model_id: model.into(),
            created_at: created_at.into(),
        },
        embedding: vec![seed, -seed, 0.1, f32::MIN_POSITIVE, 1.0 / 3.0],
        image: format!("\u{FF}jpeg bytes of {id}").into_bytes(),
    }
}

fn templates(store: &SqliteStore, model: &str) -> Vec<Template> {
    let mut out = Vec::new();
    store.for_each_template(model, &mut |t| out.push(t)).expect("templates");
    out
}

fn files_under(dir: &Path) -> Vec<String> {
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    facegate_testkit::files_under(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).expect("prefix").to_string_lossy().into_owned())
        .collect()
}

#[test]
fn tenants_round_trip_and_conflict_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let acme = store.create_tenant("acme", "hash-a").expect("create");
    assert_eq!(acme.name, "acme");
    // now_rfc3339's shape: 2024-01-01T00:00:00.000000Z
    assert_eq!(acme.created_at.len(), 27, "{}", acme.created_at);
    assert!(acme.created_at.ends_with('Z') && acme.created_at.as_bytes()[10] == b'T');
    assert!(matches!(store.create_tenant("acme", "hash-other"), Err(Error::Conflict(_))));
    assert!(matches!(store.create_tenant("globex", "hash-a"), Err(Error::Conflict(_))));
    assert_eq!(store.tenant_by_token_hash("hash-a").expect("lookup"), Some(acme.clone()));
    assert_eq!(store.tenant_by_token_hash("nope").expect("lookup"), None);

    // ensure_tenant: creates once, then only adds tokens.
    let sandbox = store.ensure_tenant("sandbox", "public").expect("ensure");
    assert_eq!(store.ensure_tenant("sandbox", "public").expect("again"), sandbox);
    assert_eq!(store.ensure_tenant("sandbox", "second").expect("add token"), sandbox);
    assert_eq!(store.tenant_by_token_hash("public").expect("lookup"), Some(sandbox.clone()));
    assert_eq!(store.tenant_by_token_hash("second").expect("lookup"), Some(sandbox.clone()));
    assert_eq!(store.ensure_tenant("acme", "hash-a2").expect("existing"), acme);
    assert_eq!(store.tenant_by_token_hash("hash-a").expect("old token"), Some(acme.clone()));
    // A token of one tenant never becomes another's.
    assert!(matches!(store.ensure_tenant("sandbox", "hash-a"), Err(Error::Conflict(_))));
    assert_eq!(store.tenant_by_token_hash("hash-a").expect("lookup"), Some(acme.clone()));

    assert_eq!(store.list_tenants().expect("list"), vec![acme, sandbox]);
}

#[test]
fn subjects_and_samples_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let tenant = store.create_tenant("acme", "h").expect("tenant");
    let mut will = subject(&tenant, "subj-1", Some("will"));
    let first = sample("subj-1", "sample-1", "2024-01-01T00:00:00.000000Z", "m@1", 0.5);
    store.create_subject(&will, Some(&first)).expect("create");

    assert_eq!(store.subject_by_id(&tenant.id, "subj-1").expect("by id"), Some(will.clone()));
    assert_eq!(store.subject_by_customer_id(&tenant.id, "will").expect("by cpid"), Some(will.clone()));
    assert_eq!(store.subject_by_customer_id(&tenant.id, "nobody").expect("missing"), None);
    assert_eq!(store.samples_of(&tenant.id, "subj-1").expect("samples"), vec![first.sample.clone()]);
    let image = store.image_path(&tenant.id, &first.sample.image_name).expect("path");
    assert_eq!(std::fs::read(&image).expect("image"), first.image);

    // Update replaces the profile (cleared fields included) and adds a sample.
    will.profile = Profile { first_name: Some("Willard".into()), ..Profile::default() };
    will.updated_at = "2024-02-02T00:00:00.000000Z".into();
    let second = sample("subj-1", "sample-2", "2024-02-02T00:00:00.000000Z", "m@1", 0.25);
    store.update_subject(&will, Some(&second), None).expect("update");
    assert_eq!(store.subject_by_id(&tenant.id, "subj-1").expect("by id"), Some(will.clone()));
    // Same timestamp: the later insert still comes first.
    let third = sample("subj-1", "sample-3", "2024-02-02T00:00:00.000000Z", "m@2", 0.125);
    store.update_subject(&will, Some(&third), None).expect("update");
    store.update_subject(&will, None, None).expect("profile only");
    let ids: Vec<_> = store.samples_of(&tenant.id, "subj-1").expect("samples").into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["sample-3", "sample-2", "sample-1"]);

    let by_model = templates(&store, "m@1");
    assert_eq!(by_model.len(), 2);
    assert_eq!(
        by_model[0],
        Template {
            tenant_id: tenant.id.clone(),
            subject_id: "subj-1".into(),
            sample_id: "sample-1".into(),
            embedding: as_stored(&first.embedding),
        }
    );
    assert_eq!(by_model[1].embedding, as_stored(&second.embedding));
    assert_eq!(templates(&store, "m@2").len(), 1);
    assert!(templates(&store, "other").is_empty());

    // Updating a subject that does not exist is NotFound, and leaves no file behind.
    let ghost = subject(&tenant, "ghost", Some("ghost"));
    let orphan = sample("ghost", "sample-g", "2024-03-03T00:00:00.000000Z", "m@1", 0.1);
    assert!(matches!(store.update_subject(&ghost, Some(&orphan), None), Err(Error::NotFound(_))));
    assert!(!store.image_path(&tenant.id, &orphan.sample.image_name).expect("path").exists());
}

#[test]
fn customer_ids_are_unique_per_tenant_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    store.create_subject(&subject(&a, "s1", Some("cp")), None).expect("first");
    let dup = sample("s2", "dup-sample", "2024-01-01T00:00:00.000000Z", "m", 1.0);
    let err = store.create_subject(&subject(&a, "s2", Some("cp")), Some(&dup)).expect_err("duplicate");
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    // The refused subject's image neither stays on disk nor in the database.
    assert!(!store.image_path(&a.id, &dup.sample.image_name).expect("path").exists());
    assert!(templates(&store, "m").is_empty());
    assert!(store.subject_by_id(&a.id, "s2").expect("lookup").is_none());
    // The same customer id in another tenant is fine, and so are any number without one.
    store.create_subject(&subject(&b, "s3", Some("cp")), None).expect("other tenant");
    store.create_subject(&subject(&a, "s4", None), None).expect("no cpid");
    store.create_subject(&subject(&a, "s5", None), None).expect("no cpid again");
    // A duplicate subject id is a conflict too.
    assert!(matches!(store.create_subject(&subject(&a, "s1", Some("other")), None), Err(Error::Conflict(_))));
    // A sample for another subject than the one written is refused.
    let stray = sample("someone-else", "stray", "2024-01-01T00:00:00.000000Z", "m", 1.0);
    assert!(store.create_subject(&subject(&a, "s6", Some("six")), Some(&stray)).is_err());
    assert!(store.subject_by_id(&a.id, "s6").expect("lookup").is_none());
}

#[test]
fn unsafe_image_names_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let t = store.create_tenant("t", "h").expect("tenant");
    for bad in ["../../escape.jpg", "/etc/passwd", "enroll/a\0.jpg"] {
        let mut ns = sample("s", "x", "2024-01-01T00:00:00.000000Z", "m", 1.0);
        ns.sample.image_name = bad.into();
        let err = store.create_subject(&subject(&t, "s", Some("s")), Some(&ns)).expect_err(bad);
        assert!(matches!(err, Error::InvalidRequest(_)), "{bad}: {err:?}");
    }
    assert!(store.subject_by_id(&t.id, "s").expect("lookup").is_none());
    assert!(files_under(&dir.path().join("images")).is_empty());
    assert!(!dir.path().parent().expect("parent").join("escape.jpg").exists());
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tenant, s) = {
        let store = open(dir.path());
        let tenant = store.create_tenant("acme", "h").expect("tenant");
        let s = subject(&tenant, "s1", Some("cp"));
        store.create_subject(&s, Some(&sample("s1", "x1", "2024-01-01T00:00:00.000000Z", "m", 0.5))).expect("create");
        (tenant, s)
    };
    let store = open(dir.path());
    assert_eq!(store.schema_version().expect("version"), 7);
    assert_eq!(store.tenant_by_token_hash("h").expect("tenant"), Some(tenant.clone()));
    assert_eq!(store.subject_by_customer_id(&tenant.id, "cp").expect("subject"), Some(s));
    assert_eq!(store.samples_of(&tenant.id, "s1").expect("samples").len(), 1);
    assert_eq!(templates(&store, "m").len(), 1);
    assert_eq!(store.sweep_orphans().expect("sweep"), 0);
    drop(store);
    // Opening a third time re-applies nothing and loses nothing.
    let store = open(dir.path());
    assert_eq!(store.schema_version().expect("version"), 7);
    assert_eq!(store.list_tenants().expect("tenants").len(), 1);
}

#[test]
fn delete_removes_rows_and_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let t = store.create_tenant("t", "h").expect("tenant");
    store.create_subject(&subject(&t, "gone", Some("gone")), Some(&sample("gone", "g1", "1", "m", 0.1))).expect("s");
    store
        .update_subject(&subject(&t, "gone", Some("gone")), Some(&sample("gone", "g2", "2", "m", 0.2)), None)
        .expect("u");
    store.create_subject(&subject(&t, "kept", Some("kept")), Some(&sample("kept", "k1", "1", "m", 0.3))).expect("s");
    let gone_files: Vec<_> = ["g1", "g2"]
        .iter()
        .map(|id| store.image_path(&t.id, &format!("enroll/{id}_Fkkx7eK.jpg")).expect("p"))
        .collect();
    assert!(gone_files.iter().all(|p| p.exists()));

    assert!(store.delete_subject(&t.id, "gone").expect("delete"));
    assert!(!store.delete_subject(&t.id, "gone").expect("again"));
    assert!(gone_files.iter().all(|p| !p.exists()));
    assert!(store.subject_by_id(&t.id, "gone").expect("lookup").is_none());
    assert!(store.samples_of(&t.id, "gone").expect("samples").is_empty());
    let left: Vec<_> = templates(&store, "m").into_iter().map(|t| t.sample_id).collect();
    assert_eq!(left, ["k1"]);
    assert_eq!(files_under(&dir.path().join("images")), [format!("{}/enroll/k1_Fkkx7eK.jpg", t.id)]);

    // The deleted embeddings are not left in free pages of the database, nor in old frames of
    // the WAL, while the store is open or after it closed.
    let needle: Vec<u8> = sample("gone", "g1", "1", "m", 0.1).embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
    let assert_scrubbed = |when: &str| {
        for file in ["facegate.db", "facegate.db-wal"] {
            let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_slice()), "embedding in {file} {when}");
            assert!(!bytes.windows(7).any(|w| w == b"g1_Fkkx"), "image name in {file} {when}");
        }
    };
    assert_scrubbed("while open");
    drop(store);
    assert_scrubbed("after close");
}

#[test]
fn tenants_cannot_reach_each_others_subjects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    store.create_subject(&subject(&a, "sa", Some("alice")), Some(&sample("sa", "xa", "1", "m", 0.5))).expect("a");
    assert!(store.subject_by_id(&b.id, "sa").expect("lookup").is_none());
    assert!(store.subject_by_customer_id(&b.id, "alice").expect("lookup").is_none());
    assert!(store.samples_of(&b.id, "sa").expect("samples").is_empty());
    assert!(!store.delete_subject(&b.id, "sa").expect("delete"));
    let mut hijack = subject(&b, "sa", Some("alice"));
    hijack.profile.first_name = Some("Mallory".into());
    assert!(matches!(store.update_subject(&hijack, None, None), Err(Error::NotFound(_))));
    let intact = store.subject_by_id(&a.id, "sa").expect("lookup").expect("still there");
    assert_eq!(intact.profile.first_name.as_deref(), Some("Will"));
    assert_eq!(store.samples_of(&a.id, "sa").expect("samples").len(), 1);
    assert!(store.image_path(&a.id, "enroll/xa_Fkkx7eK.jpg").expect("path").exists());
}

#[test]
fn only_the_directory_lock_holder_sweeps_young_temporary_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let t = store.create_tenant("t", "h").expect("tenant");
    store.create_subject(&subject(&t, "s", Some("s")), Some(&sample("s", "x1", "1", "m", 0.5))).expect("create");
    // As a kill mid-write leaves it: a fresh temporary file beside the images.
    let tmp = dir.path().join("images").join(&t.id).join("enroll/.x2_AAAAAAA.jpg.0123456789abcdef.tmp");
    std::fs::write(&tmp, b"half an image").expect("tmp");
    assert_eq!(store.sweep_orphans().expect("sweep"), 0, "without the lock a young one may be another process's");
    assert!(tmp.exists());
    let lock = facegate_store::DataDirLock::acquire(dir.path()).expect("lock");
    assert_eq!(store.sweep_orphans_exclusive(&lock).expect("sweep"), 1);
    assert!(!tmp.exists());
    assert_eq!(files_under(&dir.path().join("images")), [format!("{}/enroll/x1_Fkkx7eK.jpg", t.id)]);
}

#[test]
fn sweep_removes_only_files_without_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let t = store.create_tenant("t", "h").expect("tenant");
    store.create_subject(&subject(&t, "s", Some("s")), Some(&sample("s", "x1", "1", "m", 0.5))).expect("create");
    let images = dir.path().join("images");
    // As a crash would leave them: a file renamed into place whose row never committed, and one
    // of another tenant's folder.
    std::fs::write(images.join(&t.id).join("enroll/crashed_AAAAAAA.jpg"), b"x").expect("orphan");
    std::fs::create_dir_all(images.join("other-tenant/enroll")).expect("dir");
    std::fs::write(images.join("other-tenant/enroll/y.jpg"), b"y").expect("orphan");
    assert_eq!(store.sweep_orphans().expect("sweep"), 2);
    assert_eq!(files_under(&images), [format!("{}/enroll/x1_Fkkx7eK.jpg", t.id)]);
    assert_eq!(store.sweep_orphans().expect("again"), 0);
}

#[test]
fn api_credentials_resolve_to_their_tenant_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    store.add_api_credentials(&a.id, "keyhash-a", "AKIAAAAA", "secret-a").expect("creds a");
    store.add_api_credentials(&b.id, "keyhash-b", "AKIABBBB", "secret-b").expect("creds b");
    assert_eq!(store.tenant_by_api_key_hash("keyhash-a").expect("lookup"), Some(a.clone()));
    assert_eq!(store.tenant_by_api_key_hash("ha").expect("lookup"), None, "a token hash is not an API key");
    assert_eq!(store.access_key_secret(&a.id, "AKIAAAAA").expect("secret").as_deref(), Some("secret-a"));
    assert_eq!(store.access_key_secret(&a.id, "AKIABBBB").expect("secret"), None, "b's key does not open a");
    let dup = store.add_api_credentials(&b.id, "keyhash-a", "AKIACCCC", "s");
    assert!(matches!(dup, Err(facegate_core::Error::Conflict(_))), "{dup:?}");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.access_key_secret(&b.id, "AKIABBBB").expect("secret").as_deref(), Some("secret-b"));
}

#[test]
fn tags_are_unique_per_tenant_and_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    store.create_tag(&a.id, "staff", 3).expect("create");
    assert!(matches!(store.create_tag(&a.id, "staff", 3), Err(facegate_core::Error::Conflict(_))));
    store.create_tag(&b.id, "staff", 3).expect("same name, other tenant");
    store.create_tag(&a.id, "x", 3).expect("x");
    store.create_tag(&a.id, "y", 3).expect("y");
    assert!(matches!(store.create_tag(&a.id, "z", 3), Err(facegate_core::Error::InvalidRequest(_))));
    assert!(matches!(store.rename_tag(&a.id, "x", "y"), Err(facegate_core::Error::Conflict(_))));
    assert!(matches!(store.rename_tag(&a.id, "nope", "q"), Err(facegate_core::Error::NotFound(_))));
    store.rename_tag(&a.id, "x", "ex").expect("rename");
    assert!(store.delete_tag(&a.id, "y").expect("delete"));
    assert!(!store.delete_tag(&a.id, "y").expect("delete again"));
    assert!(!store.delete_tag(&a.id, "staff-of-b").expect("unknown"));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.list_tags(&a.id).expect("list"), ["staff", "ex"]);
    assert_eq!(store.list_tags(&b.id).expect("list"), ["staff"]);
}

#[test]
fn subject_tags_are_replaced_and_scoped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    let s = subject(&a, "s1", None);
    store.create_subject(&s, Some(&sample("s1", "x1", "2024-01-01T00:00:00.000000Z", "m", 0.5))).expect("create");
    store.set_subject_tags(&a.id, "s1", &["passport".into(), "staff".into()]).expect("tags");
    assert_eq!(store.subject_tags(&a.id, "s1").expect("tags"), ["passport", "staff"]);
    store.set_subject_tags(&a.id, "s1", &["staff".into()]).expect("replace");
    assert_eq!(store.subject_tags(&a.id, "s1").expect("tags"), ["staff"]);
    assert!(matches!(store.set_subject_tags(&b.id, "s1", &[]), Err(facegate_core::Error::NotFound(_))));
    store.create_tag(&a.id, "staff", 64).expect("tag");
    store.rename_tag(&a.id, "staff", "employees").expect("rename");
    assert_eq!(store.subject_tags(&a.id, "s1").expect("tags"), ["employees"], "labels follow a rename");
    assert!(store.subject_tags(&b.id, "s1").expect("tags").is_empty());
}

#[test]
fn replacing_a_sample_keeps_its_id_and_swaps_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.create_tenant("a", "ha").expect("a");
    let s = subject(&a, "s1", None);
    store.create_subject(&s, Some(&sample("s1", "e1", "2024-01-01T00:00:00.000000Z", "m", 0.5))).expect("create");
    let mut replacement = sample("s1", "e1", "2024-02-01T00:00:00.000000Z", "m", 0.25);
    replacement.sample.image_name = "enroll/e1_NewName.jpg".into();
    store.replace_sample(&s, &replacement, None).expect("replace");
    let samples = store.samples_of(&a.id, "s1").expect("samples");
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].image_name, "enroll/e1_NewName.jpg");
    let files = files_under(&dir.path().join("images"));
    assert_eq!(files.len(), 1, "the old image is gone: {files:?}");
    assert!(files[0].ends_with("e1_NewName.jpg"), "{files:?}");
    assert_eq!(templates(&store, "m")[0].embedding[0], 0.25);
    let mut ghost = sample("s1", "nope", "2024-02-01T00:00:00.000000Z", "m", 0.1);
    ghost.sample.image_name = "enroll/ghost_X.jpg".into();
    assert!(matches!(store.replace_sample(&s, &ghost, None), Err(facegate_core::Error::NotFound(_))));
    assert_eq!(files_under(&dir.path().join("images")).len(), 1, "a refused replacement leaves no file");
}

/// A template as the store gives it back: rounded to half precision (schema v6).
fn as_stored(embedding: &[f32]) -> Vec<f32> {
    embedding.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// 16 writers and 4 readers on one tenant at once: every call succeeds (no "database is
/// locked"), and afterwards the store holds exactly what the writers were told it holds.
#[test]
fn sixteen_writers_and_four_readers_lose_nothing_and_never_see_locked() {
    const WRITERS: usize = 16;
    const SUBJECTS_PER_WRITER: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let tenant = store.create_tenant("acme", "h").expect("tenant");
    let writers_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (store, tenant, done) = (store.clone(), tenant.clone(), writers_done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while done.load(std::sync::atomic::Ordering::SeqCst) < WRITERS {
                    let id = format!("w{}-s{}", reads as usize % WRITERS, reads as usize % SUBJECTS_PER_WRITER);
                    store.subject_by_id(&tenant.id, &id).unwrap_or_else(|e| panic!("reader {r}: {e}"));
                    store.samples_of(&tenant.id, &id).unwrap_or_else(|e| panic!("reader {r}: {e}"));
                    if reads.is_multiple_of(50) {
                        let mut n = 0;
                        store.for_each_template("m", &mut |_| n += 1).unwrap_or_else(|e| panic!("reader {r}: {e}"));
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    // Each writer creates its subjects with one sample, adds a second sample to every third
    // and deletes every fifth; it returns what it was acknowledged to leave behind.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, tenant, done) = (store.clone(), tenant.clone(), writers_done.clone());
            std::thread::spawn(move || {
                let mut kept: Vec<(String, usize)> = Vec::new();
                for i in 0..SUBJECTS_PER_WRITER {
                    let id = format!("w{w}-s{i}");
                    let s = subject(&tenant, &id, Some(&format!("p-{id}")));
                    let first = sample(&id, &format!("{id}-a"), "2024-01-01T00:00:00.000000Z", "m", i as f32);
                    store.create_subject(&s, Some(&first)).unwrap_or_else(|e| panic!("writer {w} create: {e}"));
                    let mut samples = 1;
                    if i % 3 == 0 {
                        let second = sample(&id, &format!("{id}-b"), "2024-01-02T00:00:00.000000Z", "m", 0.5);
                        store
                            .update_subject(&s, Some(&second), None)
                            .unwrap_or_else(|e| panic!("writer {w} update: {e}"));
                        samples += 1;
                    }
                    if i % 5 == 0 {
                        assert!(store
                            .delete_subject(&tenant.id, &id)
                            .unwrap_or_else(|e| panic!("writer {w} delete: {e}")));
                    } else {
                        kept.push((id, samples));
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                kept
            })
        })
        .collect();

    let kept: Vec<(String, usize)> = writers.into_iter().flat_map(|w| w.join().expect("writer")).collect();
    let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(reads > 0);

    let expected_samples: usize = kept.iter().map(|(_, n)| n).sum();
    for (id, n) in &kept {
        assert!(store.subject_by_id(&tenant.id, id).expect("lookup").is_some(), "{id} lost");
        assert_eq!(store.samples_of(&tenant.id, id).expect("samples").len(), *n, "{id}");
    }
    let all = templates(&store, "m");
    assert_eq!(all.len(), expected_samples);
    let subjects: HashSet<&str> = all.iter().map(|t| t.subject_id.as_str()).collect();
    assert_eq!(subjects.len(), kept.len());
    assert_eq!(files_under(&dir.path().join("images")).len(), expected_samples, "one image file per sample");
    assert_eq!(store.sweep_orphans().expect("sweep"), 0);
    assert_eq!(store.integrity_check().expect("integrity"), "ok");
}
