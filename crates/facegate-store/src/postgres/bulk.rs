//! Bulk registration jobs and their records in PostgreSQL, shared by every node.
//!
//! Any node creates a job and any node pages its progress. The runners of all nodes work
//! through the records together: a runner claims records with `SELECT … FOR UPDATE SKIP
//! LOCKED`, writing its node id and a lease into them. A lease that runs out (its node died)
//! frees the record for another node. A record is saved only while it is unprocessed, and its
//! subject id is fixed when the job is created, so a file is registered exactly once even if
//! two nodes end up working on it.

use facegate_core::jobs::{BulkJob, BulkJobSummary, BulkRecord, PendingRecord, RecordStatus, RegisterStatus};
use facegate_core::{NewSample, Subject, Tenant};
use postgres::Transaction;

use super::{to_i64, to_u64, PgStore};
use crate::error::{to_core, Result, StoreError};
use crate::stored_attributes;

const RECORD_COLUMNS: &str = "seq, id, filename, tags_json, subject_id, attempts, processed, register_status, reason, \
                              event_id, attributes_json";

/// Records written per statement when a job is created.
const INSERT_BATCH: usize = 5_000;

impl PgStore {
    /// Claims, for each tenant with waiting records, up to `per_tenant` of them that no live
    /// lease of another node holds; this node's own claims are renewed and returned again.
    fn claim_bulk_records(&self, per_tenant: usize) -> Result<Vec<PendingRecord>> {
        let mut conn = self.conn()?;
        let tenants: Vec<Tenant> = conn
            .query(
                "SELECT t.id, t.name, t.created_at FROM tenants t WHERE EXISTS ( \
                   SELECT 1 FROM bulk_jobs j JOIN bulk_records r ON r.job_id = j.id AND NOT r.processed \
                   WHERE j.tenant_id = t.id) ORDER BY t.id",
                &[],
            )?
            .iter()
            .map(super::tenant_from_row)
            .collect();
        let columns = RECORD_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ");
        let claim = format!(
            "WITH picked AS ( \
               SELECT r.job_id, r.seq FROM bulk_jobs j JOIN bulk_records r ON r.job_id = j.id \
               WHERE j.tenant_id = $1 AND NOT r.processed \
                 AND (r.claimed_by IS NULL OR r.claimed_by = $3 OR r.claim_expires < now()) \
               ORDER BY j.created_at, j.id, r.seq LIMIT $2 FOR UPDATE OF r SKIP LOCKED) \
             UPDATE bulk_records r SET claimed_by = $3, claim_expires = now() + make_interval(secs => $4) \
             FROM picked WHERE r.job_id = picked.job_id AND r.seq = picked.seq \
             RETURNING {columns}, r.job_id"
        );
        let mut pending = Vec::new();
        for tenant in tenants {
            let mut rows: Vec<(String, BulkRecord)> = conn
                .query(&claim, &[&tenant.id, &to_i64(per_tenant), &self.node_id, &self.claim_lease_secs()])?
                .iter()
                .map(|row| Ok((row.try_get::<_, String>(11)?, record_from_row(row)?)))
                .collect::<Result<_>>()?;
            // RETURNING gives no order; the runner takes them oldest job first.
            rows.sort_by(|a, b| (a.0.as_str(), a.1.seq).cmp(&(b.0.as_str(), b.1.seq)));
            pending.extend(rows.into_iter().map(|(job_id, record)| PendingRecord {
                tenant: tenant.clone(),
                job_id,
                record,
            }));
        }
        Ok(pending)
    }
}

/// Saves a record's progress inside `tx`, only while it is unprocessed: once a record is done
/// (here or on another node), its outcome stays.
fn update_record(tx: &mut Transaction<'_>, job_id: &str, record: &BulkRecord) -> Result<()> {
    let attempts = i32::try_from(record.attempts).unwrap_or(i32::MAX);
    let attributes = stored_attributes::encode(record.attributes.as_ref())
        .map_err(|e| StoreError::Inconsistent(format!("record attributes: {e}")))?;
    let changed = tx.execute(
        "UPDATE bulk_records SET attempts = $3, processed = $4, register_status = $5, reason = $6, event_id = $7, \
         attributes_json = $8 WHERE job_id = $1 AND seq = $2 AND NOT processed",
        &[
            &job_id,
            &to_i64(record.seq),
            &attempts,
            &(record.status == RecordStatus::Processed),
            &RegisterStatus::name(record.register_status),
            &record.reason,
            &record.event_id,
            &attributes,
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound("unprocessed bulk record"));
    }
    Ok(())
}

fn record_from_row(row: &postgres::Row) -> Result<BulkRecord> {
    let tags: String = row.try_get(3)?;
    let status: String = row.try_get(7)?;
    let attributes: String = row.try_get(10)?;
    let attributes = stored_attributes::decode(&attributes)
        .map_err(|e| StoreError::Inconsistent(format!("record attributes: {e}")))?;
    Ok(BulkRecord {
        seq: to_u64(row.try_get(0)?),
        id: row.try_get(1)?,
        filename: row.try_get(2)?,
        tags: serde_json::from_str(&tags).map_err(|e| StoreError::Inconsistent(format!("record tags: {e}")))?,
        subject_id: row.try_get(4)?,
        attempts: u32::try_from(row.try_get::<_, i32>(5)?).unwrap_or(0),
        status: if row.try_get(6)? { RecordStatus::Processed } else { RecordStatus::New },
        register_status: RegisterStatus::from_name(&status),
        reason: row.try_get(8)?,
        event_id: row.try_get(9)?,
        attributes,
    })
}

