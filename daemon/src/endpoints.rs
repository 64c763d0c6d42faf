//! Where each profile's endpoints come from: the config file, the issuer's metadata
//! ([`crate::oauth::discovery`]), or that metadata's cached copy in the state directory.
//!
//! Config loading does no network I/O, so a profile with an `issuer` is loaded with only the
//! endpoints its file sets. The rest is resolved when the profile starts (at start-up and on
//! reload), in this order:
//!
//! 1. **The cache.** `STATE_DIR/discovery/HASH.json` (one file per issuer, written atomically,
//!    mode 0600 in a 0700 directory, like the token files) holds the last metadata found. If it
//!    supplies what the profile needs, the profile starts at once with it — also when the server
//!    is unreachable.
//! 2. **Discovery.** Otherwise, a profile that cannot make a request without a discovered
//!    endpoint (no `token_url`, or no `authorize_url` for a login profile) starts *waiting*: a
//!    stand-in with no actor, shown by `tokenctl status` as `refreshing` during an attempt and
//!    as `backoff` — with the reason and the time of the next attempt — after a failure. It
//!    retries with the profile's `retry_min`/`retry_max` backoff (`tokenctl refresh` tries at
//!    once, and so does a login, which then goes ahead on the profile with the endpoints or
//!    fails with the reason); clients asking for its token are told why they cannot have one. Other profiles are
//!    not held up. Once discovery succeeds, the real actor replaces the stand-in, as a reload of
//!    that one profile would.
//!
//! A profile whose file sets every endpoint it needs starts at once either way; discovery then
//! only fills in the optional ones (revocation, info, device authorization), and a failure is
//! logged and changes nothing.
//!
//! Every profile with an `issuer` then re-reads the metadata in the background once a day (a
//! little earlier, at random, so that daemons do not ask together), timed from when the cached
//! copy was fetched, so that an idle tokend is woken for it at most once a day. If the
//! endpoints changed, the profile is restarted with them like a reloaded one; its tokens are
//! kept, since discovered endpoints are not part of the profile's security fingerprint.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokend_proto::{Error, Failure, Grant, ProfileState, ProfileStatus, RevocationOutcome, RevocationReport};
use tokio::sync::{mpsc, watch};
use url::Url;

use crate::config::{Endpoints, Profile};
use crate::oauth::Http;
use crate::oauth::discovery::{self, DiscoveryError, Found, Metadata};
use crate::persist::Store;
use crate::profile::{Command, ProfileHandle, Snapshot, schedule};

/// What a discovery watcher needs from the daemon that runs it. The daemon, which sits above
/// this module, implements it; a watcher holds it weakly and ends once the daemon is gone.
pub(crate) trait Host: Send + Sync + 'static {
    /// The HTTP client.
    fn http(&self) -> &Http;
    /// Where tokens are saved.
    fn store(&self) -> &Store;
    /// Runs `profile` in place of the running `old`, as a reload replaces a changed profile;
    /// `None` if `old` no longer runs (a reload replaced or removed it).
    fn replace_profile(
        &self,
        old: &Arc<ProfileHandle>,
        profile: Arc<Profile>,
    ) -> impl Future<Output = Option<Arc<ProfileHandle>>> + Send;
}

/// How often metadata is fetched again, at most (less up to a tenth, at random).
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// The cached metadata of every issuer, in `STATE_DIR/discovery/`.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

/// Why a cached metadata document cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    /// Reading it failed.
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    /// It does not parse.
    #[error("{} is damaged: {why}", .path.display())]
    Damaged { path: PathBuf, why: String },
    /// Another format or version.
    #[error("{} is not a discovery cache this tokend reads", .path.display())]
    OtherFormat { path: PathBuf },
    /// What it holds no longer passes the checks.
    #[error("{}: {source}", .path.display())]
    Refused { path: PathBuf, source: discovery::BadMetadata },
}

/// Metadata read back from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cached {
    /// What it says, checked again as it was read.
    pub metadata: Metadata,
    /// Where it was found.
    pub url: Url,
    /// When it was fetched.
    pub fetched_at: SystemTime,
}

const FORMAT_NAME: &str = "tokend-discovery";
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    format: String,
    version: u32,
    issuer: String,
    url: String,
    fetched_at_ms: u64,
    document: serde_json::Map<String, serde_json::Value>,
}

