//! A node's index following a shared PostgreSQL gallery: what another node writes reaches it
//! through the change log, and when the changes it had not read were pruned, it loads its index
//! anew, so a delete never comes back.

use facegate_core::service::{FaceSelection, SearchOptions};
use std::sync::Arc;
use std::time::Duration;

use facegate_core::store_roles::*;
use facegate_core::testing::{BruteForceIndex, FakeEngine};
use facegate_core::{BoundingBox, FaceSample, FaceService, NewSample, Profile, ServiceConfig, Subject, Tenant};
use facegate_store::{PgRole, PgStore};
use facegate_testkit::PgCluster;

fn subject(tenant: &Tenant, id: &str) -> Subject {
    Subject {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        customer_person_id: Some(id.into()),
        profile: Profile::default(),
        created_at: "1".into(),
        updated_at: "1".into(),
    }
}

fn sample(subject_id: &str) -> NewSample {
    NewSample {
        sample: FaceSample {
            id: format!("{subject_id}-sample"),
            subject_id: subject_id.into(),
            image_name: format!("enroll/{subject_id}.jpg"),
            bbox: BoundingBox::default(),
            detector_score: 0.9,
            model_id: "fake@1".into(),
            created_at: "1".into(),
        },
        embedding: vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        image: b"image".to_vec(),
    }
}

/// The subjects this node's index holds for the tenant, as an NEC search at threshold 0 lists
/// them (straight from the index, with no store lookup).
async fn indexed(node: &FaceService, tenant: &Tenant) -> Vec<String> {
    let options = SearchOptions {
        faces: FaceSelection::Single,
        limit: 50,
        min_score: 0,
        tags: Vec::new(),
        sample_scores: false,
        with_subjects: false,
        keep_unknown: None,
    };
    let found = node.find_subjects(tenant, b"face:probe".to_vec(), options).await.expect("search");
    let mut ids: Vec<String> = found.into_iter().flat_map(|f| f.candidates).map(|c| c.subject_id).collect();
    ids.sort();
    ids
}

/// Runs blocking store work off the async threads, as the service does.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_the_log_and_reloads_when_what_it_missed_was_pruned() {
    let Some(cluster) = PgCluster::start() else { return };
    let url = cluster.url().to_owned();
    // This node (a service with its own index), and another node's store that writes.
    let (node, other) = blocking(move || {
        let ours = Arc::new(PgStore::connect(&url, None, PgRole::Node).expect("connect"));
        let node = Arc::new(FaceService::new(
            Arc::new(FakeEngine::default()),
            ours,
            Arc::new(BruteForceIndex::default()),
            ServiceConfig::default(),
        ));
        node.load_index().expect("load");
        (node, Arc::new(PgStore::connect(&url, None, PgRole::Node).expect("connect")))
    })
    .await;
    let tenant = {
        let other = other.clone();
        blocking(move || other.create_tenant("acme", "h").expect("tenant")).await
    };
    let write = |id: &'static str| {
        let (other, tenant) = (other.clone(), tenant.clone());
        blocking(move || other.create_subject(&subject(&tenant, id), Some(&sample(id))).expect("write"))
    };

    // A write elsewhere reaches this node's index through the log.
    write("ann").await;
    node.sync_index().await.expect("sync");
    assert_eq!(indexed(&node, &tenant).await, ["ann"]);

    // This node stops following; meanwhile the other deletes, and the log is pruned past it.
    let (o, t) = (other.clone(), tenant.clone());
    blocking(move || assert!(o.delete_subject(&t.id, "ann").expect("delete"))).await;
    write("bob").await;
    let o = other.clone();
    let pruned = blocking(move || o.prune_changes(Duration::ZERO).expect("prune")).await;
    assert!(pruned >= 3, "the write, the delete and the second write: {pruned}");
    let o = other.clone();
    assert!(blocking(move || o.pruned_through().expect("watermark")).await > node.applied_change());

    // Catching up, the node finds the log pruned past what it applied and loads anew: the
    // deleted subject does not come back, the later write is there.
    node.sync_index().await.expect("sync");
    assert_eq!(indexed(&node, &tenant).await, ["bob"], "the deleted subject stays gone, the later write is there");

    // And following goes on from there as before.
    write("cy").await;
    node.sync_index().await.expect("sync");
    assert_eq!(indexed(&node, &tenant).await, ["bob", "cy"]);
    blocking(move || drop((node, other))).await;
}

/// Two nodes on one PostgreSQL gallery, each with its unknown-faces index: what one keeps,
/// merges or deletes, the other groups against and searches back after following the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_groups_and_searches_back_the_sightings_another_node_kept() {
    let Some(cluster) = PgCluster::start() else { return };
    let url = cluster.url().to_owned();
    let node = |url: String| {
        blocking(move || {
            let store = Arc::new(PgStore::connect(&url, None, PgRole::Node).expect("connect"));
            let node = Arc::new(
                FaceService::new(
                    Arc::new(FakeEngine::default()),
                    store.clone(),
                    Arc::new(BruteForceIndex::default()),
                    ServiceConfig::default(),
                )
                .with_unknown_index(Arc::new(BruteForceIndex::default())),
            );
            node.load_index().expect("load");
            (node, store)
        })
    };
    let (a, store) = node(url.clone()).await;
    let (b, _) = node(url).await;
    let tenant = a.create_tenant("acme").await.expect("tenant").tenant;
    let t = tenant.id.clone();
    blocking(move || store.set_unknown_faces_retention(&t, Some(Duration::from_secs(3600))).expect("on")).await;
    let keep = |node: Arc<FaceService>, label: &'static str| {
        let tenant = tenant.clone();
        async move {
            let options = SearchOptions { keep_unknown: Some(label.into()), ..SearchOptions::best_of_every_face() };
            node.find_subjects(&tenant, format!("face:{label}").into_bytes(), options).await.expect("search");
        }
    };
    let back = |node: Arc<FaceService>, label: &'static str| {
        let tenant = tenant.clone();
        async move {
            let found = node.search_unknown_people(&tenant, format!("face:{label}").into_bytes()).await.expect("back");
            found[0].unknown_people.iter().map(|m| (m.person.id.clone(), m.person.sightings)).collect::<Vec<_>>()
        }
    };

    // Kept on A; B finds it after following, and its own sighting of ann joins A's group.
    keep(a.clone(), "ann").await;
    assert!(back(b.clone(), "ann").await.is_empty(), "B has not followed yet");
    b.sync_index().await.expect("sync");
    let on_b = back(b.clone(), "ann").await;
    assert_eq!(on_b.len(), 1);
    keep(b.clone(), "ann").await;
    a.sync_index().await.expect("sync");
    assert_eq!(back(a.clone(), "ann").await, vec![(on_b[0].0.clone(), 2)], "one group, across nodes");

    // A merges bob into ann's group and then deletes it: B follows each step.
    keep(a.clone(), "bob").await;
    b.sync_index().await.expect("sync");
    let bob = back(b.clone(), "bob").await[0].0.clone();
    a.merge_unknown_people(&tenant, &on_b[0].0, &bob).await.expect("merge");
    b.sync_index().await.expect("sync");
    assert_eq!(back(b.clone(), "bob").await, vec![(on_b[0].0.clone(), 3)], "bob's sighting moved on B too");
    a.delete_unknown_person(&tenant, &on_b[0].0).await.expect("delete");
    b.sync_index().await.expect("sync");
    assert!(back(b.clone(), "ann").await.is_empty(), "deleted on A, forgotten on B");
    blocking(move || drop((a, b))).await;
}
