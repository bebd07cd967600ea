//! Face attributes, as the NEC dialect reports them: face and head areas, eye centres, head pose
//! (pan, tilt, roll), a frontal-face score and an overall quality score.
//!
//! # Landmarks
//! InsightFace's `2d106det` sees a 192×192 crop centred on the detector box, scaled so that the
//! box's longer side × 1.5 fills the crop (`Landmark.get` in InsightFace's `landmark.py`), raw
//! RGB in (the model normalises inside its graph; hence mean 0, std 1). It answers 212 values,
//! 106 (x, y) pairs in [-1, 1], mapped to crop pixels by `(p + 1) · size / 2` and back to the
//! image through the inverse crop transform. An eye centre is the mean of that eye's eight
//! contour points (not its pupil point, which follows the gaze).
//!
//! # Pose
//! Pose is a scaled-orthographic (weak-perspective) fit of [`MEAN_FACE_106`], a rigid 3-D mean
//! face, to 56 landmarks: eye contours, eyebrows, nose, mouth corners and upper lip. The jaw
//! contour is left out because it is a silhouette that slides over the face as the head turns,
//! and the lower lip because it moves with the jaw. The fit minimises
//! `Σ |s · (R·X_i)_xy + t − p_i|²` over the rotation `R`, the scale `s` and the shift `t`: `t`
//! and `s` have closed forms for a given `R` (centroids; projection coefficient), and `R`
//! starts from the least-squares affine camera made orthonormal (InsightFace's
//! `estimate_affine_matrix_3d23d` + `P2sRt`) and is refined by damped Gauss–Newton on its
//! three angles. `R = Rz(γ)·Ry(β)·Rx(α)` in camera axes (x right, y down, z away from the
//! camera), decomposed as InsightFace's `matrix2angle` does, so that turning the image in its
//! plane changes roll alone, and mirroring it negates pan and roll and keeps tilt. Reported:
//! - `roll = −γ`: positive when the face is turned counter-clockwise on screen, i.e. the
//!   subject's left eye (image right) is higher. This is the NEC convention: the examples in
//!   the NEC ID API spec give exactly `faceRoll = −atan2(yₗ − yᵣ, xₗ − xᵣ)` of their eye
//!   centres; with eyes level in the model, roll here is the same angle, fitted on all points.
//! - `pan = −β`: positive when the subject looks toward the image's right (their own left).
//! - `tilt = −α`: positive when the subject looks up (chin raised).
//!
//! The mean face was measured rather than copied: 2d106det's landmarks on 800 LFW photos (every
//! third person's `_0001.jpg`) were factorised by Tomasi–Kanade orthographic factorisation (rank
//! 3 SVD, then the metric upgrade that makes every view's two camera rows orthogonal and of
//! equal length), rotated so the eyes lie on the x axis and the eye–mouth line in the y axis,
//! made left–right symmetric by averaging with its mirror image, and scaled to an inter-ocular
//! distance of 1. The nose tip comes out 0.63 inter-ocular distances (≈ 40 mm) in front of the
//! eye centres, the nasion 0.20, the mouth corners level with the eyes: in line with adult
//! anthropometry. Tilt 0 is therefore "eye line and mouth corners in one vertical plane";
//! the LFW photos average tilt −6° (slightly downward) and pan 0.6° on that scale.
//! Without a landmark model in the pack, the same fit runs on the detector's five keypoints
//! against [`MEAN_FACE_5`], their positions on the same mean face found by least squares over
//! the same photos.
//!
//! # Frontal face score
//! `cos²θ`, where `θ` is the angle between the face's forward axis and the camera axis
//! (`cos θ = cos pan · cos tilt`): 1 when facing the camera, 0.93 at 15°, 0.75 at 30°, 0.5 at
//! 45° (half profile), 0 in full profile. Roll does not count: alignment removes it.
//!
//! # Quality
//! The product of five factors in 0..1, each 1 for a good photo and reaching 0 where that one
//! defect alone makes the face unusable, so that any single defect pulls the score down:
//! - **size**: `smoothstep(16, 80, box width px)`. The recognizer sees a 112×112 crop whose
//!   eyes are 35 px apart; a detector box is about 2.3 inter-ocular distances wide (median on
//!   LFW), so at 80 px the face already has the recognizer's full resolution, and more pixels
//!   cannot help. 16 px is about the smallest face the detector finds.
//! - **sharpness**: variance `v` of the 4-neighbour Laplacian of the grey ArcFace-aligned
//!   112×112 crop, over its central face region (x 24..88, y 24..104: brows to chin, no
//!   background), scored `smoothstep(ln 3, ln 150, ln v)`. On 200 LFW photos `v` has median
//!   139 (→ 0.99) and 1st percentile 37 (→ 0.79); blurred with a Gaussian of σ = 6 px they
//!   fall below 4 (→ under 0.02). The aligned crop makes `v` independent of the face's size in
//!   pixels; the log scale grades the wide range between.
//! - **pose**: `1 − smoothstep(15°, 65°, θ)` with `θ` as above (0.90 at 25°, 0.65 at 35°,
//!   0.35 at 45°), times `1 − ½·smoothstep(25°, 70°, |roll|)`. ArcFace-style recognizers lose
//!   little within about 15° of frontal and much past 60°, where one side of the face is
//!   hidden. Alignment undoes roll, so it costs at most half, for the detector and landmarks
//!   being less sure there.
//! - **detection**: `smoothstep(0.4, 0.7, detector score)`. SCRFD-500M gives clear faces
//!   0.7–0.9 (LFW: 1st percentile 0.71), and marginal detections are usually occluded, tiny
//!   or blurred faces.
//! - **exposure**: on the same central region, the mean grey level `m` and the fraction `c` of
//!   clipped pixels (≤ 5 or ≥ 250): `smoothstep(25, 70, m) · (1 − smoothstep(195, 240, m)) ·
//!   (1 − smoothstep(0.05, 0.5, c))`. LFW faces lie within m 77–181 and c ≤ 0.03 (1st–99th
//!   percentiles).
//!
//! On the `_0001.jpg` photos of 800 LFW people the score has median 0.97, 10th percentile 0.78
//! and 1st percentile 0.52; 7 of 800 (turned past about 35°, or soft) fall under
//! [`DEFAULT_MIN_QUALITY`] = 0.5, the recommended floor for enrolment. The same faces shrunk to
//! 20 px wide score about 0.01, and blurred with σ = 6 px about 0.
//!
//! # Face and head areas
//! The face area is the detector box. The head area widens it to 1.4× its width and extends it
//! by 0.30× its height above and 0.05× below, along the face's own up direction when it is
//! rolled. Measured on LFW, the detector box spans 1.25 inter-ocular distances (IOD) above the
//! eye line to 1.89 below (the chin) and is 2.29 IOD wide; an adult head reaches about 1.9 IOD
//! (120 mm) above the eyes to the crown and is about 2.5 IOD wide without ears, so the head
//! area (2.2 IOD above the eyes, 3.2 IOD wide) holds the crown, the ears and some hair.
//! Both areas are rounded to whole pixels and clipped to the image.

