//! 5-point face alignment to the ArcFace 112×112 template.
//!
//! The recognizer was trained on crops made exactly this way, so the template, the transform
//! family (similarity: rotation + uniform scale + translation, no reflection or shear) and the
//! sampling convention (pixel centres at integer coordinates, as OpenCV's `warpAffine`) all
//! matter for accuracy.
//!
//! Each face is aligned once ([`AlignedFace`]): the recognizer and the quality measure of the
//! attributes both read that one crop.

use image::RgbImage;

use crate::detect::Detection;

/// ArcFace's reference keypoints in a 112×112 crop: eyes, nose tip, mouth corners.
pub const ARCFACE_TEMPLATE: [[f32; 2]; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

/// A 2×3 affine matrix `[[a, b, tx], [c, d, ty]]` mapping `(x, y)` to
/// `(a·x + b·y + tx, c·x + d·y + ty)`.
pub type Affine = [[f32; 3]; 2];

/// Least-squares similarity transform taking `src` points onto `dst` points (Umeyama 1991,
/// restricted to proper rotations).
///
/// In 2-D a similarity without reflection is `z ↦ s·z + t` over complex numbers, so the
/// least-squares solution has a closed form: with both point sets centred,
/// `s = Σ conj(src)·dst / Σ |src|²`. That is the same optimum Umeyama's SVD gives when its
/// reflection guard is active, without the SVD. Returns `None` when the source points coincide
/// (no scale can be estimated).
pub fn similarity_transform(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Affine> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return None;
    }
    // f64 because keypoints can be thousands of pixels out and the sums are of squares.
    let mean = |pts: &[[f32; 2]]| {
        let (sx, sy) = pts[..n].iter().fold((0.0f64, 0.0f64), |(x, y), p| (x + f64::from(p[0]), y + f64::from(p[1])));
        (sx / n as f64, sy / n as f64)
    };
    let (msx, msy) = mean(src);
    let (mdx, mdy) = mean(dst);
    let (mut re, mut im, mut norm) = (0.0f64, 0.0f64, 0.0f64);
    for (s, d) in src[..n].iter().zip(&dst[..n]) {
        let (sx, sy) = (f64::from(s[0]) - msx, f64::from(s[1]) - msy);
        let (dx, dy) = (f64::from(d[0]) - mdx, f64::from(d[1]) - mdy);
        re += sx * dx + sy * dy;
        im += sx * dy - sy * dx;
        norm += sx * sx + sy * sy;
    }
    if norm.is_nan() || norm <= 1e-12 || !re.is_finite() || !im.is_finite() {
        return None;
    }
    let (a, b) = (re / norm, im / norm);
    let tx = mdx - (a * msx - b * msy);
    let ty = mdy - (b * msx + a * msy);
    Some([[a as f32, -b as f32, tx as f32], [b as f32, a as f32, ty as f32]])
}

/// Where a recognizer wants a face: a `size` px square crop with the five keypoints on
/// `template`.
///
/// The keypoints are fitted onto the template, as InsightFace and OpenCV crop. dlib fits the
/// other way (the template onto the keypoints, then inverts); for dlib's ResNet in the
/// yunet_sface pack, that made no difference to the fused FNMR over LFW (docs/accuracy.md),
/// so there is one way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropGeometry {
    pub size: u32,
    pub template: [[f32; 2]; 5],
}

impl CropGeometry {
    /// ArcFace's crop, `size` px on a side.
    pub fn arcface(size: u32) -> CropGeometry {
        CropGeometry { size, template: arcface_template(size) }
    }
}

/// ArcFace's template scaled to a `size` px crop.
pub fn arcface_template(size: u32) -> [[f32; 2]; 5] {
    let k = size as f32 / 112.0;
    ARCFACE_TEMPLATE.map(|[x, y]| [x * k, y * k])
}

/// The crop transform for one face: the keypoints onto the ArcFace template (scaled to
/// `input_size`). Degenerate keypoints fall back to fitting the box into the crop, so that a
/// face is never dropped between detection and embedding.
pub fn crop_transform(det: &Detection, input_size: u32) -> Affine {
    crop_transform_onto(det, &CropGeometry::arcface(input_size))
}

/// [`crop_transform`] onto any crop geometry.
pub fn crop_transform_onto(det: &Detection, geometry: &CropGeometry) -> Affine {
    if let Some(m) = similarity_transform(&det.landmarks, &geometry.template) {
        return m;
    }
    let input_size = geometry.size;
    let b = &det.bbox;
    let side = b.width().max(b.height()).max(1.0);
    let s = input_size as f32 / side;
    let (cx, cy) = ((b.left + b.right) / 2.0, (b.top + b.bottom) / 2.0);
    let half = input_size as f32 / 2.0;
    [[s, 0.0, half - s * cx], [0.0, s, half - s * cy]]
}

