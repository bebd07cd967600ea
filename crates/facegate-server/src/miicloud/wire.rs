//! miiCloud's wire types, field for field as the API reference shows them. Requests are forms
//! (`form::read_form` reads them field by field); the form types here only describe them for the
//! OpenAPI document.

use facegate_core::service::{FaceSearch, Registered, SubjectRecord};
use facegate_core::{BoundingBox, FaceSample, Subject};
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

/// Every failure.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "fail", "message": "person not found"}))]
pub struct Failure {
    /// Always "fail".
    pub status: &'static str,
    pub message: String,
}

/// Pixel box; may extend past the image edges, so coordinates can be negative.
#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
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

#[derive(Debug, Serialize, ToSchema)]
pub struct ImageEntry {
    pub image: String,
    pub created: String,
}

impl From<&FaceSample> for ImageEntry {
    fn from(s: &FaceSample) -> Self {
        Self { image: s.image_name.clone(), created: s.created_at.clone() }
    }
}

#[derive(Debug, Serialize, ToSchema)]
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
    pub fn new(done: &Registered) -> Self {
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

#[derive(Debug, Serialize, ToSchema)]
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
    pub fn new(r: &SubjectRecord) -> Self {
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
#[derive(Debug, Serialize, ToSchema)]
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
    pub fn new(r: &SubjectRecord) -> Self {
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

#[derive(Debug, Serialize, ToSchema)]
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

#[derive(Debug, Serialize, ToSchema)]
pub struct MatchFaces {
    pub faces: Vec<MatchedFace>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MatchedFace {
    /// "known" or "unknown".
    pub match_status: &'static str,
    pub bounding_box: WireBox,
    /// 0 to 1; 0 for an unknown face in 1:N.
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
    pub fn new(matches: &[FaceSearch], one_to_one: bool) -> Self {
        let faces = matches
            .iter()
            .map(|m| {
                let best = m.candidates.first();
                let confidence = best.map_or(0.0, |c| f64::from(c.score) / 10_000.0);
                let known = m.known.then_some(()).and(best);
                MatchedFace {
                    match_status: if known.is_some() { "known" } else { "unknown" },
                    bounding_box: (&m.bbox).into(),
                    match_confidence: if known.is_some() || one_to_one { confidence } else { 0.0 },
                    miicloud_person_id: known.map(|c| c.subject_id.clone()),
                    person_id: known.map(|c| c.subject_id.clone()),
                    customer_person_id: known.and_then(|c| c.subject.as_ref()?.customer_person_id.clone()),
                }
            })
            .collect();
        Self { faces }
    }
}

// ---- forms, described for the contract --------------------------------------------------------

/// Enroll Person: multipart/form-data, as the reference's examples send it (URL-encoded and JSON
/// bodies are read too).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Described only: `form::read_form` reads the fields.
pub struct EnrollForm {
    /// A unique identifier maintained by the customer per person.
    #[schema(example = "5712f5242cf956c7c1d248e89")]
    pub customer_person_id: String,
    /// The image file; its largest face is enrolled.
    #[schema(value_type = String, format = Binary)]
    pub image_path: Vec<u8>,
    #[schema(example = "John")]
    pub first_name: Option<String>,
    #[schema(example = "Doe")]
    pub last_name: Option<String>,
    #[schema(example = "test@domain.com")]
    pub email: Option<String>,
    #[schema(example = "+141524204243")]
    pub phone: Option<String>,
}

/// Update Person: replaces the profile (a missing or blank field is cleared) and adds the image's
/// largest face when an image is sent.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Described only: `form::read_form` reads the fields.
pub struct UpdateForm {
    /// Required on `PUT /miicloud/person`; on `PUT /miicloud/person/{customer_person_id}` it
    /// must match the path when sent.
    pub customer_person_id: Option<String>,
    #[schema(value_type = Option<String>, format = Binary)]
    pub image_path: Option<Vec<u8>>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// Match Faces: every face of the image against the whole gallery (1:N), or against one person
/// when `customer_person_id` is sent (1:1).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Described only: `form::read_form` reads the fields.
pub struct MatchForm {
    #[schema(value_type = String, format = Binary)]
    pub image_path: Vec<u8>,
    pub customer_person_id: Option<String>,
}

/// `customer_person_id` as a query parameter, for `GET` and `DELETE /miicloud/person`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PersonQuery {
    /// The customer's identifier of the person.
    pub customer_person_id: String,
}

/// The failures every miiCloud route may answer with, beside its own.
#[derive(IntoResponses)]
pub enum Failures {
    /// A missing or invalid field.
    #[response(status = 400, example = json!({"status": "fail", "message": "customer_person_id is required"}))]
    BadRequest(Failure),
    /// A missing, malformed or unknown token.
    #[response(status = 401, example = json!({"status": "fail", "message": "invalid token"}))]
    Unauthorized(Failure),
    /// The request body did not arrive in time.
    #[response(status = 408)]
    Timeout(Failure),
    /// The request body is larger than the server accepts.
    #[response(status = 413)]
    TooLarge(Failure),
    /// The body is neither multipart, URL-encoded nor JSON, or the image format is unknown.
    #[response(status = 415)]
    UnsupportedMediaType(Failure),
    /// The image is unreadable, or holds no usable face.
    #[response(status = 422, example = json!({"status": "fail", "message": "no face found in the image"}))]
    Unprocessable(Failure),
    /// Too many failed authentications from this address; see `Retry-After`.
    #[response(status = 429)]
    TooManyAuthFailures(Failure),
    #[response(status = 500, example = json!({"status": "fail", "message": "internal server error"}))]
    Internal(Failure),
    /// Busy; retry after `Retry-After` seconds.
    #[response(status = 503)]
    Busy(Failure),
    /// The server's disk is full.
    #[response(status = 507)]
    StorageFull(Failure),
}
