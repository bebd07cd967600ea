//! What only the SQLite store has: image files beside the database, the start-up sweep, the
//! WAL scrub after deletes. The behaviour both backends share is in `conformance.rs`.

mod common;

use std::path::Path;

use common::{sample, subject, templates};
use facegate_core::store_roles::*;

use facegate_store::SqliteStore;

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir).expect("open store")
}

fn files_under(dir: &Path) -> Vec<String> {
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    facegate_testkit::files_under(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).expect("prefix").to_string_lossy().into_owned())
        .collect()
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
fn a_reopened_directory_is_at_the_current_schema_with_nothing_to_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        let tenant = store.create_tenant("acme", "h").expect("tenant");
        let s = subject(&tenant, "s1", Some("cp"));
        store.create_subject(&s, Some(&sample("s1", "x1", "2024-01-01T00:00:00.000000Z", "m", 0.5))).expect("create");
    }
    for _ in 0..2 {
        let store = open(dir.path());
        assert_eq!(store.schema_version().expect("version"), 13);
        assert_eq!(store.sweep_orphans().expect("sweep"), 0);
        assert_eq!(templates(&store, "m").len(), 1);
    }
}

#[test]
fn deleted_templates_leave_no_trace_in_the_database_or_the_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let t = store.create_tenant("t", "h").expect("tenant");
    store.create_subject(&subject(&t, "gone", Some("gone")), Some(&sample("gone", "g1", "1", "m", 0.1))).expect("s");
    store.create_subject(&subject(&t, "kept", Some("kept")), Some(&sample("kept", "k1", "1", "m", 0.3))).expect("s");
    let gone = store.image_path(&t.id, "enroll/g1_Fkkx7eK.jpg").expect("path");
    assert!(gone.exists());
    assert!(store.delete_subject(&t.id, "gone").expect("delete"));
    assert!(!gone.exists(), "the image file went with the subject");
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
fn a_refused_write_leaves_no_image_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.create_tenant("a", "ha").expect("a");
    store.create_subject(&subject(&a, "s1", Some("cp")), None).expect("first");
    let dup = sample("s2", "dup-sample", "2024-01-01T00:00:00.000000Z", "m", 1.0);
    assert!(store.create_subject(&subject(&a, "s2", Some("cp")), Some(&dup)).is_err());
    assert!(!store.image_path(&a.id, &dup.sample.image_name).expect("path").exists());
    let mut escape = sample("s3", "x", "2024-01-01T00:00:00.000000Z", "m", 1.0);
    escape.sample.image_name = "../../escape.jpg".into();
    assert!(store.create_subject(&subject(&a, "s3", Some("s3")), Some(&escape)).is_err());
    assert!(!dir.path().parent().expect("parent").join("escape.jpg").exists());
    assert!(files_under(&dir.path().join("images")).is_empty());
}
