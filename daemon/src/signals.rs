//! Signals: SIGTERM and SIGINT shut the daemon down gracefully (a second one exits at once);
//! SIGHUP reloads the configuration, like `tokenctl reload`.

use std::sync::Arc;

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

use crate::daemon::Daemon;

/// Starts handling signals for `daemon`.
pub fn spawn(daemon: Arc<Daemon>) -> std::io::Result<()> {
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
                _ if daemon.is_shutting_down() => {
                    tracing::warn!("second signal during shutdown: exiting now");
                    std::process::exit(1);
                }
                _ => {
                    tracing::info!("signal {signal}: shutting down");
                    daemon.begin_shutdown();
                }
            }
        }
    });
    Ok(())
}
