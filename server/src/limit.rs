//! A per-client request limit for the token call: the 429 side of load shedding (503 is the
//! database's side).
//!
//! A fixed one-minute window per key, in memory: each replica limits on its own, so behind a
//! load balancer the effective limit is at most `replicas × limit`. That is enough to stop a
//! runtime stuck in a retry loop without any shared state; an exact fleet-wide limit would need
//! the database or Redis, for a token call that is cheap already.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Windows kept before old ones are dropped, so a flood of distinct keys cannot grow the map
/// without bound.
const PRUNE_ABOVE: usize = 10_000;

/// Counts requests per key in one-minute windows.
#[derive(Debug)]
pub struct RateLimiter {
    per_window: u32,
    window: Duration,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    /// At most `per_minute` requests per key and minute; 0 turns the limit off.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            per_window: per_minute,
            window: Duration::from_secs(60),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `key` at `now`: `Err(seconds)` to wait when over the limit.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.per_window == 0 {
            return Ok(());
        }
        // A panic elsewhere while holding the lock leaves consistent counters behind.
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() > PRUNE_ABOVE {
            let window = self.window;
            windows.retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        let (start, count) = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_window {
            let left = self
                .window
                .saturating_sub(now.saturating_duration_since(*start));
            // Round up: retrying a fraction of a second early would be refused again.
            return Err(left.as_secs() + u64::from(left.subsec_nanos() > 0));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_limit_waits_for_the_next_window_and_others_are_not_affected() {
        let limiter = RateLimiter::per_minute(2);
        let start = Instant::now();
        assert_eq!(limiter.check("a", start), Ok(()));
        assert_eq!(limiter.check("a", start + Duration::from_secs(1)), Ok(()));
        assert_eq!(limiter.check("a", start + Duration::from_secs(20)), Err(40));
        assert_eq!(limiter.check("b", start + Duration::from_secs(20)), Ok(()));
        assert_eq!(
            limiter.check("a", start + Duration::from_millis(59_500)),
            Err(1)
        );
        assert_eq!(limiter.check("a", start + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = RateLimiter::per_minute(0);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(limiter.check("a", now), Ok(()));
        }
    }
}
