//! Refuses a signed NEC ID write that was already accepted once.
//!
//! A SigV4 signature stays valid for the whole clock-skew window, so a captured `POST
//! /v1.1/subjects` could otherwise be sent again and create a second subject. Every accepted
//! mutating request's signature is recorded in the store (through the core's
//! `FaceService::admit_signature`) until no server clock could accept it any more: the request's
//! time is within ±`max_skew` of ours, so twice that from now. The store's unique key makes the
//! record hold across every node of a shared database and across restarts; a memory of this
//! process alone would let the same request through on a second node, or after a restart.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// How long signatures are remembered, and under which key.
pub struct ReplayGuard {
    /// Twice the allowed clock skew.
    keep: Duration,
}

impl ReplayGuard {
    pub fn new(max_skew: Duration) -> Self {
        Self { keep: max_skew * 2 }
    }

    /// How long an accepted signature is refused again.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// The key a signature is recorded under: its SHA-256, so that the record has a fixed size
    /// whatever a client sends, and holds nothing that could sign anything.
    pub fn digest(signature: &str) -> [u8; 32] {
        Sha256::digest(signature.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_remembered_for_twice_the_skew_under_a_fixed_size_key() {
        let guard = ReplayGuard::new(Duration::from_secs(300));
        assert_eq!(guard.keep(), Duration::from_secs(600));
        assert_eq!(ReplayGuard::digest("aa"), ReplayGuard::digest("aa"));
        assert_ne!(ReplayGuard::digest("aa"), ReplayGuard::digest("ab"));
    }
}
