//! Face crops: the region around each face box as a small JPEG thumbnail, which is what is kept
//! of a face nobody enrolled (a sighting), for a person to look at in a console.
//!
//! The image is decoded by [`decode_image`], as `analyze` decodes it (same limits, same EXIF
//! orientation, same errors), so the boxes `analyze` reported land on the same pixels here.

use std::io::Cursor;

use facegate_core::{BoundingBox, Error, FaceCrop};
use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::decode::{decode_image, DecodeLimits};

/// Margin added on each side of a box, as a share of the box's width (left and right) and
/// height (top and bottom). Detector boxes hug the face from brows to chin; a quarter more on
/// each side brings in hair, ears and jaw line, the context a person needs to recognise someone,
/// while neighbours in a crowd stay mostly out.
pub const CROP_MARGIN: f64 = 0.25;

/// Longest side of a crop, in pixels. A thumbnail for a console, where a person compares faces
/// side by side, not a photo to enrol from: at this size a JPEG is about 5–10 KB, which bounds
/// what each sighting stores however large the upload was.
pub const CROP_MAX_SIDE: u32 = 160;

/// JPEG quality of a crop: the usual point past which files grow quickly for no difference a
/// person sees at thumbnail size, while below it blocking shows on skin and edges.
pub const CROP_JPEG_QUALITY: u8 = 85;

/// Decodes `bytes` as `analyze` does and crops each of `boxes` from it, in order: see
/// [`crop_faces`].
///
/// Errors: `TooLarge`, `UnsupportedImage`, `InvalidImage` for bad bytes, exactly as `analyze`;
/// `InvalidRequest` for a box with no area inside the image.
pub fn face_crops(bytes: &[u8], limits: &DecodeLimits, boxes: &[BoundingBox]) -> facegate_core::Result<Vec<FaceCrop>> {
    let img = decode_image(bytes, limits)?;
    crop_faces(&img, boxes)
}

/// One JPEG per box of `img`, in order: the box widened by [`CROP_MARGIN`] on each side, made
/// square around its centre, clipped to the image, scaled down to at most [`CROP_MAX_SIDE`] on
/// its longer side (never up) and encoded as an RGB baseline JPEG at [`CROP_JPEG_QUALITY`].
///
/// Errors: `InvalidRequest` when a box is not finite or has no area left inside the image; a
/// box is never skipped, so that crop `i` always belongs to box `i`.
pub fn crop_faces(img: &RgbImage, boxes: &[BoundingBox]) -> facegate_core::Result<Vec<FaceCrop>> {
    boxes.iter().enumerate().map(|(i, b)| crop_face(img, i, b)).collect()
}

fn crop_face(img: &RgbImage, index: usize, bbox: &BoundingBox) -> facegate_core::Result<FaceCrop> {
    let (x, y, width, height) = region(img.width(), img.height(), bbox).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "face box {index} ({}, {}, {}, {}) has no area inside the {}×{} image",
            bbox.left,
            bbox.top,
            bbox.right,
            bbox.bottom,
            img.width(),
            img.height()
        ))
    })?;
    let view = imageops::crop_imm(img, x, y, width, height);
    let (to_width, to_height) = thumbnail_size(width, height);
    let thumb = if (to_width, to_height) == (width, height) {
        view.to_image()
    } else {
        // Triangle (bilinear, widened to the scale when shrinking) averages every source pixel
        // into the thumbnail, so a large crop does not alias; sharper kernels cost about twice
        // as much on a big photo's face for no difference visible at this size.
        imageops::resize(&*view, to_width, to_height, FilterType::Triangle)
    };
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, CROP_JPEG_QUALITY)
        .encode_image(&thumb)
        .map_err(|e| Error::Engine(format!("encoding face crop {index} as JPEG: {e}")))?;
    // The box in the thumbnail's pixels: shifted by the crop's corner, scaled as it was.
    let (sx, sy) = (to_width as f32 / width as f32, to_height as f32 / height as f32);
    let face = BoundingBox {
        left: (bbox.left - x as f32) * sx,
        top: (bbox.top - y as f32) * sy,
        right: (bbox.right - x as f32) * sx,
        bottom: (bbox.bottom - y as f32) * sy,
    };
    Ok(FaceCrop { jpeg: out.into_inner(), face })
}

