//! Writes racing deletes, and bulk jobs of several tenants, over the in-memory fakes.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use facegate_core::jobs::{RecordStatus, SourceError, SourceFuture};
use facegate_core::testing::{BruteForceIndex, FakeEngine, MemoryStore};
use facegate_core::{
    BulkConfig, BulkRegistration, Error, FaceService, ImageSource, ImageUpload, Index, Profile, ServiceConfig,
    SubjectHit, Template, Tenant,
};

/// The brute-force index, slowed down on inserts so that a racing delete can land between a
/// write's store commit and its index insert.
#[derive(Default)]
struct SlowInsertIndex {
    inner: BruteForceIndex,
    slow: AtomicBool,
}

impl Index for SlowInsertIndex {
    fn insert(&self, template: Template) {
        if self.slow.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(3));
        }
        self.inner.insert(template);
    }
    fn remove_subject(&self, tenant_id: &str, subject_id: &str) {
        self.inner.remove_subject(tenant_id, subject_id);
    }
    fn search(&self, tenant_id: &str, query: &[f32], limit: usize) -> Vec<SubjectHit> {
        self.inner.search(tenant_id, query, limit)
    }
    fn search_tagged(&self, tenant_id: &str, query: &[f32], limit: usize, tags: &[String]) -> Vec<SubjectHit> {
        self.inner.search_tagged(tenant_id, query, limit, tags)
    }
    fn set_subject_tags(&self, tenant_id: &str, subject_id: &str, tags: &[String]) {
        self.inner.set_subject_tags(tenant_id, subject_id, tags);
    }
    fn rename_tag(&self, tenant_id: &str, old_name: &str, new_name: &str) {
        self.inner.rename_tag(tenant_id, old_name, new_name);
    }
    fn best_of_subject(&self, tenant_id: &str, subject_id: &str, query: &[f32]) -> Option<SubjectHit> {
        self.inner.best_of_subject(tenant_id, subject_id, query)
    }
    fn subject_samples(&self, tenant_id: &str, subject_id: &str, query: &[f32]) -> Vec<SubjectHit> {
        self.inner.subject_samples(tenant_id, subject_id, query)
    }
    fn remove_sample(&self, tenant_id: &str, sample_id: &str) {
        self.inner.remove_sample(tenant_id, sample_id);
    }
    fn len(&self, tenant_id: &str) -> usize {
        self.inner.len(tenant_id)
    }
    fn remove_tenant(&self, tenant_id: &str) {
        self.inner.remove_tenant(tenant_id);
    }
    fn clear(&self) {
        self.inner.clear();
    }
}

fn image(text: &str) -> ImageUpload {
    ImageUpload { file_name: "photo.jpg".into(), bytes: text.as_bytes().to_vec() }
}

/// Deletes `customer_person_id` as soon as it exists.
async fn delete_when_it_appears(svc: &FaceService, tenant: &Tenant, customer_person_id: &str) {
    loop {
        match delete_person(svc, tenant, customer_person_id).await {
            Ok(_) => return,
            Err(Error::NotFound(_)) => tokio::task::yield_now().await,
            Err(e) => panic!("delete failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_racing_a_write_never_leaves_a_searchable_template() {
    let index = Arc::new(SlowInsertIndex::default());
    let svc = Arc::new(FaceService::new(
        Arc::new(FakeEngine::default()),
        Arc::new(MemoryStore::default()),
        index.clone(),
        ServiceConfig::default(),
    ));
    let tenant = svc.create_tenant("racy").await.expect("tenant").tenant;
    index.slow.store(true, Ordering::Relaxed);
    for round in 0..100 {
        let id = format!("p{round}");
        // Enroll against a delete that fires the moment the person is committed.
        let (enrolled, ()) = tokio::join!(
            enroll(&svc, &tenant, &id, Profile::default(), image("face:x")),
            delete_when_it_appears(&svc, &tenant, &id),
        );
        enrolled.expect("enroll");
        assert_eq!(svc.template_count(&tenant), 0, "round {round}: enroll's template outlived the delete");

        // An added image against a delete of the same person.
        enroll(&svc, &tenant, &id, Profile::default(), image("face:y")).await.expect("enroll again");
        let (updated, deleted) = tokio::join!(
            update(&svc, &tenant, &id, Profile::default(), Some(image("face:z"))),
            delete_person(&svc, &tenant, &id),
        );
        deleted.expect("delete");
        assert!(matches!(updated, Ok(_) | Err(Error::NotFound(_))), "round {round}: {updated:?}");
        assert_eq!(svc.template_count(&tenant), 0, "round {round}: the added image outlived the delete");
    }
}

/// Bytes for every file after a short wait, as a bucket over a network would answer.
struct SlowSource {
    delay: Duration,
}

impl ImageSource for SlowSource {
    fn fetch<'a>(&'a self, _tenant: &'a Tenant, filename: &'a str, _max_bytes: u64) -> SourceFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            if filename == "stuck.jpg" {
                // A read that never ends (a hung network share).
                std::future::pending::<()>().await;
            }
            Ok::<_, SourceError>(format!("face:{filename}").into_bytes())
        })
    }
}

