//! ArcFace embedding of aligned face crops.

use ort::session::Session;
use ort::value::TensorRef;

use crate::align::{AlignedFace, CropGeometry};
use crate::error::{EngineError, Result};

/// Settings of one recognizer, from the pack manifest and the model's input shape.
#[derive(Debug, Clone)]
pub struct RecognizerParams {
    pub mean: f32,
    pub std: f32,
    pub embedding_size: usize,
    /// Crops per run: many when the model's batch dimension is dynamic, else 1.
    pub max_batch: usize,
    /// Also embed the mirrored crop and add the two before normalising ("flip test").
    pub flip_test: bool,
    /// Subtracted from the unit embedding, which is then normalised again (`RecognizerSpec::centre`).
    pub centre: Option<Vec<f32>>,
    /// The crop it reads: its side, and where the keypoints go in it.
    pub crop: CropGeometry,
}

/// Embeds every aligned face, batched; returns L2-normalised vectors in the same order. The
/// crops must be `params.crop.size` on a side.
///
/// With `flip_test`, each face is embedded twice, as aligned and mirrored, and the two raw
/// outputs are added: a face and its mirror image are the same person, so the sum cancels
/// some of the noise from pose and lighting that falls on one side of the face.
pub fn embed(
    session: &mut Session,
    params: &RecognizerParams,
    input: &mut Vec<f32>,
    faces: &[AlignedFace],
) -> Result<Vec<Vec<f32>>> {
    let size = params.crop.size;
    let item = 3 * (size * size) as usize;
    let views = if params.flip_test { 2 } else { 1 };
    let dim = params.embedding_size;
    let faces_per_fill = (params.max_batch / views).max(1);
    let mut embeddings = Vec::with_capacity(faces.len());
    let mut raw_sum = vec![0f32; dim];
    for chunk in faces.chunks(faces_per_fill) {
        input.clear();
        input.resize(item * views * chunk.len(), 0.0);
        for (face, slots) in chunk.iter().zip(input.chunks_exact_mut(item * views)) {
            let (slot, mirror) = slots.split_at_mut(item);
            if face.size != size {
                return Err(EngineError::Runtime(format!("a {} px crop for a {size} px recognizer", face.size)));
            }
            match &face.crop {
                Some(crop) => normalize(crop, params.mean, params.std, slot),
                // Only a non-invertible transform gets here; a flat grey crop keeps the batch
                // aligned with `faces` and yields a meaningless but harmless template.
                None => slot.fill(0.0),
            }
            if views == 2 {
                mirror_planar(slot, mirror, size as usize);
            }
        }
        let mut raw = Vec::with_capacity(dim * views * chunk.len());
        for run in input.chunks(item * params.max_batch.max(1)) {
            let crops = run.len() / item;
            let shape = [crops, 3, size as usize, size as usize];
            let tensor = TensorRef::from_array_view((shape, run))?;
            let outputs = session.run(ort::inputs![tensor])?;
            let (_, out) = outputs[0].try_extract_tensor::<f32>()?;
            if out.len() != dim * crops {
                return Err(EngineError::Model {
                    model: "recognizer".into(),
                    reason: format!("expected {crops} × {dim} values, got {}", out.len()),
                });
            }
            raw.extend_from_slice(out);
        }
        for face in raw.chunks_exact(dim * views) {
            raw_sum.fill(0.0);
            for view in face.chunks_exact(dim) {
                raw_sum.iter_mut().zip(view).for_each(|(s, v)| *s += v);
            }
            let unit = l2_normalized(&raw_sum)?;
            embeddings.push(match &params.centre {
                Some(centre) => centred(&unit, centre)?,
                None => unit,
            });
        }
    }
    Ok(embeddings)
}

/// `(v − c) / |v − c|` of a unit `v`: the embedding with the recognizer's common direction taken out.
fn centred(unit: &[f32], centre: &[f32]) -> Result<Vec<f32>> {
    let moved: Vec<f32> = unit.iter().zip(centre).map(|(v, c)| v - c).collect();
    l2_normalized(&moved)
}

/// Joins each face's two unit embeddings into one unit template `(√(1 − w)·a, √w·b)`, so that
/// the cosine of two templates is `(1 − w)·cos_a + w·cos_b` (see `pack::FusedRecognizerSpec`).
pub fn fuse(first: Vec<Vec<f32>>, second: Vec<Vec<f32>>, weight: f32) -> Result<Vec<Vec<f32>>> {
    if first.len() != second.len() {
        return Err(EngineError::Runtime(format!("{} and {} embeddings to fuse", first.len(), second.len())));
    }
    let (ka, kb) = ((1.0 - weight).sqrt(), weight.sqrt());
    Ok(first
        .into_iter()
        .zip(second)
        .map(|(a, b)| a.iter().map(|v| v * ka).chain(b.iter().map(|v| v * kb)).collect())
        .collect())
}

