//! Face detection with 5 keypoints (SCRFD or YuNet), at native resolution.
//!
//! The image is scaled down only when its long side exceeds `max_side` (never up), placed at
//! the top-left of a canvas whose sides are rounded up to a multiple of 32 (the largest
//! stride), and the rest of the canvas is black. Detecting a 150×150 face crop at its own size
//! finds it; blowing it up into a fixed 640×640 canvas does not (see DESIGN.md), and small
//! inputs are also much cheaper.

use facegate_core::BoundingBox;
use fast_image_resize::{
    images::Image as FirImage, images::ImageRef as FirImageRef, PixelType, ResizeAlg, ResizeOptions,
};
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;

use crate::error::{EngineError, Result};
use crate::pack::{ChannelOrder, DetectorKind};

/// One face as the detector sees it, in source-image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// May extend past the image edges.
    pub bbox: BoundingBox,
    /// Subject's right eye (image left), left eye, nose tip, right and left mouth corners.
    pub landmarks: [[f32; 2]; 5],
    pub score: f32,
}

/// How to fill the margin added around an image on the second, padded attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadFill {
    /// Black, like the bottom/right alignment padding.
    Zero,
    /// Repeat the outermost row/column of the image.
    Edge,
}

/// Where the (scaled) image sits in the network input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Canvas {
    /// Size of the scaled image content.
    pub content_w: u32,
    pub content_h: u32,
    /// Top-left of the content in the canvas (non-zero only for the padded retry).
    pub offset_x: u32,
    pub offset_y: u32,
    /// Network input size; multiples of 32.
    pub input_w: u32,
    pub input_h: u32,
}

impl Canvas {
    /// Geometry for a `width`×`height` image surrounded by a margin of `pad` × its size on
    /// each side, scaled so that the padded long side is at most `max_side`.
    pub fn new(width: u32, height: u32, max_side: u32, pad: f32) -> Canvas {
        let (w, h) = (width.max(1) as f32, height.max(1) as f32);
        let (pad_x, pad_y) = ((w * pad).round(), (h * pad).round());
        let long = (w + 2.0 * pad_x).max(h + 2.0 * pad_y);
        let scale = (max_side.max(32) as f32 / long).min(1.0);
        let content_w = ((w * scale).round() as u32).max(1);
        let content_h = ((h * scale).round() as u32).max(1);
        let offset_x = (pad_x * scale).round() as u32;
        let offset_y = (pad_y * scale).round() as u32;
        Canvas {
            content_w,
            content_h,
            offset_x,
            offset_y,
            input_w: round_up_32(content_w + 2 * offset_x),
            input_h: round_up_32(content_h + 2 * offset_y),
        }
    }

    /// Maps a point from network-input pixels back to source-image pixels. Pixel centres sit
    /// at integer coordinates in both spaces, as in the centre-aligned resize that made the
    /// content.
    pub fn to_source(&self, p: [f32; 2], width: u32, height: u32) -> [f32; 2] {
        let sx = width as f32 / self.content_w as f32;
        let sy = height as f32 / self.content_h as f32;
        [(p[0] - self.offset_x as f32 + 0.5) * sx - 0.5, (p[1] - self.offset_y as f32 + 0.5) * sy - 0.5]
    }
}

fn round_up_32(v: u32) -> u32 {
    v.max(1).div_ceil(32) * 32
}

/// Settings of one detector, from the engine config and the pack manifest.
#[derive(Debug, Clone)]
pub struct DetectorParams {
    pub kind: DetectorKind,
    pub channels: ChannelOrder,
    pub max_side: u32,
    pub threshold: f32,
    pub nms_iou: f32,
    pub mean: f32,
    pub std: f32,
    pub strides: Vec<u32>,
    pub anchors_per_cell: usize,
    /// Margin (fraction of width/height per side) for the retry when nothing is found.
    pub retry_pad: f32,
    pub retry_fill: PadFill,
    /// Side of the keypoint refinement canvas (`refine::refine_keypoints`); `None` for none.
    pub refine_canvas: Option<u32>,
}

/// Per-worker buffers reused across calls so that detection allocates little.
#[derive(Default)]
pub struct DetectScratch {
    resizer: fast_image_resize::Resizer,
    resized: Vec<u8>,
    pub(crate) input: Vec<f32>,
}

