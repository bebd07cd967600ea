//! `facegate keys rotate --database-url`: re-encrypts every template and face image of a
//! PostgreSQL gallery under a new key, or encrypts a plaintext one, in one transaction: a crash
//! or an error leaves the gallery as it was. No node may run meanwhile (it would go on sealing
//! with the old key): every node holds a shared advisory lock that the rotation takes
//! exclusively.

use postgres::{Client, NoTls};

use super::{migrations, META_KEY_ID, NODES_LOCK};
use crate::crypto::{reseal_image, DataKey, RotationReport};
use crate::error::{Result, StoreError};
use crate::sightings::reseal_sighting;
use crate::templates::reseal_template;

/// Rows read per round trip while rotating.
const BATCH: i64 = 1_000;

/// Re-encrypts the gallery at `url` under `new`. `old` is the key it is encrypted under now, or
/// `None` when it is in the clear. Every node must be stopped.
pub fn rotate_key_postgres(url: &str, old: Option<&DataKey>, new: &DataKey) -> Result<RotationReport> {
    let mut client = Client::connect(url, NoTls)?;
    let free: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&NODES_LOCK])?.get(0);
    if !free {
        return Err(StoreError::Locked(
            "facegate nodes are running on this database; stop them all before rotating the key".into(),
        ));
    }
    migrations::migrate(&mut client)?;
    let mut tx = client.transaction()?;
    let recorded: Option<String> =
        tx.query_opt("SELECT value FROM store_meta WHERE name = $1", &[&META_KEY_ID])?.map(|r| r.get(0));
    crate::crypto::check_rotation_keys(recorded.as_deref(), old, new)?;
    let mut report = RotationReport::default();

    let mut after = -1i64;
    loop {
        let rows = tx.query(
            "SELECT ordinal, id, subject_id, embedding, embedding_encoding FROM face_samples \
             WHERE ordinal > $1 ORDER BY ordinal LIMIT $2",
            &[&after, &BATCH],
        )?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        for row in &rows {
            let (sample_id, subject_id): (String, String) = (row.get(1), row.get(2));
            let blob: Vec<u8> = row.get(3);
            let encoding: String = row.get(4);
            let Some((sealed, sealed_encoding)) = reseal_template(&blob, &encoding, &sample_id, &subject_id, old, new)?
            else {
                report.already_rotated += 1;
                continue;
            };
            tx.execute(
                "UPDATE face_samples SET embedding = $2, embedding_encoding = $3 WHERE id = $1",
                &[&sample_id, &sealed, &sealed_encoding],
            )?;
            report.templates += 1;
        }
    }

    let mut after = String::new();
    loop {
        let rows = tx.query(
            "SELECT b.sample_id, s.subject_id, b.path, b.data FROM image_blobs b \
             JOIN face_samples s ON s.id = b.sample_id WHERE b.sample_id > $1 ORDER BY b.sample_id LIMIT $2",
            &[&after, &BATCH],
        )?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        for row in &rows {
            let (sample_id, subject_id, path): (String, String, String) = (row.get(0), row.get(1), row.get(2));
            let stored: Vec<u8> = row.get(3);
            let Some(sealed) = reseal_image(stored, &path, &subject_id, recorded.is_some(), old, new, "gallery")?
            else {
                report.already_rotated += 1;
                continue;
            };
            use sha2::{Digest, Sha256};
            let sha = hex::encode(Sha256::digest(&sealed));
            tx.execute(
                "UPDATE image_blobs SET data = $2, sha256 = $3, bytes = $4 WHERE sample_id = $1",
                &[&sample_id, &sealed, &sha, &super::to_i64(sealed.len())],
            )?;
            report.images += 1;
        }
    }
    let mut after = String::new();
    loop {
        let rows = tx.query(
            "SELECT id, embedding, embedding_encoding, crop FROM sightings WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &BATCH],
        )?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        for row in &rows {
            let sighting_id: String = row.get(0);
            let (blob, encoding, crop): (Vec<u8>, String, Vec<u8>) = (row.get(1), row.get(2), row.get(3));
            let Some(sealed) = reseal_sighting(&sighting_id, &blob, &encoding, &crop, old, new)? else {
                report.already_rotated += 1;
                continue;
            };
            tx.execute(
                "UPDATE sightings SET embedding = $2, embedding_encoding = $3, crop = $4 WHERE id = $1",
                &[&sighting_id, &sealed.template, &sealed.encoding, &sealed.crop],
            )?;
            report.sightings += 1;
        }
    }
    // Templates staged by an unfinished reindex are sealed under the old key. They are only work
    // saved, so they go rather than being re-sealed: the next reindex run redoes them.
    tx.execute("DELETE FROM reindex_staging", &[])?;
    tx.execute(
        "INSERT INTO store_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        &[&META_KEY_ID, &new.id_hex()],
    )?;
    tx.commit()?;
    tracing::info!(
        key_id = %new.id_hex(),
        templates = report.templates,
        images = report.images,
        sightings = report.sightings,
        "PostgreSQL gallery re-encrypted"
    );
    Ok(report)
}
