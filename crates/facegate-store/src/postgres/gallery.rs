//! The gallery in PostgreSQL: subjects, their face samples with templates, and their images.

use facegate_core::{BoundingBox, FaceSample, NewSample, Profile, Subject, SubjectSummary, Template};
use postgres::fallible_iterator::FallibleIterator;
use postgres::Transaction;

use super::changes::{self, Change, Kind};
use super::images::NewImage;
use super::tags::replace_subject_tags;
use super::PgStore;
use crate::error::{pg_foreign_key_violation, pg_unique_violation, to_core, Result, StoreError};
use crate::image_path;
use crate::listing::prefix_upper_bound;
use crate::templates::{decode_template, encode_template};

pub(super) const SUBJECT_COLUMNS: &str =
    "id, tenant_id, customer_person_id, first_name, last_name, email, phone, created_at, updated_at";
const SAMPLE_COLUMNS: &str =
    "id, subject_id, image_name, bbox_left, bbox_top, bbox_right, bbox_bottom, detector_score, model_id, created_at";

impl PgStore {
    /// Inserts a sample's row, its template and its image inside `tx`.
    pub(super) fn insert_sample(&self, tx: &mut Transaction<'_>, subject: &Subject, ns: &NewSample) -> Result<()> {
        let s = &ns.sample;
        if s.subject_id != subject.id {
            return Err(StoreError::Inconsistent(format!(
                "sample {} is for subject {}, not {}",
                s.id, s.subject_id, subject.id
            )));
        }
        let path = image_path::rel_path(&subject.tenant_id, &s.image_name)?;
        let (embedding, encoding) = encode_template(&ns.embedding, &s.subject_id, self.key.as_ref())?;
        tx.execute(
            &format!(
                "INSERT INTO face_samples ({SAMPLE_COLUMNS}, tenant_id, embedding, embedding_encoding) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ),
            &[
                &s.id,
                &s.subject_id,
                &s.image_name,
                &s.bbox.left,
                &s.bbox.top,
                &s.bbox.right,
                &s.bbox.bottom,
                &s.detector_score,
                &s.model_id,
                &s.created_at,
                &subject.tenant_id,
                &embedding,
                &encoding,
            ],
        )
        .map_err(|e| match pg_unique_violation(&e) {
            true => StoreError::Conflict(format!("a sample with id '{}' already exists", s.id)),
            false => e.into(),
        })?;
        let sealed;
        let bytes: &[u8] = match &self.key {
            Some(key) => {
                sealed = key.seal(&ns.image, subject.id.as_bytes())?;
                &sealed
            }
            None => &ns.image,
        };
        self.images.save(tx, &NewImage { sample_id: &s.id, path: &path, bytes }).map_err(|e| match e {
            StoreError::Postgres(pg) if pg_unique_violation(&pg) => {
                StoreError::Conflict(format!("image {path} already exists"))
            }
            other => other,
        })
    }

    /// A subject with its first sample and tags, and whatever else `also` writes (a bulk record
    /// saying so), in one transaction.
    pub(super) fn create_subject_with(
        &self,
        subject: &Subject,
        sample: Option<&NewSample>,
        tags: Option<&[String]>,
        also: impl FnOnce(&mut Transaction<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        insert_subject(&mut tx, subject)?;
        let mut log = Vec::new();
        let base = Change { tenant_id: &subject.tenant_id, subject_id: Some(&subject.id), ..Change::default() };
        if let Some(ns) = sample {
            self.insert_sample(&mut tx, subject, ns)?;
            log.push((Kind::SampleAdded, Change { sample_id: Some(&ns.sample.id), ..base.clone() }));
        }
        if let Some(tags) = tags {
            replace_subject_tags(&mut tx, &subject.tenant_id, &subject.id, tags)?;
            log.push((Kind::SubjectTagsSet, base.clone()));
        }
        also(&mut tx)?;
        changes::commit_with(tx, &log)
    }
}

impl facegate_core::GalleryStore for PgStore {
    fn create_subject(&self, subject: &Subject, first_sample: Option<&NewSample>) -> facegate_core::Result<()> {
        Ok(self.create_subject_with(subject, first_sample, None, |_| Ok(()))?)
    }

    fn create_tagged_subject(
        &self,
        subject: &Subject,
        first_sample: &NewSample,
        tags: &[String],
    ) -> facegate_core::Result<()> {
        Ok(self.create_subject_with(subject, Some(first_sample), Some(tags), |_| Ok(()))?)
    }

    fn subject_by_id(&self, tenant_id: &str, subject_id: &str) -> facegate_core::Result<Option<Subject>> {
        let row = self
            .conn()?
            .query_opt(
                &format!("SELECT {SUBJECT_COLUMNS} FROM subjects WHERE tenant_id = $1 AND id = $2"),
                &[&tenant_id, &subject_id],
            )
            .map_err(StoreError::from)?;
        Ok(row.map(|r| subject_from_row(&r)))
    }

    fn subject_by_customer_id(
        &self,
        tenant_id: &str,
        customer_person_id: &str,
    ) -> facegate_core::Result<Option<Subject>> {
        let row = self
            .conn()?
            .query_opt(
                &format!("SELECT {SUBJECT_COLUMNS} FROM subjects WHERE tenant_id = $1 AND customer_person_id = $2"),
                &[&tenant_id, &customer_person_id],
            )
            .map_err(StoreError::from)?;
        Ok(row.map(|r| subject_from_row(&r)))
    }

    fn update_subject(
        &self,
        subject: &Subject,
        new_sample: Option<&NewSample>,
        tags: Option<&[String]>,
    ) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let p = &subject.profile;
            let changed = tx.execute(
                "UPDATE subjects SET first_name = $3, last_name = $4, email = $5, phone = $6, updated_at = $7 \
                 WHERE tenant_id = $1 AND id = $2",
                &[
                    &subject.tenant_id,
                    &subject.id,
                    &p.first_name,
                    &p.last_name,
                    &p.email,
                    &p.phone,
                    &subject.updated_at,
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound("subject"));
            }
            let mut log = Vec::new();
            let base = Change { tenant_id: &subject.tenant_id, subject_id: Some(&subject.id), ..Change::default() };
            if let Some(ns) = new_sample {
                self.insert_sample(&mut tx, subject, ns)?;
                log.push((Kind::SampleAdded, Change { sample_id: Some(&ns.sample.id), ..base.clone() }));
            }
            if let Some(tags) = tags {
                replace_subject_tags(&mut tx, &subject.tenant_id, &subject.id, tags)?;
                log.push((Kind::SubjectTagsSet, base.clone()));
            }
            changes::commit_with(tx, &log)
        })
    }

    fn samples_of(&self, tenant_id: &str, subject_id: &str) -> facegate_core::Result<Vec<FaceSample>> {
        let rows = self
            .conn()?
            .query(
                &format!(
                    "SELECT {SAMPLE_COLUMNS} FROM face_samples WHERE tenant_id = $1 AND subject_id = $2 \
                     ORDER BY created_at DESC, ordinal DESC"
                ),
                &[&tenant_id, &subject_id],
            )
            .map_err(StoreError::from)?;
        Ok(rows.iter().map(sample_from_row).collect())
    }

    /// Swaps the face of one sample: the new row keeps the sample id.
    fn replace_sample(
        &self,
        subject: &Subject,
        sample: &NewSample,
        tags: Option<&[String]>,
    ) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let old_path: Option<Option<String>> = tx
                .query_opt(
                    "SELECT b.path FROM face_samples s LEFT JOIN image_blobs b ON b.sample_id = s.id \
                     WHERE s.tenant_id = $1 AND s.subject_id = $2 AND s.id = $3 FOR UPDATE OF s",
                    &[&subject.tenant_id, &subject.id, &sample.sample.id],
                )?
                .map(|row| row.get(0));
            let Some(old_path) = old_path else { return Err(StoreError::NotFound("event")) };
            tx.execute("DELETE FROM face_samples WHERE id = $1", &[&sample.sample.id])?;
            self.insert_sample(&mut tx, subject, sample)?;
            tx.execute(
                "UPDATE subjects SET updated_at = $3 WHERE tenant_id = $1 AND id = $2",
                &[&subject.tenant_id, &subject.id, &subject.updated_at],
            )?;
            let base = Change { tenant_id: &subject.tenant_id, subject_id: Some(&subject.id), ..Change::default() };
            let mut log = vec![(Kind::SampleAdded, Change { sample_id: Some(&sample.sample.id), ..base.clone() })];
            if let Some(tags) = tags {
                replace_subject_tags(&mut tx, &subject.tenant_id, &subject.id, tags)?;
                log.push((Kind::SubjectTagsSet, base.clone()));
            }
            changes::commit_with(tx, &log)?;
            self.images.forget(&old_path.into_iter().collect::<Vec<_>>());
            Ok(())
        })
    }

    fn delete_sample(&self, tenant_id: &str, subject_id: &str, sample_id: &str) -> facegate_core::Result<bool> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let path: Option<String> = tx
                .query_opt(
                    "SELECT b.path FROM image_blobs b JOIN face_samples s ON s.id = b.sample_id \
                     WHERE s.tenant_id = $1 AND s.subject_id = $2 AND s.id = $3",
                    &[&tenant_id, &subject_id, &sample_id],
                )?
                .map(|row| row.get(0));
            let deleted = tx.execute(
                "DELETE FROM face_samples WHERE tenant_id = $1 AND subject_id = $2 AND id = $3",
                &[&tenant_id, &subject_id, &sample_id],
            )?;
            let log = match deleted {
                0 => vec![],
                _ => vec![(
                    Kind::SampleRemoved,
                    Change { tenant_id, subject_id: Some(subject_id), sample_id: Some(sample_id), ..Change::default() },
                )],
            };
            changes::commit_with(tx, &log)?;
            self.images.forget(&path.into_iter().collect::<Vec<_>>());
            Ok(deleted > 0)
        })
    }

    fn delete_subject(&self, tenant_id: &str, subject_id: &str) -> facegate_core::Result<bool> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let paths: Vec<String> = tx
                .query(
                    "SELECT b.path FROM image_blobs b JOIN face_samples s ON s.id = b.sample_id \
                     WHERE s.tenant_id = $1 AND s.subject_id = $2",
                    &[&tenant_id, &subject_id],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect();
            // Samples and their images go by ON DELETE CASCADE.
            let deleted =
                tx.execute("DELETE FROM subjects WHERE tenant_id = $1 AND id = $2", &[&tenant_id, &subject_id])?;
            let log = match deleted {
                0 => vec![],
                _ => vec![(
                    Kind::SubjectRemoved,
                    Change { tenant_id, subject_id: Some(subject_id), ..Change::default() },
                )],
            };
            changes::commit_with(tx, &log)?;
            self.images.forget(&paths);
            Ok(deleted > 0)
        })
    }

    /// As SQLite's, with every comparison and the order under the "C" collation: byte order,
    /// whatever the database's locale, so that a page key means the same on both backends.
    fn list_subjects(
        &self,
        tenant_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> facegate_core::Result<Vec<SubjectSummary>> {
        to_core(|| {
            let upper = prefix_upper_bound(prefix);
            let qualified = |alias: &str, columns: &str| {
                columns.split(',').map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
            };
            let mut sql = format!(
                "SELECT {}, (SELECT COUNT(*) FROM face_samples f WHERE f.tenant_id = s.tenant_id AND f.subject_id = s.id), \
                     {} \
                 FROM subjects s LEFT JOIN face_samples n ON n.id = (SELECT f.id FROM face_samples f \
                     WHERE f.tenant_id = s.tenant_id AND f.subject_id = s.id ORDER BY f.created_at DESC, f.ordinal DESC \
                     LIMIT 1) \
                 WHERE s.tenant_id = $1 AND s.customer_person_id COLLATE \"C\" >= $2",
                qualified("s", SUBJECT_COLUMNS),
                qualified("n", SAMPLE_COLUMNS)
            );
            let limit = super::sql::to_i64(limit);
            let mut values: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&tenant_id, &prefix];
            if let Some(upper) = &upper {
                values.push(upper);
                sql.push_str(&format!(" AND s.customer_person_id COLLATE \"C\" < ${}", values.len()));
            }
            if let Some(after) = &after {
                values.push(after);
                sql.push_str(&format!(" AND s.customer_person_id COLLATE \"C\" > ${}", values.len()));
            }
            values.push(&limit);
            sql.push_str(&format!(" ORDER BY s.customer_person_id COLLATE \"C\" LIMIT ${}", values.len()));
            let rows = self.conn()?.query(&sql, &values)?;
            Ok(rows
                .iter()
                .map(|row| {
                    let newest_id: Option<String> = row.get(10);
                    SubjectSummary {
                        subject: subject_from_row(row),
                        samples: super::sql::to_u64(row.get(9)),
                        newest_sample: newest_id.map(|id| FaceSample {
                            id,
                            subject_id: row.get(11),
                            image_name: row.get(12),
                            bbox: BoundingBox {
                                left: row.get(13),
                                top: row.get(14),
                                right: row.get(15),
                                bottom: row.get(16),
                            },
                            detector_score: row.get(17),
                            model_id: row.get(18),
                            created_at: row.get(19),
                        }),
                    }
                })
                .collect())
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

impl PgStore {
    fn stream_templates(
        &self,
        model_id: &str,
        tenant_id: Option<&str>,
        visit: &mut dyn FnMut(Template),
    ) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            // Streamed: the gallery can be far larger than what we want resident twice.
            let mut rows = match tenant_id {
                None => conn.query_raw(
                    "SELECT tenant_id, subject_id, id, embedding, embedding_encoding FROM face_samples \
                     WHERE model_id = $1 ORDER BY ordinal",
                    [model_id],
                )?,
                Some(tenant_id) => conn.query_raw(
                    "SELECT tenant_id, subject_id, id, embedding, embedding_encoding FROM face_samples \
                     WHERE model_id = $1 AND tenant_id = $2 ORDER BY ordinal",
                    [model_id, tenant_id],
                )?,
            };
            while let Some(row) = rows.next()? {
                let sample_id: String = row.get(2);
                let blob: &[u8] = row.get(3);
                let encoding: &str = row.get(4);
                let subject_id: String = row.get(1);
                let Some(embedding) = decode_template(blob, encoding, &subject_id, self.key.as_ref())? else {
                    tracing::warn!(sample = %sample_id, bytes = blob.len(), encoding, "skipping an undecodable template");
                    continue;
                };
                visit(Template { tenant_id: row.get(0), subject_id, sample_id, embedding });
            }
            Ok(())
        })
    }
}

