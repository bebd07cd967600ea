//! miiCloud's handlers: each reads the wire format, calls one core use case, and writes the
//! answer back in miiCloud's shapes.

use axum::extract::{Path, Query, Request, State};
use axum::{Extension, Json};
use facegate_core::service::{FacePolicy, FaceSelection, NewSubject, SearchOptions, SubjectKey};
use facegate_core::{Error, ImageUpload, Profile, Tenant};

use crate::error::ApiError;
use crate::miicloud::error::MiiError;
use crate::miicloud::form::{read_form, FormData};
use crate::miicloud::wire::{
    Deleted, EnrollForm, Enrolled, Failure, Failures, MatchFaces, MatchForm, PersonQuery, PersonView, UpdateForm,
    Updated,
};
use crate::state::AppState;

pub(crate) const IMAGE_FIELD: &str = "image_path";

type MiiResult<T> = Result<Json<T>, MiiError>;

#[utoipa::path(post, path = "/miicloud/person", tag = "Persons", summary = "Enroll Person",
    description = "Identifies the largest face in the image and enrolls it as a new person.",
    request_body(content = EnrollForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "Enrolled.", body = Enrolled, example = json!({"status": "success", "miicloud_person_id": "059339e9-02d7-4777-95ce-acca440af413", "customer_person_id": "5712f5242cf956c7c1d248e89",
            "first_name": "John", "last_name": "Doe", "email": "test@domain.com", "phone": "+141524204243",
            "bounding_box": {"left_x": 38, "left_y": 53, "right_x": 168, "right_y": 183}, "image": "enroll/will_smith_001_Fkkx7eK.jpg"})),
        (status = 409, description = "A person with this customer_person_id exists; use PUT to add images.", body = Failure), Failures))]
pub async fn enroll(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    req: Request,
) -> MiiResult<Enrolled> {
    let form = read_form(req, IMAGE_FIELD).await?;
    let customer_person_id = required(&form, "customer_person_id")?;
    let image = image_of(&form)?.ok_or_else(|| ApiError::invalid("image_path is required: upload the image file"))?;
    let new = NewSubject {
        customer_id: Some(customer_person_id.clone()),
        profile: profile_of(&form),
        tags: Vec::new(),
        image,
        policy: FacePolicy::Largest,
    };
    let done = state.service.create_subject(&tenant, new).await.map_err(|e| match e {
        Error::Conflict(_) => Error::Conflict(format!(
            "a person with customer_person_id '{customer_person_id}' already exists; use PUT to add images"
        )),
        other => in_person_words(other),
    })?;
    Ok(Json(Enrolled::new(&done)))
}

#[utoipa::path(put, path = "/miicloud/person", tag = "Persons", summary = "Update Person",
    description = "Replaces the profile of the person named in the form, and adds the image's largest face when one is sent.",
    request_body(content = UpdateForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "Updated.", body = Updated),
        (status = 404, description = "No such person.", body = Failure), Failures))]
pub async fn update_by_form(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    req: Request,
) -> MiiResult<Updated> {
    let form = read_form(req, IMAGE_FIELD).await?;
    let customer_person_id = required(&form, "customer_person_id")?;
    update(&state, &tenant, &customer_person_id, form).await
}

#[utoipa::path(put, path = "/miicloud/person/{customer_person_id}", tag = "Persons", summary = "Update Person",
    description = "Replaces the person's profile, and adds the image's largest face when one is sent.", params(("customer_person_id" = String, Path, description = "The customer's identifier of the person.")),
    request_body(content = UpdateForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "Updated.", body = Updated),
        (status = 404, description = "No such person.", body = Failure), Failures))]
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
    let key = SubjectKey::CustomerId(customer_person_id);
    let record = state
        .service
        .update_subject(tenant, key, profile_of(&form), image, FacePolicy::Largest)
        .await
        .map_err(in_person_words)?;
    Ok(Json(Updated::new(&record)))
}

#[utoipa::path(get, path = "/miicloud/person/{customer_person_id}", tag = "Persons", summary = "Get Person",
    description = "The person's profile and enrolled images, newest first.", params(("customer_person_id" = String, Path, description = "The customer's identifier of the person.")),
    responses((status = 200, description = "The person.", body = PersonView, example = json!({"customer_person_id": "5712f5242cf956c7c1d248e89", "miicloud_person_id": "059339e9-02d7-4777-95ce-acca440af413",
            "images": [{"image": "enroll/will_smith_002_zktkkgN.jpg", "created": "2019-04-04T22:11:08.110600Z"}],
            "first_name": "John", "last_name": "Doe", "phone": "+12222222222", "email": "john_doe_2@domain.com"})),
        (status = 404, description = "No such person.", body = Failure), Failures))]
pub async fn get_person(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(customer_person_id): Path<String>,
) -> MiiResult<PersonView> {
    let key = SubjectKey::CustomerId(&customer_person_id);
    let record = state.service.subject_record(&tenant, key).await.map_err(in_person_words)?;
    Ok(Json(PersonView::new(&record)))
}

