//! A bounded pool for blocking inference work.
//!
//! `workers` jobs run at once; up to `queue` more may wait. Anything past that is refused at
//! once with `Overloaded` (HTTP 503) instead of piling up unbounded latency.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::{Error, Result};

#[derive(Clone)]
pub struct InferencePool {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
}

impl InferencePool {
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self { running: Arc::new(Semaphore::new(workers)), admitted: Arc::new(Semaphore::new(workers + queue)) }
    }

    /// Runs `job` on a blocking thread once a worker is free; `Overloaded` if the queue is full.
    pub async fn run<T, F>(&self, job: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let _admitted = self.admitted.clone().try_acquire_owned().map_err(|_| Error::Overloaded)?;
        let _running =
            self.running.clone().acquire_owned().await.map_err(|_| Error::Internal("inference pool closed".into()))?;
        tokio::task::spawn_blocking(job).await.map_err(|e| Error::Internal(format!("inference task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_when_queue_is_full() {
        let pool = InferencePool::new(1, 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let mut held = Vec::new();
        for _ in 0..2 {
            let pool = pool.clone();
            let rx = rx.clone();
            held.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = rx.lock().map(|r| r.recv_timeout(Duration::from_secs(5)));
                    Ok(())
                })
                .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let third = pool.run(|| Ok(())).await;
        assert!(matches!(third, Err(Error::Overloaded)));
        tx.send(()).expect("send");
        tx.send(()).expect("send");
        for h in held {
            h.await.expect("join").expect("job");
        }
        pool.run(|| Ok(())).await.expect("pool accepts again");
    }
}
