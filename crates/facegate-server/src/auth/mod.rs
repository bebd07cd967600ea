//! Request authentication. Each scheme resolves the caller to exactly one tenant, which is
//! put in the request's extensions for the handlers.

pub mod necid;
pub mod sigv4;
pub mod token;
