//! Rate limit on failed authentication, per peer address.
//!
//! Each address has a bucket of `burst` failures that refills by one every `refill`. While the
//! bucket is empty, requests from that address get 429 before their credentials are looked at,
//! so guessing tokens, API keys or signatures costs an attacker time instead of costing the
//! server database lookups. Successful requests neither spend nor refill the bucket: a caller
//! with one valid credential cannot use it to go on guessing another tenant's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Addresses remembered at most. Beyond it, addresses whose bucket has refilled are forgotten
/// first, then the longest-quiet ones, so a flood of spoofed or IPv6 sources cannot grow the map.
const MAX_TRACKED_PEERS: usize = 65_536;

pub struct AuthFailureThrottle {
    burst: u32,
    refill: Duration,
    peers: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Failures this address may still have before it is refused.
    allowance: f64,
    updated: Instant,
}

impl AuthFailureThrottle {
    /// `burst` 0 turns the limit off.
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self { burst, refill: refill.max(Duration::from_millis(1)), peers: Mutex::new(HashMap::new()) }
    }

    fn enabled(&self) -> bool {
        self.burst > 0
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(bucket.updated).as_secs_f64() / self.refill.as_secs_f64();
        (bucket.allowance + earned).min(f64::from(self.burst))
    }

    /// `Err(retry_after)` while `peer` has used up its failures.
    pub fn check(&self, peer: IpAddr) -> Result<(), Duration> {
        self.check_at(peer, Instant::now())
    }

    /// Counts one failed authentication from `peer`.
    pub fn record_failure(&self, peer: IpAddr) {
        self.record_failure_at(peer, Instant::now());
    }

    fn check_at(&self, peer: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let peers = self.peers.lock();
        let Some(&bucket) = peers.get(&peer) else { return Ok(()) };
        let allowance = self.refilled(bucket, now);
        if allowance >= 1.0 {
            Ok(())
        } else {
            Err(self.refill.mul_f64(1.0 - allowance))
        }
    }

    fn record_failure_at(&self, peer: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut peers = self.peers.lock();
        if peers.len() >= MAX_TRACKED_PEERS && !peers.contains_key(&peer) {
            self.forget_some(&mut peers, now);
        }
        let full = Bucket { allowance: f64::from(self.burst), updated: now };
        let bucket = peers.entry(peer).or_insert(full);
        let allowance = self.refilled(*bucket, now);
        *bucket = Bucket { allowance: (allowance - 1.0).max(0.0), updated: now };
        if bucket.allowance < 1.0 {
            tracing::warn!(%peer, "authentication failures from this address are now refused with 429");
        }
    }

    fn forget_some(&self, peers: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let burst = f64::from(self.burst);
        peers.retain(|_, b| self.refilled(*b, now) < burst);
        if peers.len() >= MAX_TRACKED_PEERS {
            let mut by_age: Vec<(Instant, IpAddr)> = peers.iter().map(|(ip, b)| (b.updated, *ip)).collect();
            by_age.sort_unstable();
            for (_, ip) in by_age.iter().take(MAX_TRACKED_PEERS / 4) {
                peers.remove(ip);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.peers.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn refuses_after_the_burst_and_recovers_with_time() {
        let t = AuthFailureThrottle::new(3, Duration::from_secs(2));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.check_at(ip(1), start).is_ok());
            t.record_failure_at(ip(1), start);
        }
        let wait = t.check_at(ip(1), start).expect_err("refused after 3 failures");
        assert_eq!(wait, Duration::from_secs(2));
        assert!(t.check_at(ip(2), start).is_ok(), "other addresses are unaffected");
        assert_eq!(t.check_at(ip(1), start + Duration::from_secs(1)), Err(Duration::from_secs(1)));
        assert!(t.check_at(ip(1), start + Duration::from_secs(2)).is_ok(), "one more try after one refill");
        t.record_failure_at(ip(1), start + Duration::from_secs(2));
        assert!(t.check_at(ip(1), start + Duration::from_secs(2)).is_err());
    }

    #[test]
    fn zero_burst_turns_it_off() {
        let t = AuthFailureThrottle::new(0, Duration::from_secs(1));
        let now = Instant::now();
        for _ in 0..100 {
            t.record_failure_at(ip(1), now);
        }
        assert!(t.check_at(ip(1), now).is_ok());
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn the_map_stays_bounded() {
        let t = AuthFailureThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(MAX_TRACKED_PEERS as u32 + 10) {
            t.record_failure_at(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.tracked() <= MAX_TRACKED_PEERS);
    }
}