/// The document fields worth keeping: the issuer and the endpoints tokend reads.
const KEPT: &[&str] = &[
    "issuer",
    "token_endpoint",
    "authorization_endpoint",
    "device_authorization_endpoint",
    "revocation_endpoint",
    "userinfo_endpoint",
];

impl Cache {
    /// The cache inside the state directory `state_dir`.
    pub(crate) fn new(state_dir: &Path) -> Cache {
        Cache { dir: state_dir.join("discovery") }
    }

    /// The file of `issuer`: named by a digest, since an issuer is a URL.
    pub(crate) fn path_of(&self, issuer: &str) -> PathBuf {
        let digest = Sha256::digest(issuer.as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    /// The cached metadata of `issuer`, checked as if it had just been fetched. A missing file
    /// is `Ok(None)`.
    pub(crate) fn load(&self, issuer: &str) -> Result<Option<Cached>, CacheError> {
        let path = self.path_of(issuer);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        let file: CacheFile = serde_json::from_slice(&bytes)
            .map_err(|e| CacheError::Damaged { path: path.clone(), why: e.to_string() })?;
        if file.format != FORMAT_NAME || file.version != FORMAT_VERSION {
            return Err(CacheError::OtherFormat { path });
        }
        if file.issuer != issuer {
            return Ok(None);
        }
        let metadata = discovery::check(&file.document, issuer)
            .map_err(|source| CacheError::Refused { path: path.clone(), source })?;
        let url = Url::parse(&file.url).map_err(|e| CacheError::Damaged { path: path.clone(), why: e.to_string() })?;
        Ok(Some(Cached { metadata, url, fetched_at: UNIX_EPOCH + Duration::from_millis(file.fetched_at_ms) }))
    }

    /// Saves what discovery found, atomically.
    pub(crate) fn save(&self, found: &Found, fetched_at: SystemTime) -> io::Result<()> {
        crate::fsperm::ensure_private_dir(&self.dir, "discovery cache directory").map_err(io::Error::other)?;
        let document = found
            .document
            .iter()
            .filter(|(key, _)| KEPT.contains(&key.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let file = CacheFile {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            issuer: found.metadata.issuer.clone(),
            url: found.url.to_string(),
            fetched_at_ms: u64::try_from(fetched_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis())
                .unwrap_or(u64::MAX),
            document,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        crate::persist::write_atomically(&self.dir, &self.path_of(&found.metadata.issuer), &bytes)
    }
}

/// A profile as it starts: the handle to serve it, and what its discovery watcher needs.
pub(crate) struct Start {
    /// The actor, or the stand-in while discovery is pending.
    pub handle: Arc<ProfileHandle>,
    /// Runs the profile's discovery, when it has an `issuer` to discover from.
    pub watcher: Option<Watcher>,
}

/// Starts `spec` with the endpoints its file sets and those the cache holds; `spawn` starts its
/// actor once it can run. Reads the cache, so call it where blocking is allowed.
pub(crate) fn start(
    spec: &Arc<Profile>,
    cache: &Cache,
    http: &Http,
    spawn: impl FnOnce(Arc<Profile>) -> Arc<ProfileHandle>,
) -> Start {
    if !spec.wants_discovery() {
        return Start { handle: spawn(spec.clone()), watcher: None };
    }
    let issuer = spec.issuer.clone().unwrap_or_default();
    let cached = match cache.load(&issuer) {
        Ok(cached) => cached,
        Err(e) => {
            tracing::warn!(profile = %spec.name, "ignoring the cached metadata: {e}");
            None
        }
    };
    let profile = Arc::new(spec.with_discovered(cached.as_ref().map(|c| c.metadata.endpoints.clone())));
    let first_check = match &cached {
        Some(c) => {
            tracing::debug!(profile = %spec.name, issuer = %issuer, "using the cached metadata from {}", c.url);
            refresh_due(c.fetched_at, SystemTime::now(), rand::random())
        }
        None => Duration::ZERO,
    };
    let (handle, pending) = if profile.needs_discovery() {
        let (handle, pending) = Pending::new(spec.clone(), http.clone());
        (handle, Some(pending))
    } else {
        (spawn(profile), None)
    };
    let applied = if pending.is_none() { handle.config.discovered.clone() } else { None };
    let watcher =
        Watcher { spec: spec.clone(), running: handle.clone(), applied, pending, first_check, cache: cache.clone() };
    Start { handle, watcher: Some(watcher) }
}

/// How long until metadata fetched at `fetched_at` is due to be fetched again.
fn refresh_due(fetched_at: SystemTime, now: SystemTime, jitter: f64) -> Duration {
    let due = fetched_at + REFRESH_EVERY - REFRESH_EVERY.mul_f64(0.1 * jitter.clamp(0.0, 1.0));
    due.duration_since(now).unwrap_or_default()
}

/// One profile's discovery: fetches the metadata when due, keeps the cache, and puts a profile
/// with the new endpoints in place when they change.
pub(crate) struct Watcher {
    spec: Arc<Profile>,
    /// The handle serving the profile now, which the next change replaces.
    running: Arc<ProfileHandle>,
    /// The discovered endpoints the running actor uses.
    applied: Option<Endpoints>,
    /// The stand-in, while the profile waits for discovery.
    pending: Option<Pending>,
    first_check: Duration,
    cache: Cache,
}

impl Watcher {
    /// Runs until the daemon is gone or a reload retires the profile (which aborts the task).
    pub(crate) async fn run<H: Host>(mut self, daemon: Weak<H>) {
        let issuer = self.spec.issuer.clone().unwrap_or_default();
        let name = self.spec.name.clone();
        let mut wait = self.first_check;
        let mut attempts = 0u32;
        loop {
            let mut refresh_waiters = Vec::new();
            let mut login_waiters = Vec::new();
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                let command = match &mut self.pending {
                    Some(pending) => tokio::select! {
                        _ = &mut sleep => break,
                        command = pending.commands.recv() => command,
                    },
                    None => {
                        (&mut sleep).await;
                        break;
                    }
                };
                let Some(pending) = &mut self.pending else { break };
                match command {
                    Some(Command::Refresh(reply)) => {
                        refresh_waiters.push(reply);
                        break;
                    }
                    // A login needs the endpoints: it waits for an attempt made now, as a
                    // refresh does.
                    Some(Command::Login { reply, .. }) if pending.spec.grant != Grant::ClientCredentials => {
                        login_waiters.push(reply);
                        break;
                    }
                    Some(command) => pending.answer(command, &daemon).await,
                    None => return,
                }
            }
            let Some(http) = daemon.upgrade().map(|d| d.http().clone()) else { return };
            if let Some(pending) = &mut self.pending {
                pending.attempting();
            }
            let outcome = match discovery::discover(&http, &issuer).await {
                Ok(found) => self.found(found, &daemon).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    attempts = 0;
                    wait = refresh_due(SystemTime::now(), SystemTime::now(), rand::random());
                    // Their stand-in is gone: they look the profile up again and get the one
                    // with the endpoints.
                    drop(refresh_waiters);
                    drop(login_waiters);
                }
                Err(e) => match &mut self.pending {
                    Some(pending) => {
                        attempts += 1;
                        wait =
                            schedule::backoff(attempts, self.spec.retry_min, self.spec.retry_max, None, rand::random());
                        tracing::warn!(profile = %name, "{e}; retrying in {}", humantime::format_duration(round(wait)));
                        pending.failed(&e, SystemTime::now() + wait);
                        let blocked = pending.blocked();
                        for waiter in refresh_waiters {
                            let _ = waiter.send(Err(blocked.clone()));
                        }
                        for waiter in login_waiters {
                            let _ = waiter.send(Err(pending.cannot_log_in()));
                        }
                    }
                    None => {
                        wait = refresh_due(SystemTime::now(), SystemTime::now(), rand::random());
                        tracing::warn!(
                            profile = %name,
                            "{e}; the profile keeps its current endpoints; trying again in {}",
                            humantime::format_duration(round(wait))
                        );
                    }
                },
            }
        }
    }

    /// Caches what was found and applies it. `Err` if it lacks what the profile needs.
    async fn found<H: Host>(&mut self, found: Found, daemon: &Weak<H>) -> Result<(), DiscoveryError> {
        let cache = self.cache.clone();
        let saved = found.clone();
        let name = self.spec.name.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = cache.save(&saved, SystemTime::now()) {
                tracing::warn!(profile = %name, "cannot cache the discovered metadata: {e}");
            }
        })
        .await;
        let endpoints = found.metadata.endpoints;
        let profile = Arc::new(self.spec.with_discovered(Some(endpoints.clone())));
        if let Some((missing, key)) = profile.missing_endpoint() {
            return Err(DiscoveryError {
                issuer: found.metadata.issuer,
                attempts: vec![format!(
                    "{}: the metadata lists no {missing}; set it in the profile ({key})",
                    found.url
                )],
                transient: false,
            });
        }
        if self.pending.is_none() && self.applied.as_ref() == Some(&endpoints) {
            tracing::debug!(profile = %self.spec.name, "the issuer's metadata is unchanged");
            return Ok(());
        }
        let Some(daemon) = daemon.upgrade() else { return Ok(()) };
        tracing::info!(profile = %self.spec.name, "endpoints discovered from {}", found.url);
        match daemon.replace_profile(&self.running, profile).await {
            Some(handle) => {
                self.running = handle;
                self.applied = Some(endpoints);
                // Requests waiting on the stand-in now look the profile up again.
                self.pending = None;
            }
            None => tracing::debug!(profile = %self.spec.name, "the profile was reloaded meanwhile"),
        }
        Ok(())
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(1))
}

/// The stand-in for a profile that waits for discovery: it publishes the profile's status and
/// answers what can be answered without endpoints.
struct Pending {
    spec: Arc<Profile>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    commands: mpsc::Receiver<Command>,
    failing_since: Option<SystemTime>,
    last: Option<Failure>,
    retry_at: Option<SystemTime>,
}

impl Pending {
    fn new(spec: Arc<Profile>, http: Http) -> (Arc<ProfileHandle>, Pending) {
        let initial = status_snapshot(&spec, ProfileState::Refreshing, None, None, None, None);
        let (handle, snapshot, commands) = ProfileHandle::detached(spec.clone(), http, initial);
        (handle, Pending { spec, snapshot, commands, failing_since: None, last: None, retry_at: None })
    }

