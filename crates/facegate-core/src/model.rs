//! Domain types shared by every layer. A miiCloud *person* and an NEC *subject* are the same
//! [`Subject`]; an enrolled image and an NEC *event* are the same [`FaceSample`].

use serde::{Deserialize, Serialize};

/// A customer (miiCloud) or application (NEC). All data is scoped to exactly one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// NEC ID credentials of a tenant, in plaintext: shown once at creation. The API key is
/// stored hashed; the secret access key must be stored as is, because verifying an AWS
/// Signature V4 needs the secret itself (an HMAC key), not a hash of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCredentials {
    pub api_key: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// A tenant's credentials as the store keeps them: the token and the API key as SHA-256 hashes,
/// the signing secret as is (verifying an AWS Signature V4 needs the HMAC key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    pub token_hash: String,
    pub api_key_hash: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// What deleting a tenant removed, by kind (`facegate tenant delete` prints it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPurge {
    pub subjects: u64,
    pub face_samples: u64,
    /// Stored face images (files under SQLite, rows under PostgreSQL).
    pub images: u64,
    pub tags: u64,
    /// Tag labels of subjects.
    pub subject_tags: u64,
    pub bulk_jobs: u64,
    pub bulk_records: u64,
    /// Tokens, API keys and access keys, expired ones included.
    pub credentials: u64,
    /// Outcomes a `facegate reindex` had staged for the tenant's samples.
    pub reindex_staging: u64,
    /// Kept faces its searches found nobody for, with their crops, and the unknown people they
    /// were grouped into.
    #[serde(default)]
    pub sightings: u64,
    #[serde(default)]
    pub unknown_people: u64,
}

/// Axis-aligned face box in source-image pixels. May extend past the image edges.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BoundingBox {
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
}

impl BoundingBox {
    pub fn width(&self) -> f32 {
        (self.right - self.left).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.bottom - self.top).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Intersection over union with `other`: 1 for the same box, 0 for boxes that do not
    /// overlap (or have no area).
    pub fn iou(&self, other: &BoundingBox) -> f32 {
        let inter = BoundingBox {
            left: self.left.max(other.left),
            top: self.top.max(other.top),
            right: self.right.min(other.right),
            bottom: self.bottom.min(other.bottom),
        }
        .area();
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

/// A point in source-image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// One face found by the engine, with its template.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectedFace {
    pub bbox: BoundingBox,
    /// Five keypoints in image pixels: subject's right eye (image left), left eye, nose,
    /// right mouth corner, left mouth corner, as SCRFD emits them.
    pub landmarks: [[f32; 2]; 5],
    pub detector_score: f32,
    /// L2-normalised embedding.
    pub embedding: Vec<f32>,
}

/// What [`Engine::analyze`](crate::Engine::analyze) does beyond finding and embedding faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalyzeOptions {
    /// Keeps the largest `max_faces` faces; the rest are dropped before they are embedded.
    pub max_faces: usize,
    /// Adds each kept face's [`FaceAttributes`]. They cost a landmark model run per face, so
    /// only the use cases that report or check them ask.
    pub attributes: bool,
}

impl Default for AnalyzeOptions {
    /// Every face, without attributes.
    fn default() -> Self {
        Self { max_faces: usize::MAX, attributes: false }
    }
}

impl AnalyzeOptions {
    /// The largest `max_faces` faces, each with its attributes.
    pub fn with_attributes(max_faces: usize) -> Self {
        Self { max_faces, attributes: true }
    }
}

/// Everything the engine found in one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageAnalysis {
    pub width: u32,
    pub height: u32,
    /// Largest face first.
    pub faces: Vec<AnalyzedFace>,
}

impl ImageAnalysis {
    /// The faces with the attributes they were analysed with; `Internal` if the engine left
    /// them out although [`AnalyzeOptions::attributes`] asked for them.
    pub fn into_attributed(self) -> crate::error::Result<Vec<AttributedFace>> {
        self.faces.into_iter().map(AnalyzedFace::attributed).collect::<Option<Vec<_>>>().ok_or_else(|| {
            crate::error::Error::Internal("the engine returned faces without the attributes asked for".into())
        })
    }
}

/// A face of an analysed image: its detection and template, and its attributes. As the engine
/// returns it, `A` is `Option<FaceAttributes>`, present when they were asked for; a use case
/// that needs them holds an [`AttributedFace`].
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzedFace<A = Option<FaceAttributes>> {
    pub face: DetectedFace,
    pub attributes: A,
}

