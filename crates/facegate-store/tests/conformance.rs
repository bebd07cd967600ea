//! The store conformance suite: the same tests, through the core's `Store` traits, against
//! SQLite on a temporary data directory, against PostgreSQL on a throwaway cluster
//! (`scripts/postgres`), and against the core's `MemoryStore`, so that the fake the service's
//! tests run on keeps the same contract. What only one backend has (SQLite's image files, sweep
//! and WAL scrub) is tested in `store.rs`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{sample, subject, templates};
use facegate_core::store_roles::*;
use facegate_core::testing::MemoryStore;
use facegate_core::{Error, Profile, Subject, Template, Tenant};
use facegate_store::{PgRole, PgStore, SqliteStore};
use facegate_testkit::PgCluster;

/// One backend under test. Each [`Harness::store`] opens the store anew, as a restart would.
enum Harness {
    Sqlite(tempfile::TempDir),
    Postgres(PgCluster),
    /// One fake for the whole test: reopening it keeps its data, as a database would.
    Memory(Arc<MemoryStore>),
}

impl Harness {
    fn sqlite() -> Harness {
        Harness::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    /// `None` (a skip, or a failure under CI) when PostgreSQL cannot be started here.
    fn postgres() -> Option<Harness> {
        PgCluster::start().map(Harness::Postgres)
    }

    fn memory() -> Harness {
        Harness::Memory(Arc::new(MemoryStore::default()))
    }

    fn store(&self) -> Arc<dyn Store> {
        match self {
            Harness::Memory(store) => store.clone(),
            Harness::Sqlite(dir) => Arc::new(SqliteStore::open(dir.path()).expect("open SQLite store")),
            Harness::Postgres(cluster) => {
                Arc::new(PgStore::connect(cluster.url(), None, PgRole::Node).expect("open PostgreSQL store"))
            }
        }
    }

    /// The stored image of a sample, as stored.
    fn image(&self, tenant_id: &str, image_name: &str) -> Option<Vec<u8>> {
        match self {
            Harness::Sqlite(dir) => std::fs::read(dir.path().join("images").join(tenant_id).join(image_name)).ok(),
            Harness::Postgres(cluster) => {
                let path = format!("{tenant_id}/{image_name}");
                let mut client = pg_client(cluster);
                client
                    .query_opt("SELECT data FROM image_blobs WHERE path = $1", &[&path])
                    .expect("query")
                    .map(|row| row.get(0))
            }
            Harness::Memory(store) => store.image(tenant_id, image_name),
        }
    }

    /// The backend's own consistency checks: SQLite's `integrity_check`, and no image file
    /// without a row.
    fn check_integrity(&self, _store: &dyn Store) {
        if let Harness::Sqlite(dir) = self {
            let store = SqliteStore::open(dir.path()).expect("open");
            assert_eq!(store.integrity_check().expect("integrity"), "ok");
            assert_eq!(store.sweep_orphans().expect("sweep"), 0, "image files without rows");
        }
    }

    /// How many images are stored, over all tenants.
    fn image_count(&self) -> usize {
        match self {
            Harness::Sqlite(dir) => {
                let images = dir.path().join("images");
                if images.is_dir() {
                    facegate_testkit::files_under(&images).len()
                } else {
                    0
                }
            }
            Harness::Postgres(cluster) => {
                let n: i64 =
                    pg_client(cluster).query_one("SELECT COUNT(*) FROM image_blobs", &[]).expect("count").get(0);
                usize::try_from(n).expect("count")
            }
            Harness::Memory(store) => store.image_count(),
        }
    }
}

fn pg_client(cluster: &PgCluster) -> ::postgres::Client {
    ::postgres::Client::connect(cluster.url(), ::postgres::NoTls).expect("connect")
}

/// Runs each named test against both backends and the fake.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[test] fn $test() { super::$test(&super::Harness::memory()) })*
        }
        mod sqlite {
            $(#[test] fn $test() { super::$test(&super::Harness::sqlite()) })*
        }
        mod postgres {
            $(#[test] fn $test() {
                let Some(harness) = super::Harness::postgres() else { return };
                super::$test(&harness)
            })*
        }
    };
}

conformance!(
    tenants_round_trip_and_conflict_rules,
    subjects_and_samples_round_trip,
    customer_ids_are_unique_per_tenant_only,
    unsafe_image_names_are_refused_before_anything_is_written,
    data_survives_reopening,
    delete_removes_rows_and_images,
    tenants_cannot_reach_each_others_subjects,
    api_credentials_resolve_to_their_tenant_only,
    tags_are_unique_per_tenant_and_bounded,
    subject_tags_are_replaced_and_scoped,
    replacing_a_sample_keeps_its_id_and_swaps_the_image,
    an_event_and_its_tags_commit_together,
    bulk_jobs_page_and_register_each_record_once,
    sixteen_writers_and_four_readers_lose_nothing,
    persons_list_page_by_page_in_byte_order_with_a_prefix,
    a_signature_is_admitted_once_across_nodes_and_restarts_until_it_expires,
    unknown_faces_are_kept_by_no_tenant_until_it_opts_in,
    sightings_group_into_unknown_people_that_merge_split_and_delete,
    a_promoted_unknown_person_becomes_a_subject_in_one_step,
    sightings_expire_by_their_tenants_retention_and_go_with_the_setting_and_the_tenant,
);

fn sighting(tenant: &Tenant, id: &str, person: &str, seen_unix_ms: i64, seed: f32) -> facegate_core::NewSighting {
    facegate_core::NewSighting {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        unknown_person_id: person.into(),
        model_id: "m@1".into(),
        embedding: vec![seed, -seed, 0.25, 1.0 / 3.0],
        crop: format!("\u{FF}crop of {id}").into_bytes(),
        crop_face: facegate_core::BoundingBox { left: 4.0, top: 5.0, right: 60.0, bottom: 70.0 },
        quality: 0.75,
        seen_unix_ms,
        request_id: format!("req-{id}"),
    }
}

