//! When a login ends, and when tokend warns that it will.
//!
//! A login lasts as long as its refresh token. tokend learns when that ends from, in order:
//!
//! 1. `refresh_expires_in` in a token answer (Keycloak sends it with every answer);
//! 2. the `exp` claim of a refresh token that is a JWT (read, not verified: [`crate::oauth::jwt`]);
//! 3. the profile's `login_lifetime`, counted from the login — the authorization code exchange —
//!    and not from each refresh, because servers that limit a login do so from when the user
//!    approved it.
//!
//! What a server says replaces what it said before: a rotating server that sends a later
//! expiry with a new refresh token extends the login (Keycloak's idle timeout works so), and
//! one that keeps sending the same expiry (Keycloak's maximum session length) keeps it.
//!
//! **The warning** comes [`warning_lead`] before the end: a day before, or a tenth of the
//! lifetime if that is closer to the end, so that a 90-day login is warned about a day ahead
//! and a 7-day one about 17 hours ahead. The lifetime is the longest the server has stated for
//! this login (or `login_lifetime`): Keycloak restates a sliding idle timeout with every
//! refresh, and a tenth of the shrinking remainder near the session's end would come too late.
//!
//! **Once per login.** The expiry a warning was given for is saved with the tokens, so a
//! restart does not warn again. A warning stands while the expiry moves by less than the
//! warning's lead (a server restating the same end, give or take its clock); an expiry pushed
//! later than that is a new end, warned about in its turn.

use std::time::{Duration, SystemTime};

use tokend_proto::{LoginExpiry, LoginExpirySource};

use crate::limits;
use crate::oauth::token::RefreshExpiry;

/// The earliest a warning comes before a login ends.
pub(crate) const MAX_WARNING_LEAD: Duration = Duration::from_secs(24 * 3600);

/// How long before a login of `lifetime` ends tokend warns: a day, or a tenth of the lifetime
/// when that is shorter (whichever is closer to the end).
pub(crate) fn warning_lead(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_WARNING_LEAD)
}

/// What tokend knows about the current login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Login {
    /// When the user logged in (the code exchange was sent), if tokend saw it: logins made by
    /// a tokend that did not record it have none, and `login_lifetime` cannot count from it.
    pub(crate) at: Option<SystemTime>,
    /// What the server last said about the refresh token's end, with the longest lifetime it
    /// stated for this login.
    pub(crate) stated: Option<RefreshExpiry>,
    /// The expiry the warning was given for.
    pub(crate) warned_for: Option<SystemTime>,
}

/// When a login ends, and how that is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// When the refresh token stops working.
    pub(crate) expires_at: SystemTime,
    /// How long the login lives in all, which sets the warning's lead.
    pub(crate) lifetime: Duration,
    /// How tokend knows.
    pub(crate) source: LoginExpirySource,
}

impl Expiry {
    /// When to warn.
    pub(crate) fn warn_at(&self) -> SystemTime {
        let lead = warning_lead(self.lifetime);
        self.expires_at.checked_sub(lead).unwrap_or(self.expires_at)
    }
}

impl Login {
    /// A login that began at `at`.
    pub(crate) fn began(at: SystemTime) -> Login {
        Login { at: Some(at), ..Login::default() }
    }

    /// Records what a token answer said about the refresh token's end.
    pub(crate) fn stated(&mut self, said: RefreshExpiry) {
        let lifetime = self.stated.map_or(said.lifetime, |before| before.lifetime.max(said.lifetime));
        self.stated = Some(RefreshExpiry { lifetime, ..said });
    }

    /// When the login ends, by what the server said, else by `login_lifetime`.
    pub(crate) fn expiry(&self, login_lifetime: Option<Duration>) -> Option<Expiry> {
        if let Some(s) = self.stated {
            return Some(Expiry { expires_at: s.expires_at, lifetime: s.lifetime, source: s.source });
        }
        let (at, lifetime) = (self.at?, login_lifetime?);
        Some(Expiry { expires_at: limits::after(at, lifetime), lifetime, source: LoginExpirySource::LoginLifetime })
    }

