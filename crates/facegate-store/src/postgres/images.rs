//! Where a PostgreSQL gallery keeps its face images, behind a small interface: every node must
//! read every image, so they cannot stay on one node's disk. Today they are rows of
//! `image_blobs`, written in the sample's own transaction; an S3-compatible bucket (through
//! `object_store`) can implement the same three calls later.

use postgres::Transaction;

use super::sql::{to_i64, Conn};
use crate::error::Result;

/// One image about to be stored with its sample.
pub struct NewImage<'a> {
    pub sample_id: &'a str,
    /// `<tenant_id>/<image_name>`.
    pub path: &'a str,
    /// As stored: sealed when the gallery is encrypted.
    pub bytes: &'a [u8],
}

pub trait ImageStore: Send + Sync {
    /// Stores an image as part of `tx`: it exists exactly when `tx` commits.
    fn save(&self, tx: &mut Transaction<'_>, image: &NewImage<'_>) -> Result<()>;
    /// The stored bytes at `path`, if any.
    fn load(&self, conn: &mut Conn, path: &str) -> Result<Option<Vec<u8>>>;
    /// Called after a commit that removed the samples stored at `paths`. Rows of
    /// `image_blobs` went with their samples already; a bucket would delete its objects here.
    fn forget(&self, paths: &[String]);
}

/// Images as rows of `image_blobs`, removed by `ON DELETE CASCADE` with their sample.
pub struct InDatabase;

impl ImageStore for InDatabase {
    fn save(&self, tx: &mut Transaction<'_>, image: &NewImage<'_>) -> Result<()> {
        use sha2::{Digest, Sha256};
        let sha = hex::encode(Sha256::digest(image.bytes));
        let bytes = to_i64(image.bytes.len());
        tx.execute(
            "INSERT INTO image_blobs (sample_id, path, sha256, bytes, data) VALUES ($1, $2, $3, $4, $5)",
            &[&image.sample_id, &image.path, &sha, &bytes, &image.bytes],
        )?;
        Ok(())
    }

    fn load(&self, conn: &mut Conn, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(conn.query_opt("SELECT data FROM image_blobs WHERE path = $1", &[&path])?.map(|row| row.get(0)))
    }

    fn forget(&self, _paths: &[String]) {}
}
