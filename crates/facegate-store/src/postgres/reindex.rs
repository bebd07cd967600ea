//! Reindex staging in PostgreSQL (`reindex_staging`, schema v2): outcomes staged in batches,
//! swapped into `face_samples` in one transaction. A reindex runs with every node stopped
//! ([`super::PgRole::Exclusive`]), and nodes read their whole index at start, so the swap
//! writes no change log.

use facegate_core::{FaceSample, ReindexTally, StagedSample, StaleTemplates, StaleTenant, StoredImage};

use super::sql::{to_i64, to_u64};
use super::PgStore;
use crate::error::{to_core, Result, StoreError};
use crate::staging::{open_image, tallies, StagedRow, OTHER_MODELS};

const SAMPLE_COLUMNS: &str = "s.id, s.subject_id, s.image_name, s.bbox_left, s.bbox_top, s.bbox_right, \
     s.bbox_bottom, s.detector_score, s.model_id, s.created_at";

/// Counts of `reindex_staging` per tenant and failure (none: re-embedded).
const STAGED_COUNTS: &str =
    "SELECT tenant_id, failure, COUNT(*) FROM reindex_staging WHERE model_id = $1 GROUP BY tenant_id, failure";

fn staged_counts(rows: &[postgres::Row]) -> Vec<(String, ReindexTally)> {
    tallies(rows.iter().map(|row| (row.get(0), row.get(1), to_u64(row.get(2)))))
}

impl facegate_core::ReindexStore for PgStore {
    fn stale_templates(&self, model_id: &str) -> facegate_core::Result<StaleTemplates> {
        to_core(|| {
            let mut conn = self.conn()?;
            // OTHER_MODELS answers this from the index; the per-subject count below reads every
            // sample, and runs only when there is something stale.
            let models: Vec<String> = conn.query(OTHER_MODELS, &[&model_id])?.iter().map(|row| row.get(0)).collect();
            if models.is_empty() {
                return Ok(StaleTemplates::default());
            }
            let tenants = conn
                .query(
                    "SELECT t.id, t.name, SUM(x.stale)::BIGINT, COUNT(*) FILTER (WHERE x.current = 0) \
                     FROM (SELECT tenant_id, subject_id, COUNT(*) FILTER (WHERE model_id = $1) AS current, \
                                  COUNT(*) FILTER (WHERE model_id <> $1) AS stale \
                           FROM face_samples GROUP BY tenant_id, subject_id) x \
                     JOIN tenants t ON t.id = x.tenant_id \
                     GROUP BY t.id, t.name HAVING SUM(x.stale) > 0 ORDER BY t.name",
                    &[&model_id],
                )?
                .iter()
                .map(|row| StaleTenant {
                    tenant_id: row.get(0),
                    tenant_name: row.get(1),
                    stale_samples: to_u64(row.get(2)),
                    unsearchable_subjects: to_u64(row.get(3)),
                })
                .collect();
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
            let rows = self.conn()?.query(
                &format!(
                    "SELECT {SAMPLE_COLUMNS} FROM face_samples s \
                     WHERE s.tenant_id = $1 AND s.model_id <> $2 AND s.id > $3 \
                       AND NOT EXISTS (SELECT 1 FROM reindex_staging r WHERE r.sample_id = s.id AND r.model_id = $2) \
                     ORDER BY s.id LIMIT $4"
                ),
                &[&tenant_id, &model_id, &after.unwrap_or(""), &to_i64(limit)],
            )?;
            Ok(rows.iter().map(super::gallery::sample_from_row).collect())
        })
    }

