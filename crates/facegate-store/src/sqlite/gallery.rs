//! The gallery in SQLite: subjects, their face samples with templates and image files.

use facegate_core::{BoundingBox, FaceSample, NewSample, Profile, Subject, SubjectSummary, Template};
use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::blobs::BlobInfo;
use super::tags::replace_subject_tags;
use super::{scrub_wal, SqliteStore};
use crate::crypto::DataKey;
use crate::error::{to_core, unique_violation, Result, StoreError, UniqueKind};
use crate::listing::prefix_upper_bound;
use crate::templates::{decode_template, encode_template};

pub(super) const SUBJECT_COLUMNS: &str =
    "id, tenant_id, customer_person_id, first_name, last_name, email, phone, created_at, updated_at";
pub(super) const SAMPLE_COLUMNS: &str =
    "id, subject_id, image_name, bbox_left, bbox_top, bbox_right, bbox_bottom, detector_score, model_id, created_at";

impl SqliteStore {
    /// A subject with its first sample and tags, and whatever else `also` writes (a bulk record
    /// saying so), in one transaction: a crash leaves either all of it or none.
    pub(super) fn create_tagged_subject_with(
        &self,
        subject: &Subject,
        sample: &NewSample,
        tags: &[String],
        also: impl FnOnce(&Transaction<'_>) -> Result<()>,
    ) -> Result<()> {
        let staged = self.stage(subject, Some(sample))?;
        self.write_with_image(staged, |tx, blob| {
            insert_subject(tx, subject)?;
            if let Some(blob) = blob {
                insert_sample(tx, self.key.as_ref(), &subject.tenant_id, sample, blob)?;
            }
            replace_subject_tags(tx, &subject.tenant_id, &subject.id, tags)?;
            also(tx)
        })
    }
}

impl facegate_core::GalleryStore for SqliteStore {
    fn create_subject(&self, subject: &Subject, first_sample: Option<&NewSample>) -> facegate_core::Result<()> {
        to_core(|| {
            let staged = self.stage(subject, first_sample)?;
            self.write_with_image(staged, |tx, blob| {
                insert_subject(tx, subject)?;
                if let (Some(ns), Some(blob)) = (first_sample, blob) {
                    insert_sample(tx, self.key.as_ref(), &subject.tenant_id, ns, blob)?;
                }
                Ok(())
            })
        })
    }

    fn create_tagged_subject(
        &self,
        subject: &Subject,
        first_sample: &NewSample,
        tags: &[String],
    ) -> facegate_core::Result<()> {
        Ok(self.create_tagged_subject_with(subject, first_sample, tags, |_| Ok(()))?)
    }

    fn subject_by_id(&self, tenant_id: &str, subject_id: &str) -> facegate_core::Result<Option<Subject>> {
        let conn = self.reader()?;
        let subject = conn
            .prepare_cached(&format!("SELECT {SUBJECT_COLUMNS} FROM subjects WHERE tenant_id = ?1 AND id = ?2"))
            .and_then(|mut stmt| stmt.query_row([tenant_id, subject_id], subject_from_row).optional())
            .map_err(StoreError::from)?;
        Ok(subject)
    }

    fn subject_by_customer_id(
        &self,
        tenant_id: &str,
        customer_person_id: &str,
    ) -> facegate_core::Result<Option<Subject>> {
        let conn = self.reader()?;
        let subject = conn
            .prepare_cached(&format!(
                "SELECT {SUBJECT_COLUMNS} FROM subjects WHERE tenant_id = ?1 AND customer_person_id = ?2"
            ))
            .and_then(|mut stmt| stmt.query_row([tenant_id, customer_person_id], subject_from_row).optional())
            .map_err(StoreError::from)?;
        Ok(subject)
    }

    fn update_subject(
        &self,
        subject: &Subject,
        new_sample: Option<&NewSample>,
        tags: Option<&[String]>,
    ) -> facegate_core::Result<()> {
        to_core(|| {
            let staged = self.stage(subject, new_sample)?;
            self.write_with_image(staged, |tx, blob| {
                let p = &subject.profile;
                let changed = tx
                    .prepare_cached(
                        "UPDATE subjects SET first_name = ?3, last_name = ?4, email = ?5, phone = ?6, updated_at = ?7 \
                         WHERE tenant_id = ?1 AND id = ?2",
                    )?
                    .execute(params![
                        subject.tenant_id,
                        subject.id,
                        p.first_name,
                        p.last_name,
                        p.email,
                        p.phone,
                        subject.updated_at
                    ])?;
                if changed == 0 {
                    return Err(StoreError::NotFound("subject"));
                }
                if let (Some(ns), Some(blob)) = (new_sample, blob) {
                    insert_sample(tx, self.key.as_ref(), &subject.tenant_id, ns, blob)?;
                }
                if let Some(tags) = tags {
                    replace_subject_tags(tx, &subject.tenant_id, &subject.id, tags)?;
                }
                Ok(())
            })
        })
    }

