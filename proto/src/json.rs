//! The JSON forms of tokens, statuses and errors: what `tokenctl --json` prints and what
//! tokend's HTTP API answers. Both use these types, so the two can never drift apart.
//!
//! They are a stable, documented format (`docs/http-api.md` and its OpenAPI description):
//! field names are snake_case, times are RFC 3339 strings in UTC beside a number of seconds from
//! now (negative in the past), and absent values are `null` rather than missing. A time RFC 3339
//! cannot write is shown as the nearest one it can ([`crate::time`]). Views borrow
//! from the messages they show and are built for one moment, `now`, which the caller passes.

use std::time::SystemTime;

use serde::Serialize;

use crate::error::{ErrorClass, Failure};
use crate::message::{LoginExpiry, ProfileStatus, Token, TokenSummary};

pub use crate::time::rfc3339;

/// Whole seconds from `now` to `t`, negative when `t` is in the past; saturating rather than
/// overflowing.
pub fn seconds_from_now(t: SystemTime, now: SystemTime) -> i64 {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match t.duration_since(now) {
        Ok(d) => secs(d),
        Err(e) => -secs(e.duration()),
    }
}

/// A token: `tokenctl token --format json`, and the HTTP API's `GET /v1/token/NAME`.
#[derive(Debug, Serialize)]
pub struct TokenView<'a> {
    /// The profile it belongs to.
    pub profile: &'a str,
    /// The token itself.
    pub access_token: &'a str,
    /// The token type the server named.
    pub token_type: &'a str,
    /// When it expires.
    pub expires_at: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// Its fingerprint, to report it as rejected.
    pub fingerprint: String,
    /// The granted scope, if the server said.
    pub scope: Option<&'a str>,
}

impl<'a> TokenView<'a> {
    /// The view of `token` at `now`.
    pub fn new(token: &'a Token, now: SystemTime) -> Self {
        TokenView {
            profile: &token.profile,
            access_token: token.access_token.expose(),
            token_type: &token.token_type,
            expires_at: rfc3339(token.expires_at),
            expires_in: seconds_from_now(token.expires_at, now),
            fingerprint: token.fingerprint.to_string(),
            scope: token.scope.as_deref(),
        }
    }
}

/// A profile's state: one element of `tokenctl --json status`, and the HTTP API's
/// `GET /v1/status/NAME`.
#[derive(Debug, Serialize)]
pub struct StatusView<'a> {
    /// The profile's name.
    pub name: &'a str,
    /// Its grant.
    pub grant: &'static str,
    /// Its state, in one word.
    pub state: &'static str,
    /// The token being served, without the token.
    pub token: Option<TokenSummaryView<'a>>,
    /// When the next refresh or retry is due.
    pub next_refresh: Option<String>,
    /// Seconds until then.
    pub next_refresh_in: Option<i64>,
    /// Whether a refresh token is held.
    pub has_refresh_token: bool,
    /// The most recent failure, until a request succeeds again.
    pub last_error: Option<FailureView<'a>>,
    /// Since when requests have been failing.
    pub failing_since: Option<String>,
    /// What the user should do, if anything.
    pub action: Option<&'a str>,
    /// Requests sent to the token endpoint since the daemon started.
    pub upstream_requests: u64,
    /// When a pending login expires.
    pub login_pending_until: Option<String>,
    /// When the login itself ends, if that is known.
    pub login_expiry: Option<LoginExpiryView>,
}

/// When a login ends, where that was learnt, and when tokend warns about it.
#[derive(Debug, Serialize)]
pub struct LoginExpiryView {
    /// When the login ends.
    pub expires_at: String,
    /// Seconds until then.
    pub expires_in: i64,
    /// Where tokend learnt it: `refresh_expires_in`, `refresh_token_exp` or `login_lifetime`.
    pub source: &'static str,
    /// When tokend warns (or warned) about it.
    pub warn_at: String,
    /// Whether the warning has been given.
    pub warned: bool,
}

impl LoginExpiryView {
    /// The view of `e` at `now`.
    pub fn new(e: &LoginExpiry, now: SystemTime) -> Self {
        LoginExpiryView {
            expires_at: rfc3339(e.expires_at),
            expires_in: seconds_from_now(e.expires_at, now),
            source: e.source.as_str(),
            warn_at: rfc3339(e.warn_at),
            warned: e.warned,
        }
    }
}