use facegate_core::{BoundingBox, FaceAttributes, Point, Pose};
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;

use crate::align::{self, Affine, AlignedFace};
use crate::detect::Detection;
use crate::error::{EngineError, Result};

/// Recommended minimum [`FaceAttributes::quality`] for enrolment (NEC `PoorQuality` below it).
pub const DEFAULT_MIN_QUALITY: f32 = 0.5;

/// Points the landmark model returns.
pub const LANDMARK_POINTS: usize = 106;

/// Eye contour points of the 106-point layout, without the pupil points (34, 38 and 88, 92).
/// The subject's right eye is on the image's left.
pub const RIGHT_EYE_106: [usize; 8] = [33, 35, 36, 37, 39, 40, 41, 42];
pub const LEFT_EYE_106: [usize; 8] = [87, 89, 90, 91, 93, 94, 95, 96];

/// The rigid mean face for the pose fit: (index in the 106-point layout, [x, y, z]) in units of
/// the inter-ocular distance, origin between the eye centres, x toward the image right, y down,
/// z away from the camera. See the module documentation for how it was measured.
pub const MEAN_FACE_106: [(usize, [f32; 3]); 56] = [
    // Subject's right eye (image left) contour.
    (33, [-0.504, 0.056, -0.006]),
    (35, [-0.707, 0.018, 0.056]),
    (36, [-0.613, 0.046, 0.023]),
    (37, [-0.392, 0.040, -0.026]),
    (39, [-0.288, 0.018, -0.043]),
    (40, [-0.498, -0.076, -0.004]),
    (41, [-0.614, -0.048, 0.024]),
    (42, [-0.382, -0.053, -0.025]),
    // Subject's left eye contour.
    (87, [0.504, 0.056, -0.006]),
    (89, [0.288, 0.018, -0.043]),
    (90, [0.392, 0.040, -0.026]),
    (91, [0.613, 0.046, 0.023]),
    (93, [0.707, 0.018, 0.056]),
    (94, [0.498, -0.076, -0.004]),
    (95, [0.382, -0.053, -0.025]),
    (96, [0.614, -0.048, 0.024]),
    // Eyebrows.
    (43, [-0.892, -0.162, 0.113]),
    (44, [-0.736, -0.213, 0.001]),
    (45, [-0.572, -0.241, -0.091]),
    (46, [-0.227, -0.208, -0.242]),
    (47, [-0.398, -0.240, -0.170]),
    (48, [-0.761, -0.310, 0.017]),
    (49, [-0.576, -0.364, -0.088]),
    (50, [-0.213, -0.297, -0.247]),
    (51, [-0.381, -0.352, -0.176]),
    (97, [0.227, -0.208, -0.242]),
    (98, [0.398, -0.240, -0.170]),
    (99, [0.572, -0.241, -0.091]),
    (100, [0.736, -0.213, 0.001]),
    (101, [0.892, -0.162, 0.113]),
    (102, [0.213, -0.297, -0.247]),
    (103, [0.381, -0.352, -0.176]),
    (104, [0.576, -0.364, -0.088]),
    (105, [0.761, -0.310, 0.017]),
    // Nose: bridge 72-74, tip 86, base 75-85 and subnasale 80.
    (72, [0.000, -0.078, -0.198]),
    (73, [0.000, 0.103, -0.342]),
    (74, [0.000, 0.283, -0.487]),
    (75, [-0.166, 0.010, -0.133]),
    (76, [-0.246, 0.388, -0.300]),
    (77, [-0.325, 0.571, -0.291]),
    (78, [-0.230, 0.633, -0.369]),
    (79, [-0.122, 0.654, -0.419]),
    (80, [0.000, 0.682, -0.468]),
    (81, [0.166, 0.010, -0.133]),
    (82, [0.246, 0.388, -0.300]),
    (83, [0.325, 0.571, -0.291]),
    (84, [0.230, 0.633, -0.369]),
    (85, [0.122, 0.654, -0.419]),
    (86, [0.000, 0.463, -0.630]),
    // Mouth corners and upper lip.
    (52, [-0.448, 1.075, 0.000]),
    (61, [0.448, 1.075, 0.000]),
    (63, [-0.104, 0.909, -0.351]),
    (64, [-0.289, 0.971, -0.214]),
    (67, [0.104, 0.909, -0.351]),
    (68, [0.289, 0.971, -0.214]),
    (71, [0.000, 0.931, -0.358]),
];

