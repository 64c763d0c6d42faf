//! The per-profile token state machine.
//!
//! Every change to a profile's tokens and to its login goes through [`Machine::handle`], which
//! is the only place transitions are written down. The machine does no I/O: it returns
//! [`Effects`] (start an upstream request, persist, tell the user a login is needed, close the
//! login's listener, answer these waiters with these outcomes) that the actor carries out. It
//! holds whoever waits for an outcome — a `tokenctl refresh`, a `tokenctl login`, the browser
//! that brought a login's code — as an opaque `W` (a channel's reply end in the actor, a number
//! in the unit tests), and decides whom to answer and with what.
//!
//! Invariants the machine keeps:
//!
//! - **One request in flight.** A request is started only from a phase with none in flight (a
//!   resting phase, or the end of a quiet window), and the phase is [`Phase::Refreshing`] until
//!   its outcome is handled; nothing starts a second one.
//! - **A rejected token is never served again.** `invalidate` marks the current token rejected;
//!   only a new token clears the mark.
//! - **A refresh token is only replaced or dropped deliberately**: replaced by a rotated one
//!   (even one that came in an answer unusable otherwise: the server has retired the old one),
//!   dropped only when the server says it is dead (`invalid_grant`, which drops the access token
//!   of the dead grant too) or the user logs out.
//!   Transient failures and failed logins leave it untouched.
//! - **Backoff and permanent failures stop the clock**: nothing is retried before `retry_at`,
//!   and a permanent failure is not retried until the user asks or the config changes.
//! - **A token handed out is not revoked under a program that is still using it.** Some servers
//!   revoke the old access token when it is refreshed (Django OAuth Toolkit, Doorkeeper) or
//!   when the new one is first used (Doorkeeper's `revoke_previous_refresh_token_on_use`). So a
//!   refresh that replaces a usable token goes through a *quiet window* first
//!   ([`Phase::Quiet`]): the token is no longer handed out (requests wait for the new one), and
//!   the request is sent only once the token has not been handed out for the window — at
//!   once, if nobody asked for it lately. The window is the profile's `quiet_window`, capped at
//!   an eighth of the token's lifetime ([`schedule::quiet_window`]).
//!
//! How the quiet window meets everything else that can start a request:
//!
//! - the scheduled refresh and a retry after backoff go through it (clients may hold the token);
//! - a client demand for a token valid beyond the current one (`--min-valid`) goes through it
//!   too: the demanding client waits for the new token either way, and others may hold the
//!   current one;
//! - `tokenctl refresh` goes through it and answers when the new token is there, so a refresh
//!   by hand does not break the programs using the token either; it joins a window under way;
//! - an invalidation skips it, and cuts a window under way short: the server already refused
//!   the token, so there is nothing left to protect;
//! - a token that is expired, rejected or missing has no window: nobody can be using it; and a
//!   window never lasts past the token's expiry;
//! - if the refresh fails transiently, the old token is served again while it lasts, and the
//!   retry goes through a new window.
//!
//! The window never makes a token be served later than it would be without it — while it lasts
//! the token is not served at all — and it never runs while a request is in flight.
//!
//! A login is part of the machine too:
//!
//! - **Pending**: [`Event::LoginStarted`] records a login waiting for the browser, until the
//!   profile's `login_timeout` has passed ([`Machine::deadline`] includes it). A newer login
//!   replaces it (its waiters are told so); so do a logout, a stop and the timeout.
//! - **Code**: [`Event::Code`] for the pending login ends the wait (the listener is closed) and
//!   exchanges the code — at once, or, while a request is in flight, *queued* until its outcome
//!   is handled, which starts the exchange in the same step. A newer code replaces a queued one.
//!   A code for a login that is no longer pending is refused.
//! - **Outcome**: the exchange's waiters, and the `tokenctl refresh` waiters who joined it, get
//!   its outcome. A failed exchange leaves the tokens as they were.
//! - **Device logins** (RFC 8628) are pending logins too ([`Event::DeviceLoginStarted`], until
//!   the code expires), so the newest login of either kind wins. Their polling task brings
//!   tokens, not a code ([`Event::DeviceTokens`]): they are taken at once, or, while a request
//!   is in flight, queued like a code, so that the older grant's outcome cannot overwrite them.
//!
//! The time a token was last handed out comes from the serving side (an atomic the hot path
//! writes while it still holds the snapshot it served from; the actor passes it in with
//! [`Machine::handed_out`]). The quiet phase is entered by one event and left only by a later
//! [`Event::Due`], so that the time the window is judged by is read after the snapshot that
//! withholds the token was published: no request can be handed the old token unseen.
//!
//! **A login ends** when its refresh token does ([`expiry`] says when, and when to warn). The
//! machine warns once ([`Effects::login_expiring`]), and from the end on it sends no request
//! with that refresh token: the profile needs a login, the access token is served while it
//! lasts, and the refresh token is kept (a reload with a longer `login_lifetime` revives it).