/// The pixels to crop for `bbox` in a `width`×`height` image: `(x, y, width, height)`, or
/// `None` when the box is not finite or nothing of it is left inside the image.
fn region(width: u32, height: u32, bbox: &BoundingBox) -> Option<(u32, u32, u32, u32)> {
    let [left, top, right, bottom] = [bbox.left, bbox.top, bbox.right, bbox.bottom].map(f64::from);
    // Widened to f64 first, so that no size or centre of finite f32 coordinates overflows; NaN
    // and infinities are refused before any arithmetic, as they would make the span meaningless.
    let finite = [left, top, right, bottom].iter().all(|v| v.is_finite());
    if !finite || right <= left || bottom <= top {
        return None;
    }
    let side = ((right - left) * (1.0 + 2.0 * CROP_MARGIN)).max((bottom - top) * (1.0 + 2.0 * CROP_MARGIN));
    let (cx, cy) = ((left + right) / 2.0, (top + bottom) / 2.0);
    // Clipped rather than shifted inside the image: the face stays where it is in the crop,
    // which only loses the part of the margin that lies past the edge.
    let span = |centre: f64, limit: u32| {
        let from = (centre - side / 2.0).floor().clamp(0.0, f64::from(limit));
        let to = (centre + side / 2.0).ceil().clamp(0.0, f64::from(limit));
        // In range after the clamp, so the casts are exact.
        let (from, to) = (from as u32, to as u32);
        (to > from).then(|| (from, to - from))
    };
    let (x, w) = span(cx, width)?;
    let (y, h) = span(cy, height)?;
    Some((x, y, w, h))
}

