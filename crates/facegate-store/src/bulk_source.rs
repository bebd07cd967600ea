//! Where bulk registration reads files: a local directory or an S3-compatible bucket, one area
//! (`<tenant name>/`) per tenant.
//!
//! A local bucket is read without `object_store`'s file system store, which follows symbolic
//! links: a link in one tenant's area could point into another's, or at `/etc/passwd`. Here
//! every path component below the bucket root is opened with `O_NOFOLLOW`, relative to the one
//! before it, and only a regular file is read, so what is read always lies inside
//! `<root>/<tenant>/`. A pipe or a device is refused before any read, so it cannot block.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use facegate_core::jobs::{check_filename, ImageSource, SourceError, SourceFuture};
use facegate_core::Tenant;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, RetryConfig};
use rustix::fs::{FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::error::{Result, StoreError};

/// A bucket of images, one folder per tenant.
#[derive(Debug, Clone)]
pub struct BucketSource {
    backend: Backend,
    /// Where it points, for logs.
    location: String,
}

#[derive(Debug, Clone)]
enum Backend {
    Local(PathBuf),
    Object(Arc<dyn ObjectStore>),
}

impl BucketSource {
    /// Files under `root/<tenant name>/`; `root` is created if missing.
    pub fn local(root: &Path) -> Result<Self> {
        crate::private_fs::create_dir_all(root)
            .map_err(|e| StoreError::io(format!("creating {}", root.display()), e))?;
        Ok(Self { backend: Backend::Local(root.to_path_buf()), location: root.display().to_string() })
    }

    /// Files under `s3://bucket/prefix/<tenant name>/`. Credentials and region come from the
    /// usual `AWS_*` variables; `endpoint` points at an S3-compatible server instead of AWS.
    pub fn s3(url: &str, endpoint: Option<&str>) -> Result<Self> {
        Self::s3_with(url, endpoint, AmazonS3Builder::from_env())
    }

    /// As [`BucketSource::s3`] with an explicit access key instead of the environment's.
    pub fn s3_with_key(url: &str, endpoint: Option<&str>, key_id: &str, secret: &str, region: &str) -> Result<Self> {
        let builder =
            AmazonS3Builder::new().with_access_key_id(key_id).with_secret_access_key(secret).with_region(region);
        Self::s3_with(url, endpoint, builder)
    }

    fn s3_with(url: &str, endpoint: Option<&str>, mut builder: AmazonS3Builder) -> Result<Self> {
        let bad = |why: &str| StoreError::Inconsistent(format!("bulk source '{url}': {why}"));
        let rest = url.strip_prefix("s3://").ok_or_else(|| bad("must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("names no bucket"));
        }
        builder = builder.with_bucket_name(bucket).with_retry(RetryConfig {
            // Jobs retry a failed file themselves, with backoff, and record each attempt; the
            // client's own retries only smooth over single dropped requests.
            max_retries: 1,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        });
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        let s3 = builder.build().map_err(|e| bad(&e.to_string()))?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) };
        Ok(Self { backend: Backend::Object(store), location: url.to_owned() })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Moves the local area of each renamed tenant (old name, new name) to its new name, so that
    /// files a tenant had placed before its name was made safe stay its own. An old name that
    /// was not a plain relative path (`..`) named no area of its own and is left alone, as is an
    /// area that is a link or whose new place is taken; an S3 bucket's objects are the
    /// operator's to move. Each case is logged.
    pub fn move_renamed_areas(&self, renamed: &[(String, String)]) {
        for (old, new) in renamed {
            let Backend::Local(root) = &self.backend else {
                tracing::warn!(old = ?old, new = %new, location = %self.location,
                    "a renamed tenant's bulk files must be moved to its new prefix by hand");
                continue;
            };
            let from = root.join(old);
            let to = root.join(new);
            let plain = check_filename(old).is_ok() && !old.split('/').any(|part| part.starts_with('.'));
            let is_dir = std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_dir());
            if !plain || !is_dir || to.exists() {
                if is_dir {
                    tracing::warn!(old = ?old, new = %new, "left a renamed tenant's bulk folder in place; move it by hand");
                }
                continue;
            }
            match std::fs::rename(&from, &to) {
                Ok(()) => tracing::warn!(old = ?old, new = %new, "moved a renamed tenant's bulk folder"),
                Err(e) => {
                    tracing::warn!(old = ?old, new = %new, error = %e, "could not move a renamed tenant's bulk folder")
                }
            }
        }
    }
}

impl BucketSource {
    /// Whether a tenant's area holds any file (or object), so that `facegate tenant create` does
    /// not hand a new tenant the photos another tenant of the same name left behind.
    pub async fn area_holds_files(&self, area: &str) -> Result<bool> {
        check_area(area)?;
        match &self.backend {
            Backend::Local(root) => {
                let path = root.join(area);
                tokio::task::spawn_blocking(move || local_area_holds_files(&path))
                    .await
                    .map_err(|e| StoreError::Inconsistent(format!("listing task failed: {e}")))?
            }
            Backend::Object(store) => {
                let prefix = object_store::path::Path::from(area);
                let first = store.list(Some(&prefix)).try_next().await.map_err(|e| self.object_failure(e))?;
                Ok(first.is_some())
            }
        }
    }

