//! The daemon's shared state: the running profiles, the configuration they came from, and the
//! one operation that changes which profiles exist — reload.
//!
//! Reload is versioned and explicit. The new file is read and checked completely before
//! anything changes; an invalid file changes nothing. Then, per profile: unchanged ones keep
//! their actor (and so their tokens, with no gap in serving); changed ones have their old actor
//! stopped *first* — it finishes any request in flight and persists its outcome — and a new
//! actor starts from what is on disk, so a rotated refresh token can never be lost or reused
//! across the switch; removed ones are stopped. Requests that were waiting on a stopped actor
//! look the profile up again once the new set of profiles is in place.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokend_proto::{Error, ReloadSummary};
use tokio::sync::{Mutex, mpsc, watch};

use crate::clock::ClockChanges;
use crate::config::{Config, Profile};
use crate::login::Logins;
use crate::notify::Notifier;
use crate::oauth::Http;
use crate::persist::{Restored, Store};
use crate::profile::ProfileHandle;
use crate::profile::actor::{self, Shared};

/// The running profiles, by name.
pub type Profiles = BTreeMap<String, Arc<ProfileHandle>>;

/// Everything connections share.
pub struct Daemon {
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
    /// Pending logins.
    pub logins: Logins,
    /// When the daemon started.
    pub started_at: SystemTime,
    /// How long a request may wait for a token.
    pub request_timeout: Duration,
    /// Set once shutdown begins.
    shutdown: watch::Sender<bool>,
}

impl Daemon {
    /// Starts an actor for every profile of `config`, with the tokens saved in `store`.
    pub fn start(config: Config, store: Store, http: Http) -> Arc<Daemon> {
        let notifier = Notifier::new(config.daemon.notify_command.clone());
        let (login_needed_tx, login_needed_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            http,
            store,
            clock: ClockChanges::start(),
            login_needed: login_needed_tx,
            upstream: Arc::new(tokio::sync::Semaphore::new(actor::UPSTREAM_CONCURRENCY)),
        };
        let mut profiles = Profiles::new();
        for (name, profile) in &config.profiles {
            let restored = restore(&shared.store, profile);
            profiles.insert(name.clone(), actor::spawn(profile.clone(), restored, shared.clone()));
        }
        let request_timeout = config.daemon.http_timeout * 2 + Duration::from_secs(5);
        let daemon = Arc::new(Daemon {
            profiles: RwLock::new(Arc::new(profiles)),
            version: watch::Sender::new(0),
            config: Mutex::new(config),
            shared,
            notifier,
            logins: Logins::default(),
            started_at: SystemTime::now(),
            request_timeout,
            shutdown: watch::Sender::new(false),
        });
        tokio::spawn(crate::login::notify_when_needed(Arc::downgrade(&daemon), login_needed_rx));
        daemon
    }

    /// The profile called `name`.
    pub fn profile(&self, name: &str) -> Result<Arc<ProfileHandle>, Error> {
        let profiles = self.profiles();
        profiles.get(name).cloned().ok_or_else(|| Error::UnknownProfile {
            profile: name.to_owned(),
            known: profiles.keys().cloned().collect(),
        })
    }

    /// All running profiles.
    pub fn profiles(&self) -> Arc<Profiles> {
        self.profiles.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A receiver that changes after every reload.
    pub fn versions(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The HTTP client.
    pub fn http(&self) -> &Http {
        &self.shared.http
    }

    /// The notifier, for the login module.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// The config file in force.
    pub async fn config_path(&self) -> PathBuf {
        self.config.lock().await.path.clone()
    }

    /// Re-reads the config file and applies it, or changes nothing if it is invalid.
    pub async fn reload(&self) -> Result<ReloadSummary, Error> {
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
                Some(profile) if **profile == *handle.config => summary.unchanged.push(name.clone()),
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
            handle.stop_and_wait().await;
            self.logins.cancel(&handle.config.name, "the profile was reloaded").await;
        }
        let mut next = Profiles::new();
        for (name, profile) in &new.profiles {
            let handle = match old.get(name) {
                Some(handle) if **profile == *handle.config => handle.clone(),
                _ => {
                    let store = self.shared.store.clone();
                    let p = profile.clone();
                    let restored = tokio::task::spawn_blocking(move || restore(&store, &p)).await.unwrap_or_default();
                    actor::spawn(profile.clone(), restored, self.shared.clone())
                }
            };
            next.insert(name.clone(), handle);
        }
        *self.profiles.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
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
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver that turns `true` when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Stops every profile actor, letting requests in flight finish and persist.
    pub async fn stop_profiles(&self) {
        let profiles = self.profiles();
        let stops = profiles.values().map(|h| h.stop_and_wait());
        futures_util::future::join_all(stops).await;
    }
}

/// Reads a profile's saved tokens. A damaged file is moved aside (so that it is neither lost
/// nor silently overwritten) and the profile starts without tokens.
fn restore(store: &Store, profile: &Profile) -> Restored {
    match store.load(profile) {
        Ok(Some(restored)) => {
            tracing::debug!(profile = %profile.name, "restored saved tokens");
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