/// Output indices of one stride's heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    scores: usize,
    /// YuNet's objectness, multiplied into its class score.
    objectness: Option<usize>,
    boxes: usize,
    kps: usize,
}

/// Output indices of each stride's heads, fixed at load time.
#[derive(Debug, Clone)]
pub struct OutputMap {
    heads: Vec<Head>,
}

impl OutputMap {
    /// SCRFD: matches outputs by their names (`score_8`, `bbox_8`, `kps_8`, …) when the model
    /// has them, otherwise by InsightFace's export order (all scores, all boxes, all keypoints).
    /// YuNet: by its names (`cls_8`, `obj_8`, `bbox_8`, `kps_8`, …), which every export keeps.
    pub fn new(kind: DetectorKind, output_names: &[&str], strides: &[u32], model: &str) -> Result<OutputMap> {
        let find = |prefix: &str, stride: u32| output_names.iter().position(|n| *n == format!("{prefix}_{stride}"));
        let by_name: Option<Vec<Head>> = strides
            .iter()
            .map(|&s| {
                let (scores, objectness) = match kind {
                    DetectorKind::Scrfd => (find("score", s)?, None),
                    DetectorKind::Yunet => (find("cls", s)?, Some(find("obj", s)?)),
                };
                Some(Head { scores, objectness, boxes: find("bbox", s)?, kps: find("kps", s)? })
            })
            .collect();
        if let Some(heads) = by_name {
            return Ok(OutputMap { heads });
        }
        let k = strides.len();
        if kind == DetectorKind::Scrfd && output_names.len() == 3 * k {
            let heads = (0..k).map(|i| Head { scores: i, objectness: None, boxes: i + k, kps: i + 2 * k }).collect();
            return Ok(OutputMap { heads });
        }
        let expected = match kind {
            DetectorKind::Scrfd => "score/bbox/kps",
            DetectorKind::Yunet => "cls/obj/bbox/kps",
        };
        Err(EngineError::Model {
            model: model.to_owned(),
            reason: format!(
                "expected outputs {expected} for strides {strides:?} (with keypoints), got {output_names:?}"
            ),
        })
    }
}

/// Runs the detector on `img`: one pass at native resolution and, when that finds nothing, one
/// more on the image with a margin around it (faces filling the whole frame are often missed
/// because the detector never saw a face without context). Faces come largest first.
pub fn detect(
    session: &mut Session,
    outputs: &OutputMap,
    params: &DetectorParams,
    scratch: &mut DetectScratch,
    img: &RgbImage,
) -> Result<Vec<Detection>> {
    let canvas = Canvas::new(img.width(), img.height(), params.max_side, 0.0);
    let found = detect_on_canvas(session, outputs, params, scratch, img, &canvas, PadFill::Zero)?;
    if !found.is_empty() || params.retry_pad <= 0.0 {
        return Ok(found);
    }
    let canvas = Canvas::new(img.width(), img.height(), params.max_side, params.retry_pad);
    detect_on_canvas(session, outputs, params, scratch, img, &canvas, params.retry_fill)
}

fn detect_on_canvas(
    session: &mut Session,
    outputs: &OutputMap,
    params: &DetectorParams,
    scratch: &mut DetectScratch,
    img: &RgbImage,
    canvas: &Canvas,
    fill: PadFill,
) -> Result<Vec<Detection>> {
    let (cw, ch) = (canvas.content_w, canvas.content_h);
    // Pixels of the content at canvas scale: the image itself when no scaling is needed.
    let content: &[u8] = if (cw, ch) == img.dimensions() {
        img.as_raw()
    } else {
        resize_rgb(&mut scratch.resizer, img, cw, ch, &mut scratch.resized)?;
        &scratch.resized
    };
    fill_canvas(content, canvas, fill, params.channels, params.mean, params.std, &mut scratch.input);

    let candidates = run_and_decode(session, outputs, params, &scratch.input, canvas)?;
    Ok(faces_in_source(candidates, canvas, img.dimensions(), params.nms_iou))
}

