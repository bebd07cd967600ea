//! Encryption at rest: templates and image files sealed with AES-256-GCM under an operator's key,
//! the subject id as associated data so a sealed value cannot be moved to another subject.
//!
//! A sealed value is `FGE1 | key id (8 bytes) | nonce (12 bytes) | ciphertext and tag`. Carrying
//! the key id in every value is what lets `facegate keys rotate` stop halfway through and run
//! again: each value says which key opens it. Nonces are random; at 2^32 values per key the
//! chance of a repeat stays below 2^-32, and rotation starts a fresh key well before that.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};

const MAGIC: &[u8; 4] = b"FGE1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;

/// A 256-bit data key. Its bytes never leave this type: `Debug` prints only the key id.
#[derive(Clone)]
pub struct DataKey {
    cipher: Aes256Gcm,
    id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({})", self.id_hex())
    }
}

impl DataKey {
    /// Reads a key file: 32 raw bytes, or 64 hex digits, or the base64 of 32 bytes (as
    /// `openssl rand -hex 32` or `openssl rand -base64 32` write them).
    pub fn from_file(path: &Path) -> Result<DataKey> {
        let bytes = std::fs::read(path).map_err(|e| StoreError::io(format!("read key file {}", path.display()), e))?;
        let invalid = || {
            StoreError::Key(format!(
                "{} holds no 256-bit key: expected 32 raw bytes, 64 hex digits or base64 of 32 bytes",
                path.display()
            ))
        };
        if bytes.len() == 32 {
            return Ok(DataKey::from_bytes(&bytes));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| invalid())?
        } else {
            base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| invalid())?
        };
        if decoded.len() != 32 {
            return Err(invalid());
        }
        Ok(DataKey::from_bytes(&decoded))
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> DataKey {
        let digest = Sha256::new().chain_update(b"facegate key id\0").chain_update(bytes).finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        DataKey { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)), id }
    }

    /// A short public name for the key, recorded in the database so a wrong key is refused at
    /// start-up rather than failing on the first template.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Vec<u8>> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: associated_data })
            .map_err(|_| StoreError::Key("encryption failed".into()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a value this key sealed with the same associated data.
    pub fn open(&self, sealed: &[u8], associated_data: &[u8]) -> Result<Vec<u8>> {
        let Some(key_id) = sealed_key_id(sealed) else {
            return Err(StoreError::Key("not an encrypted value".into()));
        };
        if key_id != self.id {
            return Err(StoreError::Key(format!("encrypted under key {}, not {}", hex::encode(key_id), self.id_hex())));
        }
        let nonce = Nonce::from_slice(&sealed[MAGIC.len() + KEY_ID_LEN..HEADER_LEN]);
        self.cipher
            .decrypt(nonce, Payload { msg: &sealed[HEADER_LEN..], aad: associated_data })
            .map_err(|_| StoreError::Key("an encrypted value failed authentication (tampered or moved)".into()))
    }

    pub(crate) fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }
}

/// The id of the key a value was sealed with, or `None` when it is not a sealed value.
pub fn sealed_key_id(value: &[u8]) -> Option<[u8; KEY_ID_LEN]> {
    if value.len() < HEADER_LEN || &value[..MAGIC.len()] != MAGIC {
        return None;
    }
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&value[MAGIC.len()..MAGIC.len() + KEY_ID_LEN]);
    Some(id)
}

/// Whether `key` may open a gallery whose recorded key id is `recorded`, and whether it must be
/// recorded now (`Ok(true)`). A gallery opened without its key, or with another, is refused. A
/// key for a gallery with no recorded key is recorded only when `may_record` (the process that
/// owns the gallery: the SQLite directory's lock holder, or a PostgreSQL server node) and only
/// while the gallery holds no faces; anyone else is refused, so that a side process never marks a
/// live plaintext gallery encrypted under the server's feet.
pub(crate) fn check_key_state(
    recorded: Option<String>,
    key: Option<&DataKey>,
    may_record: bool,
    has_samples: &dyn Fn() -> Result<bool>,
) -> Result<bool> {
    match (recorded, key) {
        (None, None) => Ok(false),
        (Some(recorded), Some(key)) if recorded == key.id_hex() => Ok(false),
        (Some(recorded), Some(key)) => Err(StoreError::Key(format!(
            "the data directory is encrypted under key {recorded}, and the key given is {}",
            key.id_hex()
        ))),
        (Some(recorded), None) => Err(StoreError::Key(format!(
            "the data directory is encrypted (key {recorded}); give its key with --encryption-key-file"
        ))),
        (None, Some(_)) if !may_record => Err(StoreError::Key(
            "the data directory is not encrypted, and a key was given. Only `facegate serve` or `facegate keys \
             rotate --new-key-file` sets a directory's key; give no key here, or encrypt the directory first"
                .into(),
        )),
        (None, Some(_)) => {
            if has_samples()? {
                return Err(StoreError::Key(
                    "the data directory holds unencrypted faces; encrypt them first with \
                     `facegate keys rotate --new-key-file`"
                        .into(),
                ));
            }
            Ok(true)
        }
    }
}

