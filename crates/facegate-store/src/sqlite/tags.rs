//! Tags and the tag labels of subjects in SQLite.

use rusqlite::{params, OptionalExtension, Transaction};

use super::SqliteStore;
use crate::error::{to_core, unique_violation, Result, StoreError};

impl facegate_core::TagStore for SqliteStore {
    fn create_tag(&self, tenant_id: &str, name: &str, max_tags: usize) -> facegate_core::Result<()> {
        Ok(self.write(|tx| {
            let count: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM tags WHERE tenant_id = ?1")?
                .query_row([tenant_id], |r| r.get(0))?;
            let exists = tx
                .prepare_cached("SELECT 1 FROM tags WHERE tenant_id = ?1 AND name = ?2")?
                .query_row([tenant_id, name], |_| Ok(()))
                .optional()?
                .is_some();
            if exists {
                return Err(StoreError::Conflict(format!("tag '{name}' already exists")));
            }
            if usize::try_from(count).unwrap_or(usize::MAX) >= max_tags {
                return Err(StoreError::LimitReached(format!("the limit of {max_tags} tags is reached")));
            }
            tx.prepare_cached("INSERT INTO tags (tenant_id, name, created_at) VALUES (?1, ?2, ?3)")?
                .execute(params![tenant_id, name, facegate_core::service::now_rfc3339()])?;
            Ok(())
        })?)
    }

    fn rename_tag(&self, tenant_id: &str, old_name: &str, new_name: &str) -> facegate_core::Result<()> {
        Ok(self.write(|tx| {
            let changed = tx
                .prepare_cached("UPDATE tags SET name = ?3 WHERE tenant_id = ?1 AND name = ?2")?
                .execute(params![tenant_id, old_name, new_name])
                .map_err(|e| match unique_violation(&e) {
                    Some(_) => StoreError::Conflict(format!("tag '{new_name}' already exists")),
                    None => e.into(),
                })?;
            if changed == 0 {
                return Err(StoreError::NotFound("tag"));
            }
            // Subjects follow a rename, so searches by the new name still find them.
            tx.prepare_cached("UPDATE OR IGNORE subject_tags SET tag = ?3 WHERE tenant_id = ?1 AND tag = ?2")?
                .execute(params![tenant_id, old_name, new_name])?;
            Ok(())
        })?)
    }

    fn delete_tag(&self, tenant_id: &str, name: &str) -> facegate_core::Result<bool> {
        Ok(self.write(|tx| {
            Ok(tx.prepare_cached("DELETE FROM tags WHERE tenant_id = ?1 AND name = ?2")?.execute([tenant_id, name])?
                > 0)
        })?)
    }

    fn list_tags(&self, tenant_id: &str) -> facegate_core::Result<Vec<String>> {
        let conn = self.reader()?;
        let tags = conn
            .prepare_cached("SELECT name FROM tags WHERE tenant_id = ?1 ORDER BY rowid")
            .and_then(|mut stmt| stmt.query_map([tenant_id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(StoreError::from)?;
        Ok(tags)
    }

    fn set_subject_tags(&self, tenant_id: &str, subject_id: &str, tags: &[String]) -> facegate_core::Result<()> {
        Ok(self.write(|tx| {
            let owned = tx
                .prepare_cached("SELECT 1 FROM subjects WHERE id = ?1 AND tenant_id = ?2")?
                .query_row([subject_id, tenant_id], |_| Ok(()))
                .optional()?
                .is_some();
            if !owned {
                return Err(StoreError::NotFound("subject"));
            }
            replace_subject_tags(tx, tenant_id, subject_id, tags)?;
            Ok(())
        })?)
    }

    fn subject_tags(&self, tenant_id: &str, subject_id: &str) -> facegate_core::Result<Vec<String>> {
        let conn = self.reader()?;
        let tags = conn
            .prepare_cached("SELECT tag FROM subject_tags WHERE tenant_id = ?1 AND subject_id = ?2 ORDER BY rowid")
            .and_then(|mut stmt| {
                stmt.query_map([tenant_id, subject_id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()
            })
            .map_err(StoreError::from)?;
        Ok(tags)
    }

    fn for_each_subject_tags(&self, visit: &mut dyn FnMut(&str, &str, Vec<String>)) -> facegate_core::Result<()> {
        to_core(|| {
            let conn = self.reader()?;
            let mut stmt = conn
                .prepare("SELECT tenant_id, subject_id, tag FROM subject_tags ORDER BY tenant_id, subject_id, rowid")?;
            let mut rows = stmt.query([])?;
            let mut grouped = crate::tag_rows::SubjectTags::default();
            while let Some(row) = rows.next()? {
                grouped.push(row.get(0)?, row.get(1)?, row.get(2)?, visit);
            }
            grouped.finish(visit);
            Ok(())
        })
    }
}

/// Replaces a subject's tag labels inside `tx`; repeated names are kept once. Each must name one
/// of the tenant's tags.
pub(super) fn replace_subject_tags(
    tx: &Transaction<'_>,
    tenant_id: &str,
    subject_id: &str,
    tags: &[String],
) -> Result<()> {
    // The service checks the names before its inference, but a rename or delete of the tag may
    // commit in between, and a rename carries over only the labels that exist when it runs: the
    // label would name a tag that is gone. Inside the write (one writer at a time) the check holds.
    let mut known = tx.prepare_cached("SELECT 1 FROM tags WHERE tenant_id = ?1 AND name = ?2")?;
    for tag in tags {
        if !known.exists(params![tenant_id, tag])? {
            return Err(StoreError::UnknownTag(tag.clone()));
        }
    }
    tx.prepare_cached("DELETE FROM subject_tags WHERE subject_id = ?1")?.execute([subject_id])?;
    let mut insert =
        tx.prepare_cached("INSERT OR IGNORE INTO subject_tags (subject_id, tenant_id, tag) VALUES (?1, ?2, ?3)")?;
    for tag in tags {
        insert.execute(params![subject_id, tenant_id, tag])?;
    }
    Ok(())
}
