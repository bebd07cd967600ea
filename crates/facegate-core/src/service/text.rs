//! Names and times the service makes, and the checks on names a client sends.

use rand::distributions::Alphanumeric;
use rand::Rng;
use time::OffsetDateTime;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::{Error, Result};

/// RFC 3339 UTC with microseconds, as the reference documents' `created` values.
pub fn now_rfc3339() -> String {
    rfc3339_after(std::time::Duration::ZERO)
}

/// As [`now_rfc3339`], `after` from now.
pub fn rfc3339_after(after: std::time::Duration) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    let at = OffsetDateTime::now_utc().saturating_add(time::Duration::try_from(after).unwrap_or(time::Duration::MAX));
    at.format(&format).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Now, in milliseconds since the Unix epoch: how both stores' `*_unix_ms` columns count time
/// (sightings, credentials' expiry).
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `enroll/<stem>_<7 random letters>.<ext>`, from the client's file name, made safe for a path,
/// with the extension taken from the bytes rather than trusted from the name.
pub fn stored_image_name(file_name: &str, bytes: &[u8]) -> String {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or("");
    let stem = base.rsplit_once('.').map_or(base, |(stem, _)| stem);
    let mut safe: String =
        stem.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')).take(64).collect();
    if safe.is_empty() {
        safe.push_str("image");
    }
    let suffix: String = rand::thread_rng().sample_iter(&Alphanumeric).take(7).map(char::from).collect();
    format!("enroll/{safe}_{suffix}.{}", image_extension(bytes))
}

/// File extension for the image format the bytes start with.
pub fn image_extension(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => "jpg",
        [0x89, b'P', b'N', b'G', ..] => "png",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "webp",
        [b'B', b'M', ..] => "bmp",
        _ => "bin",
    }
}

/// A required name: not blank, at most `max_chars`, no control characters.
pub(crate) fn validate_name(what: &str, value: &str, max_chars: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::InvalidRequest(format!("{what} is required")));
    }
    if value.chars().count() > max_chars {
        return Err(Error::InvalidRequest(format!("{what} is longer than {max_chars} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(format!("{what} contains control characters")));
    }
    Ok(())
}

/// `value` in Unicode Normalization Form C: "é" sent as one code point and as "e" + U+0301 (as
/// some keyboards and file systems produce it) become the same text.
pub(crate) fn nfc(value: &str) -> String {
    value.nfc().collect()
}

/// Whether `c` shows nothing by itself, so that two names that differ only by it look the same
/// on a screen: general categories Cc (controls), Cf (format: zero-width spaces and joiners, bidi
/// embeddings, overrides and isolates, the byte order mark, tag characters), Zl and Zp (line and
/// paragraph separators), and every Default_Ignorable_Code_Point.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    ) || is_default_ignorable(c)
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt), as of Unicode 14.0, checked
/// code point by code point against Perl's `\p{Default_Ignorable_Code_Point}`; its reserved ranges
/// are in it already, so characters assigned there later are covered. Beside format characters,
/// which the general category finds too, it holds what a general category
/// does not reveal: the combining grapheme joiner (U+034F), the Hangul fillers (U+115F, U+1160,
/// U+3164, U+FFA0), the Khmer inherent vowels, the Mongolian and standard variation selectors
/// (U+180B..U+180F, U+FE00..U+FE0F, U+E0100..U+E01EF) and reserved ranges kept invisible.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// A name people tell apart by eye (a tag name), as it is stored and compared: in NFC, checked as
/// [`validate_name`] checks it, and without invisible characters, which would let two names look
/// the same and be different (`staff` and `staff` + U+200B) or one look like another.
pub(crate) fn visible_name(what: &str, value: &str, max_chars: usize) -> Result<String> {
    let value = nfc(value);
    validate_name(what, &value, max_chars)?;
    if let Some(c) = value.chars().find(|&c| is_invisible(c)) {
        return Err(Error::InvalidRequest(format!("{what} contains an invisible character (U+{:04X})", u32::from(c))));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_keep_the_stem_and_take_the_extension_from_the_bytes() {
        let name = stored_image_name("input/persons/will_smith/will_smith_001.jpg", &[0xFF, 0xD8, 0xFF, 0xE0]);
        assert!(name.starts_with("enroll/will_smith_001_"), "{name}");
        assert!(name.ends_with(".jpg"));
        assert_eq!(name.len(), "enroll/will_smith_001_Fkkx7eK.jpg".len());
        let hostile = stored_image_name("../../etc/pa ss\u{0}wd.png", b"\x89PNG\r\n");
        assert!(hostile.starts_with("enroll/passwd_") && hostile.ends_with(".png"), "{hostile}");
        assert!(stored_image_name("", b"nope").starts_with("enroll/image_"));
    }

    #[test]
    fn validation_refuses_bad_names() {
        assert!(validate_name("id", "", 10).is_err());
        assert!(validate_name("id", "a\u{7}b", 10).is_err());
        assert!(validate_name("id", &"x".repeat(11), 10).is_err());
        assert!(validate_name("id", "ok", 10).is_ok());
    }

    #[test]
    fn names_are_compared_in_nfc() {
        assert_eq!(nfc("e\u{301}te\u{301}"), "\u{e9}t\u{e9}");
        assert_eq!(visible_name("tag", "caf\u{65}\u{301}", 64).ok(), visible_name("tag", "caf\u{e9}", 64).ok());
        // Hangul jamo compose into one syllable.
        assert_eq!(nfc("\u{1100}\u{1161}"), "\u{AC00}");
    }

    #[test]
    fn invisible_characters_are_refused_in_visible_names() {
        let invisible = [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202E}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{034F}',
            '\u{115F}',
            '\u{1160}',
            '\u{3164}',
            '\u{FFA0}',
            '\u{FE00}',
            '\u{FE0F}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E0100}',
            '\u{E0FFF}',
            '\u{061C}',
            '\u{180E}',
            '\u{2028}',
            '\u{2029}',
            '\u{0085}',
            '\u{7}',
        ];
        for c in invisible {
            assert!(is_invisible(c), "U+{:04X}", u32::from(c));
            let err = visible_name("tag name", &format!("staff{c}"), 64).expect_err("refused");
            assert_eq!(err.code(), crate::error::Code::InvalidRequest);
            // Controls (Cc) are refused by `validate_name` first, as before.
            let named =
                if c.is_control() { "control characters".to_owned() } else { format!("U+{:04X}", u32::from(c)) };
            assert!(err.to_string().contains(&named), "{err}");
        }
    }

    #[test]
    fn letters_of_every_script_stay_allowed() {
        for name in
            ["staff", "Zoë", "müller", "東京", "직원", "сотрудник", "موظف", "קבוצה", "कर्मचारी", "a b", "v1.2-rc_3"]
        {
            assert_eq!(visible_name("tag name", name, 64).ok().as_deref(), Some(name), "{name}");
        }
        assert!(!is_invisible(' ') && !is_invisible('\u{A0}') && !is_invisible('\u{301}'));
    }
}
