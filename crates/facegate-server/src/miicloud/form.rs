//! Reads a request body of text fields and an optional image file, from multipart,
//! URL-encoded or JSON bodies, with limits on parts and field sizes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use facegate_core::{Error, ImageUpload};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::ApiError;

/// More parts than any endpoint has fields means a hostile or broken client.
const MAX_PARTS: usize = 32;
/// Text fields are ids and names; anything longer is not one.
const MAX_TEXT_FIELD_BYTES: usize = 4096;

#[derive(Debug, Default)]
pub struct FormData {
    pub fields: HashMap<String, String>,
    /// The uploaded file of the image field, if any.
    pub image: Option<ImageUpload>,
}

impl FormData {
    /// A text field, `None` when absent.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Parses the body. `image_field` names the part that carries the image file; a text value
/// under that name stays in `fields`.
pub async fn read_form(req: Request, image_field: &str) -> Result<FormData, ApiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match content_type.as_deref() {
        Some("multipart/form-data") => read_multipart(req, image_field).await,
        Some("application/x-www-form-urlencoded") => {
            let body = read_bytes(req).await?;
            let mut form = FormData::default();
            for (k, v) in form_urlencoded::parse(&body) {
                insert_text(&mut form, k.into_owned(), v.into_owned())?;
            }
            Ok(form)
        }
        Some("application/json") => {
            let body = read_bytes(req).await?;
            let mut form = FormData::default();
            for (k, v) in read_json_fields(&body)? {
                insert_text(&mut form, k, v)?;
            }
            Ok(form)
        }
        None if body_is_empty(&req) => Ok(FormData::default()),
        other => Err(ApiError::UnsupportedContentType(format!(
            "unsupported Content-Type {}; send multipart/form-data",
            other.unwrap_or("(none)")
        ))),
    }
}

/// Why a JSON body was refused while it was parsed: kept apart from serde's error, so that the
/// client reads the reason without parser positions.
type Refusal = RefCell<Option<String>>;

/// Parses a flat JSON object of text fields without building a tree of it: a nested value, and
/// a field past `MAX_PARTS`, are refused where the parser meets them. A body of a million
/// fields or array items, or nested 100,000 deep, costs no more memory than the fields kept.
fn read_json_fields(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let refusal = Refusal::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = (&mut de).deserialize_map(JsonFields(&refusal)).and_then(|fields| de.end().map(|()| fields));
    parsed.map_err(|e| match (refusal.into_inner(), e.classify()) {
        (Some(reason), _) => ApiError::invalid(reason),
        (None, serde_json::error::Category::Data) => ApiError::invalid("request body must be a JSON object"),
        (None, _) => ApiError::invalid(format!("request body is not valid JSON: {e}")),
    })
}

fn refuse<E: de::Error>(refusal: &Refusal, reason: String) -> E {
    let e = E::custom(&reason);
    *refusal.borrow_mut() = Some(reason);
    e
}

struct JsonFields<'r>(&'r Refusal);

impl<'de> Visitor<'de> for JsonFields<'_> {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.len() == MAX_PARTS {
                return Err(refuse(self.0, format!("too many fields (limit {MAX_PARTS})")));
            }
            let value = map.next_value_seed(JsonText { refusal: self.0, key: &key })?;
            fields.push((key, value));
        }
        Ok(fields)
    }
}

/// A field's value: a string, a number as written, or null as blank. An array, an object or a
/// boolean is refused at its first byte, before anything inside it is read.
struct JsonText<'a> {
    refusal: &'a Refusal,
    key: &'a str,
}

impl JsonText<'_> {
    fn not_text<E: de::Error>(self) -> E {
        refuse(self.refusal, format!("field '{}' must be a string", self.key))
    }
}

impl<'de> DeserializeSeed<'de> for JsonText<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonText<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<String, E> {
        Err(self.not_text())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.not_text())
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.not_text())
    }
}

fn body_is_empty(req: &Request) -> bool {
    req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()) == Some("0")
        || req.headers().get(axum::http::header::CONTENT_LENGTH).is_none()
            && req.headers().get(axum::http::header::TRANSFER_ENCODING).is_none()
}

async fn read_bytes(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &()).await.map_err(|rejection| body_error(rejection.status(), rejection.body_text()))
}

fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::Core(Error::TooLarge("request body is larger than the configured limit".into()))
    } else {
        ApiError::invalid(format!("could not read request body: {text}"))
    }
}