use std::time::{Duration, SystemTime};

use tokend_proto::{Error, Failure, Fingerprint, Grant, ProfileState, ProfileStatus, Secret, Token, TokenSummary};

use super::schedule;
use crate::expiry;
use crate::held::Current;
use crate::oauth::UpstreamError;
use crate::oauth::token::TokenSet;

/// What kind of request to the token endpoint to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// A client credentials grant.
    ClientCredentials,
    /// A refresh token grant with the held refresh token.
    RefreshToken,
    /// The authorization code exchange that completes a login.
    CodeExchange,
}

/// Where a profile is, besides which tokens it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing to serve and nothing scheduled; a token is fetched when a client asks.
    Empty,
    /// A token is held; the next refresh is due at `refresh_at`.
    Valid {
        /// When the scheduled refresh is due.
        refresh_at: SystemTime,
    },
    /// A refresh is due, and the current token is no longer handed out: the request is sent at
    /// `send_at`, once the token has not been handed out for the quiet window.
    Quiet {
        /// When the window began.
        since: SystemTime,
        /// When the request is to be sent, as far as is known; the next [`Event::Due`] checks
        /// again when the token was last handed out.
        send_at: SystemTime,
    },
    /// A request to the token endpoint is in flight.
    Refreshing(RequestKind),
    /// The last request failed transiently; the next attempt is due at `retry_at`.
    Backoff {
        /// When the next attempt is due.
        retry_at: SystemTime,
    },
    /// The user must log in.
    NeedsLogin {
        /// Why, for people.
        reason: String,
    },
    /// The server refused for good; see `last_error`.
    Failed,
}

/// Something that happened to a profile. `W` waits for an outcome (see the module docs).
#[derive(Debug)]
pub(crate) enum Event<W> {
    /// The daemon started (or the profile was added) with these tokens from disk.
    Start,
    /// The timer armed for [`Machine::deadline`] fired.
    Due,
    /// A client needs a token valid at least until this time.
    Demand(SystemTime),
    /// A client reports that a server rejected the token with this fingerprint.
    Invalidate(Fingerprint),
    /// The user asked for a refresh now (`tokenctl refresh`); the waiter gets its outcome.
    Force(W),
    /// A login began, numbered `id` (its listener is up): it waits for its code until the
    /// profile's `login_timeout` has passed, and replaces a pending one.
    LoginStarted {
        /// Which login this is, so that news from a replaced one is told apart.
        id: u64,
        /// The PKCE verifier that goes with its code.
        verifier: Secret,
        /// Gets the login's outcome.
        waiter: W,
    },
    /// Login `login` brought its authorization code (the browser's redirect, or a URL the user
    /// pasted); `waiter` gets the exchange's outcome.
    Code {
        /// The login it belongs to.
        login: u64,
        /// The code.
        code: Secret,
        /// Gets the exchange's outcome.
        waiter: W,
    },
    /// Login `login` failed before any code: the server refused, or the redirect came from
    /// another server.
    LoginRefused {
        /// The login it belongs to.
        login: u64,
        /// Why, for people.
        message: String,
        /// Gets the failure too, besides the login's own waiters.
        waiter: Option<W>,
    },
    /// A device login began, numbered `id` (its polling runs): it waits for the user to enter
    /// the code until `until`, and replaces a pending login of either kind.
    DeviceLoginStarted {
        /// Which login this is, so that news from a replaced one is told apart.
        id: u64,
        /// When the code expires.
        until: SystemTime,
        /// Gets the login's outcome.
        waiter: W,
    },
    /// Device login `login` obtained these tokens: the user approved it.
    DeviceTokens {
        /// The login it belongs to.
        login: u64,
        /// The tokens.
        set: Box<TokenSet>,
    },
    /// The pending login ends, for this reason (a newer login is about to start).
    CancelLogin(String),
    /// The in-flight request succeeded.
    Obtained(TokenSet),
    /// The in-flight request failed.
    Failed(UpstreamError),
    /// The user logged out: forget everything.
    LoggedOut,
    /// The actor stops (a reload, a shutdown), for this reason: logins and code exchanges end,
    /// and no request is made any more.
    Stop(String),
}

/// What the actor must do after an event, in this order: persist, close the login's listener,
/// start the request, answer the waiters, then tell the user.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Effects<W> {
    /// Save the tokens before anyone is served the new state.
    pub persist: bool,
    /// The pending login ended: close its listener.
    pub close_listener: bool,
    /// Start this request.
    pub request: Option<RequestKind>,
    /// Answer each of these waiters with its outcome.
    pub replies: Vec<(W, Result<(), Error>)>,
    /// A login became necessary: run the notify command with this reason.
    pub login_needed: Option<String>,
    /// The login ends at this time, soon: warn the user.
    pub login_expiring: Option<SystemTime>,
}

