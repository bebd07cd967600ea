//! A bounded pool for blocking inference work.
//!
//! `workers` jobs run at once; up to `queue` more may wait. Anything past that is refused at
//! once with `Overloaded` (HTTP 503) instead of piling up unbounded latency.
//!
//! Background work (bulk registration jobs) goes through [`InferencePool::run_background`]: it
//! takes a free worker only while no interactive request is waiting or running, and never
//! queues in front of one, so a request waits at most for the background images already
//! running, and shares the CPU with nothing new while it runs (with two ONNX Runtime threads per
//! job, a background image started beside a request would halve its speed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct InferencePool {
    /// Interactive jobs admitted at most: workers + queue.
    capacity: usize,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    /// Interactive jobs admitted and not yet finished.
    interactive_in_flight: Arc<AtomicUsize>,
}

/// How often background work looks for a free worker when none is free.
const BACKGROUND_POLL: Duration = Duration::from_millis(3);

/// Decrements the in-flight count however the job ends (done, cancelled or failed).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InferencePool {
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            capacity: workers + queue,
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers + queue)),
            interactive_in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `job` on a blocking thread once a worker is free; `Overloaded` if the queue is full.
    pub async fn run<T, F>(&self, job: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let _admitted = self.admitted.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(crate::telemetry::POOL_REJECTIONS).increment(1);
            Error::Overloaded
        })?;
        self.interactive_in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(self.interactive_in_flight.clone());
        let _running =
            self.running.clone().acquire_owned().await.map_err(|_| Error::Internal("inference pool closed".into()))?;
        tokio::task::spawn_blocking(job).await.map_err(|e| Error::Internal(format!("inference task failed: {e}")))?
    }

    /// Interactive jobs admitted and not finished: running, and waiting for a worker.
    pub fn depth(&self) -> usize {
        self.capacity - self.admitted.available_permits()
    }

    /// The most interactive jobs admitted at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Runs `job` when a worker is free and no interactive job is waiting or running. Never refused:
    /// background callers bound their own concurrency.
    pub async fn run_background<T, F>(&self, job: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let _running = loop {
            if self.interactive_in_flight.load(Ordering::SeqCst) == 0 {
                if let Ok(permit) = self.running.clone().try_acquire_owned() {
                    break permit;
                }
            }
            tokio::time::sleep(BACKGROUND_POLL).await;
        };
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_work_yields_to_waiting_requests() {
        let pool = InferencePool::new(1, 4);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // An interactive job holds the only worker; then background work and a second
        // interactive job both wait for it.
        let holder = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move || {
                    let _ = rx.recv_timeout(Duration::from_secs(5));
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let background = {
            let (pool, order) = (pool.clone(), order.clone());
            tokio::spawn(async move {
                pool.run_background(move || {
                    order.lock().map(|mut o| o.push("background")).ok();
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let interactive = {
            let (pool, order) = (pool.clone(), order.clone());
            tokio::spawn(async move {
                pool.run(move || {
                    order.lock().map(|mut o| o.push("interactive")).ok();
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(()).expect("release the worker");
        for h in [holder, background, interactive] {
            h.await.expect("join").expect("job");
        }
        let order = order.lock().map(|o| o.clone()).unwrap_or_default();
        assert_eq!(order, ["interactive", "background"], "the request that came later still went first");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_work_waits_while_a_request_runs_even_with_a_free_worker() {
        let pool = InferencePool::new(2, 4);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let request = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move || {
                    let _ = rx.recv_timeout(Duration::from_secs(5));
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let background = {
            let (pool, started) = (pool.clone(), started.clone());
            tokio::spawn(async move {
                pool.run_background(move || {
                    started.store(true, Ordering::SeqCst);
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!started.load(Ordering::SeqCst), "background work started beside a running request");
        tx.send(()).expect("finish the request");
        request.await.expect("join").expect("request");
        background.await.expect("join").expect("background");
        assert!(started.load(Ordering::SeqCst));
    }
}
