//! The store's clock, as both backends' schemas count time.

/// Now, as the schemas' `*_unix_ms` columns count (credentials' expiry, sightings' times), on
/// both backends.
pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
