//! `facegate_engine::decode_image` on arbitrary bytes: every input must give an image within
//! the limits or an error value, never a panic, an abort or an allocation past the RSS limit.
#![no_main]

use facegate_engine::{decode_image, DecodeLimits};
use libfuzzer_sys::fuzz_target;

/// Below the server's 40 MP so that each run stays fast; the checks before decoding do not
/// depend on the number.
const LIMITS: DecodeLimits = DecodeLimits { max_input_bytes: 1 << 20, max_pixels: 4_000_000 };

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_image(data, &LIMITS) {
        let (w, h) = img.dimensions();
        assert!(w > 0 && h > 0, "empty image decoded: {w}×{h}");
        assert!(u64::from(w) * u64::from(h) <= LIMITS.max_pixels, "{w}×{h} is over the pixel limit");
        assert_eq!(img.as_raw().len(), w as usize * h as usize * 3);
    }
});