/// The thumbnail size of a `width`×`height` crop: scaled to [`CROP_MAX_SIDE`] on the longer
/// side, keeping the aspect ratio, when larger; as it is otherwise.
fn thumbnail_size(width: u32, height: u32) -> (u32, u32) {
    let longer = width.max(height);
    if longer <= CROP_MAX_SIDE {
        return (width, height);
    }
    let max = u64::from(CROP_MAX_SIDE);
    // Rounded to the nearest pixel, and at least one: a sliver of a crop is still a crop.
    let scale = |side: u32| {
        let scaled = (u64::from(side) * max + u64::from(longer) / 2) / u64::from(longer);
        u32::try_from(scaled.max(1)).unwrap_or(CROP_MAX_SIDE)
    };
    (scale(width), scale(height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, ImageEncoder, ImageFormat, Rgb};

    const RED: Rgb<u8> = Rgb([220, 30, 30]);
    const BLUE: Rgb<u8> = Rgb([30, 40, 210]);

    /// 300×200, grey with a red square at (40..100, 40..100) and a blue one at (200..260, 100..160).
    fn scene() -> RgbImage {
        RgbImage::from_fn(300, 200, |x, y| match (x, y) {
            (40..100, 40..100) => RED,
            (200..260, 100..160) => BLUE,
            _ => Rgb([128, 128, 128]),
        })
    }

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img.clone()).write_to(&mut out, ImageFormat::Png).expect("encode test image");
        out.into_inner()
    }

    fn bbox(left: f32, top: f32, right: f32, bottom: f32) -> BoundingBox {
        BoundingBox { left, top, right, bottom }
    }

    fn crops(bytes: &[u8], boxes: &[BoundingBox]) -> facegate_core::Result<Vec<Vec<u8>>> {
        Ok(face_crops(bytes, &DecodeLimits::default(), boxes)?.into_iter().map(|c| c.jpeg).collect())
    }

    /// Decodes a crop, checking that it is a baseline JPEG of three channels.
    fn open(jpeg: &[u8]) -> RgbImage {
        assert_eq!(image::guess_format(jpeg).expect("a known format"), ImageFormat::Jpeg);
        // SOF0 is the baseline frame header; SOF2 would be progressive, which some viewers and
        // thumbnailers handle poorly.
        assert!(jpeg.windows(2).any(|w| w == [0xFF, 0xC0]), "no baseline frame");
        assert!(!jpeg.windows(2).any(|w| w == [0xFF, 0xC2]), "progressive");
        match image::load_from_memory_with_format(jpeg, ImageFormat::Jpeg).expect("decodes") {
            DynamicImage::ImageRgb8(rgb) => rgb,
            other => panic!("not RGB8: {:?}", other.color()),
        }
    }

    fn centre(img: &RgbImage) -> Rgb<u8> {
        *img.get_pixel(img.width() / 2, img.height() / 2)
    }

    /// Within JPEG's error of `want`, channel by channel.
    fn near(got: Rgb<u8>, want: Rgb<u8>) -> bool {
        got.0.iter().zip(want.0).all(|(&g, w)| g.abs_diff(w) <= 24)
    }

    #[test]
    fn each_box_gives_a_small_jpeg_centred_on_it_in_order() {
        let boxes = [bbox(40.0, 40.0, 100.0, 100.0), bbox(200.0, 100.0, 260.0, 160.0)];
        let out = crops(&png(&scene()), &boxes).expect("crops");
        assert_eq!(out.len(), 2);
        let (red, blue) = (open(&out[0]), open(&out[1]));
        // 60 px boxes: 90 px squares, inside the image, smaller than a thumbnail.
        assert_eq!(red.dimensions(), (90, 90));
        assert_eq!(blue.dimensions(), (90, 90));
        assert!(near(centre(&red), RED), "{:?}", centre(&red));
        assert!(near(centre(&blue), BLUE), "{:?}", centre(&blue));
        // The margin shows the surroundings.
        assert!(near(*red.get_pixel(3, 3), Rgb([128, 128, 128])), "{:?}", red.get_pixel(3, 3));
        for jpeg in &out {
            assert!(jpeg.len() < 16 * 1024, "{} bytes", jpeg.len());
        }
    }

    #[test]
    fn a_box_past_the_edges_is_clipped_to_the_image() {
        let img = RgbImage::from_fn(300, 200, |x, y| if x < 20 && y < 20 { RED } else { Rgb([128, 128, 128]) });
        // 80 px box centred on (10, 20): a 120 px square from (-50, -40), clipped at 0.
        let out =
            crops(&png(&img), &[bbox(-30.0, -20.0, 50.0, 60.0), bbox(280.0, 150.0, 340.0, 230.0)]).expect("crops");
        let corner = open(&out[0]);
        assert_eq!(corner.dimensions(), (70, 80));
        assert!(near(*corner.get_pixel(5, 5), RED));
        // 60×80 box centred on (310, 190): a 120 px square (250..370, 130..250), clipped to
        // (250..300, 130..200).
        assert_eq!(open(&out[1]).dimensions(), (50, 70));
    }

    #[test]
    fn large_crops_are_scaled_down_small_ones_never_up() {
        let bytes = png(&scene());
        // 200×160 box: a 300 px square around (150, 100), clipped to the whole 300×200 image.
        let out = crops(&bytes, &[bbox(50.0, 20.0, 250.0, 180.0), bbox(10.0, 10.0, 20.0, 20.0)]).expect("crops");
        let large = open(&out[0]);
        assert_eq!(large.dimensions(), (160, 107));
        assert!(near(*large.get_pixel(37, 37), RED), "{:?}", large.get_pixel(37, 37));
        assert!(near(*large.get_pixel(123, 69), BLUE), "{:?}", large.get_pixel(123, 69));
        // 10 px box: a 15 px square from 7.5, widened to whole pixels (7..23), kept at that size.
        assert_eq!(open(&out[1]).dimensions(), (16, 16));
        // The whole f32 range is a box, if a silly one: it crops the whole image.
        let whole = crops(&bytes, &[bbox(f32::MIN, f32::MIN, f32::MAX, f32::MAX)]).expect("crops");
        assert_eq!(open(&whole[0]).dimensions(), (160, 107));

        assert_eq!(thumbnail_size(1600, 800), (160, 80));
        assert_eq!(thumbnail_size(3, 40_000), (1, 160));
        assert_eq!(thumbnail_size(160, 120), (160, 120));
        assert_eq!(thumbnail_size(161, 1), (160, 1));
    }

    #[test]
    fn degenerate_boxes_are_invalid_requests_not_panics() {
        let bytes = png(&scene());
        let good = bbox(40.0, 40.0, 100.0, 100.0);
        for bad in [
            bbox(50.0, 50.0, 50.0, 90.0),
            bbox(50.0, 50.0, 90.0, 50.0),
            bbox(90.0, 50.0, 50.0, 90.0),
            bbox(f32::NAN, 50.0, 90.0, 90.0),
            bbox(50.0, 50.0, 90.0, f32::NAN),
            bbox(f32::NEG_INFINITY, 0.0, f32::INFINITY, 10.0),
            // Nothing of it inside the image, margin included.
            bbox(400.0, 10.0, 440.0, 50.0),
            bbox(-80.0, -80.0, -40.0, -40.0),
        ] {
            match crops(&bytes, &[good, bad]) {
                Err(Error::InvalidRequest(message)) => assert!(message.contains("face box 1"), "{message}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(crops(&bytes, &[]).expect("no boxes").is_empty());
    }

    #[test]
    fn bad_bytes_fail_as_analyze_fails() {
        let boxes = [bbox(40.0, 40.0, 100.0, 100.0)];
        assert!(matches!(crops(b"", &boxes), Err(Error::InvalidImage(_))));
        assert!(matches!(crops(b"not an image at all", &boxes), Err(Error::UnsupportedImage(_))));
        let bytes = png(&scene());
        let small = DecodeLimits { max_input_bytes: 1 << 20, max_pixels: 300 * 200 - 1 };
        assert!(matches!(face_crops(&bytes, &small, &boxes), Err(Error::TooLarge(_))));
    }

    #[test]
    fn boxes_are_read_on_the_upright_image() {
        // Stored rotated 90° counter-clockwise with EXIF Orientation 6 (rotate clockwise to
        // view): the box of the red square in the upright scene must still crop red.
        let stored = imageops::rotate270(&scene());
        let mut bytes = Vec::new();
        let mut encoder = image::codecs::png::PngEncoder::new(&mut bytes);
        encoder.set_exif_metadata(crate::decode::tests::exif_orientation(6)).expect("png takes exif");
        encoder.write_image(stored.as_raw(), 200, 300, image::ExtendedColorType::Rgb8).expect("encode");
        let out = crops(&bytes, &[bbox(40.0, 40.0, 100.0, 100.0)]).expect("crops");
        let crop = open(&out[0]);
        assert_eq!(crop.dimensions(), (90, 90));
        assert!(near(centre(&crop), RED), "{:?}", centre(&crop));
    }

    #[test]
    fn the_face_box_is_given_in_the_crops_pixels() {
        let img = RgbImage::from_pixel(1000, 800, Rgb([90, 90, 90]));
        let face = bbox(400.0, 300.0, 600.0, 500.0);
        let crop = crop_faces(&img, &[face]).expect("crop").remove(0);
        let thumb = open(&crop.jpeg);
        // 200 px widened by a quarter on each side is 300 px square, scaled to 160: the face is
        // the middle 200 / 300 of it.
        assert_eq!((thumb.width(), thumb.height()), (160, 160));
        let expect = bbox(26.666_668, 26.666_668, 133.333_33, 133.333_33);
        for (got, want) in [crop.face.left, crop.face.top, crop.face.right, crop.face.bottom].into_iter().zip([
            expect.left,
            expect.top,
            expect.right,
            expect.bottom,
        ]) {
            assert!((got - want).abs() < 0.01, "{:?}", crop.face);
        }
        // Clipped at the top-left corner, the face keeps its place relative to the image edge.
        let corner = crop_faces(&img, &[bbox(0.0, 0.0, 100.0, 100.0)]).expect("crop").remove(0);
        assert_eq!(
            (corner.face.left, corner.face.top, corner.face.right, corner.face.bottom),
            (0.0, 0.0, 100.0, 100.0)
        );
    }
}
