//! Request authentication. Each scheme resolves the caller to exactly one tenant, which is
//! put in the request's extensions for the handlers.

pub mod forwarded;
pub mod necid;
pub mod replay;
pub mod sigv4;
pub mod throttle;
pub mod token;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};

use crate::error::ApiError;
use crate::AppState;

/// The address failures are counted against: the connection's, or the forwarded client's when
/// the connection comes from a trusted proxy. Absent when the router is driven without a socket.
fn peer_ip(state: &AppState, req: &Request) -> Option<IpAddr> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some(state.trusted_proxies.client_key(peer, req.headers()))
}

fn throttle_check(state: &AppState, peer: Option<IpAddr>) -> Result<(), ApiError> {
    match peer.map(|ip| state.auth_throttle.check(ip)) {
        Some(Err(retry_after)) => Err(ApiError::TooManyAuthFailures { retry_after }),
        _ => Ok(()),
    }
}

/// Counts `e` against `peer` when it is a refusal of the caller's credentials; a store error
/// or an oversized body says nothing about the caller.
fn record_if_refused(state: &AppState, peer: Option<IpAddr>, e: &ApiError) {
    if let (Some(ip), ApiError::Unauthenticated(_) | ApiError::Forbidden(_)) = (peer, e) {
        state.auth_throttle.record_failure(ip);
    }
}
