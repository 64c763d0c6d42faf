//! What a test needs from the machine beyond the Rust toolchain, and what happens when it is
//! missing.
//!
//! A contributor with only Rust installed, and not root, runs `cargo test --workspace` and it
//! passes: a test that needs root, a second user account, a systemd user manager, Node.js or
//! another program checks first with [`require!`](crate::require), and when something is
//! missing it prints why it is skipped (straight to the terminal, past the test harness's output
//! capture) and returns.
//!
//! CI must never skip silently: with `TOKEND_TEST_REQUIRE_ALL=1` (set by `.ci/run`) a missing
//! need fails the test instead.

use std::io::Write;
use std::path::Path;

/// The variable that turns every skip into a failure.
pub const REQUIRE_ALL: &str = "TOKEND_TEST_REQUIRE_ALL";

/// One thing a test may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// To run as root (to switch users, or to run root's systemd user manager).
    Root,
    /// A second, unprivileged user account (created on first use; needs root and `useradd`).
    OtherUser,
    /// A systemd user manager (root's, started on demand; needs root and Debian's `systemd`).
    SystemdUserManager,
    /// The right to set the machine's wall clock (`CAP_SYS_TIME`, which root has outside a
    /// container that drops it).
    SetClock,
    /// Node.js 20 or newer with npm, for oidc-provider and the Node client tests.
    Node,
    /// A program on `PATH`.
    Program(&'static str),
}

impl Need {
    /// Why the machine does not meet this need, or `None` if it does.
    fn missing(self) -> Option<String> {
        match self {
            Need::Root => (!is_root()).then(|| "root (it switches users or runs root's user manager)".to_owned()),
            Need::OtherUser => {
                if !is_root() {
                    Some("root, to create and switch to a second user account".to_owned())
                } else {
                    ["useradd", "setpriv"]
                        .into_iter()
                        .find(|p| !on_path(p))
                        .map(|p| format!("`{p}`, to create and switch to a second user account"))
                }
            }
            Need::SystemdUserManager => {
                if !is_root() {
                    Some("root, to run root's systemd user manager".to_owned())
                } else if !Path::new("/lib/systemd/systemd").exists() || !on_path("systemctl") {
                    Some("systemd (Debian's `systemd` package), for a real user manager".to_owned())
                } else {
                    None
                }
            }
            Need::SetClock => (!has_capability(CAP_SYS_TIME)).then(|| {
                "CAP_SYS_TIME (root, outside a container that drops it), to set the machine's clock".to_owned()
            }),
            Need::Node => match node_major() {
                None => Some("Node.js 20 or newer (`node` is not on PATH)".to_owned()),
                Some(major) if major < 20 => Some(format!("Node.js 20 or newer (found Node.js {major})")),
                Some(_) if !on_path("npm") => Some("npm, to install the test's Node packages".to_owned()),
                Some(_) => None,
            },
            Need::Program(name) => (!on_path(name)).then(|| format!("`{name}` on PATH")),
        }
    }
}

/// Whether the machine has everything in `needs`. If not: with [`REQUIRE_ALL`] set, panics;
/// otherwise prints `skipped: TEST: needs …` and returns `false`. Use [`require!`](crate::require).
pub fn have(needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(|n| n.missing()).collect();
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let why = missing.join(", and ");
    if std::env::var_os(REQUIRE_ALL).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{test} needs {why}, and {REQUIRE_ALL} is set, so it may not be skipped");
    }
    // Written to the process's stderr directly: the test harness captures only the print macros.
    let _ = writeln!(std::io::stderr(), "skipped: {test}: needs {why} (set {REQUIRE_ALL}=1 to fail instead)");
    false
}

/// Returns from the calling test, after saying why, unless the machine has every need listed.
///
/// ```ignore
/// require!(Need::Root, Need::OtherUser);
/// ```
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        if !$crate::needs::have(&[$($need),+]) {
            return;
        }
    };
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The capability to set the system clock (linux/capability.h).
const CAP_SYS_TIME: u32 = 25;

/// Whether this process has `capability` in its effective set, read from `/proc/self/status`.
fn has_capability(capability: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << capability) != 0)
}

/// Whether `name` is an executable file in a `PATH` directory.
pub fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path)
        .any(|dir| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn node_major() -> Option<u32> {
    let out = std::process::Command::new("node").args(["-p", "process.versions.node"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().split('.').next()?.parse().ok()
}
