//! Names and times the service makes, and the checks on names a client sends.

use rand::distributions::Alphanumeric;
use rand::Rng;
use time::OffsetDateTime;

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
}
