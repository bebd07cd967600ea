//! Reindex staging, through the core's `ReindexStore` port, on SQLite and on PostgreSQL, each in
//! the clear and encrypted: staged outcomes change nothing a search sees, survive a restart and
//! are skipped by the next run; the swap happens only once every sample has an outcome, in one
//! go; failed samples keep their old template and are counted as stale.

mod common;

use std::sync::Arc;

use common::{sample, subject, templates};
use facegate_core::store_roles::*;
use facegate_core::{
    BoundingBox, Error, ReembeddedFace, ReindexFailure, ReindexOutcome, StagedSample, StoredImage, Tenant,
};
use facegate_store::{DataDirLock, DataKey, PgRole, PgStore, SqliteStore};
use facegate_testkit::PgCluster;

const OLD: &str = "old@1";
const NEW: &str = "new@2";
const AT: &str = "2024-01-01T00:00:00.000000Z";

enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(PgCluster),
}

/// One backend, in the clear or encrypted. Each [`Harness::store`] opens it anew, as a restart
/// (or the next `facegate reindex` after a kill) would.
struct Harness {
    backend: Backend,
    key: Option<DataKey>,
}

impl Harness {
    fn sqlite(encrypted: bool) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = encrypted.then(|| DataKey::from_bytes(&[7; 32]));
        // The lock holder records the key on the empty directory, as `serve` would.
        let lock = DataDirLock::acquire(dir.path()).expect("lock");
        drop(SqliteStore::open_locked(dir.path(), key.clone(), &lock).expect("create"));
        Harness { backend: Backend::Sqlite(dir), key }
    }

    fn postgres(encrypted: bool) -> Option<Harness> {
        let cluster = PgCluster::start()?;
        let key = encrypted.then(|| DataKey::from_bytes(&[7; 32]));
        drop(PgStore::connect(cluster.url(), key.clone(), PgRole::Node).expect("create"));
        Some(Harness { backend: Backend::Postgres(cluster), key })
    }

    fn store(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Sqlite(dir) => {
                Arc::new(SqliteStore::open_with_key(dir.path(), self.key.clone()).expect("open SQLite store"))
            }
            Backend::Postgres(cluster) => Arc::new(
                PgStore::connect(cluster.url(), self.key.clone(), PgRole::Tool).expect("open PostgreSQL store"),
            ),
        }
    }

    /// Replaces a sample's stored image bytes behind the store's back.
    fn damage_image(&self, tenant_id: &str, image_name: &str) {
        match &self.backend {
            Backend::Sqlite(dir) => {
                std::fs::write(dir.path().join("images").join(tenant_id).join(image_name), b"junk").expect("overwrite")
            }
            Backend::Postgres(cluster) => {
                let mut client = ::postgres::Client::connect(cluster.url(), ::postgres::NoTls).expect("connect");
                let path = format!("{tenant_id}/{image_name}");
                let changed = client
                    .execute("UPDATE image_blobs SET data = $2 WHERE path = $1", &[&path, &b"junk".to_vec()])
                    .expect("overwrite");
                assert_eq!(changed, 1);
            }
        }
    }

    /// Removes a sample's stored image behind the store's back.
    fn lose_image(&self, tenant_id: &str, image_name: &str) {
        match &self.backend {
            Backend::Sqlite(dir) => {
                std::fs::remove_file(dir.path().join("images").join(tenant_id).join(image_name)).expect("remove")
            }
            Backend::Postgres(cluster) => {
                let mut client = ::postgres::Client::connect(cluster.url(), ::postgres::NoTls).expect("connect");
                let path = format!("{tenant_id}/{image_name}");
                client.execute("DELETE FROM image_blobs WHERE path = $1", &[&path]).expect("delete");
            }
        }
    }
}

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $test() { super::$test(&super::Harness::sqlite(false)) })*
        }
        mod sqlite_encrypted {
            $(#[test] fn $test() { super::$test(&super::Harness::sqlite(true)) })*
        }
        mod postgres {
            $(#[test] fn $test() {
                let Some(harness) = super::Harness::postgres(false) else { return };
                super::$test(&harness)
            })*
        }
        mod postgres_encrypted {
            $(#[test] fn $test() {
                let Some(harness) = super::Harness::postgres(true) else { return };
                super::$test(&harness)
            })*
        }
    };
}

