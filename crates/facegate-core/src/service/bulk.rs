//! Bulk registration: creating jobs, paging their progress, and the background runner that
//! registers their files through the same face checks as a single NEC registration.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::audit::{self, audited};
use super::state::{blocking, template_of, FaceService, DEFAULT_MAX_IMAGE_BYTES, REGISTRATION_FACES_EXAMINED};
use super::text::{nfc, now_rfc3339};
use crate::error::{Error, Result};
use crate::jobs::{
    check_filename, BulkJob, BulkJobSummary, BulkPage, BulkRecord, BulkRegistration, ImageSource, PendingRecord,
    RecordStatus, RegisterStatus, SourceError, BULK_PAGE_SIZE, MAX_BULK_REGISTRATIONS,
};
use crate::model::{AnalyzeOptions, ImageAnalysis, ImageUpload, Profile, Subject, Tenant};

/// How the background runner works through pending records.
#[derive(Debug, Clone)]
pub struct BulkConfig {
    /// Files processed at once; the inference pool still gives live requests priority.
    pub concurrency: usize,
    /// Tries per file when reading it fails in a way worth retrying.
    pub max_attempts: u32,
    /// Wait before the second try; each later try waits four times longer.
    pub retry_base: Duration,
    /// Largest file read from the source: the same limit as an uploaded image.
    pub max_file_bytes: u64,
    /// Longest one read from the source may take before it counts as a read error.
    pub read_timeout: Duration,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            max_attempts: 3,
            retry_base: Duration::from_millis(200),
            max_file_bytes: DEFAULT_MAX_IMAGE_BYTES as u64,
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// Most jobs one listing of a tenant's jobs shows, newest first. 50 covers any screen of
/// progress bars, and each listed job costs a count over its records.
pub const MAX_JOBS_LISTED: usize = 50;

/// Pending records read per tenant when the runner refills its queue, beyond those in progress.
const REFILL_PER_TENANT: usize = 16;
/// How long an idle runner sleeps when nobody wakes it (a job written by another process).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Why one try at a record did not register it.
enum Attempt {
    /// Final: the reason goes into the record.
    Fail(String),
    /// Worth another try.
    Retry(String),
}

impl FaceService {
    /// Stores a job with one `New` record per registration and wakes the runner. Per-file
    /// problems (bad names, missing files, unknown tags) are not checked here: they become
    /// per-record failures, as NEC reports them.
    pub async fn create_bulk_job(&self, tenant: &Tenant, registrations: Vec<BulkRegistration>) -> Result<String> {
        let max_queued_per_tenant = self.config.max_bulk_queued_per_tenant;
        let files = registrations.len();
        audited(tenant, "create_bulk_job", format!("files={files}"), |batch| format!("batch={batch}"), async {
            if registrations.is_empty() {
                return Err(Error::InvalidRequest("registrations must hold at least one entry".into()));
            }
            if registrations.len() > MAX_BULK_REGISTRATIONS {
                return Err(Error::InvalidRequest(format!(
                    "a job holds at most {MAX_BULK_REGISTRATIONS} registrations, not {}",
                    registrations.len()
                )));
            }
            let mut seen = HashSet::with_capacity(registrations.len());
            if let Some((i, dup)) = registrations.iter().enumerate().find(|(_, r)| !seen.insert(r.filename.as_str())) {
                // Two records of one file would register the same face as two subjects.
                return Err(Error::InvalidRequest(format!(
                    "registrations[{i}].filename {:?} appears more than once in the job",
                    dup.filename
                )));
            }
            let job = BulkJob {
                id: uuid::Uuid::new_v4().to_string(),
                tenant_id: tenant.id.clone(),
                created_at: now_rfc3339(),
            };
            let records: Vec<BulkRecord> = registrations
                .into_iter()
                .enumerate()
                .map(|(seq, r)| BulkRecord {
                    seq: seq as u64,
                    id: uuid::Uuid::new_v4().to_string(),
                    filename: r.filename,
                    // Compared with the tenant's tags, which are stored in NFC, when the record runs.
                    tags: r.tags.iter().map(|t| nfc(t)).collect(),
                    subject_id: uuid::Uuid::new_v4().to_string(),
                    attempts: 0,
                    status: RecordStatus::New,
                    register_status: None,
                    reason: String::new(),
                    event_id: None,
                    attributes: None,
                })
                .collect();
            let store = self.store.clone();
            let stored = job.clone();
            let tenant_id = tenant.id.clone();
            blocking(move || {
                // Checked and stored by the one writer of this process; a race between two jobs of
                // one tenant can overshoot by at most one job.
                let queued = store.queued_bulk_records(&tenant_id)?;
                if queued + records.len() as u64 > max_queued_per_tenant {
                    return Err(Error::InvalidRequest(format!(
                        "{queued} registrations of this application are still waiting; at most \
                         {max_queued_per_tenant} may wait, so retry once some are processed"
                    )));
                }
                store.create_bulk_job(&stored, &records)
            })
            .await?;
            self.bulk_wakeup.notify_one();
            Ok(job.id)
        })
        .await
    }

