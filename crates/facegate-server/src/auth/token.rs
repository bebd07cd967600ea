//! miiCloud's `Authorization: Token <token>`.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use facegate_core::Tenant;

use crate::auth::{peer_ip, record_if_refused, throttle_check};
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

/// Middleware: resolves the token to a tenant or answers 401 (429 while the caller's address
/// has failed too often).
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, crate::api::miicloud::MiiError> {
    let peer = peer_ip(&state, &req);
    throttle_check(&state, peer)?;
    let token = token_of(req.headers()).map(str::to_owned);
    let tenant = match tenant_of(&state, token).await {
        Ok(tenant) => tenant,
        Err(e) => {
            record_if_refused(&state, peer, &e);
            return Err(e.into());
        }
    };
    tracing::Span::current().record("tenant", tenant.name.as_str());
    req.extensions_mut().insert(tenant);
    Ok(next.run(req).await)
}

fn token_of(headers: &HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthenticated("missing Authorization header; send 'Authorization: Token <token>'"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(parse_token)
        .ok_or(ApiError::Unauthenticated("malformed Authorization header; send 'Authorization: Token <token>'"))?;
    Ok(token)
}

async fn tenant_of(state: &AppState, token: Result<String, ApiError>) -> Result<Tenant, ApiError> {
    state.service.authenticate_token(&token?).await?.ok_or(ApiError::Unauthenticated("invalid token"))
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
