//! One profile: its token state machine, the actor task that drives it, and the handle the
//! socket server uses to ask for tokens (and for what the profile's info endpoint says, the
//! one upstream request made on the serving side, under the same cap as the actor's).
//!
//! The split keeps the hot path cheap. The actor is the only writer: it owns the
//! [`state::Machine`], makes the upstream requests one at a time, persists, and publishes an
//! immutable [`Snapshot`] after every change. Serving a token only reads the latest snapshot
//! (a `watch` channel borrow) and checks the token's expiry against the wall clock *at that
//! moment*; nothing is locked for longer than a pointer copy, and connections never wait for
//! each other. Only when the cached token is not good enough does a request ask the actor for
//! a fresher one and wait for the next snapshot — however many requests ask, the actor starts
//! one upstream request.
//!
//! The actor is supervised: if it ever panics, the supervisor publishes a last snapshot that
//! shows the profile failed and names the cause, records the error in the handle, and every
//! request to the profile gets that error until a reload starts it afresh. Other profiles
//! have their own actors and keep serving.

pub(crate) mod actor;
pub(crate) mod schedule;
pub(crate) mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokend_proto::{Error, Fingerprint, Grant, ProfileStatus, RevocationReport, Secret, Token};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::config::Profile;
use crate::limits;
use crate::login::Reply;
use crate::login::device::{self, Authorized, DeviceCode};
use crate::oauth::Http;
use crate::oauth::info::{self, InfoAnswer};

/// What the actor publishes after every change: everything a request needs to be answered
/// without asking the actor.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// The token to serve, unless a server rejected it. It may have expired: the server checks
    /// expiry when serving.
    pub token: Option<Token>,
    /// `Response::Token(token)` as a complete frame, encoded once when the token arrived.
    pub token_frame: Option<Arc<Zeroizing<Vec<u8>>>>,
    /// The lifetime of the newest token, which sets the default serving margin.
    pub lifetime: Duration,
    /// Bumped whenever a new token arrives.
    pub generation: u64,
    /// Whether a request is in flight or about to be sent (a quiet window is under way), so
    /// waiting will bring news.
    pub refreshing: bool,
    /// Why waiting cannot help (login needed, permanent failure, backoff), if so.
    pub blocked: Option<Error>,
    /// The profile's status, for `tokenctl status` and `watch`.
    pub status: ProfileStatus,
}

/// How requests ask the actor for a fresher token. Demands coalesce: however many requests
/// ask before the actor looks, it sees one demand, for the latest deadline asked for.
#[derive(Debug, Default)]
pub(crate) struct Demand {
    until_ms: AtomicU64,
    notify: Notify,
}

impl Demand {
    fn ask(&self, until: SystemTime) {
        let ms = u64::try_from(until.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX);
        self.until_ms.fetch_max(ms.max(1), Ordering::AcqRel);
        self.notify.notify_one();
    }

