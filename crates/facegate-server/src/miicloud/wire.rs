//! miiCloud response bodies, field for field as the API reference shows them.

use facegate_core::service::{Enrolled as EnrolledPerson, FaceMatch, PersonRecord};
use facegate_core::{BoundingBox, FaceSample, Subject};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Failure {
    pub status: &'static str,
    pub message: String,
}

/// Pixel box; may extend past the image edges, so coordinates can be negative.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct WireBox {
    pub left_x: i32,
    pub left_y: i32,
    pub right_x: i32,
    pub right_y: i32,
}

impl From<&BoundingBox> for WireBox {
    fn from(b: &BoundingBox) -> Self {
        Self {
            left_x: b.left.round() as i32,
            left_y: b.top.round() as i32,
            right_x: b.right.round() as i32,
            right_y: b.bottom.round() as i32,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ImageEntry {
    pub image: String,
    pub created: String,
}

impl From<&FaceSample> for ImageEntry {
    fn from(s: &FaceSample) -> Self {
        Self { image: s.image_name.clone(), created: s.created_at.clone() }
    }
}

#[derive(Debug, Serialize)]
pub struct Enrolled {
    pub status: &'static str,
    pub miicloud_person_id: String,
    pub customer_person_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub bounding_box: WireBox,
    pub image: String,
}

impl Enrolled {
    pub fn new(done: &EnrolledPerson) -> Self {
        let s = &done.subject;
        Self {
            status: "success",
            miicloud_person_id: s.id.clone(),
            customer_person_id: s.customer_person_id.clone(),
            first_name: s.profile.first_name.clone(),
            last_name: s.profile.last_name.clone(),
            email: s.profile.email.clone(),
            phone: s.profile.phone.clone(),
            bounding_box: (&done.sample.bbox).into(),
            image: done.sample.image_name.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Updated {
    pub status: &'static str,
    pub miicloud_person_id: String,
    pub customer_person_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub images: Vec<ImageEntry>,
    /// Only when the request added an image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounding_box: Option<WireBox>,
}

impl Updated {
    pub fn new(r: &PersonRecord) -> Self {
        let s = &r.subject;
        Self {
            status: "success",
            miicloud_person_id: s.id.clone(),
            customer_person_id: s.customer_person_id.clone(),
            first_name: s.profile.first_name.clone(),
            last_name: s.profile.last_name.clone(),
            email: s.profile.email.clone(),
            phone: s.profile.phone.clone(),
            images: r.samples.iter().map(ImageEntry::from).collect(),
            bounding_box: r.new_face.as_ref().map(WireBox::from),
        }
    }
}

/// GET answers without `status` on success, as the reference shows.
#[derive(Debug, Serialize)]
pub struct PersonView {
    pub customer_person_id: Option<String>,
    pub miicloud_person_id: String,
    pub images: Vec<ImageEntry>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
}

impl PersonView {
    pub fn new(r: &PersonRecord) -> Self {
        let s = &r.subject;
        Self {
            customer_person_id: s.customer_person_id.clone(),
            miicloud_person_id: s.id.clone(),
            images: r.samples.iter().map(ImageEntry::from).collect(),
            first_name: s.profile.first_name.clone(),
            last_name: s.profile.last_name.clone(),
            phone: s.profile.phone.clone(),
            email: s.profile.email.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Deleted {
    pub status: &'static str,
    pub customer_person_id: Option<String>,
    pub miicloud_person_id: String,
}

impl Deleted {
    pub fn new(s: &Subject) -> Self {
        Self { status: "success", customer_person_id: s.customer_person_id.clone(), miicloud_person_id: s.id.clone() }
    }
}

#[derive(Debug, Serialize)]
pub struct MatchFaces {
    pub faces: Vec<MatchedFace>,
}

#[derive(Debug, Serialize)]
pub struct MatchedFace {
    pub match_status: &'static str,
    pub bounding_box: WireBox,
    #[serde(serialize_with = "confidence")]
    pub match_confidence: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miicloud_person_id: Option<String>,
    /// The reference's field table calls the id `person_id` while its example says
    /// `miicloud_person_id`; both are sent so clients written against either work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_person_id: Option<String>,
}

/// The document writes a confidence of zero as the integer `0`.
fn confidence<S: serde::Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    if *value == 0.0 {
        s.serialize_u8(0)
    } else {
        s.serialize_f64(*value)
    }
}

impl MatchFaces {
    /// In 1:N an unknown face has confidence 0, as documented; in 1:1 the real confidence is
    /// kept, since the target is fixed and callers need the margin.
    pub fn new(matches: &[FaceMatch], one_to_one: bool) -> Self {
        let faces = matches
            .iter()
            .map(|m| {
                let confidence = m.candidate.as_ref().map_or(0.0, |c| f64::from(c.score) / 10_000.0);
                let known = m.known.then_some(()).and(m.candidate.as_ref());
                MatchedFace {
                    match_status: if known.is_some() { "known" } else { "unknown" },
                    bounding_box: (&m.bbox).into(),
                    match_confidence: if known.is_some() || one_to_one { confidence } else { 0.0 },
                    miicloud_person_id: known.map(|c| c.subject.id.clone()),
                    person_id: known.map(|c| c.subject.id.clone()),
                    customer_person_id: known.and_then(|c| c.subject.customer_person_id.clone()),
                }
            })
            .collect();
        Self { faces }
    }
}
