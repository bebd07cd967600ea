//! Keeping the index's snapshots ([`IndexSnapshots`]) up to date, so that a restart, even after
//! SIGKILL, loads each tenant from its snapshot and replays only the changes since.
//!
//! A snapshot records [`FaceService::applied_change`] read before it is written: every change
//! through it is in the index by then (the follower applies the log in order, this process's
//! own writes included), and whatever the index holds beyond it is replayed harmlessly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{blocking, FaceService};
use crate::ports::IndexSnapshots;

/// How often the writer looks for tenants whose index changed.
const CHECK_EVERY: Duration = Duration::from_secs(15);
/// A changed tenant's snapshot is written again at most this often: each write copies the
/// whole tenant (seconds and gigabytes at millions of templates), and a restart replays at most
/// this long of changes, about a second's work even under a steady stream of enrollments.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(300);
/// An urgent snapshot (none yet, or the index rebuilt) is tried again no sooner than this after
/// the last try: a full disk must not turn into gigabytes written every few seconds.
const URGENT_AGAIN_AFTER: Duration = Duration::from_secs(60);

impl FaceService {
    /// Writes the snapshots that are due until `stop` turns true: at once for a tenant with none
    /// or whose index was rebuilt in another form (a restart would otherwise learn its partition
    /// again), else at most every [`SNAPSHOT_EVERY`]. Returns at once without snapshots.
    pub(super) async fn keep_snapshots(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(snapshots) = self.snapshots.clone() else { return };
        let mut written: HashMap<String, Instant> = HashMap::new();
        loop {
            let due = snapshots.due();
            for (tenant_id, urgent) in due {
                if *stop.borrow() {
                    return;
                }
                let gap = if urgent { URGENT_AGAIN_AFTER } else { SNAPSHOT_EVERY };
                if written.get(&tenant_id).is_some_and(|at| at.elapsed() < gap) {
                    continue;
                }
                written.insert(tenant_id.clone(), Instant::now());
                self.save_snapshot(&snapshots, tenant_id).await;
            }
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Writes a snapshot of every tenant that has none, before the node serves: a node killed
    /// right after its first start (one that loaded its index from the store) must not have to
    /// load it from the store again. Failures are logged; the node serves either way.
    pub async fn write_missing_snapshots(&self) {
        let Some(snapshots) = self.snapshots.clone() else { return };
        for (tenant_id, urgent) in snapshots.due() {
            if urgent {
                self.save_snapshot(&snapshots, tenant_id).await;
            }
        }
    }

    async fn save_snapshot(&self, snapshots: &Arc<dyn IndexSnapshots>, tenant_id: String) {
        let position = self.applied_change();
        let model_id = self.engine.model_info().model_id.clone();
        let (snapshots, tenant) = (snapshots.clone(), tenant_id.clone());
        match blocking(move || snapshots.save(&tenant, &model_id, position)).await {
            Ok(Some(saved)) => tracing::info!(
                tenant = %tenant_id,
                rows = saved.rows,
                bytes = saved.bytes,
                ms = saved.ms,
                position,
                "index snapshot written"
            ),
            Ok(None) => {}
            Err(error) => tracing::error!(tenant = %tenant_id, %error, "writing an index snapshot failed"),
        }
    }

    /// Deletes a removed tenant's snapshot.
    pub(super) fn forget_snapshot(&self, tenant_id: &str) {
        if let Some(snapshots) = &self.snapshots {
            if let Err(error) = snapshots.remove(tenant_id) {
                tracing::error!(tenant = %tenant_id, %error, "removing a deleted tenant's index snapshot failed");
            }
        }
    }
}