impl<W> Default for Effects<W> {
    fn default() -> Self {
        Effects {
            persist: false,
            close_listener: false,
            request: None,
            replies: Vec::new(),
            login_needed: None,
            login_expiring: None,
        }
    }
}

impl<W> Effects<W> {
    fn reply_all(&mut self, waiters: impl IntoIterator<Item = W>, outcome: &Result<(), Error>) {
        self.replies.extend(waiters.into_iter().map(|w| (w, outcome.clone())));
    }
}

/// Settings the machine needs from the profile's config.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    /// How long before expiry to refresh.
    pub refresh_margin: Duration,
    /// The first retry delay.
    pub retry_min: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// How long the token must not have been handed out before a refresh replaces it; zero for
    /// no quiet window.
    pub quiet_window: Duration,
    /// How long a login waits for the browser.
    pub login_timeout: Duration,
    /// How long a login lasts when the server does not say.
    pub login_lifetime: Option<Duration>,
}

/// A login waiting for the browser's redirect, or for a device login's code to be approved.
#[derive(Debug)]
struct Login<W> {
    id: u64,
    /// When it gives up.
    until: SystemTime,
    /// The PKCE verifier of a browser login; none for a device login, which brings tokens.
    verifier: Option<Secret>,
    waiters: Vec<W>,
}

/// What completes a login.
#[derive(Debug)]
enum Completion {
    /// An authorization code to exchange for tokens, with its PKCE verifier.
    Code { code: Secret, verifier: Secret },
    /// A device login's tokens, which its polling obtained.
    Tokens(Box<TokenSet>),
}

/// A login about to complete.
#[derive(Debug)]
struct Exchange<W> {
    grant: Completion,
    /// When its login would have given up, for status output.
    until: SystemTime,
    waiters: Vec<W>,
}

/// The state of one profile. `W` waits for an outcome (see the module docs).
#[derive(Debug)]
pub(crate) struct Machine<W> {
    name: String,
    grant: Grant,
    tuning: Tuning,
    token: Option<Current>,
    refresh_token: Option<Secret>,
    phase: Phase,
    /// The current token is not handed out: a quiet window began, and the refresh that follows
    /// it may revoke the token at the server. Cleared when the refresh ends either way.
    withheld: bool,
    /// When the serving side last handed out a token of this profile.
    handed_out: Option<SystemTime>,
    last_error: Option<Failure>,
    failing_since: Option<SystemTime>,
    attempts: u32,
    generation: u64,
    upstream_requests: u64,
    /// `tokenctl refresh` waiters: answered with the outcome of the next request.
    waiters: Vec<W>,
    /// The login waiting for the browser.
    login: Option<Login<W>>,
    /// The code exchange in flight: set exactly while the phase is
    /// `Refreshing(RequestKind::CodeExchange)`.
    exchanging: Option<Exchange<W>>,
    /// A code exchange waiting for the request in flight to finish.
    queued: Option<Exchange<W>>,
    /// When the login ends and whether the user was warned; saved with the tokens.
    session: expiry::Login,
    /// The login has ended: its refresh token is not used any more.
    login_ended: bool,
}

impl<W> Machine<W> {
    /// A machine holding the tokens restored from disk, if any. Feed it [`Event::Start`].
    pub(crate) fn new(
        name: &str,
        grant: Grant,
        tuning: Tuning,
        token: Option<Current>,
        refresh_token: Option<Secret>,
    ) -> Machine<W> {
        Machine {
            name: name.to_owned(),
            grant,
            tuning,
            token,
            refresh_token: if grant.has_login() { refresh_token } else { None },
            phase: Phase::Empty,
            withheld: false,
            handed_out: None,
            last_error: None,
            failing_since: None,
            attempts: 0,
            generation: 0,
            upstream_requests: 0,
            waiters: Vec::new(),
            login: None,
            exchanging: None,
            queued: None,
            session: expiry::Login::default(),
            login_ended: false,
        }
    }

    /// This machine with what was saved about the login.
    pub(crate) fn with_session(mut self, session: expiry::Login) -> Machine<W> {
        if self.grant.has_login() {
            self.session = session;
        }
        self
    }

