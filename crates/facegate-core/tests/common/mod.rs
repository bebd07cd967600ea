//! The miiCloud-shaped calls the tests make, on the service's neutral use cases.

#![allow(dead_code)] // each test binary uses its own part of this module

use facegate_core::service::{
    FacePolicy, FaceSearch, FaceSelection, NewSubject, Registered, SearchOptions, SubjectKey, SubjectRecord,
};
use facegate_core::{FaceService, ImageUpload, Profile, Result, Subject, Tenant};

pub async fn enroll(
    svc: &FaceService,
    tenant: &Tenant,
    customer_id: &str,
    profile: Profile,
    image: ImageUpload,
) -> Result<Registered> {
    let new = NewSubject {
        customer_id: Some(customer_id.into()),
        profile,
        tags: Vec::new(),
        image,
        policy: FacePolicy::Largest,
    };
    svc.create_subject(tenant, new).await
}

/// Every face against the whole gallery, the best subject of each.
pub async fn identify(svc: &FaceService, tenant: &Tenant, image: Vec<u8>) -> Result<Vec<FaceSearch>> {
    let options = SearchOptions::best_of_every_face();
    svc.find_subjects(tenant, image, options).await
}

pub async fn verify(svc: &FaceService, tenant: &Tenant, customer_id: &str, image: Vec<u8>) -> Result<Vec<FaceSearch>> {
    svc.compare(tenant, image, SubjectKey::CustomerId(customer_id), FaceSelection::Every).await
}

pub async fn get_person(svc: &FaceService, tenant: &Tenant, customer_id: &str) -> Result<SubjectRecord> {
    svc.subject_record(tenant, SubjectKey::CustomerId(customer_id)).await
}

pub async fn update(
    svc: &FaceService,
    tenant: &Tenant,
    customer_id: &str,
    profile: Profile,
    image: Option<ImageUpload>,
) -> Result<SubjectRecord> {
    svc.update_subject(tenant, SubjectKey::CustomerId(customer_id), profile, image, FacePolicy::Largest).await
}

pub async fn delete_person(svc: &FaceService, tenant: &Tenant, customer_id: &str) -> Result<Subject> {
    svc.delete_subject(tenant, SubjectKey::CustomerId(customer_id)).await
}