    /// The tenant's newest jobs with their progress, at most `limit` (capped at
    /// [`MAX_JOBS_LISTED`]).
    pub async fn list_bulk_jobs(&self, tenant: &Tenant, limit: usize) -> Result<Vec<BulkJobSummary>> {
        let limit = limit.clamp(1, MAX_JOBS_LISTED);
        let tenant_id = tenant.id.clone();
        self.with_store(move |store| store.list_bulk_jobs(&tenant_id, limit)).await
    }

    /// One page of a job's records. `paging_id` is the previous page's `last_evaluated_key`.
    pub async fn bulk_job_page(&self, tenant: &Tenant, batch_id: &str, paging_id: Option<&str>) -> Result<BulkPage> {
        let after = match paging_id.filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => Some(
                p.parse::<u64>()
                    .map_err(|_| Error::InvalidRequest(format!("page key '{p}' is not one this job gave out")))?,
            ),
        };
        let store = self.store.clone();
        let (tenant_id, batch) = (tenant.id.clone(), batch_id.to_owned());
        let mut records = blocking(move || {
            store.bulk_job(&tenant_id, &batch)?.ok_or(Error::NotFound("batch"))?;
            store.bulk_records(&batch, after, BULK_PAGE_SIZE + 1)
        })
        .await?;
        let more = records.len() > BULK_PAGE_SIZE;
        records.truncate(BULK_PAGE_SIZE);
        let last_evaluated_key = match records.last() {
            Some(last) if more => last.seq.to_string(),
            _ => String::new(),
        };
        Ok(BulkPage { batch_id: batch_id.to_owned(), records, last_evaluated_key })
    }