    /// Applies `event` at wall-clock time `now`; `jitter` is a random number in `0.0..1.0`.
    pub(crate) fn handle(&mut self, event: Event<W>, now: SystemTime, jitter: f64) -> Effects<W> {
        let mut fx = Effects::default();
        self.login_ended = self.login_expiry().is_some_and(|e| now >= e.expires_at);
        match event {
            Event::Start => {
                if self.usable_at(now) {
                    self.rest(now, jitter);
                    if matches!(self.phase, Phase::Valid { refresh_at } if refresh_at <= now) {
                        self.refresh(now, &mut fx);
                    }
                } else {
                    self.start(&mut fx);
                }
                // A profile that was never logged in is not news at start; status shows it. A
                // login that ended while tokend was down is.
                if !self.login_ended {
                    fx.login_needed = None;
                }
            }
            Event::Due => {
                if let Some(login) = self.login.as_ref().filter(|login| now >= login.until) {
                    let message = match login.verifier {
                        Some(_) => format!(
                            "no answer from the browser within {}; run `tokenctl login {}` again",
                            humantime::format_duration(self.tuning.login_timeout),
                            self.name
                        ),
                        None => format!(
                            "the code expired before the login was approved; run `tokenctl login {}` again for a new one",
                            self.name
                        ),
                    };
                    self.end_login(message, &mut fx);
                }
                match self.phase {
                    Phase::Valid { refresh_at } | Phase::Backoff { retry_at: refresh_at } if now >= refresh_at => {
                        self.refresh(now, &mut fx);
                    }
                    // A clock set back past the window's start ends it: clients must not wait for
                    // as long as the clock went back.
                    Phase::Quiet { since, send_at } if now >= send_at || now < since => {
                        let send_at = self.quiet_until(since);
                        if now >= send_at || now < since {
                            self.start(&mut fx);
                        } else {
                            self.phase = Phase::Quiet { since, send_at };
                        }
                    }
                    _ => {}
                }
            }
            Event::Demand(until) => {
                let satisfied = self.token.as_ref().is_some_and(|t| !t.rejected && t.expires_at >= until);
                if !satisfied && matches!(self.phase, Phase::Empty | Phase::Valid { .. }) {
                    self.refresh(now, &mut fx);
                }
            }
            Event::Invalidate(fingerprint) => {
                if let Some(token) = self.token.as_mut().filter(|t| t.fingerprint == fingerprint && !t.rejected) {
                    token.rejected = true;
                    // The server refused the token already: no window, and one under way ends.
                    if matches!(self.phase, Phase::Empty | Phase::Valid { .. } | Phase::Quiet { .. }) {
                        self.start(&mut fx);
                    }
                }
            }
            Event::Force(waiter) => {
                // Answered when the request it starts (or joins) finishes, or at once when no
                // request can be made.
                self.waiters.push(waiter);
                if !matches!(self.phase, Phase::Refreshing(_) | Phase::Quiet { .. }) {
                    self.refresh(now, &mut fx);
                    if fx.request.is_none()
                        && let Some(error) = self.blocked_error()
                    {
                        fx.reply_all(self.waiters.drain(..), &Err(error));
                    }
                }
            }
            Event::LoginStarted { id, verifier, waiter } => {
                // The actor closes the listener of a login it replaces before it opens the new
                // one (they share the port), so only the waiters are left to tell.
                if let Some(old) = self.login.take() {
                    fx.reply_all(old.waiters, &Err(self.login_error(SUPERSEDED.into())));
                }
                let until = crate::limits::after(now, self.tuning.login_timeout);
                self.login = Some(Login { id, until, verifier: Some(verifier), waiters: vec![waiter] });
            }
            Event::DeviceLoginStarted { id, until, waiter } => {
                if let Some(old) = self.login.take() {
                    fx.reply_all(old.waiters, &Err(self.login_error(SUPERSEDED.into())));
                }
                self.login = Some(Login { id, until, verifier: None, waiters: vec![waiter] });
            }
            Event::DeviceTokens { login, set } => match self.login.take() {
                Some(pending) if pending.id == login && pending.verifier.is_none() => {
                    fx.close_listener = true;
                    let exchange =
                        Exchange { grant: Completion::Tokens(set), until: pending.until, waiters: pending.waiters };
                    if matches!(self.phase, Phase::Refreshing(_)) {
                        // The request in flight belongs to the older grant: its outcome is
                        // handled first, so that it cannot overwrite the login's tokens.
                        if let Some(old) = self.queued.replace(exchange) {
                            fx.reply_all(old.waiters, &Err(self.login_error(SUPERSEDED.into())));
                        }
                    } else {
                        self.exchange(exchange, now, jitter, &mut fx);
                    }
                }
                other => self.login = other,
            },
            Event::Code { login, code, waiter } => match self.login.take() {
                Some(Login { id, until, verifier: Some(verifier), waiters: mut pending }) if id == login => {
                    fx.close_listener = true;
                    pending.push(waiter);
                    let exchange = Exchange { grant: Completion::Code { code, verifier }, until, waiters: pending };
                    if matches!(self.phase, Phase::Refreshing(_)) {
                        if let Some(old) = self.queued.replace(exchange) {
                            fx.reply_all(old.waiters, &Err(self.login_error(SUPERSEDED.into())));
                        }
                    } else {
                        self.exchange(exchange, now, jitter, &mut fx);
                    }
                }
                other => {
                    self.login = other;
                    let message = format!(
                        "this login is no longer pending (it timed out or a newer one replaced it); run `tokenctl login {}` again",
                        self.name
                    );
                    fx.reply_all([waiter], &Err(self.login_error(message)));
                }
            },
            Event::LoginRefused { login, message, waiter } => {
                if self.login.as_ref().is_some_and(|pending| pending.id == login) {
                    fx.reply_all(waiter, &Err(self.login_error(message.clone())));
                    self.end_login(message, &mut fx);
                }
            }
            Event::CancelLogin(reason) => self.end_login(reason, &mut fx),
            Event::Obtained(set) => {
                let login = matches!(self.phase, Phase::Refreshing(RequestKind::CodeExchange));
                self.obtained(&set, login, now, jitter, &mut fx);
                self.finish(Ok(()), &mut fx);
            }
            Event::Failed(mut error) => {
                if let Some(rotated) = error.rotated_refresh_token.take().filter(|_| self.grant.has_login()) {
                    self.refresh_token = Some(rotated);
                    fx.persist = true;
                }
                let kind = match self.phase {
                    Phase::Refreshing(kind) => kind,
                    _ => RequestKind::RefreshToken,
                };
                let failure = error.to_failure(now);
                // Whatever happened, the refresh is over; a token still valid is served again.
                self.withheld = false;
                let mut outcome =
                    Err(Error::Upstream { profile: self.name.clone(), failure: Box::new(failure.clone()) });
                if kind == RequestKind::CodeExchange {
                    // A failed login leaves the profile as it was; the login's waiters are told.
                    self.rest(now, jitter);
                } else if !error.is_permanent() {
                    self.attempts += 1;
                    self.failing_since.get_or_insert(now);
                    let delay = schedule::backoff(
                        self.attempts,
                        self.tuning.retry_min,
                        self.tuning.retry_max,
                        error.retry_after,
                        jitter,
                    );
                    self.phase = Phase::Backoff { retry_at: crate::limits::after(now, delay) };
                    self.last_error = Some(failure);
                } else if kind == RequestKind::RefreshToken && error.is_invalid_grant() {
                    // The grant is dead at the server, and the access token issued under it
                    // almost always with it (servers revoke the whole grant on refresh token
                    // replay or when the user withdraws consent): clients are told to log in
                    // rather than handed a token that will be refused.
                    self.refresh_token = None;
                    self.session = expiry::Login::default();
                    if self.token.take().is_some() {
                        self.generation += 1;
                    }
                    let reason = match &failure.description {
                        Some(d) => format!("the server no longer accepts the refresh token: {d}"),
                        None => "the server no longer accepts the refresh token (invalid_grant)".to_owned(),
                    };
                    self.phase = Phase::NeedsLogin { reason: reason.clone() };
                    self.failing_since.get_or_insert(now);
                    self.last_error = Some(failure);
                    fx.persist = true;
                    outcome = Err(Error::LoginNeeded { profile: self.name.clone(), reason: reason.clone() });
                    fx.login_needed = Some(reason);
                } else {
                    self.phase = Phase::Failed;
                    self.failing_since.get_or_insert(now);
                    self.last_error = Some(failure);
                }
                self.finish(outcome, &mut fx);
            }
            Event::LoggedOut => {
                self.token = None;
                self.refresh_token = None;
                self.session = expiry::Login::default();
                self.withheld = false;
                self.generation += 1;
                self.attempts = 0;
                self.last_error = None;
                self.failing_since = None;
                self.phase = match self.grant {
                    Grant::ClientCredentials => Phase::Empty,
                    Grant::AuthorizationCode | Grant::DeviceCode => Phase::NeedsLogin { reason: "logged out".into() },
                };
                fx.persist = true;
                self.end_login("logged out".into(), &mut fx);
                if let Some(queued) = self.queued.take() {
                    fx.reply_all(queued.waiters, &Err(self.login_error("logged out".into())));
                }
                // Waiting for a quiet window that will not end in a request now.
                let outcome = self.blocked_error().map_or(Ok(()), Err);
                fx.reply_all(self.waiters.drain(..), &outcome);
            }
            Event::Stop(reason) => {
                self.end_login(reason.clone(), &mut fx);
                let error = Err(self.login_error(reason));
                for exchange in [self.exchanging.take(), self.queued.take()].into_iter().flatten() {
                    fx.reply_all(exchange.waiters, &error);
                }
            }
        }
        if !matches!(self.phase, Phase::Refreshing(_))
            && let Some(queued) = self.queued.take()
        {
            self.exchange(queued, now, jitter, &mut fx);
        }
        self.watch_login(now, &mut fx);
        fx
    }

