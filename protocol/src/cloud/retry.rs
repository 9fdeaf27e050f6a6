//! When to try again: exponential backoff with jitter, and the server's `Retry-After`.
//!
//! Pure: the caller passes the random draw and the current time, so the rules are testable.

use std::time::Duration;

/// The longest wait a `Retry-After` can impose.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

/// Reconnect backoff: 1 s, doubling, capped at 60 s, each wait ±20 %.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    /// Backoff from `base`, doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The wait before the next attempt; `unit` is a random draw in `[0, 1)` that places it in
    /// the ±20 % jitter band.
    pub fn next_wait(&mut self, unit: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        let nominal = self.base.saturating_mul(factor).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
        nominal.mul_f64(jitter)
    }

    /// Back to the first wait (after a healthy connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// The wait a `Retry-After` value asks for: delay-seconds or an HTTP date (relative to `now`,
/// Unix seconds), capped at [`RETRY_AFTER_CAP`]. `None` when the value is neither.
pub fn parse_retry_after(value: &str, now_unix_s: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(RETRY_AFTER_CAP));
    }
    let when = jiff::fmt::rfc2822::parse(value)
        .ok()?
        .timestamp()
        .as_second();
    let seconds = u64::try_from(when.saturating_sub(now_unix_s)).unwrap_or(0);
    Some(Duration::from_secs(seconds).min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_within_the_jitter_band_and_resets() {
        let mut backoff = Backoff::default();
        let middle: Vec<u64> = (0..9).map(|_| backoff.next_wait(0.5).as_secs()).collect();
        assert_eq!(middle, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.next_wait(0.0), Duration::from_millis(800));
        assert_eq!(backoff.next_wait(1.0), Duration::from_millis(2400));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("86400", 0), Some(RETRY_AFTER_CAP));
        // 1994-11-06T08:49:37Z is 784111777.
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(
            parse_retry_after(date, 784_111_777 - 12),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_retry_after(date, 784_111_777 + 5),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
