//! The pool the engine's workers are leased from, one caller at a time each.

use std::sync::{Condvar, Mutex, PoisonError};

use crate::error::{EngineError, Result};

/// Workers waiting to be leased. Blocking is fine: callers run on blocking threads, and the
/// core's `InferencePool` already bounds how many wait.
pub(crate) struct Pool<T> {
    idle: Mutex<Vec<T>>,
    returned: Condvar,
}

/// One worker out of the pool; back in it on drop, a panic's unwinding included.
pub(crate) struct Lease<'a, T> {
    pool: &'a Pool<T>,
    worker: Option<T>,
}

impl<T> Pool<T> {
    pub(crate) fn new(workers: Vec<T>) -> Self {
        Pool { idle: Mutex::new(workers), returned: Condvar::new() }
    }

    /// The next idle worker, waiting for one to come back when none is.
    pub(crate) fn lease(&self) -> Lease<'_, T> {
        // A panic while leasing cannot leave the Vec half-updated, so poisoning is ignored.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(worker) = idle.pop() {
                return Lease { pool: self, worker: Some(worker) };
            }
            idle = self.returned.wait(idle).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl<T> Lease<'_, T> {
    /// Present from `lease` until drop.
    pub(crate) fn get(&mut self) -> Result<&mut T> {
        self.worker.as_mut().ok_or_else(|| EngineError::Runtime("worker lease is empty".into()))
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push(worker);
            self.pool.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn each_worker_is_leased_to_one_caller_at_a_time() {
        let pool = Pool::new(vec![1, 2]);
        let mut a = pool.lease();
        let mut b = pool.lease();
        let (x, y) = (*a.get().expect("leased"), *b.get().expect("leased"));
        assert_ne!(x, y);
        // What a caller leaves in its worker (scratch buffers) is there for the next one.
        *a.get().expect("leased") += 10;
        drop(a);
        assert_eq!(*pool.lease().get().expect("leased"), x + 10);
    }

    #[test]
    fn a_caller_waits_until_a_worker_comes_back() {
        let pool = Pool::new(vec![7]);
        let held = pool.lease();
        let pool = &pool;
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            s.spawn(move || {
                let mut lease = pool.lease();
                tx.send(*lease.get().expect("leased")).expect("send");
            });
            assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "leased a worker that was out");
            drop(held);
            assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
        });
    }

    #[test]
    fn a_panic_while_leased_gives_the_worker_back() {
        let pool = Pool::new(vec![0]);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _lease = pool.lease();
            panic!("inference failed");
        }));
        assert!(outcome.is_err());
        let idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner).len();
        assert_eq!(idle, 1, "the worker was lost");
    }
}
