//! Where bulk registration reads files: a local directory or an S3-compatible bucket, through
//! the `object_store` crate, one area (`<tenant name>/`) per tenant.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use facegate_core::jobs::{check_filename, ImageSource, SourceError, SourceFuture};
use facegate_core::Tenant;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, RetryConfig};

use crate::error::{Result, StoreError};

/// A bucket of images, one folder per tenant.
#[derive(Debug, Clone)]
pub struct BucketSource {
    store: Arc<dyn ObjectStore>,
    /// Where it points, for logs.
    location: String,
}

impl BucketSource {
    /// Files under `root/<tenant name>/`; `root` is created if missing.
    pub fn local(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::io(format!("creating {}", root.display()), e))?;
        let store = LocalFileSystem::new_with_prefix(root).map_err(|e| StoreError::Inconsistent(e.to_string()))?;
        Ok(Self { store: Arc::new(store), location: root.display().to_string() })
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
        Ok(Self { store, location: url.to_owned() })
    }

    pub fn location(&self) -> &str {
        &self.location
    }
}

impl ImageSource for BucketSource {
    fn fetch<'a>(&'a self, tenant: &'a Tenant, filename: &'a str, max_bytes: u64) -> SourceFuture<'a> {
        Box::pin(async move {
            check_filename(filename)?;
            let path = object_store::path::Path::parse(format!("{}/{filename}", tenant.name))
                .map_err(|e| SourceError::InvalidName(e.to_string()))?;
            let meta = self.store.head(&path).await.map_err(source_error)?;
            let size = meta.size as u64;
            if size > max_bytes {
                return Err(SourceError::TooLarge { size, limit: max_bytes });
            }
            let bytes = self.store.get(&path).await.map_err(source_error)?.bytes().await.map_err(source_error)?;
            if bytes.len() as u64 > max_bytes {
                return Err(SourceError::TooLarge { size: bytes.len() as u64, limit: max_bytes });
            }
            Ok(bytes.to_vec())
        })
    }
}

fn source_error(e: object_store::Error) -> SourceError {
    match e {
        object_store::Error::NotFound { .. } => SourceError::NotFound,
        object_store::Error::InvalidPath { source } => SourceError::InvalidName(source.to_string()),
        other => SourceError::Transient(other.to_string()),
    }
}