#[utoipa::path(delete, path = "/miicloud/person/{customer_person_id}", tag = "Persons", summary = "Delete Person",
    description = "Deletes the person and everything held about them. This cannot be reversed.", params(("customer_person_id" = String, Path, description = "The customer's identifier of the person.")),
    responses((status = 200, description = "Deleted.", body = Deleted, example = json!({"status": "success", "customer_person_id": "5712f5242cf956c7c1d248e89", "miicloud_person_id": "059339e9-02d7-4777-95ce-acca440af413"})),
        (status = 404, description = "No such person.", body = Failure), Failures))]
pub async fn delete_person(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(customer_person_id): Path<String>,
) -> MiiResult<Deleted> {
    let key = SubjectKey::CustomerId(&customer_person_id);
    let subject = state.service.delete_subject(&tenant, key).await.map_err(in_person_words)?;
    Ok(Json(Deleted::new(&subject)))
}

/// `GET /miicloud/person?customer_person_id=…`: the reference lists this endpoint beside the
/// path form its examples use.
#[utoipa::path(get, path = "/miicloud/person", tag = "Persons", summary = "Get Person",
    description = "As `GET /miicloud/person/{customer_person_id}`, with the id as a query parameter.", params(PersonQuery),
    responses((status = 200, description = "The person.", body = PersonView),
        (status = 404, description = "No such person.", body = Failure), Failures))]
pub async fn get_person_by_query(
    state: State<AppState>,
    tenant: Extension<Tenant>,
    Query(query): Query<PersonQuery>,
) -> MiiResult<PersonView> {
    get_person(state, tenant, Path(query.customer_person_id)).await
}

/// `DELETE /miicloud/person?customer_person_id=…`, as for GET.
#[utoipa::path(delete, path = "/miicloud/person", tag = "Persons", summary = "Delete Person",
    description = "As `DELETE /miicloud/person/{customer_person_id}`, with the id as a query parameter.", params(PersonQuery),
    responses((status = 200, description = "Deleted.", body = Deleted),
        (status = 404, description = "No such person.", body = Failure), Failures))]
pub async fn delete_person_by_query(
    state: State<AppState>,
    tenant: Extension<Tenant>,
    Query(query): Query<PersonQuery>,
) -> MiiResult<Deleted> {
    delete_person(state, tenant, Path(query.customer_person_id)).await
}

#[utoipa::path(post, path = "/miicloud/match_faces", tag = "Matching", summary = "Match Faces",
    description = "Every face of the image against the whole gallery (1:N), or against one person when customer_person_id is sent (1:1).",
    request_body(content = MatchForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "One entry per face found, largest first.", body = MatchFaces, example = json!({"faces": [
            {"match_status": "known", "bounding_box": {"left_x": 38, "left_y": 53, "right_x": 168, "right_y": 183}, "match_confidence": 0.87,
             "miicloud_person_id": "059339e9-02d7-4777-95ce-acca440af413", "person_id": "059339e9-02d7-4777-95ce-acca440af413", "customer_person_id": "5712f5242cf956c7c1d248e89"},
            {"match_status": "unknown", "bounding_box": {"left_x": 240, "left_y": 61, "right_x": 352, "right_y": 173}, "match_confidence": 0}]})),
        (status = 404, description = "customer_person_id names no person.", body = Failure), Failures))]
pub async fn match_faces(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    req: Request,
) -> MiiResult<MatchFaces> {
    let request_id = req.extensions().get::<tower_http::request_id::RequestId>().map(crate::request_id::id_of);
    let form = read_form(req, IMAGE_FIELD).await?;
    let image = image_of(&form)?.ok_or_else(|| ApiError::invalid("image_path is required: upload the image file"))?;
    let verify_against = form.text("customer_person_id").map(str::trim).filter(|v| !v.is_empty());
    let matches = match verify_against {
        Some(cpid) => {
            let key = SubjectKey::CustomerId(cpid);
            state.service.compare(&tenant, image.bytes, key, FaceSelection::Every).await.map_err(in_person_words)?
        }
        None => {
            // The best subject of each face; whether it counts as known is the service's threshold.
            // Its faces that match nobody are kept when the tenant opted in (issue 29).
            let options = SearchOptions { keep_unknown: request_id, ..SearchOptions::best_of_every_face() };
            state.service.find_subjects(&tenant, image.bytes, options).await?
        }
    };
    let one_to_one = verify_against.is_some();
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
pub(crate) fn image_of(form: &FormData) -> Result<Option<ImageUpload>, ApiError> {
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

/// The core's neutral wording in miiCloud's terms: a subject is a person, and its customer id
/// is `customer_person_id`.
fn in_person_words(e: Error) -> Error {
    match e {
        Error::NotFound("subject") => Error::NotFound("person"),
        Error::InvalidRequest(m) => Error::InvalidRequest(m.replace("customer id", "customer_person_id")),
        other => other,
    }
}