/// What a status shows of a token.
#[derive(Debug, Serialize)]
pub struct TokenSummaryView<'a> {
    /// The token's fingerprint.
    pub fingerprint: String,
    /// The token type.
    pub token_type: &'a str,
    /// When it was obtained.
    pub obtained_at: String,
    /// When it expires.
    pub expires_at: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The granted scope, if the server said.
    pub scope: Option<&'a str>,
}

/// A failed request to an OAuth server.
#[derive(Debug, Serialize)]
pub struct FailureView<'a> {
    /// When it happened.
    pub at: String,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The OAuth `error` code.
    pub error: Option<&'a str>,
    /// The OAuth `error_description`.
    pub error_description: Option<&'a str>,
    /// What went wrong, for people.
    pub message: &'a str,
    /// Whether tokend retries by itself.
    pub transient: bool,
}

impl<'a> StatusView<'a> {
    /// The view of `s` at `now`.
    pub fn new(s: &'a ProfileStatus, now: SystemTime) -> Self {
        StatusView {
            name: &s.name,
            grant: s.grant.as_str(),
            state: s.state.as_str(),
            token: s.token.as_ref().map(|t: &'a TokenSummary| TokenSummaryView {
                fingerprint: t.fingerprint.to_string(),
                token_type: &t.token_type,
                obtained_at: rfc3339(t.obtained_at),
                expires_at: rfc3339(t.expires_at),
                expires_in: seconds_from_now(t.expires_at, now),
                scope: t.scope.as_deref(),
            }),
            next_refresh: s.next_refresh.map(rfc3339),
            next_refresh_in: s.next_refresh.map(|t| seconds_from_now(t, now)),
            has_refresh_token: s.has_refresh_token,
            last_error: s.last_error.as_ref().map(FailureView::new),
            failing_since: s.failing_since.map(rfc3339),
            action: s.action.as_deref(),
            upstream_requests: s.upstream_requests,
            login_pending_until: s.login_pending_until.map(rfc3339),
            login_expiry: s.login_expiry.as_deref().map(|e| LoginExpiryView::new(e, now)),
        }
    }
}

impl<'a> FailureView<'a> {
    /// The view of `f`.
    pub fn new(f: &'a Failure) -> Self {
        FailureView {
            at: rfc3339(f.at),
            status: f.status,
            error: f.error.as_deref(),
            error_description: f.description.as_deref(),
            message: &f.message,
            transient: f.transient,
        }
    }
}

/// An error of the HTTP API: `{"error": CLASS, "message": …}`, with the class names of
/// `tokenctl --json`.
#[derive(Debug, Serialize)]
pub struct ErrorView<'a> {
    /// The class of failure ([`ErrorClass::as_str`] and the client-side classes
    /// `not_reachable`, `protocol` and `untrusted`).
    pub error: &'a str,
    /// What happened and what to do, for people.
    pub message: &'a str,
}

impl ErrorClass {
    /// The class's name in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::UnknownProfile => "unknown_profile",
            ErrorClass::LoginNeeded => "login_needed",
            ErrorClass::Upstream => "upstream",
            ErrorClass::Config => "config",
            ErrorClass::Usage => "usage",
            ErrorClass::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{Fingerprint, Secret};

    #[test]
    fn a_token_shows_its_expiry_both_ways() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = Token {
            profile: "p".into(),
            access_token: Secret::from("t"),
            token_type: "Bearer".into(),
            expires_at: now + Duration::from_secs(90),
            fingerprint: Fingerprint::of("t"),
            scope: None,
        };
        let view = TokenView::new(&token, now);
        assert_eq!(view.expires_in, 90);
        assert_eq!(view.expires_at, "2023-11-14T22:14:50Z");
        assert_eq!(view.fingerprint, Fingerprint::of("t").to_string());
    }

    #[test]
    fn seconds_from_now_never_overflow() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(seconds_from_now(UNIX_EPOCH, now), -100);
        assert_eq!(seconds_from_now(now, now), 0);
        // Further apart than an i64 of seconds reaches.
        let half = Duration::from_secs(i64::MAX as u64 / 2 + 10);
        let (early, late) = (UNIX_EPOCH.checked_sub(half).unwrap(), UNIX_EPOCH.checked_add(half).unwrap());
        assert_eq!(seconds_from_now(late, early), i64::MAX);
        assert_eq!(seconds_from_now(early, late), -i64::MAX);
    }
}
