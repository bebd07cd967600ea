//! The change log: every write to the gallery or the tags appends what it changed, in its own
//! transaction, so that every node can bring its in-memory index in step.
//!
//! Appends take a transaction-scoped advisory lock, held until commit, so changes become
//! visible in `seq` order: a reader that has seen `seq` n has seen every change before it, and
//! can safely continue from n. Each committing append NOTIFYs `facegate_changes`.

use postgres::Transaction;

use crate::change_kinds::ChangeRow;
use crate::error::{to_core, Result};

/// Serialises change-log appends between nodes ("facegate" + 1).
const CHANGES_LOCK: i64 = 0x6661_6365_6761_7466;

/// `store_meta` row: the newest `seq` pruned from the log.
const META_PRUNED_THROUGH: &str = "changes_pruned_through";

/// The notification channel the nodes LISTEN on.
pub(crate) const CHANNEL: &str = "facegate_changes";

/// What a write changed, as one row of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A sample was added or its template replaced: load it and index it.
    SampleAdded,
    SampleRemoved,
    SubjectRemoved,
    /// A subject's tag labels were replaced: load them.
    SubjectTagsSet,
    TagRenamed,
    /// The tenant and everything of it were deleted.
    TenantRemoved,
    /// A sighting was kept.
    SightingKept,
    /// The tenant's unknown people changed otherwise.
    UnknownPeopleChanged,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::SampleAdded => "sample_added",
            Kind::SampleRemoved => "sample_removed",
            Kind::SubjectRemoved => "subject_removed",
            Kind::SubjectTagsSet => "subject_tags_set",
            Kind::TagRenamed => "tag_renamed",
            Kind::TenantRemoved => "tenant_removed",
            Kind::SightingKept => "sighting_kept",
            Kind::UnknownPeopleChanged => "unknown_people_changed",
        }
    }
}

/// One change to append.
#[derive(Debug, Clone, Default)]
pub(crate) struct Change<'a> {
    pub tenant_id: &'a str,
    pub subject_id: Option<&'a str>,
    pub sample_id: Option<&'a str>,
    pub old_name: Option<&'a str>,
    pub new_name: Option<&'a str>,
}

/// Appends `changes` (all of `kind`) and commits `tx`.
pub(crate) fn commit_with(mut tx: Transaction<'_>, changes: &[(Kind, Change<'_>)]) -> Result<()> {
    if !changes.is_empty() {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGES_LOCK])?;
        for (kind, c) in changes {
            tx.execute(
                "INSERT INTO changes (tenant_id, kind, subject_id, sample_id, old_name, new_name) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&c.tenant_id, &kind.name(), &c.subject_id, &c.sample_id, &c.old_name, &c.new_name],
            )?;
        }
        tx.batch_execute(&format!("NOTIFY {CHANNEL}"))?;
    }
    tx.commit()?;
    Ok(())
}

impl facegate_core::ChangeFeed for super::PgStore {
    fn latest_change(&self) -> facegate_core::Result<u64> {
        to_core(|| {
            let row = self.conn()?.query_one("SELECT COALESCE(MAX(seq), 0) FROM changes", &[])?;
            Ok(super::to_u64(row.get(0)))
        })
    }

    fn changes_after(&self, after: u64, limit: usize) -> facegate_core::Result<Vec<facegate_core::Change>> {
        to_core(|| {
            let rows = self.conn()?.query(
                "SELECT seq, tenant_id, kind, subject_id, sample_id, old_name, new_name FROM changes \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&super::to_i64(after), &super::to_i64(limit)],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let read = ChangeRow {
                    seq: super::to_u64(row.try_get(0)?),
                    tenant_id: row.try_get(1)?,
                    kind: row.try_get(2)?,
                    subject_id: row.try_get(3)?,
                    sample_id: row.try_get(4)?,
                    old_name: row.try_get(5)?,
                    new_name: row.try_get(6)?,
                };
                out.extend(read.into_change());
            }
            Ok(out)
        })
    }

    fn prune_changes(&self, keep: std::time::Duration) -> facegate_core::Result<u64> {
        to_core(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            // Behind the appends' lock, so that no change commits below the watermark afterwards.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGES_LOCK])?;
            let row = tx.query_one(
                "WITH gone AS (DELETE FROM changes WHERE at < now() - make_interval(secs => $1) RETURNING seq) \
                 SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM gone",
                &[&keep.as_secs_f64()],
            )?;
            let (count, through): (i64, i64) = (row.get(0), row.get(1));
            if count > 0 {
                tx.execute(
                    "INSERT INTO store_meta (name, value) VALUES ($1, $2::BIGINT::TEXT) ON CONFLICT (name) DO UPDATE \
                     SET value = GREATEST(store_meta.value::BIGINT, EXCLUDED.value::BIGINT)::TEXT",
                    &[&META_PRUNED_THROUGH, &through],
                )?;
            }
            tx.commit()?;
            Ok(super::to_u64(count))
        })
    }

    fn pruned_through(&self) -> facegate_core::Result<u64> {
        to_core(|| {
            let row = self
                .conn()?
                .query_opt("SELECT value::BIGINT FROM store_meta WHERE name = $1", &[&META_PRUNED_THROUGH])?;
            Ok(row.map_or(0, |r| super::to_u64(r.get(0))))
        })
    }

    /// Waits on this node's own listening connection (opened on first use, reopened after an
    /// error) for a notification on [`CHANNEL`].
    fn wait_for_change(&self, timeout: std::time::Duration) -> facegate_core::Result<()> {
        to_core(|| {
            use postgres::fallible_iterator::FallibleIterator;
            let mut slot = self.listener.lock();
            let client = match slot.as_mut() {
                Some(client) => client,
                None => {
                    let mut client = self.config.connect(postgres::NoTls)?;
                    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                    slot.insert(client)
                }
            };
            let waited = (|| -> Result<()> {
                let mut notifications = client.notifications();
                if notifications.timeout_iter(timeout).next()?.is_some() {
                    // Take whatever else has arrived, without waiting: one read of the log covers all.
                    let mut pending = notifications.iter();
                    while pending.next()?.is_some() {}
                }
                Ok(())
            })();
            if waited.is_err() {
                *slot = None;
            }
            waited
        })
    }

    /// The template of one sample, for applying a change made on another node.
    fn template(
        &self,
        tenant_id: &str,
        sample_id: &str,
        model_id: &str,
    ) -> facegate_core::Result<Option<facegate_core::Template>> {
        to_core(|| {
            let row = self.conn()?.query_opt(
                "SELECT subject_id, embedding, embedding_encoding FROM face_samples \
                 WHERE tenant_id = $1 AND id = $2 AND model_id = $3",
                &[&tenant_id, &sample_id, &model_id],
            )?;
            let Some(row) = row else { return Ok(None) };
            let subject_id: String = row.get(0);
            let embedding = crate::templates::decode_template(row.get(1), row.get(2), &subject_id, self.key.as_ref())?;
            Ok(embedding.map(|embedding| facegate_core::Template {
                tenant_id: tenant_id.to_owned(),
                subject_id,
                sample_id: sample_id.to_owned(),
                embedding,
            }))
        })
    }
}
