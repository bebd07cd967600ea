//! NEC ID's wire types: base64 images in, attributes out with every value written as a string,
//! as the NEC ID reference shows them.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use facegate_core::jobs::{RecordStatus, RegisterStatus, MAX_BULK_REGISTRATIONS};
use facegate_core::service::MAX_TAGS;
use facegate_core::{BoundingBox, BulkPage, BulkRecord, FaceAttributes};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::{IntoResponses, ToSchema};

use crate::error::{ApiError, NecErrorType};

/// Standard alphabet, padding optional: clients differ on padding, never on the alphabet.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a base64 image field. A `data:image/...;base64,` prefix and line breaks are allowed.
pub fn decode_image_field(name: &str, value: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let value = value.ok_or_else(|| ApiError::invalid(format!("{name} property must be provided.")))?;
    let payload = match value.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => value,
    };
    let cleaned: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if cleaned.is_empty() {
        return Err(ApiError::invalid(format!("{name} property must be provided.")));
    }
    BASE64.decode(cleaned.as_bytes()).map_err(|_| ApiError::invalid(format!("{name} property is not valid base64.")))
}

/// A JSON array of at most `max` items, refused at item `max + 1` while it is parsed, so that
/// a body of millions of tiny items is never built in memory.
pub fn at_most<'de, D, T>(d: D, max: usize, what: &'static str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(AtMost { max, what, item: PhantomData })
}

/// As [`at_most`], for a list that may be absent or null.
pub fn optional_at_most<'de, D, T>(d: D, max: usize, what: &'static str) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_option(Optional(AtMost { max, what, item: PhantomData }))
}

struct AtMost<T> {
    max: usize,
    what: &'static str,
    item: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for AtMost<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at most {} {}", self.max, self.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            if items.len() == self.max {
                return Err(de::Error::custom(format!("{} holds more than {} items", self.what, self.max)));
            }
            items.push(item);
        }
        Ok(items)
    }
}

struct Optional<V>(V);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Optional<AtMost<T>> {
    type Value = Option<Vec<T>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self.0).map(Some)
    }
}

/// A number the way NEC ID writes it: six significant digits, trailing zeros dropped
/// (`4.93922`, `0.569824`, `7.613`, `-0`).
pub fn number(x: f32) -> String {
    if !x.is_finite() {
        return "0".into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let magnitude = f64::from(x).abs().log10().floor() as i32;
    let decimals = (5 - magnitude).clamp(0, 12) as usize;
    let mut s = format!("{:.*}", decimals, x);
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

/// A box in pixels, every coordinate a string.
#[derive(Debug, Serialize, ToSchema)]
pub struct Area {
    pub left: String,
    pub top: String,
    pub right: String,
    pub bottom: String,
}

/// A point in pixels, both coordinates strings.
#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    pub x: String,
    pub y: String,
}

/// NEC ID's face attributes; every value is a string, as the reference shows them.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = attributes_example)]
#[serde(rename_all = "camelCase")]
pub struct Attributes {
    pub face_area: Area,
    pub head_area: Area,
    pub right_eye_center: Point,
    pub left_eye_center: Point,
    pub frontal_face_score: String,
    pub face_roll: String,
    pub face_pan: String,
    pub face_tilt: String,
    pub face_score: String,
    pub face_quality_score: String,
}

impl From<&FaceAttributes> for Attributes {
    fn from(a: &FaceAttributes) -> Self {
        // Areas and points are whole pixels; NEC writes them as integers.
        let px = |v: f32| (v.round() as i32).to_string();
        let area =
            |b: &BoundingBox| Area { left: px(b.left), top: px(b.top), right: px(b.right), bottom: px(b.bottom) };
        let point = |p: &facegate_core::Point| Point { x: px(p.x), y: px(p.y) };
        Attributes {
            face_area: area(&a.face_area),
            head_area: area(&a.head_area),
            right_eye_center: point(&a.right_eye_center),
            left_eye_center: point(&a.left_eye_center),
            frontal_face_score: number(a.frontal_face_score),
            face_roll: number(a.pose.roll),
            face_pan: number(a.pose.pan),
            face_tilt: number(a.pose.tilt),
            face_score: number(a.face_score),
            face_quality_score: number(a.quality),
        }
    }
}

/// The reference's example attributes.
pub fn attributes_example() -> serde_json::Value {
    json!({
        "faceArea": {"left": "161", "top": "156", "right": "318", "bottom": "313"},
        "headArea": {"left": "131", "top": "86", "right": "345", "bottom": "343"},
        "rightEyeCenter": {"x": "195", "y": "198"},
        "leftEyeCenter": {"x": "276", "y": "191"},
        "frontalFaceScore": "0.569824",
        "faceRoll": "4.93922",
        "facePan": "-9.34863",
        "faceTilt": "7.613",
        "faceScore": "0.999591",
        "faceQualityScore": "0.86541"
    })
}

// ---- requests -----------------------------------------------------------------------------

// Lists are bounded while they are parsed (`at_most`): a tenant holds at most `MAX_TAGS` tags
// and a job at most `MAX_BULK_REGISTRATIONS` records, so a longer list is refused before a body
// of millions of tiny items is built in memory.
fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    at_most(d, MAX_TAGS, "tags")
}

