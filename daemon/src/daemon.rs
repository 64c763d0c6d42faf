//! The daemon's shared state: the running profiles, the configuration they came from, and the
//! one operation that changes which profiles exist — reload.
//!
//! Reload is versioned and explicit. The new file is read and checked completely before
//! anything changes; an invalid file changes nothing. Then, per profile: unchanged ones keep
//! their actor (and so their tokens, with no gap in serving); changed ones have their old actor
//! stopped *first* — it finishes any request in flight and persists its outcome — and a new
//! actor starts from what is on disk, so a rotated refresh token can never be lost or reused
//! across the switch; removed ones are stopped. Requests that were waiting on a stopped actor
//! look the profile up again once the new set of profiles is in place. A profile whose actor
//! died counts as changed, so a reload restarts it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use tokend_proto::{Error, Grant, ReloadSummary};
use tokio::sync::{Mutex, mpsc, watch};

use crate::clock::ClockChanges;
use crate::config::{Config, Profile};
use crate::endpoints::{self, Cache, Host, Watchers};
use crate::notify::Notifier;
use crate::oauth::Http;
use crate::persist::{Restored, Store};
use crate::profile::actor::{self, Shared};
use crate::profile::{Gone, ProfileHandle};

/// The running profiles, by name.
pub(crate) type Profiles = BTreeMap<String, Arc<ProfileHandle>>;

/// Everything connections share.
pub(crate) struct Daemon {
    /// The running profiles. Replaced as a whole by a reload, so a lookup is a read lock and a
    /// pointer copy.
    profiles: RwLock<Arc<Profiles>>,
    /// Bumped after every reload, so that requests whose profile was replaced can retry and
    /// `watch` streams can notice added and removed profiles.
    version: watch::Sender<u64>,
    /// The configuration in force. The lock also serializes reloads.
    config: Mutex<Config>,
    /// What every profile actor needs.
    shared: Shared,
    /// Runs notify commands.
    notifier: Notifier,
    /// The discovery watchers of the profiles with an `issuer`.
    watchers: Watchers,
    /// The discovered metadata, cached in the state directory.
    cache: Cache,
    /// The daemon itself, for the discovery watchers a reload starts.
    weak: Weak<Daemon>,
    /// When the daemon started.
    pub started_at: SystemTime,
    /// How long a request may wait for a token.
    pub request_timeout: Duration,
    /// Set once shutdown begins.
    shutdown: watch::Sender<bool>,
}

impl Daemon {
    /// Starts an actor for every profile of `config`, with the tokens saved in `store`.
    pub(crate) fn start(config: Config, store: Store, http: Http) -> Arc<Daemon> {
        let notifier = Notifier::new(config.daemon.notify_command.clone());
        let (login_needed_tx, login_needed_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            http,
            store,
            clock: ClockChanges::start(),
            login_needed: login_needed_tx,
            notifier: notifier.clone(),
        };
        let cache = Cache::new(shared.store.dir());
        let mut profiles = Profiles::new();
        let mut watchers = Vec::new();
        for (name, spec) in &config.profiles {
            let start = endpoints::start(spec, &cache, &shared.http, |profile| {
                let restored = restore(&shared.store, &profile);
                actor::spawn(profile, restored, shared.clone())
            });
            profiles.insert(name.clone(), start.handle);
            watchers.extend(start.watcher.map(|w| (name.clone(), w)));
        }
        let request_timeout = config.daemon.http_timeout * 2 + Duration::from_secs(5);
        let daemon = Arc::new_cyclic(|weak| Daemon {
            profiles: RwLock::new(Arc::new(profiles)),
            version: watch::Sender::new(0),
            config: Mutex::new(config),
            shared,
            notifier,
            watchers: Watchers::default(),
            cache,
            weak: weak.clone(),
            started_at: SystemTime::now(),
            request_timeout,
            shutdown: watch::Sender::new(false),
        });
        tokio::spawn(notify_when_needed(Arc::downgrade(&daemon), login_needed_rx));
        for (name, watcher) in watchers {
            daemon.watchers.spawn(&name, watcher, Arc::downgrade(&daemon));
        }
        daemon
    }

    /// The profile called `name`.
    pub(crate) fn profile(&self, name: &str) -> Result<Arc<ProfileHandle>, Error> {
        let profiles = self.profiles();
        profiles.get(name).cloned().ok_or_else(|| Error::UnknownProfile {
            profile: name.to_owned(),
            known: profiles.keys().cloned().collect(),
        })
    }