/// The detector's five keypoints (right eye, left eye, nose, right and left mouth corner) on the
/// same mean face, for packs without a landmark model.
pub const MEAN_FACE_5: [[f32; 3]; 5] = [
    [-0.520, -0.014, -0.035],
    [0.520, -0.014, -0.035],
    [0.0, 0.492, -0.607],
    [-0.443, 1.060, -0.084],
    [0.443, 1.060, -0.084],
];

/// Head area relative to the face box: width factor, extension above and below (fractions of
/// the box height). See the module documentation.
const HEAD_WIDTH: f32 = 1.4;
const HEAD_ABOVE: f32 = 0.30;
const HEAD_BELOW: f32 = 0.05;

/// Side of the ArcFace-aligned crop on which sharpness and exposure are measured, and its
/// central face region (x0, y0, x1, y1), exclusive ends. The thresholds above were measured on
/// this size; a recognizer of another input size gets its own crop for the quality measure.
pub const QUALITY_CROP: u32 = 112;
const QUALITY_REGION: (usize, usize, usize, usize) = (24, 24, 88, 104);

/// Rounds `[left, top, right, bottom]` to whole pixels and clips it to a `width`×`height`
/// image.
fn whole_pixel_box(b: [f32; 4], width: u32, height: u32) -> BoundingBox {
    let clip = |v: f32, max: u32| -> f32 {
        // Non-finite input would come from a broken detector; 0 keeps the box valid.
        if v.is_finite() {
            v.round().clamp(0.0, max as f32)
        } else {
            0.0
        }
    };
    BoundingBox {
        left: clip(b[0], width),
        top: clip(b[1], height),
        right: clip(b[2], width),
        bottom: clip(b[3], height),
    }
}

/// `p` rounded to whole pixels.
fn whole_pixel_point(p: [f32; 2]) -> Point {
    let r = |v: f32| if v.is_finite() { v.round() } else { 0.0 };
    Point { x: r(p[0]), y: r(p[1]) }
}

/// The measurements behind [`FaceAttributes::quality`], and each factor's score.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QualityParts {
    /// Detector box width in pixels, and its score.
    pub face_width_px: f32,
    pub size: f32,
    /// Laplacian variance of the aligned grey crop, and its score.
    pub laplacian_variance: f32,
    pub sharpness: f32,
    pub pose: f32,
    pub detection: f32,
    /// Mean grey level (0..255) and clipped-pixel fraction of the aligned crop's face region,
    /// and their joint score.
    pub mean_brightness: f32,
    pub clipped_fraction: f32,
    pub exposure: f32,
}

impl QualityParts {
    /// The overall quality: the product of the factor scores.
    pub fn score(&self) -> f32 {
        (self.size * self.sharpness * self.pose * self.detection * self.exposure).clamp(0.0, 1.0)
    }
}

/// What the attribute stage measured on the way to a face's [`FaceAttributes`], kept beside
/// them for tuning, tests and tools; the core never sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaceDiagnostics {
    pub quality_parts: QualityParts,
    /// The 106 landmarks in image pixels; empty when the pack has no landmark model and the
    /// attributes come from the detector's five keypoints.
    pub landmarks106: Vec<[f32; 2]>,
}

/// One face's attributes with the measurements behind them.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredAttributes {
    pub attributes: FaceAttributes,
    pub diagnostics: FaceDiagnostics,
}

/// Settings of the landmark model, from the pack manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct LandmarkParams {
    pub input_size: u32,
    pub mean: f32,
    pub std: f32,
}

/// Image → crop transform of the landmark model: centred on the box, its longer side × 1.5
/// filling the crop, as InsightFace's `Landmark.get`.
pub fn landmark_transform(bbox: &BoundingBox, input_size: u32) -> Affine {
    let side = bbox.width().max(bbox.height()).max(1.0) * 1.5;
    let s = input_size as f32 / side;
    let (cx, cy) = ((bbox.left + bbox.right) / 2.0, (bbox.top + bbox.bottom) / 2.0);
    let half = input_size as f32 / 2.0;
    [[s, 0.0, half - s * cx], [0.0, s, half - s * cy]]
}

/// Runs the landmark model on one face; returns its 106 points in image pixels.
pub fn run_landmarks(
    session: &mut Session,
    params: &LandmarkParams,
    input: &mut Vec<f32>,
    img: &RgbImage,
    det: &Detection,
) -> Result<Vec<[f32; 2]>> {
    let size = params.input_size;
    let bad = |reason: String| EngineError::Model { model: "landmarks".into(), reason };
    let forward = landmark_transform(&det.bbox, size);
    let inverse = align::invert(&forward).ok_or_else(|| bad("degenerate face box".into()))?;
    input.clear();
    input.resize(3 * (size * size) as usize, 0.0);
    if !align::warp_to_planar(img, &forward, size, params.mean, params.std, input) {
        return Err(bad("cannot crop the face".into()));
    }
    let shape = [1usize, 3, size as usize, size as usize];
    let tensor = TensorRef::from_array_view((shape, input.as_slice()))?;
    let outputs = session.run(ort::inputs![tensor])?;
    let (_, raw) = outputs[0].try_extract_tensor::<f32>()?;
    // InsightFace keeps the last 106 pairs when a model emits more (its 3-D variants do).
    if raw.len() < 2 * LANDMARK_POINTS {
        return Err(bad(format!("expected {} values, got {}", 2 * LANDMARK_POINTS, raw.len())));
    }
    let half = (size / 2) as f32;
    let points: Vec<[f32; 2]> = raw[raw.len() - 2 * LANDMARK_POINTS..]
        .chunks_exact(2)
        .map(|p| align::apply(&inverse, [(p[0] + 1.0) * half, (p[1] + 1.0) * half]))
        .collect();
    if points.iter().any(|p| !p[0].is_finite() || !p[1].is_finite()) {
        return Err(bad("non-finite landmarks".into()));
    }
    Ok(points)
}

