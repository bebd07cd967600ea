//! What the data directory holds on disk: encrypted templates and images that reveal nothing
//! without the key, key rotation, and deletions that leave no trace in the raw files.

use std::path::Path;

use facegate_core::store_roles::*;
use facegate_core::{BoundingBox, FaceSample, NewSample, Profile, Subject, Template, Tenant};
use facegate_store::{rotate_key, DataDirLock, DataKey, SqliteStore};

/// The start of a JFIF file, as every JPEG from a camera or `image` begins.
const JPEG_HEAD: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00";

fn jpeg_bytes(seed: u8) -> Vec<u8> {
    let mut bytes = JPEG_HEAD.to_vec();
    bytes.extend((0..2000u32).map(|i| (i as u8).wrapping_mul(seed)));
    bytes.extend_from_slice(b"\xff\xd9");
    bytes
}

/// A 512-value template whose f16 encoding is distinctive enough to grep for.
/// Pseudo-random rather than a smooth curve: a sine sampled at a fixed step repeats itself
/// closely enough that a window of one template can reappear, in f16, inside another.
fn template(seed: f32) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed.to_bits());
    (0..512)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.18
        })
        .collect()
}

fn f16_bytes(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()
}

fn subject(tenant: &Tenant, id: &str) -> Subject {
    Subject {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        customer_person_id: Some(format!("person-{id}")),
        profile: Profile { first_name: Some("Ada".into()), last_name: None, email: None, phone: None },
        created_at: "2026-01-01T00:00:00.000000Z".into(),
        updated_at: "2026-01-01T00:00:00.000000Z".into(),
    }
}

fn sample(subject_id: &str, seed: u8) -> NewSample {
    NewSample {
        sample: FaceSample {
            id: format!("sample-{subject_id}"),
            subject_id: subject_id.into(),
            image_name: format!("enroll/{subject_id}.jpg"),
            bbox: BoundingBox { left: 1.0, top: 2.0, right: 90.0, bottom: 110.0 },
            detector_score: 0.9,
            model_id: "m".into(),
            created_at: "2026-01-01T00:00:00.000000Z".into(),
        },
        embedding: template(f32::from(seed)),
        image: jpeg_bytes(seed),
    }
}

/// Every byte of every file under `dir`: the database, its WAL and the image files.
fn raw_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    facegate_testkit::files_under(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read");
            (path.display().to_string(), bytes)
        })
        .collect()
}

/// The files under `dir` that contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    raw_files(dir)
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(name, _)| name)
        .collect()
}

fn templates(store: &SqliteStore) -> Vec<Template> {
    let mut out = Vec::new();
    store.for_each_template("m", &mut |t| out.push(t)).expect("templates");
    out.sort_by(|a, b| a.subject_id.cmp(&b.subject_id));
    out
}

fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-3), "templates differ");
}

fn key(byte: u8) -> DataKey {
    DataKey::from_bytes(&[byte; 32])
}

/// Fills a store with two subjects, each with a sample, and returns what was enrolled.
fn enroll_two(store: &SqliteStore) -> Vec<NewSample> {
    let tenant = store.create_tenant("acme", "hash").expect("tenant");
    ["s1", "s2"]
        .iter()
        .zip([3u8, 5])
        .map(|(id, seed)| {
            let ns = sample(id, seed);
            store.create_subject(&subject(&tenant, id), Some(&ns)).expect("create");
            ns
        })
        .collect()
}

#[test]
fn plaintext_directories_show_their_faces_which_is_what_encryption_prevents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let enrolled = enroll_two(&store);
    drop(store);
    // The check below is only meaningful if the same search finds the data in the clear.
    assert!(!files_containing(dir.path(), JPEG_HEAD).is_empty());
    assert!(!files_containing(dir.path(), &f16_bytes(&enrolled[0].embedding)[..64]).is_empty());
}

/// Opens a new directory with `key` as `facegate serve` does: holding the directory's lock, the
/// one condition under which a key is recorded.
fn open_as_holder(dir: &Path, key: DataKey) -> (SqliteStore, DataDirLock) {
    let lock = DataDirLock::acquire(dir).expect("lock");
    let store = SqliteStore::open_locked(dir, Some(key), &lock).expect("open");
    (store, lock)
}

