//! Request authentication. Each scheme resolves the caller to exactly one tenant, which is
//! put in the request's extensions for the handlers.

pub mod necid;
pub mod sigv4;
pub mod throttle;
pub mod token;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};

use crate::error::ApiError;
use crate::AppState;

/// The address the connection came from; absent when the router is driven without a socket.
fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
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