/// All attributes of one face, from its aligned crop. `landmarks106` comes from
/// [`run_landmarks`]; without it (or with the wrong number of points) eyes and pose come from
/// the detector's keypoints.
pub fn compute(img: &RgbImage, face: &AlignedFace, landmarks106: Option<Vec<[f32; 2]>>) -> MeasuredAttributes {
    let det = &face.detection;
    let landmarks106 = landmarks106.filter(|l| l.len() == LANDMARK_POINTS).unwrap_or_default();
    let (right_eye, left_eye, pose) = if landmarks106.is_empty() {
        (det.landmarks[0], det.landmarks[1], pose_from_5(&det.landmarks))
    } else {
        let eye = |idx: &[usize]| mean_point(idx.iter().map(|&i| landmarks106[i]));
        (eye(&RIGHT_EYE_106), eye(&LEFT_EYE_106), pose_from_106(&landmarks106))
    };
    let (w, h) = img.dimensions();
    let b = &det.bbox;
    let face_area = whole_pixel_box([b.left, b.top, b.right, b.bottom], w, h);
    let head_area = whole_pixel_box(head_box(b, pose.map_or(0.0, |p| p.roll)), w, h);
    let frontal = pose.map_or(0.0, |p| frontal_score(&p));
    let own_crop;
    let crop = if face.size == QUALITY_CROP {
        face.crop.as_deref()
    } else {
        own_crop = AlignedFace::new(img, det.clone(), QUALITY_CROP).crop;
        own_crop.as_deref()
    };
    let parts = quality_parts(det, crop, pose.as_ref());
    let attributes = FaceAttributes {
        face_area,
        head_area,
        right_eye_center: whole_pixel_point(right_eye),
        left_eye_center: whole_pixel_point(left_eye),
        face_score: det.score,
        frontal_face_score: frontal,
        pose: pose.unwrap_or_default(),
        quality: parts.score(),
    };
    MeasuredAttributes { attributes, diagnostics: FaceDiagnostics { quality_parts: parts, landmarks106 } }
}

fn mean_point(points: impl Iterator<Item = [f32; 2]>) -> [f32; 2] {
    let (mut x, mut y, mut n) = (0.0f32, 0.0f32, 0.0f32);
    for p in points {
        x += p[0];
        y += p[1];
        n += 1.0;
    }
    let n = n.max(1.0);
    [x / n, y / n]
}

/// Pose from the 106 landmarks; `None` when the fit is degenerate.
pub fn pose_from_106(landmarks: &[[f32; 2]]) -> Option<Pose> {
    if landmarks.len() != LANDMARK_POINTS {
        return None;
    }
    let observed: Vec<[f32; 2]> = MEAN_FACE_106.iter().map(|&(i, _)| landmarks[i]).collect();
    let model: Vec<[f32; 3]> = MEAN_FACE_106.iter().map(|&(_, x)| x).collect();
    fit_pose(&observed, &model)
}

/// Pose from the detector's five keypoints; `None` when the fit is degenerate.
pub fn pose_from_5(keypoints: &[[f32; 2]; 5]) -> Option<Pose> {
    fit_pose(keypoints, &MEAN_FACE_5)
}

/// `cos²θ` with `cos θ = cos pan · cos tilt`.
pub fn frontal_score(pose: &Pose) -> f32 {
    let c = pose.pan.to_radians().cos() * pose.tilt.to_radians().cos();
    (c.max(0.0) * c.max(0.0)).clamp(0.0, 1.0)
}

/// Angle in degrees between the face's forward axis and the camera axis.
pub fn off_axis_degrees(pose: &Pose) -> f32 {
    let c = pose.pan.to_radians().cos() * pose.tilt.to_radians().cos();
    c.clamp(-1.0, 1.0).acos().to_degrees()
}

