//! Talking only to a daemon of this user's: the checks a client makes before it sends anything.
//!
//! A socket path is only a name. With `XDG_RUNTIME_DIR` unset the default socket lives under
//! `$TMPDIR` (usually `/tmp`), where any user can create `tokend-UID/` first and listen in it;
//! `TOKEND_SOCKET`, `--socket` or a config's `[daemon] socket` may point anywhere. tokend refuses
//! to listen in a directory it does not own, but whatever listens there would otherwise be told
//! everything a client says — the authorization code in a pasted login redirect — and its
//! answers believed, a token of its choosing included. So, on Unix:
//!
//! 1. before connecting, the socket's directory must belong to this user or to root and must not
//!    be writable by group or others (who could otherwise have put a socket there);
//! 2. once connected, before the hello, the process listening on the socket must run as this
//!    user or as root. The kernel records its credentials when it starts listening
//!    (`SO_PEERCRED` on Linux, `LOCAL_PEERCRED`/`getpeereid` on the BSDs and macOS), so they
//!    cannot be forged by the peer.
//!
//! The second check is the one that cannot be raced; the first catches a planted directory with
//! a message that says what is wrong with it, before any connection is made. Both fail with
//! [`Error::Untrusted`].
//!
//! On Windows the endpoint is a named pipe and these checks do not apply (see SECURITY.md).

pub(crate) use platform::{check_directory, check_peer};

#[cfg(unix)]
mod platform {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use interprocess::local_socket::traits::StreamCommon;
    use tokend_proto::Endpoint;

    use crate::{Error, Result};

    /// What to do about an endpoint that fails a check.
    const ADVICE: &str = "nothing was sent to it. Use a socket in a directory only you can write: set XDG_RUNTIME_DIR (as a login session does), or pass --socket / TOKEND_SOCKET to both tokend and tokenctl";

    /// Checks the directory the socket is in. A directory that cannot be inspected is left to
    /// the connection attempt, which then fails with its own error.
    pub(crate) fn check_directory(endpoint: &Endpoint) -> Result<()> {
        let dir = endpoint.directory().unwrap_or(Path::new("."));
        let Ok(meta) = std::fs::metadata(dir) else { return Ok(()) };
        let me = current_euid();
        let owner = meta.uid();
        if owner != me && owner != 0 {
            return Err(untrusted(
                endpoint,
                format!(
                    "its directory {} belongs to uid {owner}, not to you (uid {me}) or root: another user may have created it to pose as tokend and collect tokens and login codes; {ADVICE}",
                    dir.display()
                ),
            ));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(untrusted(
                endpoint,
                format!(
                    "its directory {} can be written by other users (mode {mode:04o}), so anyone could have put a socket there; {ADVICE}",
                    dir.display()
                ),
            ));
        }
        Ok(())
    }

    /// Checks who runs the process listening on `stream`'s socket.
    pub(crate) fn check_peer(endpoint: &Endpoint, stream: &impl StreamCommon) -> Result<()> {
        let me = current_euid();
        let creds = stream.peer_creds().map_err(|e| {
            untrusted(endpoint, format!("cannot tell which user runs the process listening there ({e}); {ADVICE}"))
        })?;
        match creds.euid() {
            Some(uid) if uid == me || uid == 0 => Ok(()),
            Some(uid) => Err(untrusted(
                endpoint,
                format!(
                    "the process listening there runs as uid {uid}, not as you (uid {me}) or root: another user may be posing as tokend to collect tokens and login codes; {ADVICE}"
                ),
            )),
            None => {
                Err(untrusted(endpoint, format!("cannot tell which user runs the process listening there; {ADVICE}")))
            }
        }
    }

    fn untrusted(endpoint: &Endpoint, message: String) -> Error {
        Error::Untrusted { endpoint: endpoint.clone(), message }
    }

    fn current_euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }
}

#[cfg(not(unix))]
mod platform {
    use interprocess::local_socket::traits::StreamCommon;
    use tokend_proto::Endpoint;

    use crate::Result;

    pub(crate) fn check_directory(_endpoint: &Endpoint) -> Result<()> {
        Ok(())
    }

    pub(crate) fn check_peer(_endpoint: &Endpoint, _stream: &impl StreamCommon) -> Result<()> {
        Ok(())
    }
}