    fn samples_of(&self, tenant_id: &str, subject_id: &str) -> facegate_core::Result<Vec<FaceSample>> {
        let conn = self.reader()?;
        let samples = conn
            .prepare_cached(&format!(
                "SELECT {SAMPLE_COLUMNS} FROM face_samples WHERE tenant_id = ?1 AND subject_id = ?2 \
                 ORDER BY created_at DESC, rowid DESC"
            ))
            .and_then(|mut stmt| {
                stmt.query_map([tenant_id, subject_id], sample_from_row)?.collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(StoreError::from)?;
        Ok(samples)
    }

    /// Swaps the face of one sample in one transaction: the new row keeps the sample id, the
    /// old image file is removed after the commit.
    fn replace_sample(
        &self,
        subject: &Subject,
        sample: &NewSample,
        tags: Option<&[String]>,
    ) -> facegate_core::Result<()> {
        to_core(|| {
            let staged = self.stage(subject, Some(sample))?;
            let old_path = self.write_with_image(staged, |tx, blob| {
                let old_path: Option<String> = tx
                    .prepare_cached(
                        "SELECT b.path FROM face_samples s LEFT JOIN image_blobs b ON b.sample_id = s.id \
                         WHERE s.tenant_id = ?1 AND s.subject_id = ?2 AND s.id = ?3",
                    )?
                    .query_row([&subject.tenant_id, &subject.id, &sample.sample.id], |row| row.get(0))
                    .optional()?
                    .ok_or(StoreError::NotFound("event"))?;
                tx.prepare_cached("DELETE FROM face_samples WHERE id = ?1")?.execute([&sample.sample.id])?;
                let blob =
                    blob.ok_or_else(|| StoreError::Inconsistent("replacement sample without an image".into()))?;
                insert_sample(tx, self.key.as_ref(), &subject.tenant_id, sample, blob)?;
                tx.prepare_cached("UPDATE subjects SET updated_at = ?3 WHERE tenant_id = ?1 AND id = ?2")?
                    .execute(params![subject.tenant_id, subject.id, subject.updated_at])?;
                if let Some(tags) = tags {
                    replace_subject_tags(tx, &subject.tenant_id, &subject.id, tags)?;
                }
                Ok(old_path)
            })?;
            if let Some(path) = old_path {
                if let Err(e) = self.blobs.remove(&path) {
                    tracing::warn!(%path, error = %e, "could not remove the replaced image");
                }
            }
            Ok(())
        })
    }

    fn delete_sample(&self, tenant_id: &str, subject_id: &str, sample_id: &str) -> facegate_core::Result<bool> {
        to_core(|| {
            let mut conn = self.writer.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let path: Option<String> = tx
                .prepare_cached(
                    "SELECT b.path FROM image_blobs b JOIN face_samples s ON s.id = b.sample_id \
                     WHERE s.tenant_id = ?1 AND s.subject_id = ?2 AND s.id = ?3",
                )?
                .query_row([tenant_id, subject_id, sample_id], |row| row.get(0))
                .optional()?;
            let deleted = tx
                .prepare_cached("DELETE FROM face_samples WHERE tenant_id = ?1 AND subject_id = ?2 AND id = ?3")?
                .execute([tenant_id, subject_id, sample_id])?;
            tx.commit()?;
            if let Some(path) = path {
                if let Err(e) = self.blobs.remove(&path) {
                    tracing::warn!(%path, error = %e, "could not remove the image of a deleted sample");
                }
            }
            if deleted > 0 {
                scrub_wal(&conn);
            }
            Ok(deleted > 0)
        })
    }

    fn delete_subject(&self, tenant_id: &str, subject_id: &str) -> facegate_core::Result<bool> {
        to_core(|| {
            let mut conn = self.writer.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let paths = {
                let mut stmt = tx.prepare_cached(
                    "SELECT b.path FROM image_blobs b \
                     JOIN face_samples s ON s.id = b.sample_id \
                     JOIN subjects j ON j.id = s.subject_id \
                     WHERE j.tenant_id = ?1 AND j.id = ?2",
                )?;
                let rows = stmt.query_map([tenant_id, subject_id], |row| row.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            // Samples and their image_blobs rows go by ON DELETE CASCADE.
            let deleted = tx
                .prepare_cached("DELETE FROM subjects WHERE tenant_id = ?1 AND id = ?2")?
                .execute([tenant_id, subject_id])?;
            tx.commit()?;
            // Still under the writer lock, so no new file can take one of these paths meanwhile. A
            // file that cannot be removed now has no row and is swept at the next start.
            for path in &paths {
                if let Err(e) = self.blobs.remove(path) {
                    tracing::warn!(%path, error = %e, "could not remove the image of a deleted subject");
                }
            }
            if deleted > 0 {
                scrub_wal(&conn);
            }
            Ok(deleted > 0)
        })
    }

    fn list_subjects(
        &self,
        tenant_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> facegate_core::Result<Vec<SubjectSummary>> {
        to_core(|| {
            let upper = prefix_upper_bound(prefix);
            let mut sql = format!(
                "SELECT {}, (SELECT COUNT(*) FROM face_samples f WHERE f.tenant_id = s.tenant_id AND f.subject_id = s.id), \
                     {} \
                 FROM subjects s LEFT JOIN face_samples n ON n.id = (SELECT f.id FROM face_samples f \
                     WHERE f.tenant_id = s.tenant_id AND f.subject_id = s.id ORDER BY f.created_at DESC, f.rowid DESC LIMIT 1) \
                 WHERE s.tenant_id = ?1 AND s.customer_person_id >= ?2",
                qualified("s", SUBJECT_COLUMNS),
                qualified("n", SAMPLE_COLUMNS)
            );
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![&tenant_id, &prefix];
            if let Some(upper) = &upper {
                values.push(upper);
                sql.push_str(&format!(" AND s.customer_person_id < ?{}", values.len()));
            }
            if let Some(after) = &after {
                values.push(after);
                sql.push_str(&format!(" AND s.customer_person_id > ?{}", values.len()));
            }
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            values.push(&limit);
            sql.push_str(&format!(" ORDER BY s.customer_person_id LIMIT ?{}", values.len()));
            let conn = self.reader()?;
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(values.as_slice(), |row| {
                let subject = subject_from_row(row)?;
                let samples: i64 = row.get(9)?;
                let newest_id: Option<String> = row.get(10)?;
                let newest_sample = match newest_id {
                    Some(id) => Some(FaceSample {
                        id,
                        subject_id: row.get(11)?,
                        image_name: row.get(12)?,
                        bbox: BoundingBox {
                            left: row.get(13)?,
                            top: row.get(14)?,
                            right: row.get(15)?,
                            bottom: row.get(16)?,
                        },
                        detector_score: row.get(17)?,
                        model_id: row.get(18)?,
                        created_at: row.get(19)?,
                    }),
                    None => None,
                };
                Ok(SubjectSummary { subject, samples: u64::try_from(samples).unwrap_or(0), newest_sample })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn for_each_template(&self, model_id: &str, visit: &mut dyn FnMut(Template)) -> facegate_core::Result<()> {
        self.stream_templates(model_id, None, visit)
    }

    fn for_each_tenant_template(
        &self,
        tenant_id: &str,
        model_id: &str,
        visit: &mut dyn FnMut(Template),
    ) -> facegate_core::Result<()> {
        self.stream_templates(model_id, Some(tenant_id), visit)
    }
}

impl SqliteStore {
    fn stream_templates(
        &self,
        model_id: &str,
        tenant_id: Option<&str>,
        visit: &mut dyn FnMut(Template),
    ) -> facegate_core::Result<()> {
        to_core(|| {
            let conn = self.reader()?;
            // One row at a time: the gallery can be far larger than what we want resident twice.
            let sql = match tenant_id {
                None => {
                    "SELECT tenant_id, subject_id, id, embedding, embedding_encoding FROM face_samples \
                         WHERE model_id = ?1 ORDER BY rowid"
                }
                Some(_) => {
                    "SELECT tenant_id, subject_id, id, embedding, embedding_encoding FROM face_samples \
                            WHERE model_id = ?1 AND tenant_id = ?2 ORDER BY rowid"
                }
            };
            let mut stmt = conn.prepare(sql)?;
            let mut rows = match tenant_id {
                None => stmt.query([model_id])?,
                Some(tenant_id) => stmt.query([model_id, tenant_id])?,
            };
            while let Some(row) = rows.next()? {
                let sample_id: String = row.get(2)?;
                let blob = row.get_ref(3)?.as_blob().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Blob, Box::new(e))
                })?;
                let encoding: String = row.get(4)?;
                let subject_id: String = row.get(1)?;
                let Some(embedding) = decode_template(blob, &encoding, &subject_id, self.key.as_ref())? else {
                    tracing::warn!(sample = %sample_id, bytes = blob.len(), encoding, "skipping an undecodable template");
                    continue;
                };
                visit(Template { tenant_id: row.get(0)?, subject_id, sample_id, embedding });
            }
            Ok(())
        })
    }
}

pub(super) fn insert_subject(tx: &Transaction<'_>, subject: &Subject) -> Result<()> {
    let p = &subject.profile;
    tx.prepare_cached(&format!(
        "INSERT INTO subjects ({SUBJECT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        subject.id,
        subject.tenant_id,
        subject.customer_person_id,
        p.first_name,
        p.last_name,
        p.email,
        p.phone,
        subject.created_at,
        subject.updated_at
    ])
    .map_err(|e| match unique_violation(&e) {
        Some(UniqueKind::Unique) => StoreError::Conflict(format!(
            "a subject with customer_person_id '{}' already exists",
            subject.customer_person_id.as_deref().unwrap_or_default()
        )),
        Some(UniqueKind::PrimaryKey) => {
            StoreError::Conflict(format!("a subject with id '{}' already exists", subject.id))
        }
        None if is_foreign_key_violation(&e) => StoreError::NotFound("tenant"),
        None => e.into(),
    })?;
    Ok(())
}

pub(super) fn insert_sample(
    tx: &Transaction<'_>,
    key: Option<&DataKey>,
    tenant_id: &str,
    ns: &NewSample,
    blob: &BlobInfo,
) -> Result<()> {
    let s = &ns.sample;
    let (embedding, encoding) = encode_template(&ns.embedding, &s.subject_id, key)?;
    tx.prepare_cached(&format!(
        "INSERT INTO face_samples ({SAMPLE_COLUMNS}, tenant_id, embedding, embedding_encoding) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))?
    .execute(params![
        s.id,
        s.subject_id,
        s.image_name,
        s.bbox.left,
        s.bbox.top,
        s.bbox.right,
        s.bbox.bottom,
        s.detector_score,
        s.model_id,
        s.created_at,
        tenant_id,
        embedding,
        encoding
    ])
    .map_err(|e| match unique_violation(&e) {
        Some(_) => StoreError::Conflict(format!("a sample with id '{}' already exists", s.id)),
        None => e.into(),
    })?;
    let bytes = i64::try_from(blob.bytes).map_err(|_| StoreError::Inconsistent("image too large".into()))?;
    tx.prepare_cached("INSERT INTO image_blobs (sample_id, path, sha256, bytes) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![s.id, blob.rel_path, blob.sha256, bytes])
        .map_err(|e| match unique_violation(&e) {
            Some(_) => StoreError::Conflict(format!("image {} already exists", blob.rel_path)),
            None => e.into(),
        })?;
    Ok(())
}

/// `columns` (a comma-separated list) with each name prefixed by the table alias `alias`.
pub(super) fn qualified(alias: &str, columns: &str) -> String {
    columns.split(',').map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

pub(super) fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(err, _) if err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

pub(super) fn subject_from_row(row: &Row<'_>) -> rusqlite::Result<Subject> {
    Ok(Subject {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        customer_person_id: row.get(2)?,
        profile: Profile { first_name: row.get(3)?, last_name: row.get(4)?, email: row.get(5)?, phone: row.get(6)? },
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

pub(super) fn sample_from_row(row: &Row<'_>) -> rusqlite::Result<FaceSample> {
    Ok(FaceSample {
        id: row.get(0)?,
        subject_id: row.get(1)?,
        image_name: row.get(2)?,
        bbox: BoundingBox { left: row.get(3)?, top: row.get(4)?, right: row.get(5)?, bottom: row.get(6)? },
        detector_score: row.get(7)?,
        model_id: row.get(8)?,
        created_at: row.get(9)?,
    })
}