on_every_backend!(
    staged_outcomes_change_nothing_until_one_swap_and_survive_a_restart,
    a_replaced_or_deleted_sample_takes_its_staged_outcome_with_it,
    missing_and_damaged_images_are_answers_not_errors,
);

/// A 4-value template of the new model, distinct per seed and exact in f16.
fn new_template(seed: f32) -> Vec<f32> {
    vec![seed, 0.5, -0.25, 0.125]
}

fn reembedded(tenant: &Tenant, subject_id: &str, sample_id: &str, seed: f32) -> StagedSample {
    StagedSample {
        tenant_id: tenant.id.clone(),
        subject_id: subject_id.into(),
        sample_id: sample_id.into(),
        outcome: ReindexOutcome::Reembedded(ReembeddedFace {
            bbox: BoundingBox { left: 3.0, top: 4.0, right: 99.0, bottom: 118.0 },
            detector_score: 0.75,
            embedding: new_template(seed),
        }),
    }
}

fn failed(tenant: &Tenant, subject_id: &str, sample_id: &str, failure: ReindexFailure) -> StagedSample {
    StagedSample {
        tenant_id: tenant.id.clone(),
        subject_id: subject_id.into(),
        sample_id: sample_id.into(),
        outcome: ReindexOutcome::Failed(failure),
    }
}

fn ids(samples: &[facegate_core::FaceSample]) -> Vec<&str> {
    samples.iter().map(|s| s.id.as_str()).collect()
}

/// acme: s1 with samples a1, a2; s2 with a3. beta: s3 with b1. All made by OLD.
fn seed(store: &dyn Store) -> (Tenant, Tenant) {
    let acme = store.create_tenant("acme", "h1").expect("tenant");
    let beta = store.create_tenant("beta", "h2").expect("tenant");
    store.create_subject(&subject(&acme, "s1", Some("p1")), Some(&sample("s1", "a1", AT, OLD, 0.1))).expect("s1");
    store.update_subject(&subject(&acme, "s1", Some("p1")), Some(&sample("s1", "a2", AT, OLD, 0.2)), None).expect("a2");
    store.create_subject(&subject(&acme, "s2", Some("p2")), Some(&sample("s2", "a3", AT, OLD, 0.3))).expect("s2");
    store.create_subject(&subject(&beta, "s3", Some("p3")), Some(&sample("s3", "b1", AT, OLD, 0.4))).expect("s3");
    (acme, beta)
}

