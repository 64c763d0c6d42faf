//! The task that owns one profile's [`Machine`]: it feeds it events (timers, client demands,
//! commands, request outcomes), carries out its effects, and publishes a [`Snapshot`] after
//! each change.
//!
//! Order matters and is fixed here: a new token (and above all a rotated refresh token) is
//! persisted *before* the snapshot that serves it is published, so that no client ever holds
//! a token whose refresh token could be lost by a crash.
//!
//! Each actor runs under a supervisor task ([`supervise`]). Should the actor ever panic, the
//! supervisor shows the profile as failed, naming the cause, instead of leaving it looking
//! busy forever; `tokenctl reload` starts it afresh from what is on disk.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokend_proto::{Error, Failure, ProfileState, RevocationOutcome, RevocationReport, Secret};
use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroizing;

use super::state::{Effects, Event, Machine, Phase, RequestKind, SUPERSEDED, Tuning};
use super::{Command, Demand, HandedOut, LoginStarted, ProfileHandle, Snapshot};
use crate::clock::ClockChanges;
use crate::config::Profile;
use crate::held::Current;
use crate::login::device::Authorized;
use crate::login::{Checked, Heard, Plan, Redirect, Reply, Waiting};
use crate::oauth::revoke::{self, Hint};
use crate::oauth::token::{self, TokenGrant, TokenSet};
use crate::oauth::{Http, UpstreamError};
use crate::persist::{Restored, Store};

type InFlight = Pin<Box<dyn Future<Output = Result<TokenSet, UpstreamError>> + Send>>;

/// What the actor needs from the daemon.
#[derive(Clone)]
pub(crate) struct Shared {
    /// The HTTP client.
    pub http: Http,
    /// Where tokens are saved.
    pub store: Store,
    /// Wakes timers when the wall clock jumps.
    pub clock: ClockChanges,
    /// Where to report that a profile needs a login: `(profile, reason)`.
    pub login_needed: mpsc::UnboundedSender<(String, String)>,
    /// Runs notify commands, for the warning before a login ends.
    pub notifier: crate::notify::Notifier,
}

/// Starts the actor of `profile` with the tokens restored from disk and returns its handle.
pub(crate) fn spawn(profile: Arc<Profile>, restored: Restored, shared: Shared) -> Arc<ProfileHandle> {
    let tuning = Tuning {
        refresh_margin: profile.refresh_margin,
        retry_min: profile.retry_min,
        retry_max: profile.retry_max,
        quiet_window: profile.quiet_window,
        login_timeout: profile.login_timeout,
        login_lifetime: profile.login_lifetime,
    };
    let machine = Machine::new(&profile.name, profile.grant, tuning, restored.token, restored.refresh_token)
        .with_session(restored.login);
    let (commands_tx, commands) = mpsc::channel(64);
    let (heard_tx, heard) = mpsc::channel(8);
    let (stop_tx, stop) = watch::channel(None);
    let demand = Arc::new(Demand::default());
    let handed_out = Arc::new(HandedOut::default());
    let initial = snapshot(&profile, &machine);
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(initial));
    let http = shared.http.clone();
    let actor = Actor {
        profile: profile.clone(),
        machine,
        shared,
        snapshot: snapshot_tx.clone(),
        handed_out: handed_out.clone(),
        in_flight: None,
        listener: None,
        heard: heard_tx,
        logins: 0,
    };
    let died = Arc::new(OnceLock::new());
    let run = tokio::spawn(actor.run(commands, heard, stop, demand.clone()));
    let task = tokio::spawn(supervise(profile.name.clone(), run, snapshot_tx, died.clone()));
    Arc::new(ProfileHandle {
        config: profile,
        http,
        snapshot: snapshot_rx,
        commands: commands_tx,
        demand,
        handed_out,
        stop: stop_tx,
        task: std::sync::Mutex::new(Some(task)),
        died,
    })
}

