//! Faces nobody enrolled (issue 29) over the fakes: kept only for a tenant that opts in, grouped,
//! searched back, merged, split, deleted, promoted, and purged past their retention.
//!
//! The fake engine gives each label one of eight unit vectors; these labels have distinct ones.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;

use facegate_core::service::SearchOptions;
use facegate_core::store_roles::*;
use facegate_core::testing::{BruteForceIndex, FakeEngine, MemoryStore};
use facegate_core::{Error, FaceService, Profile, ServiceConfig, Tenant, UnknownPerson};

struct World {
    svc: Arc<FaceService>,
    store: Arc<MemoryStore>,
    acme: Tenant,
    globex: Tenant,
}

async fn world(config: ServiceConfig) -> World {
    let store = Arc::new(MemoryStore::default());
    let svc =
        FaceService::new(Arc::new(FakeEngine::default()), store.clone(), Arc::new(BruteForceIndex::default()), config)
            .with_unknown_index(Arc::new(BruteForceIndex::default()));
    let acme = svc.create_tenant("acme").await.expect("tenant").tenant;
    let globex = svc.create_tenant("globex").await.expect("tenant").tenant;
    store.set_unknown_faces_retention(&acme.id, Some(Duration::from_secs(3600))).expect("opt in");
    World { svc: Arc::new(svc), store, acme, globex }
}

/// A client's 1:N search, which keeps what it finds nobody for.
async fn search(w: &World, tenant: &Tenant, faces: &[&str], request_id: &str) {
    let image = faces.iter().map(|f| format!("face:{f}")).collect::<Vec<_>>().join("\n");
    let options = SearchOptions { keep_unknown: Some(request_id.into()), ..SearchOptions::best_of_every_face() };
    w.svc.find_subjects(tenant, image.into_bytes(), options).await.expect("search");
}

async fn people(w: &World, tenant: &Tenant) -> Vec<UnknownPerson> {
    w.svc.unknown_people(tenant, None, 100).await.expect("list")
}

/// Each unknown person's sighting count, largest first.
async fn group_sizes(w: &World, tenant: &Tenant) -> Vec<u64> {
    let mut sizes: Vec<u64> = people(w, tenant).await.iter().map(|p| p.sightings).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes
}

#[tokio::test]
async fn unmatched_faces_of_an_opted_in_tenant_are_kept_and_grouped_as_they_come() {
    let w = world(ServiceConfig::default()).await;
    enroll(&w.svc, &w.acme, "dave", Profile::default(), image_of("face:dave")).await.expect("enroll");
    search(&w, &w.acme, &["ann", "dave"], "r1").await;
    search(&w, &w.acme, &["ann"], "r2").await;
    search(&w, &w.acme, &["bob", "ann"], "r3").await;
    // dave matched, so only ann (3) and bob (1) are kept.
    assert_eq!(group_sizes(&w, &w.acme).await, vec![3, 1]);
    let ann = people(&w, &w.acme).await.into_iter().find(|p| p.sightings == 3).expect("ann");
    let (_, sightings) = w.svc.unknown_person(&w.acme, &ann.id).await.expect("sightings");
    let mut requests: Vec<&str> = sightings.iter().map(|s| s.request_id.as_str()).collect();
    requests.sort_unstable(); // the three may share a millisecond
    assert_eq!(requests, vec!["r1", "r2", "r3"]);
    assert!(!w.svc.sighting_crop(&w.acme, &sightings[0].id).await.expect("crop").is_empty());

    // A tenant that never opted in keeps nothing; nor does a search without a request to keep.
    search(&w, &w.globex, &["ann", "bob"], "g1").await;
    assert!(people(&w, &w.globex).await.is_empty());
    identify(&w.svc, &w.acme, b"face:hal".to_vec()).await.expect("console-like search");
    assert_eq!(group_sizes(&w, &w.acme).await, vec![3, 1]);
    // Verification (1:1) never keeps.
    w.svc
        .compare(
            &w.acme,
            b"face:judy".to_vec(),
            facegate_core::service::SubjectKey::CustomerId("dave"),
            facegate_core::service::FaceSelection::Every,
        )
        .await
        .expect("verify");
    assert_eq!(group_sizes(&w, &w.acme).await, vec![3, 1]);
}