/// One canvas's candidates as faces of the `width`×`height` source image: mapped back to its
/// pixels, overlapping boxes merged there, largest box first.
fn faces_in_source(
    mut candidates: Vec<Detection>,
    canvas: &Canvas,
    (w, h): (u32, u32),
    nms_iou: f32,
) -> Vec<Detection> {
    for d in &mut candidates {
        let tl = canvas.to_source([d.bbox.left, d.bbox.top], w, h);
        let br = canvas.to_source([d.bbox.right, d.bbox.bottom], w, h);
        d.bbox = BoundingBox { left: tl[0], top: tl[1], right: br[0], bottom: br[1] };
        for p in &mut d.landmarks {
            *p = canvas.to_source(*p, w, h);
        }
    }
    let mut kept = nms(candidates, nms_iou);
    kept.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
    kept
}

/// Runs the detector on a filled canvas and decodes every stride's candidates above the
/// threshold, in network-input pixels.
pub(crate) fn run_and_decode(
    session: &mut Session,
    outputs: &OutputMap,
    params: &DetectorParams,
    input: &[f32],
    canvas: &Canvas,
) -> Result<Vec<Detection>> {
    let shape = [1usize, 3, canvas.input_h as usize, canvas.input_w as usize];
    let input = TensorRef::from_array_view((shape, input))?;
    let results = session.run(ort::inputs![input])?;
    let mut candidates = Vec::new();
    for (&stride, head) in params.strides.iter().zip(&outputs.heads) {
        let (_, scores) = results[head.scores].try_extract_tensor::<f32>()?;
        let (_, boxes) = results[head.boxes].try_extract_tensor::<f32>()?;
        let (_, kps) = results[head.kps].try_extract_tensor::<f32>()?;
        let outputs = HeadOutputs { stride, scores, boxes, kps };
        match head.objectness {
            None => decode_head(outputs, canvas, params.anchors_per_cell, params.threshold, &mut candidates)?,
            Some(obj) => {
                let (_, objectness) = results[obj].try_extract_tensor::<f32>()?;
                decode_yunet_head(outputs, objectness, canvas, params.threshold, &mut candidates)?
            }
        }
    }
    Ok(candidates)
}

/// Resizes with a bilinear convolution: unlike point-sampled bilinear it averages over the
/// whole footprint when shrinking, so large photos are not aliased on their way down to 640.
fn resize_rgb(
    resizer: &mut fast_image_resize::Resizer,
    img: &RgbImage,
    w: u32,
    h: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    let src = FirImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .map_err(|e| EngineError::Runtime(format!("resize source: {e}")))?;
    out.clear();
    out.resize(w as usize * h as usize * 3, 0);
    let mut dst = FirImage::from_slice_u8(w, h, out.as_mut_slice(), PixelType::U8x3)
        .map_err(|e| EngineError::Runtime(format!("resize target: {e}")))?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fast_image_resize::FilterType::Bilinear));
    resizer.resize(&src, &mut dst, &options).map_err(|e| EngineError::Runtime(format!("resize: {e}")))
}

/// Writes the canvas as normalised planar pixels (NCHW with N = 1, planes in `channels` order)
/// into `out`.
///
/// `content` is `content_w × content_h` packed RGB8.
pub(crate) fn fill_canvas(
    content: &[u8],
    canvas: &Canvas,
    fill: PadFill,
    channels: ChannelOrder,
    mean: f32,
    std: f32,
    out: &mut Vec<f32>,
) {
    let (iw, ih) = (canvas.input_w as usize, canvas.input_h as usize);
    let (cw, ch) = (canvas.content_w as usize, canvas.content_h as usize);
    let (ox, oy) = (canvas.offset_x as usize, canvas.offset_y as usize);
    let plane = iw * ih;
    let scale = 1.0 / std;
    // The lookup table turns the per-value normalisation into a load.
    let lut: [f32; 256] = std::array::from_fn(|v| (v as f32 - mean) * scale);
    out.clear();
    out.resize(3 * plane, lut[0]);
    let (first, rest) = out.split_at_mut(plane);
    let (g, last) = rest.split_at_mut(plane);
    let (r, b) = match channels {
        ChannelOrder::Rgb => (first, last),
        ChannelOrder::Bgr => (last, first),
    };
    match fill {
        PadFill::Zero => {
            for (y, row) in content.chunks_exact(cw * 3).take(ch).enumerate() {
                let start = (oy + y) * iw + ox;
                let (r, g, b) = (&mut r[start..start + cw], &mut g[start..start + cw], &mut b[start..start + cw]);
                for (i, px) in row.chunks_exact(3).enumerate() {
                    r[i] = lut[px[0] as usize];
                    g[i] = lut[px[1] as usize];
                    b[i] = lut[px[2] as usize];
                }
            }
        }
        PadFill::Edge => {
            for y in 0..ih {
                let sy = y.saturating_sub(oy).min(ch - 1);
                let row = &content[sy * cw * 3..(sy + 1) * cw * 3];
                for x in 0..iw {
                    let sx = x.saturating_sub(ox).min(cw - 1) * 3;
                    let o = y * iw + x;
                    r[o] = lut[row[sx] as usize];
                    g[o] = lut[row[sx + 1] as usize];
                    b[o] = lut[row[sx + 2] as usize];
                }
            }
        }
    }
}

