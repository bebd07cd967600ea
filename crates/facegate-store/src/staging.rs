//! What both backends' reindex staging (`reindex_staging`) share: an outcome's stored form, a
//! stored image opened for re-embedding, and staged rows counted per tenant.

use std::collections::BTreeMap;

use facegate_core::{ReindexOutcome, ReindexTally, StagedSample, StoredImage};
use sha2::{Digest, Sha256};

use crate::crypto::DataKey;
use crate::error::Result;
use crate::templates::encode_template;

/// The models of stored templates other than `$1`, in order: a loose index scan of
/// `face_samples_model`, one seek per model, where `SELECT DISTINCT` reads every entry of the
/// index (8 s of a 10M-template start-up on SQLite). Both backends bind `$1` as the first
/// parameter.
pub(crate) const OTHER_MODELS: &str = "WITH RECURSIVE models(id) AS ( \
       SELECT MIN(model_id) FROM face_samples \
       UNION ALL \
       SELECT (SELECT MIN(model_id) FROM face_samples WHERE model_id > models.id) FROM models WHERE models.id IS NOT NULL) \
     SELECT id FROM models WHERE id IS NOT NULL AND id <> $1 ORDER BY id";

/// One `reindex_staging` row's values: a box and sealed template, or a failure's name.
pub(crate) struct StagedRow {
    pub bbox: Option<[f32; 4]>,
    pub detector_score: Option<f32>,
    pub embedding: Option<Vec<u8>>,
    pub encoding: Option<&'static str>,
    pub failure: Option<&'static str>,
}

impl StagedRow {
    /// The row for `staged`, its template stored as `face_samples` stores one (f16, sealed under
    /// `key` with the subject id as associated data), so that the swap copies it as it is.
    pub fn of(staged: &StagedSample, key: Option<&DataKey>) -> Result<StagedRow> {
        Ok(match &staged.outcome {
            ReindexOutcome::Reembedded(face) => {
                let (embedding, encoding) = encode_template(&face.embedding, &staged.subject_id, key)?;
                let b = face.bbox;
                StagedRow {
                    bbox: Some([b.left, b.top, b.right, b.bottom]),
                    detector_score: Some(face.detector_score),
                    embedding: Some(embedding),
                    encoding: Some(encoding),
                    failure: None,
                }
            }
            ReindexOutcome::Failed(failure) => StagedRow {
                bbox: None,
                detector_score: None,
                embedding: None,
                encoding: None,
                failure: Some(failure.name()),
            },
        })
    }
}

/// A stored image as the reindex needs it: checked against the checksum recorded with it, and
/// opened when the gallery is encrypted. A damaged image is an answer, not an error.
pub(crate) fn open_image(stored: Vec<u8>, sha256: &str, subject_id: &str, key: Option<&DataKey>) -> StoredImage {
    if !hex::encode(Sha256::digest(&stored)).eq_ignore_ascii_case(sha256) {
        return StoredImage::Unreadable("the stored image does not match its recorded SHA-256".into());
    }
    match key {
        Some(key) => match key.open(&stored, subject_id.as_bytes()) {
            Ok(plain) => StoredImage::Bytes(plain),
            Err(e) => StoredImage::Unreadable(e.to_string()),
        },
        None => StoredImage::Bytes(stored),
    }
}

/// Staged rows counted per tenant: `(tenant id, failure or none, rows)` in, tallies out.
pub(crate) fn tallies(rows: impl IntoIterator<Item = (String, Option<String>, u64)>) -> Vec<(String, ReindexTally)> {
    let mut out: BTreeMap<String, ReindexTally> = BTreeMap::new();
    for (tenant_id, failure, count) in rows {
        let tally = out.entry(tenant_id).or_default();
        match failure {
            None => tally.reembedded += count,
            Some(name) => *tally.failed.entry(name).or_default() += count,
        }
    }
    out.into_iter().collect()
}
