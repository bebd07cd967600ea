//! miiCloud's `Authorization: Token <token>` middleware.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use facegate_core::Tenant;

use crate::auth::token::parse_token;
use crate::auth::AuthError;
use crate::dialect::Dialect;
use crate::miicloud::error::MiiError;
use crate::state::AppState;

/// Resolves the token to a tenant or answers 401 (429 while the caller's address has failed
/// too often).
pub async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Result<Response, MiiError> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let client = state.auth_gate.client(peer, req.headers());
    state.auth_gate.admit(client, Dialect::MiiCloud.label())?;
    let tenant = match tenant_of(&state, req.headers()).await {
        Ok(tenant) => tenant,
        Err(e) => {
            state.auth_gate.record(client, &e, Dialect::MiiCloud.label());
            return Err(e.into());
        }
    };
    tracing::Span::current().record("tenant", tenant.name.as_str());
    req.extensions_mut().insert(tenant);
    Ok(next.run(req).await)
}

async fn tenant_of(state: &AppState, headers: &HeaderMap) -> Result<Tenant, AuthError> {
    let refused = |m: &str| AuthError::Refused(m.to_owned());
    let header = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| refused("missing Authorization header; send 'Authorization: Token <token>'"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(parse_token)
        .ok_or_else(|| refused("malformed Authorization header; send 'Authorization: Token <token>'"))?;
    state.service.authenticate_token(token).await?.ok_or_else(|| refused("invalid token"))
}