pub(super) fn insert_subject(tx: &mut Transaction<'_>, subject: &Subject) -> Result<()> {
    let p = &subject.profile;
    tx.execute(
        &format!("INSERT INTO subjects ({SUBJECT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
        &[
            &subject.id,
            &subject.tenant_id,
            &subject.customer_person_id,
            &p.first_name,
            &p.last_name,
            &p.email,
            &p.phone,
            &subject.created_at,
            &subject.updated_at,
        ],
    )
    .map_err(|e| {
        if pg_unique_violation(&e) {
            let constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or_default();
            if constraint == "subjects_pkey" {
                StoreError::Conflict(format!("a subject with id '{}' already exists", subject.id))
            } else {
                StoreError::Conflict(format!(
                    "a subject with customer_person_id '{}' already exists",
                    subject.customer_person_id.as_deref().unwrap_or_default()
                ))
            }
        } else if pg_foreign_key_violation(&e) {
            StoreError::NotFound("tenant")
        } else {
            e.into()
        }
    })?;
    Ok(())
}

fn subject_from_row(row: &postgres::Row) -> Subject {
    Subject {
        id: row.get(0),
        tenant_id: row.get(1),
        customer_person_id: row.get(2),
        profile: Profile { first_name: row.get(3), last_name: row.get(4), email: row.get(5), phone: row.get(6) },
        created_at: row.get(7),
        updated_at: row.get(8),
    }
}

pub(super) fn sample_from_row(row: &postgres::Row) -> FaceSample {
    FaceSample {
        id: row.get(0),
        subject_id: row.get(1),
        image_name: row.get(2),
        bbox: BoundingBox { left: row.get(3), top: row.get(4), right: row.get(5), bottom: row.get(6) },
        detector_score: row.get(7),
        model_id: row.get(8),
        created_at: row.get(9),
    }
}
