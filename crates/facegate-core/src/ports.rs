//! The ports the adapters implement. All are synchronous: the service runs them on
//! blocking threads so that async request handling never waits on inference or disk.

use crate::error::Result;
use crate::jobs::{BulkJob, BulkJobSummary, BulkRecord, PendingRecord};
use crate::model::{
    AnalyzeOptions, BoundingBox, FaceCrop, FaceSample, ImageAnalysis, ModelInfo, NewSample, NewSighting, ReindexTally,
    Sighting, SightingFace, SightingPurge, StagedSample, StaleTemplates, StoredCredentials, StoredImage, Subject,
    SubjectHit, SubjectSummary, Template, Tenant, TenantPurge, UnknownPerson,
};

/// Face detection and recognition on encoded image bytes.
pub trait Engine: Send + Sync + 'static {
    fn model_info(&self) -> &ModelInfo;

    /// Decodes `image`, finds its faces (largest first, at most `options.max_faces`), embeds
    /// each one and, when `options.attributes` asks, measures its attributes.
    /// Errors: `TooLarge`, `UnsupportedImage`, `InvalidImage` for bad input; `Engine` otherwise.
    fn analyze(&self, image: &[u8], options: AnalyzeOptions) -> Result<ImageAnalysis>;

    /// The region of each box of `image` (boxes as `analyze` found them), with a margin, as a
    /// small JPEG: what is kept of a face nobody enrolled, for a person to look at.
    fn face_crops(&self, image: &[u8], boxes: &[BoundingBox]) -> Result<Vec<FaceCrop>>;
}

/// Durable storage: every role below, and whether it can serve. The service holds one
/// `Arc<dyn Store>`; each backend implements the roles in a file of its own.
///
/// Every method that writes commits before it returns.
pub trait Store:
    TenantStore + GalleryStore + TagStore + BulkJobStore + ReindexStore + UnknownFaceStore + 'static
{
    /// Whether the store can serve: it answers a query, and has room to write. `StorageFull`
    /// when free space is below the configured headroom, `Storage` when the database fails.
    fn check_ready(&self) -> Result<()>;

    /// The change log of a gallery that other processes write too (PostgreSQL), which keeps
    /// this process's index in step with theirs; `None` when this process is the only writer.
    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        None
    }
}

/// What one write changed, as far as an in-memory index cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A sample was added, or its template replaced: load it and index it.
    SampleAdded,
    SampleRemoved,
    SubjectRemoved,
    /// A subject's tag labels were replaced: load them.
    SubjectTagsSet,
    TagRenamed,
    /// The tenant and everything of it were deleted: forget its whole gallery.
    TenantRemoved,
    /// A sighting of a face nobody enrolled was kept (subject: its unknown person; sample: the
    /// sighting): load it and index it.
    SightingKept,
    /// The tenant's unknown people were changed otherwise (merged, split, deleted, promoted,
    /// purged): load its sightings anew.
    UnknownPeopleChanged,
}

/// One entry of a shared gallery's change log, in commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub tenant_id: String,
    pub kind: ChangeKind,
    pub subject_id: Option<String>,
    pub sample_id: Option<String>,
    /// A renamed tag's names.
    pub old_name: Option<String>,
    pub new_name: Option<String>,
}

/// The change log of a gallery shared by several processes. Changes become visible in `seq`
/// order, so a reader that has applied `seq` n has missed nothing before it.
pub trait ChangeFeed: Send + Sync {
    /// The newest `seq` (0 for none).
    fn latest_change(&self) -> Result<u64>;
    /// Up to `limit` changes after `after`, oldest first.
    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<Change>>;
    /// Blocks until a change may have been appended, or `timeout` passes.
    fn wait_for_change(&self, timeout: std::time::Duration) -> Result<()>;
    /// Deletes the changes older than `keep`; returns how many went. Any process may call it.
    fn prune_changes(&self, keep: std::time::Duration) -> Result<u64>;
    /// The newest `seq` pruned so far (0 for none): a reader that has applied less than this
    /// has missed changes it can no longer read, and must reload its index.
    fn pruned_through(&self) -> Result<u64>;
    /// One sample's template of `model_id`, to index a change made elsewhere; `None` if it is
    /// gone since, or of another model (which the index leaves out).
    fn template(&self, tenant_id: &str, sample_id: &str, model_id: &str) -> Result<Option<Template>>;
}