    fn take(&self) -> Option<SystemTime> {
        match self.until_ms.swap(0, Ordering::AcqRel) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

/// When the serving side last handed out a token of this profile, for the quiet window before
/// a refresh (see [`state`]). Written on the hot path: one relaxed store per token served.
#[derive(Debug, Default)]
pub(crate) struct HandedOut {
    at_ms: AtomicU64,
}

impl HandedOut {
    /// Records a hand-out at `now`. Call it while still borrowing the snapshot the token came
    /// from: the actor publishes the snapshot that withholds a token under the channel's write
    /// lock, and reads this afterwards, so the lock orders every hand-out of the old token
    /// before that read (the read lock's release makes the store visible to the next writer).
    fn record(&self, now: SystemTime) {
        let ms = u64::try_from(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// The last hand-out, if any. The store is relaxed; the ordering comes from the snapshot
    /// channel's lock (see [`HandedOut::record`]).
    pub(crate) fn last(&self) -> Option<SystemTime> {
        match self.at_ms.load(Ordering::Relaxed) {
            0 => None,
            // Rounded up, so that the window is never a millisecond short.
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms + 1)),
        }
    }
}

/// A message for the actor.
pub(crate) enum Command {
    /// A server rejected the token with this fingerprint.
    Invalidate(Fingerprint),
    /// Refresh now; reply when the request finishes.
    Refresh(Reply),
    /// Start a login, replacing a pending one: a device login with this code, else a browser
    /// login.
    Login {
        /// The code the server granted, for a device login.
        device: Option<Box<Authorized>>,
        /// Gets the started login.
        reply: oneshot::Sender<Result<LoginStarted, Error>>,
    },
    /// The redirect URL of the pending login, pasted by the user; reply with the login's
    /// outcome.
    Paste {
        /// The URL.
        url: Secret,
        /// Gets the outcome.
        reply: Reply,
    },
    /// Revoke and forget the tokens.
    Logout(oneshot::Sender<RevocationReport>),
}

/// A login that was started.
#[derive(Debug)]
pub(crate) struct LoginStarted {
    /// Where to send the browser.
    pub url: String,
    /// When the login gives up.
    pub expires_at: SystemTime,
    /// The login's outcome, once it ends.
    pub outcome: oneshot::Receiver<Result<(), Error>>,
    /// What to show the user of a device login; `url` is then where to enter the code.
    pub device: Option<DeviceCode>,
}

/// A token chosen to be served: the snapshot it came from.
#[derive(Debug, Clone)]
pub(crate) struct Served(Arc<Snapshot>);

impl Served {
    /// The token.
    pub(crate) fn token(&self) -> &Token {
        self.0.token.as_ref().expect("a served snapshot has a token")
    }

    /// The token's response, ready to write.
    pub(crate) fn frame(&self) -> &[u8] {
        self.0.token_frame.as_ref().expect("a served snapshot has a token frame")
    }
}

/// Why a request to a profile ended without an answer of its own.
#[derive(Debug)]
pub(crate) enum Gone {
    /// The profile's actor stopped: the profile was reloaded or removed, or the daemon is
    /// shutting down. Look the profile up again.
    Stopped,
}

/// The serving side of a profile, shared by all connections.
#[derive(Debug)]
pub(crate) struct ProfileHandle {
    /// The profile's configuration.
    pub config: Arc<Profile>,
    /// For the requests made on the serving side (the info endpoint's).
    http: Http,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    commands: mpsc::Sender<Command>,
    demand: Arc<Demand>,
    handed_out: Arc<HandedOut>,
    /// Set to the reason when the actor is to stop.
    stop: watch::Sender<Option<String>>,
    /// The supervisor's task, which ends when the actor does.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Why the actor died, once it has: set by the supervisor before it lets go of the snapshot
    /// channel.
    died: Arc<OnceLock<Error>>,
}

impl ProfileHandle {
    /// A handle with no actor behind it, for a profile that cannot run yet (its endpoints are
    /// still to be discovered, see [`crate::endpoints`]). Whoever holds the returned sender and
    /// receiver publishes its snapshots and answers its commands; dropping them makes requests
    /// that wait on it look the profile up again.
    pub(crate) fn detached(
        config: Arc<Profile>,
        http: Http,
        initial: Snapshot,
    ) -> (Arc<ProfileHandle>, watch::Sender<Arc<Snapshot>>, mpsc::Receiver<Command>) {
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(initial));
        let (commands, commands_rx) = mpsc::channel(64);
        let handle = ProfileHandle {
            config,
            http,
            snapshot,
            commands,
            demand: Arc::new(Demand::default()),
            stop: watch::Sender::new(None),
            task: std::sync::Mutex::new(None),
            died: Arc::new(OnceLock::new()),
            handed_out: Arc::default(),
        };
        (Arc::new(handle), snapshot_tx, commands_rx)
    }

    /// A receiver of every new snapshot, for `watch`.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The profile's status.
    pub(crate) fn status(&self) -> ProfileStatus {
        self.snapshot.borrow().status.clone()
    }

    /// A token with at least `min_valid` left (the profile's default margin when `None`),
    /// waiting for a refresh if the cached one is not good enough, until `deadline`.
    pub(crate) async fn token(
        &self,
        min_valid: Option<Duration>,
        deadline: Instant,
    ) -> Result<Result<Served, Error>, Gone> {
        self.wait_for_token(min_valid, None, deadline).await
    }

    /// Reports that a server rejected the token with fingerprint `rejected` (the current one if
    /// `None`) and returns a token other than that one.
    pub(crate) async fn invalidate(
        &self,
        rejected: Option<Fingerprint>,
        deadline: Instant,
    ) -> Result<Result<Served, Error>, Gone> {
        // The status, not the served token: a token withheld for a quiet window is still the
        // current one, and reporting it ends the window.
        let current = self.snapshot.borrow().status.token.as_ref().map(|t| t.fingerprint);
        let Some(rejected) = rejected.or(current) else {
            return self.token(None, deadline).await;
        };
        if current == Some(rejected) && self.commands.send(Command::Invalidate(rejected)).await.is_err() {
            return self.stopped().await;
        }
        self.wait_for_token(None, Some(rejected), deadline).await
    }

    /// Refreshes now (joining a refresh already in flight) and returns the new token.
    pub(crate) async fn refresh(&self, deadline: Instant) -> Result<Result<Served, Error>, Gone> {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Refresh(reply)).await.is_err() {
            return self.stopped().await;
        }
        match tokio::time::timeout_at(deadline, done).await {
            Err(_) => Ok(Err(timeout(&self.config.name))),
            Ok(Err(_)) => self.stopped().await,
            Ok(Ok(Err(e))) => Ok(Err(e)),
            Ok(Ok(Ok(()))) => self.token(Some(Duration::ZERO), deadline).await,
        }
    }