/// Writes `(v − mean) / std` of each raw sample into `out`, with the same operations, in the
/// same order, as a crop warped straight into normalised values: templates do not change by a
/// bit for being made from the shared crop.
fn normalize(crop: &[f32], mean: f32, std: f32, out: &mut [f32]) {
    let scale = 1.0 / std;
    out.iter_mut().zip(crop).for_each(|(o, v)| *o = (v - mean) * scale);
}

/// Writes the left-right mirror image of a planar `3 × side × side` crop into `out`.
fn mirror_planar(crop: &[f32], out: &mut [f32], side: usize) {
    for (src, dst) in crop.chunks_exact(side).zip(out.chunks_exact_mut(side)) {
        dst.iter_mut().zip(src.iter().rev()).for_each(|(d, s)| *d = *s);
    }
}

/// `v / |v|`; an all-zero or non-finite output is a model failure, not a template.
pub fn l2_normalized(v: &[f32]) -> Result<Vec<f32>> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if !norm.is_finite() || norm <= 1e-12 {
        return Err(EngineError::Model { model: "recognizer".into(), reason: "zero or non-finite embedding".into() });
    }
    let inv = (1.0 / norm) as f32;
    Ok(v.iter().map(|x| x * inv).collect())
}

/// Cosine similarity of two L2-normalised embeddings.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::{warp_to_planar, Affine};
    use crate::detect::Detection;

    #[test]
    fn normalises_to_unit_length() {
        let v = l2_normalized(&[3.0, 4.0]).expect("non-zero");
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert!(l2_normalized(&[0.0, 0.0]).is_err());
        assert!(l2_normalized(&[f32::NAN, 1.0]).is_err());
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_fused_template_is_unit_and_its_cosine_the_weighted_mean_of_the_two() {
        let a = [l2_normalized(&[1.0, 2.0, 3.0]).expect("a"), l2_normalized(&[3.0, -1.0, 0.5]).expect("a")];
        let b = [l2_normalized(&[0.5, 0.5]).expect("b"), l2_normalized(&[-1.0, 0.2]).expect("b")];
        let w = 0.3;
        let fused = fuse(a.to_vec(), b.to_vec(), w).expect("same count");
        assert_eq!(fused[0].len(), 5);
        assert!(fused.iter().all(|t| (cosine(t, t) - 1.0).abs() < 1e-6));
        let expected = (1.0 - w) * cosine(&a[0], &a[1]) + w * cosine(&b[0], &b[1]);
        assert!((cosine(&fused[0], &fused[1]) - expected).abs() < 1e-6);
        assert!(fuse(a.to_vec(), b[..1].to_vec(), w).is_err());
    }

    #[test]
    fn a_centred_embedding_is_unit_and_points_away_from_the_centre() {
        let centre = [0.3, 0.2, 0.0];
        let a = l2_normalized(&[1.0, 1.0, 0.2]).expect("a");
        let b = l2_normalized(&[1.0, 0.8, -0.3]).expect("b");
        let (ca, cb) = (centred(&a, &centre).expect("a"), centred(&b, &centre).expect("b"));
        assert!((cosine(&ca, &ca) - 1.0).abs() < 1e-6);
        let along = |v: &[f32]| cosine(v, &l2_normalized(&centre).expect("centre"));
        assert!(along(&ca) < along(&a) - 0.03, "the centre's direction is taken out");
        // Two embeddings that share the centre's direction come out less alike.
        assert!(cosine(&ca, &cb) < cosine(&a, &b));
    }

    #[test]
    fn mirroring_reverses_every_row_of_every_plane() {
        let side = 3;
        let crop: Vec<f32> = (0..3 * side * side).map(|v| v as f32).collect();
        let mut out = vec![0.0; crop.len()];
        mirror_planar(&crop, &mut out, side);
        assert_eq!(&out[..3], &[2.0, 1.0, 0.0]);
        assert_eq!(&out[24..], &[26.0, 25.0, 24.0]);
        let mut back = vec![0.0; crop.len()];
        mirror_planar(&out, &mut back, side);
        assert_eq!(back, crop);
    }

    #[test]
    fn a_normalised_shared_crop_equals_a_crop_warped_normalised() {
        let img =
            image::RgbImage::from_fn(150, 170, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 3 % 256) as u8, 200]));
        let det = Detection {
            bbox: facegate_core::BoundingBox { left: 20.0, top: 30.0, right: 130.0, bottom: 160.0 },
            landmarks: [[50.0, 70.0], [100.0, 64.0], [77.0, 95.0], [55.0, 125.0], [98.0, 121.0]],
            score: 0.9,
        };
        let face = AlignedFace::new(&img, det.clone(), 112);
        let (mean, std) = (127.5, 127.5);
        let mut shared = vec![0.0; 3 * 112 * 112];
        normalize(face.crop.as_deref().expect("invertible"), mean, std, &mut shared);
        let mut direct = vec![0.0; 3 * 112 * 112];
        let m: Affine = crate::align::crop_transform(&det, 112);
        assert!(warp_to_planar(&img, &m, 112, mean, std, &mut direct));
        assert!(shared.iter().zip(&direct).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