/// The three outputs of one stride, each `[1, cells·anchors, C]` flattened.
pub struct HeadOutputs<'a> {
    pub stride: u32,
    pub scores: &'a [f32],
    pub boxes: &'a [f32],
    pub kps: &'a [f32],
}

/// Turns one stride's outputs into candidates (in network-input pixels) above `threshold`.
///
/// Anchors sit at `(col, row) · stride`, `anchors` per cell, cell-major. Boxes are distances
/// from the anchor to the four sides and keypoints offsets from it, both in units of stride.
pub fn decode_head(
    head: HeadOutputs<'_>,
    canvas: &Canvas,
    anchors: usize,
    threshold: f32,
    out: &mut Vec<Detection>,
) -> Result<()> {
    let s = head.stride as usize;
    let (fw, fh) = (canvas.input_w as usize / s, canvas.input_h as usize / s);
    let n = fw * fh * anchors;
    if head.scores.len() != n || head.boxes.len() != 4 * n || head.kps.len() != 10 * n {
        return Err(EngineError::Model {
            model: "detector".into(),
            reason: format!(
                "stride {s}: expected {n} anchors for a {}×{} input, got {} scores, {} boxes, {} keypoint sets",
                canvas.input_w,
                canvas.input_h,
                head.scores.len(),
                head.boxes.len() / 4,
                head.kps.len() / 10
            ),
        });
    }
    let sf = s as f32;
    for (i, &score) in head.scores.iter().enumerate() {
        // `>=` as the reference does; NaN never passes.
        if score.is_nan() || score < threshold {
            continue;
        }
        let cell = i / anchors;
        let (cx, cy) = ((cell % fw) as f32 * sf, (cell / fw) as f32 * sf);
        let d = &head.boxes[4 * i..4 * i + 4];
        let k = &head.kps[10 * i..10 * i + 10];
        let bbox =
            BoundingBox { left: cx - d[0] * sf, top: cy - d[1] * sf, right: cx + d[2] * sf, bottom: cy + d[3] * sf };
        let landmarks = std::array::from_fn(|j| [cx + k[2 * j] * sf, cy + k[2 * j + 1] * sf]);
        out.push(Detection { bbox, landmarks, score });
    }
    Ok(())
}

/// Turns one stride of YuNet's outputs into candidates (in network-input pixels) above
/// `threshold`, as OpenCV's `FaceDetectorYN` decodes them.
///
/// One anchor per cell. The score is `√(cls · obj)`, both clamped to 0..1. The box is a centre
/// offset from the cell's corner and a log size, and the keypoints offsets from the corner, all
/// in units of stride.
pub fn decode_yunet_head(
    head: HeadOutputs<'_>,
    objectness: &[f32],
    canvas: &Canvas,
    threshold: f32,
    out: &mut Vec<Detection>,
) -> Result<()> {
    let s = head.stride as usize;
    let (fw, fh) = (canvas.input_w as usize / s, canvas.input_h as usize / s);
    let n = fw * fh;
    if head.scores.len() != n || objectness.len() != n || head.boxes.len() != 4 * n || head.kps.len() != 10 * n {
        return Err(EngineError::Model {
            model: "detector".into(),
            reason: format!(
                "stride {s}: expected {n} cells for a {}×{} input, got {} scores, {} objectness, {} boxes, {} \
                 keypoint sets",
                canvas.input_w,
                canvas.input_h,
                head.scores.len(),
                objectness.len(),
                head.boxes.len() / 4,
                head.kps.len() / 10
            ),
        });
    }
    let sf = s as f32;
    for (i, (&cls, &obj)) in head.scores.iter().zip(objectness).enumerate() {
        let score = (cls.clamp(0.0, 1.0) * obj.clamp(0.0, 1.0)).sqrt();
        // `>=` as the reference does; NaN never passes.
        if score.is_nan() || score < threshold {
            continue;
        }
        let (col, row) = ((i % fw) as f32, (i / fw) as f32);
        let d = &head.boxes[4 * i..4 * i + 4];
        let k = &head.kps[10 * i..10 * i + 10];
        let (cx, cy) = ((col + d[0]) * sf, (row + d[1]) * sf);
        let (w, h) = (d[2].exp() * sf, d[3].exp() * sf);
        let bbox = BoundingBox { left: cx - w / 2.0, top: cy - h / 2.0, right: cx + w / 2.0, bottom: cy + h / 2.0 };
        if !bbox.area().is_finite() {
            continue;
        }
        let landmarks = std::array::from_fn(|j| [(col + k[2 * j]) * sf, (row + k[2 * j + 1]) * sf]);
        out.push(Detection { bbox, landmarks, score });
    }
    Ok(())
}

