//! Request authentication. Each scheme resolves the caller to exactly one tenant, which is
//! put in the request's extensions for the handlers.

pub mod token;