fn some_tags<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    optional_at_most(d, MAX_TAGS, "tags")
}

fn registrations<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    optional_at_most(d, MAX_BULK_REGISTRATIONS, "registrations")
}

/// Register Subject.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterSubject {
    /// Base64 encoded image.
    #[schema(format = Byte)]
    pub face: Option<String>,
    /// Tag names to register against the subject.
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
}

/// Update Subject, Register Event, Update Event.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EventRequest {
    /// Base64 encoded image.
    #[schema(format = Byte)]
    pub face: Option<String>,
    /// Replaces the subject's tags when present.
    #[serde(default, deserialize_with = "some_tags")]
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SearchRequest {
    /// Base64 encoded image.
    #[schema(format = Byte)]
    pub probe: Option<String>,
    /// 0 to 9999.
    pub threshold: Option<i64>,
    /// 1 to 50.
    pub limit: Option<i64>,
    /// Only subjects carrying one of these tags.
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyRequest {
    /// Base64 encoded image.
    #[schema(format = Byte)]
    pub probe: Option<String>,
    /// Subject id.
    pub id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ExtractRequest {
    /// Base64 encoded image holding one or more faces.
    #[schema(format = Byte)]
    pub faces: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkRegisterRequest {
    #[serde(default, deserialize_with = "registrations")]
    pub registrations: Option<Vec<BulkRegistrationEntry>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkRegistrationEntry {
    /// Name of the file in the tenant's area of the bucket.
    pub filename: Option<String>,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RenameTag {
    #[serde(rename = "newName")]
    pub new_name: Option<String>,
}

// ---- responses ----------------------------------------------------------------------------

/// A registered or updated subject's event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventWritten {
    /// Subject id.
    pub id: String,
    pub event_id: String,
    pub attributes: Attributes,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventId {
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// Subject id.
    pub id: String,
    pub events: Vec<EventId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScoredEvent {
    pub id: String,
    /// 0 to 9999.
    pub score: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Candidate {
    /// Subject id.
    pub id: String,
    /// The best event's score, 0 to 9999.
    pub score: u32,
    /// Best first.
    pub events: Vec<ScoredEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    pub candidates: Vec<Candidate>,
    pub attributes: Attributes,
}

/// Verify's answer: 200 when the score reaches the threshold, 404 with `message` otherwise.
#[derive(Debug, Serialize, ToSchema)]
pub struct Verification {
    pub id: String,
    pub score: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Verify's 404: a score below the threshold, or no such subject.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum NotVerified {
    Scored(Verification),
    Missing(Failure),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExtractedFace {
    pub attributes: Attributes,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Extracted {
    pub faces: Vec<ExtractedFace>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TagList {
    pub tags: Vec<String>,
}

/// The empty object tag writes answer with.
#[derive(Debug, Serialize, ToSchema)]
pub struct Empty {}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchCreated {
    pub batch_id: String,
}

/// One record of a bulk job.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordSummary {
    /// The operation id; not the subject's or the event's.
    pub id: String,
    pub filename: String,
    pub attempts: String,
    /// On success; empty otherwise.
    pub event_id: String,
    /// On success; empty otherwise.
    pub subject_id: String,
    /// "Success" or "Failed" once processed; empty before.
    pub register_status: String,
    pub reason: String,
    /// "New" or "Processed".
    pub status: String,
    /// The face attributes as a JSON string; empty until registered.
    pub attributes_json: String,
}

/// A page of bulk register progress. The records go out under both `processed` (the field
/// list's name) and `processsed` (the example response's spelling), so that clients written
/// against either find them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkProgress {
    pub batch_id: String,
    pub processed: Vec<RecordSummary>,
    pub processsed: Vec<RecordSummary>,
    /// Send as the pagingId for the next page; empty on the last.
    pub last_evaluated_key: String,
}

impl From<&BulkPage> for BulkProgress {
    fn from(page: &BulkPage) -> Self {
        let records: Vec<RecordSummary> = page.records.iter().map(RecordSummary::from).collect();
        BulkProgress {
            batch_id: page.batch_id.clone(),
            processed: records.clone(),
            processsed: records,
            last_evaluated_key: page.last_evaluated_key.clone(),
        }
    }
}

impl From<&BulkRecord> for RecordSummary {
    fn from(r: &BulkRecord) -> Self {
        let success = r.register_status == Some(RegisterStatus::Success);
        let attributes =
            r.attributes.as_ref().and_then(|a| serde_json::to_string(&Attributes::from(a)).ok()).unwrap_or_default();
        RecordSummary {
            id: r.id.clone(),
            filename: r.filename.clone(),
            attempts: r.attempts.to_string(),
            event_id: if success { r.event_id.clone().unwrap_or_default() } else { String::new() },
            subject_id: if success { r.subject_id.clone() } else { String::new() },
            register_status: match r.register_status {
                Some(RegisterStatus::Success) => "Success",
                Some(RegisterStatus::Failed) => "Failed",
                None => "",
            }
            .to_owned(),
            reason: r.reason.clone(),
            status: match r.status {
                RecordStatus::New => "New",
                RecordStatus::Processed => "Processed",
            }
            .to_owned(),
            attributes_json: attributes,
        }
    }
}

/// The failures every NEC ID route may answer with, beside its own.
#[derive(IntoResponses)]
pub enum Failures {
    /// Client exception; `errorCode` and `errorType` say which.
    #[response(status = 400, example = json!({"message": "face property must be provided.", "errorCode": 1001, "errorType": "InvalidRequest"}))]
    BadRequest(Failure),
    /// A missing or unknown API key ("Forbidden"), or a signature that does not verify.
    #[response(status = 403, example = json!({"message": "Forbidden"}))]
    Forbidden(Failure),
    /// The request body did not arrive in time.
    #[response(status = 408)]
    Timeout(Failure),
    /// The request body is larger than the server accepts.
    #[response(status = 413)]
    TooLarge(Failure),
    /// Too many failed authentications from this address; see `Retry-After`.
    #[response(status = 429)]
    TooManyAuthFailures(Failure),
    /// Server exception.
    #[response(status = 500, example = json!({"message": "internal server error"}))]
    Internal(Failure),
    /// Busy; retry after `Retry-After` seconds.
    #[response(status = 503)]
    Busy(Failure),
    /// The server's disk is full.
    #[response(status = 507)]
    StorageFull(Failure),
}

/// Every failure: `errorCode` and `errorType` for the documented client errors only.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

impl Failure {
    pub fn new(message: String, error: Option<NecErrorType>) -> Self {
        Failure { message, error_code: error.map(NecErrorType::code), error_type: error.map(|e| e.name().to_owned()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_the_reference() {
        assert_eq!(number(4.939_22), "4.93922");
        assert_eq!(number(-9.348_63), "-9.34863");
        assert_eq!(number(7.613), "7.613");
        assert_eq!(number(0.569_824), "0.569824");
        assert_eq!(number(0.999_591), "0.999591");
        assert_eq!(number(-0.0), "-0");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(f32::NAN), "0");
    }

    #[test]
    fn lists_are_bounded_while_parsed() {
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(default, deserialize_with = "three")]
            tags: Vec<String>,
            #[serde(default, deserialize_with = "some_three")]
            more: Option<Vec<u8>>,
        }
        fn three<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
            at_most(d, 3, "tags")
        }
        fn some_three<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            optional_at_most(d, 3, "more")
        }
        let ok: Body = serde_json::from_str(r#"{"tags":["a","b","c"],"more":[1,2,3]}"#).expect("three");
        assert_eq!((ok.tags.len(), ok.more.map(|m| m.len())), (3, Some(3)));
        let absent: Body = serde_json::from_str(r#"{"more":null}"#).expect("absent and null");
        assert_eq!((absent.tags.len(), absent.more), (0, None));
        let e = serde_json::from_str::<Body>(r#"{"tags":["a","b","c","d"]}"#).err().expect("four tags");
        assert!(e.to_string().contains("tags holds more than 3 items"), "{e}");
        assert!(serde_json::from_str::<Body>(r#"{"more":[1,2,3,4]}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"tags":"a"}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"tags":null}"#).is_err());
    }

    #[test]
    fn base64_fields_decode_or_fail_cleanly() {
        assert_eq!(decode_image_field("face", Some("aGVsbG8=")).expect("padded"), b"hello");
        assert_eq!(decode_image_field("face", Some("aGVsbG8")).expect("unpadded"), b"hello");
        assert_eq!(decode_image_field("face", Some("data:image/jpeg;base64,aGVs\nbG8=")).expect("data url"), b"hello");
        assert!(decode_image_field("face", Some("not base64!!")).is_err());
        assert!(decode_image_field("face", Some("")).is_err());
        assert!(decode_image_field("face", None).is_err());
    }
}