#[test]
fn a_side_process_never_records_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SqliteStore::open(dir.path()).expect("a plaintext directory, no faces yet"));
    let refused = SqliteStore::open_with_key(dir.path(), Some(key(1))).err().expect("refused");
    assert!(refused.to_string().contains("not encrypted"), "{refused}");
    // Nothing was recorded: the directory still opens without a key.
    drop(SqliteStore::open(dir.path()).expect("still plaintext"));
    // The lock holder may mark it, while it holds no faces.
    let (store, _lock) = open_as_holder(dir.path(), key(1));
    drop(store);
    assert!(SqliteStore::open(dir.path()).is_err(), "now encrypted");
}

#[test]
fn encrypted_directories_reveal_no_face_and_no_template() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, lock) = open_as_holder(dir.path(), key(1));
    let enrolled = enroll_two(&store);
    let loaded = templates(&store);
    assert_eq!(loaded.len(), 2);
    for (t, ns) in loaded.iter().zip(&enrolled) {
        assert_close(&t.embedding, &ns.embedding);
    }
    drop(store);
    drop(lock);

    assert_eq!(files_containing(dir.path(), JPEG_HEAD), Vec::<String>::new());
    assert_eq!(files_containing(dir.path(), b"JFIF"), Vec::<String>::new());
    for ns in &enrolled {
        let bytes = f16_bytes(&ns.embedding);
        for window in bytes.chunks(16) {
            assert_eq!(files_containing(dir.path(), window), Vec::<String>::new());
        }
    }

    let without_key = SqliteStore::open(dir.path()).err().expect("refused without the key");
    assert!(without_key.to_string().contains("encryption-key-file"), "{without_key}");
    assert!(SqliteStore::open_with_key(dir.path(), Some(key(2))).is_err(), "wrong key");
    let again = SqliteStore::open_with_key(dir.path(), Some(key(1))).expect("right key");
    assert_eq!(templates(&again).len(), 2);
}

#[test]
fn rotation_re_encrypts_everything_and_can_be_rerun() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, lock) = open_as_holder(dir.path(), key(1));
    let enrolled = enroll_two(&store);
    drop(store);
    drop(lock);

    let report = rotate_key(dir.path(), Some(&key(1)), &key(2)).expect("rotate");
    assert_eq!((report.templates, report.images, report.already_rotated), (2, 2, 0));
    assert!(SqliteStore::open_with_key(dir.path(), Some(key(1))).is_err(), "the old key no longer opens it");
    let store = SqliteStore::open_with_key(dir.path(), Some(key(2))).expect("new key");
    for (t, ns) in templates(&store).iter().zip(&enrolled) {
        assert_close(&t.embedding, &ns.embedding);
    }
    let image = std::fs::read(store.image_path(&t_id(&store), "enroll/s1.jpg").expect("path")).expect("read");
    assert_eq!(key(2).open(&image, b"s1").expect("opens with the new key"), enrolled[0].image);
    assert!(key(2).open(&image, b"s2").is_err(), "bound to its subject");
    drop(store);
    assert_eq!(files_containing(dir.path(), JPEG_HEAD), Vec::<String>::new());

    // An interrupted rotation is finished by running it again: nothing is sealed twice.
    let rerun = rotate_key(dir.path(), Some(&key(1)), &key(2)).expect("rerun");
    assert_eq!((rerun.templates, rerun.images, rerun.already_rotated), (0, 0, 4));
    assert!(rotate_key(dir.path(), Some(&key(3)), &key(4)).is_err(), "an unrelated old key is refused");
}

fn t_id(store: &SqliteStore) -> String {
    store.list_tenants().expect("tenants")[0].id.clone()
}

#[test]
fn plaintext_directories_are_encrypted_by_rotation_not_by_opening_with_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let enrolled = enroll_two(&store);
    drop(store);
    let refused = SqliteStore::open_with_key(dir.path(), Some(key(1))).err().expect("refused");
    assert!(refused.to_string().contains("keys rotate"), "{refused}");

    let report = rotate_key(dir.path(), None, &key(1)).expect("encrypt");
    assert_eq!((report.templates, report.images), (2, 2));
    assert_eq!(files_containing(dir.path(), JPEG_HEAD), Vec::<String>::new());
    assert_eq!(files_containing(dir.path(), &f16_bytes(&enrolled[1].embedding)[..32]), Vec::<String>::new());
    let store = SqliteStore::open_with_key(dir.path(), Some(key(1))).expect("open encrypted");
    assert_eq!(templates(&store).len(), 2);
}

