//! Signals: SIGTERM and SIGINT shut the daemon down gracefully (a second one exits at once);
//! SIGHUP reloads the configuration, like `tokenctl reload`. On Windows, Ctrl-C shuts down.

use std::sync::Arc;

use crate::daemon::Daemon;

/// Starts handling signals for `daemon`.
#[cfg(unix)]
pub(crate) fn spawn(daemon: Arc<Daemon>) -> std::io::Result<()> {
    use futures_util::StreamExt;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook_tokio::Signals;

    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            match signal {
                SIGHUP => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let daemon = daemon.clone();
                    tokio::spawn(async move {
                        // The outcome is logged by the reload itself.
                        let _ = daemon.reload().await;
                    });
                }
                _ => shut_down(&daemon, &format!("signal {signal}")),
            }
        }
    });
    Ok(())
}

/// Starts handling Ctrl-C for `daemon`.
#[cfg(not(unix))]
pub fn spawn(daemon: Arc<Daemon>) -> std::io::Result<()> {
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            shut_down(&daemon, "Ctrl-C");
        }
    });
    Ok(())
}

fn shut_down(daemon: &Daemon, what: &str) {
    if daemon.is_shutting_down() {
        tracing::warn!("second signal during shutdown: exiting now");
        std::process::exit(1);
    }
    tracing::info!("{what}: shutting down");
    daemon.begin_shutdown();
}
