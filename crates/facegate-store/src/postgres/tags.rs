//! Tags and the tag labels of subjects in PostgreSQL.

use postgres::Transaction;

use super::changes::{self, Change, Kind};
use super::PgStore;
use crate::error::{pg_unique_violation, to_core, Result, StoreError};

impl facegate_core::TagStore for PgStore {
    fn create_tag(&self, tenant_id: &str, name: &str, max_tags: usize) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // One tag creation per tenant at a time across nodes, so the count below holds.
            tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&tenant_id])?;
            let exists = tx.query_opt("SELECT 1 FROM tags WHERE tenant_id = $1 AND name = $2", &[&tenant_id, &name])?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!("tag '{name}' already exists")));
            }
            let count: i64 = tx.query_one("SELECT COUNT(*) FROM tags WHERE tenant_id = $1", &[&tenant_id])?.get(0);
            if usize::try_from(count).unwrap_or(usize::MAX) >= max_tags {
                return Err(StoreError::LimitReached(format!("the limit of {max_tags} tags is reached")));
            }
            tx.execute(
                "INSERT INTO tags (tenant_id, name, created_at) VALUES ($1, $2, $3)",
                &[&tenant_id, &name, &facegate_core::service::now_rfc3339()],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn rename_tag(&self, tenant_id: &str, old_name: &str, new_name: &str) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let changed = tx
                .execute(
                    "UPDATE tags SET name = $3 WHERE tenant_id = $1 AND name = $2",
                    &[&tenant_id, &old_name, &new_name],
                )
                .map_err(|e| match pg_unique_violation(&e) {
                    true => StoreError::Conflict(format!("tag '{new_name}' already exists")),
                    false => e.into(),
                })?;
            if changed == 0 {
                return Err(StoreError::NotFound("tag"));
            }
            // Subjects follow a rename, so searches by the new name still find them; a subject
            // that carries both names keeps both rows, as SQLite's UPDATE OR IGNORE does.
            tx.execute(
                "UPDATE subject_tags t SET tag = $3 WHERE t.tenant_id = $1 AND t.tag = $2 AND NOT EXISTS \
                 (SELECT 1 FROM subject_tags o WHERE o.subject_id = t.subject_id AND o.tag = $3)",
                &[&tenant_id, &old_name, &new_name],
            )?;
            let change = Change { tenant_id, old_name: Some(old_name), new_name: Some(new_name), ..Change::default() };
            changes::commit_with(tx, &[(Kind::TagRenamed, change)])
        })
    }

    fn delete_tag(&self, tenant_id: &str, name: &str) -> facegate_core::Result<bool> {
        // Subjects keep their labels, so no node's index changes: nothing to log.
        let deleted = self
            .conn()?
            .execute("DELETE FROM tags WHERE tenant_id = $1 AND name = $2", &[&tenant_id, &name])
            .map_err(StoreError::from)?;
        Ok(deleted > 0)
    }

    fn list_tags(&self, tenant_id: &str) -> facegate_core::Result<Vec<String>> {
        let rows = self
            .conn()?
            .query("SELECT name FROM tags WHERE tenant_id = $1 ORDER BY ordinal", &[&tenant_id])
            .map_err(StoreError::from)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn set_subject_tags(&self, tenant_id: &str, subject_id: &str, tags: &[String]) -> facegate_core::Result<()> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let owned = tx.query_opt(
                "SELECT 1 FROM subjects WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
                &[&subject_id, &tenant_id],
            )?;
            if owned.is_none() {
                return Err(StoreError::NotFound("subject"));
            }
            replace_subject_tags(&mut tx, tenant_id, subject_id, tags)?;
            let change = Change { tenant_id, subject_id: Some(subject_id), ..Change::default() };
            changes::commit_with(tx, &[(Kind::SubjectTagsSet, change)])
        })
    }

    fn subject_tags(&self, tenant_id: &str, subject_id: &str) -> facegate_core::Result<Vec<String>> {
        let rows = self
            .conn()?
            .query(
                "SELECT tag FROM subject_tags WHERE tenant_id = $1 AND subject_id = $2 ORDER BY ordinal",
                &[&tenant_id, &subject_id],
            )
            .map_err(StoreError::from)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn for_each_subject_tags(&self, visit: &mut dyn FnMut(&str, &str, Vec<String>)) -> facegate_core::Result<()> {
        use postgres::fallible_iterator::FallibleIterator;
        to_core(|| {
            let mut conn = self.conn()?;
            let mut rows = conn.query_raw(
                "SELECT tenant_id, subject_id, tag FROM subject_tags ORDER BY tenant_id, subject_id, ordinal",
                std::iter::empty::<&str>(),
            )?;
            let mut grouped = crate::tag_rows::SubjectTags::default();
            while let Some(row) = rows.next()? {
                grouped.push(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, visit);
            }
            grouped.finish(visit);
            Ok(())
        })
    }
}

/// Replaces a subject's tag labels inside `tx`; repeated names are kept once. Each must name one
/// of the tenant's tags.
pub(super) fn replace_subject_tags(
    tx: &mut Transaction<'_>,
    tenant_id: &str,
    subject_id: &str,
    tags: &[String],
) -> Result<()> {
    // The service checks the names before its inference, but a rename or delete of the tag on any
    // node may commit in between, and a rename carries over only the labels that exist when it
    // runs: the label would name a tag that is gone. Checked here, with the tag row share-locked
    // until commit, a rename either waits for this write (and carries its label) or has already
    // committed (and the write is refused).
    for tag in tags {
        let found =
            tx.query_opt("SELECT 1 FROM tags WHERE tenant_id = $1 AND name = $2 FOR SHARE", &[&tenant_id, tag])?;
        if found.is_none() {
            return Err(StoreError::UnknownTag(tag.clone()));
        }
    }
    tx.execute("DELETE FROM subject_tags WHERE subject_id = $1", &[&subject_id])?;
    for tag in tags {
        tx.execute(
            "INSERT INTO subject_tags (subject_id, tenant_id, tag) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&subject_id, &tenant_id, tag],
        )?;
    }
    Ok(())
}