/// Waits for the actor of profile `name` to end. If it panicked, the profile is shown failed
/// with the cause, and `died` holds the error every request to it gets from now on.
async fn supervise(
    name: String,
    run: tokio::task::JoinHandle<()>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    died: Arc<OnceLock<Error>>,
) {
    let panic = match run.await {
        Ok(()) => return,
        Err(e) if e.is_panic() => e.into_panic(),
        // Only a runtime shutting down cancels it, and then nobody is left to tell.
        Err(_) => return,
    };
    let cause = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .map(|s| crate::oauth::sanitize(&s))
        .unwrap_or_else(|| "no message".to_owned());
    tracing::error!(
        profile = %name,
        "the profile's task panicked ({cause}); the profile stays failed until `tokenctl reload` restarts it; please report this as a bug"
    );
    let error = Error::Internal {
        message: format!(
            "profile `{name}` stopped working: its task in tokend panicked ({cause}); run `tokenctl reload` to restart it, and please report this as a bug"
        ),
    };
    let _ = died.set(error.clone());
    let now = SystemTime::now();
    snapshot.send_modify(|last| {
        let mut status = last.status.clone();
        status.state = ProfileState::Failed;
        status.token = None;
        status.next_refresh = None;
        status.failing_since = Some(now);
        status.last_error = Some(Failure {
            at: now,
            status: None,
            error: None,
            description: None,
            message: format!("tokend's task for this profile panicked: {cause}"),
            transient: false,
        });
        status.action = Some(
            "run `tokenctl reload` to restart the profile from its saved tokens, and please report this as a bug"
                .into(),
        );
        *last = Arc::new(Snapshot {
            token: None,
            token_frame: None,
            lifetime: last.lifetime,
            generation: last.generation + 1,
            refreshing: false,
            blocked: Some(error),
            status,
        });
    });
}

struct Actor {
    profile: Arc<Profile>,
    machine: Machine<Reply>,
    shared: Shared,
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// When the serving side last handed out a token, for the quiet window.
    handed_out: Arc<HandedOut>,
    /// The request in flight.
    in_flight: Option<InFlight>,
    /// The listener or polling of the pending login, while the machine has one.
    listener: Option<Waiting>,
    /// Where login listeners report what they hear.
    heard: mpsc::Sender<Heard>,
    /// The number of the last login started.
    logins: u64,
}

/// The owned secrets of a request about to be made.
enum Grant {
    ClientCredentials,
    RefreshToken(Secret),
    Code(Secret, Secret),
}

