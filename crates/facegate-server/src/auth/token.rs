//! miiCloud's `Authorization: Token <token>`.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::AppState;

/// The token from an `Authorization` header value: `Token <t>` (scheme case-insensitive).
/// `Bearer` is accepted too, as many HTTP clients only know that scheme.
pub fn parse_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(char::is_whitespace)?;
    let token = token.trim();
    let known = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    (known && !token.is_empty() && token.len() <= 256).then_some(token)
}

/// Middleware: resolves the token to a tenant or answers 401.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, crate::api::miicloud::MiiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthenticated("missing Authorization header; send 'Authorization: Token <token>'"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(parse_token)
        .ok_or(ApiError::Unauthenticated("malformed Authorization header; send 'Authorization: Token <token>'"))?;
    let tenant = state.service.authenticate_token(token).await?.ok_or(ApiError::Unauthenticated("invalid token"))?;
    tracing::Span::current().record("tenant", tenant.name.as_str());
    req.extensions_mut().insert(tenant);
    Ok(next.run(req).await)
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
