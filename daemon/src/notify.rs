//! Telling the user that a profile needs a login, or soon will, by running their notify
//! command (like pizauth's `auth_notify_cmd`): a desktop notification, a mail, a chat message.
//!
//! The command runs under `/bin/sh -c` with the details in its environment, never on its
//! command line:
//!
//! | variable | value |
//! |---|---|
//! | `TOKEND_EVENT` | `login-needed`, or `login-expiring` ahead of a login's end |
//! | `TOKEND_PROFILE` | the profile's name |
//! | `TOKEND_REASON` | why, in words |
//! | `TOKEND_LOGIN_COMMAND` | `tokenctl login NAME` |
//! | `TOKEND_URL` | the authorization URL of a login tokend started for the user, when it could (`login-needed` only) |
//! | `TOKEND_EXPIRES_AT` | when the login ends, in RFC 3339 (`login-expiring` only) |
//!
//! The command runs in the background and is killed if it takes longer than a minute. Without
//! a notify command, the user gets a desktop notification instead ([`crate::desktop`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::Profile;

/// How long a notify command may run.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs notify commands. Cheap to clone; the global command can be replaced by a reload.
#[derive(Clone, Debug, Default)]
pub(crate) struct Notifier {
    global: Arc<RwLock<Option<String>>>,
}

impl Notifier {
    /// A notifier whose default command is `global`.
    pub(crate) fn new(global: Option<String>) -> Notifier {
        Notifier { global: Arc::new(RwLock::new(global)) }
    }

    /// Replaces the default command (after a reload).
    pub(crate) fn set_global(&self, global: Option<String>) {
        *self.global.write().unwrap_or_else(std::sync::PoisonError::into_inner) = global;
    }

    /// Runs the profile's notify command (or the default one) for a login that became
    /// necessary. Returns at once.
    pub(crate) fn login_needed(&self, profile: &Profile, reason: &str) {
        self.run(profile, "login-needed", reason, &[]);
    }

    /// Like [`Notifier::login_needed`], with the URL of a login started for the user.
    pub(crate) fn login_needed_with_url(&self, profile: &Profile, reason: &str, url: &str) {
        self.run(profile, "login-needed", reason, &[("TOKEND_URL", url)]);
    }

    /// Runs the notify command to warn that `profile`'s login ends at `expires_at`. Returns at
    /// once. No login is started: the current one still works, and a pending login would hold
    /// the redirect port for nothing.
    pub(crate) fn login_expiring(&self, profile: &Profile, expires_at: std::time::SystemTime) {
        let at = tokend_proto::time::rfc3339(expires_at);
        let reason = format!("the login expires at {at}");
        self.run(profile, "login-expiring", &reason, &[("TOKEND_EXPIRES_AT", &at)]);
    }

    /// Whether any notify command applies to `profile`.
    pub(crate) fn configured_for(&self, profile: &Profile) -> bool {
        profile.notify_command.is_some()
            || self.global.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    fn run(&self, profile: &Profile, event: &str, reason: &str, extra: &[(&str, &str)]) {
        let command = profile
            .notify_command
            .clone()
            .or_else(|| self.global.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone());
        let Some(command) = command else { return };
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&command)
            .env("TOKEND_EVENT", event)
            .env("TOKEND_PROFILE", &profile.name)
            .env("TOKEND_REASON", reason)
            .env("TOKEND_LOGIN_COMMAND", format!("tokenctl login {}", profile.name))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd.envs(extra.iter().copied());
        let name = profile.name.clone();
        match cmd.spawn() {
            Ok(mut child) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(NOTIFY_TIMEOUT, child.wait()).await {
                        Ok(Ok(status)) if status.success() => {}
                        Ok(Ok(status)) => tracing::warn!(profile = %name, "the notify command failed ({status})"),
                        Ok(Err(e)) => tracing::warn!(profile = %name, "cannot wait for the notify command: {e}"),
                        Err(_) => {
                            tracing::warn!(profile = %name, "the notify command took over a minute and was killed")
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(profile = %name, "cannot run the notify command: {e}"),
        }
    }
}