async fn read_multipart(req: Request, image_field: &str) -> Result<FormData, ApiError> {
    let mut multipart = Multipart::from_request(req, &()).await.map_err(|r| body_error(r.status(), r.body_text()))?;
    let read = read_parts(&mut multipart, image_field).await;
    if read.is_err() {
        drain(&mut multipart).await;
    }
    read
}

async fn read_parts(multipart: &mut Multipart, image_field: &str) -> Result<FormData, ApiError> {
    let mut form = FormData::default();
    let mut parts = 0usize;
    while let Some(mut field) = multipart.next_field().await.map_err(|e| body_error(e.status(), e.body_text()))? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(ApiError::invalid(format!("too many multipart parts (limit {MAX_PARTS})")));
        }
        let name = field.name().unwrap_or("").to_owned();
        let file_name = field.file_name().map(str::to_owned);
        // A part is a file when the client named a file or declared a non-text type; Python
        // `requests` sends images as ("name.jpg", fh, "multipart/form-data"), so the declared
        // type cannot be trusted to say "image".
        let is_file = file_name.is_some() || field.content_type().is_some_and(|t| !t.starts_with("text/"));
        if name == image_field && is_file {
            let bytes = field.bytes().await.map_err(|e| body_error(e.status(), e.body_text()))?;
            if form.image.is_some() {
                return Err(ApiError::invalid(format!("only one '{image_field}' file may be sent")));
            }
            form.image = Some(ImageUpload { file_name: file_name.unwrap_or_default(), bytes: bytes.to_vec() });
        } else {
            // Read in chunks, so that an over-long field is refused at the limit rather than
            // held whole first.
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(|e| body_error(e.status(), e.body_text()))? {
                if bytes.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
                    return Err(ApiError::invalid(format!(
                        "field '{name}' is longer than {MAX_TEXT_FIELD_BYTES} bytes"
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(bytes)
                .map_err(|_| ApiError::invalid(format!("field '{name}' is not valid UTF-8")))?;
            insert_text(&mut form, name, text)?;
        }
    }
    Ok(form)
}

/// Reads and discards the rest of a refused body, chunk by chunk and within the body limit.
/// Answering while the client is still sending would make the server close a connection with
/// unread data, which resets it: the client would see a broken pipe instead of the refusal.
async fn drain(multipart: &mut Multipart) {
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}

fn insert_text(form: &mut FormData, name: String, value: String) -> Result<(), ApiError> {
    if form.fields.len() >= MAX_PARTS {
        return Err(ApiError::invalid(format!("too many fields (limit {MAX_PARTS})")));
    }
    if value.len() > MAX_TEXT_FIELD_BYTES {
        return Err(ApiError::invalid(format!("field '{name}' is longer than {MAX_TEXT_FIELD_BYTES} bytes")));
    }
    form.fields.insert(name, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> String {
        match read_json_fields(body.as_bytes()) {
            Err(ApiError::Core(Error::InvalidRequest(m))) => m,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn json_fields_are_flat_text() {
        let fields = read_json_fields(br#"{"a":"x","n":12,"f":1.5,"neg":-3,"z":null,"a":"y"}"#).expect("flat object");
        let expected: Vec<(String, String)> =
            [("a", "x"), ("n", "12"), ("f", "1.5"), ("neg", "-3"), ("z", ""), ("a", "y")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(fields, expected);
        assert_eq!(refusal(r#"{"a":true}"#), "field 'a' must be a string");
        assert_eq!(refusal(r#"{"a":{"b":"c"}}"#), "field 'a' must be a string");
        let deep = format!(r#"{{"a":{}}}"#, "[".repeat(100_000));
        assert_eq!(refusal(&deep), "field 'a' must be a string");
        let wide: String = (0..=MAX_PARTS).map(|i| format!(r#""f{i}":"x","#)).collect();
        assert_eq!(refusal(&format!("{{{wide}\"last\":1}}")), format!("too many fields (limit {MAX_PARTS})"));
        assert_eq!(refusal("[1,2]"), "request body must be a JSON object");
        assert_eq!(refusal(r#""text""#), "request body must be a JSON object");
        assert!(refusal(r#"{"a":"x""#).starts_with("request body is not valid JSON"));
        assert!(refusal(r#"{"a":"x"} trailing"#).starts_with("request body is not valid JSON"));
        assert!(refusal("").starts_with("request body is not valid JSON"));
    }
}