/// Greedy non-maximum suppression: highest score first, dropping any box whose IoU with a kept
/// one exceeds `iou`. Areas use the `+1` pixel convention of the reference implementation so
/// that both keep the same boxes.
pub fn nms(mut dets: Vec<Detection>, iou: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |b: &BoundingBox| (b.right - b.left + 1.0).max(0.0) * (b.bottom - b.top + 1.0).max(0.0);
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        let suppressed = kept.iter().any(|k| {
            let (a, b) = (&k.bbox, &d.bbox);
            let w = (a.right.min(b.right) - a.left.max(b.left) + 1.0).max(0.0);
            let h = (a.bottom.min(b.bottom) - a.top.max(b.top) + 1.0).max(0.0);
            let inter = w * h;
            let union = area(a) + area(b) - inter;
            union > 0.0 && inter / union > iou
        });
        if !suppressed {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(l: f32, t: f32, r: f32, b: f32, score: f32) -> Detection {
        Detection { bbox: BoundingBox { left: l, top: t, right: r, bottom: b }, landmarks: [[0.0; 2]; 5], score }
    }

    #[test]
    fn canvas_never_upscales_and_rounds_up_to_32() {
        let c = Canvas::new(250, 250, 640, 0.0);
        assert_eq!((c.content_w, c.content_h, c.input_w, c.input_h), (250, 250, 256, 256));
        let c = Canvas::new(1000, 800, 640, 0.0);
        assert_eq!((c.content_w, c.content_h, c.input_w, c.input_h), (640, 512, 640, 512));
        let c = Canvas::new(150, 150, 640, 0.0);
        assert_eq!((c.input_w, c.input_h), (160, 160));
        let c = Canvas::new(1, 1, 640, 0.0);
        assert_eq!((c.content_w, c.input_w, c.input_h), (1, 32, 32));
        let c = Canvas::new(20_000, 10, 640, 0.0);
        assert_eq!((c.content_w, c.content_h, c.input_w, c.input_h), (640, 1, 640, 32));
    }

    #[test]
    fn padded_canvas_places_content_in_the_middle() {
        let c = Canvas::new(150, 150, 640, 0.25);
        assert_eq!((c.offset_x, c.offset_y, c.content_w), (38, 38, 150));
        assert_eq!((c.input_w, c.input_h), (256, 256));
        // Large image: the padded long side is what gets capped.
        let c = Canvas::new(1280, 640, 640, 0.25);
        assert_eq!((c.content_w, c.content_h, c.offset_x, c.offset_y), (427, 213, 107, 53));
        assert!(c.input_w <= 672);
    }

    #[test]
    fn mapping_back_inverts_the_placement() {
        let c = Canvas::new(1000, 800, 640, 0.0);
        let p = c.to_source([319.5, 255.5], 1000, 800);
        assert!((p[0] - 499.5).abs() < 1e-3 && (p[1] - 399.5).abs() < 1e-3, "{p:?}");
        let c = Canvas::new(150, 150, 640, 0.25);
        let p = c.to_source([38.0, 38.0], 150, 150);
        assert!(p[0].abs() < 1e-4 && p[1].abs() < 1e-4, "{p:?}");
    }

    #[test]
    fn candidates_come_back_in_source_pixels_merged_and_largest_first() {
        // The padded retry's canvas of a 1000×800 photo: scaled by 0.32, offset by the margin.
        let c = Canvas::new(1000, 800, 640, 0.5);
        let (ox, oy) = (c.offset_x as f32, c.offset_y as f32);
        let mut small = det(ox + 10.0, oy + 10.0, ox + 30.0, oy + 30.0, 0.95);
        small.landmarks = [[ox + 20.0, oy + 20.0]; 5];
        let big = det(ox + 100.0, oy + 50.0, ox + 200.0, oy + 170.0, 0.8);
        let twin = det(ox + 102.0, oy + 52.0, ox + 202.0, oy + 172.0, 0.9);
        let found = faces_in_source(vec![small.clone(), big, twin.clone()], &c, (1000, 800), 0.4);

        assert_eq!(found.len(), 2, "{found:?}");
        // The better scored of the two overlapping boxes stays, and it comes first for its size.
        assert_eq!(found[0].score, twin.score);
        assert_eq!(found[1].score, small.score);
        let expect = |p: [f32; 2]| c.to_source(p, 1000, 800);
        let b = &found[0].bbox;
        assert_eq!([b.left, b.top], expect([twin.bbox.left, twin.bbox.top]));
        assert_eq!([b.right, b.bottom], expect([twin.bbox.right, twin.bbox.bottom]));
        assert_eq!(found[1].landmarks, [expect([ox + 20.0, oy + 20.0]); 5]);
        // 20 canvas pixels are 62.5 photo pixels at this scale.
        let w = found[1].bbox.right - found[1].bbox.left;
        assert!((w - 20.0 * 1000.0 / c.content_w as f32).abs() < 1e-3, "{w}");
        assert!(faces_in_source(Vec::new(), &c, (1000, 800), 0.4).is_empty());
    }

    #[test]
    fn fill_writes_planar_normalised_pixels_and_black_padding() {
        let content = [255u8, 0, 0, 0, 255, 0];
        let canvas = Canvas { content_w: 2, content_h: 1, offset_x: 0, offset_y: 0, input_w: 32, input_h: 32 };
        let mut out = Vec::new();
        fill_canvas(&content, &canvas, PadFill::Zero, ChannelOrder::Rgb, 127.5, 128.0, &mut out);
        let plane = 32 * 32;
        assert_eq!(out.len(), 3 * plane);
        assert_eq!(out[0], 127.5 / 128.0);
        assert_eq!(out[plane + 1], 127.5 / 128.0);
        assert_eq!(out[1], -127.5 / 128.0);
        assert_eq!(out[2], -127.5 / 128.0);

        let canvas = Canvas { content_w: 2, content_h: 1, offset_x: 1, offset_y: 1, input_w: 32, input_h: 32 };
        fill_canvas(&content, &canvas, PadFill::Edge, ChannelOrder::Rgb, 127.5, 128.0, &mut out);
        // Top-left corner repeats the first pixel (red), far right repeats the last (green).
        assert_eq!(out[0], 127.5 / 128.0);
        assert_eq!(out[plane + 31 * 32 + 31], 127.5 / 128.0);

        // BGR puts the red pixel's red in the last plane.
        fill_canvas(&content, &canvas, PadFill::Zero, ChannelOrder::Bgr, 0.0, 1.0, &mut out);
        assert_eq!(out[2 * plane + 33], 255.0);
        assert_eq!(out[33], 0.0);
    }

    #[test]
    fn decodes_yunet_centre_offsets_log_sizes_and_the_geometric_mean_score() {
        let canvas = Canvas::new(32, 32, 640, 0.0);
        // stride 16 on a 32×32 input: 2×2 cells, one anchor each.
        let scores = [0.0, 0.0, 0.81, 0.3];
        let objectness = [0.0, 0.0, 1.0, 1.2];
        let mut boxes = vec![0.0f32; 16];
        boxes[8..12].copy_from_slice(&[0.5, 0.25, 0.0, 1.0f32.ln()]);
        let mut kps = vec![0.0f32; 40];
        kps[20] = 0.5;
        kps[21] = -0.5;
        let mut out = Vec::new();
        let head = HeadOutputs { stride: 16, scores: &scores, boxes: &boxes, kps: &kps };
        decode_yunet_head(head, &objectness, &canvas, 0.5, &mut out).expect("shapes match");
        // Cell 2 is (col 0, row 1): centre (8, 20), 16×16. Cell 3's score is √0.3 ≈ 0.55, with
        // its objectness clamped to 1.
        assert_eq!(out.len(), 2);
        let d = &out[0];
        assert!((d.score - 0.9).abs() < 1e-6, "{}", d.score);
        assert_eq!(d.bbox, BoundingBox { left: 0.0, top: 12.0, right: 16.0, bottom: 28.0 });
        assert_eq!(d.landmarks[0], [8.0, 8.0]);
        assert!((out[1].score - 0.3f32.sqrt()).abs() < 1e-6);
        let short = HeadOutputs { stride: 16, scores: &scores, boxes: &boxes, kps: &kps };
        assert!(decode_yunet_head(short, &objectness[..3], &canvas, 0.5, &mut out).is_err());
    }

    #[test]
    fn decodes_anchor_offsets_in_stride_units() {
        let canvas = Canvas::new(32, 32, 640, 0.0);
        // stride 16 on a 32×32 input: 2×2 cells, 2 anchors each.
        let mut scores = vec![0.0f32; 8];
        scores[3] = 0.9; // cell 1 (col 1, row 0), second anchor
        let mut boxes = vec![0.0f32; 32];
        boxes[12..16].copy_from_slice(&[0.5, 0.25, 1.0, 2.0]);
        let mut kps = vec![0.0f32; 80];
        kps[30] = 0.5;
        kps[31] = -0.5;
        let mut out = Vec::new();
        decode_head(HeadOutputs { stride: 16, scores: &scores, boxes: &boxes, kps: &kps }, &canvas, 2, 0.5, &mut out)
            .expect("shapes match");
        assert_eq!(out.len(), 1);
        let d = &out[0];
        assert_eq!(d.bbox, BoundingBox { left: 8.0, top: -4.0, right: 32.0, bottom: 32.0 });
        assert_eq!(d.landmarks[0], [24.0, -8.0]);
        assert_eq!(d.score, 0.9);
    }

    #[test]
    fn decode_rejects_mismatched_shapes() {
        let canvas = Canvas::new(32, 32, 640, 0.0);
        let r = decode_head(
            HeadOutputs { stride: 8, scores: &[0.0; 3], boxes: &[], kps: &[] },
            &canvas,
            2,
            0.5,
            &mut Vec::new(),
        );
        assert!(r.is_err());
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let dets = vec![
            det(0.0, 0.0, 100.0, 100.0, 0.8),
            det(5.0, 5.0, 105.0, 105.0, 0.9),
            det(200.0, 200.0, 250.0, 250.0, 0.7),
            det(50.0, 0.0, 150.0, 100.0, 0.6), // IoU 0.36 with the best: kept
        ];
        let kept = nms(dets, 0.4);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.7, 0.6]);
        assert!(nms(Vec::new(), 0.4).is_empty());
    }

    #[test]
    fn output_map_by_name_or_order() {
        let names = ["score_8", "score_16", "score_32", "bbox_8", "bbox_16", "bbox_32", "kps_8", "kps_16", "kps_32"];
        let scrfd = DetectorKind::Scrfd;
        let head = |scores, boxes, kps| Head { scores, objectness: None, boxes, kps };
        let m = OutputMap::new(scrfd, &names, &[8, 16, 32], "det").expect("named");
        assert_eq!(m.heads[1], head(1, 4, 7));
        let shuffled = ["kps_8", "bbox_8", "score_8"];
        let m = OutputMap::new(scrfd, &shuffled, &[8], "det").expect("named");
        assert_eq!(m.heads[0], head(2, 1, 0));
        let numeric = ["443", "468", "493", "446", "471", "496", "449", "474", "499"];
        let m = OutputMap::new(scrfd, &numeric, &[8, 16, 32], "det").expect("ordered");
        assert_eq!(m.heads[2], head(2, 5, 8));
        assert!(OutputMap::new(scrfd, &numeric[..6], &[8, 16, 32], "det").is_err());
        // YuNet is matched by name only: its outputs come in no fixed order.
        let yunet = ["cls_8", "obj_8", "bbox_8", "kps_8"];
        let m = OutputMap::new(DetectorKind::Yunet, &yunet, &[8], "det").expect("named");
        assert_eq!(m.heads[0], Head { scores: 0, objectness: Some(1), boxes: 2, kps: 3 });
        assert!(OutputMap::new(DetectorKind::Yunet, &names, &[8, 16, 32], "det").is_err());
    }
}