    /// An attempt is under way: waiting will bring news.
    fn attempting(&mut self) {
        let snap = status_snapshot(
            &self.spec,
            ProfileState::Refreshing,
            None,
            self.last.clone(),
            self.failing_since,
            Some(format!("discovering the endpoints of {}", self.spec.issuer.as_deref().unwrap_or_default())),
        );
        self.snapshot.send_replace(Arc::new(snap));
    }

    fn failed(&mut self, error: &DiscoveryError, retry_at: SystemTime) {
        let now = SystemTime::now();
        self.failing_since.get_or_insert(now);
        self.retry_at = Some(retry_at);
        self.last = Some(Failure {
            at: now,
            status: None,
            error: None,
            description: None,
            message: error.to_string(),
            transient: true,
        });
        let action = format!(
            "tokend cannot use this profile until it discovers its endpoints, and retries by itself; check `issuer` and the network, or set token_url{} in the profile (`tokend --check-config` shows what it finds)",
            match self.spec.grant {
                tokend_proto::Grant::AuthorizationCode => " and authorize_url",
                tokend_proto::Grant::DeviceCode => " and device_authorization_url",
                tokend_proto::Grant::ClientCredentials => "",
            }
        );
        let mut snap = status_snapshot(
            &self.spec,
            ProfileState::Backoff,
            Some(self.blocked()),
            self.last.clone(),
            self.failing_since,
            Some(action),
        );
        snap.status.next_refresh = Some(retry_at);
        self.snapshot.send_replace(Arc::new(snap));
    }

