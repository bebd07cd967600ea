//! The native API's JSON shapes. Times are RFC 3339 UTC with milliseconds.

use facegate_core::service::UnknownMatch;
use facegate_core::{Sighting, UnknownPerson};
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

// The generic error body is miiCloud's failure body, field for field.
pub use crate::miicloud::wire::Failure;
use crate::miicloud::wire::WireBox;

/// `unix_ms` as RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.format(&format).unwrap_or_default()
}

/// A group of sightings believed to be one person nobody enrolled.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnknownPersonView {
    pub id: String,
    /// How many sightings it holds.
    pub sightings: u64,
    pub first_seen: String,
    pub last_seen: String,
}

impl From<&UnknownPerson> for UnknownPersonView {
    fn from(p: &UnknownPerson) -> Self {
        Self {
            id: p.id.clone(),
            sightings: p.sightings,
            first_seen: rfc3339_ms(p.first_seen_unix_ms),
            last_seen: rfc3339_ms(p.last_seen_unix_ms),
        }
    }
}

/// A page of unknown people, in id order.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnknownPeoplePage {
    pub unknown_people: Vec<UnknownPersonView>,
    /// The `after` of the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// `limit` and `after` of a listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 100; 50 when absent.
    pub limit: Option<u32>,
    /// The last id of the previous page.
    pub after: Option<String>,
}

/// One kept face.
#[derive(Debug, Serialize, ToSchema)]
pub struct SightingView {
    pub id: String,
    pub seen_at: String,
    /// The `x-request-id` of the search that kept it.
    pub request_id: String,
    /// The face's quality, 0 to 1.
    pub quality: f32,
}

impl From<&Sighting> for SightingView {
    fn from(s: &Sighting) -> Self {
        Self {
            id: s.id.clone(),
            seen_at: rfc3339_ms(s.seen_unix_ms),
            request_id: s.request_id.clone(),
            quality: s.quality,
        }
    }
}

/// An unknown person with its sightings, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SightingsView {
    pub unknown_person: UnknownPersonView,
    pub sightings: Vec<SightingView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The unknown person whose sightings move into this one; it is deleted.
    pub from: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// Ids of this person's sightings that move to a new unknown person.
    pub sightings: Vec<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The miiCloud person id to enroll it as; absent, it becomes an NEC subject (no customer id).
    pub customer_person_id: Option<String>,
}

/// The person enrolled by a promotion.
#[derive(Debug, Serialize, ToSchema)]
pub struct Promoted {
    /// miiCloud's `miicloud_person_id`, NEC's subject id.
    pub person_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_person_id: Option<String>,
    /// How many of its best sightings became its faces.
    pub faces: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub status: &'static str,
    pub deleted_sightings: u64,
}

/// An unknown person a face matches.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnknownMatchView {
    #[serde(flatten)]
    pub person: UnknownPersonView,
    /// The best score (0–9999) of its sightings against the face.
    pub score: u32,
}

impl From<&UnknownMatch> for UnknownMatchView {
    fn from(m: &UnknownMatch) -> Self {
        Self { person: (&m.person).into(), score: m.score }
    }
}

/// One face of a search back.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchedFace {
    pub bounding_box: WireBox,
    /// `known` when an enrolled person matches at the service's threshold, as miiCloud says.
    pub match_status: &'static str,
    /// The best enrolled person, whatever its score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_person_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<u32>,
    /// The unknown people it matches at the service's threshold, best first.
    pub unknown_people: Vec<UnknownMatchView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchAnswer {
    pub faces: Vec<SearchedFace>,
}

/// The multipart body of a search back.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Described only: `miicloud::form::read_form` reads the fields.
pub struct SearchForm {
    #[schema(value_type = String, format = Binary)]
    pub image_path: Vec<u8>,
}

/// NEC's failure body: a request made with NEC credentials is refused in NEC's words.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NecFailure {
    pub message: String,
    pub error_code: Option<u16>,
    pub error_type: Option<String>,
}

/// The failures every native route may answer with, beside its own.
#[derive(IntoResponses)]
#[allow(dead_code)] // Described only: the handlers answer `ApiError`s.
pub enum Failures {
    /// A missing or invalid field, or a body that is not valid JSON.
    #[response(status = 400, example = json!({"status": "fail", "message": "limit must be 1 to 100"}))]
    BadRequest(Failure),
    /// A missing, malformed or unknown miiCloud token.
    #[response(status = 401, example = json!({"status": "fail", "message": "invalid token"}))]
    Unauthorized(Failure),
    /// NEC credentials (`x-api-key` with a signature) refused, or a signed write sent again.
    #[response(status = 403, example = json!({"message": "Forbidden"}))]
    Forbidden(NecFailure),
    /// The request body did not arrive in time.
    #[response(status = 408)]
    Timeout(Failure),
    /// The request body is larger than the server accepts.
    #[response(status = 413)]
    TooLarge(Failure),
    /// A body that is not multipart where an image is expected, or an unknown image format.
    #[response(status = 415)]
    UnsupportedMediaType(Failure),
    /// Too many failed authentications from this address; see `Retry-After`.
    #[response(status = 429)]
    TooManyAuthFailures(Failure),
    #[response(status = 500, example = json!({"status": "fail", "message": "internal server error"}))]
    Internal(Failure),
    /// Busy; retry after `Retry-After` seconds.
    #[response(status = 503)]
    Busy(Failure),
    /// The server's disk is full.
    #[response(status = 507)]
    StorageFull(Failure),
}