    /// Takes new tokens: a request's, or a device login's. `login` says they come from a new
    /// login, from which `login_lifetime` counts.
    fn obtained(&mut self, set: &TokenSet, login: bool, now: SystemTime, jitter: f64, fx: &mut Effects<W>) {
        if self.grant.has_login() {
            if login {
                self.session = expiry::Login::began(set.obtained_at);
                self.login_ended = false;
            }
            if let Some(said) = set.refresh_expiry {
                self.session.stated(said);
                self.login_ended = now >= said.expires_at;
            }
        }
        if let Some(rotated) = set.refresh_token.clone().filter(|_| self.grant.has_login()) {
            self.refresh_token = Some(rotated);
        }
        self.token = Some(Current::from_set(set));
        self.withheld = false;
        self.generation += 1;
        self.attempts = 0;
        self.last_error = None;
        self.failing_since = None;
        self.rest(now, jitter);
        fx.persist = true;
    }

    /// Completes a login: starts exchanging its code, or takes a device login's tokens.
    fn exchange(&mut self, exchange: Exchange<W>, now: SystemTime, jitter: f64, fx: &mut Effects<W>) {
        debug_assert!(!matches!(self.phase, Phase::Refreshing(_)), "one request at a time");
        if let Completion::Tokens(set) = &exchange.grant {
            self.obtained(set, true, now, jitter, fx);
            fx.reply_all(exchange.waiters, &Ok(()));
            return;
        }
        self.exchanging = Some(exchange);
        self.phase = Phase::Refreshing(RequestKind::CodeExchange);
        self.upstream_requests += 1;
        fx.request = Some(RequestKind::CodeExchange);
    }