    /// The error for clients that ask for a token meanwhile.
    fn blocked(&self) -> Error {
        let now = SystemTime::now();
        Error::UpstreamUnavailable {
            profile: self.spec.name.clone(),
            since: self.failing_since.unwrap_or(now),
            retry_at: self.retry_at,
            last: Box::new(self.last.clone().unwrap_or(Failure {
                at: now,
                status: None,
                error: None,
                description: None,
                message: "the endpoints are being discovered".into(),
                transient: true,
            })),
        }
    }

    /// The error for a login that waited for an attempt that failed.
    fn cannot_log_in(&self) -> Error {
        let why = self.last.as_ref().map_or("discovery has not succeeded", |f| f.message.as_str());
        Error::Login {
            profile: self.spec.name.clone(),
            message: format!(
                "the profile's endpoints are not known yet ({why}); tokend keeps trying, and a login can follow once it finds them"
            ),
        }
    }

    /// Answers what the stand-in can answer at once. (Refreshes and logins wait for an attempt;
    /// the watcher keeps them.)
    async fn answer<H: Host>(&mut self, command: Command, daemon: &Weak<H>) {
        match command {
            Command::Paste { reply, .. } => {
                let name = &self.spec.name;
                let message = format!("no login is pending; run `tokenctl login {name}` first");
                let _ = reply.send(Err(Error::Login { profile: name.clone(), message }));
            }
            Command::Logout(reply) => {
                let report = match daemon.upgrade() {
                    Some(daemon) => forget(daemon.store().clone(), self.spec.clone(), self.last.clone()).await,
                    None => return,
                };
                let _ = reply.send(report);
            }
            Command::Login { reply, .. } => {
                let _ = reply.send(Err(crate::login::no_login(self.spec.name.clone())));
            }
            Command::Refresh(_) | Command::Invalidate(_) => {}
        }
    }
}

/// Logout while the revocation endpoint is unknown: the saved tokens are forgotten, and the
/// report says why they were not revoked.
async fn forget(store: Store, spec: Arc<Profile>, last: Option<Failure>) -> RevocationReport {
    let why = format!(
        "not revoked: the revocation endpoint is not known yet ({})",
        last.map_or_else(|| "discovery is under way".to_owned(), |f| f.message)
    );
    let held = tokio::task::spawn_blocking(move || {
        let held = store.load(&spec).ok().flatten();
        let outcome = |has: bool| if has { RevocationOutcome::Failed(why.clone()) } else { RevocationOutcome::NoToken };
        let report = RevocationReport {
            profile: spec.name.clone(),
            refresh_token: outcome(held.as_ref().is_some_and(|h| h.refresh_token.is_some())),
            access_token: outcome(held.as_ref().is_some_and(|h| h.token.is_some())),
        };
        if let Err(e) = store.remove(&spec.name) {
            tracing::error!(profile = %spec.name, "cannot forget the saved tokens: {e}");
        }
        report
    })
    .await;
    held.unwrap_or_else(|_| RevocationReport {
        profile: String::new(),
        refresh_token: RevocationOutcome::NoToken,
        access_token: RevocationOutcome::NoToken,
    })
}

fn status_snapshot(
    spec: &Profile,
    state: ProfileState,
    blocked: Option<Error>,
    last_error: Option<Failure>,
    failing_since: Option<SystemTime>,
    action: Option<String>,
) -> Snapshot {
    Snapshot {
        token: None,
        token_frame: None,
        lifetime: Duration::ZERO,
        generation: 0,
        refreshing: state == ProfileState::Refreshing,
        blocked,
        status: ProfileStatus {
            name: spec.name.clone(),
            grant: spec.grant,
            state,
            token: None,
            next_refresh: None,
            has_refresh_token: false,
            last_error,
            failing_since,
            action,
            upstream_requests: 0,
            login_pending_until: None,
            login_expiry: None,
        },
    }
}

/// Where one endpoint of a profile came from, for `tokend --check-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The config file.
    Config,
    /// Metadata fetched just now from this URL.
    DiscoveredNow(Url),
    /// The cached metadata, fetched at this time from this URL.
    Cache(SystemTime, Url),
}

