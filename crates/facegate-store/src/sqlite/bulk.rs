//! Bulk registration jobs and their records in SQLite.

use facegate_core::jobs::{BulkJob, BulkJobSummary, BulkRecord, PendingRecord, RecordStatus, RegisterStatus};
use facegate_core::{NewSample, Subject, Tenant};
use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::SqliteStore;
use crate::error::{to_core, Result, StoreError};
use crate::stored_attributes;

const RECORD_COLUMNS: &str = "seq, id, filename, tags_json, subject_id, attempts, processed, register_status, reason, \
                              event_id, attributes_json";

/// Saves a record's progress inside `tx`.
fn update_record(tx: &Transaction<'_>, job_id: &str, record: &BulkRecord) -> Result<()> {
    let attributes = stored_attributes::encode(record.attributes.as_ref())
        .map_err(|e| StoreError::Inconsistent(format!("record attributes: {e}")))?;
    let changed = tx
        .prepare_cached(
            "UPDATE bulk_records SET attempts = ?3, processed = ?4, register_status = ?5, reason = ?6, event_id = ?7, \
             attributes_json = ?8 WHERE job_id = ?1 AND seq = ?2",
        )?
        .execute(params![
            job_id,
            i64::try_from(record.seq).unwrap_or(i64::MAX),
            record.attempts,
            record.status == RecordStatus::Processed,
            RegisterStatus::name(record.register_status),
            record.reason,
            record.event_id,
            attributes
        ])?;
    if changed == 0 {
        return Err(StoreError::NotFound("bulk record"));
    }
    Ok(())
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<BulkRecord> {
    let tags: String = row.get(3)?;
    let status: String = row.get(7)?;
    let attributes: String = row.get(10)?;
    let attributes = stored_attributes::decode(&attributes)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(BulkRecord {
        seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        id: row.get(1)?,
        filename: row.get(2)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        subject_id: row.get(4)?,
        attempts: row.get(5)?,
        status: if row.get::<_, bool>(6)? { RecordStatus::Processed } else { RecordStatus::New },
        register_status: RegisterStatus::from_name(&status),
        reason: row.get(8)?,
        event_id: row.get(9)?,
        attributes,
    })
}

impl facegate_core::BulkJobStore for SqliteStore {
    fn create_bulk_job(&self, job: &BulkJob, records: &[BulkRecord]) -> facegate_core::Result<()> {
        to_core(|| {
            self.write(|tx| {
                tx.prepare_cached("INSERT INTO bulk_jobs (id, tenant_id, created_at) VALUES (?1, ?2, ?3)")?
                    .execute(params![job.id, job.tenant_id, job.created_at])?;
                let mut insert = tx.prepare_cached(&format!(
                    "INSERT INTO bulk_records ({RECORD_COLUMNS}, job_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
                     ?11, ?12)"
                ))?;
                for r in records {
                    let tags = serde_json::to_string(&r.tags).map_err(|e| StoreError::Inconsistent(e.to_string()))?;
                    let attributes = stored_attributes::encode(r.attributes.as_ref())
                        .map_err(|e| StoreError::Inconsistent(format!("record attributes: {e}")))?;
                    insert.execute(params![
                        i64::try_from(r.seq).unwrap_or(i64::MAX),
                        r.id,
                        r.filename,
                        tags,
                        r.subject_id,
                        r.attempts,
                        r.status == RecordStatus::Processed,
                        RegisterStatus::name(r.register_status),
                        r.reason,
                        r.event_id,
                        attributes,
                        job.id
                    ])?;
                }
                Ok(())
            })
        })
    }

    fn bulk_job(&self, tenant_id: &str, job_id: &str) -> facegate_core::Result<Option<BulkJob>> {
        to_core(|| {
            let conn = self.reader()?;
            let job = conn
                .prepare_cached("SELECT id, tenant_id, created_at FROM bulk_jobs WHERE id = ?1 AND tenant_id = ?2")?
                .query_row([job_id, tenant_id], |r| {
                    Ok(BulkJob { id: r.get(0)?, tenant_id: r.get(1)?, created_at: r.get(2)? })
                })
                .optional()?;
            Ok(job)
        })
    }

    fn bulk_records(&self, job_id: &str, after: Option<u64>, limit: usize) -> facegate_core::Result<Vec<BulkRecord>> {
        to_core(|| {
            let conn = self.reader()?;
            let after = after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM bulk_records WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?;
            let records =
                stmt.query_map(params![job_id, after, limit], record_from_row)?.collect::<rusqlite::Result<_>>()?;
            Ok(records)
        })
    }

    fn pending_bulk_records(&self, per_tenant: usize) -> facegate_core::Result<Vec<PendingRecord>> {
        to_core(|| {
            let conn = self.reader()?;
            let per_tenant = i64::try_from(per_tenant).unwrap_or(i64::MAX);
            // Tenant by tenant, so that each query stops after `per_tenant` rows of the pending
            // index instead of sorting every waiting record of every job.
            let tenants: Vec<Tenant> = conn
                .prepare_cached(
                    "SELECT t.id, t.name, t.created_at FROM tenants t WHERE EXISTS ( \
                       SELECT 1 FROM bulk_jobs j JOIN bulk_records r ON r.job_id = j.id AND r.processed = 0 \
                       WHERE j.tenant_id = t.id) ORDER BY t.id",
                )?
                .query_map([], |row| Ok(Tenant { id: row.get(0)?, name: row.get(1)?, created_at: row.get(2)? }))?
                .collect::<rusqlite::Result<_>>()?;
            let columns = RECORD_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ");
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {columns}, j.id FROM bulk_jobs j JOIN bulk_records r ON r.job_id = j.id AND r.processed = 0 \
                 WHERE j.tenant_id = ?1 ORDER BY j.created_at, j.id, r.seq LIMIT ?2"
            ))?;
            let mut pending = Vec::new();
            for tenant in tenants {
                let rows = stmt.query_map(params![tenant.id, per_tenant], |row| {
                    Ok(PendingRecord { record: record_from_row(row)?, job_id: row.get(11)?, tenant: tenant.clone() })
                })?;
                for row in rows {
                    pending.push(row?);
                }
            }
            Ok(pending)
        })
    }

    fn queued_bulk_records(&self, tenant_id: &str) -> facegate_core::Result<u64> {
        to_core(|| {
            let conn = self.reader()?;
            let queued: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM bulk_records r JOIN bulk_jobs j ON j.id = r.job_id \
                     WHERE j.tenant_id = ?1 AND r.processed = 0",
                )?
                .query_row([tenant_id], |row| row.get(0))?;
            Ok(u64::try_from(queued).unwrap_or(0))
        })
    }

    fn list_bulk_jobs(&self, tenant_id: &str, limit: usize) -> facegate_core::Result<Vec<BulkJobSummary>> {
        to_core(|| {
            let conn = self.reader()?;
            let mut stmt = conn.prepare_cached(
                "SELECT j.id, j.tenant_id, j.created_at, COUNT(r.seq), \
                     COALESCE(SUM(CASE WHEN r.processed THEN 1 ELSE 0 END), 0), \
                     COALESCE(SUM(CASE WHEN r.processed AND r.register_status = ?3 THEN 1 ELSE 0 END), 0), \
                     COALESCE(SUM(CASE WHEN r.processed AND r.register_status = ?4 THEN 1 ELSE 0 END), 0) \
                 FROM (SELECT id, tenant_id, created_at, rowid AS made FROM bulk_jobs WHERE tenant_id = ?1 \
                       ORDER BY created_at DESC, rowid DESC LIMIT ?2) j \
                 LEFT JOIN bulk_records r ON r.job_id = j.id \
                 GROUP BY j.id ORDER BY j.created_at DESC, j.made DESC",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let (success, failed) = (
                RegisterStatus::name(Some(RegisterStatus::Success)),
                RegisterStatus::name(Some(RegisterStatus::Failed)),
            );
            let count = |row: &Row<'_>, i: usize| row.get::<_, i64>(i).map(|n| u64::try_from(n).unwrap_or(0));
            let rows = stmt.query_map(params![tenant_id, limit, success, failed], |row| {
                Ok(BulkJobSummary {
                    job: BulkJob { id: row.get(0)?, tenant_id: row.get(1)?, created_at: row.get(2)? },
                    records: count(row, 3)?,
                    processed: count(row, 4)?,
                    succeeded: count(row, 5)?,
                    failed: count(row, 6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn save_bulk_record(&self, job_id: &str, record: &BulkRecord) -> facegate_core::Result<()> {
        to_core(|| self.write(|tx| update_record(tx, job_id, record)))
    }

    fn register_bulk_record(
        &self,
        subject: &Subject,
        sample: &NewSample,
        tags: &[String],
        job_id: &str,
        record: &BulkRecord,
    ) -> facegate_core::Result<()> {
        Ok(self.create_tagged_subject_with(subject, sample, tags, |tx| update_record(tx, job_id, record))?)
    }
}

#[cfg(test)]
mod tests {
    use facegate_core::store_roles::*;
    use facegate_core::{BoundingBox, FaceAttributes, Point, Pose};

    use super::*;

    fn record(seq: u64) -> BulkRecord {
        BulkRecord {
            seq,
            id: format!("op-{seq}"),
            filename: format!("{seq}.jpg"),
            tags: Vec::new(),
            subject_id: format!("subject-{seq}"),
            attempts: 0,
            status: RecordStatus::New,
            register_status: None,
            reason: String::new(),
            event_id: None,
            attributes: None,
        }
    }

    #[test]
    fn attributes_round_trip_and_an_undecodable_row_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let tenant = store.create_tenant("t", "h").expect("tenant");
        let job = BulkJob { id: "job".into(), tenant_id: tenant.id, created_at: "1".into() };
        store.create_bulk_job(&job, &[record(0), record(1)]).expect("job");

        let mut done = record(0);
        done.status = RecordStatus::Processed;
        done.attributes = Some(FaceAttributes {
            face_area: BoundingBox { left: 1.0, top: 2.0, right: 30.0, bottom: 40.0 },
            head_area: BoundingBox { left: 0.0, top: 0.0, right: 35.0, bottom: 42.0 },
            right_eye_center: Point { x: 10.0, y: 12.0 },
            left_eye_center: Point { x: 20.0, y: 11.0 },
            face_score: 0.8,
            frontal_face_score: 0.9,
            pose: Pose { pan: 1.5, tilt: -2.0, roll: 0.25 },
            quality: 0.7,
        });
        store.save_bulk_record("job", &done).expect("save");
        let page = store.bulk_records("job", None, 2).expect("page");
        assert_eq!((&page[0].attributes, &page[1].attributes), (&done.attributes, &None));

        // A value no stored form reads fails the read instead of coming back blank.
        store
            .write(|tx| {
                tx.execute("UPDATE bulk_records SET attributes_json = '{\"v\":\"9\"}' WHERE seq = 1", [])?;
                Ok(())
            })
            .expect("corrupt");
        let err = store.bulk_records("job", None, 2).expect_err("undecodable");
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }
}
