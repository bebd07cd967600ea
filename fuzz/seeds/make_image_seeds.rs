//! Writes the image seed corpora (decode_image, prepare_image) into fuzz/corpus/<target>/ from
//! the buffalo_s pack's sample photos, scaled down and re-encoded so that each seed stays small
//! (under 20 KB). A throwaway program: build it in a scratch crate with `image = 0.25`
//! (features jpeg, png, webp, bmp) and run `imgseeds <pack dir> <fuzz dir>`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ExtendedColorType, ImageEncoder, ImageFormat};

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (pack, fuzz) = (&args[0], &args[1]);
    let decode = fuzz.join("corpus/decode_image");
    let prepare = fuzz.join("corpus/prepare_image");
    std::fs::create_dir_all(&decode).expect("mkdir");
    std::fs::create_dir_all(&prepare).expect("mkdir");

    let mut prepared: Vec<(String, Vec<u8>, (u32, u32))> = Vec::new();
    for (name, width) in [("yaoming", 120u32), ("gdp", 160), ("players", 90)] {
        let photo = image::open(pack.join(format!("{name}.jpg"))).expect("pack photo");
        let small = photo.resize(width, width * 2, FilterType::Triangle);
        let dims = (small.width(), small.height());
        let rgb = DynamicImage::ImageRgb8(small.to_rgb8());
        let jpeg = jpeg_bytes(&rgb, 70, None);
        write(&decode, &format!("{name}.jpg"), &jpeg);
        prepared.push((format!("{name}-jpg"), jpeg, dims));
        if name == "yaoming" {
            let tiny = DynamicImage::ImageRgb8(rgb.resize(48, 96, FilterType::Triangle).to_rgb8());
            let td = (tiny.width(), tiny.height());
            write(&decode, "yaoming-gray.jpg", &jpeg_bytes(&DynamicImage::ImageLuma8(rgb.to_luma8()), 60, None));
            write(&decode, "yaoming-exif6.jpg", &jpeg_bytes(&tiny, 70, Some(exif_orientation(6))));
            let png = encode(&tiny, ImageFormat::Png);
            write(&decode, "yaoming.png", &png);
            prepared.push(("yaoming-png".into(), png, td));
            write(
                &decode,
                "yaoming-gray16.png",
                &encode(&DynamicImage::ImageLuma16(tiny.to_luma16()), ImageFormat::Png),
            );
            write(&decode, "yaoming-rgba.png", &encode(&DynamicImage::ImageRgba8(tiny.to_rgba8()), ImageFormat::Png));
            write(&decode, "yaoming-exif8.png", &png_with_exif(&tiny, 8));
            let webp = encode(&tiny, ImageFormat::WebP);
            write(&decode, "yaoming.webp", &webp);
            prepared.push(("yaoming-webp".into(), webp, td));
            let bmp =
                encode(&DynamicImage::ImageRgb8(rgb.resize(40, 80, FilterType::Triangle).to_rgb8()), ImageFormat::Bmp);
            write(&decode, "yaoming.bmp", &bmp);
        }
    }

    // prepare_image: [flags, max_side lo, max_side hi, faces × 15 f32, image].
    for (name, bytes, (w, h)) in &prepared {
        for (tag, flags, max_side) in [
            ("plain", 0u8, 608u16),
            ("retry-edge", 0b011, 32),
            ("one-face", 0b0_1000, 64),
            ("two-faces-106", 0b1_0101, 100),
        ] {
            let faces = usize::from((flags >> 3) & 3);
            let mut input = vec![flags];
            input.extend_from_slice(&max_side.to_le_bytes());
            for i in 0..faces {
                input.extend(face(*w as f32, *h as f32, i).iter().flat_map(|v| v.to_le_bytes()));
            }
            input.extend_from_slice(bytes);
            write(&prepare, &format!("{name}-{tag}"), &input);
        }
    }
}

/// A face box in the middle of the image (the second one smaller and off to a side) with the
/// ArcFace template's keypoints placed in it, and a score.
fn face(w: f32, h: f32, i: usize) -> [f32; 15] {
    const T: [[f32; 2]; 5] =
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];
    let side = w.min(h) * if i == 0 { 0.5 } else { 0.2 };
    let (left, top) = if i == 0 { ((w - side) / 2.0, (h - side) / 3.0) } else { (w * 0.05, h * 0.6) };
    let mut out = [0.0; 15];
    out[..4].copy_from_slice(&[left, top, left + side, top + side]);
    for (j, p) in T.iter().enumerate() {
        out[4 + 2 * j] = left + p[0] / 112.0 * side;
        out[5 + 2 * j] = top + p[1] / 112.0 * side;
    }
    out[14] = 0.8;
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    assert!(bytes.len() < 20_000, "{name} is {} bytes", bytes.len());
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

fn jpeg_bytes(img: &DynamicImage, quality: u8, exif: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = JpegEncoder::new_with_quality(&mut out, quality);
    if let Some(exif) = exif {
        enc.set_exif_metadata(exif).expect("jpeg takes exif");
    }
    enc.write_image(img.as_bytes(), img.width(), img.height(), img.color().into()).expect("jpeg");
    out
}

fn png_with_exif(img: &DynamicImage, orientation: u16) -> Vec<u8> {
    let rgb = img.to_rgb8();
    let mut out = Vec::new();
    let mut enc = PngEncoder::new(&mut out);
    enc.set_exif_metadata(exif_orientation(orientation)).expect("png takes exif");
    enc.write_image(rgb.as_raw(), rgb.width(), rgb.height(), ExtendedColorType::Rgb8).expect("png");
    out
}

/// A little-endian TIFF block with one IFD entry, Orientation (as decode.rs's tests build it).
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&1u16.to_le_bytes());
    t.extend_from_slice(&0x0112u16.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&value.to_le_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&0u32.to_le_bytes());
    t
}