/// A detected face with its attributes.
pub type AttributedFace = AnalyzedFace<FaceAttributes>;

impl AnalyzedFace {
    /// The face with its attributes, if it has them.
    pub fn attributed(self) -> Option<AttributedFace> {
        let AnalyzedFace { face, attributes } = self;
        attributes.map(|attributes| AnalyzedFace { face, attributes })
    }
}

/// Head pose in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pose {
    /// Positive: looking toward the image's right (the subject's left).
    pub pan: f32,
    /// Positive: looking up (chin raised).
    pub tilt: f32,
    /// Positive: turned counter-clockwise on screen (the subject's left eye is higher).
    pub roll: f32,
}

/// Attributes of one face, in source-image pixels and degrees: what NEC ID reports. The
/// engine's attributes module documents how each is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceAttributes {
    /// The detector box, rounded to whole pixels and clipped to the image.
    pub face_area: BoundingBox,
    /// The face box widened to hold the whole head, rounded to whole pixels and clipped to the
    /// image.
    pub head_area: BoundingBox,
    /// Centre of the subject's right eye, which sits on the image's left; whole pixels.
    pub right_eye_center: Point,
    /// Centre of the subject's left eye, on the image's right; whole pixels.
    pub left_eye_center: Point,
    /// Detector confidence.
    pub face_score: f32,
    /// 1 facing the camera, 0 in profile.
    pub frontal_face_score: f32,
    pub pose: Pose,
    /// Overall quality in 0..1.
    pub quality: f32,
}

/// What identifies a model and how its similarities are read.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub model_id: String,
    pub embedding_size: usize,
    pub calibration: crate::score::Calibration,
}

/// Optional profile fields of a person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// UUID; miiCloud's `miicloud_person_id` and NEC's subject `id`.
    pub id: String,
    pub tenant_id: String,
    /// miiCloud's `customer_person_id`, unique per tenant when present.
    pub customer_person_id: Option<String>,
    pub profile: Profile,
    pub created_at: String,
    pub updated_at: String,
}

/// A subject as a gallery listing shows it: its record, how many face samples it has, and the
/// newest of them (the one a listing shows as its picture).
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectSummary {
    pub subject: Subject,
    pub samples: u64,
    pub newest_sample: Option<FaceSample>,
}

/// A stored face image of a subject, with the box and template made from it.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceSample {
    /// UUID; NEC's event id.
    pub id: String,
    pub subject_id: String,
    /// Stored name, e.g. `enroll/will_smith_001_Fkkx7eK.jpg`.
    pub image_name: String,
    pub bbox: BoundingBox,
    pub detector_score: f32,
    pub model_id: String,
    pub created_at: String,
}

/// A sample to be written together with its image bytes and template.
#[derive(Debug, Clone)]
pub struct NewSample {
    pub sample: FaceSample,
    pub embedding: Vec<f32>,
    pub image: Vec<u8>,
}

/// One template as the index holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub tenant_id: String,
    pub subject_id: String,
    pub sample_id: String,
    pub embedding: Vec<f32>,
}

/// The best-scoring sample of one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectHit {
    pub subject_id: String,
    pub sample_id: String,
    pub similarity: f32,
}

/// An uploaded image with the client's file name.
#[derive(Debug, Clone)]
pub struct ImageUpload {
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// One tenant's stored templates that the active model cannot search, because another model made
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaleTenant {
    pub tenant_id: String,
    pub tenant_name: String,
    /// Face samples whose template another model made.
    pub stale_samples: u64,
    /// Subjects with at least one face sample and none of the active model: search cannot find
    /// them at all.
    pub unsearchable_subjects: u64,
}

/// The stored templates of models other than the active one. Empty when every template is the
/// active model's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaleTemplates {
    /// The other models' ids, sorted.
    pub models: Vec<String>,
    /// The tenants that hold stale templates, by name.
    pub tenants: Vec<StaleTenant>,
}

impl StaleTemplates {
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    pub fn stale_samples(&self) -> u64 {
        self.tenants.iter().map(|t| t.stale_samples).sum()
    }

    pub fn unsearchable_subjects(&self) -> u64 {
        self.tenants.iter().map(|t| t.unsearchable_subjects).sum()
    }
}

