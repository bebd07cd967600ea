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
