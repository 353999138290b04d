//! The checks a handshake passes before it is upgraded, cheapest first, so a flood costs the
//! flooder and not the class: the source address's rate (local, no Redis), the token, this
//! server's readiness and connection cap, and — in Redis, so reconnecting elsewhere resets
//! nothing — the user's handshake budget and whether the school removed them from the class.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::Rate;
use crate::ratelimit::TokenBucket;

/// Most addresses tracked at once; when full, addresses whose bucket refilled are forgotten
/// (they would start full anyway), so a spoofed-address flood cannot grow memory.
const MAX_ADDRESSES: usize = 65_536;

/// A token bucket per source address.
#[derive(Debug)]
pub struct AddressLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl AddressLimiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one handshake for `ip`; false when it is over its rate.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&ip) {
            buckets.retain(|_, bucket| !bucket.is_full(now));
            if buckets.len() >= MAX_ADDRESSES {
                // Every tracked address is mid-burst: refuse newcomers rather than grow.
                return false;
            }
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(self.rate.per_second, self.rate.burst, now))
            .try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_address_is_limited_and_another_is_not() {
        let limiter = AddressLimiter::new(Rate {
            per_second: 10.0,
            burst: 5,
        });
        let now = Instant::now();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!((0..20).filter(|_| limiter.allow(a, now)).count(), 5);
        assert!(limiter.allow(b, now));
        assert!(limiter.allow(a, now + Duration::from_millis(150)));
    }
}