impl facegate_core::BulkJobStore for PgStore {
    fn create_bulk_job(&self, job: &BulkJob, records: &[BulkRecord]) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO bulk_jobs (id, tenant_id, created_at) VALUES ($1, $2, $3)",
                &[&job.id, &job.tenant_id, &job.created_at],
            )?;
            // One statement per batch of records, as arrays: a 100,000-record job is 20 round trips.
            for batch in records.chunks(INSERT_BATCH) {
                let seqs: Vec<i64> = batch.iter().map(|r| to_i64(r.seq)).collect();
                let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
                let filenames: Vec<&str> = batch.iter().map(|r| r.filename.as_str()).collect();
                let tags = batch
                    .iter()
                    .map(|r| serde_json::to_string(&r.tags).map_err(|e| StoreError::Inconsistent(e.to_string())))
                    .collect::<Result<Vec<String>>>()?;
                let subjects: Vec<&str> = batch.iter().map(|r| r.subject_id.as_str()).collect();
                tx.execute(
                    "INSERT INTO bulk_records (job_id, seq, id, filename, tags_json, subject_id) \
                     SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[])",
                    &[&job.id, &seqs, &ids, &filenames, &tags, &subjects],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn bulk_job(&self, tenant_id: &str, job_id: &str) -> facegate_core::Result<Option<BulkJob>> {
        let row = self
            .conn()?
            .query_opt(
                "SELECT id, tenant_id, created_at FROM bulk_jobs WHERE id = $1 AND tenant_id = $2",
                &[&job_id, &tenant_id],
            )
            .map_err(StoreError::from)?;
        Ok(row.map(|r| BulkJob { id: r.get(0), tenant_id: r.get(1), created_at: r.get(2) }))
    }

    fn bulk_records(&self, job_id: &str, after: Option<u64>, limit: usize) -> facegate_core::Result<Vec<BulkRecord>> {
        let after = after.map_or(-1, to_i64);
        let rows = self
            .conn()?
            .query(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM bulk_records WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ),
                &[&job_id, &after, &to_i64(limit)],
            )
            .map_err(StoreError::from)?;
        Ok(rows.iter().map(record_from_row).collect::<Result<_>>()?)
    }

    fn list_bulk_jobs(&self, tenant_id: &str, limit: usize) -> facegate_core::Result<Vec<BulkJobSummary>> {
        let (success, failed) =
            (RegisterStatus::name(Some(RegisterStatus::Success)), RegisterStatus::name(Some(RegisterStatus::Failed)));
        let rows = self
            .conn()?
            .query(
                "SELECT j.id, j.tenant_id, j.created_at, COUNT(r.seq), \
                     COALESCE(SUM(CASE WHEN r.processed THEN 1 ELSE 0 END), 0)::BIGINT, \
                     COALESCE(SUM(CASE WHEN r.processed AND r.register_status = $3 THEN 1 ELSE 0 END), 0)::BIGINT, \
                     COALESCE(SUM(CASE WHEN r.processed AND r.register_status = $4 THEN 1 ELSE 0 END), 0)::BIGINT \
                 FROM (SELECT id, tenant_id, created_at FROM bulk_jobs WHERE tenant_id = $1 \
                       ORDER BY created_at DESC, id DESC LIMIT $2) j \
                 LEFT JOIN bulk_records r ON r.job_id = j.id \
                 GROUP BY j.id, j.tenant_id, j.created_at ORDER BY j.created_at DESC, j.id DESC",
                &[&tenant_id, &to_i64(limit), &success, &failed],
            )
            .map_err(StoreError::from)?;
        Ok(rows
            .iter()
            .map(|r| BulkJobSummary {
                job: BulkJob { id: r.get(0), tenant_id: r.get(1), created_at: r.get(2) },
                records: to_u64(r.get(3)),
                processed: to_u64(r.get(4)),
                succeeded: to_u64(r.get(5)),
                failed: to_u64(r.get(6)),
            })
            .collect())
    }

    fn pending_bulk_records(&self, per_tenant: usize) -> facegate_core::Result<Vec<PendingRecord>> {
        Ok(self.claim_bulk_records(per_tenant)?)
    }

    fn release_bulk_records(&self) -> facegate_core::Result<()> {
        self.conn()?
            .execute(
                "UPDATE bulk_records SET claimed_by = NULL, claim_expires = NULL \
                 WHERE claimed_by = $1 AND NOT processed",
                &[&self.node_id],
            )
            .map_err(StoreError::from)?;
        Ok(())
    }

    fn queued_bulk_records(&self, tenant_id: &str) -> facegate_core::Result<u64> {
        let row = self
            .conn()?
            .query_one(
                "SELECT COUNT(*) FROM bulk_records r JOIN bulk_jobs j ON j.id = r.job_id \
                 WHERE j.tenant_id = $1 AND NOT r.processed",
                &[&tenant_id],
            )
            .map_err(StoreError::from)?;
        Ok(to_u64(row.get(0)))
    }

    fn save_bulk_record(&self, job_id: &str, record: &BulkRecord) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            update_record(&mut tx, job_id, record)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn register_bulk_record(
        &self,
        subject: &Subject,
        sample: &NewSample,
        tags: &[String],
        job_id: &str,
        record: &BulkRecord,
    ) -> facegate_core::Result<()> {
        Ok(self.create_subject_with(subject, Some(sample), Some(tags), |tx| update_record(tx, job_id, record))?)
    }
}
