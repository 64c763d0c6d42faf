//! Where the daemon listens, agreed by both sides.
//!
//! Resolution order, the same for `tokend` and `tokenctl`:
//!
//! 1. an explicit path (`--socket`);
//! 2. the `TOKEND_SOCKET` environment variable;
//! 3. the `[daemon] socket` key of the config file (read by the caller, see
//!    [`default_config_path`]);
//! 4. the default: `$XDG_RUNTIME_DIR/tokend/tokend.sock`, or `$TMPDIR/tokend-UID/tokend.sock`
//!    when there is no runtime directory. On Windows the default is the named pipe
//!    `tokend-USERNAME`.
//!
//! This module is the one place where the two platforms differ in how an endpoint is named.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::Name;

/// The environment variable that overrides the default endpoint for both binaries.
pub const SOCKET_ENV: &str = "TOKEND_SOCKET";

/// The environment variable that overrides the default config file for both binaries.
pub const CONFIG_ENV: &str = "TOKEND_CONFIG";

/// The socket's file name inside its directory.
pub const SOCKET_FILE: &str = "tokend.sock";

/// The environment variable that overrides where tokend serves its HTTP API.
pub const HTTP_SOCKET_ENV: &str = "TOKEND_HTTP_SOCKET";

/// The HTTP API socket's file name, beside [`SOCKET_FILE`].
pub const HTTP_SOCKET_FILE: &str = "http.sock";

/// A local socket address: a filesystem path on Unix, a pipe name on Windows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    path: PathBuf,
}

impl Endpoint {
    /// An endpoint at `path` (a socket path on Unix, a pipe name or `\\.\pipe\…` path on
    /// Windows).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Endpoint { path: path.into() }
    }

    /// The endpoint to use, given an explicit choice and the config file's choice.
    pub fn resolve(explicit: Option<&Path>, from_config: Option<&Path>) -> Self {
        if let Some(path) = explicit {
            return Endpoint::new(path);
        }
        if let Some(path) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
            return Endpoint::new(path);
        }
        if let Some(path) = from_config {
            return Endpoint::new(path);
        }
        Endpoint::default_for_user()
    }

    /// The default endpoint for the current user, ignoring every override.
    pub fn default_for_user() -> Self {
        platform::default_endpoint()
    }

    /// The path (or pipe name).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory the socket lives in, which tokend creates with mode 0700 (Unix only).
    pub fn directory(&self) -> Option<&Path> {
        if cfg!(unix) { self.path.parent().filter(|p| !p.as_os_str().is_empty()) } else { None }
    }

    /// The endpoint called `name` beside this one: in the same directory on Unix, and on
    /// Windows a pipe whose name is this one's followed by `-` and `name`'s stem.
    pub fn beside(&self, name: &str) -> Endpoint {
        platform::beside(&self.path, name)
    }

    /// The name interprocess connects to or listens on.
    pub fn name(&self) -> io::Result<Name<'_>> {
        platform::name(&self.path)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.path.display().fmt(f)
    }
}

/// The default config file: `$XDG_CONFIG_HOME/tokend/config.toml`, unless `TOKEND_CONFIG`
/// names another.
///
/// It lives here because `tokenctl` reads one key of it (`[daemon] socket`) to find a daemon
/// whose socket was moved by its config.
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let dirs = directories::BaseDirs::new()?;
    Some(dirs.config_dir().join("tokend").join("config.toml"))
}

#[cfg(unix)]
mod platform {
    use super::*;
    use interprocess::local_socket::{GenericFilePath, ToFsName};

    pub(super) fn default_endpoint() -> Endpoint {
        let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            Some(runtime) => PathBuf::from(runtime).join("tokend"),
            None => std::env::temp_dir().join(format!("tokend-{}", current_uid())),
        };
        Endpoint::new(dir.join(SOCKET_FILE))
    }

    pub(super) fn name(path: &Path) -> io::Result<Name<'_>> {
        path.to_fs_name::<GenericFilePath>()
    }

    pub(super) fn beside(path: &Path, name: &str) -> Endpoint {
        Endpoint::new(path.with_file_name(name))
    }

    fn current_uid() -> u32 {
        // SAFETY: getuid has no preconditions and cannot fail.
        #[allow(unsafe_code)]
        unsafe {
            libc::getuid()
        }
    }
}

#[cfg(windows)]
mod platform {
    use super::*;
    use interprocess::local_socket::{GenericFilePath, GenericNamespaced, ToFsName, ToNsName};

    pub fn default_endpoint() -> Endpoint {
        let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".to_owned());
        Endpoint::new(format!("tokend-{user}"))
    }

    pub fn beside(path: &Path, name: &str) -> Endpoint {
        let stem = Path::new(name).file_stem().unwrap_or_default().to_string_lossy();
        Endpoint::new(format!("{}-{stem}", path.display()))
    }

    pub fn name(path: &Path) -> io::Result<Name<'_>> {
        if path.starts_with(r"\\.\pipe\") {
            path.to_fs_name::<GenericFilePath>()
        } else {
            path.as_os_str().to_ns_name::<GenericNamespaced>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_wins() {
        let ep = Endpoint::resolve(Some(Path::new("/tmp/x.sock")), Some(Path::new("/tmp/y.sock")));
        assert_eq!(ep.path(), Path::new("/tmp/x.sock"));
    }

    #[cfg(unix)]
    #[test]
    fn the_default_socket_lives_in_its_own_directory() {
        let ep = Endpoint::default_for_user();
        assert_eq!(ep.path().file_name().unwrap(), SOCKET_FILE, "{ep}");
        assert!(ep.directory().is_some());
    }

    #[cfg(unix)]
    #[test]
    fn the_http_socket_lives_beside_the_socket() {
        let ep = Endpoint::new("/run/user/1000/tokend/tokend.sock");
        assert_eq!(ep.beside(HTTP_SOCKET_FILE).path(), Path::new("/run/user/1000/tokend/http.sock"));
    }
}
