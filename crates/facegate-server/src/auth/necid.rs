//! NEC ID authentication: `x-api-key` names the tenant, and an AWS Signature V4 made with one of
//! that tenant's access keys must cover the request, body included.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use facegate_core::Error;
use time::OffsetDateTime;

use crate::api::necid::NecError;
use crate::auth::replay::Refusal;
use crate::auth::sigv4::{authorization_from_headers, verify, SigV4Error, SignedRequest};
use crate::auth::{peer_ip, record_if_refused, throttle_check};
use crate::error::ApiError;
use crate::AppState;

/// The body NEC ID sends for a missing or unknown API key.
const FORBIDDEN: &str = "Forbidden";

pub async fn require_signed_request(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, NecError> {
    let peer = peer_ip(&state, &req);
    throttle_check(&state, peer)?;
    let (req, signature) = match verified(&state, req).await {
        Ok(verified) => verified,
        Err(e) => {
            record_if_refused(&state, peer, &e.0);
            return Err(e);
        }
    };
    // Reads may be repeated at will; a write is done once per signature.
    let writes = changes_state(req.method(), req.uri().path());
    if writes {
        match state.replay_guard.admit(&signature) {
            Ok(()) => {}
            Err(Refusal::Replayed) => {
                tracing::warn!(method = %req.method(), path = ?req.uri().path(), "refused a replayed signed request");
                return Err(ApiError::Replayed.into());
            }
            Err(Refusal::Full) => return Err(Error::Overloaded.into()),
        }
    }
    let response = next.run(req).await;
    if writes && response.status() == StatusCode::SERVICE_UNAVAILABLE {
        // Refused before anything was done: the client's retry of this very request is no replay.
        state.replay_guard.forget(&signature);
    }
    Ok(response)
}

/// The request with its tenant attached, and its signature, once its API key and signature
/// check out.
async fn verified(state: &AppState, req: Request) -> Result<(Request, String), NecError> {
    let api_key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(|| ApiError::Forbidden(FORBIDDEN.into()))?;
    let tenant =
        state.service.authenticate_api_key(api_key).await?.ok_or_else(|| ApiError::Forbidden(FORBIDDEN.into()))?;
    let auth = authorization_from_headers(req.headers()).map_err(forbidden)?;
    let secret = state
        .service
        .access_key_secret(&tenant, &auth.access_key_id)
        .await?
        .ok_or_else(|| forbidden(SigV4Error::UnknownAccessKey))?;

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
        return Err(forbidden(e));
    }
    tracing::Span::current().record("tenant", tenant.name.as_str());
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(tenant);
    Ok((req, auth.signature))
}

/// Whether a request changes the gallery. Face search, verify and extract are POSTs that only
/// read, like a GET: repeating one changes nothing.
fn changes_state(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !path.starts_with("/v1.1/face/")
}

fn forbidden(e: SigV4Error) -> NecError {
    NecError(ApiError::Forbidden(e.to_string()))
}
