//! Credential checks, independent of any dialect: AWS Signature V4, token parsing, the limit on
//! failed attempts per client address, and the replay guard for signed writes. Each dialect's
//! middleware (`miicloud::auth`, `necid::auth`) puts these together and renders [`AuthError`]
//! in its own wire format.

pub mod forwarded;
pub mod replay;
pub mod sigv4;
pub mod throttle;
pub mod token;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use facegate_core::telemetry::{AUTH_FAILURES, AUTH_THROTTLED};

use self::forwarded::TrustedProxies;
use self::throttle::AuthFailureThrottle;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Credentials missing, malformed or wrong; the message says which, without secrets.
    #[error("{0}")]
    Refused(String),
    #[error("too many failed authentication attempts from this address; retry later")]
    Throttled { retry_after: Duration },
    #[error("this signed request was already accepted once; sign a new one")]
    Replayed,
    /// Checking the credentials failed (the store did not answer); says nothing about the caller.
    #[error(transparent)]
    Core(#[from] facegate_core::Error),
}

/// Whether a request carries a credential of either dialect, right or wrong.
fn presents_credential(headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION) || headers.contains_key(API_KEY_HEADER)
}

/// NEC ID's credential header.
const API_KEY_HEADER: &str = "x-api-key";

/// Counts failed authentications per client and refuses clients that failed too often.
pub struct AuthGate {
    throttle: AuthFailureThrottle,
    proxies: TrustedProxies,
}

impl AuthGate {
    pub fn new(throttle: AuthFailureThrottle, proxies: TrustedProxies) -> Self {
        Self { throttle, proxies }
    }

    /// The address failures are counted against: the connection's, or the forwarded client's
    /// when the connection comes from a trusted proxy. None, and then nothing is counted or
    /// limited, when there is no socket (a router driven directly in tests) or when the request
    /// presents no credential of either dialect (no `Authorization`, no `x-api-key`): such a
    /// request guesses nothing, and any web page can make a browser send it, so counting it would
    /// let a page lock out the real clients behind its visitor's address.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        if !presents_credential(headers) {
            return None;
        }
        peer.map(|peer| self.proxies.client_key(peer.ip(), headers))
    }

    /// Refuses a client that has used up its failures, before its credentials are looked at.
    /// `dialect` labels the refusal in the metrics.
    pub fn admit(&self, client: Option<IpAddr>, dialect: &'static str) -> Result<(), AuthError> {
        match client.map(|ip| self.throttle.check(ip)) {
            Some(Err(retry_after)) => {
                metrics::counter!(AUTH_THROTTLED, "dialect" => dialect).increment(1);
                Err(AuthError::Throttled { retry_after })
            }
            _ => Ok(()),
        }
    }

    /// Counts `error` against `client` when it refused the caller's credentials; a store error
    /// says nothing about the caller.
    pub fn record(&self, client: Option<IpAddr>, error: &AuthError, dialect: &'static str) {
        if let AuthError::Refused(_) = error {
            metrics::counter!(AUTH_FAILURES, "dialect" => dialect).increment(1);
            if let Some(ip) = client {
                self.throttle.record_failure(ip);
            }
        }
    }
}
