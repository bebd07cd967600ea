//! Bulk registration jobs: many files registered as new subjects in the background, one record
//! per file, durable in the store so that a restarted server carries on where it stopped.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::model::{FaceAttributes, Tenant};

/// Records in one page of a job's progress (NEC: "the maximum page size (1000)").
pub const BULK_PAGE_SIZE: usize = 1000;
/// Registrations one job may hold.
pub const MAX_BULK_REGISTRATIONS: usize = 100_000;
/// Longest accepted file name, in bytes.
pub const MAX_FILENAME_LEN: usize = 1024;

/// One file to register, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkRegistration {
    pub filename: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkJob {
    pub id: String,
    pub tenant_id: String,
    pub created_at: String,
}

/// A job with its records counted, as a listing of a tenant's jobs shows its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkJobSummary {
    pub job: BulkJob,
    /// Records (files) in the job.
    pub records: u64,
    /// Records processed, whatever their outcome.
    pub processed: u64,
    /// Processed records that registered a subject.
    pub succeeded: u64,
    /// Processed records that did not.
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStatus {
    New,
    Processed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterStatus {
    Success,
    Failed,
}

impl RegisterStatus {
    /// The name stored and shown for an outcome ("" while there is none): NEC's own words.
    pub fn name(status: Option<RegisterStatus>) -> &'static str {
        match status {
            None => "",
            Some(RegisterStatus::Success) => "Success",
            Some(RegisterStatus::Failed) => "Failed",
        }
    }

    /// The outcome a stored name stands for; `None` for "" (or anything else).
    pub fn from_name(name: &str) -> Option<RegisterStatus> {
        match name {
            "Success" => Some(RegisterStatus::Success),
            "Failed" => Some(RegisterStatus::Failed),
            _ => None,
        }
    }
}

/// The state of one file of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkRecord {
    /// Position in the request, from 0: the paging key.
    pub seq: u64,
    /// The operation id (not the subject's).
    pub id: String,
    pub filename: String,
    pub tags: Vec<String>,
    /// Chosen when the job is created, so that a registration interrupted by a crash is found
    /// again (the subject exists) instead of being made twice.
    pub subject_id: String,
    pub attempts: u32,
    pub status: RecordStatus,
    pub register_status: Option<RegisterStatus>,
    pub reason: String,
    pub event_id: Option<String>,
    /// The registered face's attributes; `None` until it is registered.
    pub attributes: Option<FaceAttributes>,
}

/// A record waiting to be processed, with what the runner needs to process it.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    pub tenant: Tenant,
    pub job_id: String,
    pub record: BulkRecord,
}

/// One page of a job's records; `last_evaluated_key` is empty on the last page.
#[derive(Debug, Clone)]
pub struct BulkPage {
    pub batch_id: String,
    pub records: Vec<BulkRecord>,
    pub last_evaluated_key: String,
}

/// Why a file could not be read from a tenant's image source. What is displayed becomes the
/// record's `reason`, which the tenant reads: it never holds a server path or an I/O message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("not found")]
    NotFound,
    /// Not a plain relative name inside the tenant's area (`../`, absolute paths); the reason
    /// names the rule broken.
    #[error("invalid filename: {0}")]
    InvalidName(String),
    /// A directory, a symbolic link, a pipe or a device.
    #[error("not a regular file")]
    NotRegularFile,
    #[error("file too large: {size} bytes, the limit is {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// Worth trying again (I/O error, S3 timeout). The detail is for the operator's log.
    #[error("read error")]
    Transient(String),
}

impl SourceError {
    /// What the operator's log should say beyond the generic reason.
    pub fn detail(&self) -> Option<&str> {
        match self {
            SourceError::Transient(detail) => Some(detail),
            _ => None,
        }
    }
}

pub type SourceFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, SourceError>> + Send + 'a>>;

/// Where bulk registration reads its files: the stand-in for NEC's S3 bucket, one area per
/// tenant. Async because object stores are.
pub trait ImageSource: Send + Sync + 'static {
    /// The bytes of `filename` in `tenant`'s area, at most `max_bytes` long.
    fn fetch<'a>(&'a self, tenant: &'a Tenant, filename: &'a str, max_bytes: u64) -> SourceFuture<'a>;
}

/// Refuses names that could leave the tenant's area or are not plain relative paths.
pub fn check_filename(filename: &str) -> Result<(), SourceError> {
    let bad = |why: &str| Err(SourceError::InvalidName(why.to_owned()));
    if filename.is_empty() {
        return bad("empty");
    }
    if filename.len() > MAX_FILENAME_LEN {
        return bad("longer than 1024 bytes");
    }
    if filename.starts_with('/') || filename.contains('\\') {
        return bad("must be a relative path with '/' separators");
    }
    if filename.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    if filename.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return bad("must not contain empty, '.' or '..' segments");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_odd_names_are_refused() {
        for ok in ["1.jpg", "people/ann/1.jpg", "a b.JPG", "ünï.png"] {
            assert_eq!(check_filename(ok), Ok(()), "{ok}");
        }
        for bad in ["", "../x.jpg", "a/../../x.jpg", "/etc/passwd", "a//b.jpg", "./a.jpg", "a\\b.jpg", "a\n.jpg", "x/"]
        {
            assert!(matches!(check_filename(bad), Err(SourceError::InvalidName(_))), "{bad:?}");
        }
        assert!(check_filename(&"a".repeat(2000)).is_err());
    }
}
