//! One process at a time serves or imports into a data directory.
//!
//! Each `facegate serve` keeps its own in-memory index of the store, so a second server, a
//! direct `import` or a key rotation writing the same directory would leave the first one's
//! index out of step with the database. The holder of this lock is also the only process that
//! can be writing image files, which lets the start-up sweep remove every stale temporary file
//! a crash left, however young.

use std::fs::{File, TryLockError};
use std::path::Path;

use crate::error::{Result, StoreError};

/// An exclusive advisory lock on `<data_dir>/facegate.lock`, held until dropped (or until the
/// process dies, however it dies).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock, or fails at once if another process holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock> {
        let path = data_dir.join("facegate.lock");
        let file = crate::private_fs::file_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked(format!(
                "another facegate serve, import or keys rotate is using {}",
                data_dir.display()
            ))),
            Err(TryLockError::Error(e)) => Err(StoreError::io(format!("locking {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first");
        let refused = DataDirLock::acquire(dir.path()).expect_err("second");
        assert!(refused.to_string().contains("another facegate"), "{refused}");
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again");
    }
}
