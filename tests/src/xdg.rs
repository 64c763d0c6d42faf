//! Running the binaries the way a user does: no `--config`, `--socket` or `--state-dir`, no
//! `TOKEND_*` variables, only a home of their own with its XDG base directories.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{Running, bin};

/// A fresh home with its own XDG directories; removed when dropped.
pub struct XdgHome {
    home: tempfile::TempDir,
}

impl XdgHome {
    /// Creates the home with empty config and state directories and a private runtime
    /// directory.
    pub fn new() -> XdgHome {
        let xdg = XdgHome { home: tempfile::tempdir().expect("temporary directory") };
        for dir in [xdg.config_home(), xdg.state_home(), xdg.runtime_dir()] {
            std::fs::create_dir(&dir).unwrap();
        }
        std::fs::set_permissions(xdg.runtime_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        xdg
    }

    /// `$XDG_CONFIG_HOME`.
    pub fn config_home(&self) -> PathBuf {
        self.home.path().join("config")
    }

    /// `$XDG_STATE_HOME`.
    pub fn state_home(&self) -> PathBuf {
        self.home.path().join("state")
    }

    /// `$XDG_RUNTIME_DIR`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.home.path().join("run")
    }

    /// The default socket path under this home.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("tokend").join("tokend.sock")
    }

    /// The default state directory under this home.
    pub fn state_dir(&self) -> PathBuf {
        self.state_home().join("tokend")
    }

    fn log(&self) -> PathBuf {
        self.home.path().join("tokend.log")
    }

    /// Everything the daemons started here logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// A command for a workspace binary with the environment pointing at this home only.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(bin(program));
        command
            .env_remove("TOKEND_SOCKET")
            .env_remove("TOKEND_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("XDG_STATE_HOME", self.state_home())
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Starts `program` (`tokend`, or `tokend-demo` which runs it) and waits (at most 15 s)
    /// for the default socket to appear.
    pub async fn start(&self, program: &str) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).unwrap();
        let mut child = self
            .command(program)
            .env("RUST_LOG", "tokend=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.socket().exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{program} exited during start-up ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "no socket at {} within 15s:\n{}",
                self.socket().display(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child
    }

    /// Runs tokenctl (at most 60 s).
    pub async fn tokenctl(&self, args: &[&str]) -> Output {
        let child = self
            .command("tokenctl")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokenctl");
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("tokenctl finished within 60s")
            .expect("tokenctl ran")
    }

    /// Starts `tokenctl ARGS` and leaves it running.
    pub fn spawn_tokenctl(&self, args: &[&str]) -> Running {
        let mut command = self.command("tokenctl");
        command.args(args);
        Running::spawn(command)
    }

    /// Sends SIGTERM to `child` and waits (at most 20 s) for it to exit.
    pub async fn stop(&self, mut child: Child) -> ExitStatus {
        let pid = child.id().expect("the process is running");
        // SAFETY: kill(2) with the PID of our own, not yet reaped, child.
        unsafe {
            libc::kill(libc::pid_t::try_from(pid).expect("a PID fits in pid_t"), libc::SIGTERM);
        }
        tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit within 20s of SIGTERM:\n{}", self.log_text()))
            .expect("wait for the process")
    }
}

impl Default for XdgHome {
    fn default() -> XdgHome {
        XdgHome::new()
    }
}