fn person_counts(store: &dyn Store, tenant: &Tenant) -> Vec<(String, u64, i64, i64)> {
    store
        .list_unknown_people(&tenant.id, None, 100)
        .expect("list")
        .into_iter()
        .map(|p| (p.id, p.sightings, p.first_seen_unix_ms, p.last_seen_unix_ms))
        .collect()
}

fn sightings_group_into_unknown_people_that_merge_split_and_delete(h: &Harness) {
    let store = h.store();
    let acme = store.create_tenant("acme", "hash-a").expect("create");
    let globex = store.create_tenant("globex", "hash-g").expect("create");
    // Off: nothing is kept, and no error.
    assert!(!store.keep_sighting(&sighting(&acme, "s0", "p-a", 1_000, 0.5), true).expect("keep while off"));
    assert!(person_counts(store.as_ref(), &acme).is_empty());

    let month = std::time::Duration::from_secs(30 * 86_400);
    store.set_unknown_faces_retention(&acme.id, Some(month)).expect("on");
    assert!(store.keep_sighting(&sighting(&acme, "s1", "p-a", 1_000, 0.5), true).expect("keep"));
    assert!(store.keep_sighting(&sighting(&acme, "s2", "p-a", 3_000, 0.5), false).expect("keep"));
    assert!(store.keep_sighting(&sighting(&acme, "s3", "p-b", 2_000, 0.25), true).expect("keep"));
    assert!(matches!(
        store.keep_sighting(&sighting(&acme, "s4", "p-gone", 2_000, 0.25), false),
        Err(Error::NotFound("unknown person"))
    ));
    // Another tenant's person cannot be joined, and that tenant keeps nothing while off.
    store.set_unknown_faces_retention(&globex.id, Some(month)).expect("on");
    assert!(matches!(
        store.keep_sighting(&sighting(&globex, "g1", "p-a", 2_000, 0.25), false),
        Err(Error::NotFound("unknown person"))
    ));

    let store = h.store(); // survives reopening
    assert_eq!(
        person_counts(store.as_ref(), &acme),
        vec![("p-a".into(), 2, 1_000, 3_000), ("p-b".into(), 1, 2_000, 2_000)]
    );
    assert!(person_counts(store.as_ref(), &globex).is_empty());
    assert_eq!(store.count_unknown_people(&acme.id).expect("count"), 2);
    assert_eq!(store.count_unknown_people(&globex.id).expect("count"), 0);
    let page = store.list_unknown_people(&acme.id, Some("p-a"), 10).expect("page");
    assert_eq!(page.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), vec!["p-b"]);
    assert_eq!(store.list_unknown_people(&acme.id, None, 1).expect("page").len(), 1);
    let sightings = store.sightings_of(&acme.id, "p-a").expect("sightings");
    assert_eq!(
        sightings.iter().map(|s| (s.id.as_str(), s.seen_unix_ms, s.request_id.as_str())).collect::<Vec<_>>(),
        vec![("s1", 1_000, "req-s1"), ("s2", 3_000, "req-s2")]
    );
    assert_eq!((sightings[0].model_id.as_str(), sightings[0].quality), ("m@1", 0.75));
    assert!(store.sightings_of(&globex.id, "p-a").expect("other tenant").is_empty());
    let face = store.sighting_face(&acme.id, "s2").expect("face").expect("kept");
    let kept = sighting(&acme, "s2", "p-a", 3_000, 0.5);
    assert_eq!((face.crop.jpeg, face.crop.face, face.model_id), (kept.crop, kept.crop_face, kept.model_id));
    assert_eq!(face.embedding, as_stored(&kept.embedding));
    assert_eq!(store.sighting_face(&globex.id, "s2").expect("crop"), None, "another tenant's crop");
    let mut templates = Vec::new();
    store.for_each_sighting_template(Some(&acme.id), "m@1", &mut |t| templates.push(t)).expect("templates");
    templates.sort_by(|a, b| a.sample_id.cmp(&b.sample_id));
    assert_eq!(
        templates.iter().map(|t| (t.subject_id.as_str(), t.sample_id.as_str())).collect::<Vec<_>>(),
        vec![("p-a", "s1"), ("p-a", "s2"), ("p-b", "s3")]
    );
    assert_eq!(templates[2].embedding, as_stored(&[0.25, -0.25, 0.25, 1.0 / 3.0]));
    let mut other_model = 0;
    store.for_each_sighting_template(None, "m@2", &mut |_| other_model += 1).expect("templates");
    assert_eq!(other_model, 0);

    // Merge: p-b's sighting moves to p-a, and p-b is gone.
    assert!(matches!(store.merge_unknown_people(&acme.id, "p-a", "p-a"), Err(Error::InvalidRequest(_))));
    assert!(matches!(store.merge_unknown_people(&acme.id, "p-a", "nobody"), Err(Error::NotFound(_))));
    assert!(matches!(store.merge_unknown_people(&globex.id, "p-a", "p-b"), Err(Error::NotFound(_))));
    assert_eq!(store.merge_unknown_people(&acme.id, "p-a", "p-b").expect("merge"), 1);
    assert_eq!(person_counts(store.as_ref(), &acme), vec![("p-a".into(), 3, 1_000, 3_000)]);
    assert_eq!(store.unknown_person(&acme.id, "p-b").expect("read"), None);

    // Split s3 out again, into a new person.
    let split = |ids: &[&str], new: &str| {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        store.split_sightings(&acme.id, "p-a", &ids, new)
    };
    assert!(matches!(split(&[], "p-c"), Err(Error::InvalidRequest(_))));
    assert!(matches!(split(&["s1", "s2", "s3"], "p-c"), Err(Error::InvalidRequest(_))), "nothing left");
    assert!(matches!(split(&["s3", "nope"], "p-c"), Err(Error::NotFound("sighting"))));
    split(&["s3"], "p-c").expect("split");
    assert_eq!(
        person_counts(store.as_ref(), &acme),
        vec![("p-a".into(), 2, 1_000, 3_000), ("p-c".into(), 1, 2_000, 2_000)]
    );

    // Delete: the person and its sightings go; another tenant's delete finds nothing.
    assert_eq!(store.delete_unknown_person(&globex.id, "p-a").expect("delete"), None);
    let purge = store.delete_unknown_person(&acme.id, "p-a").expect("delete").expect("existed");
    assert_eq!((purge.sightings, purge.unknown_people), (2, 1));
    assert_eq!(store.sighting_face(&acme.id, "s1").expect("crop"), None);
    assert_eq!(person_counts(h.store().as_ref(), &acme), vec![("p-c".into(), 1, 2_000, 2_000)]);
}

