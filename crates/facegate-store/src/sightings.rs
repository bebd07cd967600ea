//! Sightings as stored, whatever the backend: the template encoded as a sample's, and the crop
//! sealed with the data key when the gallery is encrypted. Both use the sighting's own id as the
//! associated data: unlike a sample, a sighting moves between (unknown) people.

use facegate_core::{BoundingBox, FaceCrop, NewSighting, SightingFace};

use crate::crypto::DataKey;
use crate::error::Result;
use crate::templates::{decode_template, encode_template, reseal_template};

/// A sighting's stored template, its encoding, and its stored crop.
pub(crate) struct SealedSighting {
    pub template: Vec<u8>,
    pub encoding: &'static str,
    pub crop: Vec<u8>,
}

pub(crate) fn seal_sighting(sighting: &NewSighting, key: Option<&DataKey>) -> Result<SealedSighting> {
    let (template, encoding) = encode_template(&sighting.embedding, &sighting.id, key)?;
    let crop = match key {
        Some(key) => key.seal(&sighting.crop, sighting.id.as_bytes())?,
        None => sighting.crop.clone(),
    };
    Ok(SealedSighting { template, encoding, crop })
}

/// A stored template of a sighting; `Ok(None)` for bytes that decode to none.
pub(crate) fn open_sighting_template(
    blob: &[u8],
    encoding: &str,
    sighting_id: &str,
    key: Option<&DataKey>,
) -> Result<Option<Vec<f32>>> {
    decode_template(blob, encoding, sighting_id, key)
}

/// A stored crop, opened when the gallery is encrypted.
fn open_crop(stored: Vec<u8>, sighting_id: &str, key: Option<&DataKey>) -> Result<Vec<u8>> {
    match key {
        Some(key) => key.open(&stored, sighting_id.as_bytes()),
        None => Ok(stored),
    }
}

/// The columns a [`StoredFace`] is read from, in its order.
pub(crate) const STORED_FACE: &str =
    "crop, crop_face_left, crop_face_top, crop_face_right, crop_face_bottom, model_id, embedding, embedding_encoding, \
     unknown_person_id";

/// A sighting's face as stored: sealed when the gallery is encrypted.
pub(crate) struct StoredFace {
    pub crop: Vec<u8>,
    pub crop_face: BoundingBox,
    pub model_id: String,
    pub template: Vec<u8>,
    pub encoding: String,
    pub unknown_person_id: String,
}

impl StoredFace {
    pub(crate) fn open(self, sighting_id: &str, key: Option<&DataKey>) -> Result<SightingFace> {
        let embedding = open_sighting_template(&self.template, &self.encoding, sighting_id, key)?.ok_or_else(|| {
            crate::error::StoreError::Inconsistent(format!("sighting {sighting_id} holds no readable template"))
        })?;
        Ok(SightingFace {
            unknown_person_id: self.unknown_person_id,
            crop: FaceCrop { jpeg: open_crop(self.crop, sighting_id, key)?, face: self.crop_face },
            model_id: self.model_id,
            embedding,
        })
    }
}

/// A sighting's template and crop sealed anew under `new` for key rotation; `Ok(None)` when
/// they are under `new` already (a rotation run again after an interruption).
pub(crate) fn reseal_sighting(
    sighting_id: &str,
    template: &[u8],
    encoding: &str,
    crop: &[u8],
    old: Option<&DataKey>,
    new: &DataKey,
) -> Result<Option<SealedSighting>> {
    let Some((template, encoding)) = reseal_template(template, encoding, sighting_id, sighting_id, old, new)? else {
        return Ok(None);
    };
    let plain_crop = match (crate::crypto::sealed_key_id(crop), old) {
        (Some(_), Some(old)) => old.open(crop, sighting_id.as_bytes())?,
        (Some(_), None) => {
            return Err(crate::error::StoreError::Key("an encrypted crop, and no key to open it".into()));
        }
        (None, _) => crop.to_vec(),
    };
    Ok(Some(SealedSighting { template, encoding, crop: new.seal(&plain_crop, sighting_id.as_bytes())? }))
}
