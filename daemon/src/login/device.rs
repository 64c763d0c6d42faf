//! Logging in with the device authorization grant (RFC 8628), for machines where no browser can
//! reach tokend: a server over SSH, a container, a headless box.
//!
//! `tokenctl login NAME` asks the daemon to start a login. The daemon asks the device
//! authorization endpoint for a code ([`crate::oauth::device`]) and hands back what the user
//! needs — the `user_code`, the `verification_uri`, and `verification_uri_complete` when the
//! server sends it — which `tokenctl` shows (with a QR code on a terminal). One task per login
//! then polls the token endpoint with the device code until one of these comes first:
//!
//! - tokens: they go to the profile's actor like the tokens of a code exchange, and the profile
//!   refreshes like any logged-in profile from then on;
//! - `access_denied` or `expired_token` from the server, or another refusal;
//! - the device code's `expires_in`, or the profile's `login_timeout` if that is shorter;
//! - a newer login for the same profile (of either kind), which wins.
//!
//! Polling follows RFC 8628 §3.5: the first poll waits `interval` (5 s when the server names
//! none), `authorization_pending` keeps the pace, every `slow_down` adds 5 s for the rest of
//! the login, and a failure to reach the server doubles the interval (the RFC asks clients to
//! back off on connection timeouts). The interval never exceeds
//! [`crate::limits::MAX_POLL_INTERVAL`]. Polls are plain token requests outside the profile's
//! state machine, so a pending login does not make the profile look busy; only the tokens, at
//! the end, go through it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokend_proto::{Error, Secret};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{Logins, Outcome, Pending, Started, finish};
use crate::limits;
use crate::oauth::device::{self as endpoint, DeviceAuthorization};
use crate::oauth::token::{self, TokenGrant, TokenSet};
use crate::oauth::{Http, UpstreamError};
use crate::profile::ProfileHandle;

/// What the user needs to approve a device login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCode {
    /// The code to enter.
    pub user_code: String,
    /// Where to enter it.
    pub verification_uri: String,
    /// The verification URI with the code in it, when the server sent one.
    pub verification_uri_complete: Option<String>,
}

/// Starts a device login for `handle`'s profile, replacing a pending login.
pub(super) async fn start(logins: &Logins, handle: Arc<ProfileHandle>) -> Result<Started, Error> {
    let profile = handle.config.clone();
    let name = profile.name.clone();
    if profile.device_authorization_url().is_none() {
        return Err(Error::Login {
            profile: name,
            message: "the device authorization endpoint is not known yet: tokend has not discovered it from the profile's issuer; see `tokenctl status` for why".into(),
        });
    }
    // Asked before the pending logins are locked: logins of other profiles need not wait for
    // this server.
    let granted = endpoint::authorize(&logins.http, &profile)
        .await
        .map_err(|e| Error::Upstream { profile: name.clone(), failure: Box::new(e.to_failure(SystemTime::now())) })?;
    let DeviceAuthorization {
        device_code,
        user_code,
        verification_uri,
        verification_uri_complete,
        expires_in,
        interval,
    } = granted;
    let lifetime = expires_in.map_or(profile.login_timeout, |e| e.min(profile.login_timeout));
    let expires_at = limits::after(SystemTime::now(), lifetime);

    let mut pending = logins.pending.lock().await;
    if let Some(old) = pending.remove(&name) {
        finish(old, "a newer login for this profile replaced this one").await;
    }
    let (cancel_tx, cancel_rx) = oneshot::channel();
    let (pasted_tx, pasted_rx) = mpsc::channel(4);
    let (outcome_tx, outcome_rx) = watch::channel(None);
    handle.set_login_pending(Some(expires_at)).await;
    let poller = Poller { handle, http: logins.http.clone(), device_code, interval, lifetime };
    let task = tokio::spawn(poller.run(cancel_rx, pasted_rx, outcome_tx));
    pending.insert(
        name.clone(),
        Pending { cancel: Some(cancel_tx), pasted: pasted_tx, outcome: outcome_rx.clone(), task },
    );
    tracing::info!(
        profile = %name,
        interval = %humantime::format_duration(interval),
        "device login started; waiting for the user to enter the code"
    );
    let device = DeviceCode {
        user_code,
        verification_uri: verification_uri.into(),
        verification_uri_complete: verification_uri_complete.map(Into::into),
    };
    let url = device.verification_uri_complete.clone().unwrap_or_else(|| device.verification_uri.clone());
    Ok(Started { url, expires_at, outcome: outcome_rx, device: Some(device) })
}

