//! Keeping this process's index in step with the store's change log.
//!
//! The store's change log ([`ChangeFeed`]) lists every write in commit order: on PostgreSQL the
//! writes of every node, on SQLite this process's and any other's on the same file (an import
//! beside the server). The index is loaded (from the store, or from index snapshots: see
//! `snapshots.rs`) as of a noted change; from then on, each change after the last one applied
//! is applied in order, so [`FaceService::applied_change`] is a position every change up to
//! which the index reflects: what an index snapshot records. Applying is idempotent (a template is loaded and
//! inserted under its sample id, removals of what is gone do nothing), so seeing this process's
//! own writes again is harmless, and a subject's changes are applied under the same per-subject
//! lock as this process's own writes, so the index ends in the store's order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::state::{blocking, FaceService};
use crate::error::{Error, Result};
use crate::ports::{Change, ChangeKind};

/// How long the follower waits for a notification before reading the log anyway: a lost
/// notification delays a change by at most this.
const POLL: Duration = Duration::from_millis(500);
/// Changes read per round trip.
const BATCH: usize = 1_000;
/// How often a node prunes the change log. Any node may; one prune in a while is plenty.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Changes kept in the log. A node that stopped following for longer than this (a database
/// outage, a stuck node) reloads its index instead; a day covers that, and keeps the log to about
/// one row per write of the last day.
pub const CHANGE_LOG_RETENTION: Duration = Duration::from_secs(24 * 3600);

impl FaceService {
    /// The last change of the store's log this index reflects (0 before any, or when the store
    /// has no log).
    pub fn applied_change(&self) -> u64 {
        self.applied_change.load(Ordering::Acquire)
    }

