//! Noticing when the wall clock jumps.
//!
//! Token expiry is wall-clock time, but tokio's timers run on the monotonic clock, which stops
//! while a laptop sleeps and ignores `date -s`. A refresh armed for "in 55 minutes" before a
//! two-hour suspend would fire an hour late. So every profile actor sleeps on the monotonic
//! clock *and* listens here: on Linux a `timerfd` armed with `TFD_TIMER_CANCEL_ON_SET` is
//! cancelled by the kernel whenever the realtime clock is set or the machine resumes, which
//! bumps a counter that wakes every actor to re-arm its timer from the wall clock.
//!
//! This costs nothing while the clock behaves: no periodic wake-ups. (Serving never depends on
//! it either: expiry is checked against the wall clock at the moment a token is served.)

use std::sync::Arc;

use tokio::sync::watch;

/// A counter bumped on every wall-clock jump; subscribers re-arm their timers.
#[derive(Clone, Debug)]
pub(crate) struct ClockChanges {
    tx: Arc<watch::Sender<u64>>,
}

impl ClockChanges {
    /// Starts watching the clock. Must be called inside the tokio runtime.
    pub(crate) fn start() -> ClockChanges {
        let tx = Arc::new(watch::Sender::new(0u64));
        if let Err(e) = platform::watch(tx.clone()) {
            tracing::warn!("cannot watch for wall-clock changes ({e}); refresh timers may run late after a suspend");
        }
        ClockChanges { tx }
    }

    /// A receiver that changes whenever the wall clock jumps.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::Arc;

    use tokio::io::unix::AsyncFd;
    use tokio::sync::watch;

    pub(super) fn watch(tx: Arc<watch::Sender<u64>>) -> io::Result<()> {
        // SAFETY: timerfd_create has no memory-safety preconditions; the result is checked.
        let raw = unsafe { libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        arm(&fd)?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open for its lifetime.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.map_err(io::Error::from)?;
        tokio::spawn(async move {
            loop {
                let Ok(mut ready) = fd.readable().await else { return };
                let mut buf = [0u8; 8];
                // SAFETY: reads at most 8 bytes into an 8-byte buffer from a valid descriptor.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n >= 0 {
                    // The far-future expiry was reached; re-arm.
                    let _ = arm(fd.get_ref());
                    continue;
                }
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::ECANCELED) => {
                        tracing::info!("the wall clock jumped; re-arming refresh timers");
                        tx.send_modify(|n| *n += 1);
                        if arm(fd.get_ref()).is_err() {
                            return;
                        }
                    }
                    Some(libc::EAGAIN) => ready.clear_ready(),
                    _ => {
                        tracing::warn!("stopped watching the wall clock: {err}");
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    /// Arms the timer for a far-future absolute time, with cancel-on-set.
    fn arm(fd: &OwnedFd) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            // Year 2200 or so: never reached, but representable with a 32-bit-safe margin on
            // 64-bit time_t.
            it_value: libc::timespec { tv_sec: 7_258_118_400, tv_nsec: 0 },
        };
        // SAFETY: `spec` is a valid itimerspec and the old-value pointer may be null.
        let rc = unsafe {
            libc::timerfd_settime(
                fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    use std::sync::Arc;

    use tokio::sync::watch;

    pub fn watch(_tx: Arc<watch::Sender<u64>>) -> std::io::Result<()> {
        // Nothing to watch with: subscribers simply never wake.
        Ok(())
    }
}
