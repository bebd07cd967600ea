//! Reads a request body of text fields and an optional image file, from multipart,
//! URL-encoded or JSON bodies, with limits on parts and field sizes.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use facegate_core::{Error, ImageUpload};

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
            let value: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))?;
            let object = value.as_object().ok_or_else(|| ApiError::invalid("request body must be a JSON object"))?;
            let mut form = FormData::default();
            for (k, v) in object {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Null => String::new(),
                    _ => return Err(ApiError::invalid(format!("field '{k}' must be a string"))),
                };
                insert_text(&mut form, k.clone(), text)?;
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
    let mut form = FormData::default();
    let mut parts = 0usize;
    while let Some(field) = multipart.next_field().await.map_err(|e| body_error(e.status(), e.body_text()))? {
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
            let bytes = field.bytes().await.map_err(|e| body_error(e.status(), e.body_text()))?;
            if bytes.len() > MAX_TEXT_FIELD_BYTES {
                return Err(ApiError::invalid(format!("field '{name}' is longer than {MAX_TEXT_FIELD_BYTES} bytes")));
            }
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| ApiError::invalid(format!("field '{name}' is not valid UTF-8")))?;
            insert_text(&mut form, name, text)?;
        }
    }
    Ok(form)
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
