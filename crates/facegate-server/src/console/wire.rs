//! The console API's JSON shapes. Boxes and keypoints stay in source-image pixels as floats,
//! since the page draws them over the photo at any zoom; scores keep the service's 0–9999 scale
//! beside miiCloud's 0–1 confidence.

use facegate_core::jobs::BulkJobSummary;
use facegate_core::service::Candidate;
use facegate_core::{AttributedFace, BoundingBox, FaceSample, Subject, SubjectSummary};
use serde::Serialize;

/// A box in source-image pixels; may extend past the image edges.
#[derive(Debug, Serialize, PartialEq)]
pub struct PixelBox {
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
}

impl From<&BoundingBox> for PixelBox {
    fn from(b: &BoundingBox) -> Self {
        Self { left: b.left, top: b.top, right: b.right, bottom: b.bottom }
    }
}

/// Who is signed in, and the figures the page shows beside results.
#[derive(Debug, Serialize)]
pub struct Session {
    pub tenant: String,
    /// Scores (0–9999) at or above this are a known face.
    pub known_threshold: u32,
    pub model_id: String,
    /// Face templates the tenant's gallery holds.
    pub templates: usize,
    pub limits: Limits,
}

/// The page sizes the API holds to, so that the page can say when a list is cut.
#[derive(Debug, Serialize)]
pub struct Limits {
    pub detect_faces: usize,
    pub search_candidates: usize,
    pub persons_page: usize,
    pub jobs: usize,
    pub image_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct Pose {
    pub pan: f32,
    pub tilt: f32,
    pub roll: f32,
}

/// One face of a photo with NEC's attributes.
#[derive(Debug, Serialize)]
pub struct DetectedFace {
    pub face_box: PixelBox,
    /// The subject's right eye (image left), left eye, nose, right and left mouth corner.
    pub keypoints: [[f32; 2]; 5],
    pub detector_score: f32,
    pub quality: f32,
    pub frontal_face_score: f32,
    pub pose: Pose,
    /// The face a miiCloud enrollment of the whole photo takes.
    pub largest: bool,
}

#[derive(Debug, Serialize)]
pub struct Detected {
    /// Largest first.
    pub faces: Vec<DetectedFace>,
}

impl Detected {
    pub fn new(faces: &[AttributedFace]) -> Self {
        let faces = faces
            .iter()
            .enumerate()
            .map(|(i, f)| DetectedFace {
                face_box: (&f.face.bbox).into(),
                keypoints: f.face.landmarks,
                detector_score: f.face.detector_score,
                quality: f.attributes.quality,
                frontal_face_score: f.attributes.frontal_face_score,
                pose: Pose { pan: f.attributes.pose.pan, tilt: f.attributes.pose.tilt, roll: f.attributes.pose.roll },
                // The engine returns the largest face first.
                largest: i == 0,
            })
            .collect();
        Self { faces }
    }
}

/// A person as the lists show them.
#[derive(Debug, Serialize)]
pub struct PersonCard {
    pub customer_person_id: Option<String>,
    pub miicloud_person_id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl From<&Subject> for PersonCard {
    fn from(s: &Subject) -> Self {
        Self {
            customer_person_id: s.customer_person_id.clone(),
            miicloud_person_id: s.id.clone(),
            first_name: s.profile.first_name.clone(),
            last_name: s.profile.last_name.clone(),
        }
    }
}

/// A stored face image: fetch it from `/console/api/faces/{face_id}/image`.
#[derive(Debug, Serialize)]
pub struct StoredFace {
    pub face_id: String,
    pub image: String,
    pub created: String,
    /// Where the face is in the stored image.
    pub face_box: PixelBox,
}

impl From<&FaceSample> for StoredFace {
    fn from(s: &FaceSample) -> Self {
        Self {
            face_id: s.id.clone(),
            image: s.image_name.clone(),
            created: s.created_at.clone(),
            face_box: (&s.bbox).into(),
        }
    }
}

/// One candidate of a searched face.
#[derive(Debug, Serialize)]
pub struct SearchCandidate {
    #[serde(flatten)]
    pub person: PersonCard,
    /// 0–9999 under the model's calibration.
    pub score: u32,
    /// miiCloud's `match_confidence`: the score over 10,000.
    pub confidence: f64,
    /// The score reaches the tenant's known threshold.
    pub known: bool,
    /// The stored face that scored best.
    pub best_face: Option<StoredFace>,
}

impl SearchCandidate {
    pub fn new(candidate: &Candidate, subject: &Subject, best_face: Option<&FaceSample>, threshold: u32) -> Self {
        Self {
            person: subject.into(),
            score: candidate.score,
            confidence: f64::from(candidate.score) / 10_000.0,
            known: candidate.score >= threshold,
            best_face: best_face.map(StoredFace::from),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SearchedFace {
    pub face_box: PixelBox,
    /// "known" or "unknown", as miiCloud's `match_status`.
    pub match_status: &'static str,
    /// Best first.
    pub candidates: Vec<SearchCandidate>,
}

#[derive(Debug, Serialize)]
pub struct Searched {
    pub known_threshold: u32,
    /// Largest first.
    pub faces: Vec<SearchedFace>,
}

#[derive(Debug, Serialize)]
pub struct PersonSummary {
    #[serde(flatten)]
    pub person: PersonCard,
    pub images: u64,
    pub newest_face: Option<StoredFace>,
}

impl From<&SubjectSummary> for PersonSummary {
    fn from(s: &SubjectSummary) -> Self {
        Self {
            person: (&s.subject).into(),
            images: s.samples,
            newest_face: s.newest_sample.as_ref().map(StoredFace::from),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PersonPage {
    pub persons: Vec<PersonSummary>,
    /// The `after` of the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PersonFaces {
    #[serde(flatten)]
    pub person: PersonCard,
    /// Newest first.
    pub faces: Vec<StoredFace>,
}

#[derive(Debug, Serialize)]
pub struct Tags {
    pub tags: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Job {
    pub batch_id: String,
    pub created: String,
    pub records: u64,
    pub processed: u64,
    pub succeeded: u64,
    pub failed: u64,
}

impl From<&BulkJobSummary> for Job {
    fn from(j: &BulkJobSummary) -> Self {
        Self {
            batch_id: j.job.id.clone(),
            created: j.job.created_at.clone(),
            records: j.records,
            processed: j.processed,
            succeeded: j.succeeded,
            failed: j.failed,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Jobs {
    /// Newest first.
    pub jobs: Vec<Job>,
}