fn a_promoted_unknown_person_becomes_a_subject_in_one_step(h: &Harness) {
    let store = h.store();
    let acme = store.create_tenant("acme", "hash-a").expect("create");
    store.set_unknown_faces_retention(&acme.id, Some(std::time::Duration::from_secs(3600))).expect("on");
    store.keep_sighting(&sighting(&acme, "s1", "p-a", 1_000, 0.5), true).expect("keep");
    store.keep_sighting(&sighting(&acme, "s2", "p-a", 2_000, 0.5), false).expect("keep");
    let taken = subject(&acme, "subj-0", Some("taken"));
    store.create_subject(&taken, None).expect("subject");

    let will = subject(&acme, "subj-1", Some("will"));
    let samples =
        vec![sample("subj-1", "e1", "2024-01-01T00:00:00.000000Z", "m@1", 0.5), sample("subj-1", "e2", "", "m@1", 0.5)];
    let clash = subject(&acme, "subj-1", Some("taken"));
    let clashed = store.promote_unknown_person(&acme.id, "p-a", &clash, &samples);
    assert!(matches!(clashed, Err(Error::Conflict(_))), "{clashed:?}");
    assert!(matches!(store.promote_unknown_person(&acme.id, "p-z", &will, &samples), Err(Error::NotFound(_))));
    assert_eq!(person_counts(store.as_ref(), &acme).len(), 1, "a refused promotion changes nothing");
    assert_eq!(store.subject_by_customer_id(&acme.id, "will").expect("read"), None);

    store.promote_unknown_person(&acme.id, "p-a", &will, &samples).expect("promote");
    let store = h.store();
    assert_eq!(store.subject_by_customer_id(&acme.id, "will").expect("read"), Some(will.clone()));
    assert_eq!(store.samples_of(&acme.id, "subj-1").expect("samples").len(), 2);
    assert_eq!(h.image(&acme.id, &samples[0].sample.image_name), Some(samples[0].image.clone()));
    assert!(person_counts(store.as_ref(), &acme).is_empty());
    assert_eq!(store.sighting_face(&acme.id, "s1").expect("crop"), None);
    h.check_integrity(store.as_ref());
}

fn sightings_expire_by_their_tenants_retention_and_go_with_the_setting_and_the_tenant(h: &Harness) {
    let store = h.store();
    let acme = store.create_tenant("acme", "hash-a").expect("create");
    let globex = store.create_tenant("globex", "hash-g").expect("create");
    let hour = std::time::Duration::from_secs(3600);
    store.set_unknown_faces_retention(&acme.id, Some(hour)).expect("on");
    store.set_unknown_faces_retention(&globex.id, Some(2 * hour)).expect("on");
    let now = 10 * 3_600_000;
    // acme: one sighting past its hour, one within; its person with only the old one goes.
    store.keep_sighting(&sighting(&acme, "a-old", "p-old", now - 3_600_001, 0.5), true).expect("keep");
    store.keep_sighting(&sighting(&acme, "a-mixed-old", "p-mixed", now - 3_700_000, 0.5), true).expect("keep");
    store.keep_sighting(&sighting(&acme, "a-mixed-new", "p-mixed", now - 60_000, 0.5), false).expect("keep");
    // globex keeps two hours: the same age stays.
    store.keep_sighting(&sighting(&globex, "g-old", "q-old", now - 3_600_001, 0.5), true).expect("keep");

    let purged = store.purge_expired_sightings(now).expect("purge");
    assert_eq!(purged, vec![(acme.id.clone(), facegate_core::SightingPurge { sightings: 2, unknown_people: 1 })]);
    assert_eq!(person_counts(store.as_ref(), &acme), vec![("p-mixed".into(), 1, now - 60_000, now - 60_000)]);
    assert_eq!(person_counts(store.as_ref(), &globex).len(), 1);
    assert!(store.purge_expired_sightings(now).expect("again").is_empty());

    // Off deletes all the tenant kept, in the same step.
    let off = store.set_unknown_faces_retention(&acme.id, None).expect("off");
    assert_eq!((off.sightings, off.unknown_people), (1, 1));
    assert!(person_counts(h.store().as_ref(), &acme).is_empty());
    assert_eq!(store.sighting_face(&acme.id, "a-mixed-new").expect("crop"), None);

    let purge = store.delete_tenant(&globex.id).expect("delete tenant");
    assert_eq!((purge.sightings, purge.unknown_people), (1, 1));
    let mut left = 0;
    store.for_each_sighting_template(None, "m@1", &mut |_| left += 1).expect("templates");
    assert_eq!(left, 0);
    h.check_integrity(store.as_ref());
}

