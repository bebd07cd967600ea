//! NEC ID authentication: `x-api-key` names the tenant, and an AWS Signature V4 made with one of
//! that tenant's access keys must cover the request, body included. Writes also pass the replay
//! guard, which the router puts on the routes that change the gallery.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use facegate_core::Error;
use time::OffsetDateTime;

use crate::auth::replay::ReplayGuard;
use crate::auth::sigv4::{authorization_from_headers, verify, SigV4Error, SignedRequest};
use crate::auth::AuthError;
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::necid::error::NecError;
use crate::state::AppState;

/// The signature of a verified request, for the replay guard.
#[derive(Clone)]
pub struct Signature(String);

pub async fn require_signed_request(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, NecError> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let client = state.auth_gate.client(peer, req.headers());
    state.auth_gate.admit(client, Dialect::NecId.label())?;
    match verified(&state, req).await {
        Ok(req) => Ok(next.run(req).await),
        Err(NecError::Api(ApiError::Auth(e))) => {
            state.auth_gate.record(client, &e, Dialect::NecId.label());
            Err(e.into())
        }
        Err(e) => Err(e),
    }
}

/// A write is done once per signature; reads may be repeated at will.
pub async fn refuse_replays(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, NecError> {
    if req.method().is_safe() {
        return Ok(next.run(req).await);
    }
    let Some(Signature(signature)) = req.extensions().get::<Signature>().cloned() else {
        return Err(Error::Internal("refuse_replays runs after require_signed_request".into()).into());
    };
    let digest = ReplayGuard::digest(&signature);
    // A store that cannot record the signature cannot promise the write happens once: the
    // request is refused with the store's error (503 for a store that is down or busy).
    if !state.service.admit_signature(digest, state.replay_guard.keep()).await? {
        tracing::warn!(method = %req.method(), path = ?req.uri().path(), "refused a replayed signed request");
        return Err(AuthError::Replayed.into());
    }
    let response = next.run(req).await;
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        // Refused before anything was done: the client's retry of this very request is no replay.
        if let Err(e) = state.service.forget_signature(digest).await {
            tracing::warn!(error = %e, "could not forget the signature of a write refused with 503; its retry will be refused as a replay");
        }
    }
    Ok(response)
}

/// The request with its tenant and signature attached, once its API key and signature check out.
async fn verified(state: &AppState, req: Request) -> Result<Request, NecError> {
    let api_key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(|| AuthError::Refused(FORBIDDEN.into()))?;
    let tenant = state
        .service
        .authenticate_api_key(api_key)
        .await
        .map_err(AuthError::Core)?
        .ok_or_else(|| AuthError::Refused(FORBIDDEN.into()))?;
    let auth = authorization_from_headers(req.headers()).map_err(refused)?;
    let secret = state
        .service
        .access_key_secret(&tenant, &auth.access_key_id)
        .await
        .map_err(AuthError::Core)?
        .ok_or_else(|| refused(SigV4Error::UnknownAccessKey))?;

    // The signature covers the body, so it is read here, within the body limit, and handed on.
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, state.settings.body_limit_bytes)
        .await
        .map_err(|_| Error::TooLarge("request body is larger than the configured limit".into()))?;
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &bytes,
    };
    if let Err(e) = verify(&signed, &auth, &secret, OffsetDateTime::now_utc(), &state.settings.sigv4()) {
        tracing::info!(tenant = %tenant.name, access_key_id = ?auth.access_key_id, reason = ?e.to_string(), "signature refused");
        return Err(refused(e));
    }
    tracing::Span::current().record("tenant", tenant.name.as_str());
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(tenant);
    req.extensions_mut().insert(Signature(auth.signature));
    Ok(req)
}

/// NEC ID's body for a missing or unknown API key.
const FORBIDDEN: &str = "Forbidden";

fn refused(e: SigV4Error) -> NecError {
    AuthError::Refused(e.to_string()).into()
}