/// A stored sample's face as another model found and embedded it again.
#[derive(Debug, Clone, PartialEq)]
pub struct ReembeddedFace {
    pub bbox: BoundingBox,
    pub detector_score: f32,
    pub embedding: Vec<f32>,
}

/// Why a stored sample could not be re-embedded. Its old template stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReindexFailure {
    /// The new detector finds no face in the stored image.
    NoFace,
    /// It finds faces, but none where the stored box is (see the reindex's minimum IoU).
    NoMatchingFace,
    /// The stored image is gone.
    ImageMissing,
    /// The stored image cannot be opened (fails its checksum or its authentication) or decoded.
    ImageUnreadable,
    /// The stored image is over the engine's current input limits.
    ImageTooLarge,
    /// The engine failed on the image.
    InferenceError,
}

impl ReindexFailure {
    /// A short, stable name: what the store keeps and the summary counts by.
    pub fn name(self) -> &'static str {
        match self {
            ReindexFailure::NoFace => "no face",
            ReindexFailure::NoMatchingFace => "no matching face",
            ReindexFailure::ImageMissing => "image missing",
            ReindexFailure::ImageUnreadable => "image unreadable",
            ReindexFailure::ImageTooLarge => "image too large",
            ReindexFailure::InferenceError => "inference error",
        }
    }
}

/// What re-embedding one stored sample with the target model gave.
#[derive(Debug, Clone, PartialEq)]
pub enum ReindexOutcome {
    Reembedded(ReembeddedFace),
    Failed(ReindexFailure),
}

/// One sample's outcome, staged until the whole gallery has one.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedSample {
    pub tenant_id: String,
    pub subject_id: String,
    pub sample_id: String,
    pub outcome: ReindexOutcome,
}

/// Staged outcomes of one tenant, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReindexTally {
    pub reembedded: u64,
    /// Failure name ([`ReindexFailure::name`]) -> samples.
    pub failed: std::collections::BTreeMap<String, u64>,
}

impl ReindexTally {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn total(&self) -> u64 {
        self.reembedded + self.failed_total()
    }
}

/// A sample's stored image, as a reindex reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredImage {
    /// The image as it was uploaded (opened, when the gallery is encrypted).
    Bytes(Vec<u8>),
    /// No image is stored for the sample (any more).
    Missing,
    /// An image is stored but cannot be opened; the reason is for the log.
    Unreadable(String),
}

/// A face that a search of an opted-in tenant found nobody for, to be kept (issue 29).
#[derive(Debug, Clone)]
pub struct NewSighting {
    /// UUID.
    pub id: String,
    pub tenant_id: String,
    /// The unknown person it is grouped into: a new one, or one kept before.
    pub unknown_person_id: String,
    pub model_id: String,
    /// L2-normalised template, as the search embedded it.
    pub embedding: Vec<f32>,
    /// The face's region of the probe, JPEG-encoded.
    pub crop: Vec<u8>,
    /// The face's box in the crop's pixels.
    pub crop_face: BoundingBox,
    /// The face's quality (0–1).
    pub quality: f32,
    pub seen_unix_ms: i64,
    /// The id of the request that searched.
    pub request_id: String,
}

/// A face's region cut from a probe image, for a person to look at.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceCrop {
    /// JPEG-encoded.
    pub jpeg: Vec<u8>,
    /// The face's box in the crop's pixels.
    pub face: BoundingBox,
}

/// What a kept sighting holds of the face: its crop and template, opened.
#[derive(Debug, Clone, PartialEq)]
pub struct SightingFace {
    /// The unknown person it is in now.
    pub unknown_person_id: String,
    pub crop: FaceCrop,
    pub model_id: String,
    pub embedding: Vec<f32>,
}

/// A kept sighting, without its template and crop.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub id: String,
    pub unknown_person_id: String,
    pub model_id: String,
    pub quality: f32,
    pub seen_unix_ms: i64,
    pub request_id: String,
}

/// A group of sightings believed to be one person nobody enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPerson {
    /// UUID.
    pub id: String,
    pub tenant_id: String,
    pub sightings: u64,
    pub first_seen_unix_ms: i64,
    pub last_seen_unix_ms: i64,
}

/// What a deletion of sightings removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SightingPurge {
    pub sightings: u64,
    /// Unknown people left without a sighting, and so deleted with them.
    pub unknown_people: u64,
}