fn registrations(prefix: &str, n: usize) -> Vec<BulkRegistration> {
    (0..n).map(|i| BulkRegistration { filename: format!("{prefix}{i}.jpg"), tags: vec![] }).collect()
}

async fn processed(svc: &FaceService, tenant: &Tenant, batch: &str) -> usize {
    let page = svc.bulk_job_page(tenant, batch, None).await.expect("page");
    page.records.iter().filter(|r| r.status == RecordStatus::Processed).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_job_finishes_while_another_tenants_large_job_runs() {
    let svc = Arc::new(FaceService::new(
        Arc::new(FakeEngine::default()),
        Arc::new(MemoryStore::default()),
        Arc::new(BruteForceIndex::default()),
        ServiceConfig::default(),
    ));
    let big = svc.create_tenant("big").await.expect("tenant").tenant;
    let small = svc.create_tenant("small").await.expect("tenant").tenant;
    let large = svc.create_bulk_job(&big, registrations("big", 100)).await.expect("large job");
    let config = BulkConfig { concurrency: 1, read_timeout: Duration::from_millis(500), ..BulkConfig::default() };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let runner = tokio::spawn(svc.clone().run_bulk_jobs(
        Arc::new(SlowSource { delay: Duration::from_millis(10) }),
        config,
        stop,
    ));
    // The large job is under way when the small one arrives.
    while processed(&svc, &big, &large).await < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One of its files never finishes reading; it must hold up nothing but itself.
    let one = vec![
        BulkRegistration { filename: "stuck.jpg".into(), tags: vec![] },
        BulkRegistration { filename: "quick.jpg".into(), tags: vec![] },
    ];
    let little = svc.create_bulk_job(&small, one).await.expect("small job");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while processed(&svc, &small, &little).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the small job never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let big_done = processed(&svc, &big, &large).await;
    assert!(big_done < 60, "the small job waited for the large one: {big_done} of 100 done first");
    let page = svc.bulk_job_page(&small, &little, None).await.expect("page");
    let stuck = page.records.iter().find(|r| r.filename == "stuck.jpg").expect("record");
    assert_eq!(stuck.reason, "read error", "the stalled read timed out with a generic reason");
    stop_tx.send(true).expect("stop");
    runner.await.expect("runner");
}

#[tokio::test]
async fn a_tenant_can_queue_only_so_many_records() {
    let svc = FaceService::new(
        Arc::new(FakeEngine::default()),
        Arc::new(MemoryStore::default()),
        Arc::new(BruteForceIndex::default()),
        ServiceConfig { max_bulk_queued_per_tenant: 10, ..ServiceConfig::default() },
    );
    let a = svc.create_tenant("a").await.expect("tenant").tenant;
    let b = svc.create_tenant("b").await.expect("tenant").tenant;
    svc.create_bulk_job(&a, registrations("x", 6)).await.expect("within the limit");
    let over = svc.create_bulk_job(&a, registrations("y", 5)).await;
    assert!(matches!(over, Err(Error::InvalidRequest(_))), "{over:?}");
    svc.create_bulk_job(&a, registrations("y", 4)).await.expect("up to the limit");
    svc.create_bulk_job(&b, registrations("x", 10)).await.expect("another tenant has its own limit");
    let mut dup = registrations("d", 3);
    dup.push(BulkRegistration { filename: "d1.jpg".into(), tags: vec![] });
    let refused = svc.create_bulk_job(&b, dup).await;
    assert!(matches!(refused, Err(Error::InvalidRequest(ref m)) if m.contains("more than once")), "{refused:?}");
}