/// What a key rotation changed, on either backend (`rotate_key`, `rotate_key_postgres`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    pub templates: usize,
    pub images: usize,
    /// Sightings (template and crop) of faces nobody enrolled.
    pub sightings: usize,
    /// Values found already under the new key (left by an earlier, interrupted rotation).
    pub already_rotated: usize,
}

/// Whether a rotation to `new` may start on a gallery whose recorded key id is `recorded`:
/// `old` must be that key (or `new` itself, when an interrupted rotation is run again), and a
/// plaintext gallery has no old key.
/// A stored face image sealed anew under `new` for key rotation, both backends alike: `Ok(None)`
/// when it is sealed under `new` already (a rotation run again after an interruption). A plain
/// image is sealed only in a gallery that was plain (`was_encrypted` false); in an encrypted one
/// it is refused, since something wrote it past the store. `gallery` names the gallery's kind
/// in that refusal ("data directory", "gallery").
pub(crate) fn reseal_image(
    stored: Vec<u8>,
    path: &str,
    subject_id: &str,
    was_encrypted: bool,
    old: Option<&DataKey>,
    new: &DataKey,
    gallery: &str,
) -> Result<Option<Vec<u8>>> {
    let plain = match sealed_key_id(&stored) {
        Some(id) if id == new.id() => return Ok(None),
        Some(_) => old
            .ok_or_else(|| StoreError::Key(format!("{path} is encrypted and no old key was given")))?
            .open(&stored, subject_id.as_bytes())?,
        None if !was_encrypted => stored,
        None => return Err(StoreError::Key(format!("{path} is not encrypted in an encrypted {gallery}"))),
    };
    new.seal(&plain, subject_id.as_bytes()).map(Some)
}

pub(crate) fn check_rotation_keys(recorded: Option<&str>, old: Option<&DataKey>, new: &DataKey) -> Result<()> {
    match (recorded, old) {
        (Some(id), _) if id == new.id_hex() => Ok(()),
        (Some(id), Some(old)) if id == old.id_hex() => Ok(()),
        (Some(id), _) => {
            Err(StoreError::Key(format!("the gallery is encrypted under key {id}; give that key as the old key")))
        }
        (None, Some(old)) => {
            Err(StoreError::Key(format!("the gallery is not encrypted, so it has no old key (given {})", old.id_hex())))
        }
        (None, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_subject() {
        let key = DataKey::from_bytes(&[7u8; 32]);
        let other = DataKey::from_bytes(&[8u8; 32]);
        let sealed = key.seal(b"template bytes", b"subject-1").expect("seal");
        assert!(!sealed.windows(8).any(|w| w == b"template"));
        assert_eq!(key.open(&sealed, b"subject-1").expect("open"), b"template bytes");
        assert!(key.open(&sealed, b"subject-2").is_err(), "moved to another subject");
        assert!(other.open(&sealed, b"subject-1").is_err(), "another key");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(key.open(&tampered, b"subject-1").is_err());
        assert_eq!(sealed_key_id(&sealed), Some(key.id()));
        assert_eq!(sealed_key_id(b"\xff\xd8\xff\xe0 a jpeg"), None);
    }

    #[test]
    fn key_files_take_raw_hex_and_base64() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [3u8; 32]).expect("write");
        let hexed = dir.path().join("hex");
        std::fs::write(&hexed, format!("{}\n", hex::encode([3u8; 32]))).expect("write");
        let b64 = dir.path().join("b64");
        std::fs::write(&b64, base64::engine::general_purpose::STANDARD.encode([3u8; 32])).expect("write");
        let ids: Vec<String> =
            [&raw, &hexed, &b64].iter().map(|p| DataKey::from_file(p).expect("key").id_hex()).collect();
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").expect("write");
        assert!(DataKey::from_file(&short).is_err());
        assert!(format!("{:?}", DataKey::from_file(&raw).expect("key")).starts_with("DataKey("));
    }
}
