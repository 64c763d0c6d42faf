//! Getting a listening socket, and deciding who may use it. This is the daemon's one place
//! where Unix and Windows differ.
//!
//! tokend listens on two sockets, the protocol socket and (unless it is turned off) the HTTP
//! API's, and sets up each the same way. On Unix, in this order:
//!
//! 1. a socket passed by systemd (`LISTEN_FDS`, socket activation) is adopted as it is. Each
//!    passed socket is matched to its role by its name (`FileDescriptorName=tokend` or `http`,
//!    for units that pass them separately) or else by its path; one `tokend.socket` that lists
//!    both paths therefore works as it is, and so does an older unit that passes only the
//!    protocol socket, under any name or path;
//! 2. otherwise the socket's directory is created with mode 0700, and refused if another user
//!    owns it or may enter it;
//! 3. a file already at the socket path is probed: if a daemon answers there, this one exits
//!    (a live daemon's socket is never taken); if nothing listens (a crashed daemon's leftover),
//!    it is removed; anything that is not a socket is left alone and reported;
//! 4. the socket is created with mode 0600, set before `bind` so there is no window in which
//!    others could connect.
//!
//! Every accepted connection's peer credentials are then checked: only the daemon's own user
//! is served.
//!
//! On Windows the endpoint is a named pipe, created by interprocess with its default security
//! (the creating user), and steps 1–3 do not apply.

use std::io;
use std::path::PathBuf;

use interprocess::local_socket::ListenerOptions;
use interprocess::local_socket::tokio::{Listener, Stream};
use tokend_proto::Endpoint;

/// A socket ready to accept connections.
pub(crate) struct Bound {
    /// The listener.
    pub listener: Listener,
    /// Whether systemd passed it in (then systemd owns the socket file).
    pub activated: bool,
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BindError {
    /// Another daemon answers at the endpoint.
    #[error(
        "another tokend is already running at {0}; stop it first (`tokenctl shutdown`), or give this one other sockets (--socket, --http-socket)"
    )]
    AlreadyRunning(Endpoint),
    /// Something else is wrong.
    #[error("cannot listen at {endpoint}: {message}")]
    Other {
        /// The endpoint.
        endpoint: Endpoint,
        /// What went wrong and how to fix it.
        message: String,
    },
}

/// A listening socket systemd passed.
struct Passed {
    /// Its `FileDescriptorName=`.
    name: String,
    /// The path it is bound to, if it is a Unix socket with one.
    path: Option<PathBuf>,
    listener: Listener,
}

/// Sets up the protocol socket at `endpoint` and, if `http` is given, the HTTP API's socket
/// there, each adopted from systemd when it passed it. Sockets systemd passed that neither
/// claims are closed.
pub(crate) fn bind(endpoint: &Endpoint, http: Option<&Endpoint>) -> Result<(Bound, Option<Bound>), BindError> {
    let mut passed =
        platform::passed().map_err(|e| other(endpoint, format!("cannot adopt the sockets passed by systemd: {e}")))?;
    let main = claim(&mut passed, "tokend", endpoint);
    let http_passed = http.and_then(|http| claim(&mut passed, "http", http));
    // An older unit passes the protocol socket alone, under any name.
    let main = main.or_else(|| (!passed.is_empty()).then(|| passed.remove(0).listener));
    for unused in passed {
        tracing::warn!(
            "systemd passed a socket that tokend does not use (name {:?}, path {:?}); closing it",
            unused.name,
            unused.path
        );
    }
    let main = match main {
        Some(listener) => Bound { listener, activated: true },
        None => create(endpoint)?,
    };
    let http = match (http, http_passed) {
        (None, _) => None,
        (Some(_), Some(listener)) => Some(Bound { listener, activated: true }),
        (Some(http), None) => Some(create(http)?),
    };
    Ok((main, http))
}

/// Takes the passed socket named `name`, or else the one bound to `endpoint`'s path.
fn claim(passed: &mut Vec<Passed>, name: &str, endpoint: &Endpoint) -> Option<Listener> {
    let index = passed
        .iter()
        .position(|p| p.name == name)
        .or_else(|| passed.iter().position(|p| p.path.as_deref() == Some(endpoint.path())))?;
    let adopted = passed.remove(index);
    tracing::info!("using the socket passed by systemd for {endpoint}");
    Some(adopted.listener)
}

/// Creates the listening socket at `endpoint`.
fn create(endpoint: &Endpoint) -> Result<Bound, BindError> {
    platform::prepare(endpoint)?;
    let name = endpoint.name().map_err(|e| other(endpoint, format!("invalid socket name: {e}")))?;
    let options = platform::options(ListenerOptions::new().name(name).reclaim_name(true).try_overwrite(false));
    match options.create_tokio() {
        Ok(listener) => Ok(Bound { listener, activated: false }),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(BindError::AlreadyRunning(endpoint.clone())),
        Err(e) => Err(other(endpoint, e.to_string())),
    }
}

