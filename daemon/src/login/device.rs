//! Logging in with the device authorization grant (RFC 8628), for machines where no browser can
//! reach tokend: a server over SSH, a container, a headless box.
//!
//! `tokenctl login NAME` asks the daemon to start a login. The daemon asks the device
//! authorization endpoint for a code ([`crate::oauth::device`]) and hands back what the user
//! needs — the `user_code`, the `verification_uri`, and `verification_uri_complete` when the
//! server sends it — which `tokenctl` shows (with a QR code on a terminal). One task per login
//! then polls the token endpoint with the device code until one of these comes first:
//!
//! - tokens: they go to the profile's actor, whose state machine takes them as the login's
//!   outcome, and the profile refreshes like any logged-in profile from then on;
//! - `access_denied` or `expired_token` from the server, or another refusal;
//! - the device code's `expires_in`, or the profile's `login_timeout` if that is shorter;
//! - a newer login for the same profile (of either kind), which wins, a logout or a reload: the
//!   state machine ends the pending login and the actor stops the task ([`Poller::close`]).
//!
//! Polling follows RFC 8628 §3.5: the first poll waits `interval` (5 s when the server names
//! none), `authorization_pending` keeps the pace, every `slow_down` adds 5 s for the rest of
//! the login, and a failure to reach the server doubles the interval (the RFC asks clients to
//! back off on connection timeouts). The interval never exceeds
//! [`crate::limits::MAX_POLL_INTERVAL`]. Polls are plain token requests outside the profile's
//! state machine, so a pending login does not make the profile look busy; only what ends the
//! login goes through it ([`Heard`]), like a browser login's redirect.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokend_proto::{Error, Secret};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Heard, Redirect};
use crate::config::Profile;
use crate::limits;
use crate::oauth::device::{self as endpoint, DeviceAuthorization};
use crate::oauth::token::{self, TokenGrant, TokenSet};
use crate::oauth::{Http, UpstreamError};

/// What the user needs to approve a device login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceCode {
    /// The code to enter.
    pub(crate) user_code: String,
    /// Where to enter it.
    pub(crate) verification_uri: String,
    /// The verification URI with the code in it, when the server sent one.
    pub(crate) verification_uri_complete: Option<String>,
}

/// A device code the server granted, not polled for yet.
pub(crate) struct Authorized {
    /// What to show the user.
    pub(crate) code: DeviceCode,
    /// When the login gives up: the code's `expires_in`, or the profile's `login_timeout` if
    /// that is shorter.
    pub(crate) expires_at: SystemTime,
    device_code: Secret,
    interval: Duration,
    lifetime: Duration,
}

/// A device login's polling task.
pub(crate) struct Poller {
    task: JoinHandle<()>,
}

/// Asks the device authorization endpoint of `profile` for a code. Made before the profile's
/// actor is asked to start the login, so that the actor need not wait for this server.
pub(crate) async fn authorize(http: &Http, profile: &Profile) -> Result<Authorized, Error> {
    let name = profile.name.clone();
    if profile.device_authorization_url().is_none() {
        return Err(Error::Login {
            profile: name,
            message: "the device authorization endpoint is not known yet: tokend has not discovered it from the profile's issuer; see `tokenctl status` for why".into(),
        });
    }
    let granted = endpoint::authorize(http, profile)
        .await
        .map_err(|e| Error::Upstream { profile: name, failure: Box::new(e.to_failure(SystemTime::now())) })?;
    let DeviceAuthorization {
        device_code,
        user_code,
        verification_uri,
        verification_uri_complete,
        expires_in,
        interval,
    } = granted;
    let lifetime = expires_in.map_or(profile.login_timeout, |e| e.min(profile.login_timeout));
    let code = DeviceCode {
        user_code,
        verification_uri: verification_uri.into(),
        verification_uri_complete: verification_uri_complete.map(Into::into),
    };
    Ok(Authorized { code, expires_at: limits::after(SystemTime::now(), lifetime), device_code, interval, lifetime })
}