/// Snapshots of this process's index on its local disk, one per tenant, so that a restart loads
/// the index from them and the store's change log since, instead of reading every template.
/// Each records the last change of the log it reflects (its position) and its model.
pub trait IndexSnapshots: Send + Sync {
    /// Puts every snapshot of `model_id` whose position lies in `usable` (the log still holds
    /// every change after it, and it is not ahead of the log) into the index, and deletes the
    /// others, and any that fails its checks. Returns the tenants restored.
    fn restore(&self, model_id: &str, usable: std::ops::RangeInclusive<u64>) -> Result<Vec<RestoredSnapshot>>;
    /// The tenants whose index changed since their snapshot was written or restored, each with
    /// whether it is urgent: no snapshot yet, or the index has been rebuilt in another form.
    fn due(&self) -> Vec<(String, bool)>;
    /// Writes the tenant's snapshot at `position` (every change through it is in the index)
    /// in place of the old one, atomically; `None` for a tenant the index does not hold.
    fn save(&self, tenant_id: &str, model_id: &str, position: u64) -> Result<Option<SavedSnapshot>>;
    /// Deletes the tenant's snapshot, if any: its faces must not outlive it on disk.
    fn remove(&self, tenant_id: &str) -> Result<()>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredSnapshot {
    pub tenant_id: String,
    pub position: u64,
    pub rows: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedSnapshot {
    pub rows: u64,
    pub bytes: u64,
    pub ms: u64,
}

/// Tenants and their credentials. A credential past its expiry (see
/// [`TenantStore::rotate_credentials`]) is found by none of the lookups.
pub trait TenantStore: Send + Sync {
    /// Creates a tenant; `Conflict` if the name is taken.
    fn create_tenant(&self, name: &str, token_hash: &str) -> Result<Tenant>;
    /// Creates the tenant if missing and makes `token_hash` one of its valid tokens.
    fn ensure_tenant(&self, name: &str, token_hash: &str) -> Result<Tenant>;
    fn tenant_by_token_hash(&self, token_hash: &str) -> Result<Option<Tenant>>;
    fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// Adds NEC credentials to a tenant: the API key's hash, the access key id and its secret.
    fn add_api_credentials(&self, tenant_id: &str, api_key_hash: &str, access_key_id: &str, secret: &str)
        -> Result<()>;
    fn tenant_by_api_key_hash(&self, api_key_hash: &str) -> Result<Option<Tenant>>;
    /// The secret of an access key id, if it belongs to `tenant_id`.
    fn access_key_secret(&self, tenant_id: &str, access_key_id: &str) -> Result<Option<String>>;
    /// In one transaction: gives the tenant `new` (a token, an API key and an access key), lets
    /// every credential it held before expire `grace` from now (at once, removed, for a zero
    /// grace; one already expiring sooner keeps its earlier time), and removes its credentials
    /// already expired. Returns how many credentials were retired. `NotFound` for no such tenant,
    /// `Conflict` if a new credential is in use.
    fn rotate_credentials(&self, tenant_id: &str, new: &StoredCredentials, grace: std::time::Duration) -> Result<u64>;
    /// Records the digest of a signed write's signature as used for `keep` from now, in one
    /// statement that a second node's insert of the same digest fails on (a unique key), so that a
    /// captured request is carried out once across every node and restart. `false` when the digest
    /// is recorded already and not yet expired: a replay. Prunes some expired records on the way,
    /// so the table holds about one signing window of writes.
    fn admit_signature(&self, digest: &[u8], keep: std::time::Duration) -> Result<bool>;
    /// Forgets a recorded digest, for a write refused before it did anything (503), so that the
    /// client's retry of the very same request is not taken for a replay.
    fn forget_signature(&self, digest: &[u8]) -> Result<()>;
    /// How long the tenant keeps the faces its searches find nobody for, or `None`, the default,
    /// when it keeps none (its opt-in, `facegate tenant set --unknown-faces`). `NotFound` for no
    /// such tenant.
    fn unknown_faces_retention(&self, tenant_id: &str) -> Result<Option<std::time::Duration>>;
    /// Turns the opt-in on with `retention` (whole seconds), or off with `None`, which deletes
    /// every sighting and unknown person of the tenant in the same transaction. Returns what was
    /// deleted. `NotFound` for no such tenant.
    fn set_unknown_faces_retention(
        &self,
        tenant_id: &str,
        retention: Option<std::time::Duration>,
    ) -> Result<SightingPurge>;
    /// Deletes the tenant and everything stored under it (subjects, samples and their images,
    /// tags, bulk jobs and records, credentials, staged reindex outcomes), as `delete_subject`
    /// purges a subject; a shared gallery also tells the other processes to forget the tenant.
    /// `NotFound` if it does not exist.
    fn delete_tenant(&self, tenant_id: &str) -> Result<TenantPurge>;
}

/// The gallery: subjects, their face samples (image, box, template) and the templates the index
/// is built from.
pub trait GalleryStore: Send + Sync {
    /// Inserts a subject and optionally its first sample (image file, row and template) in one
    /// transaction. `Conflict` if the tenant already has the `customer_person_id`.
    fn create_subject(&self, subject: &Subject, first_sample: Option<&NewSample>) -> Result<()>;
    /// As `create_subject` with a first sample, plus the subject's tag labels, in the same
    /// transaction.
    fn create_tagged_subject(&self, subject: &Subject, first_sample: &NewSample, tags: &[String]) -> Result<()>;
    fn subject_by_id(&self, tenant_id: &str, subject_id: &str) -> Result<Option<Subject>>;
    fn subject_by_customer_id(&self, tenant_id: &str, customer_person_id: &str) -> Result<Option<Subject>>;
    /// Replaces the profile and `updated_at`, optionally adds a sample, and replaces the
    /// subject's tag labels when `tags` is given, in one transaction.
    fn update_subject(&self, subject: &Subject, new_sample: Option<&NewSample>, tags: Option<&[String]>) -> Result<()>;
    /// Samples of a subject, newest first.
    fn samples_of(&self, tenant_id: &str, subject_id: &str) -> Result<Vec<FaceSample>>;
    /// Replaces the sample with `sample.sample.id` (image, box, template), and the subject's tag
    /// labels when `tags` is given, in one transaction; `NotFound` if the subject has no such
    /// sample.
    fn replace_sample(&self, subject: &Subject, sample: &NewSample, tags: Option<&[String]>) -> Result<()>;
    /// Deletes one sample of a subject and its image file. `false` if it did not exist.
    fn delete_sample(&self, tenant_id: &str, subject_id: &str, sample_id: &str) -> Result<bool>;
    /// Deletes the subject, its samples and their image files. `false` if it did not exist.
    fn delete_subject(&self, tenant_id: &str, subject_id: &str) -> Result<bool>;
    /// Up to `limit` subjects of the tenant whose `customer_person_id` starts with `prefix` (all
    /// for ""), in byte order of that id, after the id `after` when given: a page of a listing.
    /// Each comes with its sample count and newest sample. Subjects without a
    /// `customer_person_id` (NEC's) are not listed.
    fn list_subjects(
        &self,
        tenant_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubjectSummary>>;
    /// Streams every stored template made by `model_id`, for building the index at start-up.
    fn for_each_template(&self, model_id: &str, visit: &mut dyn FnMut(Template)) -> Result<()>;
    /// As `for_each_template`, the templates of one tenant only.
    fn for_each_tenant_template(&self, tenant_id: &str, model_id: &str, visit: &mut dyn FnMut(Template)) -> Result<()> {
        self.for_each_template(model_id, &mut |template| {
            if template.tenant_id == tenant_id {
                visit(template);
            }
        })
    }
}

/// The faces a tenant's searches found nobody for, kept while it opts in (issue 29), and the
/// unknown people they are grouped into. An unknown person exists while it has a sighting: each
/// write that takes its last sighting away deletes it too.
pub trait UnknownFaceStore: Send + Sync {
    /// Keeps a sighting, and creates its unknown person first when `new_person`. In the same
    /// transaction, checks that the tenant still opts in: `Ok(false)`, keeping nothing, when it
    /// does not (it turned the setting off meanwhile). `NotFound("unknown person")` when it joins
    /// one that is gone (merged or deleted since it was chosen).
    fn keep_sighting(&self, sighting: &NewSighting, new_person: bool) -> Result<bool>;
    /// Streams the templates of every sighting made by `model_id` (of one tenant, or of all), as
    /// index templates: the subject is the unknown person, the sample the sighting.
    fn for_each_sighting_template(
        &self,
        tenant_id: Option<&str>,
        model_id: &str,
        visit: &mut dyn FnMut(Template),
    ) -> Result<()>;
    /// Up to `limit` unknown people of the tenant in id order, after `after`: a page.
    fn list_unknown_people(&self, tenant_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<UnknownPerson>>;
    fn unknown_person(&self, tenant_id: &str, unknown_person_id: &str) -> Result<Option<UnknownPerson>>;
    /// How many unknown people the tenant has.
    fn count_unknown_people(&self, tenant_id: &str) -> Result<u64>;
    /// The sightings of one unknown person, oldest first.
    fn sightings_of(&self, tenant_id: &str, unknown_person_id: &str) -> Result<Vec<Sighting>>;
    /// A sighting's crop and template, opened; `None` when there is no such sighting.
    fn sighting_face(&self, tenant_id: &str, sighting_id: &str) -> Result<Option<SightingFace>>;
    /// Moves every sighting of `from` to `into` and deletes `from`. Returns how many moved.
    /// `NotFound("unknown person")` when either is missing; `InvalidRequest` when they are one.
    fn merge_unknown_people(&self, tenant_id: &str, into: &str, from: &str) -> Result<u64>;
    /// Moves the given sightings of `from` to a new unknown person `new_person_id`.
    /// `NotFound("sighting")` when one of them is not `from`'s; `InvalidRequest` when they are
    /// none, or every one of `from`'s (nothing would be split).
    fn split_sightings(&self, tenant_id: &str, from: &str, sighting_ids: &[String], new_person_id: &str) -> Result<()>;
    /// Deletes an unknown person and its sightings; `None` when it did not exist.
    fn delete_unknown_person(&self, tenant_id: &str, unknown_person_id: &str) -> Result<Option<SightingPurge>>;
    /// In one transaction: creates `subject` with `samples` (made from the person's sightings),
    /// and deletes the unknown person and all its sightings. `NotFound("unknown person")` when it
    /// is gone, `Conflict` when the tenant has the subject's `customer_person_id`.
    fn promote_unknown_person(
        &self,
        tenant_id: &str,
        unknown_person_id: &str,
        subject: &Subject,
        samples: &[NewSample],
    ) -> Result<()>;
    /// Deletes, for every tenant, the sightings older than its retention at `now_unix_ms`, and
    /// the unknown people left with none. Returns what went, per tenant id, for the tenants that
    /// lost some.
    fn purge_expired_sightings(&self, now_unix_ms: i64) -> Result<Vec<(String, SightingPurge)>>;
}

/// A tenant's tags, and the tag labels its subjects carry.
pub trait TagStore: Send + Sync {
    /// Creates a tag; `Conflict` if the tenant has it, `InvalidRequest` past `max_tags`.
    fn create_tag(&self, tenant_id: &str, name: &str, max_tags: usize) -> Result<()>;
    /// Renames a tag; `NotFound` if missing, `Conflict` if the new name exists.
    fn rename_tag(&self, tenant_id: &str, old_name: &str, new_name: &str) -> Result<()>;
    /// Deletes a tag; `false` if it did not exist. Subjects and events keep their labels.
    fn delete_tag(&self, tenant_id: &str, name: &str) -> Result<bool>;
    /// Tag names in creation order.
    fn list_tags(&self, tenant_id: &str) -> Result<Vec<String>>;
    /// Replaces the tag labels of a subject.
    fn set_subject_tags(&self, tenant_id: &str, subject_id: &str, tags: &[String]) -> Result<()>;
    fn subject_tags(&self, tenant_id: &str, subject_id: &str) -> Result<Vec<String>>;
    /// Streams each tagged subject's tags as `(tenant_id, subject_id, tags)`, for the index at
    /// start-up.
    fn for_each_subject_tags(&self, visit: &mut dyn FnMut(&str, &str, Vec<String>)) -> Result<()>;
}

/// Bulk registration jobs and their records.
pub trait BulkJobStore: Send + Sync {
    /// Stores a new bulk job and all its records in one transaction.
    fn create_bulk_job(&self, job: &BulkJob, records: &[BulkRecord]) -> Result<()>;
    /// The job, if it exists and belongs to the tenant.
    fn bulk_job(&self, tenant_id: &str, job_id: &str) -> Result<Option<BulkJob>>;
    /// Up to `limit` records of a job with `seq` after `after` (from the start when `None`).
    fn bulk_records(&self, job_id: &str, after: Option<u64>, limit: usize) -> Result<Vec<BulkRecord>>;
    /// Records still `New`: for every tenant that has some, up to `per_tenant` of them, oldest
    /// job first and in request order within a job. Tenants come in id order.
    fn pending_bulk_records(&self, per_tenant: usize) -> Result<Vec<PendingRecord>>;
    /// Gives up this process's hold on the records [`Self::pending_bulk_records`] returned it and
    /// it did not finish, so that another process takes them at once rather than when the hold
    /// runs out. Nothing to do for a store that no other process shares.
    fn release_bulk_records(&self) -> Result<()> {
        Ok(())
    }
    /// How many records of the tenant's jobs are still `New`.
    fn queued_bulk_records(&self, tenant_id: &str) -> Result<u64>;
    /// The tenant's newest `limit` jobs, newest first, each with its records counted.
    fn list_bulk_jobs(&self, tenant_id: &str, limit: usize) -> Result<Vec<BulkJobSummary>>;
    /// Saves a record's progress (attempts, status, outcome).
    fn save_bulk_record(&self, job_id: &str, record: &BulkRecord) -> Result<()>;
    /// Creates the subject with its first sample and tags and saves the (processed) record, in
    /// one transaction, so that a crash can never register a file twice or lose a registration.
    fn register_bulk_record(
        &self,
        subject: &Subject,
        sample: &NewSample,
        tags: &[String],
        job_id: &str,
        record: &BulkRecord,
    ) -> Result<()>;
}

/// Re-embedding the stored faces with another model (`facegate reindex`). Each sample's outcome
/// is staged under the target model id, in batches, without touching the live templates; once
/// every sample has an outcome, one transaction swaps the staged templates in. A run cut short
/// therefore changes nothing a search sees, and the next run skips what is staged.
pub trait ReindexStore: Send + Sync {
    /// The stored templates made by other models than `model_id`, per tenant.
    fn stale_templates(&self, model_id: &str) -> Result<StaleTemplates>;
    /// Up to `limit` samples of the tenant whose template another model than `model_id` made and
    /// that have no outcome staged for it, in sample id order, after the id `after`.
    fn samples_to_reindex(
        &self,
        tenant_id: &str,
        model_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FaceSample>>;
    /// The stored image of a sample. `Err` only when the store itself fails (the database, the
    /// disk), which a retry may cure; an image that is gone or damaged is an answer.
    fn sample_image(&self, tenant_id: &str, sample_id: &str) -> Result<StoredImage>;
    /// Stages outcomes for `model_id` in one transaction, replacing any staged before for the
    /// same samples. A sample that is gone meanwhile is left out.
    fn stage_reindexed(&self, model_id: &str, staged: &[StagedSample]) -> Result<()>;
    /// What is staged for `model_id`, per tenant id.
    fn staged_reindex(&self, model_id: &str) -> Result<Vec<(String, ReindexTally)>>;
    /// In one transaction: gives every sample with a staged template for `model_id` that
    /// template (with its box and model id), counts what was staged per tenant id, and empties the
    /// staging. Samples that failed keep their old template. `Conflict`, changing nothing, while
    /// a sample of another model has no outcome staged.
    fn swap_reindexed(&self, model_id: &str) -> Result<Vec<(String, ReindexTally)>>;
}

/// In-memory vector search, partitioned by tenant.
pub trait Index: Send + Sync + 'static {
    fn insert(&self, template: Template);
    fn remove_subject(&self, tenant_id: &str, subject_id: &str);
    /// The best sample of each subject, by cosine similarity, highest first, at most `limit`.
    fn search(&self, tenant_id: &str, query: &[f32], limit: usize) -> Vec<SubjectHit>;
    /// As `search`, over the subjects holding at least one of `tags` (all subjects when `tags`
    /// is empty).
    fn search_tagged(&self, tenant_id: &str, query: &[f32], limit: usize, tags: &[String]) -> Vec<SubjectHit>;
    /// Replaces a subject's tags; may come before the subject's first template.
    fn set_subject_tags(&self, tenant_id: &str, subject_id: &str, tags: &[String]);
    fn rename_tag(&self, tenant_id: &str, old_name: &str, new_name: &str);
    /// The best sample of one subject, if it has any.
    fn best_of_subject(&self, tenant_id: &str, subject_id: &str, query: &[f32]) -> Option<SubjectHit>;
    /// Every sample of one subject with its similarity, highest first.
    fn subject_samples(&self, tenant_id: &str, subject_id: &str, query: &[f32]) -> Vec<SubjectHit>;
    fn remove_sample(&self, tenant_id: &str, sample_id: &str);
    /// Number of templates held for a tenant.
    fn len(&self, tenant_id: &str) -> usize;
    /// Forgets every template and tag of every tenant, before the index is loaded anew.
    fn clear(&self);
    /// Forgets every template and tag of one tenant (deleted).
    fn remove_tenant(&self, tenant_id: &str);
    /// A load of the whole gallery starts (`true`) or ends (`false`): an index that does work in
    /// the background as tenants grow may hold it until the load is over, so that the load,
    /// which a starting node waits for, has the cores to itself.
    fn loading(&self, loading: bool) {
        let _ = loading;
    }
}