    /// Works through pending records, including those a previous run left unfinished, until
    /// `stop` turns true; then it starts no new record and returns once those in progress are
    /// saved, so nothing is half-done when the caller moves on.
    ///
    /// Tenants take turns: each free slot goes to the next tenant (in id order, wrapping) that
    /// has a record waiting, so one tenant's large job cannot hold back another's small one. A
    /// slot is given as soon as one frees, so a slow record never holds up the others.
    pub async fn run_bulk_jobs(
        self: Arc<Self>,
        source: Arc<dyn ImageSource>,
        config: BulkConfig,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let in_progress: Arc<Mutex<HashSet<(String, u64)>>> = Arc::default();
        // Records finished since the pending ones were last read: a read that began before one
        // was saved still lists it as new, and it must not be registered a second time.
        let finished: Arc<Mutex<HashSet<(String, u64)>>> = Arc::default();
        let mut queue = FairQueue::default();
        let mut running = JoinSet::new();
        let mut refill = true;
        loop {
            if *stop.borrow() {
                break;
            }
            if refill || queue.is_empty() {
                refill = false;
                let store = self.store.clone();
                let per_tenant = REFILL_PER_TENANT + config.concurrency;
                finished.lock().clear();
                match blocking(move || store.pending_bulk_records(per_tenant)).await {
                    Ok(pending) => {
                        let (busy, done) = (in_progress.lock(), finished.lock());
                        queue.replace(pending.into_iter().filter(|p| {
                            let key = (p.job_id.clone(), p.record.seq);
                            !busy.contains(&key) && !done.contains(&key)
                        }));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading pending bulk records failed; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            if queue.is_empty() {
                tokio::select! {
                    () = self.bulk_wakeup.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.changed() => {}
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                }
                continue;
            }
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
                // A new job: read the queue again so that its tenant gets its turn.
                () = self.bulk_wakeup.notified() => {
                    refill = true;
                    continue;
                }
                _ = stop.changed() => continue,
                Some(_) = running.join_next(), if !running.is_empty() => continue,
            };
            let Some(pending) = queue.next() else { continue };
            let key = (pending.job_id.clone(), pending.record.seq);
            in_progress.lock().insert(key.clone());
            let (service, source, config, in_progress, finished) =
                (self.clone(), source.clone(), config.clone(), in_progress.clone(), finished.clone());
            running.spawn(async move {
                let _slot = slot;
                service.process_record(&*source, &config, pending).await;
                // Finished before it stops being in progress, so a refill filtering between
                // the two still sees it.
                finished.lock().insert(key.clone());
                in_progress.lock().remove(&key);
            });
        }
        while running.join_next().await.is_some() {}
        // On a shared gallery this process holds the records it read last, finished or not; a
        // node restarted in its place is another process, and would wait out the hold.
        let store = self.store.clone();
        if let Err(e) = blocking(move || store.release_bulk_records()).await {
            tracing::warn!(error = %e, "releasing the unfinished bulk records failed; they wait for their lease");
        }
    }

    /// Registers one record's file, retrying transient failures, and saves the outcome.
    async fn process_record(&self, source: &dyn ImageSource, config: &BulkConfig, pending: PendingRecord) {
        let PendingRecord { tenant, job_id, mut record } = pending;
        let failure = loop {
            record.attempts += 1;
            match self.register_record(source, config, &tenant, &job_id, &record).await {
                Ok(()) => {
                    tracing::debug!(tenant = %tenant.name, batch = %job_id, file = ?record.filename,
                        subject = %record.subject_id, "bulk register: registered");
                    let input = format!("batch={job_id} file={}", record.filename);
                    audit::record(&tenant, "bulk_register", &input, &format!("subject={}", record.subject_id), "ok");
                    return;
                }
                Err(Attempt::Retry(why)) if record.attempts < config.max_attempts => {
                    tracing::warn!(tenant = %tenant.name, batch = %job_id, file = ?record.filename,
                        attempt = record.attempts, reason = ?why, "bulk register: retrying");
                    if let Err(e) = self.save_record(&job_id, &record).await {
                        tracing::error!(error = %e, "saving bulk record attempts failed");
                    }
                    let backoff = config.retry_base * 4u32.saturating_pow(record.attempts - 1);
                    tokio::time::sleep(backoff).await;
                }
                Err(Attempt::Retry(why) | Attempt::Fail(why)) => break why,
            }
        };
        tracing::info!(tenant = %tenant.name, batch = %job_id, file = ?record.filename, reason = ?failure,
            "bulk register: failed");
        let input = format!("batch={job_id} file={}", record.filename);
        audit::record(&tenant, "bulk_register", &input, &format!("reason={failure}"), "failed");
        record.status = RecordStatus::Processed;
        record.register_status = Some(RegisterStatus::Failed);
        record.reason = failure;
        match self.save_record(&job_id, &record).await {
            Ok(()) => count_bulk_record(RegisterStatus::Failed),
            // The record stays New and is tried again on the next round or start.
            Err(e) => {
                tracing::error!(batch = %job_id, file = ?record.filename, error = %e, "saving bulk record failed")
            }
        }
    }

    async fn save_record(&self, job_id: &str, record: &BulkRecord) -> Result<()> {
        let (store, job_id, record) = (self.store.clone(), job_id.to_owned(), record.clone());
        blocking(move || store.save_bulk_record(&job_id, &record)).await
    }

    /// One try: read, check, register. On success the subject and the processed record are
    /// saved together.
    async fn register_record(
        &self,
        source: &dyn ImageSource,
        config: &BulkConfig,
        tenant: &Tenant,
        job_id: &str,
        record: &BulkRecord,
    ) -> Result<(), Attempt> {
        check_filename(&record.filename).map_err(|e| Attempt::Fail(e.to_string()))?;
        if !record.tags.is_empty() {
            let known = self.list_tags(tenant).await.map_err(|e| Attempt::Retry(e.to_string()))?;
            if let Some(unknown) = record.tags.iter().find(|t| !known.contains(t)) {
                return Err(Attempt::Fail(format!("unknown tag '{unknown}'")));
            }
        }
        let fetched =
            tokio::time::timeout(config.read_timeout, source.fetch(tenant, &record.filename, config.max_file_bytes))
                .await
                .unwrap_or_else(|_| {
                    Err(SourceError::Transient(format!("no answer within {} s", config.read_timeout.as_secs())))
                });
        let bytes = fetched.map_err(|e| {
            // The record's reason is generic; what the operator needs goes to the log only.
            if let Some(detail) = e.detail() {
                tracing::warn!(tenant = %tenant.name, batch = %job_id, file = ?record.filename, detail = ?detail,
                    "bulk register: reading the file failed");
            }
            match e {
                SourceError::Transient(_) => Attempt::Retry(e.to_string()),
                other => Attempt::Fail(other.to_string()),
            }
        })?;
        let engine = self.engine.clone();
        let image = bytes.clone();
        let faces = self
            .pool
            .run_background(move || {
                engine.analyze(&image, AnalyzeOptions::with_attributes(REGISTRATION_FACES_EXAMINED))
            })
            .await
            .and_then(ImageAnalysis::into_attributed)
            .map_err(failure_reason)?;
        let face = self.of_quality(faces).map_err(failure_reason)?;

        let now = now_rfc3339();
        let subject = Subject {
            id: record.subject_id.clone(),
            tenant_id: tenant.id.clone(),
            customer_person_id: None,
            profile: Profile::default(),
            created_at: now.clone(),
            updated_at: now,
        };
        let file_name = record.filename.rsplit('/').next().unwrap_or("bulk").to_owned();
        let new_sample = self.new_sample(&subject, &face.face, ImageUpload { file_name, bytes });
        let template = template_of(&subject, &new_sample);
        let mut done = record.clone();
        done.status = RecordStatus::Processed;
        done.register_status = Some(RegisterStatus::Success);
        done.event_id = Some(new_sample.sample.id.clone());
        done.attributes = Some(face.attributes);
        let (store, job_id) = (self.store.clone(), job_id.to_owned());
        let tags = done.tags.clone();
        let _subject_lock = self.subject_locks.lock(&tenant.id, &record.subject_id).await;
        blocking(move || store.register_bulk_record(&subject, &new_sample, &done.tags, &job_id, &done)).await.map_err(
            |e| match e {
                Error::StorageFull => Attempt::Fail(e.to_string()),
                other => Attempt::Retry(other.to_string()),
            },
        )?;
        count_bulk_record(RegisterStatus::Success);
        if !tags.is_empty() {
            self.index.set_subject_tags(&template.tenant_id, &template.subject_id, &tags);
        }
        self.index.insert(template);
        Ok(())
    }
}

/// Counts a record whose outcome is saved.
fn count_bulk_record(status: RegisterStatus) {
    metrics::counter!(crate::telemetry::BULK_RECORDS, "status" => RegisterStatus::name(Some(status))).increment(1);
}

/// Pending records by tenant, handed out one tenant at a time in turn.
#[derive(Default)]
struct FairQueue {
    by_tenant: BTreeMap<String, VecDeque<PendingRecord>>,
    /// The tenant served last; the next turn goes to the one after it.
    last: Option<String>,
}

impl FairQueue {
    fn is_empty(&self) -> bool {
        self.by_tenant.is_empty()
    }

    /// Replaces the queue with a fresh read of the store; the turn order carries on.
    fn replace(&mut self, pending: impl Iterator<Item = PendingRecord>) {
        self.by_tenant.clear();
        for p in pending {
            self.by_tenant.entry(p.tenant.id.clone()).or_default().push_back(p);
        }
    }

    /// The next record of the next tenant in turn.
    fn next(&mut self) -> Option<PendingRecord> {
        use std::ops::Bound::{Excluded, Unbounded};
        let after = match &self.last {
            Some(last) => self.by_tenant.range::<String, _>((Excluded(last), Unbounded)).next(),
            None => None,
        };
        let tenant = after.or_else(|| self.by_tenant.iter().next()).map(|(t, _)| t.clone())?;
        let records = self.by_tenant.get_mut(&tenant)?;
        let next = records.pop_front();
        if records.is_empty() {
            self.by_tenant.remove(&tenant);
        }
        self.last = Some(tenant);
        next
    }
}

/// The record's `reason` for an error of the face checks; `Retry` for the server's own trouble.
fn failure_reason(e: Error) -> Attempt {
    match e {
        Error::NoFace => Attempt::Fail("NoFace".into()),
        Error::MultipleFaces => Attempt::Fail("MultipleFaces".into()),
        Error::PoorQuality(why) => Attempt::Fail(format!("PoorQuality: {why}")),
        Error::UnsupportedImage(why) | Error::InvalidImage(why) => Attempt::Fail(format!("not an image: {why}")),
        Error::TooLarge(why) => Attempt::Fail(format!("too large: {why}")),
        other => Attempt::Retry(other.to_string()),
    }
}
