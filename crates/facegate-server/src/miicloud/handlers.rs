//! miiCloud's handlers: each reads the wire format, calls one core use case, and writes the
//! answer back in miiCloud's shapes.

use axum::extract::{Path, Request, State};
use axum::{Extension, Json};
use facegate_core::service::FaceMatch;
use facegate_core::{ImageUpload, Profile, Tenant};

use crate::error::ApiError;
use crate::miicloud::error::MiiError;
use crate::miicloud::form::{read_form, FormData};
use crate::miicloud::wire::{Deleted, Enrolled, MatchFaces, PersonView, Updated};
use crate::state::AppState;

const IMAGE_FIELD: &str = "image_path";

type MiiResult<T> = Result<Json<T>, MiiError>;

pub async fn enroll(
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

pub async fn update_by_form(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    req: Request,
) -> MiiResult<Updated> {
    let form = read_form(req, IMAGE_FIELD).await?;
    let customer_person_id = required(&form, "customer_person_id")?;
    update(&state, &tenant, &customer_person_id, form).await
}

pub async fn update_by_path(
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

pub async fn get_person(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(customer_person_id): Path<String>,
) -> MiiResult<PersonView> {
    let record = state.service.get_person(&tenant, &customer_person_id).await?;
    Ok(Json(PersonView::new(&record)))
}

pub async fn delete_person(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(customer_person_id): Path<String>,
) -> MiiResult<Deleted> {
    let subject = state.service.delete_person(&tenant, &customer_person_id).await?;
    Ok(Json(Deleted::new(&subject)))
}

pub async fn match_faces(
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
