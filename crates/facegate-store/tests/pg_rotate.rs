//! `facegate keys rotate` on a PostgreSQL gallery: refused while a node runs, then every
//! template and image re-sealed under the new key in one transaction.

use facegate_core::store_roles::*;
use facegate_core::{BoundingBox, FaceSample, NewSample, Profile, Subject};
use facegate_store::{rotate_key_postgres, DataKey, PgRole, PgStore};
use facegate_testkit::PgCluster;

fn key(byte: u8) -> DataKey {
    DataKey::from_bytes(&[byte; 32])
}

#[test]
fn a_postgres_gallery_is_encrypted_and_re_keyed_with_every_node_stopped() {
    let Some(cluster) = PgCluster::start() else { return };
    let url = cluster.url();
    let node = PgStore::connect(url, None, PgRole::Node).expect("a plaintext gallery");
    let tenant = node.create_tenant("acme", "h").expect("tenant");
    let subject = Subject {
        id: "s1".into(),
        tenant_id: tenant.id.clone(),
        customer_person_id: Some("p1".into()),
        profile: Profile::default(),
        created_at: "1".into(),
        updated_at: "1".into(),
    };
    let sample = NewSample {
        sample: FaceSample {
            id: "e1".into(),
            subject_id: "s1".into(),
            image_name: "enroll/e1.jpg".into(),
            bbox: BoundingBox::default(),
            detector_score: 0.9,
            model_id: "m".into(),
            created_at: "1".into(),
        },
        embedding: vec![0.5, -0.25, 0.125],
        image: b"\xff\xd8\xffa face".to_vec(),
    };
    node.create_subject(&subject, Some(&sample)).expect("write");

    // A running node (even a plaintext one) holds off a rotation.
    let refused = rotate_key_postgres(url, None, &key(1)).expect_err("a node is running");
    assert!(refused.to_string().contains("stop them all"), "{refused}");
    drop(node);

    // Plaintext → key 1 → key 2. PostgreSQL frees a closed connection's locks once its backend
    // has exited, which a loaded machine may not have done yet when `drop` returns.
    let first = retry_while_locked(|| rotate_key_postgres(url, None, &key(1))).expect("encrypt");
    assert_eq!((first.templates, first.images), (1, 1));
    assert!(PgStore::connect(url, None, PgRole::Tool).is_err(), "the key is now required");
    let second = rotate_key_postgres(url, Some(&key(1)), &key(2)).expect("re-key");
    assert_eq!((second.templates, second.images), (1, 1));
    assert!(PgStore::connect(url, Some(key(1)), PgRole::Tool).is_err(), "the old key no longer opens it");
    let store = PgStore::connect(url, Some(key(2)), PgRole::Node).expect("the new key opens it");
    let mut templates = Vec::new();
    store.for_each_template("m", &mut |t| templates.push(t.embedding)).expect("templates");
    assert_eq!(templates, vec![vec![0.5, -0.25, 0.125]]);
    let sealed = store.image_bytes(&tenant.id, "enroll/e1.jpg").expect("read").expect("stored");
    assert!(!sealed.starts_with(b"\xff\xd8\xff"), "the image is sealed");
    assert_eq!(key(2).open(&sealed, b"s1").expect("opens with the new key"), sample.image);
    // And a wrong old key is refused without touching anything.
    drop(store);
    assert!(rotate_key_postgres(url, Some(&key(9)), &key(3)).is_err());
}

/// `rotate` again while it is refused for running nodes, for up to 10 s.
fn retry_while_locked<T, E: std::fmt::Display>(mut rotate: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match rotate() {
            Err(e) if e.to_string().contains("stop them all") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}
