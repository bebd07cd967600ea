//! Decode and everything done to an image before a model sees it, without loading a model:
//! the detector canvas (scale down, place, pad with black or edge pixels, normalise), the
//! ArcFace crop of each face (similarity transform, bilinear warp), non-maximum suppression
//! and the NEC face attributes (pose fit, head box, quality statistics).
//!
//! Input: `[flags, max_side lo, max_side hi, (face: 15 × f32 LE) × faces, image bytes...]`,
//! where flags bit 0 selects the padded retry canvas, bit 1 edge fill, bit 2 a synthetic set of
//! 106 landmarks, and bits 3–4 the number of faces (0–3).
#![no_main]

use facegate_core::BoundingBox;
use facegate_engine::attributes::{self, LANDMARK_POINTS};
use facegate_engine::detect::{nms, Canvas, Detection};
use facegate_engine::{align, decode_image, fuzz_fill_canvas, AlignedFace, DecodeLimits, PadFill, RETRY_PAD};
use fast_image_resize::images::{Image as FirImage, ImageRef as FirImageRef};
use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions};
use libfuzzer_sys::fuzz_target;

const LIMITS: DecodeLimits = DecodeLimits { max_input_bytes: 1 << 20, max_pixels: 1_000_000 };
/// buffalo_s' detector normalisation and ArcFace input size.
const NORM: [f32; 2] = [127.5, 128.0];
const CROP: u32 = 112;

fn f32_at(bytes: &[u8]) -> f32 {
    let v = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    // Model outputs are finite; the range is not limited.
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let flags = data[0];
    // Any configured detector side (at least 32); the default is 640.
    let max_side = 32 + u32::from(u16::from_le_bytes([data[1], data[2]])) % 1249;
    let face_count = usize::from((flags >> 3) & 3);
    let mut rest = &data[3..];
    let mut faces = Vec::new();
    for _ in 0..face_count {
        if rest.len() < 60 {
            return;
        }
        let v: Vec<f32> = rest[..60].chunks_exact(4).map(f32_at).collect();
        rest = &rest[60..];
        faces.push(Detection {
            bbox: BoundingBox { left: v[0], top: v[1], right: v[2], bottom: v[3] },
            landmarks: std::array::from_fn(|i| [v[4 + 2 * i], v[5 + 2 * i]]),
            score: v[14],
        });
    }
    let Ok(img) = decode_image(rest, &LIMITS) else { return };
    let (w, h) = img.dimensions();

    // The detector's input, as detect::detect_on_canvas prepares it.
    let pad = if flags & 1 != 0 { RETRY_PAD } else { 0.0 };
    let fill = if flags & 2 != 0 { PadFill::Edge } else { PadFill::Zero };
    let canvas = Canvas::new(w, h, max_side, pad);
    assert!(canvas.input_w % 32 == 0 && canvas.input_h % 32 == 0, "{canvas:?}");
    assert!(canvas.content_w + 2 * canvas.offset_x <= canvas.input_w, "{canvas:?}");
    assert!(canvas.content_h + 2 * canvas.offset_y <= canvas.input_h, "{canvas:?}");
    assert!(canvas.content_w <= w && canvas.content_h <= h, "{canvas:?} upscales {w}×{h}");
    let (cw, ch) = (canvas.content_w, canvas.content_h);
    let resized;
    let content: &[u8] = if (cw, ch) == (w, h) {
        img.as_raw()
    } else {
        // detect::resize_rgb (private), with the same library call and filter.
        let src = FirImageRef::new(w, h, img.as_raw(), PixelType::U8x3).expect("source view");
        let mut dst = FirImage::new(cw, ch, PixelType::U8x3);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fast_image_resize::FilterType::Bilinear));
        fast_image_resize::Resizer::new().resize(&src, &mut dst, &options).expect("resize");
        resized = dst.into_vec();
        &resized
    };
    let mut input = Vec::new();
    fuzz_fill_canvas(content, &canvas, fill, NORM, &mut input);
    assert_eq!(input.len(), 3 * canvas.input_w as usize * canvas.input_h as usize);
    for p in [[0.0, 0.0], [canvas.input_w as f32, canvas.input_h as f32]] {
        let _ = canvas.to_source(p, w, h);
    }

    // What happens to each detection after the detector.
    for det in &faces {
        let m = align::crop_transform(det, CROP);
        let _ = align::invert(&m);
        let aligned = AlignedFace::new(&img, det.clone(), CROP);
        let landmarks106 = (flags & 4 != 0).then(|| synthetic_106(det));
        let a = attributes::compute(&img, &aligned, landmarks106).attributes;
        let q = a.quality;
        assert!(q.is_nan() || (0.0..=1.0).contains(&q), "quality {q} for {det:?}");
    }
    let kept = nms(faces.clone(), 0.4);
    assert!(kept.len() <= faces.len());
});

/// 106 points spread over the face box and its five keypoints, so that the 106-point pose fit
/// runs on the fuzzed geometry.
fn synthetic_106(det: &Detection) -> Vec<[f32; 2]> {
    let b = &det.bbox;
    (0..LANDMARK_POINTS)
        .map(|i| {
            let k = det.landmarks[i % 5];
            let t = i as f32 / LANDMARK_POINTS as f32;
            [k[0] + (b.right - b.left) * (t - 0.5) * 0.2, k[1] + (b.bottom - b.top) * (0.5 - t) * 0.2]
        })
        .collect()
}