    /// Whether the warning for `expiry` was given already.
    pub(crate) fn warned(&self, expiry: &Expiry) -> bool {
        self.warned_for.is_some_and(|w| expiry.expires_at <= limits::after(w, warning_lead(expiry.lifetime)))
    }

    /// What `tokenctl status` shows.
    pub(crate) fn status(&self, login_lifetime: Option<Duration>) -> Option<LoginExpiry> {
        let expiry = self.expiry(login_lifetime)?;
        Some(LoginExpiry {
            expires_at: expiry.expires_at,
            source: expiry.source,
            warn_at: expiry.warn_at(),
            warned: self.warned(&expiry),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;
    const DAY: u64 = 24 * 3600;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn said(expires: u64, lifetime: u64) -> RefreshExpiry {
        RefreshExpiry {
            expires_at: T0 + secs(expires),
            lifetime: secs(lifetime),
            source: LoginExpirySource::RefreshExpiresIn,
        }
    }

    #[test]
    fn long_logins_are_warned_about_a_day_ahead() {
        assert_eq!(warning_lead(secs(90 * DAY)), secs(DAY));
        assert_eq!(warning_lead(secs(10 * DAY)), secs(DAY));
    }

    #[test]
    fn short_logins_are_warned_about_a_tenth_of_their_lifetime_ahead() {
        assert_eq!(warning_lead(secs(7 * DAY)), secs(7 * DAY / 10));
        assert_eq!(warning_lead(secs(3600)), secs(360));
        assert_eq!(warning_lead(secs(20)), secs(2));
        assert_eq!(warning_lead(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn login_lifetime_counts_from_the_login() {
        let login = Login::began(T0 + secs(100));
        let expiry = login.expiry(Some(secs(7 * DAY))).unwrap();
        assert_eq!(expiry.expires_at, T0 + secs(100 + 7 * DAY));
        assert_eq!(expiry.source, LoginExpirySource::LoginLifetime);
        assert_eq!(expiry.warn_at(), T0 + secs(100 + 7 * DAY - 7 * DAY / 10));
        assert_eq!(Login::default().expiry(Some(secs(60))), None, "a login tokend did not see has no start");
        assert_eq!(login.expiry(None), None);
    }

    #[test]
    fn what_the_server_says_wins_over_login_lifetime_and_replaces_what_it_said() {
        let mut login = Login::began(T0);
        login.stated(said(1800, 1800));
        let expiry = login.expiry(Some(secs(DAY))).unwrap();
        assert_eq!((expiry.expires_at, expiry.source), (T0 + secs(1800), LoginExpirySource::RefreshExpiresIn));
        // A refresh with a rotated token extends the login (an idle timeout slides)...
        login.stated(said(2100, 1800));
        assert_eq!(login.expiry(None).unwrap().expires_at, T0 + secs(2100));
        // ...and near a maximum session length the server states less than before: the warning
        // keeps the lead of the longest lifetime stated.
        login.stated(said(2100, 600));
        let expiry = login.expiry(None).unwrap();
        assert_eq!(expiry.lifetime, secs(1800));
        assert_eq!(expiry.warn_at(), T0 + secs(2100 - 180));
    }

    #[test]
    fn a_warning_stands_until_the_end_moves_later_by_more_than_its_lead() {
        let mut login = Login::began(T0);
        login.stated(said(1000, 1000));
        let expiry = login.expiry(None).unwrap();
        assert!(!login.warned(&expiry));
        login.warned_for = Some(expiry.expires_at);
        assert!(login.warned(&expiry));
        login.stated(said(1001, 999));
        assert!(login.warned(&login.expiry(None).unwrap()), "a second's difference is the same end");
        login.stated(said(1500, 1000));
        assert!(!login.warned(&login.expiry(None).unwrap()), "a later end is warned about again");
    }

    #[test]
    fn the_status_shows_the_end_and_the_warning() {
        let mut login = Login::began(T0);
        assert_eq!(login.status(None), None);
        let status = login.status(Some(secs(100))).unwrap();
        assert_eq!(status.expires_at, T0 + secs(100));
        assert_eq!(status.warn_at, T0 + secs(90));
        assert!(!status.warned);
        login.warned_for = Some(T0 + secs(100));
        assert!(login.status(Some(secs(100))).unwrap().warned);
    }
}