fn staged_outcomes_change_nothing_until_one_swap_and_survive_a_restart(h: &Harness) {
    let store = h.store();
    let (acme, beta) = seed(store.as_ref());
    assert!(store.stale_templates(OLD).expect("stale").is_empty(), "nothing is stale for the model that made it");
    let stale = store.stale_templates(NEW).expect("stale");
    assert_eq!(stale.models, [OLD]);
    let per_tenant: Vec<(&str, u64, u64)> =
        stale.tenants.iter().map(|t| (t.tenant_name.as_str(), t.stale_samples, t.unsearchable_subjects)).collect();
    assert_eq!(per_tenant, [("acme", 3, 2), ("beta", 1, 1)]);

    // Pages in id order, after a cursor.
    let first = store.samples_to_reindex(&acme.id, NEW, None, 2).expect("page");
    assert_eq!(ids(&first), ["a1", "a2"]);
    assert_eq!(first[0].bbox, sample("s1", "a1", AT, OLD, 0.1).sample.bbox);
    assert_eq!(ids(&store.samples_to_reindex(&acme.id, NEW, Some("a2"), 2).expect("page")), ["a3"]);
    // The image as uploaded, opened when encrypted.
    assert_eq!(
        store.sample_image(&acme.id, "a1").expect("image"),
        StoredImage::Bytes(sample("s1", "a1", AT, OLD, 0.1).image)
    );
    assert_eq!(store.sample_image(&beta.id, "a1").expect("image"), StoredImage::Missing, "another tenant's");

    // A batch, then a "kill": the store is dropped and opened again.
    store.stage_reindexed(NEW, &[reembedded(&acme, "s1", "a1", 0.375)]).expect("stage");
    let before_swap = |store: &dyn Store| {
        assert!(templates(store, NEW).is_empty(), "staged templates are not searchable");
        assert_eq!(templates(store, OLD).len(), 4, "the old templates stay until the swap");
    };
    before_swap(store.as_ref());
    drop(store);
    let store = h.store();
    before_swap(store.as_ref());
    let staged = store.staged_reindex(NEW).expect("staged");
    assert_eq!(staged.len(), 1);
    assert_eq!((staged[0].0.as_str(), staged[0].1.reembedded), (acme.id.as_str(), 1));
    assert_eq!(ids(&store.samples_to_reindex(&acme.id, NEW, None, 10).expect("page")), ["a2", "a3"], "a1 is done");

    // A swap before every sample has an outcome is refused and changes nothing.
    let refused = store.swap_reindexed(NEW).expect_err("a2, a3 and b1 are left");
    assert!(matches!(refused, Error::Conflict(_)), "{refused:?}");
    before_swap(store.as_ref());

    // Staging again replaces an outcome.
    store
        .stage_reindexed(
            NEW,
            &[
                reembedded(&acme, "s1", "a1", 0.625),
                reembedded(&acme, "s1", "a2", 0.75),
                failed(&acme, "s2", "a3", ReindexFailure::NoFace),
                reembedded(&beta, "s3", "b1", 0.875),
            ],
        )
        .expect("stage the rest");
    let swapped = store.swap_reindexed(NEW).expect("swap");
    let by_tenant: Vec<(&str, u64, Option<u64>)> = swapped
        .iter()
        .map(|(tenant_id, tally)| (tenant_id.as_str(), tally.reembedded, tally.failed.get("no face").copied()))
        .collect();
    let mut want = vec![(acme.id.as_str(), 2, Some(1)), (beta.id.as_str(), 1, None)];
    want.sort();
    assert_eq!(by_tenant, want);

    let mut new: Vec<(String, Vec<f32>)> =
        templates(store.as_ref(), NEW).into_iter().map(|t| (t.sample_id, t.embedding)).collect();
    new.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        new,
        [("a1".to_owned(), new_template(0.625)), ("a2".into(), new_template(0.75)), ("b1".into(), new_template(0.875))]
    );
    let old: Vec<String> = templates(store.as_ref(), OLD).into_iter().map(|t| t.sample_id).collect();
    assert_eq!(old, ["a3"], "the failed sample keeps its old template");
    let a1 = store.samples_of(&acme.id, "s1").expect("samples").into_iter().find(|s| s.id == "a1").expect("a1");
    assert_eq!((a1.model_id.as_str(), a1.bbox.left, a1.detector_score), (NEW, 3.0, 0.75), "box and model swapped");

    let left = store.stale_templates(NEW).expect("stale");
    assert_eq!((left.stale_samples(), left.unsearchable_subjects()), (1, 1), "{left:?}");
    assert_eq!(left.tenants[0].tenant_name, "acme");
    assert!(store.staged_reindex(NEW).expect("staged").is_empty(), "the staging is emptied");
    // The next run has only the failed sample to try again.
    assert_eq!(ids(&store.samples_to_reindex(&acme.id, NEW, None, 10).expect("page")), ["a3"]);
    drop(store);
    let store = h.store();
    assert_eq!(templates(store.as_ref(), NEW).len(), 3, "the swap is durable");
}

