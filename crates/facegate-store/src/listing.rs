//! What both backends' paged listings share: the range of ids a prefix covers.

/// The smallest string above every string that starts with `prefix`, in byte order (UTF-8 byte
/// order is code-point order): a prefix search becomes the range `prefix <= id < bound`, which
/// the `(tenant_id, customer_person_id)` index answers, where `LIKE` would scan. `None` when no
/// string is above them all (an empty prefix, or one of only U+10FFFF).
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value, stepping over the surrogate gap.
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn the_bound_is_just_above_every_id_with_the_prefix() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("ab"), Some("ac".into()));
        assert_eq!(prefix_upper_bound("a\u{D7FF}"), Some("a\u{E000}".into()));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        let bound = prefix_upper_bound("emp-0").expect("bound");
        for id in ["emp-0", "emp-0zzz", "emp-0\u{10FFFF}x"] {
            assert!(id < bound.as_str(), "{id}");
        }
        assert!("emp-1" >= bound.as_str());
    }
}