    /// Applies the store's changes to the index until `stop` turns true, and prunes the log now
    /// and then. Returns at once when the store keeps no log.
    pub async fn follow_changes(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.store.change_feed().is_none() {
            return;
        }
        let mut last_prune: Option<std::time::Instant> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(std::time::Instant::now());
                let store = self.store.clone();
                match blocking(move || match store.change_feed() {
                    Some(feed) => feed.prune_changes(CHANGE_LOG_RETENTION),
                    None => Ok(0),
                })
                .await
                {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "pruned the change log"),
                    Err(e) => tracing::warn!(error = %e, "pruning the change log failed"),
                }
            }
            if let Err(e) = self.sync_index().await {
                tracing::error!(error = %e, "applying the change log failed; retrying in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            let store = self.store.clone();
            let waited = blocking(move || match store.change_feed() {
                Some(feed) => feed.wait_for_change(POLL),
                None => Ok(()),
            });
            tokio::select! {
                result = waited => if let Err(e) = result {
                    tracing::warn!(error = %e, "waiting for change notifications failed; polling");
                    tokio::time::sleep(POLL).await;
                },
                _ = stop.changed() => return,
            }
        }
    }

    /// Brings the index in step with the store: applies the changes after the last one
    /// applied or, when some of those were pruned before this node read them, loads the index
    /// anew from the store. Returns the last change the index reflects.
    pub async fn sync_index(self: &Arc<Self>) -> Result<u64> {
        let store = self.store.clone();
        let pruned = blocking(move || match store.change_feed() {
            Some(feed) => feed.pruned_through(),
            None => Ok(0),
        })
        .await?;
        if pruned > self.applied_change() {
            tracing::warn!(
                applied = self.applied_change(),
                pruned_through = pruned,
                "changes this node had not applied were pruned; loading the index anew"
            );
            let service = self.clone();
            let templates = blocking(move || {
                service.index.clear();
                service.load_index()
            })
            .await?;
            tracing::info!(templates, "index loaded anew");
        }
        self.catch_up().await
    }

    /// Applies every change after the last one applied. Returns the last change applied.
    async fn catch_up(&self) -> Result<u64> {
        loop {
            let after = self.applied_change();
            let store = self.store.clone();
            let batch = blocking(move || match store.change_feed() {
                Some(feed) => feed.changes_after(after, BATCH),
                None => Ok(Vec::new()),
            })
            .await?;
            let Some(last) = batch.last().map(|c| c.seq) else { return Ok(after) };
            // Tenants whose sightings changed in bulk: loaded anew once, after the batch, which
            // reflects every change in it however many rows a merge or purge touched.
            let mut reload = std::collections::BTreeSet::new();
            for change in batch {
                if change.kind == ChangeKind::UnknownPeopleChanged {
                    reload.insert(change.tenant_id);
                } else {
                    self.apply_change(change).await?;
                }
            }
            for tenant_id in reload {
                self.reload_sightings(&tenant_id).await?;
            }
            self.applied_change.store(last, Ordering::Release);
        }
    }

    async fn apply_change(&self, change: Change) -> Result<()> {
        let Change { tenant_id, kind, subject_id, sample_id, old_name, new_name, seq } = change;
        let missing = |what: &str| Error::Internal(format!("change {seq} ({kind:?}) has no {what}"));
        match kind {
            ChangeKind::TagRenamed => {
                let (old, new) =
                    (old_name.ok_or_else(|| missing("old name"))?, new_name.ok_or_else(|| missing("new name"))?);
                self.index.rename_tag(&tenant_id, &old, &new);
            }
            ChangeKind::SampleAdded => {
                let (subject, sample) =
                    (subject_id.ok_or_else(|| missing("subject"))?, sample_id.ok_or_else(|| missing("sample"))?);
                let _subject_lock = self.subject_locks.lock(&tenant_id, &subject).await;
                let (store, tid, sid) = (self.store.clone(), tenant_id.clone(), sample.clone());
                let model_id = self.engine.model_info().model_id.clone();
                let template = blocking(move || match store.change_feed() {
                    Some(feed) => feed.template(&tid, &sid, &model_id),
                    None => Ok(None),
                })
                .await?;
                // Gone since (a later change removes it): nothing to index.
                if let Some(template) = template {
                    self.index.insert(template);
                }
            }
            ChangeKind::SampleRemoved => {
                let (subject, sample) =
                    (subject_id.ok_or_else(|| missing("subject"))?, sample_id.ok_or_else(|| missing("sample"))?);
                let _subject_lock = self.subject_locks.lock(&tenant_id, &subject).await;
                self.index.remove_sample(&tenant_id, &sample);
            }
            ChangeKind::SubjectRemoved => {
                let subject = subject_id.ok_or_else(|| missing("subject"))?;
                let _subject_lock = self.subject_locks.lock(&tenant_id, &subject).await;
                self.index.remove_subject(&tenant_id, &subject);
            }
            // Every node drops the tenant's gallery; its credentials went with its rows, so no
            // request can name it any more.
            ChangeKind::TenantRemoved => {
                self.index.remove_tenant(&tenant_id);
                if let Some(unknown) = &self.unknown {
                    unknown.remove_tenant(&tenant_id);
                }
                self.forget_snapshot(&tenant_id);
            }
            ChangeKind::SightingKept => {
                let sighting = sample_id.ok_or_else(|| missing("sighting"))?;
                self.index_sighting(&tenant_id, &sighting).await?;
            }
            ChangeKind::UnknownPeopleChanged => self.reload_sightings(&tenant_id).await?,
            ChangeKind::SubjectTagsSet => {
                let subject = subject_id.ok_or_else(|| missing("subject"))?;
                let _subject_lock = self.subject_locks.lock(&tenant_id, &subject).await;
                let (store, tid, sid) = (self.store.clone(), tenant_id.clone(), subject.clone());
                let tags = blocking(move || store.subject_tags(&tid, &sid)).await?;
                self.index.set_subject_tags(&tenant_id, &subject, &tags);
            }
        }
        Ok(())
    }
}