fn a_replaced_or_deleted_sample_takes_its_staged_outcome_with_it(h: &Harness) {
    let store = h.store();
    let (acme, _beta) = seed(store.as_ref());
    store
        .stage_reindexed(NEW, &[reembedded(&acme, "s1", "a1", 0.625), reembedded(&acme, "s2", "a3", 0.75)])
        .expect("stage");
    // NEC's event replacement keeps the sample id with a new image: its staged template is stale.
    let mut replacement = sample("s1", "a1", AT, OLD, 0.5);
    replacement.sample.image_name = "enroll/a1-new_Abcdefg.jpg".into();
    store.replace_sample(&subject(&acme, "s1", Some("p1")), &replacement, None).expect("replace");
    assert!(store.delete_subject(&acme.id, "s2").expect("delete"));
    assert!(store.staged_reindex(NEW).expect("staged").is_empty(), "both outcomes went with their samples");
    assert_eq!(ids(&store.samples_to_reindex(&acme.id, NEW, None, 10).expect("page")), ["a1", "a2"]);
    // An outcome for a sample that is gone, or staged under another subject, is left out.
    store
        .stage_reindexed(NEW, &[reembedded(&acme, "s2", "a3", 0.75), reembedded(&acme, "s9", "a2", 0.75)])
        .expect("stage");
    assert!(store.staged_reindex(NEW).expect("staged").is_empty());
}

fn missing_and_damaged_images_are_answers_not_errors(h: &Harness) {
    let store = h.store();
    let (acme, beta) = seed(store.as_ref());
    h.damage_image(&acme.id, "enroll/a1_Fkkx7eK.jpg");
    h.lose_image(&beta.id, "enroll/b1_Fkkx7eK.jpg");
    assert!(matches!(store.sample_image(&acme.id, "a1").expect("answer"), StoredImage::Unreadable(_)));
    assert_eq!(store.sample_image(&beta.id, "b1").expect("answer"), StoredImage::Missing);
    assert_eq!(store.sample_image(&acme.id, "nope").expect("answer"), StoredImage::Missing);
}

#[test]
fn a_key_rotation_drops_what_an_unfinished_reindex_staged() {
    let h = Harness::sqlite(true);
    let store = h.store();
    let (acme, _) = seed(store.as_ref());
    store.stage_reindexed(NEW, &[reembedded(&acme, "s1", "a1", 0.625)]).expect("stage");
    drop(store);
    let Backend::Sqlite(dir) = &h.backend else { unreachable!("a SQLite harness") };
    let new_key = DataKey::from_bytes(&[8; 32]);
    facegate_store::rotate_key(dir.path(), h.key.as_ref(), &new_key).expect("rotate");
    let store = SqliteStore::open_with_key(dir.path(), Some(new_key)).expect("open with the new key");
    assert!(store.staged_reindex(NEW).expect("staged").is_empty(), "sealed under the old key: dropped");
    assert_eq!(ids(&store.samples_to_reindex(&acme.id, NEW, None, 10).expect("page")), ["a1", "a2", "a3"]);
}

#[test]
fn a_postgres_reindex_runs_only_with_every_node_stopped() {
    let Some(cluster) = PgCluster::start() else { return };
    let node = PgStore::connect(cluster.url(), None, PgRole::Node).expect("node");
    let refused = PgStore::connect(cluster.url(), None, PgRole::Exclusive).expect_err("a node runs");
    assert!(refused.to_string().contains("stop them first"), "{refused}");
    drop(node);
    let reindex = PgStore::connect(cluster.url(), None, PgRole::Exclusive).expect("no node runs");
    let refused = PgStore::connect(cluster.url(), None, PgRole::Node).expect_err("a reindex runs");
    assert!(refused.to_string().contains("reindex"), "{refused}");
    assert!(PgStore::connect(cluster.url(), None, PgRole::Exclusive).is_err(), "one reindex at a time");
    drop(reindex);
    PgStore::connect(cluster.url(), None, PgRole::Node).expect("a node starts after it");
}
