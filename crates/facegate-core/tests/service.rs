//! FaceService use cases over the in-memory fakes.

mod common;

use common::*;
use std::sync::Arc;

use facegate_core::testing::{BruteForceIndex, FakeEngine, MemoryStore};
use facegate_core::{Error, FaceService, ImageUpload, Profile, ServiceConfig, Tenant};

async fn service() -> (FaceService, Tenant, Tenant) {
    let svc = FaceService::new(
        Arc::new(FakeEngine::default()),
        Arc::new(MemoryStore::default()),
        Arc::new(BruteForceIndex::default()),
        ServiceConfig::default(),
    );
    let a = svc.create_tenant("a").await.expect("tenant a").tenant;
    let b = svc.create_tenant("b").await.expect("tenant b").tenant;
    (svc, a, b)
}

fn image(text: &str) -> ImageUpload {
    ImageUpload { file_name: "photo.jpg".into(), bytes: text.as_bytes().to_vec() }
}

fn named(first: &str) -> Profile {
    Profile { first_name: Some(first.into()), email: Some("x@y.z".into()), ..Profile::default() }
}

#[tokio::test]
async fn enroll_then_identify_and_verify() {
    let (svc, a, _) = service().await;
    let e = enroll(&svc, &a, "p1", named("Ann"), image("face:ann")).await.expect("enroll");
    assert_eq!(e.subject.customer_person_id.as_deref(), Some("p1"));
    assert!(e.sample.image_name.starts_with("enroll/photo_"));

    let found = identify(&svc, &a, b"face:ann\nface:bob".to_vec()).await.expect("identify");
    assert_eq!(found.len(), 2);
    assert!(found[0].known);
    assert_eq!(found[0].candidates.first().map(|c| c.subject_id.clone()), Some(e.subject.id.clone()));
    assert!(!found[1].known);

    let verified = verify(&svc, &a, "p1", b"face:bob".to_vec()).await.expect("verify");
    assert!(!verified[0].known);
    assert!(!verified[0].candidates.is_empty(), "1:1 keeps the candidate for its confidence");
}

#[tokio::test]
async fn duplicate_enrollment_conflicts_and_changes_nothing() {
    let (svc, a, _) = service().await;
    enroll(&svc, &a, "p1", named("Ann"), image("face:ann")).await.expect("enroll");
    let again = enroll(&svc, &a, "p1", named("Other"), image("face:zed")).await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    let rec = get_person(&svc, &a, "p1").await.expect("get");
    assert_eq!(rec.subject.profile.first_name.as_deref(), Some("Ann"));
    assert_eq!(rec.samples.len(), 1);
}