    /// Removes a tenant's area and everything in it; returns how many files (or objects) went.
    /// A local area that is a symbolic link loses the link only, never what it points at.
    pub async fn remove_area(&self, area: &str) -> Result<u64> {
        check_area(area)?;
        match &self.backend {
            Backend::Local(root) => {
                let path = root.join(area);
                tokio::task::spawn_blocking(move || remove_local_area(&path))
                    .await
                    .map_err(|e| StoreError::Inconsistent(format!("removal task failed: {e}")))?
            }
            Backend::Object(store) => {
                let prefix = object_store::path::Path::from(area);
                let objects: Vec<_> =
                    store.list(Some(&prefix)).try_collect().await.map_err(|e| self.object_failure(e))?;
                for object in &objects {
                    match store.delete(&object.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(self.object_failure(e)),
                    }
                }
                Ok(objects.len() as u64)
            }
        }
    }

    fn object_failure(&self, e: object_store::Error) -> StoreError {
        StoreError::Inconsistent(format!("bulk source {}: {e}", self.location))
    }
}

/// A tenant's area is one plain folder name: a tenant name, which `validate_tenant_name` keeps to
/// a safe alphabet; checked again here because this removes files.
fn check_area(area: &str) -> Result<()> {
    if area.is_empty() || area.starts_with('.') || area.contains('/') || area.contains('\\') {
        return Err(StoreError::Inconsistent(format!("{area:?} names no tenant area")));
    }
    Ok(())
}

fn local_area_holds_files(path: &Path) -> Result<bool> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
    };
    if !meta.is_dir() {
        // A link or a file where the area would be: something is there all the same.
        return Ok(true);
    }
    let mut todo = vec![path.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let listing = std::fs::read_dir(&dir).map_err(|e| StoreError::io(format!("reading {}", dir.display()), e))?;
        for entry in listing {
            let entry = entry.map_err(|e| StoreError::io(format!("reading {}", dir.display()), e))?;
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(entry.path()),
                _ => return Ok(true),
            }
        }
    }
    Ok(false)
}

/// Files (anything but folders, links included) under `dir`, links not followed.
fn count_files_under(dir: &Path) -> std::io::Result<u64> {
    let mut files = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                todo.push(entry.path());
            } else {
                files += 1;
            }
        }
    }
    Ok(files)
}

fn remove_local_area(path: &Path) -> Result<u64> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
    };
    let removing = |e| StoreError::io(format!("removing {}", path.display()), e);
    if !meta.is_dir() {
        std::fs::remove_file(path).map_err(removing)?;
        return Ok(1);
    }
    let files = count_files_under(path).map_err(removing)?;
    // remove_dir_all does not follow links inside the folder: a link goes, its target stays.
    std::fs::remove_dir_all(path).map_err(removing)?;
    Ok(files)
}

impl ImageSource for BucketSource {
    fn fetch<'a>(&'a self, tenant: &'a Tenant, filename: &'a str, max_bytes: u64) -> SourceFuture<'a> {
        Box::pin(async move {
            check_filename(filename)?;
            match &self.backend {
                Backend::Local(root) => {
                    let (root, area, filename) = (root.clone(), tenant.name.clone(), filename.to_owned());
                    tokio::task::spawn_blocking(move || read_beneath(&root, &area, &filename, max_bytes))
                        .await
                        .map_err(|e| SourceError::Transient(format!("read task failed: {e}")))?
                }
                Backend::Object(store) => fetch_object(store.as_ref(), &tenant.name, filename, max_bytes).await,
            }
        })
    }
}

async fn fetch_object(
    store: &dyn ObjectStore,
    area: &str,
    filename: &str,
    max_bytes: u64,
) -> std::result::Result<Vec<u8>, SourceError> {
    let path = object_store::path::Path::parse(format!("{area}/{filename}"))
        .map_err(|_| SourceError::InvalidName("not a valid object name".into()))?;
    let meta = store.head(&path).await.map_err(object_error)?;
    let size = meta.size as u64;
    if size > max_bytes {
        return Err(SourceError::TooLarge { size, limit: max_bytes });
    }
    let bytes = store.get(&path).await.map_err(object_error)?.bytes().await.map_err(object_error)?;
    if bytes.len() as u64 > max_bytes {
        return Err(SourceError::TooLarge { size: bytes.len() as u64, limit: max_bytes });
    }
    Ok(bytes.to_vec())
}

fn object_error(e: object_store::Error) -> SourceError {
    match e {
        object_store::Error::NotFound { .. } => SourceError::NotFound,
        other => SourceError::Transient(other.to_string()),
    }
}

