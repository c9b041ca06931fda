//! How long to wait before a retry: exponential backoff with full jitter,
//! and the server's `Retry-After`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;

use crate::balance::rng::SeededRng;

/// Exponential backoff with full jitter: before retry `n` (1 for the first
/// retry) wait a random time between zero and `min(cap, base * 2^(n-1))`.
///
/// Full jitter spreads the retries of many callers that failed together
/// over the whole window instead of sending them back in waves. Defaults:
/// base 25 ms, cap 1 s.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::retry::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(25), Duration::from_secs(1));
/// assert_eq!(backoff.ceiling(1), Duration::from_millis(25));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(30), Duration::from_secs(1));
/// assert!(backoff.delay(3) <= Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            cap: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// Backoff from `base`, doubling per retry up to `cap` (a cap below the
    /// base is raised to it).
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
        }
    }

    /// No wait at all between attempts.
    pub fn none() -> Self {
        Self::new(Duration::ZERO, Duration::ZERO)
    }

    /// The longest wait before retry `retry` (1 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// A random wait before retry `retry`, from zero to its
    /// [`ceiling`](Self::ceiling).
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_from(retry, None)
    }

    /// [`delay`](Self::delay), drawn from `seeded` when given.
    pub(crate) fn delay_from(&self, retry: u32, seeded: Option<&SeededRng>) -> Duration {
        let ceiling = crate::time::saturating_nanos(self.ceiling(retry));
        if ceiling == 0 {
            return Duration::ZERO;
        }
        let draw = match seeded {
            Some(rng) => rng.next_u64(),
            None => rand::random::<u64>(),
        };
        // Uniform over 0..=ceiling: the draw scaled, without a division.
        let nanos = (u128::from(draw) * (u128::from(ceiling) + 1)) >> 64;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(ceiling))
    }
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP
/// date (in the past: no wait). `None` without a header that parses.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_ceiling() {
        let backoff = Backoff::default();
        for retry in 1..10 {
            for _ in 0..100 {
                assert!(backoff.delay(retry) <= backoff.ceiling(retry));
            }
        }
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1));
        assert_eq!(Backoff::none().delay(5), Duration::ZERO);
        let huge = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(huge.ceiling(40), Duration::MAX);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, SystemTime::now()), None);
        headers.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(
            retry_after(&headers, SystemTime::now()),
            Some(Duration::from_secs(3))
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:05 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(5)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:27:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers, now), None);
    }
}
