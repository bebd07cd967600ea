//! Templates as stored, whatever the backend: little-endian f16 (half of f32, and no
//! measurable change in accuracy: docs/accuracy.md), sealed with the data key when the gallery
//! is encrypted. Rows written before SQLite schema v6 hold f32.

use crate::crypto::{sealed_key_id, DataKey};
use crate::error::{Result, StoreError};

/// `face_samples.embedding_encoding` of little-endian f16 templates, what new rows get.
pub(crate) const F16_LE: &str = "f16le";
/// ... and of little-endian f32 ones, what rows written before schema v6 hold.
pub(crate) const F32_LE: &str = "f32le";

/// Suffix of `embedding_encoding` for a template sealed with the data key, subject id as AAD.
pub(crate) const SEALED_SUFFIX: &str = "+aes256gcm";
pub(crate) const F16_LE_SEALED: &str = "f16le+aes256gcm";

/// A template's stored bytes and `embedding_encoding`: f16, sealed when there is a key.
pub(crate) fn encode_template(
    embedding: &[f32],
    subject_id: &str,
    key: Option<&DataKey>,
) -> Result<(Vec<u8>, &'static str)> {
    let plain = encode_embedding_f16(embedding);
    Ok(match key {
        Some(key) => (key.seal(&plain, subject_id.as_bytes())?, F16_LE_SEALED),
        None => (plain, F16_LE),
    })
}

/// A stored template sealed anew under `new` for key rotation, both backends alike: `Ok(None)`
/// when it is sealed under `new` already (a rotation run again after an interruption).
pub(crate) fn reseal_template(
    blob: &[u8],
    encoding: &str,
    sample_id: &str,
    subject_id: &str,
    old: Option<&DataKey>,
    new: &DataKey,
) -> Result<Option<(Vec<u8>, &'static str)>> {
    if sealed_key_id(blob) == Some(new.id()) {
        return Ok(None);
    }
    let embedding = decode_template(blob, encoding, subject_id, old)?
        .ok_or_else(|| StoreError::Inconsistent(format!("sample {sample_id} holds no readable template")))?;
    encode_template(&embedding, subject_id, Some(new)).map(Some)
}

/// A template from its stored bytes, opening it with the data key when sealed. `Ok(None)` for
/// bytes that decode to no template (an unknown encoding or a ragged length).
pub(crate) fn decode_template(
    blob: &[u8],
    encoding: &str,
    subject_id: &str,
    key: Option<&DataKey>,
) -> Result<Option<Vec<f32>>> {
    match encoding.strip_suffix(SEALED_SUFFIX) {
        Some(inner) => {
            let key = key.ok_or_else(|| StoreError::Key("an encrypted template, and no key to open it".into()))?;
            Ok(decode_embedding(&key.open(blob, subject_id.as_bytes())?, inner))
        }
        None => Ok(decode_embedding(blob, encoding)),
    }
}

pub(crate) fn encode_embedding_f16(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()
}

/// A template from its stored bytes; `None` for an unknown encoding or a length that is not a
/// whole number of values.
pub(crate) fn decode_embedding(blob: &[u8], encoding: &str) -> Option<Vec<f32>> {
    match encoding {
        F32_LE => {
            let chunks = blob.chunks_exact(4);
            if !chunks.remainder().is_empty() {
                return None;
            }
            Some(chunks.filter_map(|c| c.first_chunk::<4>()).map(|b| f32::from_le_bytes(*b)).collect())
        }
        F16_LE => {
            let chunks = blob.chunks_exact(2);
            if !chunks.remainder().is_empty() {
                return None;
            }
            Some(chunks.filter_map(|c| c.first_chunk::<2>()).map(|b| half::f16::from_le_bytes(*b).to_f32()).collect())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_decode_from_little_endian_and_reject_ragged_blobs() {
        let v = [1.0f32, -2.5, f32::MAX, 0.0];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(decode_embedding(&bytes, F32_LE), Some(v.to_vec()));
        assert_eq!(decode_embedding(&[], F32_LE), Some(vec![]));
        assert_eq!(decode_embedding(&bytes[..5], F32_LE), None);
        assert_eq!(decode_embedding(&bytes, "bf16"), None);

        let unit = [0.5f32, -0.25, 0.041_37, 0.0];
        let half_bytes = encode_embedding_f16(&unit);
        assert_eq!(half_bytes.len(), 8, "two bytes a value");
        let back = decode_embedding(&half_bytes, F16_LE).expect("decodes");
        assert!(back.iter().zip(&unit).all(|(a, b)| (a - b).abs() < 1e-4), "{back:?}");
        assert_eq!(decode_embedding(&half_bytes[..3], F16_LE), None);
    }
}
