//! `FaceService`: the use cases both API dialects are translated into, one file per topic.
//! Each dialect maps its wire format onto these and owns its own wording; nothing here knows a
//! wire field name.
//!
//! - `tenants`: tenants and their credentials;
//! - `tags`: an application's tag labels;
//! - `gallery`: subjects and their face samples (create, add or replace a face, update, delete);
//! - `matching`: find subjects for the faces of an image, compare an image with one subject,
//!   extract face attributes;
//! - `bulk`: registration jobs and their runner; `follow`: keeping the index in step with a
//!   gallery other processes write; `background`: starting and stopping those two beside the
//!   requests; `audit`: the audit trail;
//! - `reindex`: re-embedding every stored face with the active model (`facegate reindex`);
//! - `unknown`: the faces searches found nobody for, kept for the tenants that opt in, grouped
//!   into unknown people, searched back, merged, split, deleted and promoted;
//!
//! A use case is a method of the object that holds the ports it needs: [`FaceService`] (engine,
//! store, index) for everything a running server does, [`TenantAdmin`] (store) and
//! [`Reindexer`] (engine, store) for the commands that run without an index.
//! - `state`: the service itself, its configuration, and the one helper that runs store work on
//!   a blocking thread.

mod audit;
mod background;
mod bulk;
mod follow;
mod gallery;
mod matching;
mod reindex;
mod snapshots;
mod state;
mod tags;
mod tenants;
mod text;
mod unknown;

pub use audit::{escape_controls, AUDIT_TARGET};
pub use background::{BackgroundWork, BulkRunner, BULK_STOP_GRACE};
pub use bulk::{BulkConfig, MAX_JOBS_LISTED};
pub use follow::CHANGE_LOG_RETENTION;
pub use gallery::{
    NewSubject, Registered, SubjectKey, SubjectPage, SubjectRecord, MAX_FIELD_CHARS, MAX_ID_CHARS, MAX_SUBJECT_PAGE,
};
pub use matching::{Candidate, FaceSearch, FaceSelection, SearchOptions};
pub use reindex::{
    matching_face, ReindexConfig, ReindexProgress, ReindexReport, Reindexer, TenantReindex, DEFAULT_REINDEX_MIN_IOU,
    REINDEX_STAGE_BATCH,
};
pub use snapshots::SNAPSHOT_EVERY;
pub use state::{
    registrable_face, FacePolicy, FaceService, ServiceConfig, DEFAULT_INFERENCE_QUEUE_PER_WORKER,
    DEFAULT_KNOWN_THRESHOLD, DEFAULT_MAX_BULK_QUEUED_PER_TENANT, DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MIN_FACE_QUALITY,
    DEFAULT_SIGHTING_PURGE_EVERY, REGISTRATION_FACES_EXAMINED, RIVAL_MIN_AREA_RATIO,
};
pub use tags::{MAX_TAGS, MAX_TAG_CHARS};
pub use tenants::{
    hash_secret, random_credentials, random_token, validate_tenant_name, NewTenant, RotatedCredentials, TenantAdmin,
    DEFAULT_CREDENTIAL_GRACE, MAX_TENANT_NAME_CHARS, MAX_UNKNOWN_FACES_RETENTION,
};
pub use text::{image_extension, now_rfc3339, now_unix_ms, rfc3339_after, stored_image_name};
pub use unknown::{UnknownMatch, UnknownSearch, MAX_PROMOTED_FACES, MAX_UNKNOWN_PAGE, UNKNOWN_MATCHES_PER_FACE};
