//! Sightings and unknown people in PostgreSQL (issue 29), shared by every node. As SQLite's
//! (`sqlite/unknown.rs`), with a promotion's new samples in the change log, so that every node
//! indexes the new subject.

use facegate_core::{
    BoundingBox, NewSample, NewSighting, Sighting, SightingFace, SightingPurge, Subject, Template, UnknownPerson,
};
use postgres::fallible_iterator::FallibleIterator;
use postgres::Transaction;

use super::changes::{self, Change, Kind};
use super::gallery::insert_subject;
use super::{to_i64, to_u64, PgStore};
use crate::error::{pg_unique_violation, to_core, Result, StoreError};
use crate::sightings::{open_sighting_template, seal_sighting, StoredFace, STORED_FACE};
use facegate_core::service::now_unix_ms;

/// Whether the tenant has the unknown person; takes its row lock, so that a merge, split, delete
/// or promotion of it waits for this transaction (and this one for theirs).
fn lock_person(tx: &mut Transaction<'_>, tenant_id: &str, id: &str) -> Result<bool> {
    Ok(tx
        .query_opt("SELECT 1 FROM unknown_people WHERE tenant_id = $1 AND id = $2 FOR UPDATE", &[&tenant_id, &id])?
        .is_some())
}

/// The change that makes every node load the tenant's sightings anew.
pub(super) fn changed(tenant_id: &str) -> (Kind, Change<'_>) {
    (Kind::UnknownPeopleChanged, Change { tenant_id, ..Change::default() })
}

/// Deletes every sighting and unknown person of a tenant, inside the caller's transaction.
pub(super) fn delete_all_sightings(tx: &mut Transaction<'_>, tenant_id: &str) -> Result<SightingPurge> {
    let sightings = tx.execute("DELETE FROM sightings WHERE tenant_id = $1", &[&tenant_id])?;
    let unknown_people = tx.execute("DELETE FROM unknown_people WHERE tenant_id = $1", &[&tenant_id])?;
    Ok(SightingPurge { sightings, unknown_people })
}

fn insert_person(tx: &mut Transaction<'_>, tenant_id: &str, id: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO unknown_people (id, tenant_id, created_unix_ms) VALUES ($1, $2, $3)",
        &[&id, &tenant_id, &now_unix_ms()],
    )
    .map_err(|e| match pg_unique_violation(&e) {
        true => StoreError::Conflict(format!("an unknown person with id '{id}' already exists")),
        false => e.into(),
    })?;
    Ok(())
}

fn person_from_row(row: &postgres::Row, tenant_id: &str) -> UnknownPerson {
    UnknownPerson {
        id: row.get(0),
        tenant_id: tenant_id.to_owned(),
        sightings: to_u64(row.get(1)),
        first_seen_unix_ms: row.get(2),
        last_seen_unix_ms: row.get(3),
    }
}

const PERSON_SUMMARY: &str = "SELECT p.id, COUNT(s.id), MIN(s.seen_unix_ms), MAX(s.seen_unix_ms) \
     FROM unknown_people p JOIN sightings s ON s.unknown_person_id = p.id";

