//! NEC ID bodies: base64 images in, attributes out with every value written as a string, as
//! the NEC ID reference shows them.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use facegate_core::FaceAttributes;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::{json, Value};

use crate::error::ApiError;

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

pub fn attributes(a: &FaceAttributes) -> Value {
    // Areas and points are whole pixels; NEC writes them as integers.
    let px = |v: f32| (v.round() as i32).to_string();
    let area = |b: &facegate_core::BoundingBox| json!({"left": px(b.left), "top": px(b.top), "right": px(b.right), "bottom": px(b.bottom)});
    let point = |p: &facegate_core::Point| json!({"x": px(p.x), "y": px(p.y)});
    json!({
        "faceArea": area(&a.face_area),
        "headArea": area(&a.head_area),
        "rightEyeCenter": point(&a.right_eye_center),
        "leftEyeCenter": point(&a.left_eye_center),
        "frontalFaceScore": number(a.frontal_face_score),
        "faceRoll": number(a.pose.roll),
        "facePan": number(a.pose.pan),
        "faceTilt": number(a.pose.tilt),
        "faceScore": number(a.face_score),
        "faceQualityScore": number(a.quality),
    })
}

/// A page of bulk register progress. The records go out under both `processed` (the field
/// list's name) and `processsed` (the example response's spelling), so that clients written
/// against either find them.
pub fn bulk_page(page: &facegate_core::BulkPage) -> Value {
    use facegate_core::jobs::{RecordStatus, RegisterStatus};
    let records: Vec<Value> = page
        .records
        .iter()
        .map(|r| {
            let success = r.register_status == Some(RegisterStatus::Success);
            let attributes = r.attributes.as_ref().map(|a| attributes(a).to_string()).unwrap_or_default();
            json!({
                "id": r.id,
                "filename": r.filename,
                "attempts": r.attempts.to_string(),
                "eventId": if success { r.event_id.clone().unwrap_or_default() } else { String::new() },
                "subjectId": if success { r.subject_id.clone() } else { String::new() },
                "registerStatus": match r.register_status {
                    Some(RegisterStatus::Success) => "Success",
                    Some(RegisterStatus::Failed) => "Failed",
                    None => "",
                },
                "reason": r.reason,
                "status": match r.status {
                    RecordStatus::New => "New",
                    RecordStatus::Processed => "Processed",
                },
                "attributesJson": attributes,
            })
        })
        .collect();
    json!({
        "batchId": page.batch_id,
        "processed": records,
        "processsed": records,
        "lastEvaluatedKey": page.last_evaluated_key,
    })
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
