//! The miiCloud dialect: persons keyed by `customer_person_id`, multipart uploads, and
//! `match_faces`. Shapes follow the miiCloud API reference field for field.

mod wire;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Extension, Json, Router};
use facegate_core::service::FaceMatch;
use facegate_core::{Code, ImageUpload, Profile, Tenant};

use crate::api::form::{read_form, FormData};
use crate::auth::token::require_token;
use crate::error::ApiError;
use crate::AppState;

pub use wire::*;

const IMAGE_FIELD: &str = "image_path";

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/miicloud/person", post(enroll).put(update_by_form))
        .route("/miicloud/person/", post(enroll).put(update_by_form))
        .route("/miicloud/person/{customer_person_id}", get(get_person).put(update_by_path).delete(delete_person))
        .route("/miicloud/match_faces", post(match_faces))
        .route("/miicloud/match_faces/", post(match_faces))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// Every miiCloud failure: `{"status":"fail","message":…}` with a fitting HTTP status.
#[derive(Debug)]
pub struct MiiError(pub ApiError);

impl<E: Into<ApiError>> From<E> for MiiError {
    fn from(e: E) -> Self {
        MiiError(e.into())
    }
}

fn status_of(code: Code) -> StatusCode {
    match code {
        Code::InvalidRequest => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Conflict => StatusCode::CONFLICT,
        Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Code::InvalidImage | Code::NoFace | Code::MultipleFaces | Code::PoorQuality => StatusCode::UNPROCESSABLE_ENTITY,
        Code::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        Code::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for MiiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self.0 {
            ApiError::Core(e) => {
                if e.code() == Code::Internal {
                    tracing::error!(error = ?e.to_string(), "request failed");
                }
                (status_of(e.code()), e.public_message())
            }
            ApiError::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, (*m).to_owned()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            ApiError::UnsupportedContentType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, m.clone()),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, self.0.to_string()),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, self.0.to_string()),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, self.0.to_string()),
            ApiError::Replayed => (StatusCode::FORBIDDEN, self.0.to_string()),
            ApiError::TooManyAuthFailures { retry_after } => {
                let body = serde_json::json!({"status": "fail", "message": self.0.to_string()});
                return ApiError::too_many_auth_failures(*retry_after, body);
            }
        };
        let mut res = (status, Json(Failure { status: "fail", message })).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        res
    }
}

type MiiResult<T> = Result<Json<T>, MiiError>;

async fn enroll(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    req: Request,
) -> MiiResult<Enrolled> {
    let form = read_form(req, IMAGE_FIELD).await?;
    let customer_person_id = required(&form, "customer_person_id")?;
    let image = image_of(&form)?.ok_or_else(|| ApiError::invalid("image_path is required: upload the image file"))?;
    let done = state.service.enroll(&tenant, &customer_person_id, profile_of(&form), image).await?;
    Ok(Json(Enrolled::new(&done)))
}

async fn update_by_form(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    req: Request,
) -> MiiResult<Updated> {
    let form = read_form(req, IMAGE_FIELD).await?;
    let customer_person_id = required(&form, "customer_person_id")?;
    update(&state, &tenant, &customer_person_id, form).await
}

async fn update_by_path(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(customer_person_id): Path<String>,
    req: Request,
) -> MiiResult<Updated> {
    let form = read_form(req, IMAGE_FIELD).await?;
    if let Some(in_form) = form.text("customer_person_id").filter(|v| !v.trim().is_empty()) {
        if in_form != customer_person_id {
            return Err(ApiError::invalid("customer_person_id in the form differs from the one in the path").into());
        }
    }
    update(&state, &tenant, &customer_person_id, form).await
}

async fn update(state: &AppState, tenant: &Tenant, customer_person_id: &str, form: FormData) -> MiiResult<Updated> {
    let image = image_of(&form)?;
    let record = state.service.update(tenant, customer_person_id, profile_of(&form), image).await?;
    Ok(Json(Updated::new(&record)))
}

async fn get_person(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(customer_person_id): Path<String>,
) -> MiiResult<PersonView> {
    let record = state.service.get_person(&tenant, &customer_person_id).await?;
    Ok(Json(PersonView::new(&record)))
}

async fn delete_person(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(customer_person_id): Path<String>,
) -> MiiResult<Deleted> {
    let subject = state.service.delete_person(&tenant, &customer_person_id).await?;
    Ok(Json(Deleted::new(&subject)))
}

async fn match_faces(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    req: Request,
) -> MiiResult<MatchFaces> {
    let form = read_form(req, IMAGE_FIELD).await?;
    let image = image_of(&form)?.ok_or_else(|| ApiError::invalid("image_path is required: upload the image file"))?;
    let verify_against = form.text("customer_person_id").map(str::trim).filter(|v| !v.is_empty());
    let (matches, one_to_one): (Vec<FaceMatch>, bool) = match verify_against {
        Some(cpid) => (state.service.verify(&tenant, cpid, image.bytes).await?, true),
        None => (state.service.identify(&tenant, image.bytes).await?, false),
    };
    Ok(Json(MatchFaces::new(&matches, one_to_one)))
}

fn required(form: &FormData, name: &str) -> Result<String, ApiError> {
    form.text(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid(format!("{name} is required")))
}

/// Missing and blank fields are both `None`: on update they clear the stored value.
fn profile_of(form: &FormData) -> Profile {
    let field = |name: &str| form.text(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    Profile {
        first_name: field("first_name"),
        last_name: field("last_name"),
        email: field("email"),
        phone: field("phone"),
    }
}

/// The uploaded image. A text `image_path` naming a remote URL is refused, since facegate
/// does not fetch images; a text local path next to an uploaded file (as the document's
/// Python example sends) is ignored.
fn image_of(form: &FormData) -> Result<Option<ImageUpload>, ApiError> {
    if let Some(image) = &form.image {
        if image.bytes.is_empty() {
            return Err(ApiError::invalid("the uploaded image_path file is empty"));
        }
        return Ok(Some(image.clone()));
    }
    match form.text(IMAGE_FIELD).map(str::trim) {
        Some(text) if text.contains("://") => Err(ApiError::invalid(
            "image_path is a URL; facegate does not fetch remote images, upload the file instead",
        )),
        Some(text) if !text.is_empty() => {
            Err(ApiError::invalid("image_path must be uploaded as a file (multipart), not sent as text"))
        }
        _ => Ok(None),
    }
}