/// One device login's polling.
struct Poller {
    handle: Arc<ProfileHandle>,
    http: Http,
    device_code: Secret,
    interval: Duration,
    lifetime: Duration,
}

/// What one poll of the token endpoint amounts to.
enum Poll {
    /// Not approved yet: poll again after the (possibly longer) interval.
    Again,
    /// The login is over, one way or the other.
    Done(Result<(), Error>),
}

impl Poller {
    async fn run(
        mut self,
        mut cancel: oneshot::Receiver<String>,
        mut pasted: mpsc::Receiver<(Secret, oneshot::Sender<Result<(), Error>>)>,
        outcome: watch::Sender<Outcome>,
    ) {
        let name = self.handle.config.name.clone();
        let deadline = Instant::now() + self.lifetime;
        let mut polls = 0u64;
        let result = loop {
            tokio::select! {
                _ = tokio::time::sleep_until((Instant::now() + self.interval).min(deadline)) => {}
                why = &mut cancel => {
                    break Err(self.error(why.unwrap_or_else(|_| "the login was cancelled".into())));
                }
                Some((_, reply)) = pasted.recv() => {
                    let _ = reply.send(Err(self.error(
                        "this profile logs in with a code entered at the server's verification page; there is no address to paste".into(),
                    )));
                    continue;
                }
            }
            if Instant::now() >= deadline {
                break Err(self.expired());
            }
            polls += 1;
            // A newer login or a reload need not wait for a slow server.
            let profile = self.handle.config.clone();
            let answer = tokio::select! {
                answer = token::request(&self.http, &profile, TokenGrant::DeviceCode(&self.device_code)) => answer,
                why = &mut cancel => {
                    break Err(self.error(why.unwrap_or_else(|_| "the login was cancelled".into())));
                }
            };
            match self.judge(answer).await {
                Poll::Again => {}
                Poll::Done(result) => break result,
            }
        };
        match &result {
            Ok(()) => tracing::info!(profile = %name, polls, "device login complete"),
            Err(e) => tracing::warn!(profile = %name, polls, "device login ended: {e}"),
        }
        self.handle.set_login_pending(None).await;
        outcome.send_replace(Some(result));
    }

    /// What the token endpoint's answer to one poll means; tokens are handed to the profile.
    async fn judge(&mut self, answer: Result<TokenSet, UpstreamError>) -> Poll {
        let profile = self.handle.config.clone();
        let error = match answer {
            Ok(tokens) => {
                return Poll::Done(match self.handle.install(tokens).await {
                    Ok(result) => result,
                    Err(_) => Err(self.error("the profile was reloaded during the login; log in again".into())),
                });
            }
            Err(error) => error,
        };
        let name = &profile.name;
        match error.error.as_deref() {
            Some("authorization_pending") => Poll::Again,
            Some("slow_down") => {
                self.interval = (self.interval + endpoint::SLOW_DOWN).min(limits::MAX_POLL_INTERVAL);
                tracing::debug!(profile = %name, interval = %humantime::format_duration(self.interval), "the server asked tokend to poll more slowly");
                Poll::Again
            }
            Some("access_denied") => Poll::Done(Err(
                self.error(format!("access was denied at the server; run `tokenctl login {name}` again to retry"))
            )),
            Some("expired_token") => Poll::Done(Err(self.expired())),
            _ if !error.is_permanent() => {
                self.back_off(&error);
                Poll::Again
            }
            _ => Poll::Done(Err(Error::Upstream {
                profile: name.clone(),
                failure: Box::new(error.to_failure(SystemTime::now())),
            })),
        }
    }

    /// The server could not be reached or answered nonsense: wait longer before the next poll.
    fn back_off(&mut self, error: &UpstreamError) {
        let wait = (self.interval * 2).max(error.retry_after.unwrap_or_default());
        self.interval = wait.min(limits::MAX_POLL_INTERVAL);
        tracing::warn!(
            profile = %self.handle.config.name,
            "polling the token endpoint for the device login failed ({error}); trying again in {}",
            humantime::format_duration(self.interval)
        );
    }

    fn expired(&self) -> Error {
        let name = &self.handle.config.name;
        self.error(format!(
            "the code expired before the login was approved; run `tokenctl login {name}` again for a new one"
        ))
    }

    fn error(&self, message: String) -> Error {
        Error::Login { profile: self.handle.config.name.clone(), message }
    }
}