    /// The request in flight ended with `outcome`: its waiters are told.
    fn finish(&mut self, outcome: Result<(), Error>, fx: &mut Effects<W>) {
        if let Some(exchange) = self.exchanging.take() {
            fx.reply_all(exchange.waiters, &outcome);
        }
        fx.reply_all(self.waiters.drain(..), &outcome);
    }

    /// Ends the pending login, if any, telling its waiters `why`.
    fn end_login(&mut self, why: String, fx: &mut Effects<W>) {
        if let Some(login) = self.login.take() {
            fx.close_listener = true;
            fx.reply_all(login.waiters, &Err(self.login_error(why)));
        }
    }

    fn login_error(&self, message: String) -> Error {
        Error::Login { profile: self.name.clone(), message }
    }

    /// When the login ends, per the server or the profile's `login_lifetime`; only while a
    /// refresh token is held.
    fn login_expiry(&self) -> Option<expiry::Expiry> {
        self.refresh_token.as_ref()?;
        self.session.expiry(self.tuning.login_lifetime)
    }

    /// Warns once before the login ends, and when it has ended, makes the profile need a
    /// login (a request in flight finishes first).
    fn watch_login(&mut self, now: SystemTime, fx: &mut Effects<W>) {
        let Some(expiry) = self.login_expiry() else { return };
        if now >= expiry.expires_at {
            self.login_ended = true;
            if !matches!(self.phase, Phase::Refreshing(_) | Phase::NeedsLogin { .. }) {
                self.needs_login_now(self.login_ended_reason(), fx);
            }
        } else if now >= expiry.warn_at() && !self.session.warned(&expiry) {
            self.session.warned_for = Some(expiry.expires_at);
            fx.login_expiring = Some(expiry.expires_at);
            fx.persist = true;
        }
    }

    /// Enters [`Phase::NeedsLogin`] because the login ended: the user is told, and whoever
    /// waits for a refresh (`tokenctl refresh`, perhaps joined to a quiet window) is answered.
    fn needs_login_now(&mut self, reason: String, fx: &mut Effects<W>) {
        self.withheld = false;
        self.phase = Phase::NeedsLogin { reason: reason.clone() };
        self.finish(Err(Error::LoginNeeded { profile: self.name.clone(), reason: reason.clone() }), fx);
        fx.login_needed = Some(reason);
    }

    fn login_ended_reason(&self) -> String {
        match self.login_expiry() {
            Some(e) => format!("the login expired at {}", tokend_proto::time::rfc3339(e.expires_at)),
            None => "the login expired".to_owned(),
        }
    }

    /// Refreshes a token that clients may hold: through a quiet window if the profile has one
    /// and the token is still usable, at once otherwise. The window is only entered here; it is
    /// left by a later [`Event::Due`] (see the module docs for why).
    fn refresh(&mut self, now: SystemTime, fx: &mut Effects<W>) {
        let can_request = self.grant == Grant::ClientCredentials || (self.refresh_token.is_some() && !self.login_ended);
        let window = self
            .token
            .as_ref()
            .map_or(Duration::ZERO, |t| schedule::quiet_window(self.tuning.quiet_window, t.lifetime()));
        if can_request && self.usable_at(now) && !window.is_zero() {
            self.withheld = true;
            self.phase = Phase::Quiet { since: now, send_at: now };
        } else {
            self.start(fx);
        }
    }