/// A detected face with its ArcFace-aligned crop.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedFace {
    pub detection: Detection,
    /// Side of the crop in pixels.
    pub size: u32,
    /// `3 × size × size` planar RGB samples in 0..255, not normalised: the recognizer and the
    /// quality measure each normalise as they need. `None` when the crop transform cannot be
    /// inverted.
    pub crop: Option<Vec<f32>>,
}

impl AlignedFace {
    /// Aligns `detection` of `img` into a `size`×`size` crop on the ArcFace template.
    pub fn new(img: &RgbImage, detection: Detection, size: u32) -> AlignedFace {
        AlignedFace::onto(img, detection, &CropGeometry::arcface(size))
    }

    /// Aligns `detection` of `img` into the crop `geometry` describes.
    pub fn onto(img: &RgbImage, detection: Detection, geometry: &CropGeometry) -> AlignedFace {
        let size = geometry.size;
        let mut crop = vec![0.0; 3 * (size * size) as usize];
        let made = warp_to_planar(img, &crop_transform_onto(&detection, geometry), size, 0.0, 1.0, &mut crop);
        AlignedFace { detection, size, crop: made.then_some(crop) }
    }
}

/// Inverse of a similarity (or any invertible affine) matrix.
pub fn invert(m: &Affine) -> Option<Affine> {
    let [[a, b, tx], [c, d, ty]] = *m;
    let det = a * d - b * c;
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let (ia, ib, ic, id) = (d / det, -b / det, -c / det, a / det);
    Some([[ia, ib, -(ia * tx + ib * ty)], [ic, id, -(ic * tx + id * ty)]])
}

pub fn apply(m: &Affine, p: [f32; 2]) -> [f32; 2] {
    [m[0][0] * p[0] + m[0][1] * p[1] + m[0][2], m[1][0] * p[0] + m[1][1] * p[1] + m[1][2]]
}