/// One thing that woke the actor.
enum Input {
    Command(Command),
    Heard(Heard),
    Outcome(Result<TokenSet, UpstreamError>),
    Demand,
    Due,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut heard: mpsc::Receiver<Heard>,
        mut stop: watch::Receiver<Option<String>>,
        demand: Arc<Demand>,
    ) {
        let mut clock = self.shared.clock.subscribe();
        self.step(Event::Start).await;
        loop {
            let sleep = self.machine.wake_at().map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
            let input = tokio::select! {
                biased;
                _ = stop.changed() => break,
                command = commands.recv() => match command {
                    Some(command) => Input::Command(command),
                    None => break,
                },
                Some(heard) = heard.recv() => Input::Heard(heard),
                outcome = poll_in_flight(&mut self.in_flight) => {
                    self.in_flight = None;
                    Input::Outcome(outcome)
                }
                _ = demand.notify.notified() => Input::Demand,
                _ = sleep_for(sleep) => Input::Due,
                // The wall clock jumped: whatever is due by it now is due (a quiet window the
                // clock went back past ends; see `state`), and the timer is re-armed.
                Ok(()) = clock.changed() => Input::Due,
            };
            match input {
                Input::Command(command) => self.command(command).await,
                Input::Heard(Heard { login, what }) => match what {
                    Redirect::Code(code, waiter) => self.step(Event::Code { login, code, waiter }).await,
                    Redirect::Refused(message) => {
                        self.step(Event::LoginRefused { login, message, waiter: None }).await;
                    }
                    Redirect::Tokens(set) => {
                        self.step(Event::DeviceTokens { login, set }).await;
                        tracing::info!(profile = %self.profile.name, "login complete");
                    }
                },
                Input::Outcome(outcome) => self.outcome(outcome).await,
                Input::Demand => {
                    if let Some(until) = demand.take() {
                        self.step(Event::Demand(until)).await;
                    }
                }
                Input::Due => self.step(Event::Due).await,
            }
        }
        // Whatever is in flight lands and is persisted first: dropping it could lose a refresh
        // token the server has already rotated.
        self.land().await;
        let reason = stop.borrow().clone().unwrap_or_else(|| "tokend is shutting down".into());
        self.step(Event::Stop(reason)).await;
        tracing::debug!(profile = %self.profile.name, "profile actor stopped");
    }

    /// Feeds the outcome of a token request to the machine.
    async fn outcome(&mut self, outcome: Result<TokenSet, UpstreamError>) {
        let exchange = matches!(self.machine.phase(), Phase::Refreshing(RequestKind::CodeExchange));
        match outcome {
            Ok(set) => {
                self.step(Event::Obtained(set)).await;
                if let Some(t) = self.machine.token() {
                    tracing::info!(
                        profile = %self.profile.name,
                        token = %t.fingerprint,
                        expires_in = %humantime::format_duration(round_secs(t.lifetime())),
                        "new access token"
                    );
                }
                if exchange {
                    tracing::info!(profile = %self.profile.name, "login complete");
                }
            }
            Err(error) => {
                tracing::warn!(profile = %self.profile.name, error = %error, "token request failed");
                if exchange {
                    tracing::warn!(profile = %self.profile.name, "login failed: {error}");
                }
                self.step(Event::Failed(error)).await;
            }
        }
    }

    /// Waits for the request in flight, if any, and feeds its outcome to the machine (which
    /// persists it), and so on for a request that outcome starts (a queued code exchange).
    async fn land(&mut self) {
        while let Some(request) = self.in_flight.take() {
            self.outcome(request.await).await;
        }
    }

    /// Feeds one event to the machine and carries out its effects.
    async fn step(&mut self, event: Event<Reply>) {
        // Read after the previous step's snapshot was published, as the quiet window needs.
        self.machine.handed_out(self.handed_out.last());
        let fx: Effects<Reply> = self.machine.handle(event, SystemTime::now(), rand::random::<f64>());
        if fx.persist {
            self.persist().await;
        }
        if fx.close_listener
            && let Some(listener) = self.listener.take()
        {
            listener.close().await;
            if fx.request != Some(RequestKind::CodeExchange)
                && let Some((_, Err(e))) = fx.replies.first()
            {
                tracing::warn!(profile = %self.profile.name, "login ended: {e}");
            }
        }
        if let Some(kind) = fx.request {
            tracing::debug!(profile = %self.profile.name, ?kind, "requesting a token");
            debug_assert!(self.in_flight.is_none(), "the machine starts one request at a time");
            self.in_flight = Some(self.request(kind));
        }
        for (waiter, outcome) in fx.replies {
            let _ = waiter.send(outcome);
        }
        if let Some(expires_at) = fx.login_expiring {
            self.login_expiring(expires_at);
        }
        if let Some(reason) = fx.login_needed {
            tracing::warn!(profile = %self.profile.name, %reason, "login needed: run `tokenctl login {}`", self.profile.name);
            let _ = self.shared.login_needed.send((self.profile.name.clone(), reason));
        }
        self.publish();
    }

    /// Warns that the login ends at `expires_at`: a log line, the notify command or a desktop
    /// notification, and (through the snapshot) a `watch` event.
    fn login_expiring(&self, expires_at: SystemTime) {
        let name = &self.profile.name;
        let left = expires_at.duration_since(SystemTime::now()).unwrap_or_default();
        tracing::warn!(
            profile = %name,
            expires_at = %tokend_proto::time::rfc3339(expires_at),
            "the login expires in {}: run `tokenctl login {name}` before then",
            humantime::format_duration(round_secs(left))
        );
        if self.shared.notifier.configured_for(&self.profile) {
            self.shared.notifier.login_expiring(&self.profile, expires_at);
        } else {
            #[cfg(unix)]
            crate::desktop::login_expiring(name, expires_at);
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Invalidate(fingerprint) => {
                tracing::info!(profile = %self.profile.name, token = %fingerprint, "a client reports the token was rejected");
                self.step(Event::Invalidate(fingerprint)).await;
            }
            Command::Refresh(reply) => {
                #[cfg(debug_assertions)]
                panic_if_asked(&self.profile.name);
                self.step(Event::Force(reply)).await;
            }
            Command::Login { device, reply } => {
                let started = self.start_login(device).await;
                let _ = reply.send(started);
            }
            Command::Paste { url, reply } => {
                let name = &self.profile.name;
                let message = match &self.listener {
                    Some(Waiting::Browser(_)) => None,
                    Some(Waiting::Device(_)) => Some("this profile logs in with a code entered at the server's verification page; there is no address to paste".to_owned()),
                    None => Some(format!("no login is pending; run `tokenctl login {name}` first")),
                };
                if let Some(message) = message {
                    let _ = reply.send(Err(Error::Login { profile: name.clone(), message }));
                    return;
                }
                let Some(Waiting::Browser(listener)) = &self.listener else { return };
                let login = listener.id();
                match listener.check_pasted(url.expose()) {
                    Checked::Ignore(_, message) => {
                        let _ = reply.send(Err(Error::Login { profile: self.profile.name.clone(), message }));
                    }
                    Checked::Fail(message) => {
                        self.step(Event::LoginRefused { login, message, waiter: Some(reply) }).await
                    }
                    Checked::Code(code) => self.step(Event::Code { login, code, waiter: reply }).await,
                }
            }
            Command::Logout(reply) => {
                // A request in flight may bring a rotated refresh token the server already
                // counts as live: logout revokes and forgets that one, instead of having it
                // arrive afterwards and revive the session.
                self.land().await;
                let report = self.logout().await;
                let _ = reply.send(report);
            }
        }
    }

    /// Starts a login, replacing a pending one of either kind: its listener is closed first,
    /// since the new one listens on the same port, and its polling stops. `device` is the code
    /// of a device login, which the handle asked the server for.
    async fn start_login(&mut self, device: Option<Box<Authorized>>) -> Result<LoginStarted, Error> {
        let plan = match device {
            Some(_) => None,
            None => Some(Plan::new(&self.profile)?),
        };
        if let Some(listener) = self.listener.take() {
            listener.close().await;
            self.step(Event::CancelLogin(SUPERSEDED.into())).await;
        }
        self.logins += 1;
        let id = self.logins;
        let (waiter, outcome) = oneshot::channel();
        let Some(plan) = plan else {
            let device = device.expect("a device login without a plan");
            let (url, code, until) = (device.url(), device.code.clone(), device.expires_at);
            let poller = device.poll(id, self.shared.http.clone(), self.profile.clone(), self.heard.clone());
            self.listener = Some(Waiting::Device(poller));
            self.step(Event::DeviceLoginStarted { id, until, waiter }).await;
            return Ok(LoginStarted { url, expires_at: until, outcome, device: Some(code) });
        };
        let (listener, url, verifier) = plan.listen(id, self.heard.clone()).await?;
        self.listener = Some(Waiting::Browser(listener));
        self.step(Event::LoginStarted { id, verifier, waiter }).await;
        let expires_at = self.machine.login_pending_until().unwrap_or_else(SystemTime::now);
        tracing::info!(profile = %self.profile.name, "login started; waiting for the browser");
        Ok(LoginStarted { url, expires_at, outcome, device: None })
    }

    fn request(&mut self, kind: RequestKind) -> InFlight {
        let http = self.shared.http.clone();
        let profile = self.profile.clone();
        let grant = match kind {
            RequestKind::ClientCredentials => Grant::ClientCredentials,
            RequestKind::RefreshToken => Grant::RefreshToken(
                self.machine.refresh_token().cloned().expect("the machine only refreshes with a refresh token"),
            ),
            RequestKind::CodeExchange => {
                let (code, verifier) = self.machine.exchange_grant().expect("the machine holds the code it exchanges");
                Grant::Code(code.clone(), verifier.clone())
            }
        };
        Box::pin(async move {
            let _permit = http.permit().await;
            let grant = match &grant {
                Grant::ClientCredentials => TokenGrant::ClientCredentials,
                Grant::RefreshToken(refresh_token) => TokenGrant::RefreshToken(refresh_token),
                Grant::Code(code, verifier) => TokenGrant::AuthorizationCode { code, verifier },
            };
            token::request(&http, &profile, grant).await
        })
    }

    async fn persist(&mut self) {
        let store = self.shared.store.clone();
        let profile = self.profile.clone();
        let token: Option<Current> = self.machine.token().cloned();
        let refresh_token = self.machine.refresh_token().cloned();
        let login = *self.machine.session();
        let saved =
            tokio::task::spawn_blocking(move || store.save(&profile, token.as_ref(), refresh_token.as_ref(), &login))
                .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                profile = %self.profile.name,
                "cannot save tokens to {}: {e}; they are kept in memory and saved with the next change",
                self.shared.store.dir().display()
            ),
            Err(e) => tracing::error!(profile = %self.profile.name, "saving tokens failed: {e}"),
        }
    }

    async fn logout(&mut self) -> RevocationReport {
        let refresh_token = self.machine.refresh_token().cloned();
        let access_token = self.machine.token().map(|t| t.access_token.clone());
        self.step(Event::LoggedOut).await;
        let revoke_one = |token: Option<Secret>, hint: Hint| {
            let http = self.shared.http.clone();
            let profile = self.profile.clone();
            async move {
                let Some(token) = token else { return RevocationOutcome::NoToken };
                let Some(url) = profile.revoke_url().cloned() else { return RevocationOutcome::NotConfigured };
                match revoke::revoke(&http, &profile, &url, &token, hint).await {
                    Ok(()) => RevocationOutcome::Revoked,
                    Err(e) => RevocationOutcome::Failed(e.to_string()),
                }
            }
        };
        let refresh_token = revoke_one(refresh_token, Hint::RefreshToken).await;
        let access_token = revoke_one(access_token, Hint::AccessToken).await;
        tracing::info!(profile = %self.profile.name, ?refresh_token, ?access_token, "logged out");
        RevocationReport { profile: self.profile.name.clone(), refresh_token, access_token }
    }

    fn publish(&self) {
        let next = snapshot(&self.profile, &self.machine);
        self.snapshot.send_if_modified(|current| {
            let same = current.generation == next.generation
                && current.token.is_some() == next.token.is_some()
                && current.refreshing == next.refreshing
                && current.blocked == next.blocked
                && current.status == next.status;
            if !same {
                *current = Arc::new(next);
            }
            !same
        });
    }
}

