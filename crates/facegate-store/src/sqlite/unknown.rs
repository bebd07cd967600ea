//! Sightings and unknown people in SQLite (issue 29). Crops live in their rows, not in image
//! files, so that a deletion is one transaction that `secure_delete` zeroes, and the WAL is
//! scrubbed after it as after a subject's.

use facegate_core::{
    BoundingBox, NewSample, NewSighting, Sighting, SightingFace, SightingPurge, Subject, Template, UnknownPerson,
};
use rusqlite::{params, OptionalExtension, Transaction};

use super::gallery::{insert_sample, insert_subject};
use super::{scrub_wal, SqliteStore};
use crate::error::{to_core, unique_violation, Result, StoreError};
use crate::sightings::{open_sighting_template, seal_sighting, StoredFace, STORED_FACE};
use facegate_core::service::now_unix_ms;

/// Counts the rows of `sql` (a `SELECT COUNT(*)`).
fn count(tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> Result<u64> {
    let n: i64 = tx.prepare_cached(sql)?.query_row(params, |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn person_exists(tx: &Transaction<'_>, tenant_id: &str, id: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM unknown_people WHERE tenant_id = ?1 AND id = ?2)")?
        .query_row([tenant_id, id], |r| r.get(0))?)
}

/// Deletes the tenant's unknown people left without a sighting; returns how many.
fn delete_empty_people(tx: &Transaction<'_>, tenant_id: &str) -> Result<u64> {
    Ok(tx
        .prepare_cached(
            "DELETE FROM unknown_people WHERE tenant_id = ?1 \
             AND NOT EXISTS (SELECT 1 FROM sightings s WHERE s.unknown_person_id = unknown_people.id)",
        )?
        .execute([tenant_id])? as u64)
}

/// Deletes every sighting and unknown person of a tenant, inside the caller's transaction.
pub(super) fn delete_all_sightings(tx: &Transaction<'_>, tenant_id: &str) -> Result<SightingPurge> {
    let sightings = tx.prepare_cached("DELETE FROM sightings WHERE tenant_id = ?1")?.execute([tenant_id])? as u64;
    let unknown_people =
        tx.prepare_cached("DELETE FROM unknown_people WHERE tenant_id = ?1")?.execute([tenant_id])? as u64;
    Ok(SightingPurge { sightings, unknown_people })
}

fn person_from_row(row: &rusqlite::Row<'_>, tenant_id: &str) -> rusqlite::Result<UnknownPerson> {
    Ok(UnknownPerson {
        id: row.get(0)?,
        tenant_id: tenant_id.to_owned(),
        sightings: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
        first_seen_unix_ms: row.get(2)?,
        last_seen_unix_ms: row.get(3)?,
    })
}

const PERSON_SUMMARY: &str = "SELECT p.id, COUNT(s.id), MIN(s.seen_unix_ms), MAX(s.seen_unix_ms) \
     FROM unknown_people p JOIN sightings s ON s.unknown_person_id = p.id";

impl SqliteStore {
    /// Runs a write that deletes sightings, then scrubs the WAL of their old pages.
    fn deleting<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let out = self.write(f)?;
        scrub_wal(&self.writer.lock());
        Ok(out)
    }
}

impl facegate_core::UnknownFaceStore for SqliteStore {
    fn keep_sighting(&self, sighting: &NewSighting, new_person: bool) -> facegate_core::Result<bool> {
        to_core(|| {
            let sealed = seal_sighting(sighting, self.key.as_ref())?;
            self.write(|tx| {
                let retention: Option<Option<i64>> = tx
                    .prepare_cached("SELECT unknown_faces_retention_secs FROM tenants WHERE id = ?1")?
                    .query_row([&sighting.tenant_id], |r| r.get(0))
                    .optional()?;
                match retention {
                    None => return Err(StoreError::NotFound("tenant")),
                    Some(None) => return Ok(false),
                    Some(Some(_)) => {}
                }
                let person = &sighting.unknown_person_id;
                if new_person {
                    tx.prepare_cached(
                        "INSERT INTO unknown_people (id, tenant_id, created_unix_ms) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![person, sighting.tenant_id, now_unix_ms()])
                    .map_err(|e| match unique_violation(&e) {
                        Some(_) => StoreError::Conflict(format!("an unknown person with id '{person}' already exists")),
                        None => e.into(),
                    })?;
                } else if !person_exists(tx, &sighting.tenant_id, person)? {
                    return Err(StoreError::NotFound("unknown person"));
                }
                tx.prepare_cached(
                    "INSERT INTO sightings (id, tenant_id, unknown_person_id, model_id, embedding, \
                     embedding_encoding, crop, quality, seen_unix_ms, request_id, crop_face_left, crop_face_top, \
                     crop_face_right, crop_face_bottom) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )?
                .execute(params![
                    sighting.id,
                    sighting.tenant_id,
                    person,
                    sighting.model_id,
                    sealed.template,
                    sealed.encoding,
                    sealed.crop,
                    sighting.quality,
                    sighting.seen_unix_ms,
                    sighting.request_id,
                    sighting.crop_face.left,
                    sighting.crop_face.top,
                    sighting.crop_face.right,
                    sighting.crop_face.bottom
                ])
                .map_err(|e| match unique_violation(&e) {
                    Some(_) => StoreError::Conflict(format!("a sighting with id '{}' already exists", sighting.id)),
                    None => e.into(),
                })?;
                Ok(true)
            })
        })
    }

    fn for_each_sighting_template(
        &self,
        tenant_id: Option<&str>,
        model_id: &str,
        visit: &mut dyn FnMut(Template),
    ) -> facegate_core::Result<()> {
        to_core(|| {
            let conn = self.reader()?;
            let mut stmt = conn.prepare(
                "SELECT tenant_id, unknown_person_id, id, embedding, embedding_encoding FROM sightings \
                 WHERE model_id = ?1 AND (?2 IS NULL OR tenant_id = ?2) ORDER BY rowid",
            )?;
            let mut rows = stmt.query(params![model_id, tenant_id])?;
            while let Some(row) = rows.next()? {
                let sighting_id: String = row.get(2)?;
                let blob: Vec<u8> = row.get(3)?;
                let encoding: String = row.get(4)?;
                let Some(embedding) = open_sighting_template(&blob, &encoding, &sighting_id, self.key.as_ref())? else {
                    tracing::warn!(sighting = %sighting_id, encoding, "skipping an undecodable sighting template");
                    continue;
                };
                visit(Template { tenant_id: row.get(0)?, subject_id: row.get(1)?, sample_id: sighting_id, embedding });
            }
            Ok(())
        })
    }

    fn list_unknown_people(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> facegate_core::Result<Vec<UnknownPerson>> {
        to_core(|| {
            let conn = self.reader()?;
            let mut stmt = conn.prepare_cached(&format!(
                "{PERSON_SUMMARY} WHERE p.tenant_id = ?1 AND p.id > ?2 GROUP BY p.id ORDER BY p.id LIMIT ?3"
            ))?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows =
                stmt.query_map(params![tenant_id, after.unwrap_or(""), limit], |r| person_from_row(r, tenant_id))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn unknown_person(&self, tenant_id: &str, unknown_person_id: &str) -> facegate_core::Result<Option<UnknownPerson>> {
        to_core(|| {
            let conn = self.reader()?;
            let mut stmt =
                conn.prepare_cached(&format!("{PERSON_SUMMARY} WHERE p.tenant_id = ?1 AND p.id = ?2 GROUP BY p.id"))?;
            Ok(stmt.query_row([tenant_id, unknown_person_id], |r| person_from_row(r, tenant_id)).optional()?)
        })
    }

    fn count_unknown_people(&self, tenant_id: &str) -> facegate_core::Result<u64> {
        to_core(|| {
            let conn = self.reader()?;
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM unknown_people WHERE tenant_id = ?1")?
                .query_row([tenant_id], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn sightings_of(&self, tenant_id: &str, unknown_person_id: &str) -> facegate_core::Result<Vec<Sighting>> {
        to_core(|| {
            let conn = self.reader()?;
            let mut stmt = conn.prepare_cached(
                "SELECT id, unknown_person_id, model_id, quality, seen_unix_ms, request_id FROM sightings \
                 WHERE tenant_id = ?1 AND unknown_person_id = ?2 ORDER BY seen_unix_ms, id",
            )?;
            let rows = stmt.query_map([tenant_id, unknown_person_id], |r| {
                Ok(Sighting {
                    id: r.get(0)?,
                    unknown_person_id: r.get(1)?,
                    model_id: r.get(2)?,
                    quality: r.get(3)?,
                    seen_unix_ms: r.get(4)?,
                    request_id: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn sighting_face(&self, tenant_id: &str, sighting_id: &str) -> facegate_core::Result<Option<SightingFace>> {
        to_core(|| {
            let conn = self.reader()?;
            let stored = conn
                .prepare_cached(&format!("SELECT {STORED_FACE} FROM sightings WHERE tenant_id = ?1 AND id = ?2"))?
                .query_row([tenant_id, sighting_id], |r| {
                    Ok(StoredFace {
                        crop: r.get(0)?,
                        crop_face: BoundingBox { left: r.get(1)?, top: r.get(2)?, right: r.get(3)?, bottom: r.get(4)? },
                        model_id: r.get(5)?,
                        template: r.get(6)?,
                        encoding: r.get(7)?,
                        unknown_person_id: r.get(8)?,
                    })
                })
                .optional()?;
            stored.map(|face| face.open(sighting_id, self.key.as_ref())).transpose()
        })
    }

    fn merge_unknown_people(&self, tenant_id: &str, into: &str, from: &str) -> facegate_core::Result<u64> {
        to_core(|| {
            self.write(|tx| {
                if !person_exists(tx, tenant_id, into)? || !person_exists(tx, tenant_id, from)? {
                    return Err(StoreError::NotFound("unknown person"));
                }
                if into == from {
                    return Err(StoreError::Invalid("an unknown person cannot be merged into itself".into()));
                }
                let moved = tx
                    .prepare_cached(
                        "UPDATE sightings SET unknown_person_id = ?2 WHERE tenant_id = ?1 AND unknown_person_id = ?3",
                    )?
                    .execute([tenant_id, into, from])? as u64;
                tx.prepare_cached("DELETE FROM unknown_people WHERE tenant_id = ?1 AND id = ?2")?
                    .execute([tenant_id, from])?;
                Ok(moved)
            })
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
            self.write(|tx| {
                if !person_exists(tx, tenant_id, from)? {
                    return Err(StoreError::NotFound("unknown person"));
                }
                let wanted: std::collections::BTreeSet<&str> = sighting_ids.iter().map(String::as_str).collect();
                let total = count(
                    tx,
                    "SELECT COUNT(*) FROM sightings WHERE tenant_id = ?1 AND unknown_person_id = ?2",
                    [tenant_id, from],
                )?;
                for id in &wanted {
                    let of_from = count(
                        tx,
                        "SELECT COUNT(*) FROM sightings WHERE tenant_id = ?1 AND unknown_person_id = ?2 AND id = ?3",
                        [tenant_id, from, id],
                    )?;
                    if of_from == 0 {
                        return Err(StoreError::NotFound("sighting"));
                    }
                }
                if wanted.is_empty() || wanted.len() as u64 == total {
                    return Err(StoreError::Invalid("a split must leave some sightings, and take some".into()));
                }
                tx.prepare_cached("INSERT INTO unknown_people (id, tenant_id, created_unix_ms) VALUES (?1, ?2, ?3)")?
                    .execute(params![new_person_id, tenant_id, now_unix_ms()])
                    .map_err(|e| match unique_violation(&e) {
                        Some(_) => {
                            StoreError::Conflict(format!("an unknown person with id '{new_person_id}' already exists"))
                        }
                        None => e.into(),
                    })?;
                let mut update =
                    tx.prepare_cached("UPDATE sightings SET unknown_person_id = ?3 WHERE tenant_id = ?1 AND id = ?2")?;
                for id in wanted {
                    update.execute([tenant_id, id, new_person_id])?;
                }
                Ok(())
            })
        })
    }

    fn delete_unknown_person(
        &self,
        tenant_id: &str,
        unknown_person_id: &str,
    ) -> facegate_core::Result<Option<SightingPurge>> {
        to_core(|| {
            self.deleting(|tx| {
                if !person_exists(tx, tenant_id, unknown_person_id)? {
                    return Ok(None);
                }
                let sightings = tx
                    .prepare_cached("DELETE FROM sightings WHERE tenant_id = ?1 AND unknown_person_id = ?2")?
                    .execute([tenant_id, unknown_person_id])? as u64;
                let unknown_people = tx
                    .prepare_cached("DELETE FROM unknown_people WHERE tenant_id = ?1 AND id = ?2")?
                    .execute([tenant_id, unknown_person_id])? as u64;
                Ok(Some(SightingPurge { sightings, unknown_people }))
            })
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
            let staged = samples
                .iter()
                .map(|ns| self.stage(subject, Some(ns))?.ok_or(StoreError::NotFound("image")))
                .collect::<Result<Vec<_>>>()?;
            self.write_with_images(staged, |tx, blobs| {
                if !person_exists(tx, tenant_id, unknown_person_id)? {
                    return Err(StoreError::NotFound("unknown person"));
                }
                insert_subject(tx, subject)?;
                for (ns, blob) in samples.iter().zip(blobs) {
                    insert_sample(tx, self.key.as_ref(), tenant_id, ns, blob)?;
                }
                tx.prepare_cached("DELETE FROM sightings WHERE tenant_id = ?1 AND unknown_person_id = ?2")?
                    .execute([tenant_id, unknown_person_id])?;
                tx.prepare_cached("DELETE FROM unknown_people WHERE tenant_id = ?1 AND id = ?2")?
                    .execute([tenant_id, unknown_person_id])?;
                Ok(())
            })?;
            scrub_wal(&self.writer.lock());
            Ok(())
        })
    }

    fn purge_expired_sightings(&self, now_unix_ms: i64) -> facegate_core::Result<Vec<(String, SightingPurge)>> {
        to_core(|| {
            let purged = self.write(|tx| {
                let tenants: Vec<(String, i64)> = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT id, unknown_faces_retention_secs FROM tenants \
                         WHERE unknown_faces_retention_secs IS NOT NULL ORDER BY id",
                    )?;
                    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let mut purged = Vec::new();
                for (tenant_id, secs) in tenants {
                    let cutoff = now_unix_ms.saturating_sub(secs.saturating_mul(1000));
                    let sightings = tx
                        .prepare_cached("DELETE FROM sightings WHERE tenant_id = ?1 AND seen_unix_ms < ?2")?
                        .execute(params![tenant_id, cutoff])? as u64;
                    if sightings > 0 {
                        let unknown_people = delete_empty_people(tx, &tenant_id)?;
                        purged.push((tenant_id, SightingPurge { sightings, unknown_people }));
                    }
                }
                Ok(purged)
            })?;
            if !purged.is_empty() {
                scrub_wal(&self.writer.lock());
            }
            Ok(purged)
        })
    }
}