/// Warps `img` through `forward` (image → crop coordinates) into a `size`×`size` crop written
/// as planar, normalised f32 (`(v − mean) / std`), i.e. one NCHW batch item.
///
/// `out` must hold `3 · size · size` values. Samples are bilinear; the outside of the image
/// reads as black (0), as `warpAffine`'s default border does.
pub fn warp_to_planar(img: &RgbImage, forward: &Affine, size: u32, mean: f32, std: f32, out: &mut [f32]) -> bool {
    let Some(inv) = invert(forward) else {
        return false;
    };
    let plane = (size * size) as usize;
    if out.len() < 3 * plane {
        return false;
    }
    let (w, h) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let stride = img.width() as usize * 3;
    let scale = 1.0 / std;
    let zero = (0.0 - mean) * scale;
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, rest) = rest.split_at_mut(plane);
    let b_plane = &mut rest[..plane];
    // Fetches one pixel, black outside the image.
    let px = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= w || y >= h {
            return [0.0; 3];
        }
        let i = y as usize * stride + x as usize * 3;
        [f32::from(raw[i]), f32::from(raw[i + 1]), f32::from(raw[i + 2])]
    };
    for oy in 0..size {
        // The source point moves linearly along a row: start and step instead of a full
        // matrix product per pixel.
        let mut sx = inv[0][1] * oy as f32 + inv[0][2];
        let mut sy = inv[1][1] * oy as f32 + inv[1][2];
        for ox in 0..size {
            let o = (oy * size + ox) as usize;
            let (fx, fy) = (sx.floor(), sy.floor());
            let (x0, y0) = (fx as i64, fy as i64);
            if x0 < -1 || y0 < -1 || x0 >= w || y0 >= h || !sx.is_finite() || !sy.is_finite() {
                r_plane[o] = zero;
                g_plane[o] = zero;
                b_plane[o] = zero;
            } else {
                let (ax, ay) = (sx - fx, sy - fy);
                let (p00, p10, p01, p11) = (px(x0, y0), px(x0 + 1, y0), px(x0, y0 + 1), px(x0 + 1, y0 + 1));
                let mut v = [0.0f32; 3];
                for c in 0..3 {
                    let top = p00[c] + (p10[c] - p00[c]) * ax;
                    let bottom = p01[c] + (p11[c] - p01[c]) * ax;
                    v[c] = (top + (bottom - top) * ay - mean) * scale;
                }
                r_plane[o] = v[0];
                g_plane[o] = v[1];
                b_plane[o] = v[2];
            }
            sx += inv[0][0];
            sy += inv[1][0];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use facegate_core::BoundingBox;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn recovers_a_known_similarity() {
        let (s, theta, tx, ty) = (1.7f32, 0.4f32, 12.0f32, -5.0f32);
        let m: Affine = [[s * theta.cos(), -s * theta.sin(), tx], [s * theta.sin(), s * theta.cos(), ty]];
        let dst: Vec<[f32; 2]> = ARCFACE_TEMPLATE.iter().map(|&p| apply(&m, p)).collect();
        let est = similarity_transform(&ARCFACE_TEMPLATE, &dst).expect("estimable");
        for r in 0..2 {
            for c in 0..3 {
                assert!(close(est[r][c], m[r][c], 1e-3), "{est:?} vs {m:?}");
            }
        }
    }

    #[test]
    fn never_reflects() {
        // Mirror the template: the best similarity must still be a proper rotation (det > 0).
        let mirrored: Vec<[f32; 2]> = ARCFACE_TEMPLATE.iter().map(|p| [112.0 - p[0], p[1]]).collect();
        let m = similarity_transform(&mirrored, &ARCFACE_TEMPLATE).expect("estimable");
        assert!(m[0][0] * m[1][1] - m[0][1] * m[1][0] > 0.0);
    }

    #[test]
    fn least_squares_with_noise_matches_the_template_closely() {
        let noisy: Vec<[f32; 2]> = ARCFACE_TEMPLATE
            .iter()
            .enumerate()
            .map(|(i, p)| [p[0] * 2.0 + 300.0 + (i as f32 - 2.0) * 0.5, p[1] * 2.0 + 40.0])
            .collect();
        let m = similarity_transform(&noisy, &ARCFACE_TEMPLATE).expect("estimable");
        for (n, t) in noisy.iter().zip(ARCFACE_TEMPLATE) {
            let p = apply(&m, *n);
            assert!(close(p[0], t[0], 1.0) && close(p[1], t[1], 1.0), "{p:?} vs {t:?}");
        }
    }

    #[test]
    fn degenerate_points_give_none() {
        assert!(similarity_transform(&[[1.0, 1.0]; 5], &ARCFACE_TEMPLATE).is_none());
        assert!(similarity_transform(&[[f32::NAN, 1.0]; 5], &ARCFACE_TEMPLATE).is_none());
        assert!(invert(&[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]).is_none());
    }

    #[test]
    fn identity_warp_copies_pixels_and_normalises() {
        let img = RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 10) as u8, (y * 10) as u8, 255]));
        let id: Affine = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let mut out = vec![0.0; 3 * 16];
        assert!(warp_to_planar(&img, &id, 4, 127.5, 127.5, &mut out));
        let at = |c: usize, x: usize, y: usize| out[c * 16 + y * 4 + x];
        assert!(close(at(0, 3, 1), (30.0 - 127.5) / 127.5, 1e-6));
        assert!(close(at(1, 3, 1), (10.0 - 127.5) / 127.5, 1e-6));
        assert!(close(at(2, 0, 0), 1.0, 1e-6));
    }

    #[test]
    fn warp_outside_the_image_is_black() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([255, 255, 255]));
        let shift: Affine = [[1.0, 0.0, 100.0], [0.0, 1.0, 100.0]];
        let mut out = vec![1.0; 3 * 16];
        assert!(warp_to_planar(&img, &shift, 4, 127.5, 127.5, &mut out));
        assert!(out.iter().all(|&v| close(v, -1.0, 1e-6)));
    }

    #[test]
    fn template_keypoints_give_the_identity_crop() {
        let det = Detection { bbox: BoundingBox::default(), landmarks: ARCFACE_TEMPLATE, score: 1.0 };
        let m = crop_transform(&det, 112);
        let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        for r in 0..2 {
            for c in 0..3 {
                assert!((m[r][c] - id[r][c]).abs() < 1e-4, "{m:?}");
            }
        }
    }

    #[test]
    fn degenerate_keypoints_fall_back_to_the_box() {
        let det = Detection {
            bbox: BoundingBox { left: 100.0, top: 100.0, right: 212.0, bottom: 212.0 },
            landmarks: [[5.0, 5.0]; 5],
            score: 1.0,
        };
        let m = crop_transform(&det, 112);
        let centre = apply(&m, [156.0, 156.0]);
        assert!((centre[0] - 56.0).abs() < 1e-4 && (centre[1] - 56.0).abs() < 1e-4);
    }

    #[test]
    fn an_aligned_crop_holds_raw_samples() {
        let img = RgbImage::from_pixel(200, 200, image::Rgb([10, 20, 30]));
        let det = Detection {
            bbox: BoundingBox { left: 50.0, top: 50.0, right: 150.0, bottom: 150.0 },
            landmarks: ARCFACE_TEMPLATE.map(|[x, y]| [x + 44.0, y + 44.0]),
            score: 0.9,
        };
        let face = AlignedFace::new(&img, det, 112);
        let crop = face.crop.expect("invertible");
        assert_eq!(crop.len(), 3 * 112 * 112);
        assert!(close(crop[56 * 112 + 56], 10.0, 1e-4) && close(crop[2 * 112 * 112 + 56 * 112 + 56], 30.0, 1e-4));
    }

    #[test]
    fn half_pixel_sampling_is_bilinear() {
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([if x == 0 { 0 } else { 200 }, 0, 0]));
        let half: Affine = [[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]];
        let mut out = vec![0.0; 3];
        assert!(warp_to_planar(&img, &half, 1, 0.0, 1.0, &mut out));
        assert!(close(out[0], 100.0, 1e-4), "{}", out[0]);
    }
}
