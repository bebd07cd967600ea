//! Image files under `<data_dir>/images/<tenant_id>/<image_name>`.
//!
//! A file is written in two steps so that a committed row always has its file: [`BlobStore::stage`]
//! writes and fsyncs a temporary file in the final directory (outside any lock, as it is the slow
//! part), then [`StagedBlob::publish`] renames it into place and fsyncs the directory, while the
//! caller holds the writer lock and before it commits the row. A file whose row never committed
//! is removed on the error path or, after a crash, by [`BlobStore::sweep`].

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::image_path;

/// Temporary files are `.<final name>.<uuid>.tmp`; stored names may not start with a dot, so
/// the two can never be confused.
const TMP_SUFFIX: &str = ".tmp";

pub(crate) struct BlobStore {
    root: PathBuf,
    /// Directories known to be created and durable (their entry in the parent was fsynced), so
    /// each is synced once per process rather than on every write.
    durable_dirs: Mutex<HashSet<PathBuf>>,
}

/// What the `image_blobs` row records about a published file.
#[derive(Debug, Clone)]
pub(crate) struct BlobInfo {
    /// Relative to the images folder, `/`-separated.
    pub rel_path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A written and fsynced temporary file, removed on drop unless published.
pub(crate) struct StagedBlob {
    tmp: PathBuf,
    final_path: PathBuf,
    info: BlobInfo,
}

/// A file in its final place whose row is not committed yet; removed on drop unless kept.
pub(crate) struct PublishedBlob {
    path: PathBuf,
    info: BlobInfo,
    kept: bool,
}

impl BlobStore {
    pub fn open(root: PathBuf) -> Result<Self> {
        let existed = root.is_dir();
        crate::private_fs::create_dir_all(&root)
            .map_err(|e| StoreError::io(format!("create {}", root.display()), e))?;
        if !existed {
            if let Some(parent) = root.parent() {
                sync_dir(parent)?;
            }
        }
        let durable_dirs = Mutex::new(HashSet::from([root.clone()]));
        Ok(Self { root, durable_dirs })
    }

    /// The absolute path of a validated relative path.
    pub fn path_of(&self, rel_path: &str) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(rel_path.split('/'));
        path
    }

    /// Writes `bytes` to a temporary file beside `rel_path` and fsyncs it.
    pub fn stage(&self, rel_path: &str, bytes: &[u8]) -> Result<StagedBlob> {
        let final_path = self.path_of(rel_path);
        let (dir, file_name) = match (final_path.parent(), final_path.file_name()) {
            (Some(dir), Some(name)) => (dir.to_path_buf(), name.to_string_lossy().into_owned()),
            _ => return Err(StoreError::InvalidImageName(rel_path.to_owned())),
        };
        self.ensure_dir(&dir)?;
        let tmp = dir.join(format!(".{file_name}.{}{TMP_SUFFIX}", uuid::Uuid::new_v4().simple()));
        let staged = StagedBlob {
            tmp,
            final_path,
            info: BlobInfo {
                rel_path: rel_path.to_owned(),
                sha256: hex::encode(Sha256::digest(bytes)),
                bytes: bytes.len() as u64,
            },
        };
        let write = || -> io::Result<()> {
            let mut file = crate::private_fs::file_options().write(true).create_new(true).open(&staged.tmp)?;
            file.write_all(bytes)?;
            file.sync_all()
        };
        // On failure `staged` drops here and removes whatever part of the file was written.
        write().map_err(|e| StoreError::io(format!("write {}", staged.tmp.display()), e))?;
        Ok(staged)
    }

    /// The bytes of a stored file.
    pub fn read(&self, rel_path: &str) -> Result<Vec<u8>> {
        let path = self.path_of(rel_path);
        fs::read(&path).map_err(|e| StoreError::io(format!("read {}", path.display()), e))
    }

    /// Replaces a stored file's contents atomically: a crash leaves the old file or the new one.
    pub fn replace(&self, rel_path: &str, bytes: &[u8]) -> Result<BlobInfo> {
        let mut staged = self.stage(rel_path, bytes)?;
        let tmp = std::mem::take(&mut staged.tmp);
        if let Err(e) = fs::rename(&tmp, &staged.final_path) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(format!("rename to {}", staged.final_path.display()), e));
        }
        if let Some(dir) = staged.final_path.parent() {
            sync_dir(dir)?;
        }
        Ok(staged.info.clone())
    }

    /// Removes a stored file; one already gone is not an error.
    pub fn remove(&self, rel_path: &str) -> Result<()> {
        let path = self.path_of(rel_path);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("remove {}", path.display()), e)),
        }
    }

    /// Removes a tenant's whole folder (`<tenant_id>/`), whatever is left in it; one already gone
    /// is not an error. A link in its place is removed, never followed.
    pub fn remove_tenant(&self, tenant_id: &str) -> Result<()> {
        if !image_path::safe_tenant_folder(tenant_id) {
            return Err(StoreError::InvalidImageName(tenant_id.to_owned()));
        }
        let dir = self.root.join(tenant_id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(format!("remove {}", dir.display()), e)),
        }
        self.durable_dirs.lock().retain(|d| !d.starts_with(&dir));
        sync_dir(&self.root)
    }

    /// Removes every file that `is_referenced` disowns and every temporary file older than
    /// `tmp_grace` (younger ones may belong to a write in progress). Returns how many went.
    pub fn sweep(&self, tmp_grace: Duration, is_referenced: &mut dyn FnMut(&str) -> Result<bool>) -> Result<usize> {
        let mut removed = 0;
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel_dir)) = stack.pop() {
            let entries = fs::read_dir(&dir).map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel = if rel_dir.is_empty() { name.clone() } else { format!("{rel_dir}/{name}") };
                let meta =
                    fs::symlink_metadata(&path).map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?;
                if meta.is_dir() {
                    stack.push((path, rel));
                    continue;
                }
                let orphan = if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
                    let age = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok());
                    age.is_some_and(|age| age >= tmp_grace)
                } else {
                    // Anything we did not write (a name that is not UTF-8, a symlink) has no row
                    // either and goes the same way.
                    !is_referenced(&rel)?
                };
                if orphan {
                    match fs::remove_file(&path) {
                        Ok(()) => {
                            tracing::info!(path = %path.display(), "removed orphaned image file");
                            removed += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::io(format!("remove {}", path.display()), e)),
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Creates `dir` (under the root) and its missing parents, fsyncing each parent whose entries
    /// changed, so that a file later fsynced inside it is reachable after a crash.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        if self.durable_dirs.lock().contains(dir) {
            return Ok(());
        }
        let rel = dir.strip_prefix(&self.root).map_err(|_| StoreError::InvalidImageName(dir.display().to_string()))?;
        let mut current = self.root.clone();
        for component in rel.components() {
            let parent = current.clone();
            current.push(component);
            if self.durable_dirs.lock().contains(&current) {
                continue;
            }
            match crate::private_fs::create_dir(&current) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && current.is_dir() => {}
                Err(e) => return Err(StoreError::io(format!("create {}", current.display()), e)),
            }
            // Synced even when it already existed: another thread may have created it and not
            // synced the parent yet, and we are about to rely on it.
            sync_dir(&parent)?;
            self.durable_dirs.lock().insert(current.clone());
        }
        Ok(())
    }
}