#[test]
fn deleting_a_subject_leaves_no_trace_in_the_raw_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let enrolled = enroll_two(&store);
    let tenant = t_id(&store);
    let gone = f16_bytes(&enrolled[0].embedding);
    let kept = f16_bytes(&enrolled[1].embedding);
    assert!(!files_containing(dir.path(), &gone[..64]).is_empty());

    assert!(store.delete_subject(&tenant, "s1").expect("delete"));
    let image = store.image_path(&tenant, "enroll/s1.jpg").expect("path");
    assert!(!image.exists(), "the image file is removed");
    for window in gone.chunks(16) {
        assert_eq!(files_containing(dir.path(), window), Vec::<String>::new(), "deleted template still on disk");
    }
    assert!(!files_containing(dir.path(), &kept[..64]).is_empty(), "the other subject is untouched");
    assert!(!files_containing(dir.path(), b"person-s2").is_empty());
    assert_eq!(files_containing(dir.path(), b"person-s1"), Vec::<String>::new(), "deleted profile still on disk");
}

/// A kept sighting of `tenant` with a distinctive crop and template.
fn sighting(tenant: &Tenant, id: &str, seed: u8) -> facegate_core::NewSighting {
    facegate_core::NewSighting {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        unknown_person_id: format!("person-{id}"),
        model_id: "m".into(),
        embedding: template(f32::from(seed)),
        crop: jpeg_bytes(seed),
        crop_face: facegate_core::BoundingBox { left: 4.0, top: 5.0, right: 60.0, bottom: 70.0 },
        quality: 0.8,
        seen_unix_ms: 1_000,
        request_id: format!("req-{id}"),
    }
}

fn keep_two_sightings(store: &SqliteStore) -> Vec<facegate_core::NewSighting> {
    let tenant = store.create_tenant("acme", "hash").expect("tenant");
    store.set_unknown_faces_retention(&tenant.id, Some(std::time::Duration::from_secs(3600))).expect("on");
    ["v1", "v2"]
        .iter()
        .zip([7u8, 11])
        .map(|(id, seed)| {
            let kept = sighting(&tenant, id, seed);
            assert!(store.keep_sighting(&kept, true).expect("keep"));
            kept
        })
        .collect()
}

fn sighting_templates(store: &SqliteStore) -> Vec<Template> {
    let mut out = Vec::new();
    store.for_each_sighting_template(None, "m", &mut |t| out.push(t)).expect("templates");
    out.sort_by(|a, b| a.sample_id.cmp(&b.sample_id));
    out
}

#[test]
fn sightings_are_sealed_at_rest_and_rotated_with_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, lock) = open_as_holder(dir.path(), key(1));
    let kept = keep_two_sightings(&store);
    drop(store);
    drop(lock);
    assert_eq!(files_containing(dir.path(), JPEG_HEAD), Vec::<String>::new(), "a crop in the clear");
    for window in f16_bytes(&kept[0].embedding).chunks(16) {
        assert_eq!(files_containing(dir.path(), window), Vec::<String>::new(), "a template in the clear");
    }

    let report = rotate_key(dir.path(), Some(&key(1)), &key(2)).expect("rotate");
    assert_eq!((report.sightings, report.already_rotated), (2, 0));
    let store = SqliteStore::open_with_key(dir.path(), Some(key(2))).expect("new key");
    let tenant_id = t_id(&store);
    assert_eq!(store.sighting_face(&tenant_id, "v1").expect("face").map(|f| f.crop.jpeg), Some(kept[0].crop.clone()));
    for (t, s) in sighting_templates(&store).iter().zip(&kept) {
        assert_close(&t.embedding, &s.embedding);
    }
    drop(store);
    let rerun = rotate_key(dir.path(), Some(&key(1)), &key(2)).expect("rerun");
    assert_eq!((rerun.sightings, rerun.already_rotated), (0, 2));
}

#[test]
fn turning_unknown_faces_off_leaves_no_trace_in_the_raw_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let kept = keep_two_sightings(&store);
    let marks: Vec<Vec<u8>> =
        kept.iter().flat_map(|s| [s.crop[20..52].to_vec(), f16_bytes(&s.embedding)[64..96].to_vec()]).collect();
    for mark in &marks {
        assert!(!files_containing(dir.path(), mark).is_empty(), "the grep finds what is kept");
    }
    let tenant_id = t_id(&store);
    let purge = store.set_unknown_faces_retention(&tenant_id, None).expect("off");
    assert_eq!((purge.sightings, purge.unknown_people), (2, 2));
    for mark in &marks {
        assert_eq!(files_containing(dir.path(), mark), Vec::<String>::new(), "while open");
    }
    drop(store);
    for mark in &marks {
        assert_eq!(files_containing(dir.path(), mark), Vec::<String>::new(), "after close");
    }
}
