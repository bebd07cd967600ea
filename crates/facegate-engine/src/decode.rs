//! Image bytes → upright RGB8, with limits checked before any pixel buffer is allocated.
//!
//! Uploads are hostile by default: the format is sniffed from the bytes (never trusted from a
//! file name or content type), the header's dimensions are checked against `max_pixels` before
//! decoding, and every decoder failure becomes an error value, never a panic.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{EngineError, Result};

/// Limits on one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Encoded size.
    pub max_input_bytes: usize,
    /// Decoded width × height.
    pub max_pixels: u64,
}

/// Largest decoded image, width × height. 40 MP covers current phone cameras and stops
/// decompression bombs before they allocate.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// Largest encoded input: the core's image limit, which is also the server's default request
/// body limit, so that the engine never refuses as too large an image the server accepted.
pub const DEFAULT_MAX_INPUT_BYTES: usize = facegate_core::service::DEFAULT_MAX_IMAGE_BYTES;

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_input_bytes: DEFAULT_MAX_INPUT_BYTES, max_pixels: DEFAULT_MAX_PIXELS }
    }
}

/// The formats the engine accepts; everything else is `UnsupportedImage`, even if `image`
/// could sniff it, so that the accepted set does not silently grow with crate features.
const ACCEPTED: &[ImageFormat] = &[ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP, ImageFormat::Bmp];

/// Decodes JPEG, PNG, WebP or BMP bytes into an upright RGB8 image.
///
/// EXIF orientation is applied, so the result is the image as a person sees it. Grayscale,
/// 16-bit and alpha images are converted to RGB8 (alpha is dropped, not composited).
///
/// Errors: `TooLarge` for bytes or pixels over `limits`, `UnsupportedImage` for formats other
/// than the four above, `InvalidImage` for corrupt or truncated data.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    if bytes.len() > limits.max_input_bytes {
        return Err(EngineError::TooLarge(format!(
            "the image is {} bytes; the limit is {} bytes",
            bytes.len(),
            limits.max_input_bytes
        )));
    }
    if bytes.is_empty() {
        return Err(EngineError::InvalidImage("the image is empty".into()));
    }
    let format = image::guess_format(bytes)
        .map_err(|_| EngineError::UnsupportedImage("not a JPEG, PNG, WebP or BMP image".into()))?;
    if !ACCEPTED.contains(&format) {
        return Err(EngineError::UnsupportedImage(format!(
            "{} images are not accepted; send JPEG, PNG, WebP or BMP",
            format_name(format)
        )));
    }

    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(EngineError::InvalidImage("truncated JPEG: no end-of-image marker after the last scan".into()));
    }

    let stripped;
    let bytes = match format {
        ImageFormat::Png => match without_png_icc_profile(bytes) {
            Some(b) => {
                stripped = b;
                &stripped[..]
            }
            None => bytes,
        },
        _ => bytes,
    };

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decoder_limits(limits));
    // Reading the decoder's header is cheap; the pixel buffer is only allocated by
    // `from_decoder` below, after the dimensions have been checked.
    let mut decoder = reader.into_decoder().map_err(image_error)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, limits.max_pixels)?;
    // A malformed EXIF block must not make an otherwise good image unreadable.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    img.apply_orientation(orientation);
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.into_rgb8(),
    })
}

/// `image`'s own limits, as a second line behind [`check_pixels`]: they also bound what a
/// decoder may allocate for itself while decoding.
fn decoder_limits(limits: &DecodeLimits) -> Limits {
    let mut l = Limits::default();
    // Up to 8 bytes a pixel (16-bit RGBA) for the decoded buffer, plus room for the decoder's
    // working memory; never below image's own default of 512 MiB for small pixel limits.
    let needed = limits.max_pixels.saturating_mul(8).saturating_add(64 << 20);
    l.max_alloc = Some(needed.max(512 << 20));
    l
}

/// The PNG without its ICC profile chunks (`iCCP`), or `None` when it has none.
///
/// A profile is zlib-compressed, and the PNG decoder inflates it while reading the header, up to
/// its whole allocation budget (hundreds of MB, see [`decoder_limits`]): a few MB of profile
/// would be a decompression bomb that no dimension check sees. The engine does no colour
/// management, so the profile would never be used. The chunks are walked by their lengths,
/// without inflating anything, up to the first image data, which an `iCCP` must precede.
fn without_png_icc_profile(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut at = 8; // the signature
    let mut spans = Vec::new();
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let end = at.saturating_add(12).saturating_add(len).min(bytes.len());
        match &header[4..] {
            b"IDAT" | b"IEND" => break,
            b"iCCP" => spans.push(at..end),
            _ => {}
        }
        at = end;
    }
    if spans.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut from = 0;
    for span in spans {
        out.extend_from_slice(&bytes[from..span.start]);
        from = span.end;
    }
    out.extend_from_slice(&bytes[from..]);
    Some(out)
}

