//! The change log (migration `0011_changes.sql`): triggers append what each write changed, and
//! this process reads it back to keep its index in step and to bring an index snapshot up to
//! date at start ([`facegate_core::ChangeFeed`]).
//!
//! One writer at a time (SQLite's write lock), so changes become visible in `seq` order, as the
//! feed requires. This process's own commits wake [`facegate_core::ChangeFeed::wait_for_change`]
//! at once; another process's (an import beside the server) are found by the next poll.

use std::time::Duration;

use rusqlite::OptionalExtension;

use crate::change_kinds::ChangeRow;
use crate::error::to_core;
use crate::templates::decode_template;

/// Changes deleted per transaction when pruning: about a tenth of a second of the writer lock.
const PRUNE_BATCH: i64 = 50_000;
/// `store_meta` row: the newest `seq` pruned from the log.
const META_PRUNED_THROUGH: &str = "changes_pruned_through";

impl facegate_core::ChangeFeed for super::SqliteStore {
    fn latest_change(&self) -> facegate_core::Result<u64> {
        to_core(|| {
            // The sequence, not MAX(seq): it survives the pruning of every row.
            let seq: Option<i64> = self
                .reader()?
                .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'changes'", [], |r| r.get(0))
                .optional()?;
            Ok(seq.map_or(0, |s| u64::try_from(s).unwrap_or(0)))
        })
    }

    fn changes_after(&self, after: u64, limit: usize) -> facegate_core::Result<Vec<facegate_core::Change>> {
        to_core(|| {
            let conn = self.reader()?;
            let mut stmt = conn.prepare_cached(
                "SELECT seq, tenant_id, kind, subject_id, sample_id, old_name, new_name FROM changes \
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut rows = stmt.query(rusqlite::params![after, limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let read = ChangeRow {
                    seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                    tenant_id: row.get(1)?,
                    kind: row.get(2)?,
                    subject_id: row.get(3)?,
                    sample_id: row.get(4)?,
                    old_name: row.get(5)?,
                    new_name: row.get(6)?,
                };
                out.extend(read.into_change());
            }
            Ok(out)
        })
    }

    fn wait_for_change(&self, timeout: Duration) -> facegate_core::Result<()> {
        self.commits.wait(timeout);
        Ok(())
    }

    fn prune_changes(&self, keep: Duration) -> facegate_core::Result<u64> {
        to_core(|| {
            let keep = i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
            let mut total = 0u64;
            // A batch per transaction: a day of a bulk load is millions of rows, and one delete
            // of them all would hold the writer lock, and every write, for seconds.
            loop {
                let pruned = self.write(|tx| {
                    let through: Option<i64> = tx.query_row(
                        "SELECT MAX(seq) FROM (SELECT seq FROM changes \
                         WHERE at_unix < CAST(strftime('%s', 'now') AS INTEGER) - ?1 ORDER BY seq LIMIT ?2)",
                        [keep, PRUNE_BATCH],
                        |r| r.get(0),
                    )?;
                    let Some(through) = through else { return Ok(0) };
                    let pruned = tx.execute("DELETE FROM changes WHERE seq <= ?1", [through])?;
                    tx.execute(
                        "INSERT INTO store_meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE \
                         SET value = MAX(CAST(store_meta.value AS INTEGER), CAST(excluded.value AS INTEGER))",
                        rusqlite::params![META_PRUNED_THROUGH, through.to_string()],
                    )?;
                    Ok(pruned as u64)
                })?;
                total += pruned;
                if pruned < PRUNE_BATCH as u64 {
                    return Ok(total);
                }
            }
        })
    }

    fn pruned_through(&self) -> facegate_core::Result<u64> {
        to_core(|| {
            let value: Option<String> = self
                .reader()?
                .query_row("SELECT value FROM store_meta WHERE name = ?1", [META_PRUNED_THROUGH], |r| r.get(0))
                .optional()?;
            Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
        })
    }

    fn template(
        &self,
        tenant_id: &str,
        sample_id: &str,
        model_id: &str,
    ) -> facegate_core::Result<Option<facegate_core::Template>> {
        to_core(|| {
            let conn = self.reader()?;
            let row: Option<(String, Vec<u8>, String)> = conn
                .prepare_cached(
                    "SELECT subject_id, embedding, embedding_encoding FROM face_samples \
                     WHERE tenant_id = ?1 AND id = ?2 AND model_id = ?3",
                )?
                .query_row([tenant_id, sample_id, model_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((subject_id, blob, encoding)) = row else { return Ok(None) };
            let embedding = decode_template(&blob, &encoding, &subject_id, self.key.as_ref())?;
            Ok(embedding.map(|embedding| facegate_core::Template {
                tenant_id: tenant_id.to_owned(),
                subject_id,
                sample_id: sample_id.to_owned(),
                embedding,
            }))
        })
    }
}

/// Wakes the change follower when this process commits.
#[derive(Default)]
pub(crate) struct Commits {
    /// Commits so far, and how many the last wait returned after.
    counts: parking_lot::Mutex<(u64, u64)>,
    wake: parking_lot::Condvar,
}

impl Commits {
    pub(crate) fn committed(&self) {
        self.counts.lock().0 += 1;
        self.wake.notify_all();
    }

    /// Returns at once when a commit came since the last wait returned (the follower was reading
    /// the log meanwhile, perhaps before it), else at the next commit or after `timeout`.
    fn wait(&self, timeout: Duration) {
        let mut counts = self.counts.lock();
        if counts.0 == counts.1 {
            self.wake.wait_for(&mut counts, timeout);
        }
        counts.1 = counts.0;
    }
}
