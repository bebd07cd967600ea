//! Bearer-style tokens: `Authorization: Token <token>`.

/// Longest token accepted; facegate's are 40 characters, and anything far longer is not one.
const MAX_TOKEN_CHARS: usize = 256;

/// The token from an `Authorization` header value: `Token <t>` (scheme case-insensitive).
/// `Bearer` is accepted too, as many HTTP clients only know that scheme.
pub fn parse_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(char::is_whitespace)?;
    let token = token.trim();
    let known = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    (known && !token.is_empty() && token.len() <= MAX_TOKEN_CHARS).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::parse_token;

    #[test]
    fn parses_token_headers() {
        assert_eq!(parse_token("Token abc"), Some("abc"));
        assert_eq!(parse_token("token   abc "), Some("abc"));
        assert_eq!(parse_token("Bearer abc"), Some("abc"));
        assert_eq!(parse_token("Basic abc"), None);
        assert_eq!(parse_token("Token"), None);
        assert_eq!(parse_token("Token "), None);
    }
}