    /// All running profiles.
    pub(crate) fn profiles(&self) -> Arc<Profiles> {
        self.profiles.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A receiver that changes after every reload.
    pub(crate) fn versions(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Re-reads the config file and applies it, or changes nothing if it is invalid.
    pub(crate) async fn reload(&self) -> Result<ReloadSummary, Error> {
        let mut current = self.config.lock().await;
        crate::sdnotify::reloading();
        let result = self.apply_reload(&mut current).await;
        let profiles = self.profiles().len();
        crate::sdnotify::ready(&format!("serving {profiles} profile{}", if profiles == 1 { "" } else { "s" }));
        result
    }

    async fn apply_reload(&self, current: &mut Config) -> Result<ReloadSummary, Error> {
        let path = current.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| Error::Internal { message: format!("config loading failed: {e}") })?;
        let new = match loaded {
            Ok(new) => new,
            Err(e) => {
                tracing::error!("reload rejected, the old configuration keeps running: {e}");
                return Err(Error::InvalidConfig { message: e.to_string() });
            }
        };

        let old = self.profiles();
        let mut summary = ReloadSummary::default();
        let mut retired = Vec::new();
        for (name, handle) in old.iter() {
            match new.profiles.get(name) {
                Some(profile) if profile.same_settings(&handle.config) && !handle.has_died() => {
                    summary.unchanged.push(name.clone())
                }
                Some(_) => {
                    summary.changed.push(name.clone());
                    retired.push(handle.clone());
                }
                None => {
                    summary.removed.push(name.clone());
                    retired.push(handle.clone());
                }
            }
        }
        summary.added = new.profiles.keys().filter(|n| !old.contains_key(*n)).cloned().collect();

        // Stop replaced actors before reading their state, so the state read is final.
        for handle in &retired {
            self.watchers.abort(&handle.config.name);
            handle.stop_and_wait("the profile was reloaded").await;
        }
        let mut next = Profiles::new();
        for (name, profile) in &new.profiles {
            let handle = match old.get(name) {
                Some(handle) if profile.same_settings(&handle.config) && !handle.has_died() => handle.clone(),
                _ => {
                    let (shared, cache, spec) = (self.shared.clone(), self.cache.clone(), profile.clone());
                    // Reads the cache and the saved tokens.
                    let started = tokio::task::spawn_blocking(move || {
                        let http = shared.http.clone();
                        endpoints::start(&spec, &cache, &http, |profile| {
                            let restored = restore(&shared.store, &profile);
                            actor::spawn(profile, restored, shared)
                        })
                    })
                    .await
                    .map_err(|e| Error::Internal { message: format!("starting profile {name} failed: {e}") })?;
                    if let Some(watcher) = started.watcher {
                        self.watchers.spawn(name, watcher, self.weak.clone());
                    }
                    started.handle
                }
            };
            next.insert(name.clone(), handle);
        }
        *self.profiles.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        self.version.send_modify(|v| *v += 1);

        let (old, fresh) = (&current.daemon, &new.daemon);
        let need_restart: Vec<&str> = [
            ("socket", old.socket != fresh.socket),
            ("http_socket", old.http_socket != fresh.http_socket),
            ("state_dir", old.state_dir != fresh.state_dir),
            ("the encryption key", old.encryption_key != fresh.encryption_key),
            ("max_connections", old.max_connections != fresh.max_connections),
            ("http_timeout", old.http_timeout != fresh.http_timeout),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        if !need_restart.is_empty() {
            tracing::warn!("changes to [daemon] {} take effect when tokend restarts", need_restart.join(", "));
        }
        self.notifier.set_global(new.daemon.notify_command.clone());
        crate::logging::set_config_level(new.daemon.log_level.as_deref());
        *current = new;
        tracing::info!(
            added = ?summary.added,
            changed = ?summary.changed,
            removed = ?summary.removed,
            unchanged = summary.unchanged.len(),
            "configuration reloaded"
        );
        Ok(summary)
    }

    /// Starts shutting down: the server stops accepting and idle connections close.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver that turns `true` when shutdown begins.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Stops every profile actor, letting requests in flight finish and persist.
    pub(crate) async fn stop_profiles(&self) {
        let profiles = self.profiles();
        let stops = profiles.values().map(|h| h.stop_and_wait("tokend is shutting down"));
        futures_util::future::join_all(stops).await;
    }
}

impl Host for Daemon {
    fn http(&self) -> &Http {
        &self.shared.http
    }

    fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Runs `profile` in place of the running `old` — the same profile with newly discovered
    /// endpoints — the way a reload replaces a changed profile: `old` finishes and persists any
    /// request in flight, then the new actor starts from what is on disk. Returns the new
    /// handle, or `None` (changing nothing) if `old` is no longer running because a reload
    /// replaced or removed it.
    async fn replace_profile(&self, old: &Arc<ProfileHandle>, profile: Arc<Profile>) -> Option<Arc<ProfileHandle>> {
        let _no_reload = self.config.lock().await;
        let current = self.profiles();
        let name = profile.name.clone();
        if !current.get(&name).is_some_and(|running| Arc::ptr_eq(running, old)) {
            return None;
        }
        old.stop_and_wait("the profile's endpoints changed; log in again").await;
        let store = self.shared.store.clone();
        let p = profile.clone();
        let restored = tokio::task::spawn_blocking(move || restore(&store, &p)).await.unwrap_or_default();
        let handle = actor::spawn(profile, restored, self.shared.clone());
        let mut next = (*current).clone();
        next.insert(name, handle.clone());
        *self.profiles.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        self.version.send_modify(|v| *v += 1);
        Some(handle)
    }
}

/// Tells the user when a profile needs a login. With a notify command, it first starts a login
/// and runs the command with the login's URL, so the user can log in straight from the
/// notification; without one, a desktop notification names the command to run instead.
async fn notify_when_needed(daemon: Weak<Daemon>, mut needed: mpsc::UnboundedReceiver<(String, String)>) {
    while let Some((name, reason)) = needed.recv().await {
        let Some(daemon) = daemon.upgrade() else { return };
        let Ok(handle) = daemon.profile(&name) else { continue };
        let profile = handle.config.clone();
        if !daemon.notifier.configured_for(&profile) {
            #[cfg(unix)]
            crate::desktop::login_needed(&name, &reason);
            continue;
        }
        // A device login's URL alone does not log anyone in (the code may not be in it), and
        // a code nobody asked for would only expire: the user runs `tokenctl login`.
        if profile.grant == Grant::DeviceCode {
            daemon.notifier.login_needed(&profile, &reason);
            continue;
        }
        match handle.login().await {
            Ok(Ok(started)) => daemon.notifier.login_needed_with_url(&profile, &reason, &started.url),
            Ok(Err(e)) => {
                tracing::warn!(profile = %name, "cannot start a login for the notification: {e}");
                daemon.notifier.login_needed(&profile, &reason);
            }
            Err(Gone::Stopped) => daemon.notifier.login_needed(&profile, &reason),
        }
    }
}

/// Reads a profile's saved tokens. A damaged file is moved aside (so that it is neither lost
/// nor silently overwritten) and the profile starts without tokens. So is a file with a token
/// that cannot be used (one an older tokend accepted from a hostile server, say), except that
/// what can be used of it is kept and saved again at once, so that a refresh token is not lost
/// even if tokend stops before its next save.
fn restore(store: &Store, profile: &Profile) -> Restored {
    match store.load(profile) {
        Ok(Some(mut restored)) => {
            let Some(why) = restored.unusable.take() else {
                tracing::debug!(profile = %profile.name, "restored saved tokens");
                return restored;
            };
            let path = store.path_of(&profile.name);
            match store.quarantine(&profile.name) {
                Ok(aside) => {
                    tracing::error!(
                        profile = %profile.name,
                        "{} holds {why}, which tokend cannot use; the file was kept as {}, and the profile starts without it",
                        path.display(),
                        aside.display()
                    );
                    let (token, refresh_token) = (restored.token.as_ref(), restored.refresh_token.as_ref());
                    if let Err(e) = store.save(profile, token, refresh_token, &restored.login) {
                        tracing::error!(profile = %profile.name, "cannot save the usable tokens again: {e}");
                    }
                }
                Err(e) => tracing::error!(
                    profile = %profile.name,
                    "{} holds {why}, which tokend cannot use, and it could not be moved aside ({e}); the profile starts without it",
                    path.display()
                ),
            }
            restored
        }
        Ok(None) => Restored::default(),
        Err(e) => {
            let kept = store.quarantine(&profile.name);
            tracing::error!(
                profile = %profile.name,
                "cannot use the saved tokens: {e}; {}; the profile starts without tokens",
                match kept {
                    Ok(path) => format!("the file was kept as {}", path.display()),
                    Err(e) => format!("and it could not be moved aside: {e}"),
                }
            );
            Restored::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::UNIX_EPOCH;

    use tokend_proto::Secret;

    use super::*;
    use crate::held::Current;

    #[test]
    fn an_unusable_saved_token_is_set_aside_and_the_usable_refresh_token_saved_again_at_once() {
        let text = "[profiles.mm]\ngrant = \"authorization_code\"\ntoken_url = \"http://127.0.0.1:1/token\"\nauthorize_url = \"http://127.0.0.1:1/authorize\"\nredirect_uri = \"http://127.0.0.1:2/cb\"\nclient_id = \"c\"\n";
        let config = Config::parse(Path::new("/x/config.toml"), text).unwrap();
        let profile = &config.profiles["mm"];
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), None).unwrap();
        let huge = Secret::new("a".repeat(70_000));
        let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let token = Current {
            fingerprint: huge.fingerprint(),
            access_token: huge,
            token_type: "Bearer".into(),
            obtained_at: now,
            expires_at: now + Duration::from_secs(3600),
            scope: None,
            rejected: false,
        };
        store.save(profile, Some(&token), Some(&Secret::from("rt")), &Default::default()).unwrap();

        let restored = restore(&store, profile);
        assert!(restored.token.is_none());
        assert_eq!(restored.refresh_token.unwrap().expose(), "rt");
        // Saved again without the unusable token, before the profile even starts.
        let saved = std::fs::read_to_string(store.path_of("mm")).unwrap();
        assert!(saved.contains("\"rt\"") && !saved.contains("aaaa"), "{saved}");
        let aside: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("mm.json.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(std::fs::read_to_string(store.dir().join(&aside[0])).unwrap().contains("aaaa"));
    }
}
