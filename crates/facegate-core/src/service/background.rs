//! The service's work beside the requests: following the changes other nodes write to a shared
//! gallery, and running bulk registration jobs. The composition root (`facegate serve`, a test
//! harness) starts it next to whatever serves requests and stops it after them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::bulk::BulkConfig;
use super::state::FaceService;
use crate::jobs::ImageSource;

/// How long a stop waits for bulk records being registered to be saved: a record is one image
/// through the face pipeline, well under a second, so 10 s covers every worker's record on a
/// loaded machine while still ending within the usual 30 s a supervisor waits.
pub const BULK_STOP_GRACE: Duration = Duration::from_secs(10);

/// Where bulk registration jobs read their files, and how the runner works through them.
pub struct BulkRunner {
    pub source: Arc<dyn ImageSource>,
    pub config: BulkConfig,
}

/// The running background work; [`BackgroundWork::stop`] ends it.
pub struct BackgroundWork {
    stop: watch::Sender<bool>,
    follower: JoinHandle<()>,
    snapshots: JoinHandle<()>,
    purger: JoinHandle<()>,
    bulk_runner: Option<JoinHandle<()>>,
}

impl FaceService {
    /// Starts following the change log (on a gallery of its own the follower returns at once)
    /// and, given a `bulk` runner, the jobs left unfinished by an earlier run and every new one.
    /// Needs a Tokio runtime.
    pub fn start_background_work(self: &Arc<Self>, bulk: Option<BulkRunner>) -> BackgroundWork {
        let (stop, stopped) = watch::channel(false);
        let follower = tokio::spawn(self.clone().follow_changes(stopped.clone()));
        let snapshots = tokio::spawn(self.clone().keep_snapshots(stopped.clone()));
        let purger = tokio::spawn(self.clone().purge_sightings_regularly());
        let bulk_runner =
            bulk.map(|runner| tokio::spawn(self.clone().run_bulk_jobs(runner.source, runner.config, stopped)));
        BackgroundWork { stop, follower, snapshots, purger, bulk_runner }
    }

    /// Deletes the sightings past their tenant's retention every
    /// [`ServiceConfig::sighting_purge_every`](super::ServiceConfig), whether or not any tenant
    /// opts in now: one that turned the setting off has nothing left, and a store shared with
    /// other nodes may hold their tenants' sightings.
    async fn purge_sightings_regularly(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.config.sighting_purge_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.purge_expired_sightings().await {
                Ok(0) => {}
                Ok(sightings) => tracing::info!(sightings, "deleted the sightings past their tenant's retention"),
                Err(e) => tracing::warn!(error = %e, "could not delete the sightings past their retention; retrying"),
            }
        }
    }
}

impl BackgroundWork {
    /// Stops the follower at once. The bulk runner starts no new record; those in progress get
    /// `grace` to finish and be saved, and one that takes longer is abandoned unsaved, to be
    /// redone at the next start.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        self.follower.abort();
        // A snapshot being written is left as a temporary file, removed at the next start.
        self.snapshots.abort();
        self.purger.abort();
        if let Some(mut runner) = self.bulk_runner {
            if tokio::time::timeout(grace, &mut runner).await.is_err() {
                tracing::warn!("bulk records still in progress at shutdown are left for the next start");
                runner.abort();
            }
        }
    }
}