/// Reads `<root>/<area>/<filename>` opening each component below `root` without following a
/// link. `filename` has passed `check_filename` (relative, no `.`/`..`/empty segments).
fn read_beneath(root: &Path, area: &str, filename: &str, max_bytes: u64) -> std::result::Result<Vec<u8>, SourceError> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let open_error = |what: &str, e: Errno| match e {
        Errno::NOENT => SourceError::NotFound,
        // A link (ELOOP under O_NOFOLLOW), or a file where a folder was expected.
        Errno::LOOP | Errno::NOTDIR | Errno::NXIO => SourceError::NotRegularFile,
        other => SourceError::Transient(format!("opening {what}: {other}")),
    };
    let mut dir: OwnedFd =
        rustix::fs::openat(CWD, root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| SourceError::Transient(format!("opening the bucket root {}: {e}", root.display())))?;
    dir = rustix::fs::openat(&dir, area, dir_flags, Mode::empty()).map_err(|e| open_error("the tenant's area", e))?;
    let mut parts = filename.split('/').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            // NONBLOCK: opening a pipe for reading would otherwise wait for a writer forever.
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(&dir, part, flags, Mode::empty()).map_err(|e| open_error("the file", e))?;
            let stat = rustix::fs::fstat(&fd).map_err(|e| SourceError::Transient(format!("stat: {e}")))?;
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                return Err(SourceError::NotRegularFile);
            }
            let size = u64::try_from(stat.st_size).unwrap_or(0);
            if size > max_bytes {
                return Err(SourceError::TooLarge { size, limit: max_bytes });
            }
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            std::fs::File::from(fd)
                .take(max_bytes + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| SourceError::Transient(format!("reading: {e}")))?;
            if bytes.len() as u64 > max_bytes {
                return Err(SourceError::TooLarge { size: bytes.len() as u64, limit: max_bytes });
            }
            return Ok(bytes);
        }
        dir = rustix::fs::openat(&dir, part, dir_flags, Mode::empty()).map_err(|e| open_error("a folder", e))?;
    }
    Err(SourceError::InvalidName("empty".into()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn tenant(name: &str) -> Tenant {
        Tenant { id: format!("id-{name}"), name: name.into(), created_at: String::new() }
    }

    #[tokio::test]
    async fn only_regular_files_inside_the_tenants_area_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("bucket");
        let source = BucketSource::local(&root).expect("source");
        for area in ["a", "b", "a/sub"] {
            std::fs::create_dir_all(root.join(area)).expect("mkdir");
        }
        std::fs::write(root.join("a/ok.jpg"), b"mine").expect("write");
        std::fs::write(root.join("a/sub/deep.jpg"), b"deep").expect("write");
        std::fs::write(root.join("b/secret.jpg"), b"b's face").expect("write");
        symlink(root.join("b/secret.jpg"), root.join("a/link.jpg")).expect("file link");
        symlink(root.join("b"), root.join("a/other")).expect("folder link");
        symlink("/etc/passwd", root.join("a/passwd.jpg")).expect("link out");
        symlink(root.join("a/loop.jpg"), root.join("a/loop.jpg")).expect("loop");
        std::fs::create_dir(root.join("a/folder.jpg")).expect("folder");
        let fifo = std::process::Command::new("mkfifo").arg(root.join("a/pipe.png")).status().expect("mkfifo");
        assert!(fifo.success());

        let a = tenant("a");
        assert_eq!(source.fetch(&a, "ok.jpg", 100).await, Ok(b"mine".to_vec()));
        assert_eq!(source.fetch(&a, "sub/deep.jpg", 100).await, Ok(b"deep".to_vec()));
        assert_eq!(source.fetch(&a, "missing.jpg", 100).await, Err(SourceError::NotFound));
        for name in ["link.jpg", "other/secret.jpg", "passwd.jpg", "loop.jpg", "folder.jpg", "pipe.png"] {
            let started = std::time::Instant::now();
            let got = source.fetch(&a, name, 100).await;
            assert_eq!(got, Err(SourceError::NotRegularFile), "{name}");
            assert!(started.elapsed() < Duration::from_secs(2), "{name} must not block");
            let reason = got.expect_err("refused").to_string();
            assert!(!reason.contains('/'), "no path in the reason: {reason}");
        }
        assert_eq!(source.fetch(&a, "ok.jpg", 2).await, Err(SourceError::TooLarge { size: 4, limit: 2 }));
        // The area itself as a link.
        symlink(root.join("b"), root.join("c")).expect("area link");
        assert_eq!(source.fetch(&tenant("c"), "secret.jpg", 100).await, Err(SourceError::NotRegularFile));
    }

    #[test]
    fn a_renamed_tenants_area_moves_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("bucket");
        let source = BucketSource::local(&root).expect("source");
        std::fs::create_dir_all(root.join("evil/sub")).expect("mkdir");
        std::fs::write(root.join("evil/sub/1.jpg"), b"x").expect("write");
        source.move_renamed_areas(&[("evil/sub".into(), "evil-sub".into()), ("..".into(), "--".into())]);
        assert!(root.join("evil-sub/1.jpg").is_file());
        assert!(!root.join("evil/sub").exists());
        assert!(!root.join("--").exists(), "'..' named no area of its own");
    }
}