/// Whether the peer of `stream` is the user running the daemon. `Err` says why not, for the
/// peer.
pub(crate) fn check_peer(stream: &Stream) -> Result<(), PeerRefused> {
    platform::check_peer(stream)
}

/// Whether the peer of a connection accepted outside the runtime (by the short-request path)
/// is certainly the user running the daemon. `false` leaves the verdict, and its reason, to
/// [`check_peer`].
#[cfg(unix)]
pub(crate) fn is_own_user(stream: &std::os::unix::net::UnixStream) -> bool {
    platform::peer_euid(stream).is_some_and(|uid| uid == crate::fsperm::current_euid())
}

/// Why a connecting process is not served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerRefused {
    /// Its credentials cannot be read.
    #[error("cannot identify the connecting process: {0}")]
    Unidentified(io::Error),
    /// It runs as another user.
    #[error("permission denied: tokend serves only uid {me}, and this client runs as uid {uid}")]
    OtherUser { me: u32, uid: u32 },
    /// The system does not say which user it runs as.
    #[error("permission denied: the connecting user cannot be identified")]
    NoUser,
}

fn other(endpoint: &Endpoint, message: String) -> BindError {
    BindError::Other { endpoint: endpoint.clone(), message }
}

#[cfg(unix)]
mod platform {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::fs::FileTypeExt;
    use std::path::Path;

    use interprocess::local_socket::traits::StreamCommon;
    use interprocess::os::unix::local_socket::ListenerOptionsExt;
    use interprocess::os::unix::uds_local_socket::tokio::Listener as UdsListener;

    use super::*;

    pub(super) fn passed() -> io::Result<Vec<Passed>> {
        let mut passed = Vec::new();
        for (fd, name) in sd_notify::listen_fds_with_names()? {
            // SAFETY: systemd passes these descriptors to this process, which owns them from
            // now on; `listen_fds_with_names` checked that they are meant for this PID, and it
            // is called once.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let std_listener = std::os::unix::net::UnixListener::from(fd);
            let path = std_listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_owned));
            let mut listener = UdsListener::try_from(OwnedFd::from(std_listener))?;
            // The socket file belongs to the socket unit.
            interprocess::local_socket::traits::tokio::Listener::do_not_reclaim_name_on_drop(&mut listener);
            passed.push(Passed { name, path, listener: Listener::from(listener) });
        }
        Ok(passed)
    }

    pub(super) fn prepare(endpoint: &Endpoint) -> Result<(), BindError> {
        if let Some(dir) = endpoint.directory() {
            crate::fsperm::ensure_private_dir(dir, "socket directory").map_err(|e| other(endpoint, e.to_string()))?;
        }
        let path = endpoint.path();
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(other(endpoint, e.to_string())),
        };
        if !meta.file_type().is_socket() {
            return Err(other(
                endpoint,
                "a file that is not a socket is in the way; remove it or choose another --socket".into(),
            ));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(BindError::AlreadyRunning(endpoint.clone())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!("removing the stale socket {} left by a daemon that is gone", path.display());
                std::fs::remove_file(path).map_err(|e| other(endpoint, format!("cannot remove the stale socket: {e}")))
            }
            Err(e) => Err(other(endpoint, format!("cannot probe the existing socket: {e}"))),
        }
    }

    pub(super) fn options(options: ListenerOptions<'_>) -> ListenerOptions<'_> {
        options.mode(0o600)
    }

    /// The peer's effective uid, read with one `getsockopt` (on Linux; elsewhere `None`).
    pub(super) fn peer_euid(stream: &std::os::unix::net::UnixStream) -> Option<u32> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::fd::AsRawFd;
            let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
            let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).ok()?;
            // SAFETY: `cred` and `len` are valid for writes, `len` holds `cred`'s size, and the
            // descriptor is open for the call.
            let got = unsafe {
                libc::getsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_PEERCRED,
                    std::ptr::from_mut(&mut cred).cast(),
                    &raw mut len,
                )
            };
            (got == 0 && usize::try_from(len).ok() == Some(std::mem::size_of::<libc::ucred>())).then_some(cred.uid)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = stream;
            None
        }
    }

    pub(super) fn check_peer(stream: &Stream) -> Result<(), PeerRefused> {
        let me = crate::fsperm::current_euid();
        let creds = stream.peer_creds().map_err(PeerRefused::Unidentified)?;
        match creds.euid() {
            Some(uid) if uid == me => Ok(()),
            Some(uid) => Err(PeerRefused::OtherUser { me, uid }),
            None => Err(PeerRefused::NoUser),
        }
    }
}

#[cfg(windows)]
mod platform {
    use super::*;

    pub(super) fn passed() -> io::Result<Vec<Passed>> {
        Ok(Vec::new())
    }

    pub fn prepare(_endpoint: &Endpoint) -> Result<(), BindError> {
        Ok(())
    }

    pub fn options(options: ListenerOptions<'_>) -> ListenerOptions<'_> {
        options
    }

    pub fn check_peer(_stream: &Stream) -> Result<(), PeerRefused> {
        // The pipe's default security descriptor admits only its creator (and administrators).
        Ok(())
    }
}