/// Whether an end-of-image marker (FF D9) follows the last start-of-scan (FF DA).
///
/// The JPEG decoder pads truncated scan data with grey instead of failing, which would turn a
/// half-uploaded photo into a half-grey one and a confusing "no face". Inside scan data every
/// 0xFF byte is followed by 0x00 or a restart marker, so the markers cannot occur by accident;
/// searching from the last scan skips an EXIF thumbnail's own markers. Trailing bytes after the
/// EOI, which some cameras append, are allowed.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(at) => bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

pub(crate) fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(EngineError::InvalidImage(format!("the image has no pixels ({width}×{height})")));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(EngineError::TooLarge(format!(
            "the image is {width}×{height} = {pixels} pixels; the limit is {max_pixels}"
        )));
    }
    Ok(())
}

fn format_name(format: ImageFormat) -> String {
    format.extensions_str().first().map_or_else(|| format!("{format:?}"), |e| e.to_uppercase())
}

fn image_error(e: ImageError) -> EngineError {
    match e {
        ImageError::Limits(l) => EngineError::TooLarge(format!("the image exceeds a decoding limit: {l}")),
        ImageError::Unsupported(u) => EngineError::UnsupportedImage(u.to_string()),
        ImageError::Decoding(d) => EngineError::InvalidImage(d.to_string()),
        ImageError::IoError(io) => EngineError::InvalidImage(format!("truncated or unreadable data: {io}")),
        ImageError::Parameter(p) => EngineError::InvalidImage(p.to_string()),
        ImageError::Encoding(enc) => EngineError::InvalidImage(enc.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb};

    fn limits() -> DecodeLimits {
        DecodeLimits { max_input_bytes: 1 << 20, max_pixels: 1_000_000 }
    }

    fn encode(format: ImageFormat, img: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode test image");
        out.into_inner()
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, 99]))
    }

    #[test]
    fn decodes_the_four_formats_to_rgb() {
        let img = DynamicImage::ImageRgb8(gradient(40, 30));
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp, ImageFormat::WebP] {
            let bytes = encode(format, &img);
            let rgb = decode_image(&bytes, &limits()).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(rgb.dimensions(), (40, 30), "{format:?}");
        }
    }

    #[test]
    fn converts_gray_and_alpha() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8, 4, image::Luma([200])));
        let rgb = decode_image(&encode(ImageFormat::Png, &gray), &limits()).expect("gray png");
        assert_eq!(rgb.get_pixel(3, 2), &Rgb([200, 200, 200]));
        let rgba = DynamicImage::ImageRgba16(image::ImageBuffer::from_pixel(5, 5, image::Rgba([65535u16, 0, 0, 0])));
        let rgb = decode_image(&encode(ImageFormat::Png, &rgba), &limits()).expect("rgba16 png");
        assert_eq!(rgb.get_pixel(0, 0), &Rgb([255, 0, 0]));
    }

    #[test]
    fn rejects_oversized_input_and_pixels() {
        let bytes = encode(ImageFormat::Png, &DynamicImage::ImageRgb8(gradient(20, 20)));
        let small = DecodeLimits { max_input_bytes: 10, max_pixels: 1_000_000 };
        assert!(matches!(decode_image(&bytes, &small), Err(EngineError::TooLarge(_))));
        let few = DecodeLimits { max_input_bytes: 1 << 20, max_pixels: 399 };
        assert!(matches!(decode_image(&bytes, &few), Err(EngineError::TooLarge(_))));
    }

    #[test]
    fn rejects_a_png_header_claiming_huge_dimensions_before_allocating() {
        let mut bytes = png_header(100_000, 100_000);
        // The PNG decoder reads up to the first image data chunk before it reports dimensions.
        let idat = b"IDAT\x78\x9c\x63\x00\x00\x00\x01\x00\x01";
        bytes.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
        bytes.extend_from_slice(idat);
        bytes.extend_from_slice(&crc32(idat).to_be_bytes());
        let r = decode_image(&bytes, &limits());
        assert!(matches!(r, Err(EngineError::TooLarge(_))), "{r:?}");
        // Header alone: an error either way, and no allocation of 30 GB.
        assert!(decode_image(&png_header(100_000, 100_000), &limits()).is_err());
    }

    #[test]
    fn a_png_icc_profile_is_dropped_before_it_is_inflated() {
        let png = encode(ImageFormat::Png, &DynamicImage::ImageRgb8(gradient(20, 10)));
        // A profile chunk after IHDR; its content does not matter, since it is never inflated.
        let mut chunk = b"iCCP".to_vec();
        chunk.extend_from_slice(b"p\0\0\x78\x01junk that is not deflate");
        let mut with_icc = png[..33].to_vec();
        with_icc.extend_from_slice(&((chunk.len() - 4) as u32).to_be_bytes());
        with_icc.extend_from_slice(&chunk);
        with_icc.extend_from_slice(&crc32(&chunk).to_be_bytes());
        with_icc.extend_from_slice(&png[33..]);
        assert_eq!(without_png_icc_profile(&with_icc).as_deref(), Some(&png[..]));
        assert_eq!(without_png_icc_profile(&png), None);
        let rgb = decode_image(&with_icc, &limits()).expect("decodes without its profile");
        assert_eq!(rgb.dimensions(), (20, 10));
        // A chunk length past the end stops the walk, and the decoder reports the truncation.
        let mut cut = with_icc[..45].to_vec();
        cut[33..37].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(without_png_icc_profile(&cut).as_deref(), Some(&with_icc[..33]));
        assert!(decode_image(&cut, &limits()).is_err());
    }

    #[test]
    fn unknown_and_unaccepted_formats_are_unsupported() {
        assert!(matches!(decode_image(b"hello world, not an image", &limits()), Err(EngineError::UnsupportedImage(_))));
        assert!(matches!(decode_image(b"GIF89a\x01\x00\x01\x00", &limits()), Err(EngineError::UnsupportedImage(_))));
    }

    #[test]
    fn corrupt_and_truncated_data_is_invalid_not_a_panic() {
        assert!(matches!(decode_image(b"", &limits()), Err(EngineError::InvalidImage(_))));
        let img = DynamicImage::ImageRgb8(gradient(64, 64));
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp, ImageFormat::WebP] {
            let bytes = encode(format, &img);
            for cut in [4, 12, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
                let r = decode_image(&bytes[..cut], &limits());
                // A lossless WebP or a BMP cut right at the end may still hold every pixel it
                // needs; anything else must be an error value.
                match r {
                    Err(EngineError::InvalidImage(_) | EngineError::UnsupportedImage(_)) => {}
                    Ok(_) if cut == bytes.len() - 1 && format != ImageFormat::Jpeg => {}
                    other => panic!("{format:?} cut at {cut}: {other:?}"),
                }
            }
            let mut flipped = bytes.clone();
            for b in flipped.iter_mut().skip(20).step_by(7) {
                *b ^= 0x5a;
            }
            let _ = decode_image(&flipped, &limits());
        }
    }

    #[test]
    fn applies_exif_orientation() {
        // Stored sideways (rotated 90° counter-clockwise) with Orientation 6, which tells the
        // viewer to rotate 90° clockwise: decoding must give back the upright 40×30 image.
        let upright = gradient(40, 30);
        let stored = image::imageops::rotate270(&upright);
        let mut png = Vec::new();
        let mut encoder = image::codecs::png::PngEncoder::new(&mut png);
        encoder.set_exif_metadata(exif_orientation(6)).expect("png takes exif");
        encoder.write_image(stored.as_raw(), 30, 40, image::ExtendedColorType::Rgb8).expect("encode");
        let rgb = decode_image(&png, &limits()).expect("decode");
        assert_eq!(rgb.dimensions(), (40, 30));
        assert_eq!(rgb.get_pixel(5, 7), upright.get_pixel(5, 7));
    }

    /// A little-endian TIFF block with one IFD entry: Orientation.
    pub(crate) fn exif_orientation(value: u16) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(b"II*\0");
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

    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        out.extend_from_slice(&13u32.to_be_bytes());
        out.extend_from_slice(&ihdr);
        out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn jpeg_completeness_looks_after_the_last_scan() {
        assert!(jpeg_is_complete(b"\xFF\xD8\xFF\xDAscan\xFF\x00data\xFF\xD9"));
        assert!(jpeg_is_complete(b"\xFF\xD8\xFF\xDAscan\xFF\xD9trailing"));
        assert!(!jpeg_is_complete(b"\xFF\xD8\xFF\xDAscan\xFF\x00da"));
        // A thumbnail's EOI before the main scan does not count.
        assert!(!jpeg_is_complete(b"\xFF\xD8\xFF\xDAthumb\xFF\xD9\xFF\xDAmain"));
        assert!(!jpeg_is_complete(b"\xFF\xD8"));
    }

    #[test]
    fn check_pixels_rejects_empty_images() {
        assert!(matches!(check_pixels(0, 10, 100), Err(EngineError::InvalidImage(_))));
        assert!(check_pixels(10, 10, 100).is_ok());
        assert!(matches!(check_pixels(10, 11, 100), Err(EngineError::TooLarge(_))));
    }
}
