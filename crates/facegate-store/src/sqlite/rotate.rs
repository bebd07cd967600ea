//! `facegate keys rotate`: re-encrypts every template and image file of a stopped server's data
//! directory under a new key, or encrypts a plaintext directory for the first time.
//!
//! Image files go first, one atomic replacement each; then every template and the recorded key
//! id change in one transaction. Each sealed value names its key, so a rotation cut short by a
//! crash is finished by running it again with both keys: values already under the new key are
//! left as they are.

use std::path::Path;

use rusqlite::{params, Connection, TransactionBehavior};

use super::blobs::BlobStore;
use super::lock::DataDirLock;
use super::{migrations, recorded_key_id, META_KEY_ID};
use crate::crypto::{reseal_image, DataKey, RotationReport};
use crate::error::{Result, StoreError};
use crate::sightings::reseal_sighting;
use crate::templates::reseal_template;

/// Re-encrypts the data directory under `new`. `old` is the key it is encrypted under now, or
/// `None` when it is in the clear. The server must be stopped.
pub fn rotate_key(data_dir: &Path, old: Option<&DataKey>, new: &DataKey) -> Result<RotationReport> {
    let db_path = data_dir.join("facegate.db");
    if !db_path.is_file() {
        return Err(StoreError::Key(format!("no database at {}", db_path.display())));
    }
    let _lock = DataDirLock::acquire(data_dir)?;
    let mut conn = Connection::open(&db_path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    migrations::migrate(&mut conn)?;
    let recorded = recorded_key_id(&conn)?;
    crate::crypto::check_rotation_keys(recorded.as_deref(), old, new)?;
    let blobs = BlobStore::open(data_dir.join("images"))?;
    let mut report = RotationReport::default();

    // (sample id, subject id, path) of every image, read before any change.
    let images: Vec<(String, String, String)> = {
        let mut stmt = conn.prepare(
            "SELECT b.sample_id, s.subject_id, b.path FROM image_blobs b JOIN face_samples s ON s.id = b.sample_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (sample_id, subject_id, path) in images {
        let stored = blobs.read(&path)?;
        let Some(sealed) = reseal_image(stored, &path, &subject_id, recorded.is_some(), old, new, "data directory")?
        else {
            report.already_rotated += 1;
            continue;
        };
        let info = blobs.replace(&path, &sealed)?;
        let bytes = i64::try_from(info.bytes).map_err(|_| StoreError::Inconsistent("image too large".into()))?;
        conn.execute(
            "UPDATE image_blobs SET sha256 = ?2, bytes = ?3 WHERE sample_id = ?1",
            params![sample_id, info.sha256, bytes],
        )?;
        report.images += 1;
    }

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut select = tx.prepare("SELECT id, subject_id, embedding, embedding_encoding FROM face_samples")?;
        let mut update = tx.prepare("UPDATE face_samples SET embedding = ?2, embedding_encoding = ?3 WHERE id = ?1")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let (sample_id, subject_id): (String, String) = (row.get(0)?, row.get(1)?);
            let blob: Vec<u8> = row.get(2)?;
            let encoding: String = row.get(3)?;
            let Some((sealed, sealed_encoding)) = reseal_template(&blob, &encoding, &sample_id, &subject_id, old, new)?
            else {
                report.already_rotated += 1;
                continue;
            };
            update.execute(params![sample_id, sealed, sealed_encoding])?;
            report.templates += 1;
        }
    }
    {
        let mut select = tx.prepare("SELECT id, embedding, embedding_encoding, crop FROM sightings")?;
        let mut update =
            tx.prepare("UPDATE sightings SET embedding = ?2, embedding_encoding = ?3, crop = ?4 WHERE id = ?1")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let sighting_id: String = row.get(0)?;
            let (blob, encoding, crop): (Vec<u8>, String, Vec<u8>) = (row.get(1)?, row.get(2)?, row.get(3)?);
            let Some(sealed) = reseal_sighting(&sighting_id, &blob, &encoding, &crop, old, new)? else {
                report.already_rotated += 1;
                continue;
            };
            update.execute(params![sighting_id, sealed.template, sealed.encoding, sealed.crop])?;
            report.sightings += 1;
        }
    }
    // Templates staged by an unfinished reindex are sealed under the old key. They are only work
    // saved, so they go rather than being re-sealed: the next reindex run redoes them.
    tx.execute("DELETE FROM reindex_staging", [])?;
    tx.execute(
        "INSERT INTO store_meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![META_KEY_ID, new.id_hex()],
    )?;
    tx.commit()?;
    // secure_delete zeroed the old values' cells; VACUUM and a truncated WAL leave no copy of
    // them in free pages or in the log either.
    conn.execute_batch("VACUUM")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))?;
    tracing::info!(
        key_id = %new.id_hex(),
        templates = report.templates,
        images = report.images,
        sightings = report.sightings,
        already_rotated = report.already_rotated,
        "data directory re-encrypted"
    );
    Ok(report)
}
