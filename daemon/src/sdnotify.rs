//! Telling systemd how the service is doing (`Type=notify`): `READY=1` once the socket
//! listens and saved state is loaded, `RELOADING=1` and `READY=1` around reloads, `STOPPING=1`
//! at shutdown, and a one-line `STATUS=`. Outside systemd (no `NOTIFY_SOCKET`) these do
//! nothing.

pub(crate) use imp::{ready, reloading, stopping};

#[cfg(unix)]
mod imp {
    use sd_notify::NotifyState;

    /// The daemon is ready to serve.
    pub(crate) fn ready(status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload has begun.
    pub(crate) fn reloading() {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    /// Shutdown has begun.
    pub(crate) fn stopping() {
        send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    }

    fn send(states: &[NotifyState<'_>]) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!("cannot notify systemd: {e}");
        }
    }
}

/// There is no service manager to tell outside Unix.
#[cfg(not(unix))]
mod imp {
    pub fn ready(_status: &str) {}
    pub fn reloading() {}
    pub fn stopping() {}
}