fn snapshot(profile: &Profile, machine: &Machine<Reply>) -> Snapshot {
    let mut token = machine.servable(&profile.name);
    let mut blocked = machine.blocked_error();
    // Encoded once per token, so that serving it is a single write of these bytes. Tokens are
    // checked against `crate::limits` before they get here, so encoding fails only if that
    // check is wrong; then the token is not served, and clients are told why.
    let token_frame = token.as_ref().and_then(|t| {
        let mut frame = Zeroizing::new(Vec::new());
        match tokend_proto::codec::encode(&tokend_proto::Response::Token(t.clone()), &mut frame) {
            Ok(()) => Some(Arc::new(frame)),
            Err(e) => {
                blocked = Some(Error::Internal {
                    message: format!("the token of profile `{}` cannot be sent to clients: {e}", profile.name),
                });
                None
            }
        }
    });
    if token_frame.is_none() {
        token = None;
    }
    Snapshot {
        token,
        token_frame,
        lifetime: machine.token().map(Current::lifetime).unwrap_or_default(),
        generation: machine.generation(),
        refreshing: matches!(machine.phase(), Phase::Refreshing(_) | Phase::Quiet { .. }),
        blocked,
        status: machine.status(SystemTime::now()),
    }
}

/// Makes the actor of the profile named by `TOKEND_TEST_PANIC_ON_REFRESH` panic on `tokenctl
/// refresh`, so that the end-to-end tests can prove actors are supervised. Debug builds only:
/// release builds have no such path.
#[cfg(debug_assertions)]
fn panic_if_asked(profile: &str) {
    if std::env::var_os("TOKEND_TEST_PANIC_ON_REFRESH").is_some_and(|named| named == profile) {
        panic!("TOKEND_TEST_PANIC_ON_REFRESH names profile `{profile}`");
    }
}

async fn poll_in_flight(in_flight: &mut Option<InFlight>) -> Result<TokenSet, UpstreamError> {
    match in_flight.as_mut() {
        Some(request) => request.await,
        None => std::future::pending().await,
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