#[tokio::test]
async fn enroll_without_a_face_fails() {
    let (svc, a, _) = service().await;
    let r = enroll(&svc, &a, "p1", named("Ann"), image("no faces here")).await;
    assert!(matches!(r, Err(Error::NoFace)));
    assert!(matches!(get_person(&svc, &a, "p1").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn update_clears_blank_fields_and_adds_images() {
    let (svc, a, _) = service().await;
    enroll(&svc, &a, "p1", named("Ann"), image("face:ann")).await.expect("enroll");
    let rec = update(
        &svc,
        &a,
        "p1",
        Profile { last_name: Some("Lee".into()), ..Profile::default() },
        Some(image("face:ann")),
    )
    .await
    .expect("update");
    assert_eq!(rec.subject.profile.first_name, None);
    assert_eq!(rec.subject.profile.last_name.as_deref(), Some("Lee"));
    assert_eq!(rec.samples.len(), 2);
    assert!(rec.new_face.is_some());
    let rec = update(&svc, &a, "p1", Profile::default(), None).await.expect("update without image");
    assert_eq!(rec.samples.len(), 2);
    assert!(rec.new_face.is_none());
    assert!(matches!(update(&svc, &a, "nobody", Profile::default(), None).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn delete_removes_person_from_search() {
    let (svc, a, _) = service().await;
    enroll(&svc, &a, "p1", named("Ann"), image("face:ann")).await.expect("enroll");
    delete_person(&svc, &a, "p1").await.expect("delete");
    let found = identify(&svc, &a, b"face:ann".to_vec()).await.expect("identify");
    assert!(found[0].candidates.is_empty());
    assert!(matches!(delete_person(&svc, &a, "p1").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn tenants_do_not_see_each_other() {
    let (svc, a, b) = service().await;
    enroll(&svc, &a, "p1", named("Ann"), image("face:ann")).await.expect("enroll");
    assert!(matches!(get_person(&svc, &b, "p1").await, Err(Error::NotFound(_))));
    assert!(matches!(delete_person(&svc, &b, "p1").await, Err(Error::NotFound(_))));
    let found = identify(&svc, &b, b"face:ann".to_vec()).await.expect("identify");
    assert!(found[0].candidates.is_empty());
    enroll(&svc, &b, "p1", named("Bob"), image("face:ann")).await.expect("same id in another tenant");
}

#[tokio::test]
async fn tokens_authenticate_their_tenant_only() {
    let (svc, _, _) = service().await;
    let t = svc.create_tenant("c").await.expect("tenant");
    let found = svc.authenticate_token(&t.token).await.expect("auth");
    assert_eq!(found.map(|x| x.id), Some(t.tenant.id.clone()));
    assert!(svc.authenticate_token("nope").await.expect("auth").is_none());
    let by_key = svc.authenticate_api_key(&t.credentials.api_key).await.expect("auth");
    assert_eq!(by_key.as_ref().map(|x| x.id.clone()), Some(t.tenant.id.clone()));
    assert!(svc.authenticate_api_key(&t.token).await.expect("auth").is_none(), "a token is not an API key");
    let tenant = by_key.expect("tenant");
    let secret = svc.access_key_secret(&tenant, &t.credentials.access_key_id).await.expect("secret");
    assert_eq!(secret.as_deref(), Some(t.credentials.secret_access_key.as_str()));
    let (_, other, _) = service().await;
    assert!(svc.access_key_secret(&other, &t.credentials.access_key_id).await.expect("secret").is_none());
    assert!(matches!(svc.create_tenant("c").await, Err(Error::Conflict(_))));
}

#[tokio::test]
async fn index_is_rebuilt_from_the_store() {
    let store = Arc::new(MemoryStore::default());
    let make = |store: Arc<MemoryStore>| {
        FaceService::new(
            Arc::new(FakeEngine::default()),
            store,
            Arc::new(BruteForceIndex::default()),
            ServiceConfig::default(),
        )
    };
    let first = make(store.clone());
    let a = first.create_tenant("a").await.expect("tenant").tenant;
    enroll(&first, &a, "p1", named("Ann"), image("face:ann")).await.expect("enroll");
    let second = make(store);
    assert_eq!(second.load_index().expect("load"), 1);
    let found = identify(&second, &a, b"face:ann".to_vec()).await.expect("identify");
    assert!(found[0].known);
}

#[tokio::test]
async fn tags_are_unique_bounded_and_per_tenant() {
    let (svc, a, b) = service().await;
    svc.create_tag(&a, "staff").await.expect("create");
    assert!(matches!(svc.create_tag(&a, "staff").await, Err(Error::Conflict(_))));
    assert!(matches!(svc.create_tag(&a, "").await, Err(Error::InvalidRequest(_))));
    svc.create_tag(&b, "staff").await.expect("same name in another tenant");
    svc.rename_tag(&a, "staff", "employees").await.expect("rename");
    assert!(matches!(svc.rename_tag(&a, "staff", "x").await, Err(Error::NotFound(_))));
    assert_eq!(svc.list_tags(&a).await.expect("list"), ["employees"]);
    for i in 1..64 {
        svc.create_tag(&a, &format!("t{i}")).await.expect("under the limit");
    }
    assert!(matches!(svc.create_tag(&a, "one-too-many").await, Err(Error::InvalidRequest(_))));
    svc.delete_tag(&a, "employees").await.expect("delete");
    assert!(matches!(svc.delete_tag(&a, "employees").await, Err(Error::NotFound(_))));
    svc.create_tag(&a, "room-again").await.expect("a slot freed");
    assert_eq!(svc.list_tags(&b).await.expect("list"), ["staff"]);
}

/// Tag names are stored and compared in NFC, and no tag name holds an invisible character, so no
/// two tags look alike: creating, renaming, and naming tags on a subject or a search.
#[tokio::test]
async fn tag_names_are_compared_in_nfc_and_invisible_characters_are_refused() {
    use facegate_core::service::{FacePolicy, NewSubject, SearchOptions};
    let (svc, a, _) = service().await;
    let (composed, decomposed) = ("caf\u{e9}", "cafe\u{301}");
    svc.create_tag(&a, decomposed).await.expect("create");
    assert_eq!(svc.list_tags(&a).await.expect("list"), [composed], "stored in NFC");
    assert!(matches!(svc.create_tag(&a, composed).await, Err(Error::Conflict(_))), "the same tag");
    for invisible in ["staff\u{200B}", "\u{202E}ffats", "st\u{2060}aff", "\u{FEFF}staff", "sta\u{FE0F}ff"] {
        let refused = svc.create_tag(&a, invisible).await;
        assert!(matches!(refused, Err(Error::InvalidRequest(ref m)) if m.contains("invisible")), "{refused:?}");
        let renamed = svc.rename_tag(&a, composed, invisible).await;
        assert!(matches!(renamed, Err(Error::InvalidRequest(_))), "{renamed:?}");
    }
    // Either spelling names the one tag on a subject and in a search.
    let new = NewSubject {
        customer_id: Some("p1".into()),
        profile: Profile::default(),
        tags: vec![decomposed.into()],
        image: image("face:ann"),
        policy: FacePolicy::Largest,
    };
    let subject = svc.create_subject(&a, new).await.expect("tagged subject").subject;
    assert_eq!(svc.subject_tags(&a, &subject.id).await.expect("tags"), [composed]);
    let search = SearchOptions { tags: vec![composed.into()], ..SearchOptions::best_of_every_face() };
    let found = svc.find_subjects(&a, b"face:ann".to_vec(), search).await.expect("search");
    assert_eq!(found[0].candidates.first().map(|c| c.subject_id.as_str()), Some(subject.id.as_str()));
    let search = SearchOptions { tags: vec!["caf\u{e9}\u{200B}".into()], ..SearchOptions::best_of_every_face() };
    let refused = svc.find_subjects(&a, b"face:ann".to_vec(), search).await;
    assert!(matches!(refused, Err(Error::InvalidRequest(ref m)) if m.contains("invisible")), "{refused:?}");
    // Renamed and deleted by either spelling too.
    svc.rename_tag(&a, decomposed, "cr\u{e8}me").await.expect("rename");
    svc.delete_tag(&a, "cre\u{300}me").await.expect("delete");
    assert!(svc.list_tags(&a).await.expect("list").is_empty());
}

/// A page says where the next one starts, also at the largest page size: the service asks the
/// store for one more than the page holds, whatever limit the caller gave.
#[tokio::test]
async fn subject_pages_say_where_the_next_starts_even_at_the_largest_size() {
    use facegate_core::service::MAX_SUBJECT_PAGE;
    let (svc, a, _) = service().await;
    for i in 0..MAX_SUBJECT_PAGE + 2 {
        enroll(&svc, &a, &format!("p{i:04}"), named("Ann"), image("face:ann")).await.expect("enroll");
    }
    let first = svc.list_subjects(&a, "p", None, MAX_SUBJECT_PAGE + 50).await.expect("first page");
    assert_eq!(first.subjects.len(), MAX_SUBJECT_PAGE);
    let next = first.next.expect("another page follows");
    assert_eq!(next, format!("p{:04}", MAX_SUBJECT_PAGE - 1));
    let last = svc.list_subjects(&a, "p", Some(&next), MAX_SUBJECT_PAGE).await.expect("last page");
    let ids: Vec<_> = last.subjects.iter().filter_map(|s| s.subject.customer_person_id.clone()).collect();
    assert_eq!(ids, [format!("p{:04}", MAX_SUBJECT_PAGE), format!("p{:04}", MAX_SUBJECT_PAGE + 1)]);
    assert_eq!(last.next, None);
}
