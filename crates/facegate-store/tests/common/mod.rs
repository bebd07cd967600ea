//! Rows the store tests write: a subject and a sample with a known image and template.

#![allow(dead_code)] // each test binary uses its own part of this module

use facegate_core::store_roles::*;
use facegate_core::{BoundingBox, FaceSample, NewSample, Profile, Subject, Template, Tenant};

pub fn subject(tenant: &Tenant, id: &str, customer: Option<&str>) -> Subject {
    Subject {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        customer_person_id: customer.map(Into::into),
        profile: Profile { first_name: Some("Will".into()), last_name: Some("Smith".into()), email: None, phone: None },
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        updated_at: "2024-01-01T00:00:00.000000Z".into(),
    }
}

pub fn sample(subject_id: &str, id: &str, created_at: &str, model: &str, seed: f32) -> NewSample {
    NewSample {
        sample: FaceSample {
            id: id.into(),
            subject_id: subject_id.into(),
            image_name: format!("enroll/{id}_Fkkx7eK.jpg"),
            bbox: BoundingBox { left: 1.5, top: 2.25, right: 100.0, bottom: 120.75 },
            detector_score: 0.875,
            model_id: model.into(),
            created_at: created_at.into(),
        },
        embedding: vec![seed, -seed, 0.1, f32::MIN_POSITIVE, 1.0 / 3.0],
        image: format!("\u{FF}jpeg bytes of {id}").into_bytes(),
    }
}

pub fn templates(store: &dyn GalleryStore, model: &str) -> Vec<Template> {
    let mut out = Vec::new();
    store.for_each_template(model, &mut |t| out.push(t)).expect("templates");
    out
}