/// What `tokend --check-config` found out about one profile's endpoints.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Each endpoint, by its config key, with its value and origin; `None` if unknown.
    pub endpoints: Vec<(&'static str, Option<(Url, Origin)>)>,
    /// Discovery's failure, when it failed.
    pub problem: Option<String>,
}

/// Resolves `spec`'s endpoints for `tokend --check-config`: discovery now (with `http`'s short
/// timeout), else the cache. Writes nothing.
pub(crate) async fn report(spec: &Profile, http: &Http, cache: Option<&Cache>) -> Report {
    let mut problem = None;
    let mut discovered: Option<(Endpoints, Origin)> = None;
    if let (Some(issuer), true) = (&spec.issuer, spec.wants_discovery()) {
        match discovery::discover(http, issuer).await {
            Ok(found) => discovered = Some((found.metadata.endpoints, Origin::DiscoveredNow(found.url))),
            Err(e) => {
                let cached = cache.map(|c| c.load(issuer));
                match cached {
                    Some(Ok(Some(c))) => {
                        discovered = Some((c.metadata.endpoints, Origin::Cache(c.fetched_at, c.url)));
                        problem = Some(format!("{e}; using the cached copy"));
                    }
                    Some(Err(cache_error)) => problem = Some(format!("{e}; and the cache is unusable: {cache_error}")),
                    _ => problem = Some(format!("{e}; and nothing is cached")),
                }
            }
        }
    }
    let pick = |f: fn(&Endpoints) -> Option<&Url>| -> Option<(Url, Origin)> {
        if let Some(url) = f(&spec.configured) {
            return Some((url.clone(), Origin::Config));
        }
        let (endpoints, origin) = discovered.as_ref()?;
        f(endpoints).map(|url| (url.clone(), origin.clone()))
    };
    let mut endpoints = vec![("token_url", pick(|e| e.token.as_ref()))];
    if spec.grant == tokend_proto::Grant::AuthorizationCode {
        endpoints.push(("authorize_url", pick(|e| e.authorization.as_ref())));
    }
    endpoints.extend([
        ("revoke_url", pick(|e| e.revocation.as_ref())),
        ("info_url", pick(|e| e.info.as_ref())),
        ("device_authorization_url", pick(|e| e.device_authorization.as_ref())),
    ]);
    Report { endpoints, problem }
}