impl StagedBlob {
    /// Moves the file into its final place and makes the rename durable. The caller must hold
    /// the writer lock, so that no other write or sweep races on the same path.
    pub fn publish(mut self) -> Result<PublishedBlob> {
        let tmp = std::mem::take(&mut self.tmp);
        let result = (|| {
            if fs::symlink_metadata(&self.final_path).is_ok() {
                return Err(StoreError::Conflict(format!("image {} already exists", self.info.rel_path)));
            }
            fs::rename(&tmp, &self.final_path)
                .map_err(|e| StoreError::io(format!("rename to {}", self.final_path.display()), e))
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let published =
            PublishedBlob { path: std::mem::take(&mut self.final_path), info: self.info.clone(), kept: false };
        // Dropping `published` on failure removes the renamed file again.
        if let Some(dir) = published.path.parent() {
            sync_dir(dir)?;
        }
        Ok(published)
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl PublishedBlob {
    pub fn info(&self) -> &BlobInfo {
        &self.info
    }

    /// Called once the row that points at the file has committed.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for PublishedBlob {
    fn drop(&mut self) {
        if !self.kept {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove image of a failed write");
            }
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(format!("fsync {}", dir.display()), e))
}

/// Directories cannot be opened for fsync on other platforms; their renames are durable by the
/// file system's own rules there.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::open(dir.path().join("images")).expect("open");
        (dir, blobs)
    }

    #[test]
    fn staged_file_is_invisible_until_published_and_removed_if_dropped() {
        let (_dir, blobs) = store();
        let rel = image_path::rel_path("t1", "enroll/a.jpg").expect("rel");
        let staged = blobs.stage(&rel, b"abc").expect("stage");
        assert!(!blobs.path_of(&rel).exists());
        assert!(staged.tmp.exists());
        let tmp = staged.tmp.clone();
        drop(staged);
        assert!(!tmp.exists());

        let published = blobs.stage(&rel, b"abc").expect("stage").publish().expect("publish");
        assert_eq!(published.info().bytes, 3);
        assert_eq!(published.info().sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        published.keep();
        assert_eq!(fs::read(blobs.path_of(&rel)).expect("read"), b"abc");

        // A second file may not replace the first.
        let again = blobs.stage(&rel, b"xyz").expect("stage");
        assert!(matches!(again.publish(), Err(StoreError::Conflict(_))));
        assert_eq!(fs::read(blobs.path_of(&rel)).expect("read"), b"abc");

        let rel2 = image_path::rel_path("t1", "enroll/b.jpg").expect("rel");
        let unkept = blobs.stage(&rel2, b"x").expect("stage").publish().expect("publish");
        drop(unkept);
        assert!(!blobs.path_of(&rel2).exists());
        // Only the kept file is left: no temporary files linger.
        let names: Vec<_> =
            fs::read_dir(blobs.path_of("t1/enroll")).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.jpg")]);
    }

    #[test]
    fn sweep_keeps_referenced_files_and_young_temporaries() {
        let (_dir, blobs) = store();
        for name in ["keep.jpg", "orphan.jpg"] {
            let rel = image_path::rel_path("t1", &format!("enroll/{name}")).expect("rel");
            blobs.stage(&rel, b"x").expect("stage").publish().expect("publish").keep();
        }
        let young = blobs.stage("t1/enroll/pending.jpg", b"x").expect("stage");
        let stale = blobs.path_of("t1/enroll/.crashed.jpg.0123.tmp");
        fs::write(&stale, b"x").expect("write");
        let old = SystemTime::now() - Duration::from_secs(7200);
        File::options().write(true).open(&stale).expect("open").set_modified(old).expect("mtime");

        let removed =
            blobs.sweep(Duration::from_secs(3600), &mut |rel| Ok(rel == "t1/enroll/keep.jpg")).expect("sweep");
        assert_eq!(removed, 2);
        assert!(blobs.path_of("t1/enroll/keep.jpg").exists());
        assert!(!blobs.path_of("t1/enroll/orphan.jpg").exists());
        assert!(!stale.exists());
        assert!(young.tmp.exists());
    }
}