    fn sample_image(&self, tenant_id: &str, sample_id: &str) -> facegate_core::Result<StoredImage> {
        to_core(|| {
            let mut conn = self.conn()?;
            let row = conn.query_opt(
                "SELECT s.subject_id, b.path, b.sha256 FROM face_samples s \
                 LEFT JOIN image_blobs b ON b.sample_id = s.id WHERE s.tenant_id = $1 AND s.id = $2",
                &[&tenant_id, &sample_id],
            )?;
            let Some(row) = row else { return Ok(StoredImage::Missing) };
            let (subject_id, path, sha256): (String, Option<String>, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            let (Some(path), Some(sha256)) = (path, sha256) else { return Ok(StoredImage::Missing) };
            let Some(stored) = self.images.load(&mut conn, &path)? else { return Ok(StoredImage::Missing) };
            Ok(open_image(stored, &sha256, &subject_id, self.key.as_ref()))
        })
    }

    fn stage_reindexed(&self, model_id: &str, staged: &[StagedSample]) -> facegate_core::Result<()> {
        to_core(|| {
            let rows = staged.iter().map(|s| StagedRow::of(s, self.key.as_ref())).collect::<Result<Vec<_>>>()?;
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // From the sample's own row, so that a sample deleted meanwhile stages nothing and a
            // template is never staged under another subject than the one it is sealed for.
            let insert = tx.prepare(
                "INSERT INTO reindex_staging (sample_id, model_id, tenant_id, bbox_left, bbox_top, bbox_right, \
                     bbox_bottom, detector_score, embedding, embedding_encoding, failure) \
                 SELECT id, $2, tenant_id, $3, $4, $5, $6, $7, $8, $9, $10 FROM face_samples \
                 WHERE id = $1 AND tenant_id = $11 AND subject_id = $12 \
                 ON CONFLICT (sample_id, model_id) DO UPDATE SET bbox_left = EXCLUDED.bbox_left, \
                     bbox_top = EXCLUDED.bbox_top, bbox_right = EXCLUDED.bbox_right, \
                     bbox_bottom = EXCLUDED.bbox_bottom, detector_score = EXCLUDED.detector_score, \
                     embedding = EXCLUDED.embedding, embedding_encoding = EXCLUDED.embedding_encoding, \
                     failure = EXCLUDED.failure",
            )?;
            for (s, row) in staged.iter().zip(&rows) {
                let b = row.bbox;
                tx.execute(
                    &insert,
                    &[
                        &s.sample_id,
                        &model_id,
                        &b.map(|b| b[0]),
                        &b.map(|b| b[1]),
                        &b.map(|b| b[2]),
                        &b.map(|b| b[3]),
                        &row.detector_score,
                        &row.embedding,
                        &row.encoding,
                        &row.failure,
                        &s.tenant_id,
                        &s.subject_id,
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn staged_reindex(&self, model_id: &str) -> facegate_core::Result<Vec<(String, ReindexTally)>> {
        to_core(|| Ok(staged_counts(&self.conn()?.query(STAGED_COUNTS, &[&model_id])?)))
    }

    fn swap_reindexed(&self, model_id: &str) -> facegate_core::Result<Vec<(String, ReindexTally)>> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let unstaged: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM face_samples s WHERE s.model_id <> $1 \
                     AND NOT EXISTS (SELECT 1 FROM reindex_staging r WHERE r.sample_id = s.id AND r.model_id = $1)",
                    &[&model_id],
                )?
                .get(0);
            if unstaged > 0 {
                return Err(StoreError::Conflict(format!(
                    "{unstaged} face samples have no outcome staged for {model_id} yet"
                )));
            }
            let swapped = staged_counts(&tx.query(STAGED_COUNTS, &[&model_id])?);
            tx.execute(
                "UPDATE face_samples s SET model_id = r.model_id, embedding = r.embedding, \
                     embedding_encoding = r.embedding_encoding, bbox_left = r.bbox_left, bbox_top = r.bbox_top, \
                     bbox_right = r.bbox_right, bbox_bottom = r.bbox_bottom, detector_score = r.detector_score \
                 FROM reindex_staging r WHERE r.sample_id = s.id AND r.model_id = $1 AND r.failure IS NULL",
                &[&model_id],
            )?;
            // Rows staged for another model are an abandoned run's: its samples are this model's now,
            // or failed and kept theirs.
            tx.execute("DELETE FROM reindex_staging", &[])?;
            tx.commit()?;
            Ok(swapped)
        })
    }
}