/// The discovery watchers of a daemon's profiles, by profile name; a reload aborts those of the
/// profiles it retires.
#[derive(Default)]
pub(crate) struct Watchers {
    tasks: std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl Watchers {
    /// Starts `watcher` for profile `name`, aborting one already running for it.
    pub(crate) fn spawn<H: Host>(&self, name: &str, watcher: Watcher, daemon: Weak<H>) {
        let task = tokio::spawn(watcher.run(daemon));
        if let Some(old) =
            self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.to_owned(), task)
        {
            old.abort();
        }
    }

    /// Stops profile `name`'s watcher, if any.
    pub(crate) fn abort(&self, name: &str) {
        if let Some(task) = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(issuer: &str, token: &str) -> Found {
        let document = match serde_json::json!({
            "issuer": issuer,
            "token_endpoint": token,
            "jwks_uri": "https://as.example/jwks",
            "scopes_supported": ["a", "b"],
        }) {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        };
        let metadata = discovery::check(&document, issuer).unwrap();
        Found { metadata, document, url: Url::parse(&format!("{issuer}/.well-known/openid-configuration")).unwrap() }
    }

    #[test]
    fn cached_metadata_comes_back_checked_and_dated() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("state"));
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        cache.save(&found("https://as.example", "https://as.example/token"), at).unwrap();
        let cached = cache.load("https://as.example").unwrap().unwrap();
        assert_eq!(cached.fetched_at, at);
        assert_eq!(cached.metadata.endpoints.token.unwrap().as_str(), "https://as.example/token");
        assert!(cache.load("https://other.example").unwrap().is_none());
        let text = std::fs::read_to_string(cache.path_of("https://as.example")).unwrap();
        assert!(!text.contains("jwks_uri"), "only the fields tokend reads are kept: {text}");
    }

    #[cfg(unix)]
    #[test]
    fn the_cache_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.save(&found("https://as.example", "https://as.example/token"), SystemTime::now()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("discovery")), 0o700);
        assert_eq!(mode(&cache.path_of("https://as.example")), 0o600);
    }

    #[test]
    fn a_tampered_cache_is_checked_like_a_fresh_document() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.save(&found("https://as.example", "https://as.example/token"), SystemTime::now()).unwrap();
        let path = cache.path_of("https://as.example");
        let text = std::fs::read_to_string(&path).unwrap().replace("https://as.example/token", "http://evil.example/t");
        std::fs::write(&path, text).unwrap();
        assert!(cache.load("https://as.example").unwrap_err().to_string().contains("plain http"));
        std::fs::write(&path, b"{\"format\":").unwrap();
        assert!(cache.load("https://as.example").unwrap_err().to_string().contains("damaged"));
    }

    #[test]
    fn metadata_is_due_again_within_a_day_of_being_fetched() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(refresh_due(t0, t0, 0.0), REFRESH_EVERY);
        assert_eq!(refresh_due(t0, t0, 1.0), REFRESH_EVERY.mul_f64(0.9));
        assert_eq!(refresh_due(t0, t0 + REFRESH_EVERY * 2, 0.5), Duration::ZERO);
    }
}