    /// When a quiet window that began at `since` ends: a window after the token was last handed
    /// out, but no later than a window after `since` (nothing is handed out during the window)
    /// nor than the token's expiry (nobody can use it after that).
    fn quiet_until(&self, since: SystemTime) -> SystemTime {
        let Some(token) = &self.token else { return since };
        let window = schedule::quiet_window(self.tuning.quiet_window, token.lifetime());
        let after = |t: SystemTime| t.checked_add(window).unwrap_or(t);
        let after_last_hand_out = self.handed_out.map_or(since, after);
        after_last_hand_out.max(since).min(after(since)).min(token.expires_at)
    }

    /// Starts a request if one can be made; otherwise the profile needs a login.
    fn start(&mut self, fx: &mut Effects<W>) {
        if self.login_ended {
            if !matches!(self.phase, Phase::NeedsLogin { .. }) {
                self.needs_login_now(self.login_ended_reason(), fx);
            }
            return;
        }
        let kind = match (self.grant, &self.refresh_token) {
            (Grant::ClientCredentials, _) => RequestKind::ClientCredentials,
            (Grant::AuthorizationCode | Grant::DeviceCode, Some(_)) => RequestKind::RefreshToken,
            (Grant::AuthorizationCode | Grant::DeviceCode, None) => {
                let reason = if self.token.is_some() { "no refresh token is held" } else { "not logged in yet" };
                if !matches!(self.phase, Phase::NeedsLogin { .. }) {
                    fx.login_needed = Some(reason.to_owned());
                }
                self.phase = Phase::NeedsLogin { reason: reason.to_owned() };
                return;
            }
        };
        self.phase = Phase::Refreshing(kind);
        self.upstream_requests += 1;
        fx.request = Some(kind);
    }

    /// The phase to rest in when no request is in flight.
    fn rest(&mut self, now: SystemTime, jitter: f64) {
        self.withheld = false;
        self.phase = match &self.token {
            Some(t) if !t.rejected && t.expires_at > now => Phase::Valid {
                refresh_at: schedule::refresh_at(t.obtained_at, t.expires_at, self.tuning.refresh_margin, jitter),
            },
            _ if self.grant.has_login() && self.refresh_token.is_none() => {
                Phase::NeedsLogin { reason: "not logged in yet".into() }
            }
            _ => Phase::Empty,
        };
    }

    fn usable_at(&self, now: SystemTime) -> bool {
        self.token.as_ref().is_some_and(|t| !t.rejected && t.expires_at > now)
    }

    /// Records when the serving side last handed out a token of this profile. The actor calls
    /// it before every event, with what it reads from the serving side at that moment.
    pub(crate) fn handed_out(&mut self, at: Option<SystemTime>) {
        self.handed_out = at;
    }