impl Authorized {
    /// Where the user goes to enter the code: the address with the code in it, if any.
    pub(crate) fn url(&self) -> String {
        self.code.verification_uri_complete.clone().unwrap_or_else(|| self.code.verification_uri.clone())
    }

    /// Starts polling for login `id` of `profile`; what ends the login goes to `heard`.
    pub(crate) fn poll(self, id: u64, http: Http, profile: Arc<Profile>, heard: mpsc::Sender<Heard>) -> Poller {
        tracing::info!(
            profile = %profile.name,
            interval = %humantime::format_duration(self.interval),
            "device login started; waiting for the user to enter the code"
        );
        let polling = Polling { profile, http, device_code: self.device_code, interval: self.interval };
        let task = tokio::spawn(polling.run(id, self.lifetime, heard));
        Poller { task }
    }
}

impl Poller {
    /// Stops polling; a poll in flight is dropped (a newer login or a reload need not wait
    /// for a slow server).
    pub(crate) async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One device login's polling.
struct Polling {
    profile: Arc<Profile>,
    http: Http,
    device_code: Secret,
    interval: Duration,
}

/// What one poll of the token endpoint amounts to.
enum Poll {
    /// Not approved yet: poll again after the (possibly longer) interval.
    Again,
    /// The login is over, one way or the other.
    Done(Redirect),
}

impl Polling {
    async fn run(mut self, id: u64, lifetime: Duration, heard: mpsc::Sender<Heard>) {
        let name = self.profile.name.clone();
        let deadline = Instant::now() + lifetime;
        let mut polls = 0u64;
        let what = loop {
            tokio::time::sleep_until((Instant::now() + self.interval).min(deadline)).await;
            if Instant::now() >= deadline {
                break Redirect::Refused(self.expired());
            }
            polls += 1;
            let answer = token::request(&self.http, &self.profile, TokenGrant::DeviceCode(&self.device_code)).await;
            match self.judge(answer) {
                Poll::Again => {}
                Poll::Done(what) => break what,
            }
        };
        match &what {
            Redirect::Tokens(_) => tracing::info!(profile = %name, polls, "device login approved"),
            Redirect::Refused(why) => tracing::warn!(profile = %name, polls, "device login ended: {why}"),
            Redirect::Code(..) => {}
        }
        let _ = heard.send(Heard { login: id, what }).await;
    }

    /// What the token endpoint's answer to one poll means.
    fn judge(&mut self, answer: Result<TokenSet, UpstreamError>) -> Poll {
        let error = match answer {
            Ok(tokens) => return Poll::Done(Redirect::Tokens(Box::new(tokens))),
            Err(error) => error,
        };
        let name = &self.profile.name;
        match error.error.as_deref() {
            Some("authorization_pending") => Poll::Again,
            Some("slow_down") => {
                self.interval = (self.interval + endpoint::SLOW_DOWN).min(limits::MAX_POLL_INTERVAL);
                tracing::debug!(profile = %name, interval = %humantime::format_duration(self.interval), "the server asked tokend to poll more slowly");
                Poll::Again
            }
            Some("access_denied") => Poll::Done(Redirect::Refused(format!(
                "access was denied at the server; run `tokenctl login {name}` again to retry"
            ))),
            Some("expired_token") => Poll::Done(Redirect::Refused(self.expired())),
            _ if !error.is_permanent() => {
                self.back_off(&error);
                Poll::Again
            }
            _ => Poll::Done(Redirect::Refused(error.to_failure(SystemTime::now()).message)),
        }
    }

    /// The server could not be reached or answered nonsense: wait longer before the next poll.
    fn back_off(&mut self, error: &UpstreamError) {
        let wait = (self.interval * 2).max(error.retry_after.unwrap_or_default());
        self.interval = wait.min(limits::MAX_POLL_INTERVAL);
        tracing::warn!(
            profile = %self.profile.name,
            "polling the token endpoint for the device login failed ({error}); trying again in {}",
            humantime::format_duration(self.interval)
        );
    }

    fn expired(&self) -> String {
        let name = &self.profile.name;
        format!("the code expired before the login was approved; run `tokenctl login {name}` again for a new one")
    }
}