    /// GETs the profile's info endpoint with its token (`tokenctl info`), under the cap on
    /// requests in flight that token requests share. If the endpoint rejects the token (401),
    /// the token is invalidated and the GET is made once more with a new one; the answer to
    /// that one is returned whatever it is.
    pub(crate) async fn info(&self, deadline: Instant) -> Result<Result<InfoAnswer, Error>, Gone> {
        let name = &self.config.name;
        let Some(url) = self.config.info_url() else {
            return Ok(Err(Error::NotSupported {
                profile: name.clone(),
                message: "no info_url is configured for this profile; add one (for example the server's user or token-info endpoint)".into(),
            }));
        };
        let mut served = match self.token(None, deadline).await? {
            Ok(served) => served,
            Err(e) => return Ok(Err(e)),
        };
        let mut retried = false;
        loop {
            let answer = {
                let _permit = self.http.permit().await;
                info::fetch(&self.http, url, &served.token().access_token).await
            };
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    let failure = Box::new(e.to_failure(SystemTime::now()));
                    return Ok(Err(Error::Upstream { profile: name.clone(), failure }));
                }
            };
            if answer.status != 401 || retried {
                return Ok(Ok(answer));
            }
            tracing::info!(profile = %name, "the info endpoint rejected the token; getting a new one");
            retried = true;
            served = match self.invalidate(Some(served.token().fingerprint), deadline).await? {
                Ok(served) => served,
                Err(e) => return Ok(Err(e)),
            };
        }
    }

    /// Starts a login, replacing a pending one. A device login's code is asked for first, so
    /// that the actor need not wait for the server — unless its endpoint is still to be
    /// discovered: then the profile is a stand-in waiting for discovery, which answers.
    pub(crate) async fn login(&self) -> Result<Result<LoginStarted, Error>, Gone> {
        let device = match self.config.grant {
            Grant::DeviceCode if self.config.device_authorization_url().is_some() => {
                match device::authorize(&self.http, &self.config).await {
                    Ok(authorized) => Some(Box::new(authorized)),
                    Err(e) => return Ok(Err(e)),
                }
            }
            _ => None,
        };
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Login { device, reply }).await.is_err() {
            return self.stopped().await;
        }
        match done.await {
            Ok(started) => Ok(started),
            Err(_) => self.stopped().await,
        }
    }

    /// Completes the pending login with the redirect URL the user pasted.
    pub(crate) async fn paste(&self, url: Secret) -> Result<Result<(), Error>, Gone> {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Paste { url, reply }).await.is_err() {
            return self.stopped().await;
        }
        match done.await {
            Ok(result) => Ok(result),
            Err(_) => self.stopped().await,
        }
    }

    /// Revokes the tokens at the server (when a `revoke_url` is set) and forgets them.
    pub(crate) async fn logout(&self) -> Result<Result<RevocationReport, Error>, Gone> {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Logout(reply)).await.is_err() {
            return self.stopped().await;
        }
        match done.await {
            Ok(report) => Ok(Ok(report)),
            Err(_) => self.stopped().await,
        }
    }

    /// Stops the actor and waits until it has finished any request in flight and persisted
    /// its outcome. A pending login ends, its waiters told `why`; requests waiting on the actor
    /// end with [`Gone::Stopped`].
    pub(crate) async fn stop_and_wait(&self, why: &str) {
        self.stop.send_if_modified(|reason| {
            reason.get_or_insert_with(|| why.to_owned());
            true
        });
        let task = self.task.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Whether the actor died (panicked), rather than being stopped.
    pub(crate) fn has_died(&self) -> bool {
        self.died.get().is_some()
    }

    /// The answer for a request that found the actor gone: the error that killed it, or
    /// [`Gone::Stopped`] for an actor that was stopped (by a reload or a shutdown).
    async fn stopped<T>(&self) -> Result<Result<T, Error>, Gone> {
        // The supervisor records a death before it lets go of the snapshot channel, and lets go
        // as soon as the actor has ended, so this wait is short.
        let mut rx = self.snapshot.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), async { while rx.changed().await.is_ok() {} }).await;
        match self.died.get() {
            Some(error) => Ok(Err(error.clone())),
            None => Err(Gone::Stopped),
        }
    }

    /// The current token if it can be served at once, without waiting: what the socket's
    /// short-request path answers with. `None` when [`ProfileHandle::token`] would have to
    /// wait or answer with an error.
    pub(crate) fn token_now(&self, min_valid: Option<Duration>) -> Option<Served> {
        if min_valid.is_some_and(|d| d > limits::MAX_LIFETIME) {
            return None;
        }
        let current = self.snapshot.borrow();
        let now = SystemTime::now();
        let need = min_valid.unwrap_or_else(|| schedule::default_min_valid(self.config.min_valid, current.lifetime));
        if !good_enough(&current, None, now, need) {
            return None;
        }
        // While `current` still holds the channel's read lock; see `HandedOut`.
        self.handed_out.record(now);
        Some(Served(current.clone()))
    }

    async fn wait_for_token(
        &self,
        min_valid: Option<Duration>,
        exclude: Option<Fingerprint>,
        deadline: Instant,
    ) -> Result<Result<Served, Error>, Gone> {
        if let Some(asked) = min_valid.filter(|&d| d > limits::MAX_LIFETIME) {
            return Ok(Err(Error::BadRequest {
                message: format!(
                    "a min_valid of {} is longer than any token tokend holds (at most {}); ask for less",
                    humantime::format_duration(asked),
                    humantime::format_duration(limits::MAX_LIFETIME)
                ),
            }));
        }
        let mut rx = self.snapshot.clone();
        let mut asked_at_generation = None;
        let mut reasks = 0;
        loop {
            let (snap, now, need) = {
                let current = rx.borrow_and_update();
                let now = SystemTime::now();
                let need =
                    min_valid.unwrap_or_else(|| schedule::default_min_valid(self.config.min_valid, current.lifetime));
                if good_enough(&current, exclude, now, need) {
                    // While `current` still holds the channel's read lock; see `HandedOut`.
                    self.handed_out.record(now);
                    return Ok(Ok(Served(current.clone())));
                }
                (current.clone(), now, need)
            };
            if let Some(error) = &snap.blocked {
                return Ok(Err(error.clone()));
            }
            match asked_at_generation {
                // A new token came and is still not good enough. If tokens live long enough,
                // this one only aged while the machine was busy: ask again, a bounded number of
                // times. Otherwise no token the server issues can satisfy the request.
                Some(asked) if snap.generation > asked && !snap.refreshing => {
                    if snap.lifetime <= need || reasks == MAX_REASKS {
                        return Ok(Err(Error::MinValidUnsatisfiable {
                            profile: self.config.name.clone(),
                            requested: need,
                            lifetime: snap.lifetime,
                        }));
                    }
                    reasks += 1;
                    self.demand.ask(limits::after(now, need));
                    asked_at_generation = Some(snap.generation);
                }
                Some(_) => {}
                None => {
                    if exclude.is_none() || !snap.refreshing {
                        self.demand.ask(limits::after(now, need));
                    }
                    asked_at_generation = Some(snap.generation);
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Ok(Err(timeout(&self.config.name))),
                Ok(Err(_)) => return self.stopped().await,
                Ok(Ok(())) => {}
            }
        }
    }
}

/// How many times a request asks for another token when the new one aged past its margin
/// before it could be served.
const MAX_REASKS: u32 = 3;

fn timeout(profile: &str) -> Error {
    Error::Timeout {
        message: format!("no token for profile `{profile}` arrived in time; see `tokenctl status {profile}`"),
    }
}

/// Whether `snapshot`'s token may be served at `now` to a client that needs it valid for
/// `need` and did not reject it (`exclude`). `need` may be zero, but a token at or past its
/// expiry is never served.
fn good_enough(snapshot: &Snapshot, exclude: Option<Fingerprint>, now: SystemTime, need: Duration) -> bool {
    snapshot.token.as_ref().is_some_and(|token| {
        Some(token.fingerprint) != exclude
            && token.expires_at > now
            && token.expires_at.duration_since(now).unwrap_or_default() >= need
    })
}
