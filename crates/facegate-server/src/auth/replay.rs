//! Refuses a signed NEC ID write that was already accepted once.
//!
//! A SigV4 signature stays valid for the whole clock-skew window, so a captured `POST
//! /v1.1/subjects` could otherwise be sent again and create a second subject. Every accepted
//! mutating request's signature is remembered until no server clock could accept it any more
//! (the request's time is within ±`max_skew` of ours, so twice that from now), and a repeat is
//! refused with 403.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Signatures remembered at most. At 200,000 per 10-minute window a server would have to accept
/// 330 writes a second, several times what its inference pool can do; past it, writes get 503
/// rather than a replay going unnoticed.
const MAX_REMEMBERED: usize = 200_000;

pub struct ReplayGuard {
    /// How long a signature is remembered: twice the allowed clock skew.
    keep: Duration,
    /// Signature digest → when it may be forgotten.
    seen: Mutex<HashMap<[u8; 32], Instant>>,
}

/// Why a signed request may not go ahead.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Replayed,
    /// The table is full of signatures still inside their window.
    Full,
}

impl ReplayGuard {
    pub fn new(max_skew: Duration) -> Self {
        Self { keep: max_skew * 2, seen: Mutex::new(HashMap::new()) }
    }

    /// Records `signature` as used; `Err(Replayed)` if it already was.
    pub fn admit(&self, signature: &str) -> Result<(), Refusal> {
        self.admit_at(signature, Instant::now())
    }

    /// Forgets `signature`, for a request refused before it did anything (503), so that the
    /// client's retry of the very same request goes through.
    pub fn forget(&self, signature: &str) {
        self.seen.lock().remove(&digest(signature));
    }

    fn admit_at(&self, signature: &str, now: Instant) -> Result<(), Refusal> {
        let key = digest(signature);
        let mut seen = self.seen.lock();
        if let Some(&until) = seen.get(&key) {
            if until > now {
                return Err(Refusal::Replayed);
            }
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, until| *until > now);
            if seen.len() >= MAX_REMEMBERED {
                return Err(Refusal::Full);
            }
        }
        seen.insert(key, now + self.keep);
        Ok(())
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.seen.lock().len()
    }
}

fn digest(signature: &str) -> [u8; 32] {
    Sha256::digest(signature.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_within_its_window() {
        let guard = ReplayGuard::new(Duration::from_secs(300));
        let now = Instant::now();
        assert_eq!(guard.admit_at("aa", now), Ok(()));
        assert_eq!(guard.admit_at("aa", now + Duration::from_secs(599)), Err(Refusal::Replayed));
        assert_eq!(guard.admit_at("bb", now), Ok(()), "another signature");
        // Past twice the skew no server clock accepts the request any more.
        assert_eq!(guard.admit_at("aa", now + Duration::from_secs(601)), Ok(()));
        guard.forget("bb");
        assert_eq!(guard.admit_at("bb", now), Ok(()), "forgotten after a 503");
    }

    #[test]
    fn the_table_stays_bounded() {
        let guard = ReplayGuard::new(Duration::from_secs(1));
        let start = Instant::now();
        for i in 0..MAX_REMEMBERED {
            guard.admit_at(&i.to_string(), start).expect("room");
        }
        assert_eq!(guard.admit_at("one more", start), Err(Refusal::Full));
        // Once the first ones are out of their window, they make room.
        assert_eq!(guard.admit_at("one more", start + Duration::from_secs(3)), Ok(()));
        assert_eq!(guard.remembered(), 1);
    }
}