/// `[left, top, right, bottom]` of the head around a face box whose face is rolled by `roll`
/// degrees (counter-clockwise on screen positive), unclipped.
pub fn head_box(b: &BoundingBox, roll: f32) -> [f32; 4] {
    let (w, h) = (b.width(), b.height());
    let (sin, cos) = roll.to_radians().sin_cos();
    // The face's up direction in image axes (y down), and the face's length along it.
    let up = [-sin, -cos];
    let length = h * cos.abs() + w * sin.abs();
    let shift = (HEAD_ABOVE - HEAD_BELOW) / 2.0 * length;
    let cx = (b.left + b.right) / 2.0 + up[0] * shift;
    let cy = (b.top + b.bottom) / 2.0 + up[1] * shift;
    let half_w = w * HEAD_WIDTH / 2.0;
    let half_h = h * (1.0 + HEAD_ABOVE + HEAD_BELOW) / 2.0;
    [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
}

/// Cubic Hermite step: 0 below `e0`, 1 above `e1`, smooth between.
pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    if x.is_nan() {
        return 0.0;
    }
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// The quality measurements and factor scores of one face; see the module documentation.
/// `crop` is its raw ArcFace-aligned crop, [`QUALITY_CROP`] on a side (`None`: it could not be
/// made).
pub fn quality_parts(det: &Detection, crop: Option<&[f32]>, pose: Option<&Pose>) -> QualityParts {
    let face_width_px = det.bbox.width();
    let (laplacian_variance, mean_brightness, clipped_fraction) = crop_statistics(crop);
    let pose_score = pose.map_or(0.0, |p| {
        (1.0 - smoothstep(15.0, 65.0, off_axis_degrees(p))) * (1.0 - 0.5 * smoothstep(25.0, 70.0, p.roll.abs()))
    });
    let exposure = smoothstep(25.0, 70.0, mean_brightness)
        * (1.0 - smoothstep(195.0, 240.0, mean_brightness))
        * (1.0 - smoothstep(0.05, 0.5, clipped_fraction));
    QualityParts {
        face_width_px,
        size: smoothstep(16.0, 80.0, face_width_px),
        laplacian_variance,
        sharpness: smoothstep(3f32.ln(), 150f32.ln(), laplacian_variance.max(1e-6).ln()),
        pose: pose_score,
        detection: smoothstep(0.4, 0.7, det.score),
        mean_brightness,
        clipped_fraction,
        exposure,
    }
}

/// Laplacian variance, mean grey level and clipped fraction of the central face region of the
/// raw ArcFace-aligned crop (the pixels the recognizer sees).
fn crop_statistics(crop: Option<&[f32]>) -> (f32, f32, f32) {
    let size = QUALITY_CROP;
    let plane = (size * size) as usize;
    let Some(rgb) = crop.filter(|c| c.len() == 3 * plane) else {
        return (0.0, 0.0, 1.0);
    };
    let (r, rest) = rgb.split_at(plane);
    let (g, b) = rest.split_at(plane);
    let grey: Vec<f32> = r.iter().zip(g).zip(b).map(|((r, g), b)| 0.299 * r + 0.587 * g + 0.114 * b).collect();
    region_statistics(&grey, size as usize, QUALITY_REGION)
}

/// Statistics of `region` (x0, y0, x1, y1; exclusive ends, at least one pixel from every edge)
/// of a `side`×`side` grey image.
fn region_statistics(grey: &[f32], side: usize, region: (usize, usize, usize, usize)) -> (f32, f32, f32) {
    let (x0, y0, x1, y1) = region;
    let (x0, y0) = (x0.max(1), y0.max(1));
    let (x1, y1) = (x1.min(side - 1), y1.min(side - 1));
    if x0 >= x1 || y0 >= y1 || grey.len() < side * side {
        return (0.0, 0.0, 1.0);
    }
    let (mut lap_sum, mut lap_sq, mut sum, mut clipped) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for y in y0..y1 {
        for x in x0..x1 {
            let at = |x: usize, y: usize| f64::from(grey[y * side + x]);
            let v = at(x, y);
            let lap = at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * v;
            lap_sum += lap;
            lap_sq += lap * lap;
            sum += v;
            if v <= 5.0 || v >= 250.0 {
                clipped += 1;
            }
        }
    }
    let n = ((x1 - x0) * (y1 - y0)) as f64;
    let lap_mean = lap_sum / n;
    let variance = (lap_sq / n - lap_mean * lap_mean).max(0.0);
    (variance as f32, (sum / n) as f32, (clipped as f64 / n) as f32)
}

type Mat3 = [[f64; 3]; 3];

/// `Rz(γ)·Ry(β)·Rx(α)`.
fn rotation(alpha: f64, beta: f64, gamma: f64) -> Mat3 {
    let (sa, ca) = alpha.sin_cos();
    let (sb, cb) = beta.sin_cos();
    let (sg, cg) = gamma.sin_cos();
    [
        [cg * cb, cg * sb * sa - sg * ca, cg * sb * ca + sg * sa],
        [sg * cb, sg * sb * sa + cg * ca, sg * sb * ca - cg * sa],
        [-sb, cb * sa, cb * ca],
    ]
}

/// (α, β, γ) of `R = Rz(γ)·Ry(β)·Rx(α)`, as InsightFace's `matrix2angle`.
fn euler(r: &Mat3) -> [f64; 3] {
    let sy = r[0][0].hypot(r[1][0]);
    [r[2][1].atan2(r[2][2]), (-r[2][0]).atan2(sy), r[1][0].atan2(r[0][0])]
}

/// Solves `a·x = b` by Gaussian elimination with partial pivoting; `None` when singular.
fn solve3(mut a: Mat3, mut b: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 || !a[pivot][col].is_finite() {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..3 {
            let f = a[row][col] / pivot_row[col];
            for (v, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *v -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let tail: f64 = (row + 1..3).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Centred point sets of a pose fit, in f64.
struct FitData {
    model: Vec<[f64; 3]>,
    observed: Vec<[f64; 2]>,
}

impl FitData {
    /// Residuals of the best scale for rotation angles `a` into `out`; returns the scale.
    fn residuals(&self, a: [f64; 3], out: &mut Vec<f64>) -> f64 {
        let r = rotation(a[0], a[1], a[2]);
        let project = |x: &[f64; 3]| {
            [r[0][0] * x[0] + r[0][1] * x[1] + r[0][2] * x[2], r[1][0] * x[0] + r[1][1] * x[1] + r[1][2] * x[2]]
        };
        let (mut num, mut den) = (0.0, 0.0);
        for (x, p) in self.model.iter().zip(&self.observed) {
            let q = project(x);
            num += q[0] * p[0] + q[1] * p[1];
            den += q[0] * q[0] + q[1] * q[1];
        }
        let s = if den > 1e-12 { num / den } else { 0.0 };
        out.clear();
        for (x, p) in self.model.iter().zip(&self.observed) {
            let q = project(x);
            out.push(s * q[0] - p[0]);
            out.push(s * q[1] - p[1]);
        }
        s
    }

    /// Starting angles: the least-squares affine camera, its rows made orthonormal.
    fn initial(&self) -> Option<[f64; 3]> {
        let mut xtx = [[0.0; 3]; 3];
        let mut xtp = [[0.0; 3]; 2];
        for (x, p) in self.model.iter().zip(&self.observed) {
            for i in 0..3 {
                for j in 0..3 {
                    xtx[i][j] += x[i] * x[j];
                }
                xtp[0][i] += x[i] * p[0];
                xtp[1][i] += x[i] * p[1];
            }
        }
        let a0 = solve3(xtx, xtp[0])?;
        let a1 = solve3(xtx, xtp[1])?;
        let norm = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        let n0 = norm(a0);
        if n0 < 1e-12 {
            return None;
        }
        let r1 = a0.map(|v| v / n0);
        let d = a1[0] * r1[0] + a1[1] * r1[1] + a1[2] * r1[2];
        let r2 = [a1[0] - d * r1[0], a1[1] - d * r1[1], a1[2] - d * r1[2]];
        let n2 = norm(r2);
        if n2 < 1e-12 {
            return None;
        }
        let r2 = r2.map(|v| v / n2);
        let r3 = [r1[1] * r2[2] - r1[2] * r2[1], r1[2] * r2[0] - r1[0] * r2[2], r1[0] * r2[1] - r1[1] * r2[0]];
        Some(euler(&[r1, r2, r3]))
    }
}

/// Weak-perspective fit of `model` (3-D, any units) to `observed` image points; see the module
/// documentation. `None` for fewer than four pairs or a degenerate configuration.
pub fn fit_pose(observed: &[[f32; 2]], model: &[[f32; 3]]) -> Option<Pose> {
    let n = observed.len().min(model.len());
    if n < 4 {
        return None;
    }
    let mean2 = observed[..n].iter().fold([0.0f64; 2], |m, p| [m[0] + f64::from(p[0]), m[1] + f64::from(p[1])]);
    let mean2 = mean2.map(|v| v / n as f64);
    let mean3 = model[..n]
        .iter()
        .fold([0.0f64; 3], |m, x| [m[0] + f64::from(x[0]), m[1] + f64::from(x[1]), m[2] + f64::from(x[2])]);
    let mean3 = mean3.map(|v| v / n as f64);
    let data = FitData {
        model: model[..n]
            .iter()
            .map(|x| [f64::from(x[0]) - mean3[0], f64::from(x[1]) - mean3[1], f64::from(x[2]) - mean3[2]])
            .collect(),
        observed: observed[..n].iter().map(|p| [f64::from(p[0]) - mean2[0], f64::from(p[1]) - mean2[1]]).collect(),
    };
    if data.observed.iter().flatten().any(|v| !v.is_finite()) {
        return None;
    }

    let mut angles = data.initial().unwrap_or([0.0; 3]);
    let mut r0 = Vec::with_capacity(2 * n);
    let mut r1 = Vec::with_capacity(2 * n);
    data.residuals(angles, &mut r0);
    let mut cost: f64 = r0.iter().map(|v| v * v).sum();
    let mut lambda = 1e-6;
    let mut jac = vec![[0.0f64; 3]; 2 * n];
    const H: f64 = 1e-6;
    for _ in 0..50 {
        for k in 0..3 {
            let mut moved = angles;
            moved[k] += H;
            data.residuals(moved, &mut r1);
            for (row, (a, b)) in jac.iter_mut().zip(r1.iter().zip(&r0)) {
                row[k] = (a - b) / H;
            }
        }
        let mut jtj = [[0.0; 3]; 3];
        let mut jtr = [0.0; 3];
        for (row, r) in jac.iter().zip(&r0) {
            for i in 0..3 {
                for j in 0..3 {
                    jtj[i][j] += row[i] * row[j];
                }
                jtr[i] -= row[i] * r;
            }
        }
        // Levenberg–Marquardt: shrink the step until the cost falls.
        let mut improved = false;
        let mut step_size = f64::INFINITY;
        while lambda < 1e6 {
            let mut damped = jtj;
            for (i, row) in damped.iter_mut().enumerate() {
                row[i] += lambda * (1.0 + jtj[i][i]);
            }
            let Some(step) = solve3(damped, jtr) else { break };
            let trial = [angles[0] + step[0], angles[1] + step[1], angles[2] + step[2]];
            data.residuals(trial, &mut r1);
            let trial_cost: f64 = r1.iter().map(|v| v * v).sum();
            if trial_cost <= cost {
                angles = trial;
                cost = trial_cost;
                std::mem::swap(&mut r0, &mut r1);
                lambda = (lambda * 0.1).max(1e-9);
                improved = true;
                step_size = step.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                break;
            }
            lambda *= 10.0;
        }
        if !improved || step_size < 1e-10 {
            break;
        }
    }
    let scale = data.residuals(angles, &mut r1);
    if scale.is_nan() || scale <= 0.0 || !cost.is_finite() {
        return None;
    }
    let [alpha, beta, gamma] = euler(&rotation(angles[0], angles[1], angles[2]));
    Some(Pose { pan: -beta.to_degrees() as f32, tilt: -alpha.to_degrees() as f32, roll: -gamma.to_degrees() as f32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_106() -> Vec<[f32; 3]> {
        MEAN_FACE_106.iter().map(|&(_, x)| x).collect()
    }

    /// Projects `model` under a pose (degrees, this module's conventions), scale and shift.
    fn project(model: &[[f32; 3]], pose: Pose, s: f32, t: [f32; 2]) -> Vec<[f32; 2]> {
        let r = rotation(
            -f64::from(pose.tilt).to_radians(),
            -f64::from(pose.pan).to_radians(),
            -f64::from(pose.roll).to_radians(),
        );
        model
            .iter()
            .map(|x| {
                let x = x.map(f64::from);
                let px = r[0][0] * x[0] + r[0][1] * x[1] + r[0][2] * x[2];
                let py = r[1][0] * x[0] + r[1][1] * x[1] + r[1][2] * x[2];
                [s * px as f32 + t[0], s * py as f32 + t[1]]
            })
            .collect()
    }

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn mean_faces_are_symmetric() {
        // Mirror pairs of the 106-point layout that the table holds.
        let pairs = [
            (33, 87),
            (35, 93),
            (36, 91),
            (37, 90),
            (39, 89),
            (40, 94),
            (41, 96),
            (42, 95),
            (43, 101),
            (44, 100),
            (45, 99),
            (46, 97),
            (47, 98),
            (48, 105),
            (49, 104),
            (50, 102),
            (51, 103),
            (75, 81),
            (76, 82),
            (77, 83),
            (78, 84),
            (79, 85),
            (52, 61),
            (63, 67),
            (64, 68),
        ];
        let at = |i: usize| MEAN_FACE_106.iter().find(|e| e.0 == i).map(|e| e.1).expect("in table");
        for (a, b) in pairs {
            let (p, q) = (at(a), at(b));
            assert!(close(p[0], -q[0], 1e-6) && close(p[1], q[1], 1e-6) && close(p[2], q[2], 1e-6), "{a} {b}");
        }
        for i in [72, 73, 74, 80, 86, 71] {
            assert_eq!(at(i)[0], 0.0);
        }
        let m = MEAN_FACE_5;
        assert!(close(m[0][0], -m[1][0], 1e-6) && close(m[3][0], -m[4][0], 1e-6) && m[2][0] == 0.0);
        // The nose tip is the point nearest the camera.
        assert!(MEAN_FACE_106.iter().all(|e| e.1[2] >= at(86)[2]));
    }

    #[test]
    fn fit_recovers_known_poses() {
        let model = model_106();
        for (pan, tilt, roll) in
            [(0.0, 0.0, 0.0), (30.0, 0.0, 0.0), (-45.0, 10.0, 5.0), (15.0, -20.0, -30.0), (60.0, 25.0, 80.0)]
        {
            let truth = Pose { pan, tilt, roll };
            let pts = project(&model, truth, 87.0, [300.0, 200.0]);
            let got = fit_pose(&pts, &model).expect("fit");
            assert!(
                close(got.pan, pan, 0.05) && close(got.tilt, tilt, 0.05) && close(got.roll, roll, 0.05),
                "{truth:?} → {got:?}"
            );
            let five = project(&MEAN_FACE_5, truth, 87.0, [300.0, 200.0]);
            let got = fit_pose(&five, &MEAN_FACE_5).expect("fit");
            assert!(close(got.pan, pan, 0.05) && close(got.roll, roll, 0.05), "5 points: {truth:?} → {got:?}");
        }
    }

    #[test]
    fn signs_follow_the_documented_conventions() {
        let model = model_106();
        let nose = MEAN_FACE_106.iter().position(|e| e.0 == 86).expect("nose tip");
        let eyes = |pts: &[[f32; 2]]| {
            let (r, l) = (MEAN_FACE_106.iter().position(|e| e.0 == 33), MEAN_FACE_106.iter().position(|e| e.0 == 87));
            let (r, l) = (r.expect("eye"), l.expect("eye"));
            (pts[r], pts[l])
        };
        // Looking toward the image's right moves the nose tip right of the eyes' midpoint.
        let right = project(&model, Pose { pan: 20.0, ..Pose::default() }, 100.0, [0.0, 0.0]);
        let (re, le) = eyes(&right);
        assert!(right[nose][0] > (re[0] + le[0]) / 2.0 + 10.0);
        // Looking up moves the nose tip toward the eyes (up in the image).
        let frontal = project(&model, Pose::default(), 100.0, [0.0, 0.0]);
        let up = project(&model, Pose { tilt: 20.0, ..Pose::default() }, 100.0, [0.0, 0.0]);
        assert!(up[nose][1] - eyes(&up).0[1] < frontal[nose][1] - eyes(&frontal).0[1]);
        // Counter-clockwise on screen raises the subject's left eye (smaller y).
        let ccw = project(&model, Pose { roll: 10.0, ..Pose::default() }, 100.0, [0.0, 0.0]);
        let (re, le) = eyes(&ccw);
        assert!(le[1] < re[1]);
    }

    #[test]
    fn mirroring_negates_pan_and_roll() {
        let model = model_106();
        let pose = Pose { pan: 25.0, tilt: 10.0, roll: 7.0 };
        let pts = project(&model, pose, 60.0, [100.0, 100.0]);
        // Mirror the image and renumber the points to the mirrored face's layout.
        let mirrored_layout: Vec<[f32; 2]> = MEAN_FACE_106
            .iter()
            .map(|&(_, x)| {
                let twin = MEAN_FACE_106
                    .iter()
                    .position(|e| close(e.1[0], -x[0], 1e-6) && close(e.1[1], x[1], 1e-6) && close(e.1[2], x[2], 1e-6))
                    .expect("symmetric table");
                [-pts[twin][0], pts[twin][1]]
            })
            .collect();
        let got = fit_pose(&mirrored_layout, &model).expect("fit");
        assert!(close(got.pan, -25.0, 0.05) && close(got.tilt, 10.0, 0.05) && close(got.roll, -7.0, 0.05), "{got:?}");
    }

    #[test]
    fn degenerate_input_gives_no_pose() {
        let model = model_106();
        assert!(fit_pose(&[[1.0, 1.0]; 3], &model).is_none());
        assert!(fit_pose(&vec![[f32::NAN, 0.0]; 56], &model).is_none());
        assert!(pose_from_106(&[[0.0, 0.0]; 5]).is_none());
        // All points at one place: no scale.
        assert!(fit_pose(&vec![[5.0, 5.0]; 56], &model).is_none());
    }

    #[test]
    fn frontal_score_is_one_facing_the_camera_and_falls_off() {
        let f = |pan, tilt| frontal_score(&Pose { pan, tilt, roll: 0.0 });
        assert!(close(f(0.0, 0.0), 1.0, 1e-6));
        assert!(close(f(45.0, 0.0), 0.5, 1e-5));
        assert!(close(f(0.0, 90.0), 0.0, 1e-6));
        assert!(f(10.0, 0.0) > f(20.0, 0.0) && f(20.0, 0.0) > f(20.0, 10.0));
        assert!(close(f(30.0, 0.0), f(-30.0, 0.0), 1e-6));
        assert!(close(frontal_score(&Pose { pan: 10.0, tilt: 5.0, roll: 60.0 }), f(10.0, 5.0), 1e-6));
    }

    #[test]
    fn head_box_extends_mostly_upward() {
        let b = BoundingBox { left: 100.0, top: 100.0, right: 200.0, bottom: 240.0 };
        let [l, t, r, bo] = head_box(&b, 0.0);
        assert!(close(l, 80.0, 1e-3) && close(r, 220.0, 1e-3));
        assert!(close(t, 100.0 - 0.30 * 140.0, 1e-3) && close(bo, 240.0 + 0.05 * 140.0, 1e-3));
        // Rolled 90° counter-clockwise, the face's top points to the image's left.
        let [l, _, r, _] = head_box(&b, 90.0);
        assert!((l + r) / 2.0 < 150.0 - 10.0);
        let clipped = whole_pixel_box(head_box(&b, 0.0), 210, 1000);
        assert_eq!(clipped, BoundingBox { left: 80.0, top: 58.0, right: 210.0, bottom: 247.0 });
        assert_eq!((clipped.width(), clipped.height()), (130.0, 189.0));
        let nan = whole_pixel_box([f32::NAN, 1.0, 2.0, 3.0], 10, 10);
        assert_eq!(nan.left, 0.0);
    }

    #[test]
    fn region_statistics_measure_texture_and_exposure() {
        let side = 16;
        let flat = vec![128.0f32; side * side];
        let (v, m, c) = region_statistics(&flat, side, (2, 2, 14, 14));
        assert!(close(v, 0.0, 1e-6) && close(m, 128.0, 1e-4) && c == 0.0);
        let checker: Vec<f32> =
            (0..side * side).map(|i| if (i % side + i / side) % 2 == 0 { 0.0 } else { 255.0 }).collect();
        let (v, m, c) = region_statistics(&checker, side, (2, 2, 14, 14));
        assert!(v > 1e5 && close(m, 127.5, 0.1) && close(c, 1.0, 1e-6));
        // A region reaching the border is shrunk to where the Laplacian is defined.
        assert!(region_statistics(&flat, side, (0, 0, 16, 16)).0 == 0.0);
        assert_eq!(region_statistics(&flat, side, (5, 5, 5, 9)), (0.0, 0.0, 1.0));
    }

    #[test]
    fn smoothstep_saturates() {
        assert_eq!(smoothstep(0.0, 1.0, -1.0), 0.0);
        assert_eq!(smoothstep(0.0, 1.0, 2.0), 1.0);
        assert!(close(smoothstep(0.0, 1.0, 0.5), 0.5, 1e-6));
        assert_eq!(smoothstep(0.0, 1.0, f32::NAN), 0.0);
    }

    #[test]
    fn quality_is_the_product_of_its_factors() {
        let parts =
            QualityParts { size: 1.0, sharpness: 0.5, pose: 0.8, detection: 1.0, exposure: 0.5, ..Default::default() };
        assert!(close(parts.score(), 0.2, 1e-6));
    }

    #[test]
    fn landmark_crop_matches_insightface() {
        // Box 100×140 centred at (150, 170): scale 192 / (140 · 1.5), box centre at the crop centre.
        let b = BoundingBox { left: 100.0, top: 100.0, right: 200.0, bottom: 240.0 };
        let m = landmark_transform(&b, 192);
        let c = align::apply(&m, [150.0, 170.0]);
        assert!(close(c[0], 96.0, 1e-4) && close(c[1], 96.0, 1e-4));
        assert!(close(m[0][0], 192.0 / 210.0, 1e-6) && m[0][1] == 0.0);
    }

    #[test]
    fn five_point_attributes_without_landmarks() {
        let img = RgbImage::from_pixel(200, 200, image::Rgb([120, 110, 100]));
        // The mean face's five points, frontal, 60 px between the eyes.
        let kps = project(&MEAN_FACE_5, Pose::default(), 60.0, [100.0, 90.0]);
        let det = Detection {
            bbox: BoundingBox { left: 65.0, top: 15.0, right: 135.0, bottom: 160.0 },
            landmarks: [kps[0], kps[1], kps[2], kps[3], kps[4]],
            score: 0.85,
        };
        let MeasuredAttributes { attributes: a, diagnostics: d } =
            compute(&img, &AlignedFace::new(&img, det.clone(), 112), None);
        assert!(d.landmarks106.is_empty());
        assert!(a.right_eye_center.x < a.left_eye_center.x);
        let p = a.pose;
        assert!(close(p.pan, 0.0, 0.1) && close(p.tilt, 0.0, 0.1) && close(p.roll, 0.0, 0.1), "{a:?}");
        assert!(close(a.frontal_face_score, 1.0, 1e-4));
        assert_eq!(a.face_area, BoundingBox { left: 65.0, top: 15.0, right: 135.0, bottom: 160.0 });
        // A flat grey picture has no texture: sharpness, and so quality, is 0.
        assert_eq!(d.quality_parts.sharpness, 0.0);
        assert_eq!(a.quality, 0.0);
        assert!(close(d.quality_parts.size, smoothstep(16.0, 80.0, 70.0), 1e-6));

        // A recognizer crop of another size than the quality measure's: the measure makes its
        // own crop and reads the same.
        let textured = RgbImage::from_fn(200, 200, |x, y| image::Rgb([(x * 13 % 256) as u8, (y * 7 % 256) as u8, 90]));
        let other = compute(&textured, &AlignedFace::new(&textured, det.clone(), 128), None);
        let same = compute(&textured, &AlignedFace::new(&textured, det, QUALITY_CROP), None);
        assert!(same.diagnostics.quality_parts.sharpness > 0.0);
        assert_eq!(other, same);
    }
}
