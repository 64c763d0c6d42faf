//! When things happen: the refresh time of a token, the delay before a retry, the margin a
//! served token must have, and how long a token rests unused before a refresh replaces it. Pure functions of their inputs (randomness is passed in as a number
//! in `0.0..1.0`), so that the rules are testable exactly.

use std::time::{Duration, SystemTime};

/// The longest a server's `Retry-After` can hold back a retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// When to refresh a token that lives from `obtained` to `expires`.
///
/// The refresh happens `margin` before expiry, but never later than half-way through the
/// token's life, so short-lived tokens are refreshed while they still have half their time
/// left. Up to a fifth of the margin is taken off at random (`jitter`), so that profiles and
/// daemons sharing a server do not refresh in lockstep; jitter only ever moves a refresh
/// *earlier*.
pub(crate) fn refresh_at(obtained: SystemTime, expires: SystemTime, margin: Duration, jitter: f64) -> SystemTime {
    let lifetime = expires.duration_since(obtained).unwrap_or_default();
    let margin = margin.min(lifetime / 2);
    let spread = margin.mul_f64(0.2 * jitter.clamp(0.0, 1.0));
    expires - margin - spread
}

/// How long to wait before retry number `attempt` (1 for the first retry) after a transient
/// failure: exponential backoff with full jitter between `min` and an exponentially growing cap
/// that stops at `max`, but never sooner than the server's `Retry-After`.
pub(crate) fn backoff(
    attempt: u32,
    min: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let cap = min.saturating_mul(1 << exponent).min(max).max(min);
    let delay = min + (cap - min).mul_f64(jitter.clamp(0.0, 1.0));
    match retry_after {
        Some(asked) => delay.max(asked.min(MAX_RETRY_AFTER)),
        None => delay,
    }
}

/// The least a token must have left to be served when the client did not say: the profile's
/// `min_valid`, capped at a quarter of the token's lifetime so that short-lived tokens are
/// still served for most of their life.
pub(crate) fn default_min_valid(min_valid: Duration, lifetime: Duration) -> Duration {
    min_valid.min(lifetime / 4)
}

/// How long a token must not have been handed out before a refresh replaces it: the profile's
/// `quiet_window`, capped at an eighth of the token's lifetime.
///
/// The cap is what lets short-lived tokens keep working. For them the refresh is due half-way
/// through the token's life and the default serving margin is a quarter of it, so a program
/// that holds a token for longer than a quarter of its life risks its expiry anyway; an eighth
/// covers holds of up to half that, while the old token, should the refresh fail, still has more
/// than the serving margin left to be served during the retries. A 4-second token gets a
/// half-second window; from 16 seconds up, the default two seconds apply in full.
pub(crate) fn quiet_window(window: Duration, lifetime: Duration) -> Duration {
    window.min(lifetime / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_long_token_is_refreshed_one_margin_before_expiry() {
        let at = refresh_at(T0, T0 + secs(3600), secs(300), 0.0);
        assert_eq!(at, T0 + secs(3300));
    }

    #[test]
    fn jitter_only_moves_the_refresh_earlier_by_at_most_a_fifth_of_the_margin() {
        let earliest = refresh_at(T0, T0 + secs(3600), secs(300), 1.0);
        assert_eq!(earliest, T0 + secs(3240));
        for j in [0.1, 0.5, 0.9] {
            let at = refresh_at(T0, T0 + secs(3600), secs(300), j);
            assert!(at >= earliest && at <= T0 + secs(3300));
        }
    }

    #[test]
    fn a_short_token_is_refreshed_no_later_than_half_its_life() {
        assert_eq!(refresh_at(T0, T0 + secs(4), secs(300), 0.0), T0 + secs(2));
        assert!(refresh_at(T0, T0 + secs(4), secs(300), 1.0) < T0 + secs(2));
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let (min, max) = (secs(1), secs(300));
        assert_eq!(backoff(1, min, max, None, 1.0), secs(1));
        assert_eq!(backoff(2, min, max, None, 1.0), secs(2));
        assert_eq!(backoff(5, min, max, None, 1.0), secs(16));
        assert_eq!(backoff(40, min, max, None, 1.0), secs(300));
        assert_eq!(backoff(40, min, max, None, 0.0), secs(1));
    }

    #[test]
    fn backoff_honours_retry_after_within_reason() {
        assert_eq!(backoff(1, secs(1), secs(300), Some(secs(120)), 0.5), secs(120));
        assert_eq!(backoff(1, secs(1), secs(300), Some(secs(86_400)), 0.5), MAX_RETRY_AFTER);
    }

    #[test]
    fn a_server_asking_for_more_than_an_hour_is_retried_after_an_hour() {
        assert_eq!(backoff(1, secs(1), secs(300), Some(secs(86_400)), 0.0), secs(3600));
        assert_eq!(backoff(1, secs(1), secs(300), Some(secs(3599)), 0.0), secs(3599));
    }

    #[test]
    fn the_quiet_window_is_at_most_an_eighth_of_the_lifetime() {
        assert_eq!(quiet_window(secs(2), secs(7200)), secs(2));
        assert_eq!(quiet_window(secs(2), secs(16)), secs(2));
        assert_eq!(quiet_window(secs(2), secs(4)), Duration::from_millis(500));
        assert_eq!(quiet_window(Duration::ZERO, secs(7200)), Duration::ZERO);
    }

    #[test]
    fn the_default_margin_shrinks_for_short_tokens() {
        assert_eq!(default_min_valid(secs(30), secs(3600)), secs(30));
        assert_eq!(default_min_valid(secs(30), secs(4)), secs(1));
    }
}