/// A template as the store gives it back: rounded to half precision.
fn as_stored(embedding: &[f32]) -> Vec<f32> {
    embedding.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

fn unknown_faces_are_kept_by_no_tenant_until_it_opts_in(h: &Harness) {
    use std::time::Duration;
    let store = h.store();
    let acme = store.create_tenant("acme", "hash-a").expect("create");
    let globex = store.create_tenant("globex", "hash-g").expect("create");
    assert_eq!(store.unknown_faces_retention(&acme.id).expect("read"), None, "off for a new tenant");
    let month = Duration::from_secs(30 * 86_400);
    store.set_unknown_faces_retention(&acme.id, Some(month)).expect("on");
    // Another connection (a restart, or another node on PostgreSQL) reads the same setting.
    let reopened = h.store();
    assert_eq!(reopened.unknown_faces_retention(&acme.id).expect("read"), Some(month));
    assert_eq!(reopened.unknown_faces_retention(&globex.id).expect("read"), None, "one tenant's choice only");
    reopened.set_unknown_faces_retention(&acme.id, None).expect("off");
    assert_eq!(h.store().unknown_faces_retention(&acme.id).expect("read"), None);
    assert!(matches!(store.unknown_faces_retention("no-such-tenant"), Err(Error::NotFound(_))));
    assert!(matches!(store.set_unknown_faces_retention("no-such-tenant", Some(month)), Err(Error::NotFound(_))));
}

fn tenants_round_trip_and_conflict_rules(h: &Harness) {
    let store = h.store();
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

fn subjects_and_samples_round_trip(h: &Harness) {
    let store = h.store();
    let tenant = store.create_tenant("acme", "h").expect("tenant");
    let mut will = subject(&tenant, "subj-1", Some("will"));
    let first = sample("subj-1", "sample-1", "2024-01-01T00:00:00.000000Z", "m@1", 0.5);
    store.create_subject(&will, Some(&first)).expect("create");

    assert_eq!(store.subject_by_id(&tenant.id, "subj-1").expect("by id"), Some(will.clone()));
    assert_eq!(store.subject_by_customer_id(&tenant.id, "will").expect("by cpid"), Some(will.clone()));
    assert_eq!(store.subject_by_customer_id(&tenant.id, "nobody").expect("missing"), None);
    assert_eq!(store.samples_of(&tenant.id, "subj-1").expect("samples"), vec![first.sample.clone()]);
    assert_eq!(h.image(&tenant.id, &first.sample.image_name), Some(first.image.clone()));

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

    let by_model = templates(store.as_ref(), "m@1");
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
    assert_eq!(templates(store.as_ref(), "m@2").len(), 1);
    assert!(templates(store.as_ref(), "other").is_empty());

    // Updating a subject that does not exist is NotFound, and stores no image.
    let ghost = subject(&tenant, "ghost", Some("ghost"));
    let orphan = sample("ghost", "sample-g", "2024-03-03T00:00:00.000000Z", "m@1", 0.1);
    assert!(matches!(store.update_subject(&ghost, Some(&orphan), None), Err(Error::NotFound(_))));
    assert_eq!(h.image(&tenant.id, &orphan.sample.image_name), None);
}

fn customer_ids_are_unique_per_tenant_only(h: &Harness) {
    let store = h.store();
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    store.create_subject(&subject(&a, "s1", Some("cp")), None).expect("first");
    let dup = sample("s2", "dup-sample", "2024-01-01T00:00:00.000000Z", "m", 1.0);
    let err = store.create_subject(&subject(&a, "s2", Some("cp")), Some(&dup)).expect_err("duplicate");
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    // The refused subject's image is stored nowhere.
    assert_eq!(h.image(&a.id, &dup.sample.image_name), None);
    assert!(templates(store.as_ref(), "m").is_empty());
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

fn unsafe_image_names_are_refused_before_anything_is_written(h: &Harness) {
    let store = h.store();
    let t = store.create_tenant("t", "h").expect("tenant");
    for bad in ["../../escape.jpg", "/etc/passwd", "enroll/a\0.jpg"] {
        let mut ns = sample("s", "x", "2024-01-01T00:00:00.000000Z", "m", 1.0);
        ns.sample.image_name = bad.into();
        let err = store.create_subject(&subject(&t, "s", Some("s")), Some(&ns)).expect_err(bad);
        assert!(matches!(err, Error::InvalidRequest(_)), "{bad}: {err:?}");
    }
    assert!(store.subject_by_id(&t.id, "s").expect("lookup").is_none());
    assert_eq!(h.image_count(), 0);
}

fn data_survives_reopening(h: &Harness) {
    let (tenant, s) = {
        let store = h.store();
        let tenant = store.create_tenant("acme", "h").expect("tenant");
        let s = subject(&tenant, "s1", Some("cp"));
        store.create_subject(&s, Some(&sample("s1", "x1", "2024-01-01T00:00:00.000000Z", "m", 0.5))).expect("create");
        (tenant, s)
    };
    let store = h.store();
    assert_eq!(store.tenant_by_token_hash("h").expect("tenant"), Some(tenant.clone()));
    assert_eq!(store.subject_by_customer_id(&tenant.id, "cp").expect("subject"), Some(s));
    assert_eq!(store.samples_of(&tenant.id, "s1").expect("samples").len(), 1);
    assert_eq!(templates(store.as_ref(), "m").len(), 1);
    drop(store);
    // Opening a third time re-applies nothing and loses nothing.
    let store = h.store();
    assert_eq!(store.list_tenants().expect("tenants").len(), 1);
    assert_eq!(h.image_count(), 1);
}

fn delete_removes_rows_and_images(h: &Harness) {
    let store = h.store();
    let t = store.create_tenant("t", "h").expect("tenant");
    store.create_subject(&subject(&t, "gone", Some("gone")), Some(&sample("gone", "g1", "1", "m", 0.1))).expect("s");
    store
        .update_subject(&subject(&t, "gone", Some("gone")), Some(&sample("gone", "g2", "2", "m", 0.2)), None)
        .expect("u");
    store.create_subject(&subject(&t, "kept", Some("kept")), Some(&sample("kept", "k1", "1", "m", 0.3))).expect("s");
    assert_eq!(h.image_count(), 3);

    assert!(store.delete_subject(&t.id, "gone").expect("delete"));
    assert!(!store.delete_subject(&t.id, "gone").expect("again"));
    for id in ["g1", "g2"] {
        assert_eq!(h.image(&t.id, &format!("enroll/{id}_Fkkx7eK.jpg")), None, "{id}");
    }
    assert!(store.subject_by_id(&t.id, "gone").expect("lookup").is_none());
    assert!(store.samples_of(&t.id, "gone").expect("samples").is_empty());
    let left: Vec<_> = templates(store.as_ref(), "m").into_iter().map(|t| t.sample_id).collect();
    assert_eq!(left, ["k1"]);
    assert_eq!(h.image_count(), 1);

    assert!(store.delete_sample(&t.id, "kept", "k1").expect("delete sample"));
    assert!(!store.delete_sample(&t.id, "kept", "k1").expect("again"));
    assert!(store.subject_by_id(&t.id, "kept").expect("lookup").is_some(), "the subject stays");
    assert_eq!(h.image_count(), 0);
}

fn tenants_cannot_reach_each_others_subjects(h: &Harness) {
    let store = h.store();
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    store.create_subject(&subject(&a, "sa", Some("alice")), Some(&sample("sa", "xa", "1", "m", 0.5))).expect("a");
    assert!(store.subject_by_id(&b.id, "sa").expect("lookup").is_none());
    assert!(store.subject_by_customer_id(&b.id, "alice").expect("lookup").is_none());
    assert!(store.samples_of(&b.id, "sa").expect("samples").is_empty());
    assert!(!store.delete_subject(&b.id, "sa").expect("delete"));
    assert!(!store.delete_sample(&b.id, "sa", "xa").expect("delete sample"));
    let mut hijack = subject(&b, "sa", Some("alice"));
    hijack.profile.first_name = Some("Mallory".into());
    assert!(matches!(store.update_subject(&hijack, None, None), Err(Error::NotFound(_))));
    let intact = store.subject_by_id(&a.id, "sa").expect("lookup").expect("still there");
    assert_eq!(intact.profile.first_name.as_deref(), Some("Will"));
    assert_eq!(store.samples_of(&a.id, "sa").expect("samples").len(), 1);
    assert!(h.image(&a.id, "enroll/xa_Fkkx7eK.jpg").is_some());
}

fn api_credentials_resolve_to_their_tenant_only(h: &Harness) {
    let store = h.store();
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    store.add_api_credentials(&a.id, "keyhash-a", "AKIAAAAA", "secret-a").expect("creds a");
    store.add_api_credentials(&b.id, "keyhash-b", "AKIABBBB", "secret-b").expect("creds b");
    assert_eq!(store.tenant_by_api_key_hash("keyhash-a").expect("lookup"), Some(a.clone()));
    assert_eq!(store.tenant_by_api_key_hash("ha").expect("lookup"), None, "a token hash is not an API key");
    assert_eq!(store.access_key_secret(&a.id, "AKIAAAAA").expect("secret").as_deref(), Some("secret-a"));
    assert_eq!(store.access_key_secret(&a.id, "AKIABBBB").expect("secret"), None, "b's key does not open a");
    let dup = store.add_api_credentials(&b.id, "keyhash-a", "AKIACCCC", "s");
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
    drop(store);
    let store = h.store();
    assert_eq!(store.access_key_secret(&b.id, "AKIABBBB").expect("secret").as_deref(), Some("secret-b"));
}

fn tags_are_unique_per_tenant_and_bounded(h: &Harness) {
    let store = h.store();
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    store.create_tag(&a.id, "staff", 3).expect("create");
    assert!(matches!(store.create_tag(&a.id, "staff", 3), Err(Error::Conflict(_))));
    store.create_tag(&b.id, "staff", 3).expect("same name, other tenant");
    store.create_tag(&a.id, "x", 3).expect("x");
    store.create_tag(&a.id, "y", 3).expect("y");
    assert!(matches!(store.create_tag(&a.id, "z", 3), Err(Error::InvalidRequest(_))));
    assert!(matches!(store.rename_tag(&a.id, "x", "y"), Err(Error::Conflict(_))));
    assert!(matches!(store.rename_tag(&a.id, "nope", "q"), Err(Error::NotFound(_))));
    store.rename_tag(&a.id, "x", "ex").expect("rename");
    assert!(store.delete_tag(&a.id, "y").expect("delete"));
    assert!(!store.delete_tag(&a.id, "y").expect("delete again"));
    assert!(!store.delete_tag(&a.id, "staff-of-b").expect("unknown"));
    drop(store);
    let store = h.store();
    assert_eq!(store.list_tags(&a.id).expect("list"), ["staff", "ex"]);
    assert_eq!(store.list_tags(&b.id).expect("list"), ["staff"]);
}

fn subject_tags_are_replaced_and_scoped(h: &Harness) {
    let store = h.store();
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    let s = subject(&a, "s1", None);
    store.create_subject(&s, Some(&sample("s1", "x1", "2024-01-01T00:00:00.000000Z", "m", 0.5))).expect("create");
    for tag in ["passport", "staff"] {
        store.create_tag(&a.id, tag, 64).expect("tag");
    }
    store.set_subject_tags(&a.id, "s1", &["passport".into(), "staff".into()]).expect("tags");
    assert_eq!(store.subject_tags(&a.id, "s1").expect("tags"), ["passport", "staff"]);
    store.set_subject_tags(&a.id, "s1", &["staff".into()]).expect("replace");
    assert_eq!(store.subject_tags(&a.id, "s1").expect("tags"), ["staff"]);
    assert!(matches!(store.set_subject_tags(&b.id, "s1", &[]), Err(Error::NotFound(_))));
    // A label must name one of the tenant's tags when it is written: not another tenant's, not
    // one that is gone.
    store.create_tag(&b.id, "guest", 64).expect("tag");
    store.delete_tag(&a.id, "passport").expect("delete");
    for unknown in ["nope", "guest", "passport"] {
        let refused = store.set_subject_tags(&a.id, "s1", &["staff".into(), unknown.into()]);
        assert!(matches!(refused, Err(Error::InvalidRequest(_))), "{unknown}: {refused:?}");
    }
    assert_eq!(store.subject_tags(&a.id, "s1").expect("tags"), ["staff"], "a refused write changes nothing");
    store.rename_tag(&a.id, "staff", "employees").expect("rename");
    assert_eq!(store.subject_tags(&a.id, "s1").expect("tags"), ["employees"], "labels follow a rename");
    assert!(store.subject_tags(&b.id, "s1").expect("tags").is_empty());
    let mut seen = Vec::new();
    store.for_each_subject_tags(&mut |t, s, tags| seen.push((t.to_owned(), s.to_owned(), tags))).expect("stream");
    assert_eq!(seen, vec![(a.id.clone(), "s1".to_owned(), vec!["employees".to_owned()])]);
}

fn replacing_a_sample_keeps_its_id_and_swaps_the_image(h: &Harness) {
    let store = h.store();
    let a = store.create_tenant("a", "ha").expect("a");
    let s = subject(&a, "s1", None);
    store.create_subject(&s, Some(&sample("s1", "e1", "2024-01-01T00:00:00.000000Z", "m", 0.5))).expect("create");
    let mut replacement = sample("s1", "e1", "2024-02-01T00:00:00.000000Z", "m", 0.25);
    replacement.sample.image_name = "enroll/e1_NewName.jpg".into();
    store.replace_sample(&s, &replacement, None).expect("replace");
    let samples = store.samples_of(&a.id, "s1").expect("samples");
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].image_name, "enroll/e1_NewName.jpg");
    assert_eq!(h.image_count(), 1, "the old image is gone");
    assert_eq!(h.image(&a.id, "enroll/e1_NewName.jpg"), Some(replacement.image.clone()));
    assert_eq!(templates(store.as_ref(), "m")[0].embedding[0], 0.25);
    let mut ghost = sample("s1", "nope", "2024-02-01T00:00:00.000000Z", "m", 0.1);
    ghost.sample.image_name = "enroll/ghost_X.jpg".into();
    assert!(matches!(store.replace_sample(&s, &ghost, None), Err(Error::NotFound(_))));
    assert_eq!(h.image_count(), 1, "a refused replacement stores no image");
}

fn an_event_and_its_tags_commit_together(h: &Harness) {
    let store = h.store();
    let a = store.create_tenant("a", "ha").expect("a");
    let s = subject(&a, "s1", None);
    for tag in ["x", "y", "z"] {
        store.create_tag(&a.id, tag, 64).expect("tag");
    }
    store.create_tagged_subject(&s, &sample("s1", "e1", "1", "m", 0.5), &["x".into()]).expect("create");
    assert_eq!(store.subject_tags(&a.id, "s1").expect("tags"), ["x"]);
    store.update_subject(&s, Some(&sample("s1", "e2", "2", "m", 0.4)), Some(&["y".into()])).expect("update");
    assert_eq!(store.subject_tags(&a.id, "s1").expect("tags"), ["y"]);
    let mut replacement = sample("s1", "e1", "3", "m", 0.3);
    replacement.sample.image_name = "enroll/e1_Again.jpg".into();
    store.replace_sample(&s, &replacement, Some(&[])).expect("replace");
    assert!(store.subject_tags(&a.id, "s1").expect("tags").is_empty());
    // A refused write changes neither the samples nor the tags.
    let dup = sample("s1", "e2", "4", "m", 0.2);
    assert!(store.update_subject(&s, Some(&dup), Some(&["z".into()])).is_err());
    assert!(store.subject_tags(&a.id, "s1").expect("tags").is_empty());
    assert_eq!(store.samples_of(&a.id, "s1").expect("samples").len(), 2);
}

fn bulk_jobs_page_and_register_each_record_once(h: &Harness) {
    use facegate_core::jobs::{BulkJob, BulkRecord, RecordStatus, RegisterStatus};
    let store = h.store();
    let a = store.create_tenant("a", "ha").expect("a");
    let b = store.create_tenant("b", "hb").expect("b");
    store.create_tag(&a.id, "t", 64).expect("tag");
    let records = |n: u64| -> Vec<BulkRecord> {
        (0..n)
            .map(|seq| BulkRecord {
                seq,
                id: format!("op-{seq}"),
                filename: format!("{seq}.jpg"),
                tags: vec!["t".into()],
                subject_id: format!("subject-{seq}"),
                attempts: 0,
                status: RecordStatus::New,
                register_status: None,
                reason: String::new(),
                event_id: None,
                attributes: None,
            })
            .collect()
    };
    let job = BulkJob { id: "job-a".into(), tenant_id: a.id.clone(), created_at: "1".into() };
    store.create_bulk_job(&job, &records(12)).expect("job");
    let other = BulkJob { id: "job-b".into(), tenant_id: b.id.clone(), created_at: "2".into() };
    store.create_bulk_job(&other, &records(2)).expect("job");
    assert_eq!(store.bulk_job(&a.id, "job-a").expect("job"), Some(job.clone()));
    assert_eq!(store.bulk_job(&b.id, "job-a").expect("job"), None, "another tenant's job");
    let first = store.bulk_records("job-a", None, 5).expect("page");
    assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    let next = store.bulk_records("job-a", Some(4), 5).expect("page");
    assert_eq!(next[0].seq, 5);
    assert_eq!(store.queued_bulk_records(&a.id).expect("queued"), 12);

    // Each tenant's waiting records, at most `per_tenant` of each.
    let pending = store.pending_bulk_records(3).expect("pending");
    let of = |t: &Tenant| pending.iter().filter(|p| p.tenant.id == t.id).count();
    assert_eq!((of(&a), of(&b)), (3, 2));
    let first_of_a = pending.iter().find(|p| p.tenant.id == a.id).expect("a's");
    assert_eq!((first_of_a.job_id.as_str(), first_of_a.record.seq), ("job-a", 0));

    // Registering a record creates its subject and marks it processed, once.
    let mut done = first_of_a.record.clone();
    done.attempts = 1;
    done.status = RecordStatus::Processed;
    done.register_status = Some(RegisterStatus::Success);
    let s = Subject { customer_person_id: None, ..subject(&a, &done.subject_id, None) };
    let ns = sample(&done.subject_id, "ev-0", "1", "m", 0.5);
    done.event_id = Some("ev-0".into());
    done.attributes = Some(facegate_core::FaceAttributes {
        face_area: facegate_core::BoundingBox { left: 1.0, top: 2.0, right: 30.0, bottom: 40.0 },
        head_area: facegate_core::BoundingBox { left: 0.0, top: 0.0, right: 35.0, bottom: 42.0 },
        right_eye_center: facegate_core::Point { x: 10.0, y: 12.0 },
        left_eye_center: facegate_core::Point { x: 20.0, y: 11.0 },
        face_score: 0.8,
        frontal_face_score: 0.9,
        pose: facegate_core::Pose { pan: 1.5, tilt: -2.0, roll: 0.25 },
        quality: 0.7,
    });
    store.register_bulk_record(&s, &ns, &done.tags, "job-a", &done).expect("register");
    assert_eq!(store.subject_tags(&a.id, &done.subject_id).expect("tags"), ["t"]);
    let again = store.register_bulk_record(&s, &ns, &done.tags, "job-a", &done);
    assert!(again.is_err(), "a record registers its subject once");
    let registered = store.bulk_records("job-a", None, 1).expect("page").remove(0);
    assert_eq!((registered.status, registered.attributes), (RecordStatus::Processed, done.attributes));
    assert_eq!(store.queued_bulk_records(&a.id).expect("queued"), 11);
    let mut failed = store.bulk_records("job-a", Some(0), 1).expect("page").remove(0);
    failed.attempts = 3;
    failed.status = RecordStatus::Processed;
    failed.register_status = Some(RegisterStatus::Failed);
    failed.reason = "not found".into();
    store.save_bulk_record("job-a", &failed).expect("save");
    let page = store.bulk_records("job-a", Some(0), 1).expect("page");
    assert_eq!((page[0].attempts, page[0].reason.as_str()), (3, "not found"));
    let pending = store.pending_bulk_records(3).expect("pending");
    assert!(pending.iter().all(|p| p.record.seq > 1 || p.tenant.id == b.id), "processed records wait no more");

    // What a stopping process released is another's at once (on PostgreSQL, a node with a new
    // id), not only once the hold's lease runs out.
    store.release_bulk_records().expect("release");
    let next = h.store();
    let taken = next.pending_bulk_records(3).expect("pending");
    let seqs: Vec<u64> = taken.iter().filter(|p| p.tenant.id == a.id).map(|p| p.record.seq).collect();
    assert_eq!(seqs, [2, 3, 4], "the records the stopped process held");
}

fn sixteen_writers_and_four_readers_lose_nothing(h: &Harness) {
    const WRITERS: usize = 16;
    const SUBJECTS_PER_WRITER: usize = 40;
    let store = h.store();
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
    let all = templates(store.as_ref(), "m");
    assert_eq!(all.len(), expected_samples);
    let subjects: HashSet<&str> = all.iter().map(|t| t.subject_id.as_str()).collect();
    assert_eq!(subjects.len(), kept.len());
    assert_eq!(h.image_count(), expected_samples, "one image per sample");
    h.check_integrity(store.as_ref());
}

/// The console's person list: byte order of `customer_person_id` on both backends (whatever the
/// database's collation), a prefix, a page key, the tenant's own persons only, and subjects
/// without a customer id left out.
fn persons_list_page_by_page_in_byte_order_with_a_prefix(h: &Harness) {
    use facegate_core::jobs::{BulkJob, BulkRecord, RecordStatus, RegisterStatus};
    let store = h.store();
    let tenant = store.create_tenant("acme", "h").expect("tenant");
    let other = store.create_tenant("other", "o").expect("other");
    let ids = ["amy", "Amy", "amy-2", "amz", "am", "b\u{e9}a", "bea", "zed"];
    for (n, id) in ids.iter().enumerate() {
        let subject_id = format!("s-{n}");
        let first = sample(&subject_id, &format!("x-{n}"), "2024-01-01T00:00:00.000000Z", "m@1", 0.5);
        store.create_subject(&subject(&tenant, &subject_id, Some(id)), Some(&first)).expect("create");
    }
    store.create_subject(&subject(&tenant, "nec-only", None), None).expect("no customer id");
    store.create_subject(&subject(&other, "o-1", Some("amy-other")), None).expect("other tenant");
    let second = sample("s-0", "x-0b", "2024-02-01T00:00:00.000000Z", "m@1", 0.25);
    let mut amy = subject(&tenant, "s-0", Some("amy"));
    amy.updated_at = "2024-02-01T00:00:00.000000Z".into();
    store.update_subject(&amy, Some(&second), None).expect("second face");

    let listed = |prefix: &str, after: Option<&str>, limit: usize| -> Vec<String> {
        store
            .list_subjects(&tenant.id, prefix, after, limit)
            .expect("list")
            .into_iter()
            .map(|s| s.subject.customer_person_id.unwrap_or_default())
            .collect()
    };
    let mut everyone: Vec<&str> = ids.to_vec();
    everyone.sort_unstable();
    assert_eq!(listed("", None, 100), everyone, "byte order, NEC-only subjects left out");
    assert_eq!(listed("", None, 3), ["Amy", "am", "amy"]);
    assert_eq!(listed("", Some("amy"), 3), ["amy-2", "amz", "bea"]);
    assert_eq!(listed("am", None, 100), ["am", "amy", "amy-2", "amz"]);
    assert_eq!(listed("amy", Some("amy"), 100), ["amy-2"]);
    assert_eq!(listed("b\u{e9}", None, 100), ["b\u{e9}a"]);
    assert!(listed("nobody", None, 100).is_empty());

    let summary = store.list_subjects(&tenant.id, "amy", None, 1).expect("list").remove(0);
    assert_eq!(summary.samples, 2);
    assert_eq!(summary.newest_sample.map(|s| s.id), Some("x-0b".to_owned()), "the newest face");

    let record = |seq: u64, status: RecordStatus, outcome: Option<RegisterStatus>| BulkRecord {
        seq,
        id: format!("op-{seq}"),
        filename: format!("{seq}.jpg"),
        tags: Vec::new(),
        subject_id: format!("bulk-{seq}"),
        attempts: 0,
        status,
        register_status: outcome,
        reason: String::new(),
        event_id: None,
        attributes: None,
    };
    let older = BulkJob { id: "job-1".into(), tenant_id: tenant.id.clone(), created_at: "2024-01-01T00:00:00Z".into() };
    let newer = BulkJob { id: "job-2".into(), tenant_id: tenant.id.clone(), created_at: "2024-03-01T00:00:00Z".into() };
    store.create_bulk_job(&older, &[record(0, RecordStatus::New, None)]).expect("job");
    store
        .create_bulk_job(&newer, &[record(0, RecordStatus::New, None), record(1, RecordStatus::New, None)])
        .expect("job");
    let foreign =
        BulkJob { id: "job-o".into(), tenant_id: other.id.clone(), created_at: "2024-04-01T00:00:00Z".into() };
    store.create_bulk_job(&foreign, &[record(0, RecordStatus::New, None)]).expect("job");
    store.save_bulk_record("job-2", &record(1, RecordStatus::Processed, Some(RegisterStatus::Failed))).expect("save");
    let jobs = store.list_bulk_jobs(&tenant.id, 10).expect("jobs");
    let seen: Vec<(&str, u64, u64, u64)> =
        jobs.iter().map(|j| (j.job.id.as_str(), j.records, j.processed, j.failed)).collect();
    assert_eq!(seen, [("job-2", 2, 1, 1), ("job-1", 1, 0, 0)], "newest first, the tenant's own");
    assert_eq!(store.list_bulk_jobs(&tenant.id, 1).expect("jobs").len(), 1);
}

/// The replay guard's record: one admission per digest, whichever store instance (a second node,
/// or the same node after a restart) is asked, and again once the record has expired.
fn a_signature_is_admitted_once_across_nodes_and_restarts_until_it_expires(h: &Harness) {
    use std::time::Duration;
    let keep = Duration::from_secs(600);
    let (first, second) = (h.store(), h.store());
    let digest = [7u8; 32];
    assert!(first.admit_signature(&digest, keep).expect("admit"));
    assert!(!first.admit_signature(&digest, keep).expect("again"), "a replay on the same node");
    assert!(!second.admit_signature(&digest, keep).expect("again"), "a replay on another node");
    drop(first);
    assert!(!h.store().admit_signature(&digest, keep).expect("again"), "a replay after a restart");
    assert!(second.admit_signature(&[8u8; 32], keep).expect("admit"), "another signature");

    // Forgotten (its request was refused with 503): the retry goes through.
    second.forget_signature(&digest).expect("forget");
    assert!(second.admit_signature(&digest, keep).expect("admit"));

    // Many nodes at once, one digest: exactly one admission.
    let racers: Vec<_> = (0..8).map(|_| h.store()).collect();
    let race = [9u8; 32];
    let admitted: usize = std::thread::scope(|scope| {
        let runs: Vec<_> = racers
            .iter()
            .map(|store| scope.spawn(move || store.admit_signature(&race, keep).expect("admit")))
            .collect();
        runs.into_iter().map(|r| usize::from(r.join().expect("racer"))).sum()
    });
    assert_eq!(admitted, 1, "one of eight racing nodes admits the signature");

    // Past its time no clock accepts the request any more, and the record lapses.
    let brief = [10u8; 32];
    assert!(second.admit_signature(&brief, Duration::from_millis(50)).expect("admit"));
    assert!(!second.admit_signature(&brief, keep).expect("again"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(second.admit_signature(&brief, keep).expect("admitted again once expired"));
}
