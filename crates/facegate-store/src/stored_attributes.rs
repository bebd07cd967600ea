//! The stored form of a bulk record's face attributes, the `attributes_json` column.
//!
//! The core's `FaceAttributes` is a domain type, free to change; what a store wrote must stay
//! readable. So the column holds this module's own structs, tagged with their version (`"v"`).
//! A change of the stored form adds a version here and keeps reading the old ones. Rows written
//! before the tag existed hold version 1 without it: its field names are those of the core
//! struct of that time.
//!
//! A row that does not decode is an error, never a record without attributes: blanking it would
//! silently lose what a registration reported.

use facegate_core::{BoundingBox, FaceAttributes, Point, Pose};
use serde::{Deserialize, Deserializer, Serialize};

/// What `attributes_json` holds for a record without attributes (not registered yet).
const NONE: &str = "";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "v")]
enum Stored {
    #[serde(rename = "1")]
    V1(V1),
}

/// Version 1: areas as `[left, top, right, bottom]` and points as `[x, y]`, in whole pixels.
#[derive(Debug, Serialize, Deserialize)]
struct V1 {
    face_area: [i32; 4],
    head_area: [i32; 4],
    right_eye_center: [i32; 2],
    left_eye_center: [i32; 2],
    #[serde(deserialize_with = "null_as_nan")]
    face_score: f32,
    #[serde(deserialize_with = "null_as_nan")]
    frontal_face_score: f32,
    #[serde(deserialize_with = "null_as_nan")]
    roll: f32,
    #[serde(deserialize_with = "null_as_nan")]
    pan: f32,
    #[serde(deserialize_with = "null_as_nan")]
    tilt: f32,
    #[serde(deserialize_with = "null_as_nan")]
    quality: f32,
}

/// JSON has no NaN, and serde_json writes one as `null`: a score that came out NaN (a
/// degenerate face) reads back as NaN rather than making its row unreadable.
fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

impl From<&FaceAttributes> for V1 {
    fn from(a: &FaceAttributes) -> Self {
        // The engine reports areas and points in whole pixels; rounding only guards the cast.
        let px = |v: f32| v.round() as i32;
        let area = |b: &BoundingBox| [px(b.left), px(b.top), px(b.right), px(b.bottom)];
        let point = |p: &Point| [px(p.x), px(p.y)];
        V1 {
            face_area: area(&a.face_area),
            head_area: area(&a.head_area),
            right_eye_center: point(&a.right_eye_center),
            left_eye_center: point(&a.left_eye_center),
            face_score: a.face_score,
            frontal_face_score: a.frontal_face_score,
            roll: a.pose.roll,
            pan: a.pose.pan,
            tilt: a.pose.tilt,
            quality: a.quality,
        }
    }
}

impl From<V1> for FaceAttributes {
    fn from(v: V1) -> Self {
        let area =
            |b: [i32; 4]| BoundingBox { left: b[0] as f32, top: b[1] as f32, right: b[2] as f32, bottom: b[3] as f32 };
        let point = |p: [i32; 2]| Point { x: p[0] as f32, y: p[1] as f32 };
        FaceAttributes {
            face_area: area(v.face_area),
            head_area: area(v.head_area),
            right_eye_center: point(v.right_eye_center),
            left_eye_center: point(v.left_eye_center),
            face_score: v.face_score,
            frontal_face_score: v.frontal_face_score,
            pose: Pose { pan: v.pan, tilt: v.tilt, roll: v.roll },
            quality: v.quality,
        }
    }
}

/// The column value for `attributes`, in the newest stored form.
pub(crate) fn encode(attributes: Option<&FaceAttributes>) -> Result<String, serde_json::Error> {
    match attributes {
        None => Ok(NONE.to_owned()),
        Some(a) => serde_json::to_string(&Stored::V1(a.into())),
    }
}

/// The attributes a column value holds, in any stored form this build knows.
pub(crate) fn decode(text: &str) -> Result<Option<FaceAttributes>, serde_json::Error> {
    if text == NONE {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_str(text)?;
    let stored =
        if value.get("v").is_some() { Stored::deserialize(value)? } else { Stored::V1(V1::deserialize(value)?) };
    Ok(Some(match stored {
        Stored::V1(v1) => v1.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes() -> FaceAttributes {
        FaceAttributes {
            face_area: BoundingBox { left: 10.0, top: 20.0, right: 110.0, bottom: 150.0 },
            head_area: BoundingBox { left: 0.0, top: 0.0, right: 130.0, bottom: 157.0 },
            right_eye_center: Point { x: 40.0, y: 60.0 },
            left_eye_center: Point { x: 80.0, y: 58.0 },
            face_score: 0.83,
            frontal_face_score: 0.97,
            pose: Pose { pan: -3.5, tilt: 2.25, roll: 1.125 },
            quality: 0.91,
        }
    }

    #[test]
    fn attributes_round_trip_in_the_tagged_form() {
        let text = encode(Some(&attributes())).expect("encodes");
        assert!(text.starts_with(r#"{"v":"1","#), "{text}");
        assert_eq!(decode(&text).expect("decodes"), Some(attributes()));
        assert_eq!(encode(None).expect("encodes"), "");
        assert_eq!(decode("").expect("no attributes"), None);
        // A NaN score is written as null and read back as NaN.
        let nan = FaceAttributes { quality: f32::NAN, ..attributes() };
        let back = decode(&encode(Some(&nan)).expect("encodes")).expect("decodes").expect("attributes");
        assert!(back.quality.is_nan() && back.face_area == nan.face_area);
    }

    #[test]
    fn untagged_rows_read_as_version_1() {
        // As the core's serde form wrote them before the stored form had a version.
        let old = r#"{"face_area":[10,20,110,150],"head_area":[0,0,130,157],"right_eye_center":[40,60],
            "left_eye_center":[80,58],"face_score":0.83,"frontal_face_score":0.97,"roll":1.125,"pan":-3.5,
            "tilt":2.25,"quality":0.91}"#;
        assert_eq!(decode(old).expect("decodes"), Some(attributes()));
    }

    #[test]
    fn undecodable_rows_are_errors() {
        for text in [
            "not json",
            r#"{"v":"2","face_area":[1,2,3,4]}"#,
            r#"{"v":"1","face_area":[1,2,3,4]}"#,
            r#"{"faceArea":{"left":"1"}}"#,
            "null",
        ] {
            assert!(decode(text).is_err(), "{text}");
        }
    }
}