impl facegate_core::UnknownFaceStore for PgStore {
    fn keep_sighting(&self, sighting: &NewSighting, new_person: bool) -> facegate_core::Result<bool> {
        to_core(|| {
            let sealed = seal_sighting(sighting, self.key.as_ref())?;
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // FOR SHARE: turning the setting off (an UPDATE of this row) waits for this keep, and
            // then deletes what it kept; a keep after it sees the setting off.
            let retention = tx.query_opt(
                "SELECT unknown_faces_retention_secs FROM tenants WHERE id = $1 FOR SHARE",
                &[&sighting.tenant_id],
            )?;
            let Some(retention) = retention else { return Err(StoreError::NotFound("tenant")) };
            if retention.get::<_, Option<i64>>(0).is_none() {
                return Ok(false);
            }
            let person = &sighting.unknown_person_id;
            if new_person {
                insert_person(&mut tx, &sighting.tenant_id, person)?;
            } else if tx
                .query_opt(
                    "SELECT 1 FROM unknown_people WHERE tenant_id = $1 AND id = $2 FOR SHARE",
                    &[&sighting.tenant_id, person],
                )?
                .is_none()
            {
                return Err(StoreError::NotFound("unknown person"));
            }
            tx.execute(
                "INSERT INTO sightings (id, tenant_id, unknown_person_id, model_id, embedding, embedding_encoding, \
                 crop, quality, seen_unix_ms, request_id, crop_face_left, crop_face_top, crop_face_right, \
                 crop_face_bottom) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                &[
                    &sighting.id,
                    &sighting.tenant_id,
                    person,
                    &sighting.model_id,
                    &sealed.template,
                    &sealed.encoding,
                    &sealed.crop,
                    &sighting.quality,
                    &sighting.seen_unix_ms,
                    &sighting.request_id,
                    &sighting.crop_face.left,
                    &sighting.crop_face.top,
                    &sighting.crop_face.right,
                    &sighting.crop_face.bottom,
                ],
            )
            .map_err(|e| match pg_unique_violation(&e) {
                true => StoreError::Conflict(format!("a sighting with id '{}' already exists", sighting.id)),
                false => e.into(),
            })?;
            let kept = Change {
                tenant_id: &sighting.tenant_id,
                subject_id: Some(person),
                sample_id: Some(&sighting.id),
                ..Change::default()
            };
            changes::commit_with(tx, &[(Kind::SightingKept, kept)])?;
            Ok(true)
        })
    }

    fn for_each_sighting_template(
        &self,
        tenant_id: Option<&str>,
        model_id: &str,
        visit: &mut dyn FnMut(Template),
    ) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            // A portal in a transaction streams the rows instead of holding them all at once.
            let mut tx = conn.transaction()?;
            let mut rows = tx.query_raw(
                "SELECT tenant_id, unknown_person_id, id, embedding, embedding_encoding FROM sightings \
                 WHERE model_id = $1 AND ($2::TEXT IS NULL OR tenant_id = $2) ORDER BY seen_unix_ms, id",
                [&model_id as &(dyn postgres::types::ToSql + Sync), &tenant_id],
            )?;
            while let Some(row) = rows.next()? {
                let sighting_id: String = row.get(2);
                let blob: &[u8] = row.get(3);
                let encoding: &str = row.get(4);
                let Some(embedding) = open_sighting_template(blob, encoding, &sighting_id, self.key.as_ref())? else {
                    tracing::warn!(sighting = %sighting_id, encoding, "skipping an undecodable sighting template");
                    continue;
                };
                visit(Template { tenant_id: row.get(0), subject_id: row.get(1), sample_id: sighting_id, embedding });
            }
            drop(rows);
            tx.commit()?;
            Ok(())
        })
    }

    /// In byte order of the ids ("C" collation), as on SQLite.
    fn list_unknown_people(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> facegate_core::Result<Vec<UnknownPerson>> {
        to_core(|| {
            let rows = self.conn()?.query(
                &format!(
                    "{PERSON_SUMMARY} WHERE p.tenant_id = $1 AND p.id COLLATE \"C\" > $2 GROUP BY p.id \
                     ORDER BY p.id COLLATE \"C\" LIMIT $3"
                ),
                &[&tenant_id, &after.unwrap_or(""), &to_i64(limit)],
            )?;
            Ok(rows.iter().map(|r| person_from_row(r, tenant_id)).collect())
        })
    }

    fn unknown_person(&self, tenant_id: &str, unknown_person_id: &str) -> facegate_core::Result<Option<UnknownPerson>> {
        to_core(|| {
            let row = self.conn()?.query_opt(
                &format!("{PERSON_SUMMARY} WHERE p.tenant_id = $1 AND p.id = $2 GROUP BY p.id"),
                &[&tenant_id, &unknown_person_id],
            )?;
            Ok(row.map(|r| person_from_row(&r, tenant_id)))
        })
    }

    fn count_unknown_people(&self, tenant_id: &str) -> facegate_core::Result<u64> {
        to_core(|| {
            let row =
                self.conn()?.query_one("SELECT COUNT(*) FROM unknown_people WHERE tenant_id = $1", &[&tenant_id])?;
            Ok(to_u64(row.get(0)))
        })
    }

    fn sightings_of(&self, tenant_id: &str, unknown_person_id: &str) -> facegate_core::Result<Vec<Sighting>> {
        to_core(|| {
            let rows = self.conn()?.query(
                "SELECT id, unknown_person_id, model_id, quality, seen_unix_ms, request_id FROM sightings \
                 WHERE tenant_id = $1 AND unknown_person_id = $2 ORDER BY seen_unix_ms, id COLLATE \"C\"",
                &[&tenant_id, &unknown_person_id],
            )?;
            Ok(rows
                .iter()
                .map(|r| Sighting {
                    id: r.get(0),
                    unknown_person_id: r.get(1),
                    model_id: r.get(2),
                    quality: r.get(3),
                    seen_unix_ms: r.get(4),
                    request_id: r.get(5),
                })
                .collect())
        })
    }

    fn sighting_face(&self, tenant_id: &str, sighting_id: &str) -> facegate_core::Result<Option<SightingFace>> {
        to_core(|| {
            let row = self.conn()?.query_opt(
                &format!("SELECT {STORED_FACE} FROM sightings WHERE tenant_id = $1 AND id = $2"),
                &[&tenant_id, &sighting_id],
            )?;
            row.map(|r| {
                StoredFace {
                    crop: r.get(0),
                    crop_face: BoundingBox { left: r.get(1), top: r.get(2), right: r.get(3), bottom: r.get(4) },
                    model_id: r.get(5),
                    template: r.get(6),
                    encoding: r.get(7),
                    unknown_person_id: r.get(8),
                }
                .open(sighting_id, self.key.as_ref())
            })
            .transpose()
        })
    }

    fn merge_unknown_people(&self, tenant_id: &str, into: &str, from: &str) -> facegate_core::Result<u64> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // Locked in id order, so that two merges of the same pair cannot deadlock.
            let (first, second) = if into <= from { (into, from) } else { (from, into) };
            if !lock_person(&mut tx, tenant_id, first)? || !lock_person(&mut tx, tenant_id, second)? {
                return Err(StoreError::NotFound("unknown person"));
            }
            if into == from {
                return Err(StoreError::Invalid("an unknown person cannot be merged into itself".into()));
            }
            let moved = tx.execute(
                "UPDATE sightings SET unknown_person_id = $2 WHERE tenant_id = $1 AND unknown_person_id = $3",
                &[&tenant_id, &into, &from],
            )?;
            tx.execute("DELETE FROM unknown_people WHERE tenant_id = $1 AND id = $2", &[&tenant_id, &from])?;
            changes::commit_with(tx, &[changed(tenant_id)])?;
            Ok(moved)
        })
    }

    fn split_sightings(
        &self,
        tenant_id: &str,
        from: &str,
        sighting_ids: &[String],
        new_person_id: &str,
    ) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            if !lock_person(&mut tx, tenant_id, from)? {
                return Err(StoreError::NotFound("unknown person"));
            }
            let mut wanted: Vec<&str> = sighting_ids.iter().map(String::as_str).collect();
            wanted.sort_unstable();
            wanted.dedup();
            let total: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM sightings WHERE tenant_id = $1 AND unknown_person_id = $2",
                    &[&tenant_id, &from],
                )?
                .get(0);
            let found: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM sightings WHERE tenant_id = $1 AND unknown_person_id = $2 AND id = ANY($3)",
                    &[&tenant_id, &from, &wanted],
                )?
                .get(0);
            if to_u64(found) != wanted.len() as u64 {
                return Err(StoreError::NotFound("sighting"));
            }
            if wanted.is_empty() || found == total {
                return Err(StoreError::Invalid("a split must leave some sightings, and take some".into()));
            }
            insert_person(&mut tx, tenant_id, new_person_id)?;
            tx.execute(
                "UPDATE sightings SET unknown_person_id = $2 WHERE tenant_id = $1 AND id = ANY($3)",
                &[&tenant_id, &new_person_id, &wanted],
            )?;
            changes::commit_with(tx, &[changed(tenant_id)])?;
            Ok(())
        })
    }

    fn delete_unknown_person(
        &self,
        tenant_id: &str,
        unknown_person_id: &str,
    ) -> facegate_core::Result<Option<SightingPurge>> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            if !lock_person(&mut tx, tenant_id, unknown_person_id)? {
                return Ok(None);
            }
            let sightings = tx.execute(
                "DELETE FROM sightings WHERE tenant_id = $1 AND unknown_person_id = $2",
                &[&tenant_id, &unknown_person_id],
            )?;
            let unknown_people = tx.execute(
                "DELETE FROM unknown_people WHERE tenant_id = $1 AND id = $2",
                &[&tenant_id, &unknown_person_id],
            )?;
            changes::commit_with(tx, &[changed(tenant_id)])?;
            Ok(Some(SightingPurge { sightings, unknown_people }))
        })
    }

    fn promote_unknown_person(
        &self,
        tenant_id: &str,
        unknown_person_id: &str,
        subject: &Subject,
        samples: &[NewSample],
    ) -> facegate_core::Result<()> {
        to_core(|| {
            if subject.tenant_id != tenant_id {
                return Err(StoreError::NotFound("unknown person"));
            }
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            if !lock_person(&mut tx, tenant_id, unknown_person_id)? {
                return Err(StoreError::NotFound("unknown person"));
            }
            insert_subject(&mut tx, subject)?;
            let mut log = vec![changed(tenant_id)];
            for ns in samples {
                self.insert_sample(&mut tx, subject, ns)?;
                log.push((
                    Kind::SampleAdded,
                    Change {
                        tenant_id,
                        subject_id: Some(&subject.id),
                        sample_id: Some(&ns.sample.id),
                        ..Change::default()
                    },
                ));
            }
            tx.execute(
                "DELETE FROM sightings WHERE tenant_id = $1 AND unknown_person_id = $2",
                &[&tenant_id, &unknown_person_id],
            )?;
            tx.execute(
                "DELETE FROM unknown_people WHERE tenant_id = $1 AND id = $2",
                &[&tenant_id, &unknown_person_id],
            )?;
            changes::commit_with(tx, &log)
        })
    }

    fn purge_expired_sightings(&self, now_unix_ms: i64) -> facegate_core::Result<Vec<(String, SightingPurge)>> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let tenants: Vec<(String, i64)> = tx
                .query(
                    "SELECT id, unknown_faces_retention_secs FROM tenants \
                     WHERE unknown_faces_retention_secs IS NOT NULL ORDER BY id",
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let mut purged = Vec::new();
            for (tenant_id, secs) in tenants {
                let cutoff = now_unix_ms.saturating_sub(secs.saturating_mul(1000));
                let sightings = tx.execute(
                    "DELETE FROM sightings WHERE tenant_id = $1 AND seen_unix_ms < $2",
                    &[&tenant_id, &cutoff],
                )?;
                if sightings > 0 {
                    let unknown_people = tx.execute(
                        "DELETE FROM unknown_people WHERE tenant_id = $1 \
                         AND NOT EXISTS (SELECT 1 FROM sightings s WHERE s.unknown_person_id = unknown_people.id)",
                        &[&tenant_id],
                    )?;
                    purged.push((tenant_id, SightingPurge { sightings, unknown_people }));
                }
            }
            let log: Vec<(Kind, Change<'_>)> = purged.iter().map(|(tenant_id, _)| changed(tenant_id)).collect();
            changes::commit_with(tx, &log)?;
            Ok(purged)
        })
    }
}
