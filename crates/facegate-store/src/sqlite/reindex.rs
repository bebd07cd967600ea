//! Reindex staging in SQLite (`reindex_staging`, schema v8): outcomes staged in batches, swapped
//! into `face_samples` in one transaction.

use facegate_core::{FaceSample, ReindexTally, StagedSample, StaleTemplates, StaleTenant, StoredImage};
use rusqlite::{params, OptionalExtension};

use super::gallery::{sample_from_row, SAMPLE_COLUMNS};
use super::{scrub_wal, SqliteStore};
use crate::error::{to_core, Result, StoreError};
use crate::staging::{open_image, tallies, StagedRow, OTHER_MODELS};

/// Counts of `reindex_staging` per tenant and failure (none: re-embedded).
const STAGED_COUNTS: &str =
    "SELECT tenant_id, failure, COUNT(*) FROM reindex_staging WHERE model_id = ?1 GROUP BY tenant_id, failure";

impl facegate_core::ReindexStore for SqliteStore {
    fn stale_templates(&self, model_id: &str) -> facegate_core::Result<StaleTemplates> {
        to_core(|| {
            let conn = self.reader()?;
            // OTHER_MODELS answers this from the index alone; the per-subject count below reads
            // every sample, and runs only when there is something stale.
            let models: Vec<String> = conn
                .prepare(OTHER_MODELS)?
                .query_map([model_id], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if models.is_empty() {
                return Ok(StaleTemplates::default());
            }
            let mut stmt = conn.prepare(
                "SELECT t.id, t.name, SUM(x.stale), SUM(CASE WHEN x.current = 0 THEN 1 ELSE 0 END) \
                 FROM (SELECT tenant_id, subject_id, SUM(model_id = ?1) AS current, SUM(model_id <> ?1) AS stale \
                       FROM face_samples GROUP BY tenant_id, subject_id) x \
                 JOIN tenants t ON t.id = x.tenant_id \
                 GROUP BY t.id, t.name HAVING SUM(x.stale) > 0 ORDER BY t.name",
            )?;
            let tenants = stmt
                .query_map([model_id], |row| {
                    Ok(StaleTenant {
                        tenant_id: row.get(0)?,
                        tenant_name: row.get(1)?,
                        stale_samples: row.get::<_, i64>(2)?.max(0) as u64,
                        unsearchable_subjects: row.get::<_, i64>(3)?.max(0) as u64,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(StaleTemplates { models, tenants })
        })
    }

    fn samples_to_reindex(
        &self,
        tenant_id: &str,
        model_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> facegate_core::Result<Vec<FaceSample>> {
        to_core(|| {
            let conn = self.reader()?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SAMPLE_COLUMNS} FROM face_samples s \
                 WHERE s.tenant_id = ?1 AND s.model_id <> ?2 AND s.id > ?3 \
                   AND NOT EXISTS (SELECT 1 FROM reindex_staging r WHERE r.sample_id = s.id AND r.model_id = ?2) \
                 ORDER BY s.id LIMIT ?4"
            ))?;
            let samples = stmt
                .query_map(params![tenant_id, model_id, after.unwrap_or(""), limit], sample_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(samples)
        })
    }

    fn sample_image(&self, tenant_id: &str, sample_id: &str) -> facegate_core::Result<StoredImage> {
        to_core(|| {
            let row: Option<(String, Option<String>, Option<String>)> = self
                .reader()?
                .prepare_cached(
                    "SELECT s.subject_id, b.path, b.sha256 FROM face_samples s \
                     LEFT JOIN image_blobs b ON b.sample_id = s.id WHERE s.tenant_id = ?1 AND s.id = ?2",
                )?
                .query_row([tenant_id, sample_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional()?;
            let Some((subject_id, Some(path), Some(sha256))) = row else { return Ok(StoredImage::Missing) };
            let stored = match self.blobs.read(&path) {
                Ok(bytes) => bytes,
                Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(StoredImage::Missing)
                }
                Err(e) => return Err(e),
            };
            Ok(open_image(stored, &sha256, &subject_id, self.key.as_ref()))
        })
    }

    fn stage_reindexed(&self, model_id: &str, staged: &[StagedSample]) -> facegate_core::Result<()> {
        to_core(|| {
            let rows = staged.iter().map(|s| StagedRow::of(s, self.key.as_ref())).collect::<Result<Vec<_>>>()?;
            self.write(|tx| {
                // From the sample's own row, so that a sample deleted meanwhile stages nothing and a
                // template is never staged under another subject than the one it is sealed for.
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO reindex_staging (sample_id, model_id, tenant_id, bbox_left, bbox_top, \
                         bbox_right, bbox_bottom, detector_score, embedding, embedding_encoding, failure) \
                     SELECT id, ?2, tenant_id, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10 FROM face_samples \
                     WHERE id = ?1 AND tenant_id = ?11 AND subject_id = ?12",
                )?;
                for (s, row) in staged.iter().zip(&rows) {
                    let b = row.bbox;
                    insert.execute(params![
                        s.sample_id,
                        model_id,
                        b.map(|b| b[0]),
                        b.map(|b| b[1]),
                        b.map(|b| b[2]),
                        b.map(|b| b[3]),
                        row.detector_score,
                        row.embedding,
                        row.encoding,
                        row.failure,
                        s.tenant_id,
                        s.subject_id,
                    ])?;
                }
                Ok(())
            })
        })
    }

    fn staged_reindex(&self, model_id: &str) -> facegate_core::Result<Vec<(String, ReindexTally)>> {
        to_core(|| {
            let conn = self.reader()?;
            let mut stmt = conn.prepare(STAGED_COUNTS)?;
            let rows = stmt
                .query_map([model_id], |row| Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)?.max(0) as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(tallies(rows))
        })
    }

    fn swap_reindexed(&self, model_id: &str) -> facegate_core::Result<Vec<(String, ReindexTally)>> {
        to_core(|| {
            let swapped = self.write(|tx| {
                let unstaged: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM face_samples s WHERE s.model_id <> ?1 \
                     AND NOT EXISTS (SELECT 1 FROM reindex_staging r WHERE r.sample_id = s.id AND r.model_id = ?1)",
                    [model_id],
                    |row| row.get(0),
                )?;
                if unstaged > 0 {
                    return Err(StoreError::Conflict(format!(
                        "{unstaged} face samples have no outcome staged for {model_id} yet"
                    )));
                }
                let rows = tx
                    .prepare(STAGED_COUNTS)?
                    .query_map([model_id], |row| Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)?.max(0) as u64)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                tx.execute(
                    "UPDATE face_samples SET model_id = r.model_id, embedding = r.embedding, \
                         embedding_encoding = r.embedding_encoding, bbox_left = r.bbox_left, bbox_top = r.bbox_top, \
                         bbox_right = r.bbox_right, bbox_bottom = r.bbox_bottom, detector_score = r.detector_score \
                     FROM reindex_staging r \
                     WHERE r.sample_id = face_samples.id AND r.model_id = ?1 AND r.failure IS NULL",
                    [model_id],
                )?;
                // Rows staged for another model are an abandoned run's: its samples are this model's
                // now, or failed and kept theirs.
                tx.execute("DELETE FROM reindex_staging", [])?;
                Ok(tallies(rows))
            })?;
            // The old templates were overwritten in place (secure_delete zeroes what is freed); their
            // pages may still sit in the WAL until it is checkpointed.
            scrub_wal(&self.writer.lock());
            Ok(swapped)
        })
    }
}