#[tokio::test]
async fn a_search_back_finds_who_was_seen_and_a_promoted_person_is_known_from_then_on() {
    let w = world(ServiceConfig::default()).await;
    search(&w, &w.acme, &["ann"], "r1").await;
    search(&w, &w.acme, &["ann"], "r2").await;
    search(&w, &w.acme, &["bob"], "r3").await;
    let back = w.svc.search_unknown_people(&w.acme, b"face:ann\nface:hal".to_vec()).await.expect("search back");
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].unknown_people.len(), 1);
    assert_eq!(back[0].unknown_people[0].person.sightings, 2);
    assert!(back[0].unknown_people[0].score >= 7000);
    assert!(back[1].unknown_people.is_empty(), "hal was never seen");
    assert_eq!(group_sizes(&w, &w.acme).await, vec![2, 1], "a search back keeps nothing");

    let ann = back[0].unknown_people[0].person.id.clone();
    let (subject, faces) = w.svc.promote_unknown_person(&w.acme, &ann, Some("ann-1".into())).await.expect("promote");
    assert_eq!(faces, 2);
    assert_eq!(subject.customer_person_id.as_deref(), Some("ann-1"));
    assert_eq!(get_person(&w.svc, &w.acme, "ann-1").await.expect("person").samples.len(), 2);
    assert_eq!(group_sizes(&w, &w.acme).await, vec![1], "the promoted group is gone");
    let found = identify(&w.svc, &w.acme, b"face:ann".to_vec()).await.expect("identify");
    assert!(found[0].known, "{found:?}");
    search(&w, &w.acme, &["ann"], "r4").await;
    assert_eq!(group_sizes(&w, &w.acme).await, vec![1], "a known face is not kept");

    let bob = people(&w, &w.acme).await.remove(0).id;
    let taken = w.svc.promote_unknown_person(&w.acme, &bob, Some("ann-1".into())).await;
    assert!(matches!(taken, Err(Error::Conflict(_))), "{taken:?}");
    let (nec, _) = w.svc.promote_unknown_person(&w.acme, &bob, None).await.expect("promote as an NEC subject");
    assert_eq!(nec.customer_person_id, None);
    assert!(matches!(w.svc.promote_unknown_person(&w.acme, &bob, None).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn groups_are_merged_split_and_deleted_and_the_index_follows() {
    let w = world(ServiceConfig::default()).await;
    for (face, request) in [("ann", "r1"), ("ann", "r2"), ("bob", "r3")] {
        search(&w, &w.acme, &[face], request).await;
    }
    let listed = people(&w, &w.acme).await;
    let (ann, bob) = match listed[0].sightings {
        2 => (listed[0].id.clone(), listed[1].id.clone()),
        _ => (listed[1].id.clone(), listed[0].id.clone()),
    };
    let merged = w.svc.merge_unknown_people(&w.acme, &ann, &bob).await.expect("merge");
    assert_eq!(merged.sightings, 3);
    assert!(matches!(w.svc.merge_unknown_people(&w.acme, &ann, &bob).await, Err(Error::NotFound(_))));
    // bob's face now finds the merged person.
    let back = w.svc.search_unknown_people(&w.acme, b"face:bob".to_vec()).await.expect("search back");
    assert_eq!(back[0].unknown_people[0].person.id, ann);

    let (_, sightings) = w.svc.unknown_person(&w.acme, &ann).await.expect("sightings");
    let bobs: Vec<String> = sightings.iter().filter(|s| s.request_id == "r3").map(|s| s.id.clone()).collect();
    let split = w.svc.split_unknown_person(&w.acme, &ann, bobs).await.expect("split");
    assert_eq!(split.sightings, 1);
    let back = w.svc.search_unknown_people(&w.acme, b"face:bob".to_vec()).await.expect("search back");
    assert_eq!(back[0].unknown_people[0].person.id, split.id);
    // Another sighting of bob joins the split-out group.
    search(&w, &w.acme, &["bob"], "r5").await;
    assert_eq!(group_sizes(&w, &w.acme).await, vec![2, 2]);

    let purge = w.svc.delete_unknown_person(&w.acme, &split.id).await.expect("delete");
    assert_eq!(purge.sightings, 2);
    let back = w.svc.search_unknown_people(&w.acme, b"face:bob".to_vec()).await.expect("search back");
    assert!(back[0].unknown_people.is_empty(), "a deleted person is not found");
    assert!(matches!(w.svc.delete_unknown_person(&w.globex, &ann).await, Err(Error::NotFound(_))));
    assert!(matches!(w.svc.unknown_people(&w.acme, None, 0).await, Err(Error::InvalidRequest(_))));
}

#[tokio::test]
async fn turning_the_setting_off_forgets_everything_and_keeps_nothing_more() {
    let w = world(ServiceConfig::default()).await;
    search(&w, &w.acme, &["ann"], "r1").await;
    w.store.set_unknown_faces_retention(&w.acme.id, None).expect("off");
    assert!(people(&w, &w.acme).await.is_empty());
    search(&w, &w.acme, &["ann"], "r2").await;
    assert!(people(&w, &w.acme).await.is_empty(), "nothing kept while off");
    // On again: the old group is gone from the index too, so ann starts afresh.
    w.store.set_unknown_faces_retention(&w.acme.id, Some(Duration::from_secs(60))).expect("on");
    search(&w, &w.acme, &["ann"], "r3").await;
    assert_eq!(group_sizes(&w, &w.acme).await, vec![1]);
}

#[tokio::test]
async fn sightings_past_the_retention_are_deleted_in_the_background() {
    let config = ServiceConfig { sighting_purge_every: Duration::from_millis(50), ..ServiceConfig::default() };
    let w = world(config).await;
    w.store.set_unknown_faces_retention(&w.acme.id, Some(Duration::from_secs(1))).expect("one second");
    search(&w, &w.acme, &["ann"], "r1").await;
    assert_eq!(group_sizes(&w, &w.acme).await, vec![1]);
    let background = w.svc.start_background_work(None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !people(&w, &w.acme).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the sighting outlived its retention");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = w.svc.search_unknown_people(&w.acme, b"face:ann".to_vec()).await.expect("search back");
    assert!(back[0].unknown_people.is_empty(), "the index forgot it too");
    background.stop(Duration::from_secs(1)).await;
}

fn image_of(text: &str) -> facegate_core::ImageUpload {
    facegate_core::ImageUpload { file_name: "photo.jpg".into(), bytes: text.as_bytes().to_vec() }
}