    /// When the actor should send [`Event::Due`] next: the next request, or the end of the
    /// pending login, whichever comes first.
    pub(crate) fn deadline(&self) -> Option<SystemTime> {
        let login = self.login.as_ref().map(|login| login.until);
        match (self.next_request(), login) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the next request is due to be sent, if one is scheduled.
    pub(crate) fn next_request(&self) -> Option<SystemTime> {
        match self.phase {
            Phase::Valid { refresh_at } => Some(refresh_at),
            Phase::Quiet { send_at, .. } => Some(send_at),
            Phase::Backoff { retry_at } => Some(retry_at),
            _ => None,
        }
    }

    /// Until when a login is pending, if one is: waiting for the browser, or its code waiting
    /// to be exchanged or being exchanged.
    pub(crate) fn login_pending_until(&self) -> Option<SystemTime> {
        let exchange = self.queued.as_ref().or(self.exchanging.as_ref()).map(|e| e.until);
        self.login.as_ref().map(|login| login.until).or(exchange)
    }

    /// The code and verifier of the exchange in flight.
    pub(crate) fn exchange_grant(&self) -> Option<(&Secret, &Secret)> {
        match &self.exchanging.as_ref()?.grant {
            Completion::Code { code, verifier } => Some((code, verifier)),
            Completion::Tokens(_) => None,
        }
    }

    /// When the actor should wake the machine next: [`Machine::deadline`], or the warning
    /// before the login ends, or its end.
    pub(crate) fn wake_at(&self) -> Option<SystemTime> {
        let login = self.login_expiry().filter(|_| !self.login_ended).map(|e| match self.session.warned(&e) {
            true => e.expires_at,
            false => e.warn_at(),
        });
        match (self.deadline(), login) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is known about the login, to be saved with the tokens.
    pub(crate) fn session(&self) -> &expiry::Login {
        &self.session
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The held refresh token.
    pub(crate) fn refresh_token(&self) -> Option<&Secret> {
        self.refresh_token.as_ref()
    }

    /// The current access token, rejected or not.
    pub(crate) fn token(&self) -> Option<&Current> {
        self.token.as_ref()
    }

    /// Bumped whenever a new token is obtained or the tokens are forgotten.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Why a client that cannot be served a token should not wait, if waiting cannot help.
    pub(crate) fn blocked_error(&self) -> Option<Error> {
        let profile = self.name.clone();
        match &self.phase {
            Phase::Backoff { retry_at } => Some(Error::UpstreamUnavailable {
                profile,
                since: self.failing_since.unwrap_or(*retry_at),
                retry_at: Some(*retry_at),
                last: Box::new(self.last_error.clone().unwrap_or_else(|| unknown_failure(*retry_at))),
            }),
            Phase::NeedsLogin { reason } => Some(Error::LoginNeeded { profile, reason: reason.clone() }),
            Phase::Failed => Some(Error::Upstream {
                profile,
                failure: Box::new(self.last_error.clone().unwrap_or_else(|| unknown_failure(SystemTime::now()))),
            }),
            Phase::Empty | Phase::Valid { .. } | Phase::Quiet { .. } | Phase::Refreshing(_) => None,
        }
    }

    /// The token to serve, if there is one that was not rejected and is not withheld for a
    /// quiet window (it may have expired).
    pub(crate) fn servable(&self, profile: &str) -> Option<Token> {
        let t = self.token.as_ref().filter(|t| !t.rejected && !self.withheld)?;
        Some(Token {
            profile: profile.to_owned(),
            access_token: t.access_token.clone(),
            token_type: t.token_type.clone(),
            expires_at: t.expires_at,
            fingerprint: t.fingerprint,
            scope: t.scope.clone(),
        })
    }

    /// Everything `tokenctl status` shows.
    pub(crate) fn status(&self, now: SystemTime) -> ProfileStatus {
        let state = match self.phase {
            Phase::Empty => ProfileState::Empty,
            Phase::Valid { .. } => ProfileState::Valid,
            Phase::Quiet { .. } => ProfileState::Quiet,
            Phase::Refreshing(_) => ProfileState::Refreshing,
            Phase::Backoff { .. } => ProfileState::Backoff,
            Phase::NeedsLogin { .. } => ProfileState::NeedsLogin,
            Phase::Failed => ProfileState::Failed,
        };
        let action = match &self.phase {
            Phase::NeedsLogin { reason } => Some(format!("{reason}; run `tokenctl login {}`", self.name)),
            Phase::Failed => Some(
                self.last_error
                    .as_ref()
                    .and_then(Failure::advice)
                    .map(|a| format!("{a}; or run `tokenctl refresh {}` to try again", self.name))
                    .unwrap_or_else(|| {
                        format!(
                            "fix the profile and run `tokenctl reload`, or run `tokenctl refresh {}` to try again",
                            self.name
                        )
                    }),
            ),
            Phase::Backoff { .. } if !self.usable_at(now) => {
                Some("no valid token: tokend keeps retrying; check the network and the server".into())
            }
            Phase::Backoff { .. } => Some("tokend keeps retrying while the current token lasts".into()),
            _ => None,
        };
        let login_expiry = self.login_expiry().and(self.session.status(self.tuning.login_lifetime));
        let action = action.or_else(|| {
            let expiry = login_expiry.filter(|e| e.warned && !self.login_ended)?;
            Some(format!(
                "the login expires at {}; run `tokenctl login {}` before then",
                tokend_proto::time::rfc3339(expiry.expires_at),
                self.name
            ))
        });
        ProfileStatus {
            name: self.name.clone(),
            grant: self.grant,
            state,
            token: self.token.as_ref().filter(|t| !t.rejected).map(|t| TokenSummary {
                fingerprint: t.fingerprint,
                token_type: t.token_type.clone(),
                obtained_at: t.obtained_at,
                expires_at: t.expires_at,
                scope: t.scope.clone(),
            }),
            next_refresh: self.next_request(),
            has_refresh_token: self.refresh_token.is_some(),
            last_error: self.last_error.clone(),
            failing_since: self.failing_since,
            action,
            upstream_requests: self.upstream_requests,
            login_pending_until: self.login_pending_until(),
            login_expiry: login_expiry.map(Box::new),
        }
    }
}

/// What the waiters of a login or a queued code exchange that a newer one replaced are told.
pub(crate) const SUPERSEDED: &str = "a newer login for this profile replaced this one";

fn unknown_failure(at: SystemTime) -> Failure {
    Failure { at, status: None, error: None, description: None, message: "unknown failure".into(), transient: true }
}

#[cfg(test)]
mod pinned;
#[cfg(test)]
mod tests;
